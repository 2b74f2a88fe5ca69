"""Batches from the feature cache: random crops, label smoothing and mixup for training;
fixed crops at three positions for test-time augmentation (3-TTA).

Batches are numpy arrays built straight from the memory-mapped int16 audio: nothing is
decoded again and RAM does not grow with the number of clips. Each batch's randomness is
seeded by (seed, epoch, batch index), so batches are reproducible whatever thread builds
them and a resumed run draws the same batches.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import keras
import numpy as np

from fat2019.data.feature_cache import FeatureCache

TTA_POSITIONS = ("start", "middle", "end")


@dataclass
class ClipData:
    """A subset of one cached clip set, with multi-hot labels (None for the test set).
    An empty set may have no cache (None)."""
    cache: FeatureCache
    rows: np.ndarray
    labels: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def fnames(self) -> list[str]:
        return [self.cache.fnames[r] for r in self.rows]


def place(cache: FeatureCache, row: int, out: np.ndarray, position: float) -> None:
    """Write clip `row` into the zeroed crop buffer `out`.

    position in [0, 1]: a longer clip is cropped starting at position * (excess), a shorter
    one is zero-padded with the clip starting at position * (room)."""
    n, crop = int(cache.n_samples[row]), len(out)
    if n >= crop:
        start = crop_start(n, crop, position)
        np.multiply(cache.read(row, start, start + crop), cache.scales[row], out=out, casting="unsafe")
    else:
        start = int(position * (crop - n))
        np.multiply(cache.read(row, 0, n), cache.scales[row], out=out[start: start + n], casting="unsafe")


def crop_start(n_samples: int, crop: int, position: float) -> int:
    """Where a crop of a clip longer than the crop starts (place)."""
    return int(position * (n_samples - crop))


def inputs(data: ClipData, rows: np.ndarray, audio: np.ndarray) -> dict[str, np.ndarray]:
    cache_rows = data.rows[rows]
    return {"audio": audio,
            "global_feat": np.asarray(data.cache.global_features[cache_rows]),
            "other": data.cache.lengths[cache_rows, None]}


def mix_in_place(audio: np.ndarray, perm: np.ndarray, w: float) -> None:
    """audio[j] = w * audio[j] + (1 - w) * audio[perm[j]] for every row, in place.

    Rows are visited along the permutation's cycles, so each row's partner is still
    unmixed when it is read (the cycle's first row is saved to close it): two rows are
    touched at a time (cache-resident) and no batch-sized temporary is allocated. The
    float32 operations are those of the plain expression, so the values are identical."""
    w_self, w_partner = np.float32(w), np.float32(1 - w)
    seen = np.zeros(len(perm), bool)
    row = np.empty(audio.shape[1:], audio.dtype)
    for first in range(len(perm)):
        if seen[first]:
            continue
        saved = audio[first].copy()
        j = first
        while True:
            seen[j] = True
            partner = saved if perm[j] == first else audio[perm[j]]
            np.multiply(partner, w_partner, out=row)
            audio[j] *= w_self
            audio[j] += row
            j = perm[j]
            if j == first:
                break


class TrainBatches(keras.utils.PyDataset):
    """One epoch of shuffled training batches: random crop/pad, smoothing, mixup.

    A last batch of fewer than `min_batch` clips is left out (its clips differ every
    epoch): with N data-parallel replicas a step needs at least N clips, one per replica;
    tf.distribute fails on a replica without any."""

    def __init__(self, data: ClipData, batch_size: int, crop_samples: int, *, seed: int, epoch: int,
                 mixup_prob: float, mixup_weight: float, label_smoothing: float, workers: int = 1,
                 min_batch: int = 1):
        super().__init__(workers=workers, use_multiprocessing=False, max_queue_size=8)
        self.data, self.batch_size, self.crop, self.min_batch = data, batch_size, crop_samples, min_batch
        self.seed, self.epoch = seed, epoch
        self.mixup_prob, self.mixup_weight, self.smoothing = mixup_prob, mixup_weight, label_smoothing
        self.order = np.random.default_rng([seed, epoch]).permutation(len(data))

    def __len__(self) -> int:
        full, rest = divmod(len(self.data), self.batch_size)
        return full + (rest >= max(1, self.min_batch))

    def __getitem__(self, index: int):
        rows = self.order[index * self.batch_size: (index + 1) * self.batch_size]
        rng = np.random.default_rng([self.seed, self.epoch, index])
        audio = np.zeros((len(rows), self.crop), np.float32)
        positions = [rng.random() for _ in rows]   # drawn as before the prefetch: the same crops
        cache_rows = self.data.rows[rows]
        self.data.cache.prefetch(cache_rows, self.crop, positions)
        for j, (r, position) in enumerate(zip(cache_rows, positions)):
            place(self.data.cache, r, audio[j], position)
        x = inputs(self.data, rows, audio)
        y = self.data.labels[rows]
        y = self.smoothing * (1 - y) + (1 - self.smoothing) * y
        if rng.random() < self.mixup_prob:
            # mix the batch with a permutation of itself; global features and length stay
            perm = rng.permutation(len(rows))
            w = self.mixup_weight
            mix_in_place(audio, perm, w)
            y = w * y + (1 - w) * y[perm]
        return x, y.astype(np.float32)


class CropBatches(keras.utils.PyDataset):
    """Every clip once, in order, cropped (or padded) at one fixed position."""

    def __init__(self, data: ClipData, batch_size: int, crop_samples: int, position: str, workers: int = 1):
        super().__init__(workers=workers, use_multiprocessing=False, max_queue_size=8)
        self.data, self.batch_size, self.crop = data, batch_size, crop_samples
        self.position = {"start": 0.0, "middle": 0.5, "end": 1.0}[position]

    def __len__(self) -> int:
        return math.ceil(len(self.data) / self.batch_size)

    def __getitem__(self, index: int):
        rows = np.arange(index * self.batch_size, min((index + 1) * self.batch_size, len(self.data)))
        audio = np.zeros((len(rows), self.crop), np.float32)
        cache_rows = self.data.rows[rows]
        self.data.cache.prefetch(cache_rows, self.crop, [self.position] * len(rows))
        for j, r in enumerate(cache_rows):
            place(self.data.cache, r, audio[j], self.position)
        return (inputs(self.data, rows, audio),)


def predict_tta(model: keras.Model, data: ClipData, crop_samples: int, batch_size: int,
                workers: int = 1) -> np.ndarray:
    """Mean prediction over crops at the start, middle and end of each clip (3-TTA)."""
    total = np.zeros((len(data), model.outputs[0].shape[-1]), np.float64)
    if not len(data):   # no test clips: Keras refuses an empty dataset
        return total.astype(np.float32)
    for position in TTA_POSITIONS:
        total += model.predict(CropBatches(data, batch_size, crop_samples, position, workers), verbose=0)
    return (total / len(TTA_POSITIONS)).astype(np.float32)
