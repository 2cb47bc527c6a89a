"""The recipe's stages, in order, each a run directory under OUT, and ``run_recipe``."""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import torch

from wellread import tokenization
from wellread.config import to_dict
from wellread.data.corpus import build_corpus
from wellread.data.task_files import read_split
from wellread.data.tasks import get_task
from wellread.eval.glue import evaluate_model
from wellread.eval.metrics import cell_score
from wellread.io import atomic_write_json, atomic_write_text
from wellread.recipe import budget as B
from wellread.recipe.config import ARMS, RecipeConfig, config_yaml, short_plan_choices
from wellread.recipe.runner import StageRunner, log
from wellread.recipe.sources import Sources, find_sources, sample_glue, text_bytes
from wellread.report import write_report
from wellread.report.collect import distill_grids
from wellread.report.grid_tables import write_grid_report
from wellread.report.plots import draw_curves
from wellread.tokenization import load_tokenizer, vocab_hash
from wellread.train.finetune import RandomInit
from wellread.train.grid import GridConfig, GridSpace, check_complete, run_grid
from wellread.train.loop import config_fingerprint
from wellread.train.pretrain import PretrainConfig, pretrain

PLAN = "plan.json"
MANIFEST = "recipe.json"


def planned_grid(plan: B.Plan) -> GridSpace:
    """The fine-tuning grid as the budget left it."""
    return GridSpace(batch_sizes=plan.batch_sizes, learning_rates=plan.learning_rates, epochs=plan.epochs)


def write_if_changed(path: Path, text: str) -> None:
    """Write ``text`` atomically unless the file already holds it (a skipped re-run touches nothing)."""
    try:
        if path.read_text(encoding="utf-8") == text:
            return
    except OSError:
        pass
    atomic_write_text(path, text)


