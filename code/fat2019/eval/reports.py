"""Figures and tables the stages leave behind, to read a run at a glance.

    models/<name>/report.png     train.py: per-fold validation LRAP and lwlrap and training
                                 loss per epoch, learning-rate steps marked, and the noisy
                                 pretraining curve when the model started from one
    submissions/report.png       ensemble.py: per-class OOF lwlrap of the stacker, the weighted
                                 average and the best single model (a red note when one of
                                 those beats the stacker); what training changed in the
                                 stacker's per-class weights, and how many folds kept it untrained
    submissions/per_class.csv    ensemble.py: the per-class figures behind that plot
    <name>.heatmap.png           tag.py --segments: the top classes' scores over a long
                                 file's windows

Figures are drawn on matplotlib Figure objects (Agg canvas, no pyplot state) and written
atomically, like every other file of the pipeline.
"""
from __future__ import annotations

import json
import os
import socket
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from matplotlib.transforms import offset_copy

from fat2019 import layout
from fat2019.util.atomic import atomic_write_text
from fat2019.eval.metrics import lwlrap, per_class_lwlrap

DPI = 110


def save_figure(fig: Figure, path: Path) -> Path:
    """PNG written to a temporary name, then moved into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # a temporary name of its own per host and process: fold processes (train.py --gpus)
    # redraw the same report at once
    tmp = path.with_name(f"{path.name}.{socket.gethostname()}.{os.getpid()}.tmp")
    fig.savefig(tmp, format="png", dpi=DPI)
    os.replace(tmp, path)
    return path


def lr_steps(history: pd.DataFrame) -> list[tuple[int, float]]:
    """(epoch, new lr) for every epoch whose learning rate differs from the previous one's
    (the schedule is the same for every fold, so the union over folds)."""
    steps = set()
    for _, run in history.groupby("fold") if "fold" in history else [(0, history)]:
        run = run.sort_values("epoch")
        changed = run["lr"].to_numpy()[1:] != run["lr"].to_numpy()[:-1]
        steps |= {(int(e), float(lr)) for e, lr in zip(run["epoch"].to_numpy()[1:][changed],
                                                       run["lr"].to_numpy()[1:][changed])}
    return sorted(steps)


def mark_lr_steps(ax, steps: list[tuple[int, float]], label: bool) -> None:
    """A dashed line just before each epoch that starts a new learning rate; with `label`,
    the new rate above the panel, on a top axis of its own (inside, it would cover curves)."""
    for epoch, _ in steps:
        ax.axvline(epoch - 0.5, color="0.55", linestyle="--", linewidth=0.8, zorder=0)
    if label and steps:
        top = ax.secondary_xaxis("top")
        top.set_xticks([epoch - 0.5 for epoch, _ in steps], [f"lr {lr:.1e}" for _, lr in steps])
        top.tick_params(labelsize=7, labelcolor="0.35", color="0.55", length=2, pad=1)


def epoch_axis(ax, last_epoch: int) -> None:
    """Whole epochs, with half an epoch of room either side (a 1-epoch run stays visible)."""
    ax.set_xlim(0.5, last_epoch + 0.5)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
    ax.set_xlabel("epoch")


def best_epochs(history: pd.DataFrame) -> pd.DataFrame:
    """Per fold, the epoch with the best validation LRAP (the one training keeps)."""
    rows = history.loc[history.groupby("fold")["val_lrap"].idxmax()]
    return rows.set_index("fold")


def training_report(history_csv: Path, out: Path, title: str,
                    pretrain_history_csv: Path | None = None) -> Path:
    """models/<name>/report.png from history.csv (and pretrain.history.csv when given and present)."""
    return save_figure(training_figure(history_csv, title, pretrain_history_csv), out)


def training_figure(history_csv: Path, title: str, pretrain_history_csv: Path | None = None) -> Figure:
    """The training report's figure.

    Panels: validation LRAP, validation lwlrap, training loss, each with one thin line per
    fold, the mean over the folds bold and each fold's kept epoch dotted; and, when the model
    started from noisy pretraining, that run's curves with its kept epoch starred.
    """
    history = pd.read_csv(history_csv).reset_index(drop=True)
    pretrain = None
    if pretrain_history_csv is not None and Path(pretrain_history_csv).is_file():
        pretrain = pd.read_csv(pretrain_history_csv)
    n_panels = 4 if pretrain is not None else 3
    fig = Figure(figsize=(11, 7.5) if n_panels == 4 else (15, 4.2), layout="constrained")
    axes = fig.subplots(2, 2).ravel() if n_panels == 4 else fig.subplots(1, 3)

    folds = sorted(history["fold"].unique())
    colours = [f"C{i % 10}" for i in range(len(folds))]
    best = best_epochs(history)
    steps = lr_steps(history)
    dots = "." if history["epoch"].max() <= 20 else None   # short runs: every epoch visible
    panels = (("val_lrap", "validation LRAP (3-TTA)"), ("val_lwlrap", "validation lwlrap (3-TTA)"),
              ("loss", "training loss (BCE)"))
    for ax, (column, name) in zip(axes, panels):
        for fold, colour in zip(folds, colours):
            run = history[history["fold"] == fold].sort_values("epoch")
            ax.plot(run["epoch"], run[column], color=colour, linewidth=1, alpha=0.7, marker=dots,
                    label=f"fold {fold}: best LRAP {best.loc[fold, 'val_lrap']:.3f} @ {best.loc[fold, 'epoch']}")
            ax.plot(best.loc[fold, "epoch"], best.loc[fold, column], "o", color=colour, markersize=4)
        mean = history.groupby("epoch")[column].mean()
        ax.plot(mean.index, mean.to_numpy(), color="black", linewidth=2.2, marker=dots, label="mean over folds")
        mark_lr_steps(ax, steps, label=True)
        ax.set_title(name, fontsize=10)
        epoch_axis(ax, int(history["epoch"].max()))
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7, loc="lower right", ncol=2 if len(folds) > 5 else 1)

    if pretrain is not None:
        ax = axes[3]
        for column, colour, name in (("val_lrap", "C0", "curated LRAP"), ("val_lwlrap", "C1", "curated lwlrap")):
            ax.plot(pretrain["epoch"], pretrain[column], color=colour, linewidth=1.8, marker="o", markersize=3,
                    label=name)
        loss_ax = ax.twinx()
        loss_ax.plot(pretrain["epoch"], pretrain["loss"], color="0.4", linewidth=1.2, linestyle=":", marker=".",
                     label="noisy loss (right)")
        loss_ax.set_ylabel("training loss", fontsize=8)
        summary_path = layout.summary_path(Path(pretrain_history_csv).parent, layout.PRETRAIN)
        if summary_path.is_file():  # the epoch whose weights the folds start from
            kept = json.loads(summary_path.read_text()).get("best_epoch")
            row = pretrain[pretrain["epoch"] == kept]
            if len(row):
                ax.plot(kept, row["val_lrap"].iloc[0], "*", color="C3", markersize=12, label=f"kept (epoch {kept})")
        mark_lr_steps(ax, lr_steps(pretrain), label=True)
        source = Path(pretrain_history_csv).resolve().parent.name
        ax.set_title(f"noisy pretraining ({source}), scored on curated", fontsize=10)
        epoch_axis(ax, int(pretrain["epoch"].max()))
        ax.grid(alpha=0.3)
        handles, labels = ax.get_legend_handles_labels()
        more_handles, more_labels = loss_ax.get_legend_handles_labels()
        ax.legend(handles + more_handles, labels + more_labels, fontsize=7, loc="lower right")

    fig.suptitle(f"{title}: {len(folds)} fold(s), mean best val LRAP {best['val_lrap'].mean():.4f}, "
                 f"lwlrap at those epochs {best['val_lwlrap'].mean():.4f}", fontsize=12)
    return fig


def update_training_report(folder: Path, pretrain_history_csv: Path | None = None) -> Path | None:
    """Redraw models/<name>/report.png when history.csv (or the pretraining history) is
    newer than it; None when there is no history yet or the report is current."""
    folder = Path(folder)
    history, out = folder / layout.HISTORY_CSV, folder / layout.REPORT_PNG
    if not history.is_file():
        return None
    inputs = [history] + ([Path(pretrain_history_csv)] if pretrain_history_csv is not None
                          and Path(pretrain_history_csv).is_file() else [])
    if out.is_file() and all(p.stat().st_mtime_ns <= out.stat().st_mtime_ns for p in inputs):
        return None
    return training_report(history, out, folder.name, pretrain_history_csv)


def per_class_table(classes: list[str], y_true: np.ndarray, model_names: list[str],
                    model_scores: list[np.ndarray], average: np.ndarray,
                    stacker: np.ndarray) -> tuple[pd.DataFrame, str]:
    """One row per class, in class order: class, n_positives, weight (share of all positive
    labels: lwlrap = sum(weight * lwlrap of a class)), lwlrap of the stacker, the weighted
    average, the best single model (best overall OOF lwlrap) and each model. A class no
    clip carries has weight 0 and no lwlrap (empty in the CSV).
    Returns (table, name of the best single model)."""
    best = model_names[int(np.argmax([lwlrap(y_true, s) for s in model_scores]))]
    stacker_score, weight = per_class_lwlrap(y_true, stacker)
    table = pd.DataFrame({"class": classes, "n_positives": (y_true > 0.5).sum(axis=0).astype(int),
                          "weight": weight, "lwlrap_stacker": stacker_score,
                          "lwlrap_average": per_class_lwlrap(y_true, average)[0]})
    per_model = {f"lwlrap_{n}": per_class_lwlrap(y_true, s)[0] for n, s in zip(model_names, model_scores)}
    table["lwlrap_best_single"] = per_model[f"lwlrap_{best}"]
    for column, values in per_model.items():
        table[column] = values
    lwlrap_columns = [c for c in table.columns if c.startswith("lwlrap_")]
    table.loc[table["n_positives"] == 0, lwlrap_columns] = np.nan
    return table, best


def untrained_start(n_classes: int, n_inputs: int) -> np.ndarray:
    """The stacker's per-class weights before training (layers.ClasswiseWeights): 0 for
    each model, 1 for the weighted average (last column)."""
    start = np.zeros((n_classes, n_inputs))
    start[:, -1] = 1.0
    return start


def untrained_folds(per_fold: np.ndarray) -> np.ndarray:
    """Per fold (axis 0), whether its stacker kept its untrained weights (training never
    beat the start, so ScoreBeforeEpoch restored them)."""
    start = untrained_start(*per_fold.shape[1:])
    return np.array([np.allclose(w, start, atol=1e-6) for w in per_fold])


def beaten_stacker_note(overall: dict[str, float], best: str) -> str | None:
    """A warning line when the best single model or the weighted average scores a higher
    OOF lwlrap than the stacker (the submission), else None."""
    better = [f"{name} ({overall[key]:.4f})" for key, name in
              (("best", f"the best single model, {best}"), ("average", "the weighted average"))
              if overall[key] > overall["stacker"]]
    if not better:
        return None
    return (f"note: {' and '.join(better)} {'beats' if len(better) == 1 else 'beat'} the stacker "
            f"({overall['stacker']:.4f}) on out-of-fold lwlrap")


def beaten_submission_note(scores: dict, model_names: list[str], submission: str) -> str | None:
    """beaten_stacker_note for a submission that is not the stacker: a warning line when a
    single model scores a higher OOF lwlrap than the submission's combination."""
    best = max(model_names, key=lambda n: scores[n]["cv_lwlrap"])
    if scores[best]["cv_lwlrap"] <= scores[submission]["cv_lwlrap"]:
        return None
    return (f"note: the best single model, {best} ({scores[best]['cv_lwlrap']:.4f}) beats the submission's "
            f"combination, {submission} ({scores[submission]['cv_lwlrap']:.4f}), on out-of-fold lwlrap")


