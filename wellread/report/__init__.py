"""``wellread report``: run directories in, ``report.md`` and ``report.html`` (with PNGs) out.

The report a researcher wants from a recipe (or from any pre-training, fine-tuning, distillation or
grid runs): the paper-style GLUE table, our dev numbers beside the published ones for the same model
size; the Pre-trained Distillation comparison (random init, pre-trained, PD, PD + fine-tune, the
teacher); learning curves; grid heatmaps; what the time budget cut; timings; the environment. The
HTML page is self-contained apart from the PNGs beside it (relative paths).
"""

from __future__ import annotations

import json
import math
import os
import platform
import re
import shutil
import statistics
import subprocess
import time
from collections import defaultdict
from importlib.metadata import version as v
from pathlib import Path

import wellread
from wellread import env
from wellread.data.tasks import get_task
from wellread.eval.metrics import OLM_GLUE_DEV, PAPER_GLUE_TEST, task_score
from wellread.io import atomic_write_text
from wellread.report.collect import ARM_ORDER, Collection, Score, collect, distill_grids, sort_key
from wellread.report.figures import plot_comparison, plot_curves
from wellread.report.grid_tables import display_name, heatmaps
from wellread.report.html import markdown_to_html
from wellread.report.plots import plot_pretraining

COLUMNS = (("CoLA", "cola", 0), ("SST-2", "sst2", 0), ("MRPC", "mrpc", 0), ("STS-B", "stsb", 0), ("QQP", "qqp", 0),
           ("MNLI-m", "mnli", 0), ("MNLI-mm", "mnli", 1), ("QNLI", "qnli", 0), ("RTE", "rte", 0), ("WNLI", "wnli", 0))
METRIC_NOTE = ("Metrics: CoLA MCC; MRPC and QQP F1/accuracy; STS-B Pearson/Spearman; the others accuracy; "
               "×100. Ours are dev scores of the best cell of the grid (mean over seeds); *mean* is the mean of the "
               "task scores in the columns shown (two-metric tasks averaged), not the GLUE score, which needs all "
               "nine tasks.")


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:60] or "run"


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "–"
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.1f} min"


def _fmt(x: float | None, digits: int = 1) -> str:
    return "–" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"


def _mean_dev(scores: list[Score]) -> dict[str, float]:
    keys = set.intersection(*(set(s.dev) for s in scores)) if scores else set()
    return {k: statistics.fmean(s.dev[k] for s in scores) for k in keys if isinstance(scores[0].dev[k], (int, float))}


def _rows(col: Collection) -> dict[str, dict[str, list[Score]]]:
    """Row label -> task -> the scores (one per seed), rows in the arms' order."""
    rows: dict[str, dict[str, list[Score]]] = defaultdict(lambda: defaultdict(list))
    for s in sorted(col.scores, key=sort_key):
        rows[s.label][s.task].append(s)
    return rows


# --- the paper-style GLUE table -----------------------------------------------------------------------

def _column_values(task: str, which: int, metrics: dict[str, float], scale: float) -> str:
    spec = get_task(task)
    split = spec.dev_splits[min(which, len(spec.dev_splits) - 1)]
    vals = [metrics.get(f"{split}/{m}", metrics.get(m)) for m in spec.metrics]
    if any(v is None for v in vals):
        return "–"
    return "/".join(f"{scale * v:.1f}" for v in vals)


