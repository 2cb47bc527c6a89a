"""``wellread predict``: inputs from .txt / .tsv / .jsonl / stdin, predictions to .jsonl / .tsv, streaming.

Memory stays constant on any input size: records are read lazily and predicted in chunks (4,096 by
default); each chunk is sorted by length into batches inside the ``Predictor`` and written back in
input order. The output goes to a temporary file beside the target and is renamed into place at the
end, so a bad line (reported with its file, line and field) or an interruption leaves no partial
output behind.

Inputs:
- ``.txt`` (and ``-``, stdin): one sentence a line; every line is an input, blank ones too, so
  output line k answers input line k.
- ``.tsv``: a header line, then tab-separated rows with as many fields (no quoting, as GLUE's files).
  The text columns: ``--text-a``/``--text-b`` when given, else the first of ``sentence1``+``sentence2``,
  ``text_a``+``text_b``, ``question1``+``question2``, ``#1 string``+``#2 string``,
  ``question``+``sentence``, ``sentence``, ``text`` the header has. GLUE's files read as they are.
- ``.jsonl``: one JSON object a line with ``text`` or ``text_a`` (or ``sentence``/``sentence1``) and
  optionally ``text_b`` (or ``sentence2``); a bare JSON string is a single text. Blank lines skipped.
- An ``id``, ``idx`` or ``index`` column/field is copied to the output as ``id``.
- ``.gz`` versions of the files are read too.

Outputs: ``.jsonl`` (``{"label", "probabilities": {label: p}}`` or ``{"score"}``), ``.tsv`` (``label``
and ``prob_<label>`` columns, or ``score``), or ``-`` (JSON lines to stdout).
"""

from __future__ import annotations

import contextlib
import json
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from wellread.data.own_task import load_task_file
from wellread.data.task_files import read_split
from wellread.errors import WellreadError
from wellread.io import atomic_open, open_text

CHUNK = 4096
PAIR_COLUMNS = (("sentence1", "sentence2"), ("text_a", "text_b"), ("question1", "question2"),
                ("#1 string", "#2 string"), ("question", "sentence"))
SINGLE_COLUMNS = ("sentence", "text")
ID_COLUMNS = ("id", "idx", "index")
JSON_A = ("text_a", "text", "sentence1", "sentence", "question")  # question/context: extractive QA
JSON_B = ("text_b", "sentence2", "context")
DECIMALS = 6


@dataclass(frozen=True, slots=True)
class Record:
    """One input: where it came from (1-based line), its text(s) and its id (when the input has one)."""

    line: int
    text_a: str
    text_b: str | None = None
    id: str | int | None = None


def _format(path: str) -> str:
    if path == "-":
        return "txt"
    name = Path(path).name.lower()
    if name.endswith(".gz"):
        name = name[:-3]
    suffix = name.rsplit(".", 1)[-1] if "." in name else ""
    formats = {"txt": "txt", "text": "txt", "tsv": "tsv", "jsonl": "jsonl", "ndjson": "jsonl"}
    if suffix not in formats:
        raise WellreadError("unknown input format: name it .txt, .tsv or .jsonl (or - for lines on stdin)",
                            file=path, field="input")
    return formats[suffix]


@contextlib.contextmanager
def _open_input(path: str) -> Iterator[IO[str]]:
    if path == "-":
        yield sys.stdin
        return
    with open_text(path) as f:
        yield f


def _lines(f: IO[str]) -> Iterator[tuple[int, str]]:
    for n, line in enumerate(f, 1):
        if n == 1 and line.startswith("\ufeff"):
            line = line[1:]
        yield n, line.rstrip("\n").rstrip("\r")


def _tsv_columns(header: list[str], path: str, text_a: str | None, text_b: str | None) -> tuple[int, int | None]:
    folded = {h.strip().lower(): i for i, h in enumerate(header)}

    def col(name: str, flag: str) -> int:
        if name.strip().lower() not in folded:
            raise WellreadError(f"no column {name!r} (given by {flag}); the header has: {', '.join(header)}",
                                file=path, line=1, field=name)
        return folded[name.strip().lower()]

    if text_a is not None:
        return col(text_a, "--text-a"), None if text_b is None else col(text_b, "--text-b")
    if text_b is not None:
        raise WellreadError("--text-b needs --text-a", field="text_b")
    for a, b in PAIR_COLUMNS:
        if a in folded and b in folded:
            return folded[a], folded[b]
    for a in SINGLE_COLUMNS:
        if a in folded:
            return folded[a], None
    raise WellreadError("no text column: the header needs 'sentence' (or 'sentence1' and 'sentence2'), or name "
                        f"the columns with --text-a/--text-b; it has: {', '.join(header) or '(nothing)'}",
                        file=path, line=1, field="sentence")


