# Sourced by run.sh and tests/run.sh (POSIX sh), or by hand from the repository
# (`. code/setup_env.sh`): make or reuse the local virtualenv .venv and install the
# requirements into it when the pins or the build changed. Sets $PY (the project's interpreter).
# Run directly (`sh code/setup_env.sh`) it only sets up .venv.
# The build: the GPU one (requirements-gpu.txt: the CUDA 12 wheels of TensorFlow and JAX)
# where `nvidia-smi -L` lists a GPU, else the CPU one (requirements.txt);
# FAT2019_DEVICE=cpu or FAT2019_DEVICE=gpu chooses instead. One line says which.
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
# the machine's GPUs (set -e in a caller: grep -c exits 1 on none)
SETUP_GPUS=$(nvidia-smi -L 2>/dev/null | grep -c '^GPU ' || true)
if ! command -v nvidia-smi >/dev/null 2>&1; then
    SETUP_WHY="there is no nvidia-smi (no NVIDIA driver)"
else
    SETUP_WHY="nvidia-smi lists ${SETUP_GPUS:-0} GPU(s)"
fi
case ${FAT2019_DEVICE:-} in
    cpu|gpu) SETUP_BUILD=$FAT2019_DEVICE SETUP_WHY="FAT2019_DEVICE=$FAT2019_DEVICE" ;;
    "") if [ "${SETUP_GPUS:-0}" -gt 0 ]; then SETUP_BUILD=gpu; else SETUP_BUILD=cpu; fi ;;
    *) echo "setup: FAT2019_DEVICE=$FAT2019_DEVICE: expected cpu or gpu (or unset: the GPU build where" \
            "nvidia-smi lists a GPU)" >&2
       return 2 2>/dev/null || exit 2 ;;
esac
# The stamp: the pins' hash and the build, so that a change of either (a checkout moved to
# a machine with or without a GPU) installs again
STAMP="$VENV/.requirements.sha256"
if [ "$SETUP_BUILD" = gpu ]; then
    REQUIREMENTS=requirements-gpu.txt SETUP_OTHER="FAT2019_DEVICE=cpu for the CPU build"
    SETUP_TAKES="a few minutes and 3.3 GB of CUDA wheels more than the CPU build"
    WANT="$(cat "$ROOT/requirements.txt" "$ROOT/requirements-gpu.txt" | sha256sum | cut -d' ' -f1) gpu"
else
    REQUIREMENTS=requirements.txt SETUP_OTHER="FAT2019_DEVICE=gpu for the GPU build"
    SETUP_TAKES="a few minutes the first time"
    WANT="$(sha256sum < "$ROOT/requirements.txt" | cut -d' ' -f1) cpu"
fi
echo "setup: the $SETUP_BUILD build ($REQUIREMENTS), as $SETUP_WHY; $SETUP_OTHER"
HAVE=$(cat "$STAMP" 2>/dev/null || true)
case $HAVE in
    *" "*|"") ;;
    *) HAVE="$HAVE cpu" ;;   # a stamp from before the builds were recorded: requirements.txt, the CPU one
esac
if [ "$HAVE" != "$WANT" ]; then
    echo "setup: installing $REQUIREMENTS into $VENV ($SETUP_TAKES)"
    if ! "$PY" -m pip install --quiet --disable-pip-version-check --upgrade pip; then
        echo "setup: upgrading pip in $VENV failed (see above); rerun to retry" >&2
        return 1 2>/dev/null || exit 1
    fi
    # from the GPU build to the CPU one: the CUDA packages go, or the backends would keep using the GPU
    if [ "$SETUP_BUILD" = cpu ] && [ "${HAVE##* }" = gpu ]; then
        CUDA_PACKAGES=$("$PY" -m pip list --format=freeze --disable-pip-version-check 2>/dev/null |
                        sed -n -e 's/^\(nvidia-[^=]*\)==.*/\1/p' -e 's/^\(jax-cuda[^=]*\)==.*/\1/p')
        if [ -n "$CUDA_PACKAGES" ] &&
           ! "$PY" -m pip uninstall --quiet --disable-pip-version-check --yes $CUDA_PACKAGES; then
            echo "setup: removing the GPU build's CUDA packages failed (see above); rerun to retry" >&2
            return 1 2>/dev/null || exit 1
        fi
    fi
    if ! "$PY" -m pip install --quiet --disable-pip-version-check -r "$ROOT/$REQUIREMENTS"; then
        echo "setup: installing $REQUIREMENTS failed (see above); rerun to retry" >&2
        return 1 2>/dev/null || exit 1
    fi
    echo "$WANT" > "$STAMP"
fi
export PYTHONUNBUFFERED=1
