"""Pre-training data: corpus build speed and peak memory, and batches/s of the dynamic dataset on one core.

    python benchmarks/pretraining_data.py --text ../shared/data/text --vocab ../shared/data/vocab/bert-base-uncased-vocab.txt

The baseline for the dataset is what the trainer needs: Tiny trains at about 30,000 tokens/s on one
core, so the data must deliver more than that; the ratio is printed.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BUILD = """
import json, resource, sys, time
from wellread.data.corpus import build_corpus
t = time.time()
m = build_corpus(sys.argv[1].split(","), sys.argv[2], sys.argv[3], workers=int(sys.argv[4]), show_progress=False)
print(json.dumps({"seconds": time.time() - t, "tokens": m.tokens, "documents": m.documents,
                  "shards": len(m.shards),
                  "main_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "worker_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024}))
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--text", type=Path, required=True, help="folder of .txt/.gz files")
    ap.add_argument("--vocab", type=Path, required=True)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--batches", type=int, default=200)
    args = ap.parse_args()
    files = sorted(str(p) for p in args.text.iterdir() if p.is_file())
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "shards"
        # a fresh process, so its peak RSS is the build's alone
        r = subprocess.run([sys.executable, "-c", BUILD, ",".join(files), str(args.vocab), str(out), str(args.workers)],
                           check=True, capture_output=True, text=True)
        b = json.loads(r.stdout)
        print(f"corpus: {b['tokens']:,} tokens, {b['documents']:,} documents, {b['shards']} shards in {b['seconds']:.1f} s "
              f"({b['tokens'] / b['seconds']:,.0f} tokens/s, {args.workers} workers); peak RSS main {b['main_mb']:.0f} MB, "
              f"largest worker {b['worker_mb']:.0f} MB")

        import torch

        from wellread.data.pretraining import PretrainingDataset
        from wellread.data.shards import load_corpus
        from wellread.tokenization import load_tokenizer

        torch.set_num_threads(1)
        tok = load_tokenizer(args.vocab)
        corpus = load_corpus(out)
        for whole_word in (False, True):
            ds = PretrainingDataset(corpus, batch_size=128, eval_documents=1000, tokenizer=tok, whole_word=whole_word)
            it = iter(ds)
            next(it)
            t = time.perf_counter()
            seqs = toks = 0
            for _ in range(args.batches):
                batch = next(it)
                seqs += batch["input_ids"].shape[0]
                toks += int(batch["attention_mask"].sum())
            dt = time.perf_counter() - t
            print(f"dynamic {'whole-word' if whole_word else 'wordpiece '} mlm+nsp, batch 128: {seqs / dt:,.0f} sequences/s, "
                  f"{toks / dt:,.0f} real tokens/s on one core = {toks / dt / 30_000:.1f}x the 30,000 tokens/s Tiny needs")
        print(f"this process's peak RSS: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")


if __name__ == "__main__":
    main()
