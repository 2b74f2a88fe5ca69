"""A clean exit on SIGTERM (what `kill`, `timeout`, batch schedulers and container
runtimes send before they SIGKILL).

Python's default for SIGTERM is to die on the spot. Every artifact is written atomically
(temp file + os.replace), so that would corrupt nothing, but it can leave a temp file
behind and, between two related writes (a checkpoint and its state file), a pair that
disagrees. With `install()`, SIGTERM instead raises `Terminated` (a SystemExit with code
143 = 128 + SIGTERM, what a shell reports for a process killed by it) in the main thread
— at once, unless a `critical()` block is running, in which case the block finishes its
writes first. A rerun of the same command resumes from what was written.
"""
from __future__ import annotations

import contextlib
import signal
import sys
import threading

EXIT_CODE = 128 + signal.SIGTERM


class Terminated(SystemExit):
    """Raised in the main thread when SIGTERM arrives (outside a critical block)."""


_depth = 0          # nesting of critical() blocks in progress
_pending = False    # SIGTERM arrived during a critical block
_received = False   # SIGTERM arrived (code that turns the exception into another asks `received()`)


def install() -> None:
    """Route SIGTERM to `Terminated`. Only the main thread may set signal handlers; elsewhere
    (a stage run from a worker thread) the default stays."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _on_sigterm)


def _on_sigterm(signum, frame) -> None:
    global _pending
    if _depth:
        _pending = True
        return
    _terminate()


def received() -> bool:
    """Whether this process was told to stop by SIGTERM: a library that caught `Terminated`
    and raised its own exception (Ray's wait turns it into SystemExit(1)) can be told apart."""
    return _received


def _terminate() -> None:
    global _received
    _received = True
    print("\nterminated (SIGTERM): everything finished so far is saved; rerun the same command to resume",
          file=sys.stderr, flush=True)
    raise Terminated(EXIT_CODE)


@contextlib.contextmanager
def critical():
    """Run a group of writes that must not be cut short by SIGTERM."""
    global _depth, _pending
    _depth += 1
    try:
        yield
    finally:
        _depth -= 1
        if not _depth and _pending:
            _pending = False
            _terminate()
