"""The paper's fine-tuning grid: every (batch size, learning rate) cell, best on dev, per task.

``run_grid`` fine-tunes one model on each task with every cell of the grid (Turc et al.: batch
8, 16, 32, 64, 128 × learning rate 3e-4, 1e-4, 5e-5, 3e-5, 4 epochs), each cell a ``wellread
finetune`` run directory ``GRID/<task>/bs<B>_lr<LR>``. Cells run side by side in worker processes
(each with its share of the CPU threads), or as trials of a Ray Tune job with ``ray=ADDRESS``.
A finished cell is never run again (its ``results.json`` is read back), and an unfinished one
resumes from its checkpoint, so a killed grid is resumed by re-running the same command.

A cell's score is its dev metric after the last epoch, as the paper (and Google's run_classifier)
evaluates: the task's GLUE metric, two-metric tasks averaged (MRPC F1/acc, STS-B Pearson/Spearman),
MNLI the mean of matched and mismatched. The best cell per task is the one with the highest score.

Outputs: ``GRID/results.json`` (every cell) and ``GRID/best.json`` (task → best model, readable by
``wellread predict-glue``); the ``grid`` command and the recipe then draw ``GRID/table.md`` (the paper's
GLUE table layout plus a batch × rate table per task) and ``GRID/heatmap-<task>.png`` from the results
(``wellread.report.grid_tables``).
"""

from __future__ import annotations

import dataclasses
import json
import multiprocessing as mp
import os
import shutil
import sys
import time
import traceback
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Literal

import torch
from tqdm import tqdm

from wellread.config import carry, configclass, field, group, same, to_dict
from wellread.data.batching import Inputs
from wellread.data.own_task import task_ref
from wellread.data.squad import is_qa_task
from wellread.data.tasks import get_task
from wellread.errors import WellreadError
from wellread.eval.metrics import best_glue_columns, cell_score, glue_score
from wellread.io import atomic_write_json
from wellread.train import distill, finetune
from wellread.train.distill import DistillConfig, PDSettings, check_stage3, prepare_labels
from wellread.train.finetune import FinetuneConfig, RandomInit, build_tokenizer, load_labelled
from wellread.train.loop import TrainConfig
from wellread.train.qa import qa_data
from wellread.train.qa_distill import prepare_qa_labels
from wellread.train.run import remove_temporaries

PAPER_BATCH_SIZES = (8, 16, 32, 64, 128)
PAPER_LEARNING_RATES = (3e-4, 1e-4, 5e-5, 3e-5)


@configclass
class GridSpace:
    """The paper's grid: every batch size × learning rate, each cell trained for the same epochs (the ``grid``
    group of grid and recipe)."""

    batch_sizes: list[int] = field(default_factory=lambda: list(PAPER_BATCH_SIZES), ge=1, min_items=1,
                                   help="batch sizes of the grid (the paper's: 8,16,32,64,128)")
    learning_rates: list[float] = field(default_factory=lambda: list(PAPER_LEARNING_RATES), gt=0, min_items=1,
                                        help="learning rates of the grid (the paper's: 3e-4,1e-4,5e-5,3e-5)")
    epochs: float = same(TrainConfig, "epochs", 4.0, help="epochs per cell (the paper: 4)")


