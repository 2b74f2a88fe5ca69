"""Tag audio files with the trained models: the top-k labels and their scores per file.

    python code/tag.py clip.wav more_clips/ --top-k 3
    python code/tag.py --profile demo input/demo/audio_test --json tags.json --csv tags.csv

Folders are searched recursively for audio files (wav, flac, ogg, mp3, aiff, ...). Each
file goes through exactly what the features stage does to a clip (decode to mono 44.1 kHz,
trim silence, global features of the untrimmed clip, length, int16 storage; it is put in
a temporary feature cache), then each model predicts it with the 3-TTA of predict.py,
averaged over every trained fold of the model.

Models are combined as in the submission: by the trained STACKER when ensemble.py has
saved one (models/stacker/) and every model it stacks is trained, applied to the models'
scores and their weighted average, averaged over its folds; otherwise (or with --combine
average, or --models) by the zoo's WEIGHTED AVERAGE (config.ZOO weights, as average.csv),
over every trained member with a weight. --models picks members (one model: its scores).

Class names come from the header of a prediction CSV in the models folder (oof.csv,
test.csv, fold<k>.*.csv, written by predict.py with the training data's classes), so a
models folder tags on its own; before predict.py has run, from the data's class list
(<data-dir>/sample_submission.csv, or without it the labels of train_curated.csv).

Long recordings: --segments SECONDS [--hop SECONDS] tags sliding windows of each file
instead of the whole file (code/segments.py: the file is decoded once and each window goes
through the same per-clip processing as a clip; a partial last window is kept when it
holds half a segment or more; a file shorter than a segment is one window). Each window
is a row of the CSV and JSON, with its `start` and `end` in seconds, and each file gets a
heatmap of its top classes over time, <file stem>.heatmap.png in --plot FOLDER (default:
the folder of --csv, else of --json).

Exit status: 0 when every file was tagged; 1 when some could not be decoded (each is
named, the others are still tagged and written); 2 when there is nothing to tag with
(no trained models, no class list) or no file was given.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fat2019 import cli
from fat2019 import config
from fat2019 import layout
from fat2019.data import segments
from fat2019.data.audio import AudioError, cache_entry, featurise
from fat2019.data.batches import ClipData, predict_tta
from fat2019.data.dataset import DatasetError, audio_extensions, load_classes, read_classes
from fat2019.data.feature_cache import CacheWriter, FeatureCache, Source, file_signature
from fat2019.util.atomic import atomic_write_text
from fat2019.nn.models import build_model, build_stacker
from fat2019.eval.reports import segments_heatmap
from fat2019.ensemble.stacking import stack_inputs
from fat2019.train.workspace import write_predictions

FOLD_WEIGHTS = re.compile(r"fold(\d+)\.weights\.h5")
PREDICTION_CSVS = ("oof.csv", "test.csv", "fold*.oof.csv", "fold*.test.csv")


class TagError(Exception):
    """Nothing can be tagged (no models, no classes, no files); exit status 2."""


@dataclass
class Member:
    """A trained zoo model as tagging uses it: its scaled config, folds and normalised weight."""
    config: config.ModelConfig
    folder: Path
    folds: list[int]
    weight: float


def trained_folds(folder: Path) -> list[int]:
    """Fold numbers whose training finished (fold<k>.json and fold<k>.weights.h5)."""
    found = [int(m.group(1)) for p in folder.glob("fold*.weights.h5") if (m := FOLD_WEIGHTS.fullmatch(p.name))]
    return sorted(k for k in found if layout.is_finished(folder, layout.fold_prefix(k)))


def choose_members(models_dir: Path, profile: config.Profile, names: list[str] | None) -> list[Member]:
    """The models to tag with and their weights (normalised; a plain mean when all are 0)."""
    wanted = config.select_models(names)
    trained = [(m, trained_folds(models_dir / m.name)) for m in wanted]
    untrained = [m.name for m, folds in trained if not folds]
    trained = [(m, folds) for m, folds in trained if folds]
    if names and untrained:
        raise TagError(f"--models {' '.join(untrained)}: no trained folds in {models_dir} "
                       f"(looked for <model>/fold<k>.weights.h5); run code/train.py --models ... first")
    if not trained:
        raise TagError(f"no trained models in {models_dir} (looked for <model>/fold<k>.weights.h5 of "
                       f"{', '.join(m.name for m in wanted)}); run code/train.py, or point --models-dir "
                       f"(or --profile) at a folder of trained models")
    if not names:
        if untrained:
            print(f"note: not trained in {models_dir}, left out: {', '.join(untrained)}", file=sys.stderr)
        if any(m.weight > 0 for m, _ in trained):   # weight-0 members would add nothing
            trained = [(m, folds) for m, folds in trained if m.weight > 0]
    weights = np.array([m.weight for m, _ in trained], np.float64)
    if weights.sum() <= 0:      # like ensemble.py: only weight-0 members, a plain mean
        weights = np.ones_like(weights)
    weights /= weights.sum()
    return [Member(profile.scale(m), models_dir / m.name, folds, float(w))
            for (m, folds), w in zip(trained, weights)]


def find_classes(members: list[Member], data_dir: Path) -> tuple[list[str], Path]:
    """Class names (and where they came from): a prediction CSV of the models, else the
    dataset's class list (dataset.load_classes)."""
    for member in members:
        for pattern in PREDICTION_CSVS:
            for path in sorted(member.folder.glob(pattern)):
                return read_classes(path), path
    try:
        return load_classes(data_dir)
    except DatasetError as e:
        raise TagError(f"no class list: no prediction CSV in {members[0].folder} (run code/predict.py) "
                       f"and none in --data-dir: {e}") from None


