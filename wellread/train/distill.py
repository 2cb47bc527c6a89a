"""Pre-trained Distillation (Turc et al., 2019): a teacher's soft labels into a compact student.

The method: (1) pre-train the compact student with MLM (``wellread pretrain``); (2) train it on the
teacher's predictions over a large unlabelled *transfer set* from the task's domain (this module);
(3) optionally fine-tune it on the labelled data (``then_finetune``).

The teacher labels the transfer set ONCE: its logits are cached on disk in shards under a hash of
the teacher's weights, the transfer texts and the teacher's max length, so every student and every
grid cell reuses them, and a killed labelling resumes without recomputing finished shards. Teacher
and student tokenise the text each with their own vocabulary, so they may differ in size, depth and
vocabulary. The loss is the KL divergence between the temperature-softened distributions (times T²,
as Hinton et al.; T = 1 by default, as the paper), optionally mixed with the hard labels where the
transfer example has one (``alpha``); for regression (STS-B) the squared error to the teacher's score.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from filelock import FileLock, Timeout
from tokenizers import Tokenizer
from tqdm import tqdm

from wellread.config import carry, configclass, field, group, same, to_dict
from wellread.data.batching import Features, Inputs, cached_encode
from wellread.data.own_task import data_settings, task_file_of
from wellread.data.squad import QASettings, is_qa_task
from wellread.data.task_files import read_split
from wellread.data.tasks import TaskSpec, get_task
from wellread.errors import WellreadError
from wellread.eval.predict import predict_logits
from wellread.hub import cache_dir, resolve_model, sha256_file
from wellread.io import atomic_write_bytes, atomic_write_json, model_directory, open_text
from wellread.modeling.dropout import fast_cpu_dropout
from wellread.modeling.models import load_classifier, read_config, save_model
from wellread.tokenization import PAD, UNK, load_tokenizer
from wellread.train.finetune import (
    ClassificationObjective,
    FinetuneConfig,
    LabelledSet,
    RandomInit,
    after_distillation,
    build_model,
    finetune,
    load_labelled,
)
from wellread.train.loop import NOT_RESULT_SETTINGS, TrainConfig, inference_bf16
from wellread.train.qa_distill import distill_qa  # the QA modules load only for a QA task
from wellread.train.run import Prepared, distillation_run, epoch_summary, remove_temporaries, timing

SHARD_SIZE = 4096  # transfer examples per cached logits shard
MAX_UNK_RATE = 0.05  # a vocabulary that maps more of the text than this to [UNK] cannot encode it


@configclass
class PDSettings:
    """Pre-trained Distillation's transfer set and loss: the ``pd`` group of distill, grid (--objective distill)
    and recipe."""

    transfer: list[Path] = field(default_factory=list, help="unlabelled transfer text: .txt/.tsv/.gz (one input a "
                                 "line; a tab separates a pair) or .jsonl (text, or text_a/text_b)")
    augment: int = field(0, ge=0, help="add N derived inputs per training example: word spans of a sentence; for "
                                       "pairs the swapped pair and the first text with another example's second")
    temperature: float = field(1.0, gt=0, help="softmax temperature of teacher and student (the paper: 1)")
    alpha: float = field(0.0, ge=0, le=1, help="weight of the hard-label loss on transfer examples that have a "
                                               "label (0: soft only, as PD)")


@configclass
class DistillConfig(TrainConfig):
    teacher: str = field(help="the teacher: a sequence-classification model directory (HF layout) trained for the task")
    student: str = field(help="the student: a pre-trained model directory, or one of the 24 names with --random-init")
    task: str = same(FinetuneConfig, "task", help="GLUE task: cola, sst2, mrpc, stsb, qqp, mnli, qnli, rte, wnli; "
                     "squad or squad_v2 (the teacher's start/end logits per window); or a task file (tickets.yaml: "
                     "your own data, see docs/own-task.md)")
    data_dir: Path | None = same(FinetuneConfig, "data_dir")
    out: Path = same(FinetuneConfig, "out", help="the run directory (model/, results.json, metrics.jsonl; "
                                                 "finetune/ with --then-finetune)")
    pd: PDSettings = group(PDSettings, help="the transfer set and the loss")
    transfer_from_task: bool = field(True, help="add the task's training inputs (labels kept only for --alpha)")
    then_finetune: bool = field(False, help="stage 3: fine-tune the distilled student on the labelled data")
    finetune_epochs: float | None = same(TrainConfig, "epochs", help="epochs of stage 3 (default: --epochs)")
    finetune_lr: float | None = field(None, gt=0, help="stage 3's peak learning rate (default: --lr); a distilled "
                                                       "student is near a good solution, and a gentler rate keeps it")
    cache: Path | None = field(None, help="the teacher-logits cache directory (default: a hashed folder in the "
                                          "wellread cache, shared by every run with the same teacher and transfer set)")
    teacher_max_length: int | None = same(Inputs, "max_length", None, help="the teacher's max length (default: "
                                                                            "--max-length)")
    epochs: float | None = same(TrainConfig, "epochs", 4.0, help="passes over the transfer set")
    inputs: Inputs = group(Inputs, help="how inputs are cut (--max-length)")
    init: RandomInit = group(RandomInit, help="a random start of the student (--random-init, --vocab)")
    dropout: float | None = same(FinetuneConfig, "dropout", help="override the student's dropout (hidden and attention)")
    qa: QASettings = group(QASettings, help="extractive QA (squad, squad_v2): the student's windows and the split "
                                           "by article, as in finetune")

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.pd.transfer and not self.transfer_from_task:
            raise WellreadError("no transfer data: give --transfer FILES or keep --transfer-from-task", field="transfer")
        check_stage3(self)


def check_stage3(cfg) -> None:
    """Refuse stage 3's own settings without stage 3 (a distill run, or a grid handing them to its cells)."""
    if cfg.finetune_lr is not None and not cfg.then_finetune:
        raise WellreadError("--finetune-lr is stage 3's learning rate: it needs --then-finetune", field="finetune_lr")


