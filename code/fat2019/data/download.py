"""Fetching the dataset's public release, FSDKaggle2019 (Zenodo record 3612637).

The archives and what they hold are listed in docs/real-data.md, with the sources the
names were checked against. pooch does the fetching: the hash check (when a hash is
known), the skip of a file already downloaded, the retries and the move into place once
the file is whole. pooch has no resume, so `ResumableDownloader` (pooch's downloader
hook) keeps the bytes received so far in `<archive>.part` and asks the server for the
rest with an HTTP Range request; a cut connection costs only the chunk in flight (64 KiB).

No checksum of these archives is published where we could find it (docs/real-data.md),
so the built-in table has none: a download is checked against the size the server
announces, and every archive is checked member by member (CRC-32) when it is unpacked.
A table with hashes or sizes can be given with --files or FAT2019_DATA_FILES.
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

from fat2019.util.progress import duration

ZENODO_RECORD = "3612637"
ZENODO_PAGE = f"https://zenodo.org/records/{ZENODO_RECORD}"
BASE_URL = f"{ZENODO_PAGE}/files"
BASE_URL_ENV = "FAT2019_DATA_URL"        # another server with the same file names (tests, a mirror)
FILES_ENV = "FAT2019_DATA_FILES"         # a JSON file table replacing ARCHIVES (see read_file_table)
KAGGLE_COMPETITION = "freesound-audio-tagging-2019"
PART_SUFFIX = ".part"                    # the bytes of an unfinished download, kept for resuming


class DataError(ValueError):
    """A problem with the dataset's archives or the disk; the message names the file."""


@dataclass(frozen=True)
class Archive:
    name: str
    holds: str                 # meta | curated | noisy | test
    md5: str | None = None     # None: no published hash (see the module's docstring)
    size: int | None = None    # bytes; None: whatever the server announces
    sha256: str | None = None  # a hash pinned by the user (get_data.py prints it for each download)

    @property
    def known_hash(self) -> str | None:
        """pooch's form of the hash to check against, or None."""
        return f"md5:{self.md5}" if self.md5 else f"sha256:{self.sha256}" if self.sha256 else None

    def url(self, base: str) -> str:
        return f"{base.rstrip('/')}/{self.name}?download=1"


NOISY_PARTS = tuple(f"FSDKaggle2019.audio_train_noisy.z{i:02d}" for i in range(1, 7)) + \
    ("FSDKaggle2019.audio_train_noisy.zip",)   # a split archive: the .zip is its last part
ARCHIVES = (
    Archive("FSDKaggle2019.meta.zip", "meta"),
    Archive("FSDKaggle2019.audio_train_curated.zip", "curated"),
    *(Archive(name, "noisy") for name in NOISY_PARTS),
    Archive("FSDKaggle2019.audio_test.zip", "test"),
)


def read_file_table(path: Path) -> tuple[Archive, ...]:
    """A file table from JSON: a list of {"name", "holds", "md5"?, "sha256"?, "size"?}, in
    the order the parts of a split archive come."""
    path = Path(path)
    try:
        rows = json.loads(path.read_text())
        table = tuple(Archive(r["name"], r["holds"], r.get("md5"), r.get("size"), r.get("sha256")) for r in rows)
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise DataError(f"{path}: not a file table (a JSON list of {{name, holds, md5, sha256, size}}): {e}") from None
    holds = {a.holds for a in table}
    if not {"meta", "curated", "test"} <= holds:
        raise DataError(f"{path}: the table needs a meta, a curated and a test archive, has {sorted(holds)}")
    return table


def file_table(path: Path | None = None) -> tuple[Archive, ...]:
    path = path or os.environ.get(FILES_ENV)
    return read_file_table(Path(path)) if path else ARCHIVES


def base_url(url: str | None = None) -> str:
    return url or os.environ.get(BASE_URL_ENV) or BASE_URL


class TruncatedDownload(Exception):
    """The connection ended before the announced size; the bytes so far stay in .part."""


class ResumableDownloader:
    """A pooch downloader that resumes: bytes go to `part` (kept when the connection
    drops), a rerun asks for the rest with a Range header, and the whole file is handed
    to pooch (which checks the hash and moves it into place)."""

    def __init__(self, part: Path, expected_size: int | None = None, timeout: float = 60.0,
                 chunk_size: int = 1 << 16, progressbar: bool = True):
        self.part, self.expected_size = Path(part), expected_size
        self.timeout, self.chunk_size, self.progressbar = timeout, chunk_size, progressbar

    def __call__(self, url: str, output_file: str, pooch=None, check_only: bool = False):
        import requests
        from tqdm import tqdm

        if check_only:
            return requests.head(url, timeout=self.timeout, allow_redirects=True).status_code == 200
        have = self.part.stat().st_size if self.part.is_file() else 0
        headers = {"Range": f"bytes={have}-"} if have else {}
        with requests.get(url, headers=headers, stream=True, timeout=self.timeout) as r:
            if have and r.status_code == 416:      # .part is already as long as the file, or longer
                self.part.unlink()
                raise TruncatedDownload(f"{self.part}: the server refused to resume it; starting over")
            if have and r.status_code == 200:      # the server ignores Range: start over
                have = 0
            r.raise_for_status()
            length = r.headers.get("content-length")
            total = have + int(length) if length is not None else self.expected_size
            with open(self.part, "ab" if have else "wb") as f, \
                    tqdm(total=total, initial=have, unit="B", unit_scale=True, unit_divisor=1024,
                         desc=self.part.name[:-len(PART_SUFFIX)], leave=False,
                         disable=not (self.progressbar and sys.stderr.isatty())) as bar:
                try:
                    for chunk in r.iter_content(self.chunk_size):
                        f.write(chunk)
                        bar.update(len(chunk))
                except requests.exceptions.RequestException as e:
                    raise TruncatedDownload(f"the connection dropped after {f.tell()} bytes ({e})") from None
        got = self.part.stat().st_size
        if total is not None and got < total:
            raise TruncatedDownload(f"the connection ended after {got} of {total} bytes")
        if self.expected_size is not None and got != self.expected_size:
            self.part.unlink()
            raise DataError(f"{url}: {got} bytes, the file table says {self.expected_size}")
        os.replace(self.part, output_file)


