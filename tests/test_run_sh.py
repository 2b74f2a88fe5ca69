"""run.sh hands each stage the options it takes, and refuses before the first stage what
a stage would refuse. The stages themselves are stubbed (a fake interpreter that records
their command lines and hands everything else to the real one), so this runs in seconds;
the routing rule is fat2019/pipeline.py's, checked here against every stage's parser."""
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from fat2019 import pipeline

ROOT = Path(__file__).resolve().parent.parent

FAKE_PYTHON = f"""#!/bin/sh
# records each stage's command line; anything else (run.sh's checks and questions) runs
case "$1" in
    code/*.py) echo "$*" >> "$CALLS" ;;
    *) exec {sys.executable} "$@" ;;
esac
"""
# a value for each option that takes one, as a user would give it
SAMPLE = {"--profile": ["full"], "--data-dir": ["my_data"], "--features-dir": ["feats"], "--models-dir": ["m"],
          "--set": ["epochs=2", "n_folds=3"], "--submissions-dir": ["subs"], "--models": ["v1mix", "se"],
          "--workers": ["2"], "--sets": ["curated"], "--folds": ["0", "1"], "--seed": ["1"],
          "--mixed-precision": ["bfloat16"], "--gpus": ["2"], "--cluster": ["auto"], "--strategy": ["mirrored"],
          "--logical-cpus": ["2"], "--ray-workers": ["fresh"], "--frontend": ["best_frontend.json"],
          "--combine": ["fitted"]}


def make_repo(root: Path, real_data: bool) -> Path:
    """A copy of the repository's run.sh over the real code/ (linked) and the fake
    interpreter; with `real_data`, input/train_curated.csv (profile full, no demo)."""
    repo = root / "repo"
    (repo / "code").mkdir(parents=True)
    for path in (ROOT / "code").iterdir():
        if path.name not in ("setup_env.sh", "__pycache__"):
            (repo / "code" / path.name).symlink_to(path)
    (repo / "input").mkdir()
    if real_data:
        (repo / "input" / "train_curated.csv").write_text("fname,labels\n")
    (repo / "run.sh").write_text((ROOT / "run.sh").read_text())
    fake = root / "python"
    fake.write_text(FAKE_PYTHON)
    fake.chmod(0o755)
    (repo / "code" / "setup_env.sh").write_text(f"PY={fake}\n")
    return repo


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    return make_repo(tmp_path_factory.mktemp("run_sh"), real_data=True)


def run_pipeline_script(repo, tmp_path, *args, expect=0):
    calls = tmp_path / "calls.txt"
    done = subprocess.run(["sh", str(repo / "run.sh"), *args], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "CALLS": str(calls)})
    assert done.returncode == expect, done.stderr
    lines = calls.read_text().splitlines() if calls.exists() else []
    return {line.split()[0].removeprefix("code/"): line.split()[1:] for line in lines}, done


def test_the_features_stage_gets_the_data_and_features_folders(repo, tmp_path):
    calls, _ = run_pipeline_script(repo, tmp_path, "--data-dir", "my_data", "--models", "v1mix",
                                   "--features-dir=feats")
    assert calls["features.py"] == ["--profile", "full", "--data-dir", "my_data", "--features-dir=feats"]
    for stage in ("pretrain.py", "train.py", "predict.py", "ensemble.py"):
        assert calls[stage] == ["--profile", "full", "--data-dir", "my_data", "--models", "v1mix",
                                "--features-dir=feats"]


def test_gpus_goes_to_the_stages_made_of_units_only(repo, tmp_path):
    calls, _ = run_pipeline_script(repo, tmp_path, "--gpus", "2")
    assert calls["features.py"] == ["--profile", "full"]
    for stage in ("pretrain.py", "train.py", "predict.py"):   # Ray schedules their units
        assert calls[stage] == ["--profile", "full", "--gpus", "2"]
    assert calls["ensemble.py"] == ["--profile", "full"]


