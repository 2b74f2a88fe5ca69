import os
import subprocess
import sys
from pathlib import Path

import librosa
import numpy as np
import pandas as pd
import pytest
import soundfile as sf

import features
from fat2019 import cli
from fat2019.data import cache_builder
from fat2019.data.audio import global_features
from fat2019.data.feature_cache import FeatureCache
from helpers import make_dataset, tone, write_csv

CODE = Path(__file__).resolve().parent.parent / "code"


def run(data, *extra, workers=1):
    return cli.call(features.main, ["--data-dir", str(data), "--workers", str(workers), *extra])


def snapshot(folder):
    return {p.name: p.stat().st_mtime_ns for p in Path(folder).iterdir()}


def test_builds_a_cache_that_matches_decoding(tmp_path):
    data = make_dataset(tmp_path)
    assert run(data, workers=2) == 0
    for name, n in (("curated", 6), ("noisy", 4), ("test", 3)):
        cache = FeatureCache(data / "features" / name)
        assert len(cache) == n
        assert cache.global_features.shape == (n, 128, 12)
    cache = FeatureCache(data / "features" / "curated")
    for i, fname in enumerate(cache.fnames):
        raw, _ = librosa.load(data / "audio_train" / fname, sr=44100)
        trimmed, _ = librosa.effects.trim(raw, top_db=60)
        wave = cache.waveform(i)
        assert len(wave) == len(trimmed)
        assert np.max(np.abs(wave - trimmed)) <= 1 / 65536          # int16 storage, 16-bit source: exact
        assert cache.lengths[i] == pytest.approx(len(trimmed) / 441000)
        np.testing.assert_allclose(cache.global_features[i], global_features(raw), rtol=1e-6)
    index = pd.read_csv(data / "features" / "curated" / "index.csv")
    assert list(index.columns) == ["fname", "offset", "n_samples", "scale", "length", "size", "mtime_ns", "notes"]
    assert not list((data / "features").glob("*.partial"))


def test_rerun_is_a_no_op_and_changes_are_picked_up(tmp_path, capsys):
    data = make_dataset(tmp_path)
    assert run(data) == 0
    before = {s: snapshot(data / "features" / s) for s in ("curated", "noisy", "test")}
    capsys.readouterr()
    assert run(data) == 0
    out = capsys.readouterr().out
    assert out.count("up to date") == 3
    assert {s: snapshot(data / "features" / s) for s in before} == before

    # change one clip, add one clip: only those two are decoded
    sf.write(data / "audio_train" / "c001.wav", tone(2.0, 1000, silence=0.2), 44100, subtype="PCM_16")
    sf.write(data / "audio_train" / "c999.wav", tone(0.7, 500), 44100, subtype="PCM_16")
    rows = pd.read_csv(data / "train_curated.csv")
    rows.loc[len(rows)] = ["c999.wav", "Bark"]
    rows.to_csv(data / "train_curated.csv", index=False)
    decoded = []
    real = cache_builder.featurise
    features_featurise = lambda job: decoded.append(job[0]) or real(job)
    mp = pytest.MonkeyPatch()
    mp.setattr(cache_builder, "featurise", features_featurise)
    try:
        assert run(data) == 0
    finally:
        mp.undo()
    assert sorted(decoded) == ["c001.wav", "c999.wav"]
    cache = FeatureCache(data / "features" / "curated")
    assert cache.fnames[-1] == "c999.wav" and len(cache) == 7
    trimmed, _ = librosa.effects.trim(tone(2.0, 1000, silence=0.2), top_db=60)
    assert abs(len(cache.waveform(cache.row["c001.wav"])) - len(trimmed)) == 0


