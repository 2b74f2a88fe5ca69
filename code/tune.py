"""Search the log-mel front end and the crop length end to end, as the original's authors
did (docs/tuning.md): Ray Tune trains one model per trial, with the trial's front end, on
the given folds (default: fold 0) from scratch with the profile's schedule, reports the
validation lwlrap every epoch, and ASHA stops the weak trials early. Tune's random search
draws the trials from the space; the first trial is the profile's own front end, the
baseline. Each parameter takes a list of values (default: the original's, one smaller and
one larger); every combination must be possible, or the search is refused at once.

The search leaves, in <models-dir>/tune/: best_frontend.json (what the other stages take
with --frontend FILE), trials.csv (every trial) and tune_report.png (lwlrap against each
parameter). The profile's own settings never change.

    .venv/bin/python code/tune.py --profile demo --trials 12
    .venv/bin/python code/tune.py --n-mels 64 128 --hop-length 256 512 --time-budget 2h
    .venv/bin/python code/tune.py --gpus 4          # 4 trials side by side, one per GPU
    .venv/bin/python code/train.py --frontend models/demo/tune/best_frontend.json

Killed, the same command continues the search (Tune's own restore): finished trials stay
finished, unfinished ones resume at their last epoch. --force starts a new search.
"""
from __future__ import annotations

import re
import sys

from fat2019.cli import BadInput, run_stage, stage_parser  # first: it quiets TensorFlow's C++ log lines before anything imports TensorFlow
from fat2019.engine import ray_scheduler
from fat2019.tune import space
from fat2019.util import machine

DEFAULT_TRIALS = 12


def time_budget(text: str) -> float:
    """Seconds of '90', '90s', '20m', '1.5h'."""
    match = re.fullmatch(r"\s*([0-9.]+)\s*([smh]?)\s*", text)
    if not match:
        raise ValueError(text)
    return float(match.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600}[match.group(2)]


def make_parser():
    parser = stage_parser(__doc__, frontend=False)
    parser.add_argument("--trials", type=int, default=DEFAULT_TRIALS,
                        help=f"trials to run, the profile's front end first (default {DEFAULT_TRIALS})")
    parser.add_argument("--time-budget", type=time_budget, metavar="TIME",
                        help="stop starting trials, and stop the running ones, after this long: 90s, 20m, 2h "
                             "(default: no limit)")
    g = parser.add_argument_group("the search space: values to choose from (default: the original's value, "
                                  "one smaller and one larger)")
    for p in space.PARAMETERS:
        g.add_argument(p.flag, type=p.kind if p.kind is float else int, nargs="+", metavar="V", help=p.help)
    ray_scheduler.add_args(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = make_parser()
    argv = sys.argv[1:] if argv is None else argv
    args = parser.parse_args(argv)
    chosen = ray_scheduler.plan(parser, args)
    if args.trials < 1:
        parser.error(f"--trials {args.trials}: expected at least 1")
    if args.models and len(args.models) > 1:
        parser.error(f"--models {' '.join(args.models)}: a search trains one model; name one")
    from fat2019 import config, layout, settings

    args.models = args.models or [config.ZOO[0].name]
    args.folds = args.folds or [0]
    # the space is checked first, before anything is written or trained
    values = space.default_space(settings.resolve(args).profile)
    values.update({p.name: getattr(args, p.name) for p in space.PARAMETERS if getattr(args, p.name)})
    space.check(values)

    # imported once the options are parsed: --help stays free of TensorFlow/Keras (cli.py)
    from fat2019.engine.workspace import Workspace

    ws = Workspace(args)
    ws.record_run()
    ws.fold_numbers()   # in the profile's range
    ws.folds   # models/folds.csv made here once, not by the trials at the same time
    ray_scheduler.stay_on_loopback(None if chosen is None else chosen.address)   # before search.py imports Ray
    from fat2019.tune import report, search

    max_epochs = ws.profile.epochs * len(args.folds)
    plan = search.Search(space=values, model=args.models[0], folds=tuple(args.folds), trials=args.trials,
                         epochs=ws.profile.epochs, grace_epochs=search.grace_epochs(max_epochs), seed=args.seed,
                         profile=ws.profile.name)
    tune_dir = layout.tune_dir(ws.paths.models)
    resume = search.settle(tune_dir, plan, fresh=args.force)
    print(f"tune: profile {ws.profile.name}, {args.models[0]} on fold(s) {args.folds}, {len(ws.curated)} curated "
          f"clips; {args.trials} trials of up to {max_epochs} epochs, ASHA rungs from epoch {plan.grace_epochs} "
          f"(x{search.REDUCTION_FACTOR}); each trial's output: {tune_dir / layout.TRIALS_DIR}/<trial>/"
          f"{layout.TRIAL_LOG}", flush=True)
    try:
        grid = search.run(ws.paths.models, args, plan, ws.profile, chosen, args.time_budget, resume)
    except search.Interrupted:
        return 130   # as a shell reports Ctrl-C

    trials = search.trials_of(grid)
    table = report.trial_table(ws.paths.models, trials, space.default_point(ws.profile), max_epochs)
    print("\n" + report.shown_table(table) + "\n")
    csv = report.write_table(ws.paths.models, table)
    saved = report.savings(table, max_epochs)
    print(report.savings_line(saved))
    png = report.plot(ws.paths.models, table, values, f"tune: {args.models[0]}, fold(s) {args.folds}, profile "
                                              f"{ws.profile.name}, {len(table)} trials")
    print(f"tune: table {csv}, plot {png}")
    scored = table[table["best_lwlrap"].notna()]
    if scored.empty:
        raise BadInput(f"no trial reported a score; see the trials' {layout.TRIAL_LOG} in "
                       f"{tune_dir / layout.TRIALS_DIR}")
    best = scored.iloc[0]
    frontend, duration = space.frontend_of(best.to_dict())
    baseline = table[table["baseline"]]
    path = layout.best_frontend_json(ws.paths.models)
    space.save_frontend(path, frontend, duration, {
        "trial": best["trial"], "best_val_lwlrap": float(best["best_lwlrap"]), "profile": ws.profile.name,
        "model": args.models[0], "folds": list(args.folds), "trials": len(table),
        "baseline_val_lwlrap": float(baseline["best_lwlrap"].iloc[0]) if len(baseline) else None})
    against = (f" (the profile's own: {baseline['best_lwlrap'].iloc[0]:.4f})"
               if len(baseline) and baseline["best_lwlrap"].notna().iloc[0] else "")
    print(f"tune: best trial {best['trial']}, lwlrap {best['best_lwlrap']:.4f}{against}: "
          f"{search.describe(best.to_dict())}\ntune: wrote {path}; use it with --frontend {path}")
    print(machine.summary())   # CPU runs' last digits depend on it (docs/reproducibility-across-cpus.md)
    failed = table[table["ended"] == "failed"]
    return 1 if len(failed) else 0


if __name__ == "__main__":
    run_stage(main)
