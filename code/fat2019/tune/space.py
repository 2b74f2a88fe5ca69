"""What tune.py searches: the log-mel front end's parameters (config.FrontEnd) and the crop
length, each a list of values; the checks that refuse an impossible space before any trial
starts; and the front-end file (best_frontend.json) the search writes and the stages'
`--frontend FILE` reads. No Ray here: the stages read the file without it.
"""
from __future__ import annotations

import dataclasses
import itertools
import json
from dataclasses import dataclass
from pathlib import Path

from fat2019 import config
from fat2019.cli import BadInput
from fat2019.util.atomic import atomic_write_text

NYQUIST = config.SAMPLE_RATE / 2


@dataclass(frozen=True)
class Parameter:
    name: str       # a config.FrontEnd field, or "duration" (the profile's crop length)
    kind: type      # int or float
    help: str

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")


PARAMETERS = (
    Parameter("n_mels", int, "mel bands"),
    Parameter("n_fft", int, "FFT length, samples"),
    Parameter("hop_length", int, "samples between two frames"),
    Parameter("f_min", float, "lowest frequency of the mel filterbank, Hz"),
    Parameter("f_max", float, f"highest frequency of the mel filterbank, Hz ({NYQUIST:g} = Nyquist)"),
    Parameter("amin", float, "the log's floor: dB = 10 log10(max(power, amin))"),
    Parameter("top_db", float, "dB kept below each clip's maximum (the floor after the per-clip offset)"),
    Parameter("duration", float, "crop length, seconds (the profile's `duration`)"),
)
BY_NAME = {p.name: p for p in PARAMETERS}
FRONTEND_FIELDS = tuple(f.name for f in dataclasses.fields(config.FrontEnd))
# the backbone halves the mel axis three times ('same' pooling), then pairs the bins (MelPairShuffle)
MEL_HALVINGS = 3


def default_space(profile: config.Profile) -> dict[str, list]:
    """The space searched when no option narrows it: the original's value of each
    parameter with one smaller and one larger (the profile's crop length x 2/3, 1, 4/3,
    rounded to half seconds when that keeps them apart), but for n_fft and the hop: an
    n_fft below the original's hop is impossible, so n_fft has only a larger one."""
    crops = sorted({round(profile.duration * f, 2) for f in (2 / 3, 1.0, 4 / 3)})
    halves = sorted({round(c * 2) / 2 for c in crops})
    return {"n_mels": [32, 64, 128], "n_fft": [1024, 2048], "hop_length": [256, 512],
            "f_min": [0.0, 20.0, 50.0], "f_max": [11025.0, 16000.0, NYQUIST], "amin": [1e-10, 1e-5],
            "top_db": [60.0, 80.0, 100.0], "duration": halves if len(halves) == len(crops) else crops}


def point(frontend: config.FrontEnd, duration: float) -> dict:
    """A front end and crop length as a trial's configuration (f_max None as Nyquist)."""
    values = dataclasses.asdict(frontend)
    values["f_max"] = NYQUIST if frontend.f_max is None else float(frontend.f_max)
    return {p.name: p.kind(values[p.name] if p.name != "duration" else duration) for p in PARAMETERS}


def frontend_of(trial: dict) -> tuple[config.FrontEnd, float]:
    """A trial's configuration as (front end, crop length); f_max at Nyquist becomes None,
    so the original's front end compares equal to the profile's default."""
    values = {name: BY_NAME[name].kind(trial[name]) for name in FRONTEND_FIELDS}
    if values["f_max"] >= NYQUIST:
        values["f_max"] = None
    return config.FrontEnd(**values), float(trial["duration"])


def default_point(profile: config.Profile) -> dict:
    return point(profile.frontend, profile.duration)


# ---------------------------------------------------------------------------------------
# Checks: every combination of the space must be a front end the model can be built with
# ---------------------------------------------------------------------------------------

