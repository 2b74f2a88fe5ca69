"""Stage 3: train each zoo model on the curated set, one run per fold.

Fold k trains on the other folds of models/folds.csv (made here on first use) and keeps
the epoch with the best validation LRAP (3-TTA) as models/<name>/fold<k>.weights.h5.
Models start from their noisy pretraining (models/<source>/pretrain.weights.h5).
Finished folds are skipped (--force redoes them); an interrupted fold resumes at its next
epoch. models/<name>/history.csv gathers every fold's epochs; models/<name>/report.png
plots them (reports.py), with the noisy pretraining curve.

    .venv/bin/python code/train.py --profile demo --models v1mix --folds 0 1
    .venv/bin/python code/train.py --gpus 4      # 4 folds side by side, one per GPU (Ray; docs/clusters.md)
    .venv/bin/python code/train.py --cluster auto   # the folds spread over a running Ray cluster's GPUs

A fold another run is training (its models/<name>/fold<k>.lock is held) is skipped with
a note naming that run; a rerun picks it up if that run died before finishing it.
"""
from __future__ import annotations

import functools
import sys

from typing import TYPE_CHECKING

from fat2019.cli import run_stage, stage_parser  # first: it quiets TensorFlow's C++ log lines before anything imports TensorFlow
from fat2019.engine import ray_scheduler
from fat2019.util.progress import UnitProgress
from fat2019 import layout

if TYPE_CHECKING:
    from fat2019 import config
    from fat2019.engine import training
    from fat2019.engine.workspace import Workspace


def gather_history(folder, n_folds: int) -> None:
    """models/<name>/history.csv: fold, epoch, lr, loss, val_lrap, val_lwlrap."""
    import pandas as pd

    from fat2019.engine import training
    from fat2019.util.atomic import atomic_write_text

    parts = []
    for k in range(n_folds):
        path = layout.history_path(folder, layout.fold_prefix(k))
        if path.is_file():
            parts.append(pd.read_csv(path).assign(fold=k))
    if parts:
        table = pd.concat(parts)[["fold", *training.HISTORY_COLUMNS]]
        atomic_write_text(folder / layout.HISTORY_CSV, table.to_csv(index=False))


def pretrained_start(ws: Workspace, model_cfg, use_pretrained: bool):
    """The noisy pretraining a model's folds start from; an error if it is needed and unfinished."""
    pretrained = layout.pretrain_weights(ws.paths.models, model_cfg.pretrain_source)
    if use_pretrained and not layout.is_finished(pretrained.parent, layout.PRETRAIN):
        raise SystemExit(f"error: {model_cfg.name} starts from {pretrained}, which is missing or unfinished; "
                         f"run code/pretrain.py --models {model_cfg.name} first (or pass --from-scratch)")
    return pretrained


def finish_model(ws: Workspace, model_cfg, pretrained, use_pretrained: bool) -> None:
    """history.csv from every fold's (also those other runs trained), and report.png."""
    from fat2019.eval import reports

    folder = ws.model_dir(model_cfg.name)
    gather_history(folder, ws.profile.n_folds)
    pretrain_history = layout.history_path(pretrained.parent, layout.PRETRAIN)
    report = reports.update_training_report(folder, pretrain_history if use_pretrained else None)
    if report:
        print(f"{model_cfg.name}: report {report}")


def train_on_ray(ws: Workspace, options: list[str], chosen: ray_scheduler.Plan, use_pretrained: bool) -> int:
    """--gpus N / --cluster: each fold a Ray task on one GPU (ray_scheduler.py)."""
    from fat2019.engine import training

    ws.folds  # models/folds.csv made here once, not by the units at the same time
    models = [ws.profile.scale(m) for m in ws.models]
    starts = [pretrained_start(ws, m, use_pretrained) for m in models]
    units = [ray_scheduler.stage_unit(f"{m.name} fold {k}", __file__, options, m.name, k,
                                      layout.log_path(ws.model_dir(m.name), layout.fold_prefix(k)),
                                      functools.partial(layout.is_finished, ws.model_dir(m.name), layout.fold_prefix(k)),
                                      needs=(ws.paths.features, ws.paths.models),
                                      lock=layout.lock_path(ws.model_dir(m.name), layout.fold_prefix(k)),
                                      record=layout.run_json(ws.paths.models),
                                      clear=functools.partial(training.clear, ws.model_dir(m.name), layout.fold_prefix(k)))
             for m in models for k in ws.fold_numbers()]
    outcome = ray_scheduler.run(units, chosen, "train", redo=ws.args.force)
    for model_cfg, pretrained in zip(models, starts):
        finish_model(ws, model_cfg, pretrained, use_pretrained)
    return ray_scheduler.exit_code(outcome)


