"""The worker of tests/test_faults.py (run as `python fault_driver.py ROOT OUT KIND...`).

It imports TensorFlow and Keras once, then runs each training in a child forked from this
process (before this process has run any TensorFlow op: a fork after that would lose the
runtime's threads), so a killed run and its resume each cost a tiny model's tracing, not
TensorFlow's import. The KINDs:

    fit       training.fit, 2 epochs, every epoch may be kept (a fold's schedule)
    pretrain  training.fit, 2 epochs, the first never kept (the pretraining's keep_from_epoch)
    stacker   stacking.fit_stacker, 2 folds with their weights saved (ensemble.py's)

The training arithmetic is the real one on a tiny dense model; only the data is a
stand-in (random batches drawn, as TrainBatches does, from generators the epoch loop
reseeds). First an uninterrupted reference run, traced: every write point it passes
(faults.py) is a case. Then for every case and both signals a run killed there and a
resume. OUT gets, per kind, as JSON: the points, and what each killed run left and its
resume gave.
"""
from __future__ import annotations

import hashlib
import json
import os
import signal
import sys
import traceback
import types
from pathlib import Path

TESTS = Path(__file__).resolve().parent
sys.path[:0] = [str(TESTS.parent / "code"), str(TESTS)]
os.environ["CUDA_VISIBLE_DEVICES"] = ""

import dataclasses  # noqa: E402

import h5py  # noqa: E402
import keras  # noqa: E402
import numpy as np  # noqa: E402

from fat2019 import config, layout  # noqa: E402
from fat2019.ensemble import stacking  # noqa: E402
from fat2019.engine import training  # noqa: E402
from fat2019.util import faults, shutdown  # noqa: E402

SEED = 1234
PREFIX = "fold0"
SIGNALS = ("SIGKILL", "SIGTERM")
PARALLEL = 2   # children at a time: the runs are independent
N_IN, N_CLASSES = 6, 4
VAL_X = np.random.default_rng(1).random((16, N_IN)).astype(np.float32)
VAL_Y = (np.random.default_rng(2).random((16, N_CLASSES)) < 0.4).astype(np.float32)
VAL_Y[0] = 1.0   # every class has a positive


class RandomBatches(keras.utils.PyDataset):
    """An epoch's batches, drawn from numpy's global generator when the epoch builds them
    (training.fit reseeds it per epoch, as TrainBatches draws from (seed, epoch))."""

    def __init__(self, *args, **kwargs):
        super().__init__()
        w = np.random.default_rng(0).standard_normal((N_IN, N_CLASSES))
        xs = [np.random.random((8, N_IN)).astype(np.float32) for _ in range(3)]
        self.items = [(x, (x @ w + 0.5 * np.random.standard_normal((8, N_CLASSES)) > 0).astype(np.float32))
                      for x in xs]

    def __len__(self):
        return len(self.items)

    def __getitem__(self, index):
        return self.items[index]


def stand_in_scores(model, val, *args, **kwargs):
    return keras.ops.convert_to_numpy(model.predict_on_batch(VAL_X))


training.TrainBatches, training.predict_tta = RandomBatches, stand_in_scores


def build() -> keras.Model:
    inputs = keras.Input((N_IN,))
    hidden = keras.layers.Dense(8, activation="relu")(inputs)
    model = keras.Model(inputs, keras.layers.Dense(N_CLASSES, activation="sigmoid")(hidden))
    model.compile(optimizer=keras.optimizers.Nadam(1e-2), loss="binary_crossentropy", jit_compile=False)
    return model


def run_fit(folder: Path, keep_from_epoch: int) -> None:
    """What train.py / pretrain.py do for one unit: skip it when finished, else fit it."""
    if layout.is_finished(folder, PREFIX):
        return
    model, _ = training.start_state(build, SEED)
    schedule = training.Schedule(epochs=2, lr=1e-2, lr_milestones=(1,), lr_factor=0.5, mixup_prob=0.0,
                                 mixup_weight=0.7, label_smoothing=0.0, batch_size=8, predict_batch_size=8,
                                 keep_from_epoch=keep_from_epoch)
    training.fit(model, None, types.SimpleNamespace(labels=VAL_Y), schedule, 0, folder, PREFIX, seed=SEED,
                 label="tiny", workers=0, provenance={"started_from": {"kind": "scratch"}, "seed": SEED})


def stacker_inputs():
    rng = np.random.default_rng(0)
    y = (rng.random((40, 5)) < 0.3).astype(np.float32)
    x = rng.random((40, 5, 3)).astype(np.float32)
    x[..., 0] = 0.7 * y + 0.3 * x[..., 0]
    x_test = rng.random((6, 5, 3)).astype(np.float32)
    profile = dataclasses.replace(config.PROFILES["demo"], n_folds=2, stacker_epochs=2, stacker_patience=10,
                                  stacker_lr=1e-2, stacker_batch_size=8)
    return x, y, np.arange(40) % 2, x_test, profile


