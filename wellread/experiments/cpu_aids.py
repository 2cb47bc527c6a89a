"""CPU pre-training aids: measured helps for short MLM runs from scratch on a few cores, all opt-in.

None of them is in the paper's recipe: with ``CpuAids()``'s defaults the pre-training path is BERT's,
and ``wellread.train.pretrain`` reads without them. Each is one setting of the ``aids`` group of
``PretrainConfig`` (flags ``--position-init``, ``--output-bias``, ``--attention-scaffold``,
``--scaffold-heads``, ``--copy-pairs``; docs/pretraining.md has the measurements):

* ``position_init="sinusoidal"``: a random start's position embeddings from the Transformer's sine/cosine
  table (still learned), ``sinusoidal_positions``;
* ``output_bias="unigram"``: a random start's MLM output bias at the log frequencies of the training
  documents' tokens, ``set_unigram_output_bias``;
* ``attention_scaffold=F``: a per-head penalty on attention by distance that fades to nothing over the
  fraction F of the run (``Scaffold``); the bias reaches the attention as an explicit
  ``attention_bias`` argument of the model's forward (``wellread.modeling.heads``), training only, and
  never reaches a saved model;
* ``copy_pairs=F``: MLM on sentence pairs, a fraction F of them copies ``[CLS] A [SEP] A [SEP]``
  (``CopyPairs``), with an alignment scaffold on the last head that raises each token's score for its twin.
"""

from __future__ import annotations

import random
from typing import Literal

import numpy as np
import torch

from wellread.config import configclass, field
from wellread.data.masking import Documents, Instance, create_instances_from_document, truncate_seq_pair
from wellread.data.pretraining import split_documents
from wellread.data.shards import Corpus
from wellread.errors import WellreadError
from wellread.tokenization import CLS, SEP

PositionInit = Literal["random", "sinusoidal"]
OutputBias = Literal["zero", "unigram"]
ALIGN_BIAS = 5.0  # the alignment scaffold's raise of a token's score for its twin, at full strength


@configclass
class CpuAids:
    """The aids' settings: ``PretrainConfig.aids`` (flags and YAML keys at the top level, as before)."""

    position_init: PositionInit = field("random", help="a random start's position embeddings: random (BERT) or "
                                               "sinusoidal (the Transformer's sine/cosine table, still learned)")
    output_bias: OutputBias = field("zero", help="a random start's MLM output bias: zero (BERT) or unigram (the log "
                                          "frequencies of the training documents' tokens)")
    attention_scaffold: float = field(0.0, ge=0, le=1, help="train with a per-head penalty on attention by distance (head h: "
                                                 "-2^-h per position, ALiBi-like) that fades linearly to nothing over "
                                                 "this fraction of the run, so heads learn to read their neighbours; "
                                                 "0: off (BERT). The saved model is BERT's, without it")
    scaffold_heads: int = field(0, ge=0, help="the attention scaffold on the first N heads of each layer only, the "
                                        "others left free to attend anywhere (0: every head)")
    copy_pairs: float = field(0.0, ge=0, le=1, help="MLM on sentence pairs (B the real continuation of A), this fraction of "
                                        "them copy pairs [CLS] A [SEP] A [SEP], with an alignment scaffold on the "
                                        "last head of each layer (each token's score for its twin raised, fading "
                                        "with --attention-scaffold) so that heads learn to match the tokens of two "
                                        "segments, what pair tasks like STS-B need; 0: off")

    def check(self, objective: str) -> None:
        """Refuse the aids that do not go with ``objective``."""
        if self.copy_pairs and objective != "mlm":
            raise WellreadError("copy pairs are for --objective mlm (a copy would make next-sentence prediction "
                                "trivial)", field="copy_pairs")
        if self.copy_pairs and not self.attention_scaffold:
            raise WellreadError("copy pairs need --attention-scaffold F: their alignment scaffold fades with it",
                                field="copy_pairs")

    def check_continued(self) -> None:
        """Refuse the aids of a random start for a run that continues a model directory."""
        for name, default in (("position_init", "random"), ("output_bias", "zero")):
            if getattr(self, name) != default:
                raise WellreadError(f"--{name.replace('_', '-')} is for a random start; a model directory brings "
                                    "its own weights", field=name)


def start_random_model(net, aids: CpuAids, corpus: Corpus, eval_documents: int) -> None:
    """Apply the aids of a random start (position embeddings, output bias) to a new ``BertForPreTraining``."""
    if aids.position_init == "sinusoidal":
        set_sinusoidal_positions(net)
    if aids.output_bias == "unigram":
        set_unigram_output_bias(net, corpus, eval_documents)