@configclass
class GridConfig:
    model: str = same(FinetuneConfig, "model")
    tasks: list[str] = field(min_items=1, help="GLUE tasks, e.g. rte,stsb,cola,sst2, and/or task files (tickets.yaml); "
                             "or squad / squad_v2 (extractive QA: without the official train file, the by-article "
                             "split of finetune --task squad)")
    data_dir: Path | None = same(FinetuneConfig, "data_dir")
    out: Path = field(help="the grid directory: a run directory per cell, results.json, best.json, table.md, PNGs")
    grid: GridSpace = group(GridSpace, help="the cells: batch sizes × learning rates, and their epochs")
    inputs: Inputs = group(Inputs, help="how inputs are cut (--max-length)")
    warmup: float = same(TrainConfig, "warmup")
    init: RandomInit = group(RandomInit, help="a random start of every cell (--random-init, --vocab)")
    seed: int = same(TrainConfig, "seed", help="seed of every cell (init of the head, data order, dropout)")
    workers: int | None = field(None, ge=1, help="cells run side by side (default: the CPU count divided by --threads)")
    threads: int = same(TrainConfig, "threads", 1, help="CPU threads per worker (each cell's --threads)")
    keep_models: Literal["best", "all", "none"] = field("best", help="best (delete other cells' models once a task "
                                                                     "is done), all, or none")
    ray: str | None = field(None, help="run the cells as Ray Tune trials on this cluster: an address, 'auto', or "
                                       "'local' to start one here; GRID must be on storage every node sees")
    max_steps: int | None = same(TrainConfig, "max_steps", help="stop each cell after this many steps (for a quick "
                                                                "look; not the paper)")
    objective: Literal["finetune", "distill"] = field("finetune", help="finetune (labelled data), or distill: "
                                                      "Pre-trained Distillation from --teacher, the teacher's labels "
                                                      "computed once and shared by every cell")
    teacher: list[str] = field(default_factory=list, help="with --objective distill: the teacher directory, or "
                                                          "TASK=DIR,... per task")
    pd: PDSettings = group(PDSettings, help="with --objective distill: the transfer set and the loss")
    then_finetune: bool = same(DistillConfig, "then_finetune", help="with --objective distill: fine-tune each "
                               "distilled cell on the labels too (the cell's score is then the fine-tuned one)")
    finetune_lr: float | None = same(DistillConfig, "finetune_lr", help="with --then-finetune: stage 3's peak "
                                     "learning rate in every cell (default: the cell's)")
    distill_epochs: float | None = same(TrainConfig, "epochs", help="with --objective distill: passes over the "
                                        "transfer set (default: --epochs; stage 3 always takes --epochs)")
    quiet: bool = same(TrainConfig, "quiet")

    def __post_init__(self) -> None:
        # a built-in task by its name, a task file by its absolute path (workers may run elsewhere)
        self.task_list = [_task_ref(t) for t in self.tasks]
        for t in self.task_list:
            if not is_qa_task(t) and get_task(t).evaluate_with is not None:
                raise WellreadError(f"{t} is evaluation-only; it has no grid", field="tasks")
        if self.objective == "distill":
            for t in self.task_list:
                self.teacher_for(t)  # refuses a missing teacher now, not in a worker
        elif self.teacher or self.pd.transfer or self.pd.augment or self.then_finetune:
            raise WellreadError("--teacher, --transfer, --augment and --then-finetune need --objective distill",
                                field="objective")
        check_stage3(self)

    def teacher_for(self, task: str) -> str:
        """The teacher of ``task``: the one --teacher, or its entry in TASK=DIR,..."""
        if not self.teacher:
            raise WellreadError("--objective distill needs --teacher DIR (or TASK=DIR,...)", field="teacher")
        if len(self.teacher) == 1 and "=" not in self.teacher[0]:
            return self.teacher[0]
        pairs = {}
        for part in self.teacher:
            name, sep, path = part.partition("=")
            if not sep or not path:
                raise WellreadError(f"expected TASK=DIR, not {part!r}", field="teacher")
            pairs[_task_name(name)] = path.strip()
        task = _task_name(task)
        if task not in pairs:
            raise WellreadError(f"no teacher given for {task}", field="teacher")
        return pairs[task]


def _task_name(text: str) -> str:
    """A GLUE task's canonical name, or squad / squad_v2 (extractive QA, scored by F1 on held-out questions)."""
    return text.strip() if is_qa_task(text.strip()) else get_task(text.strip()).name


def _task_ref(text: str) -> str:
    """What a cell passes as ``--task``: a built-in name, a task file's absolute path, or squad / squad_v2."""
    return text.strip() if is_qa_task(text.strip()) else task_ref(get_task(text.strip()))


@dataclasses.dataclass(frozen=True)
class Cell:
    task: str
    batch_size: int
    lr: float

    @property
    def name(self) -> str:
        return f"bs{self.batch_size}_lr{self.lr:g}"

    @property
    def task_name(self) -> str:
        return _task_name(self.task)

    def run_dir(self, grid: Path) -> Path:
        return grid / self.task_name / self.name


