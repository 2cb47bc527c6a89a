"""Batches for pre-training: deterministic from a seed, resumable from a position, with a held-out slice.

Two ways to mask, as in the issue:

* dynamic (default): :class:`PretrainingDataset` makes instances on the fly, a block of documents
  at a time, and masks every batch anew with :class:`~wellread.data.masking.MaskingCollator`;
* static (Google's way): :func:`make_instances` writes ``dupe_factor`` masked copies of the corpus
  once; :class:`StaticPretrainingDataset` reads them back in a seeded order.

Both yield the same batch dicts and are endless (epochs follow one another, so a corpus smaller
than one batch still fills batches). The position after each yielded batch is in ``state_dict()``;
a fresh dataset given ``load_state_dict(state)`` yields the very batches the first would have
yielded next, bit for bit. Iterate them in the training process (no DataLoader workers: the state
must live where the trainer saves it; they are fast enough, see docs/pretraining-data.md).

The held-out slice is ``eval_documents`` documents spread evenly through the corpus (indices
``round(k·(D−1)/(N−1))``), so every input file is represented; training never sees them, not even
as random next segments. Its batches are the same every time it is iterated (fixed seed).
"""

from __future__ import annotations

import dataclasses
import json
import os
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from tokenizers import Tokenizer

from wellread.data.masking import (
    Instance,
    MaskingCollator,
    continuation_table,
    create_instances_from_document,
    create_masked_lm_predictions,
)
from wellread.data.shards import Corpus
from wellread.errors import WellreadError
from wellread.io import atomic_write_json
from wellread.tokenization import MASK, vocab_hash

STATIC_FORMAT = "wellread-instances/1"
STATIC_ARRAYS = ("input_ids", "lengths", "b_starts", "next_sentence", "masked_positions", "masked_labels",
                 "masked_counts")


def split_documents(num_documents: int, eval_documents: int) -> tuple[np.ndarray, np.ndarray]:
    """(train, eval) document indices: ``eval_documents`` evenly spaced ones are held out."""
    if eval_documents < 0 or eval_documents >= num_documents:
        raise WellreadError(f"cannot hold out {eval_documents} of {num_documents} documents",
                            field="eval_documents")
    held = np.unique(np.round(np.linspace(0, num_documents - 1, eval_documents)).astype(np.int64))
    train = np.setdiff1d(np.arange(num_documents, dtype=np.int64), held, assume_unique=True)
    return train, held


def _seed(*parts: int | str) -> int:
    """A 63-bit seed from parts, the same on every machine and Python (no ``hash()``)."""
    ints = [p if isinstance(p, int) else int.from_bytes(p.encode(), "little") for p in parts]
    return int(np.random.SeedSequence(ints).generate_state(1, dtype=np.uint64)[0] >> np.uint64(1))


def _check_vocab(corpus_hash: str, tokenizer: Tokenizer | None, where: Any) -> None:
    if tokenizer is not None and vocab_hash(tokenizer) != corpus_hash:
        raise WellreadError(f"shards were made with vocab {corpus_hash}, the model's vocab is "
                            f"{vocab_hash(tokenizer)}", file=where, field="vocab.hash")


@dataclasses.dataclass
class _Position:
    epoch: int = 0
    block: int = 0  # index of the block of documents within the epoch
    offset: int = 0  # next instance within the block
    step: int = 0  # batches before the current pool (all batches yielded, without length pools)
    skip: int = 0  # batches already yielded from the current pool


