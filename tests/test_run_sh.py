"""run.sh hands each stage the options it takes; the stages themselves are stubbed (a fake
interpreter that records its arguments), so this runs in a second."""
import os
import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

FAKE_PYTHON = """#!/bin/sh
# records each stage's command line; answers run.sh's closing question about the folders
if [ "$1" = "-c" ]; then echo submissions models; exit 0; fi
echo "$*" >> "$CALLS"
"""


def run_pipeline_script(tmp_path, *args):
    repo = tmp_path / "repo"
    (repo / "code").mkdir(parents=True)
    (repo / "input").mkdir()
    (repo / "input" / "train_curated.csv").write_text("fname,labels\n")   # real data: no demo generated
    shutil.copy(ROOT / "run.sh", repo / "run.sh")
    fake = tmp_path / "python"
    fake.write_text(FAKE_PYTHON)
    fake.chmod(0o755)
    (repo / "code" / "setup_env.sh").write_text(f"PY={fake}\n")
    calls = tmp_path / "calls.txt"
    done = subprocess.run(["sh", str(repo / "run.sh"), *args], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "CALLS": str(calls)})
    assert done.returncode == 0, done.stderr
    return {line.split()[0].removeprefix("code/"): line.split()[1:] for line in calls.read_text().splitlines()}


def test_the_features_stage_gets_the_data_and_features_folders(tmp_path):
    calls = run_pipeline_script(tmp_path, "--data-dir", "my_data", "--models", "v1mix", "--features-dir=feats")
    assert calls["features.py"] == ["--profile", "full", "--data-dir", "my_data", "--features-dir=feats"]
    for stage in ("pretrain.py", "train.py", "predict.py", "ensemble.py"):
        assert calls[stage] == ["--profile", "full", "--data-dir", "my_data", "--models", "v1mix",
                                "--features-dir=feats"]


def test_gpus_goes_to_the_stages_made_of_units_only(tmp_path):
    calls = run_pipeline_script(tmp_path, "--gpus", "2")
    assert calls["features.py"] == ["--profile", "full"]
    for stage in ("pretrain.py", "train.py", "predict.py"):   # Ray schedules their units
        assert calls[stage] == ["--profile", "full", "--gpus", "2"]
    assert calls["ensemble.py"] == ["--profile", "full"]