def draw_per_class(ax, table: pd.DataFrame, order: np.ndarray, best: str, overall: dict[str, float]) -> None:
    """Left panel: each class's OOF lwlrap of the best single model, the weighted average
    and the stacker, one row per class, worst (by the stacker) on top; its legend right
    under its x label (below the whole figure, it left the room that the heatmap's slanted
    model names take empty; inside the panel, it would hide some class's markers)."""
    rows = np.arange(len(order))
    beats = {k: " (beats the stacker)" if overall[k] > overall["stacker"] else "" for k in ("best", "average")}
    series = (("lwlrap_best_single", "x", "C2", f"best single model, {best} ({overall['best']:.4f}){beats['best']}"),
              ("lwlrap_average", "^", "C1", f"weighted average ({overall['average']:.4f}){beats['average']}"),
              ("lwlrap_stacker", "o", "C0", f"stacker ({overall['stacker']:.4f})"))
    values = np.column_stack([table[c].to_numpy()[order] for c, *_ in series])
    ax.hlines(rows, values.min(axis=1), values.max(axis=1), color="0.75", linewidth=1, zorder=1)
    for k, (_, marker, colour, label) in enumerate(series):
        ax.plot(values[:, k], rows, marker, color=colour, markersize=5, label=label, zorder=2,
                markerfacecolor="none" if marker == "^" else colour)
    ax.set_yticks(rows, [f"{table['class'].iloc[i]} ({table['n_positives'].iloc[i]})" for i in order],
                  fontsize=7 if len(order) > 30 else 9)
    low = float(values.min()) if values.size else 0.0
    ax.set_xlim(max(0.0, np.floor(low * 10 - 0.2) / 10), 1.02)  # zoom in to where the classes are
    ax.set_xlabel("out-of-fold lwlrap of the class")
    ax.grid(axis="x", alpha=0.3)
    below_xlabel = offset_copy(ax.transAxes, fig=ax.figure, y=-40, units="points")
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, 0), bbox_transform=below_xlabel, fontsize=9,
              title="overall OOF lwlrap", title_fontsize=9, frameon=False)
    ax.set_title("per-class lwlrap, classes sorted by the stacker's\n(positives in brackets)", fontsize=10)


