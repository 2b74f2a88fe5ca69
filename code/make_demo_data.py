"""Write a small synthetic dataset in the competition's layout, for the `demo` profile.

    python code/make_demo_data.py                 # -> input/demo (the demo profile's data dir)
    python code/make_demo_data.py --out DIR --seed 3 --curated 100 --classes 10

The folder gets exactly what the real competition download has, plus the test truth:

    train_curated.csv, train_noisy.csv    fname,labels   (labels comma-separated)
    sample_submission.csv                 fname + all 80 real class columns, values 0
    audio_train/*.wav, audio_test/*.wav
    test_labels.csv                       fname,labels   (held back, for scoring the demo)
    DEMO_DATASET                          marker: this generator wrote the folder, and how

Only a subset of the 80 classes occurs in the clips. Each present class gets a synthetic
"recipe" drawn from the seed (pitch range, harmonic timbre, band of noise, envelope, glide),
and every clip varies it (pitch, loudness, background noise, duration, silence padding,
onset), so a small CNN on log-mel can learn the classes, but not trivially: some classes are
"siblings" that share their spectrum and differ only in how the sound evolves over time.
The noisy set uses the same recipes with more background noise and ~30 % wrong labels.

Everything is a function of the seed: clip i of a set is rendered from its own random
generator, seeded from (seed, set, i), so clips can be rendered in any order or in parallel
and the same seed always gives byte-identical files.
"""
from __future__ import annotations

import argparse
import csv
import json
import multiprocessing
import os
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import scipy.fft
import soundfile as sf

from fat2019 import config
from fat2019.data.dataset import CURATED_CSV, NOISY_CSV, SUBMISSION_CSV, TEST_AUDIO, TEST_LABELS_CSV, TRAIN_AUDIO
from fat2019.util.progress import Progress

# Bump when the recipes or the layout change: a marker of another version is a different
# dataset, so a rerun regenerates instead of keeping stale files.
GENERATOR_VERSION = 1
MARKER_NAME = "DEMO_DATASET"
CLASSES_FILE = Path(__file__).resolve().parent / "fat2019" / "data" / "fsd2019_classes.txt"

SPLITS = ("curated", "noisy", "test")
SPLIT_AUDIO = {"curated": TRAIN_AUDIO, "noisy": TRAIN_AUDIO, "test": TEST_AUDIO}

# Clip durations: 0.3-15 s, skewed short. d = MIN * (MAX/MIN) ** (u ** SKEW) with u uniform:
# SKEW 1 would be log-uniform (mean 3.8 s); 1.5 gives mean ~2.9 s, median ~1.2 s, so the
# default 750 clips hold about 0.6 h of audio.
MIN_DURATION = 0.3
MAX_DURATION = 15.0
DURATION_SKEW = 1.5

SAMPLE_RATE = config.SAMPLE_RATE
RARE_SAMPLE_RATES = (22_050, 48_000)
RARE_FORMAT_FRACTION = 0.03   # of each set: at 22,050 Hz, at 48,000 Hz, stereo (each)
RARE_FORMAT_MIN_CLIPS = 10    # from this set size on, each rare format occurs at least once
MIXTURE_FRACTION = 0.15       # clips that are the sum of two class sounds
NOISY_WRONG_FRACTION = 0.30   # noisy clips with one label replaced by another class
SIBLING_PROBABILITY = 0.3     # a class copies an earlier class's spectrum (see draw_recipes)

# Background noise, as the event's SNR in dB; the noisy set is recorded in worse conditions.
SNR_DB = {"curated": (6.0, 30.0), "test": (6.0, 30.0), "noisy": (-3.0, 15.0)}
PEAK_DBFS = (-32.0, -2.0)     # clip loudness spread over 30 dB
MAX_PAD_FRACTION = 0.2        # leading / trailing silence, each at most this part of a clip

ENVELOPES = ("percussive", "sustained", "tremolo", "pulses")


