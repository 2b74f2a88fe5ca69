"""The CPU benchmark's data and input measurements (code/tools/bench.py, items 1-3): generated
clips with the curated set's spread of lengths, the features stage against the original's
per-clip work, loading from the cache against decoding again, and the training input
pipeline's rate.

librosa and soundfile are imported by the functions that use them: the GPU machines,
which import this package for the --gpu bench, lack them.
"""
from __future__ import annotations

import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from fat2019 import config
from fat2019.data.batches import ClipData, TrainBatches
from fat2019.data.dataset import ClipSet
from fat2019.data.feature_cache import AUDIO, GLOBAL, INDEX, FeatureCache
from fat2019.util.atomic import atomic_write_text


def write_clips(folder: Path, n: int, seed: int = 0) -> list[Path]:
    """n mono 16-bit 44.1 kHz wav files: tones and noise under envelopes, with silence at
    both ends, lengths log-normal around 5 s (clipped to 0.3-30 s) like the curated set."""
    import soundfile as sf
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, seconds in enumerate(np.clip(rng.lognormal(np.log(5.0), 0.9, n), 0.3, 30.0)):
        m = int(seconds * config.SAMPLE_RATE)
        t = np.arange(m) / config.SAMPLE_RATE
        tone = np.sin(2 * np.pi * rng.uniform(100, 4000) * t + rng.uniform(0, 6) * np.sin(2 * np.pi * 3 * t))
        x = (rng.uniform(0.05, 0.5) * tone + rng.uniform(0.005, 0.1) * rng.standard_normal(m))
        x *= np.exp(-t * rng.uniform(0, 2))
        quiet = rng.integers(0, m // 5 + 1, 2)             # silent lead-in and tail
        x[: quiet[0]] = 0
        x[m - quiet[1]:] = 0
        path = folder / f"{i:05d}.wav"
        sf.write(path, x.astype(np.float32), config.SAMPLE_RATE, subtype="PCM_16")
        paths.append(path)
    return paths


def loop_global_features(y: np.ndarray) -> np.ndarray:
    """The original's definition, step by step (the reference we compare against)."""
    from fat2019.data.audio import step_bounds
    left, right = step_bounds(len(y))
    out = np.empty((len(left), config.N_GLOBAL_STATS), np.float32)
    for s, (a, b) in enumerate(zip(left, right)):
        step = y[a:b]
        out[s, :3] = np.mean(step), np.std(step), np.max(step) - np.min(step)
        out[s, 3:] = np.percentile(step, config.GLOBAL_PERCENTILES)
    return out


def bench_features(paths: list[Path], cache_dir: Path) -> tuple[list[dict], FeatureCache]:
    import librosa
    import soundfile as sf

    from fat2019.data import cache_builder
    from fat2019.data.audio import global_features

    n = len(paths)
    audio_seconds = sum(sf.info(str(p)).duration for p in paths)
    # reference: one process, the original's calls, timed per part
    librosa.effects.trim(librosa.load(paths[0], sr=config.SAMPLE_RATE)[0])  # imports, numba: not per clip
    t_load = t_trim = t_loop = 0.0
    untrimmed = []
    for p in paths:
        t0 = time.perf_counter()
        y, _ = librosa.load(p, sr=config.SAMPLE_RATE)
        t1 = time.perf_counter()
        librosa.effects.trim(y, top_db=config.TRIM_TOP_DB)
        t2 = time.perf_counter()
        loop_global_features(y)
        t3 = time.perf_counter()
        t_load, t_trim, t_loop = t_load + t1 - t0, t_trim + t2 - t1, t_loop + t3 - t2
        untrimmed.append(y)
    t_reference = t_load + t_trim + t_loop

    # ours: the features stage's own function, both cores
    clips = ClipSet("bench", [p.name for p in paths], list(paths), None)
    t0 = time.perf_counter()
    decoded, bad = cache_builder.build_set(clips, cache_dir, workers=os.cpu_count() or 1, skip_bad=False)
    t_ours = time.perf_counter() - t0
    assert decoded == n and not bad, (decoded, bad)

    t0 = time.perf_counter()
    for y in untrimmed:
        global_features(y)
    t_gf = time.perf_counter() - t0

    cache = FeatureCache(cache_dir)
    t0 = time.perf_counter()
    checksum = 0.0
    for i in range(len(cache)):
        checksum += float(cache.waveform(i)[::997].sum())   # touch the data
    t_cache = time.perf_counter() - t0

    rows = [
        dict(figure="features stage, clips/s", ours=n / t_ours, reference=n / t_reference, goal=10,
             note=f"{n} clips, {audio_seconds / 60:.1f} min of audio; reference per clip: load "
                  f"{1e3 * t_load / n:.1f} ms, trim {1e3 * t_trim / n:.1f} ms, percentile loop "
                  f"{1e3 * t_loop / n:.1f} ms (one process); ours on {os.cpu_count()} cores, "
                  f"incl. worker start-up and the cache write"),
        dict(figure="global features alone, clips/s (one core each)", ours=n / t_gf, reference=n / t_loop,
             goal=50, note="same untrimmed audio; ours: sorted half-steps (int16 radix sort) + "
                           "vectorised order-statistic search"),
        dict(figure="later stage's loading: cache vs decode+trim, clips/s", ours=n / t_cache,
             reference=n / (t_load + t_trim), goal=20,
             note="trimmed float32 waveforms from the memory-mapped int16 cache vs librosa.load + trim"),
    ]
    return rows, cache


def epoch_of_batches(data: ClipData, batch_size: int, crop: int, threads: int) -> float:
    """Seconds to build every batch of one training epoch with `threads` threads."""
    batches = TrainBatches(data, batch_size, crop, seed=0, epoch=0, mixup_prob=0.6, mixup_weight=0.7,
                           label_smoothing=0.05)
    t0 = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        for x, y in pool.map(batches.__getitem__, range(len(batches))):
            pass
    return time.perf_counter() - t0


def repeated(cache: FeatureCache, n: int, n_classes: int = 80, seed: int = 0) -> ClipData:
    rng = np.random.default_rng(seed)
    rows = np.resize(np.arange(len(cache)), n)
    labels = (rng.random((n, n_classes)) < 0.02).astype(np.float32)
    return ClipData(cache, rows, labels)


def bench_input_pipeline(cache: FeatureCache, n_clips: int) -> list[dict]:
    crop = config.PROFILES["full"].scale(config.ZOO[0]).crop_samples
    data = repeated(cache, n_clips)
    rows = []
    for threads in (1, 2):
        seconds = epoch_of_batches(data, 32, crop, threads)
        rows.append(dict(figure=f"input pipeline, 5 s crops, {threads} thread(s), clips/s",
                         ours=n_clips / seconds, reference=None, goal=1000 if threads == 2 else None,
                         note=f"{n_clips} clips, batch 32, random crop/pad, label smoothing, mixup p 0.6"))
    return rows


def make_repeated_cache(source: FeatureCache, folder: Path, n: int) -> None:
    """A real n-clip cache on disk whose rows reuse `source`'s audio (a link, no copy):
    index and global features grow with n like a real cache's, the audio bytes do not."""
    folder.mkdir(parents=True, exist_ok=True)
    take = np.resize(np.arange(len(source)), n)
    index = source.index.iloc[take].reset_index(drop=True)
    index["fname"] = [f"clip{i:06d}.wav" for i in range(n)]
    atomic_write_text(folder / INDEX, index.to_csv(index=False))
    np.save(folder / GLOBAL, np.asarray(source.global_features)[take])
    os.link(source.folder / AUDIO, folder / AUDIO)
