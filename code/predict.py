"""Stage 4: out-of-fold and test predictions with 3-TTA.

For each model and fold k, the fold's best weights predict the clips of fold k (never a
clip the model trained on: both come from models/folds.csv) and the test set, each as the
mean of crops at the start, middle and end. Per fold the rows go to
models/<name>/fold<k>.oof.csv and fold<k>.test.csv; once every fold is there they are
gathered into models/<name>/oof.csv (every curated clip) and test.csv (mean over folds);
until then the stage names the folds it waits for (trained elsewhere, with --folds).
Finished folds are skipped (--force redoes them); a fold retrained since its prediction
is predicted again.

    .venv/bin/python code/predict.py --profile demo
"""
from __future__ import annotations

from fat2019.cli import run_stage, stage_parser  # first: it quiets TensorFlow's C++ log lines before anything imports TensorFlow
from fat2019 import layout


def main(argv: list[str] | None = None) -> int:
    parser = stage_parser(__doc__, seed=False)
    args = parser.parse_args(argv)
    # imported once the options are parsed: --help stays free of TensorFlow/Keras (cli.py)
    import numpy as np

    from fat2019.data.batches import predict_tta
    from fat2019.nn.models import build_model
    from fat2019.train.workspace import Workspace, read_predictions, write_predictions

    ws = Workspace(args)
    test = ws.clip_data(ws.dataset.test)
    curated_fnames, test_fnames = ws.curated.fnames, test.fnames
    incomplete = []
    for model_cfg in ws.models:
        model_cfg = ws.profile.scale(model_cfg)
        folder = ws.model_dir(model_cfg.name)
        model = None
        for k in ws.fold_numbers():
            prefix = layout.fold_prefix(k)
            oof_path, test_path = layout.fold_predictions(folder, k)
            if not layout.is_finished(folder, prefix) or (layout.is_predicted(folder, k) and not args.force):
                continue
            model = model or build_model(model_cfg, len(ws.classes))
            model.load_weights(layout.weights_path(folder, prefix))
            _, val = ws.split(k)
            for path, data in ((oof_path, val), (test_path, test)):
                scores = predict_tta(model, data, model_cfg.crop_samples, ws.profile.predict_batch_size,
                                     args.workers)
                write_predictions(path, data.fnames, ws.classes, scores)
            print(f"{model_cfg.name} fold {k}: predicted {len(val)} out-of-fold and {len(test)} test clips")

        missing = layout.missing_folds(folder, ws.profile.n_folds)
        if missing:
            incomplete.append(f"{model_cfg.name} folds {missing}")
            continue
        oof = np.zeros((len(curated_fnames), len(ws.classes)), np.float32)
        test_mean = np.zeros((len(test_fnames), len(ws.classes)), np.float64)
        for k in range(ws.profile.n_folds):
            rows = np.flatnonzero(ws.folds == k)
            oof_path, test_path = layout.fold_predictions(folder, k)
            oof[rows] = read_predictions(oof_path, [curated_fnames[i] for i in rows], ws.classes)
            test_mean += read_predictions(test_path, test_fnames, ws.classes)
        oof_path, test_path = layout.gathered(folder)
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
