"""One model code on TensorFlow and JAX (Keras 3 backends).

The test process runs TensorFlow; JAX runs in a subprocess (helpers.run_under_jax) where
TensorFlow, kapre, librosa and soundfile cannot be imported, as on the project's JAX GPU
machines. Weights saved on either backend must load on the other and predict the same
scores; every stage must run under JAX.
"""
import dataclasses
import shutil

import keras
import numpy as np
import pandas as pd

from fat2019 import config
from fat2019 import layout
from fat2019.nn import models
import predict
from helpers import PIPELINE_SETTINGS, run_under_jax

N_CLASSES = 4
TOLERANCE = 1e-4   # max abs difference of the sigmoid scores across backends


def tiny_model():
    """v1mix at width 0.0625 on 0.5 s crops: (its config, the compiled model), its initial
    weights seeded so every run of the test compares the same scores."""
    keras.utils.set_random_seed(0)
    model_config = dataclasses.replace(config.PROFILES["demo"].scale(config.ZOO_BY_NAME["v1mix"]),
                                       width=0.0625, duration=0.5)
    return model_config, models.build_model(model_config, N_CLASSES)


def tiny_inputs(model_config, n=6, seed=0) -> dict:
    rng = np.random.default_rng(seed)
    return {"audio": (0.1 * rng.standard_normal((n, model_config.crop_samples))).astype(np.float32),
            "global_feat": rng.standard_normal((n, config.N_GLOBAL_STEPS, config.N_GLOBAL_STATS)).astype(np.float32),
            "other": rng.uniform(size=(n, 1)).astype(np.float32)}


def perturb(model, seed):
    """Move every weight off its initial value, BatchNorm statistics and GRU biases
    included (they start at 0 and 1), so a weight loaded into the wrong place shows; gently,
    so the sigmoid scores stay away from 0 and 1."""
    rng = np.random.default_rng(seed)
    for variable in model.weights:
        w = keras.ops.convert_to_numpy(variable)
        if "moving_variance" in variable.path:
            new = rng.uniform(0.5, 2.0, w.shape)
        else:
            new = w * rng.uniform(0.8, 1.2, w.shape) + 0.04 * rng.standard_normal(w.shape)
        variable.assign(new.astype(w.dtype))


def test_weights_and_saved_models_are_portable_between_backends(tmp_path):
    model_config, model = tiny_model()
    perturb(model, seed=1)
    x = tiny_inputs(model_config)
    np.savez(tmp_path / "inputs.npz", **x)
    model.save_weights(tmp_path / "tf.weights.h5")
    model.save(tmp_path / "tf.keras")
    tf_scores = model.predict(x, verbose=0)

    run_under_jax("""
        import numpy as np
        from test_backends import perturb, tiny_model
        x = dict(np.load("inputs.npz"))
        _, model = tiny_model()
        model.load_weights("tf.weights.h5")
        np.save("jax_from_tf_weights.npy", model.predict(x, verbose=0))
        np.save("jax_from_tf_keras.npy", keras.models.load_model("tf.keras").predict(x, verbose=0))
        perturb(model, seed=2)
        np.save("jax.npy", model.predict(x, verbose=0))
        model.save_weights("jax.weights.h5")
        model.save("jax.keras")
    """, cwd=tmp_path)

    jax_scores = np.load(tmp_path / "jax.npy")
    _, tf_model = tiny_model()
    tf_model.load_weights(tmp_path / "jax.weights.h5")
    pairs = {"tf weights on jax": (np.load(tmp_path / "jax_from_tf_weights.npy"), tf_scores),
             "tf .keras on jax": (np.load(tmp_path / "jax_from_tf_keras.npy"), tf_scores),
             "jax weights on tf": (tf_model.predict(x, verbose=0), jax_scores),
             "jax .keras on tf": (keras.models.load_model(tmp_path / "jax.keras").predict(x, verbose=0), jax_scores)}
    for what, (got, want) in pairs.items():
        assert got.shape == (len(x["audio"]), N_CLASSES), what
        assert np.abs(got - want).max() <= TOLERANCE, what
    # the scores vary, and other weights give other scores: the comparisons can fail
    assert tf_scores.std() > 0.02 and jax_scores.std() > 0.02
    assert np.abs(tf_scores - jax_scores).max() > 100 * TOLERANCE


