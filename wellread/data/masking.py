"""Pre-training instances and masked-LM masking, after google-research/bert ``create_pretraining_data.py``.

``create_instances_from_document``, ``truncate_seq_pair`` and ``create_masked_lm_predictions`` follow
Google's functions step for step (the same draws from the same ``random.Random`` in the same order),
with two deliberate differences:

* a random next segment always comes from *another* document: Google tries ten random draws and
  may keep its own document; we draw uniformly among the others;
* for whole-word masking a ``##`` piece joins the word before it only when that word is right
  next to it: Google also joins a ``##`` piece that opens segment B (after front truncation) to
  the last word of segment A, across the [SEP].

``MaskingCollator`` is the same masking, vectorised over a batch with torch (dynamic masking): the
number of predictions per sequence, the greedy choice of whole words in random order under the
``max_predictions_per_seq`` budget and the 80/10/10 replacement have Google's distribution, drawn
from a ``torch.Generator``. It returns the sparse form (flat indices of the masked positions and
their labels), so the MLM head scores only those positions.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Sequence
from typing import Protocol

import numpy as np
import torch
from tokenizers import Tokenizer

from wellread.tokenization import CLS, MASK, PAD, SEP, vocab_list


class Documents(Protocol):
    """What instance creation needs from a corpus (``wellread.data.shards.Corpus`` is one)."""

    special_ids: dict[str, int]

    @property
    def num_documents(self) -> int: ...

    def document(self, doc: int) -> list[np.ndarray]: ...


@dataclasses.dataclass
class Instance:
    """One pre-training sequence: ``[CLS] A [SEP] B [SEP]`` (or ``[CLS] A [SEP]`` without NSP).

    ``b_start`` is the index of B's first token (``len(tokens)`` when there is no B); token type 1
    runs from there to the end. ``a_document``/``b_document`` say where the segments came from.
    ``forced_random_next`` is True when the chunk held one sentence, so B had to be random (Google's
    rule): on corpora of short documents this pushes the share of random B above one half.
    ``copy`` is True when B is A itself (copy pairs, made by ``wellread.experiments.cpu_aids.CopyPairs``).
    """

    tokens: np.ndarray
    b_start: int
    is_random_next: bool | None
    a_document: int
    b_document: int | None
    forced_random_next: bool = False
    copy: bool = False

    def token_type_ids(self) -> np.ndarray:
        types = np.zeros(len(self.tokens), dtype=np.int64)
        types[self.b_start:] = 1
        return types


def continuation_table(tok: Tokenizer | list[str]) -> np.ndarray:
    """``table[id]`` is True for a ``##`` piece (it continues a word): what whole-word masking groups by."""
    tokens = vocab_list(tok) if isinstance(tok, Tokenizer) else tok
    return np.array([t.startswith("##") for t in tokens], dtype=bool)


def truncate_seq_pair(tokens_a: list[int], tokens_b: list[int], max_num_tokens: int, rng: random.Random) -> None:
    """Shorten the pair in place to ``max_num_tokens``, one token at a time from the longer segment,
    from its front or its back at random (Google's rule, so no side is always cut)."""
    la, lb = len(tokens_a), len(tokens_b)
    a_front = a_back = b_front = b_back = 0
    while la + lb > max_num_tokens:  # count the cuts, then slice once: a cut is O(1), not O(n)
        front = rng.random() < 0.5
        if la > lb:
            la -= 1
            a_front, a_back = (a_front + 1, a_back) if front else (a_front, a_back + 1)
        else:
            lb -= 1
            b_front, b_back = (b_front + 1, b_back) if front else (b_front, b_back + 1)
    if a_front or a_back:
        tokens_a[:] = tokens_a[a_front:len(tokens_a) - a_back]
    if b_front or b_back:
        tokens_b[:] = tokens_b[b_front:len(tokens_b) - b_back]


def _random_other(doc_index: int, documents: np.ndarray | None, num_documents: int, rng: random.Random) -> int:
    """A document drawn uniformly from ``documents`` (default: all), never ``doc_index`` itself."""
    if documents is None:
        r = rng.randint(0, num_documents - 2)
        return r + (r >= doc_index)
    pos = int(np.searchsorted(documents, doc_index))
    inside = pos < len(documents) and documents[pos] == doc_index
    r = rng.randint(0, len(documents) - 1 - inside)
    return int(documents[r + (inside and r >= pos)])


