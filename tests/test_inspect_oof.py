"""inspect_oof.py on small synthetic CSVs with planted structure: per-class and per-fold
tables, the worst clips, the top confusion, the files written and the errors."""
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

import inspect_oof
from fat2019.eval import metrics, oof_analysis
from fat2019.data.dataset import DatasetError
from test_layout import CODE
from test_reports import image_is_a_real_plot

CLASSES = ["Bark", "Chirp", "Cough", "Drip", "Engine", "Fart"]
N_FOLDS = 4
PLANTED = ("Cough", "Drip")     # on 7 Cough clips, Drip outscores Cough
WORST = "worst.wav"             # its only label, Bark, scores lowest of all its classes
LOUD = "loud.wav"               # Engine, which it does not carry, scores 0.999


def synthetic_run(folder, n_clips=48, seed=0):
    """labels.csv, folds.csv and oof.csv in `folder`: true labels score 0.6-0.98, wrong ones
    0-0.3, except the planted clips. Returns (labels, folds, oof) paths."""
    rng = np.random.default_rng(seed)
    fnames = [f"clip{i:03d}.wav" for i in range(n_clips - 2)] + [WORST, LOUD]
    y = np.zeros((n_clips, len(CLASSES)), np.float32)
    y[np.arange(n_clips), np.arange(n_clips) % len(CLASSES)] = 1
    y[::5, 4] = 1                                  # some clips carry two labels
    y[fnames.index(WORST)] = np.eye(len(CLASSES))[0]
    y[fnames.index(LOUD)] = np.eye(len(CLASSES))[5]
    scores = np.where(y > 0, rng.uniform(0.6, 0.98, y.shape), rng.uniform(0.0, 0.3, y.shape))
    cough, drip = (CLASSES.index(c) for c in PLANTED)
    planted = [i for i in np.flatnonzero(y[:, cough] > 0) if y[i, drip] == 0][:7]
    scores[planted, drip], scores[planted, cough] = 0.97, 0.5
    scores[fnames.index(WORST), 0] = 0.0
    scores[fnames.index(LOUD), 4] = 0.999
    labels = folder / "labels.csv"
    label_lists = [",".join(np.array(CLASSES)[t > 0]) for t in y]
    pd.DataFrame({"fname": fnames, "labels": label_lists}).to_csv(labels, index=False)
    folds = folder / "folds.csv"
    pd.DataFrame({"fname": fnames, "fold": np.arange(n_clips) % N_FOLDS}).to_csv(folds, index=False)
    oof = folder / "oof.csv"
    table = pd.DataFrame(scores, columns=CLASSES)
    table.insert(0, "fname", fnames)
    table.to_csv(oof, index=False)
    return labels, folds, oof, y, scores, len(planted)


def inspect(oof, labels, folds, *extra):
    return inspect_oof.main([str(oof), "--labels", str(labels), "--folds", str(folds), *map(str, extra)])


def test_tables_find_what_was_planted(tmp_path, capsys):
    labels, folds, oof, y, scores, n_planted = synthetic_run(tmp_path)
    assert inspect(oof, labels, folds, "--top", 5) == 0
    out_dir = tmp_path / "inspect"
    printed = capsys.readouterr().out

    per_class = pd.read_csv(out_dir / "oof.per_class.csv")
    assert per_class["lwlrap"].is_monotonic_increasing               # worst first
    score, weight = metrics.per_class_lwlrap(y, scores)
    expected = dict(zip(CLASSES, score))
    np.testing.assert_allclose(per_class["lwlrap"], [expected[c] for c in per_class["class"]],
                               rtol=1e-5)                          # the CSV keeps 6 digits
    assert per_class["class"].iloc[0] == "Cough"                      # the planted class loses most
    assert 1 - per_class["lost"].sum() == pytest.approx(metrics.lwlrap(y, scores), abs=1e-5)
    assert per_class.set_index("class").loc["Cough", "most_above"] == "Drip"

    clips = pd.read_csv(out_dir / "oof.clips.csv")
    assert clips.loc[0, "fname"] == WORST and clips.loc[0, "worst_label"] == "Bark"
    assert clips.loc[0, "rank"] == len(CLASSES) and clips.loc[0, "score"] == 0.0
    top_wrong = clips.sort_values("wrong_score", ascending=False).iloc[0]
    assert (top_wrong["fname"], top_wrong["top_wrong"]) == (LOUD, "Engine")

    confusions = pd.read_csv(out_dir / "oof.confusions.csv")
    assert tuple(confusions.loc[0, ["true", "wrong"]]) == PLANTED and confusions.loc[0, "count"] == n_planted
    assert confusions["count"].iloc[1] < n_planted
    assert image_is_a_real_plot(out_dir / "oof.confusions.png", min_width=500, min_height=150)

    for section in ("per-class lwlrap", "lwlrap per fold", "ranks lowest", "highest-scored wrong", "confusions"):
        assert section in printed
    assert f"{out_dir / 'oof.confusions.png'}" in printed
    assert "(5 of" in printed                                          # --top limits what is printed