class Recipe:
    """One run of the recipe: the config, the plan, and the stages' outputs as they come."""

    def __init__(self, cfg: RecipeConfig) -> None:
        self.cfg = cfg
        self.out = Path(cfg.out).resolve()  # settings hold absolute paths, as the grid records them
        self.stage = StageRunner(self.out)
        self.workers = cfg.workers or min(8, os.cpu_count() or 1)
        self.runs: list[dict] = []  # what the report reads: kind, arm, student, seed, task, path
        self.plan: B.Plan | None = None
        self.arms = list(cfg.arms)

    # --- planning ---------------------------------------------------------------------------------

    def sizes(self, glue: Path) -> dict[str, tuple[int, int]]:
        out = {}
        for t in self.cfg.tasks:
            spec = get_task(t)
            out[t] = (len(read_split(spec, glue, "train").examples),
                      sum(len(read_split(spec, glue, s).examples) for s in spec.dev_splits))
        return out

    def work(self, src: Sources, sizes: dict) -> B.Work:
        c = self.cfg
        return B.Work(tasks=sizes, batch_sizes=c.grid.batch_sizes, learning_rates=c.grid.learning_rates,
                      core_cell=(c.core_batch_size, c.core_lr), epochs=c.grid.epochs, teacher_epochs=c.teacher_epochs,
                      seeds=len(c.seeds), students=len(c.students), arms=tuple(self.arms), augment=c.pd.augment,
                      text_bytes=text_bytes(src.text), train_vocab=c.vocab == "train",
                      pretrain=c.pretrains and bool(src.text), workers=self.workers,
                      max_train_examples=c.max_train_examples,
                      pretrain_overhead=self.pretrain_overhead)

    @property
    def pretrain_overhead(self) -> float:
        """Pre-training's wall time beyond its training time, as a share (its held-out evaluations, checkpoints)."""
        return B.pretrain_overhead_share(self.cfg.pretrain_batch_size, self.cfg.pretrain_eval_every)

    def saved_plan(self, **inputs) -> tuple[str, B.Plan | None]:
        """The plan's key (the settings, ``inputs`` and the workers) and the plan OUT/plan.json holds under it."""
        key = config_fingerprint({"config": to_dict(self.cfg) | {"out": None, "quiet": None, "print_config": None,
                                                                 "started_at": None},
                                  **inputs, "workers": self.workers})
        try:
            saved = json.loads((self.out / PLAN).read_text(encoding="utf-8"))
            if saved.get("key") == key:
                return key, B.Plan.from_dict(saved["plan"])
        except (OSError, ValueError, TypeError):
            pass
        return key, None

    def make_plan(self, src: Sources, sizes: dict, spent_s: float) -> B.Plan:
        """The budget's plan; the one in OUT/plan.json when the settings and data are the same."""
        c = self.cfg
        key, saved = self.saved_plan(sizes=sizes, glue=str(src.glue), text=[str(p) for p in src.text],
                                     teacher=str(src.teacher))
        if saved is not None:
            return saved
        budget = c.budget_s
        rates = B.Rates.table()
        before_s = max(0.0, time.time() - c.started_at - spent_s) if c.started_at and budget is not None else 0.0
        if before_s:
            log(f"{before_s:.0f} s passed before the recipe began (installing): counted against the budget")
            spent_s += before_s
        if budget is not None and c.calibrate:
            t0 = time.perf_counter()
            log("measuring this machine's speed on each task (seconds; --no-calibrate uses a table)")
            rates = B.calibrate(c.students[0], src.teacher if c.distils and c.teacher_epochs else None, c.tasks,
                                src.glue, vocab=self.vocab_for_calibration(),
                                text=src.text if c.pretrains else [])
            spent_s += time.perf_counter() - t0
            log(f"measured in {time.perf_counter() - t0:.0f} s; planning the {(budget - spent_s) / 60:.1f} min left")
        plan = B.plan_budget(self.work(src, sizes), budget, rates, pretrain_share=c.pretrain_share,
                             pretrain_steps=c.pretrain_steps, spent_s=spent_s)
        if before_s:
            plan.notes.append(f"of which {before_s:.0f} s passed before the recipe began (`make run` installing)")
        atomic_write_json(self.out / PLAN, {"key": key, "plan": plan.to_dict()})
        return plan

    def vocab_for_calibration(self) -> Path | None:
        v = self.cfg.vocab
        return None if v in ("standard", "train") else Path(v)

    # --- stages -----------------------------------------------------------------------------------

    def data(self, src: Sources, plan: B.Plan, name: str = "data", sizes: dict[str, int] | None = None) -> Path:
        """GLUE as it is, or a seeded sample of the training sets the budget cut (the teacher's: ``data-teacher``)."""
        sizes = sizes or plan.train_examples
        if all(sizes[t] >= plan.full_examples[t] for t in self.cfg.tasks):
            return src.glue
        out = self.out / name
        self.stage(name, {"glue": str(src.glue), "train_examples": sizes, "seed": 0},
                   lambda: {"glue": str(sample_glue(src.glue, out, sizes))}, dirs=[out])
        return out

    def vocab(self, src: Sources) -> Path:
        v = self.cfg.vocab
        if v == "standard":
            return tokenization.STANDARD_VOCAB
        if v != "train":
            return Path(v)  # checked by find_sources
        out = self.out / "vocab"

        def run() -> dict:
            tok = tokenization.train_vocab(src.text, self.cfg.vocab_size, show_progress=not self.cfg.quiet)
            tokenization.save_vocab(tok, out)
            return {"size": tok.get_vocab_size(), "hash": tokenization.vocab_hash(tok)}

        self.stage("vocab", {"text": [[str(p), p.stat().st_size] for p in src.text], "size": self.cfg.vocab_size},
                   run, dirs=[out])
        return out

    def corpus(self, src: Sources, vocab: Path, plan: B.Plan) -> Path:

        out = self.out / "corpus"

        def run() -> dict:
            m = build_corpus(src.text, vocab, out, workers=self.workers, group_lines=self.cfg.group_lines,
                             show_progress=not self.cfg.quiet)
            return {k: m.totals[k] for k in ("tokens", "sentences", "documents")} | {"shards": len(m.shards)}

        settings = {"text": [[str(p), p.stat().st_size] for p in src.text], "vocab": vocab_hash(load_tokenizer(vocab)),
                    "group_lines": self.cfg.group_lines}
        self.stage("corpus", settings, run, dirs=[out], after=["vocab"], estimate_s=plan.estimate_s.get("corpus"))
        return out

    def pretrain(self, student: str, corpus: Path, vocab: Path, plan: B.Plan) -> Path:
        c = self.cfg
        out = self.out / f"pretrain-{student}"
        per_student = None if plan.pretrain_s is None else plan.pretrain_s / len(c.students)
        pc = PretrainConfig(**{k.removeprefix("pretrain_"): v for k, v in to_dict(c).items()
                               if k.startswith("pretrain_") and k not in ("pretrain_share", "pretrain_steps")},
                            model=student, data=corpus, out=out, vocab=vocab, seed=0,
                            max_steps=c.pretrain_steps if per_student is None else None,
                            time_budget=None if per_student is None else f"{per_student:.0f}s",
                            aids=c.aids, threads=c.threads, bf16=c.bf16, quiet=c.quiet)

        def run() -> dict:
            r = pretrain(pc)
            draw_curves(out, r)
            return {"steps": r["steps"], "tokens": r["tokens"], "eval": r["eval"], "train_seconds": r["train_seconds"]}

        settings = to_dict(pc) | {"quiet": None, "threads": None, "out": None}
        self.stage(f"pretrain-{student}", settings, run, dirs=[out], after=["corpus"],
                   estimate_s=None if per_student is None else B.pretrain_wall_s(
                       per_student, 1, self.pretrain_overhead))
        self.runs.append({"kind": "pretrain", "student": student, "path": out.name})
        return out / "model"

    def grid_stage(self, name: str, gc, *, after: list[str], estimate_s: float | None, after_run=None) -> dict:
        """A ``wellread grid`` as a stage: OUT/<name>/ (results.json, best.json, table.md, heatmaps)."""

        def run() -> dict:
            r = run_grid(gc)
            write_grid_report(r, Path(gc.out))
            check_complete(r, Path(gc.out))
            if after_run is not None:
                after_run(r)
            return {t: {k: v["best"][k] for k in ("batch_size", "lr", "score")} for t, v in r["tasks"].items()}

        settings = to_dict(gc) | {"quiet": None, "workers": None, "out": None}
        return self.stage(name, settings, run, dirs=[Path(gc.out)], after=after, estimate_s=estimate_s)

    def teachers(self, src: Sources, plan: B.Plan) -> dict[str, Path]:
        """The teacher fine-tuned on each task (a one-cell grid: the tasks side by side)."""
        c = self.cfg
        if c.teacher_epochs == 0:
            return {t: src.teacher for t in c.tasks}
        teacher_sizes = plan.teacher_examples or plan.train_examples
        glue = self.glue if teacher_sizes == plan.train_examples else \
            self.data(src, plan, "data-teacher", teacher_sizes)
        out = self.out / "teacher"
        gc = GridConfig(model=str(src.teacher), tasks=c.tasks, data_dir=glue, out=out,
                        grid=GridSpace(batch_sizes=[c.teacher_batch_size], learning_rates=[c.teacher_lr],
                                       epochs=plan.teacher_epochs),
                        inputs=c.inputs, seed=0, workers=self.workers,
                        threads=B.threads_per_job(len(c.tasks), self.workers), keep_models="best", quiet=True)
        self.grid_stage("teacher", gc, after=["data", "data-teacher"], estimate_s=plan.estimate_s.get("teacher"))
        self.runs.append({"kind": "grid", "arm": "teacher", "path": out.name})
        best = json.loads((out / "best.json").read_text(encoding="utf-8"))
        return {t: out / best[t]["model"] for t in c.tasks}

    def grid(self, arm: str, student: str, model: str | Path, seed: int, glue: Path, vocab: Path, plan: B.Plan,
             after: list[str]) -> None:
        """The paper's grid (as the budget left it) for one arm: random init, pre-trained or published."""
        c = self.cfg
        name = f"grid-{arm}-{student}-s{seed}"
        gc = GridConfig(model=str(model), tasks=c.tasks, data_dir=glue, out=self.out / name, grid=planned_grid(plan),
                        inputs=c.inputs, init=RandomInit(random_init=True, vocab=vocab) if arm == "random" else RandomInit(),
                        seed=seed, workers=self.workers,
                        threads=B.threads_per_job(len(c.tasks) * plan.cells, self.workers), keep_models="best",
                        quiet=True)
        self.grid_stage(name, gc, after=after,
                        estimate_s=plan.estimate_s.get(f"grid-{arm}", 0) / (len(c.seeds) * len(c.students)))
        self.runs.append({"kind": "grid", "arm": arm, "student": student, "seed": seed, "path": name})

    def distill(self, student: str, model: Path, seed: int, glue: Path, teachers: dict[str, Path], plan: B.Plan,
                after: list[str]) -> None:
        """Pre-trained Distillation over the grid (the teacher labels each task once), then fine-tuning."""
        c = self.cfg
        name = f"distill-{student}-s{seed}"
        out = self.out / name
        gc = GridConfig(model=str(model), tasks=c.tasks, data_dir=glue, out=out, grid=planned_grid(plan), inputs=c.inputs,
                        seed=seed, workers=self.workers, keep_models="all", objective="distill",
                        threads=B.threads_per_job(len(c.tasks) * plan.cells, self.workers),
                        teacher=[f"{t}={p}" for t, p in teachers.items()], pd=c.pd,
                        then_finetune="pd+ft" in self.arms,
                        finetune_lr=c.finetune_lr if "pd+ft" in self.arms else None, quiet=True)
        self.grid_stage(name, gc, after=after, after_run=lambda r: prune_distill(out, r),
                        estimate_s=plan.estimate_s.get("distill", 0) / (len(c.seeds) * len(c.students)))
        self.runs.append({"kind": "grid", "arm": "pd", "student": student, "seed": seed, "path": name})

    def evaluate(self, glue: Path, after: list[str]) -> Path:
        """Every arm's best model (and each teacher) re-scored on the dev sets by ``wellread evaluate``."""
        out = self.out / "evaluate"
        models = evaluation_targets(self.out, self.runs)

        def run() -> dict:

            torch.set_num_threads(self.cfg.threads or os.cpu_count() or 1)  # a one-worker grid leaves it at 1
            rows = []
            for m in models:
                r = evaluate_model(self.out / m["model"], m["task"], glue, max_length=self.cfg.inputs.max_length)
                dev = {f"{s}/{k}": v for s, metrics in r["splits"].items() for k, v in metrics.items()
                       if isinstance(v, float)}
                rows.append(m | {"dev": dev, "score": cell_score(m["task"], dev)})
            atomic_write_json(out / "results.json", {"data_dir": str(glue), "rows": rows})
            return {"models": len(rows)}

        self.stage("evaluate", {"models": models, "glue": str(glue)}, run, dirs=[out], after=after,
                   estimate_s=self.plan.estimate_s.get("evaluate"))
        return out

    # --- the whole recipe ---------------------------------------------------------------------------

    def run(self) -> dict:
        c = self.cfg
        t0 = time.perf_counter()
        self.out.mkdir(parents=True, exist_ok=True)
        src = find_sources(c)
        if src.published and src.text and "published" not in self.arms:
            self.arms.append("published")
        if not src.text and "published" in self.arms:  # no text: the published weights are the pre-trained student
            self.arms.remove("published")
        sizes = self.sizes(src.glue)
        plan = self.plan = self.make_plan(src, sizes, time.perf_counter() - t0)
        write_if_changed(self.out / "recipe.yaml", config_yaml(c))
        for line in plan.notes:
            log(line)
        for line in plan.cuts:
            log(f"cut to fit the budget: {line}")
        glue = self.glue = self.data(src, plan)
        students: dict[str, Path] = dict(src.published)
        pre_after: dict[str, list[str]] = {s: [] for s in c.students}
        if c.pretrains and src.text:
            vocab = self.vocab(src)
            corpus = self.corpus(src, vocab, plan)
            for s in c.students:
                students[s] = self.pretrain(s, corpus, vocab, plan)
                pre_after[s] = [f"pretrain-{s}"]
        else:
            vocab = self.vocab(src)
        teachers = self.teachers(src, plan) if c.distils else {}
        all_stages: list[str] = []
        for seed in c.seeds:
            for s in c.students:
                for arm in ("random", "pretrained", "published"):
                    if arm not in self.arms:
                        continue
                    model = s if arm == "random" else students[s] if arm == "pretrained" else src.published[s]
                    self.grid(arm, s, model, seed, glue, vocab, plan, ["data", "vocab"] + pre_after[s])
                    all_stages.append(f"grid-{arm}-{s}-s{seed}")
                if c.distils:
                    self.distill(s, students[s], seed, glue, teachers, plan, ["data", "teacher"] + pre_after[s])
                    all_stages.append(f"distill-{s}-s{seed}")
        self.evaluate(src.glue, all_stages + (["teacher"] if c.distils else []))
        manifest = {"config": to_dict(c), "plan": plan.to_dict(), "runs": self.runs,
                    "short_plan": short_plan_choices(to_dict(c)),
                    "sources": {"glue": str(src.glue), "text": [str(p) for p in src.text],
                                "teacher": None if src.teacher is None else str(src.teacher),
                                "teacher_name": c.teacher, "published": {k: str(v) for k, v in src.published.items()}},
                    "workers": self.workers}
        write_if_changed(self.out / MANIFEST, json.dumps(manifest, indent=2, ensure_ascii=False) + "\n")

        def report() -> dict:
            paths = write_report([self.out], self.out / "report")
            return {"files": [str(p.relative_to(self.out)) for p in paths]}

        self.stage("report", {"runs": self.runs}, report, dirs=[self.out / "report"],
                   after=list(self.stage.fingerprints))
        elapsed = time.perf_counter() - t0
        budget = "" if plan.budget_s is None else f" (budget {plan.budget_s / 60:.0f} min)"
        log(f"{len(self.stage.ran)} stage(s) run, {len(self.stage.skipped)} skipped; {elapsed / 60:.1f} min{budget}")
        return manifest | {"ran": self.stage.ran, "skipped": self.stage.skipped, "elapsed_s": elapsed}


