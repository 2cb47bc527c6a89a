"""GLUE, the GLUE diagnostic (AX) and HANS: one task table, and readers of their files.

Every task is a row of ``TASKS`` (habit 17: data, not a class per task): where its files live, how each
split's columns are laid out, its labels in one canonical order, its metrics and its leaderboard file.
``read_split`` reads a split of the official GLUE layout (``glue_data/<Folder>/<split>.tsv``) or of a
local Hugging Face ``datasets`` copy (parquet or ``save_to_disk`` arrow; see ``hf_glue.py``).

TSV files are read line by line with quoting off: GLUE sentences hold unbalanced ``"`` that a CSV
quote rule would use to swallow the following lines. A UTF-8 byte-order mark and ``\\r\\n`` endings
are tolerated. Labels come out as the canonical names (``"0"``/``"1"`` for the 0/1 tasks, MNLI's
``contradiction``/``entailment``/``neutral``), STS-B scores as floats, test labels as ``None``.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from wellread.errors import WellreadError
from wellread.io import open_text

LAST = -1  # a label column given as LAST is the row's last field (MNLI's gold_label)


@dataclass(frozen=True, slots=True)
class Example:
    """One row of a task: a sentence (pair), its label name / score (None when unlabelled), extras.

    ``meta`` holds what some tasks need beyond the text: the test ``index`` (for submissions), HANS's
    heuristic/subcase/template, the AX diagnostic categories.
    """

    guid: str
    text_a: str
    text_b: str | None
    label: str | float | None
    meta: dict | None = None


@dataclass(frozen=True)
class Layout:
    """The columns of one split's file.

    With ``header`` (the column names the header line must include, compared case-insensitively) the
    columns are named; a row must have as many fields as the header. Without a header they are
    0-based positions and a row must have ``n_columns`` fields. ``label=None`` means unlabelled.
    """

    text_a: str | int
    text_b: str | int | None = None
    label: str | int | None = None
    index: str | int | None = None
    header: tuple[str, ...] | None = None
    n_columns: int | None = None
    meta: tuple[str, ...] = ()  # optional header columns copied into Example.meta when present
    skip_malformed: bool = False  # skip (and count) rows with a wrong column count or a bad label

    def __post_init__(self) -> None:
        assert (self.header is None) != (self.n_columns is None), "a layout has a header or a column count"


@dataclass(frozen=True)
class HFSpec:
    """Where a task is in a Hugging Face ``datasets`` copy of GLUE (config, split and column names).

    ``label_names`` is the ClassLabel order the hub's GLUE uses, a fallback when the files do not
    carry it; ``to_canonical`` maps those names onto ours (identity for a name not listed).
    """

    config: str
    text_a: str
    text_b: str | None
    splits: Mapping[str, str]  # our split -> HF split
    label_names: tuple[str, ...] | None
    to_canonical: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class TaskSpec:
    """A task: files, column layouts, labels (canonical order), metrics, submission file names."""

    name: str
    folder: str
    splits: Mapping[str, tuple[str, Layout]]  # split -> (file name, layout)
    labels: tuple[str, ...] | None  # canonical order (= a model's id2label); None for regression
    metrics: tuple[str, ...]  # the first is the main one
    dev_splits: tuple[str, ...]  # labelled splits to select hyper-parameters on
    submissions: Mapping[str, str] = field(default_factory=dict)  # test split -> leaderboard file
    aliases: tuple[str, ...] = ()
    folder_aliases: tuple[str, ...] = ()
    split_aliases: Mapping[str, str] = field(default_factory=dict)
    file_aliases: Mapping[str, tuple[str, ...]] = field(default_factory=dict)  # split -> other names its file has
    positive_label: str | None = None  # the class F1 is computed for
    evaluate_with: str | None = None  # the task whose model predicts this one (AX, HANS: "mnli")
    hf: HFSpec | None = None

    @property
    def is_regression(self) -> bool:
        return self.labels is None

    @property
    def main_metric(self) -> str:
        return self.metrics[0]

    @property
    def test_splits(self) -> tuple[str, ...]:
        """Unlabelled splits, predicted for the leaderboard."""
        return tuple(s for s, (_, lay) in self.splits.items() if lay.label is None)

    @property
    def label2id(self) -> dict[str, int]:
        return {} if self.labels is None else {name: i for i, name in enumerate(self.labels)}

    @property
    def id2label(self) -> dict[int, str]:
        return {} if self.labels is None else dict(enumerate(self.labels))

    def file_names(self, split: str) -> tuple[str, ...]:
        """The names ``split``'s file may have in a task folder, the official one first."""
        return (self.splits[split][0], *self.file_aliases.get(split, ()))

    def split_name(self, split: str) -> str:
        """Our name for ``split`` (accepts HF's ``validation``…); unknown -> WellreadError."""
        s = split.strip().lower().replace("-", "_")
        s = self.split_aliases.get(s, s)
        if s in self.splits:
            return s
        for ours, theirs in (self.hf.splits.items() if self.hf else ()):
            if s == theirs:
                return ours
        raise WellreadError(f"task {self.name} has no split {split!r} (splits: {', '.join(self.splits)})",
                            field="split")


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
    """The task for a name, any case and punctuation ("SST-2", "sst2", "STS-B", "MNLI-mm", "AX")."""
    if isinstance(name, TaskSpec):
        return name
    key = _norm(name)
    if key in _BY_NAME:
        return TASKS[_BY_NAME[key]]
    close = difflib.get_close_matches(key, list(_BY_NAME), n=1, cutoff=0.6)
    hint = f"; did you mean {TASKS[_BY_NAME[close[0]]].name}?" if close else ""
    raise WellreadError(f"unknown task {name!r} (tasks: {', '.join(TASKS)}){hint}", field="task")


