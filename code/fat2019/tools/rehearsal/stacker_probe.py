"""The stacker at the zoo's full input size, (curated clips, classes, 6 models + average),
on made-up scores: its time and memory do not depend on what the scores are."""
from __future__ import annotations

import time

import numpy as np

from fat2019.config import ZOO
from fat2019.ensemble.stacking import fit_stacker, stack_inputs


def stacker_inputs(labels: np.ndarray, n_test: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Six models' scores, each the labels plus noise of its own, and their weighted mean."""
    rng = np.random.default_rng(seed)
    weights = np.array([m.weight for m in ZOO]) / sum(m.weight for m in ZOO)

    def scores(y):
        # noisy enough that the average's LRAP is about 0.9, as the zoo's, so training can improve
        # on it and stops when it no longer does (too clean a score stops it at once)
        models = [np.clip(0.3 * y + rng.normal(0.2, 0.2, y.shape), 0, 1).astype(np.float32) for _ in ZOO]
        return stack_inputs(models, np.tensordot(np.stack(models, -1), weights, axes=([-1], [0])))

    test_y = np.zeros((n_test, labels.shape[1]), np.float32)
    test_y[np.arange(n_test), rng.integers(labels.shape[1], size=n_test)] = 1
    return scores(labels), scores(test_y)


def run(labels: np.ndarray, folds: np.ndarray, n_test: int, profile) -> dict:
    x, x_test = stacker_inputs(labels, n_test)
    start = time.perf_counter()
    fit_stacker(x, labels, folds, x_test, profile, seed=0)
    return {"inputs": list(x.shape), "test": n_test, "wall_s": round(time.perf_counter() - start, 1)}
