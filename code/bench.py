"""Benchmarks: our pipeline against a reference implementation of the original's approach
and against the machine itself, every ratio measured within one run. Writes BENCHMARKS.md.

    python code/bench.py              # about 7 minutes on 2 cores
    python code/bench.py --quick      # a smaller smoke run (figures are noisier)

What is measured, on generated 16-bit 44.1 kHz clips with the real curated set's spread of
lengths (median 5 s, mean about 7.5 s, 0.3-30 s):

1. features: the original's per-clip work (librosa.load, librosa.effects.trim, a loop of 128
   np.percentile calls; one process) vs code/features.py (parallel, vectorised global
   features, one int16 cache write) on the same files; and the global features alone.
2. loading in a later stage: reading the trimmed clips from the cache vs decoding and
   trimming them again (what every stage of the original did).
3. input pipeline: training batches (5 s crops, mixup, smoothing) from the cache, clips/s.
4. CPU training of the full-size v1mix: clips/s and GFLOP/s vs a float32 matmul measured now.
5. memory: peak RSS of a pretraining-sized run (a 20,000-clip cache, one epoch of batches,
   a few training steps) vs the same with 2,000 clips.
6. prediction: per-clip inference time of every full-size zoo model, extrapolated to the
   full zoo x 10 folds x 3 TTA on the 3,361 test clips.
7. GPU (only where one is visible): v1mix train / inference clips/s, float32 vs mixed.

    python code/bench.py --gpu        # the GPU benchmark under JAX (gpu_bench.py): a section
                                      # of BENCHMARKS.md of its own; the CPU figures stay

The --gpu path imports neither TensorFlow, kapre, librosa nor soundfile (the GPU machines
lack them), so those are imported only by the functions of the CPU benchmark that use them.
"""
from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before TensorFlow is imported below

import argparse
import datetime
import json
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd

from fat2019 import cli
from fat2019 import config
from fat2019.bench import gpu_bench
from fat2019.data.batches import ClipData, TrainBatches
from fat2019.data.dataset import ClipSet
from fat2019.data.feature_cache import AUDIO, GLOBAL, INDEX, FeatureCache
from fat2019.util.atomic import atomic_write_text

HERE = Path(__file__).resolve().parent
N_TEST_CLIPS = 3361          # the competition's test set
N_PRETRAIN_CLIPS = 20_000    # about the noisy set's size (19,815)


# ---------------------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------------------

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


# ---------------------------------------------------------------------------------------
# 1-2. Features and loading
# ---------------------------------------------------------------------------------------

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


# ---------------------------------------------------------------------------------------
# 3. Input pipeline
# ---------------------------------------------------------------------------------------

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


# ---------------------------------------------------------------------------------------
# 4, 6, 7. Compute
# ---------------------------------------------------------------------------------------

def matmul_peak_gflops(n: int = 4096, repeats: int = 8) -> float:
    import tensorflow as tf
    a = tf.random.normal((n, n))
    b = tf.random.normal((n, n))
    tf.linalg.matmul(a, b).numpy()
    t0 = time.perf_counter()
    for _ in range(repeats):
        c = tf.linalg.matmul(a, b)
    c.numpy()
    return 2 * n ** 3 * repeats / (time.perf_counter() - t0) / 1e9


def full_model(name: str, n_classes: int = 80):
    from fat2019.nn import models
    return models.build_model(config.PROFILES["full"].scale(config.ZOO_BY_NAME[name]), n_classes)


def model_batch(data: ClipData, batch_size: int):
    """One real batch of 5 s crops (inputs, labels) for the full-size models."""
    crop = config.PROFILES["full"].scale(config.ZOO[0]).crop_samples
    return TrainBatches(data, batch_size, crop, seed=1, epoch=0, mixup_prob=0.0, mixup_weight=0.7,
                        label_smoothing=0.0)[0]


def time_calls(fn, repeats: int) -> float:
    fn()                                                   # trace / warm up
    t0 = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - t0) / repeats


