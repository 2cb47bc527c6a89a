"""Raw text → token-id shards with document and sentence boundaries: parallel, streaming, resumable.

Input formats (chosen per file by its name):

* ``.txt`` / ``.gz`` (any other name is read as text too). ``doc_mode="line"``: every line is a
  document (one paragraph per line, as in ``shared/data/text``), or with ``group_lines=N`` every N
  consecutive lines of a file are one document (paragraphs of one text, so that sequences fill up
  and next-sentence pairs come from the same text instead of being forced random). ``doc_mode="blank"``: documents are
  separated by blank lines, as in Google's ``create_pretraining_data.py`` input. ``"auto"`` picks
  ``blank`` for a file when one of its first 10,000 lines is a blank line followed by text.
* ``.jsonl`` / ``.jsonl.gz``: one JSON object a line, its ``text_field`` a document. A line that is
  not JSON, or a record whose field is missing or not a string, is skipped and counted (with the
  first locations in the manifest) — one bad record must not cost hours of work — except when the
  *first* record lacks the field, which means ``--text-field`` is wrong: that is an error.

Every line (in both text modes) is cut into sentences by :func:`split_sentences`, so next-sentence
prediction has sentence boundaries even in one-paragraph-per-line files. Bytes that are not UTF-8
become U+FFFD and are counted (BERT's normaliser then drops them). A line longer than 1 MiB is split
at whitespace into pieces of at most 1 MiB, each handled as a line of its own (never truncated);
a blank-mode document is closed after 4 MiB of text. So memory stays bounded whatever the input.

Output directory (``out``)::

    manifest.json               what was read, with which vocab, totals, the finished shards
    shard-00000.ids.npy         token ids, uint16 (uint32 when the vocab has over 65,535 tokens)
    shard-00000.sentences.npy   int64 offsets into ids where each sentence starts, then len(ids)
    shard-00000.documents.npy   int64 offsets into ids where each document starts, then len(ids)

Documents never cross shards. The main process reads the input and cuts it into work units of about
1 MiB of text; a pool of worker processes splits sentences and encodes them (``encode_batch``); the
main process writes a shard (atomically) whenever a unit ends with ``shard_tokens`` or more tokens
waiting, and records it in the manifest. A rerun after a kill reads the manifest, checks that the
inputs, the vocab and the settings are those of the first run, seeks past the recorded shards, and
continues; the result equals an uninterrupted run's bit for bit, whatever the number of workers.
"""

from __future__ import annotations

import bisect
import collections
import contextlib
import dataclasses
import gzip
import hashlib
import io
import itertools
import json
import multiprocessing
import os
import re
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, BinaryIO, Literal

import numpy as np
from tokenizers import Tokenizer

from wellread.errors import WellreadError
from wellread.io import atomic_write_bytes, atomic_write_json
from wellread.tokenization import load_tokenizer, special_ids, vocab_hash

FORMAT = "wellread-corpus/1"
MAX_LINE_BYTES = 1 << 20  # longer lines are split at whitespace into pieces of at most this
MAX_JSONL_LINE_BYTES = 1 << 26  # a JSON record longer than this is skipped (counted as bad)
MAX_DOC_CHARS = 1 << 22  # a blank-mode (or JSON) document is closed after this much text
UNIT_CHARS = 1 << 20  # text per work unit sent to a worker
SNIFF_LINES = 10_000
ENCODE_BATCH = 4096  # sentences per encode_batch call: keeps the Encodings' memory small
BAD_LOCATIONS_KEPT = 10
DEFAULT_SHARD_TOKENS = 1 << 22
DocMode = Literal["auto", "line", "blank"]
COUNTERS = ("lines", "text_bytes", "replaced_chars", "blank_lines", "long_lines_split",
            "long_documents_split", "bad_json_lines", "empty_documents")


# --- sentences -----------------------------------------------------------------------------------

_SENTENCE_END = re.compile(r"""[.!?]+["'\u201d\u2019)\]]*(\s+)(?=["'\u201c\u2018(\[]?[A-Z0-9])""")
_ABBREVIATIONS = frozenset(
    "mr mrs ms dr prof sr jr st vs etc e.g i.e cf fig figs no nos vol vols inc ltd co corp dept gen "
    "gov lt col sgt capt rev hon mt ft approx ed eds al op pp ch sec art".split()
)


