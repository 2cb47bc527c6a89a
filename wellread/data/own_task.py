"""A user's own task: a small YAML file describing labelled files, compiled into a ``TaskSpec``.

The GLUE tasks are rows of ``tasks.TASKS``; a task file gives the same ``TaskSpec`` (name, splits,
labels in order, metrics, dev splits), so every command takes ``--task tickets.yaml`` where it takes a
GLUE name and goes down the same path from there (``task_files.read_split`` hands such a task's splits
to ``OwnTask.read``). Keys (docs/own-task.md has the full story)::

    name: tickets
    kind: classification            # or regression; a new kind plugs in through KINDS
    text: body                      # column / JSON field;  text_pair: other  for sentence pairs
    label: category
    train: data/train.csv           # .csv .tsv .txt .jsonl .json .parquet, .gz of them, a save_to_disk dir
    dev: data/dev.csv               # optional: otherwise dev_fraction (default 0.1), stratified, seeded
    test: data/test.csv             # optional, labelled or not
    # or one file for every split:  file: all.tsv;  split_column: set;  splits: {train: TRAIN, dev: TRIAL}
    # or from the hub:  hub: owner/name;  config: default;  splits: {train: train, dev: validation}
    format: csv; delimiter: ";"; header: false; columns: [text, label]; quoting: none
    labels: [billing, bug, other]   # optional order (default: the training labels, sorted)
    metric: macro_f1; positive: bug

Files are parsed by libraries, never by hand: Python's ``csv`` module (quoted fields with delimiters and
newlines, CRLF), ``json`` for JSON lines, pyarrow for parquet and ``datasets`` ``save_to_disk``
directories (read with pyarrow; ``datasets`` itself is not needed). A BOM is dropped, ``.gz`` is
decompressed, and text that is not UTF-8 is refused naming its line.

Every split is read and checked when the task is loaded, before anything is written: a missing
column (naming those that exist), an empty file or split, a row with the wrong number of fields
(refused; ``bad_rows: skip`` counts and skips them instead), a dev/test label training never saw,
a class with fewer than two training examples, a label column of many distinct numbers under
``kind: classification``, a regression label that is not a number. Blank lines and rows whose text
is empty are skipped and counted (``wellread data stats`` lists them).
"""

from __future__ import annotations

import codecs
import csv
import gzip
import hashlib
import io
import json
import math
import re
import zlib
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import yaml
from pydantic import BaseModel, ConfigDict, StrictBool, StrictFloat, StrictInt, StrictStr, ValidationError

from wellread import hub
from wellread.data.arrow_files import record_batches
from wellread.data.task_spec import Example, Layout, SplitData, TaskSpec
from wellread.errors import WellreadError

SPLITS = ("train", "dev", "test")
MAX_NUMERIC_CLASSES = 20  # a classification label column of more distinct numbers is probably a score
CLASSIFICATION_METRICS = ("accuracy", "macro_f1", "f1", "mcc")
REGRESSION_METRICS = ("pearson", "spearman")
_FORMATS = ("csv", "tsv", "txt", "jsonl", "json", "parquet", "arrow")
_SUFFIX_FORMAT = {".csv": "csv", ".tsv": "tsv", ".txt": "txt", ".jsonl": "jsonl", ".json": "json",
                  ".parquet": "parquet", ".arrow": "arrow"}


class TaskFile(BaseModel):
    """The task file's keys, typed; an unknown key or a wrong type is refused (one line, naming it)."""

    model_config = ConfigDict(extra="forbid")

    name: StrictStr
    kind: Literal["classification", "regression"] = "classification"
    text: StrictStr
    text_pair: StrictStr | None = None
    label: StrictStr
    train: StrictStr | None = None
    dev: StrictStr | None = None
    test: StrictStr | None = None
    file: StrictStr | None = None
    hub: StrictStr | None = None
    config: StrictStr = "default"
    split_column: StrictStr | None = None
    splits: dict[Literal["train", "dev", "test"], StrictStr | StrictInt] | None = None
    dev_fraction: StrictFloat | None = None
    seed: StrictInt = 0
    format: Literal["csv", "tsv", "txt", "jsonl", "json", "parquet", "arrow"] | None = None
    delimiter: StrictStr | None = None
    header: StrictBool = True
    columns: list[StrictStr] | None = None
    quoting: Literal["minimal", "none"] = "minimal"
    bad_rows: Literal["error", "skip"] = "error"
    labels: list[StrictStr | StrictInt] | None = None
    metric: StrictStr | None = None
    positive: StrictStr | StrictInt | None = None


