"""Time (and optionally profile) single training steps, outside the loop: where a step's time goes.

Pre-training: Tiny on a shard directory, the MLM objective, fused AdamW, clipping (what ``wellread
pretrain`` does per step). Fine-tuning: a random Tiny classifier on a GLUE task's training batches,
with or without the CPU dropout and the row-sparse embedding gradients, to compare them.

    python benchmarks/step_profile.py pretrain --data SHARDS --batch 32 [--bf16] [--profile]
    python benchmarks/step_profile.py pretrain --data SHARDS --ab 6 --ab-of bf16 --steps 30   # bf16 / fp32, interleaved
    python benchmarks/step_profile.py pretrain --model mini --data SHARDS --batch 128 --ab 3 --ab-of bf16 --steps 5
    python benchmarks/step_profile.py finetune --task sst2 --data-dir ../shared/data/glue --batch 8 --threads 1 \\
        [--plain] [--profile]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

PRECISION = {"bf16": False}  # the autocast setting of step(); --bf16 sets it, --ab-of bf16 alternates it


def autocast():
    return torch.autocast("cpu", dtype=torch.bfloat16, enabled=PRECISION["bf16"])


def pretrain_steps(a):
    from wellread.data.shards import load_corpus
    from wellread.modeling.dropout import use_fast_dropout
    from wellread.tokenization import vocab_hash
    from wellread.train.pretrain import PretrainConfig, PretrainObjective, build_model

    cfg = PretrainConfig(model=a.model, data=Path(a.data), out=Path("unused"), objective="mlm", batch_size=a.batch,
                         max_steps=1)
    net, tok, _ = build_model(cfg)
    obj = PretrainObjective(net, load_corpus(cfg.data, expect_vocab_hash=vocab_hash(tok)), tok, cfg)
    a.saved = use_fast_dropout(net) if not a.plain else None
    model = obj.model
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-3, fused=True)
    it = obj.batches(0, 0, a.batch, 0, 1)

    def step(b):
        with autocast():
            loss, _ = obj.loss(model, b, obj.counts(b))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)

    return model, it, step, lambda b: int(b["attention_mask"].sum()), "tokens"


def finetune_steps(a):
    from wellread.data.tasks import get_task
    from wellread.modeling.dropout import use_fast_dropout
    from wellread.tokenization import PAD
    from wellread.train.finetune import ClassificationObjective, FinetuneConfig, build_model, load_labelled
    from wellread.train.loop import configure_optimizer
    from wellread.train.sparse_rows import RowSparseGrads

    spec = get_task(a.task)
    cfg = FinetuneConfig(model="tiny", random_init=True, task=a.task, data_dir=Path(a.data_dir), out=Path("unused"),
                         batch_size=a.batch)
    model, tok, _ = build_model(cfg, spec)
    rows = None
    a.saved = use_fast_dropout(model) if not a.plain else None
    if not a.plain:
        rows = RowSparseGrads(model)
    train = load_labelled(spec, cfg.data_dir, "train", tok, 128)
    obj = ClassificationObjective(model, spec, train, [], seed=0, pad_id=tok.token_to_id(PAD))
    opt = configure_optimizer(model, cfg, torch.device("cpu"))
    params = [p for p in model.parameters() if p.requires_grad]

    def step(b):
        with autocast():
            loss, _ = obj.loss(model, b, obj.counts(b))
        loss.backward()
        if rows:
            rows.clip(params, 1.0)
        else:
            torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        if rows:
            rows.release()
        opt.zero_grad(set_to_none=True)

    return model, obj.batches(0, 0, a.batch, 0, 1), step, lambda b: len(b["labels"]), "examples"


def keep_mask_mt(shape, p, device="cpu"):
    """The masks of wellread before 2026-11-30: 31 bits of torch's Mersenne Twister make two 15-bit uniforms."""
    n = 1
    for s in shape:
        n *= int(s)
    half = (n + 1) // 2
    bits = torch.empty(half, dtype=torch.int32).random_()
    threshold = round(p * 32768)
    keep = torch.empty(2 * half, dtype=torch.bool)
    torch.ge(bits.bitwise_and(32767), threshold, out=keep[:half])
    torch.ge(bits.bitwise_right_shift_(15).bitwise_and_(32767), threshold, out=keep[half:])
    return keep[:n].view(shape)


