"""code/tag.py on the models of the session's tiny pipeline run (conftest.pipeline_run)."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fat2019 import config
from fat2019.ensemble import predictor
from fat2019.nn import models
import tag
from helpers import PIPELINE_SETTINGS

TAG = Path(tag.__file__)


@pytest.fixture(scope="module")
def setup(pipeline_run, tmp_path_factory):
    """Tag arguments for the pipeline's models, the test wavs, and the class list."""
    root, data = pipeline_run["root"], pipeline_run["data"]
    # no data folder: the class list must come from the models folder's prediction CSVs
    options = ["--profile", "demo", "--models-dir", str(root / "models"),
               "--data-dir", str(tmp_path_factory.mktemp("no_data") / "absent"), "--set", *PIPELINE_SETTINGS]
    wavs = sorted((data / "audio_test").glob("*.wav"))
    classes = list(pd.read_csv(data / "sample_submission.csv").columns[1:])
    return dict(root=root, options=options, wavs=wavs, classes=classes)


def parse_listing(text: str) -> dict[str, list[tuple[float, str]]]:
    """stdout of tag.py: a path line, then one '  score  label' line per label."""
    listing, current = {}, None
    for line in text.splitlines():
        if line.startswith("  "):
            score, label = line.split(maxsplit=1)
            listing[current].append((float(score), label))
        else:
            current = line
            listing[current] = []
    return listing


