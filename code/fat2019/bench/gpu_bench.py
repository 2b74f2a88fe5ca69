"""The GPU benchmark (`python code/bench.py --gpu`): the zoo's training and prediction speed
under JAX on one accelerator, and the whole recipe's hours projected from it.

It needs only numpy, pandas, h5py, keras and jax (no TensorFlow, kapre, librosa or
soundfile: the GPU machines have none of them). What it does, in priority order, within a
time budget (what does not fit is reported as unmeasured):

1. a synthetic feature cache (feature_cache.CacheWriter, int16 noise clips with the
   curated set's spread of lengths, random global features);
2. the global-feature branch alone: one training step of keras' Bidirectional(GRU) vs
   layers.BiGRUSum at several unrolls (the part of the step that is sequential); the zoo
   below runs with the fastest unroll (layers.GRU_UNROLL is set for this run only);
3. block 1's first pooling alone (3x3 max, stride 1, on a batch of 431 x 64 x 96 maps):
   forward + backward with the max taken by windows (ops.max_pool, whose gradient XLA
   computes by select-and-scatter) and by slices (layers.max_pool_by_slices, the default);
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

The report is a section of BENCHMARKS.md between two markers, rewritten after every
measurement, so a run cut short still leaves what it measured.
"""
from __future__ import annotations

import contextlib
import dataclasses
import datetime
import os
import platform
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fat2019 import config
from fat2019.nn import layers
from fat2019.data.batches import TTA_POSITIONS, ClipData, CropBatches, TrainBatches
from fat2019.data.feature_cache import UNIT_SCALE, CacheWriter, FeatureCache, Source
from fat2019.util.atomic import atomic_write_text

# FSDKaggle2019's clip sets (the competition's data).
N_CURATED, N_NOISY, N_TEST = 4970, 19_815, 3361
N_CLASSES = 80

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

POLICIES = ("mixed_bfloat16", "float32")   # measured in this order; the recipe would run the first
GPU_COMMAND = ("sh ../shared/gpu-wheels.sh .whl  # here, with network; then on the GPU machine:\n"
               "python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl && "
               "PYTHONPATH=/tmp/site KERAS_BACKEND=jax python3 code/bench.py --gpu")
SECTION_START = "<!-- gpu-bench: start (code/gpu_bench.py rewrites this section) -->"
SECTION_END = "<!-- gpu-bench: end -->"


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


# ---------------------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------------------

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


# ---------------------------------------------------------------------------------------
# Measurements
# ---------------------------------------------------------------------------------------

