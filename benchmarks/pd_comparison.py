"""The paper's Pre-trained Distillation comparison, on real data, over several seeds.

For each task and seed, with the same (small) grid of batch sizes and learning rates for every
method, best cell on dev:
  (a) fine-tune a randomly initialised student;
  (b) fine-tune the pre-trained student;
  (c) distil the teacher into the pre-trained student (PD);
  (d) PD, then fine-tune on the labelled data;
and the teacher's own dev score. (c) and (d) come from the same runs: a ``--then-finetune`` grid
records the distilled student's dev score before stage 3 (``distill_dev``) and after it (``dev``).
The teacher labels each task's transfer set once; every cell and seed reads the cache.

    python benchmarks/pd_comparison.py --student /tmp/exp/pt30/model \\
        --teacher stsb=/tmp/pd/teacher-stsb/model --teacher sst2=/tmp/pd/teacher-sst2/model \\
        --data-dir ../shared/data/glue --out /tmp/pd/compare --seeds 1,2,3

A task file (docs/own-task.md) works as a task: ``--tasks examples/tasks/emotion.yaml --teacher
examples/tasks/emotion.yaml=DIR``; its grid and distillation settings come from ``--batch-sizes``,
``--learning-rates``, ``--augment``, ``--pd-epochs``, ``--temperature`` (defaults: TASK_FILE_DEFAULTS);
``--transfer FILE`` adds unlabelled text to (c) and (d)'s transfer set (as ``wellread distill --transfer``).
``--arms a`` runs only some methods (e.g. (a) before a pre-trained student exists; a later run with
every arm reuses the finished cells). ``--test`` also scores each method's best model on the task's
labelled test split (the teacher: ``evaluate-test.json`` beside its model, from ``wellread evaluate
--split test``).

Prints a Markdown table (mean and per-seed) and writes OUT/comparison-TASKS-seedsS.json. Re-running skips
finished cells (each cell is an ordinary wellread run directory).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

from wellread.data.tasks import get_task
from wellread.eval.metrics import cell_score, task_score
from wellread.train.grid import GridConfig, run_grid

DEFAULTS = {  # task -> grid and distillation settings (see docs/distillation.md for why)
    "stsb": {"batch_sizes": "32", "learning_rates": "3e-4,1e-4", "augment": 2, "pd_epochs": 4},
    "sst2": {"batch_sizes": "32", "learning_rates": "1e-4", "augment": 1, "pd_epochs": 2},
}
TASK_FILE_DEFAULTS = {"batch_sizes": "32", "learning_rates": "1e-4,3e-4", "augment": 1, "pd_epochs": 4,
                      "temperature": 1.0}


def _best(results: dict, task: str, key: str = "dev") -> tuple[float, dict, Path]:
    """The best cell's score, dev metrics and model directory, reading ``key`` ('dev', or 'distill_dev' for
    PD before stage 3; its model is the cell's model/, PD + fine-tuning's finetune/model)."""
    cells = []
    for c in results["tasks"][task]["cells"]:
        if c["status"] != "finished":
            continue
        run = Path(results["settings"]["out"]) / c["run"]
        r = json.loads((run / "results.json").read_text(encoding="utf-8"))
        dev = r[key]
        model = run / "model" if key == "distill_dev" or not (run / "finetune" / "model").is_dir() \
            else run / "finetune" / "model"
        cells.append((cell_score(task, dev), {k: v for k, v in dev.items() if "/" in k}, model))
    return max(cells, key=lambda x: x[0])


def _test(task: str, data_dir: str, model: Path) -> dict | None:
    """The model's metrics on the task's labelled test split (None: no such split)."""
    from wellread.eval.glue import evaluate_model

    spec = get_task(task)
    if "test" not in spec.splits or spec.splits["test"][1].label is None:
        return None
    m = evaluate_model(model, task, data_dir, "test")["splits"]["test"]
    return {k: v for k, v in m.items() if isinstance(v, float)} | {"score": task_score(spec, m)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--student", default=None, help="the pre-trained student (model directory; needed for b, c, d)")
    p.add_argument("--random-model", default="tiny", help="the miniature (a) starts from, randomly initialised")
    p.add_argument("--teacher", action="append", default=[], help="TASK=DIR (repeat per task; needed for c, d)")
    p.add_argument("--data-dir", required=True)
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--tasks", default="stsb,sst2")
    p.add_argument("--seeds", default="1,2,3")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--max-steps", type=int, default=None, help="cap every run (a quick look, not a result)")
    p.add_argument("--arms", default="a,b,c,d", help="which methods to run (c and d come from the same runs)")
    p.add_argument("--test", action="store_true", help="also score each best model on the labelled test split")
    p.add_argument("--batch-sizes", default=None)
    p.add_argument("--learning-rates", default=None)
    p.add_argument("--augment", type=int, default=None)
    p.add_argument("--pd-epochs", type=float, default=None)
    p.add_argument("--temperature", type=float, default=None)
    p.add_argument("--transfer", action="append", default=[], type=Path,
                   help="unlabelled text added to (c)/(d)'s transfer set (repeatable; as `wellread distill --transfer`)")
    p.add_argument("--threads", type=int, default=1, help="torch threads of this process (evaluation)")
    args = p.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    teachers = dict(t.split("=", 1) for t in args.teacher)
    arms = args.arms.split(",")
    seeds = [int(s) for s in args.seeds.split(",")]
    table: dict = {}
    t_start = time.perf_counter()
    for task in args.tasks.split(","):
        d = dict(DEFAULTS.get(task, TASK_FILE_DEFAULTS))
        d.setdefault("temperature", 1.0)
        for k in ("batch_sizes", "learning_rates", "augment", "pd_epochs", "temperature"):
            if getattr(args, k) is not None:
                d[k] = getattr(args, k)
        if args.transfer:
            d["transfer"] = [str(t.resolve()) for t in args.transfer]
        name = get_task(task).name
        common = dict(tasks=task, data_dir=Path(args.data_dir), batch_sizes=d["batch_sizes"],
                      learning_rates=d["learning_rates"], workers=args.workers, threads=1, keep_models="best",
                      max_steps=args.max_steps, quiet=True)
        teacher_dev = json.loads((Path(teachers[task]).parent / "results.json").read_text(encoding="utf-8"))["dev"] \
            if task in teachers else None
        rows: dict[str, list] = {k: [] for k in ("a", "b", "c", "d") if k in arms}
        tests: dict[str, list] = {k: [] for k in rows}
        labelling = None
        for seed in seeds:
            base = args.out / name / f"seed{seed}"
            t0 = time.perf_counter()
            got = {}
            if "a" in arms:
                ra = run_grid(GridConfig(model=args.random_model, random_init=True, out=base / "a-random", seed=seed,
                                         **common))
                got["a"] = _best(ra, task)
            if "b" in arms:
                rb = run_grid(GridConfig(model=args.student, out=base / "b-pretrained", seed=seed, **common))
                got["b"] = _best(rb, task)
            if "c" in arms or "d" in arms:
                rd = run_grid(GridConfig(model=args.student, out=base / "cd-pd", seed=seed, objective="distill",
                                         teacher=teachers[task], augment=d["augment"], transfer=args.transfer,
                                         then_finetune=True,
                                         distill_epochs=d["pd_epochs"], temperature=d["temperature"],
                                         **common | {"keep_models": "all"}))
                labelling = labelling or rd.get("teacher_labelling", {}).get(task)
                got["c"] = _best(rd, task, "distill_dev")
                got["d"] = _best(rd, task)
            for k in rows:
                rows[k].append(got[k])
                tests[k].append(_test(task, args.data_dir, got[k][2]) if args.test else None)
            print(f"{name} seed {seed}: " + ", ".join(f"({k}) {100 * v[-1][0]:.1f}" for k, v in rows.items())
                  + f" [{time.perf_counter() - t0:.0f} s]", file=sys.stderr)
        spec = get_task(task)
        table[task] = {"name": name, "rows": {k: [{"score": s, "dev": dev, "model": str(model), "test": t}
                                                  for (s, dev, model), t in zip(v, tests[k])] for k, v in rows.items()},
                       "settings": d, "teacher_labelling": labelling, "teacher": None}
        if teacher_dev is None:
            continue
        spec_metrics = [k for k in teacher_dev if "/" in k]
        teacher_score = task_score(spec, {m: teacher_dev[f"{spec.dev_splits[0]}/{m}"] for m in spec.metrics})
        teacher_test_file = Path(teachers[task]).parent / "evaluate-test.json"
        teacher_test = None
        if teacher_test_file.is_file():
            m = json.loads(teacher_test_file.read_text(encoding="utf-8"))["splits"]["test"]
            teacher_test = {k: v for k, v in m.items() if isinstance(v, float)} | {"score": task_score(spec, m)}
        table[task]["teacher"] = {"score": teacher_score, "dev": {k: teacher_dev[k] for k in spec_metrics},
                                  "test": teacher_test, "model": str(teachers[task])}
        if "d" in rows or "c" in rows:
            table[task]["gap_closed"] = _gap_closed(table[task])
    names = {"a": "(a) fine-tune, random init", "b": "(b) fine-tune the pre-trained student",
             "c": "(c) PD (distil into the pre-trained student)", "d": "(d) PD, then fine-tune"}
    names = {k: v for k, v in names.items() if k in arms}
    tasks = list(table)
    print("| method | " + " | ".join(f"{table[t]['name']} mean ± sd (seeds: " + ", ".join(map(str, seeds)) + ")" for t in tasks) + " |")
    print("|---|" + "---|" * len(tasks))
    for k, name in names.items():
        cells = []
        for t in tasks:
            v = [100 * r["score"] for r in table[t]["rows"][k]]
            sd = statistics.stdev(v) if len(v) > 1 else 0.0
            cells.append(f"{statistics.mean(v):.1f} ± {sd:.1f} ({', '.join(f'{x:.1f}' for x in v)})")
        print(f"| {name} | " + " | ".join(cells) + " |")
    print("| teacher (all-MiniLM-L6-v2 fine-tuned) | " + " | ".join(
        f"{100 * table[t]['teacher']['score']:.1f}" if table[t]["teacher"] else "-" for t in tasks) + " |")
    for t in tasks:
        if "gap_closed" in table[t]:
            print(f"{table[t]['name']}: share of the gap (fine-tuning alone -> teacher) that PD closes, on dev: "
                  + ", ".join(f"{k} {v:.2f}" for k, v in table[t]["gap_closed"].items()))
    out = {"tasks": table, "seeds": seeds, "student": args.student, "wall_seconds": time.perf_counter() - t_start}
    args.out.mkdir(parents=True, exist_ok=True)
    name = f"comparison-{'-'.join(table[t]['name'] for t in tasks)}-seeds{'-'.join(map(str, seeds))}.json"
    (args.out / name).write_text(json.dumps(out, indent=2) + "\n", encoding="utf-8")
    return 0


def _gap_closed(t: dict) -> dict[str, float]:
    """(PD - fine-tuning alone) / (teacher - fine-tuning alone), on the mean dev scores, for each pair present."""
    mean = {k: statistics.mean(r["score"] for r in v) for k, v in t["rows"].items()}
    out = {}
    for pd in ("c", "d"):
        for ft in ("a", "b"):
            if pd in mean and ft in mean and t["teacher"]["score"] != mean[ft]:
                out[f"{pd} vs {ft}"] = (mean[pd] - mean[ft]) / (t["teacher"]["score"] - mean[ft])
    return out


if __name__ == "__main__":
    sys.exit(main())
