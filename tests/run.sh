#!/bin/sh
# The test command: sets up .venv if needed, then runs the whole suite.
#   sh tests/run.sh            (extra arguments go to pytest)
. "$(dirname "$0")/../code/setup_env.sh" || exit 1
cd "$ROOT"
# Two worker processes, each taking whole test files (module fixtures are built once; the
# time it takes: BENCHMARKS.md). TEST_WORKERS=0 runs them in this process.
exec "$PY" -m pytest -q -n "${TEST_WORKERS:-2}" --dist loadfile "$@"