def glue_table(col: Collection) -> str:
    tasks = {s.task for s in col.scores}
    cols = [c for c in COLUMNS if c[1] in tasks]
    if not cols:
        return ""
    lines = ["## GLUE: our dev scores beside the published ones", "",
             "| model | " + " | ".join(c[0] for c in cols) + " | mean |", "|" + "---|" * (len(cols) + 2)]
    for label, by_task in _rows(col).items():
        cells, task_scores = [], []
        for _, task, which in cols:
            scores = by_task.get(task)
            if not scores:
                cells.append("–")
                continue
            cells.append(_column_values(task, which, _mean_dev(scores), 100.0))
            if which == 0:
                task_scores.append(100 * statistics.fmean(s.score for s in scores))
        mean = statistics.fmean(task_scores) if len(task_scores) == len({t for _, t, _ in cols}) else None
        lines.append(f"| {label} (dev) | " + " | ".join(cells) + f" | {_fmt(mean)} |")
    for size in col.students:
        refs = []
        if size in PAPER_GLUE_TEST:
            refs.append((f"{size.capitalize()}, Turc et al. 2019 (GLUE **test**)", PAPER_GLUE_TEST[size]))
        olm = OLM_GLUE_DEV.get(f"original {size}")
        if olm is not None:
            refs.append((f"{size.capitalize()}, Google's weights fine-tuned (GLUE dev; OLM project)", olm))
        for name, ref in refs:
            cells, task_scores = [], []
            for _, task, which in cols:
                key = {("mnli", 0): "mnli-m", ("mnli", 1): "mnli-mm"}.get((task, which), task)
                metrics = ref.get(key) or {}
                cells.append(_column_values(task, 0, metrics, 1.0) if task != "mnli" else
                             _fmt(metrics.get("accuracy")))
                try:
                    if which == 0:
                        task_scores.append(task_score(task, metrics))
                except Exception:  # a metric the source does not give (e.g. OLM's QQP)
                    pass
            mean = statistics.fmean(task_scores) if len(task_scores) == len({t for _, t, _ in cols}) else None
            lines.append(f"| {name} | " + " | ".join(cells) + f" | {_fmt(mean)} |")
    lines += ["", METRIC_NOTE + " Published rows: ../shared/REFERENCE.md (`wellread.eval.metrics`)."]
    return "\n".join(lines) + "\n"


# --- the Pre-trained Distillation comparison -------------------------------------------------------------

def pd_section(col: Collection, out: Path, figures: list[Path]) -> str:
    armed = [s for s in col.scores if s.arm in ARM_ORDER]
    tasks = sorted({s.task for s in armed}, key=lambda t: [c[1] for c in COLUMNS].index(t)
                   if t in [c[1] for c in COLUMNS] else 99)
    if not armed or len({s.arm for s in armed}) < 2:
        return ""
    rows = _rows(Collection(scores=armed))
    lines = ["## Pre-trained Distillation against its parts", "",
             "Dev score (×100) of the best cell of the grid; mean ± standard deviation over seeds, with the best cell "
             "(batch size, learning rate) when there is one seed.", "",
             "| | " + " | ".join(tasks) + " |", "|" + "---|" * (len(tasks) + 1)]
    bars: dict[str, list[tuple[str, float, float]]] = {t: [] for t in tasks}
    means: dict[tuple[str, str], float] = {}
    arm_of = {}
    for label, by_task in rows.items():
        cells = []
        for t in tasks:
            scores = by_task.get(t) or []
            if not scores:
                cells.append("–")
                continue
            vals = [100 * s.score for s in scores]
            mean = statistics.fmean(vals)
            sd = statistics.stdev(vals) if len(vals) > 1 else 0.0
            means[(scores[0].arm, t)] = mean
            arm_of[label] = scores[0].arm
            bars[t].append((label, mean, sd))
            extra = f" ± {sd:.1f} (n={len(vals)})" if len(vals) > 1 else \
                (f" (bs {scores[0].cell[0]}, lr {scores[0].cell[1]:g})" if scores[0].cell else "")
            cells.append(f"{mean:.1f}{extra}")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    fig = plot_comparison(bars, out / "pd-comparison.png")
    figures.append(fig)
    lines += ["", f"![the arms side by side]({fig.name})", ""]
    findings = []
    for a, b, what in (("pretrained", "random", "pre-training (pre-trained + fine-tuned − random init)"),
                       ("pd", "pretrained", "distillation alone (PD − pre-trained + fine-tuned)"),
                       ("pd+ft", "pretrained", "PD + fine-tuning − pre-trained + fine-tuned"),
                       ("teacher", "pd+ft", "the teacher's lead over PD + fine-tuning")):
        diffs = [f"{t} {means[(a, t)] - means[(b, t)]:+.1f}" for t in tasks if (a, t) in means and (b, t) in means]
        if diffs:
            findings.append(f"- {what}: " + ", ".join(diffs) + " points")
    if findings:
        lines += ["What the differences say (points of dev score; the paper found pre-training the student "
                  "matters, and PD on top of it beats either alone):", "", *findings]
    return "\n".join(lines) + "\n"


# --- learning curves ------------------------------------------------------------------------------------

