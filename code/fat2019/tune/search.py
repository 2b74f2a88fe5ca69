"""The search on Ray Tune (docs/tuning.md): the trials (trial.py) drawn from the space by
Tune's BasicVariantGenerator (random search; the profile's own front end is the first
trial, the baseline), weak ones ended by the ASHA scheduler at its rungs, on a local Ray
(one trial at a time on the CPU, or one per GPU with --gpus) or a running cluster.

Resumable: the experiment lives in models/<...>/tune/experiment/, and a rerun continues it
with Tuner.restore (finished trials stay finished; unfinished ones restart and resume
their fold from its checkpoint). Tune's own console output is off; the driver prints one
line per ended trial, with the search's progress and an estimate of the time left.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path

# Tune's own console output out of the way (read when Ray Tune is imported, just below): no
# status tables, no result loggers; its warnings and errors still show.
os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
os.environ.setdefault("RAY_DEDUP_LOGS", "0")

from ray import tune   # noqa: E402  (tune.py imports this module only once a search runs)
from ray.tune.schedulers import ASHAScheduler   # noqa: E402
from ray.tune.search import BasicVariantGenerator   # noqa: E402

from fat2019 import config, layout   # noqa: E402
from fat2019.cli import BadInput   # noqa: E402
from fat2019.engine import ray_scheduler   # noqa: E402
from fat2019.tune import space, trial   # noqa: E402
from fat2019.util import shutdown   # noqa: E402
from fat2019.util.atomic import atomic_write_text   # noqa: E402
from fat2019.util.progress import duration   # noqa: E402

# A failed trial is one line of ours (Announcer), not Tune's logged traceback (in its error file)
for _name in ("ray", "ray.tune", "ray.train", "ray.air"):
    logging.getLogger(_name).setLevel(logging.CRITICAL)

METRIC = "val_lwlrap"
REDUCTION_FACTOR = 2      # ASHA keeps the best half at each rung


@dataclass(frozen=True)
class Search:
    """One experiment: what it searches and how; search.json keeps it, so a rerun with
    other settings is refused rather than mixed into the experiment."""
    space: dict
    model: str
    folds: tuple[int, ...]
    trials: int
    epochs: int               # of each fold (the profile's schedule)
    grace_epochs: int         # ASHA's first rung
    seed: int
    profile: str

    @property
    def max_epochs(self) -> int:
        return self.epochs * len(self.folds)

    def as_json(self) -> dict:
        return json.loads(json.dumps({**self.__dict__, "folds": list(self.folds)}))


def grace_epochs(max_epochs: int) -> int:
    """ASHA's first rung: a quarter of the epochs (at least 1); rungs then double."""
    return max(1, max_epochs // 4)


def settle(tune_dir: Path, search: Search, fresh: bool) -> bool:
    """Whether an experiment is resumed. Refuses (BadInput) to resume one that searched
    something else, naming the settings that differ."""
    saved_path = tune_dir / layout.SEARCH_JSON
    experiment = tune_dir / layout.TUNE_EXPERIMENT
    if fresh:
        import shutil
        for path in (experiment, tune_dir / layout.TRIALS_DIR):
            shutil.rmtree(path, ignore_errors=True)
        for name in (layout.SEARCH_JSON, layout.BEST_FRONTEND_JSON, layout.TRIALS_CSV, layout.TUNE_REPORT_PNG):
            (tune_dir / name).unlink(missing_ok=True)
    resumable = experiment.is_dir() and tune.Tuner.can_restore(str(experiment.resolve()))
    if resumable and saved_path.is_file():
        saved = json.loads(saved_path.read_text())
        differ = [f"{key}: the experiment's {saved.get(key)!r}, given {value!r}"
                  for key, value in search.as_json().items() if saved.get(key) != value]
        if differ:
            raise BadInput(f"{saved_path}: the search in {tune_dir} has other settings:\n  " + "\n  ".join(differ)
                           + "\nrerun with its settings to continue it, or --force to start a new one")
        return True
    tune_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(saved_path, json.dumps(search.as_json(), indent=1) + "\n")
    return resumable


def describe(values: dict) -> str:
    """A trial's settings in one short phrase."""
    f_max = "Nyquist" if values["f_max"] >= space.NYQUIST else f"{values['f_max']:g}"
    return (f"n_mels {values['n_mels']:g}, n_fft {values['n_fft']:g}, hop {values['hop_length']:g}, "
            f"{values['f_min']:g}-{f_max} Hz, amin {values['amin']:g}, top_db {values['top_db']:g}, "
            f"crop {values['duration']:g} s")


class Announcer(tune.Callback):
    """One line per trial that ends (finished, stopped early by ASHA, or failed), with the
    search's progress and the time left. A Tune callback; Tune keeps it in the experiment,
    so it carries only settings and rebuilds its clock at every (re)start."""

    def __init__(self, models_dir: str, max_epochs: int, total: int):
        self.models_dir, self.max_epochs, self.total = models_dir, max_epochs, total

    def setup(self, stop=None, num_samples=None, total_num_samples=None, **info):
        self.started = time.monotonic()
        self.ended_here = 0
        self.ended_before = None

    def on_trial_complete(self, iteration, trials, trial, **info):
        self.announce(trials, trial, None)

    def on_trial_error(self, iteration, trials, trial, **info):
        self.announce(trials, trial, error_summary(trial.error_file))

    def announce(self, trials, ended, error) -> None:
        if self.ended_before is None:
            self.ended_before = sum(t.status in ("TERMINATED", "ERROR") for t in trials if t is not ended)
        self.ended_here += 1
        record = trial.read_record(layout.trial_dir(Path(self.models_dir), ended.trial_id))
        epochs = len(record["epochs"])
        best = max((e["val_lwlrap"] for e in record["epochs"]), default=float("nan"))
        seconds = sum(e["seconds"] for e in record["epochs"])
        if error is not None:
            how = f"FAILED after {epochs}/{self.max_epochs} epochs ({error})"
        elif record["finished"]:
            how = f"finished, {epochs}/{self.max_epochs} epochs"
        else:
            how = f"stopped early by ASHA after {epochs}/{self.max_epochs} epochs"
        done = self.ended_before + self.ended_here
        elapsed = time.monotonic() - self.started
        left = self.total - done
        eta = f", about {duration(elapsed / self.ended_here * left)} left" if left > 0 else ""
        print(f"tune: trial {ended.trial_id} {how}: best lwlrap {best:.4f}, {duration(seconds)} "
              f"({describe(ended.config)})", flush=True)
        print(f"tune: {done}/{self.total} trials ended, {duration(elapsed)} this run{eta}", flush=True)

    def __getstate__(self):   # the settings only: the clock is this run's
        return {"models_dir": self.models_dir, "max_epochs": self.max_epochs, "total": self.total}


def error_summary(error_file: str | None) -> str:
    """The exception's last line, and where the whole traceback is."""
    path = Path(error_file) if error_file else None
    if path is None or not path.is_file():
        return "see its trial.log"
    lines = [line for line in path.read_text(errors="replace").splitlines() if line.strip()]
    return f"{lines[-1].strip() if lines else 'no message'}; traceback in {path}"


def resources(chosen: ray_scheduler.Plan | None) -> dict:
    """Each trial's: one GPU (real or pretend) on Ray's GPUs, else every CPU core (one trial
    at a time: a 2-core CPU gains nothing from two)."""
    if chosen is not None:
        return {"cpu": 0, "gpu": 1}
    return {"cpu": len(os.sched_getaffinity(0))}


def run(models_dir: Path, options: argparse.Namespace, search: Search, profile: config.Profile,
        chosen: ray_scheduler.Plan | None, time_budget: float | None, resume: bool):
    """Run (or continue) the experiment; returns Tune's ResultGrid."""
    tune_dir = layout.tune_dir(models_dir).resolve()
    experiment = tune_dir / layout.TUNE_EXPERIMENT
    if chosen is not None and not chosen.pretend:   # real GPUs only: the driver trains nothing
        ray_scheduler.keep_driver_off_the_gpus()
    ray = ray_scheduler.connect(chosen or ray_scheduler.Plan())
    try:
        context = trial.Context(options=vars(options), models_dir=Path(models_dir).resolve(), model=search.model, folds=search.folds,
                                max_epochs=search.max_epochs, seed=search.seed,
                                workers=options.workers, pretend=bool(chosen and chosen.pretend),
                                niceness=os.getpriority(os.PRIO_PROCESS, 0),
                                threads={name: os.environ.get(name) for name in ray_scheduler.THREAD_VARIABLES})
        trainable = tune.with_resources(tune.with_parameters(trial.run, context=context), resources(chosen))
        if resume:
            print(f"tune: continuing the search in {tune_dir} (Tuner.restore)", flush=True)
            tuner = tune.Tuner.restore(str(experiment), trainable, resume_unfinished=True, resume_errored=True)
        else:
            param_space = {name: tune.choice(values) for name, values in search.space.items()}
            scheduler = ASHAScheduler(time_attr="epoch", max_t=search.max_epochs, grace_period=search.grace_epochs,
                                      reduction_factor=REDUCTION_FACTOR)
            searcher = BasicVariantGenerator(points_to_evaluate=[space.default_point(profile)],
                                             random_state=search.seed)
            concurrent = int(ray.cluster_resources().get("GPU", 0)) if chosen is not None else 1
            tuner = tune.Tuner(
                trainable, param_space=param_space,
                tune_config=tune.TuneConfig(metric=METRIC, mode="max", scheduler=scheduler, search_alg=searcher,
                                            num_samples=search.trials, time_budget_s=time_budget,
                                            max_concurrent_trials=max(1, concurrent)),
                run_config=tune.RunConfig(name=layout.TUNE_EXPERIMENT, storage_path=str(tune_dir), verbose=0,
                                          callbacks=[Announcer(str(models_dir), search.max_epochs, search.trials)],
                                          failure_config=tune.FailureConfig(max_failures=0)))
        return fit_until_stopped(tuner)
    finally:
        ray.shutdown()


class Interrupted(Exception):
    """Ctrl-C or SIGTERM stopped the search; Tune saved the experiment first."""


def fit_until_stopped(tuner):
    """tuner.fit(), with SIGTERM handled as Tune handles Ctrl-C (SIGINT): it stops the
    trials and saves the experiment's state one last time, so that a rerun continues it
    with the finished trials finished (Ray's own SIGTERM handler, set by ray.init, would
    abort the driver instead). Raises shutdown.Terminated or Interrupted when stopped."""
    terminated = []

    def as_sigint(signum, frame):
        terminated.append(signum)
        os.kill(os.getpid(), signal.SIGINT)   # Tune's handler while it runs

    previous = signal.signal(signal.SIGTERM, as_sigint)
    try:
        grid = tuner.fit()
    finally:
        signal.signal(signal.SIGTERM, previous)
    unfinished = len(grid) - grid.num_terminated - grid.num_errors
    if terminated or unfinished:
        print(f"tune: {'terminated (SIGTERM)' if terminated else 'interrupted'}: the experiment is saved; "
              f"rerun the same command to continue it", file=sys.stderr, flush=True)
        if terminated:
            raise shutdown.Terminated(shutdown.EXIT_CODE)
        raise Interrupted()
    return grid


def trials_of(grid) -> list[tuple[str, dict, bool]]:
    """(trial id, configuration, failed) of every trial of the experiment."""
    found = []
    for result in grid:
        trial_id = result.metrics.get("trial_id") or trial_id_of_path(result.path)
        found.append((trial_id, dict(result.config), result.error is not None))
    return found


def trial_id_of_path(path: str) -> str:
    """A trial's id from its Tune folder's name (<trainable>_<id>_<index>_<settings>...),
    for a trial that failed before it reported anything."""
    return "_".join(Path(path).name.split("_")[1:3])
