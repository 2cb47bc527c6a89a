"""Pre-training throughput: `wellread pretrain` against transformers.Trainer + DataCollatorForLanguageModeling.

What run_mlm.py does is the baseline: ``BertForMaskedLM`` (the full 30,522-way output layer at every
position), ``DataCollatorForLanguageModeling`` (15% masking, 80/10/10), ``Trainer`` with fused
AdamW, on 128-token blocks of the same corpus. Ours: ``wellread.train.pretrain.pretrain`` with the
MLM objective on shards of the same text (Google's masking, 15%, at most 20 per sequence, the
output layer scoring the masked positions only). Same model size and random init, same batch,
sequence length, dropout (0.1) and learning rate; one process, one after the other. Both count
real (non-padding) tokens; the first steps (warm-up of the allocator) are not timed.

Also measures this machine's fp32 matrix-product peak (torch.mm, 4096², same threads; the best of three
timings, before and again after the runs) and reports
each run's achieved GFLOP/s against it, counting 6 × parameters involved × tokens: the encoder
matrices for every token (for ours, the last layer's query, attention-output and feed-forward matrices
only at the masked positions, where it runs them), the output layer (transform + 30,522-way decoder)
for every position the run scores (all of them for the baseline, the masked ones for ours).
Attention's own products are not counted.

    python benchmarks/pretrain_vs_trainer.py --models tiny,mini --batch 32
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from wellread.data.corpus import build_corpus
from wellread.data.shards import load_corpus
from wellread.modeling import zoo
from wellread.tokenization import STANDARD_VOCAB
from wellread.train.loop import native_bf16
from wellread.train.pretrain import PretrainConfig, pretrain

DATA = Path(os.environ.get("WELLREAD_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))


def gemm_peak(threads: int, n: int = 4096, reps: int = 4, trials: int = 3) -> float:
    """The best of ``trials`` timings of ``reps`` 4096² products (a shared machine's slow moments are not the peak)."""
    torch.set_num_threads(threads)
    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.mm(a, b)
    best = 0.0
    for _ in range(trials):
        t = time.perf_counter()
        for _ in range(reps):
            torch.mm(a, b)
        best = max(best, 2 * n**3 * reps / (time.perf_counter() - t) / 1e9)
    return best


def flops_per_token(name: str, scored_fraction: float, last_layer_fraction: float = 1.0) -> float:
    """6 × parameters involved per token: the encoder's matrices (the last layer's query, attention output and
    feed-forward ones only for ``last_layer_fraction`` of the positions), the output layer for scored positions."""
    c = zoo.get(name).bert_config()
    H, L, ffn, V = c.hidden_size, c.num_hidden_layers, c.intermediate_size, c.vocab_size
    layer = 4 * H * H + 2 * H * ffn
    encoder = (L - 1) * layer + 2 * H * H + last_layer_fraction * (layer - 2 * H * H)
    head = H * H + H * V
    return 6.0 * (encoder + scored_fraction * head)


def blocks(corpus_dir: Path, n: int, length: int = 128) -> list[list[int]]:
    """run_mlm's group_texts: the corpus's tokens concatenated and cut into full blocks ([CLS] ... [SEP])."""
    corpus = load_corpus(corpus_dir)
    ids = np.concatenate([corpus.document_ids(d) for d in range(min(corpus.num_documents, 4000))]).astype(np.int64)
    cls, sep = corpus.special_ids["[CLS]"], corpus.special_ids["[SEP]"]
    body = length - 2
    return [[cls, *ids[i * body:(i + 1) * body].tolist(), sep] for i in range(min(n, len(ids) // body))]


def run_trainer(name: str, seqs: list[list[int]], batch: int, steps: int, warm: int, lr: float, bf16: bool) -> dict:
    from transformers import (
        AutoTokenizer,
        BertForMaskedLM,
        DataCollatorForLanguageModeling,
        Trainer,
        TrainerCallback,
        TrainingArguments,
    )
    from transformers.utils import logging as hf_logging

    from wellread.tokenization import load_tokenizer, write_tokenizer_files

    hf_logging.set_verbosity_error()
    torch.manual_seed(0)
    model = BertForMaskedLM(zoo.get(name).bert_config())
    with tempfile.TemporaryDirectory() as tdir:
        write_tokenizer_files(load_tokenizer(STANDARD_VOCAB), tdir)
        tok = AutoTokenizer.from_pretrained(tdir)
    collator = DataCollatorForLanguageModeling(tok, mlm_probability=0.15)
    times: list[float] = []

    class Clock(TrainerCallback):
        def on_step_begin(self, args, state, control, **kw):
            self.t = time.perf_counter()

        def on_step_end(self, args, state, control, **kw):
            times.append(time.perf_counter() - self.t)

    with tempfile.TemporaryDirectory() as tmp:
        args = TrainingArguments(output_dir=tmp, per_device_train_batch_size=batch, max_steps=steps, learning_rate=lr,
                                 warmup_steps=0.01, weight_decay=0.01, adam_epsilon=1e-6, max_grad_norm=1.0,
                                 logging_steps=10**6, save_strategy="no", report_to=[], dataloader_num_workers=0,
                                 optim="adamw_torch_fused", use_cpu=True, disable_tqdm=True, bf16=bf16, seed=0)
        data = [{"input_ids": s} for s in seqs[: steps * batch]]
        Trainer(model=model, args=args, train_dataset=data, data_collator=collator, callbacks=[Clock()]).train()
    timed = times[warm:]
    tokens = len(timed) * batch * len(seqs[0])
    return {"tokens_per_s": tokens / sum(timed), "steps_timed": len(timed), "scored_fraction": 1.0}


def run_ours(name: str, corpus_dir: Path, batch: int, steps: int, warm: int, lr: float, bf16: bool) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        cfg = PretrainConfig(model=name, data=corpus_dir, out=Path(tmp) / "run", objective="mlm", batch_size=batch,
                             max_steps=steps, lr=lr, log_every=1, eval_every=None, checkpoint_every=10**6,
                             eval_batches=1, eval_documents=50, bf16=bf16, quiet=True)
        pretrain(cfg)
        rows = [json.loads(x) for x in (Path(tmp) / "run" / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in rows if r["kind"] == "train"]  # one row a step (log_every=1)
    timed = train[warm:]
    before = [train[warm - 1]["tokens"] if warm else 0] + [r["tokens"] for r in timed[:-1]]
    # a row's tokens_per_s is that step's tokens over its wall time (making the batch included)
    secs = sum((r["tokens"] - p) / r["tokens_per_s"] for p, r in zip(before, timed))
    n_tok = timed[-1]["tokens"] - before[0]
    # Google's masking scores round(0.15 × 128) = 19 positions of a full 128-token sequence (at most 20)
    # (the last encoder layer runs on those rows only too: SparsePretrainer(sparse_last_layer=True), pretrain's)
    return {"tokens_per_s": n_tok / secs, "steps_timed": len(timed), "scored_fraction": 19 / 128,
            "last_layer_fraction": 19 / 128}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="tiny,mini")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--steps-ours", type=int, default=60)
    ap.add_argument("--steps-baseline", type=int, default=25)
    ap.add_argument("--warm", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=3, help="baseline and ours timed in turns this many times")
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--text", default=str(DATA / "text" / "python3.11_doc_prose.txt.gz"))
    ap.add_argument("--json", help="also write the results here")
    ap.add_argument("--bf16", action=argparse.BooleanOptionalAction, default=None,
                    help="also time ours under bf16 autocast (default: where the CPU has native bf16)")
    a = ap.parse_args()
    if a.bf16 is None:
        a.bf16 = native_bf16(torch.device("cpu"))
        if not a.bf16:
            print("no native bf16 on this CPU (emulated bf16 is slower than fp32): the bf16 row is skipped")
    torch.set_num_threads(a.threads)
    peak = gemm_peak(a.threads)
    print(f"fp32 GEMM peak (torch.mm 4096², {a.threads} threads): {peak:.0f} GFLOP/s")
    out = {"machine": platform.processor() or platform.machine(), "threads": a.threads, "torch": torch.__version__,
           "cpu_capability": torch.backends.cpu.get_cpu_capability(),
           "peak_gflops": peak, "batch": a.batch, "runs": []}
    with tempfile.TemporaryDirectory() as tmp:
        shards = Path(tmp) / "shards"
        build_corpus([a.text], STANDARD_VOCAB, shards, workers=1, group_lines=16, show_progress=False)
        seqs = blocks(shards, a.steps_baseline * a.batch)
        for name in a.models.split(","):
            ratios = []
            for rnd in range(a.rounds):  # baseline and ours in turns: the machine's drift hits both alike
                base = run_trainer(name, seqs, a.batch, a.steps_baseline, a.warm, a.lr, bf16=False)
                ours = run_ours(name, shards, a.batch, a.steps_ours, a.warm, a.lr, bf16=False)
                rows = [("Trainer + DataCollatorForLanguageModeling", base), ("wellread pretrain", ours)]
                if a.bf16:
                    rows.append(("wellread pretrain --bf16", run_ours(name, shards, a.batch, a.steps_ours, a.warm,
                                                                      a.lr, bf16=True)))
                for label, r in rows:
                    per_token = flops_per_token(name, r["scored_fraction"], r.get("last_layer_fraction", 1.0))
                    g = r["tokens_per_s"] * per_token / 1e9
                    r |= {"model": name, "run": label, "round": rnd + 1, "gflops": g, "of_peak": g / peak,
                          "vs_trainer": r["tokens_per_s"] / base["tokens_per_s"]}
                    out["runs"].append(r)
                    print(f"{name:5s} {label:42s} {r['tokens_per_s']:9,.0f} tokens/s  {g:6.1f} GFLOP/s "
                          f"({100 * g / peak:4.1f}% of peak)  x{r['vs_trainer']:.2f}  (round {rnd + 1})")
                ratios.append(ours["tokens_per_s"] / base["tokens_per_s"])
            if a.rounds > 1:
                print(f"{name:5s} wellread / Trainer by round: {', '.join(f'{x:.2f}' for x in ratios)}; "
                      f"median x{statistics.median(ratios):.2f}")
                out.setdefault("median_vs_trainer", {})[name] = statistics.median(ratios)
    after = gemm_peak(a.threads)
    print(f"fp32 GEMM peak measured again after the runs: {after:.0f} GFLOP/s"
          + (" (higher: the shares above are against it)" if after > peak else ""))
    if after > peak:
        out["peak_gflops"] = after
        for r in out["runs"]:
            r["of_peak"] = r["gflops"] / after
        for r in out["runs"]:
            print(f"{r['model']:5s} {r['run']:42s} {100 * r['of_peak']:4.1f}% of {after:.0f} GFLOP/s")
    if a.json:
        Path(a.json).write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
