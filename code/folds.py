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
from iterstrat.ml_stratifiers import MultilabelStratifiedKFold

from dataset import ClipSet, DatasetError
from feature_cache import atomic_write_text

FOLDS_CSV = "folds.csv"


def assign_folds(labels: np.ndarray, n_folds: int) -> np.ndarray:
    """Fold number of each clip: MultilabelStratifiedKFold, no shuffle (the original's).
    (Its current release refuses `random_state` without shuffle, so none is given.)"""
    if len(labels) < n_folds:
        raise DatasetError("too few clips for cross-validation",
                           [f"{len(labels)} curated clips cannot make {n_folds} folds"])
    thin = np.flatnonzero((labels > 0).sum(axis=0).clip(min=1) < n_folds)
    present = (labels > 0).sum(axis=0) > 0
    thin = [c for c in thin if present[c]]
    if thin:
        warnings.warn(f"{len(thin)} class(es) have fewer positives than the {n_folds} folds; "
                      f"some validation folds will lack them", stacklevel=2)
    fold = np.full(len(labels), -1, np.int64)
    splitter = MultilabelStratifiedKFold(n_splits=n_folds)
    for k, (_, val) in enumerate(splitter.split(np.zeros(len(labels)), labels)):
        fold[val] = k
    return fold


def load_or_create(models_dir: Path, curated: ClipSet, n_folds: int) -> pd.DataFrame:
    """models/folds.csv, written on first use. A file that no longer matches the curated
    set or the profile's fold count is an error, not silently replaced: trained folds
    depend on it."""
    path = Path(models_dir) / FOLDS_CSV
    if path.is_file():
        folds = pd.read_csv(path, dtype={"fname": str})
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
        return folds.set_index("fname").loc[curated.fnames].reset_index()
    folds = pd.DataFrame({"fname": curated.fnames, "fold": assign_folds(curated.labels, n_folds)})
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, folds.to_csv(index=False))
    return folds
