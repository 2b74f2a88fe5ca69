"""Every unit of work (a model's pretraining, fold k of a model, fold k of the stacker)
draws its randomness from its own identity: it trains the same alone (--folds), after
other work in the same process, or in another --models order. The early-stopping rule
is checked where the original checks it: before an epoch. (Killed-and-resumed runs:
test_kill.py.)"""
from __future__ import annotations

import dataclasses
import types
from pathlib import Path

import keras
import numpy as np
import pytest

from fat2019 import config
import features
import predict
import pretrain
from fat2019.engine import seeds
from fat2019.ensemble import stacking
from fat2019.ensemble.predictor import StackerNet
import train
from fat2019.engine import training
from helpers import assert_same_weights, make_dataset

TINY = ["epochs=2", "pretrain_epochs=1", "n_folds=2", "width=0.0625", "duration=0.5", "lr_milestones=1",
        "pretrain_lr_milestones=1", "pretrain_keep_from_epoch=0", "batch_size=4", "predict_batch_size=8",
        "early_stop_min_epoch=0", "early_stop_patience=10", "lr_multiplier=1"]



@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """One dataset, two models folders filled in different orders, all in this process:
    whole: pretrain v1mix, train v1mix on every fold, predict
    alone: pretrain se first (other work, another model), then pretrain v1mix, then train
           and predict v1mix fold 1 alone (--folds 1)"""
    root = tmp_path_factory.mktemp("repro")
    data = make_dataset(root / "data", n_curated=12, n_noisy=6, n_test=2)
    assert features.main(["--data-dir", str(data), "--workers", "1"]) == 0
    common = ["--profile", "demo", "--data-dir", str(data), "--workers", "1", "--set", *TINY]
    whole, alone = root / "whole", root / "alone"
    run = lambda stage, folder, *extra: stage.main([*common, "--models-dir", str(folder), *extra])  # noqa: E731
    assert run(pretrain, whole, "--models", "v1mix") == 0
    assert run(train, whole, "--models", "v1mix") == 0
    assert run(predict, whole, "--models", "v1mix") == 0
    assert run(pretrain, alone, "--models", "se") == 0
    assert run(pretrain, alone, "--models", "v1mix") == 0
    assert run(train, alone, "--models", "v1mix", "--folds", "1") == 0
    assert run(predict, alone, "--models", "v1mix", "--folds", "1") == 0
    return {"whole": whole / "v1mix", "alone": alone / "v1mix"}


def test_a_fold_trained_alone_after_other_work_equals_the_same_fold_of_a_whole_run(runs):
    whole, alone = runs["whole"], runs["alone"]
    assert (alone / "fold1.history.csv").read_text() == (whole / "fold1.history.csv").read_text()
    assert_same_weights(alone / "fold1.weights.h5", whole / "fold1.weights.h5")
    assert (alone / "fold1.oof.csv").read_bytes() == (whole / "fold1.oof.csv").read_bytes()
    assert (alone / "fold1.test.csv").read_bytes() == (whole / "fold1.test.csv").read_bytes()


def test_folds_draw_their_own_randomness(runs):
    """Not one stream shared by the folds: their first epochs differ in their batches."""
    assert (runs["whole"] / "fold0.history.csv").read_text() != (runs["whole"] / "fold1.history.csv").read_text()
    assert seeds.unit_seed(0, "v1mix", "fold0") != seeds.unit_seed(0, "v1mix", "fold1")
    assert seeds.unit_seed(0, "v1mix", "fold1") != seeds.unit_seed(0, "se", "fold1")


def test_a_pretraining_after_another_models_equals_it_run_first(runs):
    whole, alone = runs["whole"], runs["alone"]
    assert (alone / "pretrain.history.csv").read_text() == (whole / "pretrain.history.csv").read_text()
    assert_same_weights(alone / "pretrain.weights.h5", whole / "pretrain.weights.h5")


