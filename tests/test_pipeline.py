"""A tiny end-to-end run of every stage (2 folds, 1-2 epochs, tiny models), in-process."""
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import ensemble
import predict
import pretrain
import train
from helpers import PIPELINE_MODELS as MODELS
from fat2019.cli import NotReady


@pytest.fixture(scope="module")
def run(pipeline_run):
    """The session's one tiny pipeline run (conftest.py), shared with test_reports/test_tag."""
    return pipeline_run


def classes(data):
    return list(pd.read_csv(data / "sample_submission.csv").columns[1:])


def test_every_artifact_exists_with_the_right_shape(run):
    data, models = run["data"], run["root"] / "models"
    curated = pd.read_csv(data / "train_curated.csv")
    sample = pd.read_csv(data / "sample_submission.csv")
    folds = pd.read_csv(models / "folds.csv")
    assert list(folds.columns) == ["fname", "fold"] and sorted(folds["fname"]) == sorted(curated["fname"])
    assert sorted(folds["fold"].unique()) == [0, 1]
    for name in MODELS:
        folder = models / name
        for k in (0, 1):
            assert (folder / f"fold{k}.weights.h5").is_file() and (folder / f"fold{k}.json").is_file()
            assert not (folder / f"fold{k}.last.keras").exists()
        history = pd.read_csv(folder / "history.csv")
        assert list(history.columns) == ["fold", "epoch", "lr", "loss", "val_lrap", "val_lwlrap"]
        assert len(history) == 4 and history["lr"].tolist() == [5e-4, 2.5e-4] * 2
        oof, test = pd.read_csv(folder / "oof.csv"), pd.read_csv(folder / "test.csv")
        assert list(oof.columns) == ["fname", *classes(data)] == list(test.columns)
        assert sorted(oof["fname"]) == sorted(curated["fname"]) and list(test["fname"]) == list(sample["fname"])
        assert np.all((oof.iloc[:, 1:] >= 0) & (oof.iloc[:, 1:] <= 1))
    assert (models / "v1mix" / "pretrain.weights.h5").is_file()
    assert not (models / "max3exam" / "pretrain.weights.h5").exists()   # it starts from v1mix's
    subs = run["root"] / "subs"
    for f in ("average.csv", "submission.csv"):
        table = pd.read_csv(subs / f)
        assert list(table.columns) == list(sample.columns) and list(table["fname"]) == list(sample["fname"])
    assert len(pd.read_csv(subs / "stacker_oof.csv")) == len(curated)


def test_oof_rows_come_from_the_model_that_did_not_train_on_them(run):
    folds = pd.read_csv(run["root"] / "models" / "folds.csv").set_index("fname")["fold"]
    oof_predictions = [(w, f) for w, f in run["predicted"] if len(f) < len(folds) and "fold" in Path(w).name
                       and not f[0].startswith("t")]
    assert len(oof_predictions) == 2 * len(MODELS)
    covered = set()
    for weights, fnames in oof_predictions:
        trained = run["trained_on"][weights]
        assert not trained & set(fnames), f"{weights} predicted clips it trained on"
        k = int(Path(weights).name[len("fold")])
        assert all(folds[f] == k for f in fnames)
        assert trained == {f for f in folds.index if folds[f] != k}
        covered |= {(Path(weights).parent.name, f) for f in fnames}
    assert len(covered) == len(MODELS) * len(folds)


def test_rerun_skips_finished_work(run, capsys):
    models = run["root"] / "models"
    before = {p: p.stat().st_mtime_ns for p in models.rglob("*") if p.is_file()}
    capsys.readouterr()
    for stage in (pretrain, train, predict):
        assert stage.main(run["common"]) == 0
    out = capsys.readouterr().out
    assert "pretraining finished, skipped" in out and out.count("finished, skipped") >= 5
    assert "epoch" not in out.replace("best epoch", "")
    after = {p: p.stat().st_mtime_ns for p in models.rglob("*") if p.is_file() and p in before}
    unchanged = [p for p in before if p.suffix == ".h5" or p.name.startswith("fold")]
    assert all(before[p] == after[p] for p in unchanged)


def test_force_redoes_a_fold(run, capsys):
    weights = run["root"] / "models" / "v1mix" / "fold1.weights.h5"
    before = weights.stat().st_mtime_ns
    assert train.main(run["common"][:-len(MODELS) - 1] + ["--models", "v1mix", "--folds", "1", "--force"]) == 0
    assert weights.stat().st_mtime_ns > before
    assert "v1mix fold 1 epoch   2/2" in capsys.readouterr().out


def test_ensemble_refuses_missing_predictions(run, tmp_path):
    common = [a if a != str(run["root"] / "models") else str(tmp_path) for a in run["common"]]
    with pytest.raises(NotReady, match="predictions missing"):
        ensemble.main(common)


def test_submission_keeps_rows_of_test_clips_skipped_as_bad():
    scores = np.array([[0.2, 0.8], [0.4, 0.0]], np.float32)
    filled = ensemble.complete_rows(["a.wav", "bad.wav", "b.wav"], ["b.wav", "a.wav"], scores)
    np.testing.assert_allclose(filled, [[0.4, 0.0], [0.3, 0.4], [0.2, 0.8]])
