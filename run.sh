#!/bin/sh
# The whole pipeline, stage by stage; stops at the first failing stage and names it.
#   sh run.sh                      real data in input/ -> profile full; otherwise the demo
#   sh run.sh --models v1mix       options go to every stage that takes them (--seed: pretrain, train,
#                                  ensemble; --folds: train, predict); one that no stage takes, or a
#                                  bad value, stops run.sh before the first stage
#   sh run.sh --check --seed 1     print each stage's command line, run nothing
#   sh run.sh --help               these lines and which stage takes which option
#   sh run.sh --gpus 4             pretrain, train and predict run 4 units at a time, one per GPU (Ray)
#   sh run.sh --cluster auto       the same on a running Ray cluster, all of its GPUs (docs/clusters.md)
# Every stage skips work that is already finished, so rerunning resumes.
set -e
cd "$(dirname "$0")"
began=$(date +%s)
. code/setup_env.sh || exit 1

case " $* " in
    *" --help "*|*" -h "*)
        sed -n '2,/^set -e/p' run.sh | sed '$d'   # after the cd: run.sh is here
        echo "Options and the stages each goes to (code/fat2019/pipeline.py):"
        (cd code && "$PY" -m fat2019.pipeline table)
        exit 0 ;;
esac
CHECK=
if [ "${1:-}" = "--check" ]; then   # print what each stage would get, run nothing
    CHECK=1
    shift
fi
# every option goes to the stages that take it, each stage's parser checks its share, all
# before the first stage starts (the rule: code/fat2019/pipeline.py)
routes=$(cd code && "$PY" -m fat2019.pipeline route "$@") || exit 2
eval "$routes"
OPTIONS="$*"

if [ -f input/train_curated.csv ]; then
    PROFILE=full
else
    PROFILE=demo
fi
if [ -n "$CHECK" ]; then
    for name in $STAGES; do
        eval "echo \"code/$name.py --profile $PROFILE \$STAGE_ARGS_$name\""
    done
    exit 0
fi
if [ "$PROFILE" = demo ]; then
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

for name in $STAGES; do
    eval "stage $name \$STAGE_ARGS_$name"
done

took=$(( $(date +%s) - began ))
# the profile's folders, from config.py (defined there once)
set -- $(cd code && "$PY" -c "from fat2019 import config; p = config.PROFILES['$PROFILE']; print(p.submissions_dir, p.models_dir, p.data_dir)")
echo "=== all stages done in $((took / 60)) min $((took % 60)) s (profile $PROFILE)"
if [ "$PROFILE" = demo ]; then   # ensemble.py printed the machine: line; its level picks the reference row
    (cd code && "$PY" -m fat2019.eval.reference_digits --data-dir "../$3" --submissions-dir "../$1" --options "$OPTIONS")
fi
echo "results: $1/submission.csv (the --combine choice, stacker by default); every combination: $1/stacker.csv, average.csv, fitted.csv; $1/report.png"
echo "         per model: $2/<model>/oof.csv, test.csv, report.png"
echo "         where the out-of-fold predictions lose: $PY code/inspect_oof.py --profile $PROFILE"
