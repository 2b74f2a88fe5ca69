"""The GPU benchmark's report: the device and versions, the tables of every measurement
(achieved TFLOP/s against the device's bf16 dense peak), the step profile and the recipe's
projected hours; a section of its own (report.GPU_SECTION) in the report file."""
from __future__ import annotations

import datetime
import os
import platform

import numpy as np

from fat2019 import config
from fat2019.tools.bench.gpu_setup import GPU_COMMAND, N_CURATED, N_NOISY, N_TEST, Settings
from fat2019.tools.bench.gpu_variants import STEP_MODEL, fastest_unroll, step_profile_rows
from fat2019.tools.bench.gpu_projection import recipe_hours


# bf16 dense tensor-core peaks, TFLOP/s (NVIDIA datasheets; half their "with sparsity"
# figures). Matched against jax's device_kind in this order (first substring found).
BF16_PEAK_TFLOPS = (
    ("H200 NVL", 835.0),
    ("H200", 989.4),
    ("H100 NVL", 835.0),
    ("H100 PCIe", 756.0),
    ("H100", 989.4),            # "NVIDIA H100 80GB HBM3": the SXM5 board
    ("A100", 312.0),
)


def bf16_peak(device_kind: str) -> float | None:
    for name, peak in BF16_PEAK_TFLOPS:
        if name.lower() in device_kind.lower():
            return peak
    return None


def fmt(v, digits: int = 3) -> str:
    if v is None:
        return "unmeasured"
    return f"{v:,.0f}" if abs(v) >= 100 else f"{v:.{digits}g}"


def device_lines(command: str, seconds: float, quick: bool) -> list[str]:
    import jax
    import keras
    device = jax.devices()[0]
    lines = [f"Every figure below comes from one run of `{command}` ({seconds / 60:.1f} min).", ""]
    if device.platform != "gpu":
        lines += [f"**Not a GPU run: {device.platform.upper()} ({device.device_kind}). These figures are "
                  f"not GPU figures; every GPU figure is unmeasured.**", ""]
    if quick:
        lines += ["**--quick: tiny models and a handful of steps, a smoke run. The figures mean nothing.**", ""]
    return lines + [
        f"- date: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC",
        f"- device: {device.device_kind} ({device.platform}), {len(jax.devices())} visible; host: "
        f"{os.cpu_count()} cores",
        f"- versions: Python {platform.python_version()}, jax {jax.__version__}, Keras {keras.__version__} "
        f"(backend {keras.backend.backend()}), numpy {np.__version__}", ""]


def report(s: Settings, command: str, seconds: float, quick: bool, branch: list[dict], feed: dict | None,
           runs: list[dict], skipped: list[str], variants: list[dict] = (), pools: list[dict] = ()) -> str:
    """The GPU section: one subsection per measurement, then the recipe's hours."""
    lines = ["## GPU (JAX)", "", *device_lines(command, seconds, quick)]
    lines += branch_lines(s, branch) + pool_lines(s, pools) + feed_lines(s, feed) + zoo_lines(s, runs, skipped)
    lines += step_lines(s, runs, variants) + hours_lines(s, runs) + running_lines()
    return "\n".join(lines) + "\n"


def branch_lines(s: Settings, branch: list[dict]) -> list[str]:
    lines = ["### Global-feature branch alone: one training step", "",
             f"BN - 2 x bidirectional GRU({s.gru_units}, sum) - max - Dense, batch {s.gru_batch}, "
             f"{config.N_GLOBAL_STEPS} steps.", "",
             "| layer | policy | step ms | compile s |", "|---|---|---:|---:|"]
    lines += [f"| {b['layer']} | {b['policy']} | {fmt(b['step_ms'])} | {fmt(b['compile_s'])} |" for b in branch]
    fastest = fastest_unroll(branch)
    return lines + ["", f"The zoo below ran with BiGRUSum unroll {fastest or 1}"
                    + (" (the fastest above)." if fastest is not None else " (the zoo's own).")]


def pool_lines(s: Settings, pools: list[dict]) -> list[str]:
    lines = ["", "### Block 1's first pooling alone: forward + backward", "",
             f"AxisSplitPool(3, 1, \"max\") on {' x '.join(map(str, s.pool_shape))} (batch, time, mel, "
             "channels); same values and gradients either way (tests/test_layers.py).", "",
             "| max taken by | policy | ms | compile s |", "|---|---|---:|---:|"]
    return lines + ([f"| {'windows (ops.max_pool)' if r['max_pool'] == 'window' else 'slices (pooling.max_pool_by_slices)'} "
                     f"| {r['policy']} | {fmt(r['ms'])} | {fmt(r['compile_s'])} |" for r in pools]
                    or ["| unmeasured | | | |"])


def feed_lines(s: Settings, feed: dict | None) -> list[str]:
    lines = ["", "### Host side of the feed", ""]
    if feed is None:
        return lines + ["unmeasured (time budget)"]
    return lines + [f"One training batch of {feed['batch']} crops ({feed['audio_mb']:.1f} MB of float32 audio): "
                    f"built in {fmt(feed['build_ms'])} ms on one thread (the pipeline runs {s.workers} threads); "
                    f"copied to the device in {fmt(feed['copy_float32_ms'])} ms as float32, "
                    f"{fmt(feed['copy_int16_ms'])} ms as int16."]


