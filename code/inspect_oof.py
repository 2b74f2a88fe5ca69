"""Inspect out-of-fold predictions: which classes, folds, clips and confusions cost lwlrap.

    python code/inspect_oof.py --profile demo                  # the stacker (submissions/stacker_oof.csv)
    python code/inspect_oof.py average --profile demo          # the weighted average (average_oof.csv)
    python code/inspect_oof.py v1mix --profile demo            # a model: models/demo/v1mix/oof.csv
    python code/inspect_oof.py some/where/oof.csv --labels train_curated.csv --folds folds.csv

Reads three CSVs and nothing else, so it works on files copied from another machine:

    OOF CSV        fname + one column per class (predict.py, ensemble.py); any finite
                   scores, only their order within a clip matters. A single fold's
                   fold<k>.oof.csv works too: clips it lacks are left out.
    --labels       fname,labels (default <data-dir>/train_curated.csv); every OOF clip
                   needs a row, every label a column of the OOF CSV
    --folds        fname,fold (default <models-dir>/folds.csv), for the per-fold lwlrap;
                   OOF clips it lacks are warned about and counted in the overall only.
                   --no-folds skips the per-fold table.

Prints, one section each (the first --top rows; the CSVs have every row):

    per-class lwlrap, worst first, with positives, weight (share of all labels), lwlrap
      lost (weight * (1 - lwlrap): what the class costs the overall) and the wrong class
      that most often ranks above it
    per-fold lwlrap and LRAP, and the overall
    the clips whose worst true label ranks lowest (rank among all classes, ties counted
      against as in LRAP, and its score), and the clips with the highest-scored wrong label
    the most frequent confusions: (true, wrong) class pairs, counted over clips, where the
      wrong class scores at or above the true one

and writes them to <folder of the OOF CSV>/inspect/ (or --out DIR), named after the OOF
CSV's stem, e.g. submissions/demo/inspect/stacker_oof.per_class.csv:

    <stem>.per_class.csv   <stem>.folds.csv   <stem>.clips.csv (one row per clip)
    <stem>.confusions.csv (every pair with a count)   <stem>.confusions.png (the top --top)

Bad input (a missing file, an OOF clip without labels, a label without a column, bad
numbers, repeated clips) is an error naming the file and each offender, exit code 2.
"""
from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from fat2019 import cli
from fat2019 import layout
from fat2019.data.dataset import CURATED_CSV, DatasetError, read_labelled_csv, read_rows
from fat2019.ensemble import predictions
from fat2019.ensemble.predictions import repeated_names
from fat2019.util.atomic import atomic_write_text
from fat2019.eval.metrics import per_class_lwlrap
from fat2019.eval.reports import save_figure

ENSEMBLE_OOF = {"stacker": layout.STACKER_OOF_CSV, "average": layout.AVERAGE_OOF_CSV}
TABLES = layout.INSPECT_TABLES
CHUNK = 256   # clips compared at once: bounds the (clips, classes, classes) arrays
NO_FOLD = -1  # the fold of a clip folds.csv does not list


# ---------------------------------------------------------------------------------------
# Reading the three CSVs
# ---------------------------------------------------------------------------------------

def read_truth(labels_csv: Path, oof_csv: Path, fnames: list[str], classes: list[str]) -> tuple[np.ndarray, int]:
    """(multi-hot labels of `fnames`, in their order; number of clips the labels CSV has).
    Errors: a label that is no column of the OOF CSV, an OOF clip without a row."""
    labels_csv, oof_csv = Path(labels_csv), Path(oof_csv)
    if not labels_csv.is_file():
        raise DatasetError(f"cannot read {labels_csv}", [f"{labels_csv}: file not found (name it with --labels)"])
    clips, problems = read_labelled_csv(labels_csv, classes, labels_csv.parent, "labels", classes_from=f"a column of {oof_csv.name}")
    problems += [f"{labels_csv.name}: clip {f!r} appears {n} times" for f, n in repeated_names(clips.fnames).items()]
    if problems:
        raise DatasetError(f"the labels in {labels_csv} do not fit {oof_csv}", problems)
    row = {f: i for i, f in enumerate(clips.fnames)}
    unlabelled = [f for f in fnames if f not in row]
    if unlabelled:
        raise DatasetError(f"{oof_csv} has clips without labels in {labels_csv}", [
            f"{len(unlabelled)} of its {len(fnames)} clips, e.g. {unlabelled[:5]} (labels of another data set?)"])
    return clips.labels[[row[f] for f in fnames]], len(clips)