class PretrainingDataset(torch.utils.data.IterableDataset):
    """Endless MLM(+NSP) batches from a corpus, dynamically masked, resumable (see the module doc).

    Each epoch visits the training documents in a seeded order, in blocks of ``block_documents``;
    a block's instances are made and shuffled with a ``random.Random`` seeded by (seed, epoch,
    block), and batch ``step`` is masked with a ``torch.Generator`` seeded by (seed, step). So a
    position (epoch, block, offset, step) fixes every later batch.

    Length pools: the stream is taken ``pool_batches`` batches at a time; a pool's instances are
    sorted by length, cut into batches, and the batches shuffled (seeded by the pool's first step),
    so that a batch pads little (as ``group_by_length`` does in transformers) while the order of
    the data stays random across pools. The position is then that of the pool's start plus the
    batches already taken from it (``skip``). ``pool_batches=1`` turns this off.

    ``copies`` (MLM only): sentence pairs instead of packed single segments, that fraction of them copy
    pairs ``[CLS] A [SEP] A [SEP]`` (``create_instances_from_document``); batches holding one carry
    ``copy_length`` (len(A) per row, 0 for the others) for the alignment scaffold of ``wellread pretrain``.
    """

    def __init__(
        self,
        corpus: Corpus,
        *,
        batch_size: int,
        split: Literal["train", "eval"] = "train",
        eval_documents: int = 0,
        max_seq_length: int = 128,
        nsp: bool = True,
        short_seq_prob: float = 0.1,
        masked_lm_prob: float = 0.15,
        max_predictions_per_seq: int = 20,
        whole_word: bool = False,
        tokenizer: Tokenizer | None = None,
        seed: int = 0,
        block_documents: int = 4096,
        pool_batches: int = 32,
        copies: float | None = None,
    ) -> None:
        super().__init__()
        if copies is not None and (nsp or not 0.0 <= copies <= 1.0):
            raise WellreadError("copy pairs are a fraction in [0, 1], for MLM without next-sentence prediction",
                                field="copy_pairs")
        _check_vocab(corpus.vocab_hash, tokenizer, corpus.manifest.path)
        if whole_word and tokenizer is None:
            raise WellreadError("whole-word masking needs the tokenizer (to know which pieces start with ##)",
                                field="whole_word")
        if batch_size < 1:
            raise WellreadError(f"batch_size must be positive, not {batch_size}", field="batch_size")
        if max_seq_length < 5:
            raise WellreadError(f"max_seq_length must be at least 5, not {max_seq_length}", field="max_seq_length")
        train, held = split_documents(corpus.num_documents, eval_documents)
        self.documents = train if split == "train" else held
        if split == "eval" and not len(held):
            raise WellreadError("no documents are held out for evaluation (eval_documents is 0)",
                                field="eval_documents")
        if nsp and len(self.documents) < 2:
            raise WellreadError(f"next-sentence prediction needs at least 2 documents, the {split} split has "
                                f"{len(self.documents)}", file=corpus.manifest.path)
        self.corpus, self.split, self.batch_size = corpus, split, batch_size
        self.max_seq_length, self.nsp, self.short_seq_prob = max_seq_length, nsp, short_seq_prob
        self.seed, self.block_documents, self.copies = seed, block_documents, copies
        self.pool_batches = max(1, pool_batches)
        self.collator = MaskingCollator(
            vocab_size=corpus.vocab_size, special_ids=corpus.special_ids, masked_lm_prob=masked_lm_prob,
            max_predictions_per_seq=max_predictions_per_seq, whole_word=whole_word,
            continuation=continuation_table(tokenizer) if tokenizer is not None else None)
        self._pos = _Position()

    def state_dict(self) -> dict[str, int]:
        """Where the next batch starts (after the batches yielded so far)."""
        return dataclasses.asdict(self._pos)

    def load_state_dict(self, state: dict[str, int]) -> None:
        self._pos = _Position(**state)

    @property
    def epoch(self) -> int:
        return self._pos.epoch

    def block_instances(self, epoch: int, block: int) -> list[Instance]:
        """The shuffled instances of one block of documents of one epoch (empty past the epoch's end)."""
        order = np.random.default_rng(_seed(self.seed, self.split, epoch)).permutation(self.documents)
        docs = order[block * self.block_documents:(block + 1) * self.block_documents]
        rng = random.Random(_seed(self.seed, self.split, epoch, block))
        instances: list[Instance] = []
        for d in docs.tolist():
            instances.extend(create_instances_from_document(
                self.corpus, d, self.max_seq_length, self.short_seq_prob, self.nsp, rng, documents=self.documents,
                copies=self.copies))
        rng.shuffle(instances)
        return instances

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        if self.split == "eval":
            yield from self._eval_batches()
            return
        k, size = self.pool_batches, self.batch_size
        start = dataclasses.replace(self._pos)
        instances = self.block_instances(start.epoch, start.block)
        while True:
            # the next pool: k batches' worth of instances of the stream, in stream order
            cur = dataclasses.replace(start, skip=0)
            pool: list[Instance] = []
            while len(pool) < k * size:
                if cur.offset >= len(instances):  # next block, or the next epoch's first
                    cur.block, cur.offset = cur.block + 1, 0
                    instances = self.block_instances(cur.epoch, cur.block)
                    if not instances:
                        cur.epoch, cur.block = cur.epoch + 1, 0
                        instances = self.block_instances(cur.epoch, cur.block)
                    continue
                take = min(k * size - len(pool), len(instances) - cur.offset)
                pool.extend(instances[cur.offset:cur.offset + take])
                cur.offset += take
            cur.step = start.step + k
            if k > 1:  # sort the pool by length, cut it into batches, shuffle the batches: little padding
                pool.sort(key=lambda x: len(x.tokens))
            groups = [pool[i * size:(i + 1) * size] for i in range(k)]
            if k > 1:
                random.Random(_seed(self.seed, "pool", start.step)).shuffle(groups)
            for j in range(start.skip, k):
                generator = torch.Generator().manual_seed(_seed(self.seed, "mask", start.step + j))
                self._pos = cur if j == k - 1 else dataclasses.replace(start, skip=j + 1)
                yield self.collator(groups[j], generator)
            start = cur

    def _eval_batches(self) -> Iterator[dict[str, torch.Tensor]]:
        """One pass over the held-out documents; the same batches (and masks) every time."""
        block = 0
        step = 0
        while instances := self.block_instances(0, block):
            for i in range(0, len(instances), self.batch_size):
                generator = torch.Generator().manual_seed(_seed(self.seed, "eval-mask", step))
                step += 1
                yield self.collator(instances[i:i + self.batch_size], generator)
            block += 1


