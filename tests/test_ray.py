"""ray_scheduler.py on real Ray nodes on this machine (ray.cluster_utils.Cluster: a head
without GPUs, node A with 2 logical GPUs, node B with 1), all on 127.0.0.1.

The scheduling itself is tested with a fake unit (a few lines of Python that record what
they saw, sleep, and succeed or fail as a control file says), so it runs in seconds; the
real stages run in three tests: a node lost in the middle of a fold (`train.py --cluster`,
compared with the same folds trained in this process), `train.py --gpus 2` under JAX with
TensorFlow unimportable (issue 18), and a fold that another run holds."""
from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import signal
import subprocess
import sys
import re
import time
from pathlib import Path

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")   # before Ray is imported: loopback only

import numpy as np
import pandas as pd
import pytest

import features
import pretrain
import train
from fat2019 import layout
from fat2019.engine import ray_scheduler, training
from fat2019.engine.ray_scheduler import Plan, Unit
from fat2019.cli import stage_parser
from fat2019.util import locks
from helpers import assert_same_weights, make_dataset

CODE = Path(__file__).resolve().parent.parent / "code"
TINY = ["n_folds=2", "width=0.0625", "duration=0.5", "lr_milestones=1", "batch_size=8", "predict_batch_size=8",
        "early_stop_min_epoch=0", "early_stop_patience=10", "lr_multiplier=1"]
NODE_GPUS = {"A": 2, "B": 1}   # besides the head, which has none
LIMIT_S = 900   # a real stage on this loaded 2-core machine: TensorFlow's import and first trace per unit


@pytest.fixture(scope="module")
def cluster():
    from ray.cluster_utils import Cluster
    cluster = Cluster(initialize_head=True, head_node_args=dict(
        num_cpus=1, num_gpus=0, include_dashboard=False,
        # a lost node is noticed in a few seconds, not ~30
        _system_config={"health_check_period_ms": 500, "health_check_failure_threshold": 4}))
    nodes = {name: cluster.add_node(num_cpus=1, num_gpus=n) for name, n in NODE_GPUS.items()}
    yield cluster, nodes
    cluster.shutdown()


@pytest.fixture
def no_backend_hiding(monkeypatch):
    """This process is the fake units' driver; it must not hide this process's GPUs from later tests."""
    monkeypatch.setattr(ray_scheduler, "keep_driver_off_the_gpus", lambda: None)


# --- the fake unit --------------------------------------------------------------------------

# argv = out-folder unit-name. Reads <out>/control.json: {"sleep": s, "fail": [...], "held": [...]}.
# Appends what it saw to <unit>.runs, then fails, exits cleanly without finishing (as a unit
# held by another run), or writes <unit>.done.
FAKE_UNIT = """import json, os, sys, time
out, name = sys.argv[1], sys.argv[2]
control = json.load(open(os.path.join(out, "control.json")))
start = time.time()
open(os.path.join(out, name + ".pid"), "w").write(str(os.getpid()))
time.sleep(control.get("sleep", 0.05))
with open(os.path.join(out, name + ".runs"), "a") as f:
    f.write(json.dumps({"gpu": os.environ["CUDA_VISIBLE_DEVICES"], "start": start, "end": time.time(),
                        "omp": os.environ.get("OMP_NUM_THREADS"), "nice": os.getpriority(os.PRIO_PROCESS, 0)}) + "\\n")
print(name, "epoch 1 of 1")
if name in control.get("fail", []):
    print("Traceback: the loss of", name, "is nan", file=sys.stderr)
    sys.exit(3)
if name in control.get("held", []):
    print(name + ": held by pid 999 on elsewhere; skipped")
    sys.exit(0)
open(os.path.join(out, name + ".done"), "w").close()
"""


def fake_units(out: Path, n: int, **control) -> list[Unit]:
    (out / "fake_unit.py").write_text(FAKE_UNIT)
    set_control(out, **control)
    return [Unit(f"fold {k}", [sys.executable, str(out / "fake_unit.py"), str(out), f"fold{k}"], out / f"fold{k}.log",
                 (out / f"fold{k}.done").exists, needs=(out,)) for k in range(n)]


def set_control(out: Path, **control) -> None:
    (out / "control.json").write_text(json.dumps(control))


def runs_of(out: Path, k: int) -> list[dict]:
    path = out / f"fold{k}.runs"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.is_file() else []


