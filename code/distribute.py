"""Where the training stages run: the default device, or data-parallel replicas with
tf.distribute.MirroredStrategy.

    --strategy auto       MirroredStrategy over the GPUs when more than one is visible,
                          else the default device (one GPU, or the CPU)
    --strategy mirrored   MirroredStrategy always: over the GPUs, else over the CPU's
                          logical devices (--logical-cpus N makes N of them; tests use it)
    --strategy default    never distribute

The model is built and compiled inside `strategy.scope()`; Keras then splits every batch
across the replicas. How batch size and learning rate follow the replica count is
`training.Schedule.for_replicas`.
"""
from __future__ import annotations

import tensorflow as tf

STRATEGIES = ("auto", "mirrored", "default")


def configure_logical_cpus(n: int | None) -> None:
    """Split the CPU into `n` logical devices. Only possible before TensorFlow starts its
    runtime, so the stages do it first thing; a process where it already started (an
    earlier stage run in-process) is fine only if it already has `n`."""
    if not n:
        return
    cpu = tf.config.list_physical_devices("CPU")[0]
    try:
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * n)
    except RuntimeError:
        have = len(tf.config.list_logical_devices("CPU"))
        if have != n:
            raise SystemExit(f"--logical-cpus {n}: TensorFlow already started with {have} CPU device(s) in "
                             f"this process; run the stage in a fresh process") from None


def make_strategy(name: str = "auto", logical_cpus: int | None = None) -> tf.distribute.Strategy:
    if name not in STRATEGIES:
        raise SystemExit(f"--strategy {name!r}: choose one of {STRATEGIES}")
    configure_logical_cpus(logical_cpus)
    gpus = tf.config.list_logical_devices("GPU")
    if name == "default" or (name == "auto" and len(gpus) < 2):
        return tf.distribute.get_strategy()
    devices = [d.name for d in (gpus or tf.config.list_logical_devices("CPU"))]
    strategy = tf.distribute.MirroredStrategy(devices)
    print(f"devices: MirroredStrategy over {len(devices)} replica(s) ({', '.join(devices)}); "
          f"each replica takes batch_size clips per step")
    return strategy
