"""One commit point per epoch: a run's files change together, or not at all.

An epoch end (of a training run, or a fold of the stacker) writes each file it produces
under a staged name of its own (`layout.staged`: fold0.tmp3.weights.h5 for epoch 3's best
weights), fsynced. Then it writes the run's state file (<prefix>.state.json) the same way
and renames it into place: that rename is the commit. The state holds everything a
resume needs and names the staged files and the names they take. Only then are the staged
files renamed into place ("published"), the state file deleted once the run is finished.

A resume trusts the state file alone (`recover`): it completes the publishing of the
committed epoch (a kill between two renames loses nothing), then deletes every other
staged or temporary file of the run: they belong to an epoch that never committed, and the
resume runs that epoch again. So a kill at any instant loses at most the epoch in progress,
and a SIGTERM none: the whole epoch end runs in one `shutdown.critical` block.

Every write point calls `faults.point` (the fault-injection seam, tests/test_faults.py).
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Callable

from fat2019 import layout
from fat2019.util import faults


def sync(path: Path) -> None:
    """On disk before the rename, so a power cut cannot leave an empty file under the final name."""
    with open(path, "rb+") as f:
        os.fsync(f.fileno())


def write_text(path: Path, text: str) -> None:
    """`text` to `path`, synced (a staged file: no temporary of its own)."""
    with open(path, "w", newline="", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())


def stage(path: Path, step: int, write: Callable[[Path], None], what: str) -> dict:
    """Write `path`'s new content under its staged name by `write(staged_path)`; returns
    the move `publish` makes once the step is committed. `what` names the write point."""
    staged = layout.staged(path, step)
    write(staged)
    sync(staged)
    faults.point(f"staged {what}", step)
    return {"from": staged.name, "to": Path(path).name, "what": what}


def commit(state_path: Path, state: dict, moves: list[dict], step: int) -> None:
    """The commit point: `state`, naming the staged `moves`, replaces the state file."""
    state["publish"] = moves
    staged = layout.staged(state_path, step)
    write_text(staged, json.dumps(state))
    faults.point("staged state", step)
    os.replace(staged, state_path)
    faults.point("committed", step)


def publish(folder: Path, state: dict, step: int) -> None:
    """The committed state's staged files into place (each rename once: a resume redoes
    those a kill cut short)."""
    for move in state.get("publish", []):
        staged = Path(folder) / move["from"]
        if staged.exists():
            os.replace(staged, Path(folder) / move["to"])
            faults.point(f"published {move['what']}", step)


def recover(folder: Path, prefix: str, leftovers: list[Path] | None = None) -> dict | None:
    """The run's committed state (None without one), its publishing completed; every other
    staged or temporary file of the run (an uncommitted epoch's; `leftovers` lists them
    once published, layout.temporaries by default) deleted."""
    path = layout.state_path(folder, prefix)
    state = json.loads(path.read_text()) if path.is_file() else None
    if state is not None:
        publish(folder, state, state.get("next_epoch", 0))
    for leftover in (layout.temporaries(folder, prefix) if leftovers is None else leftovers):
        leftover.unlink(missing_ok=True)
    return state


def finish(folder: Path, prefix: str, step: int, remove: tuple[Path, ...] = ()) -> None:
    """After the last commit's publishing: the files a finished run no longer needs, then
    the state file (the run counts as finished once it is gone: layout.is_finished)."""
    for path in remove:
        Path(path).unlink(missing_ok=True)
    faults.point("cleaned", step)
    layout.state_path(folder, prefix).unlink(missing_ok=True)
    faults.point("finished", step)