def _schema_error(path: Path, e: ValidationError) -> WellreadError:
    err = e.errors()[0]
    key = ".".join(str(p) for p in err["loc"]) or "?"
    if err["type"] == "extra_forbidden":
        known = ", ".join(TaskFile.model_fields)
        return WellreadError(f"unknown key (keys: {known})", file=path, field=key)
    if err["type"] == "missing":
        return WellreadError("is required", file=path, field=key)
    got = err.get("input")
    shown = repr(got) if not isinstance(got, (dict, list)) else type(got).__name__
    return WellreadError(f"{err['msg']} (got {shown})", file=path, field=key)


def _check_keys(tf: TaskFile, path: Path) -> None:
    """Cross-key rules the types cannot say."""
    def bad(msg: str, key: str) -> WellreadError:
        return WellreadError(msg, file=path, field=key)

    if not tf.name.strip():
        raise bad("must not be empty", "name")
    if tf.hub is not None:
        for k in (*SPLITS, "file", "split_column"):
            if getattr(tf, k) is not None:
                raise bad(f"give either hub (with config and splits) or {k}, not both", k)
        if not re.fullmatch(r"[A-Za-z0-9][\w.-]*/[\w.-]+", tf.hub) or ".." in tf.hub:
            raise bad(f"not a hub data set id: {tf.hub!r} (expected owner/name)", "hub")
        if tf.splits is not None and "train" not in tf.splits:
            raise bad("must name the hub split to train on", "splits")
    elif tf.file is not None:
        for k in SPLITS:
            if getattr(tf, k) is not None:
                raise bad(f"give either file (with split_column and splits) or {k}, not both", k)
        if tf.split_column is None or not tf.splits:
            raise bad("file: needs split_column and splits ({train: VALUE, dev: VALUE, ...})",
                      "split_column" if tf.split_column is None else "splits")
        if "train" not in tf.splits:
            raise bad("must name the value of the train split", "splits")
    else:
        if tf.train is None:
            raise bad("is required (or file, split_column and splits; or hub)", "train")
        if tf.split_column is not None or tf.splits is not None:
            raise bad("split_column and splits go with file:", "split_column" if tf.split_column else "splits")
    has_dev = tf.dev is not None or (tf.splits is not None and "dev" in tf.splits)
    if tf.dev_fraction is not None:
        if has_dev:
            raise bad("the task has a dev split already", "dev_fraction")
        if not 0 < tf.dev_fraction < 1:
            raise bad("must be between 0 and 1", "dev_fraction")
    if tf.delimiter is not None and len(tf.delimiter) != 1:
        raise bad("must be one character (use \"\\t\" for tab)", "delimiter")
    if not tf.header and not tf.columns:
        raise bad("a file without a header needs columns: [name, ...]", "columns")
    if tf.columns is not None and len(set(tf.columns)) != len(tf.columns):
        raise bad("holds a name twice", "columns")
    allowed = REGRESSION_METRICS if tf.kind == "regression" else CLASSIFICATION_METRICS
    if tf.metric is not None and tf.metric not in allowed:
        raise bad(f"{tf.metric!r} is not a {tf.kind} metric ({', '.join(allowed)})", "metric")
    if tf.kind == "regression":
        for k in ("labels", "positive"):
            if getattr(tf, k) is not None:
                raise bad("applies to classification only", k)
    if tf.metric == "f1" and tf.positive is None:
        raise bad("metric f1 needs positive: (the class F1 is computed for)", "positive")


# --- reading rows ----------------------------------------------------------------------------------

@dataclass
class _Rows:
    """The rows of one file: its columns, then (line or row number, {column: value}) or (line, reason)."""

    path: Path
    format: str
    columns: list[str]
    rows: list[tuple[int, dict | str]]


def _format_of(path: Path, tf: TaskFile) -> str:
    if tf.format is not None:
        return tf.format
    if path.is_dir():
        return "arrow"
    name = path.name[:-3] if path.name.endswith(".gz") else path.name
    fmt = _SUFFIX_FORMAT.get(Path(name).suffix.lower())
    if fmt is None:
        raise WellreadError(f"cannot tell the format from the name; set format: ({', '.join(_FORMATS)})",
                            file=path, field="format")
    return fmt


