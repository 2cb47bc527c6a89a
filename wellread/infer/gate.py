"""The int8 accuracy gate: an int8 model is kept only if it scores within a set number of points of its fp32
self on a task's labelled split (``wellread export --int8 --task FILE``, ``wellread recipe --task``). Every int8
file of the export is gated: model.int8.onnx (ONNX Runtime) and model.int8.xml (OpenVINO), where present."""

from __future__ import annotations

import random
from pathlib import Path

from wellread.errors import WellreadError

INT8_BACKENDS = ("onnx-int8", "openvino-int8")
CALIBRATION_EXAMPLES = 1024  # training examples whose activations calibrate the OpenVINO int8 model


def backend_predictions(model_dir: Path, backend: str, texts_a: list[str], texts_b: list, *, threads: int | None,
                        max_length: int, is_regression: bool) -> list:
    from wellread.infer.predictor import Predictor

    p = Predictor(model_dir, backend=backend, max_length=max_length, threads=threads)
    return [r["score"] if is_regression else r["label"] for r in p.predict(texts_a, texts_b)]


def calibration_inputs(task, data_dir: str | Path | None = None) -> tuple[list[str], list[str | None]]:
    """(texts_a, texts_b) of a seeded sample of the task's training examples (a task file, or a GLUE name with
    ``data_dir``), to calibrate the OpenVINO int8 model on (``export_onnx(calibration=...)``)."""
    from wellread.data.task_files import read_split

    ex = read_split(task, data_dir, "train").examples
    ex = random.Random(0).sample(ex, min(CALIBRATION_EXAMPLES, len(ex)))
    return [e.text_a for e in ex], [e.text_b for e in ex]


def present_int8(export_dir: Path) -> tuple[str, ...]:
    """The int8 backends whose files ``export_dir`` holds."""
    from wellread.infer.predictor import ONNX_FILES

    return tuple(b for b in INT8_BACKENDS if (Path(export_dir) / ONNX_FILES[b]).is_file())


def int8_gate(export_dir: Path, task: str, max_drop: float, *, split: str = "dev", threads: int | None = None,
              max_length: int = 128, data_dir: str | Path | None = None) -> dict:
    """Score each int8 model of ``export_dir`` and its fp32 self (model.onnx) on ``split``.

    ``backends``: per int8 backend, its score, metrics, points lost (x100 of the task's score) and whether it
    passed (lost at most ``max_drop``); ``passed``: all of them did."""
    from wellread.data.task_files import read_split
    from wellread.data.tasks import get_task
    from wellread.eval.metrics import compute_metrics, task_score

    spec = get_task(task)
    ex = read_split(spec, data_dir, split).examples
    a, b, refs = [e.text_a for e in ex], [e.text_b for e in ex], [e.label for e in ex]

    def score(backend: str) -> tuple[float, dict]:
        preds = backend_predictions(export_dir, backend, a, b, threads=threads, max_length=max_length,
                                    is_regression=spec.is_regression)
        metrics = compute_metrics(spec, preds, refs)
        return task_score(spec, metrics), metrics

    fp32, fp32_metrics = score("onnx")
    backends = {}
    for backend in present_int8(export_dir):
        s, m = score(backend)
        drop = 100 * (fp32 - s)
        backends[backend] = {"int8": s, "int8_metrics": m, "drop_points": drop, "passed": drop <= max_drop}
    if not backends:
        raise WellreadError("no int8 model here to gate (export with --int8)", file=export_dir)
    return {"split": split, "n": len(ex), "fp32": fp32, "fp32_metrics": fp32_metrics, "max_drop_points": max_drop,
            "backends": backends, "passed": all(r["passed"] for r in backends.values())}


def refusal(gate: dict) -> str:
    """One line: which int8 models were refused, and why."""
    parts = [f"{b} {100 * r['int8']:.2f}, {r['drop_points']:.2f} points lost > --int8-max-drop {gate['max_drop_points']:g}"
             for b, r in gate["backends"].items() if not r["passed"]]
    return f"int8 export refused: {gate['split']} score {100 * gate['fp32']:.2f} for the fp32 model; " + "; ".join(parts)


__all__ = ["INT8_BACKENDS", "CALIBRATION_EXAMPLES", "calibration_inputs", "int8_gate", "backend_predictions",
           "present_int8", "refusal"]
