"""Seeds of the units of work. A unit is the noisy pretraining of one model, fold k of one
model, or fold k of the stacker; it draws every random number it uses (initial weights,
batch order, crops, mixup partners, the stacker's shuffling) from its own identity
(base seed, model, unit), never from a stream that earlier work in the same process
consumed. So a unit trains the same whether it runs alone (--folds, another machine),
after other units, or resumed after a kill.
"""
from __future__ import annotations

import hashlib
import random

import keras
import numpy as np


def unit_seed(base: int, model: str, unit: str) -> int:
    """A 31-bit seed from (base seed, model name, unit name); the same in every process and
    on every machine (a hash of the text, not Python's per-process salted hash())."""
    digest = hashlib.sha256(f"{base}/{model}/{unit}".encode()).digest()
    return int.from_bytes(digest[:4], "little") & 0x7FFF_FFFF


def epoch_seed(unit: int, epoch: int) -> int:
    """The seed of one epoch of a unit: what Keras or a library draws from the global
    generators during that epoch depends on (unit, epoch) alone, so a run resumed at
    `epoch` continues exactly as an uninterrupted one."""
    return unit_seed(unit, "epoch", str(epoch))


def reset_global_generators(seed: int, *, tensorflow: bool = True) -> None:
    """Python's `random`, numpy's global generator, the backend's and Keras' global
    SeedGenerator, all from `seed`: at the start of a unit, before its model is built.

    `tensorflow=False` leaves TensorFlow's global seed as it is, for a unit whose model
    the process has already built (training.BuiltModels): setting it clears TF's kernel
    caches, so that model's train and predict functions would be instantiated again
    (seconds per unit, the cost reuse saves). The unit's results are the same: initial
    weights draw from Keras' SeedGenerator, and nothing in an epoch draws from TF's seed
    (reset_epoch_generators); tests/test_ray.py compares such units with fresh processes."""
    if tensorflow:
        keras.utils.set_random_seed(seed)
        return
    # keras.utils.set_random_seed without tf.random.set_seed (Keras 3's own global state)
    from keras.src.backend.common import global_state
    from keras.src.random.seed_generator import GLOBAL_SEED_GENERATOR
    from keras.src.utils.rng_utils import GLOBAL_RANDOM_SEED
    global_state.set_global_attribute(GLOBAL_RANDOM_SEED, seed)
    global_state.set_global_attribute(GLOBAL_SEED_GENERATOR, None)
    random.seed(seed)
    np.random.seed(seed)


def reset_epoch_generators(seed: int) -> None:
    """Python's `random` and numpy's global generator from `seed`, at every epoch.

    Not keras.utils.set_random_seed: on TensorFlow it sets TF's global seed, and that clears
    TF's kernel caches, so every epoch's fit and predict would build their graphs anew (the
    cost is in BENCHMARKS.md). Nothing in an epoch draws from TF's global seed or Keras'
    global SeedGenerator (no layer of the zoo is random; batches draw from their own
    (seed, epoch, batch) generators), so the unit's reset before its model is built covers
    them."""
    random.seed(seed)
    np.random.seed(seed)
