"""The plan of a demo dataset: which clips exist, their names, labels, durations and
formats, all drawn from the seed before any audio is rendered (synthesis.py renders it).
Clip i of a set gets its own seed, (seed, set, i), so clips can be rendered in any order.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fat2019.data.dataset import TEST_AUDIO, TRAIN_AUDIO
from fat2019.demo_data.synthesis import SAMPLE_RATE, Recipe, draw_recipes

CLASSES_FILE = Path(__file__).resolve().parents[1] / "data" / "fsd2019_classes.txt"
SPLITS = ("curated", "noisy", "test")
SPLIT_AUDIO = {"curated": TRAIN_AUDIO, "noisy": TRAIN_AUDIO, "test": TEST_AUDIO}

# Clip durations: 0.3-15 s, skewed short. d = MIN * (MAX/MIN) ** (u ** SKEW) with u uniform:
# SKEW 1 would be log-uniform (mean 3.8 s); 1.5 gives mean ~2.9 s, median ~1.2 s, so the
# default 750 clips hold about 0.6 h of audio.
MIN_DURATION = 0.3
MAX_DURATION = 15.0
DURATION_SKEW = 1.5

RARE_SAMPLE_RATES = (22_050, 48_000)
RARE_FORMAT_FRACTION = 0.03   # of each set: at 22,050 Hz, at 48,000 Hz, stereo (each)
RARE_FORMAT_MIN_CLIPS = 10    # from this set size on, each rare format occurs at least once
MIXTURE_FRACTION = 0.15       # clips that are the sum of two class sounds
NOISY_WRONG_FRACTION = 0.30   # noisy clips with one label replaced by another class


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
