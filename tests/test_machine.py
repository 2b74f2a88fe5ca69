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


# --- where a stage computes, and the refusal of full on the CPU of a GPU machine --------------

import os
import subprocess
import sys
from pathlib import Path

import pytest

from fat2019.cli import BadInput
from helpers import stand_in_nvidia_smi

H100 = "NVIDIA H100 80GB HBM3"
CODE = Path(__file__).resolve().parent.parent / "code"


def test_the_gpus_and_the_driver_are_read_from_nvidia_smi(tmp_path, monkeypatch):
    smi = stand_in_nvidia_smi(tmp_path / "gpu", [H100, "NVIDIA A100-SXM4-40GB"], driver="470.82.01", cuda="11.4")
    monkeypatch.setenv("PATH", f"{smi.parent}:{os.environ['PATH']}")
    assert machine.listed_gpus() == [machine.Gpu(0, H100), machine.Gpu(1, "NVIDIA A100-SXM4-40GB")]
    assert machine.driver() == machine.Driver("470.82.01", (11, 4))
    smi = stand_in_nvidia_smi(tmp_path / "nodriver", [])   # installed, but no driver loaded
    monkeypatch.setenv("PATH", f"{smi.parent}:{os.environ['PATH']}")
    assert machine.listed_gpus() == [] and machine.driver() is None


def test_each_cause_of_an_unseen_gpu_is_named_with_its_fix():
    new_driver = machine.Driver("550.54.15", (12, 4))
    [(cause, fix)] = machine.why_no_gpu("TensorFlow", {}, gpu_build=False, found=new_driver)
    assert "the CPU build of TensorFlow is installed" in cause and "nvidia-cudnn-cu12" in cause
    assert "sh code/setup_env.sh" in fix
    [(cause, fix)] = machine.why_no_gpu("JAX", {"CUDA_VISIBLE_DEVICES": ""}, gpu_build=True, found=new_driver)
    assert cause == "CUDA_VISIBLE_DEVICES='' hides every GPU" and "unset CUDA_VISIBLE_DEVICES" in fix
    assert machine.why_no_gpu("JAX", {"CUDA_VISIBLE_DEVICES": "-1"}, True, new_driver)[0][0].startswith("CUDA_")
    [(cause, fix)] = machine.why_no_gpu("JAX", {"CUDA_VISIBLE_DEVICES": "1"}, True, machine.Driver("470.82.01", (11, 4)))
    assert "driver 470.82.01 runs CUDA up to 11.4" in cause and "525.60.13 or newer" in fix
    [(cause, fix)] = machine.why_no_gpu("TensorFlow", {}, True, new_driver)
    assert "not one this check knows" in cause and "TF_CPP_MIN_LOG_LEVEL=0" in fix
    assert "JAX_PLATFORMS=cuda" in machine.why_no_gpu("JAX", {}, True, new_driver)[0][1]
    assert len(machine.why_no_gpu("TensorFlow", {"CUDA_VISIBLE_DEVICES": ""}, False, None)) == 2


@pytest.fixture
def devices(monkeypatch):
    """machine's view of the devices, set by the test: listed (nvidia-smi), seen (the backend)."""
    state = {"listed": [], "seen": [], "gpu_build": False}
    monkeypatch.setattr(machine, "backend", lambda: ("TensorFlow", "2.20.0"))
    monkeypatch.setattr(machine, "listed_gpus", lambda: state["listed"])
    monkeypatch.setattr(machine, "backend_gpus", lambda: state["seen"])
    monkeypatch.setattr(machine, "cuda_wheels_installed", lambda name: state["gpu_build"])
    monkeypatch.setattr(machine, "driver", lambda: machine.Driver("550.54.15", (12, 4)))
    return state


def test_the_first_line_names_the_backend_and_its_device(devices):
    assert machine.stage_line("train", "full", environ={}) == "train: TensorFlow 2.20.0 on the CPU (no GPU found)"
    devices["seen"] = [machine.Gpu(0, H100)]
    assert machine.stage_line("train", "full", environ={}) == f"train: TensorFlow 2.20.0 on GPU 0 ({H100})"
    assert machine.stage_line("train", "full", environ={"CUDA_VISIBLE_DEVICES": "3"}) == \
        f"train: TensorFlow 2.20.0 on GPU 0 ({H100}; CUDA_VISIBLE_DEVICES=3)"
    devices["seen"] = [machine.Gpu(0, H100), machine.Gpu(1, H100)]
    assert machine.stage_line("predict", "demo", environ={}).endswith(
        f"on GPU 0 ({H100}), 1 of 2 it sees (--gpus 2 runs units side by side)")
    assert machine.stage_line("features", None, decoding_workers=2) == \
        "features: decoding on the CPU, 2 processes (librosa; no backend, no GPU)"