def test_a_stacker_fold_alone_equals_it_after_other_folds():
    rng = np.random.default_rng(0)
    y = (rng.random((60, 6)) < 0.25).astype(np.float32)
    x = rng.random((60, 6, 3)).astype(np.float32)      # the "average" (last column) is noise ...
    x[..., 0] = 0.7 * y + 0.3 * x[..., 0]                # ... and model 0 knows: training pays
    folds = np.arange(60) % 3
    profile = config.PROFILES["demo"]
    profile = dataclasses.replace(profile, n_folds=3, stacker_epochs=4, stacker_patience=10, stacker_lr=1e-2,
                                  stacker_batch_size=8)   # several batches: their order is random
    net = StackerNet(6, 3, profile.stacker_offset)        # the run's one prediction network
    after, scorer = [stacking.fit_stacker_fold(k, x, y, folds, profile, 0, net) for k in (0, 1)][1]
    assert scorer.best_epoch > 0
    keras.utils.set_random_seed(123)       # anything else the process did meanwhile
    np.random.random(17)
    alone = stacking.fit_stacker_fold(1, x, y, folds, profile, 0, net)[0]
    for a, b in zip(after.get_weights(), alone.get_weights()):
        assert np.array_equal(a, b)
    other = stacking.fit_stacker_fold(1, x, y, folds, profile, 1, net)[0]
    assert not all(np.array_equal(a, b) for a, b in zip(alone.get_weights(), other.get_weights()))


# --- early stopping: the original's rule -----------------------------------------------------------

def original_epochs(scores: list[float], epochs: int = 40, min_epoch: int = 35, patience: int = 10) -> int:
    """Epochs the original's loop runs for a scripted history (its train.py, transcribed):
        for epoch in range(40):
            if epoch >= 35 and epoch - best_epoch > 10: break
            ... train, score ...
            if score > best_score: best_score, best_epoch = score, epoch"""
    best_score, best_epoch, run = -1.0, 0, 0
    for epoch in range(epochs):
        if epoch >= min_epoch and epoch - best_epoch > patience:
            break
        run += 1
        if scores[epoch] > best_score:
            best_score, best_epoch = scores[epoch], epoch
    return run


def checked_after_epochs(scores: list[float], epochs: int = 40, min_epoch: int = 35, patience: int = 10) -> int:
    """Epochs run by this project's earlier rule, checked after an epoch ran."""
    best_score, best_epoch = -1.0, 0
    for epoch in range(epochs):
        if scores[epoch] > best_score:
            best_score, best_epoch = scores[epoch], epoch
        if epoch >= min_epoch and epoch - best_epoch >= patience:
            return epoch + 1
    return epochs


class ScriptedEpochs(keras.utils.PyDataset):
    def __len__(self):
        return 1

    def __getitem__(self, index):
        return np.zeros((2, 1), np.float32), np.zeros((2, 1), np.float32)


@pytest.mark.parametrize("best", [24, 25, 39])
def test_fit_stops_where_the_original_stops(tmp_path, monkeypatch, best):
    """A history whose best epoch is `best` (0-based) and flat elsewhere, through the real
    epoch loop of training.fit with the full profile's schedule."""
    scores = [0.5 + 0.4 * (e == best) for e in range(40)]
    served = iter(scores)
    monkeypatch.setattr(training, "TrainBatches", lambda *a, **kw: ScriptedEpochs())
    monkeypatch.setattr(training, "predict_tta", lambda *a, **kw: np.zeros((2, 1), np.float32))
    monkeypatch.setattr(training, "lrap", lambda *a: next(served))
    monkeypatch.setattr(training, "lwlrap", lambda *a: 0.0)
    monkeypatch.setattr(training, "save_checkpoint", lambda model, path: Path(path).touch())   # no checkpoints: speed
    model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.Nadam(1e-3), loss="mse")
    full = config.PROFILES["full"]
    schedule = training.Schedule.curated(full, config.ZOO[0])
    val = types.SimpleNamespace(labels=np.zeros((2, 1), np.float32))
    summary = training.fit(model, None, val, schedule, 10, tmp_path, "fold0", seed=0, label="scripted")
    assert summary["epochs_run"] == original_epochs(scores)
    assert summary["best_epoch"] == (best + 1 if best < summary["epochs_run"] else 1)
    # the rule checked after an epoch (this project's earlier one) ran one epoch more when
    # the best came 11 or more epochs before epoch 35: epoch 36 at lr 6.25e-5
    assert checked_after_epochs(scores) - summary["epochs_run"] == (1 if best <= 24 or best >= 35 else 0)
