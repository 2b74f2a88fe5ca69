"""Sliding windows over long recordings, for `tag.py --segments`: where the windows lie and
each window as a clip of its own.

A file is decoded once (audio.decode: mono, 44.1 kHz); each window is a slice of that
audio, run through the same per-clip function as a whole file (audio.process_audio: trim
silence, global features of the untrimmed window, length of the trimmed one). A window
of digital silence is kept whole by the trim (and noted), like a silent clip.

Windows start every `hop` samples at 0, hop, 2*hop, ...; each holds `segment` samples.
The first window that reaches or would run past the end of the file is the last one
(later ones would lie inside it): one that would run past is cut at the end and kept when
it holds at least half a segment; a file no longer than one segment is a single window,
the whole file.
"""
from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from fat2019.data.audio import Clip, decode, process_audio
from fat2019.layout import HEATMAP_SUFFIX
from fat2019.config import SAMPLE_RATE



@dataclass(frozen=True)
class Windowing:
    """Window length and hop, in samples at 44.1 kHz."""
    segment: int
    hop: int

    @classmethod
    def from_seconds(cls, segment: float, hop: float | None = None) -> "Windowing":
        """Windows of `segment` seconds every `hop` seconds (default: back to back)."""
        hop = segment if hop is None else hop
        if not (segment > 0 and hop > 0):
            raise ValueError(f"segment and hop must be positive seconds (got {segment}, {hop})")
        samples = cls(round(segment * SAMPLE_RATE), round(hop * SAMPLE_RATE))
        if samples.segment < 1 or samples.hop < 1:
            raise ValueError(f"segment and hop must each span at least one sample at {SAMPLE_RATE} Hz")
        return samples


def window_bounds(n_samples: int, windowing: Windowing) -> list[tuple[int, int]]:
    """[start, end) in samples of each window of a recording of `n_samples` (module doc)."""
    segment, hop = windowing.segment, windowing.hop
    if n_samples <= segment:
        return [(0, n_samples)]
    bounds = []
    for start in range(0, n_samples, hop):
        if start + segment <= n_samples:
            bounds.append((start, start + segment))
            if start + segment == n_samples:         # reaches the end: any later window lies inside it
                break
            continue
        if 2 * (n_samples - start) >= segment:      # the partial last window: half a segment or more
            bounds.append((start, n_samples))
        break
    return bounds


def seconds(samples: int) -> float:
    """A sample position as seconds, to the microsecond (as written to the CSV and JSON)."""
    return round(samples / SAMPLE_RATE, 6)


def windows(path: Path | str, windowing: Windowing) -> Iterator[tuple[int, int, Clip]]:
    """(start, end, clip) of each window of the file, start and end in samples. Raises
    audio.AudioError when the file cannot be decoded. The file's decoding notes (resampled,
    channels averaged, ...) are repeated in every window's notes."""
    file_notes: list[str] = []
    audio = decode(path, file_notes)
    for start, end in window_bounds(len(audio), windowing):
        yield start, end, process_audio(audio[start:end], list(file_notes))


def heatmap_name(path: Path | str, taken: set[str]) -> str:
    """A safe file name for the heatmap of `path`, not in `taken` (which it joins): the
    audio file's stem with anything but letters, digits, '.', '_' and '-' replaced."""
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", Path(path).stem).lstrip(".") or "audio"   # no hidden files
    name, n = stem + HEATMAP_SUFFIX, 1
    while name in taken:
        n += 1
        name = f"{stem}-{n}{HEATMAP_SUFFIX}"
    taken.add(name)
    return name