def test_full_refuses_the_cpu_of_a_gpu_machine_unless_the_cpu_is_chosen(devices):
    devices["listed"] = [machine.Gpu(0, H100)]
    with pytest.raises(BadInput) as refused:
        machine.stage_line("train", "full", environ={})
    message = str(refused.value)
    assert message.startswith(f"train: profile full on the CPU, but nvidia-smi lists 1 GPU ({H100}) that "
                              f"TensorFlow does not see: the CPU build of TensorFlow is installed")
    assert "Fix: install the GPU build: sh code/setup_env.sh" in message and message.endswith("FAT2019_DEVICE=cpu")
    # demo (a trial), or the CPU chosen: the stage goes on and says why it is on the CPU
    assert machine.stage_line("train", "demo", environ={}) == (
        "train: TensorFlow 2.20.0 on the CPU (TensorFlow sees none of the 1 GPU nvidia-smi lists: the CPU build "
        "of TensorFlow is installed (requirements.txt, without nvidia-cudnn-cu12))")
    assert machine.stage_line("train", "full", environ={"FAT2019_DEVICE": "cpu"}).endswith(
        "on the CPU (TensorFlow sees none of the 1 GPU nvidia-smi lists: FAT2019_DEVICE=cpu)")


def test_a_ray_driver_names_where_its_units_go_without_asking_for_devices(devices):
    from fat2019.engine.ray_scheduler import Plan
    devices["listed"] = [machine.Gpu(0, H100)]   # would refuse if the driver asked the backend
    assert machine.stage_line("train", "full", environ={}, ray_plan=Plan(gpus=4)) == (
        "train: TensorFlow 2.20.0, one unit per GPU on 4 GPUs of this machine (Ray); each unit's log starts "
        "with its device")
    assert "on the GPUs of the Ray cluster at auto;" in machine.stage_line("train", "full", ray_plan=Plan(address="auto"))


@pytest.mark.skipif(machine.cuda_wheels_installed("TensorFlow"), reason="the GPU build is installed here")
def test_the_stage_refuses_before_any_work_when_a_stand_in_nvidia_smi_lists_a_gpu(tmp_path):
    """The real stage and backend (the CPU build) with a stand-in nvidia-smi on PATH: exit 2,
    before the data is even read (there is none)."""
    smi = stand_in_nvidia_smi(tmp_path / "bin", [H100])
    env = {**os.environ, "PATH": f"{smi.parent}:{os.environ['PATH']}", "KERAS_BACKEND": "tensorflow"}
    env.pop("CUDA_VISIBLE_DEVICES", None)
    env.pop("FAT2019_DEVICE", None)
    argv = [sys.executable, str(CODE / "train.py"), "--profile", "full", "--data-dir", str(tmp_path / "none")]
    run = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=300)
    assert run.returncode == 2 and run.stdout == ""
    assert f"error: train: profile full on the CPU, but nvidia-smi lists 1 GPU ({H100}) that TensorFlow does " \
           f"not see: the CPU build of TensorFlow is installed" in run.stderr


def test_run_sh_checks_full_before_its_first_stage(devices, tmp_path, capsys):
    devices["listed"] = [machine.Gpu(0, H100)]
    assert machine.check_full_profile("run.sh") == 2
    assert capsys.readouterr().err.startswith("error: run.sh: profile full on the CPU, but nvidia-smi lists 1 GPU")
    devices["seen"] = [machine.Gpu(0, H100)]
    assert machine.check_full_profile("run.sh") == 0
    # run.sh itself, its interpreter a stand-in whose check refuses: no stage runs
    repo = tmp_path / "repo"
    (repo / "code").mkdir(parents=True)
    (repo / "input").mkdir()
    (repo / "input" / "train_curated.csv").write_text("fname,labels\n")   # real data: profile full
    (repo / "run.sh").write_text((CODE.parent / "run.sh").read_text())
    python = tmp_path / "python"
    # the stand-in interpreter: the option routing gives one stage, the check refuses
    python.write_text('#!/bin/sh\ncase "$*" in *check_full_profile*) echo "error: refused" >&2; exit 2 ;;\n'
                      '*fat2019.pipeline\\ route*) echo "STAGES=features; STAGE_ARGS_features=" ; exit 0 ;; esac\n'
                      'echo "$*" >> "$CALLS"\n')
    python.chmod(0o755)
    (repo / "code" / "setup_env.sh").write_text(f"PY={python}\n")
    calls = tmp_path / "calls.txt"
    run = subprocess.run(["sh", str(repo / "run.sh")], capture_output=True, text=True, timeout=60,
                         env={**os.environ, "CALLS": str(calls)})
    assert run.returncode == 2 and "error: refused" in run.stderr and not calls.exists()


ZEN4 = ZEN3 + " avx512f avx512dq avx512bw avx512vl avx512_vnni avx512_bf16"   # no avx_vnni, no amx


def test_a_zen4_without_avx_vnni_reaches_the_avx512_levels(tmp_path):
    # AVX2_VNNI is a branch beside AVX-512 in oneDNN, not a step below it
    line = machine.summary(cpuinfo(tmp_path, "AMD EPYC 9B14", ZEN4), environ={})
    assert "oneDNN would use AVX512_CORE_BF16 (no ISA settings)" in line
    assert machine.onednn_isa(set(ZEN4.split()), "AVX2_VNNI") == "AVX2"
    assert machine.onednn_isa(set((ZEN3 + " avx_vnni").split())) == "AVX2_VNNI"
