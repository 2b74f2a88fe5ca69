"""code/setup_env.sh sourced by hand finds the repository, or refuses; it never walks up to
/ and makes a virtualenv there, and never leaves `set -e` in the user's shell. It installs
the GPU build where nvidia-smi lists a GPU, the CPU one elsewhere (FAT2019_DEVICE chooses
instead), and again when the build changes; tested with stand-ins for nvidia-smi and for
the virtualenv's interpreter, so that nothing is installed."""
import hashlib
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from helpers import stand_in_nvidia_smi

ROOT = Path(__file__).resolve().parent.parent
SETUP = ROOT / "code" / "setup_env.sh"


def installed_build() -> str:
    """The build the shared .venv holds, by its stamp (a stamp from before builds: cpu)."""
    words = (ROOT / ".venv" / ".requirements.sha256").read_text().split()
    return words[1] if len(words) > 1 else "cpu"


def source(cwd: Path, script: str) -> subprocess.CompletedProcess:
    # `sh -c` makes $0 "sh", as an interactive shell's would be: only the folder can help.
    # FAT2019_DEVICE: the build the shared .venv has, so that this never installs into it
    env = {**os.environ, "FAT2019_DEVICE": installed_build()}
    return subprocess.run(["sh", "-c", script], cwd=cwd, capture_output=True, text=True, timeout=120, env=env)


def test_sourced_from_inside_the_repository_it_finds_it(tmp_path):
    run = source(ROOT / "tests", f'. "{SETUP}" && echo "PY=$PY"')
    assert run.returncode == 0, run.stderr
    assert f"PY={ROOT / '.venv' / 'bin' / 'python'}" in run.stdout and "installing" not in run.stdout


def test_sourced_from_elsewhere_it_refuses_and_the_shell_goes_on(tmp_path):
    run = source(tmp_path, f'. "{SETUP}"; echo "still here, rc=$?"; false; echo "no set -e"')
    assert "cannot find the repository" in run.stderr and "source it from inside the repository" in run.stderr
    assert "still here, rc=1" in run.stdout and "no set -e" in run.stdout
    assert "creating" not in run.stdout and not (tmp_path / ".venv").exists()


# --- which build: a stand-in nvidia-smi on PATH, a stand-in interpreter recording pip's calls -------

TOOLS = ("sh", "grep", "sha256sum", "cut", "sed", "cat", "dirname")   # what setup_env.sh runs
STAND_IN_PYTHON = """#!/bin/sh
# stand-in for .venv's interpreter: records each call; `pip list` prints $PIP_LIST's file
echo "$*" >> "$CALLS"
case "$*" in *"pip list"*) cat "$PIP_LIST" 2>/dev/null ;; esac
exit 0
"""


@pytest.fixture
def checkout(tmp_path):
    """A checkout with its own .venv (the stand-in interpreter), so nothing is installed
    anywhere; and a PATH of only the tools setup_env.sh runs (no real nvidia-smi)."""
    repo = tmp_path / "repo"
    (repo / "code").mkdir(parents=True)
    for name in ("code/setup_env.sh", "requirements.txt", "requirements-gpu.txt"):
        shutil.copy(ROOT / name, repo / name)
    python = repo / ".venv" / "bin" / "python"
    python.parent.mkdir(parents=True)
    python.write_text(STAND_IN_PYTHON)
    python.chmod(0o755)
    tools = tmp_path / "tools"
    tools.mkdir()
    for tool in TOOLS:
        (tools / tool).symlink_to(shutil.which(tool))
    return repo


def setup(repo: Path, gpus: list[str] | None = None, **environ) -> tuple[subprocess.CompletedProcess, list[str]]:
    """Run setup_env.sh in `repo`, with a stand-in nvidia-smi listing `gpus` (None: no
    nvidia-smi at all); the interpreter's calls, one line each."""
    calls = repo.parent / "calls.txt"
    calls.unlink(missing_ok=True)
    path = str(repo.parent / "tools")
    if gpus is not None:
        path = f"{stand_in_nvidia_smi(repo.parent / 'driver', gpus).parent}:{path}"
    env = {"PATH": path, "CALLS": str(calls), "PIP_LIST": str(repo.parent / "pip-list.txt"), **environ}
    run = subprocess.run(["sh", str(repo / "code" / "setup_env.sh")], cwd=repo, env=env, capture_output=True,
                         text=True, timeout=60)
    return run, calls.read_text().splitlines() if calls.exists() else []


