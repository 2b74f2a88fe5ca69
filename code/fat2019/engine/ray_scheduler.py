"""Units of work (a model's noisy pretraining, fold k's training, fold k's prediction) run
as Ray tasks that each need one GPU, on one machine (`--gpus N`: a local Ray with N GPUs)
or on a running cluster (`--cluster ADDRESS`). docs/clusters.md is the user's guide.

A unit is data: the stage, the model, the fold, the run's record (models/run.json), the
driver's options as it parsed them (written out exactly, `unit_options`) and the
environment that decides results (`RESULT_VARIABLES`: the driver's Keras backend, thread
counts, seeds). The task checks the unit against run.json, then runs the stage script on
that one unit in a process of its own, so every unit trains exactly as the one-GPU run:
same batch, same learning rate, same per-unit seed, same backend, whatever the node's own
environment. `--force` is the driver's: it clears the units before submitting them, so a
task that Ray retries after losing its node always resumes at the next epoch.

The unit takes its lock (locks.py). A lock whose holder ran on a node Ray reports dead is
stale and is taken over; a unit that stays held by a live run is not done, and the stage
exits 1 naming it. Its output is appended to models/<name>/<prefix>.log between a header
(this submission's id, Ray's attempt number, node, GPU) and an exit line; the driver reads
starts only from headers with its own submission id, and prints one line per start and
end, and every STATUS_S one line per running unit (its last epoch).

The driver itself trains nothing and imports Ray only here, lazily: without --gpus or
--cluster a stage runs in its own process and Ray is never imported.
"""
from __future__ import annotations

import argparse
import contextlib
import ctypes
import dataclasses
import functools
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from fat2019 import layout
from fat2019.cli import BadInput
from fat2019.util import locks, machine, shutdown
from fat2019.util.progress import UnitProgress, duration

TAIL_LINES = 20   # of a failed unit's log, printed by the driver
# The environment that decides a unit's results, sent by the driver (set or unset): the
# Keras backend, CPU thread pools (a CPU's sums depend on the number of threads), the
# backends' numerics and seeds. A unit never takes them from its node's `ray start`.
THREAD_VARIABLES = ("TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS", "OMP_NUM_THREADS")
RESULT_VARIABLES = ("KERAS_BACKEND", *THREAD_VARIABLES, "TF_ENABLE_ONEDNN_OPTS", "TF_DETERMINISTIC_OPS",
                    "XLA_FLAGS", "JAX_PLATFORMS", "JAX_ENABLE_X64", "JAX_DEFAULT_MATMUL_PRECISION", "PYTHONHASHSEED")
# the driver's options that a unit does not get: scheduling, and what the driver decides per unit
DRIVER_DESTS = ("gpus", "cluster", "ray_workers", "strategy", "logical_cpus", "force", "models", "folds", "help")
WORKERS = ("warm", "fresh")   # --ray-workers
HEADER = "=== unit "   # begins a unit log's header line
PRETEND = "cpu"        # a pretend device's CUDA_VISIBLE_DEVICES value: cpu<i> names no CUDA device
POLL_S = 0.5
PLACEMENT_S = 45.0     # a unit Ray has not started this long while a GPU is free: say so (within a minute)
LOCK_WAIT_S = 120.0    # a retry waits this long for its lost attempt to let go of the lock
CONNECT_S = 60         # joining a cluster
STATUS_S = 60.0        # one line per running unit, this often
ANSI = re.compile(r"\x1b\[[0-9;]*m")
EPOCH = re.compile(r" epoch +(?P<epoch>\d+/\d+) .*lwlrap (?P<lwlrap>[\d.]+)")


class Storage(RuntimeError):
    """A node does not see a path every node must see."""


class Refused(RuntimeError):
    """A unit whose environment contradicts the run's record."""


def add_args(parser: argparse.ArgumentParser) -> None:
    # options are forwarded to the units as parsed here: no prefix of one (--gpu, --clus) may pass as another
    parser.allow_abbrev = False
    g = parser.add_argument_group("several GPUs or machines (Ray; docs/clusters.md)")
    g.add_argument("--gpus", metavar="N",
                   help="run the units (folds, pretrainings) side by side on N GPUs of this machine, one "
                        "unit per GPU with the original batch and lr, scheduled by a local Ray; 'auto' = "
                        "every visible GPU. Without a GPU: N pretend ones sharing the CPU. "
                        "Default: this process does every unit itself")
    g.add_argument("--cluster", metavar="ADDRESS", nargs="?", const="",
                   help="hand the units to a running Ray cluster (ray start) and use all of its GPUs: "
                        "HOST:PORT of its head, 'auto' (the cluster this machine belongs to), or nothing "
                        "(RAY_ADDRESS)")
    g.add_argument("--ray-workers", choices=WORKERS, default="warm",
                   help="warm (default): one long-lived worker per GPU runs unit after unit, with the backend "
                        "and the data already loaded; fresh: each unit in a new process")


@dataclass(frozen=True)
class Plan:
    """Where the units go: a local Ray with `gpus` GPUs, or the cluster at `address`."""
    gpus: int = 0
    address: str | None = None
    pretend: bool = False    # local GPUs that do not exist: the units compute on the CPU
    workers: str = "warm"    # WORKERS: a long-lived worker per GPU, or a process per unit


