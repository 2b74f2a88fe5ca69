"""Benchmarks: our pipeline against a reference implementation of the original's approach
and against the machine itself, every ratio measured within one run.

    .venv/bin/python code/tools/bench.py --quick      # a smoke run: 37 min measured on the 2-core CPU
                                                #   under load ~20 (a shared machine; BENCHMARKS.md)
    .venv/bin/python code/tools/bench.py              # the full run: longer (23.5 min measured idle)
    .venv/bin/python code/tools/bench.py --update BENCHMARKS.md   # and put the figures into BENCHMARKS.md

The report goes to models/bench/cpu.md (--out FILE to choose), never to the tracked
BENCHMARKS.md unless --update names it: then the file's CPU section (between its
cpu-bench markers) is replaced and the rest of the file is left as it is. Every step prints
a line when it starts, with the time of day, so a long step shows what it is doing.

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

    .venv/bin/python code/tools/bench.py --gpu    # the GPU benchmark under JAX (fat2019/tools/bench/gpu_bench.py),
                                            # to models/bench/gpu.md; --update: BENCHMARKS.md's GPU section

The --gpu path imports neither TensorFlow, kapre, librosa nor soundfile (the GPU machines
lack them), so those are imported only by the functions of the CPU benchmark that use them.
The measurements live in fat2019/tools/bench/: feed.py (data, features, input pipeline),
cpu_models.py (training and prediction), rss_probe.py (memory), report.py (the tables).
"""
from __future__ import annotations

import sys  # noqa: E402
from pathlib import Path  # noqa: E402
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))   # the library, fat2019, is in code/

import os
import shutil
import tempfile
import time
from pathlib import Path

from fat2019 import cli  # first: it quiets TensorFlow's C++ log lines before anything imports TensorFlow
from fat2019 import config

REPORTS = config.REPO_ROOT / "models" / "bench"   # default --out: models/bench/cpu.md, models/bench/gpu.md (ignored by git)
N_PRETRAIN_CLIPS = 20_000    # about the noisy set's size (19,815)


def parse_args(argv: list[str] | None):
    parser = cli.script_parser(__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer clips and steps: a smoke run")
    parser.add_argument("--out", type=Path, default=None,
                        help=f"report file (default: {os.path.relpath(REPORTS, config.REPO_ROOT)}/cpu.md, or gpu.md "
                             "with --gpu); rewritten")
    parser.add_argument("--update", type=Path, metavar="FILE",
                        help="also replace the report's section (CPU or GPU) of FILE, e.g. BENCHMARKS.md; "
                             "the rest of FILE stays")
    parser.add_argument("--work", type=Path, default=None, help="scratch folder (default: a temporary one)")
    parser.add_argument("--gpu", action="store_true",
                        help="the GPU benchmark under JAX instead (gpu_bench.py); with --quick a tiny smoke run")
    parser.add_argument("--budget", type=float, default=6.5, metavar="MINUTES",
                        help="--gpu: wall-clock budget of the measurements (default 6.5: about 7 min with "
                             "start-up); what does not fit is reported unmeasured")
    parser.add_argument("--models", nargs="+", default=None, help="--gpu: zoo members (default: all)")
    parser.add_argument("--workers", type=int, default=cli.default_workers(),
                        help="--gpu: batch-building threads (default: one per core)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from fat2019.tools.bench import report   # after parsing: --help stays free of TensorFlow/Keras
    from fat2019.util.atomic import atomic_write_text

    out = args.out or REPORTS / ("gpu.md" if args.gpu else "cpu.md")
    out.parent.mkdir(parents=True, exist_ok=True)
    section = report.GPU_SECTION if args.gpu else report.CPU_SECTION
    if args.gpu:
        from fat2019.tools.bench import gpu_bench

        command = ".venv/bin/python code/tools/bench.py --gpu" + (" --quick" if args.quick else "") + \
            (f" --budget {args.budget:g}" if args.budget != 6.5 else "") + \
            (f" --models {' '.join(args.models)}" if args.models else "")
        text = gpu_bench.run(out, command, quick=args.quick, budget_minutes=args.budget,
                             model_names=args.models, workers=args.workers, work=args.work)
    else:
        command = ".venv/bin/python code/tools/bench.py" + (" --quick" if args.quick else "")
        start = time.perf_counter()
        rows = cpu_rows(args)
        text = report.report(rows, command, time.perf_counter() - start)
        atomic_write_text(out, section.replace(out.read_text() if out.is_file() else "", text))
    print(text)
    print(f"bench: report written to {out}")
    if args.update:
        atomic_write_text(args.update, section.replace(args.update.read_text() if args.update.is_file() else "",
                                                       text))
        print(f"bench: the {'GPU' if args.gpu else 'CPU'} section of {args.update} replaced")
    return 0


def cpu_rows(args) -> list[dict]:
    """Every figure of the CPU benchmark, one step after another, each announced."""
    import tensorflow as tf

    from fat2019.tools.bench import cpu_models, feed, rss_probe

    tf.get_logger().setLevel("ERROR")  # retracing notes: each zoo model is traced once, on purpose
    n_clips, n_pipeline = (40, 2_000) if args.quick else (200, 8_000)
    steps, n_large = (1, 4_000) if args.quick else (3, N_PRETRAIN_CLIPS)
    work = args.work or Path(tempfile.mkdtemp(prefix="fat2019-bench-"))
    rows: list[dict] = []
    steps_done = [0]

    def step(name: str, fn, *a):
        steps_done[0] += 1
        t0 = time.perf_counter()
        print(f"bench: step {steps_done[0]} of 8, {name} ...", flush=True)
        result = fn(*a)
        print(f"bench: {name} done in {time.perf_counter() - t0:.0f} s", flush=True)
        return result

    try:
        paths = step("writing clips", feed.write_clips, work / "audio", n_clips)
        feature_rows, cache = step("features", feed.bench_features, paths, work / "cache")
        rows += feature_rows
        rows += step("input pipeline", feed.bench_input_pipeline, cache, n_pipeline)
        data = feed.repeated(cache, 64)
        peak = step("matmul peak", cpu_models.matmul_peak_gflops)
        rows += step("v1mix training", cpu_models.bench_training, data, peak, steps, 16)
        rows += step("memory", rss_probe.bench_memory, cache, work, n_large // 10, n_large, steps, 32)
        rows += step("prediction cost", cpu_models.bench_prediction_cost, data, 8 if args.quick else 16)
        rows += step("gpu", cpu_models.bench_gpu, data, 32)
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)
    return rows


if __name__ == "__main__":
    cli.run_stage(main)
