"""The on-disk layout of models/ and submissions/: every artifact's name, and the checks of
what is finished, defined once. Stage scripts name their files through this module and
never import one another.

    models/
        run.json                     the record of the run: profile, zoo, classes, versions
        folds.csv                    fname, fold (folds.py)
        jax_cache/                   JAX's persistent compilation cache of Ray's warm workers
        <model>/
            pretrain.*               the noisy pretraining run (files of a run: below)
            fold<k>.*                the training run of fold k
            fold<k>.oof.csv          fold k's predictions of its own validation clips
            fold<k>.test.csv         fold k's predictions of the test clips
            fold<k>.predicted.json   the hashes of the weights those came from, and theirs
            oof.csv, test.csv        every fold gathered: out-of-fold rows, mean test rows
            gathered.json            the hashes of the fold CSVs those came from, and theirs
            history.csv, report.png  every fold's epochs, and their plot
        tune/                        tune.py's search of the log-mel front end
            best_frontend.json       written last: the best trial's front end and crop length
                                     (the stages' --frontend FILE)
            search.json              what is searched (the space, model, folds, trials)
            trials.csv, tune_report.png   every trial's settings and scores, and their plot
            experiment/              Ray Tune's own state (Tuner.restore resumes from it)
            trials/<trial id>/       each trial's training run (the files of a run, below), its
                                     output (trial.log) and its epochs' scores (trial.json)
        stacker/
            fold<k>.weights.h5       the stacker of fold k
            stacker.state.json       while it trains: the folds committed so far (commit.py)
            stacker.json             written last: its models, average and fitted weights,
                                     classes, the calibrations, the submission's combination
    submissions/
        average_oof.csv, average.csv, stacker_oof.csv, stacker.csv, fitted_oof.csv,
        fitted.csv, submission.csv, per_class.csv, report.png
    <folder of an OOF CSV>/inspect/  inspect_oof.py's tables and plot, named <OOF stem>.*
    <tag.py --plot folder>/<file stem>.heatmap.png   tag.py --segments

The files of one training run called <prefix> (training.fit writes them):

    <prefix>.weights.h5              best weights so far; final once <prefix>.json exists
    <prefix>.history.csv             one row per epoch
    <prefix>.json                    the run's summary and provenance: finished once
                                     <prefix>.state.json is gone
    <prefix>.last.keras, <prefix>.state.json
                                     the resume point while the run is unfinished; the
                                     state file is each epoch's commit point (commit.py)
    <prefix>.tmp<epoch>.*            an epoch's files before its commit publishes them
    <prefix>.lock                    held (an OS lock, locks.py) while a process works on the run
    <prefix>.log                     the output of the Ray tasks that ran it (ray_scheduler.py)
"""
from __future__ import annotations

import json
import re
from pathlib import Path

from fat2019.util.digest import file_sha256

FOLDS_CSV = "folds.csv"
RUN_JSON = "run.json"                 # models/: the record of the run (run_record.py)
JAX_CACHE = "jax_cache"               # models/: compiled XLA programs, shared by Ray's warm workers
PRETRAIN = "pretrain"                 # the prefix of a model's noisy pretraining run
HISTORY_CSV = "history.csv"           # models/<model>/: every fold's epochs
REPORT_PNG = "report.png"             # models/<model>/ and submissions/: the stage's figure
TENSORBOARD_DIR = "tensorboard"       # models/<model>/tensorboard/<prefix>/
OOF_CSV, TEST_CSV = "oof.csv", "test.csv"
FOLD_OOF_SUFFIX, FOLD_TEST_SUFFIX = ".oof.csv", ".test.csv"
FOLD_PREDICTED_SUFFIX = ".predicted.json"   # fold<k>: which weights its predictions came from
GATHERED_JSON = "gathered.json"             # which fold predictions oof.csv and test.csv came from
# a model's prediction CSVs, whichever exist: each holds the class list in its header
PREDICTION_CSV_PATTERNS = (OOF_CSV, TEST_CSV, f"fold*{FOLD_OOF_SUFFIX}", f"fold*{FOLD_TEST_SUFFIX}")
TUNE_DIR = "tune"                     # models/: tune.py's search
BEST_FRONTEND_JSON = "best_frontend.json"
SEARCH_JSON = "search.json"
TRIALS_CSV = "trials.csv"
TUNE_REPORT_PNG = "tune_report.png"
TUNE_EXPERIMENT = "experiment"        # Ray Tune's experiment folder (its name in Tune)
TRIALS_DIR = "trials"
TRIAL_LOG = "trial.log"
TRIAL_JSON = "trial.json"             # a trial's own record: each epoch's lwlrap and seconds
STACKER_DIR = "stacker"
STACKER_JSON = "stacker.json"
STACKER_RUN = "stacker"               # models/stacker/: the prefix of its state file while it trains

