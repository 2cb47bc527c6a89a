"""QA fine-tuning throughput: `wellread finetune --task squad` against transformers.Trainer with run_qa's setup.

Same model (a random Tiny BertForQuestionAnswering saved once; both start from its weights), same
training questions (the first --train-articles articles of SQuAD v1.1 dev: a split BY ARTICLE, the
training file is not available offline), same batch size, epochs, learning rate and linear schedule
with 10% warm-up, in one process, one after the other. The Trainer gets run_qa.py's preprocessing
(``prepare_train_features``: the fast tokenizer with ``truncation="only_second"``, max_length 384,
stride 128, overflowing windows, offsets to token positions, windows without the answer -> [CLS],
padded to max_length as run_qa's default ``pad_to_max_length``) and ``default_data_collator``.
Prints training examples (windows)/s of each, the ratio, and EM/F1 of both on the held-out articles
(both scored by the same post-processing and the official metrics).

    python benchmarks/qa_vs_trainer.py --train-articles 38 --epochs 1
    python benchmarks/qa_vs_trainer.py --train-articles 2 --max-questions 64 --epochs 1   # a quick start check
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import torch

from wellread.data import squad
from wellread.data.squad import QASettings
from wellread.eval.squad import squad_scores
from wellread.infer.qa import QAPredictor
from wellread.train.finetune import FinetuneConfig, finetune

DATA = Path(os.environ.get("WELLREAD_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))


def subset(train_articles: int, max_questions: int | None, root: Path) -> Path:
    """dev-v1.1.json, with at most about ``max_questions`` questions on each side of the split (all by default)."""
    d = json.loads((DATA / "squad" / "dev-v1.1.json").read_text(encoding="utf-8"))
    if max_questions:  # the same share from every article of a side, so no article is dropped
        for side in (d["data"][:train_articles], d["data"][train_articles:]):
            per = max(1, max_questions // len(side))
            for art in side:
                left = per
                for par in art["paragraphs"]:
                    par["qas"] = par["qas"][:max(left, 0)]
                    left -= len(par["qas"])
                art["paragraphs"] = [p for p in art["paragraphs"] if p["qas"]]
    root.mkdir(parents=True)
    (root / "dev-v1.1.json").write_text(json.dumps(d), encoding="utf-8")
    return root


def run_qa_features(tok, examples: list[squad.QAExample], max_length=384, stride=128) -> list[dict]:
    """run_qa.py's prepare_train_features, on the same examples."""
    enc = tok([e.question.lstrip() for e in examples], [e.context for e in examples], truncation="only_second",
              max_length=max_length, stride=stride, return_overflowing_tokens=True, return_offsets_mapping=True,
              padding="max_length")
    rows = []
    for i, offsets in enumerate(enc["offset_mapping"]):
        ex = examples[enc["overflow_to_sample_mapping"][i]]
        seq = enc.sequence_ids(i)
        text, start_char = ex.answers[0]
        end_char = start_char + len(text)
        ts = 0
        while seq[ts] != 1:
            ts += 1
        te = len(enc["input_ids"][i]) - 1
        while seq[te] != 1:
            te -= 1
        if not (offsets[ts][0] <= start_char and offsets[te][1] >= end_char):
            s = e = 0
        else:
            while ts < len(offsets) and offsets[ts][0] <= start_char:
                ts += 1
            s = ts - 1
            while offsets[te][1] >= end_char:
                te -= 1
            e = te + 1
        rows.append({"input_ids": enc["input_ids"][i], "token_type_ids": enc["token_type_ids"][i],
                     "attention_mask": enc["attention_mask"][i], "start_positions": s, "end_positions": e})
    return rows


def run_trainer(init: Path, train_ex, batch: int, lr: float, epochs: float, out: Path, seed: int) -> dict:
    from transformers import (
        AutoModelForQuestionAnswering,
        AutoTokenizer,
        Trainer,
        TrainingArguments,
        default_data_collator,
    )
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    tok = AutoTokenizer.from_pretrained(init)
    model = AutoModelForQuestionAnswering.from_pretrained(init)
    rows = run_qa_features(tok, train_ex)
    args = TrainingArguments(output_dir=str(out), per_device_train_batch_size=batch, learning_rate=lr,
                             num_train_epochs=epochs, warmup_steps=0.1, weight_decay=0.01, lr_scheduler_type="linear",
                             optim="adamw_torch_fused", save_strategy="no", eval_strategy="no", report_to=[],
                             logging_steps=10**9, seed=seed, disable_tqdm=True, dataloader_num_workers=0)
    trainer = Trainer(model=model, args=args, train_dataset=rows, data_collator=default_data_collator)
    m = trainer.train().metrics
    trainer.model.config.squad_windows = {"max_seq_length": 384, "doc_stride": 128, "max_query_length": 64}
    trainer.save_model(out / "model")
    tok.save_pretrained(out / "model")
    return {"examples_per_s": m["train_samples_per_second"], "seconds": m["train_runtime"], "windows": len(rows)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--train-articles", type=int, default=38, help="train on the first N articles of dev-v1.1")
    ap.add_argument("--max-questions", type=int, default=None, help="at most N questions per side (a quick check)")
    ap.add_argument("--epochs", type=float, default=1.0)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        data = subset(a.train_articles, a.max_questions, tmp / "squad")
        os.environ["WELLREAD_CACHE"] = str(tmp / "cache")
        from wellread.modeling.models import save_model
        from wellread.train.qa import build_qa_model

        init_cfg = FinetuneConfig(model="tiny", random_init=True, task="squad", data_dir=data, out=tmp / "x", epochs=1)
        model, tok, _ = build_qa_model(init_cfg, "squad")
        init = save_model(model, tok, tmp / "init")
        common = dict(task="squad", data_dir=data, batch_size=a.batch_size, lr=a.lr, epochs=a.epochs, seed=a.seed,
                      qa=QASettings(train_articles=a.train_articles), quiet=True)
        t0 = time.perf_counter()
        ours = finetune(FinetuneConfig(model=str(init), out=tmp / "ours", **common))
        ours_wall = time.perf_counter() - t0
        sf = squad.read_squad(data / "dev-v1.1.json", "squad", quiet=True)
        train_ex = [e for e in sf.examples if e.article < a.train_articles]
        test_ex = [e for e in sf.examples if e.article >= a.train_articles]
        hf = run_trainer(init, train_ex, a.batch_size, a.lr, a.epochs, tmp / "hf", a.seed)
        hf_preds = QAPredictor(tmp / "hf" / "model").predictions(test_ex).text
        hf_scores = squad_scores({e.id: [t for t, _ in e.answers] for e in test_ex}, hf_preds, v2=False)
    result = {
        "split": f"SQuAD v1.1 dev by article: {a.train_articles} articles train, the rest test",
        "train_questions": ours["train_questions"], "test_questions": ours["test_questions"], "epochs": a.epochs,
        "batch_size": a.batch_size, "lr": a.lr,
        "wellread_windows": ours["train_examples"], "wellread_examples_per_s": ours["train_examples_per_s"],
        "wellread_wall_s": ours_wall, "wellread_test": ours["dev"],
        "trainer_windows": hf["windows"], "trainer_examples_per_s": hf["examples_per_s"],
        "trainer_test": {"test/exact_match": hf_scores["exact_match"], "test/f1": hf_scores["f1"]},
        "ratio": ours["train_examples_per_s"] / hf["examples_per_s"],
        "torch": torch.__version__, "threads": torch.get_num_threads(), "machine": platform.processor() or platform.machine(),
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
