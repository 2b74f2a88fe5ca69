"""The dataset's archives laid out as the stages expect (fat2019/data/dataset.py):

    <dest>/audio_train/            curated and noisy clips together
    <dest>/audio_test/             test clips
    <dest>/train_curated.csv, train_noisy.csv      fname,labels
    <dest>/sample_submission.csv   fname + the 80 classes in the competition's order
    <dest>/test_labels.csv         fname,labels,usage (usage: Public or Private, the
                                   leaderboard that scored the clip)

Two sources are understood: the public release on Zenodo (FSDKaggle2019.*.zip, with the
post-competition CSVs in FSDKaggle2019.meta.zip, test labels included) and the
competition's own files from Kaggle (train_curated.zip, train_noisy.zip, test.zip and
their CSVs, no test labels; FSDKaggle2019.meta.zip beside them adds the labels).

Each clip set is unpacked into a staging folder, checked against its CSV, then moved into
place and marked done (<dest>/.get_data/<set>.done), so a rerun skips it; the CSVs are
written last, train_curated.csv (the file the stages look for) the very last.
"""
from __future__ import annotations

import csv
import glob
import io
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from fat2019.data.dataset import (CURATED_CSV, NOISY_CSV, SUBMISSION_CSV, TEST_AUDIO, TEST_LABELS_CSV,
                                  TEST_PART_COLUMN, TRAIN_AUDIO, row_problems, split_labels)
from fat2019.data.download import Archive, DataError
from fat2019.data.unpack import extract_clips, members_by_name, open_archive, read_member_text
from fat2019.util.atomic import atomic_write_text

CLASSES_FILE = Path(__file__).resolve().parent / "fsd2019_classes.txt"
STATE_DIR = ".get_data"
SETS = ("curated", "noisy", "test")
SET_AUDIO = {"curated": TRAIN_AUDIO, "noisy": TRAIN_AUDIO, "test": TEST_AUDIO}
USAGE = "usage"                  # test_post_competition.csv's column: Public or Private

# FSDKaggle2019.meta.zip (Zenodo): the post-competition CSVs
META_CSVS = {"curated": "train_curated_post_competition.csv", "noisy": "train_noisy_post_competition.csv",
             "test": "test_post_competition.csv"}
# the competition's files (Kaggle CLI: one bundle, or its members unzipped)
KAGGLE_BUNDLE = "freesound-audio-tagging-2019.zip"
KAGGLE_ZIPS = {"curated": "train_curated.zip", "noisy": "train_noisy.zip", "test": "test.zip"}
KAGGLE_CSVS = {"curated": CURATED_CSV, "noisy": NOISY_CSV, "test": SUBMISSION_CSV}


def competition_classes() -> list[str]:
    return [line.strip() for line in CLASSES_FILE.read_text().splitlines() if line.strip()]


@dataclass
class Clips:
    """One clip set: names, label lists and (test) the leaderboard part of each clip."""
    fnames: list[str] = field(default_factory=list)
    labels: list[list[str]] = field(default_factory=list)
    usage: list[str] = field(default_factory=list)


def parse_clip_csv(text: str, where: str, classes: list[str], labelled: bool = True) -> Clips:
    """A CSV of clips (fname, and labels when `labelled`, and usage when present). Every
    problem is collected: unknown labels, missing columns, repeated names."""
    rows = list(csv.reader(io.StringIO(text)))
    if not rows:
        raise DataError(f"{where}: empty file")
    header, known, problems, clips, seen = rows[0], set(classes), [], Clips(), set()
    need = ["fname"] + (["labels"] if labelled else [])
    missing = [c for c in need if c not in header]
    if missing:
        raise DataError(f"{where}: missing column(s) {missing} (has {header})")
    col = {c: header.index(c) for c in header}
    for line, fields in enumerate(rows[1:], start=2):
        if not fields:
            continue
        if len(fields) != len(header):
            problems.append(f"line {line}: {len(fields)} fields, the header has {len(header)}")
            continue
        fname = fields[col["fname"]]
        if fname in seen:
            problems.append(f"line {line}: {fname!r} listed twice")
        seen.add(fname)
        clips.fnames.append(fname)
        labels = split_labels(fields[col["labels"]]) if labelled else None
        problems += [f"line {line} ({fname!r}): {p}"
                     for p in row_problems(fname, labels, known, "one of the competition's 80 classes")]
        if labelled:
            clips.labels.append(labels)
        if USAGE in col:
            clips.usage.append(fields[col[USAGE]].strip())
    if problems:
        raise DataError(f"{where}: {len(problems)} problem(s):\n  " + "\n  ".join(problems[:20])
                        + (f"\n  ... and {len(problems) - 20} more" if len(problems) > 20 else ""))
    return clips