def ab(a, model, step, batches) -> None:
    """Interleaved blocks, so the machine's drift hits both the same: median ms/step of each.

    ``--ab-of attention``: wellread's fused attention and SFC64 dropout masks against the eager attention and
    masks from torch's ``random_``; ``--ab-of last-layer``: the last encoder layer on the masked rows only
    against the whole layer (pre-training)."""
    import statistics

    from wellread.modeling import dropout

    net = getattr(model, "net", model)  # pre-training's SparsePretrainer wraps the BERT

    def attention(fused: bool) -> None:
        if a.saved is not None:
            dropout.restore(a.saved)
        a.saved = dropout.use_fast_dropout(net, fused_attention=fused)

    current = dropout.keep_mask
    times: dict[str, list[float]] = {"wellread": [], "previous": []}
    for b in batches[:10]:
        step(b)
    for i in range(2 * a.ab):
        name = "wellread" if i % 2 == 0 else "previous"
        if a.ab_of == "bf16":
            PRECISION["bf16"] = name == "wellread"
        elif a.ab_of == "chunk":
            from wellread.modeling import heads

            PRECISION["bf16"] = True
            heads.CHUNK_ROWS = int(a.chunk_rows.split(",")[0 if name == "wellread" else 1])
        elif a.ab_of == "attention":
            attention(fused=name == "wellread")
            dropout.keep_mask = current if name == "wellread" else keep_mask_mt
        else:
            model.sparse_last_layer = name == "wellread"
        t = time.perf_counter()
        for b in batches[10:10 + a.steps]:
            step(b)
        times[name].append((time.perf_counter() - t) / a.steps * 1000)
    dropout.keep_mask = current
    PRECISION["bf16"] = a.bf16
    if a.ab_of == "attention":
        attention(fused=True)
    else:
        model.sparse_last_layer = True
    med = {k: statistics.median(v) for k, v in times.items()}
    for k, v in times.items():
        print(f"{k}: median {med[k]:.1f} ms/step over {len(v)} blocks of {a.steps} steps ({', '.join(f'{x:.0f}' for x in v)})")
    print(f"previous / wellread ({a.ab_of}): {med['previous'] / med['wellread']:.3f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("kind", choices=["pretrain", "finetune"])
    ap.add_argument("--data", help="shard directory (pretrain)")
    ap.add_argument("--task", default="sst2")
    ap.add_argument("--data-dir", help="GLUE root (finetune)")
    ap.add_argument("--model", default="tiny", help="miniature to time (pretrain)")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--plain", action="store_true", help="PyTorch's dropout and dense embedding gradients")
    ap.add_argument("--profile", action="store_true", help="also print torch.profiler's table for 20 steps")
    ap.add_argument("--shapes", action="store_true", help="--profile by input shapes")
    ap.add_argument("--ab", type=int, default=0, metavar="BLOCKS",
                    help="alternate BLOCKS blocks of --steps steps between wellread's attention and dropout masks "
                         "and the previous ones (eager attention, masks from torch's random_); print both")
    ap.add_argument("--ab-of", choices=["attention", "last-layer", "bf16", "chunk"], default="attention",
                    help="what --ab compares: the attention and dropout masks, or the last layer on the masked rows "
                         "only against the whole layer, bf16 against fp32, or two chunk sizes of the bf16 loss")
    ap.add_argument("--chunk-rows", default="32,128", metavar="A,B",
                    help="with --ab-of chunk: the bf16 loss's rows a chunk ('wellread' A, 'previous' B)")
    ap.add_argument("--bf16", action="store_true", help="steps under bf16 autocast (as `--bf16` trains); "
                    "with --ab-of bf16, 'wellread' is bf16 and 'previous' fp32")
    a = ap.parse_args()
    from wellread import env

    print(env.describe(), flush=True)
    PRECISION["bf16"] = a.bf16
    torch.set_num_threads(a.threads)
    model, it, step, count, unit = (pretrain_steps if a.kind == "pretrain" else finetune_steps)(a)
    model.train()
    batches = [next(it) for _ in range(a.steps + 30)]
    if a.ab:
        return ab(a, model, step, batches)
    for b in batches[:10]:
        step(b)
    t, n = time.perf_counter(), 0
    for b in batches[10:10 + a.steps]:
        step(b)
        n += count(b)
    dt = time.perf_counter() - t
    print(f"{a.kind} batch {a.batch}, {a.threads} thread(s), {'plain' if a.plain else 'wellread'}, "
          f"{'bf16' if a.bf16 else 'fp32'}: "
          f"{dt / a.steps * 1000:.2f} ms/step, {n / dt:,.0f} {unit}/s")
    if a.profile:
        from torch.profiler import ProfilerActivity, profile

        with profile(activities=[ProfilerActivity.CPU], record_shapes=a.shapes) as p:
            for b in batches[10 + a.steps:]:
                step(b)
        print(p.key_averages(group_by_input_shape=a.shapes).table(sort_by="self_cpu_time_total", row_limit=25))
        if a.kind == "pretrain":
            print(loss_share(p.key_averages(), len(batches) - 10 - a.steps))


def loss_share(events, steps: int) -> str:
    """How much of a profiled pre-training step the vocabulary projection's loss (``MaskedLMLoss``, forward and
    backward, products included) takes: it is what bf16 speeds up least on a CPU (docs/benchmarks.md)."""
    total = sum(e.self_cpu_time_total for e in events) / steps / 1e3
    fwd = sum(e.cpu_time_total for e in events if e.key == "MaskedLMLoss") / steps / 1e3
    bwd = sum(e.cpu_time_total for e in events
              if "MaskedLMLossBackward" in e.key and e.key.startswith("autograd::engine")) / steps / 1e3
    return (f"per profiled step: {total:.0f} ms; the vocabulary loss {fwd:.0f} ms forward + {bwd:.0f} ms backward "
            f"= {(fwd + bwd) / total:.0%}; everything else {total - fwd - bwd:.0f} ms")


if __name__ == "__main__":
    main()