def _text_of(path: Path) -> str:
    """The file's text: .gz decompressed, UTF-8 checked (the first bad byte's line named), a BOM dropped."""
    try:
        data = path.read_bytes()
        if path.name.endswith(".gz"):
            data = gzip.decompress(data)
    except (OSError, EOFError, zlib.error) as e:
        raise WellreadError(f"cannot read: {e}", file=path) from None
    data = data.removeprefix(codecs.BOM_UTF8)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data[:e.start].count(b"\n") + 1
        raise WellreadError(f"not UTF-8 text (byte 0x{data[e.start]:02x}); re-save the file as UTF-8",
                            file=path, line=line) from None


def _read_delimited(path: Path, fmt: str, tf: TaskFile) -> _Rows:
    delimiter = tf.delimiter or ("," if fmt == "csv" else "\t")
    quoting = csv.QUOTE_NONE if tf.quoting == "none" else csv.QUOTE_MINIMAL
    reader = csv.reader(io.StringIO(_text_of(path), newline=""), delimiter=delimiter, quoting=quoting,
                        strict=True)
    columns = list(tf.columns) if tf.columns else None
    rows: list[tuple[int, dict | str]] = []
    header_pending = tf.header  # the first record is the header (columns: renames it)
    line = 1
    try:
        for fields in reader:
            start, line = line, reader.line_num + 1
            if header_pending:
                header_pending = False
                columns = columns or [h.strip() for h in fields]
                continue
            assert columns is not None
            if not fields or (len(fields) == 1 and not fields[0].strip()):
                rows.append((start, "blank line"))
                continue
            if len(fields) != len(columns):
                why = f"{len(fields)} fields, expected {len(columns)} ({', '.join(columns)})"
                if tf.bad_rows == "skip":
                    rows.append((start, f"wrong number of fields ({len(fields)}, expected {len(columns)})"))
                    continue
                raise WellreadError(f"{why}; set delimiter/quoting, or bad_rows: skip to count and skip such rows",
                                    file=path, line=start, field="columns")
            rows.append((start, dict(zip(columns, fields))))
    except csv.Error as e:
        raise WellreadError(f"not valid {fmt.upper()}: {e} (a quote that never closes? try quoting: none)",
                            file=path, line=line) from None
    if columns is None or (not tf.header and not rows):
        raise WellreadError("empty file", file=path)
    return _Rows(path, fmt, columns, rows)


def _read_json(path: Path, fmt: str) -> _Rows:
    text = _text_of(path)
    rows: list[tuple[int, dict | str]] = []
    if fmt == "json" and text.lstrip().startswith("["):
        try:
            records = json.loads(text)
        except ValueError as e:
            raise WellreadError(f"not JSON ({e})", file=path) from None
        items = list(enumerate(records, 1))
    else:
        items = []
        lines = text.split("\n")  # not splitlines(): a JSON string may hold U+2028
        if lines[-1] == "":
            lines.pop()  # the final newline ends the last line
        for lineno, line in enumerate(lines, 1):
            if not line.strip():
                rows.append((lineno, "blank line"))
                continue
            try:
                items.append((lineno, json.loads(line)))
            except ValueError as e:
                raise WellreadError(f"not JSON ({e})", file=path, line=lineno) from None
    columns: dict[str, None] = {}
    for lineno, rec in items:
        if not isinstance(rec, dict):
            raise WellreadError(f"expected a JSON object, found {type(rec).__name__}", file=path, line=lineno)
        columns.update(dict.fromkeys(rec))
        rows.append((lineno, rec))
    rows.sort(key=lambda r: r[0])
    if not items:
        raise WellreadError("empty file" if not text.strip() else "no JSON records", file=path)
    return _Rows(path, fmt, list(columns), rows)


