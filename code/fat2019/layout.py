"""The on-disk layout of models/ and submissions/: every artifact's name, and the checks of
what is finished, defined once. Stage scripts name their files through this module and
never import one another.

    models/
        run.json                     the record of the run: profile, zoo, classes, versions
        folds.csv                    fname, fold (folds.py)
        <model>/
            pretrain.*               the noisy pretraining run (files of a run: below)
            fold<k>.*                the training run of fold k
            fold<k>.oof.csv          fold k's predictions of its own validation clips
            fold<k>.test.csv         fold k's predictions of the test clips
            oof.csv, test.csv        every fold gathered: out-of-fold rows, mean test rows
            history.csv, report.png  every fold's epochs, and their plot
        stacker/
            fold<k>.weights.h5       the stacker of fold k
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
    <prefix>.json                    written last: the run is finished
    <prefix>.last.keras, <prefix>.state.json
                                     the resume point while the run is unfinished
    <prefix>.lock                    held (an OS lock, locks.py) while a process works on the run
    <prefix>.log                     the output of the Ray tasks that ran it (ray_scheduler.py)
"""
from __future__ import annotations

import re
from pathlib import Path

FOLDS_CSV = "folds.csv"
RUN_JSON = "run.json"                 # models/: the record of the run (run_record.py)
PRETRAIN = "pretrain"                 # the prefix of a model's noisy pretraining run
HISTORY_CSV = "history.csv"           # models/<model>/: every fold's epochs
REPORT_PNG = "report.png"             # models/<model>/ and submissions/: the stage's figure
TENSORBOARD_DIR = "tensorboard"       # models/<model>/tensorboard/<prefix>/
OOF_CSV, TEST_CSV = "oof.csv", "test.csv"
FOLD_OOF_SUFFIX, FOLD_TEST_SUFFIX = ".oof.csv", ".test.csv"
# a model's prediction CSVs, whichever exist: each holds the class list in its header
PREDICTION_CSV_PATTERNS = (OOF_CSV, TEST_CSV, f"fold*{FOLD_OOF_SUFFIX}", f"fold*{FOLD_TEST_SUFFIX}")
STACKER_DIR = "stacker"
STACKER_JSON = "stacker.json"

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


def fold_prefix(fold: int) -> str:
    return f"fold{fold}"


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


def temporary(path: Path) -> Path:
    """Where `path` is written before it is moved into place: `.tmp` before its suffixes
    (fold0.tmp.weights.h5), so Keras still sees the extension it requires."""
    path = Path(path)
    stem, dot, suffixes = path.name.partition(".")
    return path.with_name(f"{stem}.tmp{dot}{suffixes}")


def temporaries(folder: Path, prefix: str) -> list[Path]:
    """What a killed run of `prefix` may have left mid-write (`temporary`)."""
    return list(Path(folder).glob(f"{prefix}.*tmp*"))


def tensorboard_dir(folder: Path, prefix: str) -> Path:
    return Path(folder) / TENSORBOARD_DIR / prefix


def lock_path(folder: Path, prefix: str) -> Path:
    return Path(folder) / f"{prefix}.lock"


def log_path(folder: Path, prefix: str) -> Path:
    return Path(folder) / f"{prefix}.log"


def run_json(models_dir: Path) -> Path:
    return Path(models_dir) / RUN_JSON


def is_finished(folder: Path, prefix: str) -> bool:
    """The run's marker (<prefix>.json, written last) and its weights both exist."""
    return summary_path(folder, prefix).is_file() and weights_path(folder, prefix).is_file()


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


def is_predicted(folder: Path, k: int) -> bool:
    """Fold k is trained and its predictions are not older than its weights."""
    prefix = fold_prefix(k)
    if not is_finished(folder, prefix):
        return False
    trained = weights_path(folder, prefix).stat().st_mtime_ns
    return all(p.is_file() and p.stat().st_mtime_ns >= trained for p in fold_predictions(folder, k))


def missing_folds(folder: Path, n_folds: int) -> list[int]:
    """Folds not yet trained and predicted."""
    return [k for k in range(n_folds) if not is_predicted(folder, k)]


def is_gathered(folder: Path, n_folds: int) -> bool:
    """oof.csv and test.csv exist and were gathered after every fold's predictions."""
    if missing_folds(folder, n_folds) or not all(p.is_file() for p in gathered(folder)):
        return False
    newest_fold = max(p.stat().st_mtime_ns for k in range(n_folds) for p in fold_predictions(folder, k))
    return all(p.stat().st_mtime_ns >= newest_fold for p in gathered(folder))


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
