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
