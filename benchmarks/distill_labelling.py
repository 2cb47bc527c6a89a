"""Teacher labelling for distillation: throughput, and what the cache saves a 20-cell grid.

Measures, in one process, on real SST-2 training sentences:
  1. the teacher labelling them through ``wellread.train.distill.label_transfer`` (length-sorted
     batches, logits written to a fresh cache) - sentences/s;
  2. the same through ``transformers.pipeline("text-classification", top_k=None)`` (batch 32), the
     usual way to get a model's scores - sentences/s, and the largest difference in probability;
  3. reading the cache back (what every grid cell after the first does) - seconds;
  4. the labelling cost of a 20-cell grid: 20 labellings without a cache against one plus 19 cache reads.

    python benchmarks/distill_labelling.py --teacher /tmp/pd/teacher-sst2/model --n 8192
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--teacher", required=True, help="a model directory fine-tuned on SST-2")
    p.add_argument("--data-dir", default=str(REPO.parent / "shared" / "data" / "glue"))
    p.add_argument("--n", type=int, default=8192, help="training sentences to label")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--cells", type=int, default=20)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    from wellread.data.task_files import read_split
    from wellread.data.tasks import get_task
    from wellread.train.distill import TransferSet, label_transfer

    spec = get_task("sst2")
    ex = read_split(spec, args.data_dir, "train").examples[: args.n]
    transfer = TransferSet([e.text_a for e in ex], [None] * len(ex), np.full(len(ex), -1), {"sst2 train": len(ex)})
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        fresh = label_transfer(args.teacher, spec, transfer, cache=Path(tmp) / "c", quiet=True)
        t_fresh = time.perf_counter() - t0
        t0 = time.perf_counter()
        again = label_transfer(args.teacher, spec, transfer, cache=Path(tmp) / "c", quiet=True)
        t_read = time.perf_counter() - t0
        assert again.computed_shards == 0 and np.array_equal(again.logits, fresh.logits)

    from transformers import pipeline

    clf = pipeline("text-classification", model=args.teacher, tokenizer=args.teacher, device=-1, top_k=None)
    texts = transfer.texts_a
    clf(texts[:64], batch_size=32, truncation=True, max_length=128)  # warm-up
    t0 = time.perf_counter()
    out = clf(texts, batch_size=32, truncation=True, max_length=128)
    t_pipe = time.perf_counter() - t0
    labels = list(spec.labels)
    id2label = clf.model.config.id2label
    probs = np.array([[next(d["score"] for d in row if d["label"] == id2label[i]) for i in range(len(labels))]
                      for row in out])
    ours = torch.softmax(torch.from_numpy(fresh.logits), -1).numpy()
    n = len(texts)
    print(f"teacher: {args.teacher} ({n:,} SST-2 training sentences, {args.threads} threads)")
    print(f"wellread label_transfer: {t_fresh:6.1f} s  {n / t_fresh:8.0f} sentences/s (tokenise + predict + cache)")
    print(f"transformers pipeline:   {t_pipe:6.1f} s  {n / t_pipe:8.0f} sentences/s   ratio {t_pipe / t_fresh:.2f}x"
          f"  max |p diff| {np.abs(probs - ours).max():.1e}")
    print(f"cache read:              {t_read:6.2f} s")
    grid_without = args.cells * t_fresh
    grid_with = t_fresh + (args.cells - 1) * t_read
    print(f"{args.cells}-cell grid labelling: {grid_without:.0f} s without the cache, {grid_with:.0f} s with it "
          f"({grid_without / grid_with:.1f}x less)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