def cells(cfg: GridConfig) -> list[Cell]:
    """Every cell, the slowest (smallest batch) first so that side-by-side workers finish together."""
    return [Cell(t, b, lr) for t in cfg.task_list for b in sorted(cfg.grid.batch_sizes) for lr in cfg.grid.learning_rates]


def finetune_config(cfg: GridConfig, cell: Cell):
    """The run config of a cell: a ``FinetuneConfig``, or a ``DistillConfig`` with --objective distill; every
    setting the grid shares with it by name, and the cell's own."""
    cell_settings = dict(task=cell.task, out=cell.run_dir(cfg.out), lr=cell.lr, batch_size=cell.batch_size, quiet=True)
    if cfg.objective == "distill":
        return carry(DistillConfig, cfg, **cell_settings, teacher=cfg.teacher_for(cell.task), student=cfg.model,
                     epochs=cfg.distill_epochs or cfg.grid.epochs, finetune_epochs=cfg.grid.epochs)
    return carry(FinetuneConfig, cfg, **cell_settings)


def _read_results(run_dir: Path) -> dict | None:
    try:
        data = json.loads((run_dir / "results.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and data.get("finished") else None


def cell_finished(cfg: GridConfig, cell: Cell) -> bool:
    """True when the cell's run directory holds results of exactly these settings."""
    done = _read_results(cell.run_dir(cfg.out))
    return done is not None and done.get("settings") == _run_module(cfg).run_settings(finetune_config(cfg, cell))


def _run_module(cfg: GridConfig):
    if cfg.objective == "distill":
        return distill
    return finetune


def run_cell(cfg_dict: dict, cell: tuple[str, int, float]) -> dict:
    """Fine-tune one cell (in a worker process); returns a small record, never raises."""
    cfg = GridConfig(**cfg_dict)
    c = Cell(*cell)
    log_dir = Path(cfg.out) / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    with open(log_dir / f"{c.task_name}-{c.name}.log", "a", encoding="utf-8") as log:
        stdout, stderr = sys.stdout, sys.stderr
        sys.stdout = sys.stderr = log
        try:
            torch.set_num_threads(cfg.threads)
            module = _run_module(cfg)
            (module.distill if cfg.objective == "distill" else module.finetune)(finetune_config(cfg, c))
            return {"cell": list(cell), "ok": True, "seconds": time.perf_counter() - t0}
        except Exception as e:  # one failed cell (e.g. a diverging learning rate) must not stop the grid
            traceback.print_exc(file=log)
            return {"cell": list(cell), "ok": False, "error": str(e) or type(e).__name__,
                    "seconds": time.perf_counter() - t0}
        finally:
            sys.stdout, sys.stderr = stdout, stderr


def _config_dict(cfg: GridConfig) -> dict:
    """The settings for a worker, with paths made absolute (workers may run elsewhere)."""
    out = to_dict(cfg)
    for k in ("data_dir", "out", "vocab"):
        if out[k] is not None:
            out[k] = str(Path(out[k]).resolve())
    if Path(cfg.model).is_dir():
        out["model"] = str(Path(cfg.model).resolve())
    out["transfer"] = [str(Path(p).resolve()) for p in cfg.pd.transfer]
    out["teacher"] = [f"{name}{sep}{Path(path).resolve() if Path(path).is_dir() else path}"
                      for name, sep, path in (part.rpartition("=") for part in cfg.teacher)]
    return out


def _run_local(cfg: GridConfig, todo: Sequence[Cell], workers: int) -> Iterator[dict]:
    args = _config_dict(cfg)
    if workers <= 1:
        for c in todo:
            yield run_cell(args, (c.task, c.batch_size, c.lr))
        return

    with ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn")) as pool:
        futures = [pool.submit(run_cell, args, (c.task, c.batch_size, c.lr)) for c in todo]
        for f in as_completed(futures):
            yield f.result()


def _run_ray(cfg: GridConfig, todo: Sequence[Cell], workers: int) -> Iterator[dict]:
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    try:
        import ray
        from ray import tune
    except ImportError:
        raise WellreadError("--ray needs Ray Tune: pip install 'ray[tune]'", field="ray") from None
    args = _config_dict(cfg)
    if not ray.is_initialized():
        ray.init(address=None if cfg.ray == "local" else cfg.ray, num_cpus=os.cpu_count() if cfg.ray == "local" else None,
                 include_dashboard=False, log_to_driver=False)

    def trainable(config: dict) -> None:
        rec = run_cell(args, tuple(config["cell"]))
        tune.report({"ok": int(rec["ok"]), "seconds": rec["seconds"]} | ({} if rec["ok"] else {"error": rec["error"]}))

    space = {"cell": tune.grid_search([[c.task, c.batch_size, c.lr] for c in todo])}
    tuner = tune.Tuner(
        tune.with_resources(trainable, {"cpu": cfg.threads}),
        param_space=space,
        tune_config=tune.TuneConfig(max_concurrent_trials=workers),
        run_config=tune.RunConfig(name="ray", storage_path=str(Path(cfg.out).resolve()), verbose=0),
    )
    for r in tuner.fit():
        cell = list(r.config["cell"])
        if r.error is not None or not r.metrics:
            yield {"cell": cell, "ok": False, "error": str(r.error or "no result reported").splitlines()[0]}
        else:
            yield {"cell": cell, "ok": bool(r.metrics["ok"]), "error": r.metrics.get("error") or None,
                   "seconds": r.metrics.get("seconds")}


def collect(cfg: GridConfig) -> dict:
    """results.json's content from the cells' run directories."""
    tasks: dict[str, dict] = {}
    for task in cfg.task_list:
        rows = []
        for c in cells(cfg):
            if c.task != task:
                continue
            res = _read_results(c.run_dir(cfg.out)) if cell_finished(cfg, c) else None
            row = {"batch_size": c.batch_size, "lr": c.lr, "run": str(c.run_dir(cfg.out).relative_to(cfg.out))}
            if res is None:
                row["status"] = "missing"
            else:
                row |= {"status": "finished", "score": cell_score(task, res["dev"]), "dev": res["dev"],
                        "best_epoch": res.get("best_epoch"), "train_seconds": res.get("train_seconds"),
                        "examples_per_s": res.get("train_examples_per_s")}
            rows.append(row)
        done = [r for r in rows if r["status"] == "finished"]
        best = max(done, key=lambda r: r["score"]) if done else None
        tasks[task] = {"cells": rows, "best": best, "finished": len(done), "total": len(rows)}
    out = {"model": cfg.model, "random_init": cfg.init.random_init, "settings": to_dict(cfg) | {"quiet": None},
           "tasks": tasks}
    per_task = best_glue_columns(tasks)
    try:
        out["glue_score"] = 100 * glue_score(per_task)
    except WellreadError:
        out["glue_score"] = None  # not all nine tasks were run
    return out


def _prune_models(cfg: GridConfig, results: dict) -> None:
    if cfg.keep_models == "all":
        return
    for t in results["tasks"].values():
        if t["finished"] < t["total"]:
            continue  # the best may still change
        for r in t["cells"]:
            if r["status"] != "finished":
                continue
            run = Path(cfg.out) / r["run"]
            for sub in (run, run / "finetune"):  # a distillation cell's stage 3 is a run of its own
                (sub / "checkpoint.pt").unlink(missing_ok=True)  # done: results.json + model suffice
                if cfg.keep_models == "none" or r is not t["best"]:
                    shutil.rmtree(sub / "model", ignore_errors=True)


def _prepare(cfg: GridConfig) -> dict:
    """Read and cache every task's data once, before the workers start (and fail fast on bad input).

    With --objective distill the teacher labels each task's transfer set here, once: every cell then
    reads the cached logits. Returns what the teacher labelling cost, per task.
    """
    tok = build_tokenizer(cfg.model, cfg.init)
    labelling = {}
    for task in cfg.task_list:
        if is_qa_task(task):  # read and check the SQuAD file once (the windows are cheap to remake per cell)

            qa_data(finetune_config(cfg, Cell(task, cfg.grid.batch_sizes[0], cfg.grid.learning_rates[0])), task, quiet=cfg.quiet)
        else:
            spec = get_task(task)
            for split in ("train", *spec.dev_splits):
                load_labelled(spec, cfg.data_dir, split, tok, cfg.inputs.max_length)
        if cfg.objective == "distill" and is_qa_task(task):
            c = finetune_config(cfg, Cell(task, cfg.grid.batch_sizes[0], cfg.grid.learning_rates[0]))
            c.quiet = cfg.quiet
            labelling[task] = prepare_qa_labels(c)
        elif cfg.objective == "distill":
            c = finetune_config(cfg, Cell(task, cfg.grid.batch_sizes[0], cfg.grid.learning_rates[0]))
            c.quiet = cfg.quiet
            lab = prepare_labels(c)
            labelling[task] = {"cache": str(lab.cache), "examples": len(lab.logits), "seconds": lab.seconds,
                               "shards_computed": lab.computed_shards, "shards_reused": lab.reused_shards}
    return labelling


GRID_FILES = frozenset({"results.json", "best.json", "table.md"})


def run_grid(cfg: GridConfig) -> dict:
    """Run every unfinished cell, then write results.json and best.json; returns the results (the table and
    heatmaps are ``wellread.report.grid_tables``'s, ``check_complete`` refuses a task without a finished cell)."""
    cfg = GridConfig(**_config_dict(cfg))  # absolute paths, as the workers see them (and record them)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    remove_temporaries(out, lambda name: name in GRID_FILES or name.endswith(".png"))  # of a killed grid
    labelling = _prepare(cfg)
    todo = [c for c in cells(cfg) if not cell_finished(cfg, c)]
    total = len(cells(cfg))
    workers = cfg.workers or max(1, (os.cpu_count() or 1) // cfg.threads)
    workers = min(workers, max(1, len(todo)))
    if len(todo) < total:
        print(f"wellread grid: {total - len(todo)} of {total} cells already finished in {out}", file=sys.stderr)
    t0 = time.perf_counter()
    failures = []
    if todo:
        runner = _run_ray if cfg.ray else _run_local
        with tqdm(total=len(todo), desc="grid cells", unit="cell", disable=cfg.quiet, file=sys.stderr) as bar:
            for rec in runner(cfg, todo, workers):
                bar.update(1)
                if not rec.get("ok"):
                    failures.append(rec)
                    task, b, lr = rec["cell"]
                    tqdm.write(f"cell {task} bs{b}_lr{lr:g} failed: {rec.get('error')} "
                               f"(log: {out / 'logs' / f'{task}-bs{b}_lr{lr:g}.log'})", file=sys.stderr)
    results = collect(cfg)
    results["wall_seconds_this_run"] = time.perf_counter() - t0
    results["workers"], results["threads_per_worker"] = workers, cfg.threads
    results["failures"] = failures
    if labelling:
        results["teacher_labelling"] = labelling
    atomic_write_json(out / "results.json", results)
    final = "/finetune/model" if cfg.objective == "distill" and cfg.then_finetune else "/model"
    best = {task: {"model": t["best"]["run"] + final, "batch_size": t["best"]["batch_size"], "lr": t["best"]["lr"],
                   "score": t["best"]["score"], "dev": t["best"]["dev"]}
            for task, t in results["tasks"].items() if t["best"] is not None}
    atomic_write_json(out / "best.json", best)
    _prune_models(cfg, results)
    return results


def check_complete(results: dict, out: Path) -> None:
    """Refuse a grid in which some task has no finished cell."""
    missing = [t for t, v in results["tasks"].items() if v["best"] is None]
    if missing:
        raise WellreadError(f"no cell finished for {', '.join(missing)}; see {Path(out) / 'logs'}", file=out)


__all__ = ["GridConfig", "GridSpace", "Cell", "cells", "run_grid", "collect", "check_complete",
           "PAPER_BATCH_SIZES", "PAPER_LEARNING_RATES"]
