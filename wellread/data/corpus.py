"""Raw text → token-id shards with document and sentence boundaries: parallel, streaming, resumable
(``wellread corpus``).

The input is read by ``wellread.data.text`` (formats, sentence splitting, bounded memory); the output
directory is described, and read back, by ``wellread.data.shards``.

Documents never cross shards. The main process reads the input and cuts it into work units of about
1 MiB of text; a pool of worker processes splits sentences and encodes them (``encode_batch``); the
main process writes a shard (atomically) whenever a unit ends with ``shard_tokens`` or more tokens
waiting, and records it in the manifest. A rerun after a kill reads the manifest, checks that the
inputs, the vocab and the settings are those of the first run, seeks past the recorded shards, and
continues; the result equals an uninterrupted run's bit for bit, whatever the number of workers.
"""

from __future__ import annotations

import collections
import contextlib
import io
import itertools
import multiprocessing
import os
import re
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tokenizers import Tokenizer
from tqdm.auto import tqdm

from wellread.data.shards import FORMAT, Manifest
from wellread.data.text import (
    BAD_LOCATIONS_KEPT,
    COUNTERS,
    MAX_DOC_CHARS,
    MAX_LINE_BYTES,
    UNIT_CHARS,
    DocMode,
    Unit,
    file_record,
    is_jsonl,
    iter_units,
    sniff_doc_mode,
    split_sentences,
)
from wellread.errors import WellreadError
from wellread.io import atomic_write_bytes
from wellread.tokenization import load_tokenizer, special_ids, vocab_hash

ENCODE_BATCH = 4096  # sentences per encode_batch call: keeps the Encodings' memory small
DEFAULT_SHARD_TOKENS = 1 << 22
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


def encode_documents(docs: list[list[str]], dtype: str,
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

    def add(self, unit: Unit, encoded: tuple[np.ndarray, np.ndarray, np.ndarray, int]) -> None:
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
    modes = [sniff_doc_mode(p) if doc_mode == "auto" or is_jsonl(p) else doc_mode for p in paths]
    unit_chars = min(UNIT_CHARS, max(4096, shard_tokens))
    new = {
        "format": FORMAT,
        "vocab": {"hash": vocab_hash(tok), "size": size, "dtype": dtype, "special_ids": special_ids(tok)},
        "settings": {"shard_tokens": shard_tokens, "unit_chars": unit_chars, "text_field": text_field,
                     "max_line_bytes": MAX_LINE_BYTES, "max_document_chars": MAX_DOC_CHARS,
                     **({"group_lines": group_lines} if group_lines > 1 else {})},
        "files": [file_record(p, m) for p, m in zip(paths, modes)],
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
    units = iter_units(paths, modes, start, unit_chars, text_field, group_lines)
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
                    pending.append((unit, encode_documents(unit.docs, dtype, plain)))
                else:
                    pending.append((unit, pool.apply_async(encode_documents, (unit.docs, dtype))))
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
    bar = tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc="corpus", disable=not show,
               file=sys.stderr, dynamic_ncols=True)
    try:
        yield bar
    finally:
        bar.close()


def task_texts(task: str, data_dir: str | Path | None) -> Path:
    """The texts of ``task``'s training split as a text file to pre-train on: each distinct text once (both
    texts of a pair), one a line (a newline inside a text becomes a space), in the split's order; written to
    wellread's cache under a hash of its content. Dev and test are never read: their text stays unseen.

    Continued MLM pre-training of a student on its task's own text before distillation is what lifted emotion's
    PD student past half of the gap to its teacher (docs/own-task.md)."""
    import hashlib

    from wellread.data.squad import is_qa_task
    from wellread.data.task_files import read_split
    from wellread.hub import cache_dir
    from wellread.io import atomic_write_text

    if is_qa_task(task):
        raise WellreadError("a question-answering task has no texts to read here; give its contexts as files",
                            field="task")
    examples = read_split(task, data_dir, "train").examples
    texts = dict.fromkeys(" ".join(t.split()) for e in examples for t in (e.text_a, e.text_b) if t and t.strip())
    body = "".join(t + "\n" for t in texts)
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", Path(str(task)).stem)
    path = cache_dir() / "task-texts" / f"{name}-{hashlib.sha256(body.encode()).hexdigest()[:20]}.txt"
    if not path.is_file():
        atomic_write_text(path, body)
    return path
