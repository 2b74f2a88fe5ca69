"""Running one stage of the rehearsal as a child process and measuring it: wall time, CPU
time and peak RSS (of the stage and every process it waited for: os.wait4's rusage), disk
added to the work folder, and the load average around it (the machine is shared, so the CPU
time is what compares across scales: a loaded machine stretches the wall time)."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path


@dataclass
class StageResult:
    stage: str
    clips: int
    wall_s: float
    peak_rss_mb: float
    disk_mb: float          # bytes added under the work folder, in MB (1e6)
    load_start: float       # 1-minute load average when it started ...
    load_end: float         # ... and when it ended
    returncode: int
    note: str = ""
    cpu_s: float | None = None  # user + system CPU of the stage and the processes it waited for

    def as_dict(self) -> dict:
        return asdict(self)


def folder_bytes(folder: Path) -> int:
    """Disk blocks in use under `folder` (a sparse or preallocated file counts as stored)."""
    total = 0
    for root, _, files in os.walk(folder):
        for f in files:
            try:
                total += os.lstat(os.path.join(root, f)).st_blocks * 512
            except FileNotFoundError:   # a temporary file renamed meanwhile
                pass
    return total


def run_stage(stage: str, clips: int, argv: list[str], work: Path, log: Path, *, cwd: Path,
              kill_when=None, note: str = "") -> StageResult:
    """Run `argv`, its output appended to `log`. `kill_when()`, polled every 0.1 s, may
    return True to SIGKILL the stage (the fault rehearsal); a stage without it is polled
    every second. A coarser poll let a small stage finish before its kill."""
    before = folder_bytes(work)
    load_start = os.getloadavg()[0]
    start = time.perf_counter()
    with open(log, "a") as out:
        out.write(f"\n=== {stage}: {' '.join(argv)}\n")
        out.flush()
        proc = subprocess.Popen(argv, cwd=cwd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if kill_when is not None and kill_when():
                os.killpg(proc.pid, signal.SIGKILL)   # the stage and its decoding workers
                kill_when = None
            time.sleep(1.0 if kill_when is None else 0.1)
    proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - start
    return StageResult(stage, clips, round(wall, 1), round(usage.ru_maxrss / 1024, 1),
                       round((folder_bytes(work) - before) / 1e6, 1), round(load_start, 2),
                       round(os.getloadavg()[0], 2), proc.returncode, note,
                       cpu_s=round(usage.ru_utime + usage.ru_stime, 1))


def python_script(code_dir: Path, script: str, *args: str) -> list[str]:
    return [sys.executable, str(code_dir / script), *args]