def curves_section(col: Collection, out: Path, figures: list[Path]) -> str:

    lines = ["## Learning curves", ""]
    pre = [r for r in col.runs if r.kind == "pretrain" and (r.path / "metrics.jsonl").is_file()]
    if pre:
        fig = plot_pretraining([r.path for r in pre], out / "pretraining.png", labels=[r.label for r in pre])
        figures.append(fig)
        lines += ["### Pre-training", "", "| run | objective | steps | tokens | held-out MLM accuracy | NSP accuracy | "
                  "tokens/s | training time |", "|---|---|---|---|---|---|---|---|"]
        for r in pre:
            res, ev = r.results, r.results.get("eval", {})
            nsp = ev.get("eval/nsp_accuracy")
            lines.append(f"| {r.label} | {res.get('objective')} | {res.get('steps', 0):,} | {res.get('tokens', 0):,} | "
                         f"{_fmt(100 * ev['eval/mlm_accuracy'] if 'eval/mlm_accuracy' in ev else None)}% | "
                         f"{_fmt(None if nsp is None else 100 * nsp)} | {res.get('tokens_per_s', 0):,.0f} | "
                         f"{_duration(res.get('train_seconds', 0))} |")
        lines += ["", f"![pre-training curves]({fig.name})", ""]
    first_seed: dict[tuple[str, str], Score] = {}
    for s in sorted(col.scores, key=sort_key):
        if s.run is not None and (s.label, s.task) not in first_seed:
            first_seed[(s.label, s.task)] = s
    for task in sorted({t for _, t in first_seed}):
        runs = [(label, s.run) for (label, t), s in first_seed.items() if t == task]
        name = display_name(task)  # a task file's runs are keyed by its path
        fig = plot_curves(task, runs, out / f"curves-{name}.png")
        if fig is not None:
            figures.append(fig)
            lines += [f"### Fine-tuning and distillation: {name}", "", f"![{name} curves]({fig.name})", ""]
    return "\n".join(lines) + "\n" if len(lines) > 2 else ""


# --- grids --------------------------------------------------------------------------------------------

def grids_section(col: Collection, out: Path, figures: list[Path]) -> str:
    lines = ["## Grids", ""]
    for r in col.runs:
        if r.kind != "grid":
            continue
        grids = [(r.label + {"pd": " (PD)", "pd+ft": " (PD + fine-tune)"}.get(arm or "", ""), g)
                 for arm, g in distill_grids(r.path, r.results)]
        if r.seed is not None:
            grids = [(f"{label}, seed {r.seed}", g) for label, g in grids]
        for label, g in grids:
            cells = {len(t["cells"]) for t in g["tasks"].values()}
            best = "; ".join(f"{task} bs {t['best']['batch_size']}, lr {t['best']['lr']:g}: {100 * t['best']['score']:.1f}"
                             for task, t in g["tasks"].items() if t.get("best"))
            lines += [f"### {label}", "", f"`{r.path.name}`: {max(cells)} cell(s) per task; best: {best or 'none'}.", ""]
            if max(cells) < 2:
                continue
            sub = out / _slug(label)
            sub.mkdir(parents=True, exist_ok=True)
            for fig in heatmaps({"model": _slug(label), "random_init": r.results.get("random_init", False),
                                 "tasks": g["tasks"]}, sub):
                figures.append(fig)
                lines.append(f"![{label}: {fig.stem}]({sub.name}/{fig.name})")
            lines.append("")
    return "\n".join(lines) + "\n" if len(lines) > 2 else ""


# --- the recipe: plan, cuts, timings -------------------------------------------------------------------------

def shown_source(path: str | None, root: str) -> str:
    """Where an input came from, in words that hold on any machine: a path inside the recipe directory
    relative to it, an installed package or the download cache by name, any other folder by its last two
    parts (never this machine's absolute path)."""
    if not path:
        return "none"
    p, r = Path(path), Path(root)
    if p == r or r in p.parents:
        return f"`{p.relative_to(r)}` in the recipe directory"
    parts = p.parts
    if "site-packages" in parts:
        return f"the installed package `{parts[parts.index('site-packages') + 1]}`"
    if "wellread" in parts and any(x in (".cache", "cache") for x in parts):
        return f"the download cache (`{p.name}`)"
    return f"`{Path(*parts[-2:]) if len(parts) > 1 else p.name}`"


def teacher_name(rec: dict) -> str:
    """The teacher as the user named it; a directory by its last part."""
    name = str(rec.get("sources", {}).get("teacher_name") or rec["config"]["teacher"])
    return name if name.startswith("hub:") or os.sep not in name else Path(name).name