def bench_training(data: ClipData, peak: float, steps: int, batch_size: int) -> list[dict]:
    import keras
    from fat2019.nn.flops import count_flops

    rows = [dict(figure="float32 matmul peak (TF, 4096^2), GFLOP/s", ours=peak, reference=None, goal=None,
                 note="this machine, measured in this run: the yardstick below")]
    x, y = model_batch(data, batch_size)
    for policy in ("float32", "mixed_bfloat16"):
        keras.mixed_precision.set_global_policy(policy)
        model = full_model("v1mix")
        flops = count_flops(model)["total"]
        step = time_calls(lambda: model.train_on_batch(x, y), steps)
        infer = time_calls(lambda: model.predict_on_batch(x), steps)
        keras.backend.clear_session()
        train_gflops = batch_size / step * 3 * flops / 1e9      # backward ~ 2x forward
        infer_gflops = batch_size / infer * flops / 1e9
        if policy == "float32":
            rows += [
                dict(figure="v1mix full-size training on CPU, clips/s", ours=batch_size / step, reference=None,
                     goal=None, note=f"batch {batch_size}, 5 s crops, {flops / 1e9:.2f} GFLOPs forward per clip"),
                dict(figure="v1mix training GFLOP/s, share of matmul peak", ours=train_gflops, reference=peak,
                     goal=0.4, ratio_is_share=True, note="training FLOPs counted as 3x forward"),
                dict(figure="v1mix full-size inference on CPU, clips/s", ours=batch_size / infer,
                     reference=None, goal=None, note=f"batch {batch_size}; {infer_gflops:.0f} GFLOP/s"),
            ]
        else:
            rows.append(dict(figure=f"v1mix training on CPU, {policy}, clips/s", ours=batch_size / step,
                             reference=rows[1]["ours"], goal=None, ratio_label="vs float32",
                             note=f"--mixed-precision bfloat16 on this CPU; inference {batch_size / infer:.2f} clips/s"))
    keras.mixed_precision.set_global_policy("float32")
    return rows


def bench_prediction_cost(data: ClipData, batch_size: int) -> list[dict]:
    import keras
    rows, total = [], 0.0
    for member in config.ZOO:
        model = full_model(member.name)
        x, _ = model_batch(data, batch_size)
        per_clip = time_calls(lambda: model.predict_on_batch(x), 1) / batch_size
        keras.backend.clear_session()
        hours = per_clip * N_TEST_CLIPS * 3 * 10 / 3600
        total += hours
        rows.append(dict(figure=f"prediction cost {member.name}: ms per 5 s crop", ours=1e3 * per_clip,
                         reference=None, goal=None,
                         note=f"10 folds x 3 TTA x {N_TEST_CLIPS} test clips = {hours:.2f} h on this CPU"))
    rows.append(dict(figure="prediction cost, whole zoo x 10 folds x 3 TTA, test set, hours",
                     ours=total, reference=None, goal=None,
                     note="extrapolated from the per-clip times above (this CPU; a GPU is far faster)"))
    return rows


def bench_gpu(data: ClipData, batch_size: int) -> list[dict]:
    import keras
    import tensorflow as tf
    if not tf.config.list_physical_devices("GPU"):
        return [dict(figure="GPU: v1mix train / inference clips/s, float32 vs mixed_float16",
                     ours=None, reference=None, goal=None,
                     note="unmeasured: no GPU visible in this run")]
    rows = []
    for policy in ("float32", "mixed_float16", "mixed_bfloat16"):
        keras.mixed_precision.set_global_policy(policy)
        model = full_model("v1mix")
        x, y = model_batch(data, batch_size)
        step = time_calls(lambda: model.train_on_batch(x, y), 10)
        infer = time_calls(lambda: model.predict_on_batch(x), 10)
        keras.backend.clear_session()
        rows.append(dict(figure=f"GPU v1mix {policy}: train clips/s", ours=batch_size / step, reference=None,
                         goal=None, note=f"batch {batch_size}; inference {batch_size / infer:.0f} clips/s"))
    keras.mixed_precision.set_global_policy("float32")
    return rows


# ---------------------------------------------------------------------------------------
# 5. Memory (each probe in a fresh process, so peaks do not mix)
# ---------------------------------------------------------------------------------------

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


