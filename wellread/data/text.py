"""Reading raw text for the corpus: documents as lists of lines, in work units, with sentence splitting.

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
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import itertools
import json
import re
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, BinaryIO, Literal

from wellread.errors import WellreadError

MAX_LINE_BYTES = 1 << 20  # longer lines are split at whitespace into pieces of at most this
MAX_JSONL_LINE_BYTES = 1 << 26  # a JSON record longer than this is skipped (counted as bad)
MAX_DOC_CHARS = 1 << 22  # a blank-mode (or JSON) document is closed after this much text
UNIT_CHARS = 1 << 20  # text per work unit sent to a worker
SNIFF_LINES = 10_000
BAD_LOCATIONS_KEPT = 10
DocMode = Literal["auto", "line", "blank"]
COUNTERS = ("lines", "text_bytes", "replaced_chars", "blank_lines", "long_lines_split",
            "long_documents_split", "bad_json_lines", "empty_documents")


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


def file_record(path: Path, doc_mode: str) -> dict[str, Any]:
    st = path.stat()
    with open(path, "rb") as f:
        head = hashlib.sha256(f.read(1 << 20)).hexdigest()[:16]
    return {"path": str(path.resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns,
            "head_sha256": head, "doc_mode": doc_mode}


def is_jsonl(path: Path) -> bool:
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


def sniff_doc_mode(path: Path) -> str:
    """``blank`` when one of the first lines is blank and followed by text, else ``line``."""
    if is_jsonl(path):
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
class Unit:
    """Whole documents (each a list of lines) read from one file, with what reading them counted."""

    docs: list[list[str]]
    stats: dict[str, int]
    bad: list[str]
    end: dict[str, int]  # {"file", "offset", "line", "inside_line"}: where the next unit starts
    disk_bytes: int  # bytes of the file on disk consumed (for the progress bar)


def iter_units(files: Sequence[Path], modes: Sequence[str], start: dict[str, int], unit_chars: int,
                text_field: str, group_lines: int = 1) -> Iterator[Unit]:
    """Cut the input into units of whole documents, starting at ``start`` (a recorded position).

    A unit closes as soon as a document completes with ``unit_chars`` of text gathered, and at the
    end of each file; so where units end depends only on the input, never on where a run resumed.
    """
    for fi in range(start["file"], len(files)):
        yield from _file_units(fi, files[fi], modes[fi], start if fi == start["file"] else None,
                               unit_chars, text_field, group_lines)


def _file_units(fi: int, path: Path, mode: str, position: dict[str, int] | None, unit_chars: int,
                text_field: str, group_lines: int = 1) -> Iterator[Unit]:
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

        def make_unit() -> Unit:
            nonlocal docs, stats, bad, disk, chars
            stats["long_lines_split"] = reader.long_lines
            reader.long_lines = 0
            new_disk = _disk_position(f)
            unit = Unit(docs, stats, bad, {"file": fi, **reader.position()}, new_disk - disk)
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
