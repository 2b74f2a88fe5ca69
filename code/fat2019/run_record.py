"""The record of a run: models/<...>/run.json, saved by the first stage that works on a
models folder, so the folder knows how it was trained.

It holds the resolved profile (every field, --set overrides applied), the zoo members'
configs at that profile's scale, the class list, the fold seed, the log-mel front end
(`frontend`, on its own: a record without one was made with the original's) and the
package versions.
Later stages and tag.py take their settings from it: without --profile or --set they use
the recorded profile; with them, every recorded setting must match, or the stage refuses
(exit 2) naming each differing field with both values. This is also what keeps the crop
length of a resumed run the one its checkpoint was built with.
"""
from __future__ import annotations

import argparse
import dataclasses
import importlib.metadata
import json
import platform
import sys
from pathlib import Path

from fat2019 import config, layout
from fat2019.cli import BadInput
from fat2019.util.atomic import atomic_write_text

PACKAGES = ("keras", "tensorflow", "jax", "numpy", "pandas", "scikit-learn", "librosa")
REQUIRED = ("profile", "models", "classes", "fold_seed")
COMPARED = (*REQUIRED, "frontend")   # `versions` is informative only
# --mixed-precision: recorded as the Keras policy; compared where a stage is given it (a
# stage given none runs at the recorded one); absent from records made before it was
PRECISION = "precision"


class RunRecordError(BadInput):
    """The options contradict the models folder's run.json, or run.json is unreadable; exit 2."""


def versions() -> dict[str, str | None]:
    found = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            found[name] = None
    import keras
    found["keras_backend"] = keras.backend.backend()
    return found


def as_json(value):
    """Tuples as lists, as json.loads gives them back (so a record compares with itself)."""
    return json.loads(json.dumps(value))


def without_frontend(settings) -> dict:
    """A profile's or model's fields less the front end, which the record keeps once, apart."""
    return {k: v for k, v in as_json(dataclasses.asdict(settings)).items() if k != "frontend"}


def make(profile: config.Profile, classes: list[str], precision: str = "float32") -> dict:
    from fat2019.data.folds import FOLD_SEED   # folds imports pandas; --help needs neither
    return {
        "profile": without_frontend(profile),
        "models": {m.name: without_frontend(profile.scale(m)) for m in config.ZOO},
        "classes": list(classes),
        "fold_seed": FOLD_SEED,
        PRECISION: precision,
        "frontend": as_json(dataclasses.asdict(profile.frontend)),
        "versions": versions(),
    }


def precision_given(args: argparse.Namespace) -> str | None:
    """The Keras dtype policy --mixed-precision asks for; None when the stage was given none."""
    mixed = getattr(args, "mixed_precision", None)
    return f"mixed_{mixed}" if mixed else None


def precision(args: argparse.Namespace, record: dict | None) -> str:
    """The policy to run with: the one given, else the recorded one, else float32."""
    return precision_given(args) or (record or {}).get(PRECISION) or "float32"


def read(models_dir: Path) -> dict | None:
    """The folder's record; None when it has none."""
    path = layout.run_json(models_dir)
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text())
        missing = [k for k in REQUIRED if k not in record]
    except (OSError, ValueError) as e:
        raise RunRecordError(f"{path}: cannot read the run's record ({e}); delete it to record the current "
                             f"options again") from None
    if missing:
        raise RunRecordError(f"{path}: the run's record lacks {missing}; delete it to record the current options")
    record.setdefault("frontend", as_json(dataclasses.asdict(config.FrontEnd())))   # recorded before front ends were
    return record


def profile_of(record: dict) -> config.Profile:
    """The recorded profile, as the Profile it was resolved to."""
    fields = {f.name: f for f in dataclasses.fields(config.Profile)}
    values = {k: tuple(v) if isinstance(v, list) else v for k, v in record["profile"].items() if k in fields}
    return config.Profile(**{**values, "frontend": config.FrontEnd(**record["frontend"])})


def flatten(value, name: str = "") -> dict:
    """{"profile.duration": 1.5, "models.v1mix.width": 0.125, ...}; lists stay whole."""
    if not isinstance(value, dict):
        return {name: value}
    flat = {}
    for key, item in value.items():
        flat.update(flatten(item, f"{name}.{key}" if name else str(key)))
    return flat


def shown(value) -> str:
    if isinstance(value, list) and len(value) > 6:
        return f"[{', '.join(map(repr, value[:4]))}, ... ({len(value)} in all)]"
    return repr(value)


def differences(recorded: dict, given: dict) -> list[str]:
    """'field: recorded X, given Y' for every compared field that differs."""
    a = flatten({k: recorded.get(k) for k in COMPARED})
    b = flatten({k: given.get(k) for k in COMPARED})
    return [f"{name}: recorded {shown(a.get(name))}, given {shown(b.get(name))}"
            for name in dict.fromkeys([*a, *b]) if a.get(name) != b.get(name)]


def explicit(args: argparse.Namespace) -> bool:
    """Whether the user chose the settings (--profile, --set or --frontend) rather than the defaults."""
    return (args.profile is not None or bool(getattr(args, "overrides", []))
            or getattr(args, "frontend", None) is not None)


def settle(args: argparse.Namespace, profile: config.Profile, models_dir: Path,
           classes: list[str] | None, write: bool) -> tuple[config.Profile, dict | None]:
    """(the profile to run with, the record). With a record: the recorded profile, after
    checking that explicit options and the data's `classes` agree with it. Without one:
    `profile`, and (when `write`) the record saved from it and `classes`. A folder that
    already holds trained models but no record (trained before records existed) gets one
    from the current options, with a note saying so."""
    record = read(models_dir)
    if record is not None:
        # without --profile/--set only the data must agree; tag.py (no classes) takes the record's
        given = make(profile, record["classes"]) if explicit(args) else dict(record)
        problems = differences(record, {**given, "classes": record["classes"] if classes is None else classes})
        wanted = precision_given(args)
        if wanted and record.get(PRECISION) and wanted != record[PRECISION]:
            problems.append(f"{PRECISION} (--mixed-precision): recorded {record[PRECISION]!r}, given {wanted!r}")
        if problems:
            if getattr(args, "frontend", None) is not None:
                problems.append(f"(given: the front end and crop length of --frontend {args.frontend})")
            raise RunRecordError(
                f"the options contradict {layout.run_json(models_dir)}, the record of the run in that folder:\n  "
                + "\n  ".join(problems) + "\nrun without --profile/--set to use the recorded settings, or use "
                "another --models-dir for a run with other settings")
        return profile_of(record), record
    if not write:
        return profile, None
    record = make(profile, classes or [], precision(args, None))
    path = layout.run_json(models_dir)
    if any(Path(models_dir).glob(f"*/*{layout.WEIGHTS_SUFFIX}")):
        print(f"note: {models_dir} has trained models but no {layout.RUN_JSON} (made before runs were recorded); "
              f"recorded the current options (profile {profile.name}{', --set ' + ' '.join(args.overrides) if getattr(args, 'overrides', []) else ''}). "
              f"If it was trained with others, delete {path} and rerun with those", file=sys.stderr)
    Path(models_dir).mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(record, indent=1) + "\n")
    return profile, record