class RefuseToOverwrite(Exception):
    """The output folder holds something this generator did not write."""


# ---------------------------------------------------------------------------------------
# Class recipes
# ---------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Recipe:
    """How one class sounds. Every clip of the class varies these numbers a little."""
    name: str
    f0_range: tuple[float, float]        # fundamental frequency, Hz
    harmonics: tuple[float, ...]         # amplitude of harmonic 1, 2, ...: the timbre
    tonal_weight: float                  # 0 = noise only, 1 = harmonics only
    noise_band: tuple[float, float]      # band of the noise component, Hz
    glide_octaves: float                 # pitch change over one event (chirp; 0 = steady)
    envelope: str                        # one of ENVELOPES
    decay_s: float                       # percussive decay, and each pulse's decay
    rate_hz: float                       # tremolo or pulse rate
    tremolo_depth: float
    sibling_of: str | None = None        # the class whose spectrum this one copies


def log_uniform(rng: np.random.Generator, low: float, high: float, size=None):
    return np.exp(rng.uniform(np.log(low), np.log(high), size))


def draw_spectrum(rng: np.random.Generator) -> dict:
    """The spectral half of a recipe: pitch range, timbre, noise band, glide."""
    f0_low = float(log_uniform(rng, 70.0, 1500.0))
    f0_high = f0_low * float(log_uniform(rng, 1.15, 1.8))
    n_harmonics = int(rng.integers(1, 13))
    slope = rng.uniform(0.3, 2.5)
    k = np.arange(1, n_harmonics + 1)
    amplitudes = k ** -slope * log_uniform(rng, 0.3, 3.0, n_harmonics)
    if n_harmonics > 2 and rng.random() < 0.3:
        amplitudes[1::2] *= 0.05                       # odd harmonics only: a hollow timbre
    mode = rng.random()
    tonal_weight = 0.0 if mode < 0.15 else 1.0 if mode < 0.4 else float(rng.uniform(0.3, 0.9))
    centre = float(log_uniform(rng, 300.0, 10_000.0))
    half_width = 2.0 ** (rng.uniform(0.5, 3.0) / 2)    # band of 0.5 to 3 octaves
    glide = 0.0 if rng.random() < 0.5 else float(rng.choice([-1, 1]) * rng.uniform(0.3, 1.5))
    return dict(f0_range=(f0_low, f0_high), harmonics=tuple(float(a) for a in amplitudes),
                tonal_weight=tonal_weight, noise_band=(centre / half_width, centre * half_width),
                glide_octaves=glide)


def draw_temporal(rng: np.random.Generator, avoid: str | None = None) -> dict:
    """The temporal half of a recipe: envelope type and its rates."""
    envelope = str(rng.choice([e for e in ENVELOPES if e != avoid]))
    return dict(envelope=envelope,
                decay_s=float(log_uniform(rng, 0.03, 0.6)),
                rate_hz=float(log_uniform(rng, 2.0, 12.0)),
                tremolo_depth=float(rng.uniform(0.4, 0.95)))


def draw_recipes(classes: list[str], seed: int) -> tuple[Recipe, ...]:
    """One recipe per class. A class is sometimes a sibling of an earlier one: the same
    spectrum (pitch and noise band nudged by a few percent) with another envelope, so
    telling them apart needs the time course, not just the average spectrum."""
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(1,)))
    recipes: list[Recipe] = []
    for name in classes:
        if recipes and rng.random() < SIBLING_PROBABILITY:
            parent = recipes[int(rng.integers(len(recipes)))]
            nudge = float(log_uniform(rng, 0.9, 1.1))
            spectrum = dict(f0_range=tuple(f * nudge for f in parent.f0_range),
                            harmonics=parent.harmonics, tonal_weight=parent.tonal_weight,
                            noise_band=tuple(f * nudge for f in parent.noise_band),
                            glide_octaves=parent.glide_octaves)
            recipe = Recipe(name=name, sibling_of=parent.name, **spectrum,
                            **draw_temporal(rng, avoid=parent.envelope))
        else:
            recipe = Recipe(name=name, **draw_spectrum(rng), **draw_temporal(rng))
        recipes.append(recipe)
    return tuple(recipes)


