"""The features stage's cache: every clip decoded once, read by every later stage.

One folder per clip set (`curated`, `noisy`, `test`) under the features directory:

    index.csv            fname, offset, n_samples, scale, length, size, mtime_ns, notes
    audio.int16          trimmed clips back to back, raw little-endian int16 (memory-mapped);
                         clip i = audio[offset : offset + n_samples] * scale
    global_features.npy  float32 (n_clips, 128, 12), rows in index.csv order

`size` and `mtime_ns` are the source file's, so a changed or added file is noticed. A
build in progress lives in `<set>.partial/` and is resumed by the next run; the finished
folder replaces the old one only when complete.

int16 storage: a 16-bit source (nearly all of FSDKaggle2019) round-trips exactly
(scale 1/32768). A resampled or float source is quantised with an absolute error of at
most half a step: 1/65536 of full scale (-96 dBFS) when its peak is <= 1; louder float
clips get a per-clip scale (peak/32767), so they keep 15 bits of relative precision.
"""
from __future__ import annotations

import csv
import errno
import os
import shutil
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from fat2019.util import shutdown
from fat2019.util.atomic import atomic_save_npy, atomic_write_text
from fat2019.config import N_GLOBAL_STATS, N_GLOBAL_STEPS

INDEX = "index.csv"
AUDIO = "audio.int16"
GLOBAL = "global_features.npy"
BAD_FILES = "bad_files.csv"       # the files the features stage could not use (cache_builder.py)
PARTIAL_ROWS = "rows.csv"          # in <set>.partial/: one row per finished clip
PARTIAL_GLOBAL = "global_features.float32"
COLUMNS = ["fname", "offset", "n_samples", "scale", "length", "size", "mtime_ns", "notes"]
GLOBAL_BYTES = N_GLOBAL_STEPS * N_GLOBAL_STATS * 4
UNIT_SCALE = 1.0 / 32768


def file_signature(path: Path) -> tuple[int, int]:
    st = os.stat(path)
    return st.st_size, st.st_mtime_ns


def to_int16(audio: np.ndarray) -> tuple[np.ndarray, float]:
    """Quantise float audio to int16 and the scale that maps it back."""
    peak = float(np.max(np.abs(audio))) if len(audio) else 0.0
    scale = UNIT_SCALE if peak <= 1.0 else peak / 32767
    q = np.clip(np.rint(audio / scale), -32768, 32767).astype("<i2")
    return q, scale


def missing_cache_hint(folder: Path) -> str:
    """What to do about a set without a complete cache: run the features stage, or, when
    its last run stopped on bad audio files (bad_files.csv is there), deal with those."""
    bad = Path(folder) / BAD_FILES
    if not bad.is_file():
        return "run code/features.py first"
    return (f"the features stage stopped on the bad audio files listed in {bad}: fix or remove them, "
            f"or rerun code/features.py with --skip-bad to leave them out")


