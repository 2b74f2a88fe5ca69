"""Units of work (fold k of a model, or a model's pretraining) spread over N devices, one
worker process per device: the faithful way to use several GPUs, since every unit trains
exactly as on one GPU (same batch, same learning rate) and units are independent.

The parent process trains nothing. It starts a worker per device, pinned to it with
CUDA_VISIBLE_DEVICES=<device>, hands the next pending unit to whichever worker frees up,
and appends each worker's output to the unit's log (layout.log_path, e.g.
models/<name>/fold<k>.log, between timestamped header and footer lines). A failed unit is
reported with the tail of its log while the others go on; `run` says which failed. Each
worker is the stage script itself on one unit (its own arguments, then `--models <name>
--folds <k> --gpus 1`: argparse keeps the last value), so it takes the unit's lock
(locks.py), skips it if another run holds it, and resumes it if it was interrupted.

Without a visible GPU the devices are pretend ones (`devices`): the processes share the
CPU with TensorFlow's default thread pools, so each fold is bit-identical to the same fold
trained in one process (`worker_env` says why).
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from fat2019.util import locks

TAIL_LINES = 20   # of a failed unit's log, printed by the parent
# thread pools each worker is limited to (honoured at start-up by TensorFlow and OpenMP)
THREAD_VARIABLES = ("TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS", "OMP_NUM_THREADS")


def add_gpus_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--gpus", default="1", metavar="N",
                        help="run N processes side by side, one per GPU, each training one fold (or one model's "
                             "pretraining) at a time with the original batch and lr; 'auto' = every visible GPU. "
                             "Default 1: this process trains everything itself")


def visible_gpus() -> list[str]:
    """The GPUs this process may use: CUDA_VISIBLE_DEVICES when it is set, else the ones
    `nvidia-smi -L` lists (none without the NVIDIA driver)."""
    listed = os.environ.get("CUDA_VISIBLE_DEVICES")
    if listed is not None:
        ids = []
        for d in (d.strip() for d in listed.split(",")):
            if not d or d.startswith("-"):   # CUDA ignores the list from an invalid entry on ("-1": none)
                break
            ids.append(d)
        return ids
    if shutil.which("nvidia-smi") is None:
        return []
    try:
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [str(i) for i, line in enumerate(l for l in out.splitlines() if l.startswith("GPU "))]


def devices(gpus: str) -> list[str]:
    """The CUDA_VISIBLE_DEVICES value of each worker for `--gpus`: N -> the first N visible
    GPUs; 'auto' -> every visible GPU. Without a visible GPU: N pretend devices cpu0, cpu1,
    ... (to run the scheduler on a CPU, as the tests do): not CUDA device names, so each
    worker sees no GPU, even where GPUs exist but were hidden."""
    visible = visible_gpus()
    if gpus == "auto":
        return visible or ["cpu0"]
    try:
        n = int(gpus)
    except ValueError:
        raise SystemExit(f"--gpus {gpus!r}: expected a number of GPUs or 'auto'") from None
    if n < 1:
        raise SystemExit(f"--gpus {n}: expected at least 1")
    if not visible:
        if n > 1:
            print(f"note: --gpus {n} without a visible GPU (CUDA_VISIBLE_DEVICES, nvidia-smi -L): "
                  f"{n} worker processes share the CPU", flush=True)
        return [f"cpu{i}" for i in range(n)]
    if n > len(visible):
        raise SystemExit(f"--gpus {n}: only {len(visible)} GPU(s) visible ({','.join(visible)})")
    return visible[:n]


def take_devices(args: argparse.Namespace) -> list[str]:
    """The workers' devices for `args.gpus`. With several, this process is their parent and
    trains nothing: it keeps off the GPUs, and makes no replicas (args.strategy)."""
    device_list = devices(args.gpus)
    if len(device_list) > 1:
        keep_this_process_off_the_gpus()
        args.strategy = "default"
    return device_list


def keep_this_process_off_the_gpus() -> None:
    """For the parent, which trains nothing: TensorFlow would otherwise take most of every
    visible GPU's memory at its first operation, leaving the workers none."""
    import tensorflow as tf   # here: the rest of the scheduler does not need it
    try:
        tf.config.set_visible_devices([], "GPU")
    except RuntimeError:      # TensorFlow already started in this process (stages run in-process)
        print("warning: TensorFlow already started in this process; it may hold GPU memory the workers need",
              file=sys.stderr)


@dataclass
class Unit:
    label: str                      # e.g. "v1mix fold 3", for messages
    command: list[str]              # the worker's command line
    log: Path                       # its output is appended here
    is_done: Callable[[], bool]     # whether the unit's work is finished (checked before and after)


@dataclass
class Outcome:
    done: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)   # finished already, or held by another run
    failed: list[str] = field(default_factory=list)
    device: dict[str, str] = field(default_factory=dict)   # unit label -> the device it ran on


def worker_command(script: str | Path, argv: list[str], *unit_args: str) -> list[str]:
    """The stage script on one unit: the parent's own arguments, then `unit_args` (e.g.
    --models v1mix --folds 3) and --gpus 1; argparse keeps an option's last value."""
    return [sys.executable, str(script), *argv, *unit_args, "--gpus", "1"]