def plan(parser: argparse.ArgumentParser, args: argparse.Namespace) -> Plan | None:
    """The Ray plan that --gpus / --cluster ask for, or None: the stage runs in-process
    (also for --gpus 1). Bad combinations are a usage error (exit 2)."""
    gpus, cluster = getattr(args, "gpus", None), getattr(args, "cluster", None)
    if gpus is not None and cluster is not None:
        parser.error("--gpus and --cluster: give one (a cluster brings its own GPUs)")
    if cluster is not None:
        address = cluster or os.environ.get("RAY_ADDRESS", "")
        if not address:
            parser.error("--cluster without an address needs RAY_ADDRESS (or give HOST:PORT, or auto)")
        chosen = Plan(address=address)
    elif gpus is not None:
        chosen = local_plan(parser, gpus)
        if chosen.gpus == 1:
            return None
    else:
        return None
    chosen = dataclasses.replace(chosen, workers=getattr(args, "ray_workers", "warm"))
    if getattr(args, "strategy", "default") != "default" or getattr(args, "logical_cpus", None):
        parser.error("--strategy mirrored / --logical-cpus split one unit over devices; with --gpus or "
                     "--cluster each unit has one GPU: leave them out")
    return chosen


def local_plan(parser: argparse.ArgumentParser, gpus: str) -> Plan:
    visible = visible_gpus()
    if gpus == "auto":
        return Plan(gpus=max(1, len(visible)), pretend=not visible)
    try:
        n = int(gpus)
    except ValueError:
        parser.error(f"--gpus {gpus!r}: expected a number of GPUs or 'auto'")
    if n < 1:
        parser.error(f"--gpus {n}: expected at least 1")
    if visible and n > len(visible):
        parser.error(f"--gpus {n}: only {len(visible)} GPU(s) visible ({','.join(visible)})")
    if not visible and n > 1:
        print(f"note: --gpus {n} without a visible GPU (CUDA_VISIBLE_DEVICES, nvidia-smi -L): {n} pretend "
              f"GPUs, the units share the CPU", flush=True)
    return Plan(gpus=n, pretend=not visible)


def visible_gpus() -> list[str]:
    """The GPUs this process may use: CUDA_VISIBLE_DEVICES when it is set, else the ones
    `nvidia-smi -L` lists (none without the NVIDIA driver)."""
    listed = os.environ.get("CUDA_VISIBLE_DEVICES")
    if listed is not None:
        ids = []
        for d in (d.strip() for d in listed.split(",")):
            if not d or d.startswith("-") or d.startswith(PRETEND):   # CUDA stops at an invalid entry
                break
            ids.append(d)
        return ids
    return [str(gpu.index) for gpu in machine.listed_gpus()]


def unit_options(parser: argparse.ArgumentParser, args: argparse.Namespace) -> list[str]:
    """The options every unit of the stage gets: the driver's, as it parsed them, written
    out with their full names (paths made absolute), less DRIVER_DESTS. Options left at
    their defaults are left out."""
    options = []
    for action in parser._actions:
        if not action.option_strings or action.dest in DRIVER_DESTS or not hasattr(args, action.dest):
            continue
        value = getattr(args, action.dest)
        if value is None or value == action.default:
            continue
        name = max(action.option_strings, key=len)
        if isinstance(action, (argparse._StoreTrueAction, argparse._StoreFalseAction)):
            options.append(name)
            continue
        values = value if isinstance(value, (list, tuple)) else [value]
        options += [name, *(str(v.resolve()) if isinstance(v, Path) else str(v) for v in values)]
    return options


def result_environment() -> dict[str, str | None]:
    """RESULT_VARIABLES as this driver has them; KERAS_BACKEND is the backend Keras runs
    on here (KERAS_BACKEND, else ~/.keras/keras.json, which a node may have otherwise)."""
    env = {name: os.environ.get(name) for name in RESULT_VARIABLES}
    keras = sys.modules.get("keras")
    if keras is not None:
        env["KERAS_BACKEND"] = keras.backend.backend()
    return env


@dataclass
class Unit:
    label: str                      # e.g. "v1mix fold 3", for messages
    command: list[str]              # the unit's command line (the stage script on one unit)
    log: Path                       # its output is appended here
    is_done: Callable[[], bool]     # whether its work is finished (checked by the driver)
    needs: tuple[Path, ...] = ()    # paths every node must see (the feature cache, models/)
    lock: Path | None = None        # the unit's lock (locks.py), which a retry waits for
    record: Path | None = None      # the run's record (models/run.json), checked by the task
    clear: Callable[[], None] | None = None   # forgets the unit's finished work (the driver's --force)
    script: str | None = None       # the stage script and its arguments, for a warm worker (command[1:])
    model: str | None = None        # the zoo model it trains or predicts (a warm worker keeps it built)


def stage_unit(label: str, script: str, options: list[str], model: str, fold: int | None, log: Path,
               is_done: Callable[[], bool], *, needs=(), lock=None, record=None, clear=None) -> Unit:
    """A unit of a stage script: its options, then its model and fold."""
    own = ["--models", model, *(["--folds", str(fold)] if fold is not None else [])]
    script = str(Path(script).resolve())
    return Unit(label, [sys.executable, script, *options, *own], log, is_done, tuple(needs), lock, record, clear,
                script, model)


