"""The recipe's hours on the measured device: each stage of the `full` profile's schedule
(pretraining, the folds, prediction with TTA) on FSDKaggle2019's set sizes, from the zoo's
measured training and prediction rates."""
from __future__ import annotations

from fat2019 import config
from fat2019.tools.bench.gpu_setup import N_CURATED, N_NOISY, N_TEST
from fat2019.data.batches import TTA_POSITIONS


def recipe_hours(rates: dict[str, dict], profile: config.Profile) -> list[dict]:
    """Hours of each stage of the `full` recipe on this device, per zoo model, from the
    measured rates ({model: bench_model row}); None where a model is unmeasured.

    Per pretraining epoch: the noisy set once, the curated set scored with 3-TTA. Per fold
    epoch: the fold's 9/10 of the curated set, its 1/10 scored with 3-TTA (every fold run
    to the full `epochs`, the early stop's upper bound). Prediction: 3-TTA of every fold
    model on its out-of-fold clips and the test set. Every epoch also writes a checkpoint.
    """
    tta = len(TTA_POSITIONS)
    n_val = N_CURATED / profile.n_folds
    rows = []
    for member in config.ZOO:
        r = rates.get(member.name)

        def hours(epochs, train_clips, scored_clips):
            if r is None:
                return None
            return epochs * (train_clips / r["train_clips_s"] + tta * scored_clips / r["predict_clips_s"]
                             + r["checkpoint_s"]) / 3600

        pretrain = hours(profile.pretrain_epochs, N_NOISY, N_CURATED) if member.pretrained_from is None else 0.0
        folds = hours(profile.n_folds * profile.epochs, N_CURATED - n_val, n_val)
        predict = None if r is None else profile.n_folds * tta * (n_val + N_TEST) / r["predict_clips_s"] / 3600
        rows.append(dict(model=member.name, pretrain=pretrain, folds=folds, predict=predict))
    return rows
