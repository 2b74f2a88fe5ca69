"""What the training stages share: the parsed options, the dataset, the feature caches,
the fold assignment and each model's folder."""
from __future__ import annotations

import argparse
import sys
from functools import cached_property, lru_cache
from pathlib import Path

import keras
import numpy as np

from fat2019 import cli
from fat2019 import config
from fat2019 import run_record, settings
from fat2019.engine import distribute
from fat2019.data import folds as folds_lib
from fat2019.data.batches import ClipData
from fat2019.data.dataset import ClipSet, Dataset, load_dataset
from fat2019.data.feature_cache import FeatureCache
from fat2019.util import machine
from fat2019.util.progress import rough_duration


# The profile guard: `full` is the original's schedule for the competition's ~5,000 curated
# clips on a GPU. Below this many curated clips, or on a CPU, it is rarely what a user meant.
FULL_PROFILE_MIN_CLIPS = 1000
# Training throughput of one CPU core: BENCHMARKS.md measured full-size v1mix training at
# 166 GFLOP/s on its 2-core CPU (75% of the matmul peak); per clip and epoch a run costs
# about 3 forward passes (training: forward + backward ~ 3x; validation: 3 TTA crops).
CPU_GFLOPS_PER_CORE = 83.0
WORTH_A_WARNING_S = 600


def compute_seconds(profile: config.Profile, models: list[config.ModelConfig], n_classes: int,
                    clips_per_epoch: int, epochs: int, runs: int, cores: int) -> float:
    """A lower bound of a stage's time on a CPU: the FLOPs of `runs` runs (folds) of
    `epochs` epochs over `clips_per_epoch` clips, for each model at the profile's scale,
    at CPU_GFLOPS_PER_CORE per core (input pipeline, checkpoints and a loaded machine
    come on top)."""
    flops = sum(model_flops(profile.scale(model), n_classes) for model in models)
    return 3.0 * flops * clips_per_epoch * epochs * runs / (CPU_GFLOPS_PER_CORE * 1e9 * max(cores, 1))


@lru_cache(maxsize=None)
def model_flops(model: config.ModelConfig, n_classes: int) -> float:
    """Forward FLOPs per clip of one (scaled) model; each is built once per process."""
    from fat2019.nn.flops import count_flops   # the stage imports Keras anyway; this only on a warning
    from fat2019.nn.models import build_model
    flops = count_flops(build_model(model, n_classes))["total"]
    keras.backend.clear_session()   # the stage's own models are then built as in a fresh process
    return flops


def unit_sizes(units: dict[str, config.ModelConfig], n_classes: int) -> dict[str, tuple[str, float]] | None:
    """Each unit's (model, FLOPs) for a stage's ETA (util/progress.py), when the units are
    of more than one model; None otherwise (all cost alike, and no model needs building)."""
    if len({m.name for m in units.values()}) < 2:
        return None
    return {label: (m.name, model_flops(m, n_classes)) for label, m in units.items()}


def profile_warning(stage: str, n_curated: int, on_gpu: bool, seconds: float | None,
                    demo_seconds: float | None) -> str:
    """The warning for `full` on small data (fewer than FULL_PROFILE_MIN_CLIPS curated
    clips) or on a CPU, with the CPU estimates of full and demo (None on a GPU: no GPU
    throughput has been measured)."""
    small = n_curated < FULL_PROFILE_MIN_CLIPS
    why = []
    if small:
        why.append(f"{n_curated} curated clips (it is made for thousands, like the competition's ~5,000)")
    if not on_gpu:
        why.append("a CPU without a GPU")
    estimate = (f"; this {stage} stage alone takes at least {rough_duration(seconds)} on this CPU (compute "
                f"only: a loaded machine takes longer)" if seconds is not None else "")
    demo = f" (its estimate: {rough_duration(demo_seconds)})" if demo_seconds is not None else ""
    return (f"warning: profile full on {' and '.join(why)}{estimate}. For a trial run or small data, rerun "
            f"with --profile demo{demo}; to keep full, let this run go on (Ctrl-C stops it; finished work is kept).")


