"""How far scores are from probabilities: the reliability curve and the expected
calibration error (ECE) over every (clip, class) pair.

Each pair's score falls in one of `bins` equal-width bins of [0, 1]; a bin's point is the
mean score of its pairs against the share of them that are true labels. The ECE is the
mean gap between the two, each bin weighted by its share of the pairs (0: every bin's
scores are the frequencies they claim).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

BINS = 10


@dataclass
class Reliability:
    """Per non-empty bin: the mean score, the share of true labels, the number of pairs."""
    mean_score: np.ndarray
    frequency: np.ndarray
    count: np.ndarray

    @property
    def ece(self) -> float:
        return float(np.sum(self.count * np.abs(self.mean_score - self.frequency)) / max(self.count.sum(), 1))


def reliability(y_true: np.ndarray, scores: np.ndarray, bins: int = BINS) -> Reliability:
    truth = (np.asarray(y_true) > 0.5).ravel().astype(np.float64)
    p = np.clip(np.asarray(scores, np.float64).ravel(), 0.0, 1.0)
    which = np.minimum((p * bins).astype(int), bins - 1)
    count = np.bincount(which, minlength=bins).astype(np.float64)
    used = count > 0
    mean_score = np.bincount(which, p, minlength=bins)[used] / count[used]
    frequency = np.bincount(which, truth, minlength=bins)[used] / count[used]
    return Reliability(mean_score, frequency, count[used])


def expected_calibration_error(y_true: np.ndarray, scores: np.ndarray, bins: int = BINS) -> float:
    return reliability(y_true, scores, bins).ece
