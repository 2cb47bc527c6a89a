"""What ``results.json`` says of a training run, the same for every task kind (GLUE, QA, distillation)."""

from __future__ import annotations

from wellread.train.loop import TrainResult


def training_record(result: TrainResult, main: str, batch_size: int, wall: float) -> dict:
    """Steps, how the run stopped, the final and best dev scores (best by ``main``, over the evaluations
    after each epoch), the history and the timings."""
    evals = [h for h in result.history if any("/" in k for k in h)]
    best = max(evals, key=lambda h: h.get(main, float("-inf"))) if evals else None
    return {
        "steps": result.state.step, "epochs_done": result.state.epoch, "stopped_by": result.stopped_by,
        "dev": dict(result.final_eval), "main_metric": main, "history": evals,
        "best_epoch": None if best is None else best["epoch"],
        "best_dev": None if best is None else {k: v for k, v in best.items() if "/" in k},
        "train_seconds": result.state.elapsed, "wall_seconds": wall,
        "train_examples_per_s": result.state.step * batch_size / max(result.state.elapsed, 1e-9),
    }