# --- static masking -----------------------------------------------------------------------------------

class _NpyAppender:
    """Rows appended to a raw file, turned into a .npy at the end (the row count is not known ahead)."""

    def __init__(self, path: Path, dtype: str, row_shape: tuple[int, ...]) -> None:
        self.path, self.dtype, self.row_shape = path, np.dtype(dtype), row_shape
        self.raw = path.with_name(f".{path.name}.raw.tmp")
        self.f = open(self.raw, "wb")
        self.rows = 0

    def append(self, rows: np.ndarray) -> None:
        self.f.write(np.ascontiguousarray(rows, dtype=self.dtype).tobytes())
        self.rows += len(rows)

    def finish(self) -> None:
        self.f.close()
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        with open(tmp, "wb") as out, open(self.raw, "rb") as src:
            header = {"descr": np.lib.format.dtype_to_descr(self.dtype), "fortran_order": False,
                      "shape": (self.rows, *self.row_shape)}
            np.lib.format.write_array_header_1_0(out, header)
            while chunk := src.read(1 << 24):
                out.write(chunk)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, self.path)
        os.unlink(self.raw)


def make_instances(
    corpus: Corpus,
    out: str | Path,
    *,
    dupe_factor: int = 10,
    max_seq_length: int = 128,
    short_seq_prob: float = 0.1,
    masked_lm_prob: float = 0.15,
    max_predictions_per_seq: int = 20,
    nsp: bool = True,
    whole_word: bool = False,
    tokenizer: Tokenizer | None = None,
    eval_documents: int = 0,
    seed: int = 12345,
) -> Path:
    """Static masking, Google's way: ``dupe_factor`` passes over the training documents, each making
    instances and masking them once with one ``random.Random(seed)``; written as arrays under ``out``.

    Arrays (row i = instance i): ``input_ids`` (N × max_seq_length, masked, padded with 0),
    ``lengths``, ``b_starts``, ``next_sentence`` (1 random, 0 real, −1 without NSP),
    ``masked_positions``/``masked_labels`` (N × max_predictions_per_seq, padded with 0) and
    ``masked_counts``; ``instances.json`` says how they were made. Streams: memory does not grow
    with the corpus. The order is Google's creation order; the reader shuffles per epoch.
    """
    _check_vocab(corpus.vocab_hash, tokenizer, corpus.manifest.path)
    if whole_word and tokenizer is None:
        raise WellreadError("whole-word masking needs the tokenizer", field="whole_word")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    train, _ = split_documents(corpus.num_documents, eval_documents)
    if nsp and len(train) < 2:
        raise WellreadError("next-sentence prediction needs at least 2 documents", file=corpus.manifest.path)
    ids_dtype = corpus.manifest.data["vocab"]["dtype"]
    L, P = max_seq_length, max_predictions_per_seq
    arrays = {
        "input_ids": _NpyAppender(out / "input_ids.npy", ids_dtype, (L,)),
        "lengths": _NpyAppender(out / "lengths.npy", "uint16", ()),
        "b_starts": _NpyAppender(out / "b_starts.npy", "uint16", ()),
        "next_sentence": _NpyAppender(out / "next_sentence.npy", "int8", ()),
        "masked_positions": _NpyAppender(out / "masked_positions.npy", "uint16", (P,)),
        "masked_labels": _NpyAppender(out / "masked_labels.npy", ids_dtype, (P,)),
        "masked_counts": _NpyAppender(out / "masked_counts.npy", "uint16", ()),
    }
    continuation = continuation_table(tokenizer) if tokenizer is not None else None
    specials = corpus.special_ids
    special_set = {specials["[CLS]"], specials["[SEP]"]}
    rng = random.Random(seed)
    rows: dict[str, list] = {k: [] for k in arrays}

    def flush() -> None:
        n = len(rows["lengths"])
        ids = np.zeros((n, L), dtype=np.int64)
        pos = np.zeros((n, P), dtype=np.int64)
        lab = np.zeros((n, P), dtype=np.int64)
        for i, (t, p, lb) in enumerate(zip(rows["input_ids"], rows["masked_positions"], rows["masked_labels"])):
            ids[i, :len(t)], pos[i, :len(p)], lab[i, :len(lb)] = t, p, lb
        for k, v in (("input_ids", ids), ("masked_positions", pos), ("masked_labels", lab)):
            arrays[k].append(v)
        for k in ("lengths", "b_starts", "next_sentence", "masked_counts"):
            arrays[k].append(np.array(rows[k], dtype=np.int64))
        for v in rows.values():
            v.clear()

    for _ in range(dupe_factor):
        for d in train.tolist():
            for inst in create_instances_from_document(corpus, d, L, short_seq_prob, nsp, rng, documents=train):
                toks = inst.tokens.tolist()
                word_start = None if continuation is None else (~continuation[inst.tokens]).tolist()
                masked, positions, labels = create_masked_lm_predictions(
                    toks, [t in special_set for t in toks], word_start, masked_lm_prob, P,
                    corpus.vocab_size, specials[MASK], rng, whole_word)
                rows["input_ids"].append(masked)
                rows["lengths"].append(len(toks))
                rows["b_starts"].append(inst.b_start)
                rows["next_sentence"].append(-1 if inst.is_random_next is None else int(inst.is_random_next))
                rows["masked_positions"].append(positions)
                rows["masked_labels"].append(labels)
                rows["masked_counts"].append(len(positions))
                if len(rows["lengths"]) == 4096:
                    flush()
    flush()
    for a in arrays.values():
        a.finish()
    atomic_write_json(out / "instances.json", {
        "format": STATIC_FORMAT, "vocab_hash": corpus.vocab_hash, "vocab_size": corpus.vocab_size,
        "special_ids": specials, "instances": arrays["lengths"].rows, "corpus": str(corpus.manifest.path.parent),
        "settings": {"dupe_factor": dupe_factor, "max_seq_length": L, "short_seq_prob": short_seq_prob,
                     "masked_lm_prob": masked_lm_prob, "max_predictions_per_seq": P, "nsp": nsp,
                     "whole_word": whole_word, "eval_documents": eval_documents, "seed": seed}})
    return out


