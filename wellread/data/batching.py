"""Tokenise a task once, cache the token ids, and serve length-bucketed, dynamically padded batches.

Bucketing: the shuffled examples are cut into large pools (``pool`` batches each), each pool is
sorted by length and cut into batches, and the batch order is shuffled again. Batches then hold
examples of similar length (little padding) while the order stays random across buckets. The
order is a function of (seed, epoch) only, so a resumed run sees the same batches.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from tokenizers import Tokenizer

from wellread.config import configclass, field
from wellread.hub import cache_dir
from wellread.io import atomic_write_bytes
from wellread.tokenization import vocab_hash

if TYPE_CHECKING:
    import torch


@configclass
class Inputs:
    """How inputs are cut: the ``inputs`` group of every command that encodes task examples."""

    max_length: int = field(128, ge=8, le=512, help="truncate inputs to this many tokens (the paper: 128)")


@dataclass
class Features:
    """Token ids of many examples, stored flat: example i is ids[offsets[i]:offsets[i+1]]."""

    ids: np.ndarray  # int32
    type_ids: np.ndarray  # int8
    offsets: np.ndarray  # int64, len n+1

    def __len__(self) -> int:
        return len(self.offsets) - 1

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def save(self, path: Path) -> None:
        buf = io.BytesIO()
        np.savez(buf, ids=self.ids, type_ids=self.type_ids, offsets=self.offsets)
        atomic_write_bytes(path, buf.getvalue())

    @classmethod
    def load(cls, path: Path) -> Features:
        with np.load(path) as z:
            return cls(ids=z["ids"], type_ids=z["type_ids"], offsets=z["offsets"])


def encode_pairs(tok: Tokenizer, texts_a: Sequence[str], texts_b: Sequence[str | None] | None, max_length: int) -> Features:
    """BERT inputs ([CLS] a [SEP] b [SEP]) truncated longest-first to ``max_length``, as run_glue does."""
    tok = Tokenizer.from_str(tok.to_str())  # a private copy: truncation settings must not leak
    tok.no_padding()
    tok.enable_truncation(max_length=max_length, strategy="longest_first")
    if texts_b is None or all(b is None for b in texts_b):
        encs = tok.encode_batch(list(texts_a))
    else:
        encs = tok.encode_batch([(a, b) if b is not None else a for a, b in zip(texts_a, texts_b)])
    lengths = np.fromiter((len(e.ids) for e in encs), dtype=np.int64, count=len(encs))
    offsets = np.zeros(len(encs) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    ids = np.fromiter((i for e in encs for i in e.ids), dtype=np.int32, count=int(offsets[-1]))
    type_ids = np.fromiter((t for e in encs for t in e.type_ids), dtype=np.int8, count=int(offsets[-1]))
    return Features(ids=ids, type_ids=type_ids, offsets=offsets)


def cached_encode(tok: Tokenizer, texts_a: Sequence[str], texts_b: Sequence[str | None] | None, max_length: int,
                  key: str) -> Features:
    """``encode_pairs`` cached on disk under a hash of the texts, the vocabulary and ``max_length``.

    ``key`` names the source (e.g. task/split) for a readable file name; the hash covers the content,
    so a cache made from other text or another vocabulary is never reused.
    """
    h = hashlib.sha256()
    h.update(f"{vocab_hash(tok)}|{max_length}|".encode())
    for a, b in zip(texts_a, texts_b if texts_b is not None else [None] * len(texts_a)):
        h.update(a.encode("utf-8", "replace"))
        h.update(b"\x00" + (b.encode("utf-8", "replace") if b is not None else b"\x01") + b"\x02")
    path = cache_dir() / "features" / f"{key.replace('/', '_')}-{h.hexdigest()[:20]}.npz"
    if path.is_file():
        try:
            return Features.load(path)
        except (OSError, ValueError, KeyError):
            pass  # a damaged cache file is rebuilt
    feats = encode_pairs(tok, texts_a, texts_b, max_length)
    try:
        feats.save(path)
    except OSError:
        pass  # an unwritable cache only costs time
    return feats


def bucketed_batches(lengths: np.ndarray, batch_size: int, seed: int, epoch: int, *, pool: int = 64,
                     drop_last: bool = True) -> list[np.ndarray]:
    """Index arrays of length-bucketed batches in a random order fixed by (seed, epoch)."""
    rng = np.random.default_rng([seed, epoch])
    order = rng.permutation(len(lengths))
    batches = []
    span = batch_size * pool
    for start in range(0, len(order), span):
        chunk = order[start:start + span]
        chunk = chunk[np.argsort(lengths[chunk], kind="stable")]
        for b in range(0, len(chunk), batch_size):
            batches.append(chunk[b:b + batch_size])
    if drop_last and batches and len(batches[-1]) < batch_size:
        # The short batch (if any) is the tail of the last pool; drop it as DataLoader's drop_last does.
        batches = [b for b in batches if len(b) == batch_size]
    perm = rng.permutation(len(batches))
    return [batches[i] for i in perm]


def collate(feats: Features, index: np.ndarray, pad_id: int = 0) -> dict[str, torch.Tensor]:
    """Pad the chosen examples to the longest of them (dynamic padding)."""
    import torch  # here: the commands that only read settings (Inputs) start without PyTorch

    lengths = feats.lengths[index]
    width = int(lengths.max())
    n = len(index)
    ids = np.full((n, width), pad_id, dtype=np.int64)
    types = np.zeros((n, width), dtype=np.int64)
    mask = np.zeros((n, width), dtype=np.int64)
    for row, (i, ln) in enumerate(zip(index, lengths)):
        s = feats.offsets[i]
        ids[row, :ln] = feats.ids[s:s + ln]
        types[row, :ln] = feats.type_ids[s:s + ln]
        mask[row, :ln] = 1
    return {"input_ids": torch.from_numpy(ids), "token_type_ids": torch.from_numpy(types),
            "attention_mask": torch.from_numpy(mask)}


def eval_batches(lengths: np.ndarray, max_tokens: int = 16384, max_batch: int = 512) -> Iterator[np.ndarray]:
    """Length-sorted batches for inference, sized by padded tokens (big batches: no gradients kept)."""
    order = np.argsort(lengths, kind="stable")
    start = 0
    while start < len(order):
        end = start + 1
        while end < len(order) and end - start < max_batch and (end - start + 1) * lengths[order[end]] <= max_tokens:
            end += 1
        yield order[start:end]
        start = end