@contextlib.contextmanager
def pooch_log():
    """pooch's log records, kept instead of printed: it logs three lines per download
    (where from and to, the SHA256 it computed, advice to pin it); get_data.py prints one."""
    import pooch

    logger = pooch.get_logger()
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append
    saved = logger.handlers[:], logger.propagate, logger.level
    logger.handlers, logger.propagate = [handler], False
    logger.setLevel(logging.INFO)
    try:
        yield records
    finally:
        logger.handlers, logger.propagate = saved[0], saved[1]
        logger.setLevel(saved[2])


def fetch(archive: Archive, folder: Path, base: str, retries: int = 2, progressbar: bool = True) -> tuple[Path, str | None]:
    """`folder/archive.name`, downloaded unless it is already there (and, with a known
    hash, matches it), and the SHA256 pooch computed of a download without a known hash
    (None otherwise). A drop of the connection is retried `retries` times, each resuming;
    after that the .part file stays for the next run to resume."""
    import pooch
    import requests

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    part = folder / (archive.name + PART_SUFFIX)
    downloader = ResumableDownloader(part, archive.size, progressbar=progressbar)
    url = archive.url(base)
    for attempt in range(retries + 1):
        try:
            with pooch_log() as records:
                path = Path(pooch.retrieve(url, known_hash=archive.known_hash, fname=archive.name, path=folder,
                                           downloader=downloader))
            computed = [r.args[0] for r in records if str(r.msg).startswith("SHA256 hash") and r.args]
            return path, computed[0] if computed else None
        except TruncatedDownload as e:
            if attempt == retries:
                raise DataError(f"{url}: download incomplete, {e}; rerun to resume from {part}") from None
            print(f"  {archive.name}: {e}; resuming ({attempt + 1}/{retries})")
        except ValueError as e:
            if isinstance(e, DataError):
                raise
            # pooch's hash mismatch: it has removed the file; nothing of it is left
            raise DataError(f"{url}: checksum mismatch, the file is not the one expected ({e}); "
                            f"nothing was kept, rerun to download it again") from None
        except requests.exceptions.HTTPError as e:
            raise DataError(f"{url}: {e}") from None
    raise AssertionError("unreachable")


def fetched_line(archive: Archive, path: Path, seconds: float | None, computed: str | None) -> str:
    """One line per file: its name, size, the time it took (None: it was already there),
    and the hash checked or, without one, the hash to pin."""
    size = gib(path.stat().st_size)
    took = "already downloaded" if seconds is None else f"downloaded in {duration(seconds)}"
    if archive.known_hash:
        check = f"{archive.known_hash.replace(':', ' ')} checked"
    elif computed:
        check = f'sha256 {computed} (no published checksum; pin it as "sha256" in a --files table)'
    else:
        check = "no checksum to check"
    return f"  {archive.name}: {size}, {took}; {check}"


def remote_size(archive: Archive, base: str, timeout: float = 30.0) -> int | None:
    """The archive's size as the file table or the server (a HEAD request) has it."""
    import requests

    if archive.size is not None:
        return archive.size
    r = requests.head(archive.url(base), timeout=timeout, allow_redirects=True)
    length = r.headers.get("content-length") if r.ok else None   # unknown: the unpack checks again
    return int(length) if length is not None else None


def free_bytes(folder: Path) -> int:
    folder = Path(folder)
    while not folder.exists():
        folder = folder.parent
    return shutil.disk_usage(folder).free


def check_free_space(folder: Path, needed: int, what: str) -> None:
    free = free_bytes(folder)
    if needed > free:
        raise DataError(f"{folder}: {what} needs {gib(needed)} free, the disk has {gib(free)}; "
                        f"free some space or choose another folder")


def gib(n: int) -> str:
    """A byte count for people: GiB, or MiB below one GiB."""
    return f"{n / 2**30:.1f} GiB" if n >= 2**30 else f"{n / 2**20:.1f} MiB"


def offline_help(archives: tuple[Archive, ...], folder: Path, missing: list[str]) -> str:
    """What to fetch by hand, and from where, when the download cannot reach the server."""
    lines = [f"fetch these files by hand from {ZENODO_PAGE} (one click each) into a folder, then rerun with "
             f"--from FOLDER:"]
    lines += [f"  {a.url(BASE_URL)}" for a in archives if a.name in missing]
    lines += [f"or the competition's own files (no test labels), with the Kaggle CLI:",
              f"  kaggle competitions download -c {KAGGLE_COMPETITION}",
              f"  (train_curated.zip, train_noisy.zip, test.zip and the CSVs; add FSDKaggle2019.meta.zip from "
              f"Zenodo beside them for the test labels)",
              kept(folder)]
    return "\n".join(lines)


def kept(folder: Path) -> str:
    """What an interrupted run leaves in the download folder, in words."""
    names = sorted(p.name for p in Path(folder).iterdir() if p.is_file()) if Path(folder).is_dir() else []
    if not names:
        return f"nothing was downloaded (downloads go to {folder})"
    return f"the {len(names)} file(s) downloaded so far are kept in {folder} ({', '.join(names)}); a rerun resumes"
