"""Every model knows where it came from (issue 29): fold<k>.json records its start (the
pretraining's file and hash, or scratch and why), backend, precision and seeds; the
chain pretraining -> fold weights -> predictions is checked by hash. A pretraining redone
with `pretrain.py --force` (another seed: on one CPU the same seed gives the same bytes,
and then nothing is stale) makes the folds trained from it stale: predict.py and
ensemble.py refuse them naming both files, train.py trains them again, and then predict.py
predicts them again and ensemble.py runs."""
from __future__ import annotations

import json

import pytest

import ensemble
import features
import predict
import pretrain
import train
from fat2019.cli import call
from fat2019.util.digest import file_sha256
from helpers import make_dataset

TINY = ["epochs=1", "pretrain_epochs=1", "n_folds=2", "width=0.0625", "duration=0.5", "lr_milestones=1",
        "pretrain_lr_milestones=1", "pretrain_keep_from_epoch=0", "batch_size=4", "predict_batch_size=8",
        "stacker_epochs=2", "early_stop_min_epoch=0", "lr_multiplier=1"]


def stage_exit(stage, args, capsys) -> tuple[int, str, str]:
    """The stage's exit code as its script exits (bad input: one line `error: ...`, 2), and its output."""
    code = call(stage.main, args)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    root = tmp_path_factory.mktemp("provenance")
    data = make_dataset(root / "data", n_curated=12, n_noisy=6, n_test=2)
    assert features.main(["--data-dir", str(data), "--workers", "1"]) == 0
    common = ["--profile", "demo", "--data-dir", str(data), "--models-dir", str(root / "models"),
              "--submissions-dir", str(root / "subs"), "--models", "v1mix", "--set", *TINY]
    for stage in (pretrain, train, predict, ensemble):
        assert stage.main(common) == 0
    return {"root": root, "common": common, "folder": root / "models" / "v1mix"}


def test_a_fold_records_what_it_started_from(pipeline):
    folder = pipeline["folder"]
    pretrained = folder / "pretrain.weights.h5"
    for k in (0, 1):
        summary = json.loads((folder / f"fold{k}.json").read_text())
        assert summary["started_from"] == {"kind": "pretraining", "file": "v1mix/pretrain.weights.h5",
                                           "sha256": file_sha256(pretrained)}
        assert summary["backend"] == "tensorflow" and summary["precision"] == "float32" and summary["seed"] == 0
        assert summary["weights_sha256"] == file_sha256(folder / f"fold{k}.weights.h5")
        predicted = json.loads((folder / f"fold{k}.predicted.json").read_text())
        assert predicted["weights_sha256"] == summary["weights_sha256"]
    pretraining = json.loads((folder / "pretrain.json").read_text())
    assert pretraining["started_from"]["kind"] == "scratch" and pretraining["weights_sha256"] == file_sha256(pretrained)
    record = json.loads((pipeline["root"] / "models" / "run.json").read_text())
    assert record["precision"] == "float32"


def test_a_fold_from_scratch_says_why(pipeline, tmp_path):
    common = [a if a != str(pipeline["root"] / "models") else str(tmp_path / "models") for a in pipeline["common"]]
    assert train.main([*common, "--from-scratch", "--folds", "0"]) == 0
    summary = json.loads((tmp_path / "models" / "v1mix" / "fold0.json").read_text())
    assert summary["started_from"] == {"kind": "scratch", "why": "--from-scratch"}


def test_another_precision_than_the_recorded_one_is_refused(pipeline, capsys):
    code, _, err = stage_exit(train, [*pipeline["common"], "--mixed-precision", "bfloat16"], capsys)
    assert code == 2 and "precision (--mixed-precision): recorded 'float32', given 'mixed_bfloat16'" in err


def test_a_pretraining_redone_with_force_makes_its_folds_stale(pipeline, capsys):
    common, folder = pipeline["common"], pipeline["folder"]
    weights = [folder / f"fold{k}.weights.h5" for k in (0, 1)]
    pretrained = folder / "pretrain.weights.h5"
    before = file_sha256(pretrained)
    capsys.readouterr()
    assert pretrain.main([*common, "--force", "--seed", "5"]) == 0
    out = capsys.readouterr().out
    assert file_sha256(pretrained) != before
    assert f"{pretrained} changed; 2 fold(s) were trained from the one it replaced" in out
    assert all(str(w) in out for w in weights)

    for stage in (predict, ensemble):   # both refuse, naming the fold's weights and the pretraining
        code, out, err = stage_exit(stage, common, capsys)
        assert code == 2, (stage.__name__, out, err)
        for w in weights:
            assert f"{w} was trained from {pretrained} (sha256 {before[:12]}), which has changed since" in err

    assert train.main(common) == 0   # trains the stale folds again, saying why
    out = capsys.readouterr().out
    for k, w in enumerate(weights):
        assert f"v1mix fold {k}: {w} was trained from {pretrained}" in out and "training it again" in out
        summary = json.loads((folder / f"fold{k}.json").read_text())
        assert summary["started_from"]["sha256"] == file_sha256(pretrained)
    assert "train: 2/2 units done" in out   # the stale folds are counted in the progress from the start
    assert predict.main(common) == 0   # the retrained folds' predictions are redone
    out = capsys.readouterr().out
    assert "v1mix fold 0: predicted" in out and "v1mix fold 1: predicted" in out
    for k in (0, 1):
        predicted = json.loads((folder / f"fold{k}.predicted.json").read_text())
        assert predicted["weights_sha256"] == file_sha256(weights[k])
    assert ensemble.main(common) == 0
