"""The OS lock per unit of work (locks.py): a second process cannot take a held lock and is
told who holds it; a holder that dies, even by SIGKILL, leaves the lock free."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

from fat2019.util import locks

CODE = Path(__file__).resolve().parent.parent / "code"

# another process trying the lock: prints {"held": ..., "holder": ...}
TRY = """import json, sys
from fat2019.util import locks
with locks.try_hold(sys.argv[1]) as lock:
    print(json.dumps({"held": lock.held, "holder": lock.holder}))
"""
# another process taking the lock and keeping it until killed
HOLD = """import sys, time
from fat2019.util import locks
with locks.try_hold(sys.argv[1]) as lock:
    print("held" if lock.held else "not held", flush=True)
    time.sleep(120)
"""


def python(script: str, *args: str, **kw) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", script, *args], cwd=CODE, stdout=subprocess.PIPE, text=True, **kw)


def try_from_another_process(path: Path) -> dict:
    proc = python(TRY, str(path))
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0
    return json.loads(out)


def test_a_held_lock_is_refused_to_another_process_which_is_told_the_holder(tmp_path):
    path = tmp_path / "v1mix" / "fold3.lock"
    with locks.try_hold(path) as lock:
        assert lock.held
        other = try_from_another_process(path)
        assert other["held"] is False
        assert f"pid {os.getpid()} on {socket.gethostname()}" in other["holder"]
        assert str(path) in other["holder"]
    assert not path.exists()                     # let go: the file goes with it
    assert try_from_another_process(path)["held"] is True


def test_a_second_try_in_the_same_process_is_refused_too(tmp_path):
    # flock belongs to the open file, not the process: a run of two stages in one test process
    # behaves like two processes
    path = tmp_path / "pretrain.lock"
    with locks.try_hold(path) as first, locks.try_hold(path) as second:
        assert first.held and not second.held
        assert f"pid {os.getpid()}" in second.holder


def test_the_lock_of_a_sigkilled_holder_is_free_again(tmp_path):
    path = tmp_path / "fold0.lock"
    holder = python(HOLD, str(path))
    try:
        assert holder.stdout.readline().strip() == "held"
        with locks.try_hold(path) as lock:
            assert not lock.held and f"pid {holder.pid} " in lock.holder
        holder.send_signal(signal.SIGKILL)
        assert holder.wait(timeout=30) == -signal.SIGKILL
    finally:
        if holder.poll() is None:
            holder.kill()
    assert path.exists()                          # a killed holder cannot delete its file ...
    with locks.try_hold(path) as lock:            # ... but the OS released its lock
        assert lock.held
        assert json.loads(path.read_text())["pid"] == os.getpid()   # the record is ours now


def test_an_unreadable_record_still_says_the_lock_is_held(tmp_path):
    path = tmp_path / "fold1.lock"
    with locks.try_hold(path):
        path.write_text("")                       # as between a holder's lock and its write
        assert try_from_another_process(path)["holder"] == f"held by another process ({path})"
