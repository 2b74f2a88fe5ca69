"""Command-line pieces every stage script shares: profile and folder options.

Stage scripts import this module first: it sets TensorFlow's C++ log level (unless the
user set one) before TensorFlow is imported, so --help and the logs start without its
start-up INFO lines.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from fat2019 import config
from fat2019.data.dataset import CURATED_CSV


def default_profile(data_dir: Path | None = None) -> str:
    """`demo` for the generated demo data, `full` for real data. Without --data-dir: `full`
    when input/train_curated.csv exists, else `demo`. With --data-dir: `demo` for the
    demo's folder (input/demo/), `full` for any other (your own data)."""
    if data_dir is not None:
        return "demo" if same_folder(data_dir, config.PROFILES["demo"].paths().data) else "full"
    full = config.PROFILES["full"].paths()
    return "full" if (full.data / CURATED_CSV).is_file() else "demo"


def same_folder(a: Path, b: Path) -> bool:
    return Path(a).resolve() == Path(b).resolve()


def add_common_args(parser: argparse.ArgumentParser, *, features: bool = True, submissions: bool = True,
                    overrides: bool = True) -> None:
    """--profile, --data-dir, --models-dir, and the folder and profile options a script uses."""
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


def resolve(args: argparse.Namespace) -> tuple[config.Profile, config.Paths]:
    """The profile and folders the user asked for, defaults filled in. Own data (a
    --data-dir that is not the profile's) keeps its models and submissions beside it, one
    folder per profile, so it never overwrites the demo's or the competition's."""
    profile = override(config.get_profile(args.profile or default_profile(args.data_dir)),
                       getattr(args, "overrides", []))
    paths = profile.paths()
    data = Path(args.data_dir) if args.data_dir else paths.data
    if not same_folder(data, paths.data):
        paths = profile.own_data_paths(data)
    return profile, config.Paths(
        data=data,
        features=Path(getattr(args, "features_dir", None) or paths.features),
        models=Path(args.models_dir or paths.models),
        submissions=Path(getattr(args, "submissions_dir", None) or paths.submissions),
    )


def override(profile: config.Profile, assignments: list[str]) -> config.Profile:
    """The profile with FIELD=VALUE assignments applied, each parsed as the field's type."""
    fields = {f.name: f for f in dataclasses.fields(profile)}
    changes = {}
    for item in assignments:
        name, sep, text = item.partition("=")
        if not sep or name not in fields or name in ("name", "demo_sizes"):
            raise SystemExit(f"--set {item!r}: expected FIELD=VALUE with FIELD one of "
                             f"{sorted(set(fields) - {'name', 'demo_sizes'})}")
        current = getattr(profile, name)
        try:
            if isinstance(current, tuple):
                changes[name] = tuple(int(v) for v in text.split(",") if v.strip())
            else:
                changes[name] = type(current)(text)
        except ValueError:
            raise SystemExit(f"--set {item!r}: {text!r} is not a valid {type(current).__name__}") from None
    return dataclasses.replace(profile, **changes)


def default_workers() -> int:
    return max(1, len(os.sched_getaffinity(0)))
