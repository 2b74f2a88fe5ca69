"""The competition's data layout: CSVs, class list, multi-hot labels, audio paths.

    <data>/train_curated.csv      fname,labels   (labels: comma-separated class names)
    <data>/train_noisy.csv        fname,labels   (optional: without it, no pretraining)
    <data>/sample_submission.csv  fname + one column per class (optional, see below)
    <data>/test_labels.csv        fname,labels[,usage]   (optional: the test truth; usage says
                                  which leaderboard part, Public or Private, scored the clip)
    <data>/audio_train/           curated and noisy clips together
    <data>/audio_test/            test clips

The class list and the test clips come from sample_submission.csv: its columns after
`fname`, in order, and its rows. Without it (your own data), the classes are the labels
train_curated.csv uses, sorted by code point (Python's `sorted`), and the test clips are
the audio files directly inside audio_test/, sorted by name (none when the folder is
missing or empty: then the stages produce out-of-fold results only). Class names cannot
contain a comma (the labels field is a comma-separated list), start or end with a space,
or be `fname`.

Every problem found on load is collected and raised at once, one line per offender, so a
user fixes a broken CSV in one pass instead of one error per run.
"""
from __future__ import annotations

import collections
import csv
import functools
from dataclasses import dataclass
from pathlib import Path, PurePosixPath, PureWindowsPath

import numpy as np
import pandas as pd

CURATED_CSV = "train_curated.csv"
NOISY_CSV = "train_noisy.csv"
SUBMISSION_CSV = "sample_submission.csv"
TEST_LABELS_CSV = "test_labels.csv"
TRAIN_AUDIO = "audio_train"
TEST_AUDIO = "audio_test"
MAX_LISTED = 50  # offenders printed in one error; the rest are counted
MAX_FNAME_BYTES = 255  # longer names cannot exist on common file systems (NAME_MAX)
@functools.cache
def audio_extensions() -> frozenset[str]:
    """What soundfile can read, by extension (RAW needs its format spelled out, so not
    that). Asked lazily: the model path (and the GPU machines) has no soundfile."""
    import soundfile as sf
    return frozenset(({f".{name.lower()}" for name in sf.available_formats()} - {".raw"}) | {".aif", ".oga", ".opus"})


class DatasetError(ValueError):
    """A problem with the dataset's files; the message names every offender."""

    def __init__(self, title: str, problems: list[str]):
        self.title = title
        self.problems = problems
        lines = problems[:MAX_LISTED]
        more = len(problems) - len(lines)
        text = f"{title} ({len(problems)} problem{'s' if len(problems) != 1 else ''}):\n  "
        text += "\n  ".join(lines)
        if more:
            text += f"\n  ... and {more} more"
        super().__init__(text)


@dataclass
class ClipSet:
    """The clips of one CSV: names, audio paths and (for training sets) multi-hot labels."""
    name: str                    # curated | noisy | test
    fnames: list[str]
    paths: list[Path]
    labels: np.ndarray | None    # (n, n_classes) float32 0/1, None when unknown
    lines: list[int] | None = None   # each clip's line in its CSV, when read from one

    def where(self, rows, csv_name: str, limit: int = 10) -> str:
        """Rows of the set as a user finds them in its CSV: line numbers and file names."""
        rows = list(rows)
        shown = [f"line {self.lines[i]} ({self.fnames[i]!r})" if self.lines else repr(self.fnames[i])
                 for i in rows[:limit]]
        return f"{csv_name} " + ", ".join(shown) + (f" and {len(rows) - limit} more" if len(rows) > limit else "")

    def __len__(self) -> int:
        return len(self.fnames)


@dataclass
class Dataset:
    data_dir: Path
    classes: list[str]
    curated: ClipSet
    noisy: ClipSet
    test: ClipSet
    classes_from: Path           # sample_submission.csv, or train_curated.csv (its labels)
    test_from: Path              # sample_submission.csv, or the audio_test/ folder listed

    def sets(self) -> list[ClipSet]:
        return [s for s in (self.curated, self.noisy, self.test) if len(s)]

    def classes_without_clips(self) -> list[str]:
        """sample_submission classes that no curated clip carries. Allowed: they keep their
        column, the models learn to score them low, and lwlrap gives them no weight."""
        return [c for c, n in zip(self.classes, self.curated.labels.sum(axis=0)) if n == 0]