# --- addresses ------------------------------------------------------------------------------

def listening_addresses(pids: set[int]) -> set[str]:
    """The local addresses of the TCP sockets that processes `pids` listen on (/proc)."""
    inodes = set()
    for pid in pids:
        with contextlib.suppress(OSError):
            for fd in os.listdir(f"/proc/{pid}/fd"):
                with contextlib.suppress(OSError):
                    target = os.readlink(f"/proc/{pid}/fd/{fd}")
                    if target.startswith("socket:["):
                        inodes.add(target[8:-1])
    found = set()
    for table, v6 in (("/proc/net/tcp", False), ("/proc/net/tcp6", True)):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and fields[9] in inodes:   # 0A: LISTEN
                raw = bytes.fromhex(fields[1].split(":")[0])
                words = [raw[i:i + 4][::-1] for i in range(0, len(raw), 4)]   # each 32-bit word is little-endian
                ip = b"".join(words)
                found.add(str(__import__("ipaddress").ip_address(ip)))
    return found


def descendants(root: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError):
                ppid = int(Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[1])
                children.setdefault(ppid, []).append(int(entry))
    found, todo = set(), [root]
    while todo:
        for child in children.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return found


def test_every_ray_address_is_on_loopback(cluster):
    import ray
    c, _ = cluster
    assert c.address.startswith("127.0.0.1:")
    ray.init(address=c.address, log_to_driver=False)
    try:
        assert {n["NodeManagerAddress"] for n in ray.nodes()} == {"127.0.0.1"}
        assert len(ray.nodes()) == 3
    finally:
        ray.shutdown()
    addresses = listening_addresses(descendants(os.getpid()))
    assert addresses, "found none of the cluster's listening sockets"
    assert addresses <= {"127.0.0.1", "::ffff:7f00:1"}, addresses


# --- scheduling, with fake units --------------------------------------------------------------

def test_each_unit_sees_one_gpu_never_one_another_uses_and_units_queue(cluster, tmp_path, no_backend_hiding):
    c, _ = cluster
    units = fake_units(tmp_path, 6, sleep=1.5)
    outcome = ray_scheduler.run(units, Plan(address=c.address), "test")
    assert sorted(outcome.done) == [f"fold {k}" for k in range(6)] and outcome.failed == []
    runs = {k: runs_of(tmp_path, k) for k in range(6)}
    assert all(len(r) == 1 for r in runs.values()), "a unit ran twice or never"
    spans, pinning = [], {}
    for k, (run,) in runs.items():
        (header,) = [line for line in (tmp_path / f"fold{k}.log").read_text().splitlines()
                     if line.startswith(ray_scheduler.HEADER)]
        node, gpu = (part.split(" ", 1)[1] for part in ray_scheduler.where(header).split(", "))
        assert run["gpu"] == gpu and run["gpu"].isdigit()               # exactly one GPU, the task's
        assert run["omp"] == os.environ.get("OMP_NUM_THREADS")          # the driver's, not Ray's
        assert run["nice"] == os.getpriority(os.PRIO_PROCESS, 0)        # the driver's, not Ray's 15
        spans.append((node, run["gpu"], run["start"], run["end"]))
        pinning[f"fold {k}"] = (node, gpu)
    for i, (node, gpu, start, end) in enumerate(spans):
        for other_node, other_gpu, other_start, other_end in spans[i + 1:]:
            if node == other_node and start < other_end and other_start < end:
                assert gpu != other_gpu, f"two units at once on GPU {gpu} of node {node}"
    # 6 units, 3 GPUs: at most 3 at a time, the others queued
    events = sorted([(s, 1) for _, _, s, _ in spans] + [(e, -1) for _, _, _, e in spans])
    assert max(np.cumsum([d for _, d in events])) <= 3
    print("pinning:", sorted(pinning.items()))


