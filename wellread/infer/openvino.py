"""OpenVINO: the fp32 graph in bf16 where the CPU has it, and a static int8 model made with NNCF.

``openvino`` runs ``model.onnx`` itself; ``openvino-int8`` runs ``model.int8.xml`` / ``model.int8.bin``, the
OpenVINO IR that ``wellread export --int8`` writes beside the ONNX files: NNCF's post-training quantisation
(``nncf.quantize``, ``ModelType.TRANSFORMER``: SmoothQuant, the transformer's sensitive operations kept in
float, fast bias correction) with activation ranges calibrated on real inputs — the task's training
examples where the export is given a task, else the built-in check inputs. Matrix products then run in
int8 (AMX-INT8 / VNNI) and the rest in bf16 where native, else fp32.

Why a second int8 path: ONNX Runtime's dynamic int8 quantises every activation at run time; on the Intel
AMX kind it gained little over fp32 (docs/benchmarks.md), while NNCF's static int8 on OpenVINO ran the
L6-H384 QA teacher 6× faster than the Hugging Face QA path within 1 EM/F1 point.
"""

from __future__ import annotations

import contextlib
import io
import logging
from pathlib import Path

import numpy as np

from wellread import env
from wellread.errors import WellreadError

INT8_XML = "model.int8.xml"  # its weights: model.int8.bin beside it
CALIBRATION_MAX = 300  # model calls (batches) NNCF collects activation statistics from


def can_quantize() -> bool:
    """Whether this environment can write the OpenVINO int8 model (openvino and nncf installed)."""
    return env.have("openvino") and env.have("nncf")


def read_graph(core, model: Path | bytes | tuple[bytes, bytes]):
    """An ov.Model from a file (ONNX or IR .xml, its .bin beside it), ONNX bytes, or IR (xml, bin) bytes."""
    import openvino as ov

    if isinstance(model, tuple):
        xml, weights = model
        return core.read_model(xml.decode("utf-8"), ov.Tensor(np.frombuffer(weights, dtype=np.uint8).copy()))
    if isinstance(model, bytes):
        return core.read_model(io.BytesIO(model))
    return core.read_model(str(model))


def precision_hint(backend: str) -> tuple[str, str]:
    """(the precision wellread reports, OpenVINO's INFERENCE_PRECISION_HINT) for ``openvino`` / ``openvino-int8``:
    the float part in bf16 where the CPU has it natively, else fp32."""
    bf16 = env.cpu().native_bf16
    floats = "bf16" if bf16 else "fp32"
    return ("int8+" + floats if backend == "openvino-int8" else floats), ("bf16" if bf16 else "f32")


def quantize(onnx_file: Path, out_dir: Path, calibration: list[dict[str, np.ndarray]]) -> dict:
    """``out_dir``/model.int8.xml + .bin: ``onnx_file`` quantised to int8 by NNCF, activation ranges from
    ``calibration`` (model inputs, one dict of int64 arrays per batch). Returns the record for export.json."""
    if not calibration:
        raise WellreadError("no calibration inputs for the int8 model", field="calibration")
    import nncf
    import openvino as ov

    batches = calibration[:CALIBRATION_MAX]
    core = ov.Core()
    graph = core.read_model(str(onnx_file))
    nncf.set_log_level(logging.WARNING)  # its INFO lines and rich progress bars (on stdout) are not ours to show
    with contextlib.redirect_stdout(io.StringIO()):
        quantized = nncf.quantize(graph, nncf.Dataset(batches), model_type=nncf.ModelType.TRANSFORMER,
                                  subset_size=len(batches))
    ov.save_model(quantized, str(out_dir / INT8_XML))
    return {"method": "nncf.quantize (post-training static int8, ModelType.TRANSFORMER)",
            "calibration_batches": len(batches), "calibration_rows": int(sum(len(b["input_ids"]) for b in batches)),
            "nncf": nncf.__version__, "openvino": ov.__version__}


__all__ = ["INT8_XML", "can_quantize", "read_graph", "precision_hint", "quantize"]
