"""The GPU benchmark (`.venv/bin/python code/tools/bench.py --gpu`): the zoo's training and prediction speed
under JAX on one accelerator, and the whole recipe's hours projected from it.

It needs only numpy, pandas, h5py, keras and jax (no TensorFlow, kapre, librosa or
soundfile: the GPU machines have none of them). What it does, in priority order, within a
time budget (what does not fit is reported as unmeasured):

1. a synthetic feature cache (feature_cache.CacheWriter, int16 noise clips with the
   curated set's spread of lengths, random global features);
2. the global-feature branch alone: one training step of keras' Bidirectional(GRU) vs
   recurrent.BiGRUSum at several unrolls (the part of the step that is sequential); the zoo
   below runs with the fastest unroll (passed to models.build_model);
3. block 1's first pooling alone (3x3 max, stride 1, on a batch of 431 x 64 x 96 maps):
   forward + backward with the max taken by windows (ops.max_pool, whose gradient XLA
   computes by select-and-scatter) and by slices (pooling.max_pool_by_slices, the default);
4. the host side of the feed: building one training batch (one thread) and copying it to
   the device as float32 and as int16;
5. every zoo model at full size (5 s crops, width 1, batch 32; prediction batch 64) through
   the pipeline's own PyDatasets (batches.TrainBatches with mixup and smoothing,
   batches.CropBatches) and model code (models.build_model), mixed_bfloat16 first, then
   float32: training and prediction clips/s after warm-up (compilation excluded and
   reported), achieved TFLOP/s (flops.count_flops; training = 3 x forward) against the
   device's bf16 dense peak, and the seconds of one epoch's checkpoint;
6. the before/after profile of a v1mix training step at bf16: the probe's model (keras'
   Bidirectional(GRU), max pooling by windows) before, the zoo's run above after, and two
   ablations: only the pooling changed, and no recurrence at all (Dense + max, a bound);
7. the recipe's hours on this device, stage by stage, from the zoo's rates (FSDKaggle2019
   sizes, the `full` profile's schedule).

The parts: gpu_setup.py (sizes, budget, synthetic data), gpu_variants.py (the
measurements), gpu_projection.py (the recipe's hours), gpu_report.py (the tables).
The report is a section between two markers (report.GPU_SECTION) of bench.py's --out
file, rewritten after every measurement, so a run cut short still leaves what it measured;
`bench.py --update BENCHMARKS.md` then copies it into that file's GPU section.
"""
from __future__ import annotations

import tempfile
from pathlib import Path

from fat2019 import config
from fat2019.tools.bench.report import GPU_SECTION
from fat2019.tools.bench.gpu_setup import Budget, Settings, synthetic_cache
from fat2019.tools.bench.gpu_variants import (STEP_MODEL, STEP_VARIANTS, bench_branch, bench_feed, bench_model, bench_pool,
                                         bench_step_variant, fastest_unroll)
from fat2019.tools.bench.gpu_report import report
from fat2019.util.atomic import atomic_write_text


def run(out: Path, command: str, *, quick: bool, budget_minutes: float, model_names: list[str] | None,
        workers: int, work: Path | None = None, settings: Settings | None = None) -> str:
    """Measure, rewriting the GPU section of `out` after each measurement; returns it.
    `settings` replaces the sizes that `quick` picks (tests)."""
    import jax
    if jax.devices()[0].platform != "gpu" and not quick:
        raise SystemExit(f"bench --gpu: no GPU visible to jax (devices: {jax.devices()}); a full run on this "
                         f"{jax.devices()[0].platform} would take hours. Use --quick for a smoke run.")
    s = settings or (Settings.quick if quick else Settings.full)(workers)
    members = config.select_models(model_names)
    budget = Budget(60 * budget_minutes)
    branch, feed, runs, variants, pools = [], None, [], [], []
    # Priority: the zoo at the first policy (the recipe's hours), the step's before/after,
    # then the zoo at the other policies.
    todo = [f"{m.name} @ {s.policies[0]}" for m in members]
    if STEP_MODEL in [m.name for m in members]:
        todo += [f"{STEP_MODEL} | {name} @ {s.policies[0]}" for name in STEP_VARIANTS]
    todo += [f"{m.name} @ {policy}" for policy in s.policies[1:] for m in members]
    section = ""

    def write():
        nonlocal section
        section = report(s, command, budget.elapsed(), quick, branch, feed, runs,
                         [k for k in todo if " | " not in k], variants, pools)
        atomic_write_text(out, GPU_SECTION.replace(out.read_text() if out.is_file() else "", section))
        print(f"bench --gpu: {budget.elapsed():.0f} s, report written to {out}", flush=True)

    if work is not None:
        work.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="fat2019-gpu-bench-", dir=work) as tmp:
        tmp = Path(tmp)
        cache = budget.run(synthetic_cache, tmp / "cache", s.n_clips)
        budget.last = 0.0
        for unroll in (None, *s.unrolls):
            if budget.allows():
                branch.append(budget.run(bench_branch, s, unroll, s.policies[0]))
                print(f"  branch: {branch[-1]}", flush=True)
        for max_pool in ("window", "slices"):
            if budget.allows():
                pools.append(budget.run(bench_pool, s, max_pool, s.policies[0]))
                print(f"  pool: {pools[-1]}", flush=True)
        if budget.allows():
            feed = budget.run(bench_feed, cache, s)
            print(f"  feed: {feed}", flush=True)
        unroll = fastest_unroll(branch) or 1
        write()
        for key in list(todo):
            if not budget.allows():
                break
            name, policy = key.split(" @ ")
            if " | " in name:
                variants.append(budget.run(bench_step_variant, cache, s, name.split(" | ", 1)[1], policy))
                print(f"  step variant: {variants[-1]}", flush=True)
            else:
                runs.append(budget.run(bench_model, cache, s, config.ZOO_BY_NAME[name], policy, tmp, unroll))
                print(f"  model: {runs[-1]}", flush=True)
            todo.remove(key)
            write()
    write()
    return section