def pending_units(ws: Workspace, folds: list[int]) -> dict[str, config.ModelConfig]:
    """The folds this run will train, each label with its scaled model (for the overall
    progress): unfinished, stale (started from a pretraining since replaced) or --force."""
    from fat2019 import provenance

    def pending(folder, prefix):
        return (ws.args.force or not layout.is_finished(folder, prefix)
                or bool(provenance.stale_start(ws.paths.models, folder, prefix)))
    return {f"{m.name} fold {k}": ws.profile.scale(m) for m in ws.models for k in folds
            if pending(ws.model_dir(m.name), layout.fold_prefix(k))}


def main(argv: list[str] | None = None, built: training.BuiltModels | None = None) -> int:
    """`built`: the models built by earlier units in this process (a warm Ray worker's),
    to reuse; by default the ones this run builds."""
    parser = stage_parser(__doc__, trains=True)
    parser.add_argument("--from-scratch", action="store_true",
                        help="do not start from the noisy pretraining (the default when there is no noisy set)")
    ray_scheduler.add_args(parser)
    argv = sys.argv[1:] if argv is None else argv
    args = parser.parse_args(argv)
    chosen = ray_scheduler.plan(parser, args)
    # imported once the options are parsed: --help stays free of TensorFlow/Keras (cli.py)
    from fat2019 import provenance
    from fat2019.data.dataset import NOISY_CSV
    from fat2019.engine import seeds, training
    from fat2019.engine.workspace import Workspace, unit_sizes

    built = built or training.BuiltModels()   # each architecture built once, restored per fold
    ws = Workspace(args, "train", chosen)
    ws.record_run()
    ws.use_precision()
    folds = ws.fold_numbers()
    use_pretrained = not args.from_scratch and len(ws.dataset.noisy) > 0
    print(f"train: profile {ws.profile.name}, {len(ws.curated)} curated clips, folds {folds}")
    if not use_pretrained:
        why = (provenance.FROM_SCRATCH if args.from_scratch
               else f"no noisy clips: {ws.dataset.data_dir / NOISY_CSV} is missing or empty")
        print(f"train: every fold starts from scratch, not from a noisy pretraining ({why})")
    ws.warn_if_profile_too_big("train", ws.models, len(ws.curated), ws.profile.epochs, len(folds))
    if chosen is not None:
        return train_on_ray(ws, ray_scheduler.unit_options(parser, args), chosen, use_pretrained)
    pending = pending_units(ws, folds)
    progress = UnitProgress("train", len(pending), sizes=unit_sizes(pending, len(ws.classes)))
    for model_cfg in ws.models:
        model_cfg = ws.profile.scale(model_cfg)
        folder = ws.model_dir(model_cfg.name)
        pretrained = pretrained_start(ws, model_cfg, use_pretrained)
        started_from = provenance.pretraining(ws.paths.models, pretrained) if use_pretrained else provenance.scratch(why)
        for k in folds:
            prefix = layout.fold_prefix(k)
            label = f"{model_cfg.name} fold {k}"
            stale = provenance.stale_start(ws.paths.models, folder, prefix)
            if stale:
                print(f"{label}: {stale}: training it again")
            with training.hold(folder, prefix, f"{label}:") as mine:
                if mine and (args.force or stale):
                    training.clear(folder, prefix)
                elif not mine or training.skip_finished(folder, prefix, f"{label}:"):
                    if label in pending:   # counted, but another run holds it or has finished it since
                        progress.skipped(label)
                    continue
                progress.starting(label)
                seed = seeds.unit_seed(args.seed, model_cfg.name, prefix)
                model = built.start(model_cfg, len(ws.classes), ws.strategy, seed,
                                    pretrained if use_pretrained else None, label=label)
                train, val = ws.split(k)
                summary = training.fit(model, train, val, training.Schedule.curated(ws.profile, model_cfg),
                                       model_cfg.crop_samples, folder, prefix, seed=seed,
                                       label=f"{model_cfg.name} fold {k}", workers=args.workers,
                                       tensorboard=args.tensorboard,
                                       provenance=provenance.of_run(started_from, args.seed, seed))
                print(f"{model_cfg.name} fold {k}: best epoch {summary['best_epoch']}, "
                      f"val LRAP {summary['best_val_lrap']:.4f}")
                progress.finished(label)
            gather_history(folder, ws.profile.n_folds)
        finish_model(ws, model_cfg, pretrained, use_pretrained)  # again for folds other runs trained
    return 0


if __name__ == "__main__":
    run_stage(main)
