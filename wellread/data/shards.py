"""A shard directory made by ``wellread corpus``, read back: its manifest and its documents.

Output directory (``out``)::

    manifest.json               what was read, with which vocab, totals, the finished shards
    shard-00000.ids.npy         token ids, uint16 (uint32 when the vocab has over 65,535 tokens)
    shard-00000.sentences.npy   int64 offsets into ids where each sentence starts, then len(ids)
    shard-00000.documents.npy   int64 offsets into ids where each document starts, then len(ids)
"""

from __future__ import annotations

import bisect
import dataclasses
import itertools
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from wellread.errors import WellreadError
from wellread.io import atomic_write_json

FORMAT = "wellread-corpus/1"
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
