"""Where out-of-fold predictions lose lwlrap (code/inspect_oof.py's analysis): per class,
per fold, per clip, and which wrong classes outrank which true ones. Built on the ranks of
metrics.label_ranks, computed once per OOF set and reused by every table.

Reading the three CSVs it works from is oof_inputs.py; the tables print as aligned text
(format_table) and are written as CSVs.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from fat2019.eval.metrics import label_ranks, per_class_lwlrap
from fat2019.util.atomic import atomic_write_text

CHUNK = 256   # clips compared at once: bounds the (clips, classes, classes) arrays
NO_FOLD = -1  # the fold of a clip folds.csv does not list


@dataclass
class OutOfFold:
    """The OOF predictions of labelled clips, and where every label ranks on its clip."""
    fnames: list[str]
    classes: list[str]
    truth: np.ndarray            # (clips, classes) bool
    scores: np.ndarray           # (clips, classes) float64
    folds: np.ndarray | None     # (clips,) fold of each clip, NO_FOLD when unknown; None: no folds
    rank: np.ndarray = field(init=False)        # (clips, classes): 1 = top, ties counted against
    true_above: np.ndarray = field(init=False)  # (clips, classes): true labels at or above

    def __post_init__(self):
        self.rank, self.true_above = label_ranks(self.truth, self.scores, CHUNK)

    def clip_lrap(self) -> np.ndarray:
        """Each clip's LRAP: the mean over its labels of (its labels at or above) / rank."""
        return np.where(self.truth, self.true_above / self.rank, 0.0).sum(axis=1) / self.truth.sum(axis=1)


def rows_lwlrap(oof: OutOfFold, rows: np.ndarray) -> float:
    """metrics.lwlrap of some clips, from the ranks already computed (the per-fold table
    needs one per fold; sklearn would rank every fold again)."""
    score, weight = per_class_lwlrap(oof.truth[rows], None, ranks=(oof.rank[rows], oof.true_above[rows]))
    return float(np.sum(score * weight))


def confusion_counts(y_true: np.ndarray, y_score: np.ndarray) -> np.ndarray:
    """(classes, classes) counts: [t, w] = clips carrying t but not w on which w scores at
    or above t (each such pair lowers t's precision on the clip)."""
    truth = np.asarray(y_true) > 0.5
    scores = np.asarray(y_score, np.float64)
    counts = np.zeros((truth.shape[1], truth.shape[1]), np.int64)
    for lo in range(0, len(truth), CHUNK):
        t, s = truth[lo:lo + CHUNK], scores[lo:lo + CHUNK]
        wrong_above = (s[:, None, :] >= s[:, :, None]) & t[:, :, None] & ~t[:, None, :]   # [clip, true, wrong]
        counts += wrong_above.sum(axis=0)
    return counts


def per_class_table(oof: OutOfFold, confusions: np.ndarray) -> pd.DataFrame:
    """One row per class, worst lwlrap first (classes without clips last, lwlrap empty):
    class, n_positives, weight, lwlrap, lost = weight * (1 - lwlrap) (the overall lwlrap
    is 1 - sum(lost)), and the wrong class most often at or above it, with its count."""
    score, weight = per_class_lwlrap(oof.truth, None, ranks=(oof.rank, oof.true_above))
    positives = oof.truth.sum(axis=0)
    top = confusions.argmax(axis=1)
    top_count = confusions[np.arange(len(oof.classes)), top]
    table = pd.DataFrame({
        "class": oof.classes, "n_positives": positives, "weight": weight,
        "lwlrap": np.where(positives > 0, score, np.nan), "lost": weight * (1 - score),
        "most_above": [oof.classes[w] if n else "" for w, n in zip(top, top_count)], "times": top_count})
    return table.sort_values(["lwlrap", "n_positives"], ascending=[True, False], na_position="last",
                             kind="stable").reset_index(drop=True)


def per_fold_table(oof: OutOfFold) -> pd.DataFrame:
    """fold, clips, labels, lwlrap, lrap: one row per fold of folds.csv, then `all` (every
    clip, including those without a fold)."""
    folds = oof.folds
    groups = [(str(k), folds == k) for k in np.unique(folds) if k != NO_FOLD] if folds is not None else []
    groups.append(("all", np.ones(len(oof.fnames), bool)))
    clip_lrap = oof.clip_lrap()
    return pd.DataFrame([{"fold": name, "clips": int(rows.sum()), "labels": int(oof.truth[rows].sum()),
                          "lwlrap": rows_lwlrap(oof, rows),
                          "lrap": float(clip_lrap[rows].mean())} for name, rows in groups])