def sinusoidal_positions(positions: int, width: int, std: float) -> torch.Tensor:
    """The Transformer's sine/cosine position table (Vaswani et al. 2017, 3.5), scaled to ``std`` per element.

    Row ``p`` holds sin(p·ω_i) and cos(p·ω_i) for ω_i = 10000^(-2i/width), so that the dot product of two rows
    depends on their distance only; scaled so that its elements have the spread of BERT's random init
    (``initializer_range``), the word embeddings are not drowned under the embeddings' LayerNorm.
    """
    pos = torch.arange(positions, dtype=torch.float64)[:, None]
    omega = 10000.0 ** (-torch.arange(0, width, 2, dtype=torch.float64) / width)
    table = torch.zeros(positions, width, dtype=torch.float64)
    table[:, 0::2] = torch.sin(pos * omega)
    table[:, 1::2] = torch.cos(pos * omega)[:, : width // 2]
    return (table * (std / table.std())).float()


def set_sinusoidal_positions(net) -> None:
    """Start a ``BertForPreTraining``'s (still learned) position embeddings from :func:`sinusoidal_positions`
    instead of BERT's independent random rows: the architecture and the saved weights' layout are BERT's."""
    emb = net.bert.embeddings.position_embeddings.weight
    with torch.no_grad():
        emb.copy_(sinusoidal_positions(emb.shape[0], emb.shape[1], net.config.initializer_range))


def set_unigram_output_bias(net, corpus: Corpus, eval_documents: int) -> None:
    """Start the MLM output bias at the log frequency of each token in the training documents.

    Before it reads any context, the best an MLM can do is the unigram; BERT's zero bias leaves that to
    be learnt, and with tied embeddings it is learnt partly by growing the word embeddings, which then
    drown the position embeddings under the embeddings' LayerNorm. Started here, the unigram is in place
    at step 0 (add-½ counts; special tokens, never a label, get the smallest). Held-out documents are
    not counted.
    """
    _, held = split_documents(corpus.num_documents, eval_documents)
    counts = corpus.token_counts(exclude=held).astype(np.float64)
    counts[list(corpus.special_ids.values())] = 0.0
    counts += 0.5
    with torch.no_grad():
        net.cls.predictions.bias.copy_(torch.from_numpy(np.log(counts / counts.sum())))


def attention_scaffold(config, length: int, heads: int = 0) -> torch.Tensor:
    """[heads, length, length]: head h's score for attending j places away is lowered by 2^-h · |j| (ALiBi's
    shape, steeper: head 0 sees mostly its neighbours, the last heads almost everything); with ``heads`` > 0
    only the first ``heads`` heads of each layer get it, the others none."""
    n = config.num_attention_heads
    slopes = torch.tensor([2.0 ** -h if not heads or h < heads else 0.0 for h in range(n)])
    pos = torch.arange(length, dtype=torch.float32)
    return -slopes[:, None, None] * (pos[None, :] - pos[:, None]).abs()[None]


def alignment_bias(copy_length: torch.Tensor, heads: int, length: int, value: float) -> torch.Tensor:
    """[batch, heads, length, length]: in the last head, ``value`` where a token of a copy pair
    ``[CLS] A [SEP] A [SEP]`` (``copy_length`` = len(A), 0 for other sequences) attends to its twin in the
    other segment (place p of A and place p + len(A) + 1, both ways); 0 everywhere else."""
    B = len(copy_length)
    pos = torch.arange(length, device=copy_length.device)[None, :]
    a = copy_length[:, None]
    in_a = (pos >= 1) & (pos <= a) & (a > 0)
    in_b = (pos >= a + 2) & (pos <= 2 * a + 1) & (a > 0)
    twin = torch.where(in_a, pos + a + 1, pos - a - 1).clamp(0, length - 1)
    last = torch.zeros(B, length, length, device=copy_length.device)
    last.scatter_(2, twin[:, :, None], ((in_a | in_b).float() * value)[:, :, None])
    out = torch.zeros(B, heads, length, length, device=copy_length.device)
    out[:, -1] = last
    return out


class Scaffold:
    """The attention scaffold of one run: the distance penalty (and, with copy pairs, the alignment), faded.

    ``set_progress(p)`` sets the strength, 1 at the start and 0 from ``aids.attention_scaffold`` on;
    ``bias(batch)`` is the attention bias for that batch ([heads, S, S], or [batch, heads, S, S] for a
    batch holding copy pairs), or None once faded. With copy pairs the last head of each layer is the
    alignment's: no distance penalty on it.
    """

    def __init__(self, config, aids: CpuAids, max_seq_length: int) -> None:
        heads = config.num_attention_heads
        scaffold_heads = aids.scaffold_heads
        if aids.copy_pairs:
            if heads < 2:
                raise WellreadError("copy pairs need at least two attention heads (the last one aligns)",
                                    field="copy_pairs")
            scaffold_heads = min(scaffold_heads or heads, heads - 1)
        self.table = attention_scaffold(config, max_seq_length, scaffold_heads)
        self.fade = aids.attention_scaffold
        self.copy_pairs = bool(aids.copy_pairs)
        self.strength = 0.0
        self.current: torch.Tensor | None = None

    def set_progress(self, progress: float, device: torch.device) -> None:
        self.strength = max(0.0, 1.0 - progress / self.fade)
        if self.table.device != device:
            self.table = self.table.to(device)  # once, where the model trains
        self.current = self.table * self.strength if self.strength > 0.0 else None

    def bias(self, batch: dict[str, torch.Tensor]) -> torch.Tensor | None:
        if self.current is None:
            return None
        if self.copy_pairs and "copy_length" in batch:  # this batch's copy pairs: each token's twin raised
            S = batch["input_ids"].size(1)
            align = alignment_bias(batch["copy_length"], self.current.size(0), S, ALIGN_BIAS * self.strength)
            return self.current[None, :, :S, :S] + align
        return self.current


class CopyPairs:
    """Instances for ``PretrainingDataset(instances=...)``: sentence pairs, B always A's real continuation,
    a fraction ``copies`` of them copy pairs ``[CLS] A [SEP] A [SEP]`` (A at most half the length); for MLM
    without next-sentence prediction. Called as ``create_instances_from_document`` is."""

    def __init__(self, copies: float, *, nsp: bool = False) -> None:
        if nsp or not 0.0 <= copies <= 1.0:
            raise WellreadError("copy pairs are a fraction in [0, 1], for MLM without next-sentence prediction",
                                field="copy_pairs")
        self.copies = copies

    def __call__(self, corpus: Documents, doc_index: int, max_seq_length: int, short_seq_prob: float, nsp: bool,
                 rng: random.Random, *, documents: np.ndarray | None = None) -> list[Instance]:
        if nsp:
            raise ValueError("copy pairs are for MLM without next-sentence prediction")
        cls, sep = corpus.special_ids[CLS], corpus.special_ids[SEP]
        return pair_document(corpus.document(doc_index), doc_index, max_seq_length - 3, short_seq_prob, self.copies,
                             rng, cls, sep)


def training_instances(aids: CpuAids):
    """How the training split's instances are made: Google's way, or copy pairs."""
    return CopyPairs(aids.copy_pairs) if aids.copy_pairs else create_instances_from_document


def pair_document(document: list[np.ndarray], doc_index: int, max_num_tokens: int, short_seq_prob: float,
                   copies: float, rng: random.Random, cls: int, sep: int) -> list[Instance]:
    """Sentence pairs ``[CLS] A [SEP] B [SEP]`` of one document, B the real continuation of A, and with
    probability ``copies`` copy pairs ``[CLS] A [SEP] A [SEP]`` (A cut to half the length).

    Sentences are gathered into chunks of the target length as for NSP and a chunk is cut at a random
    sentence (a one-sentence chunk at a random token). A copy pair lets a masked token of one segment be
    read from its twin in the other: what teaches heads to match the tokens of two segments, the
    alignment that pair tasks such as STS-B rest on (``wellread pretrain --copy-pairs``).
    """
    def draw_target() -> int:  # the full length, or with probability short_seq_prob a shorter one
        return rng.randint(2, max_num_tokens) if rng.random() < short_seq_prob else max_num_tokens

    out = []
    chunk: list[np.ndarray] = []
    length, target = 0, draw_target()
    for i, sentence in enumerate(document):
        chunk.append(sentence)
        length += len(sentence)
        if i < len(document) - 1 and length < target:
            continue
        if len(chunk) >= 2:
            a_end = rng.randint(1, len(chunk) - 1)
            tokens_a = [t for s in chunk[:a_end] for t in s.tolist()]
            tokens_b = [t for s in chunk[a_end:] for t in s.tolist()]
        else:
            whole = chunk[0].tolist()
            cut = rng.randint(1, len(whole) - 1) if len(whole) >= 2 else len(whole)
            tokens_a, tokens_b = whole[:cut], whole[cut:]
        copy = rng.random() < copies
        if copy:
            tokens_a = tokens_a[:max_num_tokens // 2]
            tokens_b = list(tokens_a)
        else:
            truncate_seq_pair(tokens_a, tokens_b, max_num_tokens, rng)
        if tokens_a and tokens_b:
            tokens = np.array([cls, *tokens_a, sep, *tokens_b, sep], dtype=np.int64)
            out.append(Instance(tokens, len(tokens_a) + 2, None, doc_index, doc_index, copy=copy))
        elif tokens_a:  # a one-token chunk: a single segment
            out.append(Instance(np.array([cls, *tokens_a, sep], dtype=np.int64), len(tokens_a) + 2, None,
                                doc_index, None))
        chunk, length, target = [], 0, draw_target()
    return out