def create_instances_from_document(
    corpus: Documents,
    doc_index: int,
    max_seq_length: int,
    short_seq_prob: float,
    nsp: bool,
    rng: random.Random,
    *,
    documents: np.ndarray | None = None,
) -> list[Instance]:
    """The instances of one document, as Google's function of the same name makes them.

    With ``nsp``: sentences are gathered into chunks of ``target_seq_length`` (the full length, or
    with probability ``short_seq_prob`` a random shorter one, to match short inputs at fine-tuning);
    a chunk is cut at a random sentence into A and B, and half the time B is replaced by text from
    a random other document (taken from ``documents``, a sorted array, when given), the unused
    sentences being put back. Without ``nsp``: sentences are packed into single-segment sequences of
    the target length (a sentence that does not fit continues in the next sequence).
    """
    cls, sep = corpus.special_ids[CLS], corpus.special_ids[SEP]
    document = corpus.document(doc_index)
    max_num_tokens = max_seq_length - (3 if nsp else 2)
    if not nsp:
        return _pack_document(document, doc_index, max_num_tokens, short_seq_prob, rng, cls, sep)
    target_seq_length = max_num_tokens
    if rng.random() < short_seq_prob:
        target_seq_length = rng.randint(2, max_num_tokens)
    n_docs = corpus.num_documents if documents is None else len(documents)
    if n_docs < 2:
        raise ValueError("next-sentence prediction needs at least two documents")

    instances = []
    current_chunk: list[np.ndarray] = []
    current_length = 0
    i = 0
    while i < len(document):
        segment = document[i]
        current_chunk.append(segment)
        current_length += len(segment)
        if i == len(document) - 1 or current_length >= target_seq_length:
            if current_chunk:
                a_end = 1
                if len(current_chunk) >= 2:
                    a_end = rng.randint(1, len(current_chunk) - 1)
                tokens_a = [t for s in current_chunk[:a_end] for t in s.tolist()]
                tokens_b: list[int] = []
                forced = len(current_chunk) == 1
                if forced or rng.random() < 0.5:
                    is_random_next = True
                    target_b_length = target_seq_length - len(tokens_a)
                    b_document = _random_other(doc_index, documents, corpus.num_documents, rng)
                    random_document = corpus.document(b_document)
                    random_start = rng.randint(0, len(random_document) - 1)
                    for j in range(random_start, len(random_document)):
                        tokens_b.extend(random_document[j].tolist())
                        if len(tokens_b) >= target_b_length:
                            break
                    i -= len(current_chunk) - a_end  # put the unused sentences back
                else:
                    is_random_next = False
                    b_document = doc_index
                    for s in current_chunk[a_end:]:
                        tokens_b.extend(s.tolist())
                truncate_seq_pair(tokens_a, tokens_b, max_num_tokens, rng)
                assert tokens_a and tokens_b
                tokens = np.array([cls, *tokens_a, sep, *tokens_b, sep], dtype=np.int64)
                instances.append(Instance(tokens, len(tokens_a) + 2, is_random_next, doc_index, b_document, forced))
            current_chunk = []
            current_length = 0
        i += 1
    return instances


def _pack_document(document: list[np.ndarray], doc_index: int, max_num_tokens: int, short_seq_prob: float,
                   rng: random.Random, cls: int, sep: int) -> list[Instance]:
    """The document's tokens cut into sequences of ``max_num_tokens`` (the last one shorter).

    Without NSP nothing needs sentence-aligned segments, so a sentence that does not fit is split
    and continues in the next sequence: no token is dropped and no sequence is left half empty.
    With probability ``short_seq_prob`` a sequence is given a random shorter length (Google's
    reason: fine-tuning inputs are often short); drawn per sequence, not per document, so that a
    short draw does not cut a whole document into slivers.
    """
    ids = np.concatenate(document) if document else np.zeros(0, dtype=np.int64)
    out = []
    start = 0
    while start < len(ids):
        n = rng.randint(2, max_num_tokens) if rng.random() < short_seq_prob else max_num_tokens
        arr = np.concatenate(([cls], ids[start:start + n], [sep])).astype(np.int64)
        out.append(Instance(arr, len(arr), None, doc_index, None))
        start += n
    return out


