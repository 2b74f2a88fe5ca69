"""Your own data (README, "Your own data"): any class list, no noisy set, test clips
without labels, and the folders the stages pick for a data folder of one's own."""
import argparse
import shutil
from pathlib import Path

import pandas as pd
import pytest

from fat2019 import cli
from fat2019 import config
from fat2019 import settings
import ensemble
import features
import predict
import pretrain
import tag
import train
from fat2019.data.dataset import DatasetError, describe_sources, load_dataset
from helpers import PIPELINE_SETTINGS, make_dataset, write_csv

# Not FSD2019 classes; two have spaces. Their sorted order differs from this one.
OWN_CLASSES = ["kettle", "door bell", "typing", "bird song", "rain"]


def make_own_data(root: Path, n_curated: int = 10, n_test: int = 3, sample_submission: bool = False) -> Path:
    """make_dataset's layout with OWN_CLASSES (clips with two labels have a quoted
    "a,b" field), no train_noisy.csv and, unless asked for, no sample_submission.csv."""
    data = make_dataset(root, n_curated=n_curated, n_noisy=0, n_test=n_test, classes=OWN_CLASSES)
    (data / "train_noisy.csv").unlink()
    if not sample_submission:
        (data / "sample_submission.csv").unlink()
    return data


# --- the dataset: class list and test clips ------------------------------------------------

def test_without_sample_submission_classes_are_the_sorted_curated_labels(tmp_path):
    data = make_own_data(tmp_path)
    (data / "audio_test" / "notes.txt").write_text("not audio")            # not an audio extension
    shutil.copy(data / "audio_test" / "t000.wav", data / "audio_test" / ".hidden.wav")
    (data / "audio_test" / "folder.wav").mkdir()                           # not a file
    ds = load_dataset(data)
    assert ds.classes == sorted(OWN_CLASSES) == ["bird song", "door bell", "kettle", "rain", "typing"]
    assert ds.classes_from == data / "train_curated.csv"
    curated = pd.read_csv(data / "train_curated.csv")
    for row, text in zip(ds.curated.labels, curated["labels"]):
        assert [c for c, v in zip(ds.classes, row) if v] == sorted(text.split(","))
    assert any("," in text for text in curated["labels"])                  # two-label rows were read
    assert len(ds.noisy) == 0 and ds.noisy.labels.shape == (0, 5)
    assert ds.test.fnames == ["t000.wav", "t001.wav", "t002.wav"] and ds.test.labels is None
    assert ds.test_from == data / "audio_test"
    assert "3 test clips: the audio files in" in describe_sources(ds)


def test_sample_submission_gives_its_own_class_order(tmp_path):
    ds = load_dataset(make_own_data(tmp_path, sample_submission=True))
    assert ds.classes == OWN_CLASSES
    assert ds.test.fnames == ["t000.wav", "t001.wav", "t002.wav"]


@pytest.mark.parametrize("layout", ["no folder", "empty folder"])
def test_no_test_audio_means_no_test_clips(tmp_path, layout):
    data = make_own_data(tmp_path)
    shutil.rmtree(data / "audio_test")
    if layout == "empty folder":
        (data / "audio_test").mkdir()
    ds = load_dataset(data)
    assert len(ds.test) == 0 and [s.name for s in ds.sets()] == ["curated"]
    assert "out-of-fold results only" in describe_sources(ds)


def test_noisy_label_outside_the_curated_labels_is_named(tmp_path):
    data = make_own_data(tmp_path)
    shutil.copy(data / "audio_train" / "c000.wav", data / "audio_train" / "n000.wav")
    write_csv(data / "train_noisy.csv", ["fname", "labels"], [["n000.wav", "rain,thunder"]])
    with pytest.raises(DatasetError, match=r"unknown label\(s\) \['thunder'\] \(not a label of train_curated.csv"):
        load_dataset(data)


def test_class_names_no_label_could_carry_are_rejected(tmp_path):
    data = make_own_data(tmp_path)
    write_csv(data / "sample_submission.csv", ["fname", "kettle", "rain, heavy", " typing"], [])
    with pytest.raises(DatasetError) as err:
        load_dataset(data)
    assert len(err.value.problems) == 2
    assert "contains a comma" in str(err.value) and "starts or ends with a space" in str(err.value)


def test_without_either_csv_both_are_named(tmp_path):
    with pytest.raises(DatasetError) as err:
        load_dataset(tmp_path)
    assert any("sample_submission.csv: file not found" in p for p in err.value.problems)
    assert any("train_curated.csv: file not found" in p for p in err.value.problems)


# --- profile and folders -------------------------------------------------------------------

def resolve(*argv):
    parser = argparse.ArgumentParser()
    cli.add_common_args(parser)
    resolved = settings.resolve(parser.parse_args([str(a) for a in argv]), record=False)
    return resolved.profile, resolved.paths


