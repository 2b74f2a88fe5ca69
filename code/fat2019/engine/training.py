"""The epoch loop shared by noisy pretraining and per-fold training.

Per epoch: check the early-stopping rule (before the epoch, as the original does), set the
learning rate of the schedule, fit one pass of random crops, score the validation clips
with 3-TTA, keep the best weights, print one line, and checkpoint the whole model
(optimizer slots and iteration count included) so a killed run resumes at the next epoch.
An epoch's files change together: staged, then committed by one rename of the state file,
then published (commit.py), so a kill at any instant loses at most the epoch in progress.

Reproducible whatever happens: every random draw of an epoch comes from (the unit's seed,
epoch) -- the batches' own generators, and the global generators reseeded at the start of
each epoch -- so a run resumed from its checkpoint trains exactly as one never killed, and
a unit trains the same whatever ran before it in the process (seeds.py). Files, for a run
called <prefix> in the model's folder:

    <prefix>.weights.h5     best weights of the last committed epoch; final once the run is finished
    <prefix>.history.csv    one row per epoch: epoch, lr, loss, val_lrap, val_lwlrap
    <prefix>.json           the summary (best epoch and score) and provenance; the run is
                            finished once it exists and the state file is gone
    <prefix>.last.keras, <prefix>.state.json   resume point while the run is unfinished;
                            the state file is the commit point of each epoch
    tensorboard/<prefix>/   with tensorboard=True: the history's scalars, step = epoch
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import keras
import pandas as pd

from fat2019.engine import distribute
import fat2019.nn  # noqa: F401  (registers the custom layers, so load_model needs no custom_objects)
from fat2019 import layout
from fat2019.util import locks
from fat2019.engine import commit, seeds
from fat2019.util import shutdown
from fat2019.data.batches import ClipData, TrainBatches, predict_tta
from fat2019.config import ModelConfig, Profile
from fat2019.run_record import RunRecordError
from fat2019.eval.metrics import lrap, lwlrap
from fat2019.nn.models import build_model, load_weights
from fat2019.util.digest import file_sha256
from fat2019.util.progress import Progress


HISTORY_COLUMNS = ["epoch", "lr", "loss", "val_lrap", "val_lwlrap"]


@dataclass(frozen=True)
class Schedule:
    """Epochs are counted from 1 in files and logs. The learning rate is multiplied by
    `lr_factor` from each milestone on (milestone m = the (m+1)-th epoch, as in Keras'
    0-based LearningRateScheduler); mixup runs only before the first milestone."""
    epochs: int
    lr: float
    lr_milestones: tuple[int, ...]
    lr_factor: float
    mixup_prob: float
    mixup_weight: float
    label_smoothing: float
    batch_size: int
    predict_batch_size: int
    keep_from_epoch: int = 0          # 0-based: only epochs >= this may be kept as best
    stop_min_epoch: int | None = None  # 0-based: epoch e is not run when e >= this and ...
    patience: int | None = None        # ... more than this many epochs passed since the best

    def stops_before(self, epoch: int, best_epoch: int | None) -> bool:
        """The original's early stopping, checked before epoch `epoch` (0-based) runs:
        `if epoch >= 35 and epoch - best_epoch > 10: break` in its train.py."""
        return (self.stop_min_epoch is not None and best_epoch is not None
                and epoch >= self.stop_min_epoch and epoch - best_epoch > self.patience)

    def stop_message(self, label: str, epoch: int, best_epoch: int) -> str:
        """Why training ends after epoch `epoch` (0-based) instead of running all epochs."""
        return (f"{label}: stopping early after epoch {epoch + 1}/{self.epochs}: no improvement of val LRAP "
                f"in {epoch - best_epoch} epoch(s) since its best, epoch {best_epoch + 1} (the profile skips the "
                f"epochs from {self.stop_min_epoch + 1} on once {self.patience} have passed without improvement)")

    def lr_at(self, epoch: int) -> float:
        return self.lr * self.lr_factor ** sum(epoch >= m for m in self.lr_milestones)

    def mixup_at(self, epoch: int) -> float:
        return self.mixup_prob if epoch < min(self.lr_milestones, default=self.epochs) else 0.0

    def for_replicas(self, replicas: int) -> "Schedule":
        """The schedule on `replicas` data-parallel replicas: each takes `batch_size` clips
        per step, so the global batch is `replicas` times larger, and the learning rate is
        multiplied by sqrt(replicas). Square root, not linear: the optimizer is Nadam, and
        for adaptive optimizers the square-root rule is the one that keeps training
        dynamics (Malladi et al. 2022, "On the SDEs and scaling rules for adaptive gradient
        algorithms"); the linear rule is SGD's and needs a warm-up. Keeping the lr would
        take `replicas` times fewer steps of the same size per epoch, and the schedule is
        counted in epochs."""
        if replicas == 1:
            return self
        return dataclasses.replace(self, lr=self.lr * math.sqrt(replicas), batch_size=self.batch_size * replicas,
                                   predict_batch_size=self.predict_batch_size * replicas)

    @classmethod
    def curated(cls, profile: Profile, model: ModelConfig) -> "Schedule":
        return cls(profile.epochs, model.lr, profile.lr_milestones, profile.lr_factor, profile.mixup_prob,
                   profile.mixup_weight, profile.label_smoothing, profile.batch_size,
                   profile.predict_batch_size, stop_min_epoch=profile.early_stop_min_epoch, patience=profile.early_stop_patience)

    @classmethod
    def pretrain(cls, profile: Profile, model: ModelConfig) -> "Schedule":
        return cls(profile.pretrain_epochs, model.lr, profile.pretrain_lr_milestones, profile.lr_factor,
                   profile.pretrain_mixup_prob, profile.mixup_weight, profile.label_smoothing,
                   profile.batch_size, profile.predict_batch_size,
                   keep_from_epoch=profile.pretrain_keep_from_epoch)


class EpochProgress(keras.callbacks.Callback):
    """The steps of one epoch's fit: a bar in a terminal, a line a minute in a log file
    (progress.py); the epoch's summary line follows either way.

    It never reads the step's logs, so it is `async_safe`: Keras then calls it from a helper
    thread. Otherwise, on JAX, Keras turns every step's loss into a Python float before
    calling it, so the host waits for the device after every step; the host's work for the
    next step could otherwise overlap the device's work on this one."""

    async_safe = True

    def __init__(self, desc: str, steps: int):
        super().__init__()
        self.progress = Progress(steps, desc, "step", leave=False)

    def on_train_batch_end(self, batch, logs=None):
        self.progress.update()

    def on_train_end(self, logs=None):
        self.progress.close()


@contextlib.contextmanager
def hold(folder: Path, prefix: str, label: str):
    """Holds the lock of the run `prefix` while the caller trains it. Yields whether this
    process holds it, after saying who does when another run holds it."""
    with locks.try_hold(layout.lock_path(folder, prefix)) as lock:
        if not lock.held:
            print(f"{label} {lock.holder}; skipped (a rerun picks it up if that run dies unfinished)")
        yield lock.held


def skip_finished(folder: Path, prefix: str, label: str) -> bool:
    """Whether the run `prefix` is finished (checked with its lock held), saying it is
    skipped when it is."""
    if not layout.is_finished(folder, prefix):
        return False
    print(f"{label} finished, skipped (--force to redo)")
    return True


def clear(folder: Path, prefix: str) -> None:
    """Forget a run (for --force): its marker first, so a crash midway leaves it unfinished."""
    for suffix in layout.RUN_SUFFIXES:
        layout.run_file(folder, prefix, suffix).unlink(missing_ok=True)
    for path in layout.temporaries(folder, prefix):
        path.unlink(missing_ok=True)
    shutil.rmtree(layout.tensorboard_dir(folder, prefix), ignore_errors=True)


def open_tensorboard(folder: Path, prefix: str):
    """A tf.summary writer for the run's scalars (TensorFlow backend only, so TensorFlow is
    imported here; workspace refuses --tensorboard on other backends)."""
    distribute.require_tensorflow("--tensorboard (tf.summary)")
    import tensorflow as tf
    return tf.summary.create_file_writer(str(layout.tensorboard_dir(folder, prefix)))


def log_scalars(writer, step: int, scalars: dict) -> None:
    import tensorflow as tf
    with writer.as_default(step=step):
        for name, value in scalars.items():
            tf.summary.scalar(name, value)
    writer.flush()


def save_checkpoint(model: keras.Model, path: Path) -> None:
    """The whole model, optimizer slots and iteration count included (the resume point)."""
    model.save(path)


def summary_of(state: dict) -> dict:
    """<prefix>.json: the chosen epoch and its score, the epochs run, the time they took,
    where the run started from (`provenance`) and its final weights' SHA-256."""
    return {"best_epoch": state["best_epoch"] + 1, "best_val_lrap": state["best_score"],
            "epochs_run": state["next_epoch"], "seconds": round(state["seconds"], 1),
            **state.get("provenance", {}), "weights_sha256": state.get("weights_sha256")}


def end_epoch(model: keras.Model, folder: Path, prefix: str, state: dict, improved: bool, last: bool) -> None:
    """Epoch `state["next_epoch"]`'s files, staged, then its commit, then their publishing
    (commit.py); after the last epoch the run is finished. One critical block: a SIGTERM
    anywhere in it lets the whole epoch end complete first."""
    epoch = state["next_epoch"]   # 1-based: the epoch just run
    history = pd.DataFrame(state["history"], columns=HISTORY_COLUMNS).to_csv(index=False)
    with shutdown.critical():
        moves = []
        if improved:
            moves.append(commit.stage(layout.weights_path(folder, prefix), epoch, model.save_weights, "weights"))
        moves.append(commit.stage(layout.history_path(folder, prefix), epoch,
                                  lambda path: commit.write_text(path, history), "history"))
        if last:
            best = layout.weights_path(folder, prefix)
            state["weights_sha256"] = file_sha256(layout.staged(best, epoch) if improved else best)
            summary = json.dumps(summary_of(state), indent=1)
            moves.append(commit.stage(layout.summary_path(folder, prefix), epoch,
                                      lambda path: commit.write_text(path, summary), "summary"))
        else:
            moves.append(commit.stage(layout.checkpoint_path(folder, prefix), epoch,
                                      lambda path: save_checkpoint(model, path), "checkpoint"))
        state["finished"] = last
        commit.commit(layout.state_path(folder, prefix), state, moves, epoch)
        commit.publish(folder, state, epoch)
        if last:
            commit.finish(folder, prefix, epoch, remove=(layout.checkpoint_path(folder, prefix),))


def fit(model: keras.Model, train: ClipData, val: ClipData, schedule: Schedule, crop_samples: int,
        folder: Path, prefix: str, *, seed: int, label: str, workers: int = 2, tensorboard: bool = False,
        provenance: dict | None = None, on_epoch=None) -> dict:
    """Train `model` by `schedule`, resuming `prefix` in `folder` if it was interrupted.
    `seed` is the unit's own seed (seeds.unit_seed); `model` is in the unit's start state
    (`start_state`). `provenance` (what the run started from, its backend, precision and
    seed) goes into <prefix>.json; a resumed run keeps the one it started with.
    `on_epoch(row)`, when given, gets each epoch's history row once it is committed
    (tune.py reports it to Ray Tune, which may end the run there).
    A model built inside a tf.distribute strategy's scope trains on its replicas, with the
    schedule scaled by `Schedule.for_replicas`. Returns the finished run's summary (also in
    <prefix>.json)."""
    replicas = distribute.model_strategy(model).num_replicas_in_sync
    schedule = schedule.for_replicas(replicas)
    folder.mkdir(parents=True, exist_ok=True)
    state = commit.recover(folder, prefix)   # the last committed epoch, and nothing else
    if state is not None and state.get("finished"):   # killed after its last commit: finish it
        commit.finish(folder, prefix, state["next_epoch"], remove=(layout.checkpoint_path(folder, prefix),))
        return json.loads(layout.summary_path(folder, prefix).read_text())
    if state is not None and layout.checkpoint_path(folder, prefix).is_file():
        model = resume(model, folder, prefix, state, schedule, crop_samples, label)
    else:
        state = {"next_epoch": 0, "best_epoch": None, "best_score": -1.0, "history": [], "seconds": 0.0,
                 "provenance": dict(provenance or {})}
    state["replicas"] = replicas  # the schedule's scaling depends on it

    # Written here rather than by Keras' TensorBoard callback: model.fit runs one epoch at
    # a time, and the callback would restart its step count at every call (and on resume).
    writer = open_tensorboard(folder, prefix) if tensorboard else None
    for epoch in range(state["next_epoch"], schedule.epochs):  # stops_before: see `last` below
        row, took = run_epoch(model, train, val, schedule, crop_samples, epoch, seed=seed, label=label,
                              workers=workers, min_batch=replicas)
        improved = record_epoch(state, row, took, schedule.keep_from_epoch)
        print(f"{label} epoch {epoch + 1:>3}/{schedule.epochs}  lr {row['lr']:.1e}  loss {row['loss']:.4f}  "
              f"val LRAP {row['val_lrap']:.4f}  lwlrap {row['val_lwlrap']:.4f}{'  *' if improved else '   '}  "
              f"{took:.0f}s", flush=True)
        last = ends_after(schedule, epoch, state["best_epoch"], label)
        if last and state["best_epoch"] is None:   # no epoch reached keep_from_epoch (a schedule shorter than it)
            improved, state["best_epoch"] = True, epoch
        end_epoch(model, folder, prefix, state, improved, last)   # the epoch's commit point
        if writer is not None:
            # step = the epoch of history.csv, so a resumed run continues the same curves
            log_scalars(writer, epoch + 1, {name: row[name] for name in HISTORY_COLUMNS[1:]})
        if on_epoch is not None:
            on_epoch(row)
        if last:
            break

    if writer is not None:
        writer.close()
    return summary_of(state)


def resume(model: keras.Model, folder: Path, prefix: str, state: dict, schedule: Schedule, crop_samples: int,
           label: str) -> keras.Model:
    """The interrupted run's model from its checkpoint (optimizer included), on the
    replicas `model` lives on; a warning when it started on another number of them
    (`schedule` is already scaled for the current one)."""
    path = layout.checkpoint_path(folder, prefix)
    strategy = distribute.model_strategy(model)
    with strategy.scope():  # its variables must live on the same replicas
        model = keras.models.load_model(path)
    check_crop(model, crop_samples, path)
    print(f"{label}: resuming at epoch {state['next_epoch'] + 1}")
    started_on, replicas = state.get("replicas", 1), strategy.num_replicas_in_sync
    if started_on != replicas:
        print(f"warning: {label} started on {started_on} replica(s) and resumes on {replicas}: from epoch "
              f"{state['next_epoch'] + 1} the global batch is {schedule.batch_size} and the lr x "
              f"sqrt({replicas}) (see history.csv); --force restarts it on {replicas}", file=sys.stderr)
    return model


def run_epoch(model: keras.Model, train: ClipData, val: ClipData, schedule: Schedule, crop_samples: int,
              epoch: int, *, seed: int, label: str, workers: int, min_batch: int) -> tuple[dict, float]:
    """Epoch `epoch` (0-based): one pass of random crops at the schedule's learning rate,
    every draw from (seed, epoch), then the validation clips scored with 3-TTA. Returns
    its history row and the seconds it took."""
    start = time.perf_counter()
    seeds.reset_epoch_generators(seeds.epoch_seed(seed, epoch))
    lr = schedule.lr_at(epoch)
    model.optimizer.learning_rate.assign(lr)
    batches = TrainBatches(train, schedule.batch_size, crop_samples, seed=seed, epoch=epoch,
                           mixup_prob=schedule.mixup_at(epoch), mixup_weight=schedule.mixup_weight,
                           label_smoothing=schedule.label_smoothing, workers=workers, min_batch=min_batch)
    # shuffle=False: TrainBatches already orders the epoch from (seed, epoch); Keras would
    # shuffle the batches again with Python's global `random`, a stream other work consumes.
    steps = EpochProgress(f"{label} epoch {epoch + 1}/{schedule.epochs}", len(batches))
    loss = model.fit(batches, epochs=1, verbose=0, shuffle=False, callbacks=[steps]).history["loss"][-1]
    scores = predict_tta(model, val, crop_samples, schedule.predict_batch_size, workers)
    row = {"epoch": epoch + 1, "lr": lr, "loss": loss, "val_lrap": lrap(val.labels, scores),
           "val_lwlrap": lwlrap(val.labels, scores)}
    return row, time.perf_counter() - start


def record_epoch(state: dict, row: dict, took: float, keep_from_epoch: int) -> bool:
    """The epoch of history row `row` into the run's state (not yet committed: end_epoch
    does that); whether it is the new best (only epochs from `keep_from_epoch` may be)."""
    epoch = row["epoch"] - 1
    improved = epoch >= keep_from_epoch and row["val_lrap"] > state["best_score"]
    if improved:
        state["best_epoch"], state["best_score"] = epoch, row["val_lrap"]
    state["history"].append(row)
    state["next_epoch"] = epoch + 1
    state["seconds"] += took
    return improved


def ends_after(schedule: Schedule, epoch: int, best_epoch: int | None, label: str) -> bool:
    """Whether the run ends after epoch `epoch` (0-based): the schedule's last, or early
    stopping would skip the next one (said, with why)."""
    if epoch + 1 == schedule.epochs:
        return True
    if schedule.stops_before(epoch + 1, best_epoch):
        print(schedule.stop_message(label, epoch, best_epoch), flush=True)
        return True
    return False


class CropMismatch(RunRecordError):
    """A checkpoint built for other crops than the run's (exit 2; settings.resolve refuses
    such options before any stage starts, this guards a folder whose record was removed)."""


def check_crop(model: keras.Model, crop_samples: int, path: Path) -> None:
    """The crop length lives in the model's audio Input; the batches must cut crops of it."""
    built = model.input["audio"].shape[-1] if isinstance(model.input, dict) else None
    if built is not None and built != crop_samples:
        raise CropMismatch(f"{path} takes {built}-sample crops, but this run cuts {crop_samples}: it was started "
                           f"with another duration; resume it with that one, or --force to restart it")


def start_state(build, seed: int, pretrained: Path | None = None, *,
                tensorflow_seed: bool = True) -> tuple[keras.Model, tuple[list, list]]:
    """A unit's starting point, from its own seed: a model built by `build()` after
    reseeding the global generators (so its initial weights depend on the unit alone),
    with `pretrained` weights loaded when given, and its optimizer freshly built.
    Returns the model and its (weights, optimizer state) snapshot, for `restore` into an
    already-traced model of the same architecture: reusing one model across folds saves
    tracing its functions again (seconds per fold on a CPU; most of a demo fold); for such
    a unit `tensorflow_seed=False` (seeds.reset_global_generators)."""
    seeds.reset_global_generators(seed, tensorflow=tensorflow_seed)
    model = build()
    if pretrained is not None:
        load_weights(model, pretrained)
    model.optimizer.build(model.trainable_variables)
    return model, (model.get_weights(), [keras.ops.convert_to_numpy(v) for v in model.optimizer.variables])


def restore(model: keras.Model, state: tuple[list, list]) -> None:
    weights, optimizer_state = state
    model.set_weights(weights)
    for variable, value in zip(model.optimizer.variables, optimizer_state):
        variable.assign(value)


REUSED = "reusing the model built for an earlier unit in this process: its start state restored, nothing traced again"


class BuiltModels:
    """The models a process has built, one per architecture (`architecture`), kept for the
    units that follow: a unit whose architecture is already built restores its own start
    state into that model (`restore`) instead of training a new one, whose train and predict
    functions would be traced (compiled, on a GPU) again: seconds per unit. A stage's main
    keeps one for its run; a warm Ray worker keeps one for every unit it serves
    (ray_scheduler.UnitWorker) and passes it to the stage. A stage has a few architectures
    (the zoo's six at most), so all are kept."""

    def __init__(self):
        self.models: dict[tuple, keras.Model] = {}

    def start(self, model_cfg: ModelConfig, n_classes: int, strategy, seed: int,
              pretrained: Path | None = None, *, label: str) -> keras.Model:
        """The unit `label`'s model in its start state, exactly as a fresh process makes it
        (`start_state`); says so when it is one built for an earlier unit."""
        key = architecture(model_cfg, n_classes, strategy)
        with strategy.scope():  # its variables, the optimizer's too, on every replica
            fresh, state = start_state(lambda: build_model(model_cfg, n_classes), seed, pretrained,
                                       tensorflow_seed=key not in self.models)
        model = self.models.setdefault(key, fresh)
        if model is not fresh:
            restore(model, state)
            print(f"{label}: {REUSED}", flush=True)
        return model

    def model(self, model_cfg: ModelConfig, n_classes: int, strategy) -> keras.Model:
        """A model of the architecture, in whatever state its last unit left it (for
        predictions, which load their weights)."""
        key = architecture(model_cfg, n_classes, strategy)
        if key not in self.models:
            with strategy.scope():
                self.models[key] = build_model(model_cfg, n_classes)
        return self.models[key]


def architecture(model_cfg: ModelConfig, n_classes: int, strategy) -> tuple:
    """What decides a built model and its traced functions: the model's config as the
    profile scaled it (widths, crop length, front end, lr), the number of classes, the
    backend, the dtype policy (--mixed-precision) and the strategy whose devices hold its
    variables (on TensorFlow the strategy itself: the default one is one per process)."""
    where = strategy if distribute.backend() == "tensorflow" else type(strategy).__name__
    return (model_cfg, n_classes, keras.backend.backend(), keras.mixed_precision.global_policy().name, where)
