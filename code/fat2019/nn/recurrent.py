"""`BiGRUSum`: Bidirectional(GRU, merge_mode="sum") of the global-feature branch, keras'
own layers on TensorFlow (cuDNN) and one fused scan over both directions on JAX
(`fused_bigru_sum`), which keeps the per-step work to a few small kernels.
"""
from __future__ import annotations

import keras
from keras import ops

from fat2019.nn.registry import PACKAGE


@keras.saving.register_keras_serializable(package=PACKAGE)
class BiGRUSum(keras.layers.Layer):
    """Bidirectional(GRU(units, return_sequences=True), merge_mode="sum"), exactly.

    Keras' GRU defaults: tanh, sigmoid recurrent activation, reset_after=True, zero initial
    state. The weights are those of two Keras GRU sublayers, `forward_layer` and
    `backward_layer` (per direction: kernel (in, 3u), recurrent_kernel (u, 3u), bias (2, 3u);
    gates in the order z, r, h), on every backend:

    - TensorFlow: the sublayers run as in keras' Bidirectional, so a TF GPU keeps cuDNN.
    - other backends (JAX): `fused_bigru_sum` on the same variables: the input projections
      of all steps in one matmul, then both directions in one scan, one batched matmul per
      step, `unroll` steps per iteration. Unrolling cuts a GPU's per-step loop overhead
      (each iteration is a few tiny kernels plus loop control) but only costs on a CPU
      (BENCHMARKS.md, the v1mix step profile), so the zoo uses 1; `bench.py --gpu`
      measures the unrolls on a GPU and builds the zoo with the fastest.
    """

    def __init__(self, units, unroll=1, **kwargs):
        super().__init__(**kwargs)
        self.units = int(units)
        self.unroll = int(unroll)
        sub = dict(return_sequences=True, dtype=self.dtype_policy)
        self.forward_layer = keras.layers.GRU(self.units, name="forward_gru", **sub)
        self.backward_layer = keras.layers.GRU(self.units, go_backwards=True, name="backward_gru", **sub)

    def build(self, input_shape):
        self.forward_layer.build(input_shape)
        self.backward_layer.build(input_shape)

    def call(self, x):
        if keras.backend.backend() == "tensorflow":
            # go_backwards yields the sequence last step first: flip it back, as
            # Bidirectional does, so both outputs are aligned in time.
            return self.forward_layer(x) + ops.flip(self.backward_layer(x), axis=1)
        cells = (self.forward_layer.cell, self.backward_layer.cell)
        return fused_bigru_sum(x, [c.kernel for c in cells], [c.recurrent_kernel for c in cells],
                               [c.bias for c in cells], self.unroll)

    def compute_output_shape(self, input_shape):
        return (*input_shape[:2], self.units)

    def get_config(self):
        config = super().get_config()
        config.update(units=self.units, unroll=self.unroll)
        return config


def fused_bigru_sum(x, kernels, recurrent_kernels, biases, unroll: int = 1):
    """Forward GRU + time-aligned backward GRU outputs, summed: (batch, time, units).

    x: (batch, time, features); per direction [forward, backward]: kernel (features, 3u),
    recurrent_kernel (u, 3u), bias (2, 3u) = [input bias, recurrent bias] (reset_after).
    The backward direction runs over the time-reversed input, stacked with the forward one
    on a leading direction axis, so each step of the scan is one batched matmul of both.
    """
    def stacked(pair):  # a variable's .value follows a mixed policy's autocast
        return ops.stack([getattr(v, "value", v) for v in pair])

    kernel = stacked(kernels)                              # (2, F, 3u)
    recurrent_kernel = stacked(recurrent_kernels)          # (2, u, 3u)
    bias = stacked(biases)                                 # (2, 2, 3u)
    units = recurrent_kernel.shape[1]
    x = ops.transpose(x, (1, 0, 2))                        # time-major (T, B, F)
    x = ops.stack([x, ops.flip(x, axis=0)], axis=1)        # (T, 2, B, F)
    # Every step's input projection at once, biases included: (T, 2, B, 3u).
    projected = ops.einsum("tdbf,dfg->tdbg", x, kernel) + bias[None, :, 0, None, :]
    recurrent_bias = bias[:, 1, None, :]                   # (2, 1, 3u)

    def step(h, x_proj):
        inner = ops.einsum("dbu,dug->dbg", h, recurrent_kernel) + recurrent_bias
        x_z, x_r, x_h = x_proj[..., :units], x_proj[..., units:2 * units], x_proj[..., 2 * units:]
        h_z, h_r, h_h = inner[..., :units], inner[..., units:2 * units], inner[..., 2 * units:]
        z = ops.sigmoid(x_z + h_z)
        r = ops.sigmoid(x_r + h_r)
        candidate = ops.tanh(x_h + r * h_h)
        h = z * h + (1 - z) * candidate
        return h, h

    h0 = ops.zeros((2, ops.shape(x)[2], units), dtype=projected.dtype)
    _, h = ops.scan(step, h0, projected, unroll=unroll)    # (T, 2, B, u)
    out = h[:, 0] + ops.flip(h[:, 1], axis=0)              # backward re-aligned in time
    return ops.transpose(out, (1, 0, 2))
