# Sourced by run.sh and tests/run.sh (POSIX sh), or by hand from the repository
# (`. code/setup_env.sh`): make or reuse the local virtualenv .venv and install
# requirements.txt into it when the pins changed. Sets $PY (the project's interpreter).
# Run directly (`sh code/setup_env.sh`) it only sets up .venv.
# Override the interpreter used to create it with PYTHON=/path/to/python3.11.
# No `set -e`: sourced into an interactive shell it would stay on there; failures are
# checked one by one.
# The repository: the folder above this file. A sourcing shell gives no portable way to
# know this file's path ($0 is then the shell itself), so when $0 does not lead to the
# repository, look from the current folder up instead; never guess further.
find_root() {
    dir=$1
    while [ -n "$dir" ] && [ "$dir" != / ]; do
        if [ -f "$dir/requirements.txt" ] && [ -f "$dir/code/setup_env.sh" ]; then
            echo "$dir"
            return 0
        fi
        dir=$(dirname "$dir")
    done
    return 1
}
ROOT=$(find_root "$(cd "$(dirname "$0")" 2>/dev/null && pwd)") || ROOT=$(find_root "$(pwd)") || {
    echo "setup: cannot find the repository (a folder with requirements.txt and code/setup_env.sh) from" \
         "$0 or $(pwd); source it from inside the repository: . code/setup_env.sh" >&2
    return 1 2>/dev/null || exit 1
}
VENV="$ROOT/.venv"
PY="$VENV/bin/python"
if [ ! -x "$PY" ]; then
    BASE=${PYTHON:-$(command -v python3.11 || command -v python3)}
    echo "setup: creating $VENV with $BASE"
    "$BASE" -m venv "$VENV" || { echo "setup: could not create $VENV" >&2; return 1 2>/dev/null || exit 1; }
fi
STAMP="$VENV/.requirements.sha256"
WANT=$(sha256sum "$ROOT/requirements.txt" | cut -d' ' -f1)
if [ "$(cat "$STAMP" 2>/dev/null)" != "$WANT" ]; then
    echo "setup: installing requirements.txt into $VENV (a few minutes the first time)"
    if ! { "$PY" -m pip install --quiet --disable-pip-version-check --upgrade pip &&
           "$PY" -m pip install --quiet --disable-pip-version-check -r "$ROOT/requirements.txt"; }; then
        echo "setup: installing requirements.txt failed (see above); rerun to retry" >&2
        return 1 2>/dev/null || exit 1
    fi
    echo "$WANT" > "$STAMP"
fi
export PYTHONUNBUFFERED=1
