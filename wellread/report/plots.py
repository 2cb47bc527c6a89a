"""Plots of training runs (matplotlib, no display needed): written atomically as PNG."""

from __future__ import annotations

import json
import os
from pathlib import Path


def read_metrics(run_dir: str | Path) -> list[dict]:
    """The records of ``RUN/metrics.jsonl`` (a line cut short by a kill is skipped)."""
    rows = []
    path = Path(run_dir) / "metrics.jsonl"
    if not path.is_file():
        return rows
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            rows.append(json.loads(line))
        except ValueError:
            continue
    return rows


def save_png(fig, path: Path) -> Path:
    """Write a figure as PNG atomically (a temporary name, then a rename)."""
    tmp = path.with_name(path.name + ".tmp.png")
    fig.savefig(tmp, dpi=110)
    os.replace(tmp, path)
    return path


def plot_pretraining(run_dirs: list[str | Path] | str | Path, out: str | Path, labels: list[str] | None = None) -> Path:
    """Training loss and held-out MLM accuracy (and NSP accuracy when present) against tokens seen."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = [run_dirs] if isinstance(run_dirs, (str, Path)) else list(run_dirs)
    labels = labels or [Path(r).name for r in runs]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(11, 4))
    for run, label in zip(runs, labels):
        rows = read_metrics(run)
        train = [r for r in rows if r.get("kind") == "train"]
        evals = [r for r in rows if r.get("kind") == "eval" and "eval/mlm_accuracy" in r]
        tokens_at = {r["step"]: r["tokens"] for r in train}

        def tok(step: int, tokens_at: dict = tokens_at) -> float:
            known = [s for s in tokens_at if s <= step]
            return tokens_at[max(known)] / 1e6 if known else 0.0

        if train:
            ax_loss.plot([r["tokens"] / 1e6 for r in train], [r.get("mlm_loss", r["loss"]) for r in train],
                         label=f"{label} train MLM loss", alpha=0.8)
        if evals:
            ax_loss.plot([tok(r["step"]) for r in evals], [r["eval/mlm_loss"] for r in evals], "o-",
                         label=f"{label} held-out MLM loss")
            ax_acc.plot([tok(r["step"]) for r in evals], [100 * r["eval/mlm_accuracy"] for r in evals], "o-",
                        label=f"{label} MLM accuracy")
            if "eval/mlm_accuracy_at_mask" in evals[0]:
                ax_acc.plot([tok(r["step"]) for r in evals], [100 * r["eval/mlm_accuracy_at_mask"] for r in evals],
                            "^:", label=f"{label} MLM accuracy at [MASK]")
            if "eval/nsp_accuracy" in evals[0]:
                ax_acc.plot([tok(r["step"]) for r in evals], [100 * r["eval/nsp_accuracy"] for r in evals], "s--",
                            label=f"{label} NSP accuracy")
    ax_loss.set_xlabel("tokens seen (millions)")
    ax_loss.set_ylabel("loss")
    ax_loss.legend(fontsize=8)
    ax_acc.set_xlabel("tokens seen (millions)")
    ax_acc.set_ylabel("held-out accuracy (%)")
    ax_acc.legend(fontsize=8)
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
    fig.tight_layout()
    path = save_png(fig, Path(out))
    plt.close(fig)
    return path


def draw_curves(run_dir: str | Path, results: dict) -> Path:
    """``RUN/curves.png`` of a finished pre-training run (``results``: its results.json), drawn from its
    metrics.jsonl unless it was drawn since the results were written: what ``wellread pretrain`` and the
    recipe's pre-training stage do when the run is done (training itself draws nothing)."""
    run_dir = Path(run_dir)
    png, done = run_dir / "curves.png", run_dir / "results.json"
    if png.is_file() and done.is_file() and png.stat().st_mtime >= done.stat().st_mtime:
        return png
    return plot_pretraining(run_dir, png, labels=[str(results.get("model", run_dir.name))])


__all__ = ["read_metrics", "plot_pretraining", "draw_curves", "save_png"]
