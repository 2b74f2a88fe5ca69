"""Atomic file writes: a reader sees the old file or the whole new one, never a torn one.
A SIGTERM during the write lets it finish first (shutdown.critical)."""
from __future__ import annotations

import os
import socket
from pathlib import Path

import numpy as np

from fat2019.util import shutdown


def atomic_write_text(path: Path, text: str) -> None:
    # a temporary name of its own per host and process: machines sharing models/ may
    # write the same file (folds.csv, history.csv) at once
    tmp = path.with_name(f"{path.name}.{socket.gethostname()}.{os.getpid()}.tmp")
    with shutdown.critical():  # a SIGTERM lets the write finish (shutdown.py)
        with open(tmp, "w", newline="", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)


def atomic_save_npy(path: Path, array: np.ndarray) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with shutdown.critical():
        with open(tmp, "wb") as f:
            np.save(f, array)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
