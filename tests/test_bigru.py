"""recurrent.BiGRUSum against keras' Bidirectional(GRU(return_sequences=True), merge_mode="sum").

The backend is fixed per process: the TensorFlow checks run here, the JAX ones (the fused
scan, its gradients) in a child process with KERAS_BACKEND=jax and no TensorFlow
(helpers.run_under_jax) that calls `jax_checks`.
"""
import json
from pathlib import Path

import keras
import numpy as np
import pytest

from fat2019.nn import recurrent

BATCH, STEPS, FEATURES, UNITS = 3, 9, 5, 4
ATOL = 1e-5


def reference_layer():
    return keras.layers.Bidirectional(keras.layers.GRU(UNITS, return_sequences=True), merge_mode="sum")


def random_inputs(seed=0):
    return np.random.default_rng(seed).standard_normal((BATCH, STEPS, FEATURES)).astype(np.float32)


def random_weights(seed=1):
    """Per direction kernel, recurrent kernel, bias (2, 3u): all non-zero, so a mixed-up
    gate order, bias row or direction shows."""
    rng = np.random.default_rng(seed)
    shapes = [(FEATURES, 3 * UNITS), (UNITS, 3 * UNITS), (2, 3 * UNITS)] * 2
    return [(0.5 * rng.standard_normal(s)).astype(np.float32) for s in shapes]


def built_pair(unroll=1):
    """(reference, ours), built on the test inputs' shape, with the same random weights."""
    ref, ours = reference_layer(), recurrent.BiGRUSum(UNITS, unroll=unroll)
    weights = random_weights()
    for layer in (ref, ours):
        layer.build((None, STEPS, FEATURES))
        layer.set_weights(weights)
    return ref, ours


def tiny_model(unroll=1):
    x = keras.Input((STEPS, FEATURES))
    return keras.Model(x, recurrent.BiGRUSum(UNITS, unroll=unroll, name="bigru")(x))


def check_save_load(folder: Path) -> None:
    """get_config round trip, and a saved .keras model loads with the same weights/outputs."""
    model = tiny_model(unroll=3)
    model.get_layer("bigru").set_weights(random_weights())
    layer = model.get_layer("bigru")
    config = layer.get_config()
    assert config["units"] == UNITS and config["unroll"] == 3
    clone = recurrent.BiGRUSum.from_config(config)
    clone.build((None, STEPS, FEATURES))
    assert [tuple(w.shape) for w in clone.weights] == [tuple(w.shape) for w in layer.weights]
    path = folder / f"bigru_{keras.backend.backend()}.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    assert isinstance(loaded.get_layer("bigru"), recurrent.BiGRUSum)
    x = random_inputs()
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(loaded(x)), keras.ops.convert_to_numpy(model(x)))


def jax_checks(folder: Path) -> None:
    """Run with KERAS_BACKEND=jax: outputs and gradients of the fused scan, at several unrolls."""
    import jax
    assert keras.backend.backend() == "jax"
    x = random_inputs()
    cotangent = np.random.default_rng(2).standard_normal((BATCH, STEPS, UNITS)).astype(np.float32)

    def loss_and_grads(layer):
        state = [v.value for v in layer.non_trainable_variables]  # Bidirectional's seed state

        def loss(trainable, x):
            y, _ = layer.stateless_call(trainable, state, x)
            return (y * cotangent).sum(), y
        trainable = [v.value for v in layer.trainable_variables]
        (_, y), grads = jax.jit(jax.value_and_grad(loss, argnums=(0, 1), has_aux=True))(trainable, x)
        return np.asarray(y), [np.asarray(g) for g in grads[0]], np.asarray(grads[1])

    y_ref, dw_ref, dx_ref = loss_and_grads(built_pair()[0])
    for unroll in (1, 4):  # 4 does not divide the 9 steps: a remainder iteration
        y, dw, dx = loss_and_grads(built_pair(unroll)[1])
        np.testing.assert_allclose(y, y_ref, atol=ATOL)
        np.testing.assert_allclose(dx, dx_ref, atol=ATOL)
        assert len(dw) == len(dw_ref) == 6
        for a, b in zip(dw, dw_ref):
            np.testing.assert_allclose(a, b, atol=ATOL)
        assert np.abs(dx).max() > 0.01 and min(np.abs(g).max() for g in dw) > 0.01

    # A weights file written by TensorFlow (the same variables) gives the same outputs here.
    model = tiny_model()
    model.load_weights(folder / "tf.weights.h5")
    y_tf = np.load(folder / "tf_outputs.npy")
    np.testing.assert_allclose(np.asarray(model(x)), y_tf, atol=ATOL)

    # mixed_bfloat16: bfloat16 compute like the reference's (same variables, float32).
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    ref, ours = built_pair(unroll=4)
    y_ref, y = np.asarray(ref(x), np.float32), np.asarray(ours(x), np.float32)
    assert ours(x).dtype == "bfloat16" and all(w.dtype == "float32" for w in ours.weights)
    np.testing.assert_allclose(y, y_ref, atol=2e-2)
    keras.mixed_precision.set_global_policy("float32")

    check_save_load(folder)
    (folder / "jax_ok.json").write_text(json.dumps({"ok": True}))


# ---------------------------------------------------------------------------------------
# TensorFlow (this process)
# ---------------------------------------------------------------------------------------

def test_tensorflow_path_is_keras_bidirectional_sum():
    ref, ours = built_pair()
    x = random_inputs()
    np.testing.assert_allclose(keras.ops.convert_to_numpy(ours(x)), keras.ops.convert_to_numpy(ref(x)), atol=ATOL)
    assert tuple(ours.compute_output_shape((None, STEPS, FEATURES))) == (None, STEPS, UNITS)


@pytest.mark.parametrize("unroll", [1, 4, STEPS])
def test_fused_computation_matches_on_tensorflow_too(unroll):
    # The computation JAX runs, checked here on TF's scan as well.
    ref, ours = built_pair()
    cells = (ours.forward_layer.cell, ours.backward_layer.cell)
    fused = recurrent.fused_bigru_sum(random_inputs(), [c.kernel for c in cells],
                                   [c.recurrent_kernel for c in cells], [c.bias for c in cells], unroll)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(fused),
                               keras.ops.convert_to_numpy(ref(random_inputs())), atol=ATOL)


def test_save_and_load_on_tensorflow(tmp_path):
    check_save_load(tmp_path)


def test_jax_outputs_gradients_and_tensorflow_weights(tmp_path):
    model = tiny_model()
    model.get_layer("bigru").set_weights(random_weights(seed=5))
    model.save_weights(tmp_path / "tf.weights.h5")
    np.save(tmp_path / "tf_outputs.npy", keras.ops.convert_to_numpy(model(random_inputs())))
    from helpers import run_under_jax  # not at the top: the JAX child imports this module
    run_under_jax(f"""
        import os
        os.environ["XLA_FLAGS"] = "--xla_backend_optimization_level=0"  # compile faster; read at jax's first use
        import test_bigru
        from pathlib import Path
        test_bigru.jax_checks(Path({str(tmp_path)!r}))
    """)
    assert json.loads((tmp_path / "jax_ok.json").read_text()) == {"ok": True}