# ---------------------------------------------------------------------------------------
# The plan: which clips exist, their names, labels and formats (no audio yet)
# ---------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ClipPlan:
    fname: str
    split: str                        # curated | noisy | test
    labels: tuple[str, ...]           # as listed in the CSV (noisy: possibly wrong)
    true_labels: tuple[str, ...]      # the classes actually sounding in the clip
    duration: float                   # seconds
    sample_rate: int
    channels: int
    seed: tuple[int, int, int]        # (master seed, split index, clip index)


@dataclass
class DemoPlan:
    seed: int
    classes: list[str]                # the present subset, in competition order
    all_classes: list[str]            # the 80 columns of sample_submission.csv
    recipes: tuple[Recipe, ...]
    clips: list[ClipPlan]

    def split(self, name: str) -> list[ClipPlan]:
        return [c for c in self.clips if c.split == name]


def load_class_names() -> list[str]:
    """The 80 competition classes, in the competition's order (one per line)."""
    return [line.strip() for line in CLASSES_FILE.read_text().splitlines() if line.strip()]


def choose_classes(all_classes: list[str], n_classes: int, seed: int) -> list[str]:
    """A seed-determined subset, kept in the competition's (alphabetical) order."""
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(0,)))
    chosen = rng.choice(len(all_classes), size=n_classes, replace=False)
    return [all_classes[i] for i in sorted(chosen)]


def unique_fnames(rng: np.random.Generator, n: int) -> list[str]:
    """`n` distinct names like the competition's: 8 lowercase hex digits + .wav."""
    names: list[str] = []
    seen: set[str] = set()
    while len(names) < n:
        name = f"{int(rng.integers(0, 2**32)):08x}.wav"
        if name not in seen:
            seen.add(name)
            names.append(name)
    return names


def pick_count(n: int, fraction: float) -> int:
    return int(round(n * fraction))


def rare_format_count(n: int) -> int:
    """How many clips of a set get each rare format: ~3 %, at least one from 10 clips on."""
    if n < RARE_FORMAT_MIN_CLIPS:
        return 0
    return max(1, pick_count(n, RARE_FORMAT_FRACTION))


def plan_split(rng: np.random.Generator, split: str, split_index: int, n: int,
               classes: list[str], fnames: list[str], seed: int) -> list[ClipPlan]:
    """Labels, durations and formats of one set. Exact counts (not per-clip coin flips) for
    mixtures, wrong labels and rare formats, so even a small set has the intended mix."""
    # Balanced main labels: each class ~n/len(classes) times, in random order.
    main = rng.permutation(np.resize(np.arange(len(classes)), n))
    mixtures = set(rng.permutation(n)[:pick_count(n, MIXTURE_FRACTION)].tolist())
    wrong = set()
    if split == "noisy":
        wrong = set(rng.permutation(n)[:pick_count(n, NOISY_WRONG_FRACTION)].tolist())
    k = rare_format_count(n)
    order = rng.permutation(n).tolist()
    rate_of = {i: RARE_SAMPLE_RATES[0] for i in order[:k]}
    rate_of.update({i: RARE_SAMPLE_RATES[1] for i in order[k:2 * k]})
    stereo = set(order[2 * k:3 * k])
    durations = MIN_DURATION * (MAX_DURATION / MIN_DURATION) ** (rng.random(n) ** DURATION_SKEW)

    clips = []
    for i in range(n):
        true = [int(main[i])]
        if i in mixtures:
            true.append(int(rng.choice([c for c in range(len(classes)) if c != main[i]])))
        listed = list(true)
        if i in wrong:
            slot = int(rng.integers(len(listed)))
            listed[slot] = int(rng.choice([c for c in range(len(classes)) if c not in true]))
        clips.append(ClipPlan(
            fname=fnames[i], split=split,
            labels=tuple(classes[c] for c in sorted(listed)),
            true_labels=tuple(classes[c] for c in sorted(true)),
            duration=round(float(durations[i]), 4),
            sample_rate=rate_of.get(i, SAMPLE_RATE),
            channels=2 if i in stereo else 1,
            seed=(seed, split_index, i)))
    return clips


