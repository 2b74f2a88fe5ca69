"""The bad-input matrix (docs/bad-data.md): every kind of bad or odd input, built
for real, and what the pipeline does with it.

    odd but decodable audio      kept; what was odd is in the cache index's `notes`
    undecodable or missing file  listed in <features>/<set>/bad_files.csv; the features
                                 stage fails naming each, or leaves them out with --skip-bad
    CSV problems                 one DatasetError listing every offender, before any work
    too few clips for the folds  DatasetError from folds.py; a class with fewer positives
                                 than folds only warns (stratification still works)
"""
from __future__ import annotations

import contextlib
import io
import warnings
from dataclasses import dataclass
from typing import Callable

import librosa
import numpy as np
import pandas as pd
import pytest
import soundfile as sf

import features
from fat2019 import cli
from fat2019.data import cache_builder
from fat2019.data import folds
from fat2019.data.audio import trim
from fat2019.data.dataset import DatasetError, load_dataset
from fat2019.data.feature_cache import FeatureCache
from helpers import CLASSES, make_dataset, tone, write_csv

RATE = 44100
CLIP = tone(0.4, 440, silence=0.05, seed=1)           # float32 mono, peak about 0.3


def wav_bytes(data: np.ndarray, rate: int = RATE, subtype: str = "PCM_16", format: str = "WAV") -> bytes:
    buf = io.BytesIO()
    sf.write(buf, data, rate, subtype=subtype, format=format)
    return buf.getvalue()


def run_features(data, *extra) -> int:
    return cli.call(features.main, ["--data-dir", str(data), "--workers", "1", "--sets", "curated", *extra])


def run_features_capturing_stderr(data) -> tuple[int, str]:
    with contextlib.redirect_stderr(io.StringIO()) as capture:
        rc = run_features(data)
    return rc, capture.getvalue()


# --- odd but decodable audio: kept and noted ------------------------------------------------

@dataclass
class Odd:
    case: str
    fname: str
    content: Callable[[], bytes]
    note: str | None                  # expected in the clip's notes (None: nothing odd to say)
    like_librosa: bool = True         # cached clip == librosa.load(sr=44100) + trim


def _with_non_finite() -> bytes:
    x = CLIP.copy()
    x[::50], x[1::50] = np.nan, np.inf
    return wav_bytes(x, subtype="FLOAT")


ODD = [
    Odd("truncated wav (cut in the data)", "truncated.wav", lambda: wav_bytes(CLIP)[:20_000], "truncated"),
    Odd("all-silent clip (nothing to trim to)", "silent.wav", lambda: wav_bytes(np.zeros(4000, np.float32)),
        "all samples are zero", like_librosa=False),
    Odd("shorter than 128 samples", "tiny.wav", lambda: wav_bytes(CLIP[5000:5100]), "only 100 samples"),
    Odd("shorter than one FFT frame (1024)", "short.wav", lambda: wav_bytes(CLIP[5000:5600]), None),
    Odd("stereo", "stereo.wav", lambda: wav_bytes(np.stack([CLIP, 0.5 * CLIP], axis=1)), "2 channels averaged"),
    Odd("8-bit", "u8.wav", lambda: wav_bytes(CLIP, subtype="PCM_U8"), None),
    Odd("24-bit", "s24.wav", lambda: wav_bytes(CLIP, subtype="PCM_24"), None),
    Odd("32-bit float", "f32.wav", lambda: wav_bytes(CLIP, subtype="FLOAT"), None),
    Odd("float beyond full scale", "loud.wav", lambda: wav_bytes(4 * CLIP, subtype="FLOAT"), "peak amplitude"),
    Odd("22.05 kHz", "r22k.wav", lambda: wav_bytes(CLIP[::2], rate=22050), "resampled from 22050 Hz"),
    Odd("48 kHz", "r48k.wav", lambda: wav_bytes(CLIP, rate=48000), "resampled from 48000 Hz"),
    Odd("NaN/Inf samples", "nan.wav", _with_non_finite, "non-finite samples set to 0", like_librosa=False),
    Odd("flac", "clip.flac", lambda: wav_bytes(CLIP, format="FLAC"), None),
    Odd("ogg vorbis", "clip.ogg", lambda: wav_bytes(CLIP, subtype="VORBIS", format="OGG"), None),
]


