"""Units of work (a model's noisy pretraining, fold k's training, fold k's prediction) run
as Ray tasks that each need one GPU, on one machine (`--gpus N`: a local Ray with N GPUs)
or on a running cluster (`--cluster ADDRESS`). docs/clusters.md is the user's guide.

Each task is the stage script itself on one unit, in a process of its own (the unit's
arguments: the stage's own, less the scheduling options, then `--models <name> --folds
<k>`), so every unit trains exactly as the one-GPU run: same batch, same learning rate,
same per-unit seed, and a unit trained here equals the same unit trained in one process.
The unit takes its lock (locks.py) and resumes from its checkpoint, so a task that Ray
retries after losing its node continues at the next epoch, and a second driver skips a
unit the first holds. Its output is appended to models/<name>/<prefix>.log between a
header (node, GPU) and an exit line; the driver prints one line per start and end.

The driver itself trains nothing and imports Ray only here, lazily: without --gpus or
--cluster a stage runs in its own process and Ray is never imported.
"""
from __future__ import annotations

import argparse
import ctypes
import functools
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from fat2019.util import locks
from fat2019.util.progress import UnitProgress

TAIL_LINES = 20   # of a failed unit's log, printed by the driver
# CPU thread pools of a unit (honoured at start-up by TensorFlow, XLA's and OpenMP's runtimes)
THREAD_VARIABLES = ("TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS", "OMP_NUM_THREADS")
# the driver's options that a unit must not receive: it runs in-process on one device
DRIVER_OPTIONS = ("--gpus", "--cluster", "--strategy", "--logical-cpus")
HEADER = "=== unit "   # begins a unit log's header line; the driver reads the node and GPU from it
PRETEND = "cpu"        # a pretend device's CUDA_VISIBLE_DEVICES value: cpu<i> names no CUDA device
POLL_S = 0.5


class Storage(RuntimeError):
    """A node does not see a path every node must see."""


def add_args(parser: argparse.ArgumentParser) -> None:
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


@dataclass(frozen=True)
class Plan:
    """Where the units go: a local Ray with `gpus` GPUs, or the cluster at `address`."""
    gpus: int = 0
    address: str | None = None
    pretend: bool = False    # local GPUs that do not exist: the units compute on the CPU


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
    try:
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [str(i) for i, line in enumerate(l for l in out.splitlines() if l.startswith("GPU "))]


def unit_argv(argv: list[str], *unit_args: str) -> list[str]:
    """The stage's own arguments for one unit: the driver's, less DRIVER_OPTIONS and their
    values, then `unit_args` (argparse keeps an option's last value)."""
    kept, i = [], 0
    while i < len(argv):
        name = argv[i].split("=", 1)[0]
        if name in DRIVER_OPTIONS:
            has_value = "=" not in argv[i] and i + 1 < len(argv) and not argv[i + 1].startswith("-")
            i += 2 if has_value else 1   # --cluster may come without a value
            continue
        kept.append(argv[i])
        i += 1
    return [*kept, *unit_args]


@dataclass
class Unit:
    label: str                      # e.g. "v1mix fold 3", for messages
    command: list[str]              # the unit's command line (the stage script on one unit)
    log: Path                       # its output is appended here
    is_done: Callable[[], bool]     # whether its work is finished (checked by the driver)
    needs: tuple[Path, ...] = ()    # paths every node must see (the feature cache, models/)
    lock: Path | None = None        # the unit's lock (locks.py), which a retry waits for


@dataclass
class Outcome:
    done: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)   # finished already, or held by another run
    failed: list[str] = field(default_factory=list)
    runs: dict[str, dict] = field(default_factory=dict)   # unit label -> its task's record (node, GPU, times)


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