# --- the transfer set ----------------------------------------------------------------------------

@dataclasses.dataclass
class TransferSet:
    """Inputs to label: text_a, text_b (None for single-sentence tasks), and gold label ids (-1: none)."""

    texts_a: list[str]
    texts_b: list[str | None]
    gold: np.ndarray  # int64 label ids, or float32 scores with NaN for none
    sources: dict[str, int]  # where the inputs came from, and how many
    files: dict[str, dict[str, int]] = dataclasses.field(default_factory=dict)  # file -> lines read, skipped, inputs

    def __len__(self) -> int:
        return len(self.texts_a)

    def content_hash(self) -> str:
        h = hashlib.sha256()
        for a, b in zip(self.texts_a, self.texts_b):
            h.update(a.encode("utf-8", "replace") + b"\x00" + (b.encode("utf-8", "replace") if b is not None else b"\x01")
                     + b"\x02")
        return h.hexdigest()


def read_transfer_file(path: Path, pairs: bool, fields: tuple[str, str | None] | None = None,
                       counts: dict[str, int] | None = None) -> Iterator[tuple[str, str | None]]:
    """(text_a, text_b) from a transfer file, streamed; a malformed line is one error naming file, line and field.

    JSON lines take ``fields`` (a task file's text / text_pair names) first, then text or text_a/text_b.
    ``counts`` receives the lines ``read``, the blank lines ``skipped`` and the ``inputs`` given.
    """
    path = Path(path)
    counts = counts if counts is not None else {}
    counts.update(read=0, skipped=0, inputs=0)
    fa, fb = fields or (None, None)
    if not path.is_file():
        raise WellreadError("no such transfer file", file=path)
    name = path.name[:-3] if path.name.endswith(".gz") else path.name
    is_json = name.endswith(".jsonl") or name.endswith(".json")
    try:
        with open_text(path) as f:  # strict UTF-8: a bad byte names its line
            for lineno, line in enumerate(f, 1):
                counts["read"] += 1
                line = line.rstrip("\n").rstrip("\r")
                if not line.strip():
                    counts["skipped"] += 1
                    continue
                if is_json:
                    try:
                        row = json.loads(line)
                    except ValueError as e:
                        raise WellreadError(f"not JSON ({e.msg})", file=path, line=lineno) from None
                    if not isinstance(row, dict):
                        raise WellreadError("expected a JSON object", file=path, line=lineno)
                    a = row[fa] if fa in row else row.get("text_a", row.get("sentence1", row.get("text",
                                                                                                   row.get("sentence"))))
                    b = row[fb] if fb in row else row.get("text_b", row.get("sentence2"))
                    if not isinstance(a, str) or not a.strip():
                        raise WellreadError("no text (expected text, or text_a/text_b)", file=path, line=lineno,
                                            field="text")
                else:
                    parts = line.split("\t")
                    if len(parts) > 2:
                        raise WellreadError(f"{len(parts)} tab-separated fields; expected 1, or 2 for a pair",
                                            file=path, line=lineno)
                    a, b = parts[0], (parts[1] if len(parts) == 2 else None)
                if pairs and (not isinstance(b, str) or not b.strip()):
                    raise WellreadError("the task takes sentence pairs but this line has one text", file=path,
                                        line=lineno, field="text_b")
                if not pairs and b is not None:
                    raise WellreadError("the task takes single sentences but this line has a pair", file=path,
                                        line=lineno, field="text_b")
                counts["inputs"] += 1
                yield a, b
    except OSError as e:
        raise WellreadError(f"cannot read: {e}", file=path) from None


