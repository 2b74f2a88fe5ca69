"""The run summary's CPU line (fat2019/util/machine.py), from cpuinfo files of known CPUs."""
from __future__ import annotations

from fat2019.util import machine

ZEN3 = "fpu sse4_1 sse4_2 avx avx2 fma bmi2"                      # AMD EPYC family 25 model 1
SAPPHIRE_RAPIDS = ZEN3 + " avx_vnni avx512f avx512dq avx512bw avx512vl avx512_vnni avx512_bf16 " \
                         "avx512_fp16 amx_tile amx_int8 amx_bf16"


def cpuinfo(tmp_path, model, flags):
    path = tmp_path / "cpuinfo"
    path.write_text(f"processor\t: 0\nmodel name\t: {model}\nflags\t\t: {flags}\n\n"
                    f"processor\t: 1\nmodel name\t: {model}\nflags\t\t: {flags}\n")
    return path


def test_the_summary_names_the_cpu_its_isa_and_onednns_pick(tmp_path):
    line = machine.summary(cpuinfo(tmp_path, "AMD EPYC 7B13", ZEN3), environ={})
    assert line.startswith("machine: AMD EPYC 7B13, ") and "ISA avx2 fma;" in line
    assert "oneDNN would use AVX2 (no ISA settings)" in line
    line = machine.summary(cpuinfo(tmp_path, "Intel(R) Xeon(R) Processor", SAPPHIRE_RAPIDS), environ={})
    assert "avx512f avx512_vnni avx512_bf16 avx512_fp16 amx_tile amx_bf16" in line
    assert "oneDNN would use AVX512_CORE_AMX" in line


def test_a_cap_lowers_onednns_pick_and_is_shown(tmp_path):
    path = cpuinfo(tmp_path, "Intel(R) Xeon(R) Processor", SAPPHIRE_RAPIDS)
    line = machine.summary(path, environ={"ONEDNN_MAX_CPU_ISA": "AVX2", "TF_ENABLE_ONEDNN_OPTS": "1"})
    assert "oneDNN would use AVX2 (ONEDNN_MAX_CPU_ISA=AVX2, TF_ENABLE_ONEDNN_OPTS=1)" in line
    assert machine.onednn_isa(set(ZEN3.split()), "AVX512_CORE") == "AVX2"   # a cap above the CPU changes nothing


def test_without_cpuinfo_it_still_gives_a_line(tmp_path):
    line = machine.summary(tmp_path / "absent", environ={})
    assert line.startswith("machine: ") and "ISA unknown" in line and "oneDNN's ISA unknown" in line


ZEN4 = ZEN3 + " avx512f avx512dq avx512bw avx512vl avx512_vnni avx512_bf16"   # no avx_vnni, no amx


def test_a_zen4_without_avx_vnni_reaches_the_avx512_levels(tmp_path):
    # AVX2_VNNI is a branch beside AVX-512 in oneDNN, not a step below it
    line = machine.summary(cpuinfo(tmp_path, "AMD EPYC 9B14", ZEN4), environ={})
    assert "oneDNN would use AVX512_CORE_BF16 (no ISA settings)" in line
    assert machine.onednn_isa(set(ZEN4.split()), "AVX2_VNNI") == "AVX2"
    assert machine.onednn_isa(set((ZEN3 + " avx_vnni").split())) == "AVX2_VNNI"
