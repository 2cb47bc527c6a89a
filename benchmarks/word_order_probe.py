"""Does a pre-trained model use word order? Loss at the [MASK] rows of held-out text, with the context as it
is, with its order shuffled, and with no context; beside the unigram's loss.

It also prints each head's attention to the tokens 2, 1 places before and after and to itself, as a multiple of
uniform attention. A model that has only learnt "unigram at [MASK] + copy the shown token" (the plateau of a short MLM run) and
uses its context as a bag of words has the same loss with the order shuffled as without; one that has started
to read (attend to the neighbours) loses more when the order is destroyed. `wellread pretrain` logs the same
measure at each evaluation (`eval/word_order_nats`). The held-out batches are those of
``wellread pretrain`` (same documents held out, same masks, ``--eval-documents`` and seed as the run).

    python benchmarks/word_order_probe.py --data SHARDS MODEL_DIR [MODEL_DIR ...] [--batches 6] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from wellread.data.masking import shuffle_context
from wellread.data.pretraining import PretrainingDataset, split_documents
from wellread.data.shards import load_corpus
from wellread.tokenization import load_tokenizer


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


def probe(model_dir: Path, batches: list[dict], specials: dict[str, int], unigram: torch.Tensor) -> dict:
    from transformers import BertForMaskedLM

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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("models", nargs="+", type=Path, help="model directories (HF layout, with an MLM head)")
    ap.add_argument("--data", type=Path, required=True, help="the shards the runs trained on")
    ap.add_argument("--batches", type=int, default=6, help="held-out batches of 64 sequences")
    ap.add_argument("--max-seq-length", type=int, default=128)
    ap.add_argument("--eval-documents", type=int, default=200)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()

    corpus = load_corpus(args.data)
    tok = load_tokenizer(args.models[0])
    held = PretrainingDataset(corpus, batch_size=64, split="eval", nsp=False, tokenizer=tok, seed=args.seed,
                              eval_documents=args.eval_documents, max_seq_length=args.max_seq_length)
    batches = [b for _, b in zip(range(args.batches), held)]
    unigram = unigram_log_probs(corpus, args.eval_documents)
    results = {}
    print(f"{'model':40s} {'context':15s} {'loss at [MASK]':>15s} {'accuracy':>9s}")
    for m in args.models:
        results[str(m)] = r = probe(m, batches, corpus.special_ids, unigram)
        for k, v in r.items():
            if "loss" in v:
                print(f"{str(m)[-40:]:40s} {k:15s} {v['loss']:15.3f} {100 * v['accuracy']:8.2f}%")
        print(f"{'':40s} word order is worth {r['order shuffled']['loss'] - r['as is']['loss']:.3f} nats "
              f"over {r['as is']['rows']} [MASK] rows")
        for head, by in r["attention by offset"].items():
            print(f"{'':40s} attention {head} at offsets " + "  ".join(f"{d:+d}: {v:.2f}x" for d, v in by.items()))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