def is_pretend(device: str) -> bool:
    """A pretend device (`cpu<i>`, no GPU visible): the worker computes on the CPU."""
    return device.startswith("cpu")


def worker_env(device: str, n_workers: int) -> dict[str, str]:
    """The environment of a worker: pinned to `device`, output unbuffered so its log is
    live. On a GPU its CPU thread pools get a share of the cores (unless the user set
    them): they only feed the GPU. On a pretend device they keep their defaults, because
    there they do the model's arithmetic, and a CPU sums in an order that depends on the
    number of threads: with fewer, a fold would not be bit-identical to the same fold of a
    one-process run (measured on the demo: epoch-1 loss 0.346162 vs 0.346174, val LRAP
    0.40 vs 0.44 by epoch 8; with the default pools, identical weights)."""
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": device, "PYTHONUNBUFFERED": "1"}
    if not is_pretend(device):
        share = str(max(1, len(os.sched_getaffinity(0)) // n_workers))
        for name in THREAD_VARIABLES:
            env.setdefault(name, share)
    return env


def log_tail(path: Path, start: int, lines: int = TAIL_LINES) -> str:
    """The last `lines` lines written to `path` from byte `start` on (this attempt's)."""
    with open(path, "rb") as f:
        f.seek(start)
        text = f.read().decode(errors="replace")
    return "\n".join(text.splitlines()[-lines:])


def stamp() -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S")


@dataclass
class Running:
    unit: Unit
    device: str
    process: subprocess.Popen
    log_start: int
    started: float


def start(unit: Unit, device: str, n_workers: int) -> Running:
    unit.log.parent.mkdir(parents=True, exist_ok=True)
    with open(unit.log, "a") as log:
        log_start = log.tell()
        log.write(f"=== {stamp()} {unit.label}: started on device {device}: {' '.join(unit.command)}\n")
        log.flush()
        process = subprocess.Popen(unit.command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                   env=worker_env(device, n_workers))
    return Running(unit, device, process, log_start, time.monotonic())


def finish(job: Running, outcome: Outcome) -> None:
    """Record a worker that exited, append the log's footer and print one line."""
    rc, took = job.process.returncode, time.monotonic() - job.started
    tail = log_tail(job.unit.log, job.log_start)   # this attempt's output, before the footer
    with open(job.unit.log, "a") as log:
        log.write(f"=== {stamp()} {job.unit.label}: exit code {rc} after {took:.1f} s\n")
    where = f"[device {job.device}] {job.unit.label}"
    if rc != 0:
        outcome.failed.append(job.unit.label)
        print(f"{where}: FAILED (exit code {rc}) after {took:.0f} s; the end of {job.unit.log}:\n"
              + "\n".join("    " + line for line in tail.splitlines()), file=sys.stderr, flush=True)
    elif job.unit.is_done():
        outcome.done.append(job.unit.label)
        print(f"{where}: done in {took:.0f} s", flush=True)
    else:   # exited cleanly without finishing: another run holds the unit (its last line says who)
        outcome.skipped.append(job.unit.label)
        lines = [line.strip() for line in tail.splitlines() if line.strip()]
        note = next((line for line in reversed(lines) if locks.HELD_BY in line), lines[-1] if lines else "no output")
        print(f"{where}: not finished here ({note}); rerun once it is done", flush=True)


def stop(running: list[Running]) -> None:
    """Pass a SIGTERM on to the workers (they save and exit, shutdown.py) and wait."""
    for job in running:
        if job.process.poll() is None:
            job.process.terminate()
    for job in running:
        job.process.wait()


def exit_code(outcome: Outcome) -> int:
    """1, naming the failed units, if any failed; else 0."""
    if outcome.failed:
        print(f"{len(outcome.failed)} unit(s) failed: {', '.join(outcome.failed)} (the end of each log is above); "
              f"rerun the same command to retry them (finished work is kept)", file=sys.stderr)
        return 1
    return 0


def run(units: list[Unit], device_list: list[str], *, redo: bool = False, poll_s: float = 0.2) -> Outcome:
    """Run every unit not yet done (all of them with `redo`) on the devices, one worker
    process per device at a time. Returns what was done, skipped and failed."""
    outcome = Outcome()
    pending = deque()
    for unit in units:
        if not redo and unit.is_done():
            outcome.skipped.append(unit.label)
            print(f"{unit.label}: finished, skipped", flush=True)
        else:
            pending.append(unit)
    if pending:
        print(f"scheduler: {len(pending)} unit(s) on {len(device_list)} device(s) ({','.join(device_list)}); "
              f"each unit's output goes to its log", flush=True)
    free, running = deque(device_list), []
    n_workers = min(len(device_list), len(pending))   # fewer units than devices: more threads each
    try:
        while pending or running:
            while pending and free:
                job = start(pending.popleft(), free.popleft(), n_workers)
                running.append(job)
                print(f"[device {job.device}] {job.unit.label}: started (log {job.unit.log})", flush=True)
            time.sleep(poll_s)
            for job in [j for j in running if j.process.poll() is not None]:
                running.remove(job)
                free.append(job.device)
                outcome.device[job.unit.label] = job.device
                finish(job, outcome)
    except BaseException:   # Ctrl-C, SIGTERM (shutdown.Terminated): the workers stop cleanly too
        stop(running)
        raise
    return outcome
