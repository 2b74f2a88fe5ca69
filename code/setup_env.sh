# Sourced by run.sh and tests/run.sh (POSIX sh): make or reuse the local virtualenv .venv
# and install requirements.txt into it when the pins changed. Sets $PY.
# Override the interpreter used to create it with PYTHON=/path/to/python3.11.
set -e
ROOT=$(cd "$(dirname "$0")" && pwd)
while [ ! -f "$ROOT/requirements.txt" ] && [ "$ROOT" != / ]; do ROOT=$(dirname "$ROOT"); done
VENV="$ROOT/.venv"
PY="$VENV/bin/python"
if [ ! -x "$PY" ]; then
    BASE=${PYTHON:-$(command -v python3.11 || command -v python3)}
    echo "setup: creating $VENV with $BASE"
    "$BASE" -m venv "$VENV"
fi
STAMP="$VENV/.requirements.sha256"
WANT=$(sha256sum "$ROOT/requirements.txt" | cut -d' ' -f1)
if [ "$(cat "$STAMP" 2>/dev/null)" != "$WANT" ]; then
    echo "setup: installing requirements.txt into $VENV (a few minutes the first time)"
    "$PY" -m pip install --quiet --disable-pip-version-check --upgrade pip
    "$PY" -m pip install --quiet --disable-pip-version-check -r "$ROOT/requirements.txt"
    echo "$WANT" > "$STAMP"
fi
export TF_CPP_MIN_LOG_LEVEL=${TF_CPP_MIN_LOG_LEVEL:-2}
export PYTHONUNBUFFERED=1
