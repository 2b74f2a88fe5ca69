"""Prediction CSVs, read and written in one place: `fname` then one column per class, the
sample_submission format. predict.py writes each model's, ensemble.py the submission's,
tag.py its --csv. One reader checks them (`read_table`): inspect_oof.py reads any CSV with
it; ensemble.py and predict.py read theirs back for the clips and classes they expect
(`read_predictions`)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from fat2019.data.dataset import DatasetError, read_classes, read_rows, repeated_names
from fat2019.util.atomic import atomic_write_text

FLOAT_FORMAT = "%.6g"   # the scores' digits on disk; every reader of these files sees these


def write_predictions(path: Path, fnames: list[str], classes: list[str], scores: np.ndarray,
                      extra: dict[str, list] | None = None) -> None:
    """fname + one column per class (atomic). `extra` columns (name: values) go between
    fname and the classes (tag.py --segments: start, end)."""
    table = pd.DataFrame(scores, columns=classes)
    table.insert(0, "fname", fnames)
    for i, (name, values) in enumerate((extra or {}).items()):
        table.insert(1 + i, name, values)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, table.to_csv(index=False, float_format=FLOAT_FORMAT))


def classes_of(path: Path) -> list[str]:
    """The class columns of a prediction CSV (its header after `fname`), checked as
    sample_submission.csv's are."""
    return read_classes(path)


def read_table(path: Path) -> tuple[list[str], list[str], np.ndarray]:
    """(fnames, classes, scores) of a prediction CSV, whatever its clips and classes (no
    rows at all is fine: a dataset without test clips); every problem found (a bad header,
    a row of another length, a score that is no finite number, a clip twice) is raised at
    once, each naming its line."""
    path = Path(path)
    header, rows = read_rows(path)
    problems = []
    if not header or header[0] != "fname" or len(header) < 2:
        problems.append(f"{path}: header must be 'fname' followed by the class names, got {header[:4]!r}...")
    problems += [f"{path}: class column {c!r} appears {n} times" for c, n in repeated_names(header).items()]
    if problems:
        raise DatasetError(f"bad columns in {path}", problems)
    classes = header[1:]
    kept = [(line, fields) for line, fields in rows if len(fields) == len(header)]
    problems += [f"{path.name} line {line}: {len(fields)} field(s), the header has {len(header)}"
                 for line, fields in rows if len(fields) != len(header)]
    text = pd.DataFrame([fields[1:] for _, fields in kept], columns=classes, dtype=str)
    scores = text.apply(pd.to_numeric, errors="coerce").to_numpy(np.float64).reshape(len(kept), len(classes))
    for r, c in np.argwhere(~np.isfinite(scores)):
        problems.append(f"{path.name} line {kept[r][0]}, column {classes[c]!r}: "
                        f"{text.iat[r, c]!r} is not a finite number")
    fnames = [fields[0] for _, fields in kept]
    problems += [f"{path.name}: clip {f!r} appears {n} times" for f, n in repeated_names(fnames).items()]
    if problems:
        raise DatasetError(f"bad prediction CSV {path}", problems)
    return fnames, classes, scores


def read_predictions(path: Path, fnames: list[str], classes: list[str]) -> np.ndarray:
    """Scores of the clips `fnames` (in that order) for `classes` (float32), from a
    prediction CSV (`read_table`) that must have exactly those class columns and every one
    of those clips; a clear error naming the file if it does not fit."""
    found, columns, scores = read_table(path)
    row = {fname: i for i, fname in enumerate(found)}
    problems = []
    if columns != list(classes):
        problems.append(f"{path}: columns differ from fname + the {len(classes)} classes")
    absent = set(fnames) - set(row)
    if absent:
        problems.append(f"{path}: {len(absent)} clip(s) missing, e.g. {sorted(absent)[:3]}")
    if problems:
        raise DatasetError("predictions do not match the dataset", problems)
    return scores[[row[fname] for fname in fnames]].astype(np.float32)

