"""Per-clip audio processing: decode, trim, length feature, global features.

Everything here is a pure function of one clip, so the features stage can run it in
worker processes and the tagging command can run it on any file.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import soundfile as sf

from fat2019.config import (GLOBAL_PERCENTILES, LENGTH_NORMALISER, N_GLOBAL_STATS, N_GLOBAL_STEPS,
                    SAMPLE_RATE, TRIM_TOP_DB)
from fat2019.data.feature_cache import to_int16

# A clip shorter than this is zero-padded (at the end) before its global features, so
# that each of the 128 overlapping steps holds at least one sample.
MIN_GLOBAL_SAMPLES = 2 * N_GLOBAL_STEPS
# Rates outside this range are garbage headers, not recordings; a tiny rate would also
# make resampling to 44.1 kHz produce an unbounded number of samples.
MIN_SAMPLE_RATE, MAX_SAMPLE_RATE = 1_000, 1_000_000
HUGE_PEAK = 1e6  # float samples beyond this are scaled down before trimming (see trim)


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
    Non-finite samples are zeroed. Raises AudioError when the file cannot be decoded,
    holds no samples or claims an implausible sample rate. `notes` (if given) collects
    what was done to an unusual file (resampled, channels, truncated, non-finite, loud).
    """
    notes = [] if notes is None else notes
    try:
        with sf.SoundFile(str(path)) as f:
            rate = f.samplerate
            if not MIN_SAMPLE_RATE <= rate <= MAX_SAMPLE_RATE:
                raise AudioError(f"implausible sample rate {rate} Hz (accepted: {MIN_SAMPLE_RATE}.."
                                 f"{MAX_SAMPLE_RATE} Hz)")
            data = f.read(dtype="float32", always_2d=True)
            truncated = _truncation(f.extra_info)
    except AudioError:
        raise
    except Exception as e:  # soundfile raises several types for unreadable files
        raise AudioError(f"cannot decode ({type(e).__name__}: {str(e).strip() or 'unknown error'})") from None
    if data.shape[0] == 0:
        raise AudioError("file holds no audio samples" + (f" ({truncated})" if truncated else ""))
    if truncated:
        notes.append(truncated)
    if data.shape[1] > 1:
        notes.append(f"{data.shape[1]} channels averaged to mono")
        # summed in float64: float32 sums of huge (garbage) samples would overflow to inf
        audio = data.mean(axis=1, dtype=np.float64).astype(np.float32)
    else:
        audio = np.ascontiguousarray(data[:, 0])
    audio = _zero_non_finite(audio, notes)
    if rate != SAMPLE_RATE:
        import librosa  # imported lazily: it is slow to import and most clips need no resampling
        notes.append(f"resampled from {rate} Hz")
        audio = librosa.resample(audio, orig_sr=rate, target_sr=SAMPLE_RATE, res_type="soxr_hq")
        # the resampler's overshoot can take samples near float32's limit to inf
        audio = _zero_non_finite(np.ascontiguousarray(audio, dtype=np.float32), notes)
    peak = float(np.max(np.abs(audio)))
    if peak > 1.0:
        notes.append(f"peak amplitude {peak:.3g} (beyond full scale)")
    return audio


def _zero_non_finite(audio: np.ndarray, notes: list[str]) -> np.ndarray:
    finite = np.isfinite(audio)
    if finite.all():
        return audio
    notes.append(f"{int((~finite).sum())} non-finite samples set to 0")
    return np.where(finite, audio, np.float32(0))


def _truncation(log: str) -> str | None:
    """A note when libsndfile's log says the data chunk is shorter than its header declares
    (a file cut off while copying): the samples present are used, but the clip is partial."""
    m = re.search(r"^data\s*:\s*(\d+)\s*\(should be (\d+)\)", log, re.MULTILINE)
    if m and int(m.group(1)) > int(m.group(2)):
        return f"truncated: header declares {m.group(1)} data bytes, the file holds {m.group(2)}"
    return None