def read_zenodo_meta(meta_zip: Path, classes: list[str]) -> dict[str, Clips]:
    """The three post-competition CSVs of FSDKaggle2019.meta.zip."""
    with open_archive([meta_zip]) as z:
        members = members_by_name(z, ".csv")
        missing = [name for name in META_CSVS.values() if name not in members]
        if missing:
            raise DataError(f"{meta_zip}: {missing} not in the archive (has {sorted(members)})")
        return {s: parse_clip_csv(read_member_text(z, members[name], str(meta_zip)), f"{meta_zip}: {name}", classes)
                for s, name in META_CSVS.items()}


def read_kaggle_csvs(folder: Path, classes: list[str]) -> dict[str, Clips]:
    """The competition's train CSVs and sample_submission.csv (its columns must be the 80
    classes in order: the project's class list is that order)."""
    sets = {}
    for s, name in KAGGLE_CSVS.items():
        path = folder / name
        if not path.is_file():
            raise DataError(f"{path}: not found")
        text = path.read_text(encoding="utf-8-sig")
        if s == "test":
            header = next(csv.reader(io.StringIO(text)), [])
            if header[1:] != classes:
                raise DataError(f"{path}: its columns are not 'fname' + the competition's 80 classes in order "
                                f"({CLASSES_FILE.name})")
        sets[s] = parse_clip_csv(text, str(path), classes, labelled=s != "test")
    return sets


def kaggle_files(folder: Path, state: Path) -> Path:
    """The folder holding the competition's zips and CSVs: `folder` itself, or the Kaggle
    CLI's bundle unzipped into `state` (its members only, once)."""
    if all((folder / n).is_file() for n in KAGGLE_CSVS.values()):
        return folder
    target = state / "kaggle"
    bundle = folder / KAGGLE_BUNDLE
    if (target / ".done").is_file():
        return target
    with open_archive([bundle]) as z:
        names = {Path(i.filename).name: i for i in z.infolist() if not i.is_dir()}
        wanted = [*KAGGLE_ZIPS.values(), *KAGGLE_CSVS.values()]
        missing = [n for n in wanted if n not in names]
        if missing:
            raise DataError(f"{bundle}: {missing} not in the bundle")
        target.mkdir(parents=True, exist_ok=True)
        for n in wanted:
            try:
                with z.open(names[n]) as src, open(target / f"{n}.tmp", "wb") as dst:
                    shutil.copyfileobj(src, dst, 1 << 20)
            except BaseException:
                (target / f"{n}.tmp").unlink(missing_ok=True)
                raise
            os.replace(target / f"{n}.tmp", target / n)
    (target / ".done").write_text("")
    return target


def find_source(folder: Path, table: tuple[Archive, ...], pending: set[str]) -> str:
    """'zenodo' or 'kaggle': which set of archives `folder` holds (for the clip sets in
    `pending`, those not unpacked yet); an error listing what each would need otherwise."""
    folder = Path(folder)
    # a split archive's parts are counted from its last part (open_split_zip), not the table
    zenodo_missing = [a.name for a in table if a.name.endswith(".zip") and (a.holds == "meta" or a.holds in pending)
                      and not (folder / a.name).is_file()]
    if not zenodo_missing:
        return "zenodo"
    kaggle = [*(KAGGLE_ZIPS[s] for s in SETS if s in pending), *KAGGLE_CSVS.values()]
    if (folder / KAGGLE_BUNDLE).is_file() or all((folder / n).is_file() for n in kaggle):
        return "kaggle"
    raise DataError(f"{folder}: neither the Zenodo archives nor the competition's files are all there.\n"
                    f"  Zenodo: missing {zenodo_missing}\n"
                    f"  Kaggle: needs {KAGGLE_BUNDLE}, or {kaggle}")


def archive_parts(folder: Path, archives: list[Archive]) -> list[Path]:
    """The files of one archive in `folder`: a single .zip, or a split archive's parts
    (<stem>.z01, .z02, ... as found, then the .zip, which is the last part)."""
    last = folder / next(a.name for a in archives if a.name.endswith(".zip"))
    return sorted(folder.glob(f"{glob.escape(last.stem)}.z[0-9][0-9]")) + [last]


def write_csv(path: Path, header: list[str], rows: list[list]) -> None:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    atomic_write_text(path, buf.getvalue())


