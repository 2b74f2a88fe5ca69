"""Tests import the modules in code/ directly, the way the stage scripts do."""
import os
import sys
from pathlib import Path

import pytest

CODE_DIR = Path(__file__).resolve().parent.parent / "code"
sys.path.insert(0, str(CODE_DIR))
sys.path.insert(1, str(CODE_DIR / "tools"))   # the measuring tools' scripts
from fat2019 import cli  # noqa: E402  (sets TensorFlow's C++ log level for this machine, as every script does)


@pytest.fixture(scope="session")
def pipeline_run(tmp_path_factory):
    """The tiny end-to-end run of every stage (helpers.run_tiny_pipeline), once per session:
    test_pipeline.py, test_reports.py and test_tag.py all read it. Tests that change it
    (test_pipeline's --force) keep it valid for the others."""
    from helpers import run_tiny_pipeline
    return run_tiny_pipeline(tmp_path_factory.mktemp("pipeline"), pytest.MonkeyPatch())
