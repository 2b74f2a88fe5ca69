"""Fuzzing the two places where outside data enters: the audio decoder and the CSV loader.

Whatever the bytes, the only way out is a result or the project's own error (AudioError,
DatasetError) that the features stage turns into a bad_files.csv row or one clear
message: never another exception in the middle of a many-hour run. Hypothesis runs
derandomized (the same examples every run, so CI is deterministic) with no example
database and no deadline; the example counts keep the whole file to a few seconds.
"""
from __future__ import annotations

import io
import shutil
import tempfile
import warnings
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fat2019.data.audio import AudioError, Clip, process_clip
from fat2019.data.dataset import Dataset, DatasetError, class_name_problem, fname_problem, load_dataset
from fat2019.data.folds import assign_folds

FUZZ = settings(max_examples=120, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow])


@pytest.fixture(scope="module")
def scratch(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


def encoded(data: np.ndarray, rate: int, subtype: str, format: str = "WAV") -> bytes:
    buf = io.BytesIO()
    sf.write(buf, data, rate, subtype=subtype, format=format)
    return buf.getvalue()


_t = np.arange(2000) / 44100
_TONE = (0.4 * np.sin(2 * np.pi * 300 * _t)).astype(np.float32)
SEEDS = {  # valid files whose bytes get mutated
    "pcm16 mono": encoded(_TONE, 44100, "PCM_16"),
    "float stereo 22 kHz": encoded(np.stack([_TONE, -_TONE], 1), 22050, "FLOAT"),
    "pcm24": encoded(_TONE, 48000, "PCM_24"),
    "flac": encoded(_TONE, 44100, "PCM_16", "FLAC"),
}
MAGIC = [b"", b"RIFF", b"RIFF\x24\x08\x00\x00WAVEfmt ", b"RIFF\xff\xff\xff\xffWAVEfmt \x10\x00\x00\x00",
         b"fLaC", b"OggS", b"FORM\x00\x00\x00\x00AIFF", b".snd", b"ID3"]


def check_decodes_or_audio_error(path: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # garbage floats may overflow: allowed
        try:
            clip = process_clip(path)
        except AudioError as e:
            assert str(e)                               # a reason to put in bad_files.csv
            return
    assert isinstance(clip, Clip)
    assert clip.trimmed.dtype == np.float32 and clip.trimmed.ndim == 1 and len(clip.trimmed) > 0
    assert np.all(np.isfinite(clip.trimmed))
    assert clip.global_features.shape == (128, 12) and np.all(np.isfinite(clip.global_features))
    assert clip.length == len(clip.trimmed) / 441_000


@FUZZ
@given(prefix=st.sampled_from(MAGIC), body=st.binary(max_size=3000))
def test_decoder_on_random_bytes(scratch, prefix, body):
    path = scratch / "random.bin"
    path.write_bytes(prefix + body)
    check_decodes_or_audio_error(path)


@FUZZ
@given(seed=st.sampled_from(sorted(SEEDS)),
       edits=st.lists(st.tuples(st.integers(0, 80), st.integers(0, 255)), min_size=1, max_size=8),
       cut=st.one_of(st.none(), st.integers(0, 5000)))
def test_decoder_on_valid_files_with_mutated_headers(scratch, seed, edits, cut):
    data = bytearray(SEEDS[seed])
    for offset, value in edits:                         # the header and the first samples
        if offset < len(data):
            data[offset] = value
    path = scratch / "mutated.bin"
    path.write_bytes(bytes(data if cut is None else data[:cut]))
    check_decodes_or_audio_error(path)


@FUZZ
@given(seed=st.sampled_from(sorted(SEEDS)), positions=st.lists(st.floats(0, 1), min_size=1, max_size=20),
       value=st.integers(0, 255))
def test_decoder_on_valid_files_with_damaged_bodies(scratch, seed, positions, value):
    data = bytearray(SEEDS[seed])
    for p in positions:
        data[int(p * (len(data) - 1))] = value
    path = scratch / "damaged.bin"
    path.write_bytes(bytes(data))
    check_decodes_or_audio_error(path)


# CSV text: mostly the characters that matter to a CSV parser and to file names
CSV_TEXT = st.lists(st.sampled_from(list('ab.w/\\,"\n\r \t\x00é' + "\ufeff")
                                    + ["Bark", "Buzz", "fname", "labels", ".wav", "..", "c0.wav"]),
                    max_size=60).map("".join)
HEADERS = st.sampled_from(["fname,labels\n", "fname,labels,extra\n", "labels,fname\n", "fname\n", ""])


def check_loads_or_dataset_error(folder: Path) -> None:
    try:
        dataset = load_dataset(folder, check_files=False)
    except DatasetError as e:
        assert e.problems and str(e)
        return
    assert isinstance(dataset, Dataset)
    for clips in (dataset.curated, dataset.noisy, dataset.test):
        assert all(fname_problem(f) is None for f in clips.fnames)   # nothing path-like got through
        assert len(set(clips.fnames)) == len(clips.fnames)
    assert dataset.curated.labels.shape == (len(dataset.curated), len(dataset.classes))
    assert np.all(dataset.curated.labels.sum(axis=1) >= 1)            # no clip without a label
    assert all(c and class_name_problem(c) is None for c in dataset.classes)   # every class can be a label


@FUZZ
@given(curated=st.tuples(HEADERS, CSV_TEXT), noisy=st.one_of(st.none(), st.tuples(HEADERS, CSV_TEXT)),
       submission=st.one_of(st.none(),   # none: the classes come from the curated labels
                            st.tuples(st.sampled_from(["fname,Bark,Buzz\n", "fname,Bark,Bark\n", "fname\n",
                                                       "name,Bark\n", "fname,,Buzz\n", "\ufefffname,Bark,Buzz\n"]),
                                      CSV_TEXT)),
       raw=st.one_of(st.none(), st.tuples(st.sampled_from(["train_curated.csv", "train_noisy.csv",
                                                            "sample_submission.csv"]), st.binary(max_size=60))))
def test_csv_loader_on_random_text(curated, noisy, submission, raw):
    folder = Path(tempfile.mkdtemp(prefix="fuzzcsv"))
    try:
        (folder / "train_curated.csv").write_text("".join(curated), encoding="utf-8")
        if noisy is not None:
            (folder / "train_noisy.csv").write_text("".join(noisy), encoding="utf-8")
        if submission is not None:
            (folder / "sample_submission.csv").write_text("".join(submission), encoding="utf-8")
        if raw is not None:  # arbitrary bytes, not even UTF-8, in one of the files
            name, content = raw
            (folder / name).write_bytes(content)
        check_loads_or_dataset_error(folder)
    finally:
        shutil.rmtree(folder)


@FUZZ
@given(n_clips=st.integers(0, 12), n_classes=st.integers(1, 5), n_folds=st.integers(0, 6),
       seed=st.integers(0, 2**32 - 1))
def test_fold_assignment_on_random_labels(n_clips, n_classes, n_folds, seed):
    rng = np.random.default_rng(seed)
    labels = (rng.random((n_clips, n_classes)) < 0.3).astype(np.float32)
    labels[np.arange(n_clips), rng.integers(0, n_classes, n_clips)] = 1   # every clip has a label
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)    # thin classes: a warning by design
        try:
            fold = assign_folds(labels, n_folds)
        except DatasetError as e:
            assert e.problems
            return
    assert fold.shape == (n_clips,) and sorted(set(fold)) == list(range(n_folds))
