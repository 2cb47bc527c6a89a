"""Extractive question answering (SQuAD v1.1 / v2.0): the span objective and ``finetune_qa``.

The model is ``BertForQuestionAnswering`` (``qa_outputs``: hidden -> start, end logits), saved in the
HF layout so ``transformers.pipeline("question-answering")`` loads it unchanged. Training windows come
from ``wellread.data.squad.preprocess``; the loss is Google's: the mean of the cross-entropies of the
start and end positions. Evaluation predicts every window of the held-out questions, post-processes
them into answers and scores them with the official metrics.

Without the official training file (``train-v1.1.json`` / ``train-v2.0.json`` beside the dev file),
a run trains on the first ``--train-articles`` articles of the dev file and evaluates on the rest:
a split **by article**, so no paragraph is on both sides. The split is recorded in results.json.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import torch
import torch.nn.functional as F
from transformers import BertForQuestionAnswering

from wellread import hub
from wellread.data import squad
from wellread.data.batching import bucketed_batches, collate
from wellread.errors import WellreadError
from wellread.eval.squad import squad_scores
from wellread.infer.qa import predict_spans, write_predictions
from wellread.modeling import zoo
from wellread.modeling.dropout import fast_cpu_dropout
from wellread.modeling.models import load_model, read_config, read_weights, save_model
from wellread.tokenization import PAD, STANDARD_VOCAB, check_vocabulary, load_tokenizer
from wellread.train.loop import inference_bf16
from wellread.train.run import Prepared, epoch_summary, run, timing

PREDICTION_FILES = ("predictions.json", "nbest_predictions.json", "null_odds.json")


def set_qa_head(config, task: str) -> None:
    """Make ``config`` describe a span extractor (two outputs per token: start and end)."""
    config.num_labels = 2
    config.architectures = ["BertForQuestionAnswering"]
    config.finetuning_task = task
    config.id2label = {0: "LABEL_0", 1: "LABEL_1"}
    config.label2id = {"LABEL_0": 0, "LABEL_1": 1}
    config.problem_type = None


def qa_from_pretrained(path: Path, task: str, *, seed: int, dropout: float | None = None):
    """A ``BertForQuestionAnswering`` on the encoder of a model directory (``load_model``'s strict check);
    an existing ``qa_outputs`` head is kept, otherwise it starts random (any other head is ignored)."""
    config = read_config(path)
    has_head = any(k.startswith("qa_outputs.") for k in read_weights(path))
    set_qa_head(config, task)
    if dropout is not None:
        config.hidden_dropout_prob = config.attention_probs_dropout_prob = dropout
    return load_model(path, "qa", config=config, fresh=() if has_head else ("qa_outputs.",), seed=seed).train()


def build_qa_model(cfg, task: str):
    """(model, tokenizer, source) for ``cfg`` (a FinetuneConfig): a random miniature or a model directory."""
    if cfg.init.random_init:
        mini = zoo.get(cfg.model)
        tok = load_tokenizer(cfg.init.vocab or STANDARD_VOCAB)
        config = mini.bert_config(vocab_size=tok.get_vocab_size(), pad_token_id=tok.token_to_id(PAD))
        set_qa_head(config, task)
        if cfg.dropout is not None:
            config.hidden_dropout_prob = config.attention_probs_dropout_prob = cfg.dropout
        torch.manual_seed(cfg.seed)
        return BertForQuestionAnswering(config), tok, f"random {mini.name}"
    path = Path(cfg.model) if Path(cfg.model).is_dir() else hub.resolve_model(cfg.model)
    model = qa_from_pretrained(path, task, seed=cfg.seed, dropout=cfg.dropout)
    tok = load_tokenizer(path)
    check_vocabulary(tok, model.config.vocab_size, path)
    return model, tok, str(path)


def span_loss(start_logits: torch.Tensor, end_logits: torch.Tensor, attention_mask: torch.Tensor,
              start_positions: torch.Tensor, end_positions: torch.Tensor) -> torch.Tensor:
    """Sum over the batch of ``(CE(start) + CE(end)) / 2`` (run_squad's loss), padding masked out."""
    pad = attention_mask == 0
    s = start_logits.float().masked_fill(pad, float("-inf"))
    e = end_logits.float().masked_fill(pad, float("-inf"))
    return (F.cross_entropy(s, start_positions, reduction="sum") + F.cross_entropy(e, end_positions, reduction="sum")) / 2


class QAObjective:
    """Span cross-entropy on length-bucketed batches of windows; the held-out questions scored officially."""

    def __init__(self, model, train: squad.QAFeatures, test_examples: list[squad.QAExample], test: squad.QAFeatures,
                 *, v2: bool, seed: int, pad_id: int, bf16: bool = False, name: str = "test") -> None:
        self.model = model
        self.train = train
        self.test_examples = test_examples
        self.test = test
        self.v2 = v2
        self.seed = seed
        self.pad_id = pad_id
        self.bf16 = bf16
        self.name = name
        self.last_predictions: squad.Predictions | None = None

    def micro_batches_per_epoch(self, micro_batch: int, world: int) -> int:
        return len(self.train) // micro_batch

    def batches(self, epoch: int, start: int, micro_batch: int, rank: int, world: int) -> Iterator[dict]:
        order = bucketed_batches(self.train.feats.lengths, micro_batch, self.seed, epoch)
        share = micro_batch // world
        for index in order[start:]:
            part = index[rank * share:(rank + 1) * share]
            batch = collate(self.train.feats, part, self.pad_id)
            batch["start_positions"] = torch.from_numpy(self.train.start_positions[part])
            batch["end_positions"] = torch.from_numpy(self.train.end_positions[part])
            batch["index"] = part  # the windows' numbers (distillation looks up the teacher's logits)
            yield batch

    def counts(self, batch: dict) -> dict[str, float]:
        return {"examples": float(len(batch["start_positions"]))}

    def tokens(self, batch: dict) -> int:
        return int(batch["attention_mask"].sum())

    def loss(self, model, batch: dict, totals: dict[str, float]):
        device = next(model.parameters()).device
        inputs = {k: batch[k].to(device) for k in ("input_ids", "token_type_ids", "attention_mask")}
        out = model(**inputs)
        sp, ep = batch["start_positions"].to(device), batch["end_positions"].to(device)
        loss_sum = span_loss(out.start_logits, out.end_logits, inputs["attention_mask"], sp, ep)
        hit = ((out.start_logits.argmax(-1) == sp) & (out.end_logits.argmax(-1) == ep)).sum()
        return loss_sum / totals["examples"], {"span_correct": float(hit), "n": float(len(sp))}

    def summarize(self, sums: dict[str, float]) -> dict[str, float]:
        return {"train_span_accuracy": sums["span_correct"] / sums["n"]} if sums.get("n") else {}

    def evaluate(self, model) -> dict[str, float]:
        device = next(model.parameters()).device
        starts, ends = predict_spans(model, self.test, pad_id=self.pad_id, device=device, bf16=self.bf16)
        preds = squad.postprocess(self.test_examples, self.test, starts, ends, v2=self.v2)
        self.last_predictions = preds
        gold = {e.id: [a for a, _ in e.answers] for e in self.test_examples}
        r = squad_scores(gold, preds.text, v2=self.v2, na_probs=preds.null_odds if self.v2 else None)
        keys = ("exact_match", "f1") if not self.v2 else ("exact", "f1", "HasAns_f1", "NoAns_f1", "best_f1",
                                                         "best_f1_thresh")
        return {f"{self.name}/{k}": float(r[k]) for k in keys if k in r}


def qa_data(cfg, task: str, *, quiet: bool = False):
    """(train examples, test examples, file, description of the split) for a QA run."""
    train_file = None
    if cfg.qa.source == "hub":
        data_dir = squad.fetch_squad(task, quiet=quiet)
    elif cfg.data_dir is None:
        raise WellreadError(f"{task} needs --data-dir (the folder of the SQuAD files, or one JSON file) or "
                            "--source hub", field="data_dir")
    else:
        data_dir = Path(cfg.data_dir)
    if data_dir.is_dir() and (data_dir / squad.TRAIN_FILES[task]).is_file() and cfg.qa.train_articles is None:
        train_file = squad.read_squad(data_dir / squad.TRAIN_FILES[task], task, quiet=quiet)
    dev = squad.read_squad(squad.squad_path(task, data_dir), task, quiet=quiet)
    if train_file is not None:
        return train_file.examples, dev.examples, dev, {"kind": "official", "train": str(train_file.path),
                                                        "test": str(dev.path)}
    n_train = cfg.qa.train_articles if cfg.qa.train_articles is not None else round(0.8 * len(dev.titles))
    train_a, test_a = squad.split_by_article(len(dev.titles), n_train)
    split = {"kind": "by_article", "file": str(dev.path), "train_articles": len(train_a),
             "test_articles": len(test_a), "first_test_article": dev.titles[test_a[0]]}
    return dev.subset(train_a), dev.subset(test_a), dev, split


def finetune_qa(cfg, settings: dict) -> dict:
    """Fine-tune a span-extraction model on SQuAD (``cfg`` a FinetuneConfig, ``settings`` what defines the run):
    the run directory of ``finetune`` (the one lifecycle, ``wellread.train.run``) plus the prediction files."""
    task = cfg.task
    v2 = task == "squad_v2"

    def prepare() -> Prepared:
        train_ex, test_ex, _, split = qa_data(cfg, task, quiet=cfg.quiet)
        model, tok, source = build_qa_model(cfg, task)
        windows = cfg.qa.windows(model.config.max_position_embeddings)
        train_f = squad.preprocess(tok, train_ex, training=True, **windows)
        if train_f.unmapped:
            print(f"{len(train_f.unmapped)} training question(s) have no answer that maps to word pieces (trained "
                  f"to [CLS]); first: {train_f.unmapped[0]}", file=sys.stderr)
        test_f = squad.preprocess(tok, test_ex, **windows)
        objective = QAObjective(model, train_f, test_ex, test_f, v2=v2, seed=cfg.seed, pad_id=tok.token_to_id(PAD),
                                bf16=inference_bf16(cfg.bf16))
        final: dict = {}

        def results(result, wall: float) -> dict:
            final.update(result.final_eval)
            return {"task": task, "model": source, "split": split, "train_questions": len(train_ex),
                    "train_examples": len(train_f), "test_questions": len(test_ex), "test_windows": len(test_f),
                    "unmapped_train_answers": len(train_f.unmapped), "epochs_done": result.state.epoch,
                    "dev": dict(result.final_eval), **epoch_summary(result, "test/f1"),
                    **timing(result, wall, cfg.batch_size)}

        def save(path: Path) -> None:
            trained = objective.model.cpu()
            if objective.last_predictions is None:  # resumed after the last evaluation: predict again
                objective.evaluate(trained)
            if v2:  # the null threshold chosen on the held-out questions (as the official best_f1_thresh)
                trained.config.null_score_diff_threshold = float(final.get("test/best_f1_thresh", 0.0))
            trained.config.squad_windows = windows
            save_model(trained, tok, path)
            write_predictions(path.parent / "predictions.json", objective.last_predictions, v2=v2)

        return Prepared(objective, {"settings": settings, "train_windows": len(train_f)}, save=save,
                        results=results, during=lambda: fast_cpu_dropout(model), eval_each_epoch=True)

    return run(cfg, settings, prepare, own=frozenset(PREDICTION_FILES))