def prune_distill(out: Path, results: dict) -> None:
    """Keep the best cells' models (PD alone, and PD + fine-tune); drop the other models and checkpoints."""
    keep = {Path(t["best"]["run"]) / sub for arm, g in distill_grids(out, results)
            for t in g["tasks"].values() if t["best"] is not None
            for sub in (["model"] if arm == "pd" else ["finetune/model"])}
    for t in results["tasks"].values():
        for r in t["cells"]:
            for sub in ("", "finetune"):
                run = out / r["run"] / sub
                (run / "checkpoint.pt").unlink(missing_ok=True)
                if Path(r["run"]) / sub / "model" not in keep:
                    shutil.rmtree(run / "model", ignore_errors=True)


def evaluation_targets(root: Path, runs: list[dict]) -> list[dict]:
    """(arm, student, seed, task, model directory relative to ``root``) of every arm's best model."""
    targets = []
    for r in runs:
        if r["kind"] != "grid":
            continue
        results = json.loads((root / r["path"] / "results.json").read_text(encoding="utf-8"))
        for arm, g in distill_grids(root / r["path"], results):
            sub = "finetune/model" if arm == "pd+ft" else "model"
            for task, t in g["tasks"].items():
                if t["best"] is not None:
                    targets.append({"arm": arm or r["arm"], "student": r.get("student"), "seed": r.get("seed"),
                                    "task": task, "model": f"{r['path']}/{t['best']['run']}/{sub}",
                                    "cell": [t["best"]["batch_size"], t["best"]["lr"]],
                                    "train_score": t["best"]["score"]})
    return targets


