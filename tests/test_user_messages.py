"""What the stages tell a user about what they are doing: early stopping, the profile
guard, suspicious label fields, the features stage's counts and the missing-cache hint."""
from __future__ import annotations

import re
import types
from pathlib import Path

import keras
import numpy as np
import pytest

from fat2019 import config
from fat2019.engine import training


class OneBatch(keras.utils.PyDataset):
    def __len__(self):
        return 1

    def __getitem__(self, index):
        return np.zeros((2, 1), np.float32), np.zeros((2, 1), np.float32)


def scripted_fit(tmp_path, monkeypatch, scores, profile):
    """training.fit's real epoch loop on a 1-weight model, val LRAP served from `scores`."""
    served = iter(scores)
    monkeypatch.setattr(training, "TrainBatches", lambda *a, **kw: OneBatch())
    monkeypatch.setattr(training, "predict_tta", lambda *a, **kw: np.zeros((2, 1), np.float32))
    monkeypatch.setattr(training, "lrap", lambda *a: next(served))
    monkeypatch.setattr(training, "lwlrap", lambda *a: 0.0)
    monkeypatch.setattr(training, "save_checkpoint", lambda model, path: Path(path).touch())
    model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.Nadam(1e-3), loss="mse")
    schedule = training.Schedule.curated(profile, config.ZOO[0])
    val = types.SimpleNamespace(labels=np.zeros((2, 1), np.float32))
    return training.fit(model, None, val, schedule, 10, tmp_path, "fold0", seed=0, label="v1mix fold 1")


def test_early_stop_says_why_and_when(tmp_path, monkeypatch, capsys):
    demo = config.PROFILES["demo"]   # 8 epochs; stops from epoch 7 on after 3 without improvement
    summary = scripted_fit(tmp_path, monkeypatch, [0.5, 0.9] + [0.5] * 6, demo)
    out = capsys.readouterr().out
    assert summary["epochs_run"] == 6
    lines = out.splitlines()
    stop = [line for line in lines if "stopping early" in line]
    assert stop == [lines[lines.index(next(x for x in lines if "epoch   6/8" in x)) + 1]]
    assert "after epoch 6/8" in stop[0] and "in 4 epoch(s) since its best, epoch 2" in stop[0]


def test_a_run_of_all_its_epochs_says_nothing_of_stopping(tmp_path, monkeypatch, capsys):
    demo = config.PROFILES["demo"]
    summary = scripted_fit(tmp_path, monkeypatch, [0.1 * e for e in range(8)], demo)
    assert summary["epochs_run"] == 8 and "stopping early" not in capsys.readouterr().out


# --- the features stage: label fields, counts, and what train.py says without a cache --------------

def run_features(data, *extra):
    import features
    return features.main(["--data-dir", str(data), "--workers", "1", *extra])


def own_data(root, rows):
    """Own data (no sample_submission.csv: the classes are the labels used) of 0.2 s tones."""
    import soundfile as sf
    from helpers import tone, write_csv
    (root / "audio_train").mkdir(parents=True)
    for i, (fname, _) in enumerate(rows):
        sf.write(root / "audio_train" / fname, tone(0.2, 200 + 10 * i, seed=i), 44100, subtype="PCM_16")
    write_csv(root / "train_curated.csv", ["fname", "labels"], rows)
    return root


def test_a_label_with_another_separator_is_named_at_the_features_stage(tmp_path, capsys):
    rows = [[f"c{i:03d}.wav", "low hum" if i % 2 else "high beep"] for i in range(6)]
    rows[3][1] = "low hum;high beep"
    rows[4][1] = "high beep|low hum"
    data = own_data(tmp_path / "my_data", rows)
    assert run_features(data, "--sets", "curated") == 0
    err = capsys.readouterr().err
    warned = [line for line in err.splitlines() if line.startswith("warning:")]
    assert len(warned) == 2
    semicolon, = [w for w in warned if "'low hum;high beep' contains ';'" in w]
    bar, = [w for w in warned if "'high beep|low hum' contains '|'" in w]
    assert "line 5 ('c003.wav')" in semicolon and "line 6 ('c004.wav')" in bar


def test_a_class_of_one_clip_among_classes_of_dozens_is_named(tmp_path):
    from fat2019.data.dataset import load_dataset, label_warnings
    rows = [[f"c{i:03d}.wav", ["Bark", "Chirp", "Drip"][i % 3]] for i in range(36)]
    rows[20][1] = "Brak"
    data = own_data(tmp_path / "my_data", rows)
    warnings = label_warnings(load_dataset(data))
    assert len(warnings) == 1
    assert "'Brak' is carried by a single curated clip" in warnings[0] and "line 22 ('c020.wav')" in warnings[0]
    rows[20][1] = "Bark"  # a clean label list: no warning
    data = own_data(tmp_path / "clean", rows)
    assert label_warnings(load_dataset(data)) == []