def make_plan(seed: int = 0, n_curated: int = 300, n_noisy: int = 300, n_test: int = 150,
              n_classes: int = 20) -> DemoPlan:
    """Everything about the dataset except the audio samples themselves."""
    all_classes = load_class_names()
    if not 2 <= n_classes <= len(all_classes):
        raise ValueError(f"n_classes must be 2..{len(all_classes)} "
                         f"(mixtures and wrong labels need two classes), got {n_classes}")
    sizes = {"curated": n_curated, "noisy": n_noisy, "test": n_test}
    for split, n in sizes.items():
        if n < 0:
            raise ValueError(f"size of {split} must be >= 0, got {n}")
    classes = choose_classes(all_classes, n_classes, seed)
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(2,)))
    fnames = unique_fnames(rng, sum(sizes.values()))
    clips: list[ClipPlan] = []
    start = 0
    for split_index, split in enumerate(SPLITS):
        n = sizes[split]
        clips += plan_split(rng, split, split_index, n, classes, fnames[start:start + n], seed)
        start += n
    return DemoPlan(seed=seed, classes=classes, all_classes=all_classes,
                    recipes=draw_recipes(classes, seed), clips=clips)


# ---------------------------------------------------------------------------------------
# Rendering one clip
# ---------------------------------------------------------------------------------------

def band_noise(rng: np.random.Generator, n: int, sr: int, low: float, high: float) -> np.ndarray:
    """White noise kept to [low, high] Hz (soft edges), unit RMS."""
    size = scipy.fft.next_fast_len(n, real=True)
    spectrum = scipy.fft.rfft(rng.standard_normal(size))
    freqs = scipy.fft.rfftfreq(size, 1.0 / sr)
    high = min(high, 0.48 * sr)
    low = min(low, 0.5 * high)
    # Butterworth-like magnitude: flat inside the band, rolling off 4th order outside.
    gain = 1.0 / np.sqrt(1.0 + (low / np.maximum(freqs, 1e-3)) ** 8) / np.sqrt(1.0 + (freqs / high) ** 8)
    noise = scipy.fft.irfft(spectrum * gain, size)[:n]
    return noise / (np.sqrt(np.mean(noise ** 2)) + 1e-12)


def coloured_noise(rng: np.random.Generator, n: int, sr: int) -> np.ndarray:
    """Background: noise with a 1/f^beta power spectrum (white to brown), unit RMS."""
    size = scipy.fft.next_fast_len(n, real=True)
    spectrum = scipy.fft.rfft(rng.standard_normal(size))
    freqs = scipy.fft.rfftfreq(size, 1.0 / sr)
    beta = rng.uniform(0.0, 2.0)
    spectrum *= np.maximum(freqs, 20.0) ** (-beta / 2)
    noise = scipy.fft.irfft(spectrum, size)[:n]
    return noise / (np.sqrt(np.mean(noise ** 2)) + 1e-12)


