"""The machine a run computes on.

- `summary`: the CPU a run ran on, in one line for its summary: the model, the vector
  extensions that decide which kernels oneDNN and Eigen pick (so the last digits of a CPU
  run's scores), the ISA oneDNN would dispatch to, and the settings that change it. Read
  from /proc/cpuinfo (Linux); elsewhere the platform's processor name alone. Why it
  matters: docs/reproducibility-across-cpus.md.
- `stage_line`: every stage's first line, where it computes (the backend and its device),
  and the refusal of the `full` profile on the CPU when the machine has a GPU that the
  backend does not see (docs/backends.md).

Standard library only at import (run.sh imports it for the summary); the backend is
imported inside the functions that ask it.
"""
from __future__ import annotations

import importlib.metadata
import os
import platform
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

# the flags that change which kernels run, in the order a reader compares machines by
ISA_FLAGS = ("avx2", "fma", "avx_vnni", "avx512f", "avx512_vnni", "avx512_bf16", "avx512_fp16",
             "amx_tile", "amx_bf16")
# oneDNN's x64 ISA levels, lowest first: each with the level it extends and the flags it
# adds (its CPU dispatcher control: ONEDNN_MAX_CPU_ISA takes these names). Not a chain:
# AVX2_VNNI (the VEX-encoded VNNI of recent Intel cores and Zen 5) is a branch beside the
# AVX-512 levels, which a Zen 4 EPYC reaches without it.
ONEDNN_LEVELS = (
    ("SSE41", None, {"sse4_1"}),
    ("AVX", "SSE41", {"avx"}),
    ("AVX2", "AVX", {"avx2", "fma"}),
    ("AVX2_VNNI", "AVX2", {"avx_vnni"}),
    ("AVX512_CORE", "AVX2", {"avx512f", "avx512bw", "avx512vl", "avx512dq"}),
    ("AVX512_CORE_VNNI", "AVX512_CORE", {"avx512_vnni"}),
    ("AVX512_CORE_BF16", "AVX512_CORE_VNNI", {"avx512_bf16"}),
    ("AVX512_CORE_FP16", "AVX512_CORE_BF16", {"avx512_fp16"}),
    ("AVX512_CORE_AMX", "AVX512_CORE_FP16", {"amx_tile", "amx_int8", "amx_bf16"}),
)
SETTINGS = ("ONEDNN_MAX_CPU_ISA", "TF_ENABLE_ONEDNN_OPTS")


def read_cpuinfo(path: Path = Path("/proc/cpuinfo")) -> tuple[str, set[str]]:
    """(model name, flags) of the first processor listed; (platform's name, no flags)
    where there is no cpuinfo."""
    try:
        text = Path(path).read_text(errors="replace")
    except OSError:
        return platform.processor() or platform.machine() or "unknown CPU", set()
    fields = {}
    for line in text.split("\n\n")[0].splitlines():
        key, _, value = line.partition(":")
        fields[key.strip()] = value.strip()
    return fields.get("model name", "unknown CPU"), set(fields.get("flags", "").split())


def _lineage(name: str) -> list[str]:
    """The level and every level it extends."""
    parents = {level: parent for level, parent, _ in ONEDNN_LEVELS}
    out = []
    while name is not None:
        out.append(name)
        name = parents[name]
    return out


def onednn_isa(flags: set[str], cap: str | None = None) -> str | None:
    """The highest oneDNN level whose flags (its own and those of the levels it extends) the
    CPU has, among the levels `cap` includes (a level name, as ONEDNN_MAX_CPU_ISA takes);
    None without flags to judge by."""
    needs = {level: added for level, _, added in ONEDNN_LEVELS}
    allowed = _lineage(cap.upper()) if cap and cap.upper() in needs else list(needs)
    picked = None
    for level, _, _ in ONEDNN_LEVELS:
        if level in allowed and all(needs[step] <= flags for step in _lineage(level)):
            picked = level
    return picked


def onednn_level(cpuinfo: Path = Path("/proc/cpuinfo"), environ=os.environ) -> str | None:
    """The level the `machine:` line names: this CPU's, at most ONEDNN_MAX_CPU_ISA."""
    return onednn_isa(read_cpuinfo(cpuinfo)[1], environ.get("ONEDNN_MAX_CPU_ISA"))


def summary(cpuinfo: Path = Path("/proc/cpuinfo"), environ=os.environ) -> str:
    """One line: CPU model and cores, its ISA flags, oneDNN's pick and the settings."""
    model, flags = read_cpuinfo(cpuinfo)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    isa = (" ".join(f for f in ISA_FLAGS if f in flags) or "without AVX2") if flags else "unknown"
    cap = environ.get("ONEDNN_MAX_CPU_ISA")
    pick = onednn_isa(flags, cap)
    settings = ", ".join(f"{name}={environ[name]}" for name in SETTINGS if name in environ) or "no ISA settings"
    onednn = f"oneDNN would use {pick}" if pick else "oneDNN's ISA unknown"
    return f"machine: {model}, {cores} core(s); ISA {isa}; {onednn} ({settings})"