def check(space: dict[str, list], label=lambda p: p.flag) -> None:
    """Raise BadInput naming the parameter (as `label(parameter)` gives it) when some
    combination of values is impossible; nothing is computed first. Every combination
    must be possible, since the search may draw any of them."""
    def bad(name, value, why):
        raise BadInput(f"{label(BY_NAME[name])} {value:g}: {why}")

    missing = [p.flag for p in PARAMETERS if not space.get(p.name)]
    if missing:
        raise BadInput(f"no values for {', '.join(missing)}")
    for p in PARAMETERS:
        for v in space[p.name]:
            if not v > 0 and not (p.name == "f_min" and v == 0):
                bad(p.name, v, "must be positive" + (" or 0" if p.name == "f_min" else ""))
            if p.kind is int and v != int(v):
                bad(p.name, v, "must be a whole number")
    for n in space["n_mels"]:
        if -(-n // 2 ** MEL_HALVINGS) % 2:
            bad("n_mels", n, f"the model halves the mel bands {MEL_HALVINGS} times and then pairs them: "
                             f"ceil(n_mels / {2 ** MEL_HALVINGS}) must be even (16, 32, 48, 64, 96, 128, ...)")
    for f_max in space["f_max"]:
        if f_max > NYQUIST:
            bad("f_max", f_max, f"above the Nyquist frequency of {config.SAMPLE_RATE} Hz audio, {NYQUIST:g} Hz")
    for f_min, f_max in itertools.product(space["f_min"], space["f_max"]):
        if f_min >= f_max:
            bad("f_min", f_min, f"not below {label(BY_NAME['f_max'])} {f_max:g}")
    for hop, n_fft in itertools.product(space["hop_length"], space["n_fft"]):
        if hop >= n_fft:
            bad("hop_length", hop, f"not below {label(BY_NAME['n_fft'])} {n_fft:g}: frames must overlap "
                                   f"(hop < n_fft)")
    shortest = min(space["duration"])
    for n_fft in space["n_fft"]:
        if n_fft > shortest * config.SAMPLE_RATE:
            bad("n_fft", n_fft, f"longer than a {shortest:g} s crop ({label(BY_NAME['duration'])})")
    for n_mels, n_fft, f_min, f_max in itertools.product(space["n_mels"], space["n_fft"], space["f_min"],
                                                          space["f_max"]):
        empty = empty_bands(int(n_mels), int(n_fft), f_min, f_max)
        if empty:
            bad("n_mels", n_mels, f"too many for {label(BY_NAME['n_fft'])} {n_fft:g} between {f_min:g} and "
                                  f"{f_max:g} Hz: {len(empty)} mel band(s) hold no FFT bin (the first: band "
                                  f"{empty[0]}); fewer mel bands, a longer n_fft or a wider band")


def empty_bands(n_mels: int, n_fft: int, f_min: float, f_max: float) -> list[int]:
    """The mel bands (0-based) whose filter is zero at every FFT bin: they would be
    constant -top_db dB, the same for every clip."""
    from fat2019.nn.frontend import slaney_mel_filterbank   # here: the stages' --help imports no Keras

    filterbank = slaney_mel_filterbank(config.SAMPLE_RATE, n_fft, n_mels, f_min, f_max)
    return [int(k) for k in (filterbank.max(axis=0) <= 0).nonzero()[0]]


# ---------------------------------------------------------------------------------------
# The front-end file
# ---------------------------------------------------------------------------------------

def save_frontend(path: Path, frontend: config.FrontEnd, duration: float, found_by: dict) -> None:
    """best_frontend.json: the front end, the crop length, and how the search found them."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(Path(path), json.dumps({"frontend": dataclasses.asdict(frontend), "duration": duration,
                                              "found_by": found_by}, indent=1) + "\n")


def load_frontend(path: Path) -> tuple[config.FrontEnd, float]:
    """(front end, crop length) of a front-end file, checked like a search space."""
    path = Path(path)
    try:
        saved = json.loads(path.read_text())
        values, duration = dict(saved["frontend"]), float(saved["duration"])
    except FileNotFoundError:
        raise BadInput(f"{path}: no such front-end file (tune.py writes <models-dir>/tune/"
                       f"best_frontend.json)") from None
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        raise BadInput(f"{path}: not a front-end file ({type(e).__name__}: {e}); tune.py writes "
                       f"them") from None
    unknown, missing = sorted(set(values) - set(FRONTEND_FIELDS)), sorted(set(FRONTEND_FIELDS) - set(values))
    if unknown or missing:
        raise BadInput(f"{path}: front end with unknown {unknown} / missing {missing} fields; expected "
                       f"{list(FRONTEND_FIELDS)}")
    try:
        as_point = {**{k: v for k, v in values.items()}, "duration": duration}
        as_point["f_max"] = NYQUIST if values["f_max"] is None else values["f_max"]
        check({k: [float(v)] for k, v in as_point.items()}, label=lambda p: f"{path}: {p.name}")
        frontend, duration = frontend_of(as_point)
    except (TypeError, ValueError) as e:
        raise BadInput(f"{path}: a value is not a number ({e})") from None
    return frontend, duration


def apply_frontend_file(profile: config.Profile, path: Path) -> config.Profile:
    """The profile with the file's front end and crop length (the stages' --frontend)."""
    frontend, duration = load_frontend(path)
    return dataclasses.replace(profile, frontend=frontend, duration=duration)
