"""The per-stage costs the recipe's time budget plans with, measured on this machine, beside the table.

`wellread recipe --time-budget T` measures its rates for a few seconds before planning (--calibrate,
the default); this script measures the same things longer, plus what the recipe takes from constants
(corpus and pre-training speed), and prints them beside ``wellread.recipe.budget``'s table, so the
table can be updated for a machine and a badly planned budget can be explained.

    python benchmarks/recipe_costs.py --glue ../shared/data/glue --text ../shared/data/text/kjv_bible_verses.txt.gz

Each rate is for one process with one thread (as the recipe's workers run), examples per second at
max length 128, batch 32; pre-training is Tiny, batch 128, with every thread.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from wellread.recipe import budget as B
from wellread.recipe.sources import resolve_teacher


def corpus_rate(text: Path, vocab: Path, out: Path) -> float:
    from wellread.data.corpus import build_corpus

    t0 = time.perf_counter()
    m = build_corpus([text], vocab, out, workers=1, group_lines=16, show_progress=False)
    return m.totals["text_bytes"] / (time.perf_counter() - t0)


def pretrain_rate(shards: Path, out: Path, steps: int) -> float:
    from wellread.train.pretrain import PretrainConfig, pretrain

    r = pretrain(PretrainConfig(model="tiny", data=shards, out=out, objective="mlm", max_steps=steps, eval_every=None,
                                eval_documents=20, eval_batches=1, quiet=True))
    return r["tokens_per_s"]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--glue", type=Path, required=True)
    ap.add_argument("--text", type=Path, required=True, help="a text file for the corpus and pre-training rates")
    ap.add_argument("--tasks", default="sst2,stsb")
    ap.add_argument("--teacher", default="all-MiniLM-L6-v2")
    ap.add_argument("--seconds", type=float, default=8.0, help="seconds per training-rate measurement")
    ap.add_argument("--pretrain-steps", type=int, default=12)
    args = ap.parse_args(argv)
    from wellread.tokenization import STANDARD_VOCAB

    tasks = args.tasks.split(",")
    t0 = time.perf_counter()
    rates = B.calibrate("tiny", resolve_teacher(args.teacher), tasks, args.glue, seconds=args.seconds, sample=4096)
    print(f"calibration took {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    print("| rate (examples/s, one thread) | task | measured | table | measured / table |")
    print("|---|---|---|---|---|")
    for kind in ("student_train", "student_infer", "teacher_train", "teacher_infer"):
        for t in tasks:
            m, table = rates.get(kind, t), B.TABLE_RATES[kind].get(t, B.TABLE_RATES[kind]["default"])
            print(f"| {kind} | {t} | {m:,.0f} | {table:,.0f} | {m / table:.2f} |")
    with tempfile.TemporaryDirectory() as tmp:
        c = corpus_rate(args.text, STANDARD_VOCAB, Path(tmp) / "shards")
        p = pretrain_rate(Path(tmp) / "shards", Path(tmp) / "pt", args.pretrain_steps)
    print(f"| corpus (bytes/s, one worker) | – | {c:,.0f} | {B.CORPUS_BYTES_PER_S:,.0f} | {c / B.CORPUS_BYTES_PER_S:.2f} |")
    print(f"| pre-training Tiny (tokens/s, all threads) | – | {p:,.0f} | {B.PRETRAIN_TOKENS_PER_S:,.0f} | "
          f"{p / B.PRETRAIN_TOKENS_PER_S:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