def zoo_lines(s: Settings, runs: list[dict], skipped: list[str]) -> list[str]:
    import jax
    kind = jax.devices()[0].device_kind
    peak = bf16_peak(kind)
    p = s.profile
    lines = ["", f"### Zoo at {p.duration:g} s crops, width {p.width:g}, batch {p.batch_size} "
             f"(prediction {p.predict_batch_size})", "",
             f"bf16 dense peak of {kind}: {fmt(peak) + ' TFLOP/s' if peak else 'unknown (not in the table)'}. "
             "Training FLOPs = 3 x forward (flops.count_flops). Compile = the warm-up fit / first "
             "prediction batch, excluded from the rates.", "",
             "| model | policy | GFLOPs/clip | train clips/s | train TFLOP/s | % of bf16 peak | "
             "predict clips/s | predict TFLOP/s | compile s (train, predict) | checkpoint s |",
             "|---|---|---:|---:|---:|---:|---:|---:|---|---:|"]
    for r in runs:
        share = f"{r['train_tflops'] / peak:.1%}" if peak else "–"
        lines.append(f"| {r['model']} | {r['policy']} | {r['gflops']:.3g} | {fmt(r['train_clips_s'])} | "
                     f"{fmt(r['train_tflops'])} | {share} | {fmt(r['predict_clips_s'])} | "
                     f"{fmt(r['predict_tflops'])} | {r['train_compile_s']:.0f}, {r['predict_compile_s']:.0f} | "
                     f"{fmt(r['checkpoint_s'])} |")
    return lines + [f"| {name} | {policy} | | unmeasured (time budget) | | | | | | |"
                    for name, policy in (k.split(" @ ") for k in skipped)]


def step_lines(s: Settings, runs: list[dict], variants: list[dict]) -> list[str]:
    p = s.profile
    lines = ["", f"### Before / after: one {STEP_MODEL} training step at {s.policies[0]}", "",
             f"The same model, batch {p.batch_size}, {p.duration:g} s crops, its global-feature branch and "
             "max pooling built four ways. Goal: >= 2,000 training clips/s at bf16 (the probe, whose "
             "model is 'before': 864; without recurrence: 1,824).", "",
             "| v1mix built with | train clips/s | step ms | compile s |", "|---|---:|---:|---:|"]
    for name, r in step_profile_rows(runs, list(variants), s):
        lines.append(f"| {name} | unmeasured | | |" if r is None else
                     f"| {r['variant']} | {fmt(r['train_clips_s'])} | {fmt(r['step_ms'])} | {r['compile_s']:.0f} |")
    return lines


def hours_lines(s: Settings, runs: list[dict]) -> list[str]:
    full = config.PROFILES["full"]
    lines = ["", "### The recipe's hours on this device", "",
             f"FSDKaggle2019: {N_CURATED:,} curated, {N_NOISY:,} noisy, {N_TEST:,} test clips; `full` profile: "
             f"noisy pretraining {full.pretrain_epochs} epochs (curated 3-TTA scored each epoch) for each "
             f"model without `pretrained_from`, {full.n_folds} folds x up to {full.epochs} epochs (counted "
             f"in full) with 3-TTA validation, 3-TTA prediction of out-of-fold + test clips by every fold "
             f"model; a checkpoint per epoch. Compilation (once per model and batch shape) and the "
             f"features stage (CPU) are not included."]
    for policy in s.policies:
        rates = {r["model"]: r for r in runs if r["policy"] == policy}
        if rates:
            lines += ["", f"{policy}:", ""] + hours_table(recipe_hours(rates, full))
    return lines


def hours_table(stages: list[dict]) -> list[str]:
    lines = ["| model | pretraining h | folds h | prediction h | total h |", "|---|---:|---:|---:|---:|"]
    totals = [0.0, 0.0, 0.0]
    complete = True
    for st in stages:
        parts = [st["pretrain"], st["folds"], st["predict"]]
        if None in parts:
            complete = False
            lines.append(f"| {st['model']} | unmeasured | unmeasured | unmeasured | unmeasured |")
            continue
        totals = [a + b for a, b in zip(totals, parts)]
        lines.append(f"| {st['model']} | {parts[0]:.2f} | {parts[1]:.2f} | {parts[2]:.2f} | {sum(parts):.2f} |")
    total = sum(totals)
    verdict = ("<= 2.5 h: met" if total <= 2.5 else "<= 2.5 h: NOT met") if complete else \
        "incomplete: some models unmeasured"
    return lines + [f"| **all** | {totals[0]:.2f} | {totals[1]:.2f} | {totals[2]:.2f} | **{total:.2f}** ({verdict}) |"]


def running_lines() -> list[str]:
    return ["", "### Running it", "", "On a machine with one GPU and JAX (no network needed there):", "",
            "```", GPU_COMMAND, "```", "",
            "`--budget MINUTES` (default 6.5; about 7 min with start-up) bounds the run; `--models` "
            "picks zoo members. Measurements run in priority order (branch, feed, every model at "
            f"mixed_bfloat16, the {STEP_MODEL} step's before/after, then float32) and the section is "
            "rewritten after each one."]
