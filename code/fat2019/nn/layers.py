"""The custom Keras layers of the model and the stacker.

Every class here is registered with Keras (package "fat2019") and has a `get_config`, so a
saved `.keras` model loads with a plain `keras.models.load_model(path)` once this module has
been imported (models.py imports it). There are no Lambda layers anywhere.

- `LogMelSpectrogram`: waveform -> log-mel (SPEC "The model"), from kapre primitives on
  TensorFlow and from keras.ops on other backends (kapre is imported only on TensorFlow).
- `AxisSplitPool`: the pooling of the conv blocks, incl. the "avemax" modes that average
  over one axis and max over the other; its max is keras' max_pool on TensorFlow and
  maxima of shifted slices elsewhere (`max_pool_by_slices`: same values and gradients).
- `MelPairShuffle` and `TimeMaxMelMean`: the two ops of the head that Keras lacks.
- `HighwayGate`: y = T*H + (1-T)*P of the highway block.
- `ClasswiseWeights` (with its `LastColumnOnes` initializer) and `ShiftedTanh`: the
  stacker's locally-connected layer and its output squashing.
- `BiGRUSum`: Bidirectional(GRU, merge_mode="sum") of the global-feature branch, keras'
  own layers on TensorFlow (cuDNN) and one fused scan on JAX.
"""
from __future__ import annotations

import math

import keras
import numpy as np
from keras import ops

PACKAGE = "fat2019"


# ---------------------------------------------------------------------------------------
# Log-mel front end
# ---------------------------------------------------------------------------------------

def same_padding(n_samples: int, n_fft: int, hop: int) -> tuple[int, int]:
    """(left, right) zero padding that frames a signal like a TF 'same' convolution.

    The original ran kapre 0.1's Melspectrogram, a Conv1D with padding='same': it yields
    ceil(N / hop) frames, padding `total = (ceil(N/hop) - 1) * hop + n_fft - N` zeros with
    `total // 2` on the left. kapre 0.4's STFT only offers pad_begin/pad_end, which frame
    differently, so the padding is done here.
    """
    n_frames = math.ceil(n_samples / hop)
    total = max((n_frames - 1) * hop + n_fft - n_samples, 0)
    return total // 2, total - total // 2


def periodic_hann(n: int) -> np.ndarray:
    """The periodic ("DFT-even") Hann window of length n, as tf.signal.hann_window and
    scipy.signal.get_window("hann", n) give it: 0.5 - 0.5 cos(2 pi k / n)."""
    return (0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(n) / n)).astype(np.float32)


# Slaney's mel scale (librosa's htk=False): linear below 1 kHz, logarithmic above.
SLANEY_HZ_PER_MEL = 200.0 / 3
SLANEY_LOG_START_HZ = 1000.0
SLANEY_LOG_STEP = math.log(6.4) / 27.0


def hz_to_slaney_mel(hz: np.ndarray) -> np.ndarray:
    hz = np.asarray(hz, np.float64)
    linear = hz / SLANEY_HZ_PER_MEL
    start_mel = SLANEY_LOG_START_HZ / SLANEY_HZ_PER_MEL
    log = start_mel + np.log(np.maximum(hz, SLANEY_LOG_START_HZ) / SLANEY_LOG_START_HZ) / SLANEY_LOG_STEP
    return np.where(hz >= SLANEY_LOG_START_HZ, log, linear)


def slaney_mel_to_hz(mel: np.ndarray) -> np.ndarray:
    mel = np.asarray(mel, np.float64)
    start_mel = SLANEY_LOG_START_HZ / SLANEY_HZ_PER_MEL
    log = SLANEY_LOG_START_HZ * np.exp(SLANEY_LOG_STEP * (mel - start_mel))
    return np.where(mel >= start_mel, log, mel * SLANEY_HZ_PER_MEL)


def slaney_mel_filterbank(sample_rate: float, n_fft: int, n_mels: int, f_min: float = 0.0,
                          f_max: float | None = None) -> np.ndarray:
    """(n_fft // 2 + 1, n_mels) float32 mel filterbank, the transpose of
    librosa.filters.mel(htk=False, norm="slaney"), written out so that the keras.ops path
    needs no librosa at run time.

    Triangles peak at n_mels + 2 points evenly spaced on Slaney's mel scale (the outer two
    are the edges); each is scaled by 2 / (its width in Hz), so each band has about the
    same energy.
    """
    f_max = sample_rate / 2 if f_max is None else f_max
    bin_hz = np.fft.rfftfreq(n_fft, 1.0 / sample_rate)                  # (n_freq,)
    mel_edges = np.linspace(hz_to_slaney_mel(f_min), hz_to_slaney_mel(f_max), n_mels + 2)
    edges_hz = slaney_mel_to_hz(mel_edges)                               # (n_mels + 2,)
    lower, centre, upper = edges_hz[:-2, None], edges_hz[1:-1, None], edges_hz[2:, None]
    rising = (bin_hz - lower) / (centre - lower)
    falling = (upper - bin_hz) / (upper - centre)
    weights = np.maximum(0.0, np.minimum(rising, falling))               # (n_mels, n_freq)
    weights *= 2.0 / (upper - lower)
    return weights.T.astype(np.float32)


