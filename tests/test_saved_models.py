"""Files saved before the library moved into code/fat2019/ (commit PRE_MOVE, flat modules
in code/) still load: a whole-model .keras file and a .weights.h5 file, with every custom
layer of the project in them, give the same outputs with today's code.

The old code comes from the repository's own history (git archive), so the test needs a
clone with history; a shallow clone fails it, loudly, rather than skipping the check."""
import json
import subprocess
import sys
import tarfile
import zipfile
from io import BytesIO
from pathlib import Path

import keras
import numpy as np
import pytest

import fat2019.nn  # noqa: F401  (registers the custom layers)
from fat2019 import config
from fat2019.nn import models
from fat2019.nn.registry import PACKAGE

ROOT = Path(__file__).resolve().parent.parent
PRE_MOVE = "0cfb2ba"   # the last commit with the flat layout
N_CLASSES = 6

# Runs inside the old code/ (flat modules): saves each network three ways -- the whole model,
# its weights, and its outputs on fixed inputs.
SAVE_WITH_OLD_CODE = """
import sys
from pathlib import Path
import numpy as np, keras
import config, models
out = Path(sys.argv[1])
profile = config.PROFILES["demo"]
nets = {{
    "conv": models.build_model(profile.scale(config.ZOO_BY_NAME["v1mix"]), {n}),
    "highway": models.build_model(profile.scale(config.ModelConfig("h", "highway", ("max", "avemax3"))), {n}),
    "stacker": models.build_stacker({n}, 3),
}}
for name, net in nets.items():
    keras.utils.set_random_seed(1)
    for w in net.weights:   # not the initial values: the stacker starts from constants
        w.assign(np.random.default_rng(len(w.path)).normal(0, 0.05, w.shape).astype(w.dtype))
    net.save(out / f"{{name}}.keras")
    net.save_weights(out / f"{{name}}.weights.h5")
    inputs = [np.random.default_rng(0).normal(0, 0.1, (2, *t.shape[1:])).astype("float32") for t in net.inputs]
    # fed in the structure the network was built with (a dict, or one tensor): no Keras warning
    feed = keras.tree.pack_sequence_as(net.input, inputs)
    np.savez(out / f"{{name}}.npz", *inputs, output=net.predict(feed, verbose=0))
"""


def old_code(tmp_path: Path) -> Path:
    """code/ of PRE_MOVE, unpacked in tmp_path."""
    have = subprocess.run(["git", "-C", str(ROOT), "cat-file", "-e", f"{PRE_MOVE}^{{commit}}"], capture_output=True)
    if have.returncode != 0:
        pytest.fail(f"commit {PRE_MOVE} is not in this clone (shallow?): this test needs the repository's "
                    f"history (git fetch --unshallow)")
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", PRE_MOVE, "code"], capture_output=True, check=True)
    with tarfile.open(fileobj=BytesIO(archive.stdout)) as tar:
        tar.extractall(tmp_path, filter="data")
    return tmp_path / "code"


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("pre_move")
    code, out = old_code(tmp), tmp / "saved"
    out.mkdir()
    run = subprocess.run([sys.executable, "-c", SAVE_WITH_OLD_CODE.format(n=N_CLASSES), str(out)], cwd=code,
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    return out


def custom_classes(keras_file: Path) -> set[str]:
    """The project's classes a .keras file names (registered_name "fat2019>Class")."""
    text = zipfile.ZipFile(keras_file).read("config.json").decode()
    found = set()

    def walk(node):
        if isinstance(node, dict):
            name = node.get("registered_name")
            if isinstance(name, str) and name.startswith(f"{PACKAGE}>"):
                found.add(name.split(">", 1)[1])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)
    walk(json.loads(text))
    return found


def outputs_match(net, saved_npz: Path) -> None:
    data = np.load(saved_npz)
    inputs = [data[f"arr_{i}"] for i in range(len(net.inputs))]   # saved in net.inputs' (flat) order
    feed = keras.tree.pack_sequence_as(net.input, inputs)         # as built: a dict, or one tensor
    np.testing.assert_allclose(net.predict(feed, verbose=0), data["output"], rtol=1e-5, atol=1e-6)


def test_the_saved_files_hold_every_custom_layer(saved):
    # every layer; LastColumnOnes, an initializer, only makes the stacker's first weights
    ours = {name.split(">", 1)[1] for name, cls in keras.saving.get_custom_objects().items()
            if name.startswith(f"{PACKAGE}>") and issubclass(cls, keras.layers.Layer)}
    held = set().union(*(custom_classes(saved / f"{n}.keras") for n in ("conv", "highway", "stacker")))
    assert held == ours


@pytest.mark.parametrize("name", ["conv", "highway", "stacker"])
def test_a_whole_model_saved_before_the_move_loads(saved, name):
    outputs_match(keras.models.load_model(saved / f"{name}.keras"), saved / f"{name}.npz")
    keras.backend.clear_session()


@pytest.mark.parametrize("name", ["conv", "highway", "stacker"])
def test_weights_saved_before_the_move_load_into_todays_model(saved, name):
    profile = config.PROFILES["demo"]
    net = {"conv": lambda: models.build_model(profile.scale(config.ZOO_BY_NAME["v1mix"]), N_CLASSES),
           "highway": lambda: models.build_model(profile.scale(config.ModelConfig("h", "highway", ("max", "avemax3"))),
                                                 N_CLASSES),
           "stacker": lambda: models.build_stacker(N_CLASSES, 3)}[name]()
    net.load_weights(saved / f"{name}.weights.h5")
    outputs_match(net, saved / f"{name}.npz")
    keras.backend.clear_session()