def split_sentences(text: str) -> list[str]:
    """Cut a paragraph into sentences with a simple rule, good enough for next-sentence prediction.

    A sentence ends at ``.``, ``!`` or ``?`` (plus closing quotes/brackets) followed by whitespace
    and a capital letter, digit or opening quote/bracket — unless the word before the period is a
    single letter (an initial: "Fred L. Drake") or a common abbreviation ("Mr.", "e.g.", "etc.").
    Cuts fall on whitespace only, so encoding the sentences one by one gives the same word pieces
    as encoding the whole line.
    """
    sentences = []
    start = 0
    for m in _SENTENCE_END.finditer(text):
        if text[m.start()] == ".":
            word = text[start:m.start()].rsplit(None, 1)[-1] if text[start:m.start()].strip() else ""
            word = word.lstrip("\"'(\u201c\u2018[").lower()
            if len(word) == 1 and word.isalpha() or word in _ABBREVIATIONS:
                continue
        end = m.start(1)
        sentence = text[start:end].strip()
        if sentence:
            sentences.append(sentence)
        start = m.end(1)
    rest = text[start:].strip()
    if rest:
        sentences.append(rest)
    return sentences


# --- manifest --------------------------------------------------------------------------------------

@dataclasses.dataclass
class Manifest:
    """The content of ``manifest.json``: what a shard directory holds and what made it."""

    path: Path
    data: dict[str, Any]

    @property
    def complete(self) -> bool:
        return bool(self.data["complete"])

    @property
    def vocab_hash(self) -> str:
        return self.data["vocab"]["hash"]

    @property
    def totals(self) -> dict[str, int]:
        return self.data["totals"]

    @property
    def shards(self) -> list[dict[str, Any]]:
        return self.data["shards"]

    @property
    def tokens(self) -> int:
        return self.totals["tokens"]

    @property
    def documents(self) -> int:
        return self.totals["documents"]

    @property
    def sentences(self) -> int:
        return self.totals["sentences"]

    @classmethod
    def read(cls, directory: str | Path) -> Manifest:
        path = Path(directory) / "manifest.json"
        if not path.is_file():
            raise WellreadError("no manifest.json here; make shards with `wellread corpus`", file=directory)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise WellreadError(f"manifest is not valid JSON: {e}", file=path) from None
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise WellreadError(f"not a {FORMAT} manifest", file=path, field="format")
        return cls(path, data)

    def write(self) -> None:
        atomic_write_json(self.path, self.data)


