"""tag.py --segments: sliding windows over a long file, on the session's tiny pipeline models."""
import io
import json
from contextlib import redirect_stdout

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
import soundfile as sf

from fat2019.eval import reports
from fat2019.data import segments
import tag
from fat2019.config import SAMPLE_RATE
from helpers import PIPELINE_SETTINGS, tone

# The long file: stretches of tones of different pitch, then digital silence, then a tone.
# 13.6 s in all: windows of 3 s leave a 1.6 s tail (kept), windows of 4 s every 2 s one of 3.6 s
STRETCHES = [(3.0, 300.0), (3.0, 900.0), (3.0, None), (4.6, 2000.0)]   # (seconds, Hz; None: zeros)


def windowing(segment, hop=None):
    return segments.Windowing.from_seconds(segment, hop)


def test_windows_are_back_to_back_by_default_and_a_short_tail_is_left_out():
    n = round(10.6 * SAMPLE_RATE)                        # 0.6 s tail: less than half a 2 s segment
    bounds = segments.window_bounds(n, windowing(2))
    seg = 2 * SAMPLE_RATE
    assert bounds == [(k * seg, (k + 1) * seg) for k in range(5)]


def test_a_partial_last_window_of_half_a_segment_or_more_is_kept_once():
    n = round(13.6 * SAMPLE_RATE)
    assert segments.window_bounds(n, windowing(3))[-1] == (12 * SAMPLE_RATE, n)        # 1.6 s >= 1.5 s
    overlapping = segments.window_bounds(n, windowing(4, 2))
    assert [s / SAMPLE_RATE for s, _ in overlapping] == [0, 2, 4, 6, 8, 10]             # 10..13.6 kept, 12.. not
    assert overlapping[-1] == (10 * SAMPLE_RATE, n)
    assert segments.window_bounds(2 * SAMPLE_RATE, windowing(2)) == [(0, 2 * SAMPLE_RATE)]


def test_a_file_shorter_than_a_segment_is_one_window_and_gaps_follow_the_hop():
    assert segments.window_bounds(1000, windowing(5)) == [(0, 1000)]
    gapped = segments.window_bounds(10 * SAMPLE_RATE, windowing(1, 3))
    assert [(s / SAMPLE_RATE, e / SAMPLE_RATE) for s, e in gapped] == [(0, 1), (3, 4), (6, 7), (9, 10)]


def test_bad_windowing_is_refused():
    for segment, hop in ((0, None), (5, -1), (1e-9, None)):
        with pytest.raises(ValueError):
            windowing(segment, hop)


def test_heatmap_names_are_safe_and_unique():
    taken = set()
    assert segments.heatmap_name("/x/my recording (1).WAV", taken) == "my_recording_1_.heatmap.png"
    assert segments.heatmap_name("/y/my recording (1).flac", taken) == "my_recording_1_-2.heatmap.png"
    assert segments.heatmap_name("../..", taken) == "audio.heatmap.png"


def test_heatmap_of_windows_with_gaps_is_written(tmp_path):
    scores = np.random.default_rng(0).random((4, 12)).astype(np.float32)
    out = reports.segments_heatmap(tmp_path / "h.png", "gapped", [f"c{i}" for i in range(12)],
                                   np.array([0.0, 3, 6, 9]), np.array([1.0, 4, 7, 10]), scores)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def setup(pipeline_run, tmp_path_factory):
    """Tag options for the pipeline's models, a long PCM_16 file, a short test clip, the classes."""
    root, data = pipeline_run["root"], pipeline_run["data"]
    options = ["--profile", "demo", "--models-dir", str(root / "models"), "--set", *PIPELINE_SETTINGS]
    folder = tmp_path_factory.mktemp("long")
    parts = [np.zeros(round(s * SAMPLE_RATE), np.float32) if f is None else tone(s, f, seed=i)
             for i, (s, f) in enumerate(STRETCHES)]
    long_wav = folder / "long recording.wav"
    sf.write(long_wav, np.concatenate(parts), SAMPLE_RATE, subtype="PCM_16")
    short_wav = sorted((data / "audio_test").glob("*.wav"))[0]
    classes = list(pd.read_csv(data / "sample_submission.csv").columns[1:])
    return dict(options=options, long=long_wav, short=short_wav, classes=classes)


def run_segments(setup, out, *args):
    """tag.py on the long file and the short clip with `args`: the CSV, the JSON and stdout."""
    with redirect_stdout(io.StringIO()) as stdout:
        assert tag.main([str(setup["long"]), str(setup["short"]), *setup["options"], "--top-k", "2",
                         "--csv", str(out / "tags.csv"), "--json", str(out / "tags.json"), *args]) == 0
    return pd.read_csv(out / "tags.csv"), json.loads((out / "tags.json").read_text()), stdout.getvalue()


@pytest.fixture(scope="module")
def by_3s(setup, tmp_path_factory):
    """--segments 3 (the stacker combines the models, as by default): CSV, JSON, stdout, folder."""
    out = tmp_path_factory.mktemp("by_3s")
    return (*run_segments(setup, out, "--segments", "3"), out)


