"""The record of a run: models/<...>/run.json, saved by the first training stage (pretrain,
train, tune) that works on a models folder, so the folder knows how it was trained.

It holds the resolved profile (every field, --set overrides applied), the zoo members'
configs at that profile's scale, the class list, the fold seed, the log-mel front end
(`frontend`, on its own: a record without one was made with the original's) and the
package versions.
Later stages and tag.py take their settings from it (settings.resolve): without
--profile or --set they use the recorded profile; with them, every recorded setting must
match, or the stage refuses (exit 2) naming each differing field with both values. This
is also what keeps the crop length of a resumed run the one its checkpoint was built with.
"""
from __future__ import annotations

import dataclasses
import importlib.metadata
import json
import platform
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from fat2019 import config, layout
from fat2019.cli import BadInput
from fat2019.util.atomic import atomic_write_text

if TYPE_CHECKING:
    from fat2019.settings import Settings

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


def without_frontend(profile_or_model) -> dict:
    """A profile's or model's fields less the front end, which the record keeps once, apart."""
    return {k: v for k, v in as_json(dataclasses.asdict(profile_or_model)).items() if k != "frontend"}


def fields(profile: config.Profile, classes: list[str], precision: str) -> dict:
    """What a record holds of a run's settings: all of it but the package versions."""
    from fat2019.data.folds import FOLD_SEED   # folds imports pandas; --help needs neither
    return {
        "profile": without_frontend(profile),
        "models": {m.name: without_frontend(profile.scale(m)) for m in config.ZOO},
        "classes": list(classes),
        "fold_seed": FOLD_SEED,
        PRECISION: precision,
        "frontend": as_json(dataclasses.asdict(profile.frontend)),
    }


def make(settings: Settings, classes: list[str]) -> dict:
    """The record of a run of these settings on data of these classes."""
    return {**fields(settings.profile, classes, settings.precision), "versions": versions()}


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


def contradictions(record: dict, profile: config.Profile | None = None, precision: str | None = None,
                   classes: list[str] | None = None) -> list[str]:
    """'field: recorded X, given Y' for each recorded setting that a given one contradicts:
    every field of a given `profile` (chosen by options) and its models, the given
    `precision` (a record made before precision was recorded is not checked), the data's
    `classes`."""
    given = dict(record)
    if profile is not None:
        given.update(fields(profile, record["classes"], record.get(PRECISION)))
    if classes is not None:
        given["classes"] = classes
    problems = differences(record, given)
    if precision and record.get(PRECISION) and precision != record[PRECISION]:
        problems.append(f"{PRECISION} (--mixed-precision): recorded {record[PRECISION]!r}, given {precision!r}")
    return problems


def refuse(models_dir: Path, problems: list[str], frontend_file: Path | None = None) -> None:
    """Raise RunRecordError (exit 2) listing `problems`, if any: the options contradict the
    folder's record."""
    if not problems:
        return
    if frontend_file is not None:
        problems = [*problems, f"(given: the front end and crop length of --frontend {frontend_file})"]
    raise RunRecordError(
        f"the options contradict {layout.run_json(models_dir)}, the record of the run in that folder:\n  "
        + "\n  ".join(problems) + "\nrun without --profile/--set to use the recorded settings, or use "
        "another --models-dir for a run with other settings")


def check_classes(settings: Settings, classes: list[str]) -> None:
    """Refuse (exit 2) data whose class list is not the one the run was recorded with."""
    if settings.record is not None:
        refuse(settings.paths.models, contradictions(settings.record, classes=classes), settings.frontend_file)


def save(settings: Settings, classes: list[str]) -> None:
    """Write the run's record, atomically: the training stages, into a models folder that
    has none (settings.record is None). A folder that already holds trained models (trained
    before records existed) gets one from the current options, with a note saying so."""
    models_dir = settings.paths.models
    path = layout.run_json(models_dir)
    if any(Path(models_dir).glob(f"*/*{layout.WEIGHTS_SUFFIX}")):
        given = f", --set {' '.join(settings.overrides)}" if settings.overrides else ""
        print(f"note: {models_dir} has trained models but no {layout.RUN_JSON} (made before runs were recorded); "
              f"recorded the current options (profile {settings.profile.name}{given}). "
              f"If it was trained with others, delete {path} and rerun with those", file=sys.stderr)
    Path(models_dir).mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(make(settings, classes), indent=1) + "\n")
