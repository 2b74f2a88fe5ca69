"""The ensemble stage's combinations: the fitted weights and their honest validation, what
ensemble.py saves for tag.py, the reuse of an unchanged stacker, one stacker predict function."""
import json
import shutil

import numpy as np
import pandas as pd
import pytest

import ensemble
import tag
from fat2019 import config
from fat2019.ensemble import fitted, stacking
from fat2019.eval.calibration import expected_calibration_error, reliability
from fat2019.eval.metrics import lwlrap
from helpers import PIPELINE_MODELS, PIPELINE_SETTINGS


def tiny_set(n_clips=30, n_classes=5, seed=0):
    """Labels, three folds, and members: a good one, a weaker one and pure noise."""
    rng = np.random.default_rng(seed)
    y = np.zeros((n_clips, n_classes), np.float32)
    y[np.arange(n_clips), rng.integers(0, n_classes, n_clips)] = 1
    good = np.clip(0.5 * y + 0.6 * rng.random(y.shape), 0, 1).astype(np.float32)
    weaker = np.clip(0.3 * y + 0.6 * rng.random(y.shape), 0, 1).astype(np.float32)
    noise = rng.random(y.shape).astype(np.float32)
    return y, np.arange(n_clips) % 3, [good, weaker, noise]


def test_the_cross_fit_never_scores_a_clip_with_weights_fitted_on_it():
    y, folds, members = tiny_set()
    n = len(y)
    # each row carries its own number in an extra label column, so a fit can tell which
    # rows it was given; the combination itself never reads the labels
    tagged = np.concatenate([y, np.arange(n, dtype=np.float32)[:, None]], axis=1)
    widened = [np.concatenate([m, np.zeros((n, 1), np.float32)], axis=1) for m in members]
    seen = []

    def recording_fit(scores, labels):
        seen.append(set(labels[:, -1].astype(int)))
        return fitted.select_weights([s[:, :-1] for s in scores], labels[:, :-1])

    result = fitted.cross_fit(widened, tagged, folds, 3, fit=recording_fit)
    assert len(seen) == 4   # one fit per fold, then the final one
    for k in range(3):
        held = set(np.flatnonzero(folds == k))
        assert seen[k] == set(range(n)) - held   # fitted on every other row, none of its own
        expected = fitted.combine([m[folds == k] for m in widened], result.fold_weights[k])
        np.testing.assert_array_equal(result.oof[folds == k], expected)
    assert seen[3] == set(range(n))              # the test clips' weights: every row


def test_a_member_perfect_only_on_the_held_out_fold_does_not_get_weight_for_it():
    y, folds, (good, _, noise) = tiny_set(n_clips=60, seed=1)
    cheat = np.where((folds == 0)[:, None], y, 1 - y).astype(np.float32)   # right on fold 0, inverted elsewhere
    result = fitted.cross_fit([good, cheat], y, folds, 3)
    assert result.fold_weights[0].tolist() == [1.0, 0.0]
    np.testing.assert_array_equal(result.oof[folds == 0], good[folds == 0])


def test_selection_starts_from_the_best_member_and_leaves_noise_out():
    y, _, (good, weaker, noise) = tiny_set(n_clips=90, seed=2)
    weights = fitted.select_weights([weaker, noise, good], y)
    assert weights[1] == 0 and weights.sum() == pytest.approx(1) and (weights >= 0).all()
    combined = fitted.combine([weaker, noise, good], weights)
    assert lwlrap(y, combined) >= max(lwlrap(y, m) for m in (weaker, noise, good))


def test_expected_calibration_error_by_hand():
    y = np.array([[1, 0], [0, 0], [1, 1], [0, 0]], np.float32)
    p = np.array([[0.95, 0.05], [0.15, 0.05], [0.95, 0.55], [0.15, 0.55]])
    curve = reliability(y, p, bins=10)
    # bins 0.0-0.1, 0.1-0.2, 0.5-0.6, 0.9-1.0: two pairs each, with 0, 0, 1 and 2 true labels
    assert curve.count.tolist() == [2, 2, 2, 2] and curve.frequency.tolist() == [0, 0, 0.5, 1]
    assert curve.mean_score == pytest.approx([0.05, 0.15, 0.55, 0.95])
    assert expected_calibration_error(y, p, bins=10) == pytest.approx((0.05 + 0.15 + 0.05 + 0.05) / 4)


def test_the_stacker_traces_one_predict_function(monkeypatch):
    import keras
    if keras.backend.backend() != "tensorflow":
        pytest.skip("tracing counts are TensorFlow's")
    from fat2019.ensemble import predictor
    built = []
    for module in (stacking, predictor):
        real = module.build_stacker
        monkeypatch.setattr(module, "build_stacker", lambda *a, real=real, **k: built.append(real(*a, **k)) or built[-1])
    rng = np.random.default_rng(0)
    y = (rng.random((50, 4)) < 0.3).astype(np.float32)
    x = rng.random((50, 4, 3)).astype(np.float32)     # folds of 17, 17 and 16 clips: short batches
    profile = config.Profile(name="t", n_folds=3, stacker_epochs=3, stacker_batch_size=8)
    stacking.fit_stacker(x, y, np.arange(50) % 3, rng.random((7, 4, 3)).astype(np.float32), profile, 0)
    traces = [m.predict_function.experimental_get_tracing_count() for m in built if m.predict_function is not None]
    assert len(built) == 4 and traces == [1]   # 3 fold networks that never predict, one that predicts for all


