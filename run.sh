#!/bin/sh
# The whole pipeline, stage by stage; stops at the first failing stage and names it.
#   sh run.sh                      real data in input/ -> profile full; otherwise the demo
#   sh run.sh --models v1mix       extra options go to pretrain/train/predict/ensemble, so give
#                                  ones they all take (--models, --set, --data-dir, --models-dir);
#                                  --data-dir and --features-dir go to features.py too
#   sh run.sh --gpus 4             pretrain, train and predict run 4 units at a time, one per GPU (Ray)
#   sh run.sh --cluster auto       the same on a running Ray cluster, all of its GPUs (docs/clusters.md)
# Every stage skips work that is already finished, so rerunning resumes.
set -e
cd "$(dirname "$0")"
began=$(date +%s)
. code/setup_env.sh || exit 1

# --gpus N / --cluster [ADDRESS] go to the stages made of units (the others run on one device);
# the folder options features.py takes (--data-dir, --features-dir) go to it as well as to the others
GPUS=
FEATURES_OPTS=
n=$#
while [ "$n" -gt 0 ]; do
    arg=$1
    shift
    n=$((n - 1))
    case $arg in
        --gpus)
            [ "$n" -gt 0 ] || { echo "run.sh: --gpus needs a value (a number of GPUs, or auto)" >&2; exit 2; }
            GPUS="--gpus $1"
            shift
            n=$((n - 1)) ;;
        --gpus=*|--cluster=*) GPUS=$arg ;;
        --cluster)
            GPUS=--cluster
            if [ "$n" -gt 0 ] && [ "${1#-}" = "$1" ]; then   # an address (it may be left out: RAY_ADDRESS)
                GPUS="--cluster $1"
                shift
                n=$((n - 1))
            fi ;;
        --data-dir|--features-dir)
            [ "$n" -gt 0 ] || { echo "run.sh: $arg needs a folder" >&2; exit 2; }
            case $1 in *[[:space:]]*) echo "run.sh: $arg $1: a folder without spaces, please" >&2; exit 2 ;; esac
            FEATURES_OPTS="$FEATURES_OPTS $arg $1"
            set -- "$@" "$arg" "$1"
            shift
            n=$((n - 1)) ;;
        --data-dir=*|--features-dir=*)
            FEATURES_OPTS="$FEATURES_OPTS $arg"
            set -- "$@" "$arg" ;;
        *) set -- "$@" "$arg" ;;
    esac
done

if [ -f input/train_curated.csv ]; then
    PROFILE=full
else
    PROFILE=demo
    echo "run.sh: no input/train_curated.csv, running the demo on generated data (input/demo)"
    "$PY" code/make_demo_data.py || { echo "run.sh: stage make_demo_data failed" >&2; exit 1; }
fi
# full on a GPU machine whose backend sees no GPU: refused now, not after the features stage
[ "$PROFILE" != full ] || (cd code && "$PY" -c "from fat2019.util import machine; raise SystemExit(machine.check_full_profile('run.sh'))") || exit 2

stage() {
    name=$1
    shift
    echo "=== $name ($PROFILE)"
    start=$(date +%s)
    if ! "$PY" "code/$name.py" --profile "$PROFILE" "$@"; then
        echo "run.sh: stage $name failed; fix the problem above and rerun (finished work is kept)" >&2
        exit 1
    fi
    echo "=== $name done in $(( $(date +%s) - start )) s"
}

stage features $FEATURES_OPTS
stage pretrain $GPUS "$@"
stage train $GPUS "$@"
stage predict $GPUS "$@"
stage ensemble "$@"

took=$(( $(date +%s) - began ))
# the profile's folders, from config.py (defined there once)
set -- $(cd code && "$PY" -c "from fat2019 import config; p = config.PROFILES['$PROFILE']; print(p.submissions_dir, p.models_dir)")
echo "=== all stages done in $((took / 60)) min $((took % 60)) s (profile $PROFILE)"
(cd code && "$PY" -c "from fat2019.util import machine; print(machine.summary())")  # docs/reproducibility-across-cpus.md
echo "results: $1/submission.csv (stacker), $1/average.csv (weighted average), $1/report.png"
echo "         per model: $2/<model>/oof.csv, test.csv, report.png"
echo "         where the out-of-fold predictions lose: $PY code/inspect_oof.py --profile $PROFILE"
