"""The GPU benchmark's logic (gpu_bench.py), and `bench.py --gpu --quick` end to end under
JAX on the CPU with TensorFlow, kapre, librosa and soundfile unimportable, as on the GPU
machines. Its timings are not tested."""
import numpy as np
import pytest

from fat2019 import config
from fat2019.tools.bench import gpu_projection, gpu_report, gpu_setup, report
from fat2019.data.batches import TrainBatches
from helpers import run_under_jax


def test_synthetic_cache_feeds_the_training_batches(tmp_path):
    cache = gpu_setup.synthetic_cache(tmp_path / "cache", 6, seed=3)
    assert len(cache) == 6 and len(set(cache.fnames)) == 6
    lengths = [len(cache.waveform(i)) / config.SAMPLE_RATE for i in range(6)]
    assert all(0.3 <= s <= 30.0 for s in lengths)
    assert cache.global_features.shape == (6, config.N_GLOBAL_STEPS, config.N_GLOBAL_STATS)
    data = gpu_setup.clip_data(cache, 10)
    assert len(data) == 10 and data.labels.shape == (10, gpu_setup.N_CLASSES)
    x, y = TrainBatches(data, 4, 22_050, seed=0, epoch=0, mixup_prob=0.5, mixup_weight=0.7,
                        label_smoothing=0.01)[0]
    assert x["audio"].shape == (4, 22_050) and np.abs(x["audio"]).max() > 0
    assert y.shape == (4, gpu_setup.N_CLASSES)


def test_recipe_hours_follow_the_rates():
    full = config.PROFILES["full"]
    rates = {m.name: dict(train_clips_s=1000.0, predict_clips_s=4000.0, checkpoint_s=0.5) for m in config.ZOO}
    twice = {m: dict(r, train_clips_s=2000.0, predict_clips_s=8000.0, checkpoint_s=0.0) for m, r in rates.items()}
    base, fast = gpu_projection.recipe_hours(rates, full), gpu_projection.recipe_hours(twice, full)
    assert [r["model"] for r in base] == [m.name for m in config.ZOO]
    for member, b, f in zip(config.ZOO, base, fast):
        # Models that start from another's pretraining have none of their own.
        assert (b["pretrain"] == 0.0) == (member.pretrained_from is not None)
        checkpoints = 0.5 * full.n_folds * full.epochs / 3600
        assert f["folds"] == pytest.approx((b["folds"] - checkpoints) / 2)
        assert f["predict"] == pytest.approx(b["predict"] / 2)
    # Prediction: 3-TTA over each fold's out-of-fold clips and the test set, every fold.
    tta_clips = 3 * (gpu_setup.N_CURATED + full.n_folds * gpu_setup.N_TEST)
    assert base[0]["predict"] == pytest.approx(tta_clips / 4000.0 / 3600)
    partial = gpu_projection.recipe_hours({"v1mix": rates["v1mix"]}, full)
    assert partial[0]["folds"] is not None and all(r["folds"] is None for r in partial[1:])


def test_peaks_by_device_kind():
    assert gpu_report.bf16_peak("NVIDIA H100 80GB HBM3") == 989.4
    assert gpu_report.bf16_peak("NVIDIA H100 PCIe") == 756.0
    assert gpu_report.bf16_peak("NVIDIA H200") == 989.4
    assert gpu_report.bf16_peak("NVIDIA H200 NVL") == 835.0
    assert gpu_report.bf16_peak("cpu") is None


def test_gpu_section_replaces_itself_and_keeps_the_rest():
    cpu = "# Benchmarks\n\n| figure | ours |\n|---|---|\n| a | 1 |\n"
    once = report.GPU_SECTION.replace(cpu, "## GPU (JAX)\n\nfirst\n")
    assert once.startswith(cpu) and "first" in once
    twice = report.GPU_SECTION.replace(once + "\ntail\n", "## GPU (JAX)\n\nsecond\n")
    assert twice.startswith(cpu) and "second" in twice and "first" not in twice and twice.endswith("tail\n")
    assert twice.count(report.GPU_SECTION.start) == twice.count(report.GPU_SECTION.end) == 1
    assert report.GPU_SECTION.replace("", "x\n") == f"{report.GPU_SECTION.start}\nx\n{report.GPU_SECTION.end}\n"


def test_cpu_report_keeps_the_gpu_section(tmp_path):
    path = tmp_path / "BENCHMARKS.md"
    path.write_text(report.GPU_SECTION.replace("# old CPU figures\n", "## GPU (JAX)\n\nmeasured\n"))
    section = report.GPU_SECTION.existing(path)
    assert section.startswith(report.GPU_SECTION.start) and "measured" in section
    assert report.GPU_SECTION.existing(tmp_path / "absent.md") is None


def test_bench_gpu_quick_runs_without_tensorflow(tmp_path):
    """The device command's path, tiny: every import it makes must exist on a JAX machine."""
    out = tmp_path / "BENCHMARKS.md"
    out.write_text("# Benchmarks\n\nCPU figures\n")
    run_under_jax(f"""
        import os
        os.environ["XLA_FLAGS"] = "--xla_backend_optimization_level=0"  # compile faster; read at jax's first use
        import bench
        bench.main(["--gpu", "--quick", "--models", "v1mix", "--workers", "1", "--out", {str(out)!r}])
    """)
    text = out.read_text()
    assert text.startswith("# Benchmarks\n\nCPU figures\n")
    assert "## GPU (JAX)" in text and "Not a GPU run" in text
    rows = [line for line in text.splitlines() if line.startswith("| v1mix |")]
    measured = [line for line in rows if "unmeasured" not in line]
    assert {line.split(" | ")[1] for line in measured} >= {"mixed_bfloat16", "float32"}
    assert "| BiGRUSum, unroll" in text and "| keras Bidirectional(GRU) |" in text
    # The v1mix step's before/after: each variant built and trained (a rate, not "unmeasured").
    profile = [line for line in text.split("### Before / after", 1)[1].split("###", 1)[0].splitlines()
               if line.startswith(("| before:", "| after:", "| ablation:"))]
    assert len(profile) == 4
    assert all(float(row.split(" | ")[1].replace(",", "")) > 0 for row in profile), profile
    pools = [line for line in text.splitlines() if line.startswith(("| windows (", "| slices ("))]
    assert len(pools) == 2 and all(float(row.split(" | ")[2]) > 0 for row in pools), pools
    assert gpu_setup.GPU_COMMAND in text