@pytest.fixture(scope="module")
def odd(tmp_path_factory):
    """One features run over a curated set holding every odd clip (and three plain ones)."""
    data = make_dataset(tmp_path_factory.mktemp("odd"), n_curated=3, n_noisy=1, n_test=1)
    rows = [[f"c{i:03d}.wav", CLASSES[i]] for i in range(3)]
    for i, case in enumerate(ODD):
        (data / "audio_train" / case.fname).write_bytes(case.content())
        rows.append([case.fname, CLASSES[i % len(CLASSES)]])
    write_csv(data / "train_curated.csv", ["fname", "labels"], rows)
    assert run_features(data) == 0
    return data, FeatureCache(data / "features" / "curated")


@pytest.mark.parametrize("case", ODD, ids=[c.case for c in ODD])
def test_odd_audio_is_kept_and_noted(odd, case):
    data, cache = odd
    assert case.fname in cache.row, "odd but decodable audio must stay in the cache"
    i = cache.row[case.fname]
    notes = cache.index.loc[i, "notes"]
    if case.note:
        assert case.note in notes
    else:
        assert notes == ""
    wave = cache.waveform(i)
    assert len(wave) > 0 and np.all(np.isfinite(wave))
    assert np.all(np.isfinite(cache.global_features[i]))
    if case.like_librosa:
        raw, _ = librosa.load(data / "audio_train" / case.fname, sr=RATE)
        expected, _ = librosa.effects.trim(raw, top_db=60)
        assert len(wave) == len(expected)
        # int16 storage: half a step of the clip's scale (1/65536 of full scale up to 0 dBFS),
        # plus float32 rounding of the product
        assert np.max(np.abs(wave - expected)) <= cache.scales[i] * 0.51
        assert cache.lengths[i] == pytest.approx(len(expected) / 441_000)


def test_the_console_counts_the_clips_kept_with_a_note_and_says_where_they_are(odd, capsys):
    data, _ = odd
    assert run_features(data) == 0   # up to date: the count comes from the cache's index
    index = data / "features" / "curated" / "index.csv"
    noted = [c for c in ODD if c.note]
    line = next(line for line in capsys.readouterr().out.splitlines() if "kept with a note" in line)
    assert line.startswith(f"  curated: {len(noted)} clip(s) kept with a note (truncated 1, ")
    assert "resampled 2" in line and line.endswith(f"the notes column of {index}")


def test_all_silent_clip_is_kept_whole(odd):
    _, cache = odd
    i = cache.row["silent.wav"]
    assert cache.n_samples[i] == 4000 and not np.any(cache.raw(i))
    assert cache.lengths[i] == pytest.approx(4000 / 441_000)


def test_non_finite_samples_become_zeros(odd):
    data, cache = odd
    wave = cache.waveform(cache.row["nan.wav"])
    x = CLIP.copy()
    x[::50] = x[1::50] = 0
    expected, _ = librosa.effects.trim(x, top_db=60)
    assert len(wave) == len(expected) and np.max(np.abs(wave - expected)) <= 1 / 65536


def test_absurdly_loud_float_clip_trims_like_its_scaled_copy():
    """Garbage float data near float32's limit: librosa's float32 squares would overflow
    (and trim everything away); the trim is relative, so the scaled clip's bounds are used."""
    x = tone(0.5, silence=0.2, seed=3)
    notes = []
    loud = trim(x * np.float32(1e30), notes)
    assert notes == [] and len(loud) == len(trim(x)) < len(x)
    np.testing.assert_array_equal(loud, trim(x) * np.float32(1e30))


