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
    .venv/bin/python code/predict.py --gpus 4      # 4 folds at a time, one per GPU (Ray; docs/clusters.md)
"""
from __future__ import annotations

import functools
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from fat2019.cli import BadInput, run_stage, stage_parser  # first: it quiets TensorFlow's C++ log lines before anything imports TensorFlow
from fat2019 import layout, provenance
from fat2019.engine import ray_scheduler
from fat2019.util.digest import file_sha256
from fat2019.ensemble.predictions import read_predictions, write_predictions

if TYPE_CHECKING:   # the stage imports these when it runs: --help stays free of TensorFlow/Keras
    import keras

    from fat2019.data.batches import ClipData
    from fat2019.ensemble.predictor import Member
    from fat2019.engine.training import BuiltModels
    from fat2019.engine.workspace import Workspace


def predict_fold(ws: Workspace, member: Member, k: int, test: ClipData, model: keras.Model) -> None:
    """One unit: fold k's weights, loaded into `model` (of the member's architecture), on its
    own validation clips and on the test clips, written to fold<k>.oof.csv and fold<k>.test.csv."""
    _, val = ws.split(k)
    weights = file_sha256(layout.weights_path(member.folder, layout.fold_prefix(k)))
    for path, data in zip(layout.fold_predictions(member.folder, k), (val, test)):
        scores = member.fold_scores(model, k, data, ws.profile.predict_batch_size, ws.args.workers)
        write_predictions(path, data.fnames, ws.classes, scores)
    provenance.record_predictions(member.folder, k, weights)   # last: the fold is predicted
    print(f"{member.config.name} fold {k}: predicted {len(val)} out-of-fold and {len(test)} test clips")


def gather(ws: Workspace, folder, test: ClipData) -> None:
    """oof.csv (each curated clip from the fold that did not train on it) and test.csv
    (the mean over the folds) from every fold's CSVs."""
    curated_fnames, test_fnames = ws.curated.fnames, test.fnames
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
    provenance.record_gathered(folder, ws.profile.n_folds)   # last: the model is gathered


def forget_prediction(folder: Path, k: int) -> None:
    """--force on Ray: the fold's predictions go before its unit is submitted."""
    for path in layout.fold_predictions(folder, k):
        path.unlink(missing_ok=True)


def predict_on_ray(ws: Workspace, options: list[str], chosen: ray_scheduler.Plan) -> int:
    """--gpus N / --cluster: the trained folds not yet predicted (all with --force), each a
    unit appended to its fold's log (ray_scheduler.py)."""
    units = []
    for model_cfg in ws.models:
        folder = ws.model_dir(model_cfg.name)
        for k in ws.fold_numbers():
            if layout.is_finished(folder, layout.fold_prefix(k)):
                units.append(ray_scheduler.stage_unit(
                    f"{model_cfg.name} fold {k} prediction", __file__, options, model_cfg.name, k,
                    layout.log_path(folder, layout.fold_prefix(k)), functools.partial(layout.is_predicted, folder, k),
                    needs=(ws.paths.features, ws.paths.models), record=layout.run_json(ws.paths.models),
                    clear=functools.partial(forget_prediction, folder, k)))
    return ray_scheduler.exit_code(ray_scheduler.run(units, chosen, "predict", redo=ws.args.force))


def refuse_stale(ws: Workspace) -> None:
    """Exit 2, naming both files, while a fold to predict was trained from a pretraining
    that has changed since (provenance.py); train.py trains such folds again."""
    from fat2019.ensemble.predictor import trained_folds

    stale = []
    for model_cfg in ws.models:
        folder = ws.model_dir(model_cfg.name)
        wanted = [k for k in ws.fold_numbers() if k in trained_folds(folder)]
        stale += provenance.stale_folds(ws.paths.models, folder, wanted)
    if stale:
        raise BadInput("stale folds, not predicted:\n  " + "\n  ".join(stale)
                       + "\ntrain them again with train.py (it retrains stale folds), then rerun predict.py")


def main(argv: list[str] | None = None, built: BuiltModels | None = None) -> int:
    """`built`: the models built by earlier units in this process (a warm Ray worker's),
    to reuse; by default the ones this run builds."""
    parser = stage_parser(__doc__, seed=False)
    ray_scheduler.add_args(parser)
    argv = sys.argv[1:] if argv is None else argv
    args = parser.parse_args(argv)
    chosen = ray_scheduler.plan(parser, args)
    # imported once the options are parsed: --help stays free of TensorFlow/Keras (cli.py)
    from fat2019.ensemble.predictor import Member, trained_folds
    from fat2019.engine.training import BuiltModels
    from fat2019.engine.workspace import Workspace

    built = built or BuiltModels()   # each architecture built once, its folds' weights loaded into it
    ws = Workspace(args, "predict", chosen)
    ws.use_precision()   # the models predict in the policy they were trained in
    refuse_stale(ws)
    if chosen is not None:   # each fold's prediction a Ray task on one GPU; then gathered below
        failed = predict_on_ray(ws, ray_scheduler.unit_options(parser, args), chosen)
        if failed:
            return failed
        args.force = False
    test = ws.clip_data(ws.dataset.test)
    incomplete = []
    for model_cfg in ws.models:
        folder = ws.model_dir(model_cfg.name)
        member = Member(ws.profile.scale(model_cfg), folder, trained_folds(folder), model_cfg.weight)
        for k in ws.fold_numbers():
            if k in member.folds and (args.force or not layout.is_predicted(folder, k)):
                predict_fold(ws, member, k, test, built.model(member.config, len(ws.classes), ws.strategy))
        missing = layout.missing_folds(folder, ws.profile.n_folds)
        if missing:
            incomplete.append(f"{model_cfg.name} folds {missing}")
            continue
        gather(ws, folder, test)
        print(f"{model_cfg.name}: oof.csv and test.csv written ({ws.profile.n_folds} folds)")
    if incomplete:
        print("predict: oof.csv and test.csv are gathered once every fold is predicted; waiting for "
              + "; ".join(incomplete) + " (train them, here or on another machine with --folds, then run "
              "predict.py again)")
    return 0


if __name__ == "__main__":
    run_stage(main)
