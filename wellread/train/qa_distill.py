"""Pre-trained Distillation for extractive QA: a teacher's start/end distributions into a student.

The transfer set is the training questions (the by-article training split, or the official training
file) plus any unlabelled (question, context) pairs the user gives (``--transfer`` .jsonl files with
``question`` and ``context`` fields). Both are cut into Google's windows with the student's settings;
the teacher predicts start and end logits for every token of every window ONCE, cached on disk under
a hash of the teacher's weights and the windows' token ids, so every student and grid cell reuses them.

Teacher and student must share the vocabulary (the windows are then the same token sequences, and
the two distributions are over the same positions); all-MiniLM-L6-v2 and the 24 miniatures use
BERT's uncased vocabulary. The loss, per window, with padding masked out::

    (1 - alpha) * T² * [KL(softmax(t_start/T) || softmax(s_start/T)) + KL(softmax(t_end/T) || softmax(s_end/T))] / 2
    + alpha * [CE(s_start, start) + CE(s_end, end)] / 2     (windows of labelled questions only)
"""

from __future__ import annotations

import hashlib
import io
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from wellread.config import carry
from wellread.data import squad
from wellread.errors import WellreadError
from wellread.hub import cache_dir, sha256_file
from wellread.infer.qa import load_qa_model, predict_spans, write_predictions
from wellread.io import atomic_write_bytes, model_directory, open_text
from wellread.modeling.dropout import fast_cpu_dropout
from wellread.modeling.models import save_model
from wellread.tokenization import PAD, load_tokenizer, vocab_hash
from wellread.train.finetune import FinetuneConfig, after_distillation, run_settings
from wellread.train.loop import inference_bf16
from wellread.train.qa import PREDICTION_FILES, QAObjective, build_qa_model, finetune_qa, qa_data, span_loss
from wellread.train.run import Prepared, distillation_run, epoch_summary, timing


def read_qa_transfer(path: Path) -> list[squad.QAExample]:
    """Unlabelled (question, context) pairs from a .jsonl file; a bad line is one error naming it."""
    path = Path(path)
    if not path.is_file():
        raise WellreadError("no such transfer file", file=path)
    out = []
    with open_text(path) as f:  # .jsonl or .jsonl.gz, strict UTF-8 (a bad byte names its line)
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except ValueError as e:
                raise WellreadError(f"not JSON ({e})", file=path, line=n) from None
            for key in ("question", "context"):
                if not isinstance(row, dict) or not isinstance(row.get(key), str) or not row[key].strip():
                    raise WellreadError(f"no {key} (expected question and context strings)", file=path, line=n,
                                        field=key)
            out.append(squad.QAExample(f"{path.name}:{n}", row["question"].strip(), row["context"], (), False, -1))
    return out


