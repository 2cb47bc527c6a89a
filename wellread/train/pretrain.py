"""Pre-training: the masked-LM (and optionally next-sentence) objective and ``pretrain()``.

``pretrain`` starts a ``BertForPreTraining`` from random weights (one of the 24 miniature names, on
the corpus's vocabulary) or from a model directory, reads endless dynamically masked batches from a
shard directory (``wellread corpus``), trains with the one loop, evaluates MLM loss and accuracy
(and NSP accuracy) on held-out documents, and writes ``RUN/model`` (HF layout; loads as
``BertForMaskedLM`` and in ``pipeline("fill-mask")``) and ``RUN/results.json``.

The MLM head runs on the masked positions only (``wellread.modeling.heads``).

Resume: the data is endless, so the loop asks for ``batches(0, start, ...)`` with ``start`` the
micro-batches consumed so far. The dataset position after ``start`` batches is a pure function of
``start``; it is found from a small index (``data_index.jsonl``, a position every 16 micro-batches)
and then advanced by counting instances (no masking), so resuming is cheap and exact.

Default learning rate 1e-3 with 1% warm-up (BERT's fraction) suits the small miniatures (Tiny,
Mini, Small) from scratch at batch 128; use about 1e-4 for Medium and Base.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from tokenizers import Tokenizer

from wellread import hub
from wellread.config import configclass, field, group, same, to_dict
from wellread.data.masking import create_instances_from_document, shuffle_context
from wellread.data.pretraining import PretrainingDataset
from wellread.data.shards import Corpus, load_corpus
from wellread.errors import WellreadError
from wellread.experiments.cpu_aids import CpuAids, Scaffold, start_random_model, training_instances
from wellread.modeling import zoo
from wellread.modeling.dropout import fast_cpu_dropout
from wellread.modeling.heads import SparsePretrainer
from wellread.modeling.models import init_model, load_model, save_model
from wellread.tokenization import MASK, STANDARD_VOCAB, check_vocabulary, load_tokenizer, vocab_hash
from wellread.train.loop import NOT_RESULT_SETTINGS, TrainConfig, config_fingerprint
from wellread.train.run import Prepared, run

INDEX = "data_index.jsonl"
CURVES = "curves.png"  # drawn from metrics.jsonl by the command, not by training (wellread.report.plots)
INDEX_EVERY = 16  # micro-batches between recorded data positions


Objective = Literal["mlm", "mlm+nsp"]
Masking = Literal["wordpiece", "whole-word"]


@configclass
class PretrainConfig(TrainConfig):
    model: str = field(help="one of the 24 miniatures (tiny, mini, small, medium, base or L-<n>_H-<n>) to start "
                            "from random weights, or a model directory to continue from")
    data: Path = field(help="the shard directory made by `wellread corpus`")
    out: Path = field(help="the run directory (model/, results.json, metrics.jsonl, checkpoint, curves.png)")
    vocab: Path | None = field(None, help="vocabulary for a random start (default: the standard uncased BERT vocab); "
                                          "must be the one the shards were made with")
    objective: Objective = field("mlm+nsp", help="mlm, or mlm+nsp (masked LM plus next-sentence prediction, as BERT)")
    masking: Masking = field("wordpiece", help="wordpiece (mask pieces independently) or whole-word")
    max_seq_length: int = field(128, ge=8, le=512, help="tokens per sequence")
    aids: CpuAids = group(CpuAids, help="the CPU pre-training aids (wellread.experiments.cpu_aids), all off by default")
    masked_lm_prob: float = field(0.15, gt=0, lt=1, help="fraction of tokens to predict")
    max_predictions_per_seq: int = field(20, ge=1, help="at most this many predictions per sequence")
    pool_batches: int = field(32, ge=1, help="sort this many batches' worth of sequences by length and shuffle the "
                                             "batches, so batches pad little (1: off)")
    eval_documents: int = field(200, ge=1, help="documents held out for evaluation (spread evenly through the corpus)")
    eval_batches: int = field(20, ge=1, help="held-out batches per evaluation (the same ones every time)")
    eval_batch_size: int = field(64, ge=1, help="sequences per evaluation batch")
    lr: float = same(TrainConfig, "lr", 1e-3, help="peak learning rate (AdamW); 1e-3 for Tiny/Mini/Small from "
                                                   "scratch, ~1e-4 for larger")
    batch_size: int = same(TrainConfig, "batch_size", 128, help="sequences per optimizer step, over all processes "
                                                                "and accumulation steps")
    warmup: float = same(TrainConfig, "warmup", 0.01, help="fraction of the steps spent warming the learning rate up "
                                                           "from 0 (BERT: 0.01)")
    eval_every: int | None = same(TrainConfig, "eval_every", 1000, help="evaluate every N steps")
    dropout: float | None = field(None, help="dropout while pre-training (hidden and attention); the saved "
                                             "model keeps the architecture's rate for fine-tuning")

    def __post_init__(self) -> None:
        super().__post_init__()
        self.aids.check(self.objective)
        if self.epochs is not None:
            raise WellreadError("pre-training data is endless; give --max-steps or --time-budget", field="epochs")

    @property
    def nsp(self) -> bool:
        return self.objective == "mlm+nsp"


def shard_batch(batch: dict[str, torch.Tensor], rank: int, world: int) -> dict[str, torch.Tensor]:
    """Process ``rank``'s rows of a batch, with its masked positions re-based to those rows."""
    if world == 1:
        return batch
    B, L = batch["input_ids"].shape
    share = B // world
    lo, hi = rank * share, (rank + 1) * share
    out = {k: batch[k][lo:hi] for k in ("input_ids", "token_type_ids", "attention_mask")}
    pos = batch["masked_positions"]
    keep = (pos >= lo * L) & (pos < hi * L)
    out["masked_positions"] = pos[keep] - lo * L
    out["masked_labels"] = batch["masked_labels"][keep]
    for k in ("next_sentence_label", "copy_length"):
        if k in batch:
            out[k] = batch[k][lo:hi]
    return out