def _file_record(path: Path, doc_mode: str) -> dict[str, Any]:
    st = path.stat()
    with open(path, "rb") as f:
        head = hashlib.sha256(f.read(1 << 20)).hexdigest()[:16]
    return {"path": str(path.resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns,
            "head_sha256": head, "doc_mode": doc_mode}


# --- reading -----------------------------------------------------------------------------------------

def _is_jsonl(path: Path) -> bool:
    name = path.name.lower()
    return name.endswith(".jsonl") or name.endswith(".jsonl.gz")


def _open_binary(path: Path) -> BinaryIO:
    if path.suffix.lower() == ".gz":
        return gzip.open(path, "rb")  # type: ignore[return-value]
    return open(path, "rb")


def _disk_position(f: BinaryIO) -> int:
    """Bytes of the file on disk consumed so far (compressed bytes for .gz), for the progress bar."""
    inner = getattr(f, "fileobj", None)
    return inner.tell() if inner is not None else f.tell()


class _LineReader:
    """Lines of a binary stream (newline removed), at most ``limit`` bytes each.

    A longer line is cut at the last whitespace in its second half (else at a UTF-8 character
    boundary) and yielded in pieces. ``position()`` is where the next piece starts; a reader
    opened there continues exactly as this one would (the pieces depend only on the bytes ahead).
    """

    def __init__(self, f: BinaryIO, limit: int, position: dict[str, int] | None = None) -> None:
        pos = position or {"offset": 0, "line": 0, "inside_line": 0}
        self.f, self.limit = f, limit
        self.offset, self.line, self.inside_line = pos["offset"], pos["line"], pos["inside_line"]
        self.long_lines = 0  # lines cut into pieces (counted at their first cut)
        self._carry = b""

    def position(self) -> dict[str, int]:
        return {"offset": self.offset, "line": self.line, "inside_line": self.inside_line}

    def __iter__(self) -> Iterator[tuple[bytes, bool]]:
        """Yield ``(bytes, cut)``; ``cut`` is True for a piece of a line that goes on."""
        limit = self.limit
        while True:
            chunk = self.f.readline(limit - len(self._carry))
            buf = self._carry + chunk
            self._carry = b""
            if not buf:
                return
            if buf.endswith(b"\n") or not chunk:
                self.offset += len(buf)
                self.line += 1
                self.inside_line = 0
                yield buf.rstrip(b"\n").rstrip(b"\r"), False
                continue
            if len(buf) < limit:  # a short read without a newline: the file ends here
                self._carry = buf
                continue
            cut = max(buf.rfind(b" ", limit // 2), buf.rfind(b"\t", limit // 2))
            if cut >= 0:
                cut += 1
            else:  # no whitespace: cut at the end, or before a UTF-8 character the end would split
                lead = limit - 1
                while lead > limit - 4 and (buf[lead] & 0xC0) == 0x80:
                    lead -= 1
                width = 4 if buf[lead] >= 0xF0 else 3 if buf[lead] >= 0xE0 else 2 if buf[lead] >= 0xC0 else 1
                cut = limit if lead + width <= limit else lead
            self._carry = buf[cut:]
            self.offset += cut
            self.long_lines += not self.inside_line
            self.inside_line = 1
            yield buf[:cut], True


def _decode(raw: bytes, stats: dict[str, int]) -> str:
    text = raw.decode("utf-8", "replace")
    if "\ufffd" in text:  # count only the replacements, not U+FFFD that was in the file
        stats["replaced_chars"] += text.count("\ufffd") - raw.count(b"\xef\xbf\xbd")
    return text


def _sniff_doc_mode(path: Path) -> str:
    """``blank`` when one of the first lines is blank and followed by text, else ``line``."""
    if _is_jsonl(path):
        return "jsonl"
    blank_seen = False
    with _open_binary(path) as f:
        for raw, _ in itertools.islice(_LineReader(f, MAX_LINE_BYTES), SNIFF_LINES):
            if raw.strip():
                if blank_seen:
                    return "blank"
            else:
                blank_seen = True
    return "line"


@dataclasses.dataclass
class _Unit:
    """Whole documents (each a list of lines) read from one file, with what reading them counted."""

    docs: list[list[str]]
    stats: dict[str, int]
    bad: list[str]
    end: dict[str, int]  # {"file", "offset", "line", "inside_line"}: where the next unit starts
    disk_bytes: int  # bytes of the file on disk consumed (for the progress bar)


def _iter_units(files: Sequence[Path], modes: Sequence[str], start: dict[str, int], unit_chars: int,
                text_field: str, group_lines: int = 1) -> Iterator[_Unit]:
    """Cut the input into units of whole documents, starting at ``start`` (a recorded position).

    A unit closes as soon as a document completes with ``unit_chars`` of text gathered, and at the
    end of each file; so where units end depends only on the input, never on where a run resumed.
    """
    for fi in range(start["file"], len(files)):
        yield from _file_units(fi, files[fi], modes[fi], start if fi == start["file"] else None,
                               unit_chars, text_field, group_lines)


def _file_units(fi: int, path: Path, mode: str, position: dict[str, int] | None, unit_chars: int,
                text_field: str, group_lines: int = 1) -> Iterator[_Unit]:
    limit = MAX_JSONL_LINE_BYTES if mode == "jsonl" else MAX_LINE_BYTES
    with _open_binary(path) as f:
        if position and position["offset"]:
            f.seek(position["offset"])
        reader = _LineReader(f, limit, position)
        first_record = reader.line == 0
        docs: list[list[str]] = []
        doc: list[str] = []
        doc_chars = chars = disk = 0
        stats = dict.fromkeys(COUNTERS, 0)
        bad: list[str] = []

        def close_doc() -> None:
            nonlocal doc, doc_chars, chars
            if doc:
                docs.append(doc)
                chars += doc_chars
            doc, doc_chars = [], 0

        def add_line(text: str) -> None:
            nonlocal doc_chars
            doc.append(text)
            doc_chars += len(text)
            if doc_chars >= MAX_DOC_CHARS:
                stats["long_documents_split"] += 1
                close_doc()

        def make_unit() -> _Unit:
            nonlocal docs, stats, bad, disk, chars
            stats["long_lines_split"] = reader.long_lines
            reader.long_lines = 0
            new_disk = _disk_position(f)
            unit = _Unit(docs, stats, bad, {"file": fi, **reader.position()}, new_disk - disk)
            docs, stats, bad, disk, chars = [], dict.fromkeys(COUNTERS, 0), [], new_disk, 0
            return unit

        lines = iter(reader)
        for raw, cut in lines:
            stats["text_bytes"] += len(raw)
            if mode == "jsonl":
                stats["lines"] += 1
                if cut:  # over MAX_JSONL_LINE_BYTES: skip the record
                    stats["bad_json_lines"] += 1
                    if len(bad) < BAD_LOCATIONS_KEPT:
                        bad.append(f"{path}:{reader.line + 1}: record over {limit} bytes")
                    for more, still_cut in lines:
                        stats["text_bytes"] += len(more)
                        if not still_cut:
                            break
                    continue
                text = _decode(raw, stats)
                if not text.strip():
                    stats["blank_lines"] += 1
                    continue
                value = _json_text(text, text_field, path, reader.line, first_record, bad, stats)
                first_record = False
                if value is None:
                    continue
                for part in value.split("\n"):
                    if part.strip():
                        add_line(part)
                close_doc()
            else:
                stats["lines"] += not cut
                text = _decode(raw, stats)
                if not text.strip():
                    stats["blank_lines"] += 1
                    if mode == "blank":
                        close_doc()
                elif mode == "line":
                    add_line(text)
                    if len(doc) >= group_lines:
                        close_doc()
                else:
                    add_line(text)
            if chars >= unit_chars and not doc:
                yield make_unit()
        close_doc()
        yield make_unit()


def _json_text(text: str, field: str, path: Path, line: int, first: bool, bad: list[str],
               stats: dict[str, int]) -> str | None:
    try:
        record = json.loads(text)
    except json.JSONDecodeError as e:
        why = f"not JSON ({e.msg})"
    else:
        if isinstance(record, dict) and isinstance(record.get(field), str):
            return record[field]
        if first and isinstance(record, dict) and field not in record:
            raise WellreadError(f"the first record has no field {field!r} (it has: {', '.join(map(str, record)) or 'none'}); "
                                "choose the text field with --text-field", file=path, line=line, field=field)
        why = f"no string field {field!r}"
    stats["bad_json_lines"] += 1
    if len(bad) < BAD_LOCATIONS_KEPT:
        bad.append(f"{path}:{line}: {why}")
    return None


# --- encoding (in the workers) -------------------------------------------------------------------------

_WORKER_TOKENIZER: Tokenizer | None = None


def corpus_tokenizer(tok: Tokenizer) -> Tokenizer:
    """The tokenizer without its added special tokens, so that text saying "[MASK]" or "[SEP]" is
    read as the word pieces ``[ mask ]`` (as Google's tokenizer does), never as a special id."""
    plain = Tokenizer(tok.model)
    plain.normalizer = tok.normalizer
    plain.pre_tokenizer = tok.pre_tokenizer
    return plain


def _init_worker(tokenizer_json: str) -> None:
    global _WORKER_TOKENIZER
    os.environ["TOKENIZERS_PARALLELISM"] = "false"  # parallel over processes, not threads as well
    _WORKER_TOKENIZER = Tokenizer.from_str(tokenizer_json)


def _encode_docs(docs: list[list[str]], dtype: str,
                 tok: Tokenizer | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """Encode documents; returns (ids, sentence lengths, sentences per document, empty documents).

    Sentences without a single token are dropped, and documents left without sentences too.
    """
    tok = tok or _WORKER_TOKENIZER
    assert tok is not None
    sentences: list[str] = []
    owner: list[int] = []
    for d, doc in enumerate(docs):
        for line in doc:
            for s in split_sentences(line):
                sentences.append(s)
                owner.append(d)
    lengths = np.zeros(len(sentences), dtype=np.int64)
    chunks: list[np.ndarray] = []
    for i in range(0, len(sentences), ENCODE_BATCH):
        encs = tok.encode_batch(sentences[i:i + ENCODE_BATCH], add_special_tokens=False)
        n = np.fromiter((len(e.ids) for e in encs), dtype=np.int64, count=len(encs))
        lengths[i:i + len(encs)] = n
        chunks.append(np.fromiter(itertools.chain.from_iterable(e.ids for e in encs), dtype=dtype, count=int(n.sum())))
    ids = np.concatenate(chunks) if chunks else np.zeros(0, dtype=dtype)
    keep = lengths > 0
    per_doc = np.bincount(np.asarray(owner, dtype=np.int64)[keep], minlength=len(docs))
    empty = int((per_doc == 0).sum())
    return ids, lengths[keep], per_doc[per_doc > 0], empty


# --- building ----------------------------------------------------------------------------------------------

def _npy_bytes(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=False)
    return buf.getvalue()


def _shard_name(i: int) -> str:
    return f"shard-{i:05d}"


class _ShardWriter:
    """Collects encoded units and writes a shard whenever ``shard_tokens`` are waiting."""

    def __init__(self, manifest: Manifest, shard_tokens: int, dtype: str) -> None:
        self.manifest, self.shard_tokens, self.dtype = manifest, shard_tokens, dtype
        self._reset()

    def _reset(self) -> None:
        self.ids: list[np.ndarray] = []
        self.sent_lens: list[np.ndarray] = []
        self.doc_sents: list[np.ndarray] = []
        self.stats = dict.fromkeys(COUNTERS, 0)
        self.bad: list[str] = []
        self.tokens = 0

    def add(self, unit: _Unit, encoded: tuple[np.ndarray, np.ndarray, np.ndarray, int]) -> None:
        ids, sent_lens, doc_sents, empty = encoded
        self.ids.append(ids)
        self.sent_lens.append(sent_lens)
        self.doc_sents.append(doc_sents)
        for k, v in unit.stats.items():
            self.stats[k] += v
        self.stats["empty_documents"] += empty
        self.bad.extend(unit.bad)
        self.tokens += len(ids)
        self.end = unit.end
        if self.tokens >= self.shard_tokens:
            self.flush(unit.end)

    def finish(self) -> None:
        """At the end of the input: write what is left, or only count it when it holds no tokens."""
        if self.tokens:
            self.flush(self.end)
        else:
            self._count(self.stats, self.bad)
            self._reset()

    def _count(self, record: dict[str, Any], bad: list[str]) -> None:
        totals = self.manifest.totals
        for k in totals:
            totals[k] += record.get(k, 0)
        kept = self.manifest.data["bad_locations"]
        kept.extend(bad[:BAD_LOCATIONS_KEPT - len(kept)])

    def flush(self, end: dict[str, int]) -> None:
        out = self.manifest.path.parent
        name = _shard_name(len(self.manifest.shards))
        ids = np.concatenate(self.ids).astype(self.dtype, copy=False)
        sent_lens = np.concatenate(self.sent_lens)
        doc_sents = np.concatenate(self.doc_sents)
        sent_starts = np.zeros(len(sent_lens) + 1, dtype=np.int64)
        np.cumsum(sent_lens, out=sent_starts[1:])
        doc_first_sentence = np.zeros(len(doc_sents) + 1, dtype=np.int64)
        np.cumsum(doc_sents, out=doc_first_sentence[1:])
        doc_starts = sent_starts[doc_first_sentence]
        atomic_write_bytes(out / f"{name}.ids.npy", _npy_bytes(ids))
        atomic_write_bytes(out / f"{name}.sentences.npy", _npy_bytes(sent_starts))
        atomic_write_bytes(out / f"{name}.documents.npy", _npy_bytes(doc_starts))
        record = {"name": name, "tokens": int(len(ids)), "sentences": int(len(sent_lens)),
                  "documents": int(len(doc_sents)), **self.stats, "bad_locations": self.bad[:BAD_LOCATIONS_KEPT],
                  "end": dict(end)}
        self.manifest.shards.append(record)
        self._count(record, self.bad)
        self.manifest.write()  # the shard is recorded only once its files are in place
        self._reset()


def _signature(data: dict[str, Any]) -> dict[str, Any]:
    return {k: data[k] for k in ("format", "vocab", "settings", "files")}


def _describe_difference(old: dict[str, Any], new: dict[str, Any]) -> str:
    for key in ("vocab", "settings"):
        if old[key] != new[key]:
            diff = ", ".join(f"{k} {old[key].get(k)} vs now {new[key].get(k)}"
                             for k in sorted(set(old[key]) | set(new[key])) if old[key].get(k) != new[key].get(k))
            return f"its {key} differ ({diff})"
    if len(old["files"]) != len(new["files"]):
        return f"it was made from {len(old['files'])} file(s), now {len(new['files'])} are given"
    for a, b in zip(old["files"], new["files"]):
        if a != b:
            what = next(k for k in a if a[k] != b.get(k))
            return f"input {b['path']} differs in {what} ({a[what]} vs now {b[what]})"
    return "its format differs"


def build_corpus(
    files: Sequence[str | Path],
    vocab: str | Path | Tokenizer,
    out: str | Path,
    *,
    workers: int | None = None,
    shard_tokens: int = DEFAULT_SHARD_TOKENS,
    doc_mode: DocMode = "auto",
    text_field: str = "text",
    group_lines: int = 1,
    overwrite: bool = False,
    show_progress: bool = True,
) -> Manifest:
    """Tokenise text files into shards under ``out`` (see the module docstring), resuming a killed run.

    ``workers`` processes encode (default: the CPU count, at most 8; 0 or 1 encodes in this
    process). Rerunning into a finished directory with the same inputs returns its manifest; with
    other inputs, vocab or settings it refuses unless ``overwrite``.
    """
    if not files:
        raise WellreadError("no input files given", field="files")
    if shard_tokens < 1:
        raise WellreadError(f"must be positive, not {shard_tokens}", field="shard_tokens")
    if doc_mode not in ("auto", "line", "blank"):
        raise WellreadError(f"must be auto, line or blank, not {doc_mode!r}", field="doc_mode")
    if group_lines < 1:
        raise WellreadError(f"must be at least 1, not {group_lines}", field="group_lines")
    paths = [Path(f) for f in files]
    for p in paths:
        if not p.is_file():
            raise WellreadError("no such file" if not p.exists() else "not a regular file", file=p)
    tok = vocab if isinstance(vocab, Tokenizer) else load_tokenizer(vocab)
    size = tok.get_vocab_size(with_added_tokens=True)
    dtype = "uint16" if size <= 1 << 16 else "uint32"
    modes = [_sniff_doc_mode(p) if doc_mode == "auto" or _is_jsonl(p) else doc_mode for p in paths]
    unit_chars = min(UNIT_CHARS, max(4096, shard_tokens))
    new = {
        "format": FORMAT,
        "vocab": {"hash": vocab_hash(tok), "size": size, "dtype": dtype, "special_ids": special_ids(tok)},
        "settings": {"shard_tokens": shard_tokens, "unit_chars": unit_chars, "text_field": text_field,
                     "max_line_bytes": MAX_LINE_BYTES, "max_document_chars": MAX_DOC_CHARS,
                     **({"group_lines": group_lines} if group_lines > 1 else {})},
        "files": [_file_record(p, m) for p, m in zip(paths, modes)],
    }
    out = Path(out)
    manifest = _prepare_output(out, new, overwrite)
    if manifest.complete:
        return manifest
    start = manifest.shards[-1]["end"] if manifest.shards else {"file": 0, "offset": 0, "line": 0, "inside_line": 0}
    if manifest.shards:
        print(f"wellread corpus: resuming after {len(manifest.shards)} finished shard(s) in {out}", file=sys.stderr)
    writer = _ShardWriter(manifest, shard_tokens, dtype)
    n_workers = min(os.cpu_count() or 1, 8) if workers is None else workers
    units = _iter_units(paths, modes, start, unit_chars, text_field, group_lines)
    with _pool(n_workers, tok) as pool, _progress(sum(f["size"] for f in new["files"]), show_progress) as bar:
        bar.update(sum(f["size"] for f in new["files"][: start["file"]]))
        plain = corpus_tokenizer(tok) if pool is None else None
        pending: collections.deque = collections.deque()
        exhausted = False
        while True:
            # keep a bounded window of units in flight: memory stays flat however big the input
            while not exhausted and len(pending) < max(2, 2 * n_workers):
                unit = next(units, None)
                if unit is None:
                    exhausted = True
                elif pool is None:
                    pending.append((unit, _encode_docs(unit.docs, dtype, plain)))
                else:
                    pending.append((unit, pool.apply_async(_encode_docs, (unit.docs, dtype))))
                if unit is not None:
                    unit.docs = []  # the worker has its own copy
            if not pending:
                break
            unit, job = pending.popleft()
            writer.add(unit, job if pool is None else job.get())
            bar.update(unit.disk_bytes)
    writer.finish()
    if manifest.totals["documents"] == 0:
        for p in out.glob("shard-*.npy"):
            p.unlink()
        manifest.path.unlink()
        raise WellreadError("the corpus has no text (every file is empty or blank)", file=paths[0])
    manifest.data["complete"] = True
    manifest.write()
    return manifest


def _prepare_output(out: Path, new: dict[str, Any], overwrite: bool) -> Manifest:
    """Return the manifest to continue: a fresh one, or the recorded one when the inputs match."""
    if out.exists() and not out.is_dir():
        raise WellreadError("output path exists and is not a directory", file=out)
    out.mkdir(parents=True, exist_ok=True)
    ours = re.compile(r"^(manifest\.json|shard-\d{5}\.(ids|sentences|documents)\.npy)$")
    leftovers = re.compile(r"^\.(manifest\.json|shard-\d{5}\.(ids|sentences|documents)\.npy)\..*\.tmp$")
    for p in out.iterdir():
        if leftovers.match(p.name):  # temporary files of a killed run
            p.unlink()
        elif not ours.match(p.name):
            raise WellreadError(f"output directory holds other content ({p.name}); choose another --out", file=out)
    if (out / "manifest.json").exists():
        old = Manifest.read(out)
        if _signature(old.data) == _signature(new):
            keep = {f"{s['name']}.{k}.npy" for s in old.shards for k in ("ids", "sentences", "documents")}
            for p in out.glob("shard-*.npy"):
                if p.name not in keep:
                    p.unlink()  # written by a killed run but never recorded
            return old
        if not overwrite:
            raise WellreadError(f"these shards were made from other inputs: {_describe_difference(old.data, new)}; "
                                "choose another --out or pass --overwrite", file=old.path)
    for p in out.iterdir():
        p.unlink()
    totals = dict.fromkeys(("tokens", "sentences", "documents", *COUNTERS), 0)
    manifest = Manifest(out / "manifest.json", {**new, "complete": False, "totals": totals,
                                                "bad_locations": [], "shards": []})
    manifest.write()
    return manifest


@contextlib.contextmanager
def _pool(workers: int, tok: Tokenizer) -> Iterator[Any]:
    if workers <= 1:
        yield None
        return
    # fork where there is one: spawn would re-import the caller's __main__, which breaks scripts that
    # lack an `if __name__ == "__main__"` guard. The workers switch tokenizers' threads off, and the
    # pool starts before the progress bar's thread does.
    methods = multiprocessing.get_all_start_methods()
    ctx = multiprocessing.get_context("fork" if "fork" in methods else "spawn")
    pool = ctx.Pool(workers, initializer=_init_worker, initargs=(corpus_tokenizer(tok).to_str(),))
    try:
        yield pool
        pool.close()
    finally:
        pool.terminate()
        pool.join()


@contextlib.contextmanager
def _progress(total: int, show: bool) -> Iterator[Any]:
    from tqdm.auto import tqdm

    bar = tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc="corpus", disable=not show,
               file=sys.stderr, dynamic_ncols=True)
    try:
        yield bar
    finally:
        bar.close()


# --- reading shards ---------------------------------------------------------------------------------------

@dataclasses.dataclass
class Shard:
    """One shard, memory-mapped: ids, sentence starts and document starts (each ending in len(ids))."""

    name: str
    ids: np.ndarray
    sentence_starts: np.ndarray
    document_starts: np.ndarray
    document_sentences: np.ndarray  # index of each document's first sentence, then the sentence count

    @property
    def num_documents(self) -> int:
        return len(self.document_starts) - 1


class Corpus:
    """Random access to the documents and sentences of a shard directory, without reading it all."""

    def __init__(self, manifest: Manifest, shards: list[Shard]) -> None:
        self.manifest = manifest
        self.shards = shards
        self.vocab_hash = manifest.vocab_hash
        self.vocab_size: int = manifest.data["vocab"]["size"]
        self.special_ids: dict[str, int] = manifest.data["vocab"]["special_ids"]
        self._first_doc = list(itertools.accumulate((s.num_documents for s in shards), initial=0))

    @property
    def num_documents(self) -> int:
        return self._first_doc[-1]

    def __len__(self) -> int:
        return self.num_documents

    @property
    def num_tokens(self) -> int:
        return self.manifest.tokens

    def locate(self, doc: int) -> tuple[Shard, int]:
        """(shard, index of the document inside it) for a corpus-wide document index."""
        if not 0 <= doc < self.num_documents:
            raise IndexError(f"document {doc} of {self.num_documents}")
        s = bisect.bisect_right(self._first_doc, doc) - 1
        return self.shards[s], doc - self._first_doc[s]

    def document(self, doc: int) -> list[np.ndarray]:
        """The sentences of a document, each an array of token ids (views into the memory map)."""
        shard, j = self.locate(doc)
        a, b = shard.document_sentences[j], shard.document_sentences[j + 1]
        starts = shard.sentence_starts[a:b + 1].tolist()
        ids = shard.ids
        return [ids[starts[k]:starts[k + 1]] for k in range(len(starts) - 1)]

    def document_ids(self, doc: int) -> np.ndarray:
        """All token ids of a document, sentences concatenated."""
        shard, j = self.locate(doc)
        return shard.ids[shard.document_starts[j]:shard.document_starts[j + 1]]

    def token_counts(self, exclude: Sequence[int] | np.ndarray = ()) -> np.ndarray:
        """How often each vocabulary id occurs in the corpus, leaving out the documents ``exclude``.

        One pass over the memory-mapped shards, a shard at a time (peak memory: one shard's ids as int64).
        """
        counts = np.zeros(self.vocab_size, dtype=np.int64)
        for shard in self.shards:
            counts += np.bincount(np.asarray(shard.ids, dtype=np.int64), minlength=self.vocab_size)[:self.vocab_size]
        for doc in np.asarray(exclude, dtype=np.int64).tolist():
            ids = np.asarray(self.document_ids(doc), dtype=np.int64)
            counts -= np.bincount(ids, minlength=self.vocab_size)[:self.vocab_size]
        return counts


def load_corpus(directory: str | Path, expect_vocab_hash: str | None = None) -> Corpus:
    """Open a finished shard directory; refuse it when it was made with another vocabulary."""
    manifest = Manifest.read(directory)
    if expect_vocab_hash is not None and manifest.vocab_hash != expect_vocab_hash:
        raise WellreadError(f"shards were made with vocab {manifest.vocab_hash}, the model's vocab is "
                            f"{expect_vocab_hash}", file=manifest.path, field="vocab.hash")
    if not manifest.complete:
        raise WellreadError("the shards are not finished (the run was interrupted); rerun `wellread corpus` "
                            "with the same arguments to resume", file=manifest.path)
    directory = Path(directory)
    shards = []
    for rec in manifest.shards:
        try:
            ids = np.load(directory / f"{rec['name']}.ids.npy", mmap_mode="r")
            sents = np.load(directory / f"{rec['name']}.sentences.npy", mmap_mode="r")
            docs = np.load(directory / f"{rec['name']}.documents.npy")
        except (OSError, ValueError) as e:
            raise WellreadError(f"cannot read shard {rec['name']}: {e}", file=directory) from None
        if len(ids) != rec["tokens"] or len(sents) != rec["sentences"] + 1 or len(docs) != rec["documents"] + 1:
            raise WellreadError(f"shard {rec['name']} does not match the manifest", file=manifest.path)
        doc_sents = np.searchsorted(sents, docs)
        shards.append(Shard(rec["name"], ids, sents, docs, doc_sents))
    return Corpus(manifest, shards)


__all__ = ["FORMAT", "Manifest", "Corpus", "Shard", "build_corpus", "load_corpus", "split_sentences",
           "corpus_tokenizer"]
