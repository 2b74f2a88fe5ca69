"""Write a synthetic dataset of FSDKaggle2019's real sizes, for the full-size rehearsal.

    .venv/bin/python code/tools/make_full_size_data.py --out /work/rehearsal_data/full              # ~31 GB
    .venv/bin/python code/tools/make_full_size_data.py --out DIR --scale 0.25 --workers 2

4,970 curated, 19,815 noisy and 3,361 test clips (times --scale), curated and test
0.3-30 s (mean 7.6 s), noisy mostly 15 s, the 80 real class names, 1-5 labels per clip in
the real proportions (fat2019/tools/rehearsal/data_plan.py; docs/rehearsal.md). Mono 16-bit
44.1 kHz WAV, in the competition's layout (train_curated.csv, train_noisy.csv,
sample_submission.csv, audio_train/, audio_test/). The audio is cheap (tones over noise);
it exists to give every stage the real counts, lengths and bytes.

A rerun keeps every file already written at its expected size and writes the rest.
"""
from __future__ import annotations

import sys  # noqa: E402
from pathlib import Path  # noqa: E402
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))   # the library, fat2019, is in code/

import argparse
import csv
import io
import json
import multiprocessing
import shutil
import sys
import time
from pathlib import Path

from fat2019 import cli
from fat2019.data.dataset import CURATED_CSV, NOISY_CSV, SUBMISSION_CSV, TEST_AUDIO, TRAIN_AUDIO
from fat2019.tools.rehearsal import data_plan
from fat2019.util.atomic import atomic_write_text
from fat2019.util.progress import Progress

MARKER = "FULL_SIZE_DATASET"
SPLIT_AUDIO = {"curated": TRAIN_AUDIO, "noisy": TRAIN_AUDIO, "test": TEST_AUDIO}
CSV_NAME = {"curated": CURATED_CSV, "noisy": NOISY_CSV}


def load_class_names() -> list[str]:
    from fat2019.data.release import competition_classes   # the one class list file
    return competition_classes()


def write_tables(out: Path, plans: dict, classes: list[str]) -> None:
    for name, csv_name in CSV_NAME.items():
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(["fname", "labels"])
        for f, labels in zip(plans[name].fnames, plans[name].labels):
            w.writerow([f, ",".join(classes[c] for c in labels)])
        atomic_write_text(out / csv_name, buf.getvalue())
    zeros = ",".join("0" for _ in classes)
    lines = ["fname," + ",".join(classes)] + [f"{f},{zeros}" for f in plans["test"].fnames]
    atomic_write_text(out / SUBMISSION_CSV, "\n".join(lines) + "\n")


def _write_one(job: tuple) -> int:
    name, i, path, n, labels, seed = job
    data_plan.write_wav(Path(path), data_plan.render(name, i, n, labels, seed))
    return data_plan.expected_size(n)


def jobs_to_do(out: Path, plans: dict, seed: int) -> list[tuple]:
    jobs = []
    for name, plan in plans.items():
        folder = out / SPLIT_AUDIO[name]
        for i, (f, n) in enumerate(zip(plan.fnames, plan.n_samples)):
            path = folder / f
            if not (path.is_file() and path.stat().st_size == data_plan.expected_size(n)):
                jobs.append((name, i, str(path), int(n), plan.labels[i], seed))
    # longest first: the pool's last chunks are short clips, so no worker idles at the end
    return sorted(jobs, key=lambda j: -j[3])


def room_problem(out: Path, need: int) -> str | None:
    free = shutil.disk_usage(out).free
    if free < need:
        return (f"error: {out} has {free / 1e9:.1f} GB free, the dataset needs {need / 1e9:.1f} GB more; "
                f"free space or pass a smaller --scale")
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="the dataset folder (made if missing)")
    parser.add_argument("--scale", type=float, default=1.0, help="fraction of the real counts, in (0, 1]")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=2, help="writer processes (default 2)")
    args = parser.parse_args(argv)
    if not 0 < args.scale <= 1:
        print(f"error: --scale must be in (0, 1], not {args.scale}", file=sys.stderr)
        return 2
    marker = args.out / MARKER
    settings = {"scale": args.scale, "seed": args.seed, "version": 1}
    if args.out.exists() and any(args.out.iterdir()):
        if not marker.is_file() or json.loads(marker.read_text()) != settings:
            print(f"error: {args.out} is not empty and holds no {MARKER} of these settings {settings}; "
                  f"choose an empty folder", file=sys.stderr)
            return 2
    for sub in set(SPLIT_AUDIO.values()):
        (args.out / sub).mkdir(parents=True, exist_ok=True)
    atomic_write_text(marker, json.dumps(settings) + "\n")

    start = time.perf_counter()
    classes = load_class_names()
    plans = data_plan.make_plan(args.scale, args.seed, len(classes))
    write_tables(args.out, plans, classes)
    jobs = jobs_to_do(args.out, plans, args.seed)
    problem = room_problem(args.out, sum(data_plan.expected_size(j[3]) for j in jobs))
    if problem:
        print(problem, file=sys.stderr)
        return 2
    written = 0
    with Progress(len(jobs), "full-size data", "clip", every=30) as bar:
        if args.workers <= 1:
            results = map(_write_one, jobs)
        else:
            pool = multiprocessing.get_context("fork").Pool(args.workers)
            results = pool.imap_unordered(_write_one, jobs, chunksize=8)
        for size in results:
            written += size
            bar.update()
        if args.workers > 1:
            pool.close()
            pool.join()
    took = time.perf_counter() - start
    total = sum(p.audio_bytes for p in plans.values())
    counts = ", ".join(f"{len(p.fnames)} {n}" for n, p in plans.items())
    print(f"full-size data: {counts} clips in {args.out}; {written / 1e9:.2f} GB written in {took:.1f} s "
          f"({written / 1e6 / max(took, 1e-9):.0f} MB/s), {total / 1e9:.2f} GB of WAV in all")
    return 0


if __name__ == "__main__":
    cli.run_stage(main)
