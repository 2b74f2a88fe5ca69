"""One fold assignment for every stage: models/folds.csv (fname, fold).

Computed once with iterative stratification over the multi-label targets, then read by
training, prediction and the stacker, so out-of-fold rows always come from the model
that did not see them.
"""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from fat2019.data.dataset import ClipSet, DatasetError, read_rows
from fat2019.util.atomic import atomic_write_text
from fat2019.layout import FOLDS_CSV, STACKER_DIR

# The original's tie-breaking seed (its train.py: MultilabelStratifiedKFold(n_splits=10,
# random_state=66666)): with it, the folds are exactly the original's partition of the
# curated set, so out-of-fold figures compare with the original's. Per-fold figures do
# too, once renumbered: its train.py reverses the folds (`[::-1]`), so our fold k is its
# fold n_folds - 1 - k (docs/faithfulness.md, "Fold numbering").
FOLD_SEED = 66666


def assign_folds(labels: np.ndarray, n_folds: int, classes: list[str] | None = None) -> np.ndarray:
    """Fold number of each clip: MultilabelStratifiedKFold, no shuffle, ties broken by
    FOLD_SEED (the original's), over the clips in train_curated.csv's order.
    The same labels give the same folds on every machine and in every run (sharded
    training relies on it).

    Too few clips for the folds is a DatasetError; a class with fewer positives than folds
    is only a warning, since stratification still spreads its clips (some validation folds
    just lack it, which LRAP and lwlrap handle)."""
    labels = np.asarray(labels) > 0
    if n_folds < 2:
        raise DatasetError("cannot make folds", [f"n_folds is {n_folds}; cross-validation needs at least 2"])
    if len(labels) < n_folds:
        raise DatasetError("too few clips for cross-validation",
                           [f"{len(labels)} curated clip(s) cannot make {n_folds} folds (each fold validates "
                            f"on its own clips); add clips or lower n_folds (--set n_folds=...)"])
    positives = labels.sum(axis=0)
    thin = [c for c in np.flatnonzero((positives > 0) & (positives < n_folds))]
    if thin:
        names = [classes[c] if classes else str(c) for c in thin]
        warnings.warn(f"{len(thin)} class(es) have fewer positive clips than the {n_folds} folds, so some "
                      f"validation folds lack them: {names[:10]}{' ...' if len(names) > 10 else ''}",
                      stacklevel=2)
    # sklearn reads a one-column target as binary, which iterstrat refuses; its complement
    # as a second column stratifies the same
    target = labels if labels.shape[1] > 1 else np.concatenate([labels, ~labels], axis=1)
    fold = np.full(len(labels), -1, np.int64)
    from iterstrat.ml_stratifiers import MultilabelStratifiedKFold   # imports scikit-learn: seconds
    splitter = MultilabelStratifiedKFold(n_splits=n_folds)
    # It breaks ties at random, from np.random's global state when given no random_state,
    # and scikit-learn refuses one without shuffle in the constructor: set it afterwards.
    splitter.random_state = np.random.RandomState(FOLD_SEED)
    for k, (_, val) in enumerate(splitter.split(np.zeros(len(labels)), target.astype(np.int64))):
        fold[val] = k
    empty = [k for k in range(n_folds) if not np.any(fold == k)]
    if empty or np.any(fold < 0):
        raise DatasetError("cannot make folds", [f"stratification left fold(s) {empty} without clips"])
    return fold


def read_folds_csv(path: Path) -> dict[str, int]:
    """A folds CSV (fname,fold) as {fname: fold}, checked: every problem (a missing column,
    a fold that is not a number, a clip listed twice) raised at once, naming the line."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"cannot read {path}", [f"{path}: file not found"])
    header, rows = read_rows(path)
    if "fname" not in header or "fold" not in header:
        raise DatasetError(f"bad columns in {path}", [f"{path}: expected 'fname,fold', got {header!r}"])
    at_name, at_fold = header.index("fname"), header.index("fold")
    fold_of, problems = {}, []
    for line, fields in rows:
        value = fields[at_fold].strip() if len(fields) == len(header) else ""
        if not value.isdigit():
            problems.append(f"{path.name} line {line}: expected a clip name and a fold number (0, 1, ...), "
                            f"got {fields!r}")
        elif fields[at_name] in fold_of:
            problems.append(f"{path.name} line {line}: clip {fields[at_name]!r} listed again")
        else:
            fold_of[fields[at_name]] = int(value)
    if problems:
        raise DatasetError(f"bad fold assignment in {path}", problems)
    return fold_of


def load_or_create(models_dir: Path, curated: ClipSet, n_folds: int,
                   classes: list[str] | None = None) -> pd.DataFrame:
    """models/folds.csv, written on first use. A file that no longer matches the curated
    set or the profile's fold count is an error, not silently replaced: trained folds
    depend on it."""
    path = Path(models_dir) / FOLDS_CSV
    if path.is_file():
        folds = pd.DataFrame(list(read_folds_csv(path).items()), columns=["fname", "fold"])
        problems = []
        if sorted(folds["fname"]) != sorted(curated.fnames):
            added = len(set(curated.fnames) - set(folds["fname"]))
            removed = len(set(folds["fname"]) - set(curated.fnames))
            problems.append(f"{path} was made for another curated set ({added} clips added, {removed} removed)")
        if folds["fold"].nunique() != n_folds:
            problems.append(f"{path} has {folds['fold'].nunique()} folds, the profile wants {n_folds}")
        if problems:
            raise DatasetError("stale fold assignment", problems + [
                "delete it (and the models trained on it) or point --models-dir elsewhere"])
        folds = folds.set_index("fname").loc[curated.fnames].reset_index()
        with warnings.catch_warnings():   # thin classes were warned about when the file was made
            warnings.simplefilter("ignore")
            expected = assign_folds(curated.labels, n_folds, classes)
        if not np.array_equal(folds["fold"].to_numpy(), expected):
            moved = int(np.sum(folds["fold"].to_numpy() != expected))
            raise DatasetError("fold assignment differs from the original's", [
                f"{path}: {moved} of {len(expected)} clips are in another fold than the original's partition "
                f"(MultilabelStratifiedKFold({n_folds}), ties broken with seed {FOLD_SEED}); a file made "
                f"with another tie-breaking seed (such as 0) partitions the clips differently",
                f"to regenerate: delete {path} and the fold models trained on it (<models-dir>/<model>/fold*, "
                f"and <models-dir>/{STACKER_DIR}/), then rerun train.py; or keep the old models by pointing "
                f"--models-dir at a new folder"])
        return folds
    folds = pd.DataFrame({"fname": curated.fnames, "fold": assign_folds(curated.labels, n_folds, classes)})
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, folds.to_csv(index=False))
    return folds
