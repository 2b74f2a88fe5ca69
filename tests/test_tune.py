"""tune.py, the search of the log-mel front end on Ray Tune (docs/tuning.md): a tiny
search runs, continues after a kill without redoing a finished trial, and leaves its
table, plot and front-end file; the stages take that file with --frontend, record it, and
refuse to mix it with a folder trained on another front end; impossible spaces are
refused before anything runs."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

import features
import train
import tune
from fat2019 import cli, config, layout
from fat2019.engine import training
from fat2019.tune import space
from helpers import make_dataset

CODE = Path(__file__).resolve().parent.parent / "code"
TINY = ["--set", "epochs=2", "n_folds=2", "width=0.0625", "duration=0.5", "lr_milestones=1",
        "early_stop_min_epoch=0"]
LIMIT_S = 900


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    data = make_dataset(tmp_path_factory.mktemp("tune") / "data", n_curated=10, n_noisy=0, n_test=1)
    assert features.main(["--data-dir", str(data), "--workers", "1", "--sets", "curated", "test"]) == 0
    return data


def options(data: Path, models: Path) -> list[str]:
    return ["--profile", "demo", "--data-dir", str(data), "--models-dir", str(models), "--workers", "1", *TINY]


@pytest.mark.parametrize("space_args, named", [
    (["--f-max", "16000", "30000"], "--f-max 30000: above the Nyquist frequency"),
    (["--hop-length", "256", "1024"], "--hop-length 1024: not below --n-fft 1024"),
    (["--n-mels", "128", "--n-fft", "256", "--hop-length", "128"], "--n-mels 128: too many for --n-fft 256"),
    (["--n-mels", "40"], "--n-mels 40: the model halves"),
    (["--f-min", "0", "12000", "--f-max", "11025", "22050"], "--f-min 12000: not below --f-max 11025"),
])
def test_an_impossible_space_is_refused_before_anything_runs(data, tmp_path, capsys, space_args, named):
    models = tmp_path / "models"
    assert cli.call(tune.main, [*options(data, models), *space_args]) == cli.BAD_INPUT
    err = capsys.readouterr().err
    assert err.startswith(f"error: {named}") and err.count("\n") == 1, err
    assert not models.exists()   # nothing written, nothing trained


def run_tune(argv: list[str], **kwargs) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(CODE / "tune.py"), *argv], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, cwd=CODE.parent, **kwargs)


def test_a_search_continues_after_a_kill_and_leaves_its_table_plot_and_front_end(data, tmp_path):
    models = tmp_path / "models"
    argv = [*options(data, models), "--trials", "3", "--n-mels", "32", "64", "--hop-length", "256", "512"]
    first = run_tune(argv)
    lines = []
    for line in first.stdout:   # until the first trial has ended, then a kill as `kill` sends it
        lines.append(line)
        if "1/3 trials ended" in line:
            first.send_signal(signal.SIGTERM)
    assert first.wait(timeout=LIMIT_S) == 143, "".join(lines)
    first_out = "".join(lines)
    ended = [line.split()[2] for line in lines if line.startswith("tune: trial ")]
    assert len(ended) >= 1 and "(n_mels 64, n_fft 1024, hop 512, 0-Nyquist Hz" in first_out   # the baseline first
    trials_dir = layout.tune_dir(models) / layout.TRIALS_DIR
    finished_at = {t: (trials_dir / t / "fold0.weights.h5").stat().st_mtime_ns for t in ended}

    second = run_tune(argv)
    out, _ = second.communicate(timeout=LIMIT_S)
    assert second.returncode == 0, out
    assert "continuing the search" in out
    announced = [line.split()[2] for line in out.splitlines() if line.startswith("tune: trial ")]
    assert not set(announced) & set(ended), out   # the finished trial is not run again
    assert all((trials_dir / t / "fold0.weights.h5").stat().st_mtime_ns == m for t, m in finished_at.items())

    table = pd.read_csv(layout.tune_dir(models) / layout.TRIALS_CSV)
    assert len(table) == 3 and set(table["trial"]) == set(ended) | set(announced)
    assert {p.name for p in space.PARAMETERS} <= set(table.columns)
    assert table["baseline"].sum() == 1 and set(table["ended"]) <= {"finished", "stopped"}
    assert table["epochs"].between(1, 2).all() and table["best_lwlrap"].between(0, 1).all()
    for trial_id, epochs in zip(table["trial"], table["epochs"]):   # the table is the trials' own record
        assert len(json.loads((trials_dir / trial_id / layout.TRIAL_JSON).read_text())["epochs"]) == epochs
    for trial_id in table["trial"]:
        assert trial_id in out   # the final table, printed
    assert (layout.tune_dir(models) / layout.TUNE_REPORT_PNG).read_bytes().startswith(b"\x89PNG")

    frontend, duration = space.load_frontend(layout.best_frontend_json(models))
    best = table.iloc[0]
    assert (frontend.n_mels, frontend.hop_length, duration) == (best["n_mels"], best["hop_length"], best["duration"])
    assert config.PROFILES["full"].frontend == config.FrontEnd()   # the search changes no profile


def test_a_stage_takes_a_front_end_file_records_it_and_refuses_another(data, tmp_path, monkeypatch, capsys):
    tuned = tmp_path / "best_frontend.json"
    space.save_frontend(tuned, config.FrontEnd(n_mels=32, hop_length=256, f_max=16000.0), 0.75, {"trial": "t"})
    built = []

    def fit(model, train_data, val, schedule, crop, folder, prefix, **kw):   # what was built, not its training
        built.append((model.get_layer("logmel").get_config(), crop))
        return {"best_epoch": 1, "best_val_lrap": 0.0, "epochs_run": 1, "seconds": 0.0}

    monkeypatch.setattr(training, "fit", fit)
    common = ["--data-dir", str(data), "--workers", "1", "--models", "v1mix", "--folds", "0", "--from-scratch"]
    tuned_models, plain_models = tmp_path / "tuned", tmp_path / "plain"
    assert train.main([*common, "--profile", "demo", "--models-dir", str(tuned_models), "--frontend", str(tuned)]) == 0
    logmel, crop = built[-1]
    assert (logmel["n_mels"], logmel["hop_length"], logmel["f_max"], crop) == (32, 256, 16000.0, 33075)
    record = json.loads(layout.run_json(tuned_models).read_text())
    assert record["frontend"]["n_mels"] == 32 and record["profile"]["duration"] == 0.75
    assert train.main([*common, "--models-dir", str(tuned_models)]) == 0   # without it: the recorded one
    assert built[-1][0]["n_mels"] == 32

    assert train.main([*common, "--profile", "demo", "--models-dir", str(plain_models)]) == 0   # the original's
    assert built[-1][0]["n_mels"] == 64
    capsys.readouterr()
    assert cli.call(train.main, [*common, "--models-dir", str(plain_models), "--frontend", str(tuned)]) == 2
    err = capsys.readouterr().err
    assert str(layout.run_json(plain_models)) in err and str(tuned) in err
    assert "frontend.n_mels: recorded 64, given 32" in err and "profile.duration: recorded" in err


def test_a_broken_front_end_file_is_refused_naming_it(tmp_path):
    path = tmp_path / "frontend.json"
    space.save_frontend(path, config.FrontEnd(hop_length=4096), 1.0, {})
    with pytest.raises(cli.BadInput, match=f"{path}: hop_length 4096: not below {path}: n_fft 1024"):
        space.load_frontend(path)
    path.write_text("{not json")
    with pytest.raises(cli.BadInput, match=f"{path}: not a front-end file"):
        space.load_frontend(path)
