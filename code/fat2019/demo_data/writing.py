"""Writing a demo dataset's folder: the CSVs, the audio (rendered in parallel, identical
for any number of processes), and the DEMO_DATASET marker that says this generator wrote
the folder and how, so a rerun with the same settings is a no-op and a folder it did not
write is never overwritten without --force.
"""
from __future__ import annotations

import csv
import json
import multiprocessing
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import soundfile as sf

from fat2019.data.dataset import CURATED_CSV, NOISY_CSV, SUBMISSION_CSV, TEST_AUDIO, TEST_LABELS_CSV, TRAIN_AUDIO
from fat2019.demo_data.plan import SPLIT_AUDIO, SPLITS, ClipPlan, DemoPlan, make_plan
from fat2019.demo_data.synthesis import Recipe, render_clip
from fat2019.util.progress import Progress

# Bump when the recipes or the layout change: a marker of another version is a different
# dataset, so a rerun regenerates instead of keeping stale files.
GENERATOR_VERSION = 1
MARKER_NAME = "DEMO_DATASET"


class RefuseToOverwrite(Exception):
    """The output folder holds something this generator did not write."""


def write_clip(args: tuple[ClipPlan, dict[str, Recipe], str]) -> float:
    """Render one clip and write it as 16-bit PCM wav; returns its duration in seconds."""
    clip, recipes, out_dir = args
    samples = render_clip(clip, recipes)
    path = Path(out_dir) / SPLIT_AUDIO[clip.split] / clip.fname
    sf.write(path, samples, clip.sample_rate, subtype="PCM_16", format="WAV")
    return len(samples) / clip.sample_rate


def write_csv_atomic(path: Path, header: list[str], rows: list[list]) -> None:
    """Write through a temp file in the same folder, then rename: readers never see half a
    CSV, and an interrupted run leaves the old file whole."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", newline="") as f:
            writer = csv.writer(f, lineterminator="\n")
            writer.writerow(header)
            writer.writerows(rows)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def label_rows(clips: list[ClipPlan], true: bool = False) -> list[list[str]]:
    """fname,labels rows sorted by fname, as the competition's CSVs are."""
    rows = [[c.fname, ",".join(c.true_labels if true else c.labels)] for c in clips]
    return sorted(rows)


def marker_content(plan: DemoPlan, sizes: dict, complete: bool) -> dict:
    return {"generator": "make_demo_data.py", "version": GENERATOR_VERSION, "seed": plan.seed,
            "sizes": sizes, "complete": complete}


def read_marker(out_dir: Path) -> dict | None:
    try:
        return json.loads((out_dir / MARKER_NAME).read_text())
    except (OSError, ValueError):
        return None


def is_same_dataset(out_dir: Path, wanted: dict) -> bool:
    """The folder already holds this exact demo dataset, complete: nothing to do."""
    marker = read_marker(out_dir)
    if marker is None or marker != wanted:
        return False
    csvs = (CURATED_CSV, NOISY_CSV, SUBMISSION_CSV, TEST_LABELS_CSV)
    if not all((out_dir / name).is_file() for name in csvs):
        return False
    sizes = wanted["sizes"]
    n_train = len(list((out_dir / TRAIN_AUDIO).glob("*.wav")))
    n_test = len(list((out_dir / TEST_AUDIO).glob("*.wav")))
    return n_train == sizes["curated"] + sizes["noisy"] and n_test == sizes["test"]


def check_writable(out_dir: Path, force: bool) -> None:
    """Write only into a missing or empty folder, or one this generator made (its marker),
    unless forced: never mix demo clips into, or overwrite, a real dataset."""
    if force or not out_dir.exists() or read_marker(out_dir) is not None:
        return
    if not out_dir.is_dir():
        raise RefuseToOverwrite(f"{out_dir} exists and is not a folder")
    if any(out_dir.iterdir()):
        what = (f"a {CURATED_CSV} not written by this generator"
                if (out_dir / CURATED_CSV).exists() else "files not written by this generator")
        raise RefuseToOverwrite(
            f"{out_dir} holds {what} (no {MARKER_NAME} marker); refusing to overwrite it. "
            f"Choose another --out, or pass --force to write into it anyway.")


def clear_previous_demo(out_dir: Path) -> None:
    """Remove the clips of an earlier demo dataset in this folder, so a dataset of other
    sizes leaves no stale wavs behind. Only done where our marker is."""
    if read_marker(out_dir) is None:
        return
    for sub in (TRAIN_AUDIO, TEST_AUDIO):
        for path in (out_dir / sub).glob("*.wav"):
            path.unlink()


