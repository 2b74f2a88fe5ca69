"""One trial of the search, in its Ray Tune worker: a model with the trial's front end and
crop length, trained from scratch on the search's folds by the stages' own loop
(training.fit, with the profile's schedule), each epoch's validation lwlrap reported to
Tune, whose scheduler may end the trial there.

The trial's files are models/<...>/tune/trials/<trial id>/: the training runs (fold<k>.*,
layout.py), its output (trial.log) and `trial.json`, its own record (every epoch's
lwlrap and seconds, and whether it finished), which the search's table reads. A trial
that Tune restarts after the search was killed resumes its fold from the checkpoint
training.fit keeps, and reports only the epochs it has not reported yet.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

from fat2019 import config, layout
from fat2019.tune import space
from fat2019.util.atomic import atomic_write_text

@dataclass(frozen=True)
class Context:
    """What every trial shares: the stage's options (to rebuild its Workspace) and the
    driver's process settings."""
    options: dict                       # vars() of the parsed options
    models_dir: Path                    # the resolved one (the options may leave it to the profile)
    model: str
    folds: tuple[int, ...]
    max_epochs: int                     # of the whole trial: the profile's epochs x folds
    seed: int
    workers: int
    pretend: bool                       # pretend GPUs: hide them from the backend
    niceness: int
    threads: dict                       # the driver's CPU thread settings (ray_scheduler.THREAD_VARIABLES)


def record_path(folder: Path) -> Path:
    return Path(folder) / layout.TRIAL_JSON


def read_record(folder: Path) -> dict:
    path = record_path(folder)
    return json.loads(path.read_text()) if path.is_file() else {"epochs": [], "finished": False}


def prepare_process(context: Context) -> None:
    """Before the backend is imported: the driver's priority and thread settings (Ray
    gives its workers others), and no CUDA device under pretend GPUs."""
    from fat2019.engine import ray_scheduler

    try:
        os.setpriority(os.PRIO_PROCESS, 0, context.niceness)
    except PermissionError:
        pass
    for name, value in context.threads.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
    if context.pretend:
        devices = os.environ.get("CUDA_VISIBLE_DEVICES", "")
        os.environ["CUDA_VISIBLE_DEVICES"] = ",".join(ray_scheduler.PRETEND + d for d in devices.split(","))


def run(trial: dict, context: Context) -> None:
    """The Tune trainable (a function trainable: tune.report after every epoch)."""
    from ray import tune

    trial_id = tune.get_context().get_trial_id()
    args = argparse.Namespace(**context.options)
    folder = layout.trial_dir(context.models_dir, trial_id)
    folder.mkdir(parents=True, exist_ok=True)
    prepare_process(context)
    with open(folder / layout.TRIAL_LOG, "a") as log, contextlib.redirect_stdout(log), \
            contextlib.redirect_stderr(log):
        print(f"=== {time.strftime('%Y-%m-%d %H:%M:%S')} trial {trial_id} (CUDA_VISIBLE_DEVICES "
              f"{os.environ.get('CUDA_VISIBLE_DEVICES', 'unset')}): {json.dumps(trial)}", flush=True)
        train_folds(trial, context, args, folder, trial_id)


def train_folds(trial: dict, context: Context, args: argparse.Namespace, folder: Path, trial_id: str) -> None:
    from ray import tune

    from fat2019.nn.models import build_model
    from fat2019.engine import seeds, training
    from fat2019.engine.workspace import Workspace

    ws = Workspace(args)
    ws.use_precision()
    frontend, duration = space.frontend_of(trial)
    profile = dataclasses.replace(ws.profile, frontend=frontend, duration=duration)
    model_cfg = profile.scale(config.ZOO_BY_NAME[context.model])
    schedule = training.Schedule.curated(profile, model_cfg)
    record = read_record(folder)
    reported = len(record["epochs"])   # epochs Tune has had (a restarted trial skips them)
    fold_scores: dict[int, float] = {}
    done_before = 0                    # epochs of the folds before the current one
    for k in context.folds:
        prefix = layout.fold_prefix(k)
        clock = {"t": time.perf_counter()}

        def on_epoch(row, k=k, base=done_before):
            now = time.perf_counter()
            epoch = base + int(row["epoch"])   # counted over the folds: Tune's time axis
            entry = {"epoch": epoch, "fold": k, "val_lwlrap": float(row["val_lwlrap"]),
                     "seconds": round(now - clock["t"], 2)}
            clock["t"] = now
            record["epochs"] = [e for e in record["epochs"] if e["epoch"] < epoch] + [entry]
            atomic_write_text(record_path(folder), json.dumps(record, indent=1))
            fold_scores[k] = max(fold_scores.get(k, -1.0), entry["val_lwlrap"])
            # the trial's last epoch is reported once fit has finished its run (below): at
            # max_t ASHA ends the trial on its report, which would cut the run short
            if reported < epoch < context.max_epochs:
                tune.report(metrics(record, fold_scores, entry))

        if layout.is_finished(folder, prefix):   # finished before the search was killed
            rows = [e for e in record["epochs"] if e["fold"] == k]
            fold_scores[k] = max(e["val_lwlrap"] for e in rows)
            done_before += len(rows)
            continue
        seed = seeds.unit_seed(context.seed, model_cfg.name, prefix)
        model, _ = training.start_state(lambda: build_model(model_cfg, len(ws.classes)), seed)
        train, val = ws.split(k)
        summary = training.fit(model, train, val, schedule, model_cfg.crop_samples, folder, prefix, seed=seed,
                               label=f"trial {trial_id} fold {k}", workers=context.workers, on_epoch=on_epoch)
        done_before += summary["epochs_run"]
    record["finished"] = True
    atomic_write_text(record_path(folder), json.dumps(record, indent=1))
    tune.report({**metrics(record, fold_scores, record["epochs"][-1]), "finished": True})


def metrics(record: dict, fold_scores: dict[int, float], entry: dict) -> dict:
    """What Tune gets after an epoch: this epoch's lwlrap (the mean with the earlier folds'
    best, when the trial has several folds) on the time axis `epoch`."""
    others = [score for k, score in fold_scores.items() if k != entry["fold"]]
    current = (entry["val_lwlrap"] + sum(others)) / (1 + len(others))
    return {"epoch": entry["epoch"], "val_lwlrap": current, "finished": False,
            "best_val_lwlrap": sum(fold_scores.values()) / len(fold_scores)}
