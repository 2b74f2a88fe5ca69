"""get_data.py against a tiny fake of the public release served on 127.0.0.1: download,
resume, checksums, --from (Zenodo's and Kaggle's files), the input/ it lays out, bad
archives, no network, a full disk, and features.py reading the result. Also the split
archive reader and the test-set scores ensemble.py prints."""
from __future__ import annotations

import csv
import hashlib
import io
import json
import re
import shutil
import socket
import subprocess
import zipfile
from pathlib import Path

import numpy as np
import pytest

import fake_release as fr
import get_data
from fat2019.data import download
from fat2019.data.dataset import load_dataset, read_test_labels, read_test_parts
from fat2019.data.unpack import open_split_zip
from fat2019.eval.metrics import lwlrap
from fat2019.eval.test_set import score_test_set


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    """(folder of archives, file table path): built once for the module."""
    root = tmp_path_factory.mktemp("release")
    rows = fr.build_release(root / "files")
    return root / "files", fr.write_table(root / "files.json", rows)


def rows_of(path: Path) -> list[list[str]]:
    with open(path, newline="") as f:
        return list(csv.reader(f))


def run(dest: Path, *args: str) -> int:
    return get_data.main(["--dest", str(dest), *args])


def test_download_lays_out_input_as_the_stages_expect_and_a_rerun_fetches_nothing(release, tmp_path, capsys):
    files, table = release
    dest = tmp_path / "input"
    with fr.serve(files) as (url, server):
        assert run(dest, "--base-url", url, "--files", str(table)) == 0
        assert {n for m, n, _ in server.requests if m == "GET"} == {r["name"] for r in json.loads(table.read_text())}
        server.requests.clear()
        assert run(dest, "--base-url", url, "--files", str(table)) == 0
        assert server.requests == []
    captured = capsys.readouterr()
    out = captured.out
    assert "already unpacked" in out and "test_labels.csv (2 private, 2 public)" in out
    # one line per file: name, size, time and the hash checked; none of pooch's own lines
    rows = json.loads(table.read_text())
    for row in rows:
        lines = [line for line in out.splitlines() if line.startswith(f"  {row['name']}: ")]
        assert re.fullmatch(rf"  {re.escape(row['name'])}: [\d.]+ MiB, downloaded in \d+s; md5 {row['md5']} checked",
                            lines[0]), lines[0]
        if row["holds"] == "meta":   # the rerun reads it again; the unpacked sets' archives it skips
            assert lines[1:] == [f"  {row['name']}: {lines[0].split(': ')[1].split(',')[0]}, already downloaded; "
                                 f"md5 {row['md5']} checked"]
        else:
            assert len(lines) == 1
    assert "pooch" not in captured.err and "Downloading data from" not in captured.err + out

    clips = fr.clip_table()
    assert sorted(p.name for p in (dest / "audio_train").iterdir()) == sorted(f for s in ("curated", "noisy")
                                                                             for f, _ in clips[s])
    assert sorted(p.name for p in (dest / "audio_test").iterdir()) == sorted(f for f, _ in clips["test"])
    assert rows_of(dest / "train_curated.csv") == [["fname", "labels"], *map(list, clips["curated"])]
    assert rows_of(dest / "train_noisy.csv") == [["fname", "labels"], *map(list, clips["noisy"])]
    sub = rows_of(dest / "sample_submission.csv")
    assert sub[0] == ["fname"] + fr.CLASSES and [r[0] for r in sub[1:]] == [f for f, _ in clips["test"]]
    assert rows_of(dest / "test_labels.csv")[1] == [clips["test"][0][0], clips["test"][0][1], "Public"]
    # the unpacked clips are the archives' bytes
    with zipfile.ZipFile(files / "FSDKaggle2019.audio_test.zip") as z:
        name = z.namelist()[0]
        assert (dest / "audio_test" / Path(name).name).read_bytes() == z.read(name)

    dataset = load_dataset(dest)
    assert len(dataset.classes) == 80 and len(dataset.noisy) == 4
    truth = read_test_labels(dest, dataset)
    assert truth.shape == (4, 80) and truth.sum() == 6
    parts = read_test_parts(dest, dataset)
    assert {p: m.tolist() for p, m in parts.items()} == {"public": [True, False, True, False],
                                                       "private": [False, True, False, True]}


