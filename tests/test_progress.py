"""Progress in a log file: plain lines with steps, time and ETA, never carriage returns."""
import io
import time

from progress import Progress, duration


class LogFile(io.StringIO):
    def isatty(self):
        return False


def test_a_log_gets_one_plain_line_per_interval_with_an_eta():
    log = LogFile()
    with Progress(4, "v1mix fold 0 epoch 3/40", "step", every=0.01, stream=log) as p:
        for _ in range(4):
            time.sleep(0.02)
            p.update()
    lines = log.getvalue().splitlines()
    assert "\r" not in log.getvalue() and 2 <= len(lines) <= 4
    assert lines[0].startswith("v1mix fold 0 epoch 3/40: 1/4 steps, ") and "ETA" in lines[0]
    assert lines[-1].startswith("v1mix fold 0 epoch 3/40: 4/4 steps")       # the final count


def test_short_work_prints_nothing_to_a_log():
    log = LogFile()
    with Progress(100, "features curated", "clip", every=60, stream=log) as p:
        for _ in range(100):
            p.update()
    assert log.getvalue() == ""


def test_durations_read_as_a_person_writes_them():
    assert [duration(s) for s in (7, 185, 7620)] == ["7s", "3m05s", "2h07m"]
