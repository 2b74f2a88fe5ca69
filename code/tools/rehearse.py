"""The full-size rehearsal: every stage of the pipeline at FSDKaggle2019's counts and shapes,
measured (docs/rehearsal.md). Not part of the test suite: at full size it takes hours here.

    .venv/bin/python code/tools/make_full_size_data.py --out /work/rehearsal_data/s025 --scale 0.25
    .venv/bin/python code/tools/rehearse.py --data /work/rehearsal_data/s025 --work /work/rehearsal_data/work_s025
    .venv/bin/python code/tools/rehearse.py --report W1/rehearsal.json W2/rehearsal.json   # the BENCHMARKS.md section

The `full` profile with only the width (1/16) and the schedule (1 epoch, 1 pretraining
epoch) cut: 10 folds, 5 s crops, 3-TTA of every OOF and test clip, the stacker's 1000-epoch
budget with patience 15, global features of 15 s clips, all as the original. Stages:
features (and, with --fault-check, the noisy set's cache rebuilt, killed at half and
resumed, compared by checksum with the uninterrupted one), the host feed (feed.py), the stacker at
4,970 x 80 x 7 (stacker_probe.py), pretrain, train, predict, ensemble. Each one's clips,
wall time, peak RSS and disk go to <work>/rehearsal.json, written after every stage; a
rerun skips the stages that finished.
"""
from __future__ import annotations

import sys  # noqa: E402
from pathlib import Path  # noqa: E402
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))   # the library, fat2019, is in code/

import argparse
import hashlib
import json
import os
import shutil
import sys
from pathlib import Path

from fat2019 import cli
from fat2019.data.dataset import CURATED_CSV
from fat2019.data.feature_cache import INDEX
from fat2019.tools.rehearsal import report
from fat2019.tools.rehearsal.measure import python_script, run_stage
from fat2019.util.atomic import atomic_write_text

CODE = Path(__file__).resolve().parents[1]     # the stage scripts
ROOT = CODE.parent
RESULTS = "rehearsal.json"
# Only the width and the schedule differ from the original's `full` profile.
SETTINGS = ["width=0.0625", "epochs=1", "lr_milestones=1", "pretrain_epochs=1", "pretrain_lr_milestones=1",
            "pretrain_keep_from_epoch=0"]
DEFAULT_MODELS = ["v1mix"]
FEED_BATCHES = 150
STAGES = ("features", "feed", "stacker", "pretrain", "train", "predict", "ensemble")


def clip_counts(data: Path) -> dict[str, int]:
    import pandas as pd
    from fat2019.data.dataset import CURATED_CSV, NOISY_CSV, SUBMISSION_CSV
    return {name: len(pd.read_csv(data / csv, usecols=["fname"]))
            for name, csv in (("curated", CURATED_CSV), ("noisy", NOISY_CSV), ("test", SUBMISSION_CSV))}


def checksums(folder: Path) -> dict[str, str]:
    """sha256 of each file of a finished clip-set cache."""
    out = {}
    for path in sorted(Path(folder).iterdir()):
        if path.is_file():
            h = hashlib.sha256()
            with open(path, "rb") as f:
                while chunk := f.read(1 << 24):
                    h.update(chunk)
            out[path.name] = h.hexdigest()
    return out


def partial_rows(folder: Path) -> int:
    path = folder / "noisy.partial" / "rows.csv"
    try:
        with open(path, "rb") as f:
            return max(0, f.read().count(b"\n") - 1)
    except FileNotFoundError:
        return 0


