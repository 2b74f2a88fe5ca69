"""Stage 2: pretrain on the noisy set.

Each zoo model that has its own pretraining (max3exam reuses v1mix's) trains on ALL noisy
clips; after every epoch the curated set is scored with 3-TTA and the best-scoring weights
among the late epochs are kept as models/<name>/pretrain.weights.h5. Finished models are
skipped (--force redoes them); an interrupted one resumes at its next epoch. A model
another run is pretraining (models/<name>/pretrain.lock held) is skipped with a note.

    .venv/bin/python code/pretrain.py --profile demo --models v1mix
    .venv/bin/python code/pretrain.py --gpus 4      # 4 models' pretraining side by side, one per GPU (Ray)
"""
from __future__ import annotations

import functools
import sys
from typing import TYPE_CHECKING

from fat2019.cli import run_stage, stage_parser  # first: it quiets TensorFlow's C++ log lines before anything imports TensorFlow
from fat2019 import config
from fat2019.engine import ray_scheduler
from fat2019 import layout
from fat2019.util.progress import UnitProgress

if TYPE_CHECKING:
    from fat2019.engine import training


def report_stale(models_dir: Path, weights: Path, before: str) -> None:
    """After `--force` redid a pretraining: name the folds trained from the one it replaced,
    now stale (their recorded start no longer matches; train.py trains them again,
    predict.py and ensemble.py refuse them until then), or say that nothing changed."""
    from fat2019 import provenance
    from fat2019.util.digest import file_sha256

    if file_sha256(weights) == before:
        print(f"note: {weights} came out byte-identical to the one it replaced; the folds trained from it stay valid")
        return
    stale = provenance.dependents(models_dir, weights, before)
    if stale:
        print(f"note: {weights} changed; {len(stale)} fold(s) were trained from the one it replaced and are now "
              f"stale (train.py trains them again; predict.py and ensemble.py refuse them until then):\n  "
              + "\n  ".join(stale))


def main(argv: list[str] | None = None, built: training.BuiltModels | None = None) -> int:
    """`built`: the models built by earlier units in this process (a warm Ray worker's),
    to reuse; by default the ones this run builds."""
    parser = stage_parser(__doc__, folds=False, trains=True)
    ray_scheduler.add_args(parser)
    argv = sys.argv[1:] if argv is None else argv
    args = parser.parse_args(argv)
    chosen = ray_scheduler.plan(parser, args)
    # imported once the options are parsed: --help stays free of TensorFlow/Keras (cli.py)
    from fat2019 import provenance
    from fat2019.engine import seeds, training
    from fat2019.engine.workspace import Workspace, unit_sizes
    from fat2019.util.digest import file_sha256

    built = built or training.BuiltModels()
    ws = Workspace(args, "pretrain", chosen)
    ws.record_run()
    ws.use_precision()
    if not len(ws.dataset.noisy):
        print("pretrain: no train_noisy.csv clips; nothing to pretrain (train.py starts from scratch)")
        return 0
    # the models whose pretraining the selected models start from, each once
    sources = list(dict.fromkeys(m.pretrain_source for m in ws.models))
    noisy, curated = ws.clip_data(ws.dataset.noisy), ws.curated
    print(f"pretrain: profile {ws.profile.name}, {len(noisy)} noisy clips, scored on {len(curated)} curated")
    ws.warn_if_profile_too_big("pretrain", [config.ZOO_BY_NAME[n] for n in sources], len(noisy) + len(curated),
                               ws.profile.pretrain_epochs, len(sources))
    if chosen is not None:  # --gpus N / --cluster: each model's pretraining a Ray task on one GPU
        options = ray_scheduler.unit_options(parser, args)
        units = [ray_scheduler.stage_unit(f"{name} pretrain", __file__, options, name, None,
                                          layout.log_path(ws.model_dir(name), layout.PRETRAIN),
                                          functools.partial(layout.is_finished, ws.model_dir(name), layout.PRETRAIN),
                                          needs=(ws.paths.features, ws.paths.models),
                                          lock=layout.lock_path(ws.model_dir(name), layout.PRETRAIN),
                                          record=layout.run_json(ws.paths.models),
                                          clear=functools.partial(training.clear, ws.model_dir(name), layout.PRETRAIN))
                 for name in sources]
        return ray_scheduler.exit_code(ray_scheduler.run(units, chosen, "pretrain", redo=args.force))
    pending = {f"{name} pretrain": ws.profile.scale(config.ZOO_BY_NAME[name]) for name in sources
               if args.force or not layout.is_finished(ws.model_dir(name), layout.PRETRAIN)}
    progress = UnitProgress("pretrain", len(pending), sizes=unit_sizes(pending, len(ws.classes)))
    for name in sources:
        model_cfg = ws.profile.scale(config.ZOO_BY_NAME[name])
        folder = ws.model_dir(name)
        weights = layout.weights_path(folder, layout.PRETRAIN)
        before = file_sha256(weights) if args.force and layout.is_finished(folder, layout.PRETRAIN) else None
        with training.hold(folder, layout.PRETRAIN, f"{name}: pretraining") as mine:
            if mine and args.force:
                training.clear(folder, layout.PRETRAIN)
            elif not mine or training.skip_finished(folder, layout.PRETRAIN, f"{name}: pretraining"):
                if f"{name} pretrain" in pending:   # counted, but another run holds it or has finished it since
                    progress.skipped(f"{name} pretrain")
                continue
            progress.starting(f"{name} pretrain")
            seed = seeds.unit_seed(args.seed, name, layout.PRETRAIN)
            model = built.start(model_cfg, len(ws.classes), ws.strategy, seed, label=f"{name} pretrain")
            start = provenance.scratch("a noisy pretraining starts from the model's initial weights")
            summary = training.fit(model, noisy, curated, training.Schedule.pretrain(ws.profile, model_cfg),
                                   model_cfg.crop_samples, folder, layout.PRETRAIN, seed=seed,
                                   label=f"{name} pretrain", workers=args.workers, tensorboard=args.tensorboard,
                                   provenance=provenance.of_run(start, args.seed, seed))
            print(f"{name}: pretrained, best epoch {summary['best_epoch']} (curated LRAP {summary['best_val_lrap']:.4f})")
            progress.finished(f"{name} pretrain")
            if before is not None:   # --force redid a finished pretraining
                report_stale(ws.paths.models, weights, before)
    return 0


if __name__ == "__main__":
    run_stage(main)