def seconds_of(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def branch_model(units: int, unroll: int | None):
    """BN - 2 BiGRU(sum) - max - Dense(80): keras' Bidirectional(GRU) when unroll is None."""
    import keras
    g = keras.Input((config.N_GLOBAL_STEPS, config.N_GLOBAL_STATS))
    x = keras.layers.BatchNormalization()(g)
    for _ in range(2):
        if unroll is None:
            x = keras.layers.Bidirectional(keras.layers.GRU(units, return_sequences=True), merge_mode="sum")(x)
        else:
            x = layers.BiGRUSum(units, unroll=unroll)(x)
    x = keras.layers.GlobalMaxPooling1D()(x)
    model = keras.Model(g, keras.layers.Dense(N_CLASSES, activation="sigmoid", dtype="float32")(x))
    model.compile(optimizer=keras.optimizers.Nadam(), loss=keras.losses.BinaryCrossentropy())
    return model


def fastest_unroll(branch: list[dict]) -> int | None:
    """The unroll of the fastest BiGRUSum branch step measured, if any."""
    fused = [b for b in branch if b["unroll"] is not None]
    return min(fused, key=lambda b: b["step_ms"])["unroll"] if fused else None


def bench_branch(s: Settings, unroll: int | None, policy: str) -> dict:
    """Milliseconds of one training step of the global-feature branch alone."""
    import keras
    keras.mixed_precision.set_global_policy(policy)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((s.gru_batch, config.N_GLOBAL_STEPS, config.N_GLOBAL_STATS)).astype(np.float32)
    y = (rng.random((s.gru_batch, N_CLASSES)) < 0.05).astype(np.float32)
    model = branch_model(s.gru_units, unroll)
    compile_s = seconds_of(lambda: model.train_on_batch(x, y))
    step_s = seconds_of(lambda: [model.train_on_batch(x, y) for _ in range(s.branch_steps)]) / s.branch_steps
    keras.backend.clear_session()
    keras.mixed_precision.set_global_policy("float32")
    return dict(layer="keras Bidirectional(GRU)" if unroll is None else f"BiGRUSum, unroll {unroll}",
                unroll=unroll, policy=policy, step_ms=1e3 * step_s, compile_s=compile_s)


@contextlib.contextmanager
def max_pool_taken_by(way: str):
    """layers.MAX_POOL set to `way` ("window" or "slices") for what is traced inside."""
    before, layers.MAX_POOL = layers.MAX_POOL, way
    try:
        yield
    finally:
        layers.MAX_POOL = before


def bench_pool(s: Settings, max_pool: str, policy: str, repeats: int = 10) -> dict:
    """Milliseconds of forward + backward of block 1's first pooling (AxisSplitPool(3, 1,
    "max")), its max taken by `max_pool` ("window" or "slices", layers.MAX_POOL)."""
    import jax
    import keras
    dtype = keras.mixed_precision.Policy(policy).compute_dtype
    x = jax.random.normal(jax.random.PRNGKey(0), s.pool_shape).astype(dtype)
    layer = layers.AxisSplitPool(3, 1, "max")
    grad = jax.jit(jax.grad(lambda x: (layer(x).astype("float32") ** 2).sum()))
    with max_pool_taken_by(max_pool):     # the first call traces
        compile_s = seconds_of(lambda: grad(x).block_until_ready())
    ms = 1e3 * seconds_of(lambda: [grad(x).block_until_ready() for _ in range(repeats)]) / repeats
    return dict(max_pool=max_pool, policy=policy, ms=ms, compile_s=compile_s)


def bench_feed(cache: FeatureCache, s: Settings) -> dict:
    """Host side of one training batch: building it (one thread), copying it to the device."""
    import jax
    crop = s.profile.scale(config.ZOO[0]).crop_samples
    batches = train_batches(clip_data(cache, 8 * s.profile.batch_size), s, crop, workers=1)
    batches[0]
    build_s = seconds_of(lambda: [batches[i] for i in range(len(batches))]) / len(batches)
    audio = batches[0][0]["audio"]
    as_int16 = np.round(audio / UNIT_SCALE).astype(np.int16)
    copy_ms = {}
    for name, array in (("float32", audio), ("int16", as_int16)):
        jax.device_put(array).block_until_ready()
        copy_ms[name] = 1e3 * seconds_of(lambda: [jax.device_put(array).block_until_ready() for _ in range(5)]) / 5
    return dict(build_ms=1e3 * build_s, copy_float32_ms=copy_ms["float32"], copy_int16_ms=copy_ms["int16"],
                audio_mb=audio.nbytes / 2 ** 20, batch=len(audio))


def time_training(model, cache: FeatureCache, s: Settings, crop: int) -> tuple[float, float]:
    """(seconds of the compiling warm-up fit, seconds of s.train_steps timed steps) through
    the pipeline's TrainBatches, fitted as training.fit fits an epoch."""
    from fat2019.train.training import EpochProgress

    def fit(n_steps):
        batches = train_batches(clip_data(cache, n_steps * s.profile.batch_size), s, crop, s.workers)
        model.fit(batches, epochs=1, verbose=0, shuffle=False,
                  callbacks=[EpochProgress(f"bench {model.name}", len(batches))])
    return seconds_of(lambda: fit(s.warmup_steps)), seconds_of(lambda: fit(s.train_steps))


def bench_model(cache: FeatureCache, s: Settings, member: config.ModelConfig, policy: str, work: Path) -> dict:
    """Training and prediction clips/s of one zoo member through the pipeline's PyDatasets."""
    import keras
    from fat2019.nn import models
    from fat2019.nn.flops import count_flops
    keras.mixed_precision.set_global_policy(policy)
    cfg = s.profile.scale(member)
    p = s.profile
    model = models.build_model(cfg, N_CLASSES)
    flops = count_flops(model)["total"]

    def predict(n_batches):
        data = clip_data(cache, n_batches * p.predict_batch_size)
        model.predict(CropBatches(data, p.predict_batch_size, cfg.crop_samples, "middle", s.workers), verbose=0)

    train_compile_s, train_s = time_training(model, cache, s, cfg.crop_samples)
    predict_compile_s = seconds_of(lambda: predict(1))
    predict_s = seconds_of(lambda: predict(s.predict_batches))
    # One epoch's checkpoint: training.fit saves the whole model (optimizer included) and,
    # when the score improved, the weights.
    checkpoint_s = seconds_of(lambda: (model.save(work / "checkpoint.keras"),
                                       model.save_weights(work / "checkpoint.weights.h5")))
    keras.backend.clear_session()
    keras.mixed_precision.set_global_policy("float32")
    train_rate = s.train_steps * p.batch_size / train_s
    predict_rate = s.predict_batches * p.predict_batch_size / predict_s
    return dict(model=member.name, policy=policy, gflops=flops / 1e9, train_clips_s=train_rate,
                train_tflops=3 * flops * train_rate / 1e12, predict_clips_s=predict_rate,
                predict_tflops=flops * predict_rate / 1e12, train_compile_s=train_compile_s,
                predict_compile_s=predict_compile_s, checkpoint_s=checkpoint_s)


def keras_bigru_branch(g, width: float):
    """The global-feature branch before layers.BiGRUSum: keras' Bidirectional(GRU), whose
    JAX GRU is one scan per direction with the input projection inside each step."""
    import keras
    from fat2019.nn import models
    units = models.scaled(models.GRU_UNITS, width)
    g = keras.layers.BatchNormalization(name="global_bn")(g)
    for i in (1, 2):
        g = keras.layers.Bidirectional(keras.layers.GRU(units, return_sequences=True), merge_mode="sum",
                                       name=f"global_bigru{i}")(g)
    return keras.layers.GlobalMaxPooling1D(name="global_max")(g)


def dense_max_branch(g, width: float):
    """The probe's ablation: the two BiGRUs replaced by one Dense, so the step has no
    recurrence at all (a bound on what any GRU speed-up can buy, not the recipe)."""
    import keras
    from fat2019.nn import models
    g = keras.layers.BatchNormalization(name="global_bn")(g)
    g = keras.layers.Dense(models.scaled(models.GRU_UNITS, width), name="global_dense")(g)
    return keras.layers.GlobalMaxPooling1D(name="global_max")(g)


# The before/after of a v1mix step: name -> (global-feature branch builder, None for the
# zoo's own; layers.MAX_POOL). "after", the zoo's own model, is the zoo's run.
STEP_VARIANTS = {
    "before: keras Bidirectional(GRU), max pool by windows": (keras_bigru_branch, "window"),
    "ablation: no recurrence (Dense + max), max pool by slices": (dense_max_branch, "slices"),
    "ablation: BiGRUSum, max pool by windows": (None, "window"),
}
STEP_AFTER = "after: BiGRUSum, max pool by slices"
STEP_MODEL = "v1mix"


def bench_step_variant(cache: FeatureCache, s: Settings, variant: str, policy: str) -> dict:
    """Training clips/s of v1mix built as STEP_VARIANTS[variant]."""
    import keras
    from fat2019.nn import models
    branch, max_pool = STEP_VARIANTS[variant]
    keras.mixed_precision.set_global_policy(policy)
    cfg = s.profile.scale(config.ZOO_BY_NAME[STEP_MODEL])
    try:
        with max_pool_taken_by(max_pool):   # the model is traced in the fits
            model = models.build_model(cfg, N_CLASSES, global_branch=branch)
            compile_s, train_s = time_training(model, cache, s, cfg.crop_samples)
    finally:
        keras.backend.clear_session()
        keras.mixed_precision.set_global_policy("float32")
    return dict(variant=variant, policy=policy, train_clips_s=s.train_steps * s.profile.batch_size / train_s,
                step_ms=1e3 * train_s / s.train_steps, compile_s=compile_s)


def step_profile_rows(runs: list[dict], variants: list[dict], s: Settings) -> list[tuple[str, dict | None]]:
    """The before/after rows, in STEP_VARIANTS order with "after" (the zoo's own v1mix run
    at the same policy) second; None for one not measured."""
    policy = s.policies[0]
    after = next((dict(variant=f"{STEP_AFTER} (GRU unroll {layers.GRU_UNROLL})", policy=policy,
                       train_clips_s=r["train_clips_s"], step_ms=1e3 * s.profile.batch_size / r["train_clips_s"],
                       compile_s=r["train_compile_s"])
                  for r in runs if r["model"] == STEP_MODEL and r["policy"] == policy), None)
    measured = {v["variant"]: v for v in variants}
    rows = [(name, measured.get(name)) for name in STEP_VARIANTS]
    return [rows[0], (STEP_AFTER, after), *rows[1:]]


# ---------------------------------------------------------------------------------------
# The recipe's hours
# ---------------------------------------------------------------------------------------

def recipe_hours(rates: dict[str, dict], profile: config.Profile) -> list[dict]:
    """Hours of each stage of the `full` recipe on this device, per zoo model, from the
    measured rates ({model: bench_model row}); None where a model is unmeasured.

    Per pretraining epoch: the noisy set once, the curated set scored with 3-TTA. Per fold
    epoch: the fold's 9/10 of the curated set, its 1/10 scored with 3-TTA (every fold run
    to the full `epochs`, the early stop's upper bound). Prediction: 3-TTA of every fold
    model on its out-of-fold clips and the test set. Every epoch also writes a checkpoint.
    """
    tta = len(TTA_POSITIONS)
    n_val = N_CURATED / profile.n_folds
    rows = []
    for member in config.ZOO:
        r = rates.get(member.name)

        def hours(epochs, train_clips, scored_clips):
            if r is None:
                return None
            return epochs * (train_clips / r["train_clips_s"] + tta * scored_clips / r["predict_clips_s"]
                             + r["checkpoint_s"]) / 3600

        pretrain = hours(profile.pretrain_epochs, N_NOISY, N_CURATED) if member.pretrained_from is None else 0.0
        folds = hours(profile.n_folds * profile.epochs, N_CURATED - n_val, n_val)
        predict = None if r is None else profile.n_folds * tta * (n_val + N_TEST) / r["predict_clips_s"] / 3600
        rows.append(dict(model=member.name, pretrain=pretrain, folds=folds, predict=predict))
    return rows


# ---------------------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------------------

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
    import jax
    kind = jax.devices()[0].device_kind
    peak = bf16_peak(kind)
    p = s.profile
    lines = ["## GPU (JAX)", "", *device_lines(command, seconds, quick)]

    lines += ["### Global-feature branch alone: one training step", "",
              f"BN - 2 x bidirectional GRU({s.gru_units}, sum) - max - Dense, batch {s.gru_batch}, "
              f"{config.N_GLOBAL_STEPS} steps.", "",
              "| layer | policy | step ms | compile s |", "|---|---|---:|---:|"]
    lines += [f"| {b['layer']} | {b['policy']} | {fmt(b['step_ms'])} | {fmt(b['compile_s'])} |" for b in branch]
    lines += ["", f"The zoo below ran with BiGRUSum unroll {layers.GRU_UNROLL}"
              + (" (the fastest above)." if fastest_unroll(branch) is not None else " (layers.GRU_UNROLL).")]

    lines += ["", "### Block 1's first pooling alone: forward + backward", "",
              f"AxisSplitPool(3, 1, \"max\") on {' x '.join(map(str, s.pool_shape))} (batch, time, mel, "
              "channels); same values and gradients either way (tests/test_layers.py).", "",
              "| max taken by | policy | ms | compile s |", "|---|---|---:|---:|"]
    lines += [f"| {'windows (ops.max_pool)' if r['max_pool'] == 'window' else 'slices (layers.max_pool_by_slices)'} "
              f"| {r['policy']} | {fmt(r['ms'])} | {fmt(r['compile_s'])} |" for r in pools] or ["| unmeasured | | | |"]

    lines += ["", "### Host side of the feed", ""]
    if feed is None:
        lines.append("unmeasured (time budget)")
    else:
        lines += [f"One training batch of {feed['batch']} crops ({feed['audio_mb']:.1f} MB of float32 audio): "
                  f"built in {fmt(feed['build_ms'])} ms on one thread (the pipeline runs {s.workers} threads); "
                  f"copied to the device in {fmt(feed['copy_float32_ms'])} ms as float32, "
                  f"{fmt(feed['copy_int16_ms'])} ms as int16."]

    lines += ["", f"### Zoo at {p.duration:g} s crops, width {p.width:g}, batch {p.batch_size} "
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
    lines += [f"| {name} | {policy} | | unmeasured (time budget) | | | | | | |"
              for name, policy in (k.split(" @ ") for k in skipped)]

    lines += ["", f"### Before / after: one {STEP_MODEL} training step at {s.policies[0]}", "",
              f"The same model, batch {p.batch_size}, {p.duration:g} s crops, its global-feature branch and "
              "max pooling built four ways. Goal: >= 2,000 training clips/s at bf16 (the probe, whose "
              "model is 'before': 864; without recurrence: 1,824).", "",
              "| v1mix built with | train clips/s | step ms | compile s |", "|---|---:|---:|---:|"]
    for name, r in step_profile_rows(runs, list(variants), s):
        lines.append(f"| {name} | unmeasured | | |" if r is None else
                     f"| {r['variant']} | {fmt(r['train_clips_s'])} | {fmt(r['step_ms'])} | {r['compile_s']:.0f} |")

    full = config.PROFILES["full"]
    lines += ["", "### The recipe's hours on this device", "",
              f"FSDKaggle2019: {N_CURATED:,} curated, {N_NOISY:,} noisy, {N_TEST:,} test clips; `full` profile: "
              f"noisy pretraining {full.pretrain_epochs} epochs (curated 3-TTA scored each epoch) for each "
              f"model without `pretrained_from`, {full.n_folds} folds x up to {full.epochs} epochs (counted "
              f"in full) with 3-TTA validation, 3-TTA prediction of out-of-fold + test clips by every fold "
              f"model; a checkpoint per epoch. Compilation (once per model and batch shape) and the "
              f"features stage (CPU) are not included."]
    for policy in s.policies:
        rates = {r["model"]: r for r in runs if r["policy"] == policy}
        if not rates:
            continue
        stages = recipe_hours(rates, full)
        lines += ["", f"{policy}:", "", "| model | pretraining h | folds h | prediction h | total h |",
                  "|---|---:|---:|---:|---:|"]
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
        lines.append(f"| **all** | {totals[0]:.2f} | {totals[1]:.2f} | {totals[2]:.2f} | **{total:.2f}** ({verdict}) |")

    lines += ["", "### Running it", "", "On a machine with one GPU and JAX (no network needed there):", "",
              "```", GPU_COMMAND, "```", "",
              "`--budget MINUTES` (default 6.5; about 7 min with start-up) bounds the run; `--models` "
              "picks zoo members. Measurements run in priority order (branch, feed, every model at "
              f"mixed_bfloat16, the {STEP_MODEL} step's before/after, then float32) and the section is "
              "rewritten after each one."]
    return "\n".join(lines) + "\n"


def replace_section(document: str, section: str) -> str:
    """`document` with its GPU section (between the markers) replaced by `section`, or
    `section` appended when it has none."""
    block = f"{SECTION_START}\n{section.rstrip()}\n{SECTION_END}\n"
    if SECTION_START in document and SECTION_END in document:
        head, rest = document.split(SECTION_START, 1)
        return head + block + rest.split(SECTION_END, 1)[1].lstrip("\n")
    return document.rstrip("\n") + "\n\n" + block if document.strip() else block


def existing_section(path: Path) -> str | None:
    """The GPU section of the report at `path` (markers included), if it has one."""
    text = path.read_text() if path.is_file() else ""
    if SECTION_START in text and SECTION_END in text:
        return SECTION_START + text.split(SECTION_START, 1)[1].split(SECTION_END, 1)[0] + SECTION_END + "\n"
    return None


# ---------------------------------------------------------------------------------------
# The run
# ---------------------------------------------------------------------------------------

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
        atomic_write_text(out, replace_section(out.read_text() if out.is_file() else "", section))
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
        unroll = fastest_unroll(branch)
        if unroll is not None:
            layers.GRU_UNROLL = unroll
        write()
        for key in list(todo):
            if not budget.allows():
                break
            name, policy = key.split(" @ ")
            if " | " in name:
                variants.append(budget.run(bench_step_variant, cache, s, name.split(" | ", 1)[1], policy))
                print(f"  step variant: {variants[-1]}", flush=True)
            else:
                runs.append(budget.run(bench_model, cache, s, config.ZOO_BY_NAME[name], policy, tmp))
                print(f"  model: {runs[-1]}", flush=True)
            todo.remove(key)
            write()
    write()
    return section