class StaticPretrainingDataset(torch.utils.data.IterableDataset):
    """Endless batches of pre-masked instances (from :func:`make_instances`), in a seeded order per epoch."""

    def __init__(self, path: str | Path, *, batch_size: int, seed: int = 0, expect_vocab_hash: str | None = None,
                 pad_to_multiple_of: int = 8) -> None:
        super().__init__()
        path = Path(path)
        meta_path = path / "instances.json"
        if not meta_path.is_file():
            raise WellreadError("no instances.json here; make instances with make_instances", file=path)
        self.meta = json.loads(meta_path.read_text(encoding="utf-8"))
        if self.meta.get("format") != STATIC_FORMAT:
            raise WellreadError(f"not a {STATIC_FORMAT} directory", file=meta_path, field="format")
        if expect_vocab_hash is not None and self.meta["vocab_hash"] != expect_vocab_hash:
            raise WellreadError(f"instances were made with vocab {self.meta['vocab_hash']}, the model's vocab is "
                                f"{expect_vocab_hash}", file=meta_path, field="vocab_hash")
        self.arrays = {k: np.load(path / f"{k}.npy", mmap_mode="r") for k in STATIC_ARRAYS}
        self.n = self.meta["instances"]
        if self.n == 0:
            raise WellreadError("no instances", file=meta_path)
        self.batch_size, self.seed, self.pad_to_multiple_of = batch_size, seed, pad_to_multiple_of
        self._pos = {"epoch": 0, "offset": 0, "step": 0}

    def state_dict(self) -> dict[str, int]:
        return dict(self._pos)

    def load_state_dict(self, state: dict[str, int]) -> None:
        self._pos = {"epoch": state["epoch"], "offset": state["offset"], "step": state["step"]}

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        pos = self._pos
        order = np.random.default_rng(_seed(self.seed, "static", pos["epoch"])).permutation(self.n)
        while True:
            rows: list[np.ndarray] = []
            need = self.batch_size
            while need:
                if pos["offset"] >= self.n:
                    pos["epoch"], pos["offset"] = pos["epoch"] + 1, 0
                    order = np.random.default_rng(_seed(self.seed, "static", pos["epoch"])).permutation(self.n)
                take = min(need, self.n - pos["offset"])
                rows.append(order[pos["offset"]:pos["offset"] + take])
                pos["offset"] += take
                need -= take
            pos["step"] += 1
            yield self._batch(np.sort(np.concatenate(rows)))

    def _batch(self, idx: np.ndarray) -> dict[str, torch.Tensor]:
        a = self.arrays
        lengths = a["lengths"][idx].astype(np.int64)
        m = self.pad_to_multiple_of
        width = int(-(-lengths.max() // m) * m)
        ids = a["input_ids"][idx, :width].astype(np.int64)
        cols = np.arange(width)[None, :]
        attn = (cols < lengths[:, None]).astype(np.int64)
        types = ((cols >= a["b_starts"][idx].astype(np.int64)[:, None]) & (attn == 1)).astype(np.int64)
        counts = a["masked_counts"][idx].astype(np.int64)
        keep = np.arange(a["masked_positions"].shape[1])[None, :] < counts[:, None]
        flat = (a["masked_positions"][idx].astype(np.int64) + np.arange(len(idx))[:, None] * width)[keep]
        batch = {"input_ids": torch.from_numpy(ids), "token_type_ids": torch.from_numpy(types),
                 "attention_mask": torch.from_numpy(attn), "masked_positions": torch.from_numpy(flat),
                 "masked_labels": torch.from_numpy(a["masked_labels"][idx].astype(np.int64)[keep])}
        nsp = a["next_sentence"][idx]
        if (nsp >= 0).all():
            batch["next_sentence_label"] = torch.from_numpy(nsp.astype(np.int64))
        return batch


__all__ = ["PretrainingDataset", "StaticPretrainingDataset", "make_instances", "split_documents"]