class PretrainObjective:
    """MLM (+NSP) cross-entropy, summed and divided by the global masked-token (and sequence) counts."""

    def __init__(self, net, corpus: Corpus, tokenizer: Tokenizer, cfg: PretrainConfig,
                 run_dir: Path | None = None, *, sparse_last_layer: bool = True) -> None:
        self.model = SparsePretrainer(net, sparse_last_layer=sparse_last_layer)
        self.corpus, self.tokenizer, self.cfg = corpus, tokenizer, cfg
        self.nsp = cfg.nsp
        self.mask_id = corpus.special_ids[MASK]  # what the masking writes (wellread.data.pretraining)
        if not self.nsp:  # unused without NSP: frozen, so every trained parameter gets a gradient
            for p in list(net.cls.seq_relationship.parameters()) + list(net.bert.pooler.parameters()):
                p.requires_grad_(False)
        self.run_dir = run_dir
        self.scaffold = Scaffold(net.config, cfg.aids, cfg.max_seq_length) if cfg.aids.attention_scaffold else None
        self._eval_dataset(1)  # refuse bad eval settings (too few documents) before training starts

    def set_progress(self, progress: float) -> None:
        """Fade the attention scaffold: full strength at the start, none from ``attention_scaffold`` on."""
        if self.scaffold is not None:
            self.scaffold.set_progress(progress, next(self.model.parameters()).device)

    def dataset(self, batch_size: int, split: str = "train") -> PretrainingDataset:
        c = self.cfg
        return PretrainingDataset(
            self.corpus, batch_size=batch_size, split=split, eval_documents=c.eval_documents,
            max_seq_length=c.max_seq_length, nsp=self.nsp, masked_lm_prob=c.masked_lm_prob,
            max_predictions_per_seq=c.max_predictions_per_seq, whole_word=c.masking == "whole-word",
            tokenizer=self.tokenizer, seed=c.seed, pool_batches=c.pool_batches if split == "train" else 1,
            instances=training_instances(c.aids) if split == "train" else create_instances_from_document)

    def _eval_dataset(self, batch_size: int) -> PretrainingDataset:
        return self.dataset(batch_size, "eval")

    # --- data position ---------------------------------------------------------------------------

    def _index_key(self, micro_batch: int) -> str:
        c = self.cfg
        return config_fingerprint({"corpus": self.corpus.vocab_hash, "docs": self.corpus.num_documents,
                                   "tokens": self.corpus.num_tokens, "micro": micro_batch, "seed": c.seed,
                                   "eval_documents": c.eval_documents, "L": c.max_seq_length, "nsp": self.nsp,
                                   "pool": c.pool_batches})

    def _read_index(self, key: str) -> dict[int, dict[str, int]]:
        found: dict[int, dict[str, int]] = {}
        if self.run_dir is None or not (self.run_dir / INDEX).is_file():
            return found
        for line in (self.run_dir / INDEX).read_text(encoding="utf-8").splitlines():
            try:
                rec = json.loads(line)
                if rec["key"] == key:
                    found[int(rec["micro"])] = {k: int(v) for k, v in rec["state"].items()}
            except (ValueError, KeyError, TypeError, AttributeError):
                continue  # a line cut short by a kill
        return found

    def position(self, ds: PretrainingDataset, start: int, micro_batch: int) -> dict[str, int]:
        """The dataset state after ``start`` batches: the nearest recorded one, then advanced."""
        known = self._read_index(self._index_key(micro_batch))
        base = max((m for m in known if m <= start), default=0)
        state = known[base] if base else ds.state_dict()
        return ds.position_after(state, start - base)

    # --- the Objective protocol -----------------------------------------------------------------

    def micro_batches_per_epoch(self, micro_batch: int, world: int) -> None:
        return None

    def batches(self, epoch: int, start: int, micro_batch: int, rank: int, world: int) -> Iterator[dict]:
        ds = self.dataset(micro_batch)
        ds.load_state_dict(self.position(ds, start, micro_batch))
        key = self._index_key(micro_batch)
        write = self.run_dir is not None and rank == 0
        n = start
        for batch in ds:
            n += 1
            if write and n % INDEX_EVERY == 0:
                with open(self.run_dir / INDEX, "a", encoding="utf-8") as f:
                    f.write(json.dumps({"key": key, "micro": n, "state": ds.state_dict()}) + "\n")
            yield shard_batch(batch, rank, world)

    def counts(self, batch: dict) -> dict[str, float]:
        out = {"masked": float(len(batch["masked_labels"]))}
        if self.nsp:
            out["sequences"] = float(len(batch["input_ids"]))
        return out

    def tokens(self, batch: dict) -> int:
        return int(batch["attention_mask"].sum())

    def loss(self, model, batch: dict, totals: dict[str, float]):
        device = next(model.parameters()).device
        b = {k: v.to(device) for k, v in batch.items()}
        labels = b["masked_labels"]
        bias = self.scaffold.bias(b) if self.scaffold is not None else None
        mlm_sum, hits, nsp = model(b["input_ids"], b["token_type_ids"], b["attention_mask"],
                                   b["masked_positions"], labels, nsp=self.nsp, attention_bias=bias)
        loss = mlm_sum / max(totals["masked"], 1.0)
        # the rows shown [MASK] (80%): the rest show the answer itself (10%) or a random token (10%), so
        # copying the input already scores ~10 points of mlm_accuracy; accuracy here is what context buys
        at_mask = b["input_ids"].reshape(-1)[b["masked_positions"]] == self.mask_id
        stats = {"mlm_loss_sum": float(mlm_sum.detach()), "masked": float(len(labels)),
                 "masked_correct": float(hits.sum()), "at_mask": float(at_mask.sum()),
                 "at_mask_correct": float((hits & at_mask).sum())}
        if nsp is not None:
            nsp, nl = nsp.float(), b["next_sentence_label"]
            nsp_sum = F.cross_entropy(nsp, nl, reduction="sum")
            loss = loss + nsp_sum / totals["sequences"]
            stats |= {"nsp_loss_sum": float(nsp_sum.detach()), "sequences": float(len(nl)),
                      "nsp_correct": float((nsp.detach().argmax(-1) == nl).sum())}
        return loss, stats

    def summarize(self, sums: dict[str, float]) -> dict[str, float]:
        out = {}
        if sums.get("masked"):
            out["mlm_loss"] = sums["mlm_loss_sum"] / sums["masked"]
            out["mlm_accuracy"] = sums["masked_correct"] / sums["masked"]
        if sums.get("at_mask"):
            out["mlm_accuracy_at_mask"] = sums["at_mask_correct"] / sums["at_mask"]
        if sums.get("sequences"):
            out["nsp_loss"] = sums["nsp_loss_sum"] / sums["sequences"]
            out["nsp_accuracy"] = sums["nsp_correct"] / sums["sequences"]
        return out

    def evaluate(self, model) -> dict[str, float]:
        """MLM loss/accuracy (and NSP) on the first ``eval_batches`` held-out batches (fixed masks).

        Also the loss at the rows shown ``[MASK]`` with the context as it is and with each sequence's
        ordinary tokens shuffled within their segment (seeded, the same every evaluation):
        ``eval/word_order_nats``, their difference, is ~0 while the model reads its context as a bag of
        words (the plateau of a short run) and grows once it reads word order
        (benchmarks/word_order_probe.py, docs/pretraining.md).
        """
        sums: dict[str, float] = {}
        ds = self._eval_dataset(self.cfg.eval_batch_size)
        fixed = torch.tensor(sorted(self.corpus.special_ids.values()))
        device = next(model.parameters()).device
        with torch.no_grad():
            for i, batch in enumerate(ds):
                if i >= self.cfg.eval_batches:
                    break
                _, stats = self.loss(model, batch, self.counts(batch))
                pos, labels = batch["masked_positions"], batch["masked_labels"]
                at_mask = batch["input_ids"].reshape(-1)[pos] == self.mask_id
                shuffled = shuffle_context(batch["input_ids"], fixed, torch.Generator().manual_seed(i),
                                           batch["token_type_ids"])
                for key, ids in (("mask_loss_sum", batch["input_ids"]), ("mask_loss_shuffled_sum", shuffled)):
                    mlm_sum, _, _ = model(ids.to(device), batch["token_type_ids"].to(device),
                                          batch["attention_mask"].to(device), pos[at_mask].to(device),
                                          labels[at_mask].to(device), nsp=False)
                    stats[key] = float(mlm_sum)
                for k, v in stats.items():
                    sums[k] = sums.get(k, 0.0) + v
        out = self.summarize(sums)
        if sums.get("at_mask"):
            out["mlm_loss_at_mask"] = sums["mask_loss_sum"] / sums["at_mask"]
            out["word_order_nats"] = (sums["mask_loss_shuffled_sum"] - sums["mask_loss_sum"]) / sums["at_mask"]
        return {f"eval/{k}": v for k, v in out.items()}


