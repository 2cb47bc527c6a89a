"""Seconds per `wellread pretrain` evaluation, with the word-order passes, against the loss pass alone.

    python benchmarks/eval_cost.py --data SHARDS [--model tiny] [--threads 2]
"""

from __future__ import annotations

import argparse
import tempfile
import time

import torch

from wellread.data.shards import load_corpus
from wellread.train import pretrain as pt


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True)
    ap.add_argument("--model", default="tiny")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    cfg = pt.PretrainConfig(model=args.model, data=args.data, out=tempfile.mkdtemp(), objective="mlm", max_steps=1)
    net, tok, _ = pt.build_model(cfg)
    obj = pt.PretrainObjective(net, load_corpus(args.data), tok, cfg)
    net.eval()
    obj.evaluate(obj.model)  # warm-up
    t = time.perf_counter()
    obj.evaluate(obj.model)
    full = time.perf_counter() - t
    t = time.perf_counter()
    with torch.no_grad():
        for i, batch in enumerate(obj._eval_dataset(cfg.eval_batch_size)):
            if i >= cfg.eval_batches:
                break
            obj.loss(obj.model, batch, obj.counts(batch))
    alone = time.perf_counter() - t
    print(f"{args.model}: evaluation {full:.2f} s, its loss pass alone {alone:.2f} s "
          f"({cfg.eval_batches} batches of {cfg.eval_batch_size}, {args.threads} threads)")


if __name__ == "__main__":
    main()
