"""The sounds of the demo dataset: a recipe per class, drawn from the seed, and each clip
rendered from its plan (plan.py) with its own random generator.

A recipe fixes how a class sounds (pitch range, harmonic timbre, band of noise, envelope,
glide); every clip varies it (pitch, loudness, background noise, silence padding, onset),
so a small CNN on log-mel can learn the classes, but not trivially: some classes are
"siblings" that share their spectrum and differ only in how the sound evolves over time.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import scipy.fft

from fat2019 import config

if TYPE_CHECKING:
    from fat2019.demo_data.plan import ClipPlan

SAMPLE_RATE = config.SAMPLE_RATE
SIBLING_PROBABILITY = 0.3     # a class copies an earlier class's spectrum (see draw_recipes)
# Background noise, as the event's SNR in dB; the noisy set is recorded in worse conditions.
SNR_DB = {"curated": (6.0, 30.0), "test": (6.0, 30.0), "noisy": (-3.0, 15.0)}
PEAK_DBFS = (-32.0, -2.0)     # clip loudness spread over 30 dB
MAX_PAD_FRACTION = 0.2        # leading / trailing silence, each at most this part of a clip
ENVELOPES = ("percussive", "sustained", "tremolo", "pulses")


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