def is_hidden(relative: Path) -> bool:
    """A name starting with "." at any depth below the folder given: hidden files and
    folders, and macOS's "._name" resource forks, which hold no audio."""
    return any(part.startswith(".") for part in relative.parts)


def collect_files(inputs: list[Path]) -> tuple[list[Path], list[tuple[str, str]]]:
    """Audio files named or found (recursively) in folders, each once; a folder's hidden
    entries are skipped (`is_hidden`), a file named explicitly is not. (path, problem) for
    inputs that do not exist or hold no audio."""
    files, problems, seen = [], [], set()
    for item in inputs:
        if item.is_dir():
            found = sorted(p for p in item.rglob("*") if p.is_file() and p.suffix.lower() in audio_extensions()
                           and not is_hidden(p.relative_to(item)))
            if not found:
                problems.append((str(item), "folder holds no audio files"))
        elif item.is_file():
            found = [item]
        else:
            problems.append((str(item), "no such file or folder"))
            continue
        for path in found:
            if path.resolve() not in seen:
                seen.add(path.resolve())
                files.append(path)
    return files, problems


Window = tuple[int, int] | None   # [start, end) in samples of a --segments window; None: the whole file


def file_clips(path: Path, windowing: segments.Windowing | None) -> Iterator[tuple[str, Window, tuple]]:
    """(cache key, window, cache entry) of the file as a whole (the features stage's own
    worker), or of each of its windows. Raises AudioError when the file cannot be used."""
    if windowing is None:
        name, result = featurise((str(path), str(path)))
        if isinstance(result, str):
            raise AudioError(result)
        yield name, None, result
        return
    for start, end, clip in segments.windows(path, windowing):
        yield f"{path}@{start}", (start, end), cache_entry(clip)