def test_interrupted_run_resumes(tmp_path, monkeypatch):
    data = make_dataset(tmp_path, n_curated=8)
    real = cache_builder.featurise
    calls = []

    def dies_after_three(job):
        if len(calls) == 3:
            raise KeyboardInterrupt
        calls.append(job[0])
        return real(job)

    monkeypatch.setattr(cache_builder, "featurise", dies_after_three)
    with pytest.raises(KeyboardInterrupt):
        run(data, "--sets", "curated")
    assert (data / "features" / "curated.partial").is_dir()
    # a torn write at the end of the partial files must not matter
    with open(data / "features" / "curated.partial" / "audio.int16", "ab") as f:
        f.write(b"\x01\x02\x03")
    with open(data / "features" / "curated.partial" / "rows.csv", "a") as f:
        f.write("c007.wav,123")

    resumed = []
    monkeypatch.setattr(cache_builder, "featurise", lambda job: resumed.append(job[0]) or real(job))
    assert run(data, "--sets", "curated") == 0
    assert len(resumed) == 5 and not set(resumed) & set(calls)
    cache = FeatureCache(data / "features" / "curated")
    assert len(cache) == 8
    for i, fname in enumerate(cache.fnames):
        raw, _ = librosa.load(data / "audio_train" / fname, sr=44100)
        trimmed, _ = librosa.effects.trim(raw, top_db=60)
        assert np.max(np.abs(cache.waveform(i) - trimmed)) <= 1 / 65536


def test_bad_files_fail_the_stage_unless_skipped(tmp_path, capsys):
    data = make_dataset(tmp_path)
    (data / "audio_train" / "c002.wav").write_bytes(b"not audio at all")
    os.remove(data / "audio_train" / "c004.wav")
    assert run(data, "--sets", "curated") == 1
    err = capsys.readouterr().err
    assert "c002.wav" in err and "c004.wav" in err and "--skip-bad" in err
    bad = pd.read_csv(data / "features" / "curated" / "bad_files.csv")
    assert sorted(bad["fname"]) == ["c002.wav", "c004.wav"]
    assert not (data / "features" / "curated" / "index.csv").exists()

    assert run(data, "--sets", "curated", "--skip-bad") == 0
    cache = FeatureCache(data / "features" / "curated")
    assert sorted(cache.fnames) == ["c000.wav", "c001.wav", "c003.wav", "c005.wav"]
    assert (data / "features" / "curated" / "bad_files.csv").is_file()


def test_invalid_csv_is_reported_before_any_work(tmp_path, capsys):
    data = make_dataset(tmp_path)
    write_csv(data / "train_curated.csv", ["fname", "labels"], [["c000.wav", "Meow"], ["/abs.wav", "Bark"]])
    assert run(data) == 2
    err = capsys.readouterr().err
    assert "'Meow'" in err and "/abs.wav" in err
    assert not (data / "features").exists()


def test_help():
    out = subprocess.run([sys.executable, str(CODE / "features.py"), "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "--skip-bad" in out.stdout and "--profile" in out.stdout


def test_two_runs_at_once_wait_for_each_other_and_leave_one_correct_cache(tmp_path):
    import threading
    import time

    from fat2019 import layout
    from fat2019.util import locks

    data = make_dataset(tmp_path)
    command = [sys.executable, "-u", str(CODE / "features.py"), "--data-dir", str(data), "--sets", "curated",
               "--workers", "1"]
    outputs = [[], []]
    with locks.try_hold(layout.lock_path(data / "features", "curated")) as lock:   # both runs start while it is held
        assert lock.held
        runs = [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for _ in outputs]
        readers = [threading.Thread(target=lambda r=r, out=out: out.extend(r.stdout)) for r, out in zip(runs, outputs)]
        for reader in readers:
            reader.start()
        for _ in range(600):   # until both say they wait (a guard against a hang, not a timing)
            if all(any("waiting" in line for line in out) for out in outputs):
                break
            time.sleep(0.5)
    codes = [r.wait(timeout=300) for r in runs]
    for reader in readers:
        reader.join()
    said = ["".join(out) for out in outputs]
    assert codes == [0, 0], said
    assert all(f"the cache is being built, {locks.HELD_BY} pid {os.getpid()}" in s for s in said)
    assert sorted("up to date" in s for s in said) == [False, True]          # one built it, the other found it done
    cache = FeatureCache(data / "features" / "curated")
    assert len(cache) == 6 and sorted(cache.fnames) == sorted(pd.read_csv(data / "train_curated.csv")["fname"])
    assert not list((data / "features").glob("*.partial")) and not list((data / "features").glob("*.lock"))
