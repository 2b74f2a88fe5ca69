"""Killing a real training run loses nothing: `code/train.py` in a subprocess, on a tiny
dataset with a tiny profile, is SIGKILLed mid-fold, rerun, SIGTERMed mid-fold, and rerun
to the end. After each kill no file that a later stage reads is half-written; each rerun
continues where the killed one stopped (finished folds skipped, an unfinished fold resumed
at its next epoch) and the last one ends with every artifact.

"Mid-fold" is detected by polling for the per-epoch commit point (`fold<k>.state.json`,
renamed into place after the epoch's files are staged), not by sleeping. (Kills at each
write point of an epoch end: test_faults.py.)

And the killed-and-resumed folds are the same models as an uninterrupted run's (run in this
process): identical history.csv and identical weights (issue: reproducible whatever happens).
"""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import h5py
import pandas as pd
import pytest

import features
from helpers import assert_same_weights, make_dataset

CODE = Path(__file__).resolve().parent.parent / "code"
EPOCHS = 2
TINY = [f"epochs={EPOCHS}", "n_folds=2", "width=0.0625", "duration=0.5", "lr_milestones=1", "batch_size=8",
        "predict_batch_size=8", "early_stop_min_epoch=0", "early_stop_patience=10", "lr_multiplier=1"]
START_LIMIT_S = 180      # generous: TensorFlow's import and the first trace on a loaded 2-core CI box


def start(cmd: list[str], log: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": ""}
    return subprocess.Popen(cmd, stdout=open(log.with_suffix(".out"), "w"), stderr=open(log.with_suffix(".err"), "w"),
                            env=env, cwd=CODE.parent)


def output(log: Path) -> tuple[str, str]:
    return log.with_suffix(".out").read_text(), log.with_suffix(".err").read_text()


def kill_when(cmd: list[str], checkpoint: Path, sig: int, log: Path) -> dict:
    """Start `cmd`, send `sig` as soon as `checkpoint` exists, and wait for the process."""
    proc = start(cmd, log)
    deadline = time.monotonic() + START_LIMIT_S
    while not checkpoint.exists():
        if proc.poll() is not None:
            pytest.fail(f"training ended (rc {proc.returncode}) before {checkpoint.name} appeared:\n"
                        + "\n".join(output(log)))
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"no {checkpoint.name} after {START_LIMIT_S} s")
        time.sleep(0.02)
    proc.send_signal(sig)
    rc = proc.wait(timeout=60)
    out, err = output(log)
    return {"rc": rc, "out": out, "err": err}


def inspect(folder: Path) -> dict:
    """What a later stage (or a rerun) would find in a model folder, read the way it reads it."""
    found = {"files": sorted(p.name for p in folder.iterdir() if p.is_file()),
             "temporaries": sorted(p.name for p in folder.iterdir() if "tmp" in p.name), "folds": {}}
    for k in range(2):
        fold = {"finished": (folder / f"fold{k}.json").is_file(),
                "weights": (folder / f"fold{k}.weights.h5").is_file()}
        if fold["weights"]:
            with h5py.File(folder / f"fold{k}.weights.h5", "r") as f:   # a complete HDF5 file
                fold["weight_groups"] = len(f.keys())
        state = folder / f"fold{k}.state.json"
        fold["state"] = json.loads(state.read_text()) if state.is_file() else None
        last = folder / f"fold{k}.last.keras"
        # killed between the commit and the checkpoint's rename: the state names it staged
        staged = [m["from"] for m in (fold["state"] or {}).get("publish", []) if m["to"] == last.name]
        if staged and (folder / staged[0]).is_file():
            last = folder / staged[0]
        fold["checkpoint_ok"] = None
        if last.is_file():                                               # a complete archive
            with zipfile.ZipFile(last) as archive:
                fold["checkpoint_ok"] = archive.testzip() is None
        history = folder / f"fold{k}.history.csv"
        fold["history"] = pd.read_csv(history)["epoch"].tolist() if history.is_file() else []
        found["folds"][k] = fold
    return found


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("kill")
    data = make_dataset(root / "data", n_curated=10, n_noisy=0, n_test=1)
    assert features.main(["--data-dir", str(data), "--workers", "1", "--sets", "curated"]) == 0
    models = root / "models"
    folder = models / "v1mix"
    args = ["--profile", "demo", "--data-dir", str(data), "--models", "v1mix", "--from-scratch", "--workers", "1",
            "--set", *TINY]
    cmd = [sys.executable, str(CODE / "train.py"), "--models-dir", str(models), *args]
    phases = {}
    phases["sigkill"] = kill_when(cmd, folder / "fold0.state.json", signal.SIGKILL, root / "run1")
    phases["sigkill"]["after"] = inspect(folder)
    phases["sigterm"] = kill_when(cmd, folder / "fold1.state.json", signal.SIGTERM, root / "run2")
    phases["sigterm"]["after"] = inspect(folder)
    proc = start(cmd, root / "run3")
    rc = proc.wait(timeout=START_LIMIT_S + 120)
    out, err = output(root / "run3")
    phases["final"] = {"rc": rc, "out": out, "err": err, "after": inspect(folder)}
    phases["models"] = models
    phases["uninterrupted"] = root / "uninterrupted"
    import train
    assert train.main(["--models-dir", str(root / "uninterrupted"), *args]) == 0
    return phases


