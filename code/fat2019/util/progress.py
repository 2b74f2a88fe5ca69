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


def rough_duration(seconds: float) -> str:
    """An estimate's size, not a clock: under 1 min, 25 min, 7.0 h, 31 h, 90 h (4 days)."""
    hours = seconds / 3600
    if hours >= 48:
        return f"{hours:.0f} h ({hours / 24:.0f} days)"
    if hours >= 1:
        return f"{hours:.0f} h" if hours >= 10 else f"{hours:.1f} h"
    return f"{seconds / 60:.0f} min" if seconds >= 60 else "under 1 min"


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


class UnitProgress:
    """Where a stage is in its whole job, one plain line per unit that ends (the same in a
    terminal and in a log): 'train: 4/18 units done (last: v1mix fold 1), 12m30s, about
    25m left'; once a unit failed (on Ray the others go on) 'train: 4/18 units done,
    1 failed (last: se fold 2, failed), ...'. A failed unit is neither done nor left.

    Without `sizes` the estimate is the wall time so far per finished unit times the units
    left, which holds also when several run at once (on Ray). With `sizes` (each unit's
    label: (its model, the model's FLOPs); units run one at a time) it adds up the units
    left from measured times: a model with a finished unit costs its own mean time per
    unit; a model not measured yet costs its FLOPs at the seconds per FLOP of the units
    measured so far, so a zoo's small models trained first do not make the big ones look
    cheap (a unit's fixed costs do not grow with its FLOPs: this errs long)."""

    def __init__(self, stage: str, total: int, *, sizes: dict[str, tuple[str, float]] | None = None,
                 stream=None, clock=time.monotonic):
        self.stage, self.total, self.done, self.failures = stage, total, 0, 0
        self.sizes = dict(sizes or {})
        self.left = set(self.sizes)
        self.began: dict[str, float] = {}
        self.took: dict[str, list[float]] = {}   # model: seconds of each of its finished units
        self.flops_done = 0.0
        self.stream, self.clock = stream or sys.stdout, clock
        self.started = clock()

    def skipped(self, label: str) -> None:
        """A unit counted in the total that turned out not to be this run's work (another
        run holds it, or finished it meanwhile)."""
        self.total -= 1
        self.left.discard(label)

    def starting(self, label: str) -> None:
        """The unit's number and the wall-clock time (a long log's landmarks)."""
        self.began[label] = self.clock()
        print(f"{self.stage}: unit {self.total - self.units_left() + 1}/{self.total}: {label}, starting at "
              f"{time.strftime('%H:%M:%S')}", file=self.stream, flush=True)

    def units_left(self) -> int:
        """Neither done nor failed."""
        return self.total - self.done - self.failures

    def seconds_left(self, elapsed: float) -> float:
        """The estimate for the units left, once one is done."""
        if not self.sizes:
            return elapsed / self.done * self.units_left()
        measured = {model: sum(t) / len(t) for model, t in self.took.items()}
        per_flop = sum(map(sum, self.took.values())) / self.flops_done if self.flops_done else 0.0
        return sum(measured.get(model, flops * per_flop) for model, flops in map(self.sizes.get, self.left))

    def finished(self, label: str) -> None:
        """A unit this run finished: its line."""
        self.done += 1
        now = self.clock()
        if label in self.sizes:
            model, flops = self.sizes[label]
            self.took.setdefault(model, []).append(now - self.began.get(label, now))
            self.flops_done += flops
            self.left.discard(label)
        self.line(label, now)

    def failed(self, label: str) -> None:
        """A unit of this run that ended without finishing (an error): its line. Its time
        prices no other unit."""
        self.failures += 1
        self.left.discard(label)
        self.line(f"{label}, failed", self.clock())

    def line(self, last: str, now: float) -> None:
        elapsed = now - self.started
        failed = f", {self.failures} failed" if self.failures else ""
        eta = ""
        if self.units_left() and self.done:
            eta = f", about {duration(self.seconds_left(elapsed))} left"
            if self.sizes:
                eta += " (measured per model; models not run yet by their FLOPs)"
        print(f"{self.stage}: {self.done}/{self.total} units done{failed} (last: {last}), {duration(elapsed)}{eta}",
              file=self.stream, flush=True)
