"""The grid's outputs for people: the paper's GLUE table layout with per-task grids (table.md) and one
heatmap per task (batch size × learning rate)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from wellread.data.tasks import get_task
from wellread.eval.metrics import PAPER_GLUE_TEST, best_glue_columns
from wellread.io import atomic_write_text
from wellread.modeling import zoo
from wellread.report.plots import save_png

# The paper's GLUE table: (column, task, metric names shown as "a/b").
COLUMNS = (("CoLA", "cola"), ("SST-2", "sst2"), ("MRPC", "mrpc"), ("STS-B", "stsb"), ("QQP", "qqp"),
           ("MNLI-m", "mnli"), ("MNLI-mm", "mnli"), ("QNLI", "qnli"), ("RTE", "rte"), ("WNLI", "wnli"))


QA_TASKS = ("squad", "squad_v2")  # extractive QA: scored by F1 on held-out questions, not a GLUE metric


def display_name(task: str) -> str:
    """How a grid's task is named in tables and file names: a task file by its ``name:``, QA and GLUE as given."""
    return task if task in QA_TASKS else get_task(task).name


def write_grid_report(results: dict, out: Path, label: str | None = None) -> list[Path]:
    """table.md and heatmap-<task>.png of a grid's results under ``out`` (the model called ``label``, by default
    ``grid_label``)."""
    atomic_write_text(Path(out) / "table.md", markdown_table(results, label or grid_label(results)))
    return [Path(out) / "table.md", *heatmaps(results, Path(out))]


def _cell_text(task: str, metrics: dict[str, float] | None, scale: float = 100.0) -> str:
    if metrics is None:
        return "–"
    spec = get_task(task)
    return "/".join(f"{scale * metrics[m]:.1f}" for m in spec.metrics)


def markdown_table(results: dict, label: str) -> str:
    """The paper's GLUE table layout (dev here), the published test row of the same size, and per-task grids."""
    cols = best_glue_columns(results["tasks"])
    head = "| Model | Score | " + " | ".join(c for c, _ in COLUMNS) + " |"
    lines = [head, "|" + "---|" * (len(COLUMNS) + 2)]

    def row(name: str, score, values: dict, scale: float) -> str:
        cells_ = []
        for col, task in COLUMNS:
            key = {"MNLI-m": "mnli-m", "MNLI-mm": "mnli-mm"}.get(col, task)
            cells_.append(_cell_text(task, values.get(key), scale))
        s = "–" if score is None else f"{score:.1f}"
        return f"| {name} | {s} | " + " | ".join(cells_) + " |"

    lines.append(row(label + " (dev)", results.get("glue_score"), cols, 100.0))
    size = _paper_size(results["model"])
    if size is not None:
        paper = PAPER_GLUE_TEST[size]
        lines.append(row(f"{size.capitalize()}, Turc et al. (test)", paper["score"], paper, 1.0))
    lines.append("")
    lines.append("Metrics: CoLA MCC; MRPC and QQP F1/accuracy; STS-B Pearson/Spearman; the others accuracy. "
                 "Score: the GLUE score, when all nine tasks were run.")
    if all(task not in QA_TASKS and get_task(task).source is not None for task in results["tasks"]):
        # task files only: no GLUE column to fill; the per-task grids below say it all
        lines = [f"{label}: dev score (%) of each cell on the task's selection metric (the mean of its metrics "
                 "when it has several, as GLUE's)."]
    for task, t in results["tasks"].items():
        lines += ["", f"### {display_name(task)}: dev score by batch size × learning rate "
                      f"({t['finished']}/{t['total']} cells finished)", ""]
        lrs = sorted({r["lr"] for r in t["cells"]}, reverse=True)
        bss = sorted({r["batch_size"] for r in t["cells"]})
        lines.append("| batch \\ lr | " + " | ".join(f"{lr:g}" for lr in lrs) + " |")
        lines.append("|" + "---|" * (len(lrs) + 1))
        by = {(r["batch_size"], r["lr"]): r for r in t["cells"]}
        for b in bss:
            vals = []
            for lr in lrs:
                r = by.get((b, lr))
                v = "–" if r is None or r["status"] != "finished" else f"{100 * r['score']:.1f}"
                if r is not None and t["best"] is not None and r is t["best"]:
                    v = f"**{v}**"
                vals.append(v)
            lines.append(f"| {b} | " + " | ".join(vals) + " |")
    return "\n".join(lines) + "\n"


def grid_label(results: dict) -> str:
    """What a grid's table calls its model, from its results.json: the model, random init, PD (+ fine-tuning)."""
    settings = results.get("settings") or {}
    text = model_label(results["model"]) + (" (random init)" if results.get("random_init") else "")
    if settings.get("objective") == "distill":
        text += ", PD" + (" + fine-tuning" if settings.get("then_finetune") else "")
    return text


def model_label(model: str) -> str:
    """A short name for a model: a run directory's name rather than its ``model/`` folder."""
    p = Path(model)
    return p.parent.name if p.name == "model" and p.parent.name else p.name


def _paper_size(model: str) -> str | None:
    name = model
    if Path(model).is_dir():  # a model directory: its size from config.json
        try:
            c = json.loads((Path(model) / "config.json").read_text(encoding="utf-8"))
            name = f"L-{c['num_hidden_layers']}_H-{c['hidden_size']}"
        except (OSError, ValueError, KeyError):
            return None
    if not zoo.is_known(name):
        return None
    m = zoo.get(name)
    return m.alias if m.alias in PAPER_GLUE_TEST else None


def heatmaps(results: dict, out: Path) -> list[Path]:
    """One PNG per task: batch size × learning rate, colour = dev score, the best cell outlined."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    for task, t in results["tasks"].items():
        lrs = sorted({r["lr"] for r in t["cells"]}, reverse=True)
        bss = sorted({r["batch_size"] for r in t["cells"]})
        grid = np.full((len(bss), len(lrs)), np.nan)
        for r in t["cells"]:
            if r["status"] == "finished":
                grid[bss.index(r["batch_size"]), lrs.index(r["lr"])] = 100 * r["score"]
        fig, ax = plt.subplots(figsize=(1.2 * len(lrs) + 2, 0.6 * len(bss) + 1.6))
        im = ax.imshow(grid, cmap="viridis", aspect="auto")
        ax.set_xticks(range(len(lrs)), [f"{lr:g}" for lr in lrs])
        ax.set_yticks(range(len(bss)), [str(b) for b in bss])
        ax.set_xlabel("learning rate")
        ax.set_ylabel("batch size")
        metrics = "F1 (held-out questions)" if task in QA_TASKS else "/".join(get_task(task).metrics)
        name = display_name(task)
        source = model_label(results["model"]) + (", random init" if results.get("random_init") else "")
        ax.set_title(f"{name} dev {metrics} ({source})")
        for i in range(len(bss)):
            for j in range(len(lrs)):
                if not np.isnan(grid[i, j]):
                    ax.text(j, i, f"{grid[i, j]:.1f}", ha="center", va="center",
                            color="white" if grid[i, j] < np.nanmean(grid) else "black", fontsize=9)
        if t["best"] is not None:
            i, j = bss.index(t["best"]["batch_size"]), lrs.index(t["best"]["lr"])
            ax.add_patch(plt.Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, edgecolor="red", linewidth=2))
        fig.colorbar(im, ax=ax)
        fig.tight_layout()
        written.append(save_png(fig, out / f"heatmap-{name}.png"))
        plt.close(fig)
    return written