def featurise_files(files: list[Path], folder: Path, windowing: segments.Windowing | None = None
                    ) -> tuple[FeatureCache | None, list[tuple[str, Window]], list[tuple[str, str]]]:
    """The files (or their windows) as a feature cache in `folder`, one row each, written
    as they are processed (only the file being processed is held in memory); the file and
    window of each row; (path, problem) for each file that could not be used."""
    writer = CacheWriter(folder)
    kept, rows, problems = [], [], []
    for path in files:
        signature = file_signature(path)
        added = []
        try:
            for key, window, entry in file_clips(path, windowing):
                source = Source(key, path, *signature)
                writer.add(source, *entry)
                added.append((source, window))
        except AudioError as e:
            problems.append((str(path), str(e)))
            continue
        except Exception as e:  # like the features stage: one odd file must not stop the others
            problems.append((str(path), f"unexpected error while processing ({type(e).__name__}: {e})"))
            continue
        kept += [source for source, _ in added]
        rows += [(str(path), window) for _, window in added]
    if not kept:
        writer.close()
        return None, [], problems
    writer.finish(kept)
    return FeatureCache(folder), rows, problems


def load_stacker(models_dir: Path) -> dict | None:
    """stacker.json of the stacker ensemble.py saved (None when there is none), with the
    paths of its fold weights."""
    path = layout.stacker_dir(models_dir) / layout.STACKER_JSON
    if not path.is_file():
        return None
    saved = json.loads(path.read_text())
    saved["weights"] = [layout.stacker_weights_path(path.parent, k) for k in range(saved["n_folds"])]
    missing = [str(p) for p in saved["weights"] if not p.is_file()]
    if missing:
        raise TagError(f"the saved stacker in {path.parent} lacks {missing}; rerun code/ensemble.py")
    return saved


def apply_stacker(stacker: dict, member_scores: list[np.ndarray], average: np.ndarray) -> np.ndarray:
    """The stacker's mean over its folds, on the models' scores and their weighted average."""
    x = stack_inputs(member_scores, average)
    model = build_stacker(x.shape[1], x.shape[2], offset=stacker["offset"])
    total = np.zeros(average.shape, np.float64)
    for path in stacker["weights"]:
        model.load_weights(path)
        total += model.predict(x, verbose=0, batch_size=1024)
    return (total / len(stacker["weights"])).astype(np.float32)


def predict_members(members: list[Member], clips: ClipData, n_classes: int, batch_size: int,
                    workers: int) -> list[np.ndarray]:
    """Each member's mean over its folds (3-TTA)."""
    scores = []
    for member in members:
        model = build_model(member.config, n_classes)
        fold_sum = np.zeros((len(clips), n_classes), np.float64)
        for k in member.folds:
            path = member.folder / f"fold{k}.weights.h5"
            try:
                model.load_weights(path)
            except (ValueError, OSError) as e:   # another profile's widths or class list; a broken file
                raise TagError(f"{path} does not fit a {member.config.name} of this profile with {n_classes} "
                               f"classes (trained with another --profile or --set?): {e}") from None
            fold_sum += predict_tta(model, clips, member.config.crop_samples, batch_size, workers)
        scores.append((fold_sum / len(member.folds)).astype(np.float32))
    return scores


def weighted_average(members: list[Member], scores: list[np.ndarray]) -> np.ndarray:
    return sum(m.weight * s.astype(np.float64) for m, s in zip(members, scores)).astype(np.float32)


def top_labels(scores: np.ndarray, classes: list[str], k: int) -> list[tuple[str, float]]:
    order = np.argsort(-scores, kind="stable")[:k]
    return [(classes[i], float(scores[i])) for i in order]


def window_fields(window: Window) -> dict[str, float]:
    """`start` and `end` in seconds of a --segments window; nothing for a whole file."""
    return {} if window is None else {"start": segments.seconds(window[0]), "end": segments.seconds(window[1])}


def listing_title(fname: str, window: Window) -> str:
    """The line above a file's (or window's) labels on stdout."""
    if window is None:
        return fname
    times = window_fields(window)
    return f"{fname}  {times['start']:.2f}-{times['end']:.2f} s"