# --- where a stage computes ----------------------------------------------------------------

# requirements-gpu.txt's CUDA builds are CUDA 12 wheels: a driver for CUDA 12.0 or newer
# runs them (CUDA's minor-version compatibility; 525.60.13 is the first such Linux driver)
CUDA_MAJOR = 12
FIRST_CUDA12_DRIVER = "525.60.13"
# the packages that make each backend's pip install a GPU build (requirements-gpu.txt)
CUDA_WHEELS = {"TensorFlow": ("nvidia-cudnn-cu12",), "JAX": ("jax-cuda12-plugin", "jax-cuda13-plugin")}
DEVICE_VARIABLE = "FAT2019_DEVICE"   # cpu: the user chose the CPU build (setup_env.sh), so no refusal


@dataclass(frozen=True)
class Gpu:
    index: int
    name: str


@dataclass(frozen=True)
class Driver:
    version: str                 # e.g. 550.54.15
    cuda: tuple[int, int]        # the newest CUDA it runs, e.g. (12, 4)


def nvidia_smi(*args: str) -> str:
    """nvidia-smi's output; "" without nvidia-smi on PATH or when it fails (no driver loaded)."""
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return ""
    try:
        run = subprocess.run([exe, *args], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return ""
    return run.stdout if run.returncode == 0 else ""


def listed_gpus() -> list[Gpu]:
    """The machine's GPUs as `nvidia-smi -L` lists them (`GPU 0: NAME (UUID: ...)`), whatever
    CUDA_VISIBLE_DEVICES says; none without nvidia-smi or its driver."""
    return [Gpu(int(m[1]), m[2].strip())
            for m in re.finditer(r"^GPU (\d+): (.+?)(?: \(UUID: [^)]*\))?\s*$", nvidia_smi("-L"), re.M)]


def driver() -> Driver | None:
    """The NVIDIA driver's version and the newest CUDA it runs, from nvidia-smi's header."""
    text = nvidia_smi()
    version, cuda = re.search(r"Driver Version:\s*([\d.]+)", text), re.search(r"CUDA Version:\s*(\d+)\.(\d+)", text)
    if not (version and cuda):
        return None
    return Driver(version[1], (int(cuda[1]), int(cuda[2])))


def backend() -> tuple[str, str]:
    """(name, version) of the Keras backend this process runs: ("TensorFlow", "2.20.0")."""
    import keras

    name = keras.backend.backend()
    if name == "jax":
        import jax
        return "JAX", jax.__version__
    if name == "tensorflow":
        import tensorflow as tf
        return "TensorFlow", tf.__version__
    return f"Keras on {name}", keras.__version__


def backend_gpus() -> list[Gpu]:
    """The GPUs the Keras backend sees (numbered as it numbers them)."""
    import keras

    if keras.backend.backend() == "jax":
        import jax
        return [Gpu(d.id, d.device_kind) for d in jax.devices() if d.platform == "gpu"]
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf
        gpus = tf.config.list_physical_devices("GPU")
        return [Gpu(int(d.name.rsplit(":", 1)[1]),
                    tf.config.experimental.get_device_details(d).get("device_name", "GPU")) for d in gpus]
    return []


def hidden_by_cuda_visible_devices(environ=os.environ) -> bool:
    """CUDA_VISIBLE_DEVICES is set and names no GPU (empty, or -1: CUDA stops at the first
    invalid entry)."""
    listed = environ.get("CUDA_VISIBLE_DEVICES")
    return listed is not None and (not listed.strip() or listed.split(",")[0].strip().startswith("-"))


def cuda_wheels_installed(name: str) -> bool:
    """Whether the GPU build of backend `name` is installed: the CUDA packages that
    requirements-gpu.txt adds."""
    for package in CUDA_WHEELS.get(name, ()):
        try:
            importlib.metadata.distribution(package)
            return True
        except importlib.metadata.PackageNotFoundError:
            pass
    return False


def why_no_gpu(name: str, environ, gpu_build: bool, found: Driver | None) -> list[tuple[str, str]]:
    """(cause, fix) of each reason found why backend `name` sees none of the machine's GPUs."""
    reasons = []
    if hidden_by_cuda_visible_devices(environ):
        reasons.append((f"CUDA_VISIBLE_DEVICES={environ['CUDA_VISIBLE_DEVICES']!r} hides every GPU",
                        "unset CUDA_VISIBLE_DEVICES (or name the GPUs, e.g. CUDA_VISIBLE_DEVICES=0)"))
    if not gpu_build:
        reasons.append((f"the CPU build of {name} is installed (requirements.txt, without "
                        f"{' or '.join(CUDA_WHEELS.get(name, ('its CUDA packages',)))})",
                        "install the GPU build: sh code/setup_env.sh (it installs requirements-gpu.txt "
                        "where nvidia-smi lists a GPU)"))
    if found is not None and found.cuda[0] < CUDA_MAJOR:
        reasons.append((f"the NVIDIA driver {found.version} runs CUDA up to {found.cuda[0]}.{found.cuda[1]}, "
                        f"and the GPU build's wheels are CUDA {CUDA_MAJOR}",
                        f"update the driver to {FIRST_CUDA12_DRIVER} or newer"))
    if not reasons:
        # each backend's own account: TensorFlow's C++ log; JAX fails instead of falling back to the CPU
        own = "JAX_PLATFORMS=cuda" if name == "JAX" else "TF_CPP_MIN_LOG_LEVEL=0"
        reasons.append(("the cause is not one this check knows", f"rerun with {own} to see {name}'s own account"))
    return reasons


def plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}{'es' if word.endswith('s') else 's'}"


