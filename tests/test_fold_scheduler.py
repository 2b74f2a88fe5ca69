"""fold_scheduler.py: units of work spread over worker processes, one per (pretend) device.

The scheduler is tested with a fake worker (a few lines of Python that record what they
saw, sleep, and succeed or fail on demand), so it runs in seconds; test_train_gpus.py runs
the real `train.py --gpus 2`."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fat2019.train import fold_scheduler
from fat2019.train.fold_scheduler import Unit
from fat2019.cli import stage_parser

CODE = Path(__file__).resolve().parent.parent / "code"

# The fake worker: argv = out-folder unit-name. Appends what it saw to <unit>.runs, then
# fails if the unit is in $FAKE_FAIL, exits cleanly without finishing if in $FAKE_HELD
# (as a worker that finds its unit locked by another run), else writes <unit>.done.
FAKE_WORKER = """import json, os, sys, time
out, name = sys.argv[1], sys.argv[2]
start = time.time()
open(os.path.join(out, name + ".pid"), "w").write(str(os.getpid()))
time.sleep(float(os.environ.get("FAKE_SLEEP", "0.05")))
with open(os.path.join(out, name + ".runs"), "a") as f:
    f.write(json.dumps({"device": os.environ["CUDA_VISIBLE_DEVICES"], "pid": os.getpid(), "start": start,
                        "end": time.time(), "threads": os.environ["TF_NUM_INTRAOP_THREADS"]}) + "\\n")
print(name, "epoch 1 of 1")
if name in os.environ.get("FAKE_FAIL", "").split(","):
    print("Traceback: the loss of", name, "is nan", file=sys.stderr)
    sys.exit(3)
if name in os.environ.get("FAKE_HELD", "").split(","):
    print(name + ": held by pid 999 on elsewhere; skipped")
    print("report written")
    sys.exit(0)
