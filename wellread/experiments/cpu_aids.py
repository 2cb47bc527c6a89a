"""CPU pre-training aids: measured helps for short MLM runs from scratch on a few cores, all opt-in.

None of them is in the paper's recipe; with their defaults the pre-training path is BERT's.
"""

from __future__ import annotations

import numpy as np
import torch

from wellread.data.pretraining import split_documents
from wellread.data.shards import Corpus

OUTPUT_BIASES = ("zero", "unigram")


ALIGN_BIAS = 5.0  # the alignment scaffold's raise of a token's score for its twin, at full strength


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


def attention_scaffold(config, length: int, heads: int = 0) -> torch.Tensor:
    """[heads, length, length]: head h's score for attending j places away is lowered by 2^-h · |j| (ALiBi's
    shape, steeper: head 0 sees mostly its neighbours, the last heads almost everything); with ``heads`` > 0
    only the first ``heads`` heads of each layer get it, the others none."""
    n = config.num_attention_heads
    slopes = torch.tensor([2.0 ** -h if not heads or h < heads else 0.0 for h in range(n)])
    pos = torch.arange(length, dtype=torch.float32)
    return -slopes[:, None, None] * (pos[None, :] - pos[:, None]).abs()[None]


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


