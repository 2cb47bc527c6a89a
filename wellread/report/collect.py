"""Read run directories of every kind, by what they contain, into scores and runs for the report.

Kinds: a pre-training run (results.json with "objective" and "tokens"), a fine-tuning run ("task",
"dev"), a distillation run (also "teacher"), a grid (results.json with "tasks"; a distillation sweep
of the recipe is one too, with the PD + fine-tune cells under "finetune"), and a recipe directory
(recipe.json: its runs, its stages, its plan, and the dev scores its evaluate stage measured).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from wellread.errors import WellreadError
from wellread.eval.metrics import cell_score
from wellread.io import read_json_or_none
from wellread.modeling import zoo

ARMS = {  # arm -> what the report calls it
    "random": "fine-tuned from random init",
    "pretrained": "pre-trained + fine-tuned",
    "published": "published weights + fine-tuned",
    "pd": "pre-trained distillation (PD)",
    "pd+ft": "PD + fine-tuned",
}
ARM_ORDER = ("random", "pretrained", "published", "pd", "pd+ft", "teacher")


@dataclasses.dataclass
class Run:
    """One run directory: what it is, what to call it, and its results.json."""

    kind: str  # pretrain, finetune, distill, grid
    path: Path
    label: str
    results: dict
    arm: str | None = None
    student: str | None = None
    seed: int | None = None


@dataclasses.dataclass
class Score:
    """The dev result of one model on one task (for a grid: its best cell)."""

    label: str  # the row of the tables
    task: str
    dev: dict[str, float]  # "split/metric" -> fraction
    score: float  # the grid's selection score (the task's GLUE metric, averaged)
    run: Path | None = None  # the run directory that trained the model (for its curves)
    arm: str | None = None
    student: str | None = None
    seed: int | None = None
    cell: tuple[int, float] | None = None


@dataclasses.dataclass
class Collection:
    runs: list[Run] = dataclasses.field(default_factory=list)
    scores: list[Score] = dataclasses.field(default_factory=list)
    recipes: list[dict] = dataclasses.field(default_factory=list)  # recipe.json + "root" + "stages"
    students: list[str] = dataclasses.field(default_factory=list)  # model sizes seen (for the published rows)


def run_kind(path: Path) -> str | None:
    """pretrain, finetune, distill, grid, recipe, or None for a directory that is none of them."""
    if (path / "recipe.json").is_file():
        return "recipe"
    r = read_json_or_none(path / "results.json")
    if r is None:
        return None
    if "tasks" in r:
        return "grid"
    if "teacher" in r and "dev" in r:
        return "distill"
    if "objective" in r and "tokens" in r:
        return "pretrain"
    if "task" in r and "dev" in r:
        return "finetune"
    return None


def arm_label(arm: str, student: str | None, several_students: bool, teacher: str | None = None) -> str:
    if arm == "teacher":
        return f"teacher: {Path(teacher).name if teacher else 'the teacher'}, fine-tuned"
    text = ARMS.get(arm, arm)
    return f"{student}: {text}" if several_students and student else text


def _size_of(model: str | Path | None) -> str | None:
    """The miniature a model is (its alias, e.g. tiny), from a name or a model directory's config.json."""
    if model is None:
        return None
    name = str(model)
    p = Path(name)
    for d in (p, p / "model"):
        c = read_json_or_none(d / "config.json")
        if c is not None and "num_hidden_layers" in c:
            name = f"L-{c['num_hidden_layers']}_H-{c['hidden_size']}"
            break
    else:
        if name.startswith("random "):
            name = name.split(" ", 1)[1]
    if not zoo.is_known(name):
        return None
    m = zoo.get(name)
    return m.alias or m.name


def _score(task: str, dev: dict) -> float:
    return cell_score(task, dev)


def distill_grids(path: Path, results: dict) -> list[tuple[str | None, dict]]:
    """(arm, grid-shaped results) of a grid: (None, itself) for fine-tuning; for ``--objective distill``
    ("pd", itself), or with ``--then-finetune`` ("pd", the cells scored by their distilled-only dev
    results, read from each cell's results.json) and ("pd+ft", itself)."""
    settings = results.get("settings") or {}
    if settings.get("objective") != "distill":
        return [(None, results)]
    if not settings.get("then_finetune"):
        return [("pd", results)]
    tasks = {}
    for task, t in results["tasks"].items():
        rows = []
        for c in t["cells"]:
            r = read_json_or_none(path / c["run"] / "results.json") if c.get("status") == "finished" else None
            if r is None or "distill_dev" not in r:
                rows.append({k: v for k, v in c.items() if k not in ("score", "dev")} | {"status": "missing"})
                continue
            rows.append(c | {"score": cell_score(task, r["distill_dev"]), "dev": r["distill_dev"]})
        done = [r for r in rows if r["status"] == "finished"]
        tasks[task] = {"cells": rows, "best": max(done, key=lambda r: r["score"]) if done else None,
                       "finished": len(done), "total": len(rows)}
    return [("pd", results | {"tasks": tasks}), ("pd+ft", results)]


