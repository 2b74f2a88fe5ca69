"""What every part of the GPU benchmark shares: the sizes of a run (Settings, full or
quick), its wall-clock Budget, the competition's set sizes, and the synthetic feature cache
and batches it measures on (the pipeline's own FeatureCache and TrainBatches)."""
from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fat2019 import config
from fat2019.data.batches import ClipData, TrainBatches
from fat2019.data.feature_cache import UNIT_SCALE, CacheWriter, FeatureCache, Source


# FSDKaggle2019's clip sets (the competition's data).
N_CURATED, N_NOISY, N_TEST = 4970, 19_815, 3361
N_CLASSES = 80

POLICIES = ("mixed_bfloat16", "float32")   # measured in this order; the recipe would run the first
GPU_COMMAND = ("sh ../shared/gpu-wheels.sh .whl  # here, with network; then on the GPU machine:\n"
               "python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl && "
               "PYTHONPATH=/tmp/site KERAS_BACKEND=jax python3 code/tools/bench.py --gpu")


@dataclass(frozen=True)
class Settings:
    """Sizes of one benchmark run."""
    profile: config.Profile      # crop length, width, batch sizes of the models measured
    n_clips: int                 # clips in the synthetic cache
    warmup_steps: int            # training steps of the compiling warm-up fit (excluded)
    train_steps: int             # timed training steps per model and policy
    predict_batches: int         # timed prediction batches per model and policy
    gru_units: int               # the branch benchmark's GRU width
    gru_batch: int
    unrolls: tuple[int, ...]     # BiGRUSum unrolls tried on the branch; the zoo runs the fastest
    branch_steps: int
    pool_shape: tuple[int, ...]  # (batch, time, mel, channels) of the pooling benchmark
    workers: int                 # PyDataset threads
    policies: tuple[str, ...] = POLICIES

    @classmethod
    def full(cls, workers: int) -> "Settings":
        return cls(config.PROFILES["full"], n_clips=256, warmup_steps=3, train_steps=60, predict_batches=30,
                   gru_units=128, gru_batch=32, unrolls=(1, 4, 8, 16), branch_steps=20,
                   pool_shape=(32, 431, 64, 96), workers=workers)

    @classmethod
    def quick(cls, workers: int) -> "Settings":
        """Tiny sizes for a smoke run on a CPU: the figures mean nothing."""
        tiny = dataclasses.replace(config.PROFILES["demo"], duration=0.5, batch_size=4, predict_batch_size=4)
        return cls(tiny, n_clips=12, warmup_steps=1, train_steps=2, predict_batches=2, gru_units=8,
                   gru_batch=4, unrolls=(1,), branch_steps=2, pool_shape=(4, 22, 64, 8), workers=workers)


class Budget:
    """Wall-clock budget: a measurement starts only if one like the last still fits."""

    def __init__(self, seconds: float):
        self.seconds, self.start, self.last = seconds, time.perf_counter(), 0.0

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def allows(self) -> bool:
        return self.elapsed() + self.last <= self.seconds

    def run(self, fn, *args):
        t0 = time.perf_counter()
        out = fn(*args)
        self.last = time.perf_counter() - t0
        return out


def synthetic_cache(folder: Path, n_clips: int, seed: int = 0) -> FeatureCache:
    """A real feature cache of int16 noise clips, lengths log-normal around 5 s (0.3-30 s,
    like the curated set), random global features. Built with the features stage's writer."""
    rng = np.random.default_rng(seed)
    writer = CacheWriter(folder)
    sources = []
    for i, seconds in enumerate(np.clip(rng.lognormal(np.log(5.0), 0.9, n_clips), 0.3, 30.0)):
        n = int(seconds * config.SAMPLE_RATE)
        audio = np.clip(rng.normal(0, 3000, n), -32768, 32767).astype(np.int16)
        source = Source(f"synthetic{i:05d}.wav", Path(f"synthetic{i:05d}.wav"), size=2 * n, mtime_ns=0)
        gfeat = rng.standard_normal((config.N_GLOBAL_STEPS, config.N_GLOBAL_STATS)).astype(np.float32)
        writer.add(source, audio, UNIT_SCALE, n / config.LENGTH_NORMALISER, gfeat)
        sources.append(source)
    writer.finish(sources)
    return FeatureCache(folder)


def clip_data(cache: FeatureCache, n: int, seed: int = 0) -> ClipData:
    """n clips (the cache's, repeated) with random multi-hot labels."""
    rng = np.random.default_rng(seed)
    labels = (rng.random((n, N_CLASSES)) < 0.02).astype(np.float32)
    return ClipData(cache, np.resize(np.arange(len(cache)), n), labels)


def train_batches(data: ClipData, s: Settings, crop: int, workers: int) -> TrainBatches:
    """An epoch of the recipe's first epochs: mixup on, label smoothing."""
    p = s.profile
    return TrainBatches(data, p.batch_size, crop, seed=0, epoch=0, mixup_prob=p.mixup_prob,
                        mixup_weight=p.mixup_weight, label_smoothing=p.label_smoothing, workers=workers)