def fname_problem(fname: str) -> str | None:
    """Why `fname` is not a plain file name, or None. Paths are never followed out of the
    audio folders: `../x.wav`, `/etc/passwd`, `a/b.wav` and `C:\\x.wav` are all rejected."""
    if not fname or not fname.strip():
        return "empty file name"
    if fname in (".", ".."):
        return "not a file name"
    if PurePosixPath(fname).name != fname or PureWindowsPath(fname).name != fname:
        return "file name contains a path (only plain names are allowed)"
    if "\x00" in fname:
        return "file name contains a NUL byte"
    if len(fname.encode("utf-8", "surrogatepass")) > MAX_FNAME_BYTES:
        return f"file name longer than {MAX_FNAME_BYTES} bytes"
    return None


def is_file(path: Path) -> bool:
    """Path.is_file, but False (not an exception) for names the OS refuses outright."""
    try:
        return path.is_file()
    except (OSError, ValueError):
        return False


def read_rows(path: Path) -> tuple[list[str], list[tuple[int, list[str]]]]:
    """(header, [(line number, fields)]) of a CSV, blank lines skipped. A UTF-8 byte-order
    mark (a CSV saved by a spreadsheet) is dropped; anything undecodable is a DatasetError."""
    path = Path(path)
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.reader(f)
            header = next(reader, None)
            rows = [(reader.line_num, fields) for fields in reader if fields]
    except FileNotFoundError:
        raise DatasetError(f"cannot read {path}", [f"{path}: file not found"]) from None
    except (UnicodeDecodeError, csv.Error, OSError) as e:
        raise DatasetError(f"cannot parse {path}", [f"{path}: {e}"]) from None
    if header is None:
        raise DatasetError(f"cannot parse {path}", [f"{path}: the file is empty (no header line)"])
    return header, rows


def read_classes(path: Path) -> list[str]:
    """Class names, in order, from sample_submission.csv's columns after `fname`."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"cannot read the class list", [f"{path}: file not found"])
    header, _ = read_rows(path)
    if not header or header[0] != "fname" or len(header) < 2:
        raise DatasetError("bad sample submission",
                           [f"{path}: header must be 'fname' followed by the class names, got {header!r}"])
    classes = header[1:]
    problems = [f"{path}: repeated class column {c!r}" for c in repeated_names(classes)]
    problems += [f"{path}: column {i + 2} has an empty class name" for i, c in enumerate(classes) if not c.strip()]
    problems += [f"{path}: column {i + 2}: {why}" for i, c in enumerate(classes) if c.strip()
                 for why in [class_name_problem(c)] if why]
    if problems:
        raise DatasetError("bad sample submission", problems)
    return classes


def class_name_problem(name: str) -> str | None:
    """Why `name` cannot be a class, or None: a label field could never name it."""
    if "," in name:
        return f"class name {name!r} contains a comma (labels are comma-separated, so no clip could carry it)"
    if name != name.strip():
        return f"class name {name!r} starts or ends with a space (labels are read stripped, so none would match)"
    if name == "fname":
        return "a class cannot be called 'fname' (the file name column of every prediction CSV)"
    return None


def classes_from_labels(path: Path) -> list[str]:
    """The class list of a dataset without sample_submission.csv: every label that
    train_curated.csv uses, sorted (code-point order, so the same on every machine)."""
    path = Path(path)
    df, problems = _read_csv(path, ["fname", "labels"])
    classes = sorted({c for text in df["labels"] for c in split_labels(text)})
    problems += [f"{path}: {why}" for c in classes for why in [class_name_problem(c)] if why]
    if not classes:
        problems.append(f"{path}: no labels, so no class list (and no {SUBMISSION_CSV} to give one)")
    if problems:
        raise DatasetError(f"cannot take the class list from {path}", problems)
    return classes


def load_classes(data_dir: Path) -> tuple[list[str], Path]:
    """(class list, the file it comes from): sample_submission.csv's columns when it exists,
    else the sorted labels of train_curated.csv."""
    data_dir = Path(data_dir)
    submission, curated = data_dir / SUBMISSION_CSV, data_dir / CURATED_CSV
    if submission.is_file():
        return read_classes(submission), submission
    if curated.is_file():
        return classes_from_labels(curated), curated
    raise DatasetError("cannot read the class list", [f"{submission}: file not found", f"{curated}: file not found"])


def audio_files_in(folder: Path) -> list[str]:
    """Names of the audio files directly inside `folder` (by extension, hidden files left
    out), sorted; none when the folder does not exist."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    return sorted(p.name for p in folder.iterdir()
                  if p.suffix.lower() in audio_extensions() and not p.name.startswith(".") and is_file(p))


