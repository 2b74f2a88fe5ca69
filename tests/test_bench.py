"""The benchmark's own logic (its timings are not tested: they belong in BENCHMARKS.md)."""
import numpy as np

import bench
from fat2019.data import cache_builder
from fat2019.data.audio import global_features
from fat2019.data.dataset import ClipSet
from fat2019.data.feature_cache import FeatureCache


def test_reference_loop_is_the_global_features_definition(tmp_path):
    paths = bench.write_clips(tmp_path / "audio", 3, seed=1)
    cache_dir = tmp_path / "cache"
    cache_builder.build_set(ClipSet("bench", [p.name for p in paths], paths, None), cache_dir, 1, False)
    import librosa
    y, _ = librosa.load(paths[0], sr=44100)
    np.testing.assert_allclose(global_features(y), bench.loop_global_features(y), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(FeatureCache(cache_dir).global_features[0], global_features(y), rtol=1e-6)


def test_repeated_cache_has_n_rows_over_the_same_audio(tmp_path):
    paths = bench.write_clips(tmp_path / "audio", 3, seed=2)
    cache_builder.build_set(ClipSet("bench", [p.name for p in paths], paths, None), tmp_path / "cache", 1, False)
    source = FeatureCache(tmp_path / "cache")
    bench.make_repeated_cache(source, tmp_path / "big", 10)
    big = FeatureCache(tmp_path / "big")
    assert len(big) == 10 and len(set(big.fnames)) == 10
    for i in range(10):
        np.testing.assert_array_equal(big.waveform(i), source.waveform(i % 3))
        np.testing.assert_array_equal(big.global_features[i], source.global_features[i % 3])


def test_verdicts_say_met_or_not():
    assert bench.verdict(dict(figure="x, clips/s", ours=30.0, reference=2.0, goal=10))[1] == ">= 10x: met"
    assert bench.verdict(dict(figure="x, clips/s", ours=3.0, reference=2.0, goal=10))[1] == ">= 10x: NOT met"
    assert "NOT met" in bench.verdict(dict(figure="peak RSS, MB", ours=5000.0, goal=4096))[1]
    assert bench.verdict(dict(figure="share", ours=50.0, reference=100.0, goal=0.4,
                              ratio_is_share=True)) == ("50% of peak", ">= 40%: met")
    assert bench.verdict(dict(figure="gpu", ours=None))[1] == "unmeasured"
