"""Data-parallel training (MirroredStrategy, opt-in), its batch and learning-rate rule, the
per-epoch TensorBoard scalars, and what stands in for them on the JAX backend.

MirroredStrategy runs here over a CPU split into 2 logical devices. The split must happen
before TensorFlow starts, and this process has started it, so the training run is a fresh
process: train.py's real path with --strategy mirrored --logical-cpus 2 --tensorboard,
with recorders around the batches and the epoch loop.
"""
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tensorflow as tf

from fat2019 import layout
from fat2019.engine import distribute
from fat2019.engine import training
from fat2019.data.batches import ClipData, TrainBatches
from helpers import run_under_jax

PER_REPLICA_BATCH = 2
SETTINGS = ["n_folds=2", "epochs=2", f"batch_size={PER_REPLICA_BATCH}", "predict_batch_size=4", "width=0.0625",
            "duration=0.5", "lr_milestones=1", "early_stop_min_epoch=0", "lr_multiplier=1"]
MODEL_LR = 5e-4   # the zoo's lr (lr_multiplier=1)

RECORDING_RUN = """
import json, sys
import train
from fat2019.data import batches
from fat2019.engine import training

seen = {"batches": {}, "runs": []}
real_getitem, real_fit = batches.TrainBatches.__getitem__, training.fit

def getitem(self, index):
    x, y = real_getitem(self, index)
    seen["batches"][f"{self.epoch}/{index}"] = [self.batch_size, len(y)]
    return x, y

def fit(model, *args, **kwargs):
    strategy = model.distribute_strategy
    seen["runs"].append({"strategy": type(strategy).__name__, "replicas": strategy.num_replicas_in_sync,
                         "devices": list(strategy.extended.worker_devices),
                         "variable": type(model.trainable_variables[0].value).__name__})
    return real_fit(model, *args, **kwargs)

batches.TrainBatches.__getitem__ = getitem
training.fit = fit
code = train.main(json.loads(sys.argv[1]))
json.dump(seen, open(sys.argv[2], "w"))
sys.exit(code)
"""