def test_per_fold_lwlrap_and_a_clip_without_fold(tmp_path, capsys):
    labels, folds, oof, y, scores, _ = synthetic_run(tmp_path)
    table = pd.read_csv(folds)
    table.iloc[:-1].to_csv(folds, index=False)                           # LOUD has no fold now
    inspect(oof, labels, folds, "--out", tmp_path / "elsewhere")
    assert "1 clip(s) are not in" in capsys.readouterr().err
    per_fold = pd.read_csv(tmp_path / "elsewhere" / "oof.folds.csv", dtype={"fold": str}).set_index("fold")
    assert list(per_fold.index) == [*map(str, range(N_FOLDS)), "all"]
    fold = table["fold"].to_numpy()
    for k in range(N_FOLDS):
        rows = (fold == k) & (table["fname"] != LOUD).to_numpy()
        assert per_fold.loc[str(k), "clips"] == rows.sum()
        assert per_fold.loc[str(k), "lwlrap"] == pytest.approx(metrics.lwlrap(y[rows], scores[rows]), rel=1e-5)
        assert per_fold.loc[str(k), "lrap"] == pytest.approx(metrics.lrap(y[rows], scores[rows]), rel=1e-5)
    assert per_fold.loc["all", "clips"] == len(y)
    assert per_fold.loc["all", "lwlrap"] == pytest.approx(metrics.lwlrap(y, scores), rel=1e-5)
    clips = pd.read_csv(tmp_path / "elsewhere" / "oof.clips.csv").set_index("fname")
    assert pd.isna(clips.loc[LOUD, "fold"]) and clips["fold"].notna().sum() == len(y) - 1


@pytest.mark.parametrize("seed", [0, 1])
def test_fold_scores_and_ranks_match_sklearn_with_ties(seed):
    rng = np.random.default_rng(seed)
    truth = rng.random((90, 7)) < 0.2
    truth[np.arange(90), rng.integers(0, 7, 90)] = True
    scores = np.round(rng.random(truth.shape), 1)                    # rounded: many ties
    folds = rng.integers(0, 3, 90)
    folds[:4] = oof_analysis.NO_FOLD
    oof = oof_analysis.OutOfFold([f"{i}.wav" for i in range(90)], [str(c) for c in range(7)], truth, scores,
                                folds)
    table = oof_analysis.per_fold_table(oof).set_index("fold")
    for name, rows in [("0", folds == 0), ("2", folds == 2), ("all", np.ones(90, bool))]:
        assert table.loc[name, "lwlrap"] == pytest.approx(metrics.lwlrap(truth[rows], scores[rows]), abs=1e-12)
        assert table.loc[name, "lrap"] == pytest.approx(metrics.lrap(truth[rows], scores[rows]), abs=1e-12)
    assert table.loc["all", "clips"] == 90 and table.drop("all")["clips"].sum() == 86
    # classes scored at or above = all minus those scored strictly below
    expected_rank = np.array([7 - np.searchsorted(np.sort(row), row, side="left") for row in scores])
    np.testing.assert_array_equal(oof.rank, expected_rank)


def test_names_resolve_to_the_profile_folders(tmp_path, capsys, monkeypatch):
    data, models, subs = tmp_path / "data", tmp_path / "models", tmp_path / "subs"
    for d in (data, models / "v1mix", subs):
        d.mkdir(parents=True)
    labels, folds, oof, *_ = synthetic_run(tmp_path)
    labels.rename(data / "train_curated.csv")
    folds.rename(models / "folds.csv")
    (models / "v1mix" / "oof.csv").write_text(oof.read_text())
    oof.rename(subs / "average_oof.csv")
    dirs = ["--data-dir", str(data), "--models-dir", str(models), "--submissions-dir", str(subs)]
    from fat2019.eval import oof_analysis
    titles = []
    real_figure = oof_analysis.confusion_figure
    monkeypatch.setattr(oof_analysis, "confusion_figure", lambda t, top, title: titles.append(title) or
                        real_figure(t, top, title))
    assert inspect_oof.main(["v1mix", *dirs]) == 0
    assert (models / "v1mix" / "inspect" / "oof.per_class.csv").is_file()
    assert "scores (score, wrong_score): v1mix's probabilities" in capsys.readouterr().out
    assert inspect_oof.main(["average", *dirs]) == 0
    assert (subs / "inspect" / "average_oof.clips.csv").is_file()
    assert "scores (score, wrong_score): the weighted average" in capsys.readouterr().out
    # the confusions chart names whose predictions it shows
    assert titles[0].startswith("v1mix (oof.csv): the ") and titles[1].startswith("weighted average (average_oof")
    assert "uncalibrated" in inspect_oof.describe(subs / "stacker_oof.csv")[1]
    with pytest.raises(DatasetError, match="stacker_oof.csv: file not found"):
        inspect_oof.main(["--ensemble", *dirs])
    with pytest.raises(DatasetError, match=r"no out-of-fold predictions for model 'nope'(.|\n)*\['v1mix'\]"):
        inspect_oof.main(["nope", *dirs])