def recipe_header(rec: dict) -> str:
    c, plan = rec["config"], rec["plan"]
    src = rec.get("sources", {})
    stages = rec.get("stages", {})
    total = sum(s.get("seconds", 0.0) for n, s in stages.items() if s.get("status") == "finished" and n != "report")
    budget = plan.get("budget_s")
    lines = [f"Recipe `{Path(rec['root']).name}/` (settings: `recipe.yaml`): students {', '.join(c['students'])}; teacher "
             f"{teacher_name(rec)}; tasks {', '.join(c['tasks'])}; seeds "
             f"{', '.join(map(str, c['seeds']))}. "
             + (f"Time budget {_duration(budget)}; the stages took {_duration(total)}"
                + (f", after {plan['spent_s']:.0f} s finding the data and measuring the machine." if plan.get("spent_s")
                   else ".") if budget else
                f"No time budget; the stages took {_duration(total)}."), "",
             "### What ran", "",
             f"- data: GLUE from {shown_source(src.get('glue'), rec['root'])}; pre-training text: "
             + (", ".join(f"`{Path(p).name}`" for p in src.get("text", [])) or "none"),
             f"- vocabulary: {c['vocab']}" + (f" ({c['vocab_size']:,} tokens)" if c["vocab"] == "train" else ""),
             f"- pre-training: {c['pretrain_objective']}, {c['pretrain_masking']} masking, batch "
             f"{c['pretrain_batch_size']}, lr {c['pretrain_lr']:g}, "
             + (f"{plan['pretrain_s'] / 60:.1f} min" if plan.get("pretrain_s") else f"{c['pretrain_steps']:,} steps"),
             f"- teacher: {teacher_name(rec)} ({shown_source(src.get('teacher'), rec['root'])}), fine-tuned "
             f"{plan['teacher_epochs']:g} epoch(s) at lr {c['teacher_lr']:g}, batch {c['teacher_batch_size']}",
             f"- distillation: transfer set = each task's training inputs (+{c['augment']} derived per example"
             + (f", + {len(c['transfer'])} text file(s)" if c.get("transfer") else "")
             + f"), temperature {c['temperature']:g}, α {c['alpha']:g}"
             + (f"; PD + fine-tune fine-tunes at lr {c['finetune_lr']:g}"
                if c.get("finetune_lr") and "pd+ft" in c.get("arms", ()) else ""),
             f"- fine-tuning grid: batch {', '.join(map(str, plan['batch_sizes']))} × lr "
             f"{', '.join(f'{x:g}' for x in plan['learning_rates'])}, {plan['epochs']:g} epoch(s), max length "
             f"{c['max_length']}",
             f"- processes: {rec.get('workers', 1)} side by side, one thread each (pre-training and evaluation: "
             f"{c.get('threads') or 'all'} thread(s))",
             "- training examples per task: " + ", ".join(
                 f"{t} {n:,}" + (f" of {plan['full_examples'][t]:,}" if n < plan["full_examples"][t] else "")
                 + (f" (the teacher: {plan['teacher_examples'][t]:,})"
                    if plan.get("teacher_examples", {}).get(t, n) < n else "")
                 for t, n in plan["train_examples"].items()), ""]
    lines += ["### What the time budget cut", ""]
    short = rec.get("short_plan") or []
    if short:
        lines += ["The short plan (for a budget of minutes; `--no-short-plan` runs the paper's settings instead) "
                  "chose:", ""] + [f"- {x}" for x in short] + ["", "Then the budget cut:", ""]
    if budget:
        lines += [f"- {x}" for x in plan.get("cuts", [])] or ["- nothing: everything fits"]
    else:
        lines += ["- nothing: no time budget, the settings as given"]
    lines += [f"- {x}" for x in plan.get("notes", [])]
    if budget:
        measured = plan.get("rates", {}).get("source") == "calibrated"
        origin = "measured on this machine before planning (times RUN_GAIN, wellread/recipe/budget.py)" if measured else "the table in wellread/recipe/budget.py"
        lines += ["", f"Rates ({origin}; examples/s, one thread): " + "; ".join(
                      f"{kind.replace('_', ' ')} " + ", ".join(f"{t} {v:,.0f}" for t, v in plan["rates"][kind].items()
                                                             if t in c["tasks"])
                      for kind in ("student_train", "teacher_train", "teacher_infer")), ""]
    return "\n".join(lines) + "\n"