def installed(calls: list[str]) -> list[str]:
    """The requirement files pip was asked to install."""
    return [Path(c.split(" -r ")[1]).name for c in calls if "pip install" in c and " -r " in c]


def stamp(repo: Path) -> str:
    return (repo / ".venv" / ".requirements.sha256").read_text().strip()


H100 = ["NVIDIA H100 80GB HBM3"]


def test_where_nvidia_smi_lists_a_gpu_the_gpu_build_is_installed_once(checkout):
    run, calls = setup(checkout, H100 * 2)
    assert run.returncode == 0, run.stderr
    assert "setup: the gpu build (requirements-gpu.txt), as nvidia-smi lists 2 GPU(s); " \
           "FAT2019_DEVICE=cpu for the CPU build" in run.stdout
    assert installed(calls) == ["requirements-gpu.txt"] and stamp(checkout).endswith(" gpu")
    run, calls = setup(checkout, H100 * 2)
    assert run.returncode == 0 and calls == [] and "installing" not in run.stdout


def test_without_a_gpu_the_cpu_build_and_a_moved_checkout_installs_what_differs(checkout):
    run, calls = setup(checkout, None)
    assert run.returncode == 0, run.stderr
    assert "setup: the cpu build (requirements.txt), as there is no nvidia-smi (no NVIDIA driver)" in run.stdout
    assert installed(calls) == ["requirements.txt"] and stamp(checkout).endswith(" cpu")
    run, calls = setup(checkout, [])   # nvidia-smi there, but no driver loaded: no GPU either
    assert "as nvidia-smi lists 0 GPU(s)" in run.stdout and calls == []
    run, calls = setup(checkout, H100)   # the checkout moved to a GPU machine
    assert installed(calls) == ["requirements-gpu.txt"] and stamp(checkout).endswith(" gpu")
    (checkout.parent / "pip-list.txt").write_text("jax==0.10.2\njax-cuda12-plugin==0.10.2\n"
                                                  "nvidia-cudnn-cu12==9.28.0.42\nnumpy==2.4.6\n")
    run, calls = setup(checkout, None)   # and back: the CUDA packages go
    uninstall = [c for c in calls if "pip uninstall" in c]
    assert len(uninstall) == 1 and uninstall[0].endswith("--yes jax-cuda12-plugin nvidia-cudnn-cu12")
    assert installed(calls) == ["requirements.txt"] and stamp(checkout).endswith(" cpu")


def test_fat2019_device_chooses_the_build(checkout):
    run, calls = setup(checkout, H100, FAT2019_DEVICE="cpu")
    assert "setup: the cpu build (requirements.txt), as FAT2019_DEVICE=cpu" in run.stdout
    assert installed(calls) == ["requirements.txt"]
    run, calls = setup(checkout, None, FAT2019_DEVICE="gpu")
    assert "setup: the gpu build (requirements-gpu.txt), as FAT2019_DEVICE=gpu" in run.stdout
    assert installed(calls) == ["requirements-gpu.txt"]
    run, calls = setup(checkout, H100, FAT2019_DEVICE="cuda")
    assert run.returncode == 2 and calls == []
    assert "setup: FAT2019_DEVICE=cuda: expected cpu or gpu" in run.stderr


def test_a_stamp_from_before_the_builds_counts_as_the_cpu_build(checkout):
    digest = hashlib.sha256((checkout / "requirements.txt").read_bytes()).hexdigest()
    (checkout / ".venv" / ".requirements.sha256").write_text(digest + "\n")
    run, calls = setup(checkout, None)
    assert run.returncode == 0 and calls == []
    run, calls = setup(checkout, H100)
    assert installed(calls) == ["requirements-gpu.txt"]


def test_the_gpu_requirements_are_requirements_txt_and_the_cuda_builds_of_its_pins():
    pins = dict(line.split("==") for line in (ROOT / "requirements.txt").read_text().splitlines()
                if "==" in line and not line.startswith("#"))
    gpu = [line for line in (ROOT / "requirements-gpu.txt").read_text().splitlines()
           if line and not line.startswith("#")]
    assert gpu == ["-r requirements.txt", f"tensorflow[and-cuda]=={pins['tensorflow']}",
                   f"jax[cuda12]=={pins['jax']}"]
