"""The GPU benchmark's measurements: the global-feature branch (keras' Bidirectional(GRU)
vs BiGRUSum at several unrolls), block 1's pooling (max by windows vs by slices), the
host side of the feed, every zoo model's training and prediction rates, and the v1mix
step's before/after variants."""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from fat2019 import config
from fat2019.tools.bench.gpu_setup import N_CLASSES, Settings, clip_data, train_batches
from fat2019.nn import pooling
from fat2019.nn import recurrent
from fat2019.data.batches import CropBatches
from fat2019.data.feature_cache import UNIT_SCALE, FeatureCache


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
            x = recurrent.BiGRUSum(units, unroll=unroll)(x)
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


def bench_pool(s: Settings, max_pool: str, policy: str, repeats: int = 10) -> dict:
    """Milliseconds of forward + backward of block 1's first pooling (AxisSplitPool(3, 1,
    "max")), its max taken by `max_pool` ("window" or "slices", pooling.MAX_POOL_WAYS)."""
    import jax
    import keras
    dtype = keras.mixed_precision.Policy(policy).compute_dtype
    x = jax.random.normal(jax.random.PRNGKey(0), s.pool_shape).astype(dtype)
    layer = pooling.AxisSplitPool(3, 1, "max", max_pool=max_pool)
    grad = jax.jit(jax.grad(lambda x: (layer(x).astype("float32") ** 2).sum()))
    compile_s = seconds_of(lambda: grad(x).block_until_ready())     # the first call traces
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
    from fat2019.engine.training import EpochProgress

    def fit(n_steps):
        batches = train_batches(clip_data(cache, n_steps * s.profile.batch_size), s, crop, s.workers)
        model.fit(batches, epochs=1, verbose=0, shuffle=False,
                  callbacks=[EpochProgress(f"bench {model.name}", len(batches))])
    return seconds_of(lambda: fit(s.warmup_steps)), seconds_of(lambda: fit(s.train_steps))


def bench_model(cache: FeatureCache, s: Settings, member: config.ModelConfig, policy: str, work: Path,
                gru_unroll: int = 1) -> dict:
    """Training and prediction clips/s of one zoo member through the pipeline's PyDatasets,
    its BiGRUs built with `gru_unroll`."""
    import keras
    from fat2019.nn import models
    from fat2019.nn.flops import count_flops
    keras.mixed_precision.set_global_policy(policy)
    cfg = s.profile.scale(member)
    p = s.profile
    model = models.build_model(cfg, N_CLASSES, gru_unroll=gru_unroll)
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
    return dict(model=member.name, policy=policy, gru_unroll=gru_unroll, gflops=flops / 1e9, train_clips_s=train_rate,
                train_tflops=3 * flops * train_rate / 1e12, predict_clips_s=predict_rate,
                predict_tflops=flops * predict_rate / 1e12, train_compile_s=train_compile_s,
                predict_compile_s=predict_compile_s, checkpoint_s=checkpoint_s)


def keras_bigru_branch(g, width: float):
    """The global-feature branch before recurrent.BiGRUSum: keras' Bidirectional(GRU), whose
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
# zoo's own; the pools' max_pool). "after", the zoo's own model, is the zoo's run.
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
        model = models.build_model(cfg, N_CLASSES, global_branch=branch, max_pool=max_pool)
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
    after = next((dict(variant=f"{STEP_AFTER} (GRU unroll {r.get('gru_unroll', 1)})", policy=policy,
                       train_clips_s=r["train_clips_s"], step_ms=1e3 * s.profile.batch_size / r["train_clips_s"],
                       compile_s=r["train_compile_s"])
                  for r in runs if r["model"] == STEP_MODEL and r["policy"] == policy), None)
    measured = {v["variant"]: v for v in variants}
    rows = [(name, measured.get(name)) for name in STEP_VARIANTS]
    return [rows[0], (STEP_AFTER, after), *rows[1:]]