def read_folds(folds_csv: Path, fnames: list[str]) -> np.ndarray:
    """The fold of each clip of `fnames`, NO_FOLD (and a warning) for clips folds.csv lacks."""
    folds_csv = Path(folds_csv)
    if not folds_csv.is_file():
        raise DatasetError(f"cannot read {folds_csv}", [
            f"{folds_csv}: file not found (for the per-fold table: name it with --folds, or pass --no-folds)"])
    header, rows = read_rows(folds_csv)
    if "fname" not in header or "fold" not in header:
        raise DatasetError(f"bad columns in {folds_csv}", [f"{folds_csv}: expected 'fname,fold', got {header!r}"])
    at_name, at_fold = header.index("fname"), header.index("fold")
    fold_of, problems = {}, []
    for line, fields in rows:
        value = fields[at_fold].strip() if len(fields) == len(header) else ""
        if not value.isdigit():
            problems.append(f"{folds_csv.name} line {line}: expected a clip name and a fold number (0, 1, ...), "
                            f"got {fields!r}")
        elif fields[at_name] in fold_of:
            problems.append(f"{folds_csv.name} line {line}: clip {fields[at_name]!r} listed again")
        else:
            fold_of[fields[at_name]] = int(value)
    if problems:
        raise DatasetError(f"bad fold assignment in {folds_csv}", problems)
    unknown = [f for f in fnames if f not in fold_of]
    if unknown:
        print(f"warning: {len(unknown)} clip(s) are not in {folds_csv}, e.g. {unknown[:3]}: they count in the "
              f"overall lwlrap only", file=sys.stderr)
    return np.array([fold_of.get(f, NO_FOLD) for f in fnames], np.int64)


# ---------------------------------------------------------------------------------------
# The analysis
# ---------------------------------------------------------------------------------------

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
        self.rank, self.true_above = label_ranks(self.truth, self.scores)

    def clip_lrap(self) -> np.ndarray:
        """Each clip's LRAP: the mean over its labels of (its labels at or above) / rank."""
        return np.where(self.truth, self.true_above / self.rank, 0.0).sum(axis=1) / self.truth.sum(axis=1)


def label_ranks(y_true: np.ndarray, y_score: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(rank, true_at_or_above), both (clips, classes): the rank of every class among the
    clip's classes, 1 = top, ties counted against as in LRAP (classes scored at or above
    it), and how many of the clip's true labels score at or above it."""
    truth = np.asarray(y_true) > 0.5
    scores = np.asarray(y_score, np.float64)
    rank = np.zeros(truth.shape, np.int64)
    true_above = np.zeros(truth.shape, np.int64)
    for lo in range(0, len(truth), CHUNK):
        at_or_above = scores[lo:lo + CHUNK, None, :] >= scores[lo:lo + CHUNK, :, None]   # [clip, j, k]: k >= j
        rank[lo:lo + CHUNK] = at_or_above.sum(axis=-1)
        true_above[lo:lo + CHUNK] = (at_or_above & truth[lo:lo + CHUNK, None, :]).sum(axis=-1)
    return rank, true_above


def fast_lwlrap(y_true: np.ndarray, y_score: np.ndarray) -> float:
    """metrics.lwlrap by its per-class split (numpy; sklearn's ranking is ~100x slower on
    the 5k curated clips, and the per-fold table calls it once per fold)."""
    score, weight = per_class_lwlrap(y_true, y_score)
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
    score, weight = per_class_lwlrap(oof.truth, oof.scores)
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
                          "lwlrap": fast_lwlrap(oof.truth[rows], oof.scores[rows]),
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


def confusion_figure(table: pd.DataFrame, top: int, title: str) -> Figure:
    """Horizontal bars of the `top` most frequent confusions, the most frequent on top."""
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


# ---------------------------------------------------------------------------------------
# Output
# ---------------------------------------------------------------------------------------

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


# ---------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------

def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("oof", nargs="?", default=None,
                   help="an OOF CSV (a path, or a name ending in .csv), a model name (<models-dir>/NAME/oof.csv), "
                        "'stacker' or 'average' (<submissions-dir>/stacker_oof.csv, average_oof.csv); "
                        "default: stacker")
    p.add_argument("--ensemble", action="store_true", help="the stacker's OOF predictions (same as 'stacker')")
    p.add_argument("--labels", type=Path, help=f"fname,labels CSV (default: <data-dir>/{CURATED_CSV})")
    p.add_argument("--folds", type=Path, help=f"fname,fold CSV (default: <models-dir>/{layout.FOLDS_CSV})")
    p.add_argument("--no-folds", action="store_true", help="no fold assignment: skip the per-fold table")
    p.add_argument("--top", type=int, default=20, help="rows printed per table, bars in the plot (default 20)")
    p.add_argument("--out", type=Path, help=f"folder for the CSVs and the PNG (default: the OOF CSV's folder "
                                            f"/ {layout.INSPECT_DIR})")
    cli.add_common_args(p, features=False)
    return p