def draw_stacker_weights(fig, ax, per_fold: np.ndarray, order: np.ndarray, model_names: list[str]) -> None:
    """Right panel: what training changed in the stacker's per-class weights (weight minus
    its untrained start), the mean over the folds whose stacker trained. Changes, not the
    weights: the weighted average's column starts at 1 and the models' at 0, so on one
    colour scale the weights themselves showed one dark column and white elsewhere."""
    untrained = untrained_folds(per_fold)
    n_folds, n = len(per_fold), len(order)
    names = [*model_names, "weighted average"]
    ax.set_xticks(np.arange(len(names)), names, rotation=60, ha="right", fontsize=8)
    ax.tick_params(axis="y", left=False)
    if untrained.all():
        ax.set_xlim(-0.5, len(names) - 0.5)
        ax.text(0.5, 0.5, f"untrained in all {n_folds} folds:\ntraining never beat its start,\n"
                "so the stacker is the weighted\naverage alone, squashed", ha="center", va="center",
                transform=ax.transAxes, fontsize=10)
        ax.set_title("stacker's per-class weights", fontsize=10)
        return
    change = (per_fold[~untrained] - untrained_start(*per_fold.shape[1:])).mean(axis=0)[order]
    limit = max(float(np.abs(change).max()), 1e-6)
    mesh = ax.pcolormesh(np.arange(len(names) + 1) - 0.5, np.arange(n + 1) - 0.5, change,
                         cmap="RdBu_r", vmin=-limit, vmax=limit)
    trained = int((~untrained).sum())
    kept = (f"\n{int(untrained.sum())} of {n_folds} folds kept the untrained stacker (the weighted\n"
            f"average alone); shown: the mean over the {trained} that trained"
            if untrained.any() else f"\nmean over the {n_folds} folds")
    ax.set_title("what training changed in the stacker's weights" + kept, fontsize=10)
    fig.colorbar(mesh, ax=ax, shrink=0.6, aspect=30,
                 label="weight minus its start\n(start: models 0, weighted average 1)")