def copy_trained_folds(models_dir, name, n_folds, to):
    """A models folder with only folds.csv and `name`'s finished fold runs (weights + marker)."""
    (to / name).mkdir(parents=True)
    shutil.copy(models_dir / layout.FOLDS_CSV, to / layout.FOLDS_CSV)
    for k in range(n_folds):
        prefix = layout.fold_prefix(k)
        for path in (layout.weights_path(models_dir / name, prefix), layout.run_file(models_dir / name, prefix, ".json")):
            shutil.copy(path, to / name / path.name)
    return to


def read_fold_scores(models_dir, name, n_folds):
    """Every fold's out-of-fold and test predictions of `name`, one array."""
    tables = [pd.read_csv(path).sort_values("fname") for k in range(n_folds)
              for path in layout.fold_predictions(models_dir / name, k)]
    return np.concatenate([t.drop(columns="fname").to_numpy() for t in tables])


def test_every_stage_runs_under_jax_and_fold_weights_cross_backends(pipeline_run, tmp_path):
    data, tf_models = pipeline_run["data"], pipeline_run["root"] / "models"
    n_folds = 2
    assert f"n_folds={n_folds}" in PIPELINE_SETTINGS
    # max3exam: test_pipeline's --force retrains v1mix, so only max3exam's CSVs are surely current
    tf_copy = copy_trained_folds(tf_models, "max3exam", n_folds, tmp_path / "tf_trained")
    wav = sorted((data / "audio_test").glob("*.wav"))[0]
    common = ["--profile", "demo", "--data-dir", str(data), "--set", *PIPELINE_SETTINGS, "--workers", "1"]
    jax_models, subs = tmp_path / "jax_models", tmp_path / "jax_subs"

    # The features of pipeline_run are reused (the features stage needs no backend at all).
    run_under_jax(f"""
        import ensemble, predict, pretrain, train
        common = {common!r}
        stage_args = common + ["--models-dir", {str(jax_models)!r}, "--submissions-dir", {str(subs)!r},
                               "--models", "v1mix"]
        for stage in (pretrain, train, predict):
            assert stage.main(stage_args) == 0, stage.__name__
        assert ensemble.main([a for a in stage_args if a not in ("--workers", "1")]) == 0   # it builds no batches
        # the TensorFlow-trained folds, predicted on JAX
        assert predict.main(common + ["--models-dir", {str(tf_copy)!r}, "--models", "max3exam"]) == 0

        BLOCKED.difference_update({{"soundfile", "librosa"}})   # tag.py decodes audio
        import tag
        assert tag.main([{str(wav)!r}, *common, "--models-dir", {str(jax_models)!r}, "--models", "v1mix",
                         "--csv", "tags.csv"]) == 0
    """, cwd=tmp_path)

    assert (subs / "submission.csv").is_file()
    assert {"v1mix", "stacker"} <= {p.name for p in jax_models.iterdir()}
    # TensorFlow-trained weights predicted on JAX = the TensorFlow pipeline's predictions
    np.testing.assert_allclose(read_fold_scores(tf_copy, "max3exam", n_folds),
                               read_fold_scores(tf_models, "max3exam", n_folds), atol=TOLERANCE, rtol=0)
    # JAX-trained weights predicted on TensorFlow = the JAX run's predictions
    jax_copy = copy_trained_folds(jax_models, "v1mix", n_folds, tmp_path / "jax_trained")
    assert predict.main(common + ["--models-dir", str(jax_copy), "--models", "v1mix"]) == 0
    np.testing.assert_allclose(read_fold_scores(jax_copy, "v1mix", n_folds),
                               read_fold_scores(jax_models, "v1mix", n_folds), atol=TOLERANCE, rtol=0)
    # tag.py on JAX = the JAX predict stage's fold mean of that clip (tag.py names it by its path)
    tags = pd.read_csv(tmp_path / "tags.csv").set_index("fname")
    test = pd.read_csv(jax_models / "v1mix" / layout.TEST_CSV).set_index("fname")
    np.testing.assert_allclose(tags.loc[str(wav), test.columns], test.loc[wav.name], atol=TOLERANCE, rtol=0)
