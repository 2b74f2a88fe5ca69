"""Per-clip audio processing: decode, trim, length feature, global features.

Everything here is a pure function of one clip, so the features stage can run it in
worker processes and the tagging command can run it on any file.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import soundfile as sf

from config import (GLOBAL_PERCENTILES, LENGTH_NORMALISER, N_GLOBAL_STATS, N_GLOBAL_STEPS,
                    SAMPLE_RATE, TRIM_TOP_DB)

# A clip shorter than this is zero-padded (at the end) before its global features, so
# that each of the 128 overlapping steps holds at least one sample.
MIN_GLOBAL_SAMPLES = 2 * N_GLOBAL_STEPS


class AudioError(Exception):
    """A clip that cannot be used; the message says why (the caller adds the path)."""


@dataclass
class Clip:
    """One processed clip: what every later stage needs, and what was odd about it."""
    trimmed: np.ndarray            # float32 mono 44.1 kHz, leading/trailing silence removed
    global_features: np.ndarray    # (128, 12) float32, from the untrimmed clip
    length: float                  # len(trimmed) / 441000
    notes: list[str] = field(default_factory=list)


def decode(path: Path | str, notes: list[str] | None = None) -> np.ndarray:
    """Mono float32 at 44.1 kHz, as librosa.load(path, sr=44100) would give.

    Channels are averaged; other rates are resampled with soxr (librosa's default).
    Non-finite samples are zeroed. Raises AudioError when the file cannot be decoded or
    holds no samples. `notes` (if given) collects what was done to an unusual file.
    """
    notes = [] if notes is None else notes
    try:
        data, rate = sf.read(str(path), dtype="float32", always_2d=True)
    except Exception as e:  # soundfile raises several types for unreadable files
        raise AudioError(f"cannot decode ({type(e).__name__}: {str(e).strip() or 'unknown error'})") from None
    if data.shape[0] == 0:
        raise AudioError("file holds no audio samples")
    if data.shape[1] > 1:
        notes.append(f"{data.shape[1]} channels averaged to mono")
        audio = data.mean(axis=1, dtype=np.float32)
    else:
        audio = np.ascontiguousarray(data[:, 0])
    finite = np.isfinite(audio)
    if not finite.all():
        notes.append(f"{int((~finite).sum())} non-finite samples set to 0")
        audio = np.where(finite, audio, np.float32(0))
    if rate != SAMPLE_RATE:
        import librosa  # imported lazily: it is slow to import and most clips need no resampling
        notes.append(f"resampled from {rate} Hz")
        audio = librosa.resample(audio, orig_sr=rate, target_sr=SAMPLE_RATE, res_type="soxr_hq")
        audio = np.ascontiguousarray(audio, dtype=np.float32)
    return audio


def trim(audio: np.ndarray, notes: list[str] | None = None) -> np.ndarray:
    """Leading/trailing silence removed with librosa.effects.trim's defaults (top_db 60).

    An all-silent clip would trim to nothing; it is kept whole instead (and noted).
    """
    import librosa
    trimmed, _ = librosa.effects.trim(audio, top_db=TRIM_TOP_DB)
    if len(trimmed) == 0:
        if notes is not None:
            notes.append("silent: kept untrimmed")
        return audio
    return trimmed


def length_feature(trimmed: np.ndarray) -> float:
    return len(trimmed) / LENGTH_NORMALISER


def step_bounds(n_samples: int, n_steps: int = N_GLOBAL_STEPS) -> tuple[np.ndarray, np.ndarray]:
    """[left, right) sample range of each step, with the original's exact arithmetic:
    stride = n/steps; step s covers [max(0, int(s*stride - stride/2)), int(s*stride + 1.5*stride))."""
    stride = n_samples / n_steps
    centre = np.arange(n_steps) * stride
    left = np.maximum(0, np.trunc(centre - stride / 2).astype(np.int64))
    right = np.minimum(n_samples, np.trunc(centre + 1.5 * stride).astype(np.int64))
    return left, right


def global_features(audio: np.ndarray, n_steps: int = N_GLOBAL_STEPS) -> np.ndarray:
    """(n_steps, 12) float32: per step mean, std, max-min and the 0, 1, 25, 30, 50, 60, 75,
    99, 100 percentiles (numpy's linear interpolation), evaluated in float64.

    Equal to the original's loop of 128 np.percentile calls, without the loop: each step
    spans two consecutive "half-steps" (step s = half-steps s and s+1), so the half-steps
    are sorted once, each pair is merged (a stable sort of two sorted runs is one linear
    merge) and the percentiles are read off the merged rows by index; sums come from
    per-half-step partial sums. Clips shorter than 256 samples are zero-padded first.
    """
    x = np.asarray(audio, dtype=np.float32)
    if len(x) < MIN_GLOBAL_SAMPLES:
        x = np.pad(x, (0, MIN_GLOBAL_SAMPLES - len(x)))
    left, right = step_bounds(len(x), n_steps)
    edges = np.concatenate([left, right[-2:]])          # half-step boundaries
    if not (np.array_equal(right[:-2], edges[2:-2]) and np.all(np.diff(edges) > 0)):
        return _global_features_by_step(x, left, right)  # rounding broke the pairing
    return _global_features_by_halves(x, edges)


def _global_features_by_halves(x: np.ndarray, edges: np.ndarray) -> np.ndarray:
    n_halves = len(edges) - 1
    half_len = np.diff(edges)
    width = int(half_len.max())
    # Half-steps as rows padded with +inf, sorted; +inf sorts last and is never indexed.
    col = np.arange(width)
    inside = col < half_len[:, None]
    halves = np.where(inside, x[np.minimum(edges[:-1, None] + col, len(x) - 1)], np.float32(np.inf))
    halves.sort(axis=1)
    steps = np.concatenate([halves[:-1], halves[1:]], axis=1)
    steps.sort(axis=1, kind="stable")                    # timsort: one merge of two runs
    size = half_len[:-1] + half_len[1:]                  # samples per step

    x64 = x.astype(np.float64)
    half_sum = np.add.reduceat(x64, edges[:-1])
    half_sq = np.add.reduceat(x64 * x64, edges[:-1])
    total = half_sum[:-1] + half_sum[1:]
    mean = total / size
    var = np.maximum((half_sq[:-1] + half_sq[1:]) / size - mean * mean, 0.0)

    rows = np.arange(n_halves - 1)[:, None]
    q = np.asarray(GLOBAL_PERCENTILES, np.float64) / 100
    pos = (size[:, None] - 1) * q                         # numpy's 'linear' virtual index
    below = np.floor(pos).astype(np.int64)
    above = np.minimum(below + 1, size[:, None] - 1)
    t = pos - below
    a = steps[rows, below].astype(np.float64)
    b = steps[rows, above].astype(np.float64)
    diff = b - a
    pct = np.where(t >= 0.5, b - diff * (1 - t), a + diff * t)

    lo, hi = pct[:, 0], pct[:, -1]                       # 0th / 100th percentile = min / max
    std = np.where(hi > lo, np.sqrt(var), 0.0)           # constant steps: exactly 0
    return np.column_stack([mean, std, hi - lo, pct]).astype(np.float32)


def _global_features_by_step(x: np.ndarray, left: np.ndarray, right: np.ndarray) -> np.ndarray:
    """The definition, step by step: the fallback for step bounds that do not pair up."""
    x64 = x.astype(np.float64)
    out = np.empty((len(left), N_GLOBAL_STATS), np.float64)
    for s, (l, r) in enumerate(zip(left, right)):
        step = x64[l:r]
        out[s, :3] = step.mean(), step.std(), step.max() - step.min()
        out[s, 3:] = np.percentile(step, GLOBAL_PERCENTILES)
    return out.astype(np.float32)


def process_clip(path: Path | str) -> Clip:
    """Decode, trim and featurise one file: the features stage's unit of work."""
    notes: list[str] = []
    audio = decode(path, notes)
    if len(audio) < MIN_GLOBAL_SAMPLES:
        notes.append(f"only {len(audio)} samples: zero-padded for global features")
    if not np.any(audio):
        notes.append("all samples are zero")
    trimmed = trim(audio, notes)
    return Clip(trimmed=trimmed, global_features=global_features(audio),
                length=length_feature(trimmed), notes=notes)
