"""What Ray's scheduling costs: the demo's train.py on one model (v1mix, from scratch, its
folds) run three times on the same data: in one process, with `--gpus 2 --ray-workers
fresh` (each unit a new process) and with `--gpus 2` (warm workers: one long-lived
process per GPU running unit after unit, reusing the model it built), both on pretend
GPUs on a machine without one. Per unit: the seconds from submission until its task
started, and until the fold started training (Python, the backend's import, the data),
its first epoch's excess over its last (building and tracing the model's functions), and
the overhead in all (the task's time less its epochs at the last epoch's pace) against
its epochs. Prints a Markdown section for BENCHMARKS.md.

    .venv/bin/python code/tools/bench_ray.py                     # makes the demo data if needed
    .venv/bin/python code/tools/bench_ray.py --work /tmp/bench_ray --epochs 2 --folds 4

Takes about 10 minutes on 2 shared cores with `--epochs 2 --folds 4` (BENCHMARKS.md, "Ray").
"""
from __future__ import annotations

import sys  # noqa: E402
from pathlib import Path  # noqa: E402
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))   # the library, fat2019, is in code/

from fat2019 import cli, config
from fat2019.util import machine
import argparse
import os
import re
import subprocess
import sys
import time
from pathlib import Path

CODE = Path(__file__).resolve().parents[1]     # the stage scripts
REPO = CODE.parent
EPOCH_LINE = re.compile(r"^(?P<unit>\S+ fold \d+) epoch +\d+/\d+ .* (?P<seconds>\d+)s$")
HEADER = re.compile(r"^=== unit \S+ (?P<clock>\S+) .*?: started on node .*?, (?P<after>[\d.]+) s after submission"
                    r"(, warm worker pid (?P<pid>\d+) unit (?P<served>\d+))?")
TRAINING = re.compile(r"^train: unit \d+/\d+: .*, starting at (?P<clock>\S+)$")
EXIT = re.compile(r"^=== .*: exit code 0 after (?P<seconds>[\d.]+) s$")


def run(command: list[str], log: Path) -> float:
    """Run a stage with its output in `log`; its wall time in seconds."""
    began = time.perf_counter()
    with open(log, "w") as out:
        rc = subprocess.run(command, stdout=out, stderr=subprocess.STDOUT, cwd=REPO).returncode
    if rc != 0:
        raise SystemExit(f"{' '.join(command)} failed (exit code {rc}); see {log}")
    return time.perf_counter() - began


def epoch_seconds(text: str) -> dict[str, list[int]]:
    """unit -> its epochs' seconds (whole seconds, as the epoch lines print them), from a training log."""
    epochs: dict[str, list[int]] = {}
    for line in text.splitlines():
        m = EPOCH_LINE.match(line.strip())
        if m:
            epochs.setdefault(m["unit"], []).append(int(m["seconds"]))
    return epochs


def seconds_of(clock: str) -> int:
    """Seconds since midnight of HH:MM:SS."""
    h, m, sec = (int(part) for part in clock.split(":"))
    return 3600 * h + 60 * m + sec


def units(folder: Path, folds: int) -> list[tuple]:
    """Per fold of a --gpus run: (fold, worker's unit number or None, whether it reused a
    built model, submission -> task start, submission -> training, task, its epochs' seconds)."""
    from fat2019.engine.training import REUSED   # here: --help stays free of Keras
    rows = []
    for k in range(folds):
        text = (folder / "v1mix" / f"fold{k}.log").read_text()
        header = next(m for m in map(HEADER.match, text.splitlines()) if m)
        training = next(m for m in map(TRAINING.match, text.splitlines()) if m)
        after = float(header["after"])
        to_training = after + seconds_of(training["clock"]) - seconds_of(header["clock"])
        took = next(float(m["seconds"]) for m in map(EXIT.match, text.splitlines()) if m)
        rows.append((k, header["served"], REUSED in text, after, to_training, took,
                     epoch_seconds(text)[f"v1mix fold {k}"]))
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, default=Path("/tmp/bench_ray"), help="scratch folder (default %(default)s)")
    parser.add_argument("--data-dir", type=Path, help="demo data with its feature cache (default: made in --work)")
    parser.add_argument("--epochs", type=int, help="epochs per fold (default: the demo profile's)")
    parser.add_argument("--folds", type=int, default=3, help="folds (default %(default)s, the demo profile's): "
                                                              "with 2 workers, all but 2 are a worker's later unit")
    args = parser.parse_args()
    py = sys.executable
    data = args.data_dir or args.work / "demo"
    args.work.mkdir(parents=True, exist_ok=True)
    if not (data / "features").is_dir():
        run([py, str(CODE / "make_demo_data.py"), "--out", str(data), "--noisy", "0", "--test", "0", "--force"],
            args.work / "make_demo_data.log")
        run([py, str(CODE / "features.py"), "--data-dir", str(data), "--profile", "demo", "--sets", "curated"],
            args.work / "features.log")
    common = [py, str(CODE / "train.py"), "--profile", "demo", "--data-dir", str(data), "--models", "v1mix",
              "--from-scratch", "--set", f"n_folds={args.folds}", *([f"epochs={args.epochs}"] if args.epochs else [])]
    load = os.getloadavg()
    one = run([*common, "--models-dir", str(args.work / "one")], args.work / "one.log")
    fresh = run([*common, "--models-dir", str(args.work / "fresh"), "--gpus", "2", "--ray-workers", "fresh"],
                args.work / "fresh.log")
    warm = run([*common, "--models-dir", str(args.work / "warm"), "--gpus", "2"], args.work / "warm.log")
    load = [max(a, b) for a, b in zip(load, os.getloadavg())]

    in_process = epoch_seconds((args.work / "one.log").read_text())
    demo_epochs = config.PROFILES["demo"].epochs
    print("| workers | fold | worker's unit | reused a built model | submission -> task start (s) "
          "| submission -> training (s) | first epoch - last epoch (s) | task (s) | its epochs (s) "
          "| overhead (s) | overhead / its epochs | overhead / a demo fold's epochs | epochs in one process (s) |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for name in ("fresh", "warm"):
        for k, served, reused, after, to_training, took, epochs in units(args.work / name, args.folds):
            # everything but its epochs at the pace of the last one, which traces nothing
            overhead = took - len(epochs) * epochs[-1]
            print(f"| {name} | {k} | {served or '-'} | {'yes' if reused else 'no'} | {after:.2f} | {to_training:.0f} "
                  f"| {epochs[0] - epochs[-1]} | {took:.1f} | {sum(epochs)} | {overhead:.1f} "
                  f"| {overhead / sum(epochs):.0%} | {overhead / (demo_epochs * epochs[-1]):.0%} "
                  f"| {sum(in_process[f'v1mix fold {k}'])} |")
    print("\n" + f"train.py --models v1mix --from-scratch (demo, {args.folds} folds): one process {one:.0f} s, "
          f"--gpus 2 fresh {fresh:.0f} s ({one / fresh:.2f}x), --gpus 2 warm {warm:.0f} s ({one / warm:.2f}x); "
          f"load average during the runs up to {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} on {os.cpu_count()} "
          f"cores; {machine.summary()}")
    return 0


if __name__ == "__main__":
    cli.run_stage(main)