def envelope(recipe: Recipe, rng: np.random.Generator, n: int, sr: int) -> np.ndarray:
    """Amplitude over time of one event of `n` samples, by the class's envelope type."""
    t = np.arange(n) / sr

    def jitter() -> float:
        """Per-clip variation of a class rate: the class keeps its rhythm, loosely."""
        return float(rng.uniform(0.85, 1.15))

    attack = np.minimum(1.0, t / float(rng.uniform(0.003, 0.03)))
    if recipe.envelope == "percussive":
        return attack * np.exp(-t / (recipe.decay_s * jitter()))
    # Sustained shapes fade in and out so the event has no clicks at its ends.
    fade = min(0.05, n / sr / 4)
    sustain = np.minimum(1.0, np.minimum(t, t[-1] - t) / max(fade, 1e-3) + 1e-3)
    if recipe.envelope == "sustained":
        return sustain
    if recipe.envelope == "tremolo":
        wobble = 0.5 + 0.5 * np.sin(2 * np.pi * recipe.rate_hz * jitter() * t + rng.uniform(0, 2 * np.pi))
        return sustain * (1.0 - recipe.tremolo_depth * wobble)
    # pulses: a train of short percussive hits at the class rate
    period = 1.0 / (recipe.rate_hz * jitter())
    phase = np.mod(t + rng.uniform(0, period), period)
    pulse_decay = min(recipe.decay_s, 0.3 * period)
    return sustain * np.exp(-phase / pulse_decay) * np.minimum(1.0, phase / 0.002)


def class_event(recipe: Recipe, rng: np.random.Generator, n: int, sr: int) -> np.ndarray:
    """One sound of the class, `n` samples long, unit RMS over its span."""
    t = np.arange(n) / sr
    f0 = float(log_uniform(rng, *recipe.f0_range))
    # Glide (chirp): the pitch moves by glide_octaves over the event (at most over 2 s).
    span = min(n / sr, 2.0)
    freq = f0 * 2.0 ** (recipe.glide_octaves * np.minimum(t, span) / span)
    phase = 2 * np.pi * np.cumsum(freq) / sr
    tonal = np.zeros(n)
    top = float(freq.max())
    for k, amplitude in enumerate(recipe.harmonics, start=1):
        if k * top >= 0.45 * sr:                          # stay below Nyquist: no aliasing
            break
        amplitude *= float(log_uniform(rng, 0.7, 1.4))    # per-clip timbre variation
        tonal += amplitude * np.sin(k * phase + rng.uniform(0, 2 * np.pi))
    tonal /= np.sqrt(np.mean(tonal ** 2)) + 1e-12
    nudge = float(log_uniform(rng, 0.85, 1.18))
    noise = band_noise(rng, n, sr, recipe.noise_band[0] * nudge, recipe.noise_band[1] * nudge)
    w = recipe.tonal_weight
    if 0.0 < w < 1.0:
        w = float(np.clip(w + rng.uniform(-0.15, 0.15), 0.05, 0.95))
    sound = (w * tonal + (1.0 - w) * noise) * envelope(recipe, rng, n, sr)
    return sound / (np.sqrt(np.mean(sound ** 2)) + 1e-12)


def place_event(recipe: Recipe, rng: np.random.Generator, n: int, sr: int) -> np.ndarray:
    """The class sound (unit RMS over its own span) at a random onset within `n` samples."""
    if recipe.envelope == "percussive":
        length = recipe.decay_s * rng.uniform(4.0, 8.0)    # a hit rings for a few decays
    else:
        length = n / sr * rng.uniform(0.4, 1.0)
    length = int(min(n, max(length * sr, 0.25 * sr)))
    onset = int(rng.integers(0, n - length + 1))
    out = np.zeros(n)
    out[onset:onset + length] = class_event(recipe, rng, length, sr)
    return out


