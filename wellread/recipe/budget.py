"""The time budget of ``wellread recipe``: a budget in; per-stage steps, epochs, data and grid out.

``plan_budget`` is a pure function of the work (``Work``: tasks and their sizes, grid, epochs, seeds,
arms), the speed of this machine (``Rates``: measured by ``calibrate`` in a few seconds, or the
table below) and the budget. Pre-training gets a share of the budget through its own
``--time-budget`` (it is time-bound by nature: a longer run is a better student); every other stage
is sized in examples and epochs, so its result does not depend on the machine's load. While the
estimate of those stages exceeds what is left, it cuts, in this order:

1. the grid: the paper's 5 × 4 cells → 2 × 2 around the core cell → 1 × 2 → the core cell alone;
2. the teacher's epochs 4 → 2, the students' epochs 4 → 2, the teacher's epochs 2 → 1, then the
   teacher's training sets halved down to 4,000 examples (a pre-trained six-layer teacher learns a task
   from a few thousand examples, and costs ten to twenty times a Tiny student per example; the students
   and the transfer set keep the whole set; a teacher cut to one epoch on 4,000 STS-B pairs scored 71.1,
   below the PD + fine-tuned student it taught, hence the students' epochs go first);
3. (the students' epochs: in 2);
4. the training sets: the slowest task's halved (a seeded sample; dev sets stay whole), down to 4,000;
5. the students' epochs 2 → 1; then the training sets down to 1,000 examples.

Time left over (a large budget) goes to pre-training; without pre-training (a task recipe from a
pre-trained ``--student-init``), the cuts grow back into it, last first: the training sets to the largest
size that fits, then the epochs and the grid while they fit. ``Plan.cuts`` says, in words, what was cut;
the recipe prints it and the report shows it.
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from pathlib import Path

import numpy as np
import torch

from wellread.data.batching import bucketed_batches, collate, encode_pairs
from wellread.data.task_files import read_split
from wellread.data.tasks import get_task
from wellread.errors import WellreadError
from wellread.eval.predict import predict_logits
from wellread.tokenization import PAD, load_tokenizer
from wellread.train.finetune import (
    ClassificationObjective,
    FinetuneConfig,
    LabelledSet,
    build_model,
    classifier_from_pretrained,
    label_targets,
)
from wellread.train.loop import use_bf16

# This project's machine (AMD EPYC, 2 cores, torch 2.13.0+cpu), one thread per process as the recipe's
# workers run, examples per second at max length 128, batch 32 ("infer": no-grad prediction, as dev
# evaluation and the teacher's labelling). Measured by benchmarks/recipe_costs.py on 2026-11-23 while
# another job held both cores (the figures below are those doubled, the contention's cost on Tiny
# fine-tuning); the recipe measures its own before planning (--calibrate), this table is the fallback.
TABLE_RATES = {
    "student_train": {"sst2": 1000.0, "stsb": 800.0, "cola": 1000.0, "rte": 250.0, "default": 600.0},
    "student_infer": {"sst2": 6000.0, "stsb": 3800.0, "cola": 6000.0, "rte": 1000.0, "default": 3000.0},
    "teacher_train": {"sst2": 120.0, "stsb": 65.0, "cola": 120.0, "rte": 15.0, "default": 50.0},
    "teacher_infer": {"sst2": 250.0, "stsb": 200.0, "cola": 250.0, "rte": 50.0, "default": 150.0},
}
CORPUS_BYTES_PER_S = 1.6e6  # one `wellread corpus` worker, uncompressed text (KJV, 4.1 MB: 2.5 s); calibrated when measured
VOCAB_BYTES_PER_S = 4.0e6  # `wellread vocab train`
# What a stage's run achieves over what the calibration's few seconds measure, per rate: the runs are faster
# (their kernels warm across thousands of steps; the teacher labels in larger batches than the probe). Measured
# on this project's Intel Xeon (2 cores), 2026-12-06: a 10-minute recipe's stages (grid cells' examples/s,
# the teacher's labelling and dev evaluations) against its own calibration: students 1.4-1.6x, the teacher's
# training 1.1-1.5x, its labelling 2.4x, dev evaluation 2.5x.
RUN_GAIN = {"student_train": 1.5, "student_infer": 2.0, "teacher_train": 1.2, "teacher_infer": 2.0}
# A time-budgeted pre-training run counts its steps' time only. Its wall time adds the held-out evaluations
# (every ``eval_every`` steps, 20 batches of 64 sequences through three forward passes: about 1.15 training
# sequences' time per held-out sequence), checkpoints (every 2 minutes: ~1.5%) and a fixed part (start, save,
# curves). Fitted on the Intel Xeon, 2026-12-06: batch 32, 963 s of training took 1,149 s (share 0.19);
# batch 128, 1,230 s took 1,320 s (0.065).
HELD_OUT_COST = 1.15 * 20 * 64  # training sequences' time per evaluation (PretrainConfig's eval_batches x eval_batch_size)
PRETRAIN_CHECKPOINT_SHARE = 0.015
PRETRAIN_OVERHEAD_S = 10.0


def pretrain_overhead_share(batch_size: int, eval_every: int) -> float:
    """Pre-training's wall time beyond its training time, as a share of that training time."""
    evals = HELD_OUT_COST / (eval_every * batch_size) if eval_every else 0.0
    return evals + PRETRAIN_CHECKPOINT_SHARE


