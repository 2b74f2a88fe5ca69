"""The score the competition would give: lwlrap on the test set, overall and per
leaderboard part (Public / Private, when the test labels say which clip was in which)."""
from __future__ import annotations

import numpy as np

from fat2019.eval.metrics import lwlrap

ALL = "all"


def score_test_set(truth: np.ndarray, predictions: dict[str, np.ndarray],
                   parts: dict[str, np.ndarray] | None = None) -> dict[str, dict[str, float]]:
    """{prediction name: {"all": lwlrap, part: lwlrap of that part's clips, ...}}.

    `truth` and each prediction are (clips, classes) in the same clip order; `parts` maps a
    part's name to a boolean mask over those clips. A part without clips is left out."""
    groups = {ALL: np.ones(len(truth), bool), **(parts or {})}
    return {name: {g: lwlrap(truth[m], scores[m]) for g, m in groups.items() if m.any()}
            for name, scores in predictions.items()}