def test_without_a_known_hash_each_download_prints_the_hash_to_pin_and_that_pins_it(release, tmp_path, capsys):
    files, table = release
    rows = [{k: v for k, v in r.items() if k != "md5"} for r in json.loads(table.read_text())]
    unpinned = fr.write_table(tmp_path / "unpinned.json", rows)
    with fr.serve(files) as (url, _):
        assert run(tmp_path / "input", "--base-url", url, "--files", str(unpinned)) == 0
    captured = capsys.readouterr()
    name = "FSDKaggle2019.audio_test.zip"
    line = next(line for line in captured.out.splitlines() if line.startswith(f"  {name}: "))
    digest = hashlib.sha256((files / name).read_bytes()).hexdigest()
    assert line.endswith(f'sha256 {digest} (no published checksum; pin it as "sha256" in a --files table)')
    assert "SHA256 hash of downloaded file" not in captured.err + captured.out
    # the printed hash, pinned, is checked: a different one is refused
    for r in rows:
        r["sha256"] = digest if r["name"] == name else None
    with fr.serve(files) as (url, _):
        assert run(tmp_path / "again", "--base-url", url, "--files", str(fr.write_table(tmp_path / "p.json", rows))) == 0
    assert f"sha256 {digest} checked" in capsys.readouterr().out


def test_a_cut_connection_is_resumed_with_a_range_request(release, tmp_path, capsys):
    files, table = release
    dest, name = tmp_path / "input", "FSDKaggle2019.audio_train_curated.zip"
    with fr.serve(files) as (url, server):
        server.cut[name] = 1 << 16   # one whole chunk arrives (the chunk in flight is lost)
        assert run(dest, "--base-url", url, "--files", str(table), "--retries", "0") == 2
        err = capsys.readouterr().err
        assert name in err and "rerun to resume" in err
        archives = dest / "archives"
        assert (archives / f"{name}.part").stat().st_size == 1 << 16 and not (archives / name).exists()
        assert not (dest / "train_curated.csv").exists()
        assert run(dest, "--base-url", url, "--files", str(table)) == 0
        assert ("GET", name, "bytes=65536-") in server.requests
    assert (archives / name).read_bytes() == (files / name).read_bytes()
    assert not (archives / f"{name}.part").exists()


def test_a_cut_is_retried_within_one_run(release, tmp_path):
    files, table = release
    name = "FSDKaggle2019.audio_test.zip"
    with fr.serve(files) as (url, server):
        server.cut[name] = 1 << 16
        assert run(tmp_path / "input", "--base-url", url, "--files", str(table)) == 0
        assert [r for _, n, r in server.requests if n == name] == [None, "bytes=65536-"]


def test_a_checksum_mismatch_names_the_file_and_keeps_nothing(release, tmp_path, capsys):
    files, table = release
    rows = json.loads(table.read_text())
    bad = next(r for r in rows if r["name"] == "FSDKaggle2019.audio_test.zip")
    bad["md5"] = "0" * 32
    wrong = fr.write_table(tmp_path / "wrong.json", rows)
    dest = tmp_path / "input"
    with fr.serve(files) as (url, _):
        assert run(dest, "--base-url", url, "--files", str(wrong)) == 2
    err = capsys.readouterr().err
    assert "FSDKaggle2019.audio_test.zip" in err and "checksum mismatch" in err
    assert sorted(p.name for p in (dest / "archives").iterdir() if "audio_test" in p.name) == []
    assert not (dest / "train_curated.csv").exists()


def test_from_dir_uses_the_archives_on_disk_without_network(release, tmp_path, monkeypatch):
    files, _ = release
    monkeypatch.setenv(download.BASE_URL_ENV, "http://127.0.0.1:9/nothing-listens-here")
    assert run(tmp_path / "input", "--from", str(files)) == 0
    assert len(load_dataset(tmp_path / "input").curated) == 5
    assert not (tmp_path / "input" / "archives").exists()


def test_delete_archives_frees_the_space_and_a_rerun_still_succeeds(release, tmp_path):
    files, _ = release
    source = tmp_path / "files"
    shutil.copytree(files, source)
    dest = tmp_path / "input"
    assert run(dest, "--from", str(source), "--delete-archives") == 0
    assert sorted(p.name for p in source.iterdir()) == ["FSDKaggle2019.meta.zip"]
    assert run(dest, "--from", str(source)) == 0
    assert len(load_dataset(dest).test) == 4