def test_a_failed_unit_is_reported_with_its_log_tail_the_others_finish_and_a_rerun_does_the_rest(
        cluster, tmp_path, capsys, no_backend_hiding):
    c, _ = cluster
    units = fake_units(tmp_path, 4, fail=["fold2"], held=["fold1"])
    outcome = ray_scheduler.run(units, Plan(address=c.address), "test")
    assert outcome.failed == ["fold 2"] and outcome.held == ["fold 1"]   # held by another run: never done
    assert sorted(outcome.done) == ["fold 0", "fold 3"]
    assert ray_scheduler.exit_code(outcome) == 1
    out, err = capsys.readouterr()
    assert "fold 2: FAILED (exit code 3)" in err and str(tmp_path / "fold2.log") in err
    assert "the loss of fold2 is nan" in err                          # the tail of its log
    assert "1 unit(s) failed: fold 2" in err and "1 unit(s) not finished: fold 1" in err
    assert "fold 1: NOT FINISHED (fold1: held by pid 999 on elsewhere; skipped)" in err
    # the whole job's progress: the held unit is not this run's work, the failed one is not done
    assert re.search(r"^test: 2/[34] units done, 1 failed \(last: ", out, re.M) and "4/4 units done" not in out

    set_control(tmp_path)                                             # fixed, and the holder gone
    outcome = ray_scheduler.run(units, Plan(address=c.address), "test")
    assert sorted(outcome.done) == ["fold 1", "fold 2"] and outcome.failed == []
    assert [len(runs_of(tmp_path, k)) for k in range(4)] == [1, 2, 2, 1]
    assert "fold 0: finished, skipped" in capsys.readouterr().out
    log = (tmp_path / "fold2.log").read_text()
    assert log.count(ray_scheduler.HEADER) == 2 and "exit code 3" in log and "exit code 0" in log


def test_a_node_without_the_shared_folders_fails_at_once_naming_itself(cluster, tmp_path, capsys,
                                                                       no_backend_hiding):
    c, _ = cluster
    (unit,) = fake_units(tmp_path, 1)
    unit.needs = (tmp_path / "features",)
    outcome = ray_scheduler.run([unit], Plan(address=c.address), "test")
    assert outcome.failed == ["fold 0"] and runs_of(tmp_path, 0) == []   # it never ran the unit
    err = capsys.readouterr().err
    assert f"node 127.0.0.1 " in err and f"{tmp_path / 'features'} does not exist there" in err


# a driver of fake units on the cluster, killed by the test
DRIVER = """import sys, pathlib
sys.path.insert(0, {code!r})
from fat2019.engine import ray_scheduler, training
out = pathlib.Path(sys.argv[1])
units = [ray_scheduler.Unit(f"fold {{k}}", [sys.executable, str(out / "fake_unit.py"), str(out), f"fold{{k}}"],
                            out / f"fold{{k}}.log", (out / f"fold{{k}}.done").exists) for k in range(3)]
ray_scheduler.run(units, ray_scheduler.Plan(address=sys.argv[2]), "test")
"""


def test_a_killed_driver_leaves_no_unit_running_and_a_rerun_does_only_what_is_missing(cluster, tmp_path,
                                                                                       no_backend_hiding):
    c, _ = cluster
    fake_units(tmp_path, 3, sleep=300)
    (tmp_path / "fold0.done").touch()                # done before: never run again
    script = DRIVER.format(code=str(CODE))
    driver = subprocess.Popen([sys.executable, "-c", script, str(tmp_path), c.address])
    pid_files = [tmp_path / "fold1.pid", tmp_path / "fold2.pid"]
    deadline = time.monotonic() + 120
    while not all(p.is_file() and p.read_text() for p in pid_files):
        assert time.monotonic() < deadline and driver.poll() is None, "the units never started"
        time.sleep(0.1)
    driver.kill()
    driver.wait()
    for path in pid_files:                           # the units went with their driver: no orphans
        pid, deadline = int(path.read_text()), time.monotonic() + 60
        while Path(f"/proc/{pid}").exists() and "zombie" not in Path(f"/proc/{pid}/status").read_text():
            assert time.monotonic() < deadline, f"unit {path.stem} (pid {pid}) outlived its driver"
            time.sleep(0.1)
    units = fake_units(tmp_path, 3, sleep=0.05)
    outcome = ray_scheduler.run(units, Plan(address=c.address), "test")
    assert outcome.already_finished == ["fold 0"] and sorted(outcome.done) == ["fold 1", "fold 2"]
    assert runs_of(tmp_path, 0) == []


# --- options --------------------------------------------------------------------------------