@dataclass
class Outcome:
    """What became of each unit of a stage run on Ray: its label is in one of these."""
    done: list[str] = field(default_factory=list)               # finished by this run
    already_finished: list[str] = field(default_factory=list)   # finished before it: not submitted
    held: list[str] = field(default_factory=list)               # left unfinished: another run holds it
    failed: list[str] = field(default_factory=list)             # ended by an error (its exit code, or Ray's)


# --- in the task (a Ray worker process) -----------------------------------------------------

def prepare_unit_process(niceness: int) -> None:
    """In the unit's process, before it starts: a SIGTERM when the Ray worker that started
    it dies (its node was lost, or its driver), so it saves at a safe point and exits
    (shutdown.py) and lets go of its lock for the retry, instead of training on as an
    orphan; and the driver's priority, not the one Ray gives its workers (nice 15): the
    unit is the stage's work."""
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)   # 1 = PR_SET_PDEATHSIG
    try:
        os.setpriority(os.PRIO_PROCESS, 0, niceness)
    except PermissionError:   # only a privileged user may raise a priority: the unit stays at Ray's
        pass


def unit_env(devices: str, pretend: bool, result_env: dict[str, str | None], node_id: str) -> dict:
    """The unit's environment: the node's, pinned to its GPU (a pretend one by a name that
    is no CUDA device), output unbuffered so its log is live, its Ray node named for its
    lock's record, and the driver's RESULT_VARIABLES (set or unset: Ray sets
    OMP_NUM_THREADS in its workers, and a node's `ray start` may have another backend)."""
    from fat2019.util import locks   # here: a task pickles the module's globals it uses
    env = {**os.environ, "PYTHONUNBUFFERED": "1", locks.NODE_VARIABLE: node_id}
    env["CUDA_VISIBLE_DEVICES"] = ",".join(PRETEND + d for d in devices.split(",")) if pretend else devices
    for name, value in result_env.items():
        if value is None:
            env.pop(name, None)
        else:
            env[name] = value
    return env


def check_record(label: str, record: str | None, backend: str | None) -> None:
    """Refuse a unit whose Keras backend is not the one the run's record was made with."""
    if not record or not os.path.isfile(record):
        return
    recorded = json.loads(Path(record).read_text()).get("versions", {}).get("keras_backend")
    if recorded and backend and recorded != backend:
        raise Refused(f"{label}: refused: it would run Keras on {backend!r} (the driver's backend), but {record} "
                      f"records the run as trained on {recorded!r}; run the driver with KERAS_BACKEND={recorded}, "
                      f"or give another --models-dir for a run on {backend}")


def take_over_stale_lock(path: str | None, dead_nodes: set[str]) -> str | None:
    """If the lock at `path` is held by a unit on a node Ray reports dead (a lost host's
    lock can outlive it on NFS), delete it, so the next holder locks a new file; a line
    saying so, else None."""
    from fat2019.util import locks
    if not path or not os.path.isfile(path):
        return None
    with locks.try_hold(Path(path)) as lock:
        if lock.held:
            return None
    try:
        record = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
    node = record.get(locks.NODE_FIELD)
    if node not in dead_nodes:
        return None
    Path(path).unlink(missing_ok=True)
    return (f"the lock {path} was held by pid {record.get('pid')} on {record.get('host')}, Ray node {node[:8]}, "
            f"which Ray reports dead: stale, taken over")


def free_unit_lock(ray, lock: str | None, attempt: int, say) -> None:
    """Before a unit runs (on a fresh or a warm worker): a lock held for a node Ray reports
    dead is taken over; a retry waits, bounded, for the lock of its lost attempt."""
    dead = {n["NodeID"] for n in ray.nodes() if not n["Alive"]}
    taken = take_over_stale_lock(lock, dead)
    if taken:
        say(taken)
    elif attempt > 1:
        wait_for_lock(lock, LOCK_WAIT_S, say)


def wait_for_lock(path: str | None, limit_s: float, say) -> bool:
    """Until nobody holds the lock at `path`, at most `limit_s`: a retried unit's lost
    attempt may still be saving and exiting when the retry starts. Whether it is free."""
    from fat2019.util import locks
    deadline = time.monotonic() + limit_s
    told = False
    while path:
        with locks.try_hold(Path(path)) as lock:
            if lock.held:
                return True
        if time.monotonic() >= deadline:
            return False
        if not told:
            say(f"waiting up to {limit_s:.0f} s for the lock {lock.holder}")
            told = True
        time.sleep(POLL_S)
    return True


@dataclass
class UnitRun:
    """One attempt at a unit, on the node that runs it (unit_run): its log, open for
    appending, and what the driver's report needs."""
    out: object
    label: str
    node: str
    node_id: str
    attempt: int
    started: float
    notes: list = field(default_factory=list)
    rc: int | None = None   # the unit's exit code, set by the caller
    ended: float = 0.0

    def say(self, line: str) -> None:
        """A note for the log and, through the record, the driver's console."""
        self.notes.append(line)
        self.out.write(f"=== {stamp()} {self.label}: {line}\n")

    def record(self, spec: dict, gpu: str, **more) -> dict:
        return {"rc": self.rc, "node": self.node, "node_id": self.node_id, "attempt": self.attempt, "gpu": gpu,
                "notes": self.notes, "submitted": spec["submitted"], "started": self.started, "ended": self.ended,
                **more}


