"""Figures of one evaluation: a confusion matrix (classification) or predicted-against-true scores (regression)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from wellread.report.plots import save_png


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def confusion_png(matrix: Sequence[Sequence[int]], labels: Sequence[str], path: Path, title: str) -> Path:
    """Rows: the true label; columns: the prediction; each cell its count, shaded by the row's share."""
    plt = _pyplot()
    cm = np.asarray(matrix, dtype=np.float64)
    share = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
    k = len(labels)
    fig, ax = plt.subplots(figsize=(0.9 * k + 2.5, 0.8 * k + 2))
    im = ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(k), labels, rotation=45, ha="right")
    ax.set_yticks(range(k), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    for i in range(k):
        for j in range(k):
            ax.text(j, i, f"{int(cm[i, j])}", ha="center", va="center",
                    color="white" if share[i, j] > 0.5 else "black", fontsize=8)
    ax.set_title(title)
    fig.colorbar(im, ax=ax, label="share of the true class")
    fig.tight_layout()
    save_png(fig, path)
    plt.close(fig)
    return path


def errors_png(predictions: Sequence[float], references: Sequence[float], path: Path, title: str) -> Path:
    """Predicted against true scores (the diagonal is perfect) and the distribution of the errors."""
    plt = _pyplot()
    p, r = np.asarray(predictions, dtype=float), np.asarray(references, dtype=float)
    fig, (a, b) = plt.subplots(1, 2, figsize=(9, 4))
    a.scatter(r, p, s=6, alpha=0.4)
    lo, hi = float(min(r.min(), p.min())), float(max(r.max(), p.max()))
    a.plot([lo, hi], [lo, hi], color="red", linewidth=1)
    a.set_xlabel("true score")
    a.set_ylabel("predicted score")
    b.hist(p - r, bins=40)
    b.set_xlabel("predicted - true")
    b.set_ylabel("examples")
    fig.suptitle(title)
    fig.tight_layout()
    save_png(fig, path)
    plt.close(fig)
    return path