def test_a_unit_gets_the_drivers_options_as_parsed_without_the_scheduling_ones_nor_force(capsys):
    parser = stage_parser("test", trains=True)
    ray_scheduler.add_args(parser)
    args = parser.parse_args(["--models", "v1mix", "se", "--gpus", "2", "--folds", "0", "1", "--set", "epochs=2",
                              "--force", "--strategy=default", "--workers", "1", "--models-dir", "m"])
    options = ray_scheduler.unit_options(parser, args)
    assert options == ["--models-dir", str(Path("m").resolve()), "--set", "epochs=2", "--workers", "1"]
    unit = ray_scheduler.stage_unit("se fold 1", "train.py", options, "se", 1, Path("log"), lambda: False)
    args = parser.parse_args(unit.command[2:])
    assert (args.models, args.folds, args.gpus, args.cluster, args.force) == (["se"], [1], None, None, False)
    assert (args.overrides, args.workers) == (["epochs=2"], 1)
    # a prefix of an option is no option: it would pass as another and reach the units (issue 27, point 5)
    for abbreviated in (["--gpu", "4"], ["--clus", "auto"], ["--forc"]):
        with pytest.raises(SystemExit) as exit_info:
            parser.parse_args(abbreviated)
        assert exit_info.value.code == 2 and "unrecognized arguments" in capsys.readouterr().err


def test_the_plan_of_the_options(monkeypatch, capsys):
    parser = stage_parser("test", trains=True)
    ray_scheduler.add_args(parser)

    def plan(*argv):
        return ray_scheduler.plan(parser, parser.parse_args(list(argv)))

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "4,5,6")
    assert plan() is None and plan("--gpus", "1") is None         # one GPU: in this process, no Ray
    assert plan("--gpus", "2") == Plan(gpus=2) and plan("--gpus", "auto") == Plan(gpus=3)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")                # no GPU: pretend ones
    assert plan("--gpus", "3") == Plan(gpus=3, pretend=True)
    assert plan("--cluster", "auto") == Plan(address="auto")
    monkeypatch.setenv("RAY_ADDRESS", "10.0.0.1:6379")
    assert plan("--cluster") == Plan(address="10.0.0.1:6379")
    monkeypatch.delenv("RAY_ADDRESS")
    for bad, why in ((["--cluster"], "RAY_ADDRESS"), (["--gpus", "2", "--cluster", "auto"], "give one"),
                     (["--gpus", "2", "--strategy", "mirrored"], "leave them out"), (["--gpus", "two"], "number"),
                     (["--gpus", "0"], "at least 1")):
        with pytest.raises(SystemExit) as exit_info:
            plan(*bad)
        assert exit_info.value.code == 2 and why in capsys.readouterr().err
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1,-1,2")          # CUDA stops at the invalid entry
    assert ray_scheduler.visible_gpus() == ["1"]


# --- the real stages --------------------------------------------------------------------------

@pytest.fixture(scope="module")
def data(tmp_path_factory):
    data = make_dataset(tmp_path_factory.mktemp("ray") / "data", n_curated=10, n_noisy=4, n_test=1)
    assert features.main(["--data-dir", str(data), "--workers", "1", "--sets", "curated", "noisy", "test"]) == 0
    return data


def stage_args(data: Path, models: Path, epochs: int) -> list[str]:
    return ["--profile", "demo", "--data-dir", str(data), "--models-dir", str(models), "--models", "v1mix",
            "--workers", "1", "--set", f"epochs={epochs}", *TINY]


def test_a_stage_skips_the_units_another_run_holds(data, tmp_path, capsys):
    models = tmp_path / "models"
    folder = models / "v1mix"
    held = [layout.lock_path(folder, prefix) for prefix in (layout.PRETRAIN, "fold0", "fold1")]
    with contextlib.ExitStack() as stack:
        assert all(stack.enter_context(locks.try_hold(path)).held for path in held)
        assert pretrain.main(stage_args(data, models, 1)) == 0
        assert train.main([*stage_args(data, models, 1), "--from-scratch"]) == 0
    out = capsys.readouterr().out
    for unit in ("v1mix: pretraining", "v1mix fold 0:", "v1mix fold 1:"):
        assert f"{unit} held by pid {os.getpid()} on " in out
    assert not any(layout.is_finished(folder, prefix) for prefix in (layout.PRETRAIN, "fold0", "fold1"))
    assert list(folder.iterdir()) == []   # nothing written; the locks went with their holder