# the files of one training run <prefix> (module doc)
WEIGHTS_SUFFIX = ".weights.h5"
HISTORY_SUFFIX = ".history.csv"
SUMMARY_SUFFIX = ".json"              # the marker, written last
CHECKPOINT_SUFFIX = ".last.keras"
STATE_SUFFIX = ".state.json"
RUN_SUFFIXES = (SUMMARY_SUFFIX, STATE_SUFFIX, CHECKPOINT_SUFFIX, HISTORY_SUFFIX, WEIGHTS_SUFFIX)

# submissions/
AVERAGE_OOF_CSV, AVERAGE_CSV = "average_oof.csv", "average.csv"
STACKER_OOF_CSV, STACKER_CSV = "stacker_oof.csv", "stacker.csv"
FITTED_OOF_CSV, FITTED_CSV = "fitted_oof.csv", "fitted.csv"
# each combination of the ensemble (config.ENSEMBLE_COMBINATIONS): its (OOF, test) CSVs
COMBINATION_CSVS = {"average": (AVERAGE_OOF_CSV, AVERAGE_CSV), "stacker": (STACKER_OOF_CSV, STACKER_CSV),
                    "fitted": (FITTED_OOF_CSV, FITTED_CSV)}
SUBMISSION_CSV = "submission.csv"     # the test CSV of the combination ensemble.py --combine picks
PER_CLASS_CSV = "per_class.csv"
INSPECT_DIR = "inspect"               # inspect_oof.py writes next to the OOF CSV it reads
INSPECT_TABLES = ("per_class", "folds", "clips", "confusions")   # <OOF stem>.<table>.csv
INSPECT_FIGURE = "confusions.png"                                # <OOF stem>.confusions.png



def inspect_table(folder: Path, stem: str, table: str) -> Path:
    return Path(folder) / f"{stem}.{table}.csv"


def inspect_figure(folder: Path, stem: str) -> Path:
    return Path(folder) / f"{stem}.{INSPECT_FIGURE}"


# tag.py --segments: one figure per file, <file stem><suffix>
HEATMAP_SUFFIX = ".heatmap.png"


FOLD = "fold"                         # fold k's runs are called fold<k>


def fold_prefix(fold: int) -> str:
    return f"{FOLD}{fold}"


FOLD_WEIGHTS = re.compile(r"fold(\d+)" + re.escape(WEIGHTS_SUFFIX))


def fold_numbers_on_disk(folder: Path) -> list[int]:
    """The folds k with a fold<k>.weights.h5 in `folder` (finished or not), sorted."""
    return sorted(int(m.group(1)) for p in Path(folder).glob(f"fold*{WEIGHTS_SUFFIX}")
                  if (m := FOLD_WEIGHTS.fullmatch(p.name)))


def run_file(folder: Path, prefix: str, suffix: str) -> Path:
    return Path(folder) / f"{prefix}{suffix}"


def weights_path(folder: Path, prefix: str) -> Path:
    return run_file(folder, prefix, WEIGHTS_SUFFIX)


def history_path(folder: Path, prefix: str) -> Path:
    return run_file(folder, prefix, HISTORY_SUFFIX)


def summary_path(folder: Path, prefix: str) -> Path:
    return run_file(folder, prefix, SUMMARY_SUFFIX)


def checkpoint_path(folder: Path, prefix: str) -> Path:
    return run_file(folder, prefix, CHECKPOINT_SUFFIX)


def state_path(folder: Path, prefix: str) -> Path:
    return run_file(folder, prefix, STATE_SUFFIX)


def staged(path: Path, step: int) -> Path:
    """Where epoch (or stacker fold) `step` writes `path` before its commit publishes it
    (commit.py): fold0.tmp3.weights.h5, one name per step, so a resume can tell the
    committed step's files from a killed one's."""
    path = Path(path)
    stem, dot, suffixes = path.name.partition(".")
    return path.with_name(f"{stem}.tmp{step}{dot}{suffixes}")


def temporaries(folder: Path, prefix: str) -> list[Path]:
    """What a killed run of `prefix` may have left staged (`staged`) or mid-write (atomic.py)."""
    return list(Path(folder).glob(f"{prefix}.*tmp*"))


def tensorboard_dir(folder: Path, prefix: str) -> Path:
    return Path(folder) / TENSORBOARD_DIR / prefix


def jax_cache(models_dir: Path) -> Path:
    return Path(models_dir) / JAX_CACHE


def lock_path(folder: Path, prefix: str) -> Path:
    return Path(folder) / f"{prefix}.lock"


def log_path(folder: Path, prefix: str) -> Path:
    return Path(folder) / f"{prefix}.log"