# --- finding the files ---------------------------------------------------------------------------

def _listing(d: Path) -> str:
    names = sorted(p.name + ("/" if p.is_dir() else "") for p in d.iterdir() if not p.name.startswith("."))
    return ", ".join(names[:20]) + (" ..." if len(names) > 20 else "") if names else "nothing"


def _present(spec: TaskSpec, d: Path) -> dict[str, Path]:
    """split -> file, for the splits of ``spec`` whose file is in ``d``."""
    found = {}
    for split in spec.splits:
        for name in spec.file_names(split):
            if (d / name).is_file():
                found[split] = d / name
                break
    return found


def _is_task_dir(spec: TaskSpec, d: Path) -> bool:
    return bool(_present(spec, d))


def task_dir(task: str | TaskSpec, data_dir: str | Path) -> Path | None:
    """The folder holding ``task``'s GLUE files: ``data_dir`` itself or its ``<Folder>/``; None if absent."""
    spec = get_task(task)
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise WellreadError("no such data directory", file=data_dir)
    wanted = {_norm(n) for n in (spec.folder, *spec.folder_aliases)}
    present = _present(spec, data_dir)
    if present:
        # train.tsv is in many task folders: refuse another task's folder rather than misread it
        other = _BY_NAME.get(_norm(data_dir.name))
        if other is not None and other != spec.name and _norm(data_dir.name) not in wanted:
            theirs = {n for s in TASKS[other].splits for n in TASKS[other].file_names(s)}
            if all(p.name in theirs for p in present.values()):
                raise WellreadError(f"this is the folder of task {other}, not {spec.name}", file=data_dir)
        return data_dir
    for child in sorted(data_dir.iterdir()):
        if child.is_dir() and _norm(child.name) in wanted and _is_task_dir(spec, child):
            return child
    return None


@dataclass
class SplitData:
    """The examples of one split, the rows skipped (1-based line number, reason) and where they came from."""

    task: TaskSpec
    split: str
    path: Path
    examples: list[Example]
    skipped: list[tuple[int, str]]
    source: str = "tsv"  # "tsv", "parquet" or "arrow"


def split_files(task: str | TaskSpec, data_dir: str | Path) -> dict[str, Path]:
    """The splits of ``task`` present under ``data_dir`` (GLUE TSV layout, else a HF copy) and their files."""
    spec = get_task(task)
    folder = task_dir(spec, data_dir)
    if folder is not None:
        return _present(spec, folder)
    from wellread.data import hf_glue

    found = {s: files[0] for s in spec.splits if (files := hf_glue.find_files(spec, Path(data_dir), s))}
    if not found:
        raise WellreadError(
            f"no {spec.folder}/ folder (nor a Hugging Face datasets copy of {spec.name}) here; found: "
            f"{_listing(Path(data_dir))}", file=data_dir)
    return found