def ensemble_report(out_dir: Path, classes: list[str], y_true: np.ndarray, model_names: list[str],
                    model_scores: list[np.ndarray], average: np.ndarray, stacker: np.ndarray,
                    stacker_weights: np.ndarray | None, scores: dict | None = None, submission: str = "stacker",
                    reliability: dict | None = None) -> pd.DataFrame:
    """submissions/per_class.csv and submissions/report.png from the OOF predictions.

    stacker_weights: the stacker's per-class weights over the models and the weighted
    average (last column), per fold (n_folds, n_classes, n_models + 1), or one set
    (n_classes, n_models + 1); None leaves the heatmap out. `scores` ({row name:
    {"cv_lwlrap", test_set.ALL: test lwlrap (when scored)}}, the models' and each
    combination's) and `reliability` ({"on": what, "curves": {label: Reliability}}, the
    submission's scores) add a row of two panels under those: the scores side by side,
    the best named, and the reliability curves with their expected calibration errors.
    """
    out_dir = Path(out_dir)
    table, best = per_class_table(classes, y_true, model_names, model_scores, average, stacker)
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out_dir / layout.PER_CLASS_CSV, table.to_csv(index=False, float_format="%.6g"))

    overall = {"stacker": lwlrap(y_true, stacker), "average": lwlrap(y_true, average),
               "best": lwlrap(y_true, model_scores[model_names.index(best)])}
    fig = ensemble_figure(table, best, overall, model_names, len(classes), len(y_true), stacker_weights,
                          scores=scores, submission=submission, reliability=reliability)
    save_figure(fig, out_dir / layout.REPORT_PNG)
    return table


