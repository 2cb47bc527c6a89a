"""``wellread recipe --task tickets.yaml``: the paper's method on a user's own task, in one command.

The GLUE recipe's stages (``wellread.recipe.stages.Recipe``), its planner (``budget``) and its done
markers (``runner``), on one task file (docs/own-task.md):

``data`` (a seeded, stratified sample of the training set when the budget cuts it, written as a task
file of its own; ``data-teacher`` likewise for the teacher) → ``vocab`` / ``corpus`` / ``pretrain-<student>``
(only without ``--student-init``: the students pre-trained on DATA/text or --text, as the GLUE recipe
does) → ``teacher`` (all-MiniLM-L6-v2, or any HF BERT directory, fine-tuned on the labels) →
``grid-random-…`` / ``grid-pretrained-…`` (students fine-tuned alone) → ``distill-…`` (Pre-trained
Distillation over the task's training text plus ``--unlabelled``, then fine-tuning) → ``evaluate``
(every arm's best model and the teacher on dev and test: the task's metrics, per-class precision /
recall / F1, confusion matrices) → ``export`` (the best student on dev to ONNX and int8, behind the
accuracy gate: the int8 model is refused, with one line, if its dev score is more than
``--int8-max-drop`` points below its fp32 self; ``OUT/serve/`` is what ``wellread serve`` loads) →
``speed`` (each model's size and sentences/s with one thread on this machine) → ``report``
(``OUT/report/report.md`` and ``report.json``).

Everything the recipe reads is read and checked before anything is written (the task file and every
split, the unlabelled files, the teacher, the students' start), so bad input is one line and an
untouched OUT. A re-run skips the finished stages, as the GLUE recipe's does.
"""

from __future__ import annotations

import json
import math
import os
import statistics
import time
from pathlib import Path

from wellread.config import configclass, field, to_dict
from wellread.errors import WellreadError
from wellread.infer.gate import int8_gate, refusal
from wellread.recipe import budget as B
from wellread.recipe.config import RecipeConfig
from wellread.recipe.runner import log
from wellread.recipe.stages import Recipe

SERVE = "serve"
SPEED_BATCH = 32


@configclass
class TaskRecipeConfig(RecipeConfig):
    """The recipe's settings plus those of a user's task (``--task``)."""

    task: str | None = field(None, help="a task file (docs/own-task.md): run the recipe on your own task instead of "
                                         "--tasks: teacher, students, PD, int8 export, a serve-ready directory")
    unlabelled: list[Path] = field(default_factory=list, help="with --task: unlabelled text added to the transfer "
                                                              "set (.txt, .jsonl, .gz of them; as distill --transfer)")
    student_init: str | None = field(None, help="with --task: the students' pre-trained start instead of pre-training "
                                                "on text: a model directory (one student), or STUDENT=DIR,...")
    int8_max_drop: float = field(1.0, ge=0, help="with --task: refuse the int8 export when its dev score is more than "
                                                 "this many points (x100) below its fp32 self")
    speed_sentences: int = field(1000, ge=1, help="with --task: dev sentences each model's speed is measured on "
                                                  "(one thread)")
    adapt_steps: int = field(0, ge=0, help="with --task and --student-init: first continue each student's masked-LM "
                                           "pre-training this many steps (batch 32, lr 5e-4) on the task's training "
                                           "texts, labels unread; every arm then starts from it (docs/own-task.md: "
                                           "1,000 helped emotion, not SICK); counted in --time-budget")

    def __post_init__(self) -> None:
        from wellread.data.own_task import is_task_file

        files = [t for t in self.tasks if is_task_file(t)]
        if files:
            raise WellreadError(f"{files[0]}: a task file goes to --task (wellread recipe --task {files[0]}); "
                                "--tasks takes GLUE names", field="tasks")
        if self.task is not None and self.short_plan is None:
            self.short_plan = False  # the short plan is made for GLUE's STS-B; a user's task keeps the paper's settings
        super().__post_init__()
        if self.task is None:
            for name in ("unlabelled", "student_init", "adapt_steps"):
                if getattr(self, name):
                    raise WellreadError("needs --task (a task file)", field=name)
            return
        if self.adapt_steps and not self.student_init:
            raise WellreadError("needs --student-init (the pre-trained start to adapt to the task's text)",
                                field="adapt_steps")
        if not is_task_file(self.task):
            raise WellreadError(f"{self.task}: not a task file (expected a .yaml / .yml file; GLUE names go to "
                                "--tasks)", field="task")
        if "published" in self.arms:
            raise WellreadError("the published arm runs with --tasks (GLUE) only", field="arms")

    def student_inits(self) -> dict[str, Path]:
        """``--student-init``: student name -> model directory (one directory: the one student)."""
        if not self.student_init:
            return {}
        items = [s.strip() for s in self.student_init.split(",") if s.strip()]
        if len(items) == 1 and "=" not in items[0]:
            if len(self.students) != 1:
                raise WellreadError(f"one directory for {len(self.students)} students; give STUDENT=DIR,... "
                                    f"for {', '.join(self.students)}", field="student_init")
            return {self.students[0]: Path(items[0])}
        out = {}
        for item in items:
            name, sep, path = item.partition("=")
            if not sep or name not in self.students:
                raise WellreadError(f"{item!r}: expected STUDENT=DIR with STUDENT one of {', '.join(self.students)}",
                                    field="student_init")
            out[name] = Path(path)
        missing = [s for s in self.students if s not in out]
        if missing:
            raise WellreadError(f"no start for student(s) {', '.join(missing)}", field="student_init")
        return out


