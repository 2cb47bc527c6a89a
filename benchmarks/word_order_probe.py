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

from wellread.data.pretraining import PretrainingDataset
from wellread.data.shards import load_corpus
from wellread.eval.probes import unigram_log_probs, word_order_probe
from wellread.tokenization import load_tokenizer


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
        results[str(m)] = r = word_order_probe(m, batches, corpus.special_ids, unigram)
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
