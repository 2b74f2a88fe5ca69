"""Each stage's --help is quiet (no TensorFlow log lines) and lists only what it uses."""
import contextlib
import io
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import ensemble
import predict
import pretrain
import tag
import train

CODE = Path(__file__).resolve().parent.parent / "code"
# the folder options are the same for every training-side stage, so one set of them works
# for every stage of a run (run.sh, the tests' tiny pipeline)
ALWAYS = {"--profile", "--data-dir", "--features-dir", "--models-dir", "--submissions-dir", "--models", "--set",
          "--frontend"}
EXPECTED = {   # beyond ALWAYS
    pretrain: {"--features-dir", "--force", "--workers", "--seed", "--mixed-precision", "--strategy",
               "--logical-cpus", "--tensorboard", "--gpus", "--cluster", "--ray-workers"},
    train: {"--features-dir", "--folds", "--force", "--workers", "--seed", "--mixed-precision", "--strategy",
            "--logical-cpus", "--tensorboard", "--from-scratch", "--gpus", "--cluster", "--ray-workers"},
    predict: {"--features-dir", "--folds", "--force", "--workers", "--mixed-precision", "--gpus", "--cluster", "--ray-workers"},
    ensemble: {"--seed", "--force", "--combine"},
}


def options_of(stage) -> set[str]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit):
        stage.main(["--help"])
    usage = out.getvalue().split("\n\n")[0]           # every option, as [--name ...]
    return set(re.findall(r"\[(--[a-z-]+)", usage))


@pytest.mark.parametrize("stage", list(EXPECTED), ids=lambda m: m.__name__)
def test_help_lists_only_the_options_the_stage_uses(stage):
    assert options_of(stage) == ALWAYS | EXPECTED[stage]


def test_tag_help_leaves_out_the_folders_it_does_not_use():
    found = options_of(tag)
    assert "--features-dir" not in found and "--submissions-dir" not in found and "--segments" in found


def test_help_prints_no_tensorflow_log_lines():
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}   # as a user's shell
    run = subprocess.run([sys.executable, str(CODE / "train.py"), "--help"], capture_output=True, text=True,
                         env=env, timeout=300)
    assert run.returncode == 0 and run.stdout.startswith("usage: train.py")
    assert run.stderr == ""


SCRIPTS = sorted(p.relative_to(CODE).as_posix() for p in [*CODE.glob("*.py"), *CODE.glob("tools/*.py")])
HEAVY = ("tensorflow", "keras", "jax")
PROBE = """
import runpy, sys
sys.argv = [sys.argv[1], "--help"]
sys.path.insert(0, {code!r})
try:
    runpy.run_path(sys.argv[0], run_name="__main__")
except SystemExit as e:
    assert e.code in (0, None), e.code
print(sorted({{m.split(".")[0] for m in sys.modules}} & set({heavy!r})))
"""


@pytest.mark.parametrize("script", SCRIPTS)
def test_help_imports_no_tensorflow_keras_or_jax(script):
    run = subprocess.run([sys.executable, "-c", PROBE.format(code=str(CODE), heavy=HEAVY), str(CODE / script)],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert "usage:" in run.stdout
    assert run.stdout.strip().splitlines()[-1] == "[]"


@pytest.mark.parametrize("script", SCRIPTS)
def test_help_examples_use_the_projects_interpreter(script):
    # a fresh clone has no `python` with the requirements: the examples run .venv's
    text = (CODE / script).read_text()
    assert not re.search(r"(?<![\w/.])python3? code/", text), f"{script}: an example with a bare `python code/...`"