def timings_section(col: Collection) -> str:
    lines = ["## Timings", ""]
    for rec in col.recipes:
        stages = sorted(rec.get("stages", {}).values(), key=lambda s: s.get("started", 0))
        lines += ["| stage | planned | took | took / planned | status | attempts |", "|---|---|---|---|---|---|"]
        planned_total = 0.0
        for s in stages:
            if s.get("name") == "report":
                continue
            est, took = s.get("estimate_s"), s.get("seconds")
            ratio = f"{took / est:.2f}" if est and took is not None and s.get("attempts", 1) == 1 else "–"
            planned_total += est or 0.0
            lines.append(f"| {s.get('name')} | {_duration(est)} | {_duration(took)} | {ratio} | "
                         f"{s.get('status')} | {s.get('attempts', 1)} |")
        total = sum(s.get("seconds", 0.0) for s in stages if s.get("name") != "report")
        budget = rec["plan"].get("budget_s")
        lines += ["", f"Stages together: {_duration(total)}" + (f" of a {_duration(budget)} budget" if budget else "")
                  + (f"; planned {_duration(planned_total)} ({total / planned_total:.2f} of it)." if planned_total
                     else "."), ""]
    lines += ["| run | kind | training time | throughput |", "|---|---|---|---|"]
    for r in col.runs:
        res = r.results
        if r.kind == "pretrain":
            lines.append(f"| {r.path.name} | pre-training | {_duration(res.get('train_seconds', 0))} | "
                         f"{res.get('tokens_per_s', 0):,.0f} tokens/s |")
        elif r.kind in ("finetune", "distill"):
            lines.append(f"| {r.path.name} | {r.kind} | {_duration(res.get('train_seconds', 0))} | "
                         f"{res.get('train_examples_per_s', 0):,.0f} examples/s |")
        elif r.kind == "grid":
            cells = [c for t in res["tasks"].values() for c in t["cells"] if c.get("status") == "finished"]
            secs = sum(c.get("train_seconds") or 0.0 for c in cells)
            lines.append(f"| {r.path.name} | grid ({len(cells)} runs) | {_duration(secs)} (summed over runs) | – |")
    return "\n".join(lines) + "\n"


def environment_section() -> str:
    def version(mod: str) -> str:
        try:
            return v(mod)
        except Exception:
            return "not installed"

    repo = Path(wellread.__file__).resolve().parents[1]
    commit = "unknown"
    if (repo / ".git").exists() and shutil.which("git"):
        try:
            commit = subprocess.run(["git", "-C", str(repo), "describe", "--always", "--dirty"], capture_output=True,
                                    text=True, timeout=10).stdout.strip() or "unknown"
        except (OSError, subprocess.SubprocessError):
            pass
    import torch

    lines = ["## Environment", "", f"- written {time.strftime('%Y-%m-%d %H:%M %Z')} by wellread {wellread.__version__} "
             f"(commit {commit})",
             f"- Python {platform.python_version()} on {platform.platform()}; {platform.processor() or platform.machine()}, "
             f"{os.cpu_count()} CPU(s); torch {torch.__version__}"
             f"{' (CUDA: ' + torch.cuda.get_device_name(0) + ')' if torch.cuda.is_available() else ' (no GPU)'}",
             f"- transformers {version('transformers')}, tokenizers {version('tokenizers')}, numpy {version('numpy')}",
             "", "`wellread env` on the machine that wrote this report:", "", "```",
             env.describe(), "```"]
    return "\n".join(lines) + "\n"


# --- the report -------------------------------------------------------------------------------------------

def write_report(paths: list[str | Path], out: str | Path, *, title: str | None = None) -> list[Path]:
    """Write ``out/report.md``, ``out/report.html`` and their PNGs; returns the files written."""
    col = collect(paths)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    figures: list[Path] = []
    title = title or ("The compact-BERT recipe (Turc et al. 2019): report" if col.recipes else "wellread report")
    parts = [f"# {title}\n"]
    for rec in col.recipes:
        parts.append(recipe_header(rec))
    if not col.recipes:
        parts.append("Runs: " + ", ".join(f"`{r.path}` ({r.kind})" for r in col.runs) + "\n")
    parts += [glue_table(col), pd_section(col, out, figures), curves_section(col, out, figures),
              grids_section(col, out, figures), timings_section(col), environment_section()]
    md = "\n".join(p for p in parts if p)
    atomic_write_text(out / "report.md", md)
    atomic_write_text(out / "report.html", markdown_to_html(md, title))
    atomic_write_text(out / "report.json", json.dumps({"scores": [
        {"label": s.label, "arm": s.arm, "student": s.student, "seed": s.seed, "task": s.task, "score": s.score,
         "dev": s.dev, "cell": s.cell} for s in col.scores]}, indent=2) + "\n")
    return [out / "report.md", out / "report.html", out / "report.json", *figures]


__all__ = ["write_report", "collect", "glue_table", "markdown_to_html"]
