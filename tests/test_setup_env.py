"""code/setup_env.sh sourced by hand finds the repository, or refuses; it never walks up to
/ and makes a virtualenv there, and never leaves `set -e` in the user's shell."""
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SETUP = ROOT / "code" / "setup_env.sh"


def source(cwd: Path, script: str) -> subprocess.CompletedProcess:
    # `sh -c` makes $0 "sh", as an interactive shell's would be: only the folder can help
    return subprocess.run(["sh", "-c", script], cwd=cwd, capture_output=True, text=True, timeout=120)


def test_sourced_from_inside_the_repository_it_finds_it(tmp_path):
    run = source(ROOT / "tests", f'. "{SETUP}" && echo "PY=$PY"')
    assert run.returncode == 0, run.stderr
    assert f"PY={ROOT / '.venv' / 'bin' / 'python'}" in run.stdout


def test_sourced_from_elsewhere_it_refuses_and_the_shell_goes_on(tmp_path):
    run = source(tmp_path, f'. "{SETUP}"; echo "still here, rc=$?"; false; echo "no set -e"')
    assert "cannot find the repository" in run.stderr and "source it from inside the repository" in run.stderr
    assert "still here, rc=1" in run.stdout and "no set -e" in run.stdout
    assert "creating" not in run.stdout and not (tmp_path / ".venv").exists()
