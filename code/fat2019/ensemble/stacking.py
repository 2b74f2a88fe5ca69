"""The stacker of the ensemble, trained per fold: its inputs, its early stopping, its fit.

The stacker (models.build_stacker) sees, per class, each model's out-of-fold score and
their weighted average (last column). Each fold's stacker trains on the other folds'
clips; its validation fold is scored before each epoch's fit, so the untrained state (a
monotone map of the plain average) can win, and training stops after `patience` epochs
without improvement.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

import keras
import numpy as np

from fat2019 import layout
from fat2019.train import commit, seeds
from fat2019.util import shutdown
from fat2019.eval.metrics import lrap
from fat2019.ensemble.predictor import STACKER_BATCH, stacker_mean
from fat2019.nn.models import build_stacker


class ScoreBeforeEpoch(keras.callbacks.Callback):
    """Scores the validation fold before each epoch's fit (so the score "before epoch e" is
    that of the stacker trained for e epochs; e = 0 is the untrained stacker), keeps the
    best weights and stops after `patience` epochs without improvement."""

    def __init__(self, x_val, y_val, patience: int):
        super().__init__()
        self.x_val, self.y_val, self.patience = x_val, y_val, patience
        self.best_score, self.best_weights, self.best_epoch = -1.0, None, 0
        self.untrained_score, self.epochs_run = None, 0

    def on_epoch_begin(self, epoch, logs=None):
        score = lrap(self.y_val, predict_batches(self.model, self.x_val, STACKER_BATCH))
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


def predict_batches(model: keras.Model, x: np.ndarray, batch_size: int = 1024) -> np.ndarray:
    """model.predict(x, batch_size=batch_size)'s values without its per-call set-up (a data
    adapter and an iterator each time: 0.43 s vs 5 ms for a validation fold here), which the
    stacker paid before each of up to 1000 epochs per fold."""
    parts = [keras.ops.convert_to_numpy(model.predict_on_batch(x[i: i + batch_size]))
             for i in range(0, len(x), batch_size)]
    return np.concatenate(parts) if parts else np.zeros((0, *model.outputs[0].shape[1:]), np.float32)


def fit_stacker_fold(k: int, x, y, folds, profile, seed: int) -> tuple[keras.Model, ScoreBeforeEpoch]:
    """The stacker of fold k, trained on the other folds' clips; its randomness (initial
    state, batch shuffling) comes from (seed, "stacker", fold k) alone."""
    val, train = folds == k, folds != k
    seeds.reset_global_generators(seeds.unit_seed(seed, "stacker", layout.fold_prefix(k)))
    stacker = build_stacker(y.shape[1], x.shape[-1], lr=profile.stacker_lr, offset=profile.stacker_offset)
    scorer = ScoreBeforeEpoch(x[val], y[val], profile.stacker_patience)
    stacker.fit(x[train], y[train], batch_size=profile.stacker_batch_size, epochs=profile.stacker_epochs,
                callbacks=[scorer], verbose=0)
    return stacker, scorer


def inputs_digest(x, y, folds, x_test, profile, seed: int) -> str:
    """What a stacker fold's training depends on, hashed: a committed fold is reused only
    for the same inputs."""
    digest = hashlib.sha256(json.dumps([dataclasses.asdict(profile), seed], default=str).encode())
    for array in (x, y, folds, x_test):
        array = np.ascontiguousarray(array)
        digest.update(f"{array.dtype}{array.shape}".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


def resumed_folds(save_dir: Path | None, digest: str) -> dict:
    """The stacker folds a killed run committed for these same inputs (commit.py); {} when none."""
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
    state = resumed_folds(save_dir, inputs_digest(x, y, folds, x_test, profile, seed))
    for k in range(profile.n_folds):
        if k < state["next_epoch"]:   # committed by a killed run on the same inputs
            stacker = build_stacker(y.shape[1], x.shape[-1], lr=profile.stacker_lr, offset=profile.stacker_offset)
            stacker.load_weights(layout.stacker_weights_path(save_dir, k))
            summary = state["summaries"][k]
        else:
            stacker, scorer = fit_stacker_fold(k, x, y, folds, profile, seed)
            summary = scorer.summary(k)
            if save_dir is not None:
                commit_fold(stacker, save_dir, state, k, summary)
        oof[folds == k] = stacker.predict(x[folds == k], verbose=0, batch_size=STACKER_BATCH)
        class_weights[k] = keras.ops.convert_to_numpy(stacker.get_layer("classwise_weights").kernel)
        stackers.append(stacker)
        print(summary)
    if save_dir is not None:
        commit.finish(save_dir, layout.STACKER_RUN, profile.n_folds)
    return oof, stacker_mean(stackers, x_test), class_weights