def test_a_node_lost_mid_fold_costs_one_epoch_and_changes_nothing(cluster, data, tmp_path):
    """`train.py --cluster` on 2 folds; the node running a fold is removed as soon as that
    fold has checkpointed an epoch. Ray retries the fold on another node, it resumes from
    its checkpoint, and both folds equal the same folds trained in this process, weight for
    weight, and history.csv row for row."""
    c, nodes = cluster
    epochs = 2
    models = tmp_path / "ray"
    folder = models / "v1mix"
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "TF_CPP_MIN_LOG_LEVEL": "2"}
    out = open(tmp_path / "driver.out", "w")
    driver = subprocess.Popen([sys.executable, str(CODE / "train.py"), *stage_args(data, models, epochs),
                               "--from-scratch", "--cluster", c.address], stdout=out, stderr=subprocess.STDOUT,
                              env=env, cwd=CODE.parent)
    deadline = time.monotonic() + LIMIT_S
    lost = None
    while lost is None:
        assert driver.poll() is None, (tmp_path / "driver.out").read_text()
        assert time.monotonic() < deadline, "no fold checkpointed"
        for k in (0, 1):
            state = layout.run_file(folder, layout.fold_prefix(k), ".state.json")
            if state.is_file() and not layout.is_finished(folder, layout.fold_prefix(k)):
                lost = k
                break
        time.sleep(0.1)
    header = next(line for line in layout.log_path(folder, f"fold{lost}").read_text().splitlines()
                  if line.startswith(ray_scheduler.HEADER))
    node_id = header.split(": started on node 127.0.0.1 ")[1][:8]
    name, node = next((n, v) for n, v in nodes.items() if v.node_id.startswith(node_id))
    checkpointed = json.loads(layout.run_file(folder, f"fold{lost}", ".state.json").read_text())["next_epoch"]
    c.remove_node(node)
    nodes[name] = c.add_node(num_cpus=1, num_gpus=NODE_GPUS[name])   # the fixture's shape back
    assert driver.wait(timeout=LIMIT_S) == 0, (tmp_path / "driver.out").read_text()
    console = (tmp_path / "driver.out").read_text()
    log = layout.log_path(folder, f"fold{lost}").read_text()
    assert log.count(ray_scheduler.HEADER) == 2                      # the lost attempt and the retry
    assert f"v1mix fold {lost}: done in " in console and "Ray ran it again after losing its worker or node)" in console
    resumed = [line for line in log.splitlines() if "resuming at epoch" in line]
    assert resumed and int(resumed[0].rsplit(" ", 1)[1]) >= checkpointed + 1

    reference = tmp_path / "one_process"
    assert train.main([*stage_args(data, reference, epochs), "--from-scratch"]) == 0
    arrays = [assert_same_weights(*(layout.weights_path(m / "v1mix", f"fold{k}") for m in (models, reference)))
              for k in (0, 1)]
    pd.testing.assert_frame_equal(pd.read_csv(folder / layout.HISTORY_CSV),
                                  pd.read_csv(reference / "v1mix" / layout.HISTORY_CSV))
    print(f"node loss: fold {lost} ran on node {name} ({node_id}), removed after epoch {checkpointed}; "
          f"{resumed[0].strip()}; ", "\n".join(line for line in console.splitlines() if "fold" in line),
          f"\nweights of folds 0 and 1 equal the one-process run's ({arrays[0]} arrays each); history.csv equal")


# TensorFlow made unimportable in every process of the run (driver, Ray's workers, the units)
BLOCK_TENSORFLOW = """import sys
class NotInstalled:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "tensorflow":
            raise ModuleNotFoundError(f"No module named {name!r} (blocked by the test)", name=name)
sys.meta_path.insert(0, NotInstalled())
"""