@keras.saving.register_keras_serializable(package=PACKAGE)
class LogMelSpectrogram(keras.layers.Layer):
    """Waveform (batch, samples) -> per-clip-normalised log-mel (batch, time, n_mels, 1).

    Definition (SPEC "The model"): power spectrum |STFT|^2 with a periodic Hann window,
    frames aligned like TF 'same' padding; Slaney-normalised librosa mel filterbank;
    dB = 10 log10(max(x, amin)); minus the per-clip maximum; floored at -top_db.

    Two computations of that one definition, with one class name, config and (empty)
    weights file, so a model saved on one backend loads on the other:

    - TensorFlow backend (the faithful path, `call_with_kapre`): `same_padding` (ours) ->
      `kapre.STFT` -> power (ours; kapre only has Magnitude) ->
      `kapre.ApplyFilterbank(type='mel')` (a librosa.filters.mel wrapper) ->
      `kapre.MagnitudeToDecibel` (10 log10(max(x, amin)), then floored at the clip's max
      minus dynamic_range) -> minus the clip's max (ours; kapre keeps absolute dB).
    - Any other backend (`call_with_ops`): the same steps in keras.ops, with our own
      numpy `periodic_hann` and `slaney_mel_filterbank`; no kapre, TF or librosa needed.

    It has no weights. It always computes in float32 (tf.signal.stft has no float16
    kernel and the dB range needs float32), whatever the global dtype policy says.
    """

    def __init__(self, sample_rate=44_100, n_fft=1024, hop_length=512, n_mels=64,
                 f_min=0.0, f_max=None, amin=1e-10, top_db=80.0, **kwargs):
        kwargs["dtype"] = "float32"
        kwargs.setdefault("trainable", False)
        super().__init__(**kwargs)
        self.sample_rate = sample_rate
        self.n_fft = n_fft
        self.hop_length = hop_length
        self.n_mels = n_mels
        self.f_min = f_min
        self.f_max = f_max
        self.amin = amin
        self.top_db = top_db
        # Plain numpy constants of the keras.ops path (not weights: nothing to save).
        self.window = periodic_hann(n_fft)
        self.filterbank = slaney_mel_filterbank(sample_rate, n_fft, n_mels, f_min, f_max)
        self.uses_kapre = keras.backend.backend() == "tensorflow"
        if self.uses_kapre:
            self.make_kapre_layers()

    def make_kapre_layers(self):
        """The kapre sublayers of the TensorFlow path (kapre is imported only here: it
        needs TensorFlow)."""
        import kapre

        f32 = dict(dtype="float32")  # the sublayers would otherwise follow a mixed policy
        # window_name=None is tf.signal.hann_window, periodic by default.
        self.stft = kapre.STFT(n_fft=self.n_fft, hop_length=self.hop_length, window_name=None,
                               pad_begin=False, pad_end=False,
                               input_data_format="channels_last",
                               output_data_format="channels_last", **f32)
        f_max = self.f_max if self.f_max is not None else self.sample_rate / 2
        self.mel = kapre.ApplyFilterbank(
            type="mel", data_format="channels_last",
            filterbank_kwargs=dict(sample_rate=self.sample_rate, n_freq=self.n_fft // 2 + 1,
                                   n_mels=self.n_mels, f_min=self.f_min, f_max=f_max,
                                   htk=False, norm="slaney"),
            **f32)
        # ref_value 1.0: plain 10 log10(x). dynamic_range floors at (clip max - top_db),
        # which after subtracting the clip max is the -top_db floor of the SPEC.
        self.to_db = kapre.MagnitudeToDecibel(ref_value=1.0, amin=self.amin,
                                              dynamic_range=self.top_db, **f32)

    def n_frames(self, n_samples: int) -> int:
        return math.ceil(n_samples / self.hop_length)

    def build(self, input_shape):
        # No weights anywhere; this only builds the kapre sublayers on their input shapes
        # (Keras calls build() directly when it loads a saved model).
        if self.uses_kapre:
            batch, n_samples = input_shape
            left, right = same_padding(n_samples, self.n_fft, self.hop_length)
            frames = (batch, self.n_frames(n_samples), self.n_fft // 2 + 1, 1)
            self.stft.build((batch, n_samples + left + right, 1))
            self.mel.build(frames)
            self.to_db.build(frames[:2] + (self.n_mels, 1))
        self.built = True

    def pad(self, audio):
        """Zero padding for 'same'-style framing (`same_padding`)."""
        n_samples = audio.shape[1]
        if n_samples is None:
            raise ValueError("LogMelSpectrogram needs a fixed number of samples per clip")
        left, right = same_padding(n_samples, self.n_fft, self.hop_length)
        return ops.pad(audio, [[0, 0], [left, right]])

    def call(self, audio):
        return self.call_with_kapre(audio) if self.uses_kapre else self.call_with_ops(audio)

    def call_with_kapre(self, audio):
        """The TensorFlow path, from kapre's layers."""
        x = ops.expand_dims(self.pad(audio), -1)             # (batch, samples, 1)
        spec = self.stft(x)                                  # (batch, time, freq, 1) complex
        power = ops.square(ops.real(spec)) + ops.square(ops.imag(spec))
        mel = self.mel(power)                                # (batch, time, n_mels, 1)
        db = self.to_db(mel)                                 # floored at clip max - top_db
        return db - ops.max(db, axis=(1, 2, 3), keepdims=True)

    def call_with_ops(self, audio):
        """The backend-neutral path, the same maths in keras.ops (runs on any backend)."""
        x = ops.cast(self.pad(audio), "float32")
        real, imag = ops.stft(x, sequence_length=self.n_fft, sequence_stride=self.hop_length,
                              fft_length=self.n_fft, window=self.window, center=False)
        power = ops.square(real) + ops.square(imag)          # (batch, time, freq)
        mel = ops.matmul(power, ops.convert_to_tensor(self.filterbank))
        db = 10.0 * ops.log10(ops.maximum(mel, self.amin))   # (batch, time, n_mels)
        db = db - ops.max(db, axis=(1, 2), keepdims=True)
        return ops.expand_dims(ops.maximum(db, -self.top_db), -1)

    def compute_output_shape(self, input_shape):
        n = input_shape[1]
        return (input_shape[0], None if n is None else self.n_frames(n), self.n_mels, 1)

    def get_config(self):
        config = super().get_config()
        config.update(sample_rate=self.sample_rate, n_fft=self.n_fft,
                      hop_length=self.hop_length, n_mels=self.n_mels, f_min=self.f_min,
                      f_max=self.f_max, amin=self.amin, top_db=self.top_db)
        return config


# ---------------------------------------------------------------------------------------
# Pooling
# ---------------------------------------------------------------------------------------

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
# (ops.max_pool). Read when the layer is traced; the GPU benchmark compares the two.
MAX_POOL = "slices"


def max_pool_by_slices(x, pool_size, strides):
    """ops.max_pool(x, pool_size, strides, padding="same") over axes 1 and 2 of a
    (batch, time, mel, channels) tensor, as running maxima of shifted strided slices.

    Why: XLA differentiates a windowed max (reduce_window) with select-and-scatter, a slow
    scatter on a GPU (and on a CPU: 3.2x slower than this for block 1's 3x3 pool, measured);
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
        total = max((n_out - 1) * s + p - n, 0)       # 'same' padding, the extra one after
        pads = [(0, 0)] * 4
        pads[axis] = (total // 2, total - total // 2)
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
    """

    def __init__(self, pool_size=2, strides=None, mode="max", **kwargs):
        super().__init__(**kwargs)
        mode = "none" if mode is None else mode
        if mode not in POOL_MODES:
            raise ValueError(f"unknown pool mode {mode!r}; choose one of {list(POOL_MODES)}")
        self.pool_size = int(pool_size)
        self.strides = int(pool_size if strides is None else strides)
        self.mode = mode

    def window(self, axes: str):
        """(pool size, strides) of one pooling step over "both" axes, "time" or "mel"."""
        p, s = self.pool_size, self.strides
        return {"both": ((p, p), (s, s)), "time": ((p, 1), (s, 1)), "mel": ((1, p), (1, s))}[axes]

    def call(self, x):
        sliced = MAX_POOL == "slices" and keras.backend.backend() != "tensorflow"
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
        config.update(pool_size=self.pool_size, strides=self.strides, mode=self.mode)
        return config


# ---------------------------------------------------------------------------------------
# Head and blocks
# ---------------------------------------------------------------------------------------

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


# ---------------------------------------------------------------------------------------
# Stacker
# ---------------------------------------------------------------------------------------

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


# ---------------------------------------------------------------------------------------
# Recurrent
# ---------------------------------------------------------------------------------------

# Time steps per iteration of the fused GRU's scan on JAX. Unrolling cuts a GPU's per-step
# loop overhead (each iteration is a few tiny kernels plus loop control), but on a CPU it
# only costs: measured on the 2-core CPU (JAX 0.10, branch of batch 32, 128 units),
# unroll 4 / 16 / 128 made a training step 1.25x / 4.2x / 13x slower than unroll 1 and
# compiled for 12 s / 27 s / 380 s. `bench.py --gpu` measures the unrolls on a GPU and
# runs the zoo with the fastest; set that here once measured.
GRU_UNROLL = 1


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
      step, `unroll` steps per iteration (default: GRU_UNROLL at construction).
    """

    def __init__(self, units, unroll=None, **kwargs):
        super().__init__(**kwargs)
        self.units = int(units)
        self.unroll = int(GRU_UNROLL if unroll is None else unroll)
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
