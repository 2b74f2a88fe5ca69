"""The benchmark's own logic (its timings are not tested: they belong in BENCHMARKS.md)."""
import numpy as np

import bench
from fat2019.tools.bench import feed, report
from fat2019.data import cache_builder
from fat2019.data.audio import global_features
from fat2019.data.dataset import ClipSet
from fat2019.data.feature_cache import FeatureCache


def test_reference_loop_is_the_global_features_definition(tmp_path):
    paths = feed.write_clips(tmp_path / "audio", 3, seed=1)
    cache_dir = tmp_path / "cache"
    cache_builder.build_set(ClipSet("bench", [p.name for p in paths], paths, None), cache_dir, 1, False)
    import librosa
    y, _ = librosa.load(paths[0], sr=44100)
    np.testing.assert_allclose(global_features(y), feed.loop_global_features(y), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(FeatureCache(cache_dir).global_features[0], global_features(y), rtol=1e-6)


def test_repeated_cache_has_n_rows_over_the_same_audio(tmp_path):
    paths = feed.write_clips(tmp_path / "audio", 3, seed=2)
    cache_builder.build_set(ClipSet("bench", [p.name for p in paths], paths, None), tmp_path / "cache", 1, False)
    source = FeatureCache(tmp_path / "cache")
    feed.make_repeated_cache(source, tmp_path / "big", 10)
    big = FeatureCache(tmp_path / "big")
    assert len(big) == 10 and len(set(big.fnames)) == 10
    for i in range(10):
        np.testing.assert_array_equal(big.waveform(i), source.waveform(i % 3))
        np.testing.assert_array_equal(big.global_features[i], source.global_features[i % 3])


def test_verdicts_say_met_or_not():
    assert report.verdict(dict(figure="x, clips/s", ours=30.0, reference=2.0, goal=10))[1] == ">= 10x: met"
    assert report.verdict(dict(figure="x, clips/s", ours=3.0, reference=2.0, goal=10))[1] == ">= 10x: NOT met"
    assert "NOT met" in report.verdict(dict(figure="peak RSS, MB", ours=5000.0, goal=4096))[1]
    assert report.verdict(dict(figure="share", ours=50.0, reference=100.0, goal=0.4,
                              ratio_is_share=True)) == ("50% of peak", ">= 40%: met")
    assert report.verdict(dict(figure="gpu", ours=None))[1] == "unmeasured"


ROWS = [dict(figure="x, clips/s", ours=30.0, reference=2.0, goal=10, note="fake")]


def run_bench_without_measuring(monkeypatch, *argv):
    monkeypatch.setattr(bench, "cpu_rows", lambda args: ROWS)
    assert bench.main(list(argv)) == 0


def test_the_report_goes_to_its_own_file_and_benchmarks_md_only_when_told(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(bench, "REPORTS", tmp_path / "reports")
    tracked = tmp_path / "BENCHMARKS.md"
    original = (f"{report.CPU_SECTION.start}\n# Benchmarks\nold CPU figures\n{report.CPU_SECTION.end}\n\n"
                "## Someone else's section\nkept\n\n"
                f"{report.GPU_SECTION.start}\n## GPU (JAX)\nGPU figures\n{report.GPU_SECTION.end}\n")
    tracked.write_text(original)
    run_bench_without_measuring(monkeypatch, "--quick")
    written = tmp_path / "reports" / "cpu.md"
    assert "| x, clips/s | 30 |" in written.read_text()
    assert f"report written to {written}" in capsys.readouterr().out
    assert tracked.read_text() == original

    run_bench_without_measuring(monkeypatch, "--quick", "--update", str(tracked))
    updated = tracked.read_text()
    assert "old CPU figures" not in updated and "| x, clips/s | 30 |" in updated
    assert "## Someone else's section\nkept\n" in updated and "GPU figures" in updated
    assert updated.count(report.CPU_SECTION.start) == 1
    assert f"the CPU section of {tracked} replaced" in capsys.readouterr().out


def test_the_memory_probe_runs_as_a_package_module(tmp_path):
    paths = feed.write_clips(tmp_path / "audio", 2, seed=3)
    cache_builder.build_set(ClipSet("bench", [p.name for p in paths], paths, None), tmp_path / "cache", 1, False)
    from fat2019.tools.bench import rss_probe
    result = rss_probe.run_probe(tmp_path / "cache", 0, 2)
    assert result["clips"] == 2 and result["rss_pipeline_mb"] > 0
