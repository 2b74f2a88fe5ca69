"""Forward FLOPs of a built model, counted analytically, layer by layer, from its static
shapes (`count_flops`), for the inference pass on one example (one crop). A multiply-add
counts as 2 FLOPs. What is counted per layer:

- Conv2D / Dense: 2 * kernel size * C_in * C_out per output position, plus the bias add
  and 1 per element for a sigmoid activation;
- BatchNormalization: 2 per element (a folded scale and shift); ReLU, Multiply,
  sums: 1 per element; HighwayGate: 4 per element;
- pooling (AxisSplitPool, the head's reductions, global pools): 1 per element read per
  window, i.e. each 1-D pass costs (output elements x window length);
- Bidirectional GRU (BiGRUSum, or keras' Bidirectional): per step and direction
  2 * 3 * (F_in * units + units^2) for the gate matmuls plus ~10 per unit for biases
  and gate arithmetic, then the forward + backward sum;
- LogMelSpectrogram: the Hann window (1 per sample per frame), a real FFT at
  2.5 * N * log2(N), the power |X|^2 (3 per bin), the mel filterbank as the dense
  (bins x mels) matmul kapre performs, and ~3 per mel value for dB and normalisation.

Reshapes, concatenations and copies are free. Nonlinearities count 1 FLOP however they are
computed, so the figure is a lower bound of the work but exact for the convolutions, which
dominate (the "conv" column): for `v1mix` the per-layer conv counts (convolution + bias
add) equal those of TF's graph profiler (`tf.compat.v1.profiler`, float_operation) on the
frozen forward graph. The profiler itself is not used here because it counts a GRU's
while-loop body once instead of once per step and leaves out ops of unknown shape.
"""
from __future__ import annotations

import math

import keras

from fat2019.nn import frontend
from fat2019.nn import heads
from fat2019.nn import pooling
from fat2019.nn import recurrent


def _size(shape) -> int:
    """Elements of one example (the batch axis left out)."""
    return math.prod(shape[1:])


def _shapes(tensors):
    tensors = tensors if isinstance(tensors, (list, tuple)) else [tensors]
    return [tuple(t.shape) for t in tensors]


def _activation_flops(layer, n_out: int) -> int:
    name = getattr(layer.activation, "__name__", "linear")
    return 0 if name == "linear" else n_out


def _conv_flops(layer, in_shape, out_shape) -> int:
    kh, kw = layer.kernel_size
    n_out = _size(out_shape)
    flops = 2 * kh * kw * in_shape[-1] * n_out
    return flops + (n_out if layer.use_bias else 0) + _activation_flops(layer, n_out)


def _dense_flops(layer, in_shape, out_shape) -> int:
    n_out = _size(out_shape)
    flops = 2 * in_shape[-1] * n_out
    return flops + (n_out if layer.use_bias else 0) + _activation_flops(layer, n_out)


def _pool_flops(layer, in_shape) -> int:
    flops, shape = 0, in_shape
    for _, axes in pooling.POOL_MODES[layer.mode]:
        window, strides = layer.window(axes)
        shape = (shape[0], math.ceil(shape[1] / strides[0]), math.ceil(shape[2] / strides[1]),
                 shape[3])
        flops += _size(shape) * window[0] * window[1]
    return flops


def _gru_flops(layer, in_shape) -> int:
    steps, features = in_shape[1], in_shape[2]
    units = layer.forward_layer.units
    per_step = 2 * 3 * (features * units + units * units) + 10 * units
    return 2 * steps * per_step + steps * units    # two directions, then their sum


def _logmel_flops(layer, in_shape, out_shape) -> int:
    frames, n_fft, n_mels = out_shape[1], layer.n_fft, layer.n_mels
    n_bins = n_fft // 2 + 1
    per_frame = (n_fft                                 # window
                 + 2.5 * n_fft * math.log2(n_fft)       # real FFT
                 + 3 * n_bins                           # |X|^2
                 + 2 * n_bins * n_mels                  # mel filterbank matmul
                 + 3 * n_mels)                          # dB, minus max, floor
    return int(frames * per_frame)


def layer_flops(layer) -> int:
    """Forward FLOPs of one layer of a built functional model, per example."""
    if isinstance(layer, keras.layers.InputLayer):
        return 0
    (in_shape, *others), out_shapes = _shapes(layer.input), _shapes(layer.output)
    out_shape = out_shapes[0]
    n_in, n_out = _size(in_shape), _size(out_shape)
    if isinstance(layer, keras.layers.Conv2D):
        return _conv_flops(layer, in_shape, out_shape)
    if isinstance(layer, keras.layers.Dense):
        return _dense_flops(layer, in_shape, out_shape)
    if isinstance(layer, (keras.layers.Bidirectional, recurrent.BiGRUSum)):
        return _gru_flops(layer, in_shape)
    if isinstance(layer, frontend.LogMelSpectrogram):
        return _logmel_flops(layer, in_shape, out_shape)
    if isinstance(layer, pooling.AxisSplitPool):
        return _pool_flops(layer, in_shape)
    if isinstance(layer, keras.layers.BatchNormalization):
        return 2 * n_out
    if isinstance(layer, heads.HighwayGate):
        return 4 * n_out
    if isinstance(layer, (keras.layers.ReLU, keras.layers.Multiply, keras.layers.Activation,
                          keras.layers.GlobalAveragePooling2D,
                          keras.layers.GlobalMaxPooling1D, heads.TimeMaxMelMean)):
        return max(n_in, n_out)
    if isinstance(layer, (keras.layers.Concatenate, keras.layers.Identity,
                          keras.layers.Reshape, keras.layers.Flatten,
                          heads.MelPairShuffle)):
        return 0
    raise NotImplementedError(f"no FLOP count for {type(layer).__name__} ({layer.name})")


def count_flops(model: keras.Model) -> dict[str, int]:
    """Per-example forward FLOPs: {'total': ..., 'conv': ..., 'logmel': ..., 'gru': ...}."""
    counts = {"total": 0, "conv": 0, "logmel": 0, "gru": 0}
    for layer in model.layers:
        flops = layer_flops(layer)
        counts["total"] += flops
        if isinstance(layer, keras.layers.Conv2D):
            counts["conv"] += flops
        elif isinstance(layer, frontend.LogMelSpectrogram):
            counts["logmel"] += flops
        elif isinstance(layer, (keras.layers.Bidirectional, recurrent.BiGRUSum)):
            counts["gru"] += flops
    return counts