def render_clip(clip: ClipPlan, recipes: dict[str, Recipe]) -> np.ndarray:
    """The clip's samples as int16, shape (n,) or (n, 2). Uses only the clip's own seed."""
    rng = np.random.default_rng(np.random.SeedSequence(clip.seed[0], spawn_key=(3,) + clip.seed[1:]))
    sr = clip.sample_rate
    n = max(1, int(round(clip.duration * sr)))
    lead = int(n * rng.uniform(0, MAX_PAD_FRACTION)) if rng.random() < 0.6 else 0
    trail = int(n * rng.uniform(0, MAX_PAD_FRACTION)) if rng.random() < 0.6 else 0
    body = n - lead - trail

    # The sounding classes, each at unit RMS over its span; a mixture's second sound is
    # up to 6 dB louder or quieter than the first.
    events = np.zeros(body)
    for i, name in enumerate(clip.true_labels):
        sound = place_event(recipes[name], rng, body, sr)
        events += sound * (10 ** (rng.uniform(-6, 6) / 20) if i else 1.0)
    snr_db = rng.uniform(*SNR_DB[clip.split])
    background = coloured_noise(rng, body, sr) * 10 ** (-snr_db / 20)
    recording = events + background

    # Leading / trailing padding: digital silence or near-silence ~70-90 dB below the peak
    # (below librosa.effects.trim's 60 dB, as an edited recording's fade would be).
    peak = np.max(np.abs(recording)) + 1e-12
    pads = []
    for length in (lead, trail):
        floor_db = -rng.uniform(70, 90) if rng.random() < 0.5 else None
        pad = np.zeros(length) if floor_db is None else rng.standard_normal(length) * peak * 10 ** (floor_db / 20)
        pads.append(pad)
    signal = np.concatenate([pads[0], recording, pads[1]])

    if clip.channels == 2:
        # A second microphone: a few samples later, a bit quieter, with its own hiss.
        delay = int(rng.integers(1, 30))
        other = np.concatenate([np.zeros(delay), signal[:-delay]]) if len(signal) > delay else signal.copy()
        other = other * rng.uniform(0.7, 1.0) + rng.standard_normal(len(signal)) * peak * 0.01
        signal = np.stack([signal, other], axis=1)

    gain = 10 ** (rng.uniform(*PEAK_DBFS) / 20) / (np.max(np.abs(signal)) + 1e-12)
    return np.clip(np.round(signal * gain * 32767), -32768, 32767).astype(np.int16)


def write_clip(args: tuple[ClipPlan, dict[str, Recipe], str]) -> float:
    """Render one clip and write it as 16-bit PCM wav; returns its duration in seconds."""
    clip, recipes, out_dir = args
    samples = render_clip(clip, recipes)
    path = Path(out_dir) / SPLIT_AUDIO[clip.split] / clip.fname
    sf.write(path, samples, clip.sample_rate, subtype="PCM_16", format="WAV")
    return len(samples) / clip.sample_rate


# ---------------------------------------------------------------------------------------
# Writing the folder
# ---------------------------------------------------------------------------------------

def write_csv_atomic(path: Path, header: list[str], rows: list[list]) -> None:
    """Write through a temp file in the same folder, then rename: readers never see half a
    CSV, and an interrupted run leaves the old file whole."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", newline="") as f:
            writer = csv.writer(f, lineterminator="\n")
            writer.writerow(header)
            writer.writerows(rows)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def label_rows(clips: list[ClipPlan], true: bool = False) -> list[list[str]]:
    """fname,labels rows sorted by fname, as the competition's CSVs are."""
    rows = [[c.fname, ",".join(c.true_labels if true else c.labels)] for c in clips]
    return sorted(rows)


def marker_content(plan: DemoPlan, sizes: dict, complete: bool) -> dict:
    return {"generator": "make_demo_data.py", "version": GENERATOR_VERSION, "seed": plan.seed,
            "sizes": sizes, "complete": complete}


def read_marker(out_dir: Path) -> dict | None:
    try:
        return json.loads((out_dir / MARKER_NAME).read_text())
    except (OSError, ValueError):
        return None