@pytest.fixture(scope="module")
def mirrored_run(pipeline_run, tmp_path_factory):
    root = tmp_path_factory.mktemp("mirrored")
    args = ["--profile", "demo", "--data-dir", str(pipeline_run["data"]), "--models-dir", str(root / "models"),
            "--set", *SETTINGS, "--models", "v1mix", "--folds", "0", "--from-scratch", "--workers", "1",
            "--strategy", "mirrored", "--logical-cpus", "2", "--tensorboard"]
    env = dict(os.environ, PYTHONPATH=str(Path(training.__file__).parents[2]), TF_CPP_MIN_LOG_LEVEL="2")
    done = subprocess.run([sys.executable, "-c", RECORDING_RUN, json.dumps(args), str(root / "seen.json")],
                          env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    folder = root / "models" / "v1mix"
    return dict(seen=json.loads((root / "seen.json").read_text()), root=root, folder=folder,
                history=pd.read_csv(folder / "fold0.history.csv"), stdout=done.stdout)


def test_mirrored_training_runs_on_two_replicas(mirrored_run):
    (run,) = mirrored_run["seen"]["runs"]
    assert run["strategy"] == "MirroredStrategy" and run["replicas"] == 2
    assert len(run["devices"]) == 2 and all("CPU" in d for d in run["devices"])
    assert run["variable"] == "MirroredVariable"   # built inside the strategy's scope
    assert (mirrored_run["folder"] / "fold0.json").is_file()


def test_global_batch_is_per_replica_batch_times_replicas(mirrored_run):
    n_train = (pd.read_csv(mirrored_run["root"] / "models" / "folds.csv")["fold"] != 0).sum()
    global_batch = PER_REPLICA_BATCH * 2
    full, rest = divmod(n_train, global_batch)
    expected = [global_batch] * full + ([rest] if rest >= 2 else [])   # at least one clip per replica
    for epoch in (0, 1):
        sizes = [mirrored_run["seen"]["batches"][f"{epoch}/{i}"] for i in range(len(expected))]
        assert [n for _, n in sizes] == expected and all(bs == global_batch for bs, _ in sizes)
    assert len(mirrored_run["seen"]["batches"]) == 2 * len(expected)


def test_a_last_batch_too_small_for_the_replicas_is_left_out():
    clips = ClipData(cache=None, rows=np.arange(7), labels=np.zeros((7, 3), np.float32))

    def n_batches(min_batch):
        return len(TrainBatches(clips, 2, 100, seed=0, epoch=0, mixup_prob=0.0, mixup_weight=0.7,
                                label_smoothing=0.0, min_batch=min_batch))
    assert n_batches(1) == 4 and n_batches(2) == 3


def test_learning_rate_follows_the_square_root_rule(mirrored_run):
    lrs = mirrored_run["history"]["lr"].tolist()
    assert lrs == pytest.approx([MODEL_LR * math.sqrt(2), MODEL_LR * math.sqrt(2) / 2])


def test_tensorboard_has_every_history_scalar_per_epoch(mirrored_run):
    logdir = mirrored_run["folder"] / "tensorboard" / "fold0"
    events = list(logdir.glob("events.out.tfevents.*"))
    assert events
    logged = {}
    for path in events:
        for event in tf.compat.v1.train.summary_iterator(str(path)):
            for value in event.summary.value:
                logged[(value.tag, event.step)] = float(tf.make_ndarray(value.tensor))
    history = mirrored_run["history"]
    for _, row in history.iterrows():
        for name in ("lr", "loss", "val_lrap", "val_lwlrap"):
            assert logged[(name, int(row["epoch"]))] == pytest.approx(row[name], rel=1e-5)
    assert {step for _, step in logged} == {1, 2}


def test_schedule_for_replicas_scales_batches_and_lr_only():
    schedule = training.Schedule(epochs=5, lr=1e-3, lr_milestones=(2,), lr_factor=0.5, mixup_prob=0.6,
                                 mixup_weight=0.7, label_smoothing=0.01, batch_size=16, predict_batch_size=64)
    assert schedule.for_replicas(1) == schedule
    four = schedule.for_replicas(4)
    assert (four.batch_size, four.predict_batch_size) == (64, 256)
    assert four.lr_at(0) == pytest.approx(2e-3) and four.lr_at(3) == pytest.approx(1e-3)
    assert (four.epochs, four.lr_milestones, four.mixup_prob) == (5, (2,), 0.6)


def test_the_changed_batch_and_lr_are_said_once(mirrored_run):
    said = [line for line in mirrored_run["stdout"].splitlines() if "on 2 replicas" in line]
    assert len(said) == 1
    assert (f"global batch 2 x {PER_REPLICA_BATCH} = {2 * PER_REPLICA_BATCH} clips" in said[0]
            and f"learning rate {MODEL_LR:.2e} -> {MODEL_LR * math.sqrt(2):.2e}" in said[0])


def test_one_device_is_the_default_and_mirrored_is_opt_in():
    from fat2019 import cli
    args = cli.stage_parser("", trains=True).parse_args([])
    assert args.strategy == "default"
    strategy = distribute.make_strategy(args.strategy)
    assert strategy.num_replicas_in_sync == 1
    assert not isinstance(strategy, tf.distribute.MirroredStrategy)
    with pytest.raises(SystemExit, match="choose one of"):
        distribute.make_strategy("auto")


def test_jax_gets_one_device_and_tensorflow_only_options_are_refused():
    run_under_jax("""
        import pytest
        from fat2019 import cli
        from fat2019.engine import distribute, workspace
        strategy = distribute.make_strategy("default")
        assert strategy.num_replicas_in_sync == 1
        with strategy.scope():
            model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
        assert distribute.model_strategy(model).num_replicas_in_sync == 1
        for argv, option in ((["--strategy", "mirrored"], "--strategy mirrored"),
                             (["--logical-cpus", "2"], "--logical-cpus"),
                             (["--tensorboard"], "--tensorboard")):
            args = cli.stage_parser("", trains=True).parse_args(["--profile", "demo", *argv])
            with pytest.raises(SystemExit, match=f"{option}.* needs the TensorFlow backend.*'jax'"):
                workspace.Workspace(args)
    """)


def test_logical_cpus_once_tensorflow_runs_is_refused():
    tf.config.list_logical_devices("CPU")   # TensorFlow's runtime is started
    with pytest.raises(SystemExit, match="fresh process"):
        distribute.make_strategy("mirrored", logical_cpus=len(tf.config.list_logical_devices("CPU")) + 1)


def test_force_forgets_the_runs_tensorboard_logs(tmp_path):
    for prefix in ("fold0", "fold1"):
        layout.tensorboard_dir(tmp_path, prefix).mkdir(parents=True)
        (layout.tensorboard_dir(tmp_path, prefix) / "events.out.tfevents.1").write_text("x")
    training.clear(tmp_path, "fold0")
    assert not layout.tensorboard_dir(tmp_path, "fold0").exists()
    assert (layout.tensorboard_dir(tmp_path, "fold1") / "events.out.tfevents.1").is_file()


class Interrupted(BaseException):
    """Stands for a kill: not an Exception, so no stage handler turns it into an exit code."""


def test_resuming_on_another_replica_count_is_said(pipeline_run, tmp_path, capsys):
    import train
    args = ["--profile", "demo", "--data-dir", str(pipeline_run["data"]), "--models-dir", str(tmp_path),
            "--set", *SETTINGS, "--models", "v1mix", "--folds", "0", "--from-scratch", "--workers", "1"]
    real_predict = training.predict_tta

    def run_killed_in_epoch_2():
        calls = []

        def predict_then_stop(*a, **kw):   # validation of epoch 2: the run is killed
            calls.append(1)
            if len(calls) == 2:
                raise Interrupted
            return real_predict(*a, **kw)

        with pytest.MonkeyPatch.context() as m:
            m.setattr(training, "predict_tta", predict_then_stop)
            with pytest.raises(Interrupted):
                train.main(args)

    run_killed_in_epoch_2()
    state_path = tmp_path / "v1mix" / "fold0.state.json"
    state = json.loads(state_path.read_text())
    assert (state["next_epoch"], state["replicas"]) == (1, 1)

    state["replicas"] = 2              # as if the run had started on 2 GPUs
    state_path.write_text(json.dumps(state))
    capsys.readouterr()
    assert train.main(args) == 0
    err = capsys.readouterr().err
    assert "started on 2 replica(s) and resumes on 1: from epoch 2 the global batch is 2" in err
    assert (tmp_path / "v1mix" / "fold0.json").is_file()

    training.clear(tmp_path / "v1mix", "fold0")   # a run that did not change says nothing
    run_killed_in_epoch_2()
    assert train.main(args) == 0
    assert "replica" not in capsys.readouterr().err
