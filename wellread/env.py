"""What this machine can do, and what wellread uses here by default (``wellread env``).

The CPU kind decides what is fast: bf16 matrix products are native only with AVX-512-BF16 or AMX
(elsewhere oneDNN emulates them, several times slower than fp32), int8 products are fast with VNNI
(AVX-512-VNNI, AVX-VNNI) or AMX-INT8, and on a CPU with AMX OpenVINO runs a BERT in bf16 on the matrix
units. Everything here reads the machine as it is (``/proc/cpuinfo``, the installed packages), so the
defaults follow the CPU a user has rather than the one the project was measured on:

- training: bf16 autocast by default where bf16 is native (any CUDA GPU that supports it; a CPU with
  AVX-512-BF16 or AMX), fp32 elsewhere; ``--bf16`` / ``--no-bf16`` decide explicitly;
- inference: ``--backend auto`` picks OpenVINO where the CPU has AMX and OpenVINO is installed,
  ONNX Runtime int8 elsewhere (the choices and the measurements behind them: docs/benchmarks.md).
"""

from __future__ import annotations

import functools
import importlib.metadata
import os
import platform
from dataclasses import dataclass, field
from pathlib import Path

# The instruction sets that change what is fast for BERT on a CPU, as /proc/cpuinfo names them.
FEATURES = {
    "avx2": "AVX2",
    "avx512f": "AVX-512",
    "avx512_bf16": "AVX-512-BF16",
    "avx512_vnni": "AVX-512-VNNI",
    "avx_vnni": "AVX-VNNI",
    "amx_bf16": "AMX-BF16",
    "amx_int8": "AMX-INT8",
}
PACKAGES = ("torch", "transformers", "tokenizers", "onnxruntime", "openvino", "nncf")


@dataclass(frozen=True)
class CPU:
    model: str
    cores: int  # the cores this process may run on
    flags: frozenset[str] = field(default_factory=frozenset)
    source: str = "/proc/cpuinfo"

    def has(self, flag: str) -> bool:
        return flag in self.flags

    @property
    def native_bf16(self) -> bool:
        return self.has("avx512_bf16") or self.has("amx_bf16")

    @property
    def amx(self) -> bool:
        return self.has("amx_bf16") or self.has("amx_int8")

    @property
    def int8_dot(self) -> bool:
        """int8 dot products in hardware (VNNI or AMX-INT8)."""
        return self.has("avx512_vnni") or self.has("avx_vnni") or self.has("amx_int8")


def parse_cpuinfo(text: str) -> tuple[str, frozenset[str]]:
    """(model name, flags) of the first processor in /proc/cpuinfo's text."""
    model, flags = "", frozenset()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "model name" and not model:
            model = value.strip()
        elif key == "flags" and not flags:
            flags = frozenset(value.split())
        if model and flags:
            break
    return model, flags


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


@functools.cache
def cpu(cpuinfo: str | Path = "/proc/cpuinfo") -> CPU:
    """This machine's CPU. Without /proc/cpuinfo (macOS, Windows) the flags come from torch's own probe."""
    try:
        model, flags = parse_cpuinfo(Path(cpuinfo).read_text(encoding="utf-8", errors="replace"))
        source = str(cpuinfo)
    except OSError:
        model, flags, source = "", frozenset(), "torch"
    if not flags:
        flags, source = _torch_flags(), "torch"
    return CPU(model=model or platform.processor() or "unknown", cores=usable_cores(), flags=flags, source=source)


def _torch_flags() -> frozenset[str]:
    """Best effort where /proc/cpuinfo is missing: torch's dispatch level and oneDNN's bf16 probe."""
    import torch

    capability = torch.backends.cpu.get_cpu_capability().lower()  # e.g. "avx2", "avx512", "default"
    flags = set()
    if capability in ("avx2", "avx512"):
        flags.add("avx2")
    if capability == "avx512":
        flags.add("avx512f")
    try:
        if torch.ops.mkldnn._is_mkldnn_bf16_supported() and capability == "avx512":
            flags.add("avx512_bf16")
    except (AttributeError, RuntimeError):
        pass
    return frozenset(flags)


