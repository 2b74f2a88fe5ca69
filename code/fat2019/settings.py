"""A run's settings, decided once: `resolve(args)` turns a stage's parsed options into one
frozen `Settings` (the profile to run with, the folders, the dtype policy, the models
folder's record), which the stage and its record (run_record.py) both use.

The decision has its own module because it draws on four sources, each of which has its
own home: the options (cli.py builds the parsers), the profiles' numbers (config.py, which
cli.py imports before parsing, so it stays a table), the front end file of --frontend
(tune/space.py) and the models folder's run.json (run_record.py). Here they meet, in this
order: the profile named by --profile (else chosen by the data folder), --frontend, then
--set; the folders (own data keeps its models and submissions beside it); then the
record, which wins over the defaults and refuses contradicting options. No other module
computes a profile's folders (tests/test_layout.py checks).

The options used as given (--seed, --folds, --workers, --force) need no deciding and stay
in the parsed options; the Keras backend is Keras' own (KERAS_BACKEND), recorded in
run.json's `versions`.
"""
from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass
from pathlib import Path

from fat2019 import config, run_record

# profile fields --set cannot change: the front end comes whole from a file (--frontend)
NOT_SET = ("name", "demo_sizes", "frontend")


@dataclass(frozen=True)
class Paths:
    """A run's folders."""
    data: Path          # train_curated.csv, train_noisy.csv, sample_submission.csv, audio_*/
    features: Path      # the features stage's cache
    models: Path        # folds.csv, one folder per model
    submissions: Path   # average.csv, submission.csv, reports


@dataclass(frozen=True)
class Settings:
    """What a run is: the stage runs with it, run_record.make records it."""
    profile: config.Profile     # to run with: the record's, else the named one with --frontend and --set applied
    paths: Paths
    precision: str              # the Keras dtype policy the run's models are built in (float32, mixed_<type>)
    record: dict | None         # the models folder's run.json; None while it has none (or when not read)
    overrides: tuple[str, ...] = ()      # --set, as given (the record's messages name them)
    frontend_file: Path | None = None    # --frontend, as given


def resolve(args: argparse.Namespace, *, record: bool = True) -> Settings:
    """The settings the options ask for, defaults filled in. With `record` (every stage
    that works on a models folder): read its run.json, refuse options that contradict it
    (run_record.RunRecordError, exit 2, naming each field), and run with the recorded
    profile and precision. Without (features.py, inspect_oof.py: they need the folders
    only) the record is left unread. It reads no data: Workspace checks the data's class
    list against the record (run_record.check_classes)."""
    profile = _named_profile(args)
    frontend_file = getattr(args, "frontend", None)
    if frontend_file is not None:   # before --set, which may change its crop length again
        from fat2019.tune import space   # here: it reads and checks the file (numpy)
        profile = space.apply_frontend_file(profile, frontend_file)
    overrides = tuple(getattr(args, "overrides", []))
    profile = _override(profile, overrides)
    paths = _folders(args, profile)
    found = run_record.read(paths.models) if record else None
    mixed = getattr(args, "mixed_precision", None)
    given_precision = f"mixed_{mixed}" if mixed else None
    if found is not None:
        chose = args.profile is not None or bool(overrides) or frontend_file is not None
        # without --profile/--set/--frontend the record decides; a given --mixed-precision must match it
        run_record.refuse(paths.models, run_record.contradictions(found, profile if chose else None, given_precision),
                          frontend_file)
        profile = run_record.profile_of(found)
    precision = given_precision or (found or {}).get(run_record.PRECISION) or "float32"
    return Settings(profile, paths, precision, found, overrides, frontend_file)


def profile_folders(profile: config.Profile, root: Path = config.REPO_ROOT) -> Paths:
    """The profile's own folders (its data_dir, models_dir, submissions_dir under the repo root)."""
    data = root / profile.data_dir
    return Paths(data=data, features=data / config.FEATURES_DIR, models=root / profile.models_dir,
                 submissions=root / profile.submissions_dir)


def _named_profile(args: argparse.Namespace) -> config.Profile:
    """--profile's, else `demo` for the generated demo data, `full` for real data. Without
    --data-dir: `full` when input/train_curated.csv exists, else `demo`. With --data-dir:
    `demo` for the demo's folder (input/demo/), `full` for any other (your own data)."""
    from fat2019.data.dataset import CURATED_CSV   # here: the dataset module needs pandas

    if args.profile is not None:
        return config.PROFILES[args.profile]
    if args.data_dir is not None:
        demo = _same_folder(args.data_dir, profile_folders(config.PROFILES["demo"]).data)
        return config.PROFILES["demo" if demo else "full"]
    full = (profile_folders(config.PROFILES["full"]).data / CURATED_CSV).is_file()
    return config.PROFILES["full" if full else "demo"]


def _same_folder(a: Path, b: Path) -> bool:
    return Path(a).resolve() == Path(b).resolve()


def _override(profile: config.Profile, assignments: tuple[str, ...]) -> config.Profile:
    """The profile with --set's FIELD=VALUE assignments applied, each parsed as the field's type."""
    fields = {f.name: f for f in dataclasses.fields(profile)}
    changes = {}
    for item in assignments:
        name, sep, text = item.partition("=")
        if not sep or name not in fields or name in NOT_SET:
            raise SystemExit(f"--set {item!r}: expected FIELD=VALUE with FIELD one of "
                             f"{sorted(set(fields) - set(NOT_SET))}")
        current = getattr(profile, name)
        try:
            if isinstance(current, tuple):
                changes[name] = tuple(int(v) for v in text.split(",") if v.strip())
            else:
                changes[name] = type(current)(text)
        except ValueError:
            raise SystemExit(f"--set {item!r}: {text!r} is not a valid {type(current).__name__}") from None
    return dataclasses.replace(profile, **changes)


def _folders(args: argparse.Namespace, profile: config.Profile) -> Paths:
    """The folders given, else the profile's. Own data (a --data-dir that is not the
    profile's) keeps its models and submissions beside it, one folder per profile, so a
    demo-sized and a full run on the same data never mix, and neither touches models/ or
    models/demo/."""
    defaults = profile_folders(profile)
    data = Path(args.data_dir) if args.data_dir else defaults.data
    if not _same_folder(data, defaults.data):
        defaults = Paths(data=data, features=data / config.FEATURES_DIR, models=data / "models" / profile.name,
                         submissions=data / "submissions" / profile.name)
    return Paths(
        data=data,
        features=Path(getattr(args, "features_dir", None) or defaults.features),
        models=Path(args.models_dir or defaults.models),
        submissions=Path(getattr(args, "submissions_dir", None) or defaults.submissions),
    )