def pretrain_wall_s(budget_s: float, runs: int = 1, share: float = 0.2) -> float:
    """The wall time of ``runs`` pre-training runs sharing ``budget_s`` seconds of training time."""
    return budget_s * (1 + share) + PRETRAIN_OVERHEAD_S * runs


def pretrain_budget_s(wall_s: float, runs: int = 1, share: float = 0.2) -> float:
    """The training time that ``runs`` pre-training runs get from ``wall_s`` seconds (``pretrain_wall_s``'s inverse)."""
    return (wall_s - PRETRAIN_OVERHEAD_S * runs) / (1 + share)
RUN_OVERHEAD_S = 2.0  # a training run's fixed cost: build the model, read the data, save (measured: 1-2 s)
GRID_OVERHEAD_S = 1.0  # a grid's fixed cost: tables, heatmaps (measured on the Intel Xeon: 1 s)
SPAWN_S = 4.0  # starting worker processes (each imports torch); a grid of one job runs in its own process
EVAL_OVERHEAD_S = 0.5  # `evaluate` per model: load it and its tokenizer (measured: 0.2 s a Tiny, 2 s the teacher)
FIXED_S = 10.0  # reading the data, sampling it

GRID_SHAPES = ((2, 2), (1, 2), (1, 1))  # the grid's cuts: (batch sizes, learning rates) kept
MIN_EXAMPLES = (4000, 1000)  # training-set floors before and after the students' last epoch cut


@dataclasses.dataclass
class Rates:
    """Examples per second per task, for one process with one thread."""

    student_train: dict[str, float]
    student_infer: dict[str, float]
    teacher_train: dict[str, float]
    teacher_infer: dict[str, float]
    source: str = "table"  # "table", or "calibrated" (measured by ``calibrate``)
    corpus_bytes: float = CORPUS_BYTES_PER_S  # `wellread corpus`: text bytes/s of one worker
    # how much faster a run is on all of this machine's threads than on one, per model ("student", "teacher")
    speedup: dict[str, float] = dataclasses.field(default_factory=dict)

    def all_threads(self, kind: str, workers: int) -> float:
        """The speed-up of a ``kind`` run on ``workers`` threads (measured, else THREAD_SPEEDUP per doubling)."""
        return self.speedup.get(kind) or speedup(workers)

    @classmethod
    def table(cls) -> Rates:
        return cls(**{k: dict(v) for k, v in TABLE_RATES.items()})

    def get(self, kind: str, task: str) -> float:
        rates = getattr(self, kind)
        return rates.get(task) or rates.get("default") or TABLE_RATES[kind].get(task, TABLE_RATES[kind]["default"])