def create_masked_lm_predictions(
    tokens: Sequence[int],
    special_mask: Sequence[bool],
    word_start_mask: Sequence[bool] | None,
    masked_lm_prob: float,
    max_predictions_per_seq: int,
    vocab_size: int,
    mask_id: int,
    rng: random.Random,
    whole_word: bool,
) -> tuple[list[int], list[int], list[int]]:
    """Google's masking of one sequence: returns (output tokens, masked positions, their labels).

    Candidates are all non-special positions, grouped into words when ``whole_word`` (a piece whose
    ``word_start_mask`` is False joins the word right before it). The groups are shuffled and taken
    in order while they fit in ``num_to_predict = min(max_predictions_per_seq, max(1,
    round(len(tokens) * masked_lm_prob)))`` (counting [CLS]/[SEP] in the length, as Google does);
    each chosen piece becomes [MASK] (80%), stays (10%) or becomes a random id of the whole
    vocabulary (10%). Positions come out sorted.
    """
    cand_indexes: list[list[int]] = []
    prev_candidate = False
    for i in range(len(tokens)):
        if special_mask[i]:
            prev_candidate = False
            continue
        if whole_word and prev_candidate and word_start_mask is not None and not word_start_mask[i]:
            cand_indexes[-1].append(i)
        else:
            cand_indexes.append([i])
        prev_candidate = True
    rng.shuffle(cand_indexes)
    output_tokens = list(tokens)
    num_to_predict = min(max_predictions_per_seq, max(1, int(round(len(tokens) * masked_lm_prob))))
    masked: list[tuple[int, int]] = []
    for index_set in cand_indexes:
        if len(masked) >= num_to_predict:
            break
        if len(masked) + len(index_set) > num_to_predict:
            continue
        for index in index_set:
            if rng.random() < 0.8:
                masked_token = mask_id
            elif rng.random() < 0.5:
                masked_token = tokens[index]
            else:
                masked_token = rng.randint(0, vocab_size - 1)
            output_tokens[index] = masked_token
            masked.append((index, tokens[index]))
    masked.sort()
    return output_tokens, [p for p, _ in masked], [label for _, label in masked]


