"""Small builders of competition-layout datasets for tests (no generator needed)."""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

CLASSES = ["Bark", "Buzz", "Chirp", "Drip"]


def tone(seconds: float, freq: float = 440.0, rate: int = 44100, amp: float = 0.3,
         silence: float = 0.0, seed: int = 0) -> np.ndarray:
    """A decaying tone with a little noise, between `silence` seconds of digital silence."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate)) / rate
    x = amp * np.sin(2 * np.pi * freq * t) * np.exp(-t / max(seconds, 1e-3)) + 0.003 * rng.standard_normal(len(t))
    pad = np.zeros(int(silence * rate))
    return np.concatenate([pad, x, pad]).astype(np.float32)


def write_csv(path: Path, header: list[str], rows: list[list]) -> None:
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)


def make_dataset(root: Path, n_curated: int = 6, n_noisy: int = 4, n_test: int = 3,
                 classes: list[str] = CLASSES) -> Path:
    """A tiny valid dataset: short tones, one class (sometimes two) per clip."""
    import soundfile as sf   # here, so that a JAX-machine test (run_under_jax) may import helpers
    (root / "audio_train").mkdir(parents=True, exist_ok=True)
    (root / "audio_test").mkdir(parents=True, exist_ok=True)
    rows = {"curated": [], "noisy": []}
    k = 0
    for name, n in (("curated", n_curated), ("noisy", n_noisy)):
        for i in range(n):
            fname = f"{name[0]}{i:03d}.wav"
            labels = [classes[k % len(classes)]] + ([classes[(k + 1) % len(classes)]] if k % 3 == 0 else [])
            sf.write(root / "audio_train" / fname, tone(0.2 + 0.1 * i, 200 + 50 * k, silence=0.1, seed=k), 44100,
                     subtype="PCM_16")
            rows[name].append([fname, ",".join(labels)])
            k += 1
    write_csv(root / "train_curated.csv", ["fname", "labels"], rows["curated"])
    write_csv(root / "train_noisy.csv", ["fname", "labels"], rows["noisy"])
    test_rows = []
    for i in range(n_test):
        fname = f"t{i:03d}.wav"
        sf.write(root / "audio_test" / fname, tone(0.3 + 0.1 * i, 300 + 70 * i, seed=100 + i), 44100, subtype="PCM_16")
        test_rows.append([fname] + [0] * len(classes))
    write_csv(root / "sample_submission.csv", ["fname"] + classes, test_rows)
    return root


def reference_global_features(x: np.ndarray, num_steps: int = 128) -> np.ndarray:
    """The definition (docs/faithfulness.md, "Features"), written as the straightforward loop (in float64)."""
    x = np.asarray(x, np.float64)
    stride = len(x) / num_steps
    feats = []
    for s in range(num_steps):
        i = s * stride
        wl = max(0, int(i - stride / 2))
        wr = int(i + 1.5 * stride)
        local = x[wl:wr]
        feats.append([local.mean(), local.std(), local.max() - local.min()]
                     + np.percentile(local, [0, 1, 25, 30, 50, 60, 75, 99, 100]).tolist())
    return np.array(feats)


# The tiny end-to-end pipeline that test_pipeline.py, test_reports.py and test_tag.py share
# (run once per session by the `pipeline_run` fixture in conftest.py): 2 folds, 1-2 epochs,
# tiny models.
PIPELINE_MODELS = ["v1mix", "max3exam"]
PIPELINE_SETTINGS = ["epochs=2", "pretrain_epochs=1", "n_folds=2", "width=0.0625", "duration=0.5",
                     "lr_milestones=1", "pretrain_lr_milestones=1", "pretrain_keep_from_epoch=0",
                     "stacker_epochs=3", "early_stop_min_epoch=0", "lr_multiplier=1"]


def run_tiny_pipeline(root: Path, monkeypatch) -> dict:
    """Every stage, in-process, on a 12-clip dataset under `root`. Records which clips each
    fold model trained on and which weights predicted which clips, for the leakage test.

    Returns root, data, common (the stage arguments), trained_on, predicted."""
    import keras

    import ensemble
    import features
    import predict
    import pretrain
    import train
    from fat2019.ensemble import predictor
    from fat2019.engine import training

    data = make_dataset(root / "data", n_curated=12, n_noisy=6, n_test=4)
    common = ["--profile", "demo", "--data-dir", str(data), "--models-dir", str(root / "models"),
              "--submissions-dir", str(root / "subs"), "--set", *PIPELINE_SETTINGS, "--models", *PIPELINE_MODELS]
    assert features.main(["--data-dir", str(data), "--workers", "1"]) == 0

    trained_on = {}   # weights file -> fnames its fold model trained on
    predicted = []    # (weights file, fnames) of every prediction
    loaded = {}
    real_fit, real_predict, real_load = training.fit, predictor.predict_tta, keras.Model.load_weights

    def recording_fit(model, train_data, val, schedule, crop, folder, prefix, **kw):
        trained_on[str(folder / f"{prefix}.weights.h5")] = set(train_data.fnames)
        return real_fit(model, train_data, val, schedule, crop, folder, prefix, **kw)

    def recording_predict(model, clips, *a, **kw):
        predicted.append((loaded["path"], clips.fnames))
        return real_predict(model, clips, *a, **kw)

    def recording_load(self, path, *a, **kw):
        loaded["path"] = str(path)
        return real_load(self, path, *a, **kw)

    monkeypatch.setattr(training, "fit", recording_fit)
    monkeypatch.setattr(predictor, "predict_tta", recording_predict)
    monkeypatch.setattr(keras.Model, "load_weights", recording_load)
    try:
        for stage in (pretrain, train, predict, ensemble):
            assert stage.main(common) == 0, stage.__name__
    finally:
        monkeypatch.undo()
    return dict(root=root, data=data, common=common, trained_on=trained_on, predicted=predicted)


# ---------------------------------------------------------------------------------------
# Running code under the JAX backend
# ---------------------------------------------------------------------------------------

# What the project's GPU machines with JAX lack: a snippet run with these blocked shows that
# the code path needs only numpy / pandas / keras / jax.
NOT_ON_JAX_MACHINES = ("tensorflow", "kapre", "librosa", "soundfile")

# Prepended to every snippet: code/ and tests/ on sys.path, and an import hook that makes
# the BLOCKED top-level packages fail to import as if they were not installed (a snippet may
# unblock some later with BLOCKED.discard(name)).
_JAX_PRELUDE = """
import sys
sys.path[:0] = {paths!r}
BLOCKED = set({blocked!r})