@dataclasses.dataclass
class Work:
    """What the recipe has to do, before any cut."""

    tasks: dict[str, tuple[int, int]]  # task -> (training examples, dev examples)
    batch_sizes: list[int]
    learning_rates: list[float]
    core_cell: tuple[int, float]  # what the grid shrinks to
    epochs: float
    teacher_epochs: float
    seeds: int = 1
    students: int = 1
    arms: tuple[str, ...] = ("random", "pretrained", "pd", "pd+ft")
    augment: int = 0  # extra derived inputs per training example in distillation
    text_bytes: int = 0  # the pre-training text (uncompressed estimate)
    train_vocab: bool = False
    pretrain: bool = True
    workers: int = 2
    max_train_examples: int | None = None
    pretrain_overhead: float = 0.2  # pre-training's wall time beyond its training time (``pretrain_overhead_share``)


@dataclasses.dataclass
class Plan:
    """The settings the recipe runs with, what they are estimated to cost, and what was cut."""

    budget_s: float | None
    pretrain_s: float | None  # pre-training's time budget (None: the recipe's step count)
    batch_sizes: list[int]
    learning_rates: list[float]
    epochs: float
    teacher_epochs: float
    train_examples: dict[str, int]  # per task: the examples trained on (a seeded sample when cut)
    full_examples: dict[str, int]
    teacher_examples: dict[str, int] = dataclasses.field(default_factory=dict)  # the teacher's: a subset of those
    estimate_s: dict[str, float] = dataclasses.field(default_factory=dict)
    cuts: list[str] = dataclasses.field(default_factory=list)
    notes: list[str] = dataclasses.field(default_factory=list)
    over_budget: bool = False
    rates: dict = dataclasses.field(default_factory=dict)
    spent_s: float = 0.0  # of the budget, before planning (finding the data, measuring the rates)

    @property
    def cells(self) -> int:
        return len(self.batch_sizes) * len(self.learning_rates)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> Plan:
        return cls(**d)


THREAD_SPEEDUP = 1.6  # a training or prediction run on 2 threads against 1 (Tiny and MiniLM-L6, this machine)


