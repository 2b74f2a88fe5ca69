"""The zoo's model builder and the stacker: shapes, one training step, save/load."""
import dataclasses
import math

import keras
import numpy as np
import pytest

from fat2019 import config
from fat2019.nn import frontend
from fat2019.nn import pooling
from fat2019.nn import models

N_CLASSES = 7
TINY_SECONDS = 0.5            # 22,050 samples -> 44 frames -> 6 frames at the head


def tiny(model_config):
    """A zoo member at the demo profile's widths, on a short crop: fast to train."""
    return dataclasses.replace(config.PROFILES["demo"].scale(model_config), duration=TINY_SECONDS)


def with_backbone(backbone):
    return dataclasses.replace(config.ZOO_BY_NAME["v1mix"], name=f"v1mix_{backbone}",
                               backbone=backbone)


def make_batch(model_config, n=4, seed=0):
    rng = np.random.default_rng(seed)
    x = {"audio": (0.1 * rng.standard_normal((n, model_config.crop_samples))).astype(np.float32),
         "global_feat": rng.standard_normal((n, config.N_GLOBAL_STEPS,
                                             config.N_GLOBAL_STATS)).astype(np.float32),
         "other": rng.uniform(size=(n, 1)).astype(np.float32)}
    y = (rng.uniform(size=(n, N_CLASSES)) < 0.3).astype(np.float32)
    return x, y


def train_one_step(model, model_config, seed=0):
    # Eager: one step of a fresh model is quicker eagerly than tracing the train graph.
    model.run_eagerly = True
    x, y = make_batch(model_config, seed=seed)
    return float(model.train_on_batch(x, y)), x


ZOO_CONFIGS = [pytest.param(m, id=m.name) for m in config.ZOO]
OTHER_BACKBONES = [pytest.param(with_backbone(b), id=b) for b in ("cat", "se_cat", "highway")]


# ---------------------------------------------------------------------------------------
# Full size: shapes only (building is cheap, training is not)
# ---------------------------------------------------------------------------------------

def test_full_size_conv_shapes_and_compile():
    cfg = config.PROFILES["full"].scale(config.ZOO_BY_NAME["v1mix"])
    model = models.build_model(cfg, n_classes=80)
    inputs = {t.name: tuple(t.shape) for t in model.inputs}
    assert inputs == {"audio": (None, 220_500), "global_feat": (None, 128, 12), "other": (None, 1)}
    assert tuple(model.get_layer("logmel").output.shape) == (None, 431, 64, 1)
    assert tuple(model.get_layer("backbone_out").output.shape) == (None, 54, 8, 512)
    assert tuple(model.get_layer("time_max_mel_mean").output.shape) == (None, 1024)
    assert tuple(model.get_layer("global_max").output.shape) == (None, 128)
    assert tuple(model.get_layer("features").output.shape) == (None, 1024 + 128 + 1)
    assert tuple(model.output.shape) == (None, 80)
    assert isinstance(model.optimizer, keras.optimizers.Nadam)
    assert float(model.optimizer.learning_rate) == pytest.approx(5e-4)
    assert isinstance(model.loss, keras.losses.BinaryCrossentropy)
    assert not model.get_layer("logmel").trainable
    # BN momentum 0.85 in the backbone, Keras' default in the global-feature branch
    assert model.get_layer("block1_1_bn").momentum == 0.85
    assert model.get_layer("global_bn").momentum == 0.99
    assert not model.get_layer("stem_conv").use_bias


@pytest.mark.parametrize("w_ratio", [1.0, 1.5, 2.0])
def test_full_size_msc_se_widths(w_ratio):
    cfg = dataclasses.replace(config.ZOO_BY_NAME["model_MSC_se_r4_1.0_10fold"], w_ratio=w_ratio)
    model = models.build_model(cfg, n_classes=80)
    channels = round(512 * w_ratio)
    assert tuple(model.get_layer("backbone_out").output.shape) == (None, 54, 8, channels)
    assert tuple(model.get_layer("time_max_mel_mean").output.shape) == (None, 2 * channels)
    assert tuple(model.get_layer("stem_concat").output.shape) == (None, 431, 64, 96)
    assert model.get_layer("block1_1_conv").filters == round(96 * w_ratio)
    assert model.get_layer("block1_1_se_reduce").units == round(96 * w_ratio) // 4


def test_demo_widths_are_scaled():
    cfg = config.PROFILES["demo"].scale(config.ZOO_BY_NAME["model_MSC_se_r4_2.0_10fold"])
    model = models.build_model(cfg, n_classes=N_CLASSES)
    assert model.get_layer("stem_conv3x3").filters == 4                # 32 * 0.125
    assert model.get_layer("block1_1_conv").filters == 24              # 96 * 0.125 * 2
    frames = math.ceil(cfg.crop_samples / 512)
    for _ in range(3):  # three stride-2 'same' poolings over time
        frames = math.ceil(frames / 2)
    assert tuple(model.get_layer("backbone_out").output.shape) == (None, frames, 8, 128)
    assert model.get_layer("global_bigru1").forward_layer.units == 16  # 128 * 0.125


def test_unknown_backbone_fails():
    with pytest.raises(ValueError):
        models.build_model(with_backbone("resnet"), N_CLASSES)