@contextlib.contextmanager
def unit_run(ray, spec: dict, node_id: str, paths: list[str], backend: str | None, gpu: str, worker: str = ""):
    """The steps every attempt at a unit takes, on a fresh or a warm worker: check that
    this node sees `paths` (Storage) and that the run's record allows `backend`; then, in
    the driver's folder and the unit's log, the header line, a stale lock taken over (or a retry's waited
    for), and at the end the exit code line (`run.rc`, set by the caller)."""
    started = time.time()
    attempt = ray._private.worker.global_worker.core_worker.get_current_task_attempt_number() + 1
    node = f"{ray.util.get_node_ip_address()} {node_id[:8]}"
    label = spec["label"]
    missing = [p for p in paths if not os.path.exists(p)]
    if missing:
        raise Storage(f"node {node} ({socket.gethostname()}): {missing[0]} does not exist there; every node must "
                      f"see the repository, the virtualenv, the feature cache and models/ at the same paths "
                      f"(docs/clusters.md)")
    check_record(label, spec["record"], backend)
    os.chdir(spec["cwd"])   # the driver's: relative paths in the unit's options mean the same here
    with open(spec["log"], "a", buffering=1) as out:   # line-buffered: a subprocess appends to it too
        run = UnitRun(out, label, node, node_id, attempt, started)
        out.write(f"{HEADER}{stamp()} {label}: submission {spec['submission']} attempt {attempt}: started on node "
                  f"{node}, GPU {gpu}, {started - spec['submitted']:.2f} s after submission{worker}: "
                  f"{' '.join(spec['command'])}\n")
        free_unit_lock(ray, spec["lock"], attempt, run.say)
        yield run
        run.ended = time.time()
        out.write(f"=== {stamp()} {label}: exit code {run.rc} after {run.ended - started:.1f} s\n")


def run_unit(spec: dict) -> dict:
    """The Ray task: check the shared paths and the run's record, take over a stale lock,
    then run the unit's command with its output appended to its log. Returns a record of
    where and when it ran (Ray's attempt number, node), and its exit code."""
    import ray

    node_id = ray.get_runtime_context().get_node_id()
    command = spec["command"]
    if spec["code"] not in sys.path:   # fat2019, at the same path on every node (this task was pickled by value)
        sys.path.insert(0, spec["code"])
    env = unit_env(os.environ.get("CUDA_VISIBLE_DEVICES", ""), spec["pretend"], spec["env"], node_id)
    paths = [*spec["needs"], spec["cwd"], spec["code"], command[0], command[1]]
    with unit_run(ray, spec, node_id, paths, env.get("KERAS_BACKEND"), env["CUDA_VISIBLE_DEVICES"]) as run:
        process = subprocess.Popen(command, stdout=run.out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                   env=env, cwd=spec["cwd"],
                                   preexec_fn=functools.partial(prepare_unit_process, spec["niceness"]))
        run.rc = process.wait()
    return run.record(spec, env["CUDA_VISIBLE_DEVICES"], ray_gpu=os.environ.get("CUDA_VISIBLE_DEVICES", ""))


class UnitWorker:
    """A warm worker (a Ray actor holding one GPU): runs unit after unit in its own
    process, so Python, the backend and its compiled kernels are loaded once per GPU, not
    once per unit. It takes the driver's RESULT_VARIABLES before any backend is imported,
    and runs each unit as the stage's `main(argv, built=...)` on that unit (output to the
    unit's log, at the file descriptors too). `built` (training.BuiltModels) keeps the
    models its units built, so a later unit of the same architecture only restores its
    start state into one, as the one-process stages do; everything else a unit held is
    garbage afterwards. A unit's Python error fails that unit only, and the worker then
    forgets its models and clears Keras' session, so nothing a failed unit left behind
    reaches the next; a crash of the process (a segfault, an OOM kill) or of its node makes
    Ray start a fresh worker and run the unit again, which resumes at its next epoch."""

    def __init__(self, code: str, result_env: dict, pretend: bool, niceness: int):
        import ray
        if code not in sys.path:   # fat2019 and the stage scripts, at the same path on every node
            sys.path.insert(0, code)
        self.node_id = ray.get_runtime_context().get_node_id()
        env = unit_env(os.environ.get("CUDA_VISIBLE_DEVICES", ""), pretend, result_env, self.node_id)
        for name in set(os.environ) - set(env):
            del os.environ[name]
        os.environ.update(env)
        try:
            os.setpriority(os.PRIO_PROCESS, 0, niceness)
        except PermissionError:
            pass
        self.served = 0
        self.built = None   # training.BuiltModels, made by the first unit (it imports the backend)

    def run(self, spec: dict) -> dict:
        import ray
        gpu = os.environ["CUDA_VISIBLE_DEVICES"]
        paths = [*spec["needs"], spec["cwd"], spec["script"]]
        worker = f", warm worker pid {os.getpid()} unit {self.served + 1}"
        with unit_run(ray, spec, self.node_id, paths, os.environ.get("KERAS_BACKEND"), gpu, worker) as run:
            if spec["jax_cache"] and os.environ.get("KERAS_BACKEND") == "jax":
                # compiled programs kept beside the run: a restarted worker, or another node, loads them
                import jax
                jax.config.update("jax_compilation_cache_dir", spec["jax_cache"])
            if self.built is None:
                from fat2019.engine.training import BuiltModels
                self.built = BuiltModels()
            run.rc = self.call_stage(spec["script"], spec["command"][2:], run.out, self.built)
            self.served += 1
        return run.record(spec, gpu, ray_gpu=ray.get_gpu_ids(), worker_pid=os.getpid(), served=self.served,
                          rss_mb=resident_mb(), built=len(self.built.models))

    @staticmethod
    def call_stage(script: str, argv: list[str], out, built) -> int:
        """The stage's main(argv, built=built) in this process, its output (Python's and
        the C++ libraries') in `out`; its exit code. Afterwards the unit's garbage is
        collected; after a failed unit, `built` is emptied and Keras' session cleared."""
        import gc
        import importlib
        import traceback
        from fat2019 import cli

        if os.path.dirname(script) not in sys.path:
            sys.path.insert(0, os.path.dirname(script))
        module = importlib.import_module(Path(script).stem)
        sys.stdout.flush()
        sys.stderr.flush()
        saved = os.dup(1), os.dup(2)
        streams = sys.stdout, sys.stderr
        os.dup2(out.fileno(), 1)
        os.dup2(out.fileno(), 2)
        sys.stdout = sys.stderr = out
        rc = 1
        try:
            rc = cli.call(functools.partial(module.main, built=built), argv)
        except SystemExit as e:
            rc = e.code if isinstance(e.code, int) else 1
        except Exception:   # an ordinary error fails this unit; the worker serves the next one
            traceback.print_exc(file=out)
            rc = 1
        finally:
            out.flush()
            sys.stdout, sys.stderr = streams
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])
            # kept models keep their traced functions: clear_session would drop JAX's (jax.clear_caches)
            keras = sys.modules.get("keras")
            if rc != 0 and keras is not None:
                built.models.clear()
                keras.backend.clear_session()
            gc.collect()
        return rc


