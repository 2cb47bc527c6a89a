"""GLUE, the GLUE diagnostic (AX) and HANS: one task table.

Every task is a row of ``TASKS`` (habit 17: data, not a class per task): where its files live, how each
split's columns are laid out, its labels in one canonical order, its metrics and its leaderboard file.
``wellread.data.task_files.read_split`` reads a split of the official GLUE layout or of a local Hugging
Face ``datasets`` copy (``hf_glue.py``).
"""

from __future__ import annotations

import difflib
import re

from wellread.data.task_spec import Example, HFSpec, Layout, SplitData, TaskSpec
from wellread.errors import WellreadError

__all__ = ["Example", "HFSpec", "Layout", "SplitData", "TaskSpec", "TASKS", "LAST", "get_task"]

LAST = -1  # a label column given as LAST is the row's last field (MNLI's gold_label)


# --- the table -----------------------------------------------------------------------------------

_PAIR = ("index", "sentence1", "sentence2")
_MNLI_TEXT = dict(text_a="sentence1", text_b="sentence2", index="index")
_NLI2 = ("entailment", "not_entailment")
_MNLI_LABELS = ("contradiction", "entailment", "neutral")  # GLUE's order, kept in every model config
_HF_MNLI = ("entailment", "neutral", "contradiction")  # the hub's ClassLabel order: mapped by name
_DEV = {"validation": "dev"}
_AX_META = ("lexical semantics", "predicate-argument structure", "logic", "knowledge", "domain")


def _pair_task(name: str, folder: str, a: str, b: str, labels: tuple[str, ...], hf: HFSpec,
               aliases: tuple[str, ...] = ()) -> TaskSpec:
    """QNLI / RTE / WNLI: ``index <a> <b> label``; test without label."""
    head = ("index", a, b)
    return TaskSpec(
        name=name, folder=folder, labels=labels, metrics=("accuracy",), dev_splits=("dev",),
        splits={"train": ("train.tsv", Layout(a, b, "label", "index", header=(*head, "label"))),
                "dev": ("dev.tsv", Layout(a, b, "label", "index", header=(*head, "label"))),
                "test": ("test.tsv", Layout(a, b, None, "index", header=head))},
        submissions={"test": f"{folder}.tsv"}, aliases=aliases, split_aliases=_DEV, hf=hf,
    )


_COLA_ROW = Layout(text_a=3, label=1, n_columns=4)  # source, label, original mark, sentence
_MRPC_HEAD = ("#1 id", "#2 id", "#1 string", "#2 string")
_MRPC = Layout("#1 string", "#2 string", "quality", header=("quality", *_MRPC_HEAD))
_STSB_HEAD = ("index", "genre", "filename", "year", "old_index", "source1", "source2", "sentence1", "sentence2")
_STSB = Layout("sentence1", "sentence2", "score", "index", header=(*_STSB_HEAD, "score"))
_QQP_HEAD = ("id", "qid1", "qid2", "question1", "question2", "is_duplicate")
_MNLI_TRAIN = Layout(**_MNLI_TEXT, label=LAST, header=("index", "genre", "sentence1", "sentence2", "label1", "gold_label"))
_MNLI_DEV = Layout(**_MNLI_TEXT, label=LAST, header=("index", "genre", "sentence1", "sentence2", "label5", "gold_label"))
_MNLI_TEST = Layout(**_MNLI_TEXT, header=("index", "genre", "sentence1", "sentence2"))
_HANS_HEAD = ("gold_label", "sentence1", "sentence2", "pairid", "heuristic", "subcase")

