"""Progress of long work that reads well both in a terminal and in a log file.

In a terminal a tqdm bar is redrawn in place. When the stream is a file or a pipe
(`... | tee log`), a bar's carriage-return redraws would pile up into one line of
thousands of characters, so a plain line is printed instead every `every` seconds (and
at the end), with the steps done, the time spent and an ETA.
"""
from __future__ import annotations

import sys
import time

from tqdm import tqdm


def duration(seconds: float) -> str:
    """12s, 3m05s, 2h07m."""
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


class Progress:
    """`with Progress(total, "features curated", "clip") as p: ... p.update()`.

    `leave=False` removes a terminal bar when done (the caller prints its own summary);
    `every` is the seconds between two lines in a log file."""

    def __init__(self, total: int, desc: str, unit: str = "it", *, every: float = 60.0, leave: bool = True,
                 disable: bool = False, stream=None):
        self.total, self.desc, self.unit, self.every = total, desc, unit, every
        self.stream = stream or sys.stderr
        self.disable = disable or total <= 0
        self.done = 0
        self.started = self.last_line = time.monotonic()
        self.bar = None
        if not self.disable and self.stream.isatty():
            self.bar = tqdm(total=total, desc=desc, unit=unit, leave=leave, file=self.stream)

    def update(self, n: int = 1) -> None:
        self.done += n
        if self.bar is not None:
            self.bar.update(n)
        elif not self.disable and time.monotonic() - self.last_line >= self.every and self.done < self.total:
            self.line()

    def line(self) -> None:
        """One plain progress line: desc: done/total units, elapsed, ETA."""
        self.last_line = now = time.monotonic()
        elapsed = now - self.started
        rate = self.done / elapsed if elapsed > 0 else 0.0
        eta = (self.total - self.done) / rate if rate > 0 else float("nan")
        eta_text = duration(eta) if eta == eta else "?"
        print(f"{self.desc}: {self.done}/{self.total} {self.unit}s, {duration(elapsed)}, ETA {eta_text}",
              file=self.stream, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        elif not self.disable and self.done and time.monotonic() - self.started >= self.every:
            self.line()   # a long run ends with its final count in the log

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
