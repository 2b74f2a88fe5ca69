"""Tag audio files with the trained models: the top-k labels and their scores per file.

    .venv/bin/python code/tag.py --models-dir models/demo clip.wav more_clips/ --top-k 3
    .venv/bin/python code/tag.py --profile demo input/demo/audio_test --json tags.json --csv tags.csv

The models folder's run.json (written by the first stage that trained it) gives the
profile, the --set overrides and the class list, so --models-dir alone is enough; a
--profile or --set that contradicts it is refused (exit 2, each differing field named).

Folders are searched recursively for audio files (wav, flac, ogg, mp3, aiff, ...); names
starting with "." (hidden files and folders, macOS "._" files) are skipped. Each file goes
through exactly what the features stage does to a clip (decode to mono 44.1 kHz, trim
silence, global features of the untrimmed clip, length, int16 storage; it is put in a
temporary feature cache), then scored by the models folder's Predictor
(fat2019/ensemble/predictor.py): each model's 3-TTA, averaged over its trained folds.

Models are combined as in the submission: by the combination ensemble.py saved
(models/stacker/: the trained STACKER by default, or the FITTED WEIGHTS after
`ensemble.py --combine fitted`) when every model it uses is trained; otherwise (or with
--combine average, or --models) by the zoo's WEIGHTED AVERAGE, over every trained member
with a weight. --combine stacker / fitted asks for one of the saved ones. --models picks members (one model: its scores). The stacker's output ranks
classes but reads low (its top scores sit near 0.05-0.2), so tag.py shows it through the
calibration ensemble.py fitted on its out-of-fold predictions: the same ranking, as
probabilities (docs/models_folder.md); --raw-scores shows the submission's own numbers.

Folders trained before run.json existed: class names come from a prediction CSV of the
models folder, else from the data's class list (<data-dir>/sample_submission.csv, or the
labels of train_curated.csv); give --profile and --set as they were trained.

Long recordings: --segments SECONDS [--hop SECONDS] tags sliding windows of each file
instead of the whole file (code/fat2019/data/segments.py: the file is decoded once and each window goes
through the same per-clip processing as a clip; a partial last window is kept when it
holds half a segment or more; a file shorter than a segment is one window). Each window
is a row of the CSV and JSON, with its `start` and `end` in seconds, and each file gets a
heatmap of its top classes over time, <file stem>.heatmap.png in --plot FOLDER (default:
the folder of --csv, else of --json).

Exit status: 0 when every file was tagged; 1 when some could not be decoded (each is
named, the others are still tagged and written); 2 when there is nothing to tag with
(no trained models, no class list, options that contradict run.json) or no file was given.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from fat2019 import cli
from fat2019 import config
from fat2019 import layout
from fat2019 import settings
from fat2019.data import segments
from fat2019.data.audio import AudioError, cache_entry, featurise
from fat2019.data.dataset import DatasetError, audio_extensions, load_classes
from fat2019.data.feature_cache import CacheWriter, FeatureCache, Source, file_signature
from fat2019.ensemble import predictions
from fat2019.util.atomic import atomic_write_text

if TYPE_CHECKING:   # imported when tagging starts: --help stays free of TensorFlow/Keras (cli.py)
    from fat2019.ensemble.predictor import Predictor


class TagError(cli.BadInput):
    """Nothing can be tagged (no models, no classes, no files); exit status 2."""


def find_classes(models_dir: Path, data_dir: Path) -> tuple[list[str], Path]:
    """Class names (and where they came from): a prediction CSV of a zoo model in the
    models folder, else the dataset's class list (dataset.load_classes)."""
    for m in config.ZOO:
        for pattern in layout.PREDICTION_CSV_PATTERNS:
            for path in sorted((Path(models_dir) / m.name).glob(pattern)):
                return predictions.classes_of(path), path
    try:
        return load_classes(data_dir)
    except DatasetError as e:
        raise TagError(f"no class list: no prediction CSV in {models_dir}/<model>/ (run code/predict.py) "
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


def results_json(predictor: Predictor, rows: list[tuple[str, Window]], scores: np.ndarray, notes: list[str],
                 top_k: int, problems: list[tuple[str, str]], scale: str,
                 windowing: segments.Windowing | None = None) -> str:
    classes = predictor.classes
    document = {
        "combination": predictor.combination,
        "scale": scale,
        "models": [{"name": m.config.name, "folds": m.folds, "weight": round(m.weight, 6)} for m in predictor.members],
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


def write_heatmaps(folder: Path, rows: list[tuple[str, Window]], scores: np.ndarray, classes: list[str],
                   scale: str) -> list[Path]:
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
        from fat2019.eval.reports import segments_heatmap   # matplotlib: only when plotting
        written.append(segments_heatmap(out, Path(fname).name, classes, starts, ends, scores[picked], scale))
    return written


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The options, checked; `args.windowing` is the --segments windowing (None without)."""
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
    parser.add_argument("--combine", choices=config.COMBINATIONS, default="auto",
                        help="auto (default): the saved stacker when there is one and --models is not "
                             "given, else the weighted average")
    parser.add_argument("--raw-scores", action="store_true",
                        help="print and write the stacker's own output (the submission's numbers: a ranking, "
                             "low for every class) instead of its calibrated scores")
    parser.add_argument("--batch-size", type=int, help="clips per prediction batch (default: the profile's)")
    parser.add_argument("--workers", type=int, default=2, help="threads building batches (default 2)")
    g = parser.add_argument_group("long recordings")
    g.add_argument("--segments", type=float, metavar="SECONDS",
                   help="tag windows of SECONDS of each file instead of the whole file: one CSV/JSON row per "
                        "window, with its start and end (seconds), and a heatmap per file")
    g.add_argument("--hop", type=float, metavar="SECONDS",
                   help="seconds from one window's start to the next (default: the segment length)")
    g.add_argument("--plot", type=Path, metavar="FOLDER",
                   help=f"folder for the heatmaps, <file stem>{layout.HEATMAP_SUFFIX} (default: the folder of "
                        f"--csv, else of --json)")
    args = parser.parse_args(argv)
    if args.top_k < 1:
        parser.error("--top-k must be at least 1")
    args.windowing = None
    if args.segments is not None:
        try:
            args.windowing = segments.Windowing.from_seconds(args.segments, args.hop)
        except ValueError as e:
            parser.error(f"--segments/--hop: {e}")
    elif args.hop is not None or args.plot is not None:
        parser.error("--hop and --plot need --segments")
    return args


def score_files(predictor: Predictor, files: list[Path], windowing: segments.Windowing | None, batch_size: int,
                workers: int) -> tuple[list[tuple[str, Window]], np.ndarray, list[str], list[tuple[str, str]]]:
    """(file and window of each row, the predictor's scores, each row's notes, (path,
    problem) of each file that could not be used), the files featurised in a temporary cache."""
    with tempfile.TemporaryDirectory(prefix="tag-") as tmp:
        started = time.perf_counter()
        cache, rows, problems = featurise_files(files, Path(tmp) / "clips", windowing)
        featurised = time.perf_counter()
        scores, notes = np.zeros((0, len(predictor.classes)), np.float32), []
        if cache is not None:
            from fat2019.data.batches import ClipData
            scores = predictor.score(ClipData(cache, np.arange(len(cache))), batch_size, workers)
            notes = list(cache.index["notes"])
        print(f"tag: {len(rows)} {'window' if windowing else 'clip'}(s) decoded and featurised in "
              f"{featurised - started:.1f} s, predicted in {time.perf_counter() - featurised:.1f} s", file=sys.stderr)
    return rows, scores, notes, problems


def write_results(args: argparse.Namespace, predictor: Predictor, rows: list[tuple[str, Window]], scores: np.ndarray,
                  notes: list[str], problems: list[tuple[str, str]], scale: str) -> None:
    """The listing on stdout, the problems on stderr, and the --csv, --json and heatmaps."""
    classes, windowing = predictor.classes, args.windowing
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
        predictions.write_predictions(args.csv, [fname for fname, _ in rows], classes, scores, times)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(args.json, results_json(predictor, rows, scores, notes, args.top_k, problems, scale,
                                                   windowing))
    if windowing is not None and rows:
        plot_dir = args.plot or next((p.parent for p in (args.csv, args.json) if p is not None), None)
        if plot_dir is None:
            print("note: no heatmaps written: give --plot FOLDER, --csv or --json", file=sys.stderr)
        else:
            for path in write_heatmaps(plot_dir, rows, scores, classes, f"{predictor.combiner}: {scale}"):
                print(f"tag: heatmap {path}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    """The exit code: 0 tagged, 1 some inputs could not be tagged, 2 nothing can be (bad input)."""
    return cli.call(tag_files, argv)


def tag_files(argv: list[str] | None) -> int:
    args = parse_args(argv)
    from fat2019.ensemble.predictor import Predictor   # after parsing: --help stays quick

    resolved = settings.resolve(args)
    profile, paths, record = resolved.profile, resolved.paths, resolved.record
    predictor = Predictor.load(paths.models, profile, names=args.models, combine=args.combine)
    if record is not None:
        classes, classes_from = record["classes"], layout.run_json(paths.models)
    else:   # a folder trained before runs were recorded
        classes, classes_from = find_classes(paths.models, paths.data)
    predictor.use_classes(classes)
    files, problems = collect_files(args.paths)
    if not files and not problems:
        raise TagError("no files to tag")
    used = ", ".join(f"{m.config.name} ({len(m.folds)} fold(s), weight {m.weight:.3f})" for m in predictor.members)
    if args.raw_scores:
        scale = f"{predictor.combiner} output" + (", uncalibrated (--raw-scores)" if predictor.stacker else "")
    else:
        scale = predictor.scale
    print(f"tag: profile {profile.name}, {len(files)} file(s); {predictor.combiner} of {used}; "
          f"classes from {classes_from}\ntag: scores: {scale}", file=sys.stderr)
    rows, scores, notes, bad = score_files(predictor, files, args.windowing,
                                           args.batch_size or profile.predict_batch_size, args.workers)
    problems += bad
    if not args.raw_scores:
        scores = predictor.readable(scores)
    write_results(args, predictor, rows, scores, notes, problems, scale)
    if problems:
        print(f"tag: {len(problems)} input(s) could not be tagged, {len(set(f for f, _ in rows))} tagged",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    cli.run_stage(main)
