"""Scores: LRAP (what the original reported) and lwlrap (the competition's metric)."""
from __future__ import annotations

import numpy as np
from sklearn.metrics import label_ranking_average_precision_score


def lrap(y_true: np.ndarray, y_score: np.ndarray) -> float:
    """Per-sample label ranking average precision (sklearn)."""
    return float(label_ranking_average_precision_score(y_true > 0.5, y_score))


def lwlrap(y_true: np.ndarray, y_score: np.ndarray) -> float:
    """Label-weighted LRAP: LRAP with each clip weighted by its number of labels, so every
    (clip, label) pair counts once."""
    truth = y_true > 0.5
    return float(label_ranking_average_precision_score(truth, y_score, sample_weight=truth.sum(axis=1)))


def per_class_lwlrap(y_true: np.ndarray, y_score: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(score per class, weight per class): lwlrap = sum(score * weight).

    For each positive (clip, class) pair: precision of the clip's ranking at that class's
    rank; a class's score is the mean over its positives, its weight its share of them.
    """
    truth = y_true > 0.5
    n_classes = truth.shape[1]
    hits = np.zeros(n_classes)
    counts = truth.sum(axis=0).astype(float)
    for row in np.flatnonzero(truth.any(axis=1)):
        order = np.argsort(-y_score[row], kind="stable")
        rank_of = np.empty(n_classes, int)
        rank_of[order] = np.arange(1, n_classes + 1)
        positives = np.flatnonzero(truth[row])
        ranks = rank_of[positives]
        # precision at each positive's rank: positives ranked at or above it / its rank
        hits[positives] += (ranks[:, None] >= ranks[None, :]).sum(axis=1) / ranks
    score = np.divide(hits, counts, out=np.zeros(n_classes), where=counts > 0)
    return score, counts / max(counts.sum(), 1)
