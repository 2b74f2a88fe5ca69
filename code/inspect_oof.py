"""Inspect out-of-fold predictions: which classes, folds, clips and confusions cost lwlrap.

    .venv/bin/python code/inspect_oof.py --profile demo                  # the stacker (submissions/stacker_oof.csv)
    .venv/bin/python code/inspect_oof.py average --profile demo          # the weighted average (average_oof.csv)
    .venv/bin/python code/inspect_oof.py v1mix --profile demo            # a model: models/demo/v1mix/oof.csv
    .venv/bin/python code/inspect_oof.py some/where/oof.csv --labels train_curated.csv --folds folds.csv

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

import os
from pathlib import Path

from fat2019 import cli
from fat2019 import layout
from fat2019 import settings
from fat2019.data.dataset import CURATED_CSV, DatasetError

ENSEMBLE_OOF = {name: oof for name, (oof, _) in layout.COMBINATION_CSVS.items()}
TABLES = layout.INSPECT_TABLES


def parser():
    p = cli.script_parser(__doc__)
    p.add_argument("oof", nargs="?", default=None,
                   help="an OOF CSV (a path, or a name ending in .csv), a model name (<models-dir>/NAME/oof.csv), "
                        "'stacker', 'average' or 'fitted' (<submissions-dir>/stacker_oof.csv, average_oof.csv, "
                        "fitted_oof.csv); "
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
        raise cli.BadInput(f"--ensemble names the stacker's OOF CSV; drop it or {what!r}")
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


def describe(oof_csv: Path) -> tuple[str, str]:
    """(whose predictions, what their scores are) for the header and the figure's title."""
    if oof_csv.name == layout.STACKER_OOF_CSV:
        return "stacker", "the stacker's raw output, uncalibrated (tag.py prints it calibrated, same ranking)"
    if oof_csv.name == layout.AVERAGE_OOF_CSV:
        return "weighted average", "the weighted average of the models' probabilities"
    if oof_csv.name == layout.OOF_CSV or oof_csv.name.endswith(layout.FOLD_OOF_SUFFIX):
        return oof_csv.parent.name, f"{oof_csv.parent.name}'s probabilities (mean over 3 TTA crops)"
    return oof_csv.stem, "as written in the CSV"


def main(argv: list[str] | None = None) -> int:
    p = parser()
    args = p.parse_args(argv)
    if args.top < 1:
        p.error("--top must be at least 1")
    from fat2019.eval import oof_analysis as oa   # after parsing: --help stays quick
    from fat2019.ensemble.predictions import read_table
    from fat2019.eval.oof_inputs import read_folds, read_truth

    paths = settings.resolve(args, record=False).paths
    oof_csv = resolve_oof(args.oof, args.ensemble, paths.models, paths.submissions)
    labels_csv = args.labels or paths.data / CURATED_CSV
    folds_csv = None if args.no_folds else args.folds or paths.models / layout.FOLDS_CSV
    out = args.out or oof_csv.parent / layout.INSPECT_DIR

    fnames, classes, scores = read_table(oof_csv)
    if not fnames:
        raise DatasetError(f"bad prediction CSV {oof_csv}", [f"{oof_csv}: no rows"])
    y, n_labelled = read_truth(labels_csv, oof_csv, fnames, classes)
    oof = oa.OutOfFold(fnames, classes, y > 0.5, scores, read_folds(folds_csv, fnames) if folds_csv else None)
    confusions = oa.confusion_counts(oof.truth, oof.scores)
    tables = {"per_class": oa.per_class_table(oof, confusions), "folds": oa.per_fold_table(oof),
              "clips": oa.clip_table(oof), "confusions": oa.confusion_table(classes, oof.truth, confusions)}
    overall = tables["folds"].iloc[-1]
    covered = "" if len(fnames) == n_labelled else f" (of the {n_labelled} in {labels_csv.name})"
    whose, scale = describe(oof_csv)
    print(f"{oof_csv}: {len(fnames)} clips{covered}, {len(classes)} classes, {overall['labels']} labels; "
          f"lwlrap {overall['lwlrap']:.4f}, LRAP {overall['lrap']:.4f}")
    print(f"labels: {labels_csv}; folds: {folds_csv or 'none (--no-folds)'}")
    print(f"scores (score, wrong_score): {scale}")
    print_tables(tables, args.top)

    from fat2019.eval.reports import save_figure

    out.mkdir(parents=True, exist_ok=True)
    stem = oof_csv.stem
    written = [oa.write_csv(layout.inspect_table(out, stem, name), tables[name]) for name in TABLES]
    title = f"{whose} ({oof_csv.name}): the {min(args.top, len(tables['confusions']))} most frequent " \
            f"confusions ({len(fnames)} clips, lwlrap {overall['lwlrap']:.4f})"
    written.append(save_figure(oa.confusion_figure(tables["confusions"], args.top, title),
                               layout.inspect_figure(out, stem)))
    print("\nwrote:\n  " + "\n  ".join(str(p) for p in written))
    return 0


def print_tables(tables: dict, top: int) -> None:
    """The five sections of the module doc, the first `top` rows of each."""
    from fat2019.eval.oof_analysis import print_section

    per_class = tables["per_class"]
    without = int((per_class["n_positives"] == 0).sum())
    left_out = f"; {without} class(es) without clips left out" if without else ""
    print_section(f"per-class lwlrap, worst first{left_out}", per_class[per_class["n_positives"] > 0], top)
    print_section("lwlrap per fold", tables["folds"])
    clips = tables["clips"]
    print_section("clips whose worst true label ranks lowest (rank among all classes, 1 = top)",
                  clips[["fname", "fold", "labels", "worst_label", "rank", "score", "lrap"]], top)
    print_section("clips with the highest-scored wrong label",
                  clips.sort_values("wrong_score", ascending=False, kind="stable")[
                      ["fname", "fold", "labels", "top_wrong", "wrong_score", "lrap"]], top)
    print_section("most frequent confusions: the wrong class scores at or above the true one "
                  "(share = of the true class's clips)", tables["confusions"], top)


if __name__ == "__main__":
    cli.run_stage(main)