def _training_dropout(net: torch.nn.Module, p: float | None) -> torch.nn.Module:
    """Set every dropout of ``net`` (hidden and attention probabilities) to ``p`` for this training run
    only: the config keeps the architecture's rate, so the saved model fine-tunes with it (as Cramming
    pre-trains without dropout and fine-tunes with 0.1)."""
    if p is not None:
        for m in net.modules():
            if isinstance(m, torch.nn.Dropout):
                m.p = p
    return net


def random_start(cfg: PretrainConfig) -> bool:
    """Whether the run starts from random weights (a miniature's name, not a model directory)."""
    return not Path(cfg.model).expanduser().is_dir() and zoo.is_known(cfg.model)


def build_model(cfg: PretrainConfig):
    """(BertForPreTraining, tokenizer, description of the source)."""
    path = Path(cfg.model).expanduser()
    if random_start(cfg):
        tok = load_tokenizer(cfg.vocab or STANDARD_VOCAB)
        net = init_model(cfg.model, tok, seed=cfg.seed)
        return _training_dropout(net, cfg.dropout), tok, f"random {zoo.get(cfg.model).name}"
    if cfg.vocab is not None:
        raise WellreadError("--vocab is for a random start; a model directory brings its own vocabulary", field="vocab")
    cfg.aids.check_continued()
    if not path.is_dir():
        path = hub.resolve_model(cfg.model)
    net = _training_dropout(load_model(path, "pretraining"), cfg.dropout)
    tok = load_tokenizer(path)
    check_vocabulary(tok, net.config.vocab_size, path)
    return net, tok, str(path)


