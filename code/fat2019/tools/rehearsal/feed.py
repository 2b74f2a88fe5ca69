"""The host feed: training batches (random 5 s crops, smoothing, mixup) per second, drawn
from a real-size feature cache as training draws them (TrainBatches), on a cold page cache
and a warm one, by 1 or more threads."""
from __future__ import annotations

import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from fat2019.data.batches import ClipData, CropBatches, TrainBatches
from fat2019.data.feature_cache import AUDIO, FeatureCache


def drop_page_cache(folder: Path) -> str:
    """Evict the cache's audio from the page cache; says how. drop_caches needs root;
    posix_fadvise(DONTNEED) evicts this file's clean pages without it."""
    try:
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3\n")
        return "drop_caches"
    except OSError:
        fd = os.open(Path(folder) / AUDIO, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)
        return "fadvise"


def batch_rate(folder: Path, *, threads: int, n_batches: int, crop_samples: int, batch_size: int = 32,
               n_classes: int = 80, epoch: int = 0, cold: bool) -> dict:
    """clips/s (wall and per CPU-second) of `n_batches` batches of one epoch, built by `threads` threads at once."""
    cache = FeatureCache(folder)
    labels = np.zeros((len(cache), n_classes), np.float32)
    labels[np.arange(len(cache)), np.arange(len(cache)) % n_classes] = 1
    batches = TrainBatches(ClipData(cache, np.arange(len(cache)), labels), batch_size, crop_samples, seed=0,
                           epoch=epoch, mixup_prob=0.6, mixup_weight=0.7, label_smoothing=0.01)
    n_batches = min(n_batches, len(batches))
    how = drop_page_cache(folder) if cold else "warm"
    start, cpu = time.perf_counter(), time.process_time()
    with ThreadPoolExecutor(threads) as pool:
        for _ in pool.map(batches.__getitem__, range(n_batches)):
            pass
    took, cpu = time.perf_counter() - start, time.process_time() - cpu
    return {"cache": str(folder), "cache_gb": round(os.path.getsize(Path(folder) / AUDIO) / 1e9, 2),
            "threads": threads, "page_cache": how, "batches": n_batches,
            "clips_per_s": round(n_batches * batch_size / took, 1),
            # per CPU-second of this process (all its threads): what one idle core would give,
            # when the machine is shared and wall time mostly measures the other processes
            "clips_per_cpu_s": round(n_batches * batch_size / max(cpu, 1e-9), 1),
            "load": round(os.getloadavg()[0], 2)}


def _render(job: tuple) -> tuple:
    from fat2019.tools.rehearsal.data_plan import render
    name, i, n, labels, seed = job
    return i, render(name, i, n, labels, seed)


def write_plan_cache(folder: Path, plan, seed: int = 0, workers: int = 2) -> None:
    """A feature cache of a planned split without the WAV files or the decoding: its clips
    rendered straight into CacheWriter (the features stage's writer, so the files are the
    stage's), global features zero. For the feed at full size when the disk cannot hold
    the WAVs and their cache at once; the feed reads only the audio and the index."""
    import multiprocessing

    from fat2019.data.feature_cache import UNIT_SCALE, CacheWriter, Source
    from fat2019.config import N_GLOBAL_STATS, N_GLOBAL_STEPS
    writer = CacheWriter(folder)
    sources = [Source(f, Path(f), 44 + 2 * int(n), 0) for f, n in zip(plan.fnames, plan.n_samples)]
    jobs = [(plan.name, i, int(n), plan.labels[i], seed) for i, n in enumerate(plan.n_samples)
            if not writer.has(sources[i])]
    zeros = np.zeros((N_GLOBAL_STEPS, N_GLOBAL_STATS), np.float32)
    with multiprocessing.get_context("fork").Pool(workers) as pool:
        for i, audio in pool.imap(_render, jobs, chunksize=16):
            writer.add(sources[i], audio, UNIT_SCALE, len(audio) / 441_000, zeros)
    writer.finish(sources)


def crop_rate(folder: Path, *, n_batches: int, crop_samples: int, batch_size: int = 64, cold: bool,
              position: str = "middle") -> dict:
    """clips/s (wall and per CPU-second) of prediction batches (CropBatches, one thread):
    the 3-TTA crops predict.py feeds, without mixup."""
    cache = FeatureCache(folder)
    # every 7th clip: spread over the whole cache, as a fold's validation clips are
    data = ClipData(cache, np.arange(0, len(cache), 7))
    batches = CropBatches(data, batch_size, crop_samples, position)
    n_batches = min(n_batches, len(batches))
    how = drop_page_cache(folder) if cold else "warm"
    start, cpu = time.perf_counter(), time.process_time()
    for i in range(n_batches):
        batches[i]
    took, cpu = time.perf_counter() - start, time.process_time() - cpu
    return {"cache_gb": round(os.path.getsize(Path(folder) / AUDIO) / 1e9, 2), "threads": 1, "page_cache": how,
            "batches": n_batches, "clips_per_s": round(n_batches * batch_size / took, 1),
            "clips_per_cpu_s": round(n_batches * batch_size / max(cpu, 1e-9), 1),
            "load": round(os.getloadavg()[0], 2)}
