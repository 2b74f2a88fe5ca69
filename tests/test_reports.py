"""Per-class lwlrap, the training and ensemble reports, and that the stages write them."""
import os

import numpy as np
import pandas as pd
import pytest
from matplotlib.image import imread

from fat2019.eval import metrics
from fat2019.eval import reports


def image_is_a_real_plot(path, min_width=600, min_height=300):
    """A PNG of plot size with many colours (lines, markers, text), not a blank canvas."""
    pixels = imread(path)
    colours = np.unique((pixels[..., :3] * 255).astype(np.uint8).reshape(-1, 3), axis=0)
    return pixels.shape[1] >= min_width and pixels.shape[0] >= min_height and len(colours) > 50


def test_per_class_lwlrap_by_hand_with_ties():
    # clip 0: positives A (0.5, tied with B) and C (0.1): A ranks 2nd with 1 positive at or
    # above it (1/2), C ranks 3rd with 2 (2/3). Clip 1: positive B ranks 1st (1). Clip 2: none.
    y = np.array([[1, 0, 1], [0, 1, 0], [0, 0, 0]])
    s = np.array([[0.5, 0.5, 0.1], [0.2, 0.9, 0.3], [0.3, 0.2, 0.1]])
    score, weight = metrics.per_class_lwlrap(y, s)
    np.testing.assert_allclose(score, [0.5, 1.0, 2 / 3])
    np.testing.assert_allclose(weight, [1 / 3, 1 / 3, 1 / 3])
    assert np.sum(score * weight) == pytest.approx(metrics.lwlrap(y, s))


@pytest.mark.parametrize("seed", [0, 1])
def test_per_class_lwlrap_weighted_sum_is_lwlrap(seed):
    rng = np.random.default_rng(seed)
    y = (rng.random((300, 12)) < 0.15).astype(np.float32)
    y[:, 4] = 0                                     # a class without clips: weight 0, score 0
    scores = np.round(rng.random(y.shape), 1)       # rounded: many ties
    score, weight = metrics.per_class_lwlrap(y, scores, chunk=7)   # chunks must not matter
    assert weight[4] == 0 and score[4] == 0
    assert weight.sum() == pytest.approx(1.0)
    assert np.sum(score * weight) == pytest.approx(metrics.lwlrap(y, scores), abs=1e-12)


def history_table(n_folds=3, epochs=6, milestones=(3, 5)):
    rng = np.random.default_rng(0)
    rows = []
    for fold in range(n_folds):
        for epoch in range(1, epochs + 1 - (fold == 1)):           # fold 1 stopped early
            rows.append({"fold": fold, "epoch": epoch, "lr": 1e-3 * 0.5 ** sum(epoch > m for m in milestones),
                         "loss": 0.3 / epoch, "val_lrap": 0.5 + 0.05 * epoch + 0.01 * rng.random(),
                         "val_lwlrap": 0.45 + 0.05 * epoch})
    return pd.DataFrame(rows)


def test_lr_steps_are_the_epochs_that_start_a_new_rate():
    assert reports.lr_steps(history_table()) == [(4, 5e-4), (6, 2.5e-4)]
    assert reports.lr_steps(history_table(milestones=())) == []


def test_training_report_with_and_without_pretraining(tmp_path):
    folder = tmp_path / "v1mix"
    folder.mkdir()
    history_table().to_csv(folder / "history.csv", index=False)
    path = reports.update_training_report(folder)
    assert path == folder / "report.png" and image_is_a_real_plot(path)
    assert not list(folder.glob("*.tmp"))
    assert reports.update_training_report(folder) is None          # current: not redrawn

    source = tmp_path / "source"   # a model whose pretraining another starts from
    source.mkdir()
    history_table(n_folds=1, epochs=4).drop(columns="fold").to_csv(source / "pretrain.history.csv", index=False)
    (source / "pretrain.json").write_text('{"best_epoch": 3}')
    bare_height = imread(folder / "report.png").shape[0]
    os.utime(folder / "report.png", ns=(0, 0))       # older than the new input, whatever the clock's grain
    path = reports.update_training_report(folder, source / "pretrain.history.csv")
    assert path is not None and image_is_a_real_plot(path)
    assert imread(path).shape[0] > bare_height                      # a second row of panels