class FeatureCache:
    """Read side of one clip set's cache. Audio stays on disk (memory-mapped)."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        missing = [n for n in (INDEX, AUDIO, GLOBAL) if not (self.folder / n).is_file()]
        if missing:
            raise FileNotFoundError(f"no complete feature cache in {self.folder} (missing {missing}); "
                                    + missing_cache_hint(self.folder))
        self.index = pd.read_csv(self.folder / INDEX, dtype={"fname": str, "notes": str},
                                 keep_default_na=False)
        self.fnames: list[str] = list(self.index["fname"])
        self.offsets = self.index["offset"].to_numpy(np.int64)
        self.n_samples = self.index["n_samples"].to_numpy(np.int64)
        self.scales = self.index["scale"].to_numpy(np.float32)
        self.lengths = self.index["length"].to_numpy(np.float32)
        self.global_features = np.load(self.folder / GLOBAL, mmap_mode="r")
        size = os.path.getsize(self.folder / AUDIO)
        self.audio = np.memmap(self.folder / AUDIO, dtype="<i2", mode="r") if size else np.zeros(0, "<i2")
        self.row = {f: i for i, f in enumerate(self.fnames)}
        self._fd, self._fd_lock = None, threading.Lock()   # opened on the first read or prefetch (_file)

    def __len__(self) -> int:
        return len(self.fnames)

    def rows(self, fnames: list[str]) -> np.ndarray:
        """Row numbers of `fnames`; KeyError names the clips the cache lacks."""
        absent = [f for f in fnames if f not in self.row]
        if absent:
            raise KeyError(f"{len(absent)} clip(s) not in the feature cache {self.folder}: "
                           f"{absent[:10]}{' ...' if len(absent) > 10 else ''}; rerun code/features.py")
        return np.fromiter((self.row[f] for f in fnames), np.int64, len(fnames))

    def prefetch(self, rows, crop: int, positions) -> None:
        """Ask the kernel to read the samples that crops of `rows` at `positions` will touch
        (batches.place), all at once, before they are copied: on a cold page cache a batch's
        32 reads are then in flight together instead of one page fault after another. A
        hint only: without posix_fadvise, or on an empty cache, nothing happens."""
        if not hasattr(os, "posix_fadvise") or not len(self.audio):
            return
        from fat2019.data.batches import crop_start
        fd = self._file()
        for i, position in zip(rows, positions):
            n = int(self.n_samples[i])
            start = crop_start(n, crop, position) if n >= crop else 0
            os.posix_fadvise(fd, 2 * int(self.offsets[i] + start), 2 * min(n, crop), os.POSIX_FADV_WILLNEED)

    def _file(self) -> int:
        """The audio file, opened once for read() and prefetch(), with the kernel's readahead
        off (POSIX_FADV_RANDOM): a crop is one random read, and readahead would read far past
        the crop's samples."""
        with self._fd_lock:    # the feed's worker threads share the cache
            if self._fd is None:
                self._fd = os.open(self.folder / AUDIO, os.O_RDONLY)
                if hasattr(os, "posix_fadvise"):
                    os.posix_fadvise(self._fd, 0, 0, os.POSIX_FADV_RANDOM)
        return self._fd

    def read(self, i: int, start: int, stop: int) -> np.ndarray:
        """Samples [start, stop) of clip i, as stored (int16), read into a buffer of their own.

        The training and TTA crops come this way rather than through the memory map: a map's
        pages count in this process's memory (the kernel maps whole folios and reads ahead
        around each fault), so cropping through it grows the resident set with every clip
        touched (BENCHMARKS.md, the full-size rehearsal)."""
        n = max(0, min(int(stop), int(self.n_samples[i])) - int(start))
        out = np.empty(n, "<i2")
        if not n or not hasattr(os, "preadv"):
            out[:] = self.raw(i)[start: start + n]
            return out
        view, offset = memoryview(out).cast("B"), 2 * int(self.offsets[i] + start)
        while len(view):
            got = os.preadv(self._file(), [view], offset)
            if got <= 0:
                raise OSError(f"{self.folder / AUDIO}: ends before clip {self.fnames[i]!r}'s samples "
                              f"(a truncated cache; rerun code/features.py)")
            view, offset = view[got:], offset + got
        return out

    def raw(self, i: int) -> np.ndarray:
        """Clip i as stored: int16 view into the memory map."""
        return self.audio[self.offsets[i]: self.offsets[i] + self.n_samples[i]]

    def waveform(self, i: int) -> np.ndarray:
        """Clip i as float32 (trimmed, mono, 44.1 kHz)."""
        return self.raw(i).astype(np.float32) * self.scales[i]


# A write failing with one of these means the disk (or a quota, or a file-size limit) is full.
NO_ROOM_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


class NoRoom(Exception):
    """A cache file could not be written for lack of room."""

    def __init__(self, path: Path, error: OSError):
        super().__init__(f"{path}: {error.strerror or error}")
        self.path, self.error = Path(path), error


@dataclass
class Source:
    """A clip to put into the cache: its name, file and the file's signature."""
    fname: str
    path: Path
    size: int
    mtime_ns: int


