"""The cluster recipe of docs/clusters.md, its commands as the page prints them, on
separate hosts of this machine (tests/cluster_hosts.py: network namespaces, each with its
own address, home, temporary folder and environment, sharing the file system).

One cluster serves the module, in the order the tests run: its head alone (no GPU: the
stage exits 2 at once), then a host that does not see the feature cache (the unit fails
naming it; the host is then killed), then two hosts with one GPU each (the recipe; a host
killed mid-fold; a stale lock of the dead host taken over; the backend of the driver, not
the nodes'; SIGTERM of the driver). Last, the SLURM script, with stand-in `srun` and
`scontrol`, on the same hosts.
"""
from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import pandas as pd
import pytest

import features
from cluster_hosts import Hosts, why_no_namespaces
from fat2019 import layout
from fat2019.engine import ray_scheduler
from fat2019.util import locks
from helpers import assert_same_weights, make_dataset

REPO = Path(__file__).resolve().parent.parent
DOCS = REPO / "docs" / "clusters.md"
SHARED = "/shared/fat2019"   # the docs' name for the repository on the shared file system
TINY = ["--profile", "demo", "--models", "v1mix", "--workers", "1", "--from-scratch", "--set", "n_folds=2",
        "width=0.0625", "duration=0.5", "lr_milestones=1", "batch_size=8", "predict_batch_size=8",
        "early_stop_min_epoch=0", "early_stop_patience=10", "lr_multiplier=1"]
# the driver's environment that decides results (sent to every unit); the hosts' keras.json says tensorflow
DRIVER_ENV = {"KERAS_BACKEND": "jax", "JAX_PLATFORMS": "cpu", "XLA_FLAGS": "--xla_backend_optimization_level=0",
              "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONUNBUFFERED": "1"}
LIMIT_S = 900

pytestmark = pytest.mark.skipif(why_no_namespaces() is not None,
                                reason=f"no network namespaces here: {why_no_namespaces()}")


def recipe() -> dict[str, str]:
    """The commands of docs/clusters.md's 'A cluster by hand', as printed (comments cut)."""
    lines = [line.strip().split("  #")[0].strip() for line in DOCS.read_text().splitlines()]
    starts = {"token": "(umask 077; .venv/bin/ray get-auth-token", "export": "export RAY_AUTH_MODE=token",
              "head": ".venv/bin/ray start --head --port", "worker": ".venv/bin/ray start --address HEAD_IP:6379",
              "driver": ".venv/bin/python code/train.py --cluster HEAD_IP:6379"}
    return {name: next(line for line in lines if line.startswith(start)) for name, start in starts.items()}


def slurm_script() -> str:
    text = DOCS.read_text()
    return text[text.index("```sh\n#!/bin/sh") + len("```sh\n"):].split("```", 1)[0]


class Cluster:
    """The module's hosts and what the tests learn of them."""

    def __init__(self, hosts: Hosts, shared: Path):
        self.hosts, self.shared = hosts, shared
        self.steps = recipe()
        self.head_ip = hosts["head"].address
        self.node_of: dict[str, str] = {}   # host name -> its Ray node id

    def text(self, command: str, gpus: int | None = None) -> str:
        """A recipe command for these hosts: the head's address, the shared folder, the host's GPUs."""
        command = command.replace("HEAD_IP", self.head_ip).replace(SHARED, str(self.shared))
        return command if gpus is None else command.replace("--num-gpus 4", f"--num-gpus {gpus}")

    def on(self, name: str, command: str, gpus: int | None = None, hide: Path | None = None, export: bool = True):
        shell = f"{self.text(self.steps['export'])} && {self.text(command, gpus)}" if export else self.text(command)
        done = self.hosts.run(name, shell, hide=hide, timeout=300)
        assert done.returncode == 0, f"{name}: {shell}\n{done.stdout}\n{done.stderr}"
        return done

    def join(self, name: str, gpus: int, hide: Path | None = None) -> None:
        self.on(name, self.steps["worker"], gpus, hide)
        self.node_of[name] = self.node_id(name)

    def node_id(self, name: str) -> str:
        probe = (f"{self.text(self.steps['export'])} && .venv/bin/python -c \"import ray; "
                 f"ray.init(address='{self.head_ip}:6379', log_to_driver=False, logging_level='ERROR'); "
                 f"print([n['NodeID'] for n in ray.nodes() if n['Alive'] and n['NodeManagerAddress'] == "
                 f"'{self.hosts[name].address}'][0])\"")
        done = self.hosts.run("head", probe, timeout=120)
        assert done.returncode == 0, done.stderr
        return done.stdout.split()[-1]

    def driver(self, args: list[str], out: Path, extra: dict | None = None, script: str = "train") -> subprocess.Popen:
        """A stage as the docs run it, on the head, with the recipe's token export."""
        command = self.text(self.steps["driver"]).replace("code/train.py", f"code/{script}.py")
        shell = f"{self.text(self.steps['export'])} && exec {command} {' '.join(args)}"
        return self.hosts.start("head", shell, {**DRIVER_ENV, **(extra or {})}, stdout=open(out, "w"),
                                stderr=subprocess.STDOUT)

    def unit_pids(self) -> dict[str, list[int]]:
        """Per host, the processes that run units: a stage script's, or a warm worker's."""
        found = {}
        for name in self.hosts.hosts:
            pids = []
            for pid in self.hosts.pids(name):
                try:
                    cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
                except OSError:
                    continue
                if (any(part.endswith((b"code/train.py", b"code/predict.py")) for part in cmdline)
                        and b"--cluster" not in cmdline) or cmdline[0].startswith(b"ray::UnitWorker"):
                    pids.append(pid)
            found[name] = pids
        return found