def test_clip_shorter_than_an_fft_frame_reaches_the_model_zero_padded(odd):
    """The model never sees the clip's own length: every crop is `crop_samples` long, a
    short clip zero-padded, so its STFT has whole frames."""
    from fat2019.data.batches import ClipData, CropBatches
    from fat2019.nn.frontend import LogMelSpectrogram
    _, cache = odd
    i = cache.row["short.wav"]
    assert cache.n_samples[i] < 1024
    crop = 4096
    (x,) = CropBatches(ClipData(cache, np.array([i])), 1, crop, "start")[0]
    audio = x["audio"][0]
    n = cache.n_samples[i]
    np.testing.assert_array_equal(audio[:n], cache.waveform(i))
    assert not np.any(audio[n:])
    mel = np.asarray(LogMelSpectrogram(sample_rate=RATE)(x["audio"]))
    assert mel.shape[:2] == (1, crop // 512) and np.all(np.isfinite(mel))


# --- undecodable or missing files: bad_files.csv, stage fails unless --skip-bad ----------------

@dataclass
class Bad:
    case: str
    fname: str
    content: Callable[[], bytes] | None   # None: listed in the CSV, no file
    problem: str                          # expected in bad_files.csv and the error message


BAD = [
    Bad("listed in the CSV but missing", "missing.wav", None, "file not found"),
    Bad("corrupt bytes", "corrupt.wav", lambda: b"definitely not audio " * 20, "cannot decode"),
    Bad("truncated inside the header", "cut_header.wav", lambda: wav_bytes(CLIP)[:30], "cannot decode"),
    Bad("truncated right after the header", "cut_data.wav", lambda: wav_bytes(CLIP)[:44],
        "no audio samples (truncated"),
    Bad("zero-byte file", "empty.wav", lambda: b"", "cannot decode"),
    Bad("valid file with zero samples", "no_samples.wav", lambda: wav_bytes(np.zeros(0, np.float32)),
        "no audio samples"),
    Bad("implausible sample rate (100 Hz)", "rate100.wav", lambda: wav_bytes(CLIP[:400], rate=100),
        "implausible sample rate 100 Hz"),
]
GOOD = ["c000.wav", "c001.wav", "c002.wav"]


@pytest.fixture(scope="module")
def bad(tmp_path_factory):
    """A curated set with every kind of unusable file; the stage run without and with
    --skip-bad. Returns (data dir, exit code, stderr, bad_files table, exit code with
    --skip-bad, decodes done by the --skip-bad run)."""
    data = make_dataset(tmp_path_factory.mktemp("bad"), n_curated=3, n_noisy=1, n_test=1)
    rows = [[f, CLASSES[0]] for f in GOOD]
    for case in BAD:
        if case.content is not None:
            (data / "audio_train" / case.fname).write_bytes(case.content())
        rows.append([case.fname, CLASSES[1]])
    write_csv(data / "train_curated.csv", ["fname", "labels"], rows)

    failed_rc, stderr = run_features_capturing_stderr(data)
    table = pd.read_csv(data / "features" / "curated" / "bad_files.csv", dtype=str, keep_default_na=False)
    assert not (data / "features" / "curated" / "index.csv").exists()

    decoded = []
    real = cache_builder.featurise
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(cache_builder, "featurise", lambda job: decoded.append(job[0]) or real(job))
        skip_rc = run_features(data, "--skip-bad")
    return data, failed_rc, stderr, table, skip_rc, decoded


@pytest.mark.parametrize("case", BAD, ids=[c.case for c in BAD])
def test_unusable_file_is_listed_and_fails_the_stage(bad, case):
    data, failed_rc, err, table, _, _ = bad
    assert failed_rc == 1
    row = table[table["fname"] == case.fname]
    assert len(row) == 1, f"{case.fname} not in bad_files.csv"
    assert case.problem in row["problem"].iloc[0]
    assert row["path"].iloc[0] == str(data / "audio_train" / case.fname)
    assert f"{case.fname}: " in err and case.problem in err


def test_bad_files_list_names_only_the_bad_ones(bad):
    _, _, err, table, _, _ = bad
    assert sorted(table["fname"]) == sorted(c.fname for c in BAD)
    assert "--skip-bad" in err and f"{len(BAD)} file(s) cannot be used" in err


def test_skip_bad_leaves_them_out_and_keeps_what_was_decoded(bad):
    data, _, _, _, skip_rc, decoded = bad
    assert skip_rc == 0
    cache = FeatureCache(data / "features" / "curated")
    assert sorted(cache.fnames) == GOOD
    # the failed run's decoded clips were kept in the partial build: only the bad files
    # were tried again
    assert not set(decoded) & set(GOOD)
    assert (data / "features" / "curated" / "bad_files.csv").is_file()


# --- CSV problems: one DatasetError listing every offender, before any work -----------------

# (case, needle expected in the error); the dataset below holds all of them at once
CSV_CASES = [
    ("unknown label", "'c001.wav'): unknown label(s) ['Meow']"),
    ("label the sample_submission columns lack", "'c002.wav'): unknown label(s) ['Drip']"),
    ("empty label field", "'c003.wav'): empty label field"),
    ("duplicate fname in one CSV", "'c004.wav': listed twice (train_curated.csv and train_curated.csv)"),
    ("duplicate fname across CSVs", "'c000.wav': listed twice (train_curated.csv and train_noisy.csv)"),
    ("duplicate fname in sample_submission", "'t000.wav': listed twice (sample_submission.csv and "
                                             "sample_submission.csv)"),
    ("relative path", "'../x.wav'): file name contains a path"),
    ("absolute path", f"'/etc/hostname'): file name contains a path"),
    ("path in sample_submission", "'sub/t9.wav'): file name contains a path"),
    ("unquoted comma (extra field)", "train_curated.csv line 10: 3 field(s), the header has 2"),
]


@pytest.fixture(scope="module")
def csv_error(tmp_path_factory):
    data = make_dataset(tmp_path_factory.mktemp("csv"), n_curated=6, n_noisy=1, n_test=2)
    (data / "x.wav").write_bytes(wav_bytes(CLIP))       # what ../x.wav would reach
    write_csv(data / "train_curated.csv", ["fname", "labels"], [
        ["c000.wav", "Bark"],
        ["c001.wav", "Meow"],
        ["c002.wav", "Drip"],
        ["c003.wav", ""],
        ["c004.wav", "Bark"],
        ["c004.wav", "Buzz"],
        ["../x.wav", "Bark"],
        ["/etc/hostname", "Bark"],
        ["c005.wav", "Bark", "Buzz"],
    ])
    write_csv(data / "train_noisy.csv", ["fname", "labels"], [["c000.wav", "Bark"]])
    write_csv(data / "sample_submission.csv", ["fname", "Bark", "Buzz", "Chirp"],
              [["t000.wav", 0, 0, 0], ["t000.wav", 0, 0, 0], ["sub/t9.wav", 0, 0, 0]])
    rc, stderr = run_features_capturing_stderr(data)
    with pytest.raises(DatasetError) as err:
        load_dataset(data, check_files=False)
    return data, rc, stderr, err.value


@pytest.mark.parametrize("case,needle", CSV_CASES, ids=[c for c, _ in CSV_CASES])
def test_csv_problem_is_reported(csv_error, case, needle):
    _, rc, err, error = csv_error
    assert rc == 2
    assert needle in err
    assert sum(needle in p for p in error.problems) == 1


def test_csv_problems_come_all_at_once_before_any_work(csv_error):
    data, _, _, error = csv_error
    assert len(error.problems) == len(CSV_CASES)
    assert not (data / "features").exists()


@pytest.mark.parametrize("text,needle", [
    (b"", "the file is empty"),
    (b"\xff\xfe\x00garbage", "cannot parse"),
    (b"name,tags\na.wav,Bark\n", "missing column 'fname'"),
    (b"fname,labels,labels\na.wav,Bark,Buzz\n", "column 'labels' appears 2 times"),
], ids=["empty", "not utf-8", "wrong header", "repeated column"])
def test_unreadable_csv_is_a_dataset_error(tmp_path, text, needle):
    data = make_dataset(tmp_path, n_curated=2, n_noisy=1, n_test=1)
    (data / "train_curated.csv").write_bytes(text)
    with pytest.raises(DatasetError, match=needle):
        load_dataset(data)


def test_byte_order_mark_is_accepted(tmp_path):
    data = make_dataset(tmp_path, n_curated=2, n_noisy=1, n_test=1)
    for name in ("train_curated.csv", "sample_submission.csv"):
        path = data / name
        path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())
    dataset = load_dataset(data)
    assert dataset.classes == CLASSES and dataset.curated.fnames == ["c000.wav", "c001.wav"]