# --- input checks (before anything is written) --------------------------------------------------------

def check_student_init(path: Path, student: str) -> Path:
    """A pre-trained student: a model directory with config.json and weights, the size ``student`` names."""
    from wellread.modeling import zoo

    config = path / "config.json"
    if not path.is_dir() or not config.is_file():
        raise WellreadError("not a model directory (no config.json)", file=path, field="student_init")
    try:
        cfg = json.loads(config.read_text(encoding="utf-8"))
    except ValueError as e:
        raise WellreadError(f"config.json is not JSON ({e})", file=config, field="student_init") from None
    want = zoo.get(student)
    have = (cfg.get("num_hidden_layers"), cfg.get("hidden_size"))
    if have != (want.layers, want.hidden):
        raise WellreadError(f"a model of {have[0]} layers and hidden size {have[1]}, but {student} is "
                            f"L-{want.layers} H-{want.hidden}", file=config, field="student_init")
    if not any((path / f).is_file() for f in ("model.safetensors", "pytorch_model.bin")):
        raise WellreadError("no weights (model.safetensors or pytorch_model.bin)", file=path, field="student_init")
    return path.resolve()


def check_unlabelled(files: list[Path], spec) -> dict[str, dict[str, int]]:
    """Read each unlabelled file through (as distillation will): a missing file, an empty one, or a line whose
    shape does not match the task is one line here, before anything is written. Returns per-file counts."""
    from wellread.data.task_files import read_split
    from wellread.train.distill import read_transfer_file

    train = read_split(spec, None, "train").examples
    pairs = any(e.text_b is not None for e in train[:100])
    own = spec.source.spec_file
    counts: dict[str, dict[str, int]] = {}
    for p in files:
        if not Path(p).is_file():
            raise WellreadError("no such file", file=p, field="unlabelled")
        c: dict[str, int] = {}
        for _ in read_transfer_file(Path(p), pairs, (own.text, own.text_pair), c):
            pass
        if not c["inputs"]:
            raise WellreadError("no inputs in this file", file=p, field="unlabelled")
        counts[str(p)] = c
    return counts


# --- the training-set sample, as a task file of its own ----------------------------------------------------

def sample_task(spec, out: Path, k: int, *, seed: int = 0) -> Path:
    """``out/task.yaml``: ``spec``'s task with a seeded sample of ``k`` training examples (stratified: every
    class keeps at least two) and its dev set whole, as JSON lines; the labels in the same order."""
    import numpy as np

    from wellread.data.task_files import read_split
    from wellread.io import atomic_write_text

    own = spec.source.spec_file
    train = read_split(spec, None, "train").examples
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(train))
    pick = set(order[:k].tolist())
    if not spec.is_regression:
        for label in spec.labels:
            have = [i for i in pick if train[i].label == label]
            extra = [i for i in order[k:].tolist() if train[i].label == label][:max(0, 2 - len(have))]
            pick.update(extra)
    pairs = any(e.text_b is not None for e in train)

    def rows(examples) -> str:
        return "".join(json.dumps({"text": e.text_a, **({"text_pair": e.text_b} if pairs else {}),
                                   "label": e.label}, ensure_ascii=False) + "\n" for e in examples)

    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "train.jsonl", rows([train[i] for i in sorted(pick)]))
    dev = [e for s in spec.dev_splits for e in read_split(spec, None, s).examples]
    atomic_write_text(out / "dev.jsonl", rows(dev))
    task = {"name": spec.name, "kind": own.kind, "text": "text", **({"text_pair": "text_pair"} if pairs else {}),
            "label": "label", "train": "train.jsonl", "dev": "dev.jsonl"}
    if not spec.is_regression:
        task["labels"] = list(spec.labels)
    for key in ("metric", "positive"):
        if getattr(own, key, None) is not None:
            task[key] = getattr(own, key)
    import yaml

    atomic_write_text(out / "task.yaml", f"# {len(pick):,} of the {len(train):,} training examples of "
                                         f"{spec.source.path} (seed {seed}); its dev set whole\n"
                      + yaml.safe_dump(task, sort_keys=False, allow_unicode=True))
    return out / "task.yaml"


# --- sizes and speeds -------------------------------------------------------------

def model_size(path: Path, files: tuple[str, ...] = ("model.safetensors", "pytorch_model.bin")) -> dict:
    """Parameters (from the safetensors header) and bytes on disk of a model's weights file."""
    for name in files:
        f = path / name
        if f.is_file():
            out = {"file": name, "bytes": f.stat().st_size}
            if name == "model.safetensors":
                from safetensors import safe_open

                with safe_open(str(f), "np") as st:
                    out["parameters"] = int(sum(math.prod(st.get_slice(k).get_shape()) for k in st.keys()))
            return out
    return {}