def threads_per_job(jobs: int, workers: int) -> int:
    """CPU threads for each of ``jobs`` side-by-side runs on ``workers`` cores (fewer jobs: more threads each)."""
    return max(1, workers // max(1, min(jobs, workers)))


def speedup(threads: int) -> float:
    """How much faster one run is on ``threads`` threads than on one (THREAD_SPEEDUP per doubling)."""
    return THREAD_SPEEDUP ** math.log2(max(1, threads))


def makespan(durations: list[float], workers: int, all_threads: float | None = None) -> float:
    """Wall time of independent jobs on ``workers`` processes, longest first to the least loaded; with fewer
    jobs than workers each job gets the spare threads (``threads_per_job``; a single job is ``all_threads``
    times faster when that was measured)."""
    if durations and len(durations) < workers:
        threads = threads_per_job(len(durations), workers)
        gain = all_threads if all_threads and threads >= workers else speedup(threads)
        durations = [d / gain for d in durations]
    loads = [0.0] * max(1, workers)
    for d in sorted(durations, reverse=True):
        i = loads.index(min(loads))
        loads[i] += d
    return max(loads) if durations else 0.0


def estimate(work: Work, plan: Plan, rates: Rates) -> dict[str, float]:
    """Seconds per stage (pre-training: its time budget) for ``plan``'s settings."""
    n = plan.train_examples
    est: dict[str, float] = {"data": FIXED_S}
    if work.pretrain:
        if work.train_vocab:
            est["vocab"] = work.text_bytes / VOCAB_BYTES_PER_S
        est["corpus"] = work.text_bytes / (rates.corpus_bytes * max(1, work.workers)) + 2.0
        est["pretrain"] = pretrain_wall_s(plan.pretrain_s or 0.0, work.students, work.pretrain_overhead)
    evals = math.ceil(plan.epochs)

    def grid_overhead(jobs: int) -> float:
        return GRID_OVERHEAD_S + (SPAWN_S if min(jobs, work.workers) > 1 else 0.0)

    def dev(kind: str, task: str, times: int) -> float:
        return times * work.tasks[task][1] / rates.get(kind, task)

    distils = "pd" in work.arms or "pd+ft" in work.arms
    if distils:  # a one-cell grid: the tasks side by side
        est["teacher"] = makespan([plan.teacher_epochs * plan.teacher_examples[t] / rates.get("teacher_train", t)
                                   + dev("teacher_infer", t, math.ceil(plan.teacher_epochs)) + 3 * RUN_OVERHEAD_S
                                   for t in work.tasks], work.workers, rates.all_threads("teacher", work.workers)) \
            + grid_overhead(len(work.tasks))

    def student_run(task: str, examples: int) -> float:
        return plan.epochs * examples / rates.get("student_train", task) + dev("student_infer", task, evals) \
            + RUN_OVERHEAD_S

    for arm in ("random", "pretrained", "published"):
        if arm in work.arms:
            jobs = [student_run(t, n[t]) for t in work.tasks for _ in range(plan.cells)]
            est[f"grid-{arm}"] = work.students * work.seeds * (
                makespan(jobs, work.workers, rates.all_threads("student", work.workers)) + grid_overhead(len(jobs)))
    if distils:  # the teacher labels each task's transfer set once (cached); then the cells, side by side
        labels = sum(n[t] * (1 + work.augment) / rates.get("teacher_infer", t) for t in work.tasks) \
            / rates.all_threads("teacher", work.workers)  # in the grid's own process, on every thread
        jobs = [student_run(t, n[t] * (1 + work.augment)) + (student_run(t, n[t]) if "pd+ft" in work.arms else 0.0)
                for t in work.tasks for _ in range(plan.cells)]
        est["distill"] = labels + work.students * work.seeds * (
            makespan(jobs, work.workers, rates.all_threads("student", work.workers)) + grid_overhead(len(jobs)))
    runs = len(work.tasks) * work.students * work.seeds * len(work.arms) + len(work.tasks)
    est["evaluate"] = runs * EVAL_OVERHEAD_S + sum(dev("student_infer", t, work.students * work.seeds * len(work.arms))
                                       + dev("teacher_infer", t, 1) for t in work.tasks) \
        / rates.all_threads("student", work.workers)
    est["report"] = 5.0
    return est


def _nearest(values: list, core, k: int, log: bool = False) -> list:
    """The ``k`` values nearest ``core`` (in log space for learning rates), in their original order."""
    def dist(v):
        return abs(math.log(v) - math.log(core)) if log else abs(v - core)

    keep = sorted(values, key=lambda v: (dist(v), v))[:k]
    return [v for v in values if v in keep]


def _fmt_cell(bss: list[int], lrs: list[float]) -> str:
    return f"batch {', '.join(map(str, bss))} × lr {', '.join(f'{lr:g}' for lr in lrs)}"


def plan_budget(work: Work, budget_s: float | None, rates: Rates, *, pretrain_share: float = 0.35,
                pretrain_steps: int | None = None, spent_s: float = 0.0) -> Plan:
    """The recipe's settings for ``budget_s`` seconds (None: the work as given, uncut), of which
    ``spent_s`` are gone already (finding the data, measuring the rates)."""
    full = {t: n for t, (n, _) in work.tasks.items()}
    start = {t: min(n, work.max_train_examples or n) for t, n in full.items()}
    plan = Plan(budget_s=budget_s, pretrain_s=None, batch_sizes=list(work.batch_sizes),
                learning_rates=list(work.learning_rates), epochs=work.epochs, teacher_epochs=work.teacher_epochs,
                train_examples=dict(start), full_examples=full, teacher_examples=dict(start),
                rates=dataclasses.asdict(rates))
    if budget_s is None:
        plan.estimate_s = estimate(work, plan, rates)
        plan.estimate_s.pop("pretrain", None)
        if pretrain_steps is not None and work.pretrain:
            plan.notes.append(f"pre-training: {pretrain_steps:,} steps (no time budget)")
        return plan
    if not 0 < pretrain_share < 1:
        raise WellreadError("must be between 0 and 1", field="pretrain_share")
    left = budget_s - spent_s
    plan.spent_s = spent_s
    if work.pretrain:
        plan.pretrain_s = pretrain_share * left
    available = left - (pretrain_wall_s(plan.pretrain_s, work.students, work.pretrain_overhead) if work.pretrain else 0.0)
    core_bs, core_lr = work.core_cell

    def rest() -> float:
        return sum(v for k, v in estimate(work, plan, rates).items() if k != "pretrain")

    def shrink_grid() -> bool:
        for nb, nl in GRID_SHAPES:
            if nb * nl < plan.cells and nb <= len(plan.batch_sizes) and nl <= len(plan.learning_rates):
                plan.batch_sizes = _nearest(plan.batch_sizes, core_bs, nb)
                plan.learning_rates = _nearest(plan.learning_rates, core_lr, nl, log=True)
                return True
        return False

    def epochs(which: str, to: float) -> bool:
        if getattr(plan, which) > to:
            setattr(plan, which, to)
            return True
        return False

    def halve(which: str, floor: int) -> bool:
        sizes = getattr(plan, which)
        over = [t for t, k in sizes.items() if k > floor]
        if not over:
            return False
        kind = "teacher_train" if which == "teacher_examples" else "student_train"
        t = max(over, key=lambda t: sizes[t] / rates.get(kind, t))  # the slowest task's set
        sizes[t] = max(floor, sizes[t] // 2)
        plan.teacher_examples[t] = min(plan.teacher_examples[t], plan.train_examples[t])  # a subset of it
        return True

    moves = [shrink_grid, lambda: epochs("teacher_epochs", 2), lambda: epochs("epochs", 2),
             lambda: epochs("teacher_epochs", 1), lambda: halve("teacher_examples", MIN_EXAMPLES[0]),
             lambda: halve("train_examples", MIN_EXAMPLES[0]), lambda: epochs("epochs", 1),
             lambda: halve("train_examples", MIN_EXAMPLES[1]), lambda: halve("teacher_examples", MIN_EXAMPLES[1])]
    while rest() > available:
        if not any(move() for move in moves):
            plan.over_budget = True
            break
    if not work.pretrain and not plan.over_budget:  # nothing takes the slack: grow the last cuts back into it
        cut = (dict(plan.train_examples), dict(plan.teacher_examples), plan.epochs, plan.teacher_epochs, plan.cells)
        _regrow(work, plan, start, lambda: rest() <= available)
        if cut != (plan.train_examples, plan.teacher_examples, plan.epochs, plan.teacher_epochs, plan.cells):
            plan.notes.append("no pre-training to take the time the cuts left over: they were grown back as far as "
                              "the budget allows")
    if work.pretrain:  # what the other stages leave goes to pre-training
        plan.pretrain_s = max(plan.pretrain_s or 0.0, pretrain_budget_s(left - rest(), work.students,
                                                                        work.pretrain_overhead))
    plan.estimate_s = estimate(work, plan, rates)
    _describe(work, plan, start, spent_s)
    return plan


def _regrow(work: Work, plan: Plan, start: dict[str, int], fits) -> None:
    """Undo the cuts, last first, as far as the budget still ``fits``: the cuts come in coarse steps
    (a halved set, an epoch count halved), so without pre-training to take what is left over, up to half
    the budget would go unused. The training sets grow back to the largest size that fits (bisected),
    then the epochs (the students' first, then the teacher's) and the grid double back while they fit."""
    def grow_sets() -> None:
        for which in ("train_examples", "teacher_examples"):
            sizes = getattr(plan, which)
            for t in sorted(sizes, key=lambda t: start[t]):  # the small sets first: whole again for little
                cap = start[t] if which == "train_examples" else plan.train_examples[t]
                low, high = sizes[t], cap
                while low < high:  # the largest size in [low, high] that fits; the estimate grows with it
                    mid = (low + high + 1) // 2
                    sizes[t] = mid
                    low, high = (mid, high) if fits() else (low, mid - 1)
                sizes[t] = low

    def try_set(which: str, value) -> bool:
        old = getattr(plan, which)
        setattr(plan, which, value)
        if fits():
            return True
        setattr(plan, which, old)
        return False

    grow_sets()
    for which, full in (("epochs", work.epochs), ("teacher_epochs", work.teacher_epochs)):
        while getattr(plan, which) < full and try_set(which, min(full, getattr(plan, which) * 2)):
            pass
    for nb, nl in reversed(((len(work.batch_sizes), len(work.learning_rates)),) + GRID_SHAPES):
        if nb * nl > plan.cells:
            bss, lrs = list(plan.batch_sizes), list(plan.learning_rates)
            plan.batch_sizes = _nearest(work.batch_sizes, work.core_cell[0], nb)
            plan.learning_rates = _nearest(work.learning_rates, work.core_cell[1], nl, log=True)
            if not fits():
                plan.batch_sizes, plan.learning_rates = bss, lrs
                break
    grow_sets()  # what the epochs and the grid left


def _describe(work: Work, plan: Plan, start: dict[str, int], spent_s: float) -> None:
    cells0 = len(work.batch_sizes) * len(work.learning_rates)
    if plan.cells < cells0:
        plan.cuts.append(f"grid: {cells0} → {plan.cells} cell{'s' if plan.cells > 1 else ''} "
                         f"({_fmt_cell(plan.batch_sizes, plan.learning_rates)}; the paper: "
                         f"{_fmt_cell(work.batch_sizes, work.learning_rates)})")
    if plan.teacher_epochs < work.teacher_epochs:
        plan.cuts.append(f"teacher fine-tuning: {work.teacher_epochs:g} → {plan.teacher_epochs:g} epoch(s)")
    if plan.epochs < work.epochs:
        plan.cuts.append(f"student fine-tuning and distillation: {work.epochs:g} → {plan.epochs:g} epoch(s)")
    for t, k in plan.teacher_examples.items():
        if k < plan.train_examples[t]:
            plan.cuts.append(f"the teacher's {t} training set: {plan.full_examples[t]:,} → {k:,} examples (a seeded "
                             "sample; the students and the transfer set keep theirs)")
    for t, k in plan.train_examples.items():
        if k < start[t]:
            plan.cuts.append(f"{t} training set: {plan.full_examples[t]:,} → {k:,} examples (a seeded sample; "
                             "the dev set is whole)")
    if plan.pretrain_s is not None:
        per = f", {plan.pretrain_s / 60 / work.students:.1f} min per student" if work.students > 1 else ""
        plan.notes.append(f"pre-training: {plan.pretrain_s / 60:.1f} min of training time of the "
                          f"{plan.budget_s / 60:.0f} min budget{per} (the report's pre-training table gives the "
                          "tokens it reached; the paper: 1 M steps of 128 × 256 tokens)")
    if spent_s >= 1:
        plan.notes.append(f"finding the data and measuring this machine's speed took {spent_s:.0f} s of the budget")
    total = sum(plan.estimate_s.values()) + spent_s
    if plan.over_budget:
        plan.cuts.append(f"the budget is too small even after every cut: estimated {total / 60:.1f} min "
                         f"against {plan.budget_s / 60:.1f}")


# --- calibration: this machine's rates, measured in a few seconds ----------------------------------

def _train_rate(model, spec, feats, targets, pad_id: int, seconds: float, bf16: bool = False) -> float:
    """Training examples/s over a few batches, timed on a second pass: the first pass over the same batches
    pays for what a real run pays once per input shape (allocations; oneDNN's kernels for each padded
    length under bf16), which timing the first pass counted against every step (rates 2x too low)."""
    obj = ClassificationObjective(model, spec, LabelledSet("train", feats, targets, []), [], seed=0, pad_id=pad_id)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-6)
    model.train()
    batches = []
    for index in bucketed_batches(feats.lengths, 32, 0, 0):
        batch = collate(feats, index, pad_id)
        batch["labels"] = torch.from_numpy(np.asarray(targets)[index])
        batches.append(batch)

    def step(batch) -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):  # as the training runs will
            loss, _ = obj.loss(model, batch, obj.counts(batch))
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    t0, used = time.perf_counter(), 0
    for batch in batches:  # the warm-up pass, also choosing how many batches fit in ``seconds``
        step(batch)
        used += 1
        if time.perf_counter() - t0 >= seconds and used >= 4:
            break
    t0 = time.perf_counter()
    for batch in batches[:used]:
        step(batch)
    return sum(len(b["labels"]) for b in batches[:used]) / max(time.perf_counter() - t0, 1e-9)