@dataclass
class Summary:
    out_dir: Path
    seed: int
    classes: list[str]
    counts: dict[str, int]
    hours: float
    seconds: float
    skipped: bool                                  # the folder already held this dataset
    noisy_true_labels: dict[str, tuple[str, ...]] = field(default_factory=dict)

    def line(self) -> str:
        c = self.counts
        if self.skipped:
            return (f"{self.out_dir} already holds the demo dataset for seed {self.seed} "
                    f"({c['curated']} curated, {c['noisy']} noisy, {c['test']} test clips, "
                    f"{len(self.classes)} classes); nothing to do")
        return (f"wrote {c['curated']} curated, {c['noisy']} noisy, {c['test']} test clips "
                f"of {len(self.classes)} classes, {self.hours:.2f} h of audio, to {self.out_dir} "
                f"in {self.seconds:.1f} s")


def make_demo_dataset(out_dir: Path | str, seed: int = 0, n_curated: int = 300,
                      n_noisy: int = 300, n_test: int = 150, n_classes: int = 20,
                      force: bool = False, jobs: int = 1, progress: bool = False) -> Summary:
    """Write the demo dataset into `out_dir` (see the module docstring) and summarise it.

    Raises RefuseToOverwrite when `out_dir` holds files this generator did not write
    (unless `force`). Returns at once, writing nothing, when `out_dir` already holds the
    dataset of this seed and these sizes (unless `force`, which always rewrites). `jobs` > 1 renders clips in that many processes;
    the files are the same either way.
    """
    start = time.perf_counter()
    out_dir = Path(out_dir)
    plan = make_plan(seed, n_curated, n_noisy, n_test, n_classes)
    sizes = {"curated": n_curated, "noisy": n_noisy, "test": n_test, "n_classes": n_classes}
    noisy_truth = {c.fname: c.true_labels for c in plan.split("noisy")}
    counts = {s: len(plan.split(s)) for s in SPLITS}
    hours = sum(c.duration for c in plan.clips) / 3600

    if not force and is_same_dataset(out_dir, marker_content(plan, sizes, complete=True)):
        return Summary(out_dir, seed, plan.classes, counts, hours,
                       time.perf_counter() - start, skipped=True, noisy_true_labels=noisy_truth)
    check_writable(out_dir, force)

    # The marker goes first, marked incomplete: an interrupted run leaves a folder this
    # generator may overwrite next time, but never one it would take as finished.
    out_dir.mkdir(parents=True, exist_ok=True)
    clear_previous_demo(out_dir)
    marker_path = out_dir / MARKER_NAME
    marker_path.write_text(json.dumps(marker_content(plan, sizes, complete=False), indent=1) + "\n")
    for sub in (TRAIN_AUDIO, TEST_AUDIO):
        (out_dir / sub).mkdir(exist_ok=True)

    recipes = {r.name: r for r in plan.recipes}
    tasks = [(clip, recipes, str(out_dir)) for clip in plan.clips]
    seconds_of_audio = 0.0
    with Progress(len(tasks), "writing clips", "clip", every=30, disable=not progress) as bar:
        if jobs > 1 and len(tasks) > 1:
            with multiprocessing.get_context("spawn").Pool(jobs) as pool:
                for seconds in pool.imap_unordered(write_clip, tasks, chunksize=4):
                    seconds_of_audio += seconds
                    bar.update()
        else:
            for task in tasks:
                seconds_of_audio += write_clip(task)
                bar.update()

    write_csv_atomic(out_dir / CURATED_CSV, ["fname", "labels"], label_rows(plan.split("curated")))
    write_csv_atomic(out_dir / NOISY_CSV, ["fname", "labels"], label_rows(plan.split("noisy")))
    test_rows = label_rows(plan.split("test"), true=True)
    write_csv_atomic(out_dir / TEST_LABELS_CSV, ["fname", "labels"], test_rows)
    write_csv_atomic(out_dir / SUBMISSION_CSV, ["fname"] + plan.all_classes,
                     [[fname] + [0] * len(plan.all_classes) for fname, _ in test_rows])
    marker_path.write_text(json.dumps(marker_content(plan, sizes, complete=True), indent=1) + "\n")

    return Summary(out_dir, seed, plan.classes, counts, seconds_of_audio / 3600,
                   time.perf_counter() - start, skipped=False, noisy_true_labels=noisy_truth)