def _tsv(f: IO[str], path: str, text_a: str | None, text_b: str | None) -> Iterator[Record]:
    lines = _lines(f)
    first = next(lines, None)
    if first is None:
        raise WellreadError("empty file: a .tsv needs a header line", file=path, line=1)
    header = first[1].split("\t")
    a, b = _tsv_columns(header, path, text_a, text_b)
    folded = [h.strip().lower() for h in header]
    id_col = next((folded.index(c) for c in ID_COLUMNS if c in folded), None)
    for n, line in lines:
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) != len(header):
            short = [header[i] for i in (a, b) if i is not None and i >= len(fields)]
            raise WellreadError(f"{len(fields)} tab-separated fields, the header has {len(header)}", file=path, line=n,
                                field=short[0] if short else None)
        yield Record(n, fields[a], None if b is None else fields[b], None if id_col is None else fields[id_col])


def _check_unicode(text: str, key: str) -> None:
    """Refuse a string that is not Unicode text (JSON can carry lone surrogates, e.g. "\\ud800")."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        raise ValueError(f"not valid Unicode text: a lone surrogate {text[e.start]!a} at character {e.start}",
                         key) from None


def item_texts(obj, text_a: str | None = None, text_b: str | None = None) -> tuple[str, str | None, object]:
    """(text_a, text_b, id) of one JSON input: a string, or an object with the text fields.

    Raises ``ValueError(message, field)`` when the item has no text or a text is not a string.
    """
    if isinstance(obj, str):
        _check_unicode(obj, "text")
        return obj, None, None
    if not isinstance(obj, dict):
        raise ValueError(f"expected a JSON object or string, got {type(obj).__name__}", "text")
    names_a = (text_a,) if text_a else JSON_A
    key_a = next((k for k in names_a if k in obj), None)
    if key_a is None:
        raise ValueError(f"no {' / '.join(repr(k) for k in names_a)} field", names_a[0])
    key_b = text_b if text_b else next((k for k in JSON_B if k in obj), None)
    a, b = obj[key_a], obj.get(key_b) if key_b else None
    if text_b and text_b not in obj:
        raise ValueError(f"no {text_b!r} field", text_b)
    for key, value in ((key_a, a), (key_b, b)):
        if key is not None and value is not None and not isinstance(value, str):
            raise ValueError(f"must be a string, not {type(value).__name__}", key)
        if isinstance(value, str):
            _check_unicode(value, key)
    if a is None:
        raise ValueError("must be a string, not null", key_a)
    ident = next((obj[k] for k in ID_COLUMNS if k in obj), None)
    return a, b, ident


def _jsonl(f: IO[str], path: str, text_a: str | None, text_b: str | None) -> Iterator[Record]:
    for n, line in _lines(f):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise WellreadError(f"invalid JSON: {e.msg} (column {e.colno})", file=path, line=n) from None
        except (RecursionError, ValueError):  # nested too deeply; an integer of over 4,300 digits
            raise WellreadError("invalid JSON: nested too deeply or a number too long", file=path, line=n) from None
        try:
            a, b, ident = item_texts(obj, text_a, text_b)
        except ValueError as e:
            raise WellreadError(e.args[0], file=path, line=n, field=e.args[1]) from None
        yield Record(n, a, b, ident if isinstance(ident, (str, int)) or ident is None else json.dumps(ident))


def task_records(path: str, split: str) -> Iterator[Record]:
    """The inputs of one split of a task file (``tickets.yaml``), read and checked as training reads them."""
    for e in read_split(load_task_file(path), None, split).examples:
        yield Record(e.meta["line"], e.text_a, e.text_b, e.meta["line"])


def read_records(path: str | Path, *, text_a: str | None = None, text_b: str | None = None,
                 split: str | None = None) -> Iterator[Record]:
    """The inputs of a file (or ``-``), lazily, in order; bad content raises WellreadError at its line.

    A task file (``.yaml``) gives the inputs of its ``split`` (default: test), with their line as id.
    """
    path = str(path)
    if path.lower().endswith((".yaml", ".yml")):
        if text_a is not None or text_b is not None:
            raise WellreadError("a task file names its own text columns; drop --text-a / --text-b", field="text_a")
        yield from task_records(path, split or "test")
        return
    if split is not None:
        raise WellreadError("--split applies to a task file (.yaml) input", field="split")
    fmt = _format(path)
    if fmt == "txt" and text_b is not None:
        raise WellreadError("a .txt input holds one sentence a line; --text-b needs a .tsv or .jsonl", field="text_b")
    with _open_input(path) as f:
        if fmt == "txt":
            for n, line in _lines(f):
                yield Record(n, line)
        elif fmt == "tsv":
            yield from _tsv(f, path, text_a, text_b)
        else:
            yield from _jsonl(f, path, text_a, text_b)


def count_inputs(path: str) -> int | None:
    """Lines in an uncompressed input file (a cheap total for the progress bar); None for stdin / .gz."""
    if path == "-" or path.lower().endswith((".gz", ".yaml", ".yml")) or not Path(path).is_file():
        return None
    n = 0
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            n += block.count(b"\n")
    return max(n - (_format(path) == "tsv"), 0)


@contextlib.contextmanager
def atomic_output(path: str) -> Iterator[IO[str]]:
    """A text file written under a temporary name and renamed into place on success (``-``: stdout)."""
    if path == "-":
        yield sys.stdout
        sys.stdout.flush()
        return
    target = Path(path)
    if target.is_dir():
        raise WellreadError("is a directory, expected an output file", file=target, field="output")
    with atomic_open(target, "w", encoding="utf-8", newline="\n") as f:
        yield f


def output_format(path: str) -> str:
    if path == "-":
        return "jsonl"
    name = Path(path).name.lower()
    if name.endswith(".jsonl") or name.endswith(".ndjson"):
        return "jsonl"
    if name.endswith(".tsv"):
        return "tsv"
    raise WellreadError("unknown output format: name it .jsonl or .tsv (or - for JSON lines on stdout)", file=path,
                        field="output")


class _Writer:
    def __init__(self, f: IO[str], fmt: str, labels: tuple[str, ...] | None) -> None:
        self.f, self.fmt, self.labels = f, fmt, labels
        self.with_id: bool | None = None  # decided by the first chunk (TSV needs its header up front)

    def header(self, chunk: list[Record]) -> None:
        self.with_id = any(r.id is not None for r in chunk)
        if self.fmt == "tsv":
            cols = ["label", *(f"prob_{name}" for name in self.labels)] if self.labels is not None else ["score"]
            self.f.write("\t".join((["id"] if self.with_id else []) + cols) + "\n")

    def write(self, chunk: list[Record], preds: list[dict]) -> None:
        if self.with_id is None:
            self.header(chunk)
        lines = []
        for r, p in zip(chunk, preds):
            if self.labels is None:
                p = {"score": round(p["score"], DECIMALS)}
            else:
                p = {"label": p["label"], "probabilities": {k: round(v, DECIMALS) for k, v in p["probabilities"].items()}}
            if self.fmt == "jsonl":
                lines.append(json.dumps(({"id": r.id} if r.id is not None else {}) | p, ensure_ascii=False))
            else:
                cells = [str(p["score"])] if self.labels is None else \
                    [p["label"], *(str(p["probabilities"][k]) for k in self.labels)]
                lines.append("\t".join(([_tsv_cell(r.id)] if self.with_id else []) + cells))
        self.f.write("\n".join(lines) + "\n")


def _tsv_cell(value) -> str:
    return "" if value is None else str(value).replace("\t", " ").replace("\n", " ")


def _chunks(records: Iterator[Record], size: int) -> Iterator[list[Record]]:
    chunk: list[Record] = []
    for r in records:
        chunk.append(r)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def predict_file(predictor, input: str | Path, output: str | Path, *, text_a: str | None = None,
                 text_b: str | None = None, chunk_size: int = CHUNK, progress: bool = True,
                 split: str | None = None) -> dict:
    """Predict every input of ``input`` into ``output``; returns ``{"inputs", "seconds", "inputs_per_s"}``."""
    from tqdm import tqdm

    input, output = str(input), str(output)
    if chunk_size < 1:
        raise WellreadError("must be at least 1", field="chunk_size")
    fmt = output_format(output)
    if input != "-" and output != "-" and Path(input).resolve() == Path(output).resolve():
        raise WellreadError("the output would replace the input", file=output, field="output")
    records = read_records(input, text_a=text_a, text_b=text_b, split=split)
    t0 = time.perf_counter()
    n = 0
    with atomic_output(output) as f, tqdm(total=count_inputs(input), unit=" inputs", disable=not progress,
                                          file=sys.stderr, dynamic_ncols=True, desc="predict", leave=False) as bar:
        writer = _Writer(f, fmt, predictor.labels)
        for chunk in _chunks(records, chunk_size):
            preds = predictor.predict([r.text_a for r in chunk], [r.text_b for r in chunk])
            writer.write(chunk, preds)
            n += len(chunk)
            bar.update(len(chunk))
        if writer.with_id is None:  # no input at all: still a valid (empty) output
            writer.header([])
    seconds = time.perf_counter() - t0
    return {"inputs": n, "seconds": seconds, "inputs_per_s": n / max(seconds, 1e-9)}
