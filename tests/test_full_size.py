"""The full-size rehearsal's pieces that the suite can afford: the data plan at a few dozen
clips (counts, lengths, labels, decodable distinct files), and a full disk during the
feature cache's write (a file-size limit, RLIMIT_FSIZE, in a child process), the
rehearsal's kill-and-resume check at 0.004."""
import json
import os
import re
import resource
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import soundfile as sf

import make_full_size_data
import rehearse
from fat2019.data.feature_cache import FeatureCache
from fat2019.tools.rehearsal import data_plan
from helpers import make_dataset

CODE = Path(__file__).resolve().parent.parent / "code"


def test_plan_has_the_real_counts_and_length_distributions():
    full = data_plan.make_plan(1.0, seed=0, n_classes=80)
    assert {n: len(p.fnames) for n, p in full.items()} == {"curated": 4970, "noisy": 19815, "test": 3361}
    names = [f for p in full.values() for f in p.fnames]
    assert len(set(names)) == len(names)
    cur = full["curated"].n_samples / 44100
    assert 0.3 <= cur.min() and cur.max() <= 30.0 and abs(cur.mean() - 7.6) < 0.1
    assert abs(cur.sum() / 3600 - 10.5) < 0.3                      # the real curated set: about 10.5 h
    noisy = full["noisy"].n_samples / 44100
    assert (noisy == 15.0).mean() > 0.9 and noisy.max() == 15.0 and abs(noisy.sum() / 3600 - 80) < 5
    per_clip = np.array([len(x) for x in full["curated"].labels])
    assert abs(per_clip.sum() - 5752) < 60 and per_clip.max() <= 5   # the real set: 5,752 labels
    assert all(len(set(x)) == len(x) for x in full["curated"].labels)
    assert len({x[0] for x in full["curated"].labels}) == 80
    assert 28e9 < sum(p.audio_bytes for p in full.values()) < 34e9   # about 30 GB of WAV


def test_tiny_scale_writes_the_counts_and_lengths(tmp_path):
    out = tmp_path / "d"
    assert make_full_size_data.main(["--out", str(out), "--scale", "0.008", "--workers", "2"]) == 0
    cur = pd.read_csv(out / "train_curated.csv")
    noisy = pd.read_csv(out / "train_noisy.csv")
    test = pd.read_csv(out / "sample_submission.csv")
    assert (len(cur), len(noisy), len(test)) == (40, 159, 27)
    assert list(test.columns[1:]) == make_full_size_data.load_class_names()
    seconds = np.array([sf.info(out / "audio_train" / f).duration for f in cur.fname])
    assert 0.3 <= seconds.min() and seconds.max() <= 30 and abs(seconds.mean() - 7.6) < 1.0
    assert (cur.labels.str.count(",") > 0).sum() >= 4                  # multi-label rows, ~14 %
    noisy_s = np.array([sf.info(out / "audio_train" / f).duration for f in noisy.fname])
    assert (noisy_s == 15.0).mean() > 0.85
    info = sf.info(out / "audio_test" / test.fname[0])
    assert (info.samplerate, info.channels, info.subtype) == (44100, 1, "PCM_16")
    a, b = (sf.read(out / "audio_train" / f, dtype="int16")[0][:44100] for f in noisy.fname[:2])
    assert not np.array_equal(a, b)
    # a rerun keeps what is there: nothing rewritten
    stamp = {f: (out / "audio_train" / f).stat().st_mtime_ns for f in cur.fname}
    assert make_full_size_data.main(["--out", str(out), "--scale", "0.008", "--workers", "1"]) == 0
    assert stamp == {f: (out / "audio_train" / f).stat().st_mtime_ns for f in cur.fname}


def features_with_file_limit(data: Path, limit: int | None):
    """features.py on the curated set, in a child whose files may not grow past `limit`
    bytes (writes past it fail with EFBIG, as on a full disk; Python ignores SIGXFSZ)."""
    def limited():
        if limit is not None:
            resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    return subprocess.run([sys.executable, str(CODE / "features.py"), "--data-dir", str(data), "--sets", "curated",
                           "--workers", "1"], preexec_fn=limited, capture_output=True, text=True, env=env)