def test_own_data_dir_keeps_models_and_submissions_beside_it(tmp_path):
    data = tmp_path / "my_data"
    profile, paths = resolve("--data-dir", data)
    assert profile.name == "full"       # real data, whatever input/ holds
    assert paths == settings.Paths(data=data, features=data / "features", models=data / "models" / "full",
                                 submissions=data / "submissions" / "full")
    profile, paths = resolve("--data-dir", data, "--profile", "demo", "--set", "n_folds=2")
    assert (profile.name, profile.n_folds) == ("demo", 2)
    assert (paths.models, paths.submissions) == (data / "models" / "demo", data / "submissions" / "demo")
    _, paths = resolve("--data-dir", data, "--models-dir", tmp_path / "m")
    assert paths.models == tmp_path / "m"


def test_the_profiles_own_data_dirs_keep_their_folders():
    demo = settings.profile_folders(config.PROFILES["demo"])
    profile, paths = resolve("--data-dir", demo.data)
    assert profile.name == "demo" and paths == demo
    assert resolve("--profile", "demo")[1] == demo
    full = settings.profile_folders(config.PROFILES["full"])
    assert resolve("--profile", "full", "--data-dir", full.data)[1] == full


def test_tag_takes_the_class_list_from_the_labels_before_predict(tmp_path):
    data = make_own_data(tmp_path / "data")
    (tmp_path / "models" / "v1mix").mkdir(parents=True)      # trained, not yet predicted: no CSV
    assert tag.find_classes(tmp_path / "models", data) == (sorted(OWN_CLASSES), data / "train_curated.csv")
    with pytest.raises(tag.TagError, match="no class list"):
        tag.find_classes(tmp_path / "models", tmp_path / "absent")


# --- every stage on own data ---------------------------------------------------------------

@pytest.fixture(scope="module")
def own_run(tmp_path_factory):
    """Every stage, in-process and tiny (helpers.PIPELINE_SETTINGS, one model), on own data
    without sample_submission.csv or train_noisy.csv; models and submissions in the
    default own-data folders."""
    data = make_own_data(tmp_path_factory.mktemp("own") / "my_data", n_curated=10, n_test=3)
    common = ["--profile", "demo", "--data-dir", str(data), "--set", *PIPELINE_SETTINGS, "--models", "v1mix"]
    assert features.main(["--data-dir", str(data), "--workers", "1"]) == 0
    for stage in (pretrain, train, predict, ensemble):
        assert stage.main(common) == 0, stage.__name__
    return dict(data=data, common=common, models=data / "models" / "demo", subs=data / "submissions" / "demo")


def test_every_stage_uses_the_own_class_list(own_run, capsys):
    data, models, subs = own_run["data"], own_run["models"], own_run["subs"]
    header = ["fname", *sorted(OWN_CLASSES)]
    curated = pd.read_csv(data / "train_curated.csv")
    assert not (models / "v1mix" / "pretrain.weights.h5").exists()      # no noisy set: from scratch
    for path in (models / "v1mix" / "oof.csv", subs / "average_oof.csv", subs / "stacker_oof.csv"):
        table = pd.read_csv(path)
        assert list(table.columns) == header and sorted(table["fname"]) == sorted(curated["fname"]), path
    for path in (models / "v1mix" / "test.csv", subs / "average.csv", subs / "submission.csv"):
        table = pd.read_csv(path)
        assert list(table.columns) == header and list(table["fname"]) == ["t000.wav", "t001.wav", "t002.wav"]
    assert sorted(pd.read_csv(subs / "per_class.csv")["class"]) == sorted(OWN_CLASSES)

    out = data.parent / "tags.csv"
    assert tag.main([str(data / "audio_test"), "--profile", "demo", "--data-dir", str(data),
                     "--set", *PIPELINE_SETTINGS, "--top-k", "2", "--csv", str(out)]) == 0
    tags = pd.read_csv(out)
    assert list(tags.columns) == header and len(tags) == 3
    listed = [line.split(maxsplit=1)[1] for line in capsys.readouterr().out.splitlines() if line.startswith("  ")]
    assert len(listed) == 3 * 2 and set(listed) <= set(OWN_CLASSES)


def test_pretrain_without_noisy_set_says_so(own_run, capsys):
    assert pretrain.main(own_run["common"]) == 0
    assert "no train_noisy.csv clips; nothing to pretrain (train.py starts from scratch)" in capsys.readouterr().out


def test_without_test_clips_the_stages_give_out_of_fold_results_only(own_run, tmp_path, capsys):
    data = tmp_path / "my_data"
    shutil.copytree(own_run["data"], data, ignore=shutil.ignore_patterns("audio_test"))
    common = [str(data) if a == str(own_run["data"]) else a for a in own_run["common"]]
    subs = data / "submissions" / "demo"
    assert (subs / "submission.csv").is_file()      # the copied run's, now stale
    assert predict.main([*common, "--force"]) == 0
    assert ensemble.main(common) == 0
    out = capsys.readouterr().out
    assert "no test clips" in out and "submission.csv" in out
    assert not (subs / "submission.csv").exists() and not (subs / "average.csv").exists()
    test = pd.read_csv(data / "models" / "demo" / "v1mix" / "test.csv")
    assert list(test.columns) == ["fname", *sorted(OWN_CLASSES)] and len(test) == 0
    assert len(pd.read_csv(subs / "stacker_oof.csv")) == 10
