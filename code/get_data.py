"""Fetch the real dataset (FSDKaggle2019, the competition's data with its test labels) and
lay it out in the folder the stages read (docs/real-data.md).

    .venv/bin/python code/get_data.py                       # download into input/archives, unpack into input/
    .venv/bin/python code/get_data.py --dest /data/fat2019  # any folder (then --data-dir /data/fat2019 for the stages)
    .venv/bin/python code/get_data.py --from ~/Downloads    # archives already on disk: Zenodo's or Kaggle's

Downloads resume (a cut connection keeps <archive>.part), every step is skipped when
already done, and bad input (a truncated or wrong archive, a full disk, a clip the CSV
names that the archive lacks) stops with the file named and exit code 2, leaving no
half-written file under a final name. Without network it lists the files to fetch by
hand and where from.
"""
from __future__ import annotations

import argparse
import errno
import sys
import time
from pathlib import Path

from fat2019 import cli
from fat2019.data.dataset import TEST_LABELS_CSV
from fat2019 import config
from fat2019 import settings
from fat2019.data import download
from fat2019.data.download import (DataError, check_free_space, fetch, fetched_line, file_table, gib,
                                   offline_help, remote_size)
from fat2019.data.release import STATE_DIR, prepare
from fat2019.util.progress import duration


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dest", type=Path, default=settings.profile_folders(config.PROFILES["full"]).data,
                        help="the data folder to lay out (default: input/, the full profile's)")
    parser.add_argument("--from", dest="from_dir", type=Path,
                        help="use the archives in this folder, download nothing (the Zenodo files, or the "
                             "competition's zips and CSVs from the Kaggle CLI)")
    parser.add_argument("--archives", type=Path, help="where downloads go (default: <dest>/archives)")
    parser.add_argument("--base-url", help=f"download from this URL instead of Zenodo's (also "
                                           f"{download.BASE_URL_ENV}); it must serve the same file names")
    parser.add_argument("--files", type=Path, help=f"a JSON file table replacing the built-in one (also "
                                                   f"{download.FILES_ENV}), e.g. to add md5 checksums")
    parser.add_argument("--retries", type=int, default=2, help="resumed retries of a dropped download (default 2)")
    parser.add_argument("--delete-archives", action="store_true",
                        help="delete each archive once its clips are unpacked (saves ~30 GB; a rerun then "
                             "needs nothing but the marks in <dest>/.get_data)")
    return parser.parse_args(argv)


def download_all(table, archives: Path, dest: Path, base: str, retries: int) -> None:
    """Every archive of a set not yet unpacked, after checking the disk has room for the
    downloads left and their unpacked clips."""
    state = dest / STATE_DIR
    needed = [a for a in table if a.holds == "meta" or not (state / f"{a.holds}.done").is_file()]
    sizes = {a.name: (archives / a.name).stat().st_size if (archives / a.name).is_file() else remote_size(a, base) or 0
             for a in needed}
    to_fetch = sum(sizes[a.name] for a in needed if not (archives / a.name).is_file())
    partial = sum((archives / f"{a.name}{download.PART_SUFFIX}").stat().st_size for a in needed
                  if (archives / f"{a.name}{download.PART_SUFFIX}").is_file())
    # the clips take about what their archives do (16-bit PCM WAV barely compresses)
    unpacked = sum(sizes[a.name] for a in needed if a.holds != "meta")
    check_free_space(archives, max(0, to_fetch - partial) + unpacked, "downloading and unpacking")
    print(f"get_data: {len(needed)} archive(s), {gib(sum(sizes.values()))}; {gib(to_fetch)} to download into {archives}")
    for a in needed:
        start = time.perf_counter()
        was_there = (archives / a.name).is_file()
        path, computed = fetch(a, archives, base, retries)
        print(fetched_line(a, path, None if was_there else time.perf_counter() - start, computed))


def main(argv: list[str] | None = None) -> int:
    import requests

    args = parse_args(argv)
    start = time.perf_counter()
    dest = args.dest
    archives = args.from_dir or args.archives or dest / "archives"
    try:
        table = file_table(args.files)
        if args.from_dir is None:
            base = download.base_url(args.base_url)
            try:
                download_all(table, archives, dest, base, args.retries)
            except (requests.exceptions.ConnectionError, requests.exceptions.Timeout) as e:
                missing = [a.name for a in table if not (archives / a.name).is_file()]
                if archives.is_dir() and not any(archives.iterdir()):
                    archives.rmdir()   # made for a download that never started
                print(f"error: cannot reach {base} ({type(e).__name__}).\n" + offline_help(table, archives, missing),
                      file=sys.stderr)
                return 2
        summary = prepare(archives, dest, table, args.delete_archives)
    except DataError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        if e.errno != errno.ENOSPC:
            raise
        print(f"error: the disk is full ({e.filename or dest}); nothing half-written was kept under a final "
              f"name. Free some space and rerun: finished steps are skipped, a download resumes from its .part "
              f"file.", file=sys.stderr)
        return 2
    print_summary(dest, summary, time.perf_counter() - start)
    return 0


def print_summary(dest: Path, summary: dict, seconds: float) -> None:
    counts, usage = summary["counts"], summary["usage"]
    print(f"get_data: {dest} is ready ({summary['source']} archives, {duration(seconds)})")
    for name in ("curated", "noisy", "test"):
        print(f"  {name:<8} {counts[name]:>6} clips  {summary['done'][name]}")
    parts = ", ".join(f"{n} {u.lower()}" for u, n in sorted(usage.items()))
    labels = f"{TEST_LABELS_CSV} ({parts})" if parts else TEST_LABELS_CSV
    print(f"  CSVs: train_curated.csv, train_noisy.csv, sample_submission.csv"
          + (f", {labels}" if summary["test_labels"] else " (no test labels: the test lwlrap will not be printed)"))
    print("next: .venv/bin/python code/features.py" + ("" if dest.resolve() == settings.profile_folders(config.PROFILES["full"]).data.resolve()
                                            else f" --data-dir {dest}"))


if __name__ == "__main__":
    cli.run_stage(main)
