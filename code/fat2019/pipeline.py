"""run.sh's stages and which of them take each option: the one place for that rule.

run.sh hands its own arguments to `python -m fat2019.pipeline route ARG ...` before the
first stage starts. Each option goes to every stage that takes it (OPTIONS), and then each
stage's own parser reads its share, so a bad value (`--mixed-precision float8`) or an
option no stage takes (`--skip`) stops run.sh before any work, naming the option; nothing
reaches a stage that would refuse it hours later. tests/test_run_sh.py checks OPTIONS
against every stage's parser, so a stage that gains an option fails that test until it
is listed here.

    python -m fat2019.pipeline route --seed 1 --models v1mix   # shell assignments, one per stage
    python -m fat2019.pipeline table                           # which stage takes which option
"""
from __future__ import annotations

import argparse
import contextlib
import importlib
import io
import shlex
import sys

STAGES = ("features", "pretrain", "train", "predict", "ensemble")   # run.sh's order
TRAINING = STAGES[1:]
UNITS = ("pretrain", "train", "predict")   # made of units that Ray can spread over GPUs
FITTING = ("pretrain", "train")            # fit networks: devices, TensorBoard

# option: (values it takes: 0, 1, "?" (optional) or "+" (one or more), the stages that take it)
OPTIONS: dict[str, tuple[int | str, tuple[str, ...]]] = {
    "--profile": (1, STAGES),
    "--data-dir": (1, STAGES),
    "--features-dir": (1, STAGES),
    "--models-dir": (1, STAGES),
    "--set": ("+", STAGES),
    "--submissions-dir": (1, TRAINING),
    "--models": ("+", TRAINING),
    "--workers": (1, ("features", *UNITS)),
    "--sets": ("+", ("features",)),
    "--skip-bad": (0, ("features",)),
    "--force": (0, TRAINING),
    "--folds": ("+", ("train", "predict")),
    "--seed": (1, ("pretrain", "train", "ensemble")),
    "--mixed-precision": (1, UNITS),
    "--gpus": (1, UNITS),
    "--cluster": ("?", UNITS),
    "--ray-workers": (1, UNITS),
    "--strategy": (1, FITTING),
    "--logical-cpus": (1, FITTING),
    "--tensorboard": (0, FITTING),
    "--from-scratch": (0, ("train",)),
    "--frontend": (1, TRAINING),
    "--combine": (1, ("ensemble",)),
}


class RouteError(ValueError):
    """run.sh's arguments cannot be handed on; the message names the option."""


def groups(argv: list[str]) -> list[list[str]]:
    """The arguments as [option, its values...] groups, by OPTIONS' value counts
    (`--name=value` is one group of one)."""
    out, i = [], 0
    while i < len(argv):
        arg = argv[i]
        name = arg.split("=", 1)[0]
        if name not in OPTIONS:
            if not arg.startswith("-"):
                raise RouteError(f"{arg}: a value without an option before it")
            raise RouteError(f"{name}: no stage takes this option (`sh run.sh --help` lists them)")
        count, _ = OPTIONS[name]
        i += 1
        values = []
        if "=" in arg:
            if count == 0:
                raise RouteError(f"{name} takes no value")
        else:
            limit = {0: 0, 1: 1, "?": 1, "+": len(argv)}[count]
            while i < len(argv) and len(values) < limit and not argv[i].startswith("--"):
                values.append(argv[i])
                i += 1
            if count in (1, "+") and not values:
                raise RouteError(f"{name} needs a value")
        out.append([arg, *values])
    return out


def route(argv: list[str]) -> dict[str, list[str]]:
    """Each stage's share of run.sh's arguments, in their order."""
    shares = {stage: [] for stage in STAGES}
    for group in groups(argv):
        for stage in OPTIONS[group[0].split("=", 1)[0]][1]:
            shares[stage] += group
    return shares


class Parsed(Exception):
    """Raised in place of running a stage: its parser read the arguments."""

    def __init__(self, parser: argparse.ArgumentParser, args: argparse.Namespace):
        super().__init__(args)
        self.parser, self.namespace = parser, args


@contextlib.contextmanager
def parse_only():
    """Stage mains parse their arguments and stop there (Parsed), running nothing."""
    real = argparse.ArgumentParser.parse_args

    def parse_and_stop(self, args=None, namespace=None):
        raise Parsed(self, real(self, args, namespace))

    argparse.ArgumentParser.parse_args = parse_and_stop
    try:
        yield
    finally:
        argparse.ArgumentParser.parse_args = real


def check(stage: str, argv: list[str]) -> None:
    """The stage's own parser reads `argv`; RouteError with its message when it refuses."""
    main = importlib.import_module(stage).main
    err = io.StringIO()
    with parse_only(), contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            main(argv)
        except Parsed:
            return
        except SystemExit:
            lines = err.getvalue().strip().splitlines()
            why = lines[-1].partition("error: ")[2] if lines else "bad arguments"
            raise RouteError(f"{stage}.py refuses {shlex.join(argv[2:])}: {why}") from None
    raise AssertionError(f"{stage}.py ran without parsing its arguments")


def shell_assignments(shares: dict[str, list[str]]) -> str:
    """`STAGES='...'` and `STAGE_ARGS_<stage>='...'` lines for run.sh's eval."""
    return f"STAGES={shlex.quote(' '.join(shares))}\n" + "\n".join(f"STAGE_ARGS_{stage}={shlex.quote(shlex.join(args))}" for stage, args in shares.items())


def table() -> str:
    width = max(map(len, OPTIONS))
    return "\n".join(f"  {name:<{width}}  {', '.join(stages)}" for name, (_, stages) in OPTIONS.items())


def main(argv: list[str]) -> int:
    command, *rest = argv or ["table"]
    if command == "table":
        print(table())
        return 0
    try:
        shares = route(rest)
        for stage in STAGES:
            check(stage, ["--profile", "demo", *shares[stage]])   # run.sh puts its own --profile first
    except RouteError as e:
        print(f"run.sh: {e}", file=sys.stderr)
        return 2
    print(shell_assignments(shares))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