@pytest.fixture(scope="module")
def copied_run(pipeline_run, tmp_path_factory):
    """The tiny pipeline's models folder copied (this module reruns ensemble.py on it), and
    the stage options pointing at the copy."""
    root = tmp_path_factory.mktemp("ensemble")
    shutil.copytree(pipeline_run["root"] / "models", root / "models")
    common = [str(root / "models") if a == str(pipeline_run["root"] / "models") else
              str(root / "subs") if a == str(pipeline_run["root"] / "subs") else a for a in pipeline_run["common"]]
    return dict(root=root, common=common, data=pipeline_run["data"])


def stacker_mtimes(root):
    return {p.name: p.stat().st_mtime_ns for p in (root / "models" / "stacker").glob("fold*.weights.h5")}


def test_an_unchanged_rerun_reuses_the_stacker_and_a_changed_input_refits_it(copied_run, capsys):
    root, common = copied_run["root"], copied_run["common"]
    assert ensemble.main(common) == 0
    before, first = stacker_mtimes(root), (root / "subs" / "stacker_oof.csv").read_text()
    capsys.readouterr()
    assert ensemble.main(common) == 0
    assert "are unchanged since" in capsys.readouterr().out
    assert stacker_mtimes(root) == before and (root / "subs" / "stacker_oof.csv").read_text() == first
    # another seed: what the stacker's fit reads differs, so it is fitted anew (a member's
    # oof.csv edited by hand would be refused: predictions are matched to weights by hash)
    assert ensemble.main([*common, "--seed", "7"]) == 0
    out = capsys.readouterr().out
    assert "are unchanged since" not in out and "stacker fold 0" in out
    assert all(stacker_mtimes(root)[name] > before[name] for name in before)
    refitted = stacker_mtimes(root)
    assert ensemble.main([*common, "--force"]) == 0
    assert "are unchanged since" not in capsys.readouterr().out
    assert all(stacker_mtimes(root)[name] > refitted[name] for name in before)


def test_fitted_weights_are_saved_and_tag_uses_them(copied_run, capsys, tmp_path):
    root, common = copied_run["root"], copied_run["common"]
    assert ensemble.main([*common, "--combine", "fitted"]) == 0
    out = capsys.readouterr().out
    assert "best on CV lwlrap:" in out and "fitted" in out
    saved = json.loads((root / "models" / "stacker" / "stacker.json").read_text())
    assert saved["models"] == PIPELINE_MODELS and saved["submission"] == "fitted"
    weights = np.array(saved["fitted_weights"])
    assert weights.shape == (2,) and weights.sum() == pytest.approx(1) and (weights >= 0).all()
    subs = root / "subs"
    assert (subs / "submission.csv").read_text() == (subs / "fitted.csv").read_text()

    wavs = sorted((copied_run["data"] / "audio_test").glob("*.wav"))
    options = ["--profile", "demo", "--models-dir", str(root / "models"), "--set", *PIPELINE_SETTINGS]

    def tag_scores(name, *args):
        path = tmp_path / f"{name}.csv"
        assert tag.main([*map(str, wavs), *options, "--csv", str(path), "--raw-scores", *args]) == 0
        return pd.read_csv(path).drop(columns="fname").to_numpy()

    members = [tag_scores(name, "--models", name) for name in PIPELINE_MODELS]
    expected = sum(w * m for w, m in zip(weights, members))
    np.testing.assert_allclose(tag_scores("auto"), expected, atol=2e-6)      # auto: the submission's, fitted
    np.testing.assert_allclose(tag_scores("fitted", "--combine", "fitted"), expected, atol=2e-6)
    assert "fitted weights of" in capsys.readouterr().err
    # the submission's test rows are those scores (the test CSV rows are the wavs' in order)
    submitted = pd.read_csv(subs / "submission.csv").set_index("fname").loc[[w.name for w in wavs]].to_numpy()
    np.testing.assert_allclose(submitted, expected, atol=1e-5)


def test_a_prediction_csv_is_read_back_exactly_for_the_clips_asked_and_a_bad_one_is_refused(tmp_path):
    """read_predictions, the stages' use of the one reader (read_table): the written digits
    back in the order asked; a score that is no number or a repeated clip names its line,
    and a CSV of other clips or classes names what differs."""
    from fat2019.data.dataset import DatasetError
    from fat2019.ensemble.predictions import FLOAT_FORMAT, read_predictions, write_predictions

    fnames, classes = ["a.wav", "b.wav", "c.wav"], ["Bark", "Drip"]
    scores = np.random.default_rng(0).random((3, 2)).astype(np.float32)
    path = tmp_path / "oof.csv"
    write_predictions(path, fnames, classes, scores)
    read = read_predictions(path, ["c.wav", "a.wav"], classes)
    assert read.dtype == np.float32
    np.testing.assert_array_equal(read, np.float32([[float(FLOAT_FORMAT % v) for v in scores[i]] for i in (2, 0)]))
    write_predictions(tmp_path / "none.csv", [], classes, np.zeros((0, 2), np.float32))   # data without test clips
    assert read_predictions(tmp_path / "none.csv", [], classes).shape == (0, 2)

    with pytest.raises(DatasetError, match=r"columns differ(.|\n)*clip\(s\) missing, e.g. \['d.wav'\]"):
        read_predictions(path, ["a.wav", "d.wav"], ["Bark", "Cough"])
    lines = path.read_text().splitlines()
    path.write_text("\n".join([lines[0], lines[1].rsplit(",", 1)[0] + ",nan", *lines[2:], lines[1]]) + "\n")
    with pytest.raises(DatasetError) as error:
        read_predictions(path, fnames, classes)
    assert "oof.csv line 2, column 'Drip': 'nan' is not a finite number" in str(error.value)
    assert "clip 'a.wav' appears 2 times" in str(error.value)
