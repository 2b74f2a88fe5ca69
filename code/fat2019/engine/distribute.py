"""Where the training stages run: one device (the default), or, opt-in, data-parallel
replicas with tf.distribute.MirroredStrategy (TensorFlow backend only).

    --strategy default    one device: the GPU, or the CPU (as the original ran)
    --strategy mirrored   MirroredStrategy: over the GPUs, else over the CPU's logical
                          devices (--logical-cpus N makes N of them; tests use it). The
                          global batch and the learning rate change (Schedule.for_replicas);
                          the stage says how once, at the start

The model is built and compiled inside `strategy.scope()`; Keras then splits every batch
across the replicas. On a backend other than TensorFlow (KERAS_BACKEND=jax) the strategy
is `OneDevice`, a do-nothing stand-in with the same two members the stages use, and the
TensorFlow-only options (mirrored, --logical-cpus, --tensorboard) are refused by
`require_tensorflow`. TensorFlow is imported only when the backend is TensorFlow.
"""
from __future__ import annotations

import contextlib

import keras

from fat2019.cli import STRATEGIES


class OneDevice:
    """The strategy of a non-TensorFlow backend: Keras places everything on its one
    default device, so there is nothing to scope and one replica."""
    num_replicas_in_sync = 1

    def scope(self):
        return contextlib.nullcontext()


def backend() -> str:
    return keras.backend.backend()


def require_tensorflow(feature: str) -> None:
    """Stop with a clear message if `feature` (TensorFlow-only) is asked for on another backend."""
    if backend() != "tensorflow":
        raise SystemExit(f"{feature} needs the TensorFlow backend; this process runs Keras on "
                         f"{backend()!r} (KERAS_BACKEND). Run it with KERAS_BACKEND=tensorflow, or leave it out.")


def configure_logical_cpus(n: int | None) -> None:
    """Split the CPU into `n` logical devices. Only possible before TensorFlow starts its
    runtime, so the stages do it first thing; a process where it already started (an
    earlier stage run in-process) is fine only if it already has `n`."""
    if not n:
        return
    require_tensorflow("--logical-cpus")
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    try:
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * n)
    except RuntimeError:
        have = len(tf.config.list_logical_devices("CPU"))
        if have != n:
            raise SystemExit(f"--logical-cpus {n}: TensorFlow already started with {have} CPU device(s) in "
                             f"this process; run the stage in a fresh process") from None


def make_strategy(name: str = "default", logical_cpus: int | None = None):
    """The strategy of `--strategy name`: TensorFlow's default one or a MirroredStrategy on
    the TensorFlow backend, `OneDevice` on others."""
    if name not in STRATEGIES:
        raise SystemExit(f"--strategy {name!r}: choose one of {STRATEGIES}")
    if name == "mirrored":
        require_tensorflow("--strategy mirrored (tf.distribute.MirroredStrategy)")
    configure_logical_cpus(logical_cpus)
    if backend() != "tensorflow":
        return OneDevice()
    import tensorflow as tf

    if name == "default":
        return tf.distribute.get_strategy()
    devices = [d.name for d in (tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("CPU"))]
    strategy = tf.distribute.MirroredStrategy(devices)
    print(f"devices: MirroredStrategy over {len(devices)} replica(s) ({', '.join(devices)})")
    return strategy


def model_strategy(model: keras.Model):
    """The strategy `model` was built under (`model.distribute_strategy` exists only on
    the TensorFlow backend)."""
    return model.distribute_strategy if backend() == "tensorflow" else OneDevice()
