"""`wellread env`: what the CPU has, read from the real machine, and the defaults that follow from it."""

from __future__ import annotations

import importlib.metadata
import json
import os
import shutil
import subprocess
import sys

import pytest
import torch

from tests.conftest import REPO
from tests.test_loop import ToyObjective
from wellread import env
from wellread.train import loop
from wellread.train.loop import TrainConfig, train

# /proc/cpuinfo lines of the three machine kinds this project runs on (flags cut to what matters).
AMD_AVX2 = """processor\t: 0
vendor_id\t: AuthenticAMD
model name\t: AMD EPYC 7B13
flags\t\t: fpu sse sse2 avx avx2 fma bmi2
"""
AMD_BF16 = """processor\t: 0
model name\t: AMD EPYC 9B14
flags\t\t: fpu avx avx2 avx512f avx512bw avx512_bf16 avx512_vnni
processor\t: 1
model name\t: AMD EPYC 9B14
flags\t\t: fpu avx avx2 avx512f avx512bw avx512_bf16 avx512_vnni
"""
INTEL_AMX = """processor\t: 0
model name\t: Intel(R) Xeon(R) Processor
flags\t\t: fpu avx avx2 avx512f avx_vnni avx512_bf16 avx512_vnni amx_bf16 amx_tile amx_int8
"""


def machine(text: str) -> env.CPU:
    model, flags = env.parse_cpuinfo(text)
    return env.CPU(model=model, cores=2, flags=flags)


def test_cpuinfo_is_parsed_into_model_and_instruction_sets():
    amd, bf16, intel = machine(AMD_AVX2), machine(AMD_BF16), machine(INTEL_AMX)
    assert amd.model == "AMD EPYC 7B13" and bf16.model == "AMD EPYC 9B14" and intel.model == "Intel(R) Xeon(R) Processor"
    assert (amd.native_bf16, bf16.native_bf16, intel.native_bf16) == (False, True, True)
    assert (amd.amx, bf16.amx, intel.amx) == (False, False, True)
    assert (amd.int8_dot, bf16.int8_dot, intel.int8_dot) == (False, True, True)


@pytest.mark.parametrize("text, backend", [(AMD_AVX2, "onnx-int8"), (AMD_BF16, "onnx-int8"), (INTEL_AMX, "openvino")])
def test_the_backend_chooser_follows_the_cpu_and_only_picks_what_is_installed(text, backend):
    assert env.auto_backend(machine(text), ("torch", "onnx", "onnx-int8", "openvino")) == backend
    assert env.auto_backend(machine(text), ("torch", "onnx", "onnx-int8")) == "onnx-int8"


@pytest.mark.parametrize("native", [False, True])
def test_bf16_is_the_training_default_exactly_where_it_is_native(tmp_path, monkeypatch, native):
    monkeypatch.setattr(loop, "native_bf16", lambda device: native)
    used = []
    real = torch.autocast

    def spy(device_type, *args, **kwargs):
        used.append(kwargs.get("enabled", True))
        return real(device_type, *args, **kwargs)

    monkeypatch.setattr(torch, "autocast", spy)
    train(ToyObjective(), TrainConfig(lr=1e-2, batch_size=32, epochs=1, quiet=True), tmp_path / "default")
    assert used and set(used) == {native}
    used.clear()
    train(ToyObjective(), TrainConfig(lr=1e-2, batch_size=32, epochs=1, bf16=False, quiet=True), tmp_path / "fp32")
    assert set(used) == {False}, "--no-bf16 keeps fp32 everywhere"


def test_resolve_bf16_default_off_without_native_bf16(monkeypatch):
    monkeypatch.setattr(env, "cpu", lambda: machine(AMD_AVX2))
    assert env.resolve_bf16(None, "cpu") is False and env.resolve_bf16(True, "cpu") is True
    monkeypatch.setattr(env, "cpu", lambda: machine(INTEL_AMX))
    assert env.resolve_bf16(None, "cpu") is True and env.resolve_bf16(False, "cpu") is False


def test_wellread_env_reports_the_real_machine():
    proc = subprocess.run([sys.executable, "-m", "wellread", "env", "--json"], capture_output=True, text=True,
                          cwd=REPO, timeout=120)
    assert proc.returncode == 0, proc.stderr
    r = json.loads(proc.stdout)
    assert r["cores"] == len(os.sched_getaffinity(0))
    assert r["versions"]["torch"] == torch.__version__
    lscpu = shutil.which("lscpu")
    if lscpu:  # an independent reading of the same machine
        out = subprocess.run([lscpu], capture_output=True, text=True).stdout
        fields = dict(line.split(":", 1) for line in out.splitlines() if ":" in line)
        assert r["cpu"] == fields["Model name"].strip()
        flags = set(fields.get("Flags", "").split())
        for flag, label in env.FEATURES.items():
            assert r["instruction_sets"][label] == (flag in flags), label
    assert r["defaults"]["training_precision"] == ("bf16" if env.cpu().native_bf16 else "fp32")
    assert r["defaults"]["inference_backend"] in r["defaults"]["inference_backends"]
    # OpenVINO's two backends (bf16 on model.onnx, the static int8 model) are offered exactly where it is installed
    openvino = {"openvino", "openvino-int8"} & set(r["defaults"]["inference_backends"])
    assert openvino == ({"openvino", "openvino-int8"} if env.have("openvino") else set())
    assert r["versions"]["nncf"] == (importlib.metadata.version("nncf") if env.have("nncf") else None)
    text = subprocess.run([sys.executable, "-m", "wellread", "env"], capture_output=True, text=True, cwd=REPO,
                          timeout=120).stdout
    assert r["cpu"] in text and "--backend auto runs" in text
