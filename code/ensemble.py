"""Stage 5: weighted average and stacker over the zoo's predictions -> the submission.

Reads models/<name>/oof.csv and test.csv of every selected model (refusing, with the list,
when any is missing), then writes:

    submissions/average_oof.csv   weighted average of the out-of-fold predictions
    submissions/average.csv       weighted average of the test predictions
    submissions/stacker_oof.csv   the stacker's out-of-fold predictions
    submissions/submission.csv    the stacker's test predictions (sample_submission format)

The stacker sees, per class, each model's score and the weighted average (last column);
it is trained per fold of models/folds.csv, its validation scored before each epoch's fit,
so the untrained state (a monotone map of the plain average) can win. Test = mean of the
fold stackers. A summary table of CV scores (and test scores when the data has held-back
test labels, as the demo does) ends the stage.

    python code/ensemble.py --profile demo
"""
from __future__ import annotations

import keras
import numpy as np

import training
from dataset import read_test_labels
from metrics import lrap, lwlrap
from models import build_stacker
from workspace import Workspace, read_predictions, run_stage, stage_parser, write_predictions


class ScoreBeforeEpoch(keras.callbacks.Callback):
    """Scores the validation fold before each epoch's fit; keeps the best weights and stops
    after `patience` epochs without improvement."""

    def __init__(self, x_val, y_val, patience: int):
        super().__init__()
        self.x_val, self.y_val, self.patience = x_val, y_val, patience
        self.best_score, self.best_weights, self.best_epoch = -1.0, None, 0

    def on_epoch_begin(self, epoch, logs=None):
        score = lrap(self.y_val, self.model.predict(self.x_val, verbose=0, batch_size=1024))
        if score > self.best_score:
            self.best_score, self.best_weights, self.best_epoch = score, self.model.get_weights(), epoch
        elif epoch - self.best_epoch >= self.patience:
            self.model.stop_training = True

    def on_train_end(self, logs=None):
        self.model.set_weights(self.best_weights)


def stack_inputs(model_scores: list[np.ndarray], average: np.ndarray) -> np.ndarray:
    """(clips, classes, models + 1): each model's scores, the weighted average last."""
    return np.stack([*model_scores, average], axis=-1).astype(np.float32)


def fit_stacker(x, y, folds, x_test, profile, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Out-of-fold and mean test predictions of one stacker per fold."""
    oof = np.zeros(y.shape, np.float32)
    test = np.zeros((len(x_test), y.shape[1]), np.float64)
    for k in range(profile.n_folds):
        val, train = folds == k, folds != k
        training.set_seed(seed + k)
        stacker = build_stacker(y.shape[1], x.shape[-1], lr=profile.stacker_lr, offset=profile.stacker_offset)
        scorer = ScoreBeforeEpoch(x[val], y[val], profile.stacker_patience)
        stacker.fit(x[train], y[train], batch_size=profile.stacker_batch_size, epochs=profile.stacker_epochs,
                    callbacks=[scorer], verbose=0)
        oof[val] = stacker.predict(x[val], verbose=0, batch_size=1024)
        test += stacker.predict(x_test, verbose=0, batch_size=1024)
        print(f"stacker fold {k}: best before epoch {scorer.best_epoch + 1}, val LRAP {scorer.best_score:.4f}")
    return oof, (test / profile.n_folds).astype(np.float32)


def main(argv: list[str] | None = None) -> int:
    args = stage_parser(__doc__).parse_args(argv)
    ws = Workspace(args)
    if args.folds is not None:
        raise SystemExit("error: ensemble.py uses every fold; --folds is for train.py and predict.py")
    missing = [str(ws.model_dir(m.name) / f) for m in ws.models for f in ("oof.csv", "test.csv")
               if not (ws.model_dir(m.name) / f).is_file()]
    if missing:
        raise SystemExit("error: cannot ensemble, predictions missing (run train.py and predict.py for every "
                         "fold):\n  " + "\n  ".join(missing))
    curated, test = ws.curated, ws.clip_data(ws.dataset.test)
    y = curated.labels
    oofs = [read_predictions(ws.model_dir(m.name) / "oof.csv", curated.fnames, ws.classes) for m in ws.models]
    tests = [read_predictions(ws.model_dir(m.name) / "test.csv", test.fnames, ws.classes) for m in ws.models]

    weights = np.array([m.weight for m in ws.models], np.float64)
    if weights.sum() <= 0:  # e.g. --models se alone (weight 0): plain mean
        weights = np.ones_like(weights)
    weights /= weights.sum()
    avg_oof = np.tensordot(np.stack(oofs, -1), weights, axes=([-1], [0])).astype(np.float32)
    avg_test = np.tensordot(np.stack(tests, -1), weights, axes=([-1], [0])).astype(np.float32)
    out = ws.paths.submissions
    write_predictions(out / "average_oof.csv", curated.fnames, ws.classes, avg_oof)
    write_predictions(out / "average.csv", test.fnames, ws.classes, avg_test)

    stack_oof, stack_test = fit_stacker(stack_inputs(oofs, avg_oof), y, ws.folds,
                                        stack_inputs(tests, avg_test), ws.profile, args.seed)
    write_predictions(out / "stacker_oof.csv", curated.fnames, ws.classes, stack_oof)
    write_predictions(out / "submission.csv", test.fnames, ws.classes, stack_test)

    truth = read_test_labels(ws.paths.data, ws.dataset)
    if truth is not None:
        keep = [ws.dataset.test.fnames.index(f) for f in test.fnames]
        truth = truth[keep]
    rows = [(m.name, o, t) for m, o, t in zip(ws.models, oofs, tests)]
    rows += [("weighted average", avg_oof, avg_test), ("stacker", stack_oof, stack_test)]
    head = f"{'':<30} {'CV LRAP':>8} {'CV lwlrap':>10}" + (f" {'test lwlrap':>12}" if truth is not None else "")
    print("\n" + head)
    for name, o, t in rows:
        line = f"{name:<30} {lrap(y, o):>8.4f} {lwlrap(y, o):>10.4f}"
        print(line + (f" {lwlrap(truth, t):>12.4f}" if truth is not None else ""))
    print(f"\nsubmission: {out / 'submission.csv'}")
    return 0


if __name__ == "__main__":
    run_stage(main)