def _infer_rate(model, feats, pad_id: int) -> float:
    """Prediction examples/s, timed on a second pass over the same inputs (see ``_train_rate``)."""
    predict_logits(model, feats, pad_id=pad_id)
    t0 = time.perf_counter()
    predict_logits(model, feats, pad_id=pad_id)
    return len(feats) / max(time.perf_counter() - t0, 1e-9)


def corpus_rate(files: list[Path], tok, sample_bytes: int = 256 * 1024) -> float:
    """Text bytes/s of one `wellread corpus` worker (one tokenizer thread), timed on the first
    ``sample_bytes`` of each pre-training file and weighted by the files' sizes (a dictionary's short
    definitions encode slower than prose)."""
    from wellread.data.corpus import corpus_tokenizer, encode_documents
    from wellread.io import open_text

    plain = corpus_tokenizer(tok)
    before = os.environ.get("TOKENIZERS_PARALLELISM")
    os.environ["TOKENIZERS_PARALLELISM"] = "false"  # as the workers encode (read on each call)
    seconds_per_byte, weights = 0.0, 0.0
    try:
        for path in files:
            lines, n = [], 0
            with open_text(path, errors="replace") as fh:
                for line in fh:
                    lines.append(line)
                    n += len(line.encode())
                    if n >= sample_bytes:
                        break
            if not n:
                continue
            docs = [lines[i:i + 16] for i in range(0, len(lines), 16)]
            t0 = time.perf_counter()
            encode_documents(docs, "uint32", plain)
            weight = Path(path).stat().st_size
            seconds_per_byte += weight * (time.perf_counter() - t0) / n
            weights += weight
    finally:
        if before is None:
            os.environ.pop("TOKENIZERS_PARALLELISM", None)
        else:
            os.environ["TOKENIZERS_PARALLELISM"] = before
    return weights / seconds_per_byte if seconds_per_byte else CORPUS_BYTES_PER_S


