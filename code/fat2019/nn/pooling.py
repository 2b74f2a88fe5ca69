"""The pooling of the conv blocks: `AxisSplitPool`, incl. the "avemax" modes that average
over one axis and take the max over the other (POOL_MODES). Its max is keras' max_pool on
TensorFlow and maxima of shifted slices elsewhere (`max_pool_by_slices`: the same values
and gradients, without XLA's select-and-scatter); the layer's `max_pool` option picks it,
for the GPU bench.
"""
from __future__ import annotations

import math

import keras
import numpy as np
from keras import ops

from fat2019.nn.frontend import same_padding
from fat2019.nn.registry import PACKAGE


# Each mode is a sequence of (reduction, axes) steps, applied in order; "time" and "mel"
# are axes 1 and 2 of a (batch, time, mel, channels) tensor. Order matters: averaging
# over time then taking the max over mel (avemax1) is not max-then-average (avemax3).
POOL_MODES = {
    "max": (("max", "both"),),
    "ave": (("ave", "both"),),
    "avemax1": (("ave", "time"), ("max", "mel")),
    "avemax2": (("ave", "mel"), ("max", "time")),
    "avemax3": (("max", "mel"), ("ave", "time")),
    "avemax4": (("max", "time"), ("ave", "mel")),
    "none": (),
}


# How AxisSplitPool takes a max off TensorFlow: "slices" (max_pool_by_slices) or "window"
# (ops.max_pool); the GPU benchmark compares the two.
MAX_POOL_WAYS = ("slices", "window")


def max_pool_by_slices(x, pool_size, strides):
    """ops.max_pool(x, pool_size, strides, padding="same") over axes 1 and 2 of a
    (batch, time, mel, channels) tensor, as running maxima of shifted strided slices.

    Why: XLA differentiates a windowed max (reduce_window) with select-and-scatter, a slow
    scatter on a GPU and on a CPU (BENCHMARKS.md, block 1's pooling alone);
    the gradient of slices and selects is elementwise and fuses. The same values, and the
    same gradients: a 2-D max is taken one axis at a time, mel first, and a tie keeps the
    earlier element, so each window's gradient goes to its first maximum in row-major order,
    as select-and-scatter sends it.
    """
    for axis, p, s in ((2, pool_size[1], strides[1]), (1, pool_size[0], strides[0])):
        if p == 1 and s == 1:
            continue
        n = x.shape[axis]
        n_out = -(-n // s)
        pads = [(0, 0)] * 4
        pads[axis] = same_padding(n, p, s)
        padded = ops.pad(x, pads, constant_values=-np.inf)
        best = None
        for k in range(p):
            index = [slice(None)] * 4
            index[axis] = slice(k, k + (n_out - 1) * s + 1, s)
            candidate = padded[tuple(index)]
            best = candidate if best is None else ops.where(candidate > best, candidate, best)
        x = best
    return x


@keras.saving.register_keras_serializable(package=PACKAGE)
class AxisSplitPool(keras.layers.Layer):
    """2-D pooling over (time, mel) with 'same' padding, possibly one axis at a time.

    `max` / `ave` pool a (p, p) window with stride (s, s). The `avemaxN` modes pool with a
    (p, 1) window and stride (s, 1) along one axis and (1, p) / (1, s) along the other,
    using average on one axis and max on the other (see POOL_MODES). `none` (or None) is
    the identity. Averages exclude the padding, as Keras' AveragePooling2D does.
    `max_pool` ("slices" or "window", MAX_POOL_WAYS) is how the max is taken off TensorFlow.
    """

    def __init__(self, pool_size=2, strides=None, mode="max", max_pool="slices", **kwargs):
        super().__init__(**kwargs)
        mode = "none" if mode is None else mode
        if mode not in POOL_MODES:
            raise ValueError(f"unknown pool mode {mode!r}; choose one of {list(POOL_MODES)}")
        self.pool_size = int(pool_size)
        self.strides = int(pool_size if strides is None else strides)
        self.mode = mode
        if max_pool not in MAX_POOL_WAYS:
            raise ValueError(f"unknown max_pool {max_pool!r}; choose one of {list(MAX_POOL_WAYS)}")
        self.max_pool = max_pool

    def window(self, axes: str):
        """(pool size, strides) of one pooling step over "both" axes, "time" or "mel"."""
        p, s = self.pool_size, self.strides
        return {"both": ((p, p), (s, s)), "time": ((p, 1), (s, 1)), "mel": ((1, p), (1, s))}[axes]

    def call(self, x):
        sliced = self.max_pool == "slices" and keras.backend.backend() != "tensorflow"
        for reduction, axes in POOL_MODES[self.mode]:
            size, strides = self.window(axes)
            if reduction == "max" and sliced:
                x = max_pool_by_slices(x, size, strides)
            else:
                pool = ops.max_pool if reduction == "max" else ops.average_pool
                x = pool(x, pool_size=size, strides=strides, padding="same")
        return x

    def compute_output_shape(self, input_shape):
        batch, time, mel, channels = input_shape
        for _, axes in POOL_MODES[self.mode]:
            _, (st, sm) = self.window(axes)
            time = None if time is None else math.ceil(time / st)
            mel = None if mel is None else math.ceil(mel / sm)
        return (batch, time, mel, channels)

    def get_config(self):
        config = super().get_config()
        config.update(pool_size=self.pool_size, strides=self.strides, mode=self.mode, max_pool=self.max_pool)
        return config