def kaggle_files(folder: Path, release_files: Path) -> Path:
    """The competition's layout: wavs at the zips' top level, the original CSV names."""
    folder.mkdir()
    clips = fr.clip_table()
    sources = {"curated": "FSDKaggle2019.audio_train_curated.zip", "test": "FSDKaggle2019.audio_test.zip"}
    for s, zip_name in (("curated", "train_curated.zip"), ("test", "test.zip")):
        with zipfile.ZipFile(release_files / sources[s]) as z, zipfile.ZipFile(folder / zip_name, "w") as out:
            for n in z.namelist():
                out.writestr(Path(n).name, z.read(n))
    with open_split_zip([release_files / "FSDKaggle2019.audio_train_noisy.z01",
                         release_files / "FSDKaggle2019.audio_train_noisy.zip"]) as z, \
            zipfile.ZipFile(folder / "train_noisy.zip", "w") as out:
        for n in z.namelist():
            out.writestr(Path(n).name, z.read(n))
    for s, csv_name in (("curated", "train_curated.csv"), ("noisy", "train_noisy.csv")):
        (folder / csv_name).write_text(fr.csv_text(["fname", "labels"], [list(r) for r in clips[s]]))
    public = [f for i, (f, _) in enumerate(clips["test"]) if i % 2 == 0]   # Kaggle's test.zip: the public part
    (folder / "sample_submission.csv").write_text(fr.csv_text(["fname"] + fr.CLASSES, [[f] + [0] * 80 for f in public]))
    return folder


def test_from_dir_takes_the_competitions_own_files_and_the_meta_zip_adds_test_labels(release, tmp_path, capsys):
    files, _ = release
    kaggle = kaggle_files(tmp_path / "kaggle", files)
    assert run(tmp_path / "plain", "--from", str(kaggle)) == 0
    assert not (tmp_path / "plain" / "test_labels.csv").exists()
    assert "no test labels" in capsys.readouterr().out
    shutil.copy(files / "FSDKaggle2019.meta.zip", kaggle)
    dest = tmp_path / "labelled"
    assert run(dest, "--from", str(kaggle)) == 0
    dataset = load_dataset(dest)
    assert len(dataset.test) == 2 and len(dataset.noisy) == 4
    assert [r[2] for r in rows_of(dest / "test_labels.csv")[1:]] == ["Public", "Public"]


def test_an_archive_missing_a_clip_the_csv_names_is_refused_and_nothing_is_unpacked(tmp_path, capsys):
    dropped = fr.clip_table()["curated"][2][0]
    fr.build_release(tmp_path / "files", drop_from_curated=dropped)
    dest = tmp_path / "input"
    assert run(dest, "--from", str(tmp_path / "files")) == 2
    err = capsys.readouterr().err
    assert "FSDKaggle2019.audio_train_curated.zip" in err and dropped in err
    assert not (dest / "audio_train").exists() and not (dest / "train_curated.csv").exists()
    assert list((dest / ".get_data").iterdir()) == []


def test_a_damaged_archive_is_named(release, tmp_path, capsys):
    files, _ = release
    broken = tmp_path / "files"
    shutil.copytree(files, broken)
    data = bytearray((broken / "FSDKaggle2019.audio_test.zip").read_bytes())
    data[200:260] = bytes(60)   # inside the first member's data: its CRC no longer matches
    (broken / "FSDKaggle2019.audio_test.zip").write_bytes(bytes(data))
    assert run(tmp_path / "input", "--from", str(broken)) == 2
    err = capsys.readouterr().err
    assert "FSDKaggle2019.audio_test.zip" in err and "damaged" in err
    assert not (tmp_path / "input" / "audio_test").exists()


def test_without_network_it_lists_the_files_to_fetch_and_from_where(release, tmp_path, capsys):
    _, table = release
    with socket.socket() as s:     # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    assert run(tmp_path / "input", "--base-url", f"http://127.0.0.1:{port}/files", "--files", str(table)) == 2
    err = capsys.readouterr().err
    assert "cannot reach" in err and "--from" in err and "kaggle competitions download" in err
    # no folder was made: the message does not point to one as if it held files
    assert f"nothing was downloaded (downloads go to {tmp_path / 'input' / 'archives'})" in err
    assert not (tmp_path / "input" / "archives").exists()
    assert f"{download.ZENODO_PAGE}/files/FSDKaggle2019.audio_train_noisy.z01" in err


def test_a_disk_too_small_is_refused_before_anything_is_downloaded(release, tmp_path, capsys, monkeypatch):
    files, table = release
    monkeypatch.setattr(download, "free_bytes", lambda folder: 1000)
    with fr.serve(files) as (url, server):
        assert run(tmp_path / "input", "--base-url", url, "--files", str(table)) == 2
        assert all(m == "HEAD" for m, _, _ in server.requests)
    assert "needs" in capsys.readouterr().err
    assert not (tmp_path / "input" / "archives").exists()


