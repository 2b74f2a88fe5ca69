"""The three CSVs inspect_oof.py reads, checked: an OOF CSV (fname + one column per class),
the labels (fname,labels) and the folds (fname,fold). Every problem found in a file is
raised at once, as a DatasetError naming the file and each offender.
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from fat2019.data.dataset import DatasetError, read_labelled_csv, repeated_names
from fat2019.data.folds import read_folds_csv
from fat2019.eval.oof_analysis import NO_FOLD


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
    fold_of = read_folds_csv(folds_csv)
    unknown = [f for f in fnames if f not in fold_of]
    if unknown:
        print(f"warning: {len(unknown)} clip(s) are not in {folds_csv}, e.g. {unknown[:3]}: they count in the "
              f"overall lwlrap only", file=sys.stderr)
    return np.array([fold_of.get(f, NO_FOLD) for f in fnames], np.int64)
