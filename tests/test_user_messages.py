"""What the stages tell a user about what they are doing: early stopping, the profile
guard, suspicious label fields, the features stage's counts and the missing-cache hint."""
from __future__ import annotations

import types

import keras
import numpy as np
import pytest

from fat2019 import config
from fat2019.train import training


class OneBatch(keras.utils.PyDataset):
    def __len__(self):
        return 1

    def __getitem__(self, index):
        return np.zeros((2, 1), np.float32), np.zeros((2, 1), np.float32)


def scripted_fit(tmp_path, monkeypatch, scores, profile):
    """training.fit's real epoch loop on a 1-weight model, val LRAP served from `scores`."""
    served = iter(scores)
    monkeypatch.setattr(training, "TrainBatches", lambda *a, **kw: OneBatch())
    monkeypatch.setattr(training, "predict_tta", lambda *a, **kw: np.zeros((2, 1), np.float32))
    monkeypatch.setattr(training, "lrap", lambda *a: next(served))
    monkeypatch.setattr(training, "lwlrap", lambda *a: 0.0)
    monkeypatch.setattr(training, "save_model_atomic", lambda *a: None)
    model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.Nadam(1e-3), loss="mse")
    schedule = training.Schedule.curated(profile, config.ZOO[0])
    val = types.SimpleNamespace(labels=np.zeros((2, 1), np.float32))
    return training.fit(model, None, val, schedule, 10, tmp_path, "fold0", seed=0, label="v1mix fold 1")


def test_early_stop_says_why_and_when(tmp_path, monkeypatch, capsys):
    demo = config.PROFILES["demo"]   # 8 epochs; stops from epoch 7 on after 3 without improvement
    summary = scripted_fit(tmp_path, monkeypatch, [0.5, 0.9] + [0.5] * 6, demo)
    out = capsys.readouterr().out
    assert summary["epochs_run"] == 6
    lines = out.splitlines()
    stop = [line for line in lines if "stopping early" in line]
    assert stop == [lines[lines.index(next(x for x in lines if "epoch   6/8" in x)) + 1]]
    assert "after epoch 6/8" in stop[0] and "in 4 epoch(s) since its best, epoch 2" in stop[0]


def test_a_run_of_all_its_epochs_says_nothing_of_stopping(tmp_path, monkeypatch, capsys):
    demo = config.PROFILES["demo"]
    summary = scripted_fit(tmp_path, monkeypatch, [0.1 * e for e in range(8)], demo)
    assert summary["epochs_run"] == 8 and "stopping early" not in capsys.readouterr().out