def unit_env(devices: str, pretend: bool, driver_threads: dict[str, str | None]) -> dict:
    """The unit's environment: pinned to its GPU (a pretend one by a name that is no CUDA
    device), output unbuffered so its log is live, and the driver's CPU thread settings
    (set or unset; Ray sets OMP_NUM_THREADS in its workers): a CPU sums in an order that
    depends on the number of threads, and only with the same ones does a unit equal the
    one-process run bit for bit. To give each unit fewer threads, set them for the driver."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env["CUDA_VISIBLE_DEVICES"] = ",".join(PRETEND + d for d in devices.split(",")) if pretend else devices
    for name, value in driver_threads.items():
        if value is None:
            env.pop(name, None)
        else:
            env[name] = value
    return env


def wait_for_lock(path: str | None, limit_s: float = 120.0) -> None:
    """Until nobody holds the lock at `path` (or `limit_s`): a retried unit's lost attempt
    may still be saving and exiting when the retry starts, and would otherwise make the
    retry skip the unit as held by another run."""
    import fcntl
    deadline = time.monotonic() + limit_s
    while path and time.monotonic() < deadline:
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            return
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            return
        except OSError:
            time.sleep(POLL_S)
        finally:
            os.close(fd)


def run_unit(label: str, command: list[str], log: str, needs: list[str], cwd: str, pretend: bool,
             driver_threads: dict[str, str | None], submitted: float, lock: str | None, log_start: int,
             niceness: int = 0) -> dict:
    """The Ray task: check the shared paths, then run the unit's command with its output
    appended to its log. Returns a record of where and when it ran, and its exit code."""
    import ray

    if new_headers(Path(log), log_start):   # Ray retries this unit: its first attempt's node was lost
        wait_for_lock(lock)

    started = time.time()
    context = ray.get_runtime_context()
    node = f"{ray.util.get_node_ip_address()} {context.get_node_id()[:8]}"
    missing = [p for p in [*needs, cwd, command[0], command[1]] if not os.path.exists(p)]
    if missing:
        raise Storage(f"node {node} ({socket.gethostname()}): {missing[0]} does not exist there; every node must "
                      f"see the repository, the virtualenv, the feature cache and models/ at the same paths "
                      f"(docs/clusters.md)")
    devices = os.environ.get("CUDA_VISIBLE_DEVICES", "")
    env = unit_env(devices, pretend, driver_threads)
    with open(log, "a") as out:
        out.write(f"{HEADER}{stamp()} {label}: started on node {node}, GPU {env['CUDA_VISIBLE_DEVICES']}, "
                  f"{started - submitted:.2f} s after submission: {' '.join(command)}\n")
        out.flush()
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                   env=env, cwd=cwd,
                                   preexec_fn=functools.partial(prepare_unit_process, niceness))
        rc = process.wait()
        ended = time.time()
        out.write(f"=== {stamp()} {label}: exit code {rc} after {ended - started:.1f} s\n")
    return {"rc": rc, "node": node, "gpu": env["CUDA_VISIBLE_DEVICES"], "ray_gpu": devices,
            "submitted": submitted, "started": started, "ended": ended}


def stamp() -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S")


# --- in the driver ----------------------------------------------------------------------------

def connect(chosen: Plan):
    """Start (or join) Ray; returns the ray module. A local Ray keeps all of its traffic on
    127.0.0.1 (Ray binds to the network interface otherwise) and starts no dashboard."""
    if chosen.address is None or on_loopback(chosen.address):
        # read when Ray is imported: this node's address is then 127.0.0.1, not the interface's
        # (a driver joining a loopback cluster from the interface address waits for ever)
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    import ray
    from fat2019.train import ray_scheduler
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
        ray.init(address=chosen.address, **common)
    return ray


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


def new_headers(path: Path, start: int) -> list[str]:
    """The header lines written to `path` from byte `start` on."""
    if not path.is_file():
        return []
    with open(path, "rb") as f:
        f.seek(start)
        text = f.read().decode(errors="replace")
    return [line for line in text.splitlines() if line.startswith(HEADER)]


def log_tail(path: Path, start: int, lines: int = TAIL_LINES) -> str:
    with open(path, "rb") as f:
        f.seek(start)
        text = f.read().decode(errors="replace")
    return "\n".join(text.splitlines()[-lines:])


def where(header: str) -> str:
    """'node 127.0.0.1 1a2b3c4d, GPU 0' from a header line."""
    return ", ".join(header.split(": started on ", 1)[1].split(", ")[:2])


@dataclass
class Submitted:
    unit: Unit
    ref: object
    log_start: int
    attempts_seen: int = 0


def report(job: Submitted, record: dict | None, error: BaseException | None, outcome: Outcome) -> None:
    """One line for a unit that ended (with its log's tail if it failed)."""
    label, log = job.unit.label, job.unit.log
    attempts = len(new_headers(log, job.log_start))
    again = f" (attempt {attempts}: Ray retried it after losing its node)" if attempts > 1 else ""
    if error is not None:
        outcome.failed.append(label)
        cause = getattr(error, "cause", None) or error
        print(f"{label}: FAILED: {type(cause).__name__}: {cause}", file=sys.stderr, flush=True)
        return
    outcome.runs[label] = {**record, "attempts": attempts}
    took = record["ended"] - record["started"]
    at = f"[node {record['node']}, GPU {record['gpu']}] {label}"
    tail = log_tail(log, job.log_start)
    if record["rc"] != 0:
        outcome.failed.append(label)
        print(f"{at}: FAILED (exit code {record['rc']}) after {took:.0f} s{again}; the end of {log}:\n"
              + "\n".join("    " + line for line in tail.splitlines()), file=sys.stderr, flush=True)
    elif job.unit.is_done():
        outcome.done.append(label)
        print(f"{at}: done in {took:.0f} s{again}", flush=True)
    else:   # exited cleanly without finishing: another run holds the unit (its log says who)
        outcome.skipped.append(label)
        lines = [line.strip() for line in tail.splitlines() if line.strip() and not line.startswith("===")]
        note = next((line for line in reversed(lines) if locks.HELD_BY in line), lines[-1] if lines else "no output")
        print(f"{at}: not finished here ({note}); rerun once it is done", flush=True)


def run(units: list[Unit], chosen: Plan, stage: str, *, redo: bool = False) -> Outcome:
    """Run every unit not yet done (all of them with `redo`) as a Ray task needing one GPU;
    Ray queues the ones for which no GPU is free. Returns what was done, skipped, failed."""
    outcome = Outcome()
    pending = []
    for unit in units:
        if not redo and unit.is_done():
            outcome.skipped.append(unit.label)
            print(f"{unit.label}: finished, skipped", flush=True)
        else:
            pending.append(unit)
    if not pending:
        return outcome
    keep_driver_off_the_gpus()
    ray = connect(chosen)
    try:
        gpus = ray.cluster_resources().get("GPU", 0)
        print(f"{stage}: {len(pending)} unit(s) on Ray, {gpus:g} GPU(s) "
              f"({'pretend, ' if chosen.pretend else ''}{chosen.address or 'local'}); each unit's output goes to "
              f"its log", flush=True)
        task = ray.remote(num_gpus=1, num_cpus=0, max_calls=1)(run_unit)
        threads = {name: os.environ.get(name) for name in THREAD_VARIABLES}
        jobs = []
        for unit in pending:
            unit.log = unit.log.resolve()
            unit.log.parent.mkdir(parents=True, exist_ok=True)
            start = log_size(unit.log)
            ref = task.remote(unit.label, unit.command, str(unit.log), [str(Path(p).resolve()) for p in unit.needs],
                              os.getcwd(), chosen.pretend, threads, time.time(),
                              str(unit.lock.resolve()) if unit.lock else None, start,
                              os.getpriority(os.PRIO_PROCESS, 0))
            jobs.append(Submitted(unit, ref, start))
        wait_for(ray, jobs, outcome, UnitProgress(stage, len(pending)))
    except BaseException:   # Ctrl-C, SIGTERM: the units get a SIGTERM too (prepare_unit_process), save and stop
        for job in locals().get("jobs", []):
            ray.cancel(job.ref, force=True)
        raise
    finally:
        ray.shutdown()
    return outcome


def wait_for(ray, jobs: list[Submitted], outcome: Outcome, progress: UnitProgress) -> None:
    """Print each unit's start (read from its log's header: the node and GPU) and end."""
    running = list(jobs)
    while running:
        ready, _ = ray.wait([job.ref for job in running], num_returns=1, timeout=POLL_S)
        for job in running:
            headers = new_headers(job.unit.log, job.log_start)
            for header in headers[job.attempts_seen:]:
                again = f" (attempt {len(headers)})" if len(headers) > 1 else ""
                print(f"[{where(header)}] {job.unit.label}: started{again} (log {job.unit.log})", flush=True)
            job.attempts_seen = len(headers)
        for job in [j for j in running if j.ref in ready]:
            running.remove(job)
            try:
                record, error = ray.get(job.ref), None
            except ray.exceptions.RayError as e:
                record, error = None, e
            report(job, record, error, outcome)
            progress.finished(job.unit.label)


def exit_code(outcome: Outcome) -> int:
    """1, naming the failed units, if any failed; else 0."""
    if outcome.failed:
        print(f"{len(outcome.failed)} unit(s) failed: {', '.join(outcome.failed)} (the end of each log is above); "
              f"rerun the same command to retry them (finished work is kept)", file=sys.stderr)
        return 1
    return 0
