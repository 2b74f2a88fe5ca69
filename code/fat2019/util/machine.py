"""The CPU a run ran on, in one line for its summary: the model, the vector extensions that
decide which kernels oneDNN and Eigen pick (so the last digits of a CPU run's scores), the
ISA oneDNN would dispatch to, and the settings that change it. Read from /proc/cpuinfo
(Linux); elsewhere the platform's processor name alone. Why it matters:
docs/reproducibility-across-cpus.md.
"""
from __future__ import annotations

import os
import platform
from pathlib import Path

# the flags that change which kernels run, in the order a reader compares machines by
ISA_FLAGS = ("avx2", "fma", "avx_vnni", "avx512f", "avx512_vnni", "avx512_bf16", "avx512_fp16",
             "amx_tile", "amx_bf16")
# oneDNN's x64 ISA levels, lowest first, each with the flags it needs on top of the
# levels before it (its CPU dispatcher control: ONEDNN_MAX_CPU_ISA takes these names)
ONEDNN_LEVELS = (
    ("SSE41", {"sse4_1"}),
    ("AVX", {"avx"}),
    ("AVX2", {"avx2", "fma"}),
    ("AVX2_VNNI", {"avx_vnni"}),
    ("AVX512_CORE", {"avx512f", "avx512bw", "avx512vl", "avx512dq"}),
    ("AVX512_CORE_VNNI", {"avx512_vnni"}),
    ("AVX512_CORE_BF16", {"avx512_bf16"}),
    ("AVX512_CORE_FP16", {"avx512_fp16"}),
    ("AVX512_CORE_AMX", {"amx_tile", "amx_int8", "amx_bf16"}),
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


def onednn_isa(flags: set[str], cap: str | None = None) -> str | None:
    """The highest oneDNN level whose flags the CPU has (each level needs those of the
    levels below, the ordering oneDNN's dispatcher uses), at most `cap` (a level name, as
    ONEDNN_MAX_CPU_ISA takes); None without flags to judge by."""
    names = [name for name, _ in ONEDNN_LEVELS]
    top = names.index(cap.upper()) if cap and cap.upper() in names else len(names) - 1
    have, picked = set(), None
    for i, (name, needs) in enumerate(ONEDNN_LEVELS):
        have |= needs
        if i > top or not have <= flags:
            break
        picked = name
    return picked


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
