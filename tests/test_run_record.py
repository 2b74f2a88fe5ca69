"""models/.../run.json: written by the first stage, read by the later ones and by tag.py;
options that contradict it are refused, naming each field (on the session's tiny pipeline)."""
import json
import shutil

import keras
import numpy as np
import pandas as pd
import pytest

from fat2019 import config, layout, run_record, settings
from fat2019.nn.models import build_model
from fat2019.engine import training
from fat2019.cli import run_stage, stage_parser
from fat2019.engine.workspace import Workspace
import tag
import train
from helpers import PIPELINE_SETTINGS


def with_setting(common: list[str], name: str, value: str) -> list[str]:
    return [f"{name}={value}" if a.startswith(f"{name}=") else a for a in common]


def pipeline_profile() -> config.Profile:
    """demo with the tiny pipeline's --set, as the options resolve it (no record read)."""
    args = stage_parser("x").parse_args(["--profile", "demo", "--set", *PIPELINE_SETTINGS])
    return settings.resolve(args, record=False).profile


def test_the_first_stage_records_the_resolved_run(pipeline_run):
    record = json.loads((pipeline_run["root"] / "models" / "run.json").read_text())
    assert record["profile"]["name"] == "demo" and record["profile"]["duration"] == 0.5
    assert record["profile"]["lr_milestones"] == [1] and record["profile"]["n_folds"] == 2
    assert record["models"]["v1mix"]["duration"] == 0.5 and record["models"]["v1mix"]["width"] == 0.0625
    assert set(record["models"]) == set(config.ZOO_BY_NAME)
    assert record["classes"] == list(pd.read_csv(pipeline_run["data"] / "sample_submission.csv").columns[1:])
    assert record["fold_seed"] == 66666 and record["versions"]["keras"]
    assert run_record.profile_of(record) == pipeline_profile()


def test_a_stage_given_another_duration_refuses_naming_each_field(pipeline_run, capsys):
    args = with_setting(pipeline_run["common"], "duration", "0.7")
    with pytest.raises(SystemExit) as stop:
        run_stage(lambda: train.main(args))
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert "contradict" in err and str(pipeline_run["root"] / "models" / "run.json") in err
    assert "profile.duration: recorded 0.5, given 0.7" in err
    assert "models.v1mix.duration: recorded 0.5, given 0.7" in err
    assert "profile.epochs" not in err                      # only what differs


def test_later_stages_take_the_recorded_settings_without_profile_or_set(pipeline_run):
    common = pipeline_run["common"]
    plain = [a for a in common[:common.index("--set")] + common[common.index("--models"):]
             if a not in ("--profile", "demo")]      # own data without --profile would be `full`
    ws = Workspace(stage_parser("x").parse_args(plain))
    assert ws.profile == pipeline_profile()


def test_tag_needs_only_the_models_dir(pipeline_run, tmp_path, capsys):
    wav = str(sorted((pipeline_run["data"] / "audio_test").glob("*.wav"))[0])
    models = str(pipeline_run["root"] / "models")
    out = tmp_path / "plain.csv"
    assert tag.main([wav, "--models-dir", models, "--data-dir", str(tmp_path / "absent"), "--csv", str(out)]) == 0
    assert f"classes from {models}/run.json" in capsys.readouterr().err
    full = tmp_path / "full.csv"
    assert tag.main([wav, "--models-dir", models, "--profile", "demo", "--set", *PIPELINE_SETTINGS,
                     "--csv", str(full)]) == 0
    np.testing.assert_array_equal(pd.read_csv(out).iloc[:, 1:], pd.read_csv(full).iloc[:, 1:])
    assert tag.main([wav, "--models-dir", models, "--set", "width=0.125"]) == 2
    assert "profile.width: recorded 0.0625, given 0.125" in capsys.readouterr().err


def test_a_folder_trained_before_records_gets_one_with_a_note(pipeline_run, tmp_path, capsys):
    copy = tmp_path / "models"
    shutil.copytree(pipeline_run["root"] / "models", copy, ignore=shutil.ignore_patterns("run.json", "*.lock"))
    args = [a if a != str(pipeline_run["root"] / "models") else str(copy) for a in pipeline_run["common"]]
    ws = Workspace(stage_parser("x").parse_args(args))
    assert not (copy / "run.json").exists()                 # reading the settings writes nothing
    ws.record_run()                                          # what the training stages do
    assert "made before runs were recorded" in capsys.readouterr().err
    assert json.loads((copy / "run.json").read_text())["profile"]["duration"] == 0.5
    Workspace(stage_parser("x").parse_args(args)).record_run()   # the second time: silent, it matches
    assert "recorded" not in capsys.readouterr().err


def test_the_recorded_precision_is_the_runs_unless_one_is_given(pipeline_run, tmp_path, capsys):
    record = json.loads((pipeline_run["root"] / "models" / "run.json").read_text())
    (tmp_path / "run.json").write_text(json.dumps({**record, "precision": "mixed_bfloat16"}))
    args = ["--models-dir", str(tmp_path), "--data-dir", str(pipeline_run["data"])]
    ws = Workspace(stage_parser("x").parse_args(args))
    assert ws.settings.precision == "mixed_bfloat16" and ws.profile == pipeline_profile()
    assert keras.config.dtype_policy().name == "float32"    # a Workspace sets no policy: use_precision does
    with pytest.raises(run_record.RunRecordError, match="recorded 'mixed_bfloat16', given 'mixed_float16'"):
        settings.resolve(stage_parser("x").parse_args([*args, "--mixed-precision", "float16"]))


def test_a_checkpoint_of_another_crop_length_is_refused(tmp_path):
    model = build_model(config.PROFILES["demo"].scale(config.ZOO_BY_NAME["v1mix"]), 4)
    crop = model.input["audio"].shape[-1]
    training.check_crop(model, crop, tmp_path / "fold0.last.keras")
    with pytest.raises(run_record.RunRecordError, match=f"takes {crop}-sample crops, but this run cuts 100"):
        training.check_crop(model, 100, layout.checkpoint_path(tmp_path, "fold0"))