def _derived(spec: TaskSpec, a_list: Sequence[str], b_list: Sequence[str | None], n: int,
             seed: int = 0) -> tuple[list[str], list[str | None]]:
    """``n`` derived inputs per example, fixed by ``seed`` (not the run's seed: every student shares them).

    Single sentences: a random span of at least 3 and at most all-but-one of its words (SST itself
    labels phrases). Pairs: the pair swapped, then the first text with a random other example's second.
    """
    rng = np.random.default_rng([seed, 20191023])
    out_a: list[str] = []
    out_b: list[str | None] = []
    pairs = any(b is not None for b in b_list)
    m = len(a_list)
    for k in range(n):
        for i in range(m):
            a, b = a_list[i], b_list[i]
            if pairs and b is not None:
                if k == 0:
                    out_a.append(b)
                    out_b.append(a)
                else:
                    j = int(rng.integers(m - 1)) if m > 1 else 0
                    j += j >= i and m > 1
                    out_a.append(a)
                    out_b.append(b_list[j])
            else:
                words = a.split()
                if len(words) < 4:
                    continue
                length = int(rng.integers(3, len(words)))
                start = int(rng.integers(0, len(words) - length + 1))
                out_a.append(" ".join(words[start:start + length]))
                out_b.append(None)
    return out_a, out_b


def build_transfer(cfg: DistillConfig, spec: TaskSpec) -> TransferSet:
    """The transfer set: the task's training inputs (with their labels), derived inputs, then the files."""
    texts_a: list[str] = []
    texts_b: list[str | None] = []
    gold: list = []
    sources: dict[str, int] = {}
    none = float("nan") if spec.is_regression else -1
    train = read_split(spec, cfg.data_dir, "train")
    pairs = any(e.text_b is not None for e in train.examples[:100])
    if cfg.transfer_from_task:
        ex = train.examples
        texts_a += [e.text_a for e in ex]
        texts_b += [e.text_b for e in ex]
        gold += [(e.label if spec.is_regression else spec.label2id[e.label]) for e in ex]
        sources[f"{spec.name} train inputs ({train.path})"] = len(ex)
    if cfg.pd.augment:
        ex = train.examples
        da, db = _derived(spec, [e.text_a for e in ex], [e.text_b for e in ex], cfg.pd.augment)
        texts_a += da
        texts_b += db
        gold += [none] * len(da)
        sources[f"derived from {spec.name} train ({cfg.pd.augment} per example)"] = len(da)
    files: dict[str, dict[str, int]] = {}
    own = getattr(spec.source, "spec_file", None)  # a task file: its JSON field names
    for path in cfg.pd.transfer:
        n0 = len(texts_a)
        counts: dict[str, int] = {}
        for a, b in read_transfer_file(path, pairs, (own.text, own.text_pair) if own else None, counts):
            texts_a.append(a)
            texts_b.append(b)
            gold.append(none)
        sources[str(path)] = len(texts_a) - n0
        files[str(path)] = counts
        if not counts["inputs"]:
            raise WellreadError("no inputs in this transfer file", file=path)
    if not texts_a:
        raise WellreadError("the transfer set is empty", field="transfer")
    dtype = np.float32 if spec.is_regression else np.int64
    return TransferSet(texts_a, texts_b, np.asarray(gold, dtype=dtype), sources, files)