def calibrate(student: str, teacher: Path | None, tasks: list[str], data_dir: Path | None, *,
              vocab: Path | None = None, text: list[Path] = (), seconds: float = 1.0, sample: int = 512,
              bf16: bool | None = None) -> Rates:
    """Measure this machine's rates (one thread) on samples of each task's training set: a random
    student of the recipe's size, and the teacher when there is one. A few seconds per task. Training is
    timed in the precision the runs will train in (bf16 autocast where native, unless ``bf16`` says).
    With pre-training ``text``, the corpus builder's speed too (a fraction of a second)."""
    train_bf16 = use_bf16(bf16, torch.device("cpu"))

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    rates = Rates.table()
    rates.source = "calibrated"
    try:
        for task in tasks:
            spec = get_task(task)
            ex = read_split(spec, data_dir, "train").examples
            pick = np.random.default_rng(0).permutation(len(ex))[:sample]
            ex = [ex[i] for i in sorted(pick)]
            targets, _ = label_targets(spec, ex)
            sources = [("student", None)] + ([("teacher", teacher)] if teacher is not None else [])
            for kind, path in sources:
                if path is None:
                    cfg = FinetuneConfig(model=student, task=task, data_dir=data_dir, out=Path("."), random_init=True,
                                         vocab=vocab, epochs=1)
                    model, tok, _ = build_model(cfg, spec)
                else:
                    tok = load_tokenizer(path)
                    model = classifier_from_pretrained(path, spec, seed=0, new_head=True)
                feats = encode_pairs(tok, [e.text_a for e in ex], [e.text_b for e in ex], 128)
                pad = tok.token_to_id(PAD)
                getattr(rates, f"{kind}_train")[task] = _train_rate(model, spec, feats, targets, pad, seconds, train_bf16)
                if kind not in rates.speedup and threads > 1:  # the same on every thread, for runs given them
                    torch.set_num_threads(threads)
                    rates.speedup[kind] = max(1.0, _train_rate(model, spec, feats, targets, pad, seconds, train_bf16)
                                              / getattr(rates, f"{kind}_train")[task])
                    torch.set_num_threads(1)
                getattr(rates, f"{kind}_infer")[task] = _infer_rate(model, feats, pad)
                if kind == "student" and text and task == tasks[0]:
                    rates.corpus_bytes = corpus_rate(text, tok)
    finally:
        torch.set_num_threads(threads)
    for kind, gain in RUN_GAIN.items():
        if kind.startswith("student") or teacher is not None:
            for task in tasks:
                getattr(rates, kind)[task] *= gain
    return rates


__all__ = ["Work", "Plan", "Rates", "plan_budget", "estimate", "calibrate", "corpus_rate", "makespan", "pretrain_overhead_share", "pretrain_wall_s", "speedup", "threads_per_job",
           "TABLE_RATES"]