def _read_columnar(path: Path, fmt: str) -> _Rows:
    """Parquet files or a ``datasets`` save_to_disk directory, via pyarrow (ClassLabel ids -> names)."""
    files = [path] if path.is_file() else sorted(path.glob("*.arrow")) or sorted(path.glob("*.parquet"))
    if not files:
        raise WellreadError("no .arrow or .parquet files in this directory (a datasets save_to_disk split?)",
                            file=path)
    rows: list[tuple[int, dict | str]] = []
    columns: list[str] = []
    n = 0
    for f in files:
        for cols, names in record_batches(f):
            columns = columns or list(cols)
            for i in range(len(next(iter(cols.values()), []))):
                n += 1
                rec = {c: v[i] for c, v in cols.items()}
                label = rec.get("label")
                if names and isinstance(label, int) and 0 <= label < len(names):  # a ClassLabel: id -> name
                    rec["label"] = names[label]
                rows.append((n, rec))
    if not rows:
        raise WellreadError("empty file (no rows)", file=path)
    return _Rows(path, fmt, columns, rows)


def read_rows(path: Path, tf: TaskFile) -> _Rows:
    """Every row of a task's data file, in any format the task file allows."""
    if not path.exists():
        raise WellreadError("no such file", file=path)
    fmt = _format_of(path, tf)
    if fmt in ("csv", "tsv", "txt"):
        return _read_delimited(path, fmt, tf)
    if fmt in ("jsonl", "json"):
        return _read_json(path, fmt)
    return _read_columnar(path, fmt)


# --- rows -> examples ----------------------------------------------------------------------------

def _need(rows: _Rows, names: list[str], where: str) -> None:
    missing = [n for n in names if n not in rows.columns]
    if missing:
        raise WellreadError(f"no column {missing[0]!r} ({where}); the file has: {', '.join(rows.columns)}",
                            file=rows.path, line=1 if rows.format in ("csv", "tsv", "txt") else None,
                            field=missing[0])


def _cell(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value).strip()


@dataclass
class _Split:
    name: str
    path: Path
    format: str
    items: list[tuple[int, str, str | None, str]]  # (line, text, text_pair, raw label)
    skipped: list[tuple[int, str]] = field(default_factory=list)
    label_column: bool = True  # the file has the label column


def _to_items(rows: _Rows, split: str, tf: TaskFile, keep: Callable[[dict], bool] | None = None) -> _Split:
    cols = [tf.text] + ([tf.text_pair] if tf.text_pair else [])
    _need(rows, cols, "text" if tf.text not in rows.columns else "text_pair")
    has_label = tf.label in rows.columns
    if not has_label and split != "test":
        _need(rows, [tf.label], "label")
    out = _Split(split, rows.path, rows.format, [], label_column=has_label)
    for line, rec in rows.rows:
        if isinstance(rec, str):  # a blank or malformed row: counted once, with train when a file holds every split
            if keep is None or split == "train":
                out.skipped.append((line, rec))
            continue
        if keep is not None and not keep(rec):
            continue
        for c in cols + ([tf.label] if has_label else []):
            if c not in rec:
                raise WellreadError(f"this record has no field {c!r} (it has: {', '.join(rec)})",
                                    file=rows.path, line=line, field=c)
        text = _cell(rec[tf.text])
        pair = _cell(rec[tf.text_pair]) if tf.text_pair else None
        if not text or (tf.text_pair and not pair):
            out.skipped.append((line, "empty text"))
            continue
        out.items.append((line, text, pair, _cell(rec[tf.label]) if has_label else ""))
    return out


def hub_split_files(hub_id: str, config: str, split: str) -> Path:
    """The folder of a hub data set's parquet files of one split, downloaded into wellread's cache.

    The hub's parquet API (``/api/datasets/ID/parquet/CONFIG/SPLIT``) lists the files; the list and the
    files go through ``hub.download`` (resumable, SHA-256 recorded), so a second run, or one offline
    (``WELLREAD_OFFLINE=1``), reads the cache.
    """
    folder = hub.cache_dir() / "datasets" / hub_id.replace("/", "--") / config / split
    listing = hub.download(hub.hub_api_url(f"datasets/{hub_id}/parquet/{config}/{split}"), folder / "files.json",
                           progress=False)
    try:
        urls = json.loads(listing.read_text(encoding="utf-8"))
    except ValueError as e:
        raise WellreadError(f"the hub's parquet list is not JSON ({e}); delete it to fetch it again",
                            file=listing) from None
    if not isinstance(urls, list) or not urls or not all(isinstance(u, str) for u in urls):
        raise WellreadError(f"no parquet files listed for {hub_id} {config}/{split}", file=listing)
    for i, url in enumerate(urls):
        hub.download(url, folder / f"{i:05d}.parquet", progress=False)
    return folder


