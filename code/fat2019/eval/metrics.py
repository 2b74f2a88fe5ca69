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


def label_ranks(y_true: np.ndarray, y_score: np.ndarray, chunk: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """(rank, true_at_or_above), both (clips, classes): the rank of every class among its
    clip's classes, 1 = top, ties counted against as in sklearn's LRAP (classes scored at
    or above it), and how many of the clip's true labels score at or above it. Clips are
    compared in chunks of `chunk` rows to bound the (rows, classes, classes) array."""
    truth = np.asarray(y_true) > 0.5
    scores = np.asarray(y_score, np.float64)
    rank = np.zeros(truth.shape, np.int64)
    true_above = np.zeros(truth.shape, np.int64)
    for lo in range(0, len(truth), chunk):
        at_or_above = scores[lo:lo + chunk, None, :] >= scores[lo:lo + chunk, :, None]   # [clip, j, k]: k >= j
        rank[lo:lo + chunk] = at_or_above.sum(axis=-1)
        true_above[lo:lo + chunk] = (at_or_above & truth[lo:lo + chunk, None, :]).sum(axis=-1)
    return rank, true_above


def per_class_lwlrap(y_true: np.ndarray, y_score: np.ndarray, chunk: int = 256,
                     ranks: tuple[np.ndarray, np.ndarray] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(score per class, weight per class), with lwlrap(y_true, y_score) = sum(score * weight).

    Every positive (clip, class) pair gets the precision of the clip's ranking at that
    class: positives scored >= it over all classes scored >= it (label_ranks). A class's
    score is the mean over its positives (0 when it has none), its weight its share of all
    positives. `ranks`: label_ranks(y_true, y_score), when the caller has them already.
    """
    truth = np.asarray(y_true) > 0.5
    rank, true_above = ranks if ranks is not None else label_ranks(truth, y_score, chunk)
    precision_sum = np.where(truth, true_above / rank, 0.0).sum(axis=0)
    counts = truth.sum(axis=0).astype(np.float64)
    score = np.divide(precision_sum, counts, out=np.zeros(truth.shape[1]), where=counts > 0)
    return score, counts / max(counts.sum(), 1.0)