def native_bf16(device=None) -> bool:
    """Whether bf16 matrix products run natively: a CUDA GPU that supports bf16, a CPU with AVX-512-BF16 or AMX."""
    kind = getattr(device, "type", device) or "cpu"
    if kind == "cuda":
        import torch

        return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())
    return cpu().native_bf16


def resolve_bf16(requested: bool | None, device=None) -> bool:
    """``--bf16`` / ``--no-bf16`` when given; otherwise bf16 exactly where it is native (see the module doc)."""
    return native_bf16(device) if requested is None else bool(requested)


def have(package: str) -> bool:
    try:
        importlib.metadata.version(package)
        return True
    except importlib.metadata.PackageNotFoundError:
        return False


def inference_backends() -> tuple[str, ...]:
    """The inference backends that can run here (openvino and openvino-int8 only where openvino is installed;
    writing openvino-int8's model also needs nncf, ``wellread.infer.openvino.can_quantize``)."""
    return ("torch", "onnx", "onnx-int8") + (("openvino", "openvino-int8") if have("openvino") else ())


def auto_backend(machine: CPU | None = None, available: tuple[str, ...] | None = None) -> str:
    """What ``--backend auto`` runs: OpenVINO on a CPU with AMX (bf16 on the matrix units), else ONNX Runtime int8.

    Measured (docs/benchmarks.md): on the Intel AMX kind OpenVINO beats ONNX Runtime's dynamic int8, whose
    products gain little there; on the AMD kinds (AVX2; AVX-512 with BF16, no AMX) ONNX Runtime int8 is
    the fastest backend measured.
    """
    machine = machine or cpu()
    available = available if available is not None else inference_backends()
    if machine.amx and "openvino" in available:
        return "openvino"
    return "onnx-int8"


def versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for name in PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    return out


def report() -> dict:
    """Everything ``wellread env`` shows, as data (benchmarks and the report print it beside their figures)."""
    import torch

    machine = cpu()
    cuda = torch.cuda.is_available()
    return {
        "cpu": machine.model,
        "cores": machine.cores,
        "instruction_sets": {label: machine.has(flag) for flag, label in FEATURES.items()},
        "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "threads": {"torch": torch.get_num_threads(), "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS")},
        "gpu": torch.cuda.get_device_name(0) if cuda else None,
        "python": platform.python_version(),
        "versions": versions(),
        "defaults": {
            "training_precision": "bf16" if resolve_bf16(None, "cuda" if cuda else "cpu") else "fp32",
            "inference_backend": auto_backend(machine),
            "inference_backends": list(inference_backends()),
        },
        "flags_from": machine.source,
    }


def describe(r: dict | None = None) -> str:
    """``wellread env`` as text: one line per fact."""
    r = r or report()
    sets = r["instruction_sets"]
    have_sets = [k for k, v in sets.items() if v]
    lacking = [k for k, v in sets.items() if not v]
    d = r["defaults"]
    lines = [
        f"cpu:        {r['cpu']} ({r['cores']} cores usable)",
        f"has:        {', '.join(have_sets) or 'none of ' + ', '.join(FEATURES.values())}",
        f"lacks:      {', '.join(lacking) or '-'}",
        f"torch:      {r['versions']['torch']} (CPU kernels: {r['torch_cpu_capability']}, {r['threads']['torch']} threads"
        f"{', OMP_NUM_THREADS=' + r['threads']['OMP_NUM_THREADS'] if r['threads']['OMP_NUM_THREADS'] else ''})",
        "packages:   " + ", ".join(f"{k} {v}" for k, v in r["versions"].items() if v and k != "torch")
        + "".join(f", {k} not installed" for k, v in r["versions"].items() if not v),
        f"gpu:        {r['gpu'] or 'none'}",
        f"training:   {d['training_precision']} by default"
        + (" (bf16 is native here; --no-bf16 for fp32)" if d["training_precision"] == "bf16"
           else " (no native bf16 here; --bf16 would be emulated and slow)"),
        f"inference:  --backend auto runs {d['inference_backend']} (available: {', '.join(d['inference_backends'])})",
    ]
    return "\n".join(lines)