def test_features_counts_clips_from_the_cache_and_names_no_profile(tmp_path, capsys):
    rows = [[f"c{i:03d}.wav", "Bark" if i % 2 else "Chirp"] for i in range(5)]
    data = own_data(tmp_path / "my_data", rows)
    (data / "audio_train" / "c002.wav").write_bytes(b"not audio")
    assert run_features(data, "--skip-bad") == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].startswith("features: decoding on the CPU, ") and "profile" not in out.splitlines()[1]
    assert "curated: 5 clips: 0 from the cache, 4 decoded in" in out and "1 left out (--skip-bad)" in out
    assert run_features(data, "--skip-bad") == 0   # the rerun the issue quotes
    assert "curated: 5 clips: 4 from the cache, 0 decoded in" in capsys.readouterr().out


def test_after_a_bad_file_train_points_to_bad_files_csv_and_skip_bad(tmp_path, capsys):
    from fat2019.data.feature_cache import FeatureCache
    rows = [[f"c{i:03d}.wav", "Bark" if i % 2 else "Chirp"] for i in range(4)]
    data = own_data(tmp_path / "my_data", rows)
    with pytest.raises(FileNotFoundError, match=r"run code/features.py first"):
        FeatureCache(data / "features" / "curated")
    (data / "audio_train" / "c001.wav").write_bytes(b"not audio")
    assert run_features(data) == 1
    with pytest.raises(FileNotFoundError) as caught:
        FeatureCache(data / "features" / "curated")
    message = str(caught.value)
    assert str(data / "features" / "curated" / "bad_files.csv") in message and "--skip-bad" in message


# --- the profile guard -------------------------------------------------------------------------------

def test_profile_warning_names_the_reason_the_estimate_and_the_demo_hint():
    from fat2019.engine.workspace import profile_warning
    text = profile_warning("train", 40, on_gpu=False, seconds=7 * 3600, demo_seconds=240)
    assert "profile full on 40 curated clips" in text and "a CPU without a GPU" in text
    assert "at least 7.0 h" in text and "--profile demo (its estimate: 4 min)" in text
    assert "(its estimate: under 1 min)" in profile_warning("train", 40, False, 3600, 20)
    text = profile_warning("train", 300, on_gpu=True, seconds=None, demo_seconds=None)
    assert "300 curated clips" in text and "without a GPU" not in text and "at least" not in text
    assert "--profile demo" in text


def test_the_cpu_estimate_is_the_models_flops_at_the_measured_rate():
    from fat2019.nn.flops import count_flops
    from fat2019.nn.models import build_model
    from fat2019.engine import workspace
    full = config.PROFILES["full"]
    v1mix = config.ZOO_BY_NAME["v1mix"]
    flops = count_flops(build_model(full.scale(v1mix), 19))["total"]
    seconds = workspace.compute_seconds(full, [v1mix], 19, clips_per_epoch=40, epochs=40, runs=10, cores=2)
    # 3 forward passes per clip and epoch, at the per-core rate times the cores
    assert seconds == pytest.approx(3 * flops * 40 * 40 * 10 / (workspace.CPU_GFLOPS_PER_CORE * 1e9 * 2))
    assert 3600 < seconds < 3 * 3600   # v1mix at 5 s crops: 17.5 GFLOPs per crop


def test_train_on_small_own_data_with_the_full_profile_warns_first_and_goes_on(tmp_path, monkeypatch, capsys):
    import train
    from fat2019.engine import workspace
    rows = [[f"c{i:03d}.wav", "Bark" if i % 2 else "Chirp"] for i in range(8)]
    data = own_data(tmp_path / "my_data", rows)
    assert run_features(data) == 0
    monkeypatch.setattr(workspace, "compute_seconds", lambda profile, *a: 7 * 3600 if profile.name == "full" else 300)
    ran = []
    monkeypatch.setattr(training, "fit", lambda *a, **kw: ran.append(1) or {"best_epoch": 1, "best_val_lrap": 0.5})
    capsys.readouterr()
    assert train.main(["--data-dir", str(data), "--models", "v1mix", "--folds", "0", "--set", "width=0.0625",
                       "n_folds=2", "--from-scratch"]) == 0
    captured = capsys.readouterr()
    first, second = captured.out.splitlines()[:2]
    assert re.fullmatch(r"train: (TensorFlow|JAX) \S+ on (GPU \d .*|the CPU \(no GPU found\))", first)
    assert second.startswith("train: profile full, 8 curated clips")
    assert "warning: profile full on 8 curated clips" in captured.err and "--profile demo" in captured.err
    assert ran == [1]   # and it went on
    assert train.main(["--data-dir", str(data), "--profile", "demo", "--models", "v1mix", "--folds", "0",
                       "--from-scratch"]) == 0
    assert "warning: profile" not in capsys.readouterr().err