def run_json(models_dir: Path) -> Path:
    return Path(models_dir) / RUN_JSON


def is_finished(folder: Path, prefix: str) -> bool:
    """The run's marker (<prefix>.json) and its weights exist, and its state file is gone
    (deleted last, after the last epoch's files are published: commit.py)."""
    return (summary_path(folder, prefix).is_file() and weights_path(folder, prefix).is_file()
            and not state_path(folder, prefix).is_file())


def pretrain_weights(models_dir: Path, model_name: str) -> Path:
    return weights_path(Path(models_dir) / model_name, PRETRAIN)


# ---------------------------------------------------------------------------------------
# Predictions (predict.py writes them, ensemble.py reads them)
# ---------------------------------------------------------------------------------------

def fold_predictions(folder: Path, k: int) -> tuple[Path, Path]:
    """(out-of-fold CSV, test CSV) of fold k."""
    return run_file(folder, fold_prefix(k), FOLD_OOF_SUFFIX), run_file(folder, fold_prefix(k), FOLD_TEST_SUFFIX)


def gathered(folder: Path) -> tuple[Path, Path]:
    """(oof.csv, test.csv) of a model: every fold gathered."""
    return Path(folder) / OOF_CSV, Path(folder) / TEST_CSV


def predicted_record(folder: Path, k: int) -> Path:
    """fold<k>.predicted.json: the SHA-256 of the weights fold k's predictions came from and of
    those predictions (predict.py writes it after them)."""
    return run_file(folder, fold_prefix(k), FOLD_PREDICTED_SUFFIX)


def gathered_record(folder: Path) -> Path:
    """gathered.json: the SHA-256 of every fold's prediction CSVs oof.csv and test.csv were
    gathered from, and of those two."""
    return Path(folder) / GATHERED_JSON


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None


def _hashes_match(folder: Path, recorded: dict, names: dict[str, Path]) -> bool:
    return all(path.is_file() and recorded.get(key) == file_sha256(path) for key, path in names.items())


def is_predicted(folder: Path, k: int) -> bool:
    """Fold k is trained and its predictions came from its current weights (by hash: the
    weights' recorded in fold<k>.predicted.json, which also holds the CSVs' own)."""
    prefix = fold_prefix(k)
    if not is_finished(folder, prefix):
        return False
    record = _read_json(predicted_record(folder, k))
    if record is None:
        return False
    oof, test = fold_predictions(folder, k)
    return _hashes_match(folder, record, {"weights_sha256": weights_path(folder, prefix),
                                          "oof_sha256": oof, "test_sha256": test})


def missing_folds(folder: Path, n_folds: int) -> list[int]:
    """Folds not yet trained and predicted."""
    return [k for k in range(n_folds) if not is_predicted(folder, k)]


def is_gathered(folder: Path, n_folds: int) -> bool:
    """oof.csv and test.csv exist and were gathered from every fold's current predictions (by hash)."""
    if missing_folds(folder, n_folds):
        return False
    record = _read_json(gathered_record(folder))
    if record is None:
        return False
    oof, test = gathered(folder)
    folds = record.get("folds", {})
    return (_hashes_match(folder, record, {"oof_sha256": oof, "test_sha256": test})
            and all(_hashes_match(folder, folds.get(str(k), {}), dict(zip(("oof_sha256", "test_sha256"),
                                                                            fold_predictions(folder, k))))
                    for k in range(n_folds)))


# ---------------------------------------------------------------------------------------
# The stacker (ensemble.py saves it, tag.py applies it)
# ---------------------------------------------------------------------------------------

def stacker_dir(models_dir: Path) -> Path:
    return Path(models_dir) / STACKER_DIR


def stacker_weights_path(folder: Path, fold: int) -> Path:
    """Fold `fold`'s stacker weights in the stacker folder `folder`."""
    return weights_path(folder, fold_prefix(fold))


def stacker_json(models_dir: Path) -> Path:
    return stacker_dir(models_dir) / STACKER_JSON


def stacker_temporaries(folder: Path) -> list[Path]:
    """What a killed stacker left staged or mid-write in its folder `folder`."""
    return [*temporaries(folder, STACKER_RUN), *Path(folder).glob(f"{FOLD}*.*tmp*")]


# ---------------------------------------------------------------------------------------
# The search of the front end (tune.py)
# ---------------------------------------------------------------------------------------

def tune_dir(models_dir: Path) -> Path:
    return Path(models_dir) / TUNE_DIR


def best_frontend_json(models_dir: Path) -> Path:
    return tune_dir(models_dir) / BEST_FRONTEND_JSON


def trial_dir(models_dir: Path, trial_id: str) -> Path:
    return tune_dir(models_dir) / TRIALS_DIR / trial_id
