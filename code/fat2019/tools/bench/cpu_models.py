"""The CPU benchmark's model measurements (code/tools/bench.py, items 4, 6, 7): a float32 matmul
as this machine's yardstick, full-size v1mix training and inference, every zoo member's
per-clip prediction cost extrapolated to the test set, and TensorFlow on a GPU when one is
visible. Each measurement says what it starts, since one can run for many minutes.
"""
from __future__ import annotations

import time

from fat2019 import config
from fat2019.tools.bench.feed import ClipData
from fat2019.data.batches import TrainBatches

N_TEST_CLIPS = 3361          # the competition's test set


def say(what: str) -> None:
    print(f"  {time.strftime('%H:%M:%S')} {what}", flush=True)


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
        say(f"v1mix {policy}: build, trace and {steps} training step(s), then inference (the longest part)")
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
    for i, member in enumerate(config.ZOO, 1):
        say(f"{member.name} ({i} of {len(config.ZOO)}): build, trace, one batch of {batch_size}")
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
        say(f"GPU v1mix {policy}")
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
