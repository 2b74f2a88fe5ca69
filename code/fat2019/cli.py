"""How every script in code/ is built: its options, its errors and its exit code.

    parser = cli.script_parser(__doc__)        # or cli.stage_parser(...) for a training-side stage
    ...
    if __name__ == "__main__":
        cli.run_stage(main)

`run_stage` runs a script's main(): bad input and missing prerequisites (a DatasetError,
NotReady, BadInput, a missing file) become one line `error: ...` naming the file and the
problem, exit code 2 (docs/cli.md); Python warnings print as one line `warning: ...`;
SIGTERM exits cleanly (util/shutdown.py).

This module imports only the standard library and config: a script imports TensorFlow,
Keras or JAX (and numpy-heavy modules) inside main(), after its options are parsed, so
`--help` answers at once. Scripts import this module first: it sets TensorFlow's C++ log
level (unless the user set one) before anything imports TensorFlow, so the logs start
without its start-up INFO lines, and on a machine without a GPU without XLA's cuInit
error (native_log_level).
"""
from __future__ import annotations

import argparse
import os
import sys
import warnings
from pathlib import Path


def native_log_level(devices: str = "/dev", environ=os.environ) -> str:
    """TensorFlow's C++ log level for this machine: 2 (errors only) where a GPU may be
    seen; 3 where none can be (no /dev/nvidia<N>, or CUDA_VISIBLE_DEVICES names no CUDA
    device), because there every process's first line would be XLA's
    `E ... cuda_platform.cc:51] failed call to cuInit: ... (303)`, an error about a GPU
    that is not there. A user's TF_CPP_MIN_LOG_LEVEL wins (0 shows everything)."""
    visible = environ.get("CUDA_VISIBLE_DEVICES")
    hidden = visible is not None and not any(d.strip().isdigit() or d.strip().startswith(("GPU-", "MIG-"))
                                             for d in visible.split(","))
    return "3" if hidden or not any(Path(devices).glob("nvidia[0-9]*")) else "2"


os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", native_log_level())

from fat2019 import config

BAD_INPUT = 2   # the exit code of bad input or a missing prerequisite
PACKAGE_DIR = Path(__file__).resolve().parent
SCRIPTS_DIR = PACKAGE_DIR.parent


class BadInput(Exception):
    """The user's input cannot be used; the message names the file and the problem."""


class NotReady(Exception):
    """What a stage needs from earlier stages is missing (e.g. folds that another machine
    has not trained yet); the message names it."""


def script_parser(description: str) -> argparse.ArgumentParser:
    """A script's parser: its docstring as the description, layout kept (the examples)."""
    return argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)


def add_common_args(parser: argparse.ArgumentParser, *, features: bool = True, submissions: bool = True,
                    overrides: bool = True) -> None:
    """--profile, --data-dir, --models-dir, and the folder and profile options a script uses
    (settings.resolve decides the run's settings from them)."""
    g = parser.add_argument_group("profile and folders")
    g.add_argument("--profile", choices=sorted(config.PROFILES), default=None,
                   help="hyperparameter set: 'full' = the original's (default for real data: input/ with "
                        "train_curated.csv, or any --data-dir but input/demo), 'demo' = small and fast, "
                        "made for the generated demo data (default otherwise)")
    g.add_argument("--data-dir", type=Path, help="the data (default: the profile's, input/ or input/demo/)")
    if features:
        g.add_argument("--features-dir", type=Path, help="feature cache (default: <data-dir>/features)")
    g.add_argument("--models-dir", type=Path,
                   help="folds, weights, predictions (default: models/ or models/demo/; for a --data-dir other "
                        "than the profile's, <data-dir>/models/<profile>)")
    if submissions:
        g.add_argument("--submissions-dir", type=Path,
                       help="submission CSVs (default: submissions/ or submissions/demo/; for a --data-dir "
                            "other than the profile's, <data-dir>/submissions/<profile>)")
    if overrides:
        g.add_argument("--set", nargs="+", default=[], metavar="FIELD=VALUE", dest="overrides",
                       help="override profile fields, e.g. --set epochs=2 n_folds=3 lr_milestones=1,2")


def default_workers() -> int:
    return max(1, len(os.sched_getaffinity(0)))