def unpack_set(name: str, parts: list[Path], clips: Clips, dest: Path, state: Path, csv_name: str,
               delete_archives: bool = False) -> str:
    """Unpack one clip set into dest/audio_*/ unless it is marked done; returns what was done."""
    marker = state / f"{name}.done"
    if marker.is_file():
        return "already unpacked"
    staging = state / f"{name}.unpacking"
    shutil.rmtree(staging, ignore_errors=True)
    where = str(parts[-1]) if len(parts) == 1 else f"{parts[-1]} (+{len(parts) - 1} parts)"
    try:
        with open_archive(parts) as z:
            extract_clips(z, where, clips.fnames, staging, csv_name)
        audio = dest / SET_AUDIO[name]
        audio.mkdir(parents=True, exist_ok=True)
        for fname in clips.fnames:
            os.replace(staging / fname, audio / fname)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    shutil.rmtree(staging, ignore_errors=True)
    marker.write_text("\n".join(p.name for p in parts) + "\n")
    if delete_archives:
        for p in parts:
            p.unlink(missing_ok=True)
    return f"{len(clips.fnames)} clips unpacked"


def write_layout(dest: Path, sets: dict[str, Clips], classes: list[str], test_truth: Clips | None) -> None:
    """The CSVs, train_curated.csv last (the stages take the dataset as complete once it exists)."""
    if test_truth is not None:
        header = ["fname", "labels"] + ([TEST_PART_COLUMN] if test_truth.usage else [])
        rows = [[f, ",".join(l)] + ([u] if test_truth.usage else [])
                for f, l, u in zip(test_truth.fnames, test_truth.labels, test_truth.usage or [""] * len(test_truth.fnames))]
        write_csv(dest / TEST_LABELS_CSV, header, rows)
    else:
        (dest / TEST_LABELS_CSV).unlink(missing_ok=True)
    write_csv(dest / SUBMISSION_CSV, ["fname"] + classes, [[f] + [0] * len(classes) for f in sets["test"].fnames])
    write_csv(dest / NOISY_CSV, ["fname", "labels"], [[f, ",".join(l)] for f, l in zip(sets["noisy"].fnames, sets["noisy"].labels)])
    write_csv(dest / CURATED_CSV, ["fname", "labels"],
              [[f, ",".join(l)] for f, l in zip(sets["curated"].fnames, sets["curated"].labels)])


def truth_for(test: Clips, truth: Clips, where: Path) -> Clips | None:
    """The post-competition labels of the clips in `test`, in its order; None (with a
    note) when some clip has none."""
    row = {f: i for i, f in enumerate(truth.fnames)}
    absent = [f for f in test.fnames if f not in row]
    if absent:
        print(f"note: {len(absent)} test clip(s) have no label in {where} (e.g. {absent[:3]}); no {TEST_LABELS_CSV}")
        return None
    pick = [row[f] for f in test.fnames]
    return Clips(test.fnames, [truth.labels[i] for i in pick], [truth.usage[i] for i in pick] if truth.usage else [])


def prepare(source: Path, dest: Path, table: tuple[Archive, ...], delete_archives: bool = False) -> dict:
    """Lay out `dest` from the archives in `source`. Returns {set: what was done} plus
    the source kind and the clip counts, for the summary."""
    source, dest = Path(source), Path(dest)
    state = dest / STATE_DIR
    state.mkdir(parents=True, exist_ok=True)
    classes = competition_classes()
    kind = find_source(source, table, {s for s in SETS if not (state / f"{s}.done").is_file()})
    if kind == "zenodo":
        meta = next(a for a in table if a.holds == "meta")
        sets = read_zenodo_meta(source / meta.name, classes)
        parts = {s: archive_parts(source, [a for a in table if a.holds == s]) for s in SETS}
        csv_names = {s: f"{meta.name}: {META_CSVS[s]}" for s in SETS}
        truth = sets["test"]
    else:
        files = kaggle_files(source, state)
        sets = read_kaggle_csvs(files, classes)
        parts = {s: [files / KAGGLE_ZIPS[s]] for s in SETS}
        csv_names = {s: str(files / KAGGLE_CSVS[s]) for s in SETS}
        meta = source / "FSDKaggle2019.meta.zip"
        truth = truth_for(sets["test"], read_zenodo_meta(meta, classes)["test"], meta) if meta.is_file() else None
    done = {s: unpack_set(s, parts[s], sets[s], dest, state, csv_names[s], delete_archives) for s in SETS}
    write_layout(dest, sets, classes, truth)
    usage = {}
    if truth is not None and truth.usage:
        for u in truth.usage:
            usage[u] = usage.get(u, 0) + 1
    return {"source": kind, "done": done, "counts": {s: len(sets[s].fnames) for s in SETS}, "usage": usage,
            "test_labels": truth is not None}
