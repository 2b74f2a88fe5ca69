"""`train.py --gpus 2` for real, on a tiny dataset and 2 pretend devices (this is a CPU):
the parent hands the folds to 2 worker processes; a fold whose lock another run holds is
skipped with a note naming that run, and a later run picks it up; a fold trained by a
worker leaves the same files as one trained by a sequential `train.py` (weights differ:
compared are which files exist, the finish markers and the gathered history)."""
from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

import features
from fat2019 import layout
from fat2019.util import locks
import pretrain
import train
from helpers import make_dataset

CODE = Path(__file__).resolve().parent.parent / "code"
TINY = ["epochs=1", "n_folds=2", "width=0.0625", "duration=0.5", "lr_milestones=1", "batch_size=8",
        "predict_batch_size=8", "early_stop_min_epoch=0", "lr_multiplier=1"]


def stage_args(data: Path, models: Path) -> list[str]:
    return ["--profile", "demo", "--data-dir", str(data), "--models-dir", str(models), "--models", "v1mix",
            "--workers", "1", "--set", *TINY]


def train_args(data: Path, models: Path) -> list[str]:
    return [*stage_args(data, models), "--from-scratch"]


def train_on_two_devices(data: Path, models: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "TF_CPP_MIN_LOG_LEVEL": "2"}   # no GPU: pretend devices
    return subprocess.run([sys.executable, str(CODE / "train.py"), *train_args(data, models), "--gpus", "2"],
                          capture_output=True, text=True, env=env, cwd=CODE.parent, timeout=600)


def fold_files(folder: Path, k: int) -> list[str]:
    """The files of fold k's run, named as fold K."""
    prefix = layout.fold_prefix(k)
    return sorted(p.name.replace(prefix, "foldK") for p in folder.glob(f"{prefix}.*") if p.suffix != ".log")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    data = make_dataset(tmp_path_factory.mktemp("gpus") / "data", n_curated=10, n_noisy=4, n_test=1)
    assert features.main(["--data-dir", str(data), "--workers", "1", "--sets", "curated", "noisy"]) == 0
    return data


def test_a_stage_skips_the_units_another_run_holds(data, tmp_path, capsys):
    models = tmp_path / "models"
    folder = models / "v1mix"
    held = [layout.lock_path(folder, prefix) for prefix in (layout.PRETRAIN, "fold0", "fold1")]
    with contextlib.ExitStack() as stack:
        assert all(stack.enter_context(locks.try_hold(path)).held for path in held)
        assert pretrain.main(stage_args(data, models)) == 0
        assert train.main(train_args(data, models)) == 0
    out = capsys.readouterr().out
    for unit in ("v1mix: pretraining", "v1mix fold 0:", "v1mix fold 1:"):
        assert f"{unit} held by pid {os.getpid()} on " in out
    assert not any(layout.is_finished(folder, prefix) for prefix in (layout.PRETRAIN, "fold0", "fold1"))
    assert list(folder.iterdir()) == []   # nothing written; the locks went with their holder


def test_two_fold_processes_skip_a_locked_fold_and_leave_what_sequential_training_leaves(data, tmp_path):
    models = tmp_path / "models"
    folder = models / "v1mix"
    # another run holds fold 0: the workers train fold 1 only; fold 0 is skipped naming the holder
    with locks.try_hold(layout.lock_path(folder, layout.fold_prefix(0))) as lock:
        assert lock.held
        run = train_on_two_devices(data, models)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "v1mix fold 1: done" in run.stdout
    assert f"v1mix fold 0: not finished here (v1mix fold 0: held by pid {os.getpid()} " in run.stdout
    assert layout.is_finished(folder, "fold1") and not layout.is_finished(folder, "fold0")
    log = (folder / "fold1.log").read_text()
    assert "fold 1: started on device" in log and "v1mix fold 1 epoch   1/1" in log
    assert pd.read_csv(folder / layout.HISTORY_CSV)["fold"].tolist() == [1]   # the parent gathered

    # the lock let go, a sequential run picks up fold 0 (and only it)
    assert train.main(train_args(data, models)) == 0
    assert all(layout.is_finished(folder, layout.fold_prefix(k)) for k in (0, 1))
    assert fold_files(folder, 1) == fold_files(folder, 0)        # a worker's fold = a sequential fold
    assert not list(folder.glob("*.lock"))
    assert pd.read_csv(folder / layout.HISTORY_CSV)[["fold", "epoch"]].values.tolist() == [[0, 1], [1, 1]]
