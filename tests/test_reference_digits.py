"""The demo's reference digits per oneDNN level: one table (eval/reference_digits.csv) that
the README shows and run.sh's last lines compare a run with."""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from fat2019.ensemble.predictions import write_predictions
from fat2019.eval import reference_digits as rd
from fat2019.eval.metrics import lrap, lwlrap

ROOT = Path(__file__).resolve().parent.parent


def test_the_readme_table_is_the_data_file():
    readme = (ROOT / "README.md").read_text()
    rows = re.findall(r"^\| ([A-Z0-9_]+) \| (.+?) \| ([\d.]+) / ([\d.]+) / ([\d.]+) \| ([\d-]+) \| (\w+) \|$",
                      readme, re.M)
    table = rd.load()
    assert len(rows) == len(table) >= 3
    for level, cpu, a, b, c, measured, commit in rows:
        ref = table[level]
        assert (cpu, (a, b, c), measured, commit) == (ref.cpu, ref.digits, ref.measured, ref.commit)
    assert rd.NO_REFERENCE.startswith("no reference digits for this CPU yet; compare within the spread")


def test_the_verdict_names_the_row_and_whether_the_digits_equal_it():
    table = rd.load()
    ref = table["AVX512_CORE_BF16"]
    same = rd.verdict("AVX512_CORE_BF16", ref.digits, table)
    assert ref.measured in same and ref.commit in same and same.endswith("this run printed the same digits")
    other = rd.verdict("AVX512_CORE_BF16", ("0.8000", *ref.digits[1:]), table)
    assert "this run printed 0.8000 / " in other and "other digits, compare within the spread" in other
    assert rd.verdict("AVX512_CORE_VNNI", ref.digits, table) == \
        f"digits: {rd.NO_REFERENCE} (oneDNN AVX512_CORE_VNNI)"
    assert "not compared: the reference runs had no options" in \
        rd.verdict("AVX2", None, table, rd.why_not_comparable("--seed 1", {}))
    assert "used TensorFlow, this one jax" in rd.why_not_comparable("", {"KERAS_BACKEND": "jax"})
    assert rd.why_not_comparable(" ", {}) is None


def test_the_run_digits_are_the_stackers_scores_from_its_files(tmp_path):
    classes = ["a", "b", "c"]
    data, subs = tmp_path / "data", tmp_path / "subs"
    data.mkdir()
    rng = np.random.default_rng(0)
    curated = [f"c{i}.wav" for i in range(12)]
    test = [f"t{i}.wav" for i in range(6)]
    y = np.eye(3, dtype=np.float32)[np.arange(12) % 3]
    t = np.eye(3, dtype=np.float32)[np.arange(6) % 3]
    (data / "train_curated.csv").write_text("fname,labels\n" + "".join(
        f"{f},{classes[i % 3]}\n" for i, f in enumerate(curated)))
    (data / "sample_submission.csv").write_text("fname,a,b,c\n" + "".join(f"{f},0,0,0\n" for f in test))
    (data / "test_labels.csv").write_text("fname,labels\n" + "".join(
        f"{f},{classes[i % 3]}\n" for i, f in enumerate(test)))
    oof, sub = rng.random((11, 3)), rng.random((6, 3))   # the cache left out the last curated clip
    write_predictions(subs / "stacker_oof.csv", curated[:11], classes, oof)
    write_predictions(subs / "submission.csv", test, classes, sub)
    assert rd.stacker_digits(data, subs) == rd.digits((lrap(y[:11], oof), lwlrap(y[:11], oof), lwlrap(t, sub)))
    assert rd.stacker_digits(data, tmp_path / "absent") is None
