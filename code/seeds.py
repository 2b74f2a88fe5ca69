"""Seeds of the units of work. A unit is the noisy pretraining of one model, fold k of one
model, or fold k of the stacker; it draws every random number it uses (initial weights,
batch order, crops, mixup partners, the stacker's shuffling) from its own identity
(base seed, model, unit), never from a stream that earlier work in the same process
consumed. So a unit trains the same whether it runs alone (--folds, another machine),
after other units, or resumed after a kill.
"""
from __future__ import annotations

import hashlib

import keras


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


def reset_global_generators(seed: int) -> None:
    """Python's `random`, numpy's global generator, the backend's and Keras' global
    SeedGenerator, all from `seed`."""
    keras.utils.set_random_seed(seed)
