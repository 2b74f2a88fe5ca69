"""The stacker of the ensemble, trained per fold: its inputs, its early stopping, its fit.

The stacker (models.build_stacker) sees, per class, each model's out-of-fold score and
their weighted average (last column). Each fold's stacker trains on the other folds'
clips; its validation fold is scored before each epoch's fit, so the untrained state (a
monotone map of the plain average) can win, and training stops after `patience` epochs
without improvement.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import keras
import numpy as np

from fat2019 import layout
from fat2019.engine import commit, seeds
from fat2019.util import shutdown
from fat2019.eval.metrics import lrap
from fat2019.ensemble.predictor import StackerNet, stacker_mean
from fat2019.nn.models import build_stacker


class ScoreBeforeEpoch(keras.callbacks.Callback):
    """Scores the validation fold before each epoch's fit (so the score "before epoch e" is
    that of the stacker trained for e epochs; e = 0 is the untrained stacker), keeps the
    best weights and stops after `patience` epochs without improvement. It predicts with
    `net` (the run's one prediction network, StackerNet), into which it copies the weights."""

    def __init__(self, x_val, y_val, patience: int, net: StackerNet):
        super().__init__()
        self.x_val, self.y_val, self.patience, self.net = x_val, y_val, patience, net
        self.best_score, self.best_weights, self.best_epoch = -1.0, None, 0
        self.untrained_score, self.epochs_run = None, 0

    def on_epoch_begin(self, epoch, logs=None):
        score = lrap(self.y_val, self.net.predict(self.x_val, self.model.get_weights()))
        if self.untrained_score is None:
            self.untrained_score = score
        if score > self.best_score:
            self.best_score, self.best_weights, self.best_epoch = score, self.model.get_weights(), epoch
        elif epoch - self.best_epoch >= self.patience:
            self.model.stop_training = True

    def on_epoch_end(self, epoch, logs=None):
        self.epochs_run = epoch + 1

    def on_train_end(self, logs=None):
        self.model.set_weights(self.best_weights)

    def summary(self, fold: int) -> str:
        """What happened, in plain words, for the log."""
        if self.best_epoch == 0:
            return (f"stacker fold {fold}: kept the untrained stacker (the weighted average, squashed); "
                    f"{self.epochs_run} epoch(s) of training never beat its val LRAP {self.best_score:.4f}")
        return (f"stacker fold {fold}: trained {self.best_epoch} epoch(s), val LRAP {self.best_score:.4f} "
                f"(untrained: {self.untrained_score:.4f}); stopped after {self.epochs_run}")


def fit_stacker_fold(k: int, x, y, folds, profile, seed: int, net: StackerNet
                     ) -> tuple[keras.Model, ScoreBeforeEpoch]:
    """The stacker of fold k, trained on the other folds' clips; its randomness (initial
    state, batch shuffling) comes from (seed, "stacker", fold k) alone."""
    val, train = folds == k, folds != k
    seeds.reset_global_generators(seeds.unit_seed(seed, "stacker", layout.fold_prefix(k)))
    stacker = build_stacker(y.shape[1], x.shape[-1], lr=profile.stacker_lr, offset=profile.stacker_offset)
    scorer = ScoreBeforeEpoch(x[val], y[val], profile.stacker_patience, net)
    stacker.fit(x[train], y[train], batch_size=profile.stacker_batch_size, epochs=profile.stacker_epochs,
                callbacks=[scorer], verbose=0)
    return stacker, scorer


def fit_stacker(x, y, folds, x_test, profile, seed: int, save_dir: Path | None = None
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Out-of-fold and mean test predictions of one stacker per fold, and each fold's
    per-class weights over the inputs (n_folds, n_classes, n_inputs): per fold, so that
    the report can tell the folds that kept the untrained stacker from those that trained.
    Each fold's stacker is saved to `save_dir`/fold<k>.weights.h5 (for tag.py), one commit
    per fold; a run killed midway resumes at its next fold."""
    oof = np.zeros(y.shape, np.float32)
    class_weights = np.zeros((profile.n_folds, *x.shape[1:]), np.float64)
    stackers = []
    net = StackerNet(y.shape[1], x.shape[-1], profile.stacker_offset)
    state = resumed_folds(save_dir, inputs_digest(x, y, folds, x_test, profile, seed))
    for k in range(profile.n_folds):
        if k < state["next_epoch"]:   # committed by a killed run on the same inputs
            weights = net.load(layout.stacker_weights_path(save_dir, k)).model.get_weights()
            summary = state["summaries"][k]
        else:
            stacker, scorer = fit_stacker_fold(k, x, y, folds, profile, seed, net)
            weights, summary = stacker.get_weights(), scorer.summary(k)
            if save_dir is not None:
                commit_fold(stacker, save_dir, state, k, summary)
        oof[folds == k] = net.predict(x[folds == k], weights)
        class_weights[k] = net.classwise_weights()
        stackers.append(weights)
        print(summary)
    if save_dir is not None:
        commit.finish(save_dir, layout.STACKER_RUN, profile.n_folds)
    return oof, stacker_mean(net, stackers, x_test), class_weights


def resumed_folds(save_dir: Path | None, digest: str) -> dict:
    """The stacker folds a killed run committed for these same inputs (commit.py); none
    committed when there are none, or they were for other inputs."""
    if save_dir is None:
        return {"next_epoch": 0, "summaries": []}
    state = commit.recover(save_dir, layout.STACKER_RUN, layout.stacker_temporaries(save_dir))
    if state is None or state.get("inputs") != digest:
        return {"next_epoch": 0, "summaries": [], "inputs": digest}
    return state


def commit_fold(stacker: keras.Model, save_dir: Path, state: dict, k: int, summary: str) -> None:
    """Fold k's weights staged, then committed by the stacker's state file, then published:
    a killed ensemble.py resumes at the next fold (commit.py)."""
    with shutdown.critical():
        step = k + 1
        moves = [commit.stage(layout.stacker_weights_path(save_dir, k), step, stacker.save_weights, "weights")]
        state["next_epoch"], state["summaries"] = step, [*state["summaries"], summary]
        commit.commit(layout.state_path(save_dir, layout.STACKER_RUN), state, moves, step)
        commit.publish(save_dir, state, step)


def inputs_digest(x, y, folds, x_test, profile, seed: int) -> str:
    """sha256 of everything the fold stackers' fit reads: the stack inputs (OOF and test),
    the labels, the folds, the stacker's settings, the seed and the backend. The same
    digest gives the same stackers, so a rerun reuses the saved ones (`apply_saved`)."""
    digest = hashlib.sha256()
    settings = {"n_folds": profile.n_folds, "lr": profile.stacker_lr, "batch_size": profile.stacker_batch_size,
                "epochs": profile.stacker_epochs, "patience": profile.stacker_patience,
                "offset": profile.stacker_offset, "seed": seed, "backend": keras.backend.backend()}
    digest.update(json.dumps(settings, sort_keys=True).encode())
    for array in (x, y, folds, x_test):
        array = np.ascontiguousarray(array)
        digest.update(f"{array.dtype.str}{array.shape}".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


def apply_saved(paths: list[Path], x, folds, x_test, offset: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """fit_stacker's three results from the saved fold stackers (their weights files, fold
    order) instead of fitting them: each fold's OOF rows, the test mean, the per-class weights."""
    n_classes, n_inputs = x.shape[1:]
    net = StackerNet(n_classes, n_inputs, offset)
    oof = np.zeros(x.shape[:2], np.float32)
    class_weights = np.zeros((len(paths), n_classes, n_inputs), np.float64)
    fold_weights = []
    for k, path in enumerate(paths):
        fold_weights.append(net.load(path).model.get_weights())
        oof[folds == k] = net.predict(x[folds == k])
        class_weights[k] = net.classwise_weights()
    return oof, stacker_mean(net, fold_weights, x_test), class_weights