def is_same_dataset(out_dir: Path, wanted: dict) -> bool:
    """The folder already holds this exact demo dataset, complete: nothing to do."""
    marker = read_marker(out_dir)
    if marker is None or marker != wanted:
        return False
    csvs = (CURATED_CSV, NOISY_CSV, SUBMISSION_CSV, TEST_LABELS_CSV)
    if not all((out_dir / name).is_file() for name in csvs):
        return False
    sizes = wanted["sizes"]
    n_train = len(list((out_dir / TRAIN_AUDIO).glob("*.wav")))
    n_test = len(list((out_dir / TEST_AUDIO).glob("*.wav")))
    return n_train == sizes["curated"] + sizes["noisy"] and n_test == sizes["test"]


def check_writable(out_dir: Path, force: bool) -> None:
    """Write only into a missing or empty folder, or one this generator made (its marker),
    unless forced: never mix demo clips into, or overwrite, a real dataset."""
    if force or not out_dir.exists() or read_marker(out_dir) is not None:
        return
    if not out_dir.is_dir():
        raise RefuseToOverwrite(f"{out_dir} exists and is not a folder")
    if any(out_dir.iterdir()):
        what = (f"a {CURATED_CSV} not written by this generator"
                if (out_dir / CURATED_CSV).exists() else "files not written by this generator")
        raise RefuseToOverwrite(
            f"{out_dir} holds {what} (no {MARKER_NAME} marker); refusing to overwrite it. "
            f"Choose another --out, or pass --force to write into it anyway.")


def clear_previous_demo(out_dir: Path) -> None:
    """Remove the clips of an earlier demo dataset in this folder, so a dataset of other
    sizes leaves no stale wavs behind. Only done where our marker is."""
    if read_marker(out_dir) is None:
        return
    for sub in (TRAIN_AUDIO, TEST_AUDIO):
        for path in (out_dir / sub).glob("*.wav"):
            path.unlink()


@dataclass
class Summary:
    out_dir: Path
    seed: int
    classes: list[str]
    counts: dict[str, int]
    hours: float
    seconds: float
    skipped: bool                                  # the folder already held this dataset
    noisy_true_labels: dict[str, tuple[str, ...]] = field(default_factory=dict)

    def line(self) -> str:
        c = self.counts
        if self.skipped:
            return (f"{self.out_dir} already holds the demo dataset for seed {self.seed} "
                    f"({c['curated']} curated, {c['noisy']} noisy, {c['test']} test clips, "
                    f"{len(self.classes)} classes); nothing to do")
        return (f"wrote {c['curated']} curated, {c['noisy']} noisy, {c['test']} test clips "
                f"of {len(self.classes)} classes, {self.hours:.2f} h of audio, to {self.out_dir} "
                f"in {self.seconds:.1f} s")