def qa_distillation_loss(s_start: torch.Tensor, s_end: torch.Tensor, t_start: torch.Tensor, t_end: torch.Tensor,
                         attention_mask: torch.Tensor, *, temperature: float = 1.0) -> torch.Tensor:
    """Per-window T² · (KL(start) + KL(end)) / 2 between the teacher's and the student's softened distributions."""
    pad = attention_mask == 0
    t = temperature

    def kl(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
        log_s = F.log_softmax(student.float().masked_fill(pad, float("-inf")) / t, dim=-1)
        log_t = F.log_softmax(teacher.float().masked_fill(pad, float("-inf")) / t, dim=-1)
        terms = log_t.exp() * (log_t - log_s)
        return terms.masked_fill(pad, 0.0).sum(-1)

    return (kl(s_start, t_start) + kl(s_end, t_end)) / 2 * (t * t)


def teacher_spans(teacher: str | Path, qf: squad.QAFeatures, *, cache: Path | None = None, bf16: bool = False,
                  quiet: bool = False) -> tuple[np.ndarray, np.ndarray, Path, bool]:
    """The teacher's (start, end) logits for every token of ``qf``, from the cache or computed once and cached."""
    path = model_directory(teacher)
    h = hashlib.sha256(f"{sha256_file(path / 'config.json')}|{sha256_file(path / 'model.safetensors')}".encode())
    for arr in (qf.feats.ids, qf.feats.type_ids, qf.feats.offsets):
        h.update(np.ascontiguousarray(arr).tobytes())
    file = (Path(cache) if cache is not None else cache_dir() / "qa-teacher-logits") / f"{h.hexdigest()[:24]}.npz"
    if file.is_file():
        try:
            with np.load(file) as z:
                return z["start"], z["end"], file, True
        except (OSError, ValueError, KeyError):
            pass  # a damaged cache file is recomputed
    if not quiet:
        print(f"the teacher predicts {len(qf):,} windows (cached in {file})", file=sys.stderr)
    model = load_qa_model(path)
    start, end = predict_spans(model, qf, pad_id=load_tokenizer(path).token_to_id(PAD), max_tokens=4096, bf16=bf16)
    buf = io.BytesIO()
    np.savez(buf, start=start, end=end)
    atomic_write_bytes(file, buf.getvalue())
    return start, end, file, False


class QADistillObjective(QAObjective):
    """Train on the teacher's start/end logits over the transfer windows; evaluate like fine-tuning."""

    def __init__(self, *args, teacher_start: np.ndarray, teacher_end: np.ndarray, labelled: np.ndarray,
                 temperature: float, alpha: float, **kw) -> None:
        super().__init__(*args, **kw)
        self.teacher_start, self.teacher_end = teacher_start, teacher_end
        self.labelled = labelled  # bool per window: its question has gold positions
        self.temperature, self.alpha = temperature, alpha

    def _teacher(self, part: np.ndarray, width: int) -> tuple[torch.Tensor, torch.Tensor]:
        s = np.zeros((len(part), width), np.float32)
        e = np.zeros((len(part), width), np.float32)
        for row, i in enumerate(part):
            a, b = self.train.feats.offsets[i], self.train.feats.offsets[i + 1]
            s[row, :b - a], e[row, :b - a] = self.teacher_start[a:b], self.teacher_end[a:b]
        return torch.from_numpy(s), torch.from_numpy(e)

    def loss(self, model, batch: dict, totals: dict[str, float]):
        device = next(model.parameters()).device
        inputs = {k: batch[k].to(device) for k in ("input_ids", "token_type_ids", "attention_mask")}
        out = model(**inputs)
        part = batch["index"]
        t_s, t_e = (x.to(device) for x in self._teacher(part, inputs["input_ids"].shape[1]))
        per = (1 - self.alpha) * qa_distillation_loss(out.start_logits, out.end_logits, t_s, t_e,
                                                      inputs["attention_mask"], temperature=self.temperature)
        loss_sum = per.sum()
        if self.alpha:
            has = torch.from_numpy(self.labelled[part]).to(device)
            if has.any():
                m = inputs["attention_mask"][has]
                loss_sum = loss_sum + self.alpha * span_loss(out.start_logits[has], out.end_logits[has], m,
                                                             batch["start_positions"].to(device)[has],
                                                             batch["end_positions"].to(device)[has])
        agree = ((out.start_logits.argmax(-1) == t_s.argmax(-1)) & (out.end_logits.argmax(-1) == t_e.argmax(-1))).sum()
        return loss_sum / totals["examples"], {"agree": float(agree), "n": float(len(part))}

    def summarize(self, sums: dict[str, float]) -> dict[str, float]:
        return {"teacher_agreement": sums["agree"] / sums["n"]} if sums.get("n") else {}


def _finetune_config(cfg):
    """The student as ``finetune`` builds it (and the split and windows it uses)."""
    return carry(FinetuneConfig, cfg, model=cfg.student)


def _transfer_windows(cfg) -> dict:
    """The student (model, tokenizer), the transfer questions cut into its windows, and the held-out questions."""
    student_cfg = _finetune_config(cfg)
    train_ex, test_ex, _, split = qa_data(student_cfg, cfg.task, quiet=cfg.quiet)
    transfer = list(train_ex) if cfg.transfer_from_task else []
    sources = {"training questions": len(transfer)} if transfer else {}
    for path in cfg.pd.transfer:
        extra = read_qa_transfer(path)
        transfer += extra
        sources[str(path)] = len(extra)
    if not transfer:
        raise WellreadError("the transfer set is empty", field="transfer")
    model, tok, source = build_qa_model(student_cfg, cfg.task)
    teacher_path = model_directory(cfg.teacher) if Path(cfg.teacher).exists() else Path(cfg.teacher)
    if vocab_hash(load_tokenizer(teacher_path)) != vocab_hash(tok):
        raise WellreadError("the teacher's vocabulary differs from the student's; QA distillation needs one "
                            "vocabulary (the windows must be the same tokens)", field="teacher")
    windows = cfg.qa.windows(model.config.max_position_embeddings)
    return {"transfer": transfer, "sources": sources, "split": split, "test_ex": test_ex, "model": model, "tok": tok,
            "source": source, "windows": windows,
            "train_f": squad.preprocess(tok, transfer, training=True, **windows)}


def prepare_qa_labels(cfg) -> dict:
    """Have the teacher label the transfer windows, or read its cache: what a grid does once per task."""
    t0 = time.perf_counter()
    d = _transfer_windows(cfg)
    bf16 = bool(cfg.bf16) if cfg.bf16 is not None else torch.cuda.is_available()
    _, _, file, reused = teacher_spans(cfg.teacher, d["train_f"], cache=cfg.cache, bf16=bf16, quiet=cfg.quiet)
    return {"cache": str(file), "examples": len(d["train_f"]), "seconds": time.perf_counter() - t0,
            "shards_computed": int(not reused), "shards_reused": int(reused)}


def distill_qa(cfg, settings: dict) -> dict:
    """``wellread distill --task squad|squad_v2`` (``cfg`` a DistillConfig, ``settings`` what defines the run):
    results.json's content (RUN/model, predictions files). Stage 2 (distillation) is a run of its own
    (``wellread.train.run``) whose results are ``distill.json``; stage 3 fine-tunes in ``RUN/finetune``."""
    task, v2 = cfg.task, cfg.task == "squad_v2"
    bf16 = inference_bf16(cfg.bf16)

    def prepare() -> Prepared:
        d = _transfer_windows(cfg)
        transfer, train_f, test_ex, model, tok = d["transfer"], d["train_f"], d["test_ex"], d["model"], d["tok"]
        test_f = squad.preprocess(tok, test_ex, **d["windows"])
        t0 = time.perf_counter()
        t_start, t_end, cache_file, reused = teacher_spans(cfg.teacher, train_f, cache=cfg.cache, bf16=bf16,
                                                           quiet=cfg.quiet)
        label_seconds = time.perf_counter() - t0
        labelled = np.asarray([transfer[e].article >= 0 and not transfer[e].is_impossible for e in train_f.example])
        objective = QADistillObjective(model, train_f, test_ex, test_f, v2=v2, seed=cfg.seed,
                                       pad_id=tok.token_to_id(PAD), bf16=bf16, teacher_start=t_start,
                                       teacher_end=t_end, labelled=labelled, temperature=cfg.pd.temperature,
                                       alpha=cfg.pd.alpha)
        final: dict = {}

        def results(result, wall: float) -> dict:
            final.update(result.final_eval)
            return {"task": task, "model": d["source"], "teacher": str(cfg.teacher), "split": d["split"],
                    "transfer_examples": len(transfer), "transfer_windows": len(train_f),
                    "transfer_sources": d["sources"], "teacher_cache": str(cache_file), "teacher_cache_reused": reused,
                    "teacher_label_seconds": label_seconds, "test_questions": len(test_ex),
                    "epochs_done": result.state.epoch, "dev": dict(result.final_eval),
                    **epoch_summary(result, "test/f1"), **timing(result, wall, cfg.batch_size)}

        def save(path: Path) -> None:
            trained = objective.model.cpu()
            if objective.last_predictions is None:
                objective.evaluate(trained)
            if v2:
                trained.config.null_score_diff_threshold = float(final.get("test/best_f1_thresh", 0.0))
            trained.config.squad_windows = d["windows"]
            save_model(trained, tok, path)
            write_predictions(path.parent / "predictions.json", objective.last_predictions, v2=v2)

        return Prepared(objective, {"settings": settings, "transfer_windows": len(train_f),
                                    "teacher_cache": cache_file.name},
                        save=save, results=results, during=lambda: fast_cpu_dropout(model), eval_each_epoch=True)

    def stage3() -> dict:
        config = after_distillation(cfg)
        return finetune_qa(config, run_settings(config))

    stage2_settings = settings | {"then_finetune": None, "finetune_epochs": None, "finetune_lr": None}  # stage 3's do not change it
    return distillation_run(cfg, settings, stage2_settings, prepare, own=frozenset(PREDICTION_FILES),
                            stage3=stage3 if cfg.then_finetune else None)
