"""Figures a user reads: every text fully inside the image, and the notes they need."""
from __future__ import annotations

import numpy as np
import pytest
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg


def reaches_past_edges(fig) -> bool:
    """Whether anything drawn (texts, ticks, legends) lies past the figure's edges, i.e. is
    cut off in the PNG: the bounding box of all drawn artists against the figure's."""
    FigureCanvasAgg(fig)
    fig.canvas.draw()
    drawn, (width, height) = fig.get_tightbbox(fig.canvas.get_renderer()), fig.get_size_inches()
    slack = 0.01   # inches: rounding
    return drawn.x0 < -slack or drawn.y0 < -slack or drawn.x1 > width + slack or drawn.y1 > height + slack


def test_confusion_figure_keeps_its_labels_inside_with_long_class_names():
    from fat2019.eval import oof_analysis
    table = pd.DataFrame({"true": ["Accelerating_and_revving_and_vroom"] * 3,
                          "wrong": ["Race_car_and_auto_racing", "Bus", "Motorcycle"],
                          "count": [5, 3, 1], "share": [0.5, 0.3, 0.1]})
    fig = oof_analysis.confusion_figure(table, 20, "stacker_oof.csv: the 3 most frequent confusions "
                                                  "(300 clips, lwlrap 0.8560)")
    assert not reaches_past_edges(fig)


def ensemble_case(n_clips=90, n_classes=8, n_models=3, seed=0, stacker_quality=0.3):
    """OOF rows where every model is informative and the stacker is worse than the best."""
    rng = np.random.default_rng(seed)
    y = np.zeros((n_clips, n_classes), np.float32)
    y[np.arange(n_clips), rng.integers(0, n_classes - 1, n_clips)] = 1   # the last class: no clips
    models = [np.clip(y * q + rng.random(y.shape), 0, 1) for q in np.linspace(0.8, 0.4, n_models)]
    average = np.mean(models, axis=0)
    stacker = np.clip(y * stacker_quality + rng.random(y.shape), 0, 1)
    return y, models, average, stacker


def figure_of(case, names, weights):
    from fat2019.eval import reports
    y, models, average, stacker = case
    classes = [f"class_{i}_{'x' * (i % 3) * 9}" for i in range(y.shape[1])]
    table, best = reports.per_class_table(classes, y, names, models, average, stacker)
    overall = {"stacker": reports.lwlrap(y, stacker), "average": reports.lwlrap(y, average),
               "best": reports.lwlrap(y, models[names.index(best)])}
    return reports.ensemble_figure(table, best, overall, names, len(classes), len(y), weights), best


def per_fold_weights(n_folds, n_classes, n_inputs, trained, seed=0):
    from fat2019.eval import reports
    weights = np.stack([reports.untrained_start(n_classes, n_inputs)] * n_folds)
    for k in trained:
        weights[k] += np.random.default_rng(seed + k).normal(0, 0.1, (n_classes, n_inputs))
    return weights


def titles(fig) -> str:
    return "\n".join(t.get_text() for t in fig.findobj(lambda a: hasattr(a, "get_text")))


def test_the_report_says_how_many_folds_kept_the_untrained_stacker_and_colours_the_rest():
    names = ["v1mix", "max3exam", "model_MSC_se_r4_2.0_10fold"]
    case = ensemble_case()
    fig, _ = figure_of(case, names, per_fold_weights(3, 8, 4, trained=[0]))
    assert "2 of 3 folds kept the untrained stacker" in titles(fig)
    mesh = [c for c in fig.axes[1].collections][0]
    shown = np.asarray(mesh.get_array())
    # the colours show the trained fold's change from the start: not one dark column and white elsewhere
    assert np.abs(shown[:, :-1]).max() > 0.5 * np.abs(shown).max()
    fig, _ = figure_of(case, names, per_fold_weights(3, 8, 4, trained=[]))
    assert "untrained in all 3 folds" in titles(fig)


def test_the_report_points_out_a_member_that_beats_the_stacker():
    names = ["a", "b", "c"]
    fig, best = figure_of(ensemble_case(stacker_quality=0.1), names, per_fold_weights(3, 8, 4, trained=[0, 1, 2]))
    assert f"note: the best single model, {best}" in titles(fig) and "beats the stacker" in titles(fig)
    fig, _ = figure_of(ensemble_case(stacker_quality=3.0), names, per_fold_weights(3, 8, 4, trained=[0]))
    assert "beats the stacker" not in titles(fig) and "beat the stacker" not in titles(fig)


@pytest.mark.parametrize("n_classes,names,heat", [
    (8, ["a", "b", "c"], True), (8, ["a", "b", "c"], False),
    (80, ["v1mix", "max3exam", "model_MSC_se_r4_1.0_10fold", "model_MSC_se_r4_2.0_10fold",
          "model_se_r4_1.5_10fold", "se"], True)])
def test_the_ensemble_report_keeps_everything_inside(n_classes, names, heat):
    case = ensemble_case(n_clips=300, n_classes=n_classes, n_models=len(names))
    weights = per_fold_weights(3, n_classes, len(names) + 1, trained=[1]) if heat else None
    fig, _ = figure_of(case, names, weights)
    assert not reaches_past_edges(fig)


def test_the_segments_heatmap_keeps_a_long_title_inside():
    """tag.py --segments titled by the file and the score scale, both long: the title wraps."""
    from fat2019.eval import reports
    scores = np.random.default_rng(0).random((5, 12)).astype(np.float32)
    scale = "stacker: stacker output calibrated on its out-of-fold predictions (Platt, one map for all classes)"
    for n_windows in (5, 400):   # the figure grows with the windows, up to a maximum width
        starts = np.arange(n_windows, dtype=np.float64) * 2
        fig = reports.segments_figure("a field recording from the garden at dawn.wav",
                                      ["Accelerating_and_revving_and_vroom"] + [f"c{i}" for i in range(11)],
                                      starts, starts + 3, np.resize(scores, (n_windows, 12)), scale)
        assert not reaches_past_edges(fig)
        assert "Platt" in fig.axes[0].get_title()


def test_the_training_report_puts_its_lr_labels_above_the_curves(tmp_path):
    """The lr labels sit on the panel's top edge, outside the plotting area, apart."""
    from fat2019.eval import reports
    rows = [{"fold": f, "epoch": e, "lr": 2e-3 * 0.5 ** sum(e > m for m in (3, 5, 7)), "loss": 0.3 / e,
             "val_lrap": 0.6 + 0.04 * e, "val_lwlrap": 0.55 + 0.04 * e} for f in range(3) for e in range(1, 9)]
    pd.DataFrame(rows).to_csv(tmp_path / "history.csv", index=False)
    fig = reports.training_figure(tmp_path / "history.csv", "v1mix")
    assert not reaches_past_edges(fig)
    renderer = fig.canvas.get_renderer()
    for ax in fig.axes:
        if not ax.lines:   # the top axes that carry the labels
            continue
        plot_area = ax.get_window_extent(renderer)
        labels = [t for t in fig.findobj(lambda a: hasattr(a, "get_text") and a.get_text().startswith("lr "))
                  if t.get_visible() and plot_area.x0 - 1 <= t.get_window_extent(renderer).x0 <= plot_area.x1]
        labels = [t.get_window_extent(renderer) for t in labels]
        above = [b for b in labels if b.y0 >= plot_area.y1 - 1 and b.y0 <= plot_area.y1 + 40]
        assert len(above) == 3, [b.y0 for b in labels]
        above.sort(key=lambda b: b.x0)
        assert all(a.x1 <= b.x0 for a, b in zip(above, above[1:]))   # apart from each other
