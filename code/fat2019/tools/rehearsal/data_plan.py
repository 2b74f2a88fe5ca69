"""The full-size synthetic dataset: FSDKaggle2019's clip counts, length distributions,
class names and label counts, with cheap audio written at numpy speed.

The plan of a split (names, lengths, labels) is a function of (seed, scale) alone. Lengths
and label counts are drawn by stratified sampling (one draw per quantile, shuffled), so
even a few dozen clips follow the target distribution and the counts are exact.

The audio is a tone per label (a frequency of its own per class) over white noise, at a
loudness of its own per clip, from a generator seeded by (seed, split, clip): every file is
distinct, the noise is never trimmed as silence, and the features stage sees every sample.
The numbers are the public facts of FSDKaggle2019 (docs/rehearsal.md).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fat2019.config import SAMPLE_RATE

# FSDKaggle2019's clip counts.
FULL_COUNTS = {"curated": 4970, "noisy": 19815, "test": 3361}
SPLITS = tuple(FULL_COUNTS)
SPLIT_ID = {name: i for i, name in enumerate(SPLITS)}

# Curated (and test) lengths: d = MIN * (MAX / MIN) ** (u ** SKEW), u uniform on (0, 1):
# 0.3-30 s, mean 7.6 s, median 4.4 s (the real curated set: 10.5 h over 4,970 clips).
MIN_SECONDS, MAX_SECONDS, SKEW = 0.3, 30.0, 0.79
# Noisy lengths: most clips are the 15 s the noisy set was cut to; the rest are shorter,
# log-uniform over 1-15 s (about 78 h in all; the real set: about 80 h).
NOISY_SECONDS, NOISY_FULL_FRACTION, NOISY_SHORT_MIN = 15.0, 0.92, 1.0
# Labels per clip, as fractions of the clips (the real curated set: 5,752 labels on 4,970
# clips; the noisy set about 1.2 per clip). The test set has no labels here.
LABEL_COUNTS = {"curated": {1: 0.859, 2: 0.126, 3: 0.012, 4: 0.0025, 5: 0.0005},
                "noisy": {1: 0.83, 2: 0.14, 3: 0.025, 4: 0.005}}
NOISE_LEVEL = 0.05            # white noise's peak, relative to full scale
TONE_LEVEL = 0.18             # each label's tone peak: 5 labels + noise stay below full scale
WAV_HEADER_BYTES = 44


@dataclass(frozen=True)
class SplitPlan:
    name: str
    fnames: list[str]
    n_samples: np.ndarray          # int64, one per clip
    labels: list[list[int]]        # class indices per clip (empty lists for the test set)

    @property
    def audio_bytes(self) -> int:
        return int(self.n_samples.sum()) * 2 + WAV_HEADER_BYTES * len(self.fnames)


def split_size(name: str, scale: float) -> int:
    return max(1, int(round(FULL_COUNTS[name] * scale)))


def stratified_uniform(rng: np.random.Generator, n: int) -> np.ndarray:
    """n draws in (0, 1), one inside each of n equal quantile bins, in random order."""
    return (rng.permutation(n) + rng.random(n)) / n


def draw_seconds(name: str, rng: np.random.Generator, n: int) -> np.ndarray:
    u = stratified_uniform(rng, n)
    if name == "noisy":
        short = u < 1 - NOISY_FULL_FRACTION
        v = u / (1 - NOISY_FULL_FRACTION)
        return np.where(short, NOISY_SHORT_MIN * (NOISY_SECONDS / NOISY_SHORT_MIN) ** v, NOISY_SECONDS)
    return MIN_SECONDS * (MAX_SECONDS / MIN_SECONDS) ** (u ** SKEW)


def draw_label_counts(fractions: dict[int, float], rng: np.random.Generator, n: int) -> np.ndarray:
    """Labels per clip: each count's share of n clips, rounded by quantile, shuffled."""
    counts = np.array(sorted(fractions))
    edges = np.cumsum([fractions[c] for c in counts])
    edges = edges / edges[-1]
    u = stratified_uniform(rng, n)
    return counts[np.minimum(np.searchsorted(edges, u, side="right"), len(counts) - 1)]