def check_unk_rate(tok: Tokenizer, feats: Features, who: str, texts: Sequence[str]) -> float:
    """Refuse a vocabulary that maps more than MAX_UNK_RATE of the text's tokens to [UNK]."""
    unk = tok.token_to_id(UNK)
    specials = {tok.token_to_id(t) for t in ("[CLS]", "[SEP]", "[PAD]")} - {None}
    body = ~np.isin(feats.ids, list(specials))
    n = int(body.sum())
    rate = float((feats.ids[body] == unk).sum()) / max(n, 1)
    if rate > MAX_UNK_RATE:
        rows = np.flatnonzero([(feats.ids[feats.offsets[i]:feats.offsets[i + 1]] == unk).any()
                               for i in range(min(len(feats), 1000))])
        example = texts[int(rows[0])][:60] if len(rows) else ""
        raise WellreadError(f"the {who}'s vocabulary cannot encode the transfer text: {100 * rate:.1f}% of its tokens "
                            f"become [UNK] (e.g. in {example!r}); use a {who} with a vocabulary for this text",
                            field=who)
    return rate


# --- the teacher's labels, cached -----------------------------------------------------------------

def teacher_fingerprint(path: Path) -> str:
    """A hash of the teacher's weights and config (what its predictions depend on)."""
    path = Path(path)
    weights = path / "model.safetensors"
    if not weights.is_file():
        raise WellreadError("the teacher has no model.safetensors", file=path)
    return hashlib.sha256((sha256_file(path / "config.json") + sha256_file(weights)).encode()).hexdigest()


def teacher_directory(path: str | Path, spec: TaskSpec) -> tuple[Path, int]:
    """(model directory, number of outputs) of a teacher whose config predicts exactly this task's labels.

    Reads config.json only: a grid cell whose labels are all cached never loads the teacher's weights.
    """
    path = model_directory(path) if Path(path).is_dir() else Path(path)
    if not path.is_dir():
        path = resolve_model(str(path))
    cfg = read_config(path)
    labels = [str(cfg.id2label[i]) for i in sorted(cfg.id2label)] if getattr(cfg, "id2label", None) else []
    if spec.is_regression:
        ok = cfg.num_labels == 1 and getattr(cfg, "problem_type", None) in (None, "regression")
    else:
        ok = labels == list(spec.labels)
    if not ok:
        want = "one score (regression)" if spec.is_regression else ", ".join(spec.labels)
        raise WellreadError(f"the teacher predicts {', '.join(labels) or cfg.num_labels} but {spec.name} needs {want}; "
                            f"fine-tune a teacher on {spec.name} first (wellread finetune)", file=path, field="teacher")
    return Path(path), int(cfg.num_labels)


@dataclasses.dataclass
class TeacherLabels:
    logits: np.ndarray  # (n, num_labels) float32
    cache: Path
    computed_shards: int
    reused_shards: int
    seconds: float


def label_transfer(teacher_path: str | Path, spec: TaskSpec, transfer: TransferSet, *, max_length: int = 128,
                   cache: Path | None = None, quiet: bool = False, bf16: bool = False) -> TeacherLabels:
    """The teacher's logits on every transfer input, from the cache where present, computed and cached otherwise.

    The cache directory holds ``manifest.json`` (the teacher's fingerprint, the transfer set's hash,
    the max length) and ``logits-NNNNN.npy`` shards of SHARD_SIZE rows, each written atomically, so a
    killed labelling resumes at the first missing shard. A cache of another teacher or transfer set is
    refused. One process labels a cache at a time (``cache_lock``): a second waits, then reads the shards.
    """
    path, num_labels = teacher_directory(teacher_path, spec)
    key = {"teacher": teacher_fingerprint(path), "transfer": transfer.content_hash(), "max_length": max_length,
           "examples": len(transfer), "shard_size": SHARD_SIZE, "num_labels": num_labels}
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:20]
    cache = Path(cache) if cache is not None else cache_dir() / "teacher-logits" / digest
    lock = cache_lock(cache)
    try:
        lock.acquire(timeout=0)
    except Timeout:
        wait_for_labeller(lock, cache, quiet)
    try:
        return _label(path, spec, transfer, key, cache, max_length, quiet, bf16)
    finally:
        lock.release()