def assert_consistent(fold: dict) -> None:
    """No half state: a finished marker has its weights; a state file names a complete
    checkpoint archive; the history lists epochs 1..n once each, n = the epochs committed
    (or one fewer: the kill came after the commit, before the history's rename, which the
    resume completes)."""
    if fold["finished"]:
        assert fold["weights"]
    state = fold["state"]
    if state is not None:
        assert fold["checkpoint_ok"], "a state file without a complete checkpoint"
        done = state["next_epoch"]
        assert [h["epoch"] for h in state["history"]] == list(range(1, done + 1))
        assert fold["history"] in (list(range(1, done + 1)), list(range(1, done)))
    else:
        assert fold["history"] == list(range(1, len(fold["history"]) + 1))


def test_sigkill_mid_fold_leaves_no_half_written_file(runs):
    phase = runs["sigkill"]
    assert phase["rc"] == -signal.SIGKILL
    after = phase["after"]
    for fold in after["folds"].values():
        assert_consistent(fold)
    fold0 = after["folds"][0]
    assert fold0["state"] is not None and not fold0["finished"]
    # a temp file may survive a SIGKILL mid-write, but never under a name a stage reads
    assert all(re.search(r"\.tmp\d*(\.|$)", name) for name in after["temporaries"])


def test_rerun_after_sigkill_resumes_at_the_next_epoch(runs):
    done = runs["sigkill"]["after"]["folds"][0]["state"]["next_epoch"]
    assert f"v1mix fold 0: resuming at epoch {done + 1}" in runs["sigterm"]["out"]
    assert "v1mix fold 0 epoch   1/" not in runs["sigterm"]["out"]


def test_sigterm_exits_cleanly_between_writes(runs):
    phase = runs["sigterm"]
    assert phase["rc"] == 128 + signal.SIGTERM
    assert "terminated (SIGTERM)" in phase["err"] and "Traceback" not in phase["err"]
    after = phase["after"]
    assert after["temporaries"] == []
    fold0, fold1 = after["folds"][0], after["folds"][1]
    assert fold0["finished"] and fold0["state"] is None and fold0["history"] == list(range(1, EPOCHS + 1))
    assert fold1["state"] is not None and not fold1["finished"]
    for fold in (fold0, fold1):
        assert_consistent(fold)


def test_rerun_after_sigterm_skips_the_finished_fold_and_resumes(runs):
    phase = runs["final"]
    assert phase["rc"] == 0, phase["err"]
    done = runs["sigterm"]["after"]["folds"][1]["state"]["next_epoch"]
    assert "v1mix fold 0: finished, skipped" in phase["out"]
    assert f"v1mix fold 1: resuming at epoch {done + 1}" in phase["out"]
    assert "v1mix fold 0 epoch" not in phase["out"]


def test_the_last_run_ends_with_every_artifact(runs):
    after = runs["final"]["after"]
    assert after["temporaries"] == []
    for k in (0, 1):
        fold = after["folds"][k]
        assert fold["finished"] and fold["weights"] and fold["weight_groups"] > 0
        assert fold["state"] is None and fold["checkpoint_ok"] is None
        assert fold["history"] == list(range(1, EPOCHS + 1))
    history = pd.read_csv(runs["models"] / "v1mix" / "history.csv")
    assert history.groupby("fold")["epoch"].apply(list).to_dict() == {k: list(range(1, EPOCHS + 1)) for k in (0, 1)}
    assert (runs["models"] / "folds.csv").is_file()


# --- the SIGTERM handler itself, in this process ------------------------------------------------

@pytest.fixture
def sigterm_handler():
    from fat2019.util import shutdown
    previous = signal.getsignal(signal.SIGTERM)
    shutdown.install()
    try:
        yield shutdown
    finally:
        signal.signal(signal.SIGTERM, previous)


def test_sigterm_outside_a_write_exits_at_once(sigterm_handler):
    reached = []
    with pytest.raises(sigterm_handler.Terminated) as exit_info:
        os.kill(os.getpid(), signal.SIGTERM)
        for _ in range(1000):       # the handler runs at the next bytecode boundaries
            time.sleep(0.001)
        reached.append("after")
    assert exit_info.value.code == 128 + signal.SIGTERM and reached == []


def test_sigterm_during_a_write_waits_for_it(sigterm_handler, tmp_path):
    from fat2019.util.atomic import atomic_write_text
    written = []
    with pytest.raises(sigterm_handler.Terminated):
        with sigterm_handler.critical():
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.05)
            atomic_write_text(tmp_path / "a.csv", "x\n")   # nested critical block: still deferred
            written.append("a")
            atomic_write_text(tmp_path / "b.csv", "y\n")
            written.append("b")
    assert written == ["a", "b"] and (tmp_path / "b.csv").read_text() == "y\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.csv", "b.csv"]


# --- killed and resumed = never killed ----------------------------------------------------------


def test_killed_and_resumed_folds_equal_an_uninterrupted_run(runs):
    killed, whole = runs["models"] / "v1mix", runs["uninterrupted"] / "v1mix"
    for k in (0, 1):
        assert (killed / f"fold{k}.history.csv").read_text() == (whole / f"fold{k}.history.csv").read_text()
        assert_same_weights(killed / f"fold{k}.weights.h5", whole / f"fold{k}.weights.h5")
