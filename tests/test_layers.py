"""The custom layers against plain numpy definitions."""
import numpy as np
import keras
import librosa
import pytest
import scipy.signal

from fat2019.nn import frontend

from fat2019.nn import heads

from fat2019.nn import pooling
from helpers import run_under_jax

SR = 44_100


# ---------------------------------------------------------------------------------------
# Log-mel
# ---------------------------------------------------------------------------------------

def reference_logmel(x, sr=SR, n_fft=1024, hop=512, n_mels=64):
    """The log-mel of docs/faithfulness.md ("The model") written out in float64 numpy: (time, n_mels)."""
    x = np.asarray(x, np.float64)
    n = len(x)
    n_frames = -(-n // hop)
    total = max((n_frames - 1) * hop + n_fft - n, 0)
    padded = np.pad(x, (total // 2, total - total // 2))
    frames = np.lib.stride_tricks.sliding_window_view(padded, n_fft)[::hop][:n_frames]
    window = scipy.signal.get_window("hann", n_fft, fftbins=True)     # periodic Hann
    power = np.abs(np.fft.rfft(frames * window, axis=1)) ** 2
    fb = librosa.filters.mel(sr=sr, n_fft=n_fft, n_mels=n_mels, fmin=0, fmax=sr / 2,
                             norm="slaney", htk=False)
    db = 10 * np.log10(np.maximum(power @ fb.T, 1e-10))
    return np.maximum(db - db.max(), -80.0)


def realistic_clip(n_samples, seed, gain=1.0):
    """Chirp + enveloped harmonic tone + noise, with a near-silent tail."""
    rng = np.random.default_rng(seed)
    t = np.arange(n_samples) / SR
    dur = n_samples / SR
    f0, f1 = 80.0, 12_000.0
    chirp = np.sin(2 * np.pi * (f0 * t + 0.5 * (f1 - f0) / dur * t ** 2))
    envelope = np.exp(-((t - 0.5 * dur) / (0.2 * dur)) ** 2)
    pitch = rng.uniform(200, 900)
    tone = sum(np.sin(2 * np.pi * pitch * k * t + rng.uniform(0, 6)) / k for k in range(1, 9))
    x = 0.3 * chirp * (t < 0.4 * dur) + 0.4 * tone * envelope
    x += 0.002 * rng.standard_normal(n_samples)
    x[int(0.8 * n_samples):] *= 1e-3                   # quiet tail, deep in the -80 dB range
    return (gain * x).astype(np.float32)


def run_logmel(batch, **kwargs):
    layer = frontend.LogMelSpectrogram(**kwargs)
    return keras.ops.convert_to_numpy(layer(batch))


def test_same_padding_matches_tf_same_convolution():
    # 5 s: 431 frames, 684 zeros in all, 342 on the left.
    assert frontend.same_padding(220_500, 1024, 512) == (342, 342)
    for n in (1, 511, 512, 513, 1024, 88_200, 220_500):
        left, right = frontend.same_padding(n, 1024, 512)
        n_frames = -(-n // 512)
        assert (n + left + right - 1024) // 512 + 1 == n_frames
        assert left == (left + right) // 2


def loud_and_quiet(n_samples):
    """A loud and a very quiet clip in one batch: the max is per clip, not per batch.
    The loud clip's silent tail hits the -80 dB floor; the quiet clip's tail is below
    amin (1e-10 = -100 dB absolute), which is only about -70 dB under its maximum."""
    return np.stack([realistic_clip(n_samples, seed=0), realistic_clip(n_samples, seed=1, gain=1e-3)])


def assert_matches_reference(clips, out):
    """`out`, a LogMelSpectrogram of `loud_and_quiet` clips, equals `reference_logmel`
    within 0.01 dB, and both the -80 dB floor and amin are exercised."""
    n_frames = -(-clips.shape[1] // 512)
    assert out.shape == (2, n_frames, 64, 1)
    assert out.dtype == np.float32
    for i, (clip, got) in enumerate(zip(clips, out[..., 0])):
        want = reference_logmel(clip)
        assert got.max() == 0.0 and got.min() >= -80.0
        above = want > -80.0
        assert above.mean() > 0.3
        np.testing.assert_array_less(np.abs(got[above] - want[above]), 0.01)
        assert np.all(got[~above] == -80.0)
        assert np.all(want[got == -80.0] <= -80.0 + 0.01)
        if i == 0:
            assert (~above).mean() > 0.05                 # the floor is exercised
        else:
            at_amin = np.isclose(want, want.min())
            assert want.min() > -80.0 and at_amin.mean() > 0.05   # so is amin


@pytest.mark.parametrize("n_samples", [220_500, 88_200, 30_001])
def test_logmel_matches_numpy_reference(n_samples):
    clips = loud_and_quiet(n_samples)
    assert_matches_reference(clips, run_logmel(clips))


@pytest.mark.parametrize("sr, n_fft, n_mels, f_min, f_max", [
    (44_100, 1024, 64, 0.0, None), (22_050, 2048, 128, 20.0, 8000.0), (16_000, 400, 40, 300.0, 7600.0)])
def test_slaney_mel_filterbank_equals_librosa(sr, n_fft, n_mels, f_min, f_max):
    ours = frontend.slaney_mel_filterbank(sr, n_fft, n_mels, f_min, f_max)
    theirs = librosa.filters.mel(sr=sr, n_fft=n_fft, n_mels=n_mels, fmin=f_min, fmax=f_max,
                                 htk=False, norm="slaney").T
    assert ours.shape == theirs.shape == (n_fft // 2 + 1, n_mels) and ours.dtype == np.float32
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-6)


def test_periodic_hann_equals_scipy():
    np.testing.assert_allclose(frontend.periodic_hann(1024),
                               scipy.signal.get_window("hann", 1024, fftbins=True), atol=1e-7)


def test_logmel_ops_path_equals_kapre_path_on_tensorflow():
    assert keras.backend.backend() == "tensorflow"
    layer = frontend.LogMelSpectrogram()
    assert layer.uses_kapre
    for n_samples in (88_200, 30_001):
        clips = np.concatenate([loud_and_quiet(n_samples),
                                np.random.default_rng(n_samples).uniform(-1, 1, (2, n_samples))]
                               ).astype(np.float32)
        kapre_out = keras.ops.convert_to_numpy(layer(clips))
        ops_out = keras.ops.convert_to_numpy(layer.call_with_ops(clips))
        assert ops_out.shape == kapre_out.shape and ops_out.dtype == np.float32
        np.testing.assert_array_less(np.abs(ops_out - kapre_out), 0.01)
        assert ops_out.max() == 0.0 and ops_out.min() >= -80.0


def test_logmel_under_jax_matches_numpy_reference(tmp_path):
    # Run with TF, kapre and librosa unimportable, as on the JAX GPU machines.
    clips = loud_and_quiet(88_200)
    np.save(tmp_path / "clips.npy", clips)
    run_under_jax("""
        import numpy as np
        from fat2019.nn import frontend
        from fat2019.nn import heads
        from fat2019.nn import pooling
        layer = frontend.LogMelSpectrogram()
        assert not layer.uses_kapre
        out = keras.ops.convert_to_numpy(layer(np.load("clips.npy")))
        np.save("out.npy", out)
    """, cwd=tmp_path)
    assert_matches_reference(clips, np.load(tmp_path / "out.npy"))


def test_logmel_five_seconds_is_431_by_64():
    layer = frontend.LogMelSpectrogram()
    assert layer.compute_output_shape((None, 220_500)) == (None, 431, 64, 1)
    assert run_logmel(np.zeros((1, 220_500), np.float32)).shape == (1, 431, 64, 1)


def test_logmel_is_float32_and_weightless_under_mixed_precision():
    clip = realistic_clip(20_000, seed=2)[None]
    plain = run_logmel(clip)
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_float16")
    try:
        layer = frontend.LogMelSpectrogram()
        mixed = keras.ops.convert_to_numpy(layer(clip))
    finally:
        keras.config.set_dtype_policy(previous)
    assert layer.compute_dtype == "float32" and mixed.dtype == np.float32
    np.testing.assert_array_equal(mixed, plain)
    assert not layer.trainable and not layer.weights


def test_logmel_config_round_trip():
    layer = frontend.LogMelSpectrogram(n_mels=32, top_db=60.0, name="lm")
    clone = frontend.LogMelSpectrogram.from_config(layer.get_config())
    clip = realistic_clip(10_000, seed=3)[None]
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(clone(clip)),
                                  keras.ops.convert_to_numpy(layer(clip)))
    assert clone.n_mels == 32 and clone.top_db == 60.0


# ---------------------------------------------------------------------------------------
# Pooling
# ---------------------------------------------------------------------------------------

def pool_1d(x, axis, size, stride, reduce):
    """'same' pooling along one axis; the padding is left out of every window."""
    n = x.shape[axis]
    n_out = -(-n // stride)
    left = max((n_out - 1) * stride + size - n, 0) // 2
    windows = []
    for i in range(n_out):
        lo, hi = max(i * stride - left, 0), min(i * stride - left + size, n)
        windows.append(reduce(np.take(x, range(lo, hi), axis=axis), axis=axis))
    return np.stack(windows, axis=axis)


MEAN, MAX = np.mean, np.max
TIME, MEL = 1, 2
REFERENCE_STEPS = {      # (reduction, axis) in order, for a (batch, time, mel, ch) tensor
    "max": [(MAX, TIME), (MAX, MEL)],   # separable: a 2-D max = max of 1-D maxes
    "ave": [(MEAN, TIME), (MEAN, MEL)],  # separable too, since padding is left out
    "avemax1": [(MEAN, TIME), (MAX, MEL)],
    "avemax2": [(MEAN, MEL), (MAX, TIME)],
    "avemax3": [(MAX, MEL), (MEAN, TIME)],
    "avemax4": [(MAX, TIME), (MEAN, MEL)],
    "none": [],
}


def reference_pool(x, size, stride, mode):
    for reduce, axis in REFERENCE_STEPS[mode]:
        x = pool_1d(x, axis, size, stride, reduce)
    return x


@pytest.mark.parametrize("mode", list(REFERENCE_STEPS))
@pytest.mark.parametrize("size, stride", [(3, 1), (2, 2), (3, 2), (3, 3)])
def test_axis_split_pool_matches_numpy(mode, size, stride):
    x = np.random.default_rng(0).normal(size=(2, 11, 8, 3)).astype(np.float32)
    layer = pooling.AxisSplitPool(size, stride, mode)
    got = keras.ops.convert_to_numpy(layer(x))
    want = reference_pool(x.astype(np.float64), size, stride, mode)
    assert got.shape == want.shape == layer.compute_output_shape(x.shape)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


# One 3x3 window (pool 3, stride 3, no padding); rows are time, columns mel. The six modes
# give six different answers, so a swapped axis or order cannot go unnoticed.
CRAFTED = np.array([[9, 0, 3],
                    [0, 0, 6],
                    [0, 3, 6]], np.float32)
CRAFTED_EXPECTED = {
    "max": 9.0,
    "ave": 3.0,
    "avemax1": 5.0,   # mean over time per mel bin: [3, 1, 5] -> max
    "avemax2": 4.0,   # mean over mel per frame: [4, 2, 3] -> max
    "avemax3": 7.0,   # max over mel per frame: [9, 6, 6] -> mean
    "avemax4": 6.0,   # max over time per mel bin: [9, 3, 6] -> mean
}


@pytest.mark.parametrize("mode", list(CRAFTED_EXPECTED))
def test_axis_split_pool_crafted(mode):
    x = CRAFTED[None, :, :, None]
    got = keras.ops.convert_to_numpy(pooling.AxisSplitPool(3, 3, mode)(x))
    assert got.shape == (1, 1, 1, 1)
    assert got.item() == pytest.approx(CRAFTED_EXPECTED[mode])


def test_axis_split_pool_none_is_identity_and_bad_mode_fails():
    x = np.arange(24, dtype=np.float32).reshape(1, 4, 3, 2)
    for mode in (None, "none"):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(pooling.AxisSplitPool(3, 2, mode)(x)), x)
    with pytest.raises(ValueError):
        pooling.AxisSplitPool(3, 2, "avemax5")


WINDOWS = [((3, 3), (1, 1)), ((2, 2), (2, 2)), ((3, 3), (2, 2)), ((3, 3), (3, 3)), ((3, 1), (2, 1)),
           ((1, 2), (1, 2))]


def tied(shape, seed=0):
    """Small integers: most windows hold their maximum more than once."""
    return np.random.default_rng(seed).integers(-3, 4, shape).astype(np.float32)


@pytest.mark.parametrize("size, strides", WINDOWS)
def test_max_pool_by_slices_equals_max_pool(size, strides):
    for x in (np.random.default_rng(1).normal(size=(2, 11, 8, 3)).astype(np.float32), tied((2, 11, 8, 3))):
        want = keras.ops.convert_to_numpy(keras.ops.max_pool(x, size, strides, padding="same"))
        got = keras.ops.convert_to_numpy(pooling.max_pool_by_slices(x, size, strides))
        np.testing.assert_array_equal(got, want)


def test_max_pool_by_slices_has_max_pools_gradients_under_jax(tmp_path):
    """Under JAX the layer takes its max by slices; its gradient routes each window to the
    first maximum, as JAX's own max_pool gradient (select-and-scatter) does, ties included."""
    np.save(tmp_path / "x.npy", tied((2, 13, 10, 3)))
    np.save(tmp_path / "w.npy", tied((2, 13, 10, 3), seed=1))
    run_under_jax(f"""
        import jax, jax.numpy as jnp, numpy as np
        from fat2019.nn import frontend
        from fat2019.nn import heads
        from fat2019.nn import pooling
        x, w = jnp.asarray(np.load("x.npy")), jnp.asarray(np.load("w.npy"))
        assert pooling.AxisSplitPool(3, 2, "max").max_pool == "slices"
        for size, strides in {WINDOWS!r}:
            def loss(pool, x):
                y = pool(x)
                return jnp.sum(y * w[:, :y.shape[1], :y.shape[2]])
            window = lambda x: keras.ops.max_pool(x, size, strides, padding="same")
            sliced = lambda x: pooling.max_pool_by_slices(x, size, strides)
            np.testing.assert_array_equal(sliced(x), window(x))
            np.testing.assert_array_equal(jax.grad(lambda x: loss(sliced, x))(x),
                                          jax.grad(lambda x: loss(window, x))(x))
        # the layer's modes still match their definition (the numpy reference's values)
        layer = pooling.AxisSplitPool(3, 2, "avemax3")
        np.testing.assert_array_equal(layer(x), pooling.AxisSplitPool(3, 2, "avemax3", max_pool="window")(x))
    """, cwd=tmp_path)


def test_axis_split_pool_config_round_trip():
    layer = pooling.AxisSplitPool(3, 2, "avemax3", name="p")
    clone = keras.layers.deserialize(keras.layers.serialize(layer))
    assert type(clone) is pooling.AxisSplitPool
    assert (clone.pool_size, clone.strides, clone.mode, clone.max_pool) == (3, 2, "avemax3", "slices")


# ---------------------------------------------------------------------------------------
# Head, highway, stacker pieces
# ---------------------------------------------------------------------------------------

def test_mel_pair_shuffle_puts_adjacent_mel_bins_into_channels():
    x = np.random.default_rng(0).normal(size=(2, 5, 8, 3)).astype(np.float32)
    got = keras.ops.convert_to_numpy(heads.MelPairShuffle()(x))
    assert got.shape == (2, 5, 4, 6)
    np.testing.assert_array_equal(got[:, :, :, :3], x[:, :, 0::2, :])
    np.testing.assert_array_equal(got[:, :, :, 3:], x[:, :, 1::2, :])


def test_time_max_mel_mean():
    x = np.random.default_rng(0).normal(size=(2, 5, 4, 6)).astype(np.float32)
    got = keras.ops.convert_to_numpy(heads.TimeMaxMelMean()(x))
    np.testing.assert_allclose(got, x.max(axis=1).mean(axis=1), rtol=1e-6)


def test_highway_gate():
    rng = np.random.default_rng(0)
    t, h, p = (rng.uniform(size=(2, 3, 4, 5)).astype(np.float32) for _ in range(3))
    got = keras.ops.convert_to_numpy(heads.HighwayGate()([t, h, p]))
    np.testing.assert_allclose(got, t * h + (1 - t) * p, rtol=1e-6)


def test_classwise_weights_is_a_per_class_dot_product():
    rng = np.random.default_rng(0)
    x = rng.uniform(size=(4, 6, 3)).astype(np.float32)
    layer = heads.ClasswiseWeights()
    out = keras.ops.convert_to_numpy(layer(x))
    # initial kernel: ones on the last input, zeros elsewhere
    np.testing.assert_array_equal(layer.kernel.numpy(), np.tile([0.0, 0.0, 1.0], (6, 1)))
    np.testing.assert_array_equal(out, x[:, :, -1:])
    w = rng.normal(size=(6, 3)).astype(np.float32)
    layer.kernel.assign(w)
    out = keras.ops.convert_to_numpy(layer(x))
    np.testing.assert_allclose(out[..., 0], np.einsum("bcj,cj->bc", x, w), rtol=1e-5)


def test_shifted_tanh():
    x = np.linspace(-3, 5, 9, dtype=np.float32)[None]
    got = keras.ops.convert_to_numpy(heads.ShiftedTanh(1.6)(x))
    np.testing.assert_allclose(got, (np.tanh(x - 1.6) + 1) / 2, rtol=1e-6, atol=1e-7)