def cache_lock(cache: Path) -> FileLock:
    """The lock one labelling of ``cache`` holds, across processes (in wellread's cache, else beside ``cache``).

    Two runs labelling the same transfer set at once (seeds side by side, grid workers) used to meet in the cache:
    the second removed the first's in-flight temporaries as a killed run's, and the first failed on its rename.
    Now the second waits, then reuses the first's shards."""
    name = hashlib.sha256(str(cache.resolve()).encode()).hexdigest()[:20] + ".lock"
    for folder in (cache_dir() / "locks", cache.resolve().parent):
        try:
            folder.mkdir(parents=True, exist_ok=True)
            return FileLock(folder / name)
        except OSError:
            continue
    raise WellreadError("no writable place for the teacher-logits cache's lock", file=cache)


def wait_for_labeller(lock: FileLock, cache: Path, quiet: bool) -> None:
    """Wait while another process labels into ``cache``."""
    if not quiet:
        print(f"another process is labelling the same transfer set into {cache}; waiting for it", file=sys.stderr)
    lock.acquire()


def _label(path: Path, spec: TaskSpec, transfer: TransferSet, key: dict, cache: Path, max_length: int, quiet: bool,
           bf16: bool) -> TeacherLabels:
    """``label_transfer`` with ``cache``'s lock held."""
    model = tok = None  # loaded only when a shard is missing
    manifest_path = cache / "manifest.json"
    remove_temporaries(cache, lambda name: name == "manifest.json" or name.startswith("logits-"))  # a killed run's
    if manifest_path.is_file():
        try:
            old = json.loads(manifest_path.read_text(encoding="utf-8"))
        except ValueError:
            raise WellreadError("damaged manifest.json; delete the cache directory", file=manifest_path) from None
        for k in ("teacher", "transfer", "max_length", "examples", "shard_size", "num_labels"):
            if old.get(k) != key[k]:
                what = {"teacher": "another teacher", "transfer": "another transfer set"}.get(k, f"another {k}")
                raise WellreadError(f"this cache was made by {what} (its {k} hash differs); give another --cache "
                                    f"or delete it", file=manifest_path, field=k)
    elif cache.exists() and any(cache.iterdir()):
        raise WellreadError("the cache directory exists and holds no manifest.json; give an empty or new one",
                            file=cache)
    else:
        cache.mkdir(parents=True, exist_ok=True)
        atomic_write_json(manifest_path, key | {"teacher_path": str(path), "task": spec.name,
                                                "sources": transfer.sources})
    n = len(transfer)
    n_shards = (n + SHARD_SIZE - 1) // SHARD_SIZE
    shards: list[np.ndarray] = []
    computed = reused = 0
    t0 = time.perf_counter()

    with tqdm(total=n, desc="teacher labels", unit="ex", disable=quiet, file=sys.stderr) as bar:
        for s in range(n_shards):
            lo, hi = s * SHARD_SIZE, min(n, (s + 1) * SHARD_SIZE)
            shard_path = cache / f"logits-{s:05d}.npy"
            arr = None
            if shard_path.is_file():
                try:
                    arr = np.load(shard_path)
                except (OSError, ValueError):
                    arr = None  # a damaged shard is recomputed
                if arr is not None and arr.shape != (hi - lo, key["num_labels"]):
                    arr = None
            if arr is None:
                if model is None:
                    model, tok = load_classifier(path), load_tokenizer(path)
                    feats = _encode_checked(tok, transfer, max_length, "teacher")
                arr = _predict_range(model, feats, lo, hi, tok.token_to_id(PAD), bf16)

                buf = io.BytesIO()
                np.save(buf, arr)
                atomic_write_bytes(shard_path, buf.getvalue())
                computed += 1
            else:
                reused += 1
            shards.append(arr)
            bar.update(hi - lo)
    logits = np.concatenate(shards) if shards else np.zeros((0, key["num_labels"]), np.float32)
    return TeacherLabels(logits, cache, computed, reused, time.perf_counter() - t0)


def _encode_checked(tok: Tokenizer, transfer: TransferSet, max_length: int, who: str) -> Features:
    feats = cached_encode(tok, transfer.texts_a, transfer.texts_b, max_length, f"transfer-{who}")
    check_unk_rate(tok, feats, who, transfer.texts_a)
    return feats