open(os.path.join(out, name + ".done"), "w").close()
"""


def fake_units(out: Path, n: int) -> list[Unit]:
    script = out / "fake_worker.py"
    script.write_text(FAKE_WORKER)
    return [Unit(f"fold {k}", [sys.executable, str(script), str(out), f"fold{k}"], out / f"fold{k}.log",
                 (out / f"fold{k}.done").exists) for k in range(n)]


def runs_of(out: Path, k: int) -> list[dict]:
    path = out / f"fold{k}.runs"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.is_file() else []


def test_every_unit_runs_once_each_worker_on_its_own_device(tmp_path, monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(6)))
    outcome = fold_scheduler.run(fake_units(tmp_path, 10), ["0", "1", "2"], poll_s=0.01)
    assert sorted(outcome.done) == sorted(f"fold {k}" for k in range(10))
    assert outcome.failed == [] and outcome.skipped == []
    runs = {k: runs_of(tmp_path, k) for k in range(10)}
    assert all(len(r) == 1 for r in runs.values()), "a unit ran twice or never"
    for k, (run,) in runs.items():
        assert run["device"] == outcome.device[f"fold {k}"]   # the worker saw the device it was given
        assert run["threads"] == "2"                          # 6 cores / 3 workers
    assert {run["device"] for (run,) in runs.values()} == {"0", "1", "2"}
    for device in "012":    # never two workers on one device at once
        spans = sorted((r["start"], r["end"]) for (r,) in runs.values() if r["device"] == device)
        assert all(end <= next_start for (_, end), (next_start, _) in zip(spans, spans[1:]))
    log = (tmp_path / "fold4.log").read_text()
    assert "fold 4: started on device" in log and "fold4 epoch 1 of 1" in log and "exit code 0" in log


def test_a_failed_unit_is_reported_with_its_log_tail_while_the_others_finish(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("FAKE_FAIL", "fold2")
    outcome = fold_scheduler.run(fake_units(tmp_path, 5), ["0", "1"], poll_s=0.01)
    assert outcome.failed == ["fold 2"]
    assert sorted(outcome.done) == ["fold 0", "fold 1", "fold 3", "fold 4"]
    err = capsys.readouterr().err
    assert "fold 2: FAILED (exit code 3)" in err and str(tmp_path / "fold2.log") in err
    assert "the loss of fold2 is nan" in err                  # the tail of its log


def test_a_rerun_runs_only_what_is_missing(tmp_path, monkeypatch, capsys):
    units = fake_units(tmp_path, 5)
    monkeypatch.setenv("FAKE_FAIL", "fold2")
    fold_scheduler.run(units, ["0", "1"], poll_s=0.01)
    monkeypatch.delenv("FAKE_FAIL")
    capsys.readouterr()
    outcome = fold_scheduler.run(units, ["0", "1"], poll_s=0.01)
    assert outcome.done == ["fold 2"] and outcome.failed == []
    assert sorted(outcome.skipped) == ["fold 0", "fold 1", "fold 3", "fold 4"]
    assert [len(runs_of(tmp_path, k)) for k in range(5)] == [1, 1, 2, 1, 1]
    assert "fold 0: finished, skipped" in capsys.readouterr().out
    # the log keeps both attempts; the failure report only showed the first one's
    assert (tmp_path / "fold2.log").read_text().count("started on device") == 2


def test_a_unit_held_by_another_run_is_skipped_with_its_note(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("FAKE_HELD", "fold1")
    outcome = fold_scheduler.run(fake_units(tmp_path, 3), ["0", "1"], poll_s=0.01)
    assert outcome.skipped == ["fold 1"] and outcome.failed == [] and sorted(outcome.done) == ["fold 0", "fold 2"]
    assert "held by pid 999 on elsewhere" in capsys.readouterr().out


def test_gpus_names_the_devices(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "4,5,6")
    assert fold_scheduler.devices("2") == ["4", "5"]          # the first N of the visible ones
    assert fold_scheduler.devices("auto") == ["4", "5", "6"]
    with pytest.raises(SystemExit, match="only 3 GPU"):
        fold_scheduler.devices("4")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")            # no GPU: pretend devices, no CUDA names
    assert fold_scheduler.devices("3") == ["cpu0", "cpu1", "cpu2"]
    assert fold_scheduler.devices("auto") == ["cpu0"]         # one process: no scheduling
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1,-1,2")      # CUDA stops at the invalid entry
    assert fold_scheduler.devices("auto") == ["1"]
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    monkeypatch.setattr(fold_scheduler.shutil, "which", lambda name: None)   # no NVIDIA driver
    assert fold_scheduler.devices("2") == ["cpu0", "cpu1"]
    for bad in ("0", "two"):
        with pytest.raises(SystemExit, match="--gpus"):
            fold_scheduler.devices(bad)


def test_a_worker_gets_the_parents_arguments_for_one_unit():
    parser = stage_parser("test", trains=True)
    fold_scheduler.add_gpus_arg(parser)
    parent = ["--models", "v1mix", "se", "--folds", "0", "1", "2", "--gpus", "2", "--set", "epochs=2", "--force"]
    command = fold_scheduler.worker_command("train.py", parent, "--models", "se", "--folds", "2")
    assert command[:2] == [sys.executable, "train.py"]
    args = parser.parse_args(command[2:])
    assert (args.models, args.folds, args.gpus) == (["se"], [2], "1")
    assert (args.overrides, args.force) == (["epochs=2"], True)


def test_workers_share_the_cores_unless_told_otherwise(monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(2)))
    monkeypatch.setenv("OMP_NUM_THREADS", "7")
    monkeypatch.delenv("TF_NUM_INTRAOP_THREADS", raising=False)
    env = fold_scheduler.worker_env("1", 2)
    assert env["CUDA_VISIBLE_DEVICES"] == "1" and env["TF_NUM_INTRAOP_THREADS"] == "1"
    assert env["OMP_NUM_THREADS"] == "7"
    assert fold_scheduler.worker_env("0", 4)["TF_NUM_INTEROP_THREADS"] == "1"   # never 0


def test_pretend_devices_keep_the_default_thread_pools(monkeypatch):
    """On the CPU the thread count changes the sums' order: a worker with the defaults
    trains its fold bit-identically to a one-process run."""
    for name in fold_scheduler.THREAD_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    env = fold_scheduler.worker_env("cpu1", 2)
    assert env["CUDA_VISIBLE_DEVICES"] == "cpu1"
    assert not any(name in env for name in fold_scheduler.THREAD_VARIABLES)


# a parent running the fake units, as a stage script does (SIGTERM -> shutdown.Terminated)
PARENT = """import sys, pathlib, shutdown, fold_scheduler
out = pathlib.Path(sys.argv[1])
units = [fold_scheduler.Unit(f"fold {k}", [sys.executable, str(out / "fake_worker.py"), str(out), f"fold{k}"],
                             out / f"fold{k}.log", (out / f"fold{k}.done").exists) for k in range(3)]
shutdown.install()
fold_scheduler.run(units, ["0", "1"], poll_s=0.01)
"""


def test_a_terminated_parent_stops_its_workers(tmp_path, monkeypatch):
    fake_units(tmp_path, 3)                       # writes the fake worker
    monkeypatch.setenv("FAKE_SLEEP", "120")
    parent = subprocess.Popen([sys.executable, "-c", PARENT, str(tmp_path)], cwd=CODE)
    pid_files = [tmp_path / "fold0.pid", tmp_path / "fold1.pid"]
    deadline = time.monotonic() + 60
    while not all(p.is_file() and p.read_text() for p in pid_files):
        assert time.monotonic() < deadline and parent.poll() is None, "the workers never started"
        time.sleep(0.02)
    parent.send_signal(signal.SIGTERM)
    assert parent.wait(timeout=60) == 128 + signal.SIGTERM
    for path in pid_files:                        # the parent waited for them: gone, not orphaned
        with pytest.raises(ProcessLookupError):
            os.kill(int(path.read_text()), 0)
    assert not (tmp_path / "fold2.pid").exists()  # and started nothing more