def test_windows_are_rows_with_times_and_each_file_gets_a_heatmap(setup, by_3s):
    table, document, stdout, out = by_3s
    classes, long_name, short_name = setup["classes"], str(setup["long"]), str(setup["short"])
    assert list(table.columns) == ["fname", "start", "end", *classes]
    long_seconds, short_seconds = (sf.info(p).frames / SAMPLE_RATE for p in (setup["long"], setup["short"]))
    expected = [(long_name, 0, 3), (long_name, 3, 6), (long_name, 6, 9), (long_name, 9, 12),
                (long_name, 12, long_seconds), (short_name, 0, short_seconds)]
    got = list(zip(table["fname"], table["start"], table["end"]))
    assert [f for f, _, _ in got] == [f for f, _, _ in expected]
    np.testing.assert_allclose([(s, e) for _, s, e in got], [(s, e) for _, s, e in expected], atol=1e-6)

    assert document["segments"] == {"seconds": 3.0, "hop": 3.0}
    assert [(f["path"], f["start"], f["end"]) for f in document["files"]] == got
    for entry, row in zip(document["files"], table[classes].to_numpy()):
        np.testing.assert_allclose([entry["scores"][c] for c in classes], row, atol=2e-6)
    # the silent stretch is one window of digital silence: tagged, and marked in its notes
    assert "all samples are zero" in document["files"][2]["notes"]
    assert not any("all samples are zero" in f["notes"] for i, f in enumerate(document["files"]) if i != 2)

    assert stdout.splitlines()[0] == f"{long_name}  0.00-3.00 s"
    for name in ("long_recording.heatmap.png", f"{setup['short'].stem}.heatmap.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_hop_overlaps_windows_and_plot_picks_the_folder(setup, tmp_path):
    plots = tmp_path / "plots"
    out = tmp_path / "out"
    table, document, _ = run_segments(setup, out, "--segments", "4", "--hop", "2", "--plot", str(plots),
                                      "--models", "v1mix")
    long_rows = table[table["fname"] == str(setup["long"])]
    np.testing.assert_allclose(long_rows["start"], [0, 2, 4, 6, 8, 10], atol=1e-6)
    np.testing.assert_allclose(long_rows["end"], [4, 6, 8, 10, 12, sf.info(setup["long"]).frames / SAMPLE_RATE],
                               atol=1e-6)
    assert document["segments"] == {"seconds": 4.0, "hop": 2.0}
    assert sorted(p.name for p in plots.iterdir()) == sorted(
        ["long_recording.heatmap.png", f"{setup['short'].stem}.heatmap.png"])
    assert not list(out.glob("*.png"))


def test_a_window_is_tagged_as_its_audio_saved_as_a_clip(setup, by_3s, tmp_path):
    table = by_3s[0]
    audio, rate = sf.read(setup["long"], dtype="float32")
    clips = tmp_path / "windows"
    clips.mkdir()
    picked = [0, 2, 4]                       # a tone, the silence, the partial last window
    paths = []
    for i in picked:
        start, end = (round(t * rate) for t in table.loc[i, ["start", "end"]])
        paths.append(clips / f"window{i}.wav")
        sf.write(paths[-1], audio[start:end], rate, subtype="PCM_16")    # the same 16-bit samples
    whole = tmp_path / "whole.csv"
    assert tag.main([*map(str, paths), *setup["options"], "--csv", str(whole)]) == 0
    clip_scores = pd.read_csv(whole).set_index("fname").loc[[str(p) for p in paths], setup["classes"]]
    np.testing.assert_allclose(table.loc[picked, setup["classes"]].to_numpy(), clip_scores.to_numpy(), atol=1e-5)
    assert not np.allclose(clip_scores.iloc[0], clip_scores.iloc[1], atol=1e-3)   # windows do differ


def test_hop_and_plot_need_segments(setup, capsys):
    for extra in (["--hop", "2"], ["--plot", "x"], ["--segments", "0"]):
        with pytest.raises(SystemExit) as stop:
            tag.main([str(setup["short"]), *setup["options"], *extra])
        assert stop.value.code == 2
    assert "--hop and --plot need --segments" in capsys.readouterr().err


def test_the_json_and_each_heatmap_title_name_the_combination_and_the_scale(setup, by_3s, tmp_path, monkeypatch):
    document = by_3s[1]
    assert document["combination"].startswith("stacker over the models'")
    assert document["scale"].startswith("stacker output")      # calibrated, or said to be raw
    titles = []
    real = reports.segments_heatmap
    monkeypatch.setattr(reports, "segments_heatmap", lambda *a, **kw: titles.append(a[-1]) or real(*a, **kw))
    run_segments(setup, tmp_path, "--segments", "3", "--combine", "average")
    assert titles == ["weighted average: weighted average of the members' probabilities"] * 2


def test_a_window_that_ends_at_the_end_of_the_file_is_the_last():
    # 10 samples, windows of 4 every 2: (6, 10) reaches the end, so (8, 10) would lie inside it
    assert segments.window_bounds(10, segments.Windowing(4, 2)) == [(0, 4), (2, 6), (4, 8), (6, 10)]


@given(n=st.integers(1, 400), segment=st.integers(1, 60), hop=st.integers(1, 60))
@settings(max_examples=400, deadline=None)
def test_no_window_lies_inside_another_and_the_windows_cover_the_file(n, segment, hop):
    bounds = segments.window_bounds(n, segments.Windowing(segment, hop))
    assert bounds and bounds[0][0] == 0 and all(0 <= s < e <= n for s, e in bounds)
    for i, (s, e) in enumerate(bounds):
        assert not any(t <= s and e <= u for j, (t, u) in enumerate(bounds) if j != i), (s, e)
    if hop <= segment:     # back to back or overlapping: no gaps; only a tail under half a segment is left out
        assert all(b[0] <= a[1] for a, b in zip(bounds, bounds[1:]))
        assert 2 * (n - bounds[-1][1]) < segment