def test_a_class_missing_from_the_oof_columns_is_named(tmp_path):
    labels, folds, oof, *_ = synthetic_run(tmp_path)
    pd.read_csv(oof).drop(columns="Fart").to_csv(oof, index=False)
    with pytest.raises(DatasetError, match=r"labels.csv do not fit .*oof.csv(.|\n)*"
                                           r"\['Fart'\] \(not a column of oof.csv\)"):
        inspect(oof, labels, folds)


def test_a_clip_without_labels_is_named(tmp_path):
    labels, folds, oof, *_ = synthetic_run(tmp_path)
    pd.read_csv(labels).query("fname != @WORST").to_csv(labels, index=False)
    with pytest.raises(DatasetError, match=rf"clips without labels in .*labels.csv(.|\n)*1 of its 48 clips.*{WORST}"):
        inspect(oof, labels, folds)


def test_a_bad_score_and_a_repeated_clip_are_named_with_their_lines(tmp_path):
    labels, folds, oof, *_ = synthetic_run(tmp_path)
    table = pd.read_csv(oof, dtype=str)
    table.loc[3, "Drip"] = "high"
    pd.concat([table, table.iloc[[0]]]).to_csv(oof, index=False)
    with pytest.raises(DatasetError) as error:
        inspect(oof, labels, folds)
    assert "oof.csv line 5, column 'Drip': 'high' is not a finite number" in str(error.value)
    assert "clip 'clip000.wav' appears 2 times" in str(error.value)


def test_a_subset_of_the_labelled_clips_is_inspected(tmp_path, capsys):
    labels, folds, oof, y, scores, _ = synthetic_run(tmp_path)
    pd.read_csv(oof).iloc[::2].to_csv(tmp_path / "fold0.oof.csv", index=False)
    inspect(tmp_path / "fold0.oof.csv", labels, folds, "--no-folds")
    assert "24 clips (of the 48 in labels.csv)" in capsys.readouterr().out
    per_fold = pd.read_csv(tmp_path / "inspect" / "fold0.oof.folds.csv")
    assert list(per_fold["fold"]) == ["all"]
    assert per_fold.loc[0, "lwlrap"] == pytest.approx(metrics.lwlrap(y[::2], scores[::2]), rel=1e-5)


@pytest.mark.parametrize("which", ["labels", "folds"])
def test_a_missing_labels_or_folds_file_is_named(tmp_path, which):
    labels, folds, oof, *_ = synthetic_run(tmp_path)
    missing = {"labels": labels, "folds": folds}[which]
    missing.unlink()
    with pytest.raises(DatasetError, match=rf"{missing}: file not found \(.*--{which}"):
        inspect(oof, labels, folds)


def test_the_script_exits_2_naming_a_missing_file(tmp_path):
    labels, folds, _, *_ = synthetic_run(tmp_path)
    missing = tmp_path / "absent.csv"
    run = subprocess.run([sys.executable, inspect_oof.__file__, str(missing), "--labels", str(labels),
                          "--folds", str(folds)], capture_output=True, text=True)
    assert run.returncode == 2
    assert f"{missing}: file not found" in run.stderr


def test_it_imports_no_tensorflow_or_keras():
    """It runs where only the CSVs are: importing it pulls in no TensorFlow, Keras or JAX."""
    probe = ("import sys; sys.path.insert(0, sys.argv[1]); import inspect_oof; "
             "print(sorted(m for m in ('tensorflow', 'keras', 'kapre', 'jax') if m in sys.modules))")
    run = subprocess.run([sys.executable, "-c", probe, str(CODE)], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "[]"