@pytest.fixture(scope="module")
def cluster():
    root = Path(tempfile.mkdtemp(prefix="fh", dir="/tmp"))   # short: Ray's sockets live under each TMPDIR
    shared = root / "shared"
    shared.mkdir()
    with Hosts(root, ["head", "lost", "b", "c"]) as hosts:
        for host in hosts.hosts.values():    # a node's own Keras default, which no unit may take
            (host.home / ".keras").mkdir(parents=True)
            (host.home / ".keras" / "keras.json").write_text(json.dumps({"backend": "tensorflow"}))
        c = Cluster(hosts, shared)
        c.on("head", c.steps["token"], export=False)   # once, before the export (docs)
        assert (shared / "ray_auth_token").stat().st_mode & 0o077 == 0   # only its user may read it
        c.on("head", c.steps["head"], gpus=0)
        yield c
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def data():
    root = Path(tempfile.mkdtemp(prefix="fhdata", dir="/tmp"))
    data = make_dataset(root / "data", n_curated=10, n_noisy=4, n_test=1)
    assert features.main(["--data-dir", str(data), "--workers", "1", "--sets", "curated", "noisy", "test"]) == 0
    yield data
    shutil.rmtree(root, ignore_errors=True)


def stage(data: Path, models: Path, epochs: int, *more: str) -> list[str]:
    return ["--data-dir", str(data), "--models-dir", str(models), *TINY, f"epochs={epochs}", *more]


def finish(driver: subprocess.Popen, out: Path, limit: float = LIMIT_S) -> tuple[int, str]:
    try:
        rc = driver.wait(timeout=limit)
    except subprocess.TimeoutExpired:
        driver.kill()
        raise AssertionError(f"the driver ran past {limit} s:\n{out.read_text()}")
    return rc, out.read_text()



def test_a_cluster_without_gpus_exits_2_at_once_naming_what_it_has(cluster, data, tmp_path):
    began = time.monotonic()
    rc, console = finish(cluster.driver(stage(data, tmp_path / "models", 1), tmp_path / "out"), tmp_path / "out", 120)
    took = time.monotonic() - began
    assert rc == 2, console
    assert f"error: the Ray cluster at {cluster.head_ip}:6379 has no GPU (1 node(s): CPU " in console
    print(f"no GPU: exit {rc} after {took:.0f} s:", [line for line in console.splitlines() if "error" in line])


def test_a_host_without_the_feature_cache_fails_at_once_naming_itself_and_the_path(cluster, data, tmp_path):
    cache = data / "features"
    assert cache.is_dir()
    cluster.join("lost", gpus=1, hide=data)   # the data folder, and the cache in it, hidden on that host
    out = tmp_path / "out"
    rc, console = finish(cluster.driver(stage(data, tmp_path / "models", 1, "--folds", "0"), out), out, 300)
    assert rc == 1, console
    lost = cluster.hosts["lost"].address
    assert re.search(rf"v1mix fold 0: FAILED: Storage: node {lost} \w+ \({cluster.hosts['lost'].namespace}\): "
                     rf"{cache} does not exist there", console)
    assert not (tmp_path / "models" / "v1mix" / "fold0.state.json").exists()   # it trained nothing
    print("no cache:", next(line for line in console.splitlines() if "Storage" in line))
    cluster.hosts.kill("lost")                # its host dies: later units go to the hosts below


@pytest.fixture(scope="module")
def workers(cluster):
    cluster.join("b", gpus=1)
    cluster.join("c", gpus=1)
    return cluster