def _read_splits(tf: TaskFile, base: Path, notes: dict[str, str]) -> dict[str, _Split]:
    if tf.hub is not None:
        names = tf.splits or {"train": "train", "dev": "validation"}
        return {s: _to_items(_read_columnar(hub_split_files(tf.hub, tf.config, str(v)), "parquet"), s, tf)
                for s, v in names.items()}
    if tf.file is not None:
        path = (base / tf.file).resolve()
        rows = read_rows(path, tf)
        _need(rows, [tf.split_column], "split_column")
        assert tf.splits is not None
        values = {str(v): s for s, v in tf.splits.items()}
        seen = Counter(_cell(rec.get(tf.split_column)) for _, rec in rows.rows if isinstance(rec, dict))
        out = {}
        for s, v in tf.splits.items():
            if seen.get(str(v), 0) == 0:
                raise WellreadError(f"no row has {tf.split_column} = {v!r} (values: "
                                    f"{', '.join(sorted(seen)[:10])})", file=path, field="splits")
            out[s] = _to_items(rows, s, tf, keep=lambda rec, v=str(v): _cell(rec.get(tf.split_column)) == v)
        other = {value: n for value, n in seen.items() if value not in values}
        if other:
            notes["unassigned"] = (f"{sum(other.values())} rows in no split ({tf.split_column} = "
                                   f"{', '.join(sorted(other))})")
        return out
    return {s: _to_items(read_rows((base / p).resolve(), tf), s, tf)
            for s in SPLITS if (p := getattr(tf, s)) is not None}


def _natural(labels) -> list[str]:
    """Training labels in order: numerically when all are integers, else as strings."""
    labels = list(labels)
    try:
        return [str(v) for v in sorted(labels, key=int)]
    except ValueError:
        return sorted(labels)


def _is_number(s: str) -> bool:
    try:
        return math.isfinite(float(s))
    except ValueError:
        return False


def _classification_labels(tf: TaskFile, train: _Split) -> tuple[str, ...]:
    counts = Counter(raw for _, _, _, raw in train.items)
    first_line = {}
    for line, _, _, raw in train.items:
        first_line.setdefault(raw, line)
    if "" in counts:
        raise WellreadError("a training row has an empty label", file=train.path, line=first_line[""],
                            field=tf.label)
    if len(counts) > MAX_NUMERIC_CLASSES and all(_is_number(v) for v in counts):
        raise WellreadError(f"the label column holds {len(counts)} distinct numbers: a score? set kind: "
                            "regression (or labels: to list the classes)", file=train.path, field=tf.label)
    if tf.labels is not None:
        labels = tuple(str(v) for v in tf.labels)
        if len(set(labels)) != len(labels):
            raise WellreadError("names a label twice", field="labels")
        extra = [v for v in counts if v not in labels]
        if extra:
            raise WellreadError(f"label {extra[0]!r} is not in labels: ({', '.join(labels)})",
                                file=train.path, line=first_line[extra[0]], field=tf.label)
    else:
        labels = tuple(_natural(counts))
    if len(labels) < 2:
        raise WellreadError(f"the training data has one class only ({labels[0]!r}); a classifier needs two",
                            file=train.path, field=tf.label)
    rare = [v for v in labels if counts.get(v, 0) < 2]
    if rare:
        n = counts.get(rare[0], 0)
        raise WellreadError(f"class {rare[0]!r} has {n} training example{'s' * (n != 1)}; every class needs at "
                            "least 2 (add examples, merge the class, or drop it from labels:)", file=train.path,
                            line=first_line.get(rare[0]), field=tf.label)
    if tf.positive is not None and str(tf.positive) not in labels:
        raise WellreadError(f"{tf.positive!r} is not a label ({', '.join(labels)})", field="positive")
    return labels


def _carve_dev(tf: TaskFile, train: _Split, fraction: float, regression: bool) -> tuple[_Split, _Split]:
    """Split ``fraction`` of train off as dev: stratified by label (regression: at random), seeded."""
    rng = np.random.default_rng([tf.seed, 20191023])
    groups: dict[str, list[int]] = {}
    for i, (_, _, _, raw) in enumerate(train.items):
        groups.setdefault("" if regression else raw, []).append(i)
    dev_idx: set[int] = set()
    for key in sorted(groups):
        idx = np.array(groups[key])
        rng.shuffle(idx)
        dev_idx.update(idx[:round(fraction * len(idx))].tolist())
    if not dev_idx:
        raise WellreadError(f"dev_fraction {fraction:g} of {len(train.items)} training rows holds no example "
                            "(per class, rounded); give a dev file or a larger dev_fraction", file=train.path,
                            field="dev_fraction")
    keep = [it for i, it in enumerate(train.items) if i not in dev_idx]
    dev = [it for i, it in enumerate(train.items) if i in dev_idx]
    return (_Split("train", train.path, train.format, keep, train.skipped),
            _Split("dev", train.path, train.format, dev))


