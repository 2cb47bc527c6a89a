"""Fine-tuning on a GLUE task: the classification/regression objective and ``finetune()``.

``finetune`` reads the task once (cached token ids), builds a sequence-classification model from a
pre-trained directory (or a random miniature), trains it with the one loop for the paper's 4 epochs,
evaluates on dev after each epoch, and writes ``RUN/model`` (HF layout, with id2label) and
``RUN/results.json``. Re-running a finished run prints its results; a killed run resumes.
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tokenizers import Tokenizer
from transformers import BertForSequenceClassification

from wellread import hub
from wellread.config import carry, configclass, field, group, same, to_dict
from wellread.data.batching import Features, Inputs, bucketed_batches, cached_encode, collate
from wellread.data.own_task import data_settings, task_file_of
from wellread.data.squad import QASettings, is_qa_task
from wellread.data.task_files import read_split
from wellread.data.tasks import TaskSpec, get_task
from wellread.errors import WellreadError
from wellread.eval.metrics import compute_metrics
from wellread.eval.predict import logits_to_predictions, predict_logits
from wellread.modeling import zoo
from wellread.modeling.dropout import fast_cpu_dropout
from wellread.modeling.models import load_model, read_config, read_weights, save_model
from wellread.tokenization import PAD, STANDARD_VOCAB, check_vocabulary, load_tokenizer
from wellread.train.loop import NOT_RESULT_SETTINGS, TrainConfig, inference_bf16
from wellread.train.qa import finetune_qa
from wellread.train.run import Prepared, epoch_summary, run, timing


@configclass
class RandomInit:
    """A randomly initialised start instead of pre-trained weights: the ``init`` group of finetune, distill
    (the student) and grid (every cell)."""

    random_init: bool = field(False, help="start from a randomly initialised miniature (one of the 24 names) "
                                          "instead of pre-trained weights")
    vocab: Path | None = field(None, help="vocabulary for --random-init (default: the standard uncased BERT vocab)")


@configclass
class FinetuneConfig(TrainConfig):
    model: str = field(help="a model directory (HF layout), a hub id or miniature name, or with --random-init one "
                            "of the 24 miniatures")
    task: str = field(help="GLUE task: cola, sst2, mrpc, stsb, qqp, mnli, qnli, rte, wnli; squad (v1.1), squad_v2 "
                           "(v2.0): extractive question answering; or a task file (tickets.yaml: your own data, "
                           "see docs/own-task.md)")
    data_dir: Path | None = field(None, help="the GLUE root (holding <TASK>/ folders), a task folder, or a HF datasets "
                                             "copy (not needed for a task file)")
    out: Path = field(help="the run directory (model/, results.json, metrics.jsonl, checkpoint)")
    epochs: float | None = same(TrainConfig, "epochs", 4.0, help="passes over the training data (the paper: 4)")
    inputs: Inputs = group(Inputs, help="how inputs are cut (--max-length)")
    init: RandomInit = group(RandomInit, help="a random start (--random-init, --vocab)")
    new_head: bool = field(False, help="replace a classifier trained for other labels instead of refusing")
    train_split: str = field("train", help="the split to train on")
    dropout: float | None = field(None, help="override the model's dropout (hidden and attention)")
    qa: QASettings = group(QASettings, help="extractive QA (squad, squad_v2): windows and the split by article")


def after_distillation(cfg) -> FinetuneConfig:
    """Distillation's stage 3 (``cfg`` a ``DistillConfig`` with --then-finetune): fine-tune the distilled student
    (RUN/model) in RUN/finetune, with every setting distillation shares with fine-tuning, --finetune-epochs and
    --finetune-lr."""
    return carry(FinetuneConfig, cfg, model=str(Path(cfg.out) / "model"), out=Path(cfg.out) / "finetune",
                 epochs=cfg.finetune_epochs if cfg.finetune_epochs is not None else cfg.epochs,
                 lr=cfg.finetune_lr if cfg.finetune_lr is not None else cfg.lr,
                 random_init=False, vocab=None, overwrite=False)


@dataclasses.dataclass
class LabelledSet:
    name: str
    feats: Features
    targets: np.ndarray  # int64 label ids, or float32 scores
    references: list  # label names / scores, for the metrics


def label_targets(spec: TaskSpec, examples) -> tuple[np.ndarray, list]:
    refs = [e.label for e in examples]
    if spec.is_regression:
        return np.asarray(refs, dtype=np.float32), refs
    l2i = spec.label2id
    return np.asarray([l2i[r] for r in refs], dtype=np.int64), refs


def load_labelled(spec: TaskSpec, data_dir: Path | None, split: str, tok: Tokenizer, max_length: int) -> LabelledSet:
    data = read_split(spec, data_dir, split)
    if data.skipped:
        print(f"{data.path}: skipped {len(data.skipped)} malformed rows (first at line {data.skipped[0][0]}: "
              f"{data.skipped[0][1]})", file=sys.stderr)
    ex = data.examples
    if any(e.label is None for e in ex):
        raise WellreadError(f"the {split} split of {spec.name} has unlabelled rows", file=data.path)
    feats = cached_encode(tok, [e.text_a for e in ex], [e.text_b for e in ex], max_length, f"{spec.name}-{split}")
    targets, refs = label_targets(spec, ex)
    return LabelledSet(split, feats, targets, refs)


class ClassificationObjective:
    """Cross-entropy (or MSE for STS-B) on length-bucketed batches; dev metrics as GLUE scores them."""

    def __init__(self, model, spec: TaskSpec, train_set: LabelledSet, dev_sets: list[LabelledSet], *, seed: int,
                 pad_id: int, bf16: bool = False) -> None:
        self.model = model
        self.spec = spec
        self.train_set = train_set
        self.dev_sets = dev_sets
        self.seed = seed
        self.pad_id = pad_id
        self.bf16 = bf16
        self._lengths = train_set.feats.lengths

    def micro_batches_per_epoch(self, micro_batch: int, world: int) -> int:
        return len(self.train_set.feats) // micro_batch

    def batches(self, epoch: int, start: int, micro_batch: int, rank: int, world: int) -> Iterator[dict]:
        order = bucketed_batches(self._lengths, micro_batch, self.seed, epoch)
        share = micro_batch // world
        for index in order[start:]:
            yield self.batch(index[rank * share:(rank + 1) * share])

    def batch(self, part: np.ndarray) -> dict:
        """The inputs and targets of the training examples ``part``."""
        batch = collate(self.train_set.feats, part, self.pad_id)
        batch["labels"] = torch.from_numpy(self.train_set.targets[part])
        return batch

    def counts(self, batch: dict) -> dict[str, float]:
        return {"examples": float(len(batch["labels"]))}

    def tokens(self, batch: dict) -> int:
        return int(batch["attention_mask"].sum())

    def loss(self, model, batch: dict, totals: dict[str, float]):
        device = next(model.parameters()).device
        labels = batch["labels"].to(device)
        logits = model(**{k: v.to(device) for k, v in batch.items() if k != "labels"}).logits.float()
        if self.spec.is_regression:
            loss_sum = F.mse_loss(logits.squeeze(-1), labels, reduction="sum")
            stats = {"loss_sum": float(loss_sum.detach()), "n": float(len(labels))}
        else:
            loss_sum = F.cross_entropy(logits, labels, reduction="sum")
            correct = (logits.argmax(-1) == labels).sum()
            stats = {"correct": float(correct), "n": float(len(labels))}
        return loss_sum / totals["examples"], stats

    def summarize(self, sums: dict[str, float]) -> dict[str, float]:
        if "correct" in sums and sums.get("n"):
            return {"train_accuracy": sums["correct"] / sums["n"]}
        return {}

    def evaluate(self, model) -> dict[str, float]:
        device = next(model.parameters()).device
        out: dict[str, float] = {}
        for ds in self.dev_sets:
            logits = predict_logits(model, ds.feats, pad_id=self.pad_id, device=device, bf16=self.bf16)
            preds = logits_to_predictions(logits, self.spec.labels)
            for k, v in compute_metrics(self.spec, preds, ds.references).items():
                out[f"{ds.name}/{k}"] = v
        return out


def set_task_head(config, spec: TaskSpec) -> None:
    """Make ``config`` describe a classifier for ``spec``: labels in canonical order, or one score."""
    config.num_labels = 1 if spec.is_regression else len(spec.labels)
    config.id2label = {0: "score"} if spec.is_regression else dict(enumerate(spec.labels))
    config.label2id = {v: k for k, v in config.id2label.items()}
    config.problem_type = "regression" if spec.is_regression else "single_label_classification"
    config.architectures = ["BertForSequenceClassification"]
    config.finetuning_task = spec.name


def _set_dropout(config, p: float | None) -> None:
    if p is not None:
        config.hidden_dropout_prob = config.attention_probs_dropout_prob = p
        config.classifier_dropout = None


def classifier_from_pretrained(path: Path, spec: TaskSpec, *, seed: int, new_head: bool = False,
                               dropout: float | None = None):
    """A ``BertForSequenceClassification`` for ``spec`` on the encoder of a model directory.

    The encoder must load completely (``load_model``'s strict check); a pooler that is absent (e.g. in
    an MLM-only checkpoint) starts random. An existing classifier is kept only when it was trained for
    exactly this task's labels; otherwise it is refused unless ``new_head``.
    """
    config = read_config(path)
    old_labels = [config.id2label[i] for i in sorted(config.id2label)] if getattr(config, "id2label", None) else []
    has_head = any(k.startswith("classifier.") for k in read_weights(path))
    same_head = has_head and (
        (spec.is_regression and getattr(config, "problem_type", None) == "regression" and config.num_labels == 1)
        or (not spec.is_regression and [str(x) for x in old_labels] == list(spec.labels)))
    if has_head and not same_head and not new_head:
        raise WellreadError(
            f"the model's classifier predicts {old_labels or config.num_labels} but {spec.name} has labels "
            f"{list(spec.labels) if spec.labels else 'a score'}; pass --new-head to train a new classifier", file=path)
    set_task_head(config, spec)
    _set_dropout(config, dropout)
    model = load_model(path, "classifier", config=config, optional=("bert.pooler.",),
                       fresh=() if same_head else ("classifier.",), seed=seed)
    return model.train()


def run_settings(cfg: FinetuneConfig) -> dict:
    """The settings that define a run (what a finished run's results.json must match to be reused)."""
    return to_dict(cfg) | {k: None for k in (*NOT_RESULT_SETTINGS, "overwrite", "out")} | data_settings(cfg.task)


def _model_path(model: str) -> Path:
    """A local model directory for a directory, alias or hub id (resolved and downloaded if allowed)."""
    path = Path(model)
    if not path.is_dir():
        path = hub.resolve_model(model)
    return path


def build_tokenizer(model: str, init: RandomInit) -> Tokenizer:
    """The tokenizer a fine-tuning run of ``model`` uses (without building the model)."""
    if init.random_init:
        zoo.get(model)  # an unknown name is refused here, with a suggestion
        return load_tokenizer(init.vocab or STANDARD_VOCAB)
    return load_tokenizer(_model_path(model))


def build_model(cfg: FinetuneConfig, spec: TaskSpec):
    """(model, tokenizer, description of the source) for a fine-tuning run."""
    if cfg.init.random_init:
        mini = zoo.get(cfg.model)
        tok = load_tokenizer(cfg.init.vocab or STANDARD_VOCAB)
        config = mini.bert_config(vocab_size=tok.get_vocab_size(), pad_token_id=tok.token_to_id(PAD))
        set_task_head(config, spec)
        _set_dropout(config, cfg.dropout)
        torch.manual_seed(cfg.seed)
        return BertForSequenceClassification(config), tok, f"random {mini.name}"
    path = _model_path(cfg.model)
    model = classifier_from_pretrained(path, spec, seed=cfg.seed, new_head=cfg.new_head, dropout=cfg.dropout)
    tok = load_tokenizer(path)
    check_vocabulary(tok, model.config.vocab_size, path)
    return model, tok, str(path)


def finetune(cfg: FinetuneConfig) -> dict:
    """Fine-tune, evaluate on dev after each epoch, save the model; returns results.json's content."""
    if is_qa_task(cfg.task):
        return finetune_qa(cfg, run_settings(cfg))
    spec = get_task(cfg.task)
    if spec.evaluate_with is not None:
        raise WellreadError(f"{spec.name} is evaluation-only; fine-tune on {spec.evaluate_with} instead", field="task")

    def prepare() -> Prepared:
        model, tok, source = build_model(cfg, spec)
        pad_id = tok.token_to_id(PAD)
        max_length = min(cfg.inputs.max_length, model.config.max_position_embeddings)
        if max_length < cfg.inputs.max_length:
            print(f"the model has {max_length} positions: inputs are truncated to {max_length} tokens", file=sys.stderr)
        train_set = load_labelled(spec, cfg.data_dir, cfg.train_split, tok, max_length)
        dev_sets = [load_labelled(spec, cfg.data_dir, s, tok, max_length) for s in spec.dev_splits]
        objective = ClassificationObjective(model, spec, train_set, dev_sets, seed=cfg.seed, pad_id=pad_id,
                                            bf16=inference_bf16(cfg.bf16))

        def results(result, wall: float) -> dict:
            return {"task": spec.name, **task_file_of(spec), "model": source, "train_examples": len(train_set.feats),
                    "epochs_done": result.state.epoch, "dev": dict(result.final_eval),
                    **epoch_summary(result, f"{spec.dev_splits[0]}/{spec.main_metric}"),
                    **timing(result, wall, cfg.batch_size)}

        return Prepared(objective, {"settings": settings, "train_examples": len(train_set.feats)},
                        save=lambda path: save_model(objective.model.cpu(), tok, path),
                        results=results, during=lambda: fast_cpu_dropout(model), eval_each_epoch=True)

    settings = run_settings(cfg)
    return run(cfg, settings, prepare)