def test_the_split_archive_reader_matches_info_zip_and_zip64(tmp_path):
    members = {f"d/f{i}.wav": np.random.default_rng(i).bytes(70000) for i in range(5)}
    single = fr.zip_bytes(members)
    parts = fr.split_zip(single, 3)
    paths = []
    for k, data in enumerate(parts):
        paths.append(tmp_path / (f"a.z{k + 1:02d}" if k < len(parts) - 1 else "a.zip"))
        paths[-1].write_bytes(data)
    for force in (False, True):
        with open_split_zip(paths, force_zip64=force) as z:
            assert {n: z.read(n) for n in z.namelist()} == members
    with pytest.raises(download.DataError, match="3 parts, found 2"):
        open_split_zip(paths[1:])
    if shutil.which("zip") is None:
        pytest.skip("Info-ZIP's zip is not installed: the check against its split archives is skipped")
    src = tmp_path / "src"
    for n, data in members.items():
        (src / n).parent.mkdir(parents=True, exist_ok=True)
        (src / n).write_bytes(data)
    subprocess.run(["zip", "-q", "-s", "64k", "-r", str(tmp_path / "info.zip"), "d"], cwd=src, check=True)
    info_parts = sorted(tmp_path.glob("info.z0*")) + [tmp_path / "info.zip"]
    assert len(info_parts) > 2
    with open_split_zip(info_parts) as z:
        assert {n: z.read(n) for n in z.namelist() if not n.endswith("/")} == members


def test_features_reads_what_get_data_laid_out(release, tmp_path):
    import features
    files, _ = release
    dest = tmp_path / "input"
    assert run(dest, "--from", str(files)) == 0
    assert features.main(["--data-dir", str(dest), "--profile", "demo", "--workers", "1"]) == 0
    for s in ("curated", "noisy", "test"):
        assert (dest / "features" / s).is_dir()


def test_test_scores_cover_every_clip_and_each_leaderboard_part():
    rng = np.random.default_rng(0)
    truth = (rng.random((40, 6)) < 0.3).astype(np.float32)
    truth[np.arange(40), rng.integers(0, 6, 40)] = 1
    pred = {"a": rng.random((40, 6)), "b": truth + 0.1 * rng.random((40, 6))}
    public = np.arange(40) % 3 == 0
    scores = score_test_set(truth, pred, {"public": public, "private": ~public, "empty": np.zeros(40, bool)})
    assert scores["b"]["all"] == pytest.approx(1.0)
    assert scores["a"]["all"] == pytest.approx(lwlrap(truth, pred["a"]))
    assert scores["a"]["public"] == pytest.approx(lwlrap(truth[public], pred["a"][public]))
    assert scores["a"]["private"] == pytest.approx(lwlrap(truth[~public], pred["a"][~public]))
    assert "empty" not in scores["a"]


def test_ensemble_prints_the_test_lwlrap_of_each_part(pipeline_run, tmp_path, capsys):
    import ensemble
    data = tmp_path / "data"
    shutil.copytree(pipeline_run["data"], data)
    fnames = [r[0] for r in rows_of(data / "sample_submission.csv")[1:]]
    classes = rows_of(data / "sample_submission.csv")[0][1:]
    rows = [[f, classes[i % len(classes)], "Public" if i < 2 else "Private"] for i, f in enumerate(fnames)]
    (data / "test_labels.csv").write_text(fr.csv_text(["fname", "labels", "usage"], rows))
    common = list(pipeline_run["common"])
    for flag, value in (("--data-dir", data), ("--submissions-dir", tmp_path / "subs")):
        common[common.index(flag) + 1] = str(value)
    capsys.readouterr()
    assert ensemble.main(common) == 0
    lines = capsys.readouterr().out.splitlines()
    at = next(i for i, line in enumerate(lines) if "CV LRAP" in line)   # the summary table
    assert lines[at].split()[-6:] == ["test", "lwlrap", "test", "private", "test", "public"]
    stacker = next(line for line in lines[at:] if line.startswith("stacker")).split()
    sub = rows_of(tmp_path / "subs" / "submission.csv")
    scores = np.array([[float(v) for v in r[1:]] for r in sub[1:]])
    truth = np.zeros_like(scores)
    for i, r in enumerate(rows):
        truth[i, classes.index(r[1])] = 1
    public = np.array([r[2] == "Public" for r in rows])
    expected = [lwlrap(truth, scores), lwlrap(truth[~public], scores[~public]), lwlrap(truth[public], scores[public])]
    assert [float(v) for v in stacker[-3:]] == pytest.approx(expected, abs=1e-4)