def results_json(members: list[Member], classes: list[str], rows: list[tuple[str, Window]], scores: np.ndarray,
                 notes: list[str], top_k: int, problems: list[tuple[str, str]], combination: str,
                 windowing: segments.Windowing | None = None) -> str:
    document = {
        "combination": combination,
        "models": [{"name": m.config.name, "folds": m.folds, "weight": round(m.weight, 6)} for m in members],
        "classes": classes,
        **({} if windowing is None else {"segments": {"seconds": segments.seconds(windowing.segment),
                                                      "hop": segments.seconds(windowing.hop)}}),
        "files": [{"path": f, **window_fields(window),
                   "top": [{"label": c, "score": round(s, 6)} for c, s in top_labels(row, classes, top_k)],
                   "scores": {c: round(float(s), 6) for c, s in zip(classes, row)},
                   "notes": [n for n in note.split("; ") if n]}
                  for (f, window), row, note in zip(rows, scores, notes)],
        "errors": [{"path": p, "error": why} for p, why in problems],
    }
    return json.dumps(document, indent=1) + "\n"


def write_heatmaps(folder: Path, rows: list[tuple[str, Window]], scores: np.ndarray, classes: list[str]) -> list[Path]:
    """One heatmap per file of its windows' scores (segments.heatmap_name)."""
    by_file: dict[str, list[int]] = {}
    for i, (fname, _) in enumerate(rows):
        by_file.setdefault(fname, []).append(i)
    taken: set[str] = set()
    written = []
    for fname, picked in by_file.items():
        starts = np.array([segments.seconds(rows[i][1][0]) for i in picked])
        ends = np.array([segments.seconds(rows[i][1][1]) for i in picked])
        out = folder / segments.heatmap_name(fname, taken)
        written.append(segments_heatmap(out, Path(fname).name, classes, starts, ends, scores[picked]))
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("paths", nargs="+", type=Path, metavar="PATH", help="audio files and/or folders")
    cli.add_common_args(parser, features=False, submissions=False)
    parser.add_argument("--models", nargs="+", metavar="NAME",
                        help=f"zoo members to tag with (default: every trained one with a weight): "
                             f"{', '.join(config.ZOO_BY_NAME)}")
    parser.add_argument("--top-k", type=int, default=5, help="labels printed per file (default 5)")
    parser.add_argument("--csv", type=Path, metavar="PATH",
                        help="write every class's score: fname (the path) + one column per class")
    parser.add_argument("--json", type=Path, metavar="PATH",
                        help="write models, classes and per file the top-k labels, all scores and notes")
    parser.add_argument("--combine", choices=["auto", "stacker", "average"], default="auto",
                        help="auto (default): the saved stacker when there is one and --models is not "
                             "given, else the weighted average")
    parser.add_argument("--batch-size", type=int, help="clips per prediction batch (default: the profile's)")
    parser.add_argument("--workers", type=int, default=2, help="threads building batches (default 2)")
    g = parser.add_argument_group("long recordings")
    g.add_argument("--segments", type=float, metavar="SECONDS",
                   help="tag windows of SECONDS of each file instead of the whole file: one CSV/JSON row per "
                        "window, with its start and end (seconds), and a heatmap per file")
    g.add_argument("--hop", type=float, metavar="SECONDS",
                   help="seconds from one window's start to the next (default: the segment length)")
    g.add_argument("--plot", type=Path, metavar="FOLDER",
                   help=f"folder for the heatmaps, <file stem>{segments.HEATMAP_SUFFIX} (default: the folder of "
                        f"--csv, else of --json)")
    args = parser.parse_args(argv)
    if args.top_k < 1:
        parser.error("--top-k must be at least 1")
    windowing = None
    if args.segments is not None:
        try:
            windowing = segments.Windowing.from_seconds(args.segments, args.hop)
        except ValueError as e:
            parser.error(f"--segments/--hop: {e}")
    elif args.hop is not None or args.plot is not None:
        parser.error("--hop and --plot need --segments")
    profile, paths = cli.resolve(args)

    try:
        stacker = None
        if args.combine == "stacker" or (args.combine == "auto" and not args.models):
            stacker = load_stacker(paths.models)
            if stacker is None and args.combine == "stacker":
                raise TagError(f"no saved stacker in {layout.stacker_dir(paths.models)} (run code/ensemble.py)")
            untrained = [n for n in stacker["models"] if not trained_folds(paths.models / n)] if stacker else []
            if untrained:
                problem = f"the saved stacker stacks {', '.join(untrained)}, with no trained folds in {paths.models}"
                if args.combine == "stacker":
                    raise TagError(f"{problem}; train them or use --combine average")
                print(f"note: {problem}; using the weighted average", file=sys.stderr)
                stacker = None
        if stacker is not None:
            # every model the stacker was trained on, weight 0 ones included, with its weights
            members = choose_members(paths.models, profile, stacker["models"])
            for member, weight in zip(members, stacker["average_weights"]):
                member.weight = weight
        else:
            members = choose_members(paths.models, profile, args.models)
        classes, classes_from = find_classes(members, paths.data)
        if stacker is not None and stacker["classes"] != classes:
            raise TagError(f"the saved stacker's classes differ from {classes_from}; rerun code/ensemble.py")
        files, problems = collect_files(args.paths)
        if not files and not problems:
            raise TagError("no files to tag")
    except (TagError, DatasetError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    used = ", ".join(f"{m.config.name} ({len(m.folds)} fold(s), weight {m.weight:.3f})" for m in members)
    combiner = "stacker" if stacker is not None else "weighted average"
    combination = ("stacker over the models' fold-mean 3-TTA scores and their weighted average"
                   if stacker is not None else "weighted average of the models' fold-mean 3-TTA scores")
    print(f"tag: profile {profile.name}, {len(files)} file(s); {combiner} of {used}; "
          f"classes from {classes_from}", file=sys.stderr)

    with tempfile.TemporaryDirectory(prefix="tag-") as tmp:
        started = time.perf_counter()
        cache, rows, bad = featurise_files(files, Path(tmp) / "clips", windowing)
        featurised = time.perf_counter()
        problems += bad
        scores, notes = np.zeros((0, len(classes)), np.float32), []
        if cache is not None:
            clips = ClipData(cache, np.arange(len(cache)))
            try:
                member_scores = predict_members(members, clips, len(classes),
                                                args.batch_size or profile.predict_batch_size, args.workers)
                scores = weighted_average(members, member_scores)
                if stacker is not None:
                    scores = apply_stacker(stacker, member_scores, scores)
            except TagError as e:
                print(f"error: {e}", file=sys.stderr)
                return 2
            notes = list(cache.index["notes"])
        print(f"tag: {len(rows)} {'window' if windowing else 'clip'}(s) decoded and featurised in "
              f"{featurised - started:.1f} s, predicted in {time.perf_counter() - featurised:.1f} s", file=sys.stderr)

    fnames = [fname for fname, _ in rows]
    for (fname, window), row in zip(rows, scores):
        print(listing_title(fname, window))
        for label, score in top_labels(row, classes, args.top_k):
            print(f"  {score:.4f}  {label}")
    for path, why in problems:
        print(f"error: {path}: {why}", file=sys.stderr)
    if args.csv:
        # start and end written as Python prints them: the CSV's %.6g would round long files' times
        times = {} if windowing is None else {
            column: [repr(window_fields(w)[column]) for _, w in rows] for column in ("start", "end")}
        write_predictions(args.csv, fnames, classes, scores, times)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(args.json, results_json(members, classes, rows, scores, notes, args.top_k, problems,
                                                   combination, windowing))
    if windowing is not None and rows:
        plot_dir = args.plot or next((p.parent for p in (args.csv, args.json) if p is not None), None)
        if plot_dir is None:
            print("note: no heatmaps written: give --plot FOLDER, --csv or --json", file=sys.stderr)
        else:
            for path in write_heatmaps(plot_dir, rows, scores, classes):
                print(f"tag: heatmap {path}", file=sys.stderr)
    if problems:
        print(f"tag: {len(problems)} input(s) could not be tagged, {len(set(fnames))} tagged", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
