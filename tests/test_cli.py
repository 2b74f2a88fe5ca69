"""cli.py: how every script reports errors, warnings and exit codes."""
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

from fat2019 import cli

CODE = Path(__file__).resolve().parent.parent / "code"


def run_script(body: str) -> subprocess.CompletedProcess:
    """A script built as code/*.py are (cli.run_stage(main)), run in a fresh interpreter."""
    source = f"import sys\nsys.path.insert(0, {str(CODE)!r})\nfrom fat2019 import cli\n{body}\ncli.run_stage(main)\n"
    return subprocess.run([sys.executable, "-c", source], capture_output=True, text=True, timeout=120)


def test_a_project_warning_is_one_line_without_its_source(tmp_path):
    run = run_script(f"""
import numpy as np
from fat2019.data import folds
from fat2019.data.dataset import ClipSet
def main():
    labels = np.zeros((20, 3)); labels[:, 0] = 1; labels[:2, 1] = 1; labels[5:, 2] = 1
    clips = ClipSet("curated", [f"{{i}}.wav" for i in range(20)], [], labels)
    folds.load_or_create({str(tmp_path)!r}, clips, 5, ["a", "b", "c"])   # class b: 2 clips for 5 folds
    return 0
""")
    assert run.returncode == 0, run.stderr
    lines = [line for line in run.stderr.splitlines() if line]
    assert lines == ["warning: 1 class(es) have fewer positive clips than the 5 folds, so some validation "
                     "folds lack them: ['b']"]


def test_another_packages_warning_is_one_line_naming_its_origin():
    message = cli.format_warning("deprecated\n  soon", FutureWarning, "/somewhere/lib.py", 12, "code line")
    assert message == "warning: deprecated soon (FutureWarning, /somewhere/lib.py:12)\n"


def test_bad_input_is_one_error_line_and_exit_code_2():
    run = run_script("""
def main():
    raise cli.BadInput("my.csv: row 3: no labels")
""")
    assert (run.returncode, run.stderr) == (2, "error: my.csv: row 3: no labels\n")


def test_a_missing_prerequisite_is_exit_code_2_and_the_return_code_is_kept():
    missing = run_script("""
def main():
    raise cli.NotReady("models/v1mix: fold 2 not trained")
""")
    assert (missing.returncode, missing.stderr) == (2, "error: models/v1mix: fold 2 not trained\n")
    assert run_script("def main():\n    return 1\n").returncode == 1


def test_run_stage_installs_the_warning_format(monkeypatch):
    monkeypatch.setattr(warnings, "formatwarning", warnings.formatwarning)
    with pytest.raises(SystemExit) as stopped:
        cli.run_stage(lambda: 0)
    assert stopped.value.code == 0 and warnings.formatwarning is cli.format_warning


def test_the_native_log_level_hides_xlas_cuinit_error_only_without_a_gpu(tmp_path):
    from fat2019 import cli
    assert cli.native_log_level(tmp_path, {}) == "3"                          # no /dev/nvidia<N>
    (tmp_path / "nvidia0").touch()
    assert cli.native_log_level(tmp_path, {}) == "2"
    assert cli.native_log_level(tmp_path, {"CUDA_VISIBLE_DEVICES": "0,1"}) == "2"
    assert cli.native_log_level(tmp_path, {"CUDA_VISIBLE_DEVICES": ""}) == "3"     # hidden by the user
    assert cli.native_log_level(tmp_path, {"CUDA_VISIBLE_DEVICES": "cpu0"}) == "3"  # a Ray pretend GPU
