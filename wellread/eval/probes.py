"""Diagnostics of a pre-trained model, no training: does it read word order (``word_order_probe``,
``attention_by_offset``), and do its heads match a token of sentence A with the same token in B
(``twin_attention``)? Used by benchmarks/word_order_probe.py and benchmarks/stsb_overlap.py.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from transformers import BertForMaskedLM

from wellread.data.masking import shuffle_context
from wellread.data.pretraining import split_documents


def unigram_log_probs(corpus, eval_documents: int) -> torch.Tensor:
    """log p(token) over the training documents (add-½), the unigram ``--output-bias unigram`` starts from."""
    _, held = split_documents(corpus.num_documents, eval_documents)
    counts = corpus.token_counts(exclude=held).astype(np.float64) + 0.5
    return torch.tensor(np.log(counts / counts.sum()), dtype=torch.float32)


def attention_by_offset(model, batches: list[dict], offsets=(-2, -1, 0, 1, 2)) -> dict[str, dict[int, float]]:
    """Per layer and head: mean attention weight from a token to the one ``d`` places away, as a multiple of
    uniform attention over the row's tokens (1.0: no preference; a reading model has heads far above 1 at ±1)."""
    sums: dict[str, dict[int, list[float]]] = {}
    with torch.no_grad():
        for b in batches:
            am = b["attention_mask"].bool()
            att = model.bert(input_ids=b["input_ids"], attention_mask=b["attention_mask"],
                             token_type_ids=b["token_type_ids"], output_attentions=True).attentions
            n = am.sum(1).double()  # tokens per row
            for li, a in enumerate(att):
                for h in range(a.shape[1]):
                    cell = sums.setdefault(f"L{li}H{h}", {d: [0.0, 0] for d in offsets})
                    for d in offsets:
                        diag = a[:, h].diagonal(offset=d, dim1=1, dim2=2).double()  # [B, S - |d|]
                        q0 = max(0, -d)
                        valid = am[:, q0:q0 + diag.shape[1]] & am[:, q0 + d:q0 + d + diag.shape[1]]
                        cell[d][0] += (diag * n[:, None])[valid].sum().item()
                        cell[d][1] += valid.sum().item()
    return {k: {d: s / max(c, 1) for d, (s, c) in v.items()} for k, v in sums.items()}


def word_order_probe(model_dir: Path, batches: list[dict], specials: dict[str, int], unigram: torch.Tensor) -> dict:
    """Loss and accuracy at the [MASK] rows of ``batches`` with the context as it is, its order shuffled (within
    each segment), and no context, beside the unigram's; and each head's ``attention_by_offset``."""
    model = BertForMaskedLM.from_pretrained(model_dir).eval()
    mask_id = specials["[MASK]"]
    fixed = torch.tensor(sorted(specials.values()))
    g = torch.Generator().manual_seed(0)
    sums = {k: [0.0, 0, 0] for k in ("as is", "order shuffled", "no context", "unigram")}
    with torch.no_grad():
        for b in batches:
            ids, pos, labels = b["input_ids"], b["masked_positions"], b["masked_labels"]
            at_mask = ids.view(-1)[pos] == mask_id
            y = labels[at_mask]
            blank = ids.clone()
            blank[~torch.isin(ids, fixed)] = mask_id
            shuffled = shuffle_context(ids, fixed, g, b["token_type_ids"])
            for name, x in (("as is", ids), ("order shuffled", shuffled), ("no context", blank)):
                logits = model(input_ids=x, attention_mask=b["attention_mask"], token_type_ids=b["token_type_ids"]).logits
                rows = logits.view(-1, logits.shape[-1])[pos][at_mask]
                s = sums[name]
                s[0] += F.cross_entropy(rows, y, reduction="sum").item()
                s[1] += (rows.argmax(-1) == y).sum().item()
                s[2] += len(y)
            s = sums["unigram"]
            s[0] += -unigram[y].sum().item()
            s[1] += (y == unigram.argmax()).sum().item()
            s[2] += len(y)
    out = {k: {"loss": s / n, "accuracy": a / n, "rows": n} for k, (s, a, n) in sums.items()}
    model.set_attn_implementation("eager")
    out["attention by offset"] = attention_by_offset(model, batches[:2])
    return out


def padded(enc) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """input ids, token types and attention mask of a batch of encodings, padded with 0 to the longest."""
    width = max(len(e.ids) for e in enc)
    pad = [width - len(e.ids) for e in enc]
    return (torch.tensor([e.ids + [0] * p for e, p in zip(enc, pad)]),
            torch.tensor([e.type_ids + [0] * p for e, p in zip(enc, pad)]),
            torch.tensor([[1] * len(e.ids) + [0] * p for e, p in zip(enc, pad)]))


def twin_share(att: torch.Tensor, ids: torch.Tensor, types: torch.Tensor, mask: torch.Tensor,
               sep_id: int) -> tuple[torch.Tensor, int]:
    """For attention ``att`` [batch, layers, heads, S, S] over padded pairs: the summed (over tokens of A that also
    occur in B) attention to their occurrences in B as a multiple of uniform attention, [layers, heads], and
    the number of such tokens."""
    last = mask.sum(1, keepdim=True) - 1
    place = torch.arange(ids.size(1))[None]
    inner = (mask > 0) & (place > 0) & (place != last) & (ids != sep_id)
    in_a, in_b = inner & (types == 0), inner & (types == 1)
    twin = (ids[:, :, None] == ids[:, None, :]) & in_a[:, :, None] & in_b[:, None, :]  # [batch, S, S]
    has = twin.any(-1)
    uniform = twin.sum(-1) / mask.sum(1, keepdim=True)  # the twins' share under uniform attention
    got = (att * twin[:, None, None].to(att.dtype)).sum(-1)  # [batch, layers, heads, S]
    ratio = got / uniform[:, None, None].clamp(min=1e-9)
    return (ratio * has[:, None, None]).sum((0, 3)), int(has.sum())


def twin_attention(model, tok, a: list[str], b: list[str]) -> np.ndarray:
    """[layers, heads]: the attention from each token of A that also occurs in B to its occurrences in B, as a
    multiple of what uniform attention over the pair would give them, averaged over such tokens of all pairs.
    ``model``: a ``BertModel`` with eager attention (the one that can return attention weights)."""
    total, rows = 0.0, 0
    for i in range(0, len(a), 64):
        ids, types, mask = padded(tok.encode_batch(list(zip(a[i:i + 64], b[i:i + 64]))))
        with torch.no_grad():
            att = torch.stack(model(input_ids=ids, token_type_ids=types, attention_mask=mask,
                                    output_attentions=True).attentions, 1)  # [batch, layers, heads, S, S]
        got, n = twin_share(att, ids, types, mask, tok.token_to_id("[SEP]"))
        total, rows = total + got, rows + n
    return (total / max(rows, 1)).numpy()