def peak_rss_mb() -> float:
    """This process's peak resident set (VmHWM). Not ru_maxrss: after fork + exec that
    still carries the parent's peak."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def rss_probe(cache_dir: Path, train_steps: int, batch_size: int) -> dict:
    """Run in a child: one epoch of batches over the cache, then `train_steps` training
    steps of the full v1mix. Peak RSS after each phase, in MB."""
    cache = FeatureCache(cache_dir)
    data = repeated(cache, len(cache))
    crop = config.PROFILES["full"].scale(config.ZOO[0]).crop_samples
    seconds = epoch_of_batches(data, batch_size, crop, 2)
    result = {"clips": len(cache), "epoch_s": seconds,
              "rss_pipeline_mb": peak_rss_mb()}
    if train_steps:
        model = full_model("v1mix")
        x, y = model_batch(data, batch_size)
        for _ in range(train_steps):
            model.train_on_batch(x, y)
        result["rss_training_mb"] = peak_rss_mb()
    return result


def run_probe(cache_dir: Path, train_steps: int, batch_size: int) -> dict:
    out = subprocess.run([sys.executable, __file__, "--rss-probe", str(cache_dir), str(train_steps),
                          str(batch_size)], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def bench_memory(cache: FeatureCache, work: Path, n_small: int, n_large: int, steps: int,
                 batch_size: int) -> list[dict]:
    small, large = work / f"cache{n_small}", work / f"cache{n_large}"
    make_repeated_cache(cache, small, n_small)
    make_repeated_cache(cache, large, n_large)
    a = run_probe(small, 0, batch_size)
    b = run_probe(large, 0, batch_size)
    c = run_probe(large, steps, batch_size)
    return [
        dict(figure=f"peak RSS, epoch of batches over {n_small:,} clips, MB", ours=a["rss_pipeline_mb"],
             reference=None, goal=None, note=f"epoch built in {a['epoch_s']:.1f} s (TF imported, batch {batch_size})"),
        dict(figure=f"peak RSS, epoch of batches over {n_large:,} clips, MB", ours=b["rss_pipeline_mb"],
             reference=a["rss_pipeline_mb"], goal=None, ratio_label="vs the small run",
             note=f"epoch built in {b['epoch_s']:.1f} s; growth with 10x the clips: "
                  f"{b['rss_pipeline_mb'] - a['rss_pipeline_mb']:+.0f} MB"),
        dict(figure=f"peak RSS, {n_large:,}-clip epoch + {steps} full v1mix training steps on CPU, MB",
             ours=c["rss_training_mb"], reference=None, goal=4096,
             note=f"batch {batch_size}; on a CPU the activations of the step live in RAM"),
    ]


# ---------------------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------------------

def machine_lines() -> list[str]:
    import keras
    import librosa
    import tensorflow as tf
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")),
               platform.processor())
    ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2 ** 30
    gpus = [d.name for d in tf.config.list_physical_devices("GPU")] or ["none"]
    return [f"- date: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC",
            f"- machine: {cpu}, {os.cpu_count()} cores, {ram:.0f} GiB RAM, GPU: {', '.join(gpus)}",
            f"- versions: Python {platform.python_version()}, numpy {np.__version__}, TensorFlow "
            f"{tf.__version__}, Keras {keras.__version__}, librosa {librosa.__version__}"]


def verdict(row: dict) -> tuple[str, str]:
    """(ratio text, goal text) for one figure."""
    ours, ref, goal = row["ours"], row.get("reference"), row.get("goal")
    if ours is None:
        return "", "unmeasured"
    if row.get("ratio_is_share"):
        share = ours / ref
        return f"{share:.0%} of peak", f">= {goal:.0%}: {'met' if share >= goal else 'NOT met'}"
    ratio = ours / ref if ref else None
    ratio_text = f"{ratio:.1f}x {row.get('ratio_label', '')}".strip() if ratio is not None else ""
    if goal is None:
        return ratio_text, ""
    if ref and not row.get("figure").startswith("peak RSS"):
        return ratio_text, f">= {goal:g}x: {'met' if ratio >= goal else 'NOT met'}"
    if row["figure"].startswith("peak RSS"):
        return ratio_text, f"<= {goal:g} MB: {'met' if ours <= goal else 'NOT met'}"
    return ratio_text, f">= {goal:g}: {'met' if ours >= goal else 'NOT met'}"


def number(v) -> str:
    if v is None:
        return "–"
    return f"{v:,.0f}" if abs(v) >= 100 else f"{v:.3g}"


def report(rows: list[dict], command: str, seconds: float, notes: list[str]) -> str:
    lines = ["# Benchmarks", "", "Every figure below comes from one run of", "", f"    {command}", "",
             f"({seconds / 60:.1f} min). Ratios compare figures measured in that same run.", "",
             *machine_lines(), "",
             "| figure | ours | reference | ratio | goal | how |", "|---|---:|---:|---:|---|---|"]
    for row in rows:
        ratio, goal = verdict(row)
        lines.append(f"| {row['figure']} | {number(row['ours'])} | {number(row.get('reference'))} "
                     f"| {ratio} | {goal} | {row.get('note', '')} |")
    return "\n".join(lines + ["", *notes, ""])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer clips and steps: a smoke run")
    parser.add_argument("--out", type=Path, default=HERE.parent / "BENCHMARKS.md", help="report path")
    parser.add_argument("--work", type=Path, default=None, help="scratch folder (default: a temporary one)")
    parser.add_argument("--gpu", action="store_true",
                        help="the GPU benchmark under JAX instead (gpu_bench.py); with --quick a tiny smoke run")
    parser.add_argument("--budget", type=float, default=6.5, metavar="MINUTES",
                        help="--gpu: wall-clock budget of the measurements (default 6.5: about 7 min with "
                             "start-up); what does not fit is reported unmeasured")
    parser.add_argument("--models", nargs="+", default=None, help="--gpu: zoo members (default: all)")
    parser.add_argument("--workers", type=int, default=cli.default_workers(),
                        help="--gpu: batch-building threads (default: one per core)")
    parser.add_argument("--rss-probe", nargs=3, metavar=("CACHE", "STEPS", "BATCH"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.rss_probe:
        print(json.dumps(rss_probe(Path(args.rss_probe[0]), int(args.rss_probe[1]), int(args.rss_probe[2]))))
        return 0
    if args.gpu:
        command = "python code/bench.py --gpu" + (" --quick" if args.quick else "") + \
            (f" --budget {args.budget:g}" if args.budget != 6.5 else "") + \
            (f" --models {' '.join(args.models)}" if args.models else "")
        print(gpu_bench.run(args.out, command, quick=args.quick, budget_minutes=args.budget,
                            model_names=args.models, workers=args.workers, work=args.work))
        return 0

    import tensorflow as tf
    tf.get_logger().setLevel("ERROR")  # retracing notes: each zoo model is traced once, on purpose
    command = "python code/bench.py" + (" --quick" if args.quick else "")
    n_clips, n_pipeline = (40, 2_000) if args.quick else (200, 8_000)
    steps, n_large = (1, 4_000) if args.quick else (3, N_PRETRAIN_CLIPS)
    work = args.work or Path(tempfile.mkdtemp(prefix="fat2019-bench-"))
    start = time.perf_counter()
    rows: list[dict] = []
    try:
        def stage(name: str, fn, *a):
            t0 = time.perf_counter()
            print(f"bench: {name} ...", flush=True)
            out = fn(*a)
            print(f"bench: {name} done in {time.perf_counter() - t0:.0f} s", flush=True)
            return out

        paths = stage("writing clips", write_clips, work / "audio", n_clips)
        feature_rows, cache = stage("features", bench_features, paths, work / "cache")
        rows += feature_rows
        rows += stage("input pipeline", bench_input_pipeline, cache, n_pipeline)
        data = repeated(cache, 64)
        peak = stage("matmul peak", matmul_peak_gflops)
        rows += stage("v1mix training", bench_training, data, peak, steps, 16)
        rows += stage("memory", bench_memory, cache, work, n_large // 10, n_large, steps, 32)
        rows += stage("prediction cost", bench_prediction_cost, data, 8 if args.quick else 16)
        rows += stage("gpu", bench_gpu, data, 32)
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)
    notes = [
        "Notes:",
        "- Reference = the original's approach re-implemented here (per clip: `librosa.load` at "
        "44.1 kHz, `librosa.effects.trim`, the 128-step `np.percentile` loop; one process).",
        "- The memory runs use a real cache on disk whose rows reuse the bench clips' audio (a "
        "hard link), so the index and global features have the pretraining set's size.",
        "",
        "What limits the figures that miss their goal:",
        "- Global features: the reference is not naive: `np.percentile` selects with introselect, "
        "linear in the step's length, so past removing the 128 Python calls the only gain left is "
        "in the selection itself. Exact percentiles need each step's order statistics; ours sorts "
        "each half-step once (int16 radix sort for 16-bit audio) and bisects pairs of sorted "
        "half-steps, so the cost is about one gather + one radix sort of the clip plus a fixed "
        "~1 ms of vectorised bisection: a few ms per clip, bounded by memory traffic, not Python. "
        "50x would need under 0.4 ms per 7 s clip, less than one pass of sorting it.",
        "- Features stage: decoding (soundfile) and trimming (`librosa.effects.trim`, kept for "
        "exactness) cost the same in both; with the global features ~5x cheaper, the per-clip "
        "work is ~2x cheaper than the reference's and the second core adds ~1.5-2x (the parent "
        "process collecting results and writing the cache shares the 2 cores).",
        "- Training RSS: on a CPU the activations of a full-size training step (batch 32 of 5 s "
        "crops: 431x64 maps of 64-512 channels) live in host RAM. On a GPU they live in GPU "
        "memory and the host holds only the input pipeline's figure above. The pipeline itself "
        "grows by ~14 KB per clip (index rows and the touched pages of the memory-mapped "
        "global features, 6 KB per clip); the audio is never loaded.",
    ]
    text = report(rows, command, time.perf_counter() - start, notes)
    gpu_section = gpu_bench.existing_section(args.out)  # the GPU figures stay
    if gpu_section:
        text = text.rstrip("\n") + "\n\n" + gpu_section
    atomic_write_text(args.out, text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
