"""One OS lock per unit of work (a model's pretraining, or fold k of a model), so that two
runs at once — two shells, Ray tasks on several GPUs or machines (ray_scheduler.py) sharing
models/ — never train the same unit twice or write each other's files.

    with locks.try_hold(layout.lock_path(folder, prefix)) as lock:
        if not lock.held:
            print(f"fold 3: {lock.holder}; skipped")
            continue
        ...  # train the unit

    with locks.hold(path, on_wait=print):   # work that must be done, once: wait for a holder
        ...

The lock is `flock(LOCK_EX | LOCK_NB)` on `<prefix>.lock`: try_hold never waits (hold
polls until it gets it), and the kernel
releases it when its holder's process ends in any way (a SIGKILL, a crash, a power cut of
the holder's machine — see NFS below), so a rerun picks up a unit whose holder died
unfinished. The holder writes its host, pid and start time into the file, for whoever
finds it held; it deletes the file when it lets go.

NFS: Linux emulates flock() over NFS with the server's byte-range locks, so a lock on a
shared models/ is seen by every machine when the mount supports locking (NFSv4; NFSv3 with
lockd/statd). It is NOT shared on mounts with `nolock` (or `local_lock=all`), nor on sshfs
and most FUSE file systems: there each machine only sees its own locks, so split the work
by hand with --folds / --models. The lock of a machine that crashes is freed when its
lease expires on the server (NFSv4: about 90 s), not at once.
"""
from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

HELD_BY = "held by"   # begins the description of a holder (ray_scheduler.py looks for it in logs)
ATTEMPTS = 10   # a holder deleting the file as we open it: retry on the new file
# A unit run by Ray (ray_scheduler.py) finds its Ray node's id in this variable and records
# it, so that a retry can tell a lock whose holder's node Ray reports dead (stale) from a live one
NODE_VARIABLE = "FAT2019_RAY_NODE"
NODE_FIELD = "ray_node"


@dataclass
class Lock:
    path: Path
    held: bool            # this process holds it
    holder: str = ""      # who holds it, when `held` is false (for the skip message)


def holder_record() -> dict:
    """What a holder writes into its lock file."""
    record = {"host": socket.gethostname(), "pid": os.getpid(), "started": time.strftime("%Y-%m-%d %H:%M:%S %z")}
    if os.environ.get(NODE_VARIABLE):
        record[NODE_FIELD] = os.environ[NODE_VARIABLE]
    return record


def describe_holder(path: Path) -> str:
    """'held by pid 123 on host-a since ...', read from the lock file (best effort: the
    holder may be between locking and writing, or gone)."""
    try:
        record = json.loads(Path(path).read_text())
        return f"{HELD_BY} pid {record['pid']} on {record['host']} since {record['started']} ({path})"
    except (OSError, ValueError, KeyError, TypeError):
        return f"{HELD_BY} another process ({path})"


def _same_file(fd: int, path: Path) -> bool:
    """The open file is still the one at `path` (its holder did not delete it meanwhile)."""
    try:
        on_disk = os.stat(path)
    except FileNotFoundError:
        return False
    mine = os.fstat(fd)
    return (mine.st_dev, mine.st_ino) == (on_disk.st_dev, on_disk.st_ino)


@contextlib.contextmanager
def try_hold(path: Path) -> Iterator[Lock]:
    """Take the lock at `path` if nobody holds it, without waiting; yields a `Lock` whose
    `held` says whether it was taken. Released (and its file deleted) on leaving."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    for _ in range(ATTEMPTS):
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)   # not inherited by child processes
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            os.close(fd)
            if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise
            yield Lock(path, held=False, holder=describe_holder(path))
            return
        if _same_file(fd, path):
            break
        os.close(fd)   # locked a file its holder had just deleted; the next one is at `path`
    else:
        raise RuntimeError(f"{path}: could not lock it in {ATTEMPTS} attempts (deleted and made again meanwhile)")
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(holder_record()) + "\n").encode(), 0)
        yield Lock(path, held=True)
    finally:
        # deleted while still held, so nobody can lock this file after we let go
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        os.close(fd)


POLL_SECONDS = 1.0   # hold(): how often a waiting process tries the lock again


@contextlib.contextmanager
def hold(path: Path, on_wait=None) -> Iterator[Lock]:
    """Take the lock at `path`, waiting while another process holds it; `on_wait(holder)`
    is called once, with who holds it, when it has to wait."""
    told = False
    while True:
        with try_hold(path) as lock:
            if lock.held:
                yield lock
                return
        if not told and on_wait is not None:
            on_wait(lock.holder)
            told = True
        time.sleep(POLL_SECONDS)
