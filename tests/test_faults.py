"""A kill at any instant of an epoch end loses at most that epoch (issue 29).

tests/fault_driver.py trains tiny runs in forked children: training.fit with a fold's
schedule ("fit") and with the pretraining's keep_from_epoch ("pretrain"), and the
stacker's per-fold training ("stacker"). Every write point an uninterrupted run passes is
found by tracing the one seam (fat2019/util/faults.py); then a run is killed there, once
by SIGKILL and once by SIGTERM, resumed, and compared with the uninterrupted run: the
same files, weights (every array), history, <prefix>.json (but for the seconds it took),
chosen epoch and stacker outputs.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

DRIVER = Path(__file__).resolve().with_name("fault_driver.py")
KINDS = ("fit", "pretrain", "stacker")
WHAT = ("weights", "history", "checkpoint", "summary")
POINT = re.compile(r"(staged (weights|history|checkpoint|summary|state)|committed|published "
                   r"(weights|history|checkpoint|summary)|cleaned|finished)@(\d+)")


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    root = tmp_path_factory.mktemp("faults")
    env = {k: v for k, v in os.environ.items() if not k.startswith("FAT2019_FAULT")}
    env.update(TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="", PYTHONUNBUFFERED="1")
    done = subprocess.run([sys.executable, str(DRIVER), str(root / "runs"), str(root / "report.json"), *KINDS],
                          env=env, capture_output=True, text=True, timeout=1800)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-6000:]
    return json.loads((root / "report.json").read_text())


def cases(report, kind=None):
    return [(k, case) for k in KINDS if kind in (None, k) for case in report[k]["cases"]]


def test_the_uninterrupted_runs_finish_with_their_files(report):
    fit, pretrain, stacker = (report[k]["reference"] for k in KINDS)
    for ref in (fit, pretrain):
        assert ref["rc"] == 0 and ref["files"] == ["fold0.history.csv", "fold0.json", "fold0.weights.h5"]
        assert ref["summary"]["epochs_run"] == 2 and ref["history"].count("\n") == 3
    assert pretrain["summary"]["best_epoch"] == 2   # its first epoch is never kept
    assert stacker["rc"] == 0 and stacker["files"] == ["fold0.weights.h5", "fold1.weights.h5"]
    assert set(stacker["outputs"]) == {"oof", "test", "class_weights"}


def test_every_write_point_of_an_epoch_end_is_found(report):
    """Each epoch commits once; together the kinds stage and publish every file an epoch writes."""
    for kind in KINDS:
        points = report[kind]["points"]
        assert all(POINT.fullmatch(p) for p in points), points
        assert [p for p in points if p.startswith("committed")] == ["committed@1", "committed@2"]
        assert points[-2:] == ["cleaned@2", "finished@2"]
        for step in (1, 2):   # staged before the commit, published after it
            mine = [p.rpartition("@")[0] for p in points if p.endswith(f"@{step}")]
            commit = mine.index("committed")
            assert all(p.startswith("staged") for p in mine[:commit]) and mine[commit - 1] == "staged state"
            assert all(p.startswith("published") or p in ("cleaned", "finished") for p in mine[commit + 1:])
            assert sorted(p.split()[1] for p in mine[:commit - 1]) == sorted(
                p.split()[1] for p in mine[commit + 1:] if p.startswith("published"))
    found = {p.rpartition("@")[0] for kind in KINDS for p in report[kind]["points"]}
    assert {f"{stage} {what}" for stage in ("staged", "published") for what in WHAT} <= found


def test_each_kill_ended_the_run_at_its_point(report):
    for _, case in cases(report):
        assert case["killed"] == {"SIGKILL": -9, "SIGTERM": 143}[case["signal"]], case["log"][-2000:]


def test_a_resumed_run_equals_the_uninterrupted_one(report):
    for kind, case in cases(report):
        reference = {k: v for k, v in report[kind]["reference"].items() if k != "rc"}
        assert case["resumed"] == 0, case["resume_log"][-3000:]
        got = {k: case.get(k) for k in reference}
        assert got == reference, f"{kind}: killed by {case['signal']} at {case['point']}"


def test_sigterm_lets_the_whole_epoch_end_finish(report):
    """SIGTERM mid-epoch-end: the epoch is committed and published, nothing staged is left,
    and the resume starts at the next epoch."""
    for kind, case in cases(report):
        if case["signal"] == "SIGTERM":
            assert not [name for name in case["left"] if "tmp" in name], case
            assert "Traceback" not in case["log"]
    for _, case in cases(report, "fit") + cases(report, "pretrain"):
        if case["signal"] == "SIGTERM" and case["point"].endswith("@1"):
            assert "tiny: resuming at epoch 2" in case["resume_log"]


def test_a_sigkill_loses_at_most_the_epoch_it_hit(report):
    """Killed before an epoch's commit, the resume runs that epoch again; after it, the next one."""
    for _, case in cases(report, "fit") + cases(report, "pretrain"):
        if case["signal"] != "SIGKILL":
            continue
        name, _, step = case["point"].rpartition("@")
        committed = not name.startswith("staged")
        epochs_run_again = re.findall(r"tiny epoch +(\d+)/", case["resume_log"])
        if step == "1":
            assert epochs_run_again == (["2"] if committed else ["1", "2"]), case["point"]
        else:
            assert epochs_run_again == ([] if committed else ["2"]), case["point"]
