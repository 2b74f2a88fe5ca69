"""Stage 4: out-of-fold and test predictions with 3-TTA.

For each model and fold k, the fold's best weights predict the clips of fold k (never a
clip the model trained on: both come from models/folds.csv) and the test set, each as the
mean of crops at the start, middle and end. Per fold the rows go to
models/<name>/fold<k>.oof.csv and fold<k>.test.csv; once every fold is there they are
gathered into models/<name>/oof.csv (every curated clip) and test.csv (mean over folds);
until then the stage names the folds it waits for (trained elsewhere, with --folds).
Finished folds are skipped (--force redoes them); a fold retrained since its prediction
is predicted again.

    python code/predict.py --profile demo
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

import training
from batches import predict_tta
from models import build_model
from train import fold_prefix
from workspace import Workspace, read_predictions, run_stage, stage_parser, write_predictions


def fold_predictions(folder: Path, k: int) -> tuple[Path, Path]:
    return folder / f"{fold_prefix(k)}.oof.csv", folder / f"{fold_prefix(k)}.test.csv"


def gathered(folder: Path) -> tuple[Path, Path]:
    return folder / "oof.csv", folder / "test.csv"


def is_predicted(folder: Path, k: int) -> bool:
    """Fold k is trained and its predictions are not older than its weights."""
    prefix = fold_prefix(k)
    if not training.is_finished(folder, prefix):
        return False
    trained = (folder / f"{prefix}.weights.h5").stat().st_mtime_ns
    return all(p.is_file() and p.stat().st_mtime_ns >= trained for p in fold_predictions(folder, k))


def missing_folds(folder: Path, n_folds: int) -> list[int]:
    return [k for k in range(n_folds) if not is_predicted(folder, k)]


def is_gathered(folder: Path, n_folds: int) -> bool:
    """oof.csv and test.csv exist and were gathered after every fold's predictions."""
    if missing_folds(folder, n_folds) or not all(p.is_file() for p in gathered(folder)):
        return False
    newest_fold = max(p.stat().st_mtime_ns for k in range(n_folds) for p in fold_predictions(folder, k))
    return all(p.stat().st_mtime_ns >= newest_fold for p in gathered(folder))


def main(argv: list[str] | None = None) -> int:
    parser = stage_parser(__doc__)
    args = parser.parse_args(argv)
    ws = Workspace(args)
    test = ws.clip_data(ws.dataset.test)
    curated_fnames, test_fnames = ws.curated.fnames, test.fnames
    incomplete = []
    for model_cfg in ws.models:
        model_cfg = ws.profile.scale(model_cfg)
        folder = ws.model_dir(model_cfg.name)
        model = None
        for k in ws.fold_numbers():
            prefix = fold_prefix(k)
            oof_path, test_path = fold_predictions(folder, k)
            if not training.is_finished(folder, prefix) or (is_predicted(folder, k) and not args.force):
                continue
            model = model or build_model(model_cfg, len(ws.classes))
            model.load_weights(folder / f"{prefix}.weights.h5")
            _, val = ws.split(k)
            for path, data in ((oof_path, val), (test_path, test)):
                scores = predict_tta(model, data, model_cfg.crop_samples, ws.profile.predict_batch_size,
                                     args.workers)
                write_predictions(path, data.fnames, ws.classes, scores)
            print(f"{model_cfg.name} fold {k}: predicted {len(val)} out-of-fold and {len(test)} test clips")

        missing = missing_folds(folder, ws.profile.n_folds)
        if missing:
            incomplete.append(f"{model_cfg.name} folds {missing}")
            continue
        oof = np.zeros((len(curated_fnames), len(ws.classes)), np.float32)
        test_mean = np.zeros((len(test_fnames), len(ws.classes)), np.float64)
        for k in range(ws.profile.n_folds):
            rows = np.flatnonzero(ws.folds == k)
            oof_path, test_path = fold_predictions(folder, k)
            oof[rows] = read_predictions(oof_path, [curated_fnames[i] for i in rows], ws.classes)
            test_mean += read_predictions(test_path, test_fnames, ws.classes)
        oof_path, test_path = gathered(folder)
        write_predictions(oof_path, curated_fnames, ws.classes, oof)
        write_predictions(test_path, test_fnames, ws.classes, test_mean / ws.profile.n_folds)
        print(f"{model_cfg.name}: oof.csv and test.csv written ({ws.profile.n_folds} folds)")
    if incomplete:
        print("predict: oof.csv and test.csv are gathered once every fold is predicted; waiting for "
              + "; ".join(incomplete) + " (train them, here or on another machine with --folds, then run "
              "predict.py again)")
    return 0


if __name__ == "__main__":
    run_stage(main)