# ---------------------------------------------------------------------------------------
# Every zoo member and every backbone trains
# ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("model_config", ZOO_CONFIGS + OTHER_BACKBONES)
def test_model_trains_one_step(model_config):
    cfg = tiny(model_config)
    model = models.build_model(cfg, N_CLASSES)
    assert tuple(model.output.shape) == (None, N_CLASSES)
    before = [w.numpy().copy() for w in model.trainable_weights]
    moving_before = model.get_layer("stem_bn").moving_mean.numpy().copy()
    loss, x = train_one_step(model, cfg)
    assert np.isfinite(loss)
    changed = {w.path: not np.array_equal(b, w.numpy())
               for b, w in zip(before, model.trainable_weights)}
    # At 1/8 width an SE bottleneck has 2 units whose ReLU can be dead for a whole batch,
    # so not every variable need move; the main path and both branches must.
    assert np.mean(list(changed.values())) > 0.9
    for path in ("block1_1_conv/kernel", "block4_2_conv/kernel", "tags/kernel"):
        assert changed[path], path
    assert any(c for p, c in changed.items() if p.startswith("global_bigru1"))
    assert not np.array_equal(moving_before, model.get_layer("stem_bn").moving_mean.numpy())
    pred = keras.ops.convert_to_numpy(model(x, training=False))
    assert pred.shape == (4, N_CLASSES) and np.all((pred > 0) & (pred < 1))


@pytest.mark.parametrize("mixed", ["float16", "bfloat16"])
def test_model_under_mixed_precision_keeps_float32_logmel_and_output(mixed):
    keras.mixed_precision.set_global_policy(f"mixed_{mixed}")  # what the stages' --mixed-precision does
    try:
        cfg = tiny(config.ZOO_BY_NAME["v1mix"])
        model = models.build_model(cfg, N_CLASSES)
        x, _ = make_batch(cfg)
        pred = model(x, training=False)
        loss, _ = train_one_step(model, cfg)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert keras.config.dtype_policy().name == "float32"
    assert model.get_layer("logmel").output.dtype == "float32"
    assert model.get_layer("block1_1_conv").compute_dtype == mixed
    assert model.get_layer("block1_1_conv").kernel.dtype == "float32"   # float32 master weights
    assert pred.dtype == "float32" and np.isfinite(loss)
    # float16 needs loss scaling against gradient underflow; bfloat16 has float32's range
    assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer) == (mixed == "float16")


# ---------------------------------------------------------------------------------------
# Save / load with no custom_objects: the layers register themselves on import
# ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["v1mix", "model_MSC_se_r4_1.0_10fold"])
def test_model_save_load_round_trip(name, tmp_path):
    cfg = tiny(config.ZOO_BY_NAME[name])
    model = models.build_model(cfg, N_CLASSES)
    train_one_step(model, cfg)                # non-trivial weights and BN statistics
    model.run_eagerly = False                 # predict in graph mode, like the loaded model
    x, _ = make_batch(cfg, seed=1)
    want = model.predict(x, verbose=0)

    path = tmp_path / f"{name}.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), want)
    assert isinstance(loaded.get_layer("logmel"), frontend.LogMelSpectrogram)
    assert isinstance(loaded.get_layer("block1_pool2"), pooling.AxisSplitPool)
    assert loaded.get_layer("block1_pool2").mode == cfg.pool_modes[1]
    assert isinstance(loaded.optimizer, keras.optimizers.Nadam)


# ---------------------------------------------------------------------------------------
# Stacker
# ---------------------------------------------------------------------------------------

def stacker_batch(n=40, n_inputs=4, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.uniform(size=(n, N_CLASSES, n_inputs)).astype(np.float32)
    y = (rng.uniform(size=(n, N_CLASSES)) < 0.3).astype(np.float32)
    return x, y


def test_stacker_starts_as_the_weighted_average():
    x, _ = stacker_batch()
    model = models.build_stacker(N_CLASSES, n_inputs=4)
    assert tuple(model.output.shape) == (None, N_CLASSES)
    got = model.predict(x, verbose=0)
    np.testing.assert_allclose(got, (np.tanh(x[:, :, -1] - 1.6) + 1) / 2, rtol=1e-5, atol=1e-7)
    assert isinstance(model.optimizer, keras.optimizers.Nadam)
    assert float(model.optimizer.learning_rate) == pytest.approx(1e-4)


def test_stacker_class_weights_keep_unit_norm():
    x, y = stacker_batch()
    model = models.build_stacker(N_CLASSES, n_inputs=4, lr=1e-2)
    kernel = model.get_layer("classwise_weights").kernel
    before = kernel.numpy().copy()
    model.train_on_batch(x, y)
    after = kernel.numpy()
    assert not np.allclose(after, before)
    np.testing.assert_allclose(np.linalg.norm(after, axis=1), 1.0, rtol=1e-5)


def test_stacker_save_load_round_trip(tmp_path):
    x, y = stacker_batch()
    model = models.build_stacker(N_CLASSES, n_inputs=4, lr=1e-2, offset=1.2)
    model.train_on_batch(x, y)
    path = tmp_path / "stacker.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), model.predict(x, verbose=0))
    assert loaded.get_layer("shifted_tanh").offset == 1.2
    constraint = loaded.get_layer("classwise_weights").kernel_constraint
    assert isinstance(constraint, keras.constraints.UnitNorm)
