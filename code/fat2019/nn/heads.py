"""The layers of the model's head and blocks that Keras lacks, and the stacker's:

- `MelPairShuffle` and `TimeMaxMelMean`: the head's two reshaping and pooling ops.
- `HighwayGate`: y = T*H + (1-T)*P of the highway block.
- `ClasswiseWeights` (with its `LastColumnOnes` initializer) and `ShiftedTanh`: the
  stacker's locally-connected layer and its output squashing.
"""
from __future__ import annotations

import keras
from keras import ops

from fat2019.nn.registry import PACKAGE


@keras.saving.register_keras_serializable(package=PACKAGE)
class MelPairShuffle(keras.layers.Layer):
    """"Pixel shuffle" of the head: (b, t, m, c) -> (b, t, m/2, 2c).

    A row-major reshape, so mel bins 2k and 2k+1 end up side by side in the channels of
    output bin k (channels [0, c) from bin 2k, [c, 2c) from bin 2k+1).
    """

    def call(self, x):
        _, _, m, c = x.shape
        if m % 2:
            raise ValueError(f"MelPairShuffle needs an even number of mel bins, got {m}")
        return ops.reshape(x, (-1, ops.shape(x)[1], m // 2, 2 * c))

    def compute_output_shape(self, input_shape):
        b, t, m, c = input_shape
        return (b, t, m // 2, 2 * c)


@keras.saving.register_keras_serializable(package=PACKAGE)
class TimeMaxMelMean(keras.layers.Layer):
    """Global pooling of the head: max over time (axis 1), then mean over mel (axis 2)."""

    def call(self, x):
        return ops.mean(ops.max(x, axis=1), axis=1)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], input_shape[3])


@keras.saving.register_keras_serializable(package=PACKAGE)
class HighwayGate(keras.layers.Layer):
    """Highway mix of three same-shaped tensors: [T, H, P] -> T * H + (1 - T) * P."""

    def call(self, inputs):
        gate, transformed, carried = inputs
        return gate * transformed + (1.0 - gate) * carried

    def compute_output_shape(self, input_shapes):
        return input_shapes[1]


@keras.saving.register_keras_serializable(package=PACKAGE)
class ClasswiseWeights(keras.layers.Layer):
    """Keras 2's LocallyConnected1D(filters=1, kernel_size=1, use_bias=False), rewritten.

    Input (batch, n_classes, n_inputs) -> output (batch, n_classes, 1): each class has its
    own weight vector over the inputs (ensemble members), `out[b, c] = sum_j x[b, c, j] *
    w[c, j]`. The kernel starts at 1 on the last input (the weighted average of the
    ensemble) and 0 elsewhere, so the untrained stacker passes that average through; the
    constraint keeps each class's weight vector at unit L2 norm after every update.
    """

    def __init__(self, kernel_constraint=None, **kwargs):
        super().__init__(**kwargs)
        self.kernel_constraint = keras.constraints.get(kernel_constraint)

    def build(self, input_shape):
        _, n_classes, n_inputs = input_shape
        self.kernel = self.add_weight(
            name="kernel", shape=(n_classes, n_inputs), initializer=LastColumnOnes(),
            constraint=self.kernel_constraint, trainable=True)

    def call(self, x):
        return ops.sum(x * self.kernel, axis=-1, keepdims=True)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], input_shape[1], 1)

    def get_config(self):
        config = super().get_config()
        config.update(kernel_constraint=keras.constraints.serialize(self.kernel_constraint))
        return config


@keras.saving.register_keras_serializable(package=PACKAGE)
class LastColumnOnes(keras.initializers.Initializer):
    """A (rows, columns) kernel of zeros with ones in the last column."""

    def __call__(self, shape, dtype=None):
        column = ops.arange(shape[-1]) == shape[-1] - 1
        return ops.broadcast_to(ops.cast(column, dtype or "float32"), shape)

    def get_config(self):
        return {}


@keras.saving.register_keras_serializable(package=PACKAGE)
class ShiftedTanh(keras.layers.Layer):
    """The stacker's output: (tanh(x - offset) + 1) / 2, a sigmoid-like map into (0, 1)."""

    def __init__(self, offset=1.6, **kwargs):
        super().__init__(**kwargs)
        self.offset = float(offset)

    def call(self, x):
        return (ops.tanh(x - self.offset) + 1.0) * 0.5

    def get_config(self):
        config = super().get_config()
        config.update(offset=self.offset)
        return config
