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


def per_class_lwlrap(y_true: np.ndarray, y_score: np.ndarray, chunk: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """(score per class, weight per class), with lwlrap(y_true, y_score) = sum(score * weight).

    Every positive (clip, class) pair gets the precision of the clip's ranking at that
    class: positives scored >= it over all classes scored >= it (ties count against, as in
    sklearn's LRAP). A class's score is the mean over its positives (0 when it has none),
    its weight its share of all positives. Clips are compared in chunks of `chunk` rows to
    bound the (rows, classes, classes) comparison array.
    """
    truth = np.asarray(y_true) > 0.5
    scores = np.asarray(y_score, np.float64)
    n_classes = truth.shape[1]
    precision_sum = np.zeros(n_classes)
    for lo in range(0, len(truth), chunk):
        t, s = truth[lo:lo + chunk], scores[lo:lo + chunk]
        at_or_above = s[:, None, :] >= s[:, :, None]          # [clip, j, k]: class k ranks at or above j
        rank = at_or_above.sum(axis=-1)
        positives_above = (at_or_above & t[:, None, :]).sum(axis=-1)
        precision_sum += np.where(t, positives_above / rank, 0.0).sum(axis=0)
    counts = truth.sum(axis=0).astype(np.float64)
    score = np.divide(precision_sum, counts, out=np.zeros(n_classes), where=counts > 0)
    return score, counts / max(counts.sum(), 1.0)
