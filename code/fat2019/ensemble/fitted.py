"""The fitted combination: non-negative weights per member, fitted on the members'
out-of-fold predictions, validated so that its CV score never sees its own fitting clips.

Weights: greedy ensemble selection with replacement (Caruana et al., "Ensemble selection
from libraries of models", ICML 2004). Start from nothing; at each step add one copy of the
member that gives the best lwlrap of the mean so far on the fitting clips (the first in
zoo order on a tie), for `steps` steps, and keep the best prefix. A member's weight is its
share of the copies; members never picked get 0 (member selection: one that only adds
noise is left out). The best single member is the first step, so on the clips it is
fitted on the combination never scores below it; what it is worth on other clips is
what the cross-fitting measures.

Cross-fitting over the folds of models/folds.csv: the out-of-fold rows of fold k are
combined with weights fitted on the other folds' rows alone (so the combination's OOF
predictions, and the CV score read from them, are as honest as the members' own), and
the test clips with weights fitted on every row.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from fat2019.eval.metrics import lwlrap

SELECTION_STEPS = 20     # copies handed out: weights in steps of 1/20 at the finest


def select_weights(member_scores: list[np.ndarray], y_true: np.ndarray, steps: int = SELECTION_STEPS) -> np.ndarray:
    """Non-negative weights summing to 1, one per member, fitted on these rows alone."""
    counts = np.zeros(len(member_scores))
    total = np.zeros(np.shape(y_true), np.float64)
    best_score, best_counts = -np.inf, None
    for _ in range(steps):
        # the ranking within a clip is what lwlrap reads, so the sum ranks as the mean does
        gains = [lwlrap(y_true, total + s) for s in member_scores]
        j = int(np.argmax(gains))
        counts[j] += 1
        total += member_scores[j]
        if gains[j] > best_score:
            best_score, best_counts = gains[j], counts.copy()
    return best_counts / best_counts.sum()


def combine(member_scores: list[np.ndarray], weights) -> np.ndarray:
    """The members' scores weighted by `weights` (non-negative, summing to 1)."""
    return np.tensordot(np.stack(member_scores, -1), np.asarray(weights, np.float64),
                        axes=([-1], [0])).astype(np.float32)


@dataclass
class FittedCombination:
    """What cross_fit returns: the honest out-of-fold predictions, the weights each fold's
    rows were combined with (n_folds, members) and the weights fitted on every row (for
    the test clips, and saved for tag.py)."""
    oof: np.ndarray
    fold_weights: np.ndarray
    weights: np.ndarray

    def test(self, member_test_scores: list[np.ndarray]) -> np.ndarray:
        return combine(member_test_scores, self.weights)


def cross_fit(member_oofs: list[np.ndarray], y_true: np.ndarray, folds: np.ndarray, n_folds: int,
              fit: Callable[[list[np.ndarray], np.ndarray], np.ndarray] = select_weights) -> FittedCombination:
    """Fold k's OOF rows combined by `fit` on the rows of the other folds only; the final
    weights by `fit` on all rows. `fit(member_scores, y)` -> weights."""
    folds = np.asarray(folds)
    oof = np.zeros(np.shape(y_true), np.float32)
    fold_weights = np.zeros((n_folds, len(member_oofs)))
    for k in range(n_folds):
        held, rest = folds == k, folds != k
        if not held.any():
            continue
        fold_weights[k] = fit([s[rest] for s in member_oofs], y_true[rest])
        oof[held] = combine([s[held] for s in member_oofs], fold_weights[k])
    return FittedCombination(oof, fold_weights, fit(member_oofs, y_true))