def test_cli_tags_files_and_folders_and_writes_csv_and_json(setup, tmp_path):
    folder = tmp_path / "more" / "deeper"
    folder.mkdir(parents=True)
    for wav in setup["wavs"][2:]:
        shutil.copy(wav, folder / wav.name)
    (folder / "notes.txt").write_text("not audio")                  # not an audio extension: ignored
    shutil.copy(setup["wavs"][0], folder / ".hidden.wav")             # hidden: ignored
    (folder / "._new_chirp_0.wav").write_bytes(b"\x00\x05\x16\x07 macOS resource fork")   # undecodable, hidden
    out_csv, out_json = tmp_path / "out" / "tags.csv", tmp_path / "tags.json"
    files = [str(p) for p in setup["wavs"][:2]]
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}   # as a user's shell
    result = subprocess.run([sys.executable, str(TAG), *files, str(tmp_path / "more"), *setup["options"],
                             "--top-k", "2", "--csv", str(out_csv), "--json", str(out_json)],
                            capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr
    tagged = files + [str(folder / p.name) for p in setup["wavs"][2:]]
    classes = setup["classes"]

    listing = parse_listing(result.stdout)
    assert list(listing) == tagged
    # the header names the scale of the scores listed, as the JSON does
    assert f"\ntag: scores: {json.loads(out_json.read_text())['scale']}\n" in result.stderr
    if not list(Path("/dev").glob("nvidia[0-9]*")):   # no GPU: no XLA line about one (cli.native_log_level)
        assert "cuInit" not in result.stderr and " E external/" not in result.stderr
    for top in listing.values():
        assert len(top) == 2 and top[0][0] >= top[1][0] and {label for _, label in top} <= set(classes)

    table = pd.read_csv(out_csv)
    assert list(table.columns) == ["fname", *classes] and list(table["fname"]) == tagged
    scores = table[classes].to_numpy()
    assert np.all((scores >= 0) & (scores <= 1))

    document = json.loads(out_json.read_text())
    assert document["classes"] == classes and document["errors"] == []
    weights = {m.name: m.weight for m in config.ZOO}
    total = weights["v1mix"] + weights["max3exam"]
    assert [(m["name"], m["folds"]) for m in document["models"]] == [("v1mix", [0, 1]), ("max3exam", [0, 1])]
    assert [m["weight"] for m in document["models"]] == pytest.approx(
        [weights["v1mix"] / total, weights["max3exam"] / total], abs=1e-6)
    assert [f["path"] for f in document["files"]] == tagged
    for entry, row, (path, top) in zip(document["files"], scores, listing.items()):
        np.testing.assert_allclose([entry["scores"][c] for c in classes], row, atol=2e-6)
        best = np.argsort(-row, kind="stable")[:2]
        assert [t["label"] for t in entry["top"]] == [classes[i] for i in best] == [label for _, label in top]


def tag_scores(setup, args, tmp_path, name):
    out = tmp_path / f"{name}.csv"
    assert tag.main([*map(str, setup["wavs"]), *setup["options"], "--csv", str(out), *args]) == 0
    return pd.read_csv(out).set_index("fname")[setup["classes"]]


def test_scores_are_the_predict_stage_fold_mean_and_the_zoo_weighted_average(setup, tmp_path):
    # max3exam is never retrained by test_pipeline's --force test, so its test.csv is current
    alone = tag_scores(setup, ["--models", "max3exam"], tmp_path, "max3exam")
    predicted = pd.read_csv(setup["root"] / "models" / "max3exam" / "test.csv").set_index("fname")
    np.testing.assert_allclose(alone.to_numpy(), predicted.loc[[p.name for p in setup["wavs"]], setup["classes"]],
                               atol=1e-5)
    v1mix = tag_scores(setup, ["--models", "v1mix"], tmp_path, "v1mix")
    both = tag_scores(setup, ["--combine", "average"], tmp_path, "both")
    w = {m.name: m.weight for m in config.ZOO}
    expected = (w["v1mix"] * v1mix.to_numpy() + w["max3exam"] * alone.to_numpy()) / (w["v1mix"] + w["max3exam"])
    np.testing.assert_allclose(both.to_numpy(), expected, atol=2e-6)

    # by default, the stacker that ensemble.py saved: its fold mean on [v1mix, max3exam, average]
    stacked = tag_scores(setup, ["--raw-scores"], tmp_path, "stacked")
    saved = json.loads((setup["root"] / "models" / "stacker" / "stacker.json").read_text())
    assert saved["models"] == ["v1mix", "max3exam"] and saved["n_folds"] == 2
    x = np.stack([v1mix.to_numpy(), alone.to_numpy(), expected], axis=-1).astype(np.float32)
    manual = []
    for k in range(saved["n_folds"]):
        stacker = models.build_stacker(x.shape[1], x.shape[2], offset=saved["offset"])
        stacker.load_weights(setup["root"] / "models" / "stacker" / f"fold{k}.weights.h5")
        manual.append(stacker.predict(x, verbose=0))
    np.testing.assert_allclose(stacked.to_numpy(), np.mean(manual, axis=0), atol=1e-5)
    assert not np.allclose(stacked.to_numpy(), both.to_numpy(), atol=1e-3)   # it is not the average

    # shown by default: the stacker's output through its saved calibration (the tiny models
    # are no better than chance, so their fit is the identity; test_calibration covers Platt)
    shown = tag_scores(setup, [], tmp_path, "shown")
    expected_shown = predictor.calibrate(np.mean(manual, axis=0), saved["calibration"])
    np.testing.assert_allclose(shown.to_numpy(), expected_shown, atol=1e-5)


def options_without(setup, tmp_path, left_out: str) -> list[str]:
    """The tag options, on a copy of the models folder without `left_out`."""
    copy = tmp_path / "models"
    shutil.copytree(setup["root"] / "models", copy, ignore=shutil.ignore_patterns(left_out))
    return [a if a != str(setup["root"] / "models") else str(copy) for a in setup["options"]]


def test_stacker_is_required_only_when_asked_for(setup, tmp_path, capsys):
    options = options_without(setup, tmp_path, "stacker")
    wav = str(setup["wavs"][0])
    assert tag.main([wav, *options, "--combine", "stacker"]) == 2
    assert "no saved stacker" in capsys.readouterr().err
    assert tag.main([wav, *options]) == 0                      # auto: falls back to the average
    assert "weighted average of" in capsys.readouterr().err


def test_stacker_over_an_untrained_model_is_refused_or_skipped(setup, tmp_path, capsys):
    options = options_without(setup, tmp_path, "max3exam")
    wav = str(setup["wavs"][0])
    assert tag.main([wav, *options, "--combine", "stacker"]) == 2
    assert "the saved stacker stacks max3exam, with no trained folds" in capsys.readouterr().err
    assert tag.main([wav, *options]) == 0                      # auto: the average of what is trained
    err = capsys.readouterr().err
    assert "using the weighted average" in err and "weighted average of v1mix" in err


def test_undecodable_and_missing_files_are_reported_and_the_rest_tagged(setup, tmp_path, capsys):
    broken = tmp_path / "broken.wav"
    broken.write_bytes(b"RIFF\x00\x00not really a wave file")
    missing = tmp_path / "missing.wav"
    out_json = tmp_path / "tags.json"
    good = str(setup["wavs"][0])
    rc = tag.main([str(broken), good, str(missing), *setup["options"], "--models", "v1mix", "--json", str(out_json)])
    assert rc == 1
    captured = capsys.readouterr()
    assert list(parse_listing(captured.out)) == [good]
    assert f"error: {broken}: cannot decode" in captured.err
    assert f"error: {missing}: no such file or folder" in captured.err
    document = json.loads(out_json.read_text())
    assert [f["path"] for f in document["files"]] == [good]
    assert [e["path"] for e in document["errors"]] == [str(missing), str(broken)]


def test_no_trained_models_is_a_clear_error(setup, tmp_path, capsys):
    empty = tmp_path / "models"
    empty.mkdir()
    options = [a if a != str(setup["root"] / "models") else str(empty) for a in setup["options"]]
    assert tag.main([str(setup["wavs"][0]), *options]) == 2
    assert f"no trained models in {empty}" in capsys.readouterr().err
    assert tag.main([str(setup["wavs"][0]), *setup["options"], "--models", "se"]) == 2   # se was not trained
    assert "--models se: no trained folds" in capsys.readouterr().err


def test_a_folder_s_hidden_entries_are_skipped_at_any_depth_but_a_named_one_is_not(tmp_path):
    folder = tmp_path / "in"
    (folder / "sub" / ".cache").mkdir(parents=True)
    for name in ("a.wav", "._a.wav", ".hidden.wav", "sub/b.flac", "sub/._b.flac", "sub/.cache/c.wav"):
        (folder / name).write_bytes(b"x")
    files, problems = tag.collect_files([folder, folder / ".hidden.wav"])
    assert files == [folder / "a.wav", folder / "sub" / "b.flac", folder / ".hidden.wav"] and problems == []
    only_hidden = tmp_path / "only"
    only_hidden.mkdir()
    (only_hidden / "._x.wav").write_bytes(b"x")
    assert tag.collect_files([only_hidden]) == ([], [(str(only_hidden), "folder holds no audio files")])


def test_the_calibration_reads_as_probabilities_and_keeps_every_ranking():
    # stacker-like scores: sigmoid(2(x - 1.6)) of a weighted average x that ranks well
    rng = np.random.default_rng(0)
    truth = rng.random((400, 20)) < 0.06
    average = np.clip(0.55 * truth + 0.25 * rng.random(truth.shape), 0, 1)
    stacked = 1 / (1 + np.exp(-2 * (average - 1.6)))
    assert stacked[truth].mean() < 0.2                        # unreadable: right labels score ~0.14
    calibration = predictor.fit_calibration(stacked, truth)
    assert calibration["method"] == "platt" and calibration["slope"] > 0
    shown = predictor.calibrate(stacked, calibration)
    assert shown[truth].mean() > 0.5 > shown[~truth].mean()
    # one increasing map: in the stacker's order, within each clip and within each class, the
    # shown scores never decrease (float32 may round two close scores to one)
    order = np.argsort(stacked.ravel(), kind="stable")
    assert np.all(np.diff(shown.ravel()[order].astype(np.float64)) >= 0)
    from fat2019.eval.metrics import lwlrap
    assert lwlrap(truth.astype(float), shown) == pytest.approx(lwlrap(truth.astype(float), stacked), abs=1e-3)
    # no better than chance: no map that would pretend otherwise
    assert predictor.fit_calibration(rng.random(truth.shape), truth)["method"] in ("identity", "platt")
    assert predictor.calibrate(stacked, {"method": "identity"}).tolist() == stacked.astype(np.float32).tolist()
