"""Folds sharded over two machines that share models/: machine A trains and predicts fold
0, machine B fold 1 (--folds). Both use one folds.csv; predictions are gathered only once
every fold is there, and the ensemble refuses (exit code 2, naming the model and folds)
until then."""
import contextlib
import io
import os
import shutil

import numpy as np
import pandas as pd
import pytest

import ensemble
from fat2019.data import folds as folds_lib
from fat2019 import layout
import predict
import train
from fat2019.data.dataset import ClipSet
from fat2019.cli import run_stage

SETTINGS = ["n_folds=2", "epochs=1", "width=0.0625", "duration=0.5", "lr_milestones=1", "early_stop_min_epoch=0",
            "lr_multiplier=1", "stacker_epochs=2"]


def printed(main, args) -> tuple[int | None, str, str]:
    """A stage run as from the command line: (exit code, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            run_stage(lambda: main(args))
        except SystemExit as e:
            return e.code, out.getvalue(), err.getvalue()
    raise AssertionError("run_stage always exits")


@pytest.fixture(scope="module")
def shards(pipeline_run, tmp_path_factory):
    """Machine A, then machine B, into one models/; what each step printed and left."""
    root = tmp_path_factory.mktemp("sharding")
    models, folder = root / "models", root / "models" / "v1mix"
    common = ["--profile", "demo", "--data-dir", str(pipeline_run["data"]), "--models-dir", str(models),
              "--submissions-dir", str(root / "subs"), "--set", *SETTINGS, "--models", "v1mix"]
    seen = {}
    for machine, fold in (("A", 0), ("B", 1)):
        np.random.seed(fold)  # another machine, another global random state
        shard = common + ["--folds", str(fold), "--workers", "1"]
        seen[f"{machine} train"] = printed(train.main, shard + ["--from-scratch"])
        seen[f"{machine} folds.csv"] = (models / "folds.csv").read_bytes(), (models / "folds.csv").stat().st_mtime_ns
        seen[f"{machine} predict"] = printed(predict.main, shard)
        seen[f"{machine} files"] = sorted(p.name for p in folder.iterdir())
        seen[f"{machine} ensemble"] = printed(ensemble.main, common)
    return dict(root=root, models=models, folder=folder, common=common, seen=seen)


def test_every_step_ran(shards):
    seen = shards["seen"]
    for step in ("A train", "A predict", "B train", "B predict", "B ensemble"):
        assert seen[step][0] == 0, (step, seen[step])


def test_first_shard_writes_its_fold_and_waits_for_the_other(shards):
    code, out, _ = shards["seen"]["A predict"]
    files = shards["seen"]["A files"]
    assert {"fold0.weights.h5", "fold0.oof.csv", "fold0.test.csv"} <= set(files)
    assert not {"fold1.weights.h5", "oof.csv", "test.csv"} & set(files)
    assert "waiting for v1mix folds [1]" in out


def test_ensemble_refuses_while_a_fold_is_missing_and_names_it(shards):
    code, out, err = shards["seen"]["A ensemble"]
    assert code == 2
    assert "cannot ensemble" in err and "v1mix: folds [1] not trained and predicted" in err
    assert "submission" not in out


def test_second_machine_reads_the_same_folds_csv(shards):
    (a_bytes, a_mtime), (b_bytes, b_mtime) = shards["seen"]["A folds.csv"], shards["seen"]["B folds.csv"]
    assert a_bytes == b_bytes and a_mtime == b_mtime   # read, not written again


def test_last_shard_gathers_every_fold(shards):
    folder = shards["folder"]
    assert "v1mix: oof.csv and test.csv written (2 folds)" in shards["seen"]["B predict"][1]
    oof = pd.read_csv(folder / "oof.csv").set_index("fname")
    parts = [pd.read_csv(folder / f"fold{k}.oof.csv").set_index("fname") for k in (0, 1)]
    assert sorted(oof.index) == sorted(pd.read_csv(shards["models"] / "folds.csv")["fname"])
    assert pd.concat(parts).loc[oof.index].to_numpy() == pytest.approx(oof.to_numpy(), abs=1e-5)
    tests = [pd.read_csv(folder / f"fold{k}.test.csv").set_index("fname") for k in (0, 1)]
    test = pd.read_csv(folder / "test.csv").set_index("fname")
    assert ((tests[0] + tests[1]) / 2).loc[test.index].to_numpy() == pytest.approx(test.to_numpy(), abs=1e-5)
    assert (shards["root"] / "subs" / "submission.csv").is_file()


def test_a_fold_retrained_after_its_prediction_counts_as_missing(shards, tmp_path):
    """By content hash (fold<k>.predicted.json), not by modification time."""
    folder = tmp_path / "v1mix"
    shutil.copytree(shards["folder"], folder)
    assert layout.missing_folds(folder, 2) == [] and layout.is_gathered(folder, 2)
    weights = folder / "fold1.weights.h5"
    later = (folder / "fold1.oof.csv").stat().st_mtime_ns + 10**9
    os.utime(weights, ns=(later, later))        # newer, the same bytes: still predicted
    assert layout.missing_folds(folder, 2) == [] and layout.is_gathered(folder, 2)
    with open(weights, "ab") as f:              # other bytes: as if retrained
        f.write(b"\0")
    assert layout.missing_folds(folder, 2) == [1] and not layout.is_gathered(folder, 2)


def test_folds_ignore_the_global_random_state(tmp_path):
    rng = np.random.default_rng(0)
    labels = (rng.random((120, 12)) < 0.15).astype(np.float32)
    labels[np.arange(120), rng.integers(0, 12, 120)] = 1
    clips = ClipSet("curated", [f"c{i:03d}.wav" for i in range(120)], [], labels)
    written = []
    for seed in (1, 2):
        np.random.seed(seed)
        folds_lib.load_or_create(tmp_path / str(seed), clips, 5)
        written.append((tmp_path / str(seed) / folds_lib.FOLDS_CSV).read_bytes())
    assert written[0] == written[1]
