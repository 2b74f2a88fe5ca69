"""The log-mel front end: waveform (batch, samples) -> per-clip-normalised log-mel, the
model's first layer, so features are computed on the device and saved with the model.

`LogMelSpectrogram` uses kapre's primitives on TensorFlow (kapre is imported only there)
and keras.ops on other backends, with the same filterbank (Slaney's mel scale, as librosa's
htk=False) and the same periodic Hann window.
"""
from __future__ import annotations

import math

import keras
import numpy as np
from keras import ops

from fat2019.nn.registry import PACKAGE


def same_padding(n: int, window: int, stride: int) -> tuple[int, int]:
    """(before, after) padding that makes a window sliding by `stride` over `n` steps
    yield ceil(n / stride) outputs, as TF's padding='same' does: `total = (ceil(n/stride)
    - 1) * stride + window - n`, `total // 2` before. The one rule for the front end's
    framing and the pools' maxima by slices.

    The original ran kapre 0.1's Melspectrogram, a Conv1D with padding='same'; kapre 0.4's
    STFT only offers pad_begin/pad_end, which frame differently, so the padding is done here.
    """
    total = max((math.ceil(n / stride) - 1) * stride + window - n, 0)
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

    Definition (the original's front end): power spectrum |STFT|^2 with a periodic Hann window,
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
        # which after subtracting the clip max is the original's -top_db floor.
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