class MaskingCollator:
    """Pads a batch of instances and masks it (dynamic masking), returning tensors for the model.

    ``__call__(instances, generator)`` returns ``input_ids``, ``token_type_ids``, ``attention_mask``
    (B × L, L the longest sequence rounded up to ``pad_to_multiple_of``), ``masked_positions``
    (flat indices into the B·L positions, ascending), ``masked_labels`` (the original ids there) and,
    when the instances have NSP labels, ``next_sentence_label`` (1 = B is a random segment).
    """

    def __init__(
        self,
        *,
        vocab_size: int,
        special_ids: dict[str, int],
        masked_lm_prob: float = 0.15,
        max_predictions_per_seq: int = 20,
        whole_word: bool = False,
        continuation: np.ndarray | None = None,
        pad_to_multiple_of: int = 8,
    ) -> None:
        if whole_word and continuation is None:
            raise ValueError("whole-word masking needs the continuation table of the vocabulary")
        if not 0.0 < masked_lm_prob < 1.0:
            raise ValueError(f"masked_lm_prob must be in (0, 1), not {masked_lm_prob}")
        self.vocab_size = vocab_size
        self.cls, self.sep, self.pad_id, self.mask = (special_ids[t] for t in (CLS, SEP, PAD, MASK))
        self.masked_lm_prob = masked_lm_prob
        self.max_predictions_per_seq = max_predictions_per_seq
        self.whole_word = whole_word
        self.continuation = None if continuation is None else torch.from_numpy(np.asarray(continuation, dtype=bool))
        self.pad_to_multiple_of = pad_to_multiple_of

    def pad(self, instances: Sequence[Instance]) -> dict[str, torch.Tensor]:
        """input_ids, token_type_ids and attention_mask of the batch, without masking."""
        m = self.pad_to_multiple_of
        longest = max(len(x.tokens) for x in instances)
        width = -(-longest // m) * m
        ids = np.full((len(instances), width), self.pad_id, dtype=np.int64)
        types = np.zeros((len(instances), width), dtype=np.int64)
        attn = np.zeros((len(instances), width), dtype=np.int64)
        for b, x in enumerate(instances):
            n = len(x.tokens)
            ids[b, :n] = x.tokens
            types[b, x.b_start:n] = 1
            attn[b, :n] = 1
        batch = {"input_ids": torch.from_numpy(ids), "token_type_ids": torch.from_numpy(types),
                 "attention_mask": torch.from_numpy(attn)}
        if instances[0].is_random_next is not None:
            batch["next_sentence_label"] = torch.tensor([int(x.is_random_next) for x in instances], dtype=torch.long)
        if any(x.copy for x in instances):  # A's length in copy pairs, 0 in the others
            batch["copy_length"] = torch.tensor([x.b_start - 2 if x.copy else 0 for x in instances], dtype=torch.long)
        return batch

    def __call__(self, instances: Sequence[Instance], generator: torch.Generator) -> dict[str, torch.Tensor]:
        batch = self.pad(instances)
        input_ids, positions, labels = self.mask_tokens(batch["input_ids"], batch["attention_mask"], generator)
        batch.update(input_ids=input_ids, masked_positions=positions, masked_labels=labels)
        return batch

    def mask_tokens(self, ids: torch.Tensor, attention_mask: torch.Tensor,
                    generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Mask a padded batch; returns (masked input ids, flat masked positions, labels)."""
        B, L = ids.shape
        real = attention_mask.bool()
        cand = real & (ids != self.cls) & (ids != self.sep)
        if self.whole_word:
            prev = torch.zeros_like(cand)
            prev[:, 1:] = cand[:, :-1]
            start = cand & ~(prev & self.continuation[ids])
        else:
            start = cand
        word = torch.cumsum(start.long(), dim=1) - 1  # word index of each candidate piece
        n_words = start.sum(dim=1)
        W = max(int(n_words.max()), 1)
        word_c = torch.where(cand, word, torch.full_like(word, W))  # non-candidates to a spare column
        size = torch.zeros(B, W + 1, dtype=torch.long).scatter_add_(1, word_c, cand.long())[:, :W]
        valid = torch.arange(W).unsqueeze(0) < n_words.unsqueeze(1)
        priority = torch.rand(B, W, generator=generator).masked_fill_(~valid, 2.0)  # a random order of words
        order = torch.argsort(priority, dim=1)
        size_sorted = size.gather(1, order)
        alive = valid.gather(1, order)
        lengths = real.sum(dim=1).double()
        budget = torch.round(lengths * self.masked_lm_prob).long().clamp(min=1, max=self.max_predictions_per_seq)
        taken = torch.zeros_like(alive)
        # Google walks the shuffled words and takes each that still fits the budget. In rounds: take
        # the longest prefix that fits (a prefix, as the running sum only grows), then drop every word
        # now too big; the next live word then fits. At most max_predictions_per_seq rounds, usually 1-2.
        while bool(alive.any()):
            running = torch.cumsum(size_sorted * alive, dim=1)
            take = alive & (running <= budget.unsqueeze(1))
            taken |= take
            budget = budget - (size_sorted * take).sum(dim=1)
            alive &= ~take & (size_sorted <= budget.unsqueeze(1))
        taken_word = torch.zeros_like(taken).scatter_(1, order, taken)
        masked = cand & taken_word.gather(1, word.clamp(0, W - 1))
        r = torch.rand(B, L, generator=generator)
        r2 = torch.rand(B, L, generator=generator)
        random_ids = torch.randint(0, self.vocab_size, (B, L), generator=generator)
        replaced = torch.where(r < 0.8, torch.full_like(ids, self.mask), torch.where(r2 < 0.5, ids, random_ids))
        out = torch.where(masked, replaced, ids)
        positions = masked.reshape(-1).nonzero().squeeze(1)
        return out, positions, ids.reshape(-1)[positions]


def shuffle_context(input_ids: torch.Tensor, fixed_ids: torch.Tensor, generator: torch.Generator,
                    token_type_ids: torch.Tensor | None = None) -> torch.Tensor:
    """Each row's ordinary tokens permuted among their own places, within their segment when
    ``token_type_ids`` is given (a sentence pair's A and B stay apart, so NSP pairs measure word order, not
    segment mixing); tokens in ``fixed_ids`` ([MASK], [CLS], [SEP], [PAD]) stay where they are. A model that
    reads its context as a bag of words scores the masked rows of the result as it scores the original; one
    that reads word order does worse."""
    out = input_ids.clone()
    movable = ~torch.isin(input_ids, fixed_ids)
    types = torch.zeros_like(input_ids) if token_type_ids is None else token_type_ids
    for r in range(input_ids.shape[0]):
        for t in types[r].unique().tolist():
            idx = (movable[r] & (types[r] == t)).nonzero().squeeze(1)
            out[r, idx] = input_ids[r, idx[torch.randperm(len(idx), generator=generator)]]
    return out


__all__ = ["Instance", "continuation_table", "truncate_seq_pair", "create_instances_from_document",
           "create_masked_lm_predictions", "MaskingCollator", "shuffle_context"]