def resolve_oof(what: str | None, ensemble: bool, models: Path, submissions: Path) -> Path:
    """The OOF CSV that the command line names (see the `oof` argument's help)."""
    if ensemble and what not in (None, "stacker"):
        raise SystemExit(f"error: --ensemble names the stacker's OOF CSV; drop it or {what!r}")
    what = "stacker" if what is None or ensemble else what
    if what in ENSEMBLE_OOF:
        path = Path(submissions) / ENSEMBLE_OOF[what]
        if not path.is_file():
            raise DatasetError(f"no out-of-fold predictions of the {what}", [
                f"{path}: file not found (run ensemble.py, or name a model or an OOF CSV)"])
        return path
    if what.endswith(".csv") or "/" in what or os.sep in what or Path(what).is_file():
        return Path(what)
    path = layout.gathered(Path(models) / what)[0]
    if not path.is_file():
        have = [p.parent.name for p in sorted(Path(models).glob(f"*/{layout.OOF_CSV}"))]
        raise DatasetError(f"no out-of-fold predictions for model {what!r}", [
            f"{path}: file not found (run predict.py for every fold)",
            f"models with an {layout.OOF_CSV} in {models}: {have or 'none'}"])
    return path


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.top < 1:
        raise SystemExit("error: --top must be at least 1")
    _, paths = cli.resolve(args)
    oof_csv = resolve_oof(args.oof, args.ensemble, paths.models, paths.submissions)
    labels_csv = args.labels or paths.data / CURATED_CSV
    folds_csv = None if args.no_folds else args.folds or paths.models / layout.FOLDS_CSV
    out = args.out or oof_csv.parent / layout.INSPECT_DIR

    fnames, classes, scores = predictions.read_any(oof_csv)
    y, n_labelled = read_truth(labels_csv, oof_csv, fnames, classes)
    oof = OutOfFold(fnames, classes, y > 0.5, scores, read_folds(folds_csv, fnames) if folds_csv else None)
    confusions = confusion_counts(oof.truth, oof.scores)
    tables = {"per_class": per_class_table(oof, confusions), "folds": per_fold_table(oof),
              "clips": clip_table(oof), "confusions": confusion_table(classes, oof.truth, confusions)}
    overall = tables["folds"].iloc[-1]

    covered = "" if len(fnames) == n_labelled else f" (of the {n_labelled} in {labels_csv.name})"
    print(f"{oof_csv}: {len(fnames)} clips{covered}, {len(classes)} classes, {overall['labels']} labels; "
          f"lwlrap {overall['lwlrap']:.4f}, LRAP {overall['lrap']:.4f}")
    print(f"labels: {labels_csv}; folds: {folds_csv or 'none (--no-folds)'}")
    per_class = tables["per_class"]
    without = int((per_class["n_positives"] == 0).sum())
    left_out = f"; {without} class(es) without clips left out" if without else ""
    print_section(f"per-class lwlrap, worst first{left_out}", per_class[per_class["n_positives"] > 0], args.top)
    print_section("lwlrap per fold", tables["folds"])
    clips = tables["clips"]
    print_section("clips whose worst true label ranks lowest (rank among all classes, 1 = top)",
                  clips[["fname", "fold", "labels", "worst_label", "rank", "score", "lrap"]], args.top)
    print_section("clips with the highest-scored wrong label",
                  clips.sort_values("wrong_score", ascending=False, kind="stable")[
                      ["fname", "fold", "labels", "top_wrong", "wrong_score", "lrap"]], args.top)
    print_section("most frequent confusions: the wrong class scores at or above the true one "
                  "(share = of the true class's clips)", tables["confusions"], args.top)

    out.mkdir(parents=True, exist_ok=True)
    stem = oof_csv.stem
    written = [write_csv(layout.inspect_table(out, stem, name), tables[name]) for name in TABLES]
    title = f"{oof_csv.name}: the {min(args.top, len(tables['confusions']))} most frequent confusions " \
            f"({len(fnames)} clips, lwlrap {overall['lwlrap']:.4f})"
    written.append(save_figure(confusion_figure(tables["confusions"], args.top, title),
                               layout.inspect_figure(out, stem)))
    print("\nwrote:\n  " + "\n  ".join(str(p) for p in written))
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except DatasetError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
