"""Issue 3's yardstick, re-runnable on this machine: a plain PyTorch loop around HF ``BertForMaskedLM``.

The yardstick in issue 3 ("a plain script, HF BertForMaskedLM Tiny, masked-only head, batch 128, lr 1e-3,
fp32, given 30 minutes": 19 M tokens, 14.9% held-out MLM accuracy) was measured on another machine and
another held-out slice. This script is that plain script, on the same shards, the same masking
(``PretrainingDataset``: Google's 15%, 80/10/10, at most 20 a sequence) and the same held-out batches as
``wellread pretrain`` (``PretrainObjective.evaluate``), so the two runs differ only in the training code:

- model: ``transformers.BertForMaskedLM`` (its own init, dropout 0.1, sdpa attention);
- loss: the encoder's last hidden states gathered at the masked positions, ``model.cls`` on those rows,
  ``F.cross_entropy`` (the "masked-only head");
- optimizer: ``torch.optim.AdamW`` (lr, weight decay 0.01 on every parameter, eps 1e-6), gradient clipping 1.0;
- schedule: 1% linear warm-up then linear decay to 0 over the time budget (what ``wellread pretrain
  --time-budget`` does), so a short run is not handicapped by its schedule.

Evaluation time is not counted in the budget. Prints one line per evaluation and writes ``--json``.

    python benchmarks/yardstick_mlm.py --data SHARDS --minutes 30 --json yardstick.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import torch
import torch.nn.functional as F


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True, help="shard directory (wellread corpus)")
    ap.add_argument("--minutes", type=float, default=30.0, help="training time (evaluations not counted)")
    ap.add_argument("--evals", type=int, default=9, help="evaluations spread evenly over the budget")
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--warmup", type=float, default=0.01)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--json", help="write the history and the final figures here")
    ap.add_argument("--save", help="save the trained BertForMaskedLM and the tokenizer files here (HF layout)")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)

    from transformers import BertForMaskedLM
    from transformers.utils import logging as hf_logging

    from wellread.data.shards import load_corpus
    from wellread.modeling import zoo
    from wellread.tokenization import vocab_hash
    from wellread.train.loop import lr_factor
    from wellread.train.pretrain import PretrainConfig, PretrainObjective, build_model

    hf_logging.set_verbosity_error()
    cfg = PretrainConfig(model="tiny", data=Path(a.data), out=Path("unused"), objective="mlm", batch_size=a.batch,
                         max_steps=1, seed=a.seed)
    probe, tok, _ = build_model(cfg)  # only to run wellread's held-out evaluation on the yardstick's weights
    obj = PretrainObjective(probe, load_corpus(cfg.data, expect_vocab_hash=vocab_hash(tok)), tok, cfg)

    torch.manual_seed(a.seed)
    model = BertForMaskedLM(zoo.get("tiny").bert_config())
    opt = torch.optim.AdamW(model.parameters(), lr=a.lr, weight_decay=0.01, eps=1e-6)
    budget = 60.0 * a.minutes

    def evaluate() -> dict:
        missing, unexpected = probe.load_state_dict(model.state_dict(), strict=False)
        assert not unexpected and all(k.startswith(("bert.pooler", "cls.seq_relationship")) for k in missing), missing
        obj.model.eval()
        return obj.evaluate(obj.model)  # {"eval/mlm_loss", "eval/mlm_accuracy", "eval/mlm_accuracy_at_mask"}

    history, trained, tokens, step = [], 0.0, 0, 0
    next_eval = budget / a.evals
    model.train()
    for batch in obj.batches(0, 0, a.batch, 0, 1):
        t0 = time.perf_counter()
        for g in opt.param_groups:
            g["lr"] = a.lr * lr_factor(trained / budget, a.warmup)
        hidden = model.bert(input_ids=batch["input_ids"], token_type_ids=batch["token_type_ids"],
                            attention_mask=batch["attention_mask"]).last_hidden_state
        rows = hidden.reshape(-1, hidden.size(-1))[batch["masked_positions"]]
        loss = F.cross_entropy(model.cls(rows), batch["masked_labels"])
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        trained += time.perf_counter() - t0
        tokens += int(batch["attention_mask"].sum())
        step += 1
        if trained >= next_eval or trained >= budget:
            rec = {"step": step, "tokens": tokens, "train_seconds": round(trained, 1), **evaluate()}
            model.train()
            history.append(rec)
            print(f"step {step}  {tokens / 1e6:.1f} M tokens  {trained:.0f} s  held-out MLM acc "
                  f"{100 * rec['eval/mlm_accuracy']:.2f}% (at [MASK] {100 * rec['eval/mlm_accuracy_at_mask']:.2f}%)  "
                  f"loss {rec['eval/mlm_loss']:.3f}", flush=True)
            next_eval += budget / a.evals
        if trained >= budget:
            break

    final = history[-1]
    result = {"script": "benchmarks/yardstick_mlm.py", "settings": vars(a), "steps": step, "tokens": tokens,
              "tokens_per_s": tokens / trained, "final": final, "history": history,
              "machine": platform.processor() or platform.machine(), "cpu_capability": torch.backends.cpu.get_cpu_capability(),
              "torch": torch.__version__, "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    print(f"yardstick: {tokens / 1e6:.1f} M tokens in {trained / 60:.1f} min ({tokens / trained:,.0f} tokens/s), "
          f"held-out MLM accuracy {100 * final['eval/mlm_accuracy']:.2f}%")
    if a.json:
        Path(a.json).write_text(json.dumps(result, indent=1) + "\n")
    if a.save:
        from wellread.tokenization import write_tokenizer_files

        model.save_pretrained(a.save)
        write_tokenizer_files(tok, a.save)  # so that `wellread grid --model SAVE` fine-tunes it as it is


if __name__ == "__main__":
    main()
