"""Building one clip set's feature cache (the features stage's work, also timed by bench.py):
decode each clip once, in parallel, and write <features-dir>/<set>/ (feature_cache.py).
Unchanged files are copied from the old cache; an interrupted build resumes where it stopped;
undecodable or missing files are collected in bad_files.csv."""
from __future__ import annotations

import multiprocessing
import shutil
import signal
from pathlib import Path

import pandas as pd

from fat2019.data.audio import featurise, warm_up
from fat2019.data.dataset import ClipSet, missing_file_problems
from fat2019.data.feature_cache import (BAD_FILES, GLOBAL_BYTES, NO_ROOM_ERRNOS, CacheWriter, FeatureCache, NoRoom,
                                        Source, file_signature, is_current, restore_interrupted_swap)
from fat2019.util.atomic import atomic_write_text
from fat2019.util.progress import Progress


def read_bad_files(folder: Path) -> pd.DataFrame:
    path = folder / BAD_FILES
    if path.is_file():
        return pd.read_csv(path, dtype=str, keep_default_na=False)
    return pd.DataFrame(columns=["fname", "path", "problem", "size", "mtime_ns"])


def build_set(clips: ClipSet, folder: Path, workers: int, skip_bad: bool) -> tuple[int, list[tuple[str, str, str]]]:
    """Bring the cache of one clip set up to date. Returns (clips decoded, bad files); the
    set's other clips came from the cache."""
    restore_interrupted_swap(folder)
    bad: list[tuple[str, str, str]] = [(f, str(clips.paths[clips.fnames.index(f)]), why)
                                      for f, why in missing_file_problems(clips)]
    missing = {f for f, _, _ in bad}
    sources = []
    for fname, path in zip(clips.fnames, clips.paths):
        if fname not in missing:
            try:
                sources.append(Source(fname, path, *file_signature(path)))
            except OSError as e:  # vanished or unreadable since the listing
                bad.append((fname, str(path), f"cannot stat ({e.strerror or e})"))

    # With --skip-bad, files already known to be bad (and unchanged since) stay left out.
    known_bad = read_bad_files(folder)
    if skip_bad and len(known_bad):
        unchanged = {(r.fname, r.size, r.mtime_ns) for r in known_bad.itertuples()}
        still_bad = [s for s in sources if (s.fname, str(s.size), str(s.mtime_ns)) in unchanged]
        bad += [(s.fname, str(s.path), known_bad.set_index("fname").loc[s.fname, "problem"]) for s in still_bad]
        sources = [s for s in sources if s not in still_bad]
    if not bad and is_current(folder, sources):
        return 0, []
    if bad and skip_bad and is_current(folder, sources):
        return 0, bad

    writer = CacheWriter(folder)
    try:
        return _fill(writer, clips, folder, sources, bad, workers, skip_bad)
    except NoRoom as e:
        writer.close()
        raise SystemExit(no_room_message(e, writer, sources)) from None


def no_room_message(e: NoRoom, writer: CacheWriter, sources: list[Source]) -> str:
    """What a full disk stopped, where, and about how much room the rest needs: each clip
    left takes about its file's size (16-bit sources: 2 bytes a sample, as the cache), its
    global features, and the finished cache a second copy of all global features."""
    left = [s for s in sources if not writer.has(s)]
    need = sum(s.size for s in left) + GLOBAL_BYTES * (len(left) + len(sources))
    free = shutil.disk_usage(e.path.parent).free
    return (f"error: no room to write the feature cache: {e}. About {need:,} more bytes are needed for "
            f"the {len(left)} clip(s) left ({free:,} bytes free there). The {len(writer.rows)} clip(s) "
            f"already cached in {writer.partial} are kept: free space and rerun to finish.")


def _fill(writer: CacheWriter, clips: ClipSet, folder: Path, sources: list[Source], bad: list,
          workers: int, skip_bad: bool) -> tuple[int, list[tuple[str, str, str]]]:
    """Copy unchanged clips from the old cache, decode the others, finish the cache."""
    old = FeatureCache(folder) if is_complete(folder) else None
    todo = []
    for s in sources:
        if writer.has(s):
            continue
        i = old.row.get(s.fname) if old is not None else None
        if i is not None and _same_file(old, i, s):  # unchanged: copy, don't decode
            writer.add(s, old.raw(i), float(old.scales[i]), float(old.lengths[i]),
                       old.global_features[i], _notes(old, i))
        else:
            todo.append(s)

    by_name = {s.fname: s for s in todo}
    jobs = [(s.fname, str(s.path)) for s in todo]
    decoded = 0
    with Progress(len(jobs), f"features {clips.name}", "clip", every=30) as bar:
        for fname, result in _map(featurise, jobs, workers):
            if isinstance(result, str):
                bad.append((fname, str(by_name[fname].path), result))
            else:
                audio, scale, length, gfeat, notes = result
                writer.add(by_name[fname], audio, scale, length, gfeat, notes)
                decoded += 1
            bar.update()
    writer.close()

    if not (bad and not skip_bad):  # else the partial build is kept: the next run resumes from it
        bad_names = {f for f, _, _ in bad}
        try:
            writer.finish([s for s in sources if s.fname not in bad_names])
        except OSError as e:
            if e.errno in NO_ROOM_ERRNOS:
                raise NoRoom(Path(e.filename or writer.partial), e) from e
            raise
    write_bad_files(folder, bad, {s.fname: s for s in sources})
    return decoded, bad


def is_complete(folder: Path) -> bool:
    try:
        FeatureCache(folder)
        return True
    except (FileNotFoundError, ValueError):
        return False


def _same_file(cache: FeatureCache, i: int, source: Source) -> bool:
    r = cache.index.iloc[i]
    return int(r["size"]) == source.size and int(r["mtime_ns"]) == source.mtime_ns


def _notes(cache: FeatureCache, i: int) -> list[str]:
    text = cache.index.iloc[i]["notes"]
    return text.split("; ") if text else []


def _map(fn, jobs: list, workers: int):
    if workers <= 1 or len(jobs) < 2:
        yield from map(fn, jobs)
        return
    warm_up()  # once here, inherited by every forked worker (else ~1 s each, per clip set)
    ctx = multiprocessing.get_context("fork")
    # workers keep the default SIGTERM (die): the pool is ended with it, and the parent's
    # handler (shutdown.py) is for the parent's writes
    with ctx.Pool(workers, initializer=signal.signal, initargs=(signal.SIGTERM, signal.SIG_DFL)) as pool:
        yield from pool.imap(fn, jobs, chunksize=4)


def write_bad_files(folder: Path, bad: list[tuple[str, str, str]], sources: dict[str, Source]) -> None:
    path = folder / BAD_FILES
    if not bad:
        if path.exists():
            path.unlink()
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = [{"fname": f, "path": p, "problem": why,
             "size": sources[f].size if f in sources else "", "mtime_ns": sources[f].mtime_ns if f in sources else ""}
            for f, p, why in bad]
    atomic_write_text(path, pd.DataFrame(rows).to_csv(index=False))