def repeated_names(names: list[str]) -> dict[str, int]:
    """Each name that appears more than once, with its count, in name order."""
    return {name: n for name, n in sorted(collections.Counter(names).items()) if n > 1}


def _read_csv(path: Path, columns: list[str]) -> tuple[pd.DataFrame, list[str]]:
    """The CSV as strings, indexed by line number, plus one problem per row whose field count
    differs from the header's (such rows are left out). Parsed strictly with the csv module:
    pandas would silently take an extra field as an index column and shift the others."""
    header, rows = read_rows(path)
    problems = []
    missing = [c for c in columns if c not in header]
    problems += [f"{path}: missing column {c!r} (has {header})" for c in missing]
    problems += [f"{path}: column {c!r} appears {n} times" for c, n in repeated_names(header).items() if c in columns]
    if problems:
        raise DatasetError(f"bad columns in {path}", problems)
    lines, kept = [], []
    for line, fields in rows:
        if len(fields) != len(header):
            problems.append(f"{path.name} line {line}: {len(fields)} field(s), the header has {len(header)} "
                            f"(an unquoted comma in a label list?)")
        else:
            lines.append(line)
            kept.append(fields)
    table = pd.DataFrame(kept, columns=header, index=lines, dtype=str) if kept else \
        pd.DataFrame({c: pd.Series([], dtype=str) for c in header})
    return table[columns], problems


