import numpy as np
import pytest

from fat2019.data.dataset import DatasetError, fname_problem, load_dataset, multi_hot, read_classes
from helpers import CLASSES, make_dataset, write_csv


def test_loads_valid_dataset(tmp_path):
    data = make_dataset(tmp_path)
    ds = load_dataset(data)
    assert ds.classes == CLASSES
    assert len(ds.curated) == 6 and len(ds.noisy) == 4 and len(ds.test) == 3
    assert ds.curated.paths[0] == data / "audio_train" / "c000.wav"
    assert ds.test.paths[0] == data / "audio_test" / "t000.wav"
    # first curated clip carries two labels (k % 3 == 0), the second one
    assert ds.curated.labels[0].tolist() == [1, 1, 0, 0]
    assert ds.curated.labels[1].tolist() == [0, 1, 0, 0]
    assert ds.test.labels is None


def test_class_order_comes_from_sample_submission(tmp_path):
    write_csv(tmp_path / "s.csv", ["fname", "Zebra", "Apple", "Mango"], [])
    assert read_classes(tmp_path / "s.csv") == ["Zebra", "Apple", "Mango"]


def test_multi_hot():
    y = multi_hot([["b"], ["a", "c"], []], ["a", "b", "c"])
    assert y.dtype == np.float32
    assert y.tolist() == [[0, 1, 0], [1, 0, 1], [0, 0, 0]]


def test_every_problem_is_reported_at_once(tmp_path):
    data = make_dataset(tmp_path)
    write_csv(data / "train_curated.csv", ["fname", "labels"], [
        ["c000.wav", "Bark"],
        ["c001.wav", "Meow"],              # unknown label
        ["c000.wav", "Buzz"],              # duplicate
        ["gone.wav", "Chirp"],             # missing file
        ["../x.wav", "Drip"],              # path traversal
        ["c002.wav", ""],                  # empty label field
    ])
    write_csv(data / "train_noisy.csv", ["fname", "labels"], [["c001.wav", "Bark"]])  # duplicate across CSVs
    with pytest.raises(DatasetError) as err:
        load_dataset(data)
    text = str(err.value)
    for needle in ["'Meow'", "'c000.wav': listed twice", "gone.wav", "'../x.wav'", "empty label field",
                   "'c001.wav': listed twice"]:
        assert needle in text, needle
    assert len(err.value.problems) >= 6


@pytest.mark.parametrize("name", ["../x.wav", "/etc/passwd", "a/b.wav", "C:\\x.wav", "..", "", " "])
def test_path_like_fnames_are_rejected(name):
    assert fname_problem(name)


def test_plain_fname_is_fine():
    assert fname_problem("0a1b2c3d.wav") is None


def test_missing_sample_submission_is_a_clear_error(tmp_path):
    with pytest.raises(DatasetError, match="sample_submission.csv: file not found"):
        load_dataset(tmp_path)