def hold_as_dead_host(path: Path, node: str) -> int:
    """The lock at `path` held (by this process) with the record of a unit on Ray node `node`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    os.write(fd, json.dumps({"host": "lost", "pid": 4242, "started": "earlier", locks.NODE_FIELD: node}).encode())
    return fd


def test_a_host_killed_mid_fold_costs_one_epoch_and_changes_nothing(workers, data, tmp_path):
    """The recipe's driver, under KERAS_BACKEND=jax on hosts whose keras.json says
    tensorflow, on 2 folds of 3 epochs. Fold 1's lock is held as if by a unit of the dead
    host: the unit takes it over. The host running a fold is killed (every process in its
    namespace) once the fold has checkpointed an epoch; Ray retries the fold on another
    host, it resumes, and both folds equal the same folds trained in one process."""
    c, epochs = workers, 3
    models = tmp_path / "ray"
    folder = models / "v1mix"
    stale = hold_as_dead_host(layout.lock_path(folder, "fold1"), c.node_of["lost"])
    out = tmp_path / "driver.out"
    driver = c.driver(stage(data, models, epochs), out)
    deadline, lost = time.monotonic() + LIMIT_S, None
    while lost is None:
        assert driver.poll() is None, out.read_text()
        assert time.monotonic() < deadline, "no fold checkpointed"
        for k in (0, 1):
            if (layout.run_file(folder, f"fold{k}", ".state.json").is_file()
                    and not layout.is_finished(folder, f"fold{k}")):
                lost = k
                break
        time.sleep(0.1)
    header = next(line for line in layout.log_path(folder, f"fold{lost}").read_text().splitlines()
                  if line.startswith(ray_scheduler.HEADER))
    address = header.split(": started on node ")[1].split()[0]
    host = next(name for name, h in c.hosts.hosts.items() if h.address == address)
    assert host in ("b", "c")
    checkpointed = json.loads(layout.run_file(folder, f"fold{lost}", ".state.json").read_text())["next_epoch"]
    killed = c.hosts.kill(host)
    rc, console = finish(driver, out)
    os.close(stale)
    assert rc == 0, console
    log = layout.log_path(folder, f"fold{lost}").read_text()
    attempts = [ray_scheduler.attempt_of(h) for h in log.splitlines() if h.startswith(ray_scheduler.HEADER)]
    assert len(attempts) == 2 and attempts[0] == 1 < attempts[1]   # Ray's numbers: tries on the lost worker count
    assert f"v1mix fold {lost}: done in " in console and "Ray ran it again after losing its worker or node)" in console
    resumed = [line for line in log.splitlines() if "resuming at epoch" in line]
    assert resumed and int(resumed[0].rsplit(" ", 1)[1]) >= checkpointed + 1
    assert "which Ray reports dead: stale, taken over" in layout.log_path(folder, "fold1").read_text()
    assert "\x1b[" not in console and "(raylet)" not in console    # none of Ray's raw, coloured lines
    assert json.loads(layout.run_json(models).read_text())["versions"]["keras_backend"] == "jax"

    reference = tmp_path / "one_process"   # the same stage without Ray, on the head, same environment
    done = c.hosts.run("head", f"exec .venv/bin/python code/train.py {' '.join(stage(data, reference, epochs))}",
                       DRIVER_ENV, timeout=LIMIT_S)
    assert done.returncode == 0, done.stdout + done.stderr
    arrays = [assert_same_weights(*(layout.weights_path(m / "v1mix", f"fold{k}") for m in (models, reference)))
              for k in (0, 1)]
    pd.testing.assert_frame_equal(pd.read_csv(folder / layout.HISTORY_CSV),
                                  pd.read_csv(reference / "v1mix" / layout.HISTORY_CSV))
    print(f"host {host} killed ({len(killed)} processes) after fold {lost}'s epoch {checkpointed}; "
          f"{resumed[0].strip()}\n" + "\n".join(line for line in console.splitlines() if "fold" in line or "lock" in line)
          + f"\nweights of folds 0 and 1 equal the one-process JAX run's ({arrays[0]} arrays each); history.csv equal")

    # the record says jax: a driver on another backend is refused before anything runs
    out = tmp_path / "tf.out"
    rc, console = finish(c.driver(stage(data, models, epochs, "--force"), out, {"KERAS_BACKEND": "tensorflow"}), out)
    assert rc == 2 and "train: refused: it would run Keras on 'tensorflow'" in console and "'jax'" in console, console
    assert layout.is_finished(folder, "fold0") and layout.is_finished(folder, "fold1")   # --force cleared nothing
    print("backend mismatch:", next(line for line in console.splitlines() if "error" in line))


def test_sigterm_of_the_driver_exits_143_and_leaves_no_unit_on_any_host(workers, data, tmp_path):
    out = tmp_path / "out"
    models = tmp_path / "models"
    driver = workers.driver(stage(data, models, 100), out)
    deadline = time.monotonic() + LIMIT_S
    while not any(workers.unit_pids().values()):    # the host left after the last test's kill runs one
        assert driver.poll() is None and time.monotonic() < deadline, out.read_text()
        time.sleep(0.2)
    time.sleep(2)
    running = {name: pids for name, pids in workers.unit_pids().items() if pids}
    os.kill(driver.pid, signal.SIGTERM)
    rc, console = finish(driver, out, 120)
    assert rc == 143, console
    assert "terminated (SIGTERM): everything finished so far is saved; rerun the same command to resume" in console
    assert "*** SIGTERM received" not in console and "Aborted" not in console
    deadline = time.monotonic() + 60
    while any(workers.unit_pids().values()):
        assert time.monotonic() < deadline, f"units still running: {workers.unit_pids()}"
        time.sleep(0.5)
    print("SIGTERM:", console.strip().splitlines()[-1], f"exit {rc}; units were running on {running}, "
          f"none left on any host")


STAND_INS = {
    "scontrol": '#!/bin/sh\n[ "$1 $2" = "show hostnames" ] || exit 2\nprintf "%s\\n" $SLURM_JOB_NODELIST | tr , "\\n"\n',
    # srun --nodes=1 --ntasks=1 -w NODE COMMAND...: the command in that host's namespace, with the
    # caller's environment (SLURM's default) but the host's own home and temporary folder
    "srun": '#!/bin/sh\nwhile [ "$1" != "-w" ]; do shift; done\nnode=$2; shift 2\n'
            '. "$FAKE_SLURM/$node.env"\nexec ip netns exec "$namespace" unshare --uts env HOME="$home" TMPDIR="$tmp" '
            'sh -c \'hostname "$0" && exec "$@"\' "$namespace" "$@"\n',
}


def test_the_slurm_script_with_stand_in_srun_and_scontrol(workers, data, tmp_path):
    hosts = workers.hosts
    for name in hosts.hosts:                 # the first cluster goes: the job's allocation is new
        hosts.kill(name)
    time.sleep(1)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, text in STAND_INS.items():
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    nodes = ["head", "b", "c"]
    for name in nodes:
        h = hosts[name]
        (bin_dir / f"{name}.env").write_text(f"namespace={h.namespace}\nhome={h.home}\ntmp={h.tmp}\n")
    models = tmp_path / "models"
    script = (slurm_script().replace("cd /shared/fat2019", f"cd {REPO}")
              .replace("> ray_auth_token", f"> {tmp_path}/ray_auth_token")
              .replace('RAY_AUTH_TOKEN_PATH="$PWD/ray_auth_token"', f'RAY_AUTH_TOKEN_PATH="{tmp_path}/ray_auth_token"')
              .replace("--num-gpus 4", "--num-gpus 1")
              .replace('sh run.sh --cluster "$head_ip:$port"',
                       f'exec .venv/bin/python code/train.py --cluster "$head_ip:$port" '
                       f'{" ".join(stage(data, models, 1, "--folds", "0"))}'))
    assert script.count("srun --nodes") == 3 and "ray get-auth-token --generate" in script
    (tmp_path / "job.sh").write_text(script)
    env = {**DRIVER_ENV, "PATH": f"{bin_dir}:{hosts['head'].env['PATH']}", "FAKE_SLURM": str(bin_dir),
           "SLURM_JOB_NODELIST": ",".join(nodes), "SLURM_CPUS_PER_TASK": "1"}
    out = tmp_path / "job.out"
    job = hosts.start("head", f"exec sh {tmp_path / 'job.sh'}", env, stdout=open(out, "w"), stderr=subprocess.STDOUT)
    rc, console = finish(job, out)
    assert rc == 0, console
    assert "v1mix fold 0: done in " in console and layout.is_finished(models / "v1mix", "fold0")
    assert hosts.pids("head")                # the head's `ray start --block` step runs on
    # (under a heavy load a worker's `ray start` can exceed Ray's fixed 30 s start-up wait; the
    # units then run on the nodes that did join, as the docs say: so the count is printed, not asserted)
    joined = [name for name in nodes if hosts.pids(name)]
    print("SLURM:", [line for line in console.splitlines() if "fold 0" in line or "on Ray" in line],
          f"nodes running: {joined}")
