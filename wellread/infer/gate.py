"""The int8 accuracy gate: an int8 ONNX model is kept only if it scores within a set number of points of its
fp32 self on a task's labelled split (``wellread export --int8 --task FILE``, ``wellread recipe --task``)."""

from __future__ import annotations

from pathlib import Path


def backend_predictions(model_dir: Path, backend: str, texts_a: list[str], texts_b: list, *, threads: int | None,
                        max_length: int, is_regression: bool) -> list:
    from wellread.infer.predictor import Predictor

    p = Predictor(model_dir, backend=backend, max_length=max_length, threads=threads)
    return [r["score"] if is_regression else r["label"] for r in p.predict(texts_a, texts_b)]


def int8_gate(export_dir: Path, task: str, max_drop: float, *, split: str = "dev", threads: int | None = None,
              max_length: int = 128, data_dir: str | Path | None = None) -> dict:
    """Score ``export_dir``'s int8 model and its fp32 self (model.onnx) on ``split``: passed when int8 loses
    at most ``max_drop`` points (x100 of the task's score)."""
    from wellread.data.task_files import read_split
    from wellread.data.tasks import get_task
    from wellread.eval.metrics import compute_metrics, task_score

    spec = get_task(task)
    ex = read_split(spec, data_dir, split).examples
    a, b, refs = [e.text_a for e in ex], [e.text_b for e in ex], [e.label for e in ex]
    scores, metrics = {}, {}
    for backend in ("onnx", "onnx-int8"):
        preds = backend_predictions(export_dir, backend, a, b, threads=threads, max_length=max_length,
                                    is_regression=spec.is_regression)
        metrics[backend] = compute_metrics(spec, preds, refs)
        scores[backend] = task_score(spec, metrics[backend])
    drop = 100 * (scores["onnx"] - scores["onnx-int8"])
    return {"split": split, "n": len(ex), "fp32": scores["onnx"], "int8": scores["onnx-int8"],
            "fp32_metrics": metrics["onnx"], "int8_metrics": metrics["onnx-int8"], "drop_points": drop,
            "max_drop_points": max_drop, "passed": drop <= max_drop}


def refusal(gate: dict) -> str:
    """One line: why the int8 model was refused."""
    return (f"int8 export refused: {gate['split']} score {100 * gate['int8']:.2f} against {100 * gate['fp32']:.2f} "
            f"for its fp32 self, {gate['drop_points']:.2f} points lost > --int8-max-drop {gate['max_drop_points']:g}")


__all__ = ["int8_gate", "backend_predictions", "refusal"]