def test_path_traversal_is_rejected_even_when_the_file_exists(tmp_path):
    data = make_dataset(tmp_path, n_curated=2, n_noisy=1, n_test=1)
    (data / "x.wav").write_bytes(wav_bytes(CLIP))
    write_csv(data / "train_curated.csv", ["fname", "labels"], [["c000.wav", "Bark"], ["../x.wav", "Buzz"]])
    with pytest.raises(DatasetError, match="file name contains a path"):
        load_dataset(data, check_files=False)
    assert run_features(data, "--skip-bad") == 2        # --skip-bad does not make it a bad file


def test_class_without_a_training_clip_is_kept_with_a_note(tmp_path, capsys):
    """sample_submission may name classes no curated clip carries: they keep their column
    and are scored (low); lwlrap gives them no weight."""
    data = make_dataset(tmp_path, n_curated=6, n_noisy=1, n_test=1)
    sub = pd.read_csv(data / "sample_submission.csv")
    sub["Whistle"] = 0
    sub.to_csv(data / "sample_submission.csv", index=False)
    assert run_features(data) == 0
    assert "1 class(es) of sample_submission.csv have no curated clip: ['Whistle']" in capsys.readouterr().out
    dataset = load_dataset(data)
    assert dataset.classes[-1] == "Whistle" and not dataset.curated.labels[:, -1].any()
    with warnings.catch_warnings():  # Chirp and Drip have one clip each: not this test's point
        warnings.simplefilter("ignore")
        assert sorted(set(folds.assign_folds(dataset.curated.labels, 2))) == [0, 1]