def draw_labels(name: str, rng: np.random.Generator, n: int, n_classes: int) -> list[list[int]]:
    """The first label cycles through a shuffled class list (every class about n/80 clips,
    as the near-balanced curated set); further labels are other classes at random."""
    if name not in LABEL_COUNTS:
        return [[] for _ in range(n)]
    per_clip = draw_label_counts(LABEL_COUNTS[name], rng, n)
    first = rng.permutation(n_classes)[np.arange(n) % n_classes]
    rng.shuffle(first)
    labels = []
    for c, k in zip(first, per_clip):
        others = rng.choice(n_classes - 1, size=k - 1, replace=False)
        others = others + (others >= c)          # any class but the first
        labels.append([int(c), *map(int, others)])
    return labels


def make_plan(scale: float, seed: int, n_classes: int) -> dict[str, SplitPlan]:
    """Every split's clips. Names are 8 hex digits (as the real files), distinct over all
    splits, since curated and noisy clips share audio_train/."""
    if not 0 < scale <= 1:
        raise ValueError(f"scale must be in (0, 1], not {scale}")
    sizes = {name: split_size(name, scale) for name in SPLITS}
    ids = np.random.default_rng([seed, 99]).choice(16 ** 8, size=sum(sizes.values()), replace=False)
    plans, start = {}, 0
    for name in SPLITS:
        n = sizes[name]
        rng = np.random.default_rng([seed, SPLIT_ID[name]])
        seconds = draw_seconds(name, rng, n)
        fnames = [f"{i:08x}.wav" for i in ids[start: start + n]]
        plans[name] = SplitPlan(name, fnames, np.round(seconds * SAMPLE_RATE).astype(np.int64),
                                draw_labels(name, rng, n, n_classes))
        start += n
    return plans


def class_frequency(c: int) -> float:
    """Class c's tone: 80 classes spread log-evenly over 110 Hz - 7 kHz."""
    return 110.0 * (7040.0 / 110.0) ** (c / 79)


def render(name: str, i: int, n_samples: int, labels: list[int], seed: int) -> np.ndarray:
    """Clip i of split `name` as int16: its labels' tones over uniform white noise.

    Built in int16 throughout: a tone is one second of samples computed once and tiled
    (memory-copy speed), the noise is random bytes; the amplitudes are chosen so the
    sum cannot overflow."""
    rng = np.random.default_rng([seed, SPLIT_ID[name], i])
    gain = 10 ** (rng.uniform(-20, -2) / 20)            # the clip's loudness
    tones = labels or [int(rng.integers(80))]           # an unlabelled test clip still has a class
    tone_peak = int(32767 * gain * TONE_LEVEL)
    # random bytes shifted right: uniform noise of peak 2**(15 - shift), the cheapest draw
    shift = int(np.clip(np.rint(15 - np.log2(32767 * gain * NOISE_LEVEL)), 1, 15))
    x = np.frombuffer(rng.bytes(2 * n_samples), np.int16) >> shift
    t = np.arange(SAMPLE_RATE) / SAMPLE_RATE
    for c in tones:
        f = round(class_frequency(c) * rng.uniform(0.97, 1.03))  # whole cycles per second: tiles seamlessly
        second = np.rint(tone_peak * np.sin(2 * np.pi * f * t + rng.uniform(0, 2 * np.pi))).astype(np.int16)
        reps = -(-n_samples // SAMPLE_RATE)
        x += np.tile(second, reps)[:n_samples]
    return x.astype("<i2", copy=False)


def wav_header(n_samples: int) -> bytes:
    """The 44-byte RIFF header of mono 16-bit PCM at SAMPLE_RATE."""
    data = n_samples * 2
    return b"".join([b"RIFF", (36 + data).to_bytes(4, "little"), b"WAVEfmt ",
                     (16).to_bytes(4, "little"), (1).to_bytes(2, "little"), (1).to_bytes(2, "little"),
                     SAMPLE_RATE.to_bytes(4, "little"), (SAMPLE_RATE * 2).to_bytes(4, "little"),
                     (2).to_bytes(2, "little"), (16).to_bytes(2, "little"), b"data", data.to_bytes(4, "little")])


def write_wav(path: Path, audio: np.ndarray) -> None:
    """Written under a temporary name and renamed: a killed run leaves no torn file."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(wav_header(len(audio)))
        f.write(audio.tobytes())
    os.replace(tmp, path)


def expected_size(n_samples: int) -> int:
    return WAV_HEADER_BYTES + 2 * int(n_samples)