def draw_combination_scores(ax, scores: dict, model_names: list[str], submission: str) -> None:
    """CV and test lwlrap (when scored) of the best model and of each combination, side by
    side, the best on each named in the title; the submission's combination marked."""
    from fat2019.eval.test_set import ALL

    best_model = max(model_names, key=lambda n: scores[n]["cv_lwlrap"])
    rows = [best_model] + [n for n in scores if n not in model_names]
    keys = [("cv_lwlrap", "CV (out-of-fold)", "C0")] + ([(ALL, "test", "C1")] if ALL in scores[rows[0]] else [])
    height = 0.8 / len(keys)
    for j, (key, label, colour) in enumerate(keys):
        values = [scores[n][key] for n in rows]
        at = np.arange(len(rows)) - 0.4 + height * (j + 0.5)
        ax.barh(at, values, height=height, color=colour, label=label)
        for y, v in zip(at, values):
            ax.text(v, y, f" {v:.4f}", va="center", fontsize=8)
    names = [f"best model: {n}" if n == best_model else f"{n} (submission)" if n == submission else n for n in rows]
    ax.set_yticks(np.arange(len(rows)), [textwrap.fill(n, 28) for n in names], fontsize=8)
    ax.set_ylim(len(rows) - 0.5, -0.5)
    low = min(scores[n][k] for n in rows for k, *_ in keys)
    ax.set_xlim(max(0.0, np.floor(low * 20 - 1) / 20), 1.08)
    ax.set_xlabel("lwlrap")
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.15), ncols=len(keys), frameon=False)
    winners = [f"{label}: {max(rows, key=lambda n: scores[n][key])}" for key, label, _ in keys]
    ax.set_title("each combination against the best model\nbest on " + "; ".join(winners), fontsize=10)


def draw_reliability(ax, reliability: dict) -> None:
    """The reliability curves (mean score against the share of true labels per bin), the
    diagonal a calibrated score would follow, each curve's ECE in the legend."""
    ax.plot([0, 1], [0, 1], color="0.6", linestyle="--", linewidth=1, label="calibrated")
    for (label, curve), marker in zip(reliability["curves"].items(), "os^"):
        ax.plot(curve.mean_score, curve.frequency, marker=marker, markersize=4,
                label=f"{label}: ECE {curve.ece:.3f}")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("mean score in the bin")
    ax.set_ylabel("share of true labels")
    ax.legend(fontsize=8, loc="upper left")
    ax.grid(alpha=0.3)
    ax.set_title(f"reliability of the submission's scores\non {reliability['on']}", fontsize=10)


def ensemble_figure(table: pd.DataFrame, best: str, overall: dict[str, float], model_names: list[str],
                    n_classes: int, n_clips: int, stacker_weights: np.ndarray | None, scores: dict | None = None,
                    submission: str = "stacker", reliability: dict | None = None) -> Figure:
    """report.png's figure: the per-class panel, the stacker's weights beside it (unless
    None), a red note under both when the stacker is not the best predictor; with
    `scores`, the combinations' scores and the reliability curves in a row under them."""
    # classes with positives only, worst (by the stacker) on top
    shown = np.flatnonzero(table["n_positives"].to_numpy() > 0)
    order = shown[np.argsort(table["lwlrap_stacker"].to_numpy()[shown], kind="stable")]
    n = len(order)
    heat = stacker_weights is not None
    top_height = max(4.5, 0.17 * n + 2.8)
    bottom = scores is not None
    fig = Figure(figsize=(13 if heat or bottom else 8.5, top_height + (4.2 if bottom else 0)), layout="constrained")
    top_fig, bottom_fig = fig.subfigures(2, 1, height_ratios=[top_height, 4.2]) if bottom else (fig, None)
    axes = top_fig.subplots(1, 2, sharey=True, width_ratios=[3, 1.3 + 0.35 * len(model_names)]) if heat \
        else [top_fig.subplots(1, 1)]
    draw_per_class(axes[0], table, order, best, overall)
    if heat:
        per_fold = np.asarray(stacker_weights, np.float64)
        draw_stacker_weights(top_fig, axes[1], per_fold if per_fold.ndim == 3 else per_fold[None], order,
                             model_names)
    axes[0].set_ylim(n - 0.5, -0.5)   # after the heatmap, which would reset the shared limits
    if bottom:
        panels = bottom_fig.subplots(1, 2 if reliability else 1, width_ratios=[1.6, 1] if reliability else None)
        panels = np.atleast_1d(panels)
        draw_combination_scores(panels[0], scores, model_names, submission)
        if reliability:
            draw_reliability(panels[1], reliability)
    left_out = f" ({n_classes - n} without clips left out)" if n < n_classes else ""
    title = (f"Ensemble on out-of-fold predictions: {len(model_names)} model(s), {n} classes{left_out}, "
             f"{n_clips} clips")
    fig.suptitle(title, fontsize=12)
    note = beaten_stacker_note(overall, best) if not bottom or submission == "stacker" else \
        beaten_submission_note(scores, model_names, submission)
    if note:  # red, under the panels: the submission is not the best predictor of these OOF rows
        fig.supxlabel(textwrap.fill(note, width=int(8 * fig.get_figwidth())), fontsize=11, color="C3")  # ~8 chars/inch
    return fig