class Workspace:
    def __init__(self, args: argparse.Namespace, stage: str | None = None, ray_plan=None):
        """The run's settings (settings.resolve), checked against the data; no side
        effects beyond the strategy: the stages that need them set the dtype policy
        (use_precision) and write run.json (record_run). `stage` (its name): print the
        stage's first line, where it computes, and refuse `full` on the CPU of a machine
        with a GPU, before any work (machine.stage_line); `ray_plan`: this process is a Ray
        driver, its units compute."""
        self.args = args
        self.settings = settings.resolve(args)
        if stage is not None:
            print(machine.stage_line(stage, self.profile.name, ray_plan=ray_plan), flush=True)
        self.models = config.select_models(args.models)
        if getattr(args, "tensorboard", False):
            distribute.require_tensorflow("--tensorboard (tf.summary)")
        # made first, before anything starts TensorFlow's runtime (--logical-cpus needs that)
        self.strategy = distribute.make_strategy(getattr(args, "strategy", "default"),
                                                 getattr(args, "logical_cpus", None))
        run_record.check_classes(self.settings, self.dataset.classes)
        if self.strategy.num_replicas_in_sync > 1:
            self.announce_replicas()

    @property
    def profile(self) -> config.Profile:
        return self.settings.profile

    @property
    def paths(self) -> settings.Paths:
        return self.settings.paths

    def use_precision(self) -> None:
        """Build every model from here on in the run's dtype policy: the given
        --mixed-precision, else the recorded one (sharded runs keep one precision), else
        float32. The stages that build the run's models call it (train, pretrain, predict,
        a tune trial); ensemble.py computes in float32, Keras' default."""
        keras.mixed_precision.set_global_policy(self.settings.precision)

    def record_run(self) -> None:
        """The training stages (pretrain, train, tune): record the run in its models folder
        (run.json) when the folder has no record yet."""
        if self.settings.record is None:
            run_record.save(self.settings, self.classes)

    def warn_if_profile_too_big(self, stage: str, models: list[config.ModelConfig], clips_per_epoch: int,
                                epochs: int, runs: int) -> None:
        """Print profile_warning's warning, if any, for a stage of `runs` runs per model of
        `epochs` epochs over `clips_per_epoch` clips; the stage then goes on (docs/user-messages.md).
        On a CPU, only when the estimate comes to WORTH_A_WARNING_S or more (a `full`
        shrunk with --set is what its user asked for)."""
        if self.profile.name != "full":
            return
        n_curated, on_gpu = len(self.curated), bool(machine.backend_gpus())
        if on_gpu and n_curated >= FULL_PROFILE_MIN_CLIPS:
            return
        seconds = demo_seconds = None
        if not on_gpu:
            cores, classes = cli.default_workers(), len(self.classes)
            seconds = compute_seconds(self.profile, models, classes, clips_per_epoch, epochs, runs, cores)
            if seconds < WORTH_A_WARNING_S:
                return
            demo = config.PROFILES["demo"]
            scale = {"train": (demo.epochs, demo.n_folds), "pretrain": (demo.pretrain_epochs, 1)}[stage]
            demo_seconds = compute_seconds(demo, models, classes, clips_per_epoch, *scale, cores)
        print(profile_warning(stage, n_curated, on_gpu, seconds, demo_seconds), file=sys.stderr, flush=True)

    def announce_replicas(self) -> None:
        """Say once how several replicas change the schedule (Schedule.for_replicas)."""
        from fat2019.engine import training   # imported here: it builds on Keras, which the stage has just configured

        replicas = self.strategy.num_replicas_in_sync
        for model in self.models:
            one = training.Schedule.curated(self.profile, self.profile.scale(model))
            many = one.for_replicas(replicas)
            print(f"{model.name} on {replicas} replicas: global batch {replicas} x {one.batch_size} = "
                  f"{many.batch_size} clips (prediction {many.predict_batch_size}), learning rate "
                  f"{one.lr:.2e} -> {many.lr:.2e} (x sqrt({replicas})); --strategy default keeps one device")

    @cached_property
    def dataset(self) -> Dataset:
        return load_dataset(self.paths.data, check_files=False)

    @property
    def classes(self) -> list[str]:
        return self.dataset.classes

    def cache(self, name: str) -> FeatureCache:
        return FeatureCache(self.paths.features / name)

    def clip_data(self, clips: ClipSet) -> ClipData:
        """The clips of a set that the feature cache holds (clips left out by
        `features.py --skip-bad` are left out here too, with a note). An empty set (no test
        clips in own data) has no cache: its ClipData is empty."""
        if not len(clips):
            return ClipData(None, np.zeros(0, np.int64), clips.labels)
        cache = self.cache(clips.name)
        kept = [i for i, f in enumerate(clips.fnames) if f in cache.row]
        if len(kept) < len(clips):
            print(f"note: {len(clips) - len(kept)} {clips.name} clip(s) are not in the feature cache "
                  f"(left out as bad files) and are skipped")
        labels = clips.labels[kept] if clips.labels is not None else None
        return ClipData(cache, cache.rows([clips.fnames[i] for i in kept]), labels)

    @cached_property
    def curated(self) -> ClipData:
        return self.clip_data(self.dataset.curated)

    @cached_property
    def folds(self) -> np.ndarray:
        """Fold of each clip of `self.curated`, from models/folds.csv (made on first use)."""
        fnames = self.curated.fnames
        clips = ClipSet("curated", fnames, [], self.curated.labels)
        table = folds_lib.load_or_create(self.paths.models, clips, self.profile.n_folds, self.classes)
        return table.set_index("fname").loc[fnames, "fold"].to_numpy()

    def fold_numbers(self) -> list[int]:
        wanted = getattr(self.args, "folds", None)
        wanted = wanted if wanted is not None else list(range(self.profile.n_folds))
        bad = [k for k in wanted if not 0 <= k < self.profile.n_folds]
        if bad:
            raise SystemExit(f"--folds {bad}: the {self.profile.name} profile has folds 0..{self.profile.n_folds - 1}")
        return wanted

    def split(self, fold: int) -> tuple[ClipData, ClipData]:
        """(training clips, validation clips) of one fold."""
        data = self.curated
        train, val = np.flatnonzero(self.folds != fold), np.flatnonzero(self.folds == fold)
        return (ClipData(data.cache, data.rows[train], data.labels[train]),
                ClipData(data.cache, data.rows[val], data.labels[val]))

    def model_dir(self, name: str) -> Path:
        return self.paths.models / name


