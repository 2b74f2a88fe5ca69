"""What the training stages share: the parsed options, the dataset, the feature caches,
the fold assignment and each model's folder."""
from __future__ import annotations

import argparse
from functools import cached_property
from pathlib import Path

import keras
import numpy as np
import pandas as pd

from fat2019 import cli
from fat2019 import config
from fat2019.train import distribute
from fat2019.data import folds as folds_lib
from fat2019.data.batches import ClipData
from fat2019.data.dataset import ClipSet, Dataset, DatasetError, load_dataset
from fat2019.data.feature_cache import FeatureCache
from fat2019.util.atomic import atomic_write_text


def set_precision(mixed: str | None) -> None:
    """The Keras dtype policy of every model built afterwards: float32, or mixed_<mixed>."""
    keras.mixed_precision.set_global_policy(f"mixed_{mixed}" if mixed else "float32")


class Workspace:
    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.profile, self.paths = cli.resolve(args)
        self.models = config.select_models(args.models)
        set_precision(getattr(args, "mixed_precision", None))
        if getattr(args, "tensorboard", False):
            distribute.require_tensorflow("--tensorboard (tf.summary)")
        # made first, before anything starts TensorFlow's runtime (--logical-cpus needs that)
        self.strategy = distribute.make_strategy(getattr(args, "strategy", "default"),
                                                 getattr(args, "logical_cpus", None))
        if self.strategy.num_replicas_in_sync > 1:
            self.announce_replicas()

    def announce_replicas(self) -> None:
        """Say once how several replicas change the schedule (Schedule.for_replicas)."""
        from fat2019.train import training   # imported here: it builds on Keras, which the stage has just configured

        replicas = self.strategy.num_replicas_in_sync
        for model in self.models:
            one = training.Schedule.curated(self.profile, self.profile.scale(model))
            many = one.for_replicas(replicas)
            print(f"{model.name} on {replicas} replicas: global batch {replicas} x {one.batch_size} = "
                  f"{many.batch_size} clips (prediction {many.predict_batch_size}), learning rate "
                  f"{one.lr:.2e} -> {many.lr:.2e} (x sqrt({replicas})); --strategy default keeps one device")

    @cached_property
    def dataset(self) -> Dataset:
        return load_dataset(self.paths.data, check_files=False)

    @property
    def classes(self) -> list[str]:
        return self.dataset.classes

    def cache(self, name: str) -> FeatureCache:
        return FeatureCache(self.paths.features / name)

    def clip_data(self, clips: ClipSet) -> ClipData:
        """The clips of a set that the feature cache holds (clips left out by
        `features.py --skip-bad` are left out here too, with a note). An empty set (no test
        clips in own data) has no cache: its ClipData is empty."""
        if not len(clips):
            return ClipData(None, np.zeros(0, np.int64), clips.labels)
        cache = self.cache(clips.name)
        kept = [i for i, f in enumerate(clips.fnames) if f in cache.row]
        if len(kept) < len(clips):
            print(f"note: {len(clips) - len(kept)} {clips.name} clip(s) are not in the feature cache "
                  f"(left out as bad files) and are skipped")
        labels = clips.labels[kept] if clips.labels is not None else None
        return ClipData(cache, cache.rows([clips.fnames[i] for i in kept]), labels)

    @cached_property
    def curated(self) -> ClipData:
        return self.clip_data(self.dataset.curated)

    @cached_property
    def folds(self) -> np.ndarray:
        """Fold of each clip of `self.curated`, from models/folds.csv (made on first use)."""
        fnames = self.curated.fnames
        clips = ClipSet("curated", fnames, [], self.curated.labels)
        table = folds_lib.load_or_create(self.paths.models, clips, self.profile.n_folds, self.classes)
        return table.set_index("fname").loc[fnames, "fold"].to_numpy()

    def fold_numbers(self) -> list[int]:
        wanted = getattr(self.args, "folds", None)
        wanted = wanted if wanted is not None else list(range(self.profile.n_folds))
        bad = [k for k in wanted if not 0 <= k < self.profile.n_folds]
        if bad:
            raise SystemExit(f"--folds {bad}: the {self.profile.name} profile has folds 0..{self.profile.n_folds - 1}")
        return wanted

    def split(self, fold: int) -> tuple[ClipData, ClipData]:
        """(training clips, validation clips) of one fold."""
        data = self.curated
        train, val = np.flatnonzero(self.folds != fold), np.flatnonzero(self.folds == fold)
        return (ClipData(data.cache, data.rows[train], data.labels[train]),
                ClipData(data.cache, data.rows[val], data.labels[val]))

    def model_dir(self, name: str) -> Path:
        return self.paths.models / name


def write_predictions(path: Path, fnames: list[str], classes: list[str], scores: np.ndarray,
                      extra: dict[str, list] | None = None) -> None:
    """fname + one column per class, the sample_submission format (atomic). `extra` columns
    (name: values) go between fname and the classes (tag.py --segments: start, end)."""
    table = pd.DataFrame(scores, columns=classes)
    table.insert(0, "fname", fnames)
    for i, (name, values) in enumerate((extra or {}).items()):
        table.insert(1 + i, name, values)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, table.to_csv(index=False, float_format="%.6g"))


def read_predictions(path: Path, fnames: list[str], classes: list[str]) -> np.ndarray:
    """Scores from a predictions CSV, rows in `fnames` order; a clear error if it does not fit."""
    table = pd.read_csv(path, dtype={"fname": str})
    problems = []
    if list(table.columns) != ["fname", *classes]:
        problems.append(f"{path}: columns differ from fname + the {len(classes)} classes")
    absent = set(fnames) - set(table["fname"])
    if absent:
        problems.append(f"{path}: {len(absent)} clip(s) missing, e.g. {sorted(absent)[:3]}")
    if problems:
        raise DatasetError("predictions do not match the dataset", problems)
    return table.set_index("fname").loc[fnames, classes].to_numpy(np.float32)