# --- folds ------------------------------------------------------------------------------------

def test_fewer_clips_than_folds_is_a_clear_error(tmp_path):
    labels = np.eye(4, dtype=np.float32)[[0, 1]]
    with pytest.raises(DatasetError, match="2 curated clip\\(s\\) cannot make 3 folds"):
        folds.assign_folds(labels, 3)
    from fat2019.data.dataset import ClipSet
    with pytest.raises(DatasetError):
        folds.load_or_create(tmp_path, ClipSet("curated", ["a.wav", "b.wav"], [], labels), 3)
    assert not (tmp_path / folds.FOLDS_CSV).exists()


def test_one_fold_is_refused():
    with pytest.raises(DatasetError, match="at least 2"):
        folds.assign_folds(np.eye(3, dtype=np.float32), 1)


def test_class_with_fewer_positives_than_folds_warns_and_folds_still_work():
    rng = np.random.default_rng(0)
    labels = np.zeros((30, 4), np.float32)
    labels[np.arange(30), rng.integers(0, 3, 30)] = 1
    labels[[4, 17], 3] = 1                               # "Drip": 2 positives, 5 folds
    with pytest.warns(UserWarning, match=r"fewer positive clips than the 5 folds.*\['Drip'\]"):
        fold = folds.assign_folds(labels, 5, CLASSES)
    assert sorted(np.bincount(fold)) == [6] * 5
    assert fold[4] != fold[17]                           # stratified: its clips in different folds


def test_a_single_class_dataset_gets_folds():
    labels = np.ones((6, 1), np.float32)
    assert sorted(np.bincount(folds.assign_folds(labels, 3))) == [2, 2, 2]