def make_demo_dataset(out_dir: Path | str, seed: int = 0, n_curated: int = 300,
                      n_noisy: int = 300, n_test: int = 150, n_classes: int = 20,
                      force: bool = False, jobs: int = 1, progress: bool = False) -> Summary:
    """Write the demo dataset into `out_dir` (see the module docstring) and summarise it.

    Raises RefuseToOverwrite when `out_dir` holds files this generator did not write
    (unless `force`). Returns at once, writing nothing, when `out_dir` already holds the
    dataset of this seed and these sizes (unless `force`, which always rewrites). `jobs` > 1 renders clips in that many processes;
    the files are the same either way.
    """
    start = time.perf_counter()
    out_dir = Path(out_dir)
    plan = make_plan(seed, n_curated, n_noisy, n_test, n_classes)
    sizes = {"curated": n_curated, "noisy": n_noisy, "test": n_test, "n_classes": n_classes}
    noisy_truth = {c.fname: c.true_labels for c in plan.split("noisy")}
    counts = {s: len(plan.split(s)) for s in SPLITS}
    hours = sum(c.duration for c in plan.clips) / 3600

    if not force and is_same_dataset(out_dir, marker_content(plan, sizes, complete=True)):
        return Summary(out_dir, seed, plan.classes, counts, hours,
                       time.perf_counter() - start, skipped=True, noisy_true_labels=noisy_truth)
    check_writable(out_dir, force)

    # The marker goes first, marked incomplete: an interrupted run leaves a folder this
    # generator may overwrite next time, but never one it would take as finished.
    out_dir.mkdir(parents=True, exist_ok=True)
    clear_previous_demo(out_dir)
    marker_path = out_dir / MARKER_NAME
    marker_path.write_text(json.dumps(marker_content(plan, sizes, complete=False), indent=1) + "\n")
    for sub in (TRAIN_AUDIO, TEST_AUDIO):
        (out_dir / sub).mkdir(exist_ok=True)

    recipes = {r.name: r for r in plan.recipes}
    tasks = [(clip, recipes, str(out_dir)) for clip in plan.clips]
    seconds_of_audio = 0.0
    with Progress(len(tasks), "writing clips", "clip", every=30, disable=not progress) as bar:
        if jobs > 1 and len(tasks) > 1:
            with multiprocessing.get_context("spawn").Pool(jobs) as pool:
                for seconds in pool.imap_unordered(write_clip, tasks, chunksize=4):
                    seconds_of_audio += seconds
                    bar.update()
        else:
            for task in tasks:
                seconds_of_audio += write_clip(task)
                bar.update()

    write_csv_atomic(out_dir / CURATED_CSV, ["fname", "labels"], label_rows(plan.split("curated")))
    write_csv_atomic(out_dir / NOISY_CSV, ["fname", "labels"], label_rows(plan.split("noisy")))
    test_rows = label_rows(plan.split("test"), true=True)
    write_csv_atomic(out_dir / TEST_LABELS_CSV, ["fname", "labels"], test_rows)
    write_csv_atomic(out_dir / SUBMISSION_CSV, ["fname"] + plan.all_classes,
                     [[fname] + [0] * len(plan.all_classes) for fname, _ in test_rows])
    marker_path.write_text(json.dumps(marker_content(plan, sizes, complete=True), indent=1) + "\n")

    return Summary(out_dir, seed, plan.classes, counts, seconds_of_audio / 3600,
                   time.perf_counter() - start, skipped=False, noisy_true_labels=noisy_truth)


# ---------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------

def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    demo = config.PROFILES["demo"]
    sizes = demo.demo_sizes
    parser = argparse.ArgumentParser(
        description="Write a small synthetic dataset in the Freesound Audio Tagging 2019 "
                    "layout (train_curated.csv, train_noisy.csv, sample_submission.csv, "
                    "audio_train/, audio_test/, plus test_labels.csv with the test truth).")
    parser.add_argument("--out", type=Path, default=config.REPO_ROOT / demo.data_dir,
                        help="output folder (default: the demo profile's data dir, %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="master seed (default %(default)s)")
    parser.add_argument("--curated", type=int, default=sizes["curated"],
                        help="curated clips (default %(default)s)")
    parser.add_argument("--noisy", type=int, default=sizes["noisy"],
                        help="noisy clips (default %(default)s)")
    parser.add_argument("--test", type=int, default=sizes["test"],
                        help="test clips (default %(default)s)")
    parser.add_argument("--classes", type=int, default=sizes["n_classes"],
                        help="classes present, out of the 80 (default %(default)s)")
    parser.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1),
                        help="processes rendering clips; output is identical for any value "
                             "(default %(default)s)")
    parser.add_argument("--force", action="store_true",
                        help="write even into a folder this generator did not create "
                             "(its other files are left alone), and regenerate even when the "
                             "folder already holds this dataset")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        summary = make_demo_dataset(args.out, seed=args.seed, n_curated=args.curated,
                                    n_noisy=args.noisy, n_test=args.test,
                                    n_classes=args.classes, force=args.force,
                                    jobs=max(1, args.jobs), progress=True)
    except (RefuseToOverwrite, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(summary.line())
    return 0


if __name__ == "__main__":
    sys.exit(main())