def test_seed_goes_to_the_stages_that_draw_random_numbers_not_to_predict(repo, tmp_path):
    calls, _ = run_pipeline_script(repo, tmp_path, "--seed", "1")
    for stage in ("pretrain.py", "train.py", "ensemble.py"):
        assert calls[stage] == ["--profile", "full", "--seed", "1"]
    assert calls["predict.py"] == calls["features.py"] == ["--profile", "full"]


@pytest.mark.parametrize("args,message", [
    (["--skip"], "--skip: no stage takes this option"),
    (["--seed"], "--seed needs a value"),
    (["--mixed-precision", "float8"], "invalid choice: 'float8'"),
    (["--folds", "one"], "invalid int value: 'one'"),
    (["v1mix"], "v1mix: a value without an option before it"),
])
def test_what_a_stage_would_refuse_stops_run_sh_before_the_first_stage(repo, tmp_path, args, message):
    calls, done = run_pipeline_script(repo, tmp_path, *args, expect=2)
    assert calls == {}
    assert done.stderr.startswith("run.sh: ") and message in done.stderr


def test_check_prints_every_stage_with_every_option_and_runs_nothing(repo, tmp_path):
    """Every option run.sh takes, at once: each stage's line has exactly the options the
    table gives it, and each stage's own parser accepted them (else run.sh exits 2)."""
    args = [word for name, (count, _) in pipeline.OPTIONS.items() for word in [name, *SAMPLE.get(name, [])]]
    calls, done = run_pipeline_script(repo, tmp_path, "--check", *args)
    assert calls == {}
    lines = {line.split()[0].removeprefix("code/").removesuffix(".py"): line.split()[1:]
             for line in done.stdout.splitlines()}
    assert list(lines) == list(pipeline.STAGES)
    for stage, words in lines.items():
        given = [w for w in words[2:] if w.startswith("--")]   # after run.sh's own --profile full
        assert given == [name for name, (_, stages) in pipeline.OPTIONS.items() if stage in stages]


def parser_of(stage: str):
    import importlib
    with pipeline.parse_only(), pytest.raises(pipeline.Parsed) as parsed:
        importlib.import_module(stage).main([])
    return parsed.value.parser


@pytest.mark.parametrize("stage", pipeline.STAGES)
def test_the_table_says_what_each_stages_parser_takes(stage):
    parser = parser_of(stage)
    taken = {option: action for action in parser._actions for option in action.option_strings
             if option.startswith("--") and option != "--help"}
    assert set(taken) == {name for name, (_, stages) in pipeline.OPTIONS.items() if stage in stages}
    for name, action in taken.items():
        count = pipeline.OPTIONS[name][0]
        assert (action.nargs, count) in ((None, 1), ("+", "+"), ("?", "?"), (0, 0)), name


def test_every_option_the_readme_documents_for_the_stages_is_in_the_table():
    readme = (ROOT / "README.md").read_text()
    stages = readme[readme.index("## Stages"):readme.index("| stage | reads | writes |")]
    documented = set(re.findall(r"`(--[a-z-]+)", stages)) - {"--help"}
    assert documented and documented <= set(pipeline.OPTIONS)


def test_help_lists_which_stage_takes_which_option(repo, tmp_path):
    _, done = run_pipeline_script(repo, tmp_path, "--help")
    assert "--seed             pretrain, train, ensemble" in done.stdout


def test_the_demo_ends_with_one_machine_line_and_the_reference_digits_verdict(tmp_path):
    """ensemble.py prints the machine: line (stubbed here); run.sh adds no second one, and
    ends with the digits-table line for this machine's oneDNN level."""
    from fat2019.util import machine
    repo = make_repo(tmp_path / "demo", real_data=False)
    calls, done = run_pipeline_script(repo, tmp_path)
    assert list(calls) == ["make_demo_data.py", *(f"{s}.py" for s in pipeline.STAGES)]
    assert "machine:" not in done.stdout
    digits = [line for line in done.stdout.splitlines() if line.startswith("digits: ")]
    level = machine.onednn_level()
    assert len(digits) == 1 and (f"oneDNN {level}" in digits[0] or "no reference digits for this CPU yet" in digits[0])
    # nothing ran, so there is nothing to compare; with options there would be no comparison either
    assert digits[0].endswith("this run's stacker scores are missing") or "no reference digits" in digits[0]
