"""Progress in a log file: plain lines with steps, time and ETA, never carriage returns."""
import io
import re
import time

from fat2019.util.progress import Progress, UnitProgress, duration


class LogFile(io.StringIO):
    def isatty(self):
        return False


def test_a_log_gets_one_plain_line_per_interval_with_an_eta():
    log = LogFile()
    with Progress(4, "v1mix fold 0 epoch 3/40", "step", every=0.01, stream=log) as p:
        for _ in range(4):
            time.sleep(0.02)
            p.update()
    lines = log.getvalue().splitlines()
    assert "\r" not in log.getvalue() and 2 <= len(lines) <= 4
    assert lines[0].startswith("v1mix fold 0 epoch 3/40: 1/4 steps, ") and "ETA" in lines[0]
    assert lines[-1].startswith("v1mix fold 0 epoch 3/40: 4/4 steps")       # the final count


def test_short_work_prints_nothing_to_a_log():
    log = LogFile()
    with Progress(100, "features curated", "clip", every=60, stream=log) as p:
        for _ in range(100):
            p.update()
    assert log.getvalue() == ""


def test_durations_read_as_a_person_writes_them():
    assert [duration(s) for s in (7, 185, 7620)] == ["7s", "3m05s", "2h07m"]


def test_the_epoch_progress_callback_lets_jax_run_steps_ahead():
    """Keras calls an async-safe batch callback from a helper thread and never makes the
    training loop wait for the step's loss; a callback that is not gets the main thread
    (the control: it shows the test can tell the two apart)."""
    from helpers import run_under_jax
    run_under_jax("""
        import threading
        import numpy as np
        from fat2019.engine import training

        def threads_of(callback_class):
            seen = []
            class Recording(callback_class):
                def on_train_batch_end(self, batch, logs=None):
                    seen.append(threading.current_thread() is threading.main_thread())
            model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
            model.compile(optimizer="sgd", loss="mse")
            callback = Recording("test", 4) if callback_class is training.EpochProgress else Recording()
            model.fit(np.zeros((8, 3)), np.zeros((8, 1)), batch_size=2, epochs=1, verbose=0, callbacks=[callback])
            return seen

        assert threads_of(training.EpochProgress) == [False] * 4
        assert threads_of(keras.callbacks.Callback) == [True] * 4
    """)


def test_a_stage_says_where_it_is_in_its_whole_job_with_an_eta():
    log, now = LogFile(), [0.0]
    progress = UnitProgress("train", 4, stream=log, clock=lambda: now[0])
    progress.starting("v1mix fold 0")
    now[0] = 300.0
    progress.finished("v1mix fold 0")
    progress.skipped("v1mix fold 1")              # another run holds it: not this run's work
    progress.starting("v1mix fold 2")
    now[0] = 600.0
    progress.finished("v1mix fold 2")
    progress.starting("se fold 0")
    now[0] = 900.0
    progress.finished("se fold 0")
    lines = [re.sub(r"starting at \d\d:\d\d:\d\d$", "starting at T", line) for line in log.getvalue().splitlines()]
    assert lines == [
        "train: unit 1/4: v1mix fold 0, starting at T",
        "train: 1/4 units done (last: v1mix fold 0), 5m00s, about 15m00s left",
        "train: unit 2/3: v1mix fold 2, starting at T",
        "train: 2/3 units done (last: v1mix fold 2), 10m00s, about 5m00s left",
        "train: unit 3/3: se fold 0, starting at T",
        "train: 3/3 units done (last: se fold 0), 15m00s",
    ]


def test_a_failed_unit_is_counted_as_failed_neither_done_nor_left():
    """On Ray the other units go on after one fails: the line says so, and the estimate is
    the time per finished unit times the units still to end."""
    log, now = LogFile(), [0.0]
    progress = UnitProgress("train", 4, stream=log, clock=lambda: now[0])
    now[0] = 60.0
    progress.failed("v1mix fold 1")               # no unit done yet: no estimate
    now[0] = 300.0
    progress.finished("v1mix fold 0")
    progress.skipped("v1mix fold 2")              # another run holds it: not this run's work
    now[0] = 600.0
    progress.finished("v1mix fold 3")
    assert log.getvalue().splitlines() == [
        "train: 0/4 units done, 1 failed (last: v1mix fold 1, failed), 1m00s",
        "train: 1/4 units done, 1 failed (last: v1mix fold 0), 5m00s, about 10m00s left",
        "train: 2/3 units done, 1 failed (last: v1mix fold 3), 10m00s",
    ]


def test_the_eta_prices_each_model_by_its_measured_units_and_unmeasured_ones_by_flops():
    """A small model's folds first, a model 4x its FLOPs last: after the first small fold
    the big folds cost 4x a small one; once a big fold is measured, its own time counts."""
    log, now = LogFile(), [0.0]
    sizes = {"small fold 0": ("small", 1.0), "small fold 1": ("small", 1.0), "small fold 2": ("small", 1.0),
             "big fold 0": ("big", 4.0), "big fold 1": ("big", 4.0)}
    progress = UnitProgress("train", 5, sizes=sizes, stream=log, clock=lambda: now[0])
    progress.starting("small fold 0")
    now[0] = 60.0
    progress.finished("small fold 0")            # left: 2 small at 60 s + 2 big at 4 x 60 s
    progress.skipped("small fold 1")             # another run holds it: not this run's work
    progress.starting("small fold 2")
    now[0] = 130.0
    progress.finished("small fold 2")            # small: 65 s per fold; 2 big at 4 x 65 s
    now[0] = 140.0                               # 10 s between units (a report, say): not a unit's
    progress.starting("big fold 0")
    now[0] = 290.0
    progress.finished("big fold 0")              # big measured: 150 s
    lines = [line for line in log.getvalue().splitlines() if "units done" in line]
    how = " (measured per model; models not run yet by their FLOPs)"
    assert lines == [
        f"train: 1/5 units done (last: small fold 0), 1m00s, about 10m00s left{how}",
        f"train: 2/4 units done (last: small fold 2), 2m10s, about 8m40s left{how}",
        f"train: 3/4 units done (last: big fold 0), 4m50s, about 2m30s left{how}",
    ]


def test_units_of_several_models_are_sized_by_their_flops_and_one_models_are_not(monkeypatch):
    from fat2019 import config
    from fat2019.engine import workspace
    built = []
    monkeypatch.setattr(workspace, "model_flops", lambda m, n: built.append(m.name) or {"a": 1e9, "b": 4e9}[m.name])
    a, b = (config.ModelConfig(name=n, backbone="conv", pool_modes=("max", "avemax1")) for n in "ab")
    assert workspace.unit_sizes({"a fold 0": a, "a fold 1": a}, 80) is None and built == []
    assert workspace.unit_sizes({"a fold 0": a, "b fold 0": b}, 80) == {"a fold 0": ("a", 1e9),
                                                                        "b fold 0": ("b", 4e9)}
