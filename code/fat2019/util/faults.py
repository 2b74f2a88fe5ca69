"""The one seam for fault injection: every write point of an epoch end calls `point`.

Normally `point` does nothing. With the environment variable FAT2019_FAULT set to
`<point>@<step>:<signal>` (e.g. `staged checkpoint@1:SIGKILL`) the process sends itself
that signal when it reaches that point at that step (the 1-based epoch of a training run,
the 1-based fold of the stacker), so a test can kill a run at an exact instant without
sleeping. With FAT2019_FAULT_TRACE naming a file, every point reached is appended to it as
a line `<point>@<step>`: the list of write points a test then kills at
(tests/test_faults.py).
"""
from __future__ import annotations

import os
import signal

FAULT_ENV = "FAT2019_FAULT"
TRACE_ENV = "FAT2019_FAULT_TRACE"


def spec(where: str, sig: str) -> str:
    """The FAT2019_FAULT value that sends `sig` (SIGKILL, SIGTERM) at `where`, a traced
    `<point>@<step>`."""
    return f"{where}:{sig}"


def point(name: str, step: int) -> None:
    """A write point: named by what has just been written (or is about to be renamed)."""
    trace = os.environ.get(TRACE_ENV)
    if trace:
        with open(trace, "a", encoding="utf-8") as f:
            f.write(f"{name}@{step}\n")
    wanted = os.environ.get(FAULT_ENV)
    if wanted:
        where, _, sig = wanted.rpartition(":")
        if where == f"{name}@{step}":
            os.kill(os.getpid(), getattr(signal, sig))