def format_summary(result: dict) -> str:
    """The recipe's outcome in a few lines: each arm's mean dev score per task, and the report."""
    root = Path(result["config"]["out"])
    rows = json.loads((root / "evaluate" / "results.json").read_text(encoding="utf-8"))["rows"]
    tasks = result["config"]["tasks"]
    arms = [a for a in ("random", "pretrained", "published", "pd", "pd+ft", "teacher") if any(r["arm"] == a for r in rows)]
    width = max(len(ARMS.get(a, "teacher")) for a in arms) if arms else 10
    lines = [f"{'dev score (x100)':<{width}}  " + "  ".join(f"{t:>7}" for t in tasks)]
    for a in arms:
        cells = []
        for t in tasks:
            vals = [r["score"] for r in rows if r["arm"] == a and r["task"] == t]
            cells.append(f"{100 * sum(vals) / len(vals):7.1f}" if vals else f"{'-':>7}")
        lines.append(f"{ARMS.get(a, 'teacher'):<{width}}  " + "  ".join(cells))
    lines.append(f"report: {root / 'report' / 'report.md'} (and report.html)")
    return "\n".join(lines)


def run_recipe(cfg: RecipeConfig) -> dict:
    """Run (or resume, or skip) every stage, then write the report; returns OUT/recipe.json's content
    plus which stages ran and which were skipped."""
    return Recipe(cfg).run()


__all__ = ["Recipe", "run_recipe", "format_summary", "evaluation_targets", "prune_distill"]