def _grid_scores(col: Collection, run: Run, results: dict, label: str, arm: str | None, sub: str = "") -> None:
    for task, t in results.get("tasks", {}).items():
        best = t.get("best")
        if best is None:
            continue
        col.scores.append(Score(label=label, task=task, dev=best["dev"], score=best["score"],
                                run=run.path / best["run"] / sub, arm=arm, student=run.student, seed=run.seed,
                                cell=(best["batch_size"], best["lr"])))


def add_run(col: Collection, path: Path, kind: str, label: str, *, arm: str | None = None,
            student: str | None = None, seed: int | None = None, scores: bool = True) -> Run:
    results = read_json_or_none(path / "results.json") or {}
    run = Run(kind=kind, path=path, label=label, results=results, arm=arm, student=student, seed=seed)
    col.runs.append(run)
    if arm != "teacher":
        size = _size_of(results.get("model") or student)
        if size and size not in col.students:
            col.students.append(size)
    if not scores:
        return run
    if kind == "grid":
        for sub_arm, g in distill_grids(path, results):
            suffix = {"pd": " (PD)", "pd+ft": " (PD + fine-tune)"}.get(sub_arm or "", "")
            _grid_scores(col, run, g, label + suffix, sub_arm or arm, "finetune" if sub_arm == "pd+ft" else "")
    elif kind in ("finetune", "distill"):
        task = results.get("task_file") or results["task"]  # a task file's run: its path finds the task again
        col.scores.append(Score(label=label if kind == "finetune" else f"{label} (PD)", task=task,
                                dev=results["dev"], score=_score(task, results["dev"]), run=path,
                                arm=arm or ("pd" if kind == "distill" else None), student=student, seed=seed))
        ft = read_json_or_none(path / "finetune" / "results.json")
        if kind == "distill" and ft is not None:
            ft_task = ft.get("task_file") or ft["task"]
            col.scores.append(Score(label=f"{label} (PD + fine-tune)", task=ft_task, dev=ft["dev"],
                                    score=_score(ft_task, ft["dev"]), run=path / "finetune", arm="pd+ft",
                                    student=student, seed=seed))
    return run


def add_recipe(col: Collection, root: Path) -> None:
    manifest = read_json_or_none(root / "recipe.json")
    if manifest is None:
        raise WellreadError("unreadable recipe.json", file=root / "recipe.json")
    stages = {}
    for m in sorted((root / "stages").glob("*.json")):
        rec = read_json_or_none(m)
        if rec is not None:
            stages[rec.get("name", m.stem)] = rec
    col.recipes.append(manifest | {"root": str(root), "stages": stages})
    students = manifest["config"]["students"]
    several = len(students) > 1
    teacher = manifest["config"].get("teacher")
    evaluated = read_json_or_none(root / "evaluate" / "results.json")
    for r in manifest["runs"]:
        arm = r.get("arm")
        if arm == "pd":
            label = f"distillation into the pre-trained {r.get('student')}"
        else:
            label = arm_label(arm, r.get("student"), several, teacher) if arm else f"pre-training ({r.get('student')})"
        add_run(col, root / r["path"], r["kind"].replace("distill-grid", "grid"), label, arm=arm,
                student=r.get("student"), seed=r.get("seed"), scores=evaluated is None)
    if evaluated is not None:  # the evaluate stage's scores: every best model re-scored on dev
        for row in evaluated["rows"]:
            model = root / row["model"]
            col.scores.append(Score(label=arm_label(row["arm"], row.get("student"), several, teacher),
                                    task=row["task"], dev=row["dev"], score=row["score"], run=model.parent,
                                    arm=row["arm"], student=row.get("student"), seed=row.get("seed"),
                                    cell=tuple(row["cell"]) if row.get("cell") else None))


def collect(paths: list[str | Path]) -> Collection:
    """Every run under ``paths`` (each a run directory of any kind, or a folder of them)."""
    col = Collection()
    for p in map(Path, paths):
        if not p.is_dir():
            raise WellreadError("no such directory", file=p)
        kind = run_kind(p)
        if kind == "recipe":
            add_recipe(col, p)
        elif kind is not None:
            add_run(col, p, kind, p.name)
        else:
            found = [c for c in sorted(p.iterdir()) if c.is_dir() and run_kind(c) is not None]
            if not found:
                raise WellreadError("not a run directory (no results.json of a pretrain, finetune, distill or grid "
                                    "run, no recipe.json), nor a folder of them", file=p)
            for c in found:
                k = run_kind(c)
                if k == "recipe":
                    add_recipe(col, c)
                else:
                    add_run(col, c, k, c.name)
    return col


def sort_key(s: Score) -> tuple:
    return (ARM_ORDER.index(s.arm) if s.arm in ARM_ORDER else len(ARM_ORDER), s.student or "", s.label)


__all__ = ["Run", "Score", "Collection", "collect", "run_kind", "sort_key", "distill_grids", "ARM_ORDER"]