# --- the task ------------------------------------------------------------------------------------

@dataclass
class OwnTask:
    """A loaded task file: where it is, what it says, and its splits read and checked."""

    path: Path
    spec_file: TaskFile
    data: dict[str, SplitData]
    notes: dict[str, str]  # split -> how it was made (e.g. dev carved from train)

    def digest(self) -> str:
        """A hash of the task file and every example (text, pair, label) of every split: what a run depends on."""
        h = hashlib.sha256(self.path.read_bytes())
        for split, d in self.data.items():
            h.update(f"\x03{split}".encode())
            for e in d.examples:
                h.update(f"{e.text_a}\x00{e.text_b}\x01{e.label}\x02".encode("utf-8", "replace"))
        return h.hexdigest()[:20]

    def read(self, split: str) -> SplitData:
        return self.data[split]

    def files(self) -> dict[str, Path]:
        return {s: d.path for s, d in self.data.items()}


def _examples(tf: TaskFile, sp: _Split, labels: tuple[str, ...] | None, train_path: Path) -> SplitData:
    """The split's Examples; labels checked against the training labels (or parsed as scores)."""
    known = set(labels or ())
    labelled = sp.label_column and any(raw for *_, raw in sp.items)
    examples: list[Example] = []
    for i, (line, text, pair, raw) in enumerate(sp.items):
        label: str | float | None = None
        if labelled:
            if not raw:
                raise WellreadError("empty label (a split is labelled throughout or not at all)", file=sp.path,
                                    line=line, field=tf.label)
            if labels is None:
                if not _is_number(raw):
                    raise WellreadError(f"{raw!r} is not a number (kind: regression needs numeric labels)",
                                        file=sp.path, line=line, field=tf.label)
                label = float(raw)
            elif raw not in known:
                raise WellreadError(f"label {raw!r} never occurs in training ({train_path}); labels: "
                                    f"{', '.join(labels)}", file=sp.path, line=line, field=tf.label)
            else:
                label = raw
        meta = {"line": line} if labelled else {"line": line, "index": str(i)}
        examples.append(Example(f"{sp.name}-{i}", text, pair, label, meta))
    if not examples:
        why = f" ({len(sp.skipped)} rows skipped: {sp.skipped[0][1]}...)" if sp.skipped else ""
        raise WellreadError(f"the {sp.name} split has no examples{why}", file=sp.path)
    return SplitData(None, sp.name, sp.path, examples, sp.skipped, sp.format)  # type: ignore[arg-type]


def _metrics(tf: TaskFile, labels: tuple[str, ...] | None) -> tuple[tuple[str, ...], tuple[str, ...], str | None]:
    """(selection metrics, further reported metrics, positive class)."""
    if labels is None:
        default: tuple[str, ...] = REGRESSION_METRICS
        positive = None
    else:
        positive = str(tf.positive) if tf.positive is not None else None
        default = ("f1", "accuracy") if positive is not None and len(labels) == 2 else ("accuracy", "macro_f1")
    if tf.metric is None:
        return default, (), positive
    return (tf.metric,), tuple(m for m in default if m != tf.metric), positive