def split_labels(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def row_problems(fname: str, labels: list[str] | None, known: set[str], classes_from: str) -> list[str]:
    """What is wrong with one row of a clip CSV, without its place: a file name that is not
    a plain name, and, for a labelled row (`labels` not None), no label or labels outside
    the class list (`classes_from` says where that list came from). The one rule for every
    reader of label CSVs (read_labelled_csv here, release.parse_clip_csv)."""
    problems = [bad] if (bad := fname_problem(fname)) else []
    if labels is not None:
        if not labels:
            problems.append("empty label field")
        unknown = [c for c in labels if c not in known]
        if unknown:
            problems.append(f"unknown label(s) {unknown} (not {classes_from})")
    return problems


def multi_hot(label_lists: list[list[str]], classes: list[str]) -> np.ndarray:
    """(n, n_classes) float32 with 1 where a clip carries the class."""
    col = {c: i for i, c in enumerate(classes)}
    y = np.zeros((len(label_lists), len(classes)), np.float32)
    for row, labels in enumerate(label_lists):
        y[row, [col[c] for c in labels]] = 1.0
    return y


def read_labelled_csv(path: Path, classes: list[str], audio_dir: Path, name: str,
                      classes_from: str = f"a column of {SUBMISSION_CSV}") -> tuple[ClipSet, list[str]]:
    """A `fname,labels` CSV as a ClipSet, plus the problems found in it (not raised here,
    so that all CSVs can be checked before anything fails). `classes_from` says, in an
    unknown label's error, where the class list came from."""
    df, problems = _read_csv(path, ["fname", "labels"])
    known = set(classes)
    label_lists = []
    for line, fname, text in zip(df.index, df["fname"], df["labels"]):
        where = f"{path.name} line {line} ({fname!r})"
        labels = split_labels(text)
        problems += [f"{where}: {p}" for p in row_problems(fname, labels, known, classes_from)]
        label_lists.append([c for c in labels if c in known])
    fnames = list(df["fname"])
    clips = ClipSet(name, fnames, [audio_dir / f for f in fnames], multi_hot(label_lists, classes), list(df.index))
    return clips, problems


def duplicate_problems(sets: list[ClipSet], csv_names: dict[str, str]) -> list[str]:
    """Duplicate fnames within a CSV, or between CSVs that share an audio folder."""
    seen: dict[tuple[Path, str], str] = {}
    problems = []
    for clips in sets:
        for fname, path in zip(clips.fnames, clips.paths):
            key = (path.parent, fname)
            if key in seen:
                problems.append(f"{fname!r}: listed twice ({seen[key]} and {csv_names[clips.name]}); "
                                f"both would read {path}")
            else:
                seen[key] = csv_names[clips.name]
    return problems


def missing_file_problems(clips: ClipSet) -> list[tuple[str, str]]:
    """(fname, problem) for every listed clip whose file does not exist."""
    return [(f, f"file not found: {p}") for f, p in zip(clips.fnames, clips.paths)
            if not fname_problem(f) and not is_file(p)]


def load_dataset(data_dir: Path, check_files: bool = True) -> Dataset:
    """Read and validate the CSVs of `data_dir` (the class list and test clips as the
    module's docstring says).

    Raises DatasetError listing every unknown label, empty label field, path-like or
    duplicate fname and (with `check_files`) every missing audio file.
    """
    data_dir = Path(data_dir)
    classes, classes_from = load_classes(data_dir)
    described = (f"a column of {SUBMISSION_CSV}" if classes_from.name == SUBMISSION_CSV else
                 f"a label of {CURATED_CSV}, which defines the classes when there is no {SUBMISSION_CSV}")
    train_dir, test_dir = data_dir / TRAIN_AUDIO, data_dir / TEST_AUDIO

    problems: list[str] = []
    curated, p = read_labelled_csv(data_dir / CURATED_CSV, classes, train_dir, "curated", described) \
        if (data_dir / CURATED_CSV).is_file() else (None, [f"{data_dir / CURATED_CSV}: file not found"])
    problems += p
    if (data_dir / NOISY_CSV).is_file():
        noisy, p = read_labelled_csv(data_dir / NOISY_CSV, classes, train_dir, "noisy", described)
        problems += p
    else:
        noisy = ClipSet("noisy", [], [], np.zeros((0, len(classes)), np.float32))
    if (data_dir / SUBMISSION_CSV).is_file():
        sub, p = _read_csv(data_dir / SUBMISSION_CSV, ["fname"])
        problems += p
        test_fnames, test_from = list(sub["fname"]), data_dir / SUBMISSION_CSV
        problems += [f"{SUBMISSION_CSV} line {i} ({f!r}): {fname_problem(f)}"
                     for i, f in zip(sub.index, test_fnames) if fname_problem(f)]
    else:   # own data without a test list: whatever audio audio_test/ holds
        test_fnames, test_from = audio_files_in(test_dir), test_dir
    test = ClipSet("test", test_fnames, [test_dir / f for f in test_fnames], None)
    if curated is None:
        raise DatasetError(f"incomplete dataset in {data_dir}", problems)

    csv_names = {"curated": CURATED_CSV, "noisy": NOISY_CSV, "test": test_from.name}
    problems += duplicate_problems([curated, noisy, test], csv_names)
    if check_files:
        for clips in (curated, noisy, test):
            problems += [f"{csv_names[clips.name]}: {fname!r}: {why}" for fname, why in missing_file_problems(clips)]
    if problems:
        raise DatasetError(f"the dataset in {data_dir} has problems", problems)
    return Dataset(data_dir, classes, curated, noisy, test, classes_from, test_from)


LIKELY_SEPARATORS = ";|"     # what a label list typed by hand or exported elsewhere may use instead of commas
TYPICAL_CLASS_SIZE = 10      # a single-clip class is suspicious when the median class has at least this many


def label_warnings(dataset: Dataset) -> list[str]:
    """Label fields that are valid but probably not what the user meant, naming the rows:
    a label with `;` or `|` in it (one class of its own, since only commas separate
    labels), and a curated class carried by one clip while the median class has
    TYPICAL_CLASS_SIZE or more (a typo makes such a class)."""
    warnings = []
    for clips, csv_name in ((dataset.curated, CURATED_CSV), (dataset.noisy, NOISY_CSV)):
        for j, name in enumerate(dataset.classes):
            rows = np.flatnonzero(clips.labels[:, j] > 0)
            found = [s for s in LIKELY_SEPARATORS if s in name]
            if len(rows) and found:
                warnings.append(f"label {name!r} contains {' and '.join(map(repr, found))}, so it is one class of its "
                                f"own ({len(rows)} clip(s): {clips.where(rows, csv_name)}); only commas separate "
                                f"labels: write several classes as \"a,b\" (quoted, as the CSV needs)")
    counts = dataset.curated.labels.sum(axis=0)
    typical = float(np.median(counts[counts > 0])) if (counts > 0).any() else 0.0
    if typical >= TYPICAL_CLASS_SIZE:
        for j in np.flatnonzero(counts == 1):
            if any(s in dataset.classes[j] for s in LIKELY_SEPARATORS):
                continue   # said above
            rows = np.flatnonzero(dataset.curated.labels[:, j] > 0)
            warnings.append(f"class {dataset.classes[j]!r} is carried by a single curated clip "
                            f"({dataset.curated.where(rows, CURATED_CSV)}) while the median class has "
                            f"{typical:.0f}: a typo in that label?")
    return warnings


def describe_sources(dataset: Dataset) -> str:
    """Where the class list and the test clips came from, for the stages' logs."""
    classes = (f"{len(dataset.classes)} classes from {dataset.classes_from.name}"
               + (f" labels (sorted; no {SUBMISSION_CSV})" if dataset.classes_from.name == CURATED_CSV else ""))
    if dataset.test_from.name == SUBMISSION_CSV:
        test = f"{len(dataset.test)} test clips from {SUBMISSION_CSV}"
    elif len(dataset.test):
        test = f"{len(dataset.test)} test clips: the audio files in {dataset.test_from}"
    else:
        test = f"no test clips (no {SUBMISSION_CSV}, no audio files in {dataset.test_from}): out-of-fold results only"
    return f"{classes}; {test}"


def read_test_labels(data_dir: Path, dataset: Dataset) -> np.ndarray | None:
    """Multi-hot truth for the test set, in sample_submission order, when the data has it."""
    path = Path(data_dir) / TEST_LABELS_CSV
    if not path.is_file():
        return None
    clips, problems = read_labelled_csv(path, dataset.classes, Path(data_dir) / TEST_AUDIO, "test")
    row = {f: i for i, f in enumerate(clips.fnames)}
    absent = [f for f in dataset.test.fnames if f not in row]
    problems += [f"{TEST_LABELS_CSV}: no labels for test clip {f!r}" for f in absent]
    if problems:
        raise DatasetError(f"bad {path}", problems)
    return clips.labels[[row[f] for f in dataset.test.fnames]]


TEST_PART_COLUMN = "usage"


def read_test_parts(data_dir: Path, dataset: Dataset) -> dict[str, np.ndarray] | None:
    """{part: mask over the test clips, in sample_submission order} from test_labels.csv's
    usage column (public, private: the leaderboard that scored the clip), parts in
    lower case; None without the file or the column."""
    path = Path(data_dir) / TEST_LABELS_CSV
    if not path.is_file():
        return None
    header, rows = read_rows(path)
    if TEST_PART_COLUMN not in header or "fname" not in header:
        return None
    name_at, part_at = header.index("fname"), header.index(TEST_PART_COLUMN)
    part_of = {fields[name_at]: fields[part_at].strip().lower() for _, fields in rows if len(fields) == len(header)}
    parts = [part_of.get(f, "") for f in dataset.test.fnames]
    return {p: np.array([q == p for q in parts]) for p in sorted(set(parts)) if p}
