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

from wellread.eval.metrics import cell_score, task_score
from wellread.train.grid import GridConfig, run_grid

DEFAULTS = {  # task -> grid and distillation settings (see docs/distillation.md for why)
    "stsb": {"batch_sizes": "32", "learning_rates": "3e-4,1e-4", "augment": 2, "pd_epochs": 4},
    "sst2": {"batch_sizes": "32", "learning_rates": "1e-4", "augment": 1, "pd_epochs": 2},
}


def _best(results: dict, task: str, key: str = "dev") -> tuple[float, dict]:
    """The best cell's score and dev metrics, reading ``key`` ('dev', or 'distill_dev' for PD before stage 3)."""
    cells = []
    for c in results["tasks"][task]["cells"]:
        if c["status"] != "finished":
            continue
        run = Path(results["settings"]["out"]) / c["run"]
        r = json.loads((run / "results.json").read_text(encoding="utf-8"))
        dev = r[key]
        cells.append((cell_score(task, dev), {k: v for k, v in dev.items() if "/" in k}))
    return max(cells, key=lambda x: x[0])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--student", required=True, help="the pre-trained student (model directory)")
    p.add_argument("--random-model", default="tiny", help="the miniature (a) starts from, randomly initialised")
    p.add_argument("--teacher", action="append", required=True, help="TASK=DIR (repeat per task)")
    p.add_argument("--data-dir", required=True)
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--tasks", default="stsb,sst2")
    p.add_argument("--seeds", default="1,2,3")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--max-steps", type=int, default=None, help="cap every run (a quick look, not a result)")
    args = p.parse_args(argv)
    teachers = dict(t.split("=", 1) for t in args.teacher)
    seeds = [int(s) for s in args.seeds.split(",")]
    table: dict = {}
    t_start = time.perf_counter()
    for task in args.tasks.split(","):
        d = DEFAULTS[task]
        common = dict(tasks=task, data_dir=Path(args.data_dir), batch_sizes=d["batch_sizes"],
                      learning_rates=d["learning_rates"], workers=args.workers, threads=1, keep_models="best",
                      max_steps=args.max_steps, quiet=True)
        teacher_dev = json.loads((Path(teachers[task]).parent / "results.json").read_text(encoding="utf-8"))["dev"]
        rows: dict[str, list] = {"a": [], "b": [], "c": [], "d": []}
        labelling = None
        for seed in seeds:
            base = args.out / task / f"seed{seed}"
            t0 = time.perf_counter()
            ra = run_grid(GridConfig(model=args.random_model, random_init=True, out=base / "a-random", seed=seed, **common))
            rb = run_grid(GridConfig(model=args.student, out=base / "b-pretrained", seed=seed, **common))
            rd = run_grid(GridConfig(model=args.student, out=base / "cd-pd", seed=seed, objective="distill",
                                     teacher=teachers[task], augment=d["augment"], then_finetune=True,
                                     distill_epochs=d["pd_epochs"], **common))
            labelling = labelling or rd.get("teacher_labelling", {}).get(task)
            rows["a"].append(_best(ra, task))
            rows["b"].append(_best(rb, task))
            rows["c"].append(_best(rd, task, "distill_dev"))
            rows["d"].append(_best(rd, task))
            print(f"{task} seed {seed}: " + ", ".join(f"({k}) {100 * v[-1][0]:.1f}" for k, v in rows.items())
                  + f" [{time.perf_counter() - t0:.0f} s]", file=sys.stderr)
        spec_metrics = [k for k in teacher_dev if "/" in k]
        from wellread.data.tasks import get_task

        spec = get_task(task)
        teacher_score = task_score(spec, {m: teacher_dev[f"{spec.dev_splits[0]}/{m}"] for m in spec.metrics})
        table[task] = {"rows": {k: [{"score": s, "dev": dev} for s, dev in v] for k, v in rows.items()},
                       "teacher": {"score": teacher_score, "dev": {k: teacher_dev[k] for k in spec_metrics}},
                       "settings": d, "teacher_labelling": labelling}
    names = {"a": "(a) fine-tune, random init", "b": "(b) fine-tune the pre-trained student",
             "c": "(c) PD (distil into the pre-trained student)", "d": "(d) PD, then fine-tune"}
    tasks = list(table)
    print("| method | " + " | ".join(f"{t} mean ± sd (seeds: " + ", ".join(map(str, seeds)) + ")" for t in tasks) + " |")
    print("|---|" + "---|" * len(tasks))
    for k, name in names.items():
        cells = []
        for t in tasks:
            v = [100 * r["score"] for r in table[t]["rows"][k]]
            sd = statistics.stdev(v) if len(v) > 1 else 0.0
            cells.append(f"{statistics.mean(v):.1f} ± {sd:.1f} ({', '.join(f'{x:.1f}' for x in v)})")
        print(f"| {name} | " + " | ".join(cells) + " |")
    print("| teacher (all-MiniLM-L6-v2 fine-tuned) | " + " | ".join(f"{100 * table[t]['teacher']['score']:.1f}"
                                                                 for t in tasks) + " |")
    out = {"tasks": table, "seeds": seeds, "student": args.student, "wall_seconds": time.perf_counter() - t_start}
    args.out.mkdir(parents=True, exist_ok=True)
    name = f"comparison-{'-'.join(tasks)}-seeds{'-'.join(map(str, seeds))}.json"
    (args.out / name).write_text(json.dumps(out, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