def trim(audio: np.ndarray, notes: list[str] | None = None) -> np.ndarray:
    """Leading/trailing silence removed with librosa.effects.trim's defaults (top_db 60).

    librosa keeps an all-zero clip whole (its frames all sit at the 0 dB reference); a trim
    that still came back empty would keep the clip whole too (and note it).
    """
    import librosa
    peak = float(np.max(np.abs(audio))) if len(audio) else 0.0
    # librosa squares in float32, which overflows for absurdly loud (garbage float) clips;
    # the trim is relative to the loudest frame, so a scaled copy finds the same bounds
    probe = audio / np.float32(peak) if peak > HUGE_PEAK else audio
    _, (start, end) = librosa.effects.trim(probe, top_db=TRIM_TOP_DB)
    if end <= start:
        if notes is not None:
            notes.append("silent: kept untrimmed")
        return audio
    return audio[start:end]


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
    are sorted once and each percentile's order statistics are picked from a pair of sorted
    half-steps by a vectorised binary search (nothing is merged); sums come from
    per-half-step partial sums. 16-bit audio (every value a multiple of 1/32768, as decoded
    from the competition's PCM_16 files) is sorted as int16 with numpy's radix sort.
    Clips shorter than 256 samples are zero-padded first.
    """
    x = np.asarray(audio, dtype=np.float32)
    if len(x) < MIN_GLOBAL_SAMPLES:
        x = np.pad(x, (0, MIN_GLOBAL_SAMPLES - len(x)))
    left, right = step_bounds(len(x), n_steps)
    edges = np.concatenate([left, right[-2:]])          # half-step boundaries
    if not (np.array_equal(right[:-2], edges[2:-2]) and np.all(np.diff(edges) > 0)):
        return _global_features_by_step(x, left, right)  # rounding broke the pairing
    return _global_features_by_halves(x, edges)


def _sorted_halves(x: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Half-steps as rows of a float32 matrix, each sorted, padded with +inf on the right."""
    half_len = np.diff(edges)
    width = int(half_len.max())
    col = np.arange(width, dtype=np.int32)
    inside = col < half_len[:, None]
    index = edges[:-1, None].astype(np.int32) + col      # int32: the gather is the cost here
    with np.errstate(over="ignore", invalid="ignore"):  # huge float clips: not int16, see below
        as_int16 = x * np.float32(32768)
    if np.array_equal(as_int16, np.rint(as_int16)) and -32768 <= as_int16.min() and as_int16.max() <= 32767:
        # Exact 16-bit values: radix-sort them as int16 (several times faster than a
        # float sort), then scale back, which is exact.
        padded = np.pad(as_int16.astype(np.int16), (0, width))
        halves = np.where(inside, padded[index], np.int16(32767))
        halves.sort(axis=1, kind="stable")
        halves = halves.astype(np.float32) / np.float32(32768)
        halves[~inside] = np.inf
        return halves
    halves = np.where(inside, np.pad(x, (0, width))[index], np.float32(np.inf))
    halves.sort(axis=1)
    return halves


def _kth_of_pairs(halves: np.ndarray, half_len: np.ndarray, k: np.ndarray) -> np.ndarray:
    """The k-th smallest (0-based) value of half-steps s and s+1 together, for every step s
    (row of k) and rank (column of k), from sorted half-steps, in O(log n) per query.

    With A = half s and B = half s+1 (sorted), the k+1 smallest values are A[:i] and
    B[:k+1-i] for the largest i with A[i-1] <= B[k+1-i]; the answer is then
    max(A[i-1], B[k-i]). The test is monotone in i, so i is found by bisection."""
    n_steps = len(half_len) - 1
    width = halves.shape[1]
    rows = np.arange(n_steps)[:, None]
    n_a, n_b = half_len[:-1, None], half_len[1:, None]

    def value(row, j, n):  # element j of a sorted half; -inf before it, +inf after it
        v = halves[row, np.clip(j, 0, width - 1)].astype(np.float64)
        return np.where(j < 0, -np.inf, np.where(j >= n, np.inf, v))

    lo, hi = np.maximum(0, k + 1 - n_b), np.minimum(k + 1, n_a)
    while np.any(lo < hi):
        mid = (lo + hi + 1) // 2
        fits = value(rows, mid - 1, n_a) <= value(rows + 1, k + 1 - mid, n_b)
        lo, hi = np.where(fits, mid, lo), np.where(fits, hi, mid - 1)
    return np.maximum(value(rows, lo - 1, n_a), value(rows + 1, k - lo, n_b))


def _global_features_by_halves(x: np.ndarray, edges: np.ndarray) -> np.ndarray:
    half_len = np.diff(edges)
    halves = _sorted_halves(x, edges)
    size = half_len[:-1] + half_len[1:]                  # samples per step

    x64 = x.astype(np.float64)
    half_sum = np.add.reduceat(x64, edges[:-1])
    half_sq = np.add.reduceat(x64 * x64, edges[:-1])
    mean = (half_sum[:-1] + half_sum[1:]) / size
    var = np.maximum((half_sq[:-1] + half_sq[1:]) / size - mean * mean, 0.0)

    q = np.asarray(GLOBAL_PERCENTILES, np.float64) / 100
    pos = (size[:, None] - 1) * q                         # numpy's 'linear' virtual index
    below = np.floor(pos).astype(np.int64)
    above = np.minimum(below + 1, size[:, None] - 1)
    t = pos - below
    values = _kth_of_pairs(halves, half_len, np.concatenate([below, above], axis=1))
    a, b = values[:, :len(q)], values[:, len(q):]
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


def warm_up() -> None:
    """Load and initialise librosa's lazily imported parts (trim, soxr resampling) and run
    the global features once. Called in the features stage's parent process before it
    forks its workers, so that they inherit all this instead of each paying for it on its
    first clip (the gain is in BENCHMARKS.md)."""
    import librosa
    x = (0.1 * np.random.default_rng(0).standard_normal(SAMPLE_RATE)).astype(np.float32)
    trim(x)
    librosa.resample(x[:4410], orig_sr=22_050, target_sr=SAMPLE_RATE, res_type="soxr_hq")
    global_features(x)


def process_clip(path: Path | str) -> Clip:
    """Decode, trim and featurise one file: the features stage's unit of work."""
    notes: list[str] = []
    return process_audio(decode(path, notes), notes)


def process_audio(audio: np.ndarray, notes: list[str]) -> Clip:
    """Trim and featurise decoded audio (mono float32, 44.1 kHz): a whole file's, or one
    window of a long recording (tag.py --segments), so that both are treated alike."""
    if len(audio) < MIN_GLOBAL_SAMPLES:
        notes.append(f"only {len(audio)} samples: zero-padded for global features")
    if not np.any(audio):
        notes.append("all samples are zero")
    trimmed = trim(audio, notes)
    return Clip(trimmed=trimmed, global_features=global_features(audio),
                length=length_feature(trimmed), notes=notes)


def featurise(job: tuple[str, str]) -> tuple[str, object]:
    """Worker: (fname, path) -> (fname, (int16 audio, scale, length, global features, notes))
    or (fname, error message). Quantising here halves what travels back to the parent."""
    fname, path = job
    try:
        clip = process_clip(path)
    except AudioError as e:
        return fname, str(e)
    except Exception as e:  # a decoder bug must not end a many-hour run; report the file
        return fname, f"unexpected error while processing ({type(e).__name__}: {e})"
    return fname, cache_entry(clip)


def cache_entry(clip: Clip) -> tuple[np.ndarray, float, float, np.ndarray, list[str]]:
    """(int16 audio, scale, length, global features, notes): a clip as CacheWriter.add takes it."""
    audio, scale = to_int16(clip.trimmed)
    return audio, scale, clip.length, clip.global_features, clip.notes