def pretrain(cfg: PretrainConfig) -> dict:
    """Pre-train, evaluate on held-out documents, save the model; returns results.json's content."""
    settings = to_dict(cfg) | {k: None for k in (*NOT_RESULT_SETTINGS, "overwrite", "out", "time_budget")}

    def prepare() -> Prepared:
        net, tok, source = build_model(cfg)
        corpus = load_corpus(cfg.data, expect_vocab_hash=vocab_hash(tok))
        if corpus.vocab_size != net.config.vocab_size:
            raise WellreadError(f"the shards' vocabulary has {corpus.vocab_size} tokens, the model "
                                f"{net.config.vocab_size}", file=corpus.manifest.path)
        if random_start(cfg):
            start_random_model(net, cfg.aids, corpus, cfg.eval_documents)
        objective = PretrainObjective(net, corpus, tok, cfg, run_dir=Path(cfg.out))

        @contextlib.contextmanager
        def during():
            try:
                with fast_cpu_dropout(net, attention=objective.scaffold is not None):
                    if objective.scaffold is not None and not hasattr(net.config, "_wellread_attention"):
                        raise WellreadError(f"needs the model's attention to be eager or sdpa, not "
                                            f"{net.config._attn_implementation!r}", field="attention_scaffold")
                    yield
            finally:
                objective.model.scratch.clear()  # the loss's logits array (~300 MB at batch 128) is not kept

        def save(path: Path) -> None:
            trained = objective.model.net.cpu()
            for p in trained.parameters():
                p.requires_grad_(True)
            save_model(trained, tok, path)

        def results(result, wall: float) -> dict:
            s = result.state
            return {"model": source, "objective": cfg.objective, "steps": s.step, "stopped_by": result.stopped_by,
                    "eval": result.final_eval, "history": list(result.history), "tokens": s.tokens,
                    "sequences": s.step * cfg.batch_size, "train_seconds": s.elapsed, "wall_seconds": wall,
                    "tokens_per_s": s.tokens / max(s.elapsed, 1e-9)}

        return Prepared(objective, {"settings": settings, "corpus": corpus.vocab_hash,
                                    "documents": corpus.num_documents, "tokens": corpus.num_tokens},
                        save=save, results=results, during=during)

    # curves.png is the command's (wellread.report.plots.draw_curves, once the run is done): training draws nothing
    return run(cfg, settings, prepare, own=frozenset({INDEX, CURVES, CURVES + ".tmp.png"}))


__all__ = ["PretrainConfig", "PretrainObjective", "pretrain", "build_model", "shard_batch"]
