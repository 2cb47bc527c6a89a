"""The report's figures (matplotlib, no display): fine-tuning curves and the arms side by side."""

from __future__ import annotations

from pathlib import Path

from wellread.data.tasks import get_task
from wellread.io import read_json_or_none
from wellread.report.plots import read_metrics, save_png


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_curves(task: str, runs: list[tuple[str, Path]], out: Path) -> Path | None:
    """Training loss against steps and the dev score after each epoch, one line per (label, run)."""
    if task in ("squad", "squad_v2"):  # extractive QA: the official F1 (already in %) on the held-out questions
        keys, scale, metric, name = ["test/f1"], 1.0, "F1", task
    else:
        spec = get_task(task)  # a GLUE name or a task file (named by its name:)
        keys, scale, metric = [f"{s}/{m}" for s in spec.dev_splits for m in spec.metrics], 100.0, "/".join(spec.metrics)
        name = spec.name
    plt = _pyplot()
    fig, (ax_loss, ax_dev) = plt.subplots(1, 2, figsize=(11, 4))
    drawn = False
    for label, run in runs:
        train = [r for r in read_metrics(run) if r.get("kind") == "train" and "loss" in r]
        if train:
            ax_loss.plot([r["step"] for r in train], [r["loss"] for r in train], label=label, alpha=0.85)
            drawn = True
        history = (read_json_or_none(run / "results.json") or {}).get("history") or []
        points = []
        for h in history:
            if all(k in h for k in keys):
                points.append((h.get("epoch", 0), scale * sum(h[k] for k in keys) / len(keys)))
        if points:
            ax_dev.plot([p[0] for p in points], [p[1] for p in points], "o-", label=label)
            drawn = True
    if not drawn:
        plt.close(fig)
        return None
    ax_loss.set_xlabel("step")
    ax_loss.set_ylabel("training loss")
    ax_loss.set_title(f"{name}: training loss (the best cell of each arm)")
    ax_dev.set_xlabel("epoch")
    ax_dev.set_ylabel(f"dev {metric} (%)")
    ax_dev.set_title(f"{name}: dev score after each epoch")
    for ax in (ax_loss, ax_dev):
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
        else:
            ax.text(0.5, 0.5, "no records (runs shorter than --log-every steps)", ha="center", va="center",
                    transform=ax.transAxes, fontsize=9, color="gray")
    fig.tight_layout()
    path = save_png(fig, out)
    plt.close(fig)
    return path


def plot_comparison(rows: dict[str, list[tuple[str, float, float]]], out: Path) -> Path:
    """Grouped bars: per task, each arm's mean dev score (and its spread over seeds)."""
    plt = _pyplot()
    tasks = list(rows)
    labels: list[str] = []
    for t in tasks:
        labels += [label for label, _, _ in rows[t] if label not in labels]
    fig, ax = plt.subplots(figsize=(2.2 + 1.6 * len(tasks) * max(1, len(labels)) / 3, 4.2))
    width = 0.8 / max(1, len(labels))
    for i, label in enumerate(labels):
        xs, ys, errs = [], [], []
        for j, t in enumerate(tasks):
            for lab, mean, sd in rows[t]:
                if lab == label:
                    xs.append(j + (i - (len(labels) - 1) / 2) * width)
                    ys.append(mean)
                    errs.append(sd)
        bars = ax.bar(xs, ys, width, yerr=errs if any(errs) else None, label=label, capsize=3)
        for b, y in zip(bars, ys):
            ax.annotate(f"{y:.1f}", (b.get_x() + b.get_width() / 2, max(y, 0)), ha="center", va="bottom", fontsize=7)
    ax.set_xticks(range(len(tasks)), tasks)
    ax.set_ylabel("dev score (%)")
    ax.set_title("Pre-trained distillation against its parts (best of the grid on dev)")
    ax.axhline(0, color="black", linewidth=0.6)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.tight_layout()
    path = save_png(fig, out)
    plt.close(fig)
    return path


__all__ = ["plot_curves", "plot_comparison"]