def sentences_per_s(model_dir: Path, backend: str, texts_a: list[str], texts_b: list, *, max_length: int) -> float:
    """Sentences (or pairs) per second, one thread, batches of 32, after a warm-up batch."""
    from wellread.infer.predictor import Predictor

    p = Predictor(model_dir, backend=backend, max_length=max_length, threads=1, batch_size=SPEED_BATCH)
    p.logits(texts_a[:SPEED_BATCH], texts_b[:SPEED_BATCH])
    t0 = time.perf_counter()
    p.logits(texts_a, texts_b)
    return len(texts_a) / (time.perf_counter() - t0)


# --- the recipe ---------------------------------------------------------------------------------------------

class TaskRecipe(Recipe):
    """The GLUE recipe's stages on one task file; see the module's docstring."""

    def __init__(self, cfg: TaskRecipeConfig) -> None:
        super().__init__(cfg)
        self.task_file = str(Path(cfg.task).expanduser().resolve())
        self.src = None

    # --- inputs ----------------------------------------------------------------------------------------

    def sources(self, spec):
        """The teacher, the students' start (``--student-init``) or the text to pre-train them on; checked."""
        from wellread.recipe.config import default_data_root
        from wellread.recipe.sources import TEXT_SUFFIXES, Sources, resolve_teacher

        c = self.cfg
        inits = {s: check_student_init(p, s) for s, p in c.student_inits().items()}
        text: list[Path] = []
        if c.pretrains and not inits:
            text = list(c.text)
            root = c.data or default_data_root()
            if not text and root is not None and (root / "text").is_dir():
                text = sorted(p for p in (root / "text").iterdir() if p.name.endswith(TEXT_SUFFIXES))
            for p in text:
                if not p.is_file():
                    raise WellreadError("no such text file", file=p, field="text")
            if not text:
                raise WellreadError("no pre-trained start for the students: pass --student-init DIR (a pre-trained "
                                    "checkpoint), or text to pre-train on (--text FILES, or DATA/text)",
                                    field="student_init")
        if c.vocab not in ("standard", "train") and not Path(c.vocab).exists():
            raise WellreadError("no such vocabulary", file=c.vocab, field="vocab")
        teacher = resolve_teacher(c.teacher, c.source) if c.distils else None
        if teacher is not None and not (Path(teacher) / "config.json").is_file():
            raise WellreadError("not a model directory (no config.json)", file=teacher, field="teacher")
        src = Sources(glue=None, text=[p.resolve() for p in text],
                      teacher=None if teacher is None else Path(teacher).resolve(), published={})
        return src, inits

    # --- planning --------------------------------------------------------------------------------------

    def reserve_s(self, spec, n_dev: int, n_test: int, rates: B.Rates) -> float:
        """What the budget keeps for scoring the test split, the export and its gate, the speed runs and
        (a regression task) the report's error plots, at this machine's measured ``rates``."""
        c = self.cfg
        models = len(c.seeds) * len(c.students) * len(self.arms) + 1
        student, teacher = rates.get("student_infer", self.task_file), rates.get("teacher_infer", self.task_file)
        speed = min(c.speed_sentences, n_dev)
        plots = (n_test or n_dev) * (1 / student + 1 / teacher) if spec.labels is None else 0.0
        return (models * n_test / student + n_test / teacher + 2 * n_dev / student + 30.0
                + (len(self.arms) + 2) * speed / student + speed / teacher + plots)

    def make_task_plan(self, src, sizes: dict, spent_s: float, reserve):
        from wellread.io import atomic_write_json
        from wellread.recipe.stages import PLAN

        c = self.cfg
        key, saved = self.saved_plan(sizes=sizes, text=[str(p) for p in src.text], teacher=str(src.teacher))
        if saved is not None:
            return saved
        budget = c.budget_s
        rates = B.Rates.table()
        if budget is not None and c.calibrate:
            t0 = time.perf_counter()
            log("measuring this machine's speed on the task (seconds; --no-calibrate uses a table)")
            rates = B.calibrate(c.students[0], src.teacher if c.distils and c.teacher_epochs else None,
                                [self.task_file], None, vocab=self.vocab_for_calibration(),
                                text=src.text)
            spent_s += time.perf_counter() - t0
        reserve_s = reserve(rates)
        plan = B.plan_budget(self.work(src, sizes), None if budget is None else budget - reserve_s, rates,
                             pretrain_share=c.pretrain_share, pretrain_steps=c.pretrain_steps, spent_s=spent_s)
        if budget is not None:
            plan.budget_s = budget
            plan.notes.append(f"{reserve_s / 60:.1f} min of the budget kept for the test scores, the int8 export "
                              "and its gate, and the speed measurements")
        atomic_write_json(self.out / PLAN, {"key": key, "plan": plan.to_dict()})
        return plan

    # --- stages ----------------------------------------------------------------------------------------

    def task_sample(self, spec, name: str, k: int, full: int) -> str:
        """The task file a stage trains on: the user's, or a seeded sample of its training set (stage ``name``)."""
        if k >= full:
            return self.task_file
        out = self.out / name
        self.stage(name, {"task": self.task_file, "task_data": spec.source.digest(), "train_examples": k, "seed": 0},
                   lambda: {"task": str(sample_task(spec, out, k))}, dirs=[out])
        return str(out / "task.yaml")

    def task_teachers(self, src, plan, teacher_task: str, student_task: str) -> dict[str, Path]:
        from wellread.train.grid import GridConfig, GridSpace

        c = self.cfg
        if c.teacher_epochs == 0:
            return {student_task: src.teacher}
        out = self.out / "teacher"
        gc = GridConfig(model=str(src.teacher), tasks=[teacher_task], data_dir=None, out=out,
                        grid=GridSpace(batch_sizes=[c.teacher_batch_size], learning_rates=[c.teacher_lr],
                                       epochs=plan.teacher_epochs),
                        inputs=c.inputs, seed=0, workers=1, threads=B.threads_per_job(1, self.workers),
                        keep_models="best", quiet=True)
        self.grid_stage("teacher", gc, after=["data", "data-teacher"], estimate_s=plan.estimate_s.get("teacher"))
        self.runs.append({"kind": "grid", "arm": "teacher", "path": out.name})
        best = json.loads((out / "best.json").read_text(encoding="utf-8"))
        return {student_task: out / best[teacher_task]["model"]}

    def task_evaluate(self, spec, after: list[str]) -> list[dict]:
        """Every arm's best model and the teacher on each labelled split of the user's task file."""
        from wellread.eval.glue import evaluate_model
        from wellread.eval.metrics import task_score
        from wellread.io import atomic_write_json
        from wellread.recipe.stages import evaluation_targets

        out = self.out / "evaluate"
        models = evaluation_targets(self.out, self.runs)
        labelled = [s for s in ("dev", "test") if s in spec.splits and spec.splits[s][1].label is not None]

        def run() -> dict:
            import torch

            torch.set_num_threads(self.cfg.threads or os.cpu_count() or 1)
            rows = []
            for m in models:
                splits = {}
                for split in labelled:
                    r = evaluate_model(self.out / m["model"], self.task_file, None, split,
                                       max_length=self.cfg.inputs.max_length)
                    splits[split] = r["splits"][split] | {"score": task_score(spec, r["splits"][split])}
                rows.append(m | {"task": self.task_file, "splits": splits, "score": splits["dev"]["score"]})
            atomic_write_json(out / "results.json", {"task": self.task_file, "rows": rows})
            return {"models": len(rows)}

        self.stage("evaluate", {"models": models, "task": self.task_file, "task_data": spec.source.digest()}, run,
                   dirs=[out], after=after, estimate_s=self.plan.estimate_s.get("evaluate"))
        return json.loads((out / "results.json").read_text(encoding="utf-8"))["rows"]

    def export(self, spec, rows: list[dict]) -> dict:
        """The best student on dev to ONNX + int8 in OUT/serve, behind the int8 gate."""
        from wellread.infer.onnx import export_onnx
        from wellread.io import atomic_write_json

        c = self.cfg
        students = [r for r in rows if r["arm"] != "teacher"]
        best = max(students, key=lambda r: r["score"])
        out = self.out / SERVE

        def run() -> dict:
            from wellread import env
            from wellread.infer.gate import calibration_inputs
            from wellread.infer.predictor import backend_files

            record = export_onnx(self.out / best["model"], out, int8=True, max_length=c.inputs.max_length, quiet=True,
                                 calibration=calibration_inputs(spec))
            gate = int8_gate(out, self.task_file, c.int8_max_drop, threads=c.threads,
                             max_length=c.inputs.max_length)
            kept = [b for b, r in gate["backends"].items() if r["passed"]]
            for b, r in gate["backends"].items():
                if not r["passed"]:  # written by this stage a moment ago: removed, the others kept
                    for name in backend_files(b):
                        (out / name).unlink(missing_ok=True)
            # the int8 model of the backend `auto` prefers here (OpenVINO on AMX), else ONNX Runtime's
            prefer = "openvino-int8" if env.auto_backend().startswith("openvino") else "onnx-int8"
            backend = prefer if prefer in kept else (kept[0] if kept else "onnx")
            if not gate["passed"]:
                log(f"{refusal(gate)}; {out} serves {backend}")
            record["int8_gate"] = gate
            record["files"] = {f.name: f.stat().st_size for f in sorted(out.iterdir()) if f.name != "export.json"}
            record["recipe"] = {"arm": best["arm"], "student": best["student"], "seed": best["seed"],
                                "model": best["model"], "dev_score": best["score"], "backend": backend,
                                "serve": f"wellread serve --model {out} --backend {backend}"}
            atomic_write_json(out / "export.json", record)
            return {"gate": gate, "backend": backend, "model": best["model"], "arm": best["arm"]}

        return self.stage("export", {"model": best["model"], "max_drop": c.int8_max_drop,
                                     "max_length": c.inputs.max_length}, run, dirs=[out], after=["evaluate"])

    def speed(self, spec, rows: list[dict], export: dict) -> list[dict]:
        """Each arm's best model, the teacher, and the export: size and sentences/s (one thread, dev sentences)."""
        from wellread.data.task_files import read_split
        from wellread.io import atomic_write_json

        c = self.cfg
        ex = read_split(spec, None, "dev").examples[:c.speed_sentences]
        a, b = [e.text_a for e in ex], [e.text_b for e in ex]
        best: dict[str, dict] = {}
        for r in rows:
            if r["arm"] not in best or r["score"] > best[r["arm"]]["score"]:
                best[r["arm"]] = r
        targets = [{"what": r["arm"], "model": r["model"], "backend": "torch"} for r in best.values()]
        serve = self.out / SERVE
        targets.append({"what": f"export of {export['arm']} (ONNX fp32)", "model": SERVE, "backend": "onnx"})
        if (serve / "model.int8.onnx").is_file():
            targets.append({"what": f"export of {export['arm']} (ONNX int8)", "model": SERVE, "backend": "onnx-int8"})
        if (serve / "model.int8.xml").is_file():
            targets.append({"what": f"export of {export['arm']} (OpenVINO int8)", "model": SERVE,
                            "backend": "openvino-int8"})

        def run() -> dict:
            from wellread.infer.predictor import backend_files

            out = []
            for t in targets:
                path = self.out / t["model"]
                files = None if t["backend"] == "torch" else backend_files(t["backend"])
                size = model_size(path, files) if files else model_size(path)
                if files and "parameters" not in size:
                    size["parameters"] = model_size(self.out / export["model"]).get("parameters")
                rate = sentences_per_s(path, t["backend"], a, b, max_length=c.inputs.max_length)
                out.append(t | size | {"sentences_per_s": rate, "sentences": len(a), "threads": 1,
                                       "batch_size": SPEED_BATCH})
            atomic_write_json(self.out / "speed.json", {"rows": out})
            return {"rows": out}

        return self.stage("speed", {"targets": targets, "sentences": len(a), "max_length": c.inputs.max_length},
                          run, after=["export"])["rows"]

    def adapt(self, student: str, start: Path) -> Path:
        """``--adapt-steps``: the student's start, its masked-LM pre-training continued on the task's training
        texts (``wellread corpus --task`` + ``wellread pretrain --model START``), as stages ``adapt-corpus-S`` and
        ``adapt-S``; returns the adapted model directory."""
        from wellread.data.corpus import build_corpus, task_texts
        from wellread.tokenization import load_tokenizer, vocab_hash
        from wellread.train.pretrain import PretrainConfig, pretrain

        c = self.cfg
        text = task_texts(self.task_file, None)
        corpus = self.out / f"adapt-corpus-{student}"

        def run_corpus() -> dict:
            m = build_corpus([text], start, corpus, workers=self.workers, group_lines=c.group_lines,
                             show_progress=not c.quiet)
            return {k: m.totals[k] for k in ("tokens", "sentences", "documents")}

        made = self.stage(f"adapt-corpus-{student}", {"text": str(text), "vocab": vocab_hash(load_tokenizer(start)),
                                                      "group_lines": c.group_lines}, run_corpus, dirs=[corpus])
        out = self.out / f"adapt-{student}"
        pc = PretrainConfig(model=str(start), data=corpus, out=out, objective="mlm", max_steps=c.adapt_steps,
                            lr=5e-4, batch_size=32, seed=0, threads=c.threads, bf16=c.bf16, quiet=c.quiet,
                            eval_documents=max(1, min(200, made["documents"] // 10)))  # a tenth held out, ≤ 200

        def run() -> dict:
            r = pretrain(pc)
            return {"steps": r["steps"], "tokens": r["tokens"], "eval": r["eval"], "train_seconds": r["train_seconds"]}

        r = self.stage(f"adapt-{student}", to_dict(pc) | {"quiet": None, "threads": None, "out": None}, run,
                       dirs=[out], after=[f"adapt-corpus-{student}"])
        log(f"adapt-{student}: {r['steps']:,} steps on the task's training texts, held-out masked-LM accuracy "
            f"{100 * r['eval'].get('eval/mlm_accuracy', float('nan')):.1f}%")
        self.runs.append({"kind": "pretrain", "student": student, "path": out.name})
        return out / "model"

    def run(self) -> dict:
        from wellread.data.task_files import read_split
        from wellread.data.tasks import get_task
        from wellread.recipe.config import config_yaml
        from wellread.recipe.stages import MANIFEST, write_if_changed

        c = self.cfg
        t0 = time.perf_counter()
        spec = get_task(self.task_file)  # the task file and every split read and checked: nothing written yet
        if spec.name in ("squad", "squad_v2") or getattr(spec.source.spec_file, "kind", "") not in \
                ("classification", "regression"):
            raise WellreadError("recipe --task runs classification and regression tasks", field="task")
        transfer_counts = check_unlabelled(list(c.unlabelled) + list(c.pd.transfer), spec)
        src, inits = self.sources(spec)
        starts = dict(inits)
        if c.adapt_steps:  # before the plan, so that the planner counts its time as spent
            self.out.mkdir(parents=True, exist_ok=True)
            inits = {s: self.adapt(s, start) for s, start in inits.items()}
        n_train = len(read_split(spec, None, "train").examples)
        n_dev = sum(len(read_split(spec, None, s).examples) for s in spec.dev_splits)
        test_labelled = "test" in spec.splits and spec.splits["test"][1].label is not None
        n_test = len(read_split(spec, None, "test").examples) if test_labelled else 0
        self.cfg.tasks = [self.task_file]  # what the recipe's planner and stages read
        self.out.mkdir(parents=True, exist_ok=True)
        plan = self.plan = self.make_task_plan(src, {self.task_file: (n_train, n_dev)}, time.perf_counter() - t0,
                                               lambda rates: self.reserve_s(spec, n_dev, n_test, rates))
        write_if_changed(self.out / "recipe.yaml", config_yaml(c) + f"task: {self.task_file}\n")
        for line in plan.notes:
            log(line)
        for line in plan.cuts:
            log(f"cut to fit the budget: {line.replace(self.task_file, spec.name)}")
        student_task = self.task_sample(spec, "data", plan.train_examples[self.task_file], n_train)
        teacher_task = self.task_sample(spec, "data-teacher", plan.teacher_examples[self.task_file], n_train) \
            if c.distils and plan.teacher_examples[self.task_file] < plan.train_examples[self.task_file] \
            else student_task
        c.tasks = [student_task]
        c.pd.transfer = list(c.pd.transfer) + list(c.unlabelled)
        self.glue = None
        vocab = self.vocab(src)
        students: dict[str, Path] = dict(inits)
        pre_after: dict[str, list[str]] = {s: [f"adapt-{s}"] if c.adapt_steps else [] for s in c.students}
        if c.pretrains and not inits:
            corpus = self.corpus(src, vocab, plan)
            for s in c.students:
                students[s] = self.pretrain(s, corpus, vocab, plan)
                pre_after[s] = [f"pretrain-{s}"]
        teachers = self.task_teachers(src, plan, teacher_task, student_task) if c.distils else {}
        stages: list[str] = []
        for seed in c.seeds:
            for s in c.students:
                for arm in ("random", "pretrained"):
                    if arm in self.arms:
                        self.grid(arm, s, s if arm == "random" else students[s], seed, None, vocab, plan,
                                  ["data", "vocab"] + pre_after[s])
                        stages.append(f"grid-{arm}-{s}-s{seed}")
                if c.distils:
                    self.distill(s, students[s], seed, None, teachers, plan, ["data", "teacher"] + pre_after[s])
                    stages.append(f"distill-{s}-s{seed}")
        rows = self.task_evaluate(spec, stages + (["teacher"] if c.distils else []))
        export = self.export(spec, rows)
        speed = self.speed(spec, rows, export)
        manifest = {"config": to_dict(c) | {"tasks": [self.task_file]}, "task": self.task_file,
                    "task_name": spec.name, "plan": plan.to_dict(), "runs": self.runs,
                    "sources": {"text": [str(p) for p in src.text], "student_init": {k: str(v) for k, v in starts.items()},
                                "adapted": {k: str(v) for k, v in inits.items()} if c.adapt_steps else {},
                                "teacher": None if src.teacher is None else str(src.teacher), "teacher_name": c.teacher,
                                "unlabelled": transfer_counts},
                    "workers": self.workers}
        write_if_changed(self.out / MANIFEST, json.dumps(manifest, indent=2, ensure_ascii=False, default=str) + "\n")

        def report() -> dict:
            paths = write_task_report(self.out, spec, manifest, rows, export, speed)
            return {"files": [str(p.relative_to(self.out)) for p in paths]}

        self.stage("report", {"runs": self.runs}, report, dirs=[self.out / "report"],
                   after=list(self.stage.fingerprints))
        elapsed = time.perf_counter() - t0
        budget = "" if plan.budget_s is None else f" (budget {plan.budget_s / 60:.0f} min)"
        log(f"{len(self.stage.ran)} stage(s) run, {len(self.stage.skipped)} skipped; {elapsed / 60:.1f} min{budget}")
        return manifest | {"rows": rows, "export": export, "speed": speed, "ran": self.stage.ran,
                           "skipped": self.stage.skipped, "elapsed_s": elapsed}


# --- the report ---------------------------------------------------------------------------------------------

ARM_NAMES = {"random": "fine-tuned alone, random init", "pretrained": "fine-tuned alone, pre-trained start",
             "pd": "PD (pre-trained distillation)", "pd+ft": "PD + fine-tuning", "teacher": "teacher (fine-tuned)"}
ARM_ORDER = ("random", "pretrained", "pd", "pd+ft", "teacher")


def _mean_sd(values: list[float]) -> str:
    if not values:
        return "-"
    sd = f" ± {100 * statistics.stdev(values):.1f}" if len(values) > 1 else ""
    return f"{100 * statistics.mean(values):.1f}{sd}"


def arm_table(rows: list[dict]) -> list[dict]:
    """Per (arm, student): dev and test scores over the seeds."""
    out = []
    keys = sorted({(r["arm"], r.get("student")) for r in rows},
                  key=lambda k: (ARM_ORDER.index(k[0]) if k[0] in ARM_ORDER else 99, str(k[1])))
    for arm, student in keys:
        rs = [r for r in rows if r["arm"] == arm and r.get("student") == student]
        out.append({"arm": arm, "student": student, "seeds": [r.get("seed") for r in rs],
                    "dev": [r["splits"]["dev"]["score"] for r in rs],
                    "test": [r["splits"]["test"]["score"] for r in rs if "test" in r["splits"]]})
    return out


def _metric_names(spec) -> list[str]:
    return list(spec.metrics)


def _confusion_md(conf: dict) -> list[str]:
    labels = conf["labels"]
    lines = ["| true \\ predicted | " + " | ".join(labels) + " |", "|---|" + "---:|" * len(labels)]
    lines += [f"| {lab} | " + " | ".join(str(v) for v in row) + " |" for lab, row in zip(labels, conf["matrix"])]
    return lines


def _per_class_md(pc: dict) -> list[str]:
    lines = ["| class | precision | recall | F1 | support |", "|---|---:|---:|---:|---:|"]
    for lab, m in pc.items():
        lines.append(f"| {lab} | {100 * m['precision']:.1f} | {100 * m['recall']:.1f} | {100 * m['f1']:.1f} | "
                     f"{m['support']} |")
    return lines


def write_task_report(out: Path, spec, manifest: dict, rows: list[dict], export: dict, speed: list[dict]) -> list[Path]:
    """OUT/report/report.md and report.json: the arms side by side, per-class metrics, confusion matrices
    (and their PNGs), sizes and speeds, the int8 gate. Files are named relative to OUT or by their last
    parts, never by this machine's absolute paths."""
    from wellread import env
    from wellread.io import atomic_write_json, atomic_write_text
    from wellread.report import shown_source, teacher_name

    rep = out / "report"
    rep.mkdir(parents=True, exist_ok=True)
    plan = manifest["plan"]
    table = arm_table(rows)
    students = [r for r in rows if r["arm"] != "teacher"]
    best = max(students, key=lambda r: r["score"])
    teacher = next((r for r in rows if r["arm"] == "teacher"), None)
    split = "test" if "test" in best["splits"] else "dev"
    cpu = env.cpu()
    budget = "none" if plan["budget_s"] is None else f"{plan['budget_s'] / 60:.0f} min"
    lines = [f"# wellread recipe on {spec.name}", "",
             f"Task file {shown_source(manifest['task'], str(out))}; {cpu.model}, {cpu.cores} cores usable; "
             f"budget {budget}; "
             f"students {', '.join(manifest['config']['students'])}; seeds "
             f"{', '.join(map(str, manifest['config']['seeds']))}; teacher {teacher_name(manifest)}.", ""]
    if manifest["sources"]["student_init"]:
        lines.append("Students' pre-trained start: " + ", ".join(f"{k} = {shown_source(v, str(out))}" for k, v in
                                                                 manifest["sources"]["student_init"].items()) + ".")
    if manifest["sources"].get("adapted"):
        lines.append(f"Adapted to the task first (`--adapt-steps {manifest['config']['adapt_steps']}`): masked-LM "
                     "pre-training continued on the task's training texts; every arm starts from " + ", ".join(
                         f"{k} = {shown_source(v, str(out))}" for k, v in manifest["sources"]["adapted"].items()) + ".")
    if manifest["sources"]["unlabelled"]:
        lines.append("Unlabelled text in the transfer set: " + "; ".join(
            f"{shown_source(k, str(out))} ({v['inputs']:,} inputs, {v['skipped']:,} blank lines skipped)"
            for k, v in manifest["sources"]["unlabelled"].items()) + ".")
    for note in plan["notes"]:
        lines.append(f"- {note}")
    for cut in plan["cuts"]:
        lines.append(f"- cut to fit the budget: {cut.replace(manifest['task'], spec.name)}")
    lines += ["", f"## The arms (score x100: {' / '.join(_metric_names(spec))}"
                  f"{' (mean)' if len(spec.metrics) > 1 else ''}; mean ± sd over seeds)", "",
              "| arm | student | seeds | dev | test |", "|---|---|---|---:|---:|"]
    for t in table:
        lines.append(f"| {ARM_NAMES.get(t['arm'], t['arm'])} | {t['student'] or '-'} | "
                     f"{', '.join(str(s) for s in t['seeds'] if s is not None) or '-'} | {_mean_sd(t['dev'])} | "
                     f"{_mean_sd(t['test'])} |")
    lines += ["", "Every model's metrics on each split: `evaluate/results.json`.", ""]
    figures = []
    for who, r in (("best student", best), ("teacher", teacher)):
        if r is None:
            continue
        m = r["splits"][split]
        title = ARM_NAMES.get(r["arm"], r["arm"]) + (f", {r['student']}" if r.get("student") else "") \
            + (f", seed {r['seed']}" if r.get("seed") is not None else "")
        lines += [f"## The {who} on {split}: {title}", "",
                  "Metrics: " + ", ".join(f"{k} {100 * v:.1f}" for k, v in m.items()
                                          if isinstance(v, float) and k != "score"), ""]
        if "per_class" in m:
            lines += _per_class_md(m["per_class"]) + [""]
            lines += ["Confusion matrix (rows true, columns predicted):", ""] + _confusion_md(m["confusion"]) + [""]
        name = f"{'student' if who == 'best student' else 'teacher'}-{split}"
        if "confusion" in m:  # drawn from the scores' own matrix, not by predicting the split again
            from wellread.report.task_plots import confusion_png

            png = confusion_png(m["confusion"]["matrix"], m["confusion"]["labels"], rep / f"{name}.png",
                                f"{spec.name} {split}")
        else:
            png = _plot_model(out / r["model"], manifest["task"], split, rep, name)
        figures.append(png)
        lines += [f"![{name}]({png.name})", ""]
    gate = export["gate"]
    lines += ["## Export and serving", "",
              f"The best student on dev ({ARM_NAMES.get(export['arm'], export['arm'])}, `{export['model']}`) "
              f"exported to ONNX in `{SERVE}/`. int8 gate on {gate['split']} ({gate['n']:,} examples), fp32 "
              f"{100 * gate['fp32']:.2f}, at most {gate['max_drop_points']:g} points lost allowed: "
              + "; ".join(f"{b} {100 * r['int8']:.2f} ({r['drop_points']:+.2f} points lost) "
                          + ("**passed**, kept" if r["passed"] else "**refused**, removed")
                          for b, r in gate.get("backends", {"onnx-int8": gate}).items())
              + f". Served: {export['backend']}.", "",
              f"`wellread serve --model {out.name}/{SERVE} --backend {export['backend']}` (from the recipe "
              "directory's parent)", "",
              "## Size and speed on this machine", "",
              f"Sentences/s: {speed[0]['sentences'] if speed else 0:,} dev inputs, one thread, batches of "
              f"{SPEED_BATCH} (sorted by length), after one warm-up batch; {cpu.model}. The machine may be shared: "
              "compare the rows with each other.", "",
              "| model | backend | parameters | file MB | sentences/s |", "|---|---|---:|---:|---:|"]
    for s in speed:
        params = f"{s['parameters'] / 1e6:.1f} M" if s.get("parameters") else "-"
        mb = f"{s['bytes'] / 1e6:.1f}" if s.get("bytes") else "-"
        lines.append(f"| {ARM_NAMES.get(s['what'], s['what'])} | {s['backend']} | {params} | {mb} | "
                     f"{s['sentences_per_s']:,.0f} |")
    md = rep / "report.md"
    atomic_write_text(md, "\n".join(lines) + "\n")
    js = rep / "report.json"
    atomic_write_json(js, {"task": manifest["task"], "name": spec.name, "cpu": cpu.model, "arms": table,
                           "best_student": best, "teacher": teacher, "export": export, "speed": speed,
                           "plan": plan})
    return [md, js, *figures]


def _plot_model(model: Path, task: str, split: str, rep: Path, name: str) -> Path:
    """The confusion matrix (classification) or error plot (regression) of ``model`` on ``split``, as rep/name.png."""
    from wellread.eval.glue import evaluate_model

    tmp = rep / f".plots-{name}"
    r = evaluate_model(model, task, None, split, plots=tmp)
    plot = Path(r["splits"][split]["plot"])
    dest = rep / f"{name}.png"
    os.replace(plot, dest)
    for p in tmp.iterdir():
        p.unlink()
    tmp.rmdir()
    return dest


def format_task_summary(result: dict) -> str:
    """The outcome in a few lines: each arm's mean dev and test score, the export, the report."""
    table = arm_table(result["rows"])
    width = max(len(ARM_NAMES.get(t["arm"], t["arm"])) + len(t["student"] or "") + 3 for t in table)
    lines = [f"{result['task_name'] + ' (x100)':<{width}}  {'dev':>11}  {'test':>11}"]
    for t in table:
        who = ARM_NAMES.get(t["arm"], t["arm"]) + (f" ({t['student']})" if t["student"] else "")
        lines.append(f"{who:<{width}}  {_mean_sd(t['dev']):>11}  {_mean_sd(t['test']):>11}")
    e = result["export"]
    g = e["gate"]
    gates = ", ".join(f"{b} {'passed' if r['passed'] else 'refused'}: {r['drop_points']:+.2f}"
                      for b, r in g.get("backends", {"int8": g}).items())
    lines.append(f"export: {e['arm']} -> {Path(result['config']['out']) / SERVE} ({e['backend']}; int8 gate "
                 f"{gates} points vs fp32)")
    lines.append(f"report: {Path(result['config']['out']) / 'report' / 'report.md'}")
    return "\n".join(lines)


def run_task_recipe(cfg: TaskRecipeConfig) -> dict:
    return TaskRecipe(cfg).run()


__all__ = ["TaskRecipeConfig", "TaskRecipe", "run_task_recipe", "format_task_summary", "int8_gate", "sample_task",
           "write_task_report"]