def _subset(feats: Features, lo: int, hi: int) -> Features:
    start, end = int(feats.offsets[lo]), int(feats.offsets[hi])
    return Features(ids=feats.ids[start:end], type_ids=feats.type_ids[start:end], offsets=feats.offsets[lo:hi + 1] - start)


def _predict_range(model, feats: Features, lo: int, hi: int, pad_id: int, bf16: bool) -> np.ndarray:
    # Batches of at most 2,048 padded tokens: for a teacher the size of MiniLM on a CPU, bigger batches are slower
    # (135 against 220 SST-2 sentences/s at one thread with 16,384; measured by the recipe's calibration).
    return predict_logits(model, _subset(feats, lo, hi), pad_id=pad_id, bf16=bf16, max_tokens=2048).astype(np.float32)


# --- the student's objective ----------------------------------------------------------------------

def distillation_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, gold: torch.Tensor, *,
                      regression: bool, temperature: float = 1.0, alpha: float = 0.0) -> torch.Tensor:
    """Per-example losses (summed by the caller).

    Classification: (1 - alpha) * T² * KL(softmax(t/T) || softmax(s/T)) + alpha * CE(s, gold) where
    gold >= 0. Regression: (1 - alpha) * (s - t)² + alpha * (s - gold)² where gold is not NaN.
    """
    if regression:
        s = student_logits.squeeze(-1)
        loss = (1 - alpha) * (s - teacher_logits.squeeze(-1)) ** 2
        if alpha:
            has = ~torch.isnan(gold)
            loss = loss + alpha * torch.where(has, (s - torch.nan_to_num(gold)) ** 2, torch.zeros_like(s))
        return loss
    t = temperature
    log_p_student = F.log_softmax(student_logits / t, dim=-1)
    log_p_teacher = F.log_softmax(teacher_logits / t, dim=-1)
    kl = (log_p_teacher.exp() * (log_p_teacher - log_p_student)).sum(-1) * (t * t)
    loss = (1 - alpha) * kl
    if alpha:
        has = gold >= 0
        ce = F.cross_entropy(student_logits, gold.clamp(min=0), reduction="none")
        loss = loss + alpha * torch.where(has, ce, torch.zeros_like(ce))
    return loss


class DistillObjective(ClassificationObjective):
    """Train on the teacher's logits over the transfer set; evaluate on dev with the task's gold labels."""

    def __init__(self, model, spec: TaskSpec, train_set: LabelledSet, teacher_logits: np.ndarray,
                 dev_sets: list[LabelledSet], *, seed: int, pad_id: int, temperature: float, alpha: float,
                 bf16: bool = False) -> None:
        super().__init__(model, spec, train_set, dev_sets, seed=seed, pad_id=pad_id, bf16=bf16)
        self.teacher_logits = teacher_logits
        self.temperature = temperature
        self.alpha = alpha

    def batch(self, part: np.ndarray) -> dict:
        batch = super().batch(part)
        batch["teacher"] = torch.from_numpy(self.teacher_logits[part])
        return batch

    def loss(self, model, batch: dict, totals: dict[str, float]):
        device = next(model.parameters()).device
        inputs = {k: v.to(device) for k, v in batch.items() if k not in ("labels", "teacher")}
        logits = model(**inputs).logits.float()
        teacher = batch["teacher"].to(device)
        per = distillation_loss(logits, teacher, batch["labels"].to(device), regression=self.spec.is_regression,
                                temperature=self.temperature, alpha=self.alpha)
        loss_sum = per.sum()
        stats = {"loss_sum": float(loss_sum.detach()), "n": float(len(per))}
        if not self.spec.is_regression:
            stats["agree"] = float((logits.argmax(-1) == teacher.argmax(-1)).sum())
        return loss_sum / totals["examples"], stats

    def summarize(self, sums: dict[str, float]) -> dict[str, float]:
        if "agree" in sums and sums.get("n"):
            return {"teacher_agreement": sums["agree"] / sums["n"]}
        return {}


# --- the command --------------------------------------------------------------------------------

def run_settings(cfg: DistillConfig) -> dict:
    """The settings that define a distillation run (what a finished run's results.json must match)."""
    return to_dict(cfg) | {k: None for k in (*NOT_RESULT_SETTINGS, "overwrite", "out")} | data_settings(cfg.task)