def read_split(task: str | TaskSpec, data_dir: str | Path, split: str) -> SplitData:
    """Read one split of a task from a GLUE root, a task folder, or a HF ``datasets`` copy.

    Raises WellreadError (file, line, field) on a wrong column count, a label outside the task's set,
    a bad score, an empty split or a missing folder/file (listing what is there). QQP's training file
    is the exception: rows with a wrong column count or a label that is not 0/1 are skipped and listed
    in ``skipped`` (the GLUE release has a few, broken by newlines inside questions).
    """
    spec = get_task(task)
    split = spec.split_name(split)
    folder = task_dir(spec, data_dir)
    if folder is None:
        from wellread.data import hf_glue

        if spec.hf is not None and hf_glue.find_files(spec, Path(data_dir), split):
            return hf_glue.read_hf_split(spec, Path(data_dir), split)
        split_files(spec, data_dir)  # raises, listing what is there (or finds HF files of other splits)
        raise WellreadError(f"no {split} split of {spec.name} here; found: {_listing(Path(data_dir))}",
                            file=data_dir)
    fname, layout = spec.splits[split]
    path = _present(spec, folder).get(split)
    if path is None:
        raise WellreadError(f"no {fname} for the {split} split of {spec.name}; found: {_listing(folder)}",
                            file=folder / fname)
    examples: list[Example] = []
    skipped: list[tuple[int, str]] = []
    for lineno, item in _read_rows(spec, split, layout, path):
        if isinstance(item, str):
            skipped.append((lineno, item))
        else:
            examples.append(item)
    if not examples:
        extra = f" ({len(skipped)} rows skipped)" if skipped else ""
        raise WellreadError(f"the {split} split of {spec.name} has no examples{extra}", file=path)
    return SplitData(spec, split, path, examples, skipped, "tsv")


def _resolve(layout: Layout, header: list[str] | None, path: Path) -> dict[str, int | None]:
    """Column positions of the layout's fields, from the header names (or the fixed positions)."""
    cols = {"text_a": layout.text_a, "text_b": layout.text_b, "label": layout.label, "index": layout.index}
    if header is None:
        return cols  # positions already
    pos = {name: i for i, name in enumerate(header)}
    missing = [n for n in layout.header or () if n not in pos]
    if missing:
        raise WellreadError(f"header lacks column(s) {', '.join(missing)} (header: {' | '.join(header)})",
                            file=path, line=1, field=missing[0])
    return {k: (v if v is None or isinstance(v, int) else pos[v]) for k, v in cols.items()}


def _read_rows(spec: TaskSpec, split: str, layout: Layout, path: Path) -> Iterator[tuple[int, Example | str]]:
    """Yield (line number, Example) for each row, or (line number, reason) for a row skipped."""
    labels = set(spec.labels or ())
    with open_text(path) as f:  # a byte that is not UTF-8 is an error naming its line
        header: list[str] | None = None
        n_cols = layout.n_columns
        cols: dict[str, int | None] = {}
        meta_cols: list[tuple[str, int]] = []
        for lineno, raw in enumerate(f, start=1):
            line = raw.rstrip("\n").removesuffix("\r")
            if lineno == 1 and layout.header is not None:
                header = [h.strip().lstrip("\ufeff").lower() for h in line.split("\t")]
                n_cols = len(header)
                cols = _resolve(layout, header, path)
                meta_cols = [(m, header.index(m)) for m in layout.meta if m in header]
                continue
            if lineno == 1:
                cols = _resolve(layout, None, path)
            if not line.strip():
                yield lineno, "blank line"
                continue
            row = line.split("\t")
            if len(row) != n_cols:
                msg = f"expected {n_cols} tab-separated columns, found {len(row)}"
                if layout.skip_malformed:
                    yield lineno, f"wrong column count ({len(row)}, expected {n_cols})"
                    continue
                raise WellreadError(msg, file=path, line=lineno, field="columns")
            label: str | float | None = None
            li = cols["label"]
            if li is not None:
                value = row[li].strip()
                name = header[li] if header else f"column {li + 1 if li >= 0 else n_cols}"
                if spec.labels is None:
                    label = _score(value, path, lineno, name)
                elif value in labels:
                    label = value
                elif layout.skip_malformed:
                    yield lineno, f"label {value!r} is not one of {'/'.join(spec.labels)}"
                    continue
                else:
                    raise WellreadError(f"label {value!r} is not one of {', '.join(spec.labels)}",
                                        file=path, line=lineno, field=name)
            ii = cols["index"]
            index = row[ii].strip() if ii is not None else str(_row_number(lineno, header))
            meta: dict | None = {m: row[i] for m, i in meta_cols} if meta_cols else None
            if li is None:
                meta = {**(meta or {}), "index": index}
            tb = cols["text_b"]
            yield lineno, Example(f"{split}-{index}", row[cols["text_a"]], None if tb is None else row[tb], label, meta)


def _row_number(lineno: int, header: list[str] | None) -> int:
    """The 0-based data-row number of a physical line (the header is not a row)."""
    return lineno - 1 - (header is not None)


def _score(value: str, path: Path, lineno: int, name: str) -> float:
    try:
        score = float(value)
    except ValueError:
        raise WellreadError(f"score {value!r} is not a number", file=path, line=lineno, field=name) from None
    if not 0.0 <= score <= 5.0:
        raise WellreadError(f"score {score} is outside 0-5", file=path, line=lineno, field=name)
    return score