class NotInstalled:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {{name!r}} (blocked by the test)", name=name)
        return None

sys.meta_path.insert(0, NotInstalled())
import keras
assert keras.backend.backend() == "jax", keras.backend.backend()
"""


def run_under_jax(snippet: str, cwd: Path | None = None, blocked=NOT_ON_JAX_MACHINES,
                  timeout: float = 300) -> str:
    """Run `snippet` in a fresh Python with KERAS_BACKEND=jax (Keras fixes its backend per
    process, and the test process runs TensorFlow), with the `blocked` packages made
    unimportable. Fails the calling test with the child's output unless it exits 0;
    returns its stdout."""
    import os
    import subprocess
    import sys
    import textwrap

    tests_dir = Path(__file__).resolve().parent
    prelude = _JAX_PRELUDE.format(paths=[str(tests_dir.parent / "code"), str(tests_dir.parent / "code" / "tools"), str(tests_dir)],
                                  blocked=tuple(blocked))
    # Unoptimised CPU code compiles several times faster; tests run tiny models, whose time
    # is mostly compilation.
    env = dict(os.environ, KERAS_BACKEND="jax", JAX_PLATFORMS="cpu", TF_CPP_MIN_LOG_LEVEL="2",
               XLA_FLAGS=os.environ.get("XLA_FLAGS", "--xla_backend_optimization_level=0"))
    result = subprocess.run([sys.executable, "-c", prelude + textwrap.dedent(snippet)],
                            cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, (f"snippet failed under JAX (exit {result.returncode}):\n"
                                    f"{result.stdout[-3000:]}\n{result.stderr[-6000:]}")
    return result.stdout


def stand_in_nvidia_smi(folder: Path, gpus: list[str], driver: str = "550.54.15", cuda: str = "12.4") -> Path:
    """`folder`/nvidia-smi, a stand-in for NVIDIA's: `-L` lists `gpus` (names) as the real one
    does, plain it prints the header line with the driver and its CUDA version; with no
    `gpus` it fails as on a machine whose driver is not loaded. Put `folder` first on PATH."""
    folder.mkdir(parents=True, exist_ok=True)
    listing = "".join(f"GPU {i}: {name} (UUID: GPU-{i:08d}-0000-0000-0000-000000000000)\\n"
                      for i, name in enumerate(gpus))
    body = (f'[ "$1" = -L ] && {{ printf "{listing}"; exit 0; }}\n'
            f'echo "| NVIDIA-SMI {driver}    Driver Version: {driver}    CUDA Version: {cuda}     |"\n'
            if gpus else
            'echo "NVIDIA-SMI has failed because it couldn\'t communicate with the NVIDIA driver."\nexit 9\n')
    path = folder / "nvidia-smi"
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(0o755)
    return path


def weight_arrays(path: Path) -> dict:
    """Every array of a Keras weights file, by its path inside the HDF5 file."""
    import h5py
    arrays = {}
    with h5py.File(path, "r") as f:
        f.visititems(lambda name, item: arrays.__setitem__(name, item[()]) if isinstance(item, h5py.Dataset) else None)
    return arrays


def assert_same_weights(a: Path, b: Path) -> int:
    """Two weights files hold the same arrays, bit for bit (a real model's: more than 10);
    returns how many."""
    x, y = weight_arrays(a), weight_arrays(b)
    assert x.keys() == y.keys() and len(x) > 10, (a, b)
    different = [n for n in x if not np.array_equal(x[n], y[n])]
    assert different == [], f"{a} and {b}: {len(different)} weight arrays differ, e.g. {different[:3]}"
    return len(x)