def run_stacker(folder: Path) -> None:
    x, y, folds, x_test, profile = stacker_inputs()
    folder.mkdir(parents=True, exist_ok=True)
    oof, test, class_weights = stacking.fit_stacker(x, y, folds, x_test, profile, SEED, save_dir=folder)
    np.savez(folder.parent / f"{folder.name}.outputs.npz", oof=oof, test=test, class_weights=class_weights)


JOBS = {"fit": lambda folder: run_fit(folder, 0), "pretrain": lambda folder: run_fit(folder, 1),
        "stacker": run_stacker}


def start_child(job, folder: Path, log: Path, env: dict) -> int:
    """Fork a child that runs `job(folder)` with `env` set, its output appended to `log`; its pid."""
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
            os.dup2(fd, 1)
            os.dup2(fd, 2)
            for name in (faults.FAULT_ENV, faults.TRACE_ENV):
                os.environ.pop(name, None)
            os.environ.update(env)
            shutdown.install()   # as cli.run_stage does: SIGTERM raises Terminated
            job(folder)
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else 1
        except BaseException:
            traceback.print_exc()
            code = 1
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
    return pid


def exit_status(status: int) -> int:
    return -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)


def in_children(runs: list[tuple], at_once: int = PARALLEL) -> list[int]:
    """start_child(*run) for each run, `at_once` at a time; their exit statuses (-signal
    when a signal ended one)."""
    statuses, running, waiting = [None] * len(runs), {}, list(enumerate(runs))
    while waiting or running:
        while waiting and len(running) < at_once:
            i, run = waiting.pop(0)
            running[start_child(*run)] = i
        pid, status = os.wait()
        statuses[running.pop(pid)] = exit_status(status)
    return statuses


def digest_h5(path: Path) -> str:
    digest = hashlib.sha256()
    with h5py.File(path, "r") as f:
        names = []
        f.visititems(lambda name, item: names.append(name) if isinstance(item, h5py.Dataset) else None)
        for name in sorted(names):
            digest.update(name.encode() + np.ascontiguousarray(f[name][()]).tobytes())
    return digest.hexdigest()


def outcome(folder: Path) -> dict:
    """What a run left: its files, every weights file's arrays (hashed), its history and
    its summary without the time it took; the stacker's outputs."""
    found = {"files": sorted(p.name for p in folder.iterdir())}
    for path in sorted(folder.glob(f"*{layout.WEIGHTS_SUFFIX}")):
        found[path.name] = digest_h5(path)
    history, summary = layout.history_path(folder, PREFIX), layout.summary_path(folder, PREFIX)
    if history.is_file():
        found["history"] = history.read_text()
    if summary.is_file():
        found["summary"] = {k: v for k, v in json.loads(summary.read_text()).items() if k != "seconds"}
    outputs = folder.parent / f"{folder.name}.outputs.npz"
    if outputs.is_file():
        with np.load(outputs) as arrays:
            found["outputs"] = {k: hashlib.sha256(arrays[k].tobytes()).hexdigest() for k in arrays.files}
    return found


def fingerprint(folder: Path) -> str:
    """The bytes a resume starts from: every file's name and content."""
    digest = hashlib.sha256()
    for path in sorted(folder.iterdir()):
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def run_kind(kind: str, root: Path) -> dict:
    """The reference run (traced), then each write point killed by each signal, then the
    resumes. A resume is a deterministic function of the folder it starts from, so kills
    that leave the same bytes share one resume."""
    job = JOBS[kind]
    root.mkdir(parents=True)
    trace = root / "trace.txt"
    reference = root / "reference"
    [rc] = in_children([(job, reference, root / "reference.log", {faults.TRACE_ENV: str(trace)})])
    points = list(dict.fromkeys(trace.read_text().splitlines()))
    cases = [{"point": where, "signal": sig, "folder": root / f"{i}-{sig}"}
             for i, where in enumerate(points) for sig in SIGNALS]
    kills = [(job, case["folder"], case["folder"].with_suffix(".log"),
              {faults.FAULT_ENV: faults.spec(case["point"], case["signal"])})
             for case in cases]
    for case, killed in zip(cases, in_children(kills)):
        case.update(killed=killed, left=sorted(p.name for p in case["folder"].iterdir()),
                    log=case["folder"].with_suffix(".log").read_text(), key=fingerprint(case["folder"]))
    first = {}   # fingerprint -> the case whose folder is resumed for every case with it
    for case in cases:
        first.setdefault(case["key"], case)
    resumes = list(first.values())
    statuses = in_children([(job, case["folder"], case["folder"].with_suffix(".resume.log"), {}) for case in resumes])
    resumed = {case["key"]: {"resumed": status, "resumed_in": case["folder"].name,
                             "resume_log": case["folder"].with_suffix(".resume.log").read_text(),
                             **outcome(case["folder"])}
               for case, status in zip(resumes, statuses)}
    return {"reference": {"rc": rc, **outcome(reference)}, "points": points,
            "cases": [{**{k: v for k, v in case.items() if k not in ("folder", "key")}, **resumed[case["key"]]}
                      for case in cases]}


def main(root: Path, out: Path, kinds: list[str]) -> None:
    out.write_text(json.dumps({kind: run_kind(kind, root / kind) for kind in kinds}, indent=1))


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3:])
