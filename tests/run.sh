#!/bin/sh
# The test command: sets up .venv if needed, then runs the whole suite.
#   sh tests/run.sh            (extra arguments go to pytest)
. "$(dirname "$0")/../code/setup_env.sh" || exit 1
cd "$ROOT"
exec "$PY" -m pytest -q "$@"