class Rehearsal:
    def __init__(self, args):
        self.args, self.work = args, args.work
        self.work.mkdir(parents=True, exist_ok=True)
        self.log = self.work / "rehearsal.log"
        self.path = self.work / RESULTS
        self.results = json.loads(self.path.read_text()) if self.path.is_file() else {"stages": {}}
        self.counts = clip_counts(args.data)
        scale = json.loads((args.data / "FULL_SIZE_DATASET").read_text())["scale"] \
            if (args.data / "FULL_SIZE_DATASET").is_file() else None
        self.results.update(scale=scale, counts=self.counts, models=args.models, settings=SETTINGS,
                            cpus=len(os.sched_getaffinity(0)))
        self.common = ["--data-dir", str(args.data), "--features-dir", str(self.work / "features")]
        self.train_args = [*self.common, "--profile", "full", "--models-dir", str(self.work / "models"),
                           "--submissions-dir", str(self.work / "submissions"), "--models", *args.models,
                           "--set", *SETTINGS]

    def save(self) -> None:
        atomic_write_text(self.path, json.dumps(self.results, indent=1))

    def stage(self, name: str, clips: int, argv: list[str], note: str = "", **kw) -> bool:
        done = self.results["stages"].get(name)
        if done and done["returncode"] == 0 and not self.args.redo:
            print(f"{name}: done before ({done['wall_s']} s), skipped")
            return True
        print(f"{name}: running ({clips} clips), log {self.log}", flush=True)
        result = run_stage(name, clips, argv, self.work, self.log, cwd=ROOT, note=note, **kw)
        self.results["stages"][name] = result.as_dict()
        self.save()
        print(f"{name}: rc {result.returncode}, {result.wall_s} s, peak RSS {result.peak_rss_mb} MB, "
              f"disk {result.disk_mb} MB, load {result.load_start}-{result.load_end}", flush=True)
        return result.returncode == 0

    def fault_check(self) -> None:
        """The noisy set's cache built again, killed at half, resumed: equal to the first?

        In place, so the disk holds one noisy cache (the largest, 25 GB at full size): the
        uninterrupted cache's sha256 sums are kept, the cache is removed and rebuilt with the
        kill, and the resumed one is compared with those sums."""
        noisy = self.work / "features" / "noisy"
        half = self.counts["noisy"] // 2
        killed, rerun = "features noisy, killed at 50%", "features noisy, rerun (resumes)"
        if "fault_resume_equal" in self.results and not self.args.redo:
            print(f"fault check: done before (resumed cache equal: {self.results['fault_resume_equal']}), skipped")
            return
        if "fault_reference" not in self.results or self.args.redo:
            if not (noisy / INDEX).is_file():
                print("fault check: no finished noisy cache to compare with; run the features stage first")
                return
            self.results["fault_reference"] = checksums(noisy)
            self.save()
            shutil.rmtree(noisy)
        argv = python_script(CODE, "features.py", *self.common, "--sets", "noisy")
        if killed not in self.results["stages"] or self.args.redo:   # its rc is the kill's, never 0
            self.stage(killed, self.counts["noisy"], argv, kill_when=lambda: partial_rows(noisy.parent) >= half,
                       note=f"SIGKILL at >= {half} rows")
        self.stage(rerun, self.counts["noisy"], argv)
        same = checksums(noisy) == self.results["fault_reference"]
        self.results["fault_resume_equal"] = same
        self.save()
        print(f"resumed cache equals the uninterrupted one (sha256 of every file): {same}")

    def wanted(self, stage: str) -> bool:
        return not self.args.only or stage in self.args.only

    def run(self) -> int:
        feats = self.args.features_dir or self.work / "features"
        c = self.counts
        if self.wanted("features"):
            if not self.stage("features", sum(c.values()), python_script(CODE, "features.py", *self.common),
                              "every clip decoded"):
                return 1
        if self.args.fault_check:
            self.fault_check()
        if self.wanted("feed"):
            self.stage("host feed", c["curated"] + c["noisy"],
                       python_script(CODE, "tools/rehearse.py", "--probe", "feed", str(feats), str(self.path)),
                       "train batches from the curated and noisy caches")
        if self.wanted("stacker"):
            self.stage("stacker, 6 models + average", c["curated"],
                       python_script(CODE, "tools/rehearse.py", "--probe", "stacker", str(self.args.data), str(self.path)),
                       f"inputs {c['curated']} x 80 x 7, 10 folds, 1000-epoch budget, patience 15")
        later = [
            ("pretrain", c["noisy"], "pretrain.py", "1 epoch on the noisy set; val = curated, 3-TTA"),
            ("train", c["curated"], "train.py", "10 folds x 1 epoch; each fold's val 3-TTA"),
            ("predict", c["curated"] + c["test"], "predict.py", "3-TTA: every OOF clip, the test set x 10 folds"),
            ("ensemble", c["curated"], "ensemble.py", "weighted average + stacker (1000 / patience 15)"),
        ]
        for name, clips, script, note in [step for step in later if self.wanted(step[0])]:
            extra = ["--workers", "2"] if script != "ensemble.py" else []
            if not self.stage(name, clips, python_script(CODE, script, *self.train_args, *extra), note):
                return 1
        return 0