def segments_heatmap(out: Path, title: str, classes: list[str], starts: np.ndarray, ends: np.ndarray,
                     scores: np.ndarray, scale: str = "scores", n_top: int = 10) -> Path:
    """tag.py --segments' heatmap of one file (segments_figure), written to `out`."""
    return save_figure(segments_figure(title, classes, starts, ends, scores, scale, n_top), out)


def fit_title(fig: Figure, ax, lines: list[str], fontsize: float) -> None:
    """`ax`'s title, each line wrapped until the whole title lies inside the figure (a
    long file name or score scale would otherwise run past its right edge)."""
    width = max(len(line) for line in lines)
    while True:
        text = ax.set_title("\n".join(textwrap.fill(line, width) for line in lines), fontsize=fontsize)
        fig.draw_without_rendering()
        box, (w, _) = text.get_window_extent(), fig.get_size_inches() * fig.dpi
        if (box.x0 >= 0 and box.x1 <= w) or width <= 20:
            return
        width = max(20, int(width * min(0.9, w / box.width)))


def segments_figure(title: str, classes: list[str], starts: np.ndarray, ends: np.ndarray,
                    scores: np.ndarray, scale: str = "scores", n_top: int = 10) -> Figure:
    """Scores over time of one file's windows (tag.py --segments) as a heatmap: the `n_top`
    classes with the highest maximum score over the file, highest on top. The colours span
    0..1 whatever the file (so files compare); `scale` says what the scores are (the title
    names it: which combination, calibrated or not).

    Each window is drawn from its start to the next window's start (when windows overlap,
    the stretch it adds), the last one to its end; a gap between windows (hop longer than
    the segment) stays blank."""
    top = np.argsort(-scores.max(axis=0), kind="stable")[:n_top]
    edges, columns = [float(starts[0])], []
    blank = np.full(len(top), np.nan)
    for i in range(len(starts)):
        following = starts[i + 1] if i + 1 < len(starts) else None
        right = float(ends[i] if following is None else min(ends[i], following))
        edges.append(right)
        columns.append(scores[i, top])
        if following is not None and right < following:
            edges.append(float(following))
            columns.append(blank)
    values = np.ma.masked_invalid(np.array(columns, np.float64).T)
    fig = Figure(figsize=(min(16.0, 6.0 + 0.05 * len(starts)), 1.6 + 0.3 * len(top)), layout="constrained")
    ax = fig.subplots()
    mesh = ax.pcolormesh(edges, np.arange(len(top) + 1), values, cmap="magma", vmin=0.0, vmax=1.0)
    ax.set_yticks(np.arange(len(top)) + 0.5, [classes[i] for i in top], fontsize=8)
    ax.set_ylim(len(top), 0)
    ax.set_xlabel("time (s)")
    fig.colorbar(mesh, ax=ax, label="score (colours: fixed 0..1)", pad=0.01)
    fit_title(fig, ax, [f"{title}: {len(starts)} window(s), top {len(top)} classes by their highest score "
                        f"(highest {float(scores.max()):.3f})", scale], fontsize=10)
    return fig
