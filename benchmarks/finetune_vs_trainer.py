"""Fine-tuning throughput: `wellread finetune` against transformers.Trainer (what run_glue.py does).

Same model (Tiny, same random init), same training rows, batch size, epochs, learning rate and
schedule, max length 128, in one process, one after the other. The Trainer gets run_glue's setup:
dynamic padding (DataCollatorWithPadding), fused AdamW, linear schedule with 10% warm-up, no
evaluation during training, and the same AdamW epsilon as ours (``--adam-eps``, default wellread's 1e-6,
BERT's; the Trainer's own default is 1e-8: on SICK-R's random-init Tiny that difference alone moved dev
Pearson by 4 points, docs/own-task.md). Prints training examples/s of each, the ratio, and both dev scores.

    python benchmarks/finetune_vs_trainer.py --task sst2 --train-rows 8000 --epochs 1
    python benchmarks/finetune_vs_trainer.py --task examples/tasks/emotion.yaml --epochs 1 --threads 1

A task file (docs/own-task.md) works as --task: --train-rows then takes a seeded, stratified sample of its
training set (``wellread.recipe.own_task.sample_task``), the dev set whole.
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

from wellread.data.task_files import read_split
from wellread.data.tasks import get_task
from wellread.eval.metrics import compute_metrics
from wellread.train.finetune import FinetuneConfig, finetune

DATA = Path(os.environ.get("WELLREAD_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))


def subset(task: str, rows: int | None, root: Path) -> Path:
    spec = get_task(task)
    if spec.source is not None and hasattr(spec.source, "spec_file"):  # a task file: its own paths
        if rows is None:
            return None
        from wellread.recipe.own_task import sample_task

        return sample_task(spec, root, rows)
    src = DATA / "glue" / spec.folder
    (root / spec.folder).mkdir(parents=True)
    for split in ("train", "dev"):
        lines = (src / f"{split}.tsv").read_text(encoding="utf-8").splitlines(keepends=True)
        keep = lines if split == "dev" or rows is None else lines[: rows + 1]
        (root / spec.folder / f"{split}.tsv").write_text("".join(keep), encoding="utf-8")
    return root


def run_trainer(model_dir: Path, data: Path, task: str, batch: int, lr: float, epochs: float, out: Path,
                seed: int = 0, bf16: bool = False, adam_eps: float = 1e-6) -> dict:
    from transformers import (
        AutoModelForSequenceClassification,
        AutoTokenizer,
        DataCollatorWithPadding,
        Trainer,
        TrainingArguments,
    )

    spec = get_task(task)
    tok = AutoTokenizer.from_pretrained(model_dir)
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()  # the load report lists the pre-training heads we leave out
    model = AutoModelForSequenceClassification.from_pretrained(
        model_dir, num_labels=1 if spec.is_regression else len(spec.labels),
        problem_type="regression" if spec.is_regression else "single_label_classification")

    def encode(split):
        ex = read_split(spec, data, split).examples
        enc = tok([e.text_a for e in ex], [e.text_b for e in ex] if ex[0].text_b is not None else None,
                  truncation=True, max_length=128)
        return [{"input_ids": enc["input_ids"][i], "token_type_ids": enc["token_type_ids"][i],
                 "attention_mask": enc["attention_mask"][i],
                 "labels": float(e.label) if spec.is_regression else spec.label2id[e.label]} for i, e in enumerate(ex)], ex

    train_rows, _ = encode("train")
    dev_rows, dev_ex = encode(spec.dev_splits[0])
    args = TrainingArguments(output_dir=str(out), per_device_train_batch_size=batch, per_device_eval_batch_size=256,
                             learning_rate=lr, num_train_epochs=epochs, warmup_steps=0.1, weight_decay=0.01,
                             adam_epsilon=adam_eps,
                             lr_scheduler_type="linear", optim="adamw_torch_fused", save_strategy="no",
                             eval_strategy="no", report_to=[], logging_steps=10**9, seed=seed, disable_tqdm=True,
                             dataloader_num_workers=0, use_cpu=True, bf16=bf16)
    trainer = Trainer(model=model, args=args, train_dataset=train_rows, data_collator=DataCollatorWithPadding(tok))
    m = trainer.train().metrics
    pred = trainer.predict(dev_rows).predictions
    preds = pred[:, 0].tolist() if spec.is_regression else [spec.labels[i] for i in pred.argmax(-1)]
    dev = compute_metrics(spec, preds, [e.label for e in dev_ex])
    return {"examples_per_s": m["train_samples_per_second"], "seconds": m["train_runtime"], "dev": dev}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--task", default="sst2")
    ap.add_argument("--train-rows", type=int, default=None, help="first N training rows (default: all)")
    ap.add_argument("--epochs", type=float, default=1.0)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--seed", type=int, default=0, help="seed of both runs (head init, data order, dropout)")
    ap.add_argument("--model", help="start both from this model directory (default: a random Tiny)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads of both (default: torch's)")
    ap.add_argument("--out", type=Path, default=None, help="also write the result JSON here")
    ap.add_argument("--adam-eps", type=float, default=1e-6, help="AdamW epsilon of both (wellread's default: 1e-6)")
    ap.add_argument("--bf16", action=argparse.BooleanOptionalAction, default=None,
                    help="bf16 autocast for both (default: wellread's default here, bf16 where native)")
    a = ap.parse_args()
    from wellread import env

    if a.threads:
        torch.set_num_threads(a.threads)
    print(env.describe(), flush=True)
    a.bf16 = env.resolve_bf16(a.bf16, "cpu")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        data = subset(a.task, a.train_rows, tmp / "glue")
        task = a.task
        if data is not None and data.suffix == ".yaml":  # a sample of a task file: itself a task file
            task, data = str(data), None
        os.environ["WELLREAD_CACHE"] = str(tmp / "cache")  # no feature cache from an earlier run
        common = dict(task=task, data_dir=data, batch_size=a.batch_size, lr=a.lr, epochs=a.epochs, seed=a.seed, quiet=True,
                      bf16=a.bf16, adam_eps=a.adam_eps)
        if a.model:  # a pre-trained model directory: both start from its encoder
            init = Path(a.model)
        else:  # both start from the very same random weights: a random Tiny saved by wellread
            from wellread import tokenization
            from wellread.modeling import zoo
            from wellread.modeling.models import init_model, save_model

            tok = tokenization.load_tokenizer(tokenization.STANDARD_VOCAB)
            init = save_model(init_model(zoo.get("tiny"), tok, seed=0), tok, tmp / "init")
        t0 = time.perf_counter()
        ours = finetune(FinetuneConfig(model=str(init), out=tmp / "ours", **common))
        ours_wall = time.perf_counter() - t0
        t0 = time.perf_counter()
        hf = run_trainer(init, data, task, a.batch_size, a.lr, a.epochs, tmp / "hf", a.seed, a.bf16, a.adam_eps)
    result = {
        "task": a.task, "seed": a.seed, "model": a.model or "random tiny", "train_rows": ours["train_examples"], "epochs": a.epochs, "batch_size": a.batch_size,
        "lr": a.lr, "adam_eps": a.adam_eps,
        "wellread_examples_per_s": ours["train_examples_per_s"], "wellread_wall_s": ours_wall, "wellread_dev": ours["dev"],
        "trainer_examples_per_s": hf["examples_per_s"], "trainer_dev": hf["dev"],
        "trainer_wall_s": time.perf_counter() - t0,
        "ratio": ours["train_examples_per_s"] / hf["examples_per_s"],
        "torch": torch.__version__, "threads": torch.get_num_threads(), "machine": platform.processor() or platform.machine(),
        "bf16": a.bf16, "env": env.report(),
    }
    print(json.dumps(result, indent=2))
    if a.out:
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