def load_results(path: Path) -> dict:
    """rehearsal.json with the figures beside it merged in: the probes' (feed.json,
    stacker.json), the data generation's (generation.json: {"generation": {...}}) and a
    before/after of the feed (feed_compare.json: {"feed_compare": [rows with "code"]}), and
    notes on a stage's figures (notes.json)."""
    results = json.loads(path.read_text())
    for kind in ("feed", "stacker", "generation", "feed_compare"):
        extra = path.with_name(f"{kind}.json")
        if extra.is_file():
            results.update(json.loads(extra.read_text()))
    notes = path.with_name("notes.json")     # {"stage": "what to know about its figures"}
    if notes.is_file():
        for stage, text in json.loads(notes.read_text()).items():
            if stage in results["stages"]:
                results["stages"][stage]["note"] = "; ".join(filter(None, [results["stages"][stage]["note"], text]))
    return results


def probe(kind: str, target: str, results_path: str) -> int:
    """A measurement run in a process of its own (so its peak RSS is its own); its figures
    go to <kind>.json beside rehearsal.json (the runner rewrites that one after each stage)."""
    path = Path(results_path).with_name(f"{kind}.json")
    results = {}
    if kind == "feed":
        from fat2019.config import SAMPLE_RATE
        from fat2019.tools.rehearsal.feed import batch_rate
        rows = []
        for clip_set in [s for s in ("curated", "noisy") if (Path(target) / s).is_dir()]:
            for threads in (1, 2):
                for cold in (True, False):
                    row = batch_rate(Path(target) / clip_set, threads=threads, n_batches=FEED_BATCHES,
                                     crop_samples=5 * SAMPLE_RATE, cold=cold, epoch=threads)
                    row["set"] = clip_set
                    print(row, flush=True)
                    rows.append(row)
        results["feed"] = rows
    else:
        import numpy as np
        import pandas as pd
        from fat2019.config import PROFILES
        from fat2019.data.dataset import load_dataset
        from fat2019.data.folds import assign_folds
        from fat2019.tools.rehearsal import stacker_probe
        ds = load_dataset(Path(target), check_files=False)
        labels = ds.curated.labels.astype(np.float32)
        profile = PROFILES["full"]
        folds = assign_folds(labels, profile.n_folds, ds.classes)
        results["stacker"] = stacker_probe.run(labels, folds, len(ds.test.fnames), profile)
        print(results["stacker"])
    atomic_write_text(path, json.dumps(results, indent=1))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, help="a dataset of make_full_size_data.py")
    parser.add_argument("--work", type=Path, help="features, models, submissions, rehearsal.json, the log")
    parser.add_argument("--models", nargs="+", default=DEFAULT_MODELS, help="zoo members (default: v1mix)")
    parser.add_argument("--fault-check", action="store_true",
                        help="also rebuild the noisy set's features, killed at 50%% and resumed, and compare checksums")
    parser.add_argument("--redo", action="store_true", help="rerun stages that finished")
    parser.add_argument("--only", nargs="+", choices=STAGES, help="these stages alone (default: all)")
    parser.add_argument("--features-dir", type=Path,
                        help="the host feed's caches, when not <work>/features (e.g. feed.write_plan_cache's)")
    parser.add_argument("--report", nargs="+", type=Path, metavar="JSON",
                        help="write the BENCHMARKS.md section from these rehearsal.json files (smallest scale first; the ratios compare the last two)")
    parser.add_argument("--benchmarks", type=Path, default=ROOT / "BENCHMARKS.md")
    parser.add_argument("--probe", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.probe:
        return probe(*args.probe)
    if args.report:
        missing = [p for p in args.report if not p.is_file()]
        if missing:
            print(f"error: no such results file: {missing}", file=sys.stderr)
            return 2
        report.write_section(args.benchmarks, [load_results(p) for p in args.report])
        print(f"wrote the rehearsal section of {args.benchmarks}")
        return 0
    if not args.data or not args.work:
        parser.error("--data and --work are needed (or --report)")
    if not (args.data / CURATED_CSV).is_file():
        print(f"error: {args.data} has no {CURATED_CSV}; make it with code/tools/make_full_size_data.py",
              file=sys.stderr)
        return 2
    return Rehearsal(args).run()


if __name__ == "__main__":
    cli.run_stage(main)