def test_gpus_2_under_jax_without_tensorflow_pins_each_unit_to_its_own_gpu(data, tmp_path):
    """train.py and predict.py --gpus 2 with KERAS_BACKEND=jax and TensorFlow unimportable
    in every process (issue 18: the driver imported TensorFlow to keep off the GPUs)."""
    blocker = tmp_path / "site"
    blocker.mkdir()
    (blocker / "sitecustomize.py").write_text(BLOCK_TENSORFLOW)
    models = tmp_path / "models"
    env = {**os.environ, "KERAS_BACKEND": "jax", "JAX_PLATFORMS": "cpu", "CUDA_VISIBLE_DEVICES": "",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(blocker), os.environ.get("PYTHONPATH")])),
           "XLA_FLAGS": "--xla_backend_optimization_level=0", "TF_CPP_MIN_LOG_LEVEL": "2"}
    check = subprocess.run([sys.executable, "-c", "import tensorflow"], env=env, capture_output=True, text=True)
    assert "blocked by the test" in check.stderr
    run = subprocess.run([sys.executable, str(CODE / "train.py"), *stage_args(data, models, 1), "--from-scratch",
                          "--gpus", "2"], env=env, cwd=CODE.parent, capture_output=True, text=True, timeout=LIMIT_S)
    assert run.returncode == 0, run.stdout + run.stderr
    gpus = []
    for k in (0, 1):
        log = layout.log_path(models / "v1mix", f"fold{k}").read_text()
        assert "blocked by the test" not in log and f"v1mix fold {k} epoch   1/1" in log
        gpus.append(log.split(", GPU ", 1)[1].split(",", 1)[0])
        assert f"GPU {gpus[-1]}] v1mix fold {k}: done" in run.stdout
    assert sorted(gpus) == ["cpu0", "cpu1"]      # one each, never the same (both ran at once)
    assert "train: 2/2 units done" in run.stdout
    run = subprocess.run([sys.executable, str(CODE / "predict.py"), *stage_args(data, models, 1), "--gpus", "2"],
                         env=env, cwd=CODE.parent, capture_output=True, text=True, timeout=LIMIT_S)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "v1mix fold 0 prediction: done" in run.stdout and "v1mix fold 1 prediction: done" in run.stdout
    assert "v1mix: oof.csv and test.csv written (2 folds)" in run.stdout   # gathered by the driver
    print("pinning under JAX without TensorFlow:", dict(zip(("fold 0", "fold 1"), gpus)))


def test_the_driver_reads_only_its_own_submissions_headers_and_each_units_last_epoch(tmp_path):
    log = tmp_path / "fold0.log"
    log.write_text("old run\n")
    start = ray_scheduler.log_size(log)
    with open(log, "a") as f:
        f.write("=== unit 2026-01-01 00:00:00 v1mix fold 0: submission aaa attempt 1: started on node 10.0.0.7 "
                "1f3a9c2e, GPU 1, 0.50 s after submission: python train.py\n")
        f.write("v1mix fold 0 epoch   1/40  lr 1.0e-03  loss 0.2000  val LRAP 0.5000  lwlrap 0.4000  *  9s\n")
        # a prediction appended to the same log, or another driver: another submission id
        f.write("=== unit 2026-01-01 00:00:09 v1mix fold 0 prediction: submission bbb attempt 2: started on node "
                "10.0.0.8 2b3c4d5e, GPU 0, 0.10 s after submission: python predict.py\n")
        f.write("v1mix fold 0 epoch   2/40  lr 1.0e-03  loss 0.1000  val LRAP 0.6000  lwlrap 0.6123     8s\n")
    headers = ray_scheduler.new_headers(log, start, "aaa")
    assert len(headers) == 1 and ray_scheduler.attempt_of(headers[0]) == 1
    assert ray_scheduler.where(headers[0]) == "node 10.0.0.7 1f3a9c2e, GPU 1"
    assert ray_scheduler.new_headers(log, 0, "ccc") == []
    assert ray_scheduler.unit_status(log, start) == "epoch 2/40, val lwlrap 0.6123"
    assert ray_scheduler.unit_status(tmp_path / "none.log", 0) == "starting"