STRATEGIES = ("default", "mirrored")   # --strategy: train/distribute.py makes them


def stage_parser(description: str, *, folds: bool = True, force: bool = True, workers: bool = True,
                 seed: bool = True, precision: bool = True, trains: bool = False,
                 frontend: bool = True) -> argparse.ArgumentParser:
    """The options of a training-side stage: profile, folders and models always (and the
    front end, but for the search of it); the others only for the stages they mean
    something to (so --help lists only what a stage uses); with `trains`, those of the
    stages that fit models: devices and TensorBoard."""
    parser = script_parser(description)
    add_common_args(parser)
    if frontend:
        parser.add_argument("--frontend", type=Path, metavar="FILE",
                            help="build the models with this log-mel front end and crop length: tune.py's "
                                 "<models-dir>/tune/best_frontend.json (docs/tuning.md). Default: the "
                                 "models folder's run.json, else the original's")
    parser.add_argument("--models", nargs="+", metavar="NAME",
                        help=f"zoo members to process (default: all): {', '.join(config.ZOO_BY_NAME)}")
    if folds:
        parser.add_argument("--folds", nargs="+", type=int, metavar="K",
                            help="folds to process, 0-based (default: all); to shard folds across machines")
    if force:
        parser.add_argument("--force", action="store_true", help="redo work that is already finished")
    if workers:
        parser.add_argument("--workers", type=int, default=2, help="threads building batches (default 2)")
    if seed:
        parser.add_argument("--seed", type=int, default=0,
                            help="base random seed (default 0); each unit of work derives its own from it")
    if precision:
        parser.add_argument("--mixed-precision", choices=["float16", "bfloat16"], default=None,
                            help="compute in 16-bit floats on a GPU (Keras mixed_<type> policy; the log-mel, "
                                 "the output and the loss stay float32; float16 adds loss scaling)")
    if trains:
        add_device_args(parser)
    return parser


def add_device_args(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("devices and logs")
    g.add_argument("--strategy", choices=STRATEGIES, default="default",
                   help="default: one device (GPU or CPU). mirrored (opt-in, TensorFlow backend): "
                        "data-parallel over all visible GPUs (else --logical-cpus); each replica takes "
                        "batch_size clips per step and the lr grows (README, 'Bigger runs')")
    g.add_argument("--logical-cpus", type=int, metavar="N",
                   help="split the CPU into N logical devices, for --strategy mirrored without GPUs "
                        "(tests it on a CPU; not faster; TensorFlow backend)")
    g.add_argument("--tensorboard", action="store_true",
                   help="log lr, loss, val_lrap, val_lwlrap per epoch to models/<name>/tensorboard/<run>/ "
                        "(tf.summary: TensorFlow backend)")


def format_warning(message, category, filename, lineno, line=None) -> str:
    """One line per warning, without the echoed source line: `warning: <message>`; a
    warning from outside the project also names its category and origin."""
    text = " ".join(str(message).split())
    if Path(filename).resolve().is_relative_to(SCRIPTS_DIR):
        return f"warning: {text}\n"
    return f"warning: {text} ({category.__name__}, {filename}:{lineno})\n"


def install_warning_format() -> None:
    warnings.formatwarning = format_warning


def bad_input_errors() -> tuple[type[BaseException], ...]:
    """The exceptions that mean bad input or a missing prerequisite (exit code 2). Looked up
    when one is raised, so that importing this module does not import the dataset module."""
    from fat2019.data.dataset import DatasetError

    return BadInput, NotReady, DatasetError, FileNotFoundError


def call(main, *args):
    """main(*args)'s exit code as run_stage exits with it: bad input and missing
    prerequisites become one line `error: ...` on stderr and BAD_INPUT."""
    try:
        return main(*args)
    except (SystemExit, KeyboardInterrupt):   # before the lookup below, which imports the dataset module
        raise
    except bad_input_errors() as e:
        print(f"error: {e}", file=sys.stderr)
        return BAD_INPUT


def run_stage(main) -> None:
    """Run a script's main() and exit with its return code (`call`). Warnings print as one
    line each; SIGTERM exits cleanly (util/shutdown.py)."""
    from fat2019.util import shutdown

    shutdown.install()
    install_warning_format()
    sys.exit(call(main))