class CacheWriter:
    """Builds one clip set's cache in `<set>.partial/`, resuming an interrupted build.

    Appends clips one at a time (audio, global features, then the index row, so a row
    exists only for data already written); `finish` writes the final files in the order
    of `sources` and swaps the folder into place.
    """

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self.partial = self.folder.with_name(self.folder.name + ".partial")
        self.partial.mkdir(parents=True, exist_ok=True)
        for stale in self.partial.glob("*.tmp"):  # a killed finish() was writing it; never read
            stale.unlink()
        self.rows: dict[str, dict] = {}
        self._recover()
        self._audio = open(self.partial / AUDIO, "ab")
        self._global = open(self.partial / PARTIAL_GLOBAL, "ab")
        self._rows_file = open(self.partial / PARTIAL_ROWS, "a", newline="", encoding="utf-8")
        self._rows_csv = csv.DictWriter(self._rows_file, COLUMNS + ["global_row"])
        if self._rows_file.tell() == 0:
            self._rows_csv.writeheader()
        self._offset = os.path.getsize(self.partial / AUDIO) // 2  # in samples
        self._n_global = os.path.getsize(self.partial / PARTIAL_GLOBAL) // GLOBAL_BYTES

    def _recover(self) -> None:
        """Keep the rows a killed run finished; cut any half-written tail off the data files."""
        rows_path = self.partial / PARTIAL_ROWS
        audio_end, n_global = 0, 0
        if rows_path.is_file():
            with open(rows_path, newline="", encoding="utf-8") as f:
                text = f.read()
            complete = text[: text.rfind("\n") + 1]            # drop a torn last line
            for r in csv.DictReader(complete.splitlines()):
                if r["global_row"] and r["offset"] and r["n_samples"]:
                    r = {**r, "offset": int(r["offset"]), "n_samples": int(r["n_samples"]),
                         "global_row": int(r["global_row"])}
                    self.rows[r["fname"]] = r
                    audio_end = max(audio_end, (r["offset"] + r["n_samples"]) * 2)
                    n_global = max(n_global, r["global_row"] + 1)
            atomic_write_text(rows_path, complete)
        for name, keep in ((AUDIO, audio_end), (PARTIAL_GLOBAL, n_global * GLOBAL_BYTES)):
            path = self.partial / name
            if not path.exists() or os.path.getsize(path) < keep:
                if keep:  # rows point past the data: the partial build is unusable
                    shutil.rmtree(self.partial)
                    self.partial.mkdir(parents=True)
                    self.rows = {}
                    return
                path.touch()
            with open(path, "r+b") as f:
                f.truncate(keep)

    def has(self, source: Source) -> bool:
        r = self.rows.get(source.fname)
        return r is not None and int(r["size"]) == source.size and int(r["mtime_ns"]) == source.mtime_ns

    def add(self, source: Source, audio_int16: np.ndarray, scale: float, length: float,
            global_features: np.ndarray, notes: list[str] | tuple[str, ...] = ()) -> None:
        row = {"fname": source.fname, "offset": self._offset, "n_samples": len(audio_int16),
               "scale": repr(float(scale)), "length": repr(float(length)), "size": source.size,
               "mtime_ns": source.mtime_ns, "notes": "; ".join(notes), "global_row": self._n_global}
        # a SIGKILL midway is undone by _recover; a SIGTERM waits. A full disk stops the build:
        # the row is written last, so a torn clip has none and the next run cuts its data off.
        with shutdown.critical():
            for f, data in ((self._audio, np.ascontiguousarray(audio_int16, "<i2").tobytes()),
                            (self._global, np.ascontiguousarray(global_features, "<f4").tobytes())):
                self._write(f, data)
            self._write(self._rows_file, None, lambda: self._rows_csv.writerow(row))
        self.rows[source.fname] = row
        self._offset += len(audio_int16)
        self._n_global += 1

    @staticmethod
    def _write(f, data: bytes | None, write=None) -> None:
        """Write `data` (or call `write`) and flush f; NoRoom names the file when full."""
        try:
            if write is None:
                f.write(data)
            else:
                write()
            f.flush()
        except OSError as e:
            if e.errno in NO_ROOM_ERRNOS:
                raise NoRoom(Path(f.name), e) from e
            raise

    def close(self) -> None:
        for f in (self._audio, self._global, self._rows_file):
            try:
                f.close()
            except OSError as e:   # the unflushed tail of a write that found the disk full
                if e.errno not in NO_ROOM_ERRNOS:
                    raise

    def finish(self, sources: list[Source]) -> None:
        """Write index.csv and global_features.npy in `sources` order; swap into place."""
        self.close()
        for f in (AUDIO, PARTIAL_GLOBAL):
            with open(self.partial / f, "rb+") as fh:
                os.fsync(fh.fileno())
        rows = [self.rows[s.fname] for s in sources]
        stored = np.fromfile(self.partial / PARTIAL_GLOBAL, "<f4").reshape(-1, N_GLOBAL_STEPS, N_GLOBAL_STATS)
        order = np.array([r["global_row"] for r in rows], np.int64)
        atomic_save_npy(self.partial / GLOBAL, stored[order] if len(order) else
                        np.zeros((0, N_GLOBAL_STEPS, N_GLOBAL_STATS), np.float32))
        index = pd.DataFrame([{c: r[c] for c in COLUMNS} for r in rows], columns=COLUMNS)
        atomic_write_text(self.partial / INDEX, index.to_csv(index=False))
        with shutdown.critical():
            # Swapped in before the build-only files go: killed in between, the finished
            # cache is in place (with two stray files) rather than a partial build that
            # lost its rows.csv and would start over.
            replace_folder(self.partial, self.folder)
            for f in (PARTIAL_ROWS, PARTIAL_GLOBAL):
                (self.folder / f).unlink(missing_ok=True)


def replace_folder(new: Path, target: Path) -> None:
    """Put folder `new` at `target`; the old one is renamed aside first, removed last."""
    old = target.with_name(target.name + ".old")
    if old.exists():
        shutil.rmtree(old)
    if target.exists():
        os.replace(target, old)
    os.replace(new, target)
    if old.exists():
        shutil.rmtree(old)


def restore_interrupted_swap(target: Path) -> None:
    """If a run died between the two renames of replace_folder, put the old cache back."""
    old = target.with_name(target.name + ".old")
    if old.exists() and not target.exists():
        os.replace(old, target)


def is_current(folder: Path, sources: list[Source]) -> bool:
    """True when the finished cache in `folder` holds exactly `sources`, unchanged."""
    path = Path(folder) / INDEX
    if not (path.is_file() and (Path(folder) / AUDIO).is_file() and (Path(folder) / GLOBAL).is_file()):
        return False
    index = pd.read_csv(path, dtype={"fname": str}, keep_default_na=False,
                        usecols=["fname", "size", "mtime_ns"])
    if len(index) != len(sources):
        return False
    return (list(index["fname"]) == [s.fname for s in sources]
            and index["size"].tolist() == [s.size for s in sources]
            and index["mtime_ns"].tolist() == [s.mtime_ns for s in sources])