def clip_table(oof: OutOfFold) -> pd.DataFrame:
    """One row per clip, lowest-ranked true label first: fname, fold, labels, lrap (the
    clip's own), worst_label with its rank and score, top_wrong (the highest-scored class
    the clip does not carry) with its score."""
    truth, scores, classes = oof.truth, oof.scores, oof.classes
    worst = np.where(truth, oof.rank, 0).argmax(axis=1)
    wrong = np.where(truth, -np.inf, scores).argmax(axis=1)
    rows = np.arange(len(oof.fnames))
    folds = np.where(oof.folds == NO_FOLD, None, oof.folds) if oof.folds is not None else [None] * len(rows)
    table = pd.DataFrame({
        "fname": oof.fnames, "fold": pd.array(folds, dtype="Int64"),
        "labels": [",".join(classes[j] for j in np.flatnonzero(t)) for t in truth],
        "lrap": oof.clip_lrap(),
        "worst_label": [classes[j] for j in worst], "rank": oof.rank[rows, worst], "score": scores[rows, worst],
        "top_wrong": [classes[j] for j in wrong], "wrong_score": scores[rows, wrong]})
    return table.sort_values(["rank", "score"], ascending=[False, True], kind="stable").reset_index(drop=True)


def confusion_table(classes: list[str], y_true: np.ndarray, confusions: np.ndarray) -> pd.DataFrame:
    """Every (true, wrong) pair with a count, most frequent first: true, wrong, count, and
    share = count / the true class's positives."""
    t, w = np.nonzero(confusions)
    positives = (np.asarray(y_true) > 0.5).sum(axis=0)
    table = pd.DataFrame({"true": [classes[i] for i in t], "wrong": [classes[j] for j in w],
                          "count": confusions[t, w], "share": confusions[t, w] / positives[t]})
    return table.sort_values(["count", "share", "true", "wrong"], ascending=[False, False, True, True],
                             kind="stable").reset_index(drop=True)


def confusion_figure(table: pd.DataFrame, top: int, title: str):
    """Horizontal bars of the `top` most frequent confusions, the most frequent on top (a
    matplotlib Figure)."""
    from matplotlib.figure import Figure   # here: matplotlib takes a while to import
    from matplotlib.ticker import MaxNLocator

    shown = table.head(top)
    n = max(len(shown), 1)
    fig = Figure(figsize=(9, 0.28 * n + 1.6), layout="constrained")
    ax = fig.subplots()
    rows = np.arange(len(shown))
    ax.barh(rows, shown["count"], color="C3")
    for r, (count, share) in enumerate(zip(shown["count"], shown["share"])):
        ax.text(count, r, f" {share:.0%}", va="center", fontsize=8)
    ax.set_yticks(rows, [f"{t} \u2192 {w}" for t, w in zip(shown["true"], shown["wrong"])], fontsize=8)
    ax.set_ylim(n - 0.5, -0.5)
    # two lines: long class names take the figure's left part, and one line overflowed the axes
    ax.set_xlabel("clips where the wrong class scores at or above the true one\n"
                  "(beside each bar: share of the true class's clips)")
    ax.set_ylabel("true class \u2192 wrong class")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.margins(x=0.12)
    ax.grid(axis="x", alpha=0.3)
    fig.suptitle(title, fontsize=10)   # over the whole figure: the axes alone can be narrower than it
    if shown.empty:
        ax.text(0.5, 0.5, "no confusions: every true label outranks every wrong one", ha="center",
                transform=ax.transAxes)
    return fig


def format_table(table: pd.DataFrame, digits: int = 4) -> str:
    """Aligned columns: text left, numbers right, floats with `digits` decimals, missing '-'."""
    def cell(v) -> str:
        if v is None or v is pd.NA or v == "" or (isinstance(v, float) and np.isnan(v)):
            return "-"
        return f"{v:.{digits}f}" if isinstance(v, (float, np.floating)) else str(v)

    columns = [[cell(v) for v in table[c]] for c in table.columns]
    numeric = [pd.api.types.is_numeric_dtype(table[c]) for c in table.columns]
    widths = [max([len(str(c))] + [len(v) for v in col]) for c, col in zip(table.columns, columns)]

    def line(values) -> str:
        return "  ".join(v.rjust(w) if num else v.ljust(w) for v, w, num in zip(values, widths, numeric)).rstrip()
    return "\n".join([line([str(c) for c in table.columns])] + [line(row) for row in zip(*columns)])


def print_section(title: str, table: pd.DataFrame, top: int | None = None) -> None:
    shown = table if top is None else table.head(top)
    more = f" ({len(shown)} of {len(table)} shown)" if len(shown) < len(table) else ""
    print(f"\n== {title}{more} ==")
    print(format_table(shown) if len(shown) else "(none)")


def write_csv(path: Path, table: pd.DataFrame) -> Path:
    atomic_write_text(path, table.to_csv(index=False, float_format="%.6g"))
    return path
