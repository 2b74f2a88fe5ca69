import numpy as np
import pytest
import soundfile as sf

import librosa
from fat2019.data.audio import AudioError, decode, global_features, length_feature, process_clip, trim
from helpers import reference_global_features, tone


@pytest.mark.parametrize("n", [256, 257, 300, 1000, 4097, 44100, 65_537, 220_500, 661_503])
def test_global_features_equal_the_loop_definition(n):
    rng = np.random.default_rng(n)
    # real-looking: a tone under an envelope, noise, a DC offset and a silent stretch
    t = np.arange(n) / 44100
    x = (0.3 * np.sin(2 * np.pi * 330 * t) * np.exp(-3 * t) + 0.05 * rng.standard_normal(n) + 0.01)
    x[: n // 5] = 0.0
    x = x.astype(np.float32)
    ours = global_features(x)
    assert ours.shape == (128, 12) and ours.dtype == np.float32
    np.testing.assert_allclose(ours, reference_global_features(x), rtol=1e-6, atol=0)


def test_global_features_on_quantised_audio_with_ties():
    x = (np.random.default_rng(1).integers(-3, 4, 50_000) / 32768).astype(np.float32)
    np.testing.assert_allclose(global_features(x), reference_global_features(x), rtol=1e-6, atol=0)


@pytest.mark.parametrize("n", [256, 5_000, 220_500, 661_503])
def test_global_features_of_16_bit_audio_equal_the_loop_definition(n):
    # what decoding a PCM_16 file gives: multiples of 1/32768, full scale included (these
    # take the int16 radix-sort path)
    rng = np.random.default_rng(n)
    x = np.clip(np.round(rng.standard_normal(n) * 4000 * np.linspace(0, 3, n)), -32768, 32767)
    x[:3] = [-32768, 32767, 0]
    x = (x / 32768).astype(np.float32)
    np.testing.assert_allclose(global_features(x), reference_global_features(x), rtol=1e-6, atol=0)


def test_short_clips_are_padded_for_global_features():
    x = np.linspace(-1, 1, 100, dtype=np.float32)
    padded = np.pad(x, (0, 156))
    np.testing.assert_allclose(global_features(x), reference_global_features(padded), rtol=1e-6)


def test_global_features_do_not_loop_over_np_percentile(monkeypatch):
    calls = []
    real = np.percentile
    monkeypatch.setattr(np, "percentile", lambda *a, **k: calls.append(1) or real(*a, **k))
    global_features(np.random.default_rng(0).standard_normal(44100).astype(np.float32))
    assert len(calls) == 0


def test_decode_mono_resampled_stereo(tmp_path):
    x = tone(1.0, rate=22050)
    sf.write(tmp_path / "a.wav", np.stack([x, 0.5 * x], axis=1), 22050, subtype="PCM_16")
    notes = []
    y = decode(tmp_path / "a.wav", notes)
    assert y.dtype == np.float32 and y.ndim == 1
    assert abs(len(y) - 44100) <= 1
    ref, _ = librosa.load(tmp_path / "a.wav", sr=44100, mono=True)
    np.testing.assert_allclose(y, ref, atol=1e-6)
    assert any("resampled from 22050" in n for n in notes) and any("channels" in n for n in notes)


def test_decode_errors_are_audio_errors(tmp_path):
    (tmp_path / "junk.wav").write_bytes(b"RIFF\x00\x00not really a wav")
    with pytest.raises(AudioError, match="cannot decode"):
        decode(tmp_path / "junk.wav")
    (tmp_path / "empty.wav").write_bytes(b"")
    with pytest.raises(AudioError):
        decode(tmp_path / "empty.wav")
    sf.write(tmp_path / "zero.wav", np.zeros(0, np.float32), 44100)
    with pytest.raises(AudioError, match="no audio samples"):
        decode(tmp_path / "zero.wav")


def test_trim_matches_librosa_and_keeps_silent_clips():
    x = tone(0.5, silence=0.4)
    expected, _ = librosa.effects.trim(x, top_db=60)
    np.testing.assert_array_equal(trim(x), expected)
    assert len(trim(x)) < len(x)
    silent = np.zeros(5000, np.float32)
    np.testing.assert_array_equal(trim(silent), silent)


def test_all_zero_clip_is_kept_whole_and_noted(tmp_path):
    sf.write(tmp_path / "z.wav", np.zeros(3000, np.float32), 44100, subtype="PCM_16")
    clip = process_clip(tmp_path / "z.wav")
    assert len(clip.trimmed) == 3000 and "all samples are zero" in clip.notes
    assert np.all(clip.global_features == 0)


def test_process_clip(tmp_path):
    x = tone(0.5, silence=0.3)
    sf.write(tmp_path / "a.wav", x, 44100, subtype="FLOAT")
    clip = process_clip(tmp_path / "a.wav")
    trimmed, _ = librosa.effects.trim(x, top_db=60)
    np.testing.assert_array_equal(clip.trimmed, trimmed)
    assert clip.length == pytest.approx(len(trimmed) / 441000)
    assert clip.length == length_feature(trimmed)
    np.testing.assert_allclose(clip.global_features, reference_global_features(x), rtol=1e-6)  # untrimmed