def stage2_settings(cfg: DistillConfig) -> dict:
    """The settings of the distillation stage alone (stage 3's do not change it)."""
    return run_settings(cfg) | {"then_finetune": None, "finetune_epochs": None, "finetune_lr": None}


def student_config(cfg: DistillConfig) -> FinetuneConfig:
    """The student as ``finetune`` builds it (same init rules: pre-trained encoder, new head)."""
    return carry(FinetuneConfig, cfg, model=cfg.student, new_head=True)


def prepare_labels(cfg: DistillConfig, transfer: TransferSet | None = None) -> TeacherLabels:
    """Have the teacher label the transfer set (built here unless given), or read the cache: what a grid does once."""
    spec = get_task(cfg.task)
    transfer = transfer if transfer is not None else build_transfer(cfg, spec)
    tmax = cfg.teacher_max_length or cfg.inputs.max_length
    return label_transfer(cfg.teacher, spec, transfer, max_length=tmax, cache=cfg.cache, quiet=cfg.quiet,
                          bf16=inference_bf16(cfg.bf16))


def distill(cfg: DistillConfig) -> dict:
    """Distil the teacher into the student (and fine-tune it after, with then_finetune); results.json's content.

    Stage 2 (distillation) is a run of its own whose results are ``distill.json``; stage 3 a fine-tuning
    run in ``RUN/finetune``; ``results.json`` is written when both are done."""
    if is_qa_task(cfg.task):
        return distill_qa(cfg, run_settings(cfg))
    spec = get_task(cfg.task)
    if spec.evaluate_with is not None:
        raise WellreadError(f"{spec.name} is evaluation-only; distil on {spec.evaluate_with} instead", field="task")
    return distillation_run(cfg, run_settings(cfg), stage2_settings(cfg), lambda: _prepare_distillation(cfg, spec),
                            stage3=(lambda: finetune(after_distillation(cfg))) if cfg.then_finetune else None)


def _prepare_distillation(cfg: DistillConfig, spec: TaskSpec) -> Prepared:
    """Stage 2's inputs: the transfer set, the teacher's labels (cached), the student, the dev sets."""
    transfer = build_transfer(cfg, spec)
    labels = prepare_labels(cfg, transfer)
    model, tok, source = build_model(student_config(cfg), spec)
    pad_id = tok.token_to_id(PAD)
    max_length = min(cfg.inputs.max_length, model.config.max_position_embeddings)
    feats = _encode_checked(tok, transfer, max_length, "student")
    train_set = LabelledSet("transfer", feats, transfer.gold, [])
    dev_sets = [load_labelled(spec, cfg.data_dir, s, tok, max_length) for s in spec.dev_splits]
    objective = DistillObjective(model, spec, train_set, labels.logits, dev_sets, seed=cfg.seed, pad_id=pad_id,
                                 temperature=cfg.pd.temperature, alpha=cfg.pd.alpha, bf16=inference_bf16(cfg.bf16))

    def results(result, wall: float) -> dict:
        return {"task": spec.name, **task_file_of(spec), "model": source, "teacher": str(cfg.teacher),
                "transfer_examples": len(transfer), "transfer_sources": transfer.sources,
                "transfer_files": transfer.files,
                "teacher_cache": str(labels.cache), "teacher_label_seconds": labels.seconds,
                "teacher_shards_computed": labels.computed_shards, "teacher_shards_reused": labels.reused_shards,
                "epochs_done": result.state.epoch, "dev": dict(result.final_eval),
                **epoch_summary(result, f"{spec.dev_splits[0]}/{spec.main_metric}"),
                **timing(result, wall, cfg.batch_size)}

    return Prepared(objective, {"settings": stage2_settings(cfg), "transfer_examples": len(transfer),
                                "teacher_cache": labels.cache.name},
                    save=lambda path: save_model(objective.model.cpu(), tok, path),
                    results=results, during=lambda: fast_cpu_dropout(model), eval_each_epoch=True)


__all__ = ["DistillConfig", "distill", "prepare_labels", "label_transfer", "build_transfer", "distillation_loss",
           "DistillObjective", "TransferSet", "read_transfer_file", "run_settings"]
