"""How much of STS-B dev is word overlap? Spearman of the gold scores with (a) the Jaccard overlap of the two
sentences' WordPiece sets and (b) the cosine of each model's mean-pooled token vectors (embedding layer and last
layer, [CLS]/[SEP] left out), no training, and (c) the log-odds of "B follows A" from the model's
next-sentence head on the pair (trained by `--objective mlm+nsp`; an MLM-only run saves it as initialised, a
baseline), and (d) per layer and head, how much attention a token of sentence A gives the same token in
sentence B, as a multiple of uniform attention (the matching a cross-encoder needs for STS-B; `wellread
pretrain --copy-pairs` trains it). Puts the fine-tuned STS-B figures of weak starts in proportion.

    python benchmarks/stsb_overlap.py --glue ../shared/data/glue MODEL_DIR [MODEL_DIR ...]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from scipy.stats import spearmanr

from wellread.data.task_files import read_split
from wellread.eval.probes import padded, twin_attention
from wellread.tokenization import load_tokenizer


def read_dev(glue: Path) -> tuple[list[str], list[str], np.ndarray]:
    dev = read_split("stsb", glue, "dev").examples
    return [e.text_a for e in dev], [e.text_b for e in dev], np.array([float(e.label) for e in dev])


def mean_pooled(model, tok, texts: list[str], layer: int) -> torch.Tensor:
    out = []
    for i in range(0, len(texts), 64):
        enc = tok.encode_batch(texts[i:i + 64])
        ids, _, mask = padded(enc)
        with torch.no_grad():
            h = model(input_ids=ids, attention_mask=mask, output_hidden_states=True).hidden_states[layer]
        w = mask.clone()
        w[:, 0] = 0
        w[torch.arange(len(enc)), mask.sum(1) - 1] = 0  # [CLS] and [SEP] out
        out.append((h * w[..., None]).sum(1) / w.sum(1, keepdim=True).clamp(min=1))
    return torch.cat(out)


def nsp_log_odds(path: Path, tok, a: list[str], b: list[str]) -> np.ndarray | None:
    """log P(IsNext) - log P(NotNext) of the model's next-sentence head for each pair; None without one."""
    from transformers import BertForPreTraining

    model, info = BertForPreTraining.from_pretrained(path, output_loading_info=True)
    if any(k.startswith(("cls.seq_relationship", "bert.pooler")) for k in info["missing_keys"]):
        return None
    model.eval()
    out = []
    for i in range(0, len(a), 64):
        ids, types, mask = padded(tok.encode_batch(list(zip(a[i:i + 64], b[i:i + 64]))))
        with torch.no_grad():
            logits = model(input_ids=ids, token_type_ids=types, attention_mask=mask).seq_relationship_logits
        out.append((logits[:, 0] - logits[:, 1]).numpy())  # index 0 is IsNext in BERT
    return np.concatenate(out)


def main() -> None:
    from transformers import BertModel
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()  # the unused heads' load report says nothing here
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("models", nargs="*", type=Path)
    ap.add_argument("--glue", type=Path, required=True, help="the GLUE directory (with STS-B/dev.tsv)")
    args = ap.parse_args()
    a, b, gold = read_dev(args.glue)
    tok = load_tokenizer(args.models[0]) if args.models else None
    if tok is not None:
        ja = [set(e.tokens[1:-1]) for e in tok.encode_batch(a)]
        jb = [set(e.tokens[1:-1]) for e in tok.encode_batch(b)]
        jac = [len(x & y) / max(len(x | y), 1) for x, y in zip(ja, jb)]
        print(f"{'WordPiece-set Jaccard overlap (no model)':48s} Spearman {100 * spearmanr(jac, gold)[0]:5.1f}")
    for path in args.models:
        tok = load_tokenizer(path)
        model = BertModel.from_pretrained(path, add_pooling_layer=False, attn_implementation="eager").eval()
        cells = []
        for layer, name in ((0, "embeddings"), (-1, "last layer")):
            cos = torch.nn.functional.cosine_similarity(mean_pooled(model, tok, a, layer), mean_pooled(model, tok, b, layer))
            cells.append(f"{name} {100 * spearmanr(cos.numpy(), gold)[0]:5.1f}")
        nsp = nsp_log_odds(path, tok, a, b)
        if nsp is not None:
            cells.append(f"next-sentence head {100 * spearmanr(nsp, gold)[0]:5.1f}")
        print(f"{str(path)[-48:]:48s} Spearman, mean-pooled cosine: " + ", ".join(cells))
        twins = twin_attention(model, tok, a, b)
        print(f"{'':48s} attention of A's tokens to their twins in B (x uniform), layer/head: " + ", ".join(
            f"L{layer}H{h} {twins[layer, h]:.1f}" for layer in range(twins.shape[0]) for h in range(twins.shape[1])))


if __name__ == "__main__":
    main()
