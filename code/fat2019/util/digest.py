"""Content hashes of artifacts: what links a fold to its pretraining and its predictions
to its weights (provenance.py), never their modification times."""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

_known: dict[tuple, str] = {}   # (path, inode, size, mtime) -> digest: each file is read once per process


def file_sha256(path: Path) -> str:
    """The SHA-256 of the file's bytes (cached while the file stays the same file)."""
    stat = os.stat(path)
    key = (str(Path(path).resolve()), stat.st_ino, stat.st_size, stat.st_mtime_ns)
    if key not in _known:
        digest = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
        _known[key] = digest.hexdigest()
    return _known[key]
