"""Where every model came from, and the checks of that chain, by content hash.

A training run's <prefix>.json records (training.fit):

    started_from    {"kind": "pretraining", "file": "<model>/pretrain.weights.h5" (under the
                    models folder), "sha256": ...}, or {"kind": "scratch", "why": ...}
    backend, precision, seed, unit_seed
    weights_sha256  its final weights

predict.py records, per fold, the hash of the weights its predictions came from
(fold<k>.predicted.json) and gathers them with gathered.json (layout.is_predicted,
layout.is_gathered). The links checked:

  - predictions against the weights they came from: a fold retrained since is predicted
    again (predict.py), or refused (ensemble.py) until it is;
  - weights against the pretraining they started from: a fold whose pretraining changed
    since (`pretrain.py --force`, another seed, another machine) is stale. train.py trains
    it again; predict.py and ensemble.py refuse it, naming both files.
"""
from __future__ import annotations

import json
from pathlib import Path

from fat2019 import layout
from fat2019.util.atomic import atomic_write_text
from fat2019.util.digest import file_sha256

FROM_SCRATCH = "--from-scratch"


def scratch(why: str) -> dict:
    return {"kind": "scratch", "why": why}


def pretraining(models_dir: Path, weights: Path) -> dict:
    """A run that starts from the finished pretraining `weights`."""
    return {"kind": "pretraining", "file": Path(weights).relative_to(models_dir).as_posix(),
            "sha256": file_sha256(weights)}


def of_run(started_from: dict, seed: int, unit_seed: int) -> dict:
    """What <prefix>.json records besides its scores: the start, backend, precision, seeds."""
    import keras
    return {"started_from": started_from, "backend": keras.backend.backend(),
            "precision": keras.mixed_precision.global_policy().name, "seed": seed, "unit_seed": unit_seed}


def recorded(folder: Path, prefix: str) -> dict:
    """The run's provenance: its <prefix>.json once finished, its state file while it
    trains; {} for a run without one (trained before runs recorded it)."""
    summary, state = layout.summary_path(folder, prefix), layout.state_path(folder, prefix)
    try:
        if state.is_file():
            return json.loads(state.read_text()).get("provenance", {})
        if summary.is_file():
            return json.loads(summary.read_text())
    except (OSError, ValueError):
        pass
    return {}


def stale_start(models_dir: Path, folder: Path, prefix: str) -> str | None:
    """Why the run `prefix` (finished or under way) no longer matches the pretraining it
    started from, naming both files; None when it does, when it started from scratch, or
    when that pretraining is not in the models folder at all (a folder of copied folds:
    nothing can have changed it; one redone since is compared again once it exists)."""
    start = recorded(folder, prefix).get("started_from") or {}
    if start.get("kind") != "pretraining":
        return None
    source = Path(models_dir) / start["file"]
    if not source.exists() and not layout.state_path(source.parent, layout.PRETRAIN).exists():
        return None   # no pretraining at all (only the folds were copied, or it was deleted): nothing changed it
    now = file_sha256(source) if layout.is_finished(source.parent, layout.PRETRAIN) else None
    if now == start["sha256"]:
        return None
    change = "is now unfinished" if now is None else f"has changed since (now sha256 {now[:12]})"
    return (f"{layout.weights_path(folder, prefix)} was trained from {source} (sha256 {start['sha256'][:12]}), "
            f"which {change}")


def stale_folds(models_dir: Path, folder: Path, folds: list[int]) -> list[str]:
    """stale_start's message for each of `folds` that is stale."""
    return [msg for k in folds if (msg := stale_start(models_dir, folder, layout.fold_prefix(k)))]


def dependents(models_dir: Path, weights: Path, sha256: str) -> list[str]:
    """The fold runs under `models_dir` recorded as started from `weights` with content `sha256`."""
    file = Path(weights).relative_to(models_dir).as_posix()
    found = []
    for folder in sorted(p for p in Path(models_dir).iterdir() if p.is_dir()):
        for k in layout.fold_numbers_on_disk(folder):
            start = recorded(folder, layout.fold_prefix(k)).get("started_from") or {}
            if start.get("file") == file and start.get("sha256") == sha256:
                found.append(str(layout.weights_path(folder, layout.fold_prefix(k))))
    return found


def record_predictions(folder: Path, k: int, weights_sha256: str) -> None:
    """fold<k>.predicted.json, after its CSVs: the weights they came from, and their own hashes."""
    oof, test = layout.fold_predictions(folder, k)
    record = {"weights": layout.weights_path(folder, layout.fold_prefix(k)).name, "weights_sha256": weights_sha256,
              "oof_sha256": file_sha256(oof), "test_sha256": file_sha256(test)}
    atomic_write_text(layout.predicted_record(folder, k), json.dumps(record, indent=1))


def record_gathered(folder: Path, n_folds: int) -> None:
    """gathered.json, after oof.csv and test.csv: the fold CSVs they came from, and their own hashes."""
    oof, test = layout.gathered(folder)
    folds = {str(k): dict(zip(("oof_sha256", "test_sha256"), map(file_sha256, layout.fold_predictions(folder, k))))
             for k in range(n_folds)}
    record = {"oof_sha256": file_sha256(oof), "test_sha256": file_sha256(test), "folds": folds}
    atomic_write_text(layout.gathered_record(folder), json.dumps(record, indent=1))