def test_warm_workers_serve_unit_after_unit_bit_exact_and_a_crashed_worker_resumes(data, tmp_path):
    """train.py --gpus 2 (pretend GPUs) on 2 models x 2 folds: two warm workers, each
    serving units one after another, models of both kinds. The worker of the first fold
    to checkpoint an epoch is killed (SIGKILL, as a segfault or the OOM killer would);
    Ray starts a fresh worker and runs the fold again, which resumes. Every fold equals
    the same fold trained in one process, weight for weight."""
    epochs, names = 3, ["v1mix", "se"]
    models = tmp_path / "warm"
    args = [*stage_args(data, models, epochs), "--from-scratch", "--models", *names]
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": ""}
    out = open(tmp_path / "driver.out", "w")
    driver = subprocess.Popen([sys.executable, str(CODE / "train.py"), *args, "--gpus", "2"], stdout=out,
                              stderr=subprocess.STDOUT, env=env, cwd=CODE.parent)
    deadline, crashed = time.monotonic() + LIMIT_S, None
    while crashed is None:
        assert driver.poll() is None, (tmp_path / "driver.out").read_text()
        assert time.monotonic() < deadline, "no fold checkpointed"
        for name in names:
            for k in (0, 1):
                folder = models / name
                if layout.run_file(folder, f"fold{k}", ".state.json").is_file() and not layout.is_finished(folder, f"fold{k}"):
                    crashed = (name, k)
        time.sleep(0.1)
    name, k = crashed
    header = [line for line in layout.log_path(models / name, f"fold{k}").read_text().splitlines()
              if line.startswith(ray_scheduler.HEADER)][-1]
    pid = int(header.split("warm worker pid ")[1].split()[0])
    os.kill(pid, signal.SIGKILL)
    assert driver.wait(timeout=LIMIT_S) == 0, (tmp_path / "driver.out").read_text()
    console = (tmp_path / "driver.out").read_text()
    log = layout.log_path(models / name, f"fold{k}").read_text()
    attempts = [ray_scheduler.attempt_of(h) for h in log.splitlines() if h.startswith(ray_scheduler.HEADER)]
    assert len(attempts) == 2 and attempts[0] == 1 < attempts[1]   # Ray's numbers: tries on the lost worker count
    assert "resuming at epoch" in log
    served = re.findall(r"warm worker pid (\d+), its unit (\d+), (\d+) MiB", console)
    assert len(served) == 4 and any(unit == "2" for _, unit, _ in served), console   # a worker served 2 units
    reference = tmp_path / "one_process"
    run = subprocess.run([sys.executable, str(CODE / "train.py"), *stage_args(data, reference, epochs), "--from-scratch",
                          "--models", *names], env=env, cwd=CODE.parent, capture_output=True, text=True, timeout=LIMIT_S)
    assert run.returncode == 0, run.stdout + run.stderr
    for name in names:
        for k in (0, 1):
            assert_same_weights(*(layout.weights_path(m / name, f"fold{k}") for m in (models, reference)))
    print(f"warm workers: killed worker pid {pid} during {crashed[0]} fold {crashed[1]};",
          "\n".join(line for line in console.splitlines() if "done in" in line or "started" in line))


# stage scripts for a warm worker: an ordinary Python error, then a unit that says what the worker kept
BOOM_STAGE = """def main(argv, built=None):
    raise ValueError("an ordinary error in a unit")
"""
AFTER_STAGE = """import pathlib
def main(argv, built=None):
    pathlib.Path(argv[0]).write_text(str(len(built.models)))
    return 0
"""
# A warm worker's RSS after its 6th unit against its 4th (MiB), once each model was built
# and reused once. Measured on this 2-core CPU (tiny models, TensorFlow), units of folds of
# one size: a model's first reuse adds 30-60 MiB once (its start state is built beside it:
# the allocator's high-water mark); from then on a unit adds 0-3 MiB. Building a model
# adds about 140 MiB, so a unit that left its model, or its traced functions, behind
# would pass the margin. (Folds of other sizes add a trace per new batch shape, bounded:
# Keras relaxes the shapes after the second; the old rebuild-per-unit grew as much.)
RSS_MARGIN_MB = 25