def synthetic_oof(seed=0, n=120, n_classes=6):
    rng = np.random.default_rng(seed)
    y = np.zeros((n, n_classes), np.float32)
    y[np.arange(n), rng.integers(0, n_classes - 1, n)] = 1          # the last class: no clips
    models = [np.clip(y * q + rng.random(y.shape), 0, 1) for q in (0.2, 0.6, 0.4)]
    average = np.mean(models, axis=0)
    stacker = np.clip(average + 0.5 * y * rng.random(y.shape), 0, 1)
    return y, models, average, stacker


def test_ensemble_report_per_class_table_and_figure(tmp_path):
    y, models, average, stacker = synthetic_oof()
    classes = [f"class {c}" for c in "ABCDEF"]
    names = ["m0", "m1", "m2"]
    weights = np.random.default_rng(1).normal(size=(6, 4))
    reports.ensemble_report(tmp_path, classes, y, names, models, average, stacker, weights)

    table = pd.read_csv(tmp_path / "per_class.csv")
    assert list(table.columns) == ["class", "n_positives", "weight", "lwlrap_stacker", "lwlrap_average",
                                   "lwlrap_best_single", "lwlrap_m0", "lwlrap_m1", "lwlrap_m2"]
    assert list(table["class"]) == classes and table["n_positives"].tolist() == y.sum(axis=0).astype(int).tolist()
    assert table.loc[5, "n_positives"] == 0 and table.iloc[5, 3:].isna().all()
    # the class-weighted sum of each column is that predictor's lwlrap (to the CSV's 6 digits)
    for column, scores in [("lwlrap_stacker", stacker), ("lwlrap_average", average),
                           ("lwlrap_m0", models[0]), ("lwlrap_m1", models[1]), ("lwlrap_best_single", models[1])]:
        assert (table["weight"] * table[column]).sum() == pytest.approx(metrics.lwlrap(y, scores), abs=1e-5)
    assert image_is_a_real_plot(tmp_path / "report.png")


def test_ensemble_report_without_stacker_weights(tmp_path):
    y, models, average, stacker = synthetic_oof(seed=2)
    reports.ensemble_report(tmp_path, list("ABCDEF"), y, ["a", "b", "c"], models, average, stacker, None)
    assert image_is_a_real_plot(tmp_path / "report.png", min_width=400)


def test_the_stages_write_their_reports(pipeline_run):
    root = pipeline_run["root"]
    for name in ("v1mix", "max3exam"):
        assert image_is_a_real_plot(root / "models" / name / "report.png")
    assert image_is_a_real_plot(root / "subs" / "report.png")
    table = pd.read_csv(root / "subs" / "per_class.csv")
    classes = list(pd.read_csv(pipeline_run["data"] / "sample_submission.csv").columns[1:])
    assert list(table["class"]) == classes
    assert {"lwlrap_v1mix", "lwlrap_max3exam", "lwlrap_stacker"} <= set(table.columns)
    curated = pd.read_csv(pipeline_run["data"] / "train_curated.csv")
    positives = [sum(c in labels.split(",") for labels in curated["labels"]) for c in classes]
    assert table["n_positives"].tolist() == positives
    stacker_oof = pd.read_csv(root / "subs" / "stacker_oof.csv").set_index("fname")
    truth = np.array([[c in labels.split(",") for c in classes] for labels in curated["labels"]], np.float32)
    scores = stacker_oof.loc[curated["fname"], classes].to_numpy()
    assert (table["weight"] * table["lwlrap_stacker"]).sum() == pytest.approx(metrics.lwlrap(truth, scores),
                                                                               abs=1e-4)