def refusal(stage: str, name: str, listed: list[Gpu], reasons: list[tuple[str, str]]) -> str:
    """The refusal of `full` on the CPU while the machine has GPUs the backend does not see."""
    gpus = ", ".join(sorted({g.name for g in listed}))
    causes = "; ".join(cause for cause, _ in reasons)
    fixes = "; ".join(fix for _, fix in reasons)
    return (f"{stage}: profile full on the CPU, but nvidia-smi lists {plural(len(listed), 'GPU')} ({gpus}) "
            f"that {name} does not see: {causes}. Fix: {fixes}. To run on the CPU anyway: "
            f"{DEVICE_VARIABLE}=cpu")


def stage_line(stage: str, profile: str | None, *, environ=os.environ, ray_plan=None,
               decoding_workers: int | None = None) -> str:
    """A stage's first line: where it computes. `train: TensorFlow 2.20.0 on GPU 0 (NVIDIA
    H100 80GB HBM3)`, `... on the CPU (no GPU found)`. The features stage (decoding_workers)
    uses no backend; a Ray driver (ray_plan) computes nothing itself, so it asks no backend
    for devices (JAX's GPU backend, once started, preallocates most of the GPU's memory).

    Raises cli.BadInput (exit 2), before any work, for profile `full` on the CPU when
    nvidia-smi lists GPUs that the backend does not see, naming the causes found and their
    fixes; unless FAT2019_DEVICE=cpu says the CPU is meant. With no GPU on the machine, the
    stage goes on (the profile guard warns)."""
    if decoding_workers is not None:
        return f"{stage}: decoding on the CPU, {plural(decoding_workers, 'process')} (librosa; no backend, no GPU)"
    name, version = backend()
    if ray_plan is not None:
        if ray_plan.address:
            where = f"the GPUs of the Ray cluster at {ray_plan.address}"
        elif ray_plan.pretend:
            where = f"{plural(ray_plan.gpus, 'pretend GPU')} sharing the CPU (Ray)"
        else:
            where = f"{plural(ray_plan.gpus, 'GPU')} of this machine (Ray)"
        return f"{stage}: {name} {version}, one unit per GPU on {where}; each unit's log starts with its device"
    seen = backend_gpus()
    if seen:
        more = f", 1 of {len(seen)} it sees (--gpus {len(seen)} runs units side by side)" if len(seen) > 1 else ""
        # numbered among the visible ones: a Ray unit's GPU 0 may be the machine's GPU 3
        mask = f"; CUDA_VISIBLE_DEVICES={environ['CUDA_VISIBLE_DEVICES']}" if environ.get("CUDA_VISIBLE_DEVICES") else ""
        return f"{stage}: {name} {version} on GPU {seen[0].index} ({seen[0].name}{mask}){more}"
    listed = listed_gpus()
    if not listed:
        return f"{stage}: {name} {version} on the CPU (no GPU found)"
    chose_cpu = environ.get(DEVICE_VARIABLE, "").strip().lower() == "cpu"
    reasons = why_no_gpu(name, environ, cuda_wheels_installed(name), driver())
    if profile == "full" and not chose_cpu:
        from fat2019.cli import BadInput
        raise BadInput(refusal(stage, name, listed, reasons))
    why = f"{DEVICE_VARIABLE}=cpu" if chose_cpu else "; ".join(cause for cause, _ in reasons)
    return (f"{stage}: {name} {version} on the CPU ({name} sees none of the {plural(len(listed), 'GPU')} "
            f"nvidia-smi lists: {why})")


def check_full_profile(stage: str) -> int:
    """For run.sh, before its first stage (the features stage uses no GPU, and takes half an
    hour on the real data): 0, or stage_line's refusal printed as `error: ...` and
    cli.BAD_INPUT."""
    from fat2019 import cli

    return cli.call(lambda: stage_line(stage, "full") and 0)