def test_one_warm_worker_builds_each_model_once_same_weights_flat_memory_and_serves_after_an_error(
        data, tmp_path, capsys, no_backend_hiding):
    """Folds 0, 1, 2 (of 5 alike: 8 training clips, 2 validation clips each) of two models,
    alternating, then a unit that raises, then one more, all on ONE warm worker (a local
    Ray with one pretend GPU), in that order. Each model is built by its fold 0 and reused
    by its folds 1 and 2 (their logs say so; the worker reports 2 models built); every fold
    equals the same fold trained in one process, and the reused ones equal the same fold
    trained first in a fresh process; the worker's memory after its 6th unit is within
    RSS_MARGIN_MB of its 4th; the error fails its unit only, and the worker then forgets
    its models and serves the next unit."""
    epochs, names, folds = 2, ["v1mix", "se"], (0, 1, 2)
    models = tmp_path / "warm"
    models.mkdir()

    def args_of(models: Path) -> list[str]:
        return [arg.replace("n_folds=2", "n_folds=5") for arg in stage_args(data, models, epochs)] + ["--from-scratch"]
    options = args_of(models)
    # model=None: no placement by model (next_for), so the worker takes them in this order, the two
    # models alternating: each reuse follows the other model's unit (which set TF's seed)
    units = [dataclasses.replace(ray_scheduler.stage_unit(
                 f"{name} fold {k}", str(CODE / "train.py"), options, name, k, layout.log_path(models / name, f"fold{k}"),
                 lambda name=name, k=k: layout.is_finished(models / name, f"fold{k}"), needs=(models,),
                 lock=layout.lock_path(models / name, f"fold{k}"), record=layout.run_json(models)), model=None)
             for k in folds for name in names]
    for stage, text in (("boom", BOOM_STAGE), ("after", AFTER_STAGE)):
        script = tmp_path / f"{stage}_stage.py"
        script.write_text(text)
        done = tmp_path / f"{stage}.out"
        units.append(Unit(stage, [sys.executable, str(script), str(done)], tmp_path / f"{stage}.log", done.is_file,
                          script=str(script)))
    outcome = ray_scheduler.run(units, Plan(gpus=1, pretend=True), "train")
    assert outcome.failed == ["boom"] and len(outcome.done) == 7, outcome
    # the driver's line per finished unit: its worker, the worker's count of units, memory and built models
    done = {m["label"]: m for m in re.finditer(
        r"\] (?P<label>[\w ]+): done in \d+ s \(warm worker pid (?P<pid>\d+), its unit (?P<unit>\d+), "
        r"(?P<rss>\d+) MiB, (?P<built>\d+) model\(s\) built\)", capsys.readouterr().out)}
    runs = [done[unit.label] for unit in units if unit.label != "boom"]
    print("warm worker RSS after each unit (MiB):", [run["rss"] for run in runs])
    assert len({run["pid"] for run in runs}) == 1 and [int(run["unit"]) for run in runs] == [1, 2, 3, 4, 5, 6, 8]
    assert [int(run["built"]) for run in runs] == [1, 2, 2, 2, 2, 2, 0] and (tmp_path / "after.out").read_text() == "0"
    assert "ValueError: an ordinary error in a unit" in (tmp_path / "boom.log").read_text()
    for name in names:
        logs = [layout.log_path(models / name, f"fold{k}").read_text() for k in folds]
        assert training.REUSED not in logs[0]
        assert all(f"{name} fold {k}: {training.REUSED}" in logs[k] for k in folds[1:])
    assert int(runs[5]["rss"]) <= int(runs[3]["rss"]) + RSS_MARGIN_MB

    one, fresh = tmp_path / "one_process", tmp_path / "fresh"
    assert train.main([*args_of(one), "--models", *names, "--folds", *map(str, folds)]) == 0
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": ""}
    run = subprocess.run([sys.executable, str(CODE / "train.py"), *args_of(fresh), "--models", *names, "--folds", "2"],
                         env=env, cwd=CODE.parent, capture_output=True, text=True, timeout=LIMIT_S)
    assert run.returncode == 0 and training.REUSED not in run.stdout, run.stdout + run.stderr
    for name in names:
        for k, references in ((0, (one,)), (1, (one,)), (2, (one, fresh))):
            for reference in references:
                assert_same_weights(layout.weights_path(models / name, f"fold{k}"),
                                    layout.weights_path(reference / name, f"fold{k}"))


def test_a_free_warm_worker_gets_the_next_unit_of_a_model_it_has_built(tmp_path):
    """next_for: the first queued unit of a model the worker has built, else the head of
    the queue (units without a model, such as fake units, keep the queue's order)."""
    def unit(model, k):
        return (ray_scheduler.stage_unit(f"{model} fold {k}", __file__, [], model, k, tmp_path / "log",
                                         lambda: False), {})
    queue = [unit("v1mix", 2), unit("se", 0), unit("max3exam", 0), unit("se", 1)]
    assert ray_scheduler.next_for(queue, {"se"}) == 1
    assert ray_scheduler.next_for(queue, {"max3exam", "v1mix"}) == 0
    assert ray_scheduler.next_for(queue, {"max3exam"}) == 2
    assert ray_scheduler.next_for(queue, set()) == 0
    assert ray_scheduler.next_for([(Unit("fake", [], tmp_path / "log", lambda: False), {})], {None}) == 0