def resident_mb() -> float:
    """This process's resident memory (MiB), from /proc."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def stamp() -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S")


# --- in the driver ----------------------------------------------------------------------------

def stay_on_loopback(address: str | None) -> None:
    """For a local Ray (`address` None) or a loopback cluster, before Ray is imported: make
    this node's address 127.0.0.1, not the network interface's (a driver joining a loopback
    cluster from the interface address waits for ever). Ray 2.60 reads this flag, named for
    Windows and macOS, at import and offers no other switch for it."""
    if address is None or on_loopback(address):
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")


def connect(chosen: Plan):
    """Start (or join) Ray; returns the ray module. A local Ray keeps all of its traffic on
    127.0.0.1 (Ray binds to the network interface otherwise) and starts no dashboard."""
    stay_on_loopback(chosen.address)
    import ray
    from fat2019.engine import ray_scheduler
    ray.cloudpickle.register_pickle_by_value(ray_scheduler)   # workers need not import the package
    common = dict(include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    if chosen.address is None:
        # Ray refuses more GPUs than CUDA_VISIBLE_DEVICES lists; pretend ones are renamed in the
        # units' environment (unit_env), so no unit sees a CUDA device
        hidden = os.environ.pop("CUDA_VISIBLE_DEVICES", None) if chosen.pretend else None
        try:
            ray.init(address="local", num_gpus=chosen.gpus, **common)   # never a cluster found running here
        finally:
            if hidden is not None:
                os.environ["CUDA_VISIBLE_DEVICES"] = hidden
    else:
        common.pop("include_dashboard")   # the cluster's, not ours to choose
        os.environ.setdefault("RAY_gcs_rpc_server_connect_timeout_s", str(CONNECT_S))
        try:
            ray.init(address=chosen.address, **common)
        except (ConnectionError, ray.exceptions.RaySystemError, ray.exceptions.AuthenticationError) as e:
            # `ray start --head` turns token authentication on when its user has a token (~/.ray/auth_token,
            # which any local Ray writes), but a driver given an address sends none without RAY_AUTH_MODE=token
            # (Ray 2.60). The driver cannot set it for itself: a driver in token mode joins a cluster without
            # authentication, but then its actors die at once (the cluster's calls back to it carry no token)
            mode = os.environ.get("RAY_AUTH_MODE", "unset")
            raise BadInput(f"--cluster {chosen.address}: cannot join the Ray cluster there ({type(e).__name__}: "
                           f"{str(e).splitlines()[0]}); is it running (ray start)? If it uses token authentication, "
                           f"export RAY_AUTH_MODE=token and RAY_AUTH_TOKEN_PATH=<its token file> for this driver as "
                           f"for its nodes (RAY_AUTH_MODE is {mode} here; docs/clusters.md)") from None
    plain_ray_messages(ray)
    # Ray's core worker puts a handler on SIGTERM that dumps a C++ stack and aborts: ours back,
    # so a stopped driver exits as a plain stage does (143, its resumable message)
    shutdown.install()
    return ray


def plain_ray_messages(ray) -> None:
    """Ray pushes its messages to the driver (a task lost with its node, a resource request
    it cannot place) as `(raylet)` lines in colour, several lines long: print each as one
    plain line instead. Ray calls print_to_stdstream from its listener thread, by name."""
    def plain(data: dict, ignore_prefix: bool = False) -> None:
        for message in data.get("lines", []):
            lines = [line.strip() for line in ANSI.sub("", message).splitlines() if line.strip()]
            if lines:
                print(f"note from Ray: {lines[0][:300]}", file=sys.stderr, flush=True)

    ray._private.worker.print_to_stdstream = plain


def on_loopback(address: str) -> bool:
    host = address.split("://")[-1].rsplit(":", 1)[0]
    return host in ("localhost", "::1", "[::1]") or host.startswith("127.")


def keep_driver_off_the_gpus() -> None:
    """The driver trains nothing: keep a backend it has already imported off the GPUs, so
    it takes none of their memory (TensorFlow and JAX take most of it at a first operation).
    Imports no backend of its own: under KERAS_BACKEND=jax TensorFlow may not be installed."""
    tf = sys.modules.get("tensorflow")
    if tf is not None:
        try:
            tf.config.set_visible_devices([], "GPU")
        except RuntimeError:   # its runtime already started (stages run in-process in one Python)
            pass
    jax = sys.modules.get("jax")
    if jax is not None:
        try:
            jax.config.update("jax_platforms", "cpu")
        except RuntimeError:
            pass


def log_size(path: Path) -> int:
    return path.stat().st_size if path.is_file() else 0


def read_from(path: Path, start: int) -> str:
    if not path.is_file():
        return ""
    with open(path, "rb") as f:
        f.seek(start)
        return f.read().decode(errors="replace")


def new_headers(path: Path, start: int, submission: str) -> list[str]:
    """The header lines of submission `submission` written to `path` from byte `start` on
    (a prediction appended to the fold's log, or another driver, has other ids)."""
    mark = f": submission {submission} attempt "
    return [line for line in read_from(path, start).splitlines() if line.startswith(HEADER) and mark in line]


def log_tail(path: Path, start: int, lines: int = TAIL_LINES) -> str:
    return "\n".join(read_from(path, start).splitlines()[-lines:])


def where(header: str) -> str:
    """'node 127.0.0.1 1a2b3c4d, GPU 0' from a header line."""
    return ", ".join(header.split(": started on ", 1)[1].split(", ")[:2])


def attempt_of(header: str) -> int:
    return int(header.split(" attempt ", 1)[1].split(":", 1)[0])


def unit_status(path: Path, start: int) -> str:
    """'epoch 12/40, val lwlrap 0.6123' from the unit's last epoch line, or 'starting'."""
    for line in reversed(read_from(path, start).splitlines()):
        m = EPOCH.search(line)
        if m:
            return f"epoch {m['epoch']}, val lwlrap {m['lwlrap']}"
    return "starting"


@dataclass
class Submitted:
    unit: Unit
    ref: object
    log_start: int
    submitted: float
    attempts_seen: int = 0
    told_unplaced: bool = False
    worker: object = None   # the warm worker it was given to (None: a process of its own)


def report(job: Submitted, record: dict | None, error: BaseException | None) -> str:
    """One line for a unit that ended (with its log's tail if it failed); which of
    Outcome's lists it goes in: "done", "held" or "failed"."""
    label, log = job.unit.label, job.unit.log
    if error is not None:
        cause = getattr(error, "cause", None) or error
        print(f"{label}: FAILED: {type(cause).__name__}: {cause}", file=sys.stderr, flush=True)
        return "failed"
    attempts = record["attempt"]
    again = f" (attempt {attempts}: Ray ran it again after losing its worker or node)" if attempts > 1 else ""
    for note in record["notes"]:
        print(f"{label}: {note}", flush=True)
    took = record["ended"] - record["started"]
    at = f"[node {record['node']}, GPU {record['gpu']}] {label}"
    tail = log_tail(log, job.log_start)
    if record["rc"] != 0:
        print(f"{at}: FAILED (exit code {record['rc']}) after {took:.0f} s{again}; the end of {log}:\n"
              + "\n".join("    " + line for line in tail.splitlines()), file=sys.stderr, flush=True)
        return "failed"
    if job.unit.is_done():
        warm = (f" (warm worker pid {record['worker_pid']}, its unit {record['served']}, {record['rss_mb']:.0f} MiB, "
                f"{record['built']} model(s) built)" if "worker_pid" in record else "")
        print(f"{at}: done in {took:.0f} s{again}{warm}", flush=True)
        return "done"
    # exited cleanly without finishing: another run holds the unit (its log says who)
    lines = [line.strip() for line in tail.splitlines() if line.strip() and not line.startswith("===")]
    note = next((line for line in reversed(lines) if locks.HELD_BY in line), lines[-1] if lines else "no output")
    print(f"{at}: NOT FINISHED ({note})", file=sys.stderr, flush=True)
    return "held"


def check_gpus(ray, chosen: Plan) -> int:
    """The cluster's GPUs; exit 2 at once, naming what it has, if it has none."""
    resources = ray.cluster_resources()
    gpus = int(resources.get("GPU", 0))
    if gpus < 1:
        nodes = [n for n in ray.nodes() if n["Alive"]]
        has = f"CPU {resources.get('CPU', 0):g}, memory {resources.get('memory', 0) / 2**30:.1f} GiB"
        raise BadInput(f"the Ray cluster at {chosen.address or 'local'} has no GPU ({len(nodes)} node(s): {has}); "
                       f"each unit needs one: start its nodes with `ray start ... --num-gpus N` (docs/clusters.md)")
    return gpus


def run(units: list[Unit], chosen: Plan, stage: str, *, redo: bool = False) -> Outcome:
    """Run every unit not yet done (all of them with `redo`, cleared first) as a Ray task
    needing one GPU; Ray queues the ones for which no GPU is free. Returns what became of
    each unit (Outcome)."""
    outcome = Outcome()
    result_env = result_environment()   # before Ray is imported: it sets OMP_NUM_THREADS
    check_records(units, stage, result_env["KERAS_BACKEND"])   # before --force clears anything
    pending = units_to_run(units, redo, outcome)
    if not pending:
        return outcome
    keep_driver_off_the_gpus()
    ray = connect(chosen)
    jobs: list[Submitted] = []
    try:
        gpus = check_gpus(ray, chosen)
        print(f"{stage}: {len(pending)} unit(s) on Ray, {gpus} GPU(s) "
              f"({'pretend, ' if chosen.pretend else ''}{chosen.address or 'local'}); each unit's output goes to "
              f"its log", flush=True)
        submission = uuid.uuid4().hex[:12]
        queue = [(unit, unit_spec(unit, chosen.pretend, result_env, submission)) for unit in pending]
        submit = submit_units(ray, chosen, gpus, queue, result_env, jobs)
        wait_for(ray, jobs, outcome, UnitProgress(stage, len(pending)), submission, submit)
    except BaseException as stopped:   # Ctrl-C, SIGTERM: the units get a SIGTERM too (prepare_unit_process), save and stop
        stop_units(ray, jobs)
        if shutdown.received() and not isinstance(stopped, shutdown.Terminated):
            raise shutdown.Terminated(shutdown.EXIT_CODE) from None   # Ray's wait made SIGTERM a SystemExit(1)
        raise
    finally:
        ray.shutdown()
    return outcome


def check_records(units: list[Unit], stage: str, backend: str | None) -> None:
    """Exit 2 if the units' run record (run.json) was made on another Keras backend than `backend`."""
    for record in dict.fromkeys(unit.record for unit in units if unit.record):
        try:
            check_record(stage, str(record), backend)
        except Refused as e:
            raise BadInput(str(e)) from None


def units_to_run(units: list[Unit], redo: bool, outcome: Outcome) -> list[Unit]:
    """The units to submit: with `redo` (--force) each one cleared first, except one another
    run holds; else each one not finished. A unit left out is said and put in `outcome`."""
    pending = []
    for unit in units:
        if redo:
            if not clear_unit(unit, outcome):
                continue
        elif unit.is_done():
            outcome.already_finished.append(unit.label)
            print(f"{unit.label}: finished, skipped", flush=True)
            continue
        pending.append(unit)
    return pending


def code_root() -> str:
    """The folder holding fat2019 and the stage scripts, at the same path on every node."""
    return str(Path(__file__).resolve().parents[2])


def unit_spec(unit: Unit, pretend: bool, result_env: dict, submission: str) -> dict:
    """What a task or a warm worker gets of `unit`: plain data, every path absolute (the
    unit's log too, and its folder made)."""
    unit.log = unit.log.resolve()
    unit.log.parent.mkdir(parents=True, exist_ok=True)
    return {"label": unit.label, "command": unit.command, "script": unit.script, "log": str(unit.log),
            "cwd": os.getcwd(), "code": code_root(), "needs": [str(Path(p).resolve()) for p in unit.needs],
            "lock": str(unit.lock.resolve()) if unit.lock else None,
            "record": str(unit.record.resolve()) if unit.record else None,
            "jax_cache": str(layout.jax_cache(unit.record.resolve().parent)) if unit.record else None,
            "env": result_env, "pretend": pretend, "submission": submission,
            "niceness": os.getpriority(os.PRIO_PROCESS, 0)}


def submit_units(ray, chosen: Plan, gpus: int, queue: list[tuple[Unit, dict]], result_env: dict,
                 jobs: list[Submitted]) -> Callable:
    """Submit the queued (unit, spec)s, adding each to `jobs`: with warm workers, one
    worker per GPU (at most one per unit) given its first unit; else every unit as a task
    of its own. Returns `submit(worker)`, which gives a warm worker that is free the next
    queued unit of a model it has built, else the next (None when the queue is empty)."""
    built: dict[int, set] = {}   # per warm worker, the models of the units it was given

    def submit(worker=None) -> Submitted | None:
        if not queue:
            return None
        unit, spec = queue.pop(0 if worker is None else next_for(queue, built.setdefault(id(worker), set())))
        if worker is not None:
            built[id(worker)].add(unit.model)
        spec["submitted"] = time.time()
        ref = worker.run.remote(spec) if worker is not None else task.remote(spec)
        return Submitted(unit, ref, log_size(unit.log), spec["submitted"], worker=worker)

    if chosen.workers == "warm" and all(unit.script for unit, _ in queue):
        # one per GPU, restarted by Ray (at most 3 times) if its process or node dies, and its unit then
        # runs again: the unit is retried until its worker is back (a host that dies is "unavailable"
        # for a few seconds, and each try then counts as an attempt), the worker's restarts are bounded
        actor = ray.remote(num_gpus=1, num_cpus=0, max_restarts=3, max_task_retries=-1)(UnitWorker)
        workers = [actor.remote(code_root(), result_env, chosen.pretend, os.getpriority(os.PRIO_PROCESS, 0))
                   for _ in range(min(gpus, len(queue)))]
        jobs.extend(submit(worker) for worker in workers)
    else:
        task = ray.remote(num_gpus=1, num_cpus=0, max_calls=1)(run_unit)
        while queue:
            jobs.append(submit())
    return submit


def next_for(queue: list[tuple[Unit, dict]], built: set) -> int:
    """The queue position of the unit a free warm worker gets: the first of a model it has
    already built (it restores that model, with nothing to build or trace), else the first."""
    return next((i for i, (unit, _) in enumerate(queue) if unit.model is not None and unit.model in built), 0)


def stop_units(ray, jobs: list[Submitted]) -> None:
    """The driver is stopping: its warm workers killed and its tasks cancelled (each unit
    then gets a SIGTERM, prepare_unit_process, saves at a safe point and stops)."""
    ray._private.worker.print_to_stdstream = lambda *args, **kwargs: None   # Ray's notes of our own kills
    for job in jobs:
        if job.worker is not None:
            ray.kill(job.worker, no_restart=True)
        else:
            ray.cancel(job.ref, force=True)


def clear_unit(unit: Unit, outcome: Outcome) -> bool:
    """--force: forget the unit's finished work before it is submitted (a retry then
    resumes, never restarts), under its lock. False, saying so, if another run holds it."""
    if unit.clear is None:
        return True
    if unit.lock is None:
        unit.clear()
        return True
    with locks.try_hold(unit.lock) as lock:
        if lock.held:
            unit.clear()
            return True
    outcome.held.append(unit.label)
    print(f"{unit.label}: NOT FINISHED ({lock.holder}); not cleared for --force", file=sys.stderr, flush=True)
    return False


def wait_for(ray, jobs: list[Submitted], outcome: Outcome, progress: UnitProgress, submission: str,
             submit: Callable = lambda worker=None: None) -> None:
    """Print each unit's start (read from its log's header of this submission: the node,
    GPU and Ray's attempt), its end, a unit Ray does not place, and every STATUS_S one
    line per running unit."""
    running = list(jobs)
    last_status = time.monotonic()
    while running:
        ready, _ = ray.wait([job.ref for job in running], num_returns=1, timeout=POLL_S)
        now = time.monotonic()
        for job in running:
            tell_start(ray, job, submission)
        if now - last_status >= STATUS_S:
            last_status = now
            for job in running:
                headers = new_headers(job.unit.log, job.log_start, submission)
                if headers:
                    print(f"  [{where(headers[-1])}] {job.unit.label}: {unit_status(job.unit.log, job.log_start)}, "
                          f"{duration(time.time() - job.submitted)} since submission", flush=True)
        for job in [j for j in running if j.ref in ready]:
            running.remove(job)
            settle(ray, job, outcome, progress)
            if job.worker is not None:   # a warm worker is free: its next unit, or it goes
                following = submit(job.worker)
                if following is not None:
                    running.append(following)
                    jobs.append(following)
                else:   # its GPU is then free for a worker Ray restarts after losing its node
                    ray.kill(job.worker, no_restart=True)


def tell_start(ray, job: Submitted, submission: str) -> None:
    """A line for each start of `job` not told yet (its log's headers of this submission),
    and one if Ray has not started it PLACEMENT_S after its submission."""
    headers = new_headers(job.unit.log, job.log_start, submission)
    for header in headers[job.attempts_seen:]:
        attempt = attempt_of(header)
        again = f" (attempt {attempt})" if attempt > 1 else ""
        print(f"[{where(header)}] {job.unit.label}: started{again} (log {job.unit.log})", flush=True)
    job.attempts_seen = len(headers)
    if not headers and not job.told_unplaced and time.time() - job.submitted > PLACEMENT_S:
        job.told_unplaced = True
        free = ray.available_resources().get("GPU", 0)
        total = ray.cluster_resources().get("GPU", 0)
        print(f"{job.unit.label}: not started {PLACEMENT_S:.0f} s after submission: it needs 1 GPU; the "
              f"cluster has {total:g}, {free:g} free now (busy ones run other units)", flush=True)


def settle(ray, job: Submitted, outcome: Outcome, progress: UnitProgress) -> None:
    """An ended unit: its line (report), its list in `outcome`, and the stage's progress."""
    try:
        record, error = ray.get(job.ref), None
    except ray.exceptions.RayError as e:
        record, error = None, e
    ended = report(job, record, error)
    getattr(outcome, ended).append(job.unit.label)
    if ended == "done":
        progress.finished(job.unit.label)
    elif ended == "failed":
        progress.failed(job.unit.label)
    else:   # held by another run: not this run's work
        progress.skipped(job.unit.label)


def exit_code(outcome: Outcome) -> int:
    """1, naming them, if any unit failed or was left unfinished; else 0."""
    if outcome.failed:
        print(f"{len(outcome.failed)} unit(s) failed: {', '.join(outcome.failed)} (the end of each log is above); "
              f"rerun the same command to retry them (finished work is kept)", file=sys.stderr)
    if outcome.held:
        print(f"{len(outcome.held)} unit(s) not finished: {', '.join(outcome.held)}: another run holds "
              f"them (above); rerun once it is done, or once it has died", file=sys.stderr)
    return 1 if outcome.failed or outcome.held else 0