TASKS: dict[str, TaskSpec] = {t.name: t for t in (
    TaskSpec(
        name="cola", folder="CoLA", labels=("0", "1"), metrics=("mcc",), dev_splits=("dev",),
        splits={"train": ("train.tsv", _COLA_ROW), "dev": ("dev.tsv", _COLA_ROW),
                "in_domain_dev": ("in_domain_dev.tsv", _COLA_ROW),
                "out_of_domain_dev": ("out_of_domain_dev.tsv", _COLA_ROW),
                "test": ("test.tsv", Layout("sentence", index="index", header=("index", "sentence")))},
        submissions={"test": "CoLA.tsv"}, positive_label="1", split_aliases=_DEV,
        hf=HFSpec("cola", "sentence", None, {"train": "train", "dev": "validation", "test": "test"},
                  ("unacceptable", "acceptable"), {"unacceptable": "0", "acceptable": "1"}),
    ),
    TaskSpec(
        name="sst2", folder="SST-2", labels=("0", "1"), metrics=("accuracy",), dev_splits=("dev",),
        splits={"train": ("train.tsv", Layout("sentence", label="label", header=("sentence", "label"))),
                "dev": ("dev.tsv", Layout("sentence", label="label", header=("sentence", "label"))),
                "test": ("test.tsv", Layout("sentence", index="index", header=("index", "sentence")))},
        submissions={"test": "SST-2.tsv"}, aliases=("sst",), split_aliases=_DEV,
        hf=HFSpec("sst2", "sentence", None, {"train": "train", "dev": "validation", "test": "test"},
                  ("negative", "positive"), {"negative": "0", "positive": "1"}),
    ),
    TaskSpec(
        name="mrpc", folder="MRPC", labels=("0", "1"), metrics=("f1", "accuracy"), dev_splits=("dev",),
        splits={"train": ("train.tsv", _MRPC), "dev": ("dev.tsv", _MRPC),
                "test": ("test.tsv", Layout("#1 string", "#2 string", None, "index", header=("index", *_MRPC_HEAD)))},
        submissions={"test": "MRPC.tsv"}, positive_label="1", split_aliases=_DEV,
        hf=HFSpec("mrpc", "sentence1", "sentence2", {"train": "train", "dev": "validation", "test": "test"},
                  ("not_equivalent", "equivalent"), {"not_equivalent": "0", "equivalent": "1"}),
    ),
    TaskSpec(
        name="stsb", folder="STS-B", labels=None, metrics=("pearson", "spearman"), dev_splits=("dev",),
        splits={"train": ("train.tsv", _STSB), "dev": ("dev.tsv", _STSB),
                "test": ("test.tsv", Layout("sentence1", "sentence2", None, "index", header=_STSB_HEAD))},
        submissions={"test": "STS-B.tsv"}, aliases=("sts",), split_aliases=_DEV,
        hf=HFSpec("stsb", "sentence1", "sentence2", {"train": "train", "dev": "validation", "test": "test"}, None),
    ),
    TaskSpec(
        name="qqp", folder="QQP", labels=("0", "1"), metrics=("f1", "accuracy"), dev_splits=("dev",),
        splits={"train": ("train.tsv", Layout("question1", "question2", "is_duplicate", "id", header=_QQP_HEAD,
                                              skip_malformed=True)),
                "dev": ("dev.tsv", Layout("question1", "question2", "is_duplicate", "id", header=_QQP_HEAD)),
                "test": ("test.tsv", Layout("question1", "question2", None, "id", header=("id", "question1", "question2")))},
        submissions={"test": "QQP.tsv"}, positive_label="1", split_aliases=_DEV,
        hf=HFSpec("qqp", "question1", "question2", {"train": "train", "dev": "validation", "test": "test"},
                  ("not_duplicate", "duplicate"), {"not_duplicate": "0", "duplicate": "1"}),
    ),
    TaskSpec(
        name="mnli", folder="MNLI", labels=_MNLI_LABELS, metrics=("accuracy",),
        dev_splits=("dev_matched", "dev_mismatched"),
        splits={"train": ("train.tsv", _MNLI_TRAIN),
                "dev_matched": ("dev_matched.tsv", _MNLI_DEV), "dev_mismatched": ("dev_mismatched.tsv", _MNLI_DEV),
                "test_matched": ("test_matched.tsv", _MNLI_TEST), "test_mismatched": ("test_mismatched.tsv", _MNLI_TEST)},
        submissions={"test_matched": "MNLI-m.tsv", "test_mismatched": "MNLI-mm.tsv"},
        aliases=("mnlim", "mnlimm", "mnlimatched", "mnlimismatched", "multinli"),
        split_aliases={"dev_m": "dev_matched", "dev_mm": "dev_mismatched",
                       "test_m": "test_matched", "test_mm": "test_mismatched"},
        hf=HFSpec("mnli", "premise", "hypothesis",
                  {"train": "train", "dev_matched": "validation_matched", "dev_mismatched": "validation_mismatched",
                   "test_matched": "test_matched", "test_mismatched": "test_mismatched"}, _HF_MNLI),
    ),
    _pair_task("qnli", "QNLI", "question", "sentence", _NLI2,
               HFSpec("qnli", "question", "sentence", {"train": "train", "dev": "validation", "test": "test"}, _NLI2)),
    _pair_task("rte", "RTE", "sentence1", "sentence2", _NLI2,
               HFSpec("rte", "sentence1", "sentence2", {"train": "train", "dev": "validation", "test": "test"}, _NLI2)),
    _pair_task("wnli", "WNLI", "sentence1", "sentence2", ("0", "1"),
               HFSpec("wnli", "sentence1", "sentence2", {"train": "train", "dev": "validation", "test": "test"},
                      ("not_entailment", "entailment"), {"not_entailment": "0", "entailment": "1"})),
    TaskSpec(
        name="ax", folder="AX", labels=_MNLI_LABELS, metrics=("mcc",), dev_splits=(),
        splits={"test": ("diagnostic.tsv", Layout("sentence1", "sentence2", None, "index", header=_PAIR)),
                "full": ("diagnostic-full.tsv", Layout("premise", "hypothesis", "label",
                                                       header=("premise", "hypothesis", "label"), meta=_AX_META))},
        submissions={"test": "AX.tsv"}, aliases=("diagnostic", "glueax"), folder_aliases=("diagnostic",),
        split_aliases={"diagnostic": "test", "diagnostic_full": "full"}, evaluate_with="mnli",
        file_aliases={"test": ("AX.tsv",)},  # the name it is downloaded under (dl.fbaipublicfiles.com/glue/data/AX.tsv)
        hf=HFSpec("ax", "premise", "hypothesis", {"test": "test"}, _HF_MNLI),
    ),
    TaskSpec(
        name="hans", folder="HANS", labels=("entailment", "non-entailment"), metrics=("accuracy",), dev_splits=(),
        splits={"evaluation": ("heuristics_evaluation_set.txt",
                               Layout("sentence1", "sentence2", "gold_label", "pairid", header=_HANS_HEAD,
                                      meta=("heuristic", "subcase", "template")))},
        split_aliases={"test": "evaluation", "dev": "evaluation", "validation": "evaluation"},
        evaluate_with="mnli",
    ),
)}


def _norm(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower())


_BY_NAME: dict[str, str] = {}
for _t in TASKS.values():
    for _a in (_t.name, _t.folder, *_t.aliases):
        _BY_NAME[_norm(_a)] = _t.name


def get_task(name: str | TaskSpec) -> TaskSpec:
    """The task for a name, any case and punctuation ("SST-2", "sst2", "STS-B", "MNLI-mm", "AX"), or a task file."""
    if isinstance(name, TaskSpec):
        return name
    from wellread.data import own_task  # here, not at the top: it imports pydantic, needed only for a task file

    if own_task.is_task_file(name):
        return own_task.load_task_file(name)
    key = _norm(name)
    if key in _BY_NAME:
        return TASKS[_BY_NAME[key]]
    close = difflib.get_close_matches(key, list(_BY_NAME), n=1, cutoff=0.6)
    hint = f"; did you mean {TASKS[_BY_NAME[close[0]]].name}?" if close else ""
    raise WellreadError(f"unknown task {name!r} (tasks: {', '.join(TASKS)}){hint}", field="task")