def test_a_full_disk_stops_the_cache_write_with_a_message_and_a_rerun_finishes(tmp_path):
    data = make_dataset(tmp_path / "data", n_curated=12)
    audio_bytes = sum(os.path.getsize(data / "audio_train" / f"c{i:03d}.wav") - 44 for i in range(12))
    full = features_with_file_limit(data, audio_bytes // 2)
    assert full.returncode == 1, full.stderr
    partial = data / "features" / "curated.partial"
    assert "no room to write the feature cache" in full.stderr and str(partial / "audio.int16") in full.stderr
    assert "bytes are needed" in full.stderr and "Traceback" not in full.stderr
    kept = pd.read_csv(partial / "rows.csv")
    assert 0 < len(kept) < 12
    again = features_with_file_limit(data, None)
    assert again.returncode == 0, again.stderr
    assert f"{12 - len(kept)} decoded" in again.stdout       # nothing already written was decoded again
    reference = make_dataset(tmp_path / "ref", n_curated=12)
    assert features_with_file_limit(reference, None).returncode == 0
    got, want = FeatureCache(data / "features" / "curated"), FeatureCache(reference / "features" / "curated")
    assert got.fnames == want.fnames
    for i in range(len(got)):
        assert np.array_equal(got.raw(i), want.raw(i))
    assert np.array_equal(np.asarray(got.global_features), np.asarray(want.global_features))


def test_mixup_in_place_gives_the_plain_expressions_values():
    from fat2019.data.batches import mix_in_place
    rng = np.random.default_rng(0)
    for n in (1, 2, 3, 7, 32):
        for _ in range(10):
            audio = rng.standard_normal((n, 300)).astype(np.float32)
            perm = rng.permutation(n)
            want = 0.7 * audio + (1 - 0.7) * audio[perm]
            mix_in_place(audio, perm, 0.7)
            assert np.array_equal(audio, want)


def test_batches_with_prefetch_are_the_batches_of_plain_crops(tmp_path):
    """The prefetch hint and the in-place mixup leave every batch as the plain algorithm
    makes it: crops drawn one rng value per clip in order, then mixup's draw; the 3-TTA
    crops are those of place() at their position."""
    from fat2019.data.batches import ClipData, TrainBatches, place
    from fat2019.tools.rehearsal.feed import write_plan_cache
    plan = data_plan.make_plan(0.004, seed=1, n_classes=80)["curated"]
    write_plan_cache(tmp_path / "curated", plan, workers=1)
    cache = FeatureCache(tmp_path / "curated")
    labels = np.zeros((len(cache), 80), np.float32)
    labels[np.arange(len(cache)), np.arange(len(cache))] = 1
    crop = 5 * 44100
    batches = TrainBatches(ClipData(cache, np.arange(len(cache)), labels), 8, crop, seed=3, epoch=1,
                           mixup_prob=0.6, mixup_weight=0.7, label_smoothing=0.01)
    mixed = 0
    for index in range(len(batches)):
        x, y = batches[index]
        rows = batches.order[index * 8: (index + 1) * 8]
        rng = np.random.default_rng([3, 1, index])
        audio = np.zeros((len(rows), crop), np.float32)
        for j, r in enumerate(rows):
            place(cache, r, audio[j], rng.random())
        want_y = 0.01 * (1 - labels[rows]) + 0.99 * labels[rows]
        if rng.random() < 0.6:
            perm = rng.permutation(len(rows))
            audio, want_y = 0.7 * audio + (1 - 0.7) * audio[perm], 0.7 * want_y + 0.3 * want_y[perm]
            mixed += 1
        assert np.array_equal(x["audio"], audio) and np.allclose(y, want_y)
    assert mixed > 0
    from fat2019.data.batches import CropBatches
    crops = CropBatches(ClipData(cache, np.arange(len(cache)), labels), 8, crop, "end")
    for index in range(len(crops)):
        rows = np.arange(index * 8, min((index + 1) * 8, len(cache)))
        audio = np.zeros((len(rows), crop), np.float32)
        for j, r in enumerate(rows):
            place(cache, r, audio[j], 1.0)
        assert np.array_equal(crops[index][0]["audio"], audio)


def test_the_stackers_epoch_scoring_gives_predicts_values():
    from fat2019.ensemble.predictor import STACKER_BATCH, StackerNet
    from fat2019.ensemble.stacking import ScoreBeforeEpoch
    from fat2019.eval.metrics import lrap
    from fat2019.nn.models import build_stacker
    rng = np.random.default_rng(0)
    x = rng.random((1500, 80, 7)).astype(np.float32)      # several batches, the last one short
    y = (rng.random((1500, 80)) < 0.02).astype(np.float32)
    y[np.arange(1500), rng.integers(80, size=1500)] = 1
    model = build_stacker(80, 7)
    want = model.predict(x, verbose=0, batch_size=STACKER_BATCH)
    net = StackerNet(80, 7, offset=1.6)
    assert np.array_equal(net.predict(x, model.get_weights()), want)
    scorer = ScoreBeforeEpoch(x, y, patience=15, net=net)
    scorer.set_model(model)
    scorer.on_epoch_begin(0)
    assert scorer.untrained_score == lrap(y, want)


def test_the_rehearsals_fault_check_kills_the_noisy_features_at_half_and_the_resumed_cache_is_equal(tmp_path):
    """rehearse.py --fault-check in place: the uninterrupted noisy cache's sums are kept, the
    cache is rebuilt with a SIGKILL at half, resumed, and compared; one noisy cache on disk."""
    data, work = tmp_path / "data", tmp_path / "work"
    assert make_full_size_data.main(["--out", str(data), "--scale", "0.004", "--workers", "2"]) == 0
    assert rehearse.main(["--data", str(data), "--work", str(work), "--only", "features", "--fault-check"]) == 0
    results = json.loads((work / "rehearsal.json").read_text())
    killed = results["stages"]["features noisy, killed at 50%"]
    assert killed["returncode"] == -9
    assert results["stages"]["features noisy, rerun (resumes)"]["returncode"] == 0
    assert results["fault_resume_equal"] is True
    assert set(results["fault_reference"]) >= {"index.csv", "audio.int16", "global_features.npy"}
    log = (work / "rehearsal.log").read_text()
    resumed = log[log.rindex("=== features noisy, rerun"):]
    n_noisy = len(pd.read_csv(data / "train_noisy.csv"))
    kept, decoded = map(int, re.search(rf"noisy: {n_noisy} clips: (\d+) from the cache, (\d+) decoded", resumed).groups())
    assert kept >= n_noisy // 2 and kept + decoded == n_noisy       # the killed run's clips were kept
    assert not (work / "features_fault").exists()


def test_the_rehearsal_report_gives_each_stages_growth_per_clip_in_cpu_seconds():
    from fat2019.tools.rehearsal import report

    def run(scale, clips, wall, cpu):
        stage = dict(clips=clips, wall_s=wall, peak_rss_mb=500.0, disk_mb=10.0, load_start=1.0, load_end=2.0,
                     returncode=0, note="", cpu_s=cpu)
        return {"scale": scale, "counts": {"curated": clips, "noisy": 0, "test": 0}, "models": ["v1mix"],
                "settings": [], "cpus": 2, "stages": {"features": stage, "train": {**stage, "cpu_s": None}}}
    small, big = run(0.25, 1000, 900.0, 100.0), run(1.0, 4000, 800.0, 500.0)   # wall shrank: a quieter machine
    text = report.section([small, big])
    assert "| features | 0.25 | 1,000 | 900 | 100 |" in text and "| features | 1 | 4,000 | 800 | 500 |" in text
    assert "| features | 4.00 | 5.00 | 1.25 | CPU s |" in text      # CPU, not the misleading wall ratio 0.89
    assert "| train | 4.00 | 0.89 | 0.22 | wall s |" in text        # no CPU figure at one scale: the wall


def rss_file_mb() -> float:
    """This process's resident pages that map files (Linux)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("RssFile:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def test_crops_are_read_as_stored_without_mapping_the_clips_into_memory(tmp_path):
    """place() reads each crop with pread: the same samples as the memory map's slice, and the
    process's file-mapped memory does not grow with the clips it crops (through the map it
    grew by about a whole clip per crop: the kernel maps folios and reads ahead)."""
    from fat2019.data.batches import crop_start, place
    from fat2019.tools.rehearsal.feed import write_plan_cache
    plan = data_plan.make_plan(0.004, seed=2, n_classes=80)["noisy"]      # 79 clips of about 15 s
    write_plan_cache(tmp_path / "noisy", plan, workers=1)
    cache = FeatureCache(tmp_path / "noisy")
    rng = np.random.default_rng(0)
    crop, clip_mb = 5 * 44100, float(np.mean(cache.n_samples)) * 2 / 1e6
    before = rss_file_mb()
    crops = []
    for i in range(len(cache)):                  # nothing has touched the map yet
        position = rng.random()
        got = np.zeros(crop, np.float32)
        place(cache, i, got, position)
        crops.append((position, got))
    grown = rss_file_mb() - before
    assert grown < 0.25 * clip_mb * len(cache), f"file-mapped memory grew {grown:.1f} MB for {len(cache)} crops"
    for i, (position, got) in enumerate(crops):
        raw, want = cache.raw(i), np.zeros(crop, np.float32)
        if len(raw) >= crop:
            s = crop_start(len(raw), crop, position)
            want[:] = raw[s: s + crop].astype(np.float32) * cache.scales[i]
        else:
            s = int(position * (crop - len(raw)))
            want[s: s + len(raw)] = raw.astype(np.float32) * cache.scales[i]
        assert np.array_equal(got, want)
        n = len(raw)
        a = int(rng.integers(0, n))
        b = int(rng.integers(a, n + 1))
        assert np.array_equal(cache.read(i, a, b), raw[a:b])
    longer = np.zeros(30 * 44100, np.float32)   # longer than any clip: zero-padded at its position
    place(cache, 0, longer, 0.5)
    raw = cache.raw(0)
    s = int(0.5 * (len(longer) - len(raw)))
    assert np.array_equal(longer[s: s + len(raw)], raw.astype(np.float32) * cache.scales[0])
    assert not longer[:s].any() and not longer[s + len(raw):].any()