def _build(tf: TaskFile, path: Path, splits: dict[str, _Split], notes: dict[str, str],
           regression: bool) -> TaskSpec:
    if "dev" not in splits:
        fraction = tf.dev_fraction if tf.dev_fraction is not None else 0.1
        splits["train"], splits["dev"] = _carve_dev(tf, splits["train"], fraction, regression)
        notes["dev"] = (f"{fraction:g} of the training rows{' (stratified by label)' * (not regression)}, "
                        f"seed {tf.seed}")
    train = splits["train"]
    if not train.items:
        raise WellreadError("the train split has no examples", file=train.path)
    labels = None if regression else _classification_labels(tf, train)
    data = {s: _examples(tf, splits[s], labels, train.path) for s in SPLITS if s in splits}
    metrics, extra, positive = _metrics(tf, labels)
    layouts = {s: (str(d.path), Layout(tf.text, tf.text_pair,
                                       tf.label if d.examples[0].label is not None else None,
                                       header=tuple(c for c in (tf.text, tf.text_pair, tf.label) if c)))
               for s, d in data.items()}
    own = OwnTask(path, tf, data, notes)
    spec = TaskSpec(name=tf.name, folder=str(path.parent), splits=layouts, labels=labels, metrics=metrics,
                    dev_splits=("dev",), positive_label=positive, split_aliases={"validation": "dev"},
                    report_metrics=extra, source=own)
    for d in data.values():
        d.task = spec
    return spec


def _classification(tf: TaskFile, path: Path, splits: dict[str, _Split], notes: dict[str, str]) -> TaskSpec:
    return _build(tf, path, splits, notes, regression=False)


def _regression(tf: TaskFile, path: Path, splits: dict[str, _Split], notes: dict[str, str]) -> TaskSpec:
    return _build(tf, path, splits, notes, regression=True)


# kind -> builder (task file, its path, the splits read, notes) -> TaskSpec. A new kind (e.g. extractive
# QA) adds its name to TaskFile.kind (and its keys) and a builder here; the file reading above is shared.
KINDS: dict[str, Callable[[TaskFile, Path, dict[str, _Split], dict[str, str]], TaskSpec]] = {
    "classification": _classification,
    "regression": _regression,
}

_CACHE: dict[str, tuple[list, TaskSpec]] = {}  # task file -> (the stats of it and its data files, the task)


def _stats(paths: list[Path]) -> list:
    out = []
    for p in paths:
        try:
            st = p.stat()
            out.append((str(p), st.st_mtime_ns, st.st_size))
        except OSError:
            out.append((str(p), None, None))
    return out


def is_task_file(name: str) -> bool:
    """Whether a --task value names a task file (rather than a built-in task): a .yaml / .yml path."""
    return name.strip().lower().endswith((".yaml", ".yml"))


def load_task_file(name: str | Path) -> TaskSpec:
    """The task a YAML file describes, its splits read and checked (cached per file and mtime)."""
    path = Path(name).expanduser().resolve()
    if not path.is_file():
        raise WellreadError("no such task file", file=name, field="task")
    cached = _CACHE.get(str(path))
    if cached is not None and _stats([Path(p) for p, *_ in cached[0]]) == cached[0]:
        return cached[1]  # neither the task file nor its data changed
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8-sig"))
    except UnicodeDecodeError:
        raise WellreadError("not UTF-8 text", file=path) from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        raise WellreadError(f"not valid YAML: {getattr(e, 'problem', e)}", file=path,
                            line=None if mark is None else mark.line + 1) from None
    if not isinstance(raw, dict):
        raise WellreadError("a task file is a YAML mapping (name:, text:, label:, train: ...)", file=path)
    raw = {str(k): v for k, v in raw.items()}
    if isinstance(raw.get("dev_fraction"), int) and not isinstance(raw.get("dev_fraction"), bool):
        raw["dev_fraction"] = float(raw["dev_fraction"])
    try:
        tf = TaskFile.model_validate(raw)
    except ValidationError as e:
        raise _schema_error(path, e) from None
    _check_keys(tf, path)
    notes: dict[str, str] = {}
    spec = KINDS[tf.kind](tf, path, _read_splits(tf, path.parent, notes), notes)
    _CACHE[str(path)] = (_stats([path, *{d.path for d in spec.source.data.values()}]), spec)
    return spec


def data_settings(task: str) -> dict:
    """For a task file, ``{"task_data": hash}`` to add to a run's settings (edited data: a new run); else {}."""
    if not is_task_file(task):
        return {}
    return {"task_data": load_task_file(task).source.digest()}


def task_file_of(spec: TaskSpec) -> dict:
    """``{"task_file": path}`` for a task file's results (how a report finds the task again); {} built in."""
    return {"task_file": str(spec.source.path)} if isinstance(spec.source, OwnTask) else {}


def task_ref(spec: TaskSpec) -> str:
    """What to pass as ``--task`` to reach ``spec`` again: a built-in name, or its task file's path."""
    return str(spec.source.path) if isinstance(spec.source, OwnTask) else spec.name
