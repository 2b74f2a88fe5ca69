"""The demo's reference digits per kind of CPU, and whether a run printed them.

A CPU run's last digits depend on the kernels oneDNN picks, i.e. on the ISA level the
`machine:` line names (docs/reproducibility-across-cpus.md). reference_digits.csv, beside
this module, holds one row per level: the stacker's CV LRAP / CV lwlrap / test lwlrap of a
whole `sh run.sh` (the demo, TensorFlow, no options) on such a CPU, with the date and the
commit it was measured at. The README's table is this file (tests/test_docs.py checks
it). run.sh ends by saying which row this machine matches and whether the digits equal it:

    python -m fat2019.eval.reference_digits --data-dir input/demo --submissions-dir submissions/demo
"""
from __future__ import annotations

import argparse
import csv
import os
from dataclasses import dataclass
from pathlib import Path

TABLE = Path(__file__).with_suffix(".csv")   # reference_digits.csv, beside this module
SPREAD = "compare within the spread (README, 'How much the scores move')"
NO_REFERENCE = "no reference digits for this CPU yet; " + SPREAD


@dataclass(frozen=True)
class Reference:
    level: str
    cpu: str
    digits: tuple[str, str, str]   # CV LRAP, CV lwlrap, test lwlrap, as printed (4 decimals)
    measured: str
    commit: str
    source: str


def load(path: Path = TABLE) -> dict[str, Reference]:
    with open(path, newline="") as f:
        return {r["level"]: Reference(r["level"], r["cpu"], (r["cv_lrap"], r["cv_lwlrap"], r["test_lwlrap"]),
                                      r["measured"], r["commit"], r["source"]) for r in csv.DictReader(f)}


def digits(scores) -> tuple[str, ...]:
    return tuple(f"{s:.4f}" for s in scores)


def verdict(level: str | None, run: tuple[str, ...] | None, references: dict[str, Reference],
            why_not_comparable: str | None = None) -> str:
    """One line: the reference row of this machine's oneDNN level, and whether `run` (the
    stacker's three scores as printed) equals it."""
    ref = references.get(level or "")
    if ref is None:
        return f"digits: {NO_REFERENCE} (oneDNN {level or 'unknown'})"
    head = (f"digits: oneDNN {level}: the README's row for it ({ref.cpu}, measured {ref.measured} at "
            f"{ref.commit}) has the stacker at {' / '.join(ref.digits)}")
    if why_not_comparable:
        return f"{head}; not compared: {why_not_comparable}"
    if run is None:
        return f"{head}; this run's stacker scores are missing"
    if tuple(run) == ref.digits:
        return f"{head}; this run printed the same digits"
    return f"{head}; this run printed {' / '.join(run)}: other digits, {SPREAD}"


def stacker_digits(data_dir: Path, submissions_dir: Path) -> tuple[str, ...] | None:
    """The stacker's CV LRAP, CV lwlrap and test lwlrap, as ensemble.py prints them, from
    its files: stacker_oof.csv against train_curated.csv, submission.csv against
    test_labels.csv. None when one is missing."""
    from fat2019 import layout
    from fat2019.data.dataset import load_dataset, read_rows, read_test_labels
    from fat2019.ensemble.predictions import read_predictions
    from fat2019.eval.metrics import lrap, lwlrap

    oof_csv, sub_csv = submissions_dir / layout.STACKER_OOF_CSV, submissions_dir / layout.SUBMISSION_CSV
    if not (oof_csv.is_file() and sub_csv.is_file()):
        return None
    dataset = load_dataset(data_dir, check_files=False)
    truth = read_test_labels(data_dir, dataset)
    if truth is None:
        return None
    # the clips ensemble.py scored: the curated ones in the feature cache (bad files skipped)
    fnames = [fields[0] for _, fields in read_rows(oof_csv)[1]]
    row = {f: i for i, f in enumerate(dataset.curated.fnames)}
    y = dataset.curated.labels[[row[f] for f in fnames]]
    oof = read_predictions(oof_csv, fnames, dataset.classes)
    test = read_predictions(sub_csv, dataset.test.fnames, dataset.classes)
    return digits((lrap(y, oof), lwlrap(y, oof), lwlrap(truth, test)))


def why_not_comparable(options: str, environ) -> str | None:
    """Why a run cannot print the reference digits whatever its CPU, or None."""
    if options.strip():
        return f"the reference runs had no options, this one had {options.strip()}"
    backend = environ.get("KERAS_BACKEND", "tensorflow")
    if backend != "tensorflow":
        return f"the reference runs used TensorFlow, this one {backend}"
    return None


def main(argv: list[str] | None = None) -> int:
    from fat2019.util import machine

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--submissions-dir", type=Path, required=True)
    parser.add_argument("--options", default="", help="the options the run was given (the reference has none)")
    args = parser.parse_args(argv)
    why = why_not_comparable(args.options, os.environ)
    run = None if why else stacker_digits(args.data_dir, args.submissions_dir)
    print(verdict(machine.onednn_level(), run, load(), why))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
