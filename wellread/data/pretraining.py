"""Batches for pre-training: deterministic from a seed, resumable from a position, with a held-out slice.

:class:`PretrainingDataset` makes instances on the fly, a block of documents at a time, and masks
every batch anew with :class:`~wellread.data.masking.MaskingCollator` (dynamic masking, as RoBERTa;
Google's static masking wrote ``dupe_factor`` masked copies once). It is endless (epochs follow one
another, so a corpus smaller than one batch still fills batches). The position after each yielded batch is in ``state_dict()``;
a fresh dataset given ``load_state_dict(state)`` yields the very batches the first would have
yielded next, bit for bit. Iterate them in the training process (no DataLoader workers: the state
must live where the trainer saves it; they are fast enough, see docs/pretraining-data.md).

The held-out slice is ``eval_documents`` documents spread evenly through the corpus (indices
``round(k·(D−1)/(N−1))``), so every input file is represented; training never sees them, not even
as random next segments. Its batches are the same every time it is iterated (fixed seed).
"""

from __future__ import annotations

import dataclasses
import functools
import random
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Literal

import numpy as np
import torch
from tokenizers import Tokenizer

from wellread.data.masking import (
    Instance,
    MaskingCollator,
    continuation_table,
    create_instances_from_document,
)
from wellread.data.shards import Corpus
from wellread.errors import WellreadError
from wellread.tokenization import vocab_hash

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

    ``instances`` makes a document's instances (default: Google's ``create_instances_from_document``;
    ``wellread.experiments.cpu_aids.CopyPairs`` makes sentence pairs, some copies, and batches holding
    one carry ``copy_length``).
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
        instances: Callable[..., list[Instance]] = create_instances_from_document,
    ) -> None:
        super().__init__()
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
        self.seed, self.block_documents, self.make_instances = seed, block_documents, instances
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
            instances.extend(self.make_instances(
                self.corpus, d, self.max_seq_length, self.short_seq_prob, self.nsp, rng, documents=self.documents))
        rng.shuffle(instances)
        return instances

    def _take(self, cur: _Position, need: int, blocks: Callable[[int, int], Sequence]) -> list[Sequence]:
        """Move ``cur`` (in place) ``need`` items along the stream of blocks (``blocks(epoch, block)``, empty
        past an epoch's end); returns the slices taken. A block is left only when another item is needed."""
        taken = []
        items = blocks(cur.epoch, cur.block)
        while need:
            if cur.offset >= len(items):  # next block, or the next epoch's first
                cur.block, cur.offset = cur.block + 1, 0
                items = blocks(cur.epoch, cur.block)
                if not items:
                    cur.epoch, cur.block = cur.epoch + 1, 0
                    items = blocks(cur.epoch, cur.block)
                continue
            take = min(need, len(items) - cur.offset)
            taken.append(items[cur.offset:cur.offset + take])
            cur.offset += take
            need -= take
        return taken

    def position_after(self, state: dict[str, int], n: int) -> dict[str, int]:
        """The position ``n`` batches after ``state``, found by counting instances (nothing is masked): the
        walk of ``__iter__``, the pool's start plus the batches taken from it."""
        k = self.pool_batches
        target = state["step"] + state.get("skip", 0) + n
        cur = _Position(**{**state, "skip": 0})
        lengths = functools.lru_cache(maxsize=None)(lambda e, b: range(len(self.block_instances(e, b))))
        self._take(cur, (target // k * k - state["step"]) * self.batch_size, lengths)
        cur.step, cur.skip = target // k * k, target % k
        return dataclasses.asdict(cur)

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        if self.split == "eval":
            yield from self._eval_batches()
            return
        k, size = self.pool_batches, self.batch_size
        blocks = functools.lru_cache(maxsize=1)(self.block_instances)
        start = dataclasses.replace(self._pos)
        while True:
            # the next pool: k batches' worth of instances of the stream, in stream order
            cur = dataclasses.replace(start, skip=0)
            pool = [x for part in self._take(cur, k * size, blocks) for x in part]
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
