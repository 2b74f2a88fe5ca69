"""Stage 1: decode every clip once and cache what the later stages need.

For each clip set (curated, noisy, test) this writes <features-dir>/<set>/ (see
feature_cache.py): the trimmed waveform as int16, the (128, 12) global features of the
untrimmed clip, the length feature, and notes on anything unusual. Rerunning is a no-op
when nothing changed; changed or added files are decoded, the rest is copied from the old
cache; an interrupted run resumes where it stopped.

Files that cannot be decoded (or are missing) are collected over the whole set and listed
in <features-dir>/<set>/bad_files.csv; the stage then fails, naming each, unless
--skip-bad is given, which leaves them out of the cache with a warning.

Two runs on one features folder at once do not collide: a set's build holds
<features-dir>/<set>.lock (util/locks.py); the second run says who holds it, waits, and
then finds the set up to date.

    .venv/bin/python code/features.py                   # input/ when it has train_curated.csv, else input/demo/
    .venv/bin/python code/features.py --profile demo --workers 2
"""
from __future__ import annotations

import sys
import time

from fat2019 import cli
from fat2019 import layout
from fat2019 import settings


def describe_build(n_clips: int, decoded: int, n_bad: int, seconds: float, skip_bad: bool) -> str:
    """Where a set's clips came from: the cache, decoding, or nowhere (bad files)."""
    if not decoded and not n_bad:
        return f"{n_clips} clips, up to date (all from the cache)"
    rate = f" ({decoded / seconds:.1f} clips/s)" if decoded and seconds > 0 else ""
    bad = f", {n_bad} {'left out (--skip-bad)' if skip_bad else 'bad'}" if n_bad else ""
    return (f"{n_clips} clips: {n_clips - decoded - n_bad} from the cache, {decoded} decoded in {seconds:.1f} s"
            f"{rate}{bad}")


# what the notes of a cache's index.csv say, by kind (data/audio.py writes them)
NOTE_KINDS = (("truncated", "truncated"), ("averaged to mono", "channels averaged"), ("resampled", "resampled"),
              ("non-finite", "non-finite samples zeroed"), ("beyond full scale", "beyond full scale"),
              ("all samples are zero", "silent"), ("only ", "very short"))


def notes_line(folder) -> str | None:
    """How many clips of a built set carry a note, by kind, and where to read them; None
    when none does, or when the set is not built (bad files stopped it)."""
    import pandas as pd
    from fat2019.data.feature_cache import INDEX

    if not (folder / INDEX).is_file():
        return None
    notes = pd.read_csv(folder / INDEX, usecols=["notes"], dtype={"notes": str})["notes"].dropna()
    notes = notes[notes.str.strip() != ""]
    if notes.empty:
        return None
    counts = {}
    for text in notes:
        for kind in dict.fromkeys(next((k for key, k in NOTE_KINDS if key in part), "other")
                                  for part in text.split("; ")):
            counts[kind] = counts.get(kind, 0) + 1
    kinds = ", ".join(f"{kind} {n}" for kind, n in counts.items())
    return f"{len(notes)} clip(s) kept with a note ({kinds}): the notes column of {folder / INDEX}"


def main(argv: list[str] | None = None) -> int:
    parser = cli.script_parser(__doc__)
    cli.add_common_args(parser, submissions=False)
    parser.add_argument("--sets", nargs="+", choices=["curated", "noisy", "test"],
                        default=["curated", "noisy", "test"], help="clip sets to process (default: all)")
    parser.add_argument("--workers", type=int, default=cli.default_workers(),
                        help="decoding processes (default: one per core)")
    parser.add_argument("--skip-bad", action="store_true",
                        help="leave undecodable or missing files out (with a warning) instead of failing")
    args = parser.parse_args(argv)
    from fat2019.data.cache_builder import BAD_FILES, build_set   # after parsing: --help stays quick
    from fat2019.data.dataset import describe_sources, label_warnings, load_dataset
    from fat2019.util import locks, machine

    print(machine.stage_line("features", None, decoding_workers=args.workers))
    paths = settings.resolve(args, record=False).paths
    dataset = load_dataset(paths.data, check_files=False)   # a DatasetError: exit code 2 (cli.run_stage)
    # no profile here: the features are the same for every profile (it only picks the default folders)
    print(f"features: data {paths.data}, cache {paths.features}")
    print(f"  {describe_sources(dataset)}")
    for warning in label_warnings(dataset):
        print(f"warning: {warning}", file=sys.stderr)
    unused = dataset.classes_without_clips()
    if unused:
        print(f"note: {len(unused)} class(es) of sample_submission.csv have no curated clip: {unused[:10]}"
              f"{' ...' if len(unused) > 10 else ''}; they keep their column (scored low, no weight in lwlrap)")
    failed = []
    for clips in dataset.sets():
        if clips.name not in args.sets:
            continue
        folder = paths.features / clips.name
        with locks.hold(layout.lock_path(paths.features, clips.name),
                        on_wait=lambda holder: print(f"  {clips.name}: the cache is being built, {holder}; waiting",
                                                     flush=True)):
            start = time.perf_counter()
            decoded, bad = build_set(clips, folder, args.workers, args.skip_bad)
            took = time.perf_counter() - start
        print(f"  {clips.name}: {describe_build(len(clips), decoded, len(bad), took, args.skip_bad)}")
        noted = notes_line(folder)
        if noted:
            print(f"  {clips.name}: {noted}")
        if bad:
            listing = "\n".join(f"    {f}: {why}" for f, _, why in bad[:50])
            more = f"\n    ... and {len(bad) - 50} more" if len(bad) > 50 else ""
            verb = "left out (--skip-bad)" if args.skip_bad else "cannot be used"
            print(f"  {clips.name}: {len(bad)} file(s) {verb}, listed in {folder / BAD_FILES}:\n{listing}{more}",
                  file=sys.stderr)
            if not args.skip_bad:
                failed.append(clips.name)
    if failed:
        print(f"error: bad audio files in {', '.join(failed)}; fix or remove them, or rerun with --skip-bad "
              f"to leave them out. Everything decoded so far is kept.", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    cli.run_stage(main)
