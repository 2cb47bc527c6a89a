"""The one training loop. Pre-training, fine-tuning and distillation are objectives plugged into it.

The loop owns the optimizer (AdamW, weight decay on matrices only), the schedule (linear warm-up,
then linear decay), gradient accumulation, clipping, bf16 autocast, evaluation, checkpoints, resume,
data parallelism (torch.distributed: gloo on CPU, NCCL on GPUs, launched by ``torchrun``), logging to
``metrics.jsonl`` and the progress bar. An objective owns its data and its loss.

Exactness on purpose:
- Losses are normalised by the *global* count of what they average over (examples, masked tokens),
  summed over accumulation micro-batches and processes before any backward pass, so one process
  with batch 64 and two processes with batch 32 each take the same optimizer step.
- A checkpoint holds the model, optimizer, RNG states and the data position; a run killed at any
  moment resumes from its last checkpoint to the same weights, bit for bit on CPU, as a run that was
  never interrupted. Checkpoints are written to a temporary file and renamed, so a failed write
  (a full disk) never replaces a good checkpoint.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import itertools
import json
import math
import os
import re
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from tqdm.auto import tqdm

from wellread import env
from wellread.config import configclass, field
from wellread.errors import WellreadError
from wellread.io import atomic_write_json, atomic_write_text
from wellread.train.sparse_rows import RowSparseGrads

CHECKPOINT = "checkpoint.pt"


def parse_duration(text: str | float | int | None) -> float | None:
    """'30m', '1h30m', '90s', '2h' or a number of seconds -> seconds."""
    if text is None or text == "":
        return None
    if isinstance(text, (int, float)):
        return float(text)

    s = text.strip().lower()
    if re.fullmatch(r"\d+(\.\d+)?", s):
        return float(s)
    parts = re.findall(r"(\d+(?:\.\d+)?)\s*([hms])", s)
    if not parts or "".join(f"{a}{b}" for a, b in parts) != s.replace(" ", ""):
        raise WellreadError(f"cannot read the duration {text!r}; write e.g. 30m, 1h30m, 90s", field="time_budget")
    return sum(float(a) * {"h": 3600, "m": 60, "s": 1}[b] for a, b in parts)


@configclass
class TrainConfig:
    """What every training command shares: the optimizer, the schedule and the run's bookkeeping (a command's
    config adds ``out``, its run directory). Defaults are the paper's fine-tuning settings."""

    overwrite: bool = field(False, help="start over in an existing run directory")
    lr: float = field(1e-4, gt=0, help="peak learning rate (AdamW)")
    batch_size: int = field(32, ge=1, help="examples per optimizer step, over all processes and accumulation steps")
    grad_accum: int = field(1, ge=1, help="split each step into this many micro-batches (same result, less memory)")
    epochs: float | None = field(None, gt=0, help="passes over the training data")
    max_steps: int | None = field(None, ge=1, help="stop after this many optimizer steps")
    time_budget: str | float | None = field(None, help="stop after this much training time, e.g. 30m or 2h (a killed and resumed run counts time across both)")
    warmup: float = field(0.1, ge=0, lt=1, help="fraction of the steps spent warming the learning rate up from 0")
    weight_decay: float = field(0.01, ge=0, help="AdamW weight decay (on matrices only, not biases or LayerNorm)")
    adam_eps: float = field(1e-6, gt=0, help="AdamW epsilon (BERT used 1e-6)")
    clip: float = field(1.0, ge=0, help="clip the gradient norm to this (0: no clipping)")
    seed: int = field(0, ge=0, help="one seed for init, data order, masking and dropout")
    eval_every: int | None = field(None, ge=1, help="evaluate every N steps (fine-tuning also evaluates after each epoch)")
    checkpoint_every: int | None = field(None, ge=1, help="write a resumable checkpoint every N steps (default: by time, "
                                                    "see --checkpoint-minutes)")
    checkpoint_minutes: float = field(2.0, gt=0, help="without --checkpoint-every: write a checkpoint after this many minutes "
                                                "of training since the last (and at each epoch's end)")
    log_every: int = field(20, ge=1, help="log training metrics every N steps")
    bf16: bool | None = field(None, help="bf16 autocast (default: where bf16 is native: a GPU, a CPU with AVX-512-BF16 "
                                         "or AMX; see `wellread env`)")
    threads: int | None = field(None, ge=1, help="CPU threads for torch (default: what torch picks)")
    quiet: bool = field(False, help="no progress bar")

    def __post_init__(self) -> None:
        if self.batch_size % self.grad_accum:
            raise WellreadError(f"batch size {self.batch_size} is not a multiple of grad_accum {self.grad_accum}", field="grad_accum")
        parse_duration(self.time_budget)
        if self.epochs is None and self.max_steps is None and self.time_budget is None:
            raise WellreadError("give --epochs, --max-steps or --time-budget", field="epochs")


class Objective(Protocol):
    """What a training objective gives the loop.

    ``batches(epoch, start, micro_batch, rank, world)`` yields micro-batches of one epoch in a fixed
    order (a function of the seed and epoch only), skipping the first ``start`` micro-batches of the
    whole (all-process) sequence; process ``rank`` of ``world`` gets its share of each.
    ``counts(batch)`` gives the denominators of the batch's losses (e.g. {"examples": 32});
    ``loss(model, batch, totals)`` returns the loss to back-propagate, already divided by the global
    ``totals``, and a dict of sums to log; ``summarize(sums)`` turns summed stats into metrics.
    """

    model: torch.nn.Module

    def micro_batches_per_epoch(self, micro_batch: int, world: int) -> int | None: ...
    def batches(self, epoch: int, start: int, micro_batch: int, rank: int, world: int) -> Iterator[Any]: ...
    def counts(self, batch: Any) -> dict[str, float]: ...
    def loss(self, model: torch.nn.Module, batch: Any, totals: dict[str, float]) -> tuple[torch.Tensor, dict[str, float]]: ...
    def summarize(self, sums: dict[str, float]) -> dict[str, float]: ...
    def evaluate(self, model: torch.nn.Module) -> dict[str, float]: ...
    # optional: ``set_progress(p)``, called before each step with the schedule's progress p in [0, 1]
    def tokens(self, batch: Any) -> int: ...  # real (non-pad) tokens, for throughput


@dataclasses.dataclass
class LoopState:
    step: int = 0
    epoch: int = 0
    micro_in_epoch: int = 0  # all-process micro-batches consumed in the current epoch
    elapsed: float = 0.0  # training seconds, summed across resumes
    tokens: int = 0


@dataclasses.dataclass
class Dist:
    rank: int = 0
    world: int = 1
    device: torch.device = dataclasses.field(default_factory=lambda: torch.device("cpu"))

    @property
    def main(self) -> bool:
        return self.rank == 0


def setup_distributed() -> Dist:
    """Join the process group ``torchrun`` describes (WORLD_SIZE > 1), else a single process."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    cuda = torch.cuda.is_available()
    if world == 1:
        return Dist(device=torch.device("cuda" if cuda else "cpu"))

    rank = int(os.environ["RANK"])
    local = int(os.environ.get("LOCAL_RANK", rank))
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if cuda else "gloo")
    device = torch.device(f"cuda:{local}") if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(device)
    return Dist(rank=rank, world=world, device=device)


def _all_reduce(values: list[float], d: Dist) -> list[float]:
    if d.world == 1:
        return values

    t = torch.tensor(values, dtype=torch.float64, device=d.device if d.device.type == "cuda" else "cpu")
    dist.all_reduce(t)
    return t.tolist()


def configure_optimizer(model: torch.nn.Module, cfg: TrainConfig, device: torch.device) -> torch.optim.Optimizer:
    """AdamW with decay on tensors of rank >= 2 only (nanoGPT's rule: no decay on biases and norms)."""
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.dim() >= 2]
    no_decay = [p for p in params if p.dim() < 2]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(0.9, 0.999), eps=cfg.adam_eps, fused=True)


def native_bf16(device: torch.device) -> bool:
    """Whether bf16 matrix products run natively here (a CUDA GPU with bf16; a CPU with AVX-512-BF16 or AMX)."""
    return env.native_bf16(device)


def use_bf16(setting: bool | None, device: torch.device | None = None) -> bool:
    """Whether to run bf16 autocast: the ``--bf16`` setting, else the default: bf16 exactly where it is native
    (``wellread env`` says which applies here)."""
    if setting is not None:
        return bool(setting)
    return native_bf16(device if device is not None else torch.device("cuda" if torch.cuda.is_available() else "cpu"))


def inference_bf16(setting: bool | None) -> bool:
    """bf16 for evaluation and teacher labelling: ``--bf16`` / ``--no-bf16`` when given, else only on a GPU.

    Training defaults to bf16 wherever it is native (``use_bf16``), but outputs that are read as numbers
    stay fp32 on a CPU by default: a regression head's bf16 outputs (8 bits of mantissa, steps of 1/64
    near 2.5) tie, and a barely trained STS-B model's dev Pearson became NaN; dev scores and teacher
    logits are then what they were before bf16 became the training default.
    """
    return bool(setting) if setting is not None else torch.cuda.is_available()


def lr_factor(progress: float, warmup: float) -> float:
    """Linear warm-up over the first ``warmup`` fraction of training, then linear decay to 0."""
    if warmup > 0 and progress < warmup:
        return progress / warmup
    return max(0.0, (1.0 - progress) / (1.0 - warmup))


# Settings that change how a run is carried out, never what it computes.
NOT_RESULT_SETTINGS = ("quiet", "threads", "checkpoint_every", "checkpoint_minutes", "log_every")


def _plain(obj: Any) -> Any:
    return json.loads(json.dumps(obj, default=str))


def field_defaults(cls: type) -> dict[str, Any]:
    """Each field's default in a config dataclass, as JSON values (what a setting added later stands for)."""
    out = {}
    for f in dataclasses.fields(cls):
        if f.metadata.get("group"):  # a nested config's settings stand in its place (config.to_dict)
            out.update(field_defaults(type(f.default_factory())))
        elif f.default is not dataclasses.MISSING:
            out[f.name] = _plain(f.default)
        elif f.default_factory is not dataclasses.MISSING:
            out[f.name] = _plain(f.default_factory())
    return out


def _flat(obj: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(obj, dict):
        return {prefix: obj}
    out: dict[str, Any] = {}
    for k, v in obj.items():
        out.update(_flat(v, f"{prefix}.{k}" if prefix else str(k)))
    return out


def settings_changes(old: dict, new: dict, defaults: dict[str, Any]) -> list[str]:
    """The settings (dotted keys) that differ between a run's record and these. A key missing from the old
    record (a setting wellread gained since) is no change while it holds its default, so a run survives an
    upgrade; a key this code no longer has is a change (its behaviour may be gone)."""
    a, b = _flat(_plain(old)), _flat(_plain(new))
    changed = []
    for k in sorted(a.keys() | b.keys()):
        if k in a and k in b and a[k] == b[k]:
            continue
        if k not in a and b[k] == defaults.get(k.rsplit(".", 1)[-1], a):  # `a`: a sentinel no value equals
            continue
        changed.append(k)
    return changed


def config_fingerprint(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


class MetricsLog:
    """Append-only JSONL of metrics. A checkpoint records how many lines were written (``lines``); on
    resume the log is cut back to those, so a line written after the checkpoint (and written again by
    the resumed run) is never there twice, nor one cut short by a kill."""

    def __init__(self, path: Path, enabled: bool) -> None:
        self.path = path
        self.enabled = enabled
        self.lines = 0

    def truncate(self, *, lines: int | None = None, after_step: float | None = None) -> None:
        """Keep the first ``lines`` lines, or (a checkpoint that did not record them) those up to ``after_step``."""
        if not self.enabled:  # another process writes the log; this one only counts
            self.lines = lines or 0
            return
        old = self.path.read_text(encoding="utf-8").splitlines() if self.path.exists() else []
        keep = old[:lines] if lines is not None else [ln for ln in old if _logged_at(ln) <= after_step]
        self.lines = len(keep)
        if keep != old:
            atomic_write_text(self.path, "".join(k + "\n" for k in keep))

    def write(self, record: dict) -> None:
        self.lines += 1
        if not self.enabled:
            return
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
            f.flush()


def _logged_at(line: str) -> float:
    """The step of a metrics line; a blank line, or one cut short by a kill, counts as after every step."""
    try:
        return json.loads(line).get("step", 0)
    except ValueError:
        return math.inf


def _rng_state() -> dict:
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(path: Path, payload: dict) -> None:
    """torch.save to a temporary file, fsync, rename: the previous checkpoint survives any failure."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            torch.save(payload, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        if tmp.exists():
            tmp.unlink()
        raise WellreadError(f"could not write the checkpoint ({e.strerror or e}); the previous one is intact", file=path) from None


def load_checkpoint(path: Path, *, mmap: bool = False) -> dict:
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except Exception as e:
        raise WellreadError(f"unreadable checkpoint ({e}); delete it to start over", file=path) from None


@dataclasses.dataclass
class TrainResult:
    state: LoopState
    history: list[dict]
    stopped_by: str  # "epochs", "max_steps", "time_budget"
    final_eval: dict[str, float]


def train(objective: Objective, cfg: TrainConfig, run_dir: str | Path, *, fingerprint: dict | None = None,
          eval_each_epoch: bool = False, on_epoch_end=None) -> TrainResult:
    """Train ``objective.model`` in ``run_dir``, resuming from its checkpoint when there is one.

    ``fingerprint``: what must not change between a run and its resumption (model, data, settings);
    a checkpoint made under another fingerprint is refused. With ``eval_each_epoch`` the objective is
    evaluated after each full epoch, and ``on_epoch_end(epoch, model, metrics)`` is then called on
    the main process. torch's CPU thread count is restored afterwards (``cfg.threads`` is this run's).
    """
    threads = torch.get_num_threads()
    try:
        loop = _Loop(objective, cfg, Path(run_dir), fingerprint or {}, eval_each_epoch, on_epoch_end)
        return loop.run()
    finally:
        torch.set_num_threads(threads)


def run_record(cfg: TrainConfig, fingerprint: dict, world: int | None = None) -> dict:
    """What a checkpoint records of its run: the settings that change what is computed, the process count,
    and the caller's fingerprint (model, data); a resumption must match it."""
    world = int(os.environ.get("WORLD_SIZE", "1")) if world is None else world
    return _plain({"train": dataclasses.asdict(cfg) | {k: None for k in (*NOT_RESULT_SETTINGS, "time_budget")},
                   "world": world, **fingerprint})


def check_resumable(ck: dict, record: dict, path: Path, defaults: dict) -> None:
    """Refuse a checkpoint made for another run than ``record`` (naming the settings that changed)."""
    if ck.get("fingerprint") == config_fingerprint(record):
        return
    if "settings" not in ck:  # made before checkpoints recorded their settings
        changed, said = ["?"], "its settings were not recorded"
    else:
        changed = settings_changes(ck["settings"], record, defaults)
        old, now = _flat(ck["settings"]), _flat(record)
        said = ", ".join(f"{k}: {old.get(k, '(absent)')!r} then, {now.get(k, '(absent)')!r} now"
                         for k in changed[:4]) + (f" and {len(changed) - 4} more" if len(changed) > 4 else "")
    if changed:
        raise WellreadError(f"this run directory holds a checkpoint made with other settings, model or data "
                            f"({said}); use another --out (or delete the checkpoint to start over)", file=path)


def check_checkpoint(run_dir: Path, cfg: TrainConfig, fingerprint: dict) -> None:
    """Before a run writes anything: refuse ``run_dir``'s checkpoint if it is another run's."""
    path = Path(run_dir) / CHECKPOINT
    if path.is_file():
        check_resumable(load_checkpoint(path, mmap=True), run_record(cfg, fingerprint), path, field_defaults(type(cfg)))


class _Loop:
    """One training run, read top to bottom: ``__init__`` sets up (resuming), ``run`` is the loop, and
    each method below it is one thing the loop does (a step, a log line, an evaluation, a checkpoint)."""

    def __init__(self, objective: Objective, cfg: TrainConfig, run_dir: Path, fingerprint: dict,
                 eval_each_epoch: bool, on_epoch_end) -> None:
        self.objective, self.cfg, self.run_dir = objective, cfg, run_dir
        self.eval_each_epoch, self.on_epoch_end = eval_each_epoch, on_epoch_end
        self.d = d = setup_distributed()
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        self.bf16 = use_bf16(cfg.bf16, d.device)
        if self.bf16 and d.main and not native_bf16(d.device):
            print("note: this CPU has no native bf16 (AVX-512 BF16 or AMX): bf16 autocast is emulated and runs "
                  "several times slower than fp32 here; drop --bf16", file=sys.stderr)

        # the model, its data-parallel wrapper and the optimizer
        self.model = objective.model.to(d.device)
        self.ddp_model: torch.nn.Module = self.model
        if d.world > 1:
            self.ddp_model = DistributedDataParallel(self.model, device_ids=[d.device.index] if d.device.type == "cuda"
                                                     else None)
        self.optimizer = configure_optimizer(self.model, cfg, d.device)
        # one CPU process: untied word embeddings keep row-sparse gradients (wellread.train.sparse_rows)
        self.rows = RowSparseGrads(self.model) if d.world == 1 and d.device.type == "cpu" else None
        self.params = [p for p in self.model.parameters() if p.requires_grad]

        # how long: steps (from --max-steps and --epochs) and training time
        self.micro = cfg.batch_size // cfg.grad_accum  # all-process micro-batch
        if self.micro % d.world:
            raise WellreadError(f"the micro-batch {self.micro} does not split over {d.world} processes", field="batch_size")
        per_epoch = objective.micro_batches_per_epoch(self.micro, d.world)
        self.steps_per_epoch = None if per_epoch is None else max(1, per_epoch // cfg.grad_accum)
        self.total_steps = cfg.max_steps
        if cfg.epochs is not None:
            if self.steps_per_epoch is None:
                raise WellreadError("--epochs needs data of known size; give --max-steps or --time-budget", field="epochs")
            by_epochs = math.ceil(cfg.epochs * self.steps_per_epoch)
            self.total_steps = by_epochs if self.total_steps is None else min(self.total_steps, by_epochs)
        self.budget = parse_duration(cfg.time_budget)

        # the run's record, and its state: fresh, or from the checkpoint
        run_dir.mkdir(parents=True, exist_ok=True)
        self.ckpt_path = run_dir / CHECKPOINT
        self.settings = run_record(cfg, fingerprint, d.world)
        self.fingerprint = config_fingerprint(self.settings)
        self.log = MetricsLog(run_dir / "metrics.jsonl", d.main)
        self.state = LoopState()
        self.history: list[dict] = []
        self.window: dict[str, float] = {}  # sums of the steps since the last log line (kept across a resume)
        if self.ckpt_path.exists():
            self._resume(load_checkpoint(self.ckpt_path))
        else:
            torch.manual_seed(cfg.seed + 1000 * d.rank)  # dropout streams differ per process, reproducibly
            self.log.truncate(lines=0)
        self.last_checkpoint = self.state.elapsed
        self.window_tokens, self.window_t0 = 0, time.perf_counter()

    def _resume(self, ck: dict) -> None:
        check_resumable(ck, self.settings, self.ckpt_path, field_defaults(type(self.cfg)))
        self.model.load_state_dict(ck["model"])
        self.optimizer.load_state_dict(ck["optimizer"])
        self.state = LoopState(**ck["loop"])
        self.history = list(ck.get("history", []))
        self.window = dict(ck.get("window", {}))
        rng = ck["rng"][self.d.rank] if self.d.rank < len(ck["rng"]) else ck["rng"][0]
        _set_rng_state(rng)
        self.log.truncate(lines=ck.get("metrics_lines"), after_step=self.state.step)
        if self.d.main:
            print(f"resuming from step {self.state.step} (epoch {self.state.epoch})", file=sys.stderr)

    def run(self) -> TrainResult:
        cfg, state = self.cfg, self.state
        self.bar = tqdm(total=self.total_steps, initial=state.step, disable=cfg.quiet or not self.d.main, unit="step",
                        dynamic_ncols=True, file=sys.stderr, desc="train")
        self.ddp_model.train()
        reason = self._stop_reason()
        while reason is None:  # one epoch (or the rest of one) per pass
            batches = self.objective.batches(state.epoch, state.micro_in_epoch, self.micro, self.d.rank, self.d.world)
            steps_this_epoch = 0
            while True:
                t0 = time.perf_counter()
                group = list(itertools.islice(batches, cfg.grad_accum))
                if len(group) < cfg.grad_accum:  # the data ran out (an incomplete last step is dropped, as drop_last)
                    break
                self._step(group, t0)
                steps_this_epoch += 1
                if state.step % cfg.log_every == 0:
                    self._log_train()
                if cfg.eval_every and state.step % cfg.eval_every == 0:
                    self._evaluate()
                if self.steps_per_epoch is not None and state.micro_in_epoch >= self.steps_per_epoch * cfg.grad_accum:
                    break  # the epoch is complete
                reason = self._stop_reason()
                if reason is not None or self._checkpoint_due():
                    self._checkpoint()
                if reason is not None:
                    break
            if reason is not None:
                break
            if steps_this_epoch == 0 and state.micro_in_epoch == 0:
                self.bar.close()
                raise WellreadError(f"the training data is smaller than one batch of {cfg.batch_size}; "
                                    "use a smaller --batch-size or more data", field="batch_size")
            if state.micro_in_epoch > 0:  # a complete epoch, or the data ran out before the expected steps
                self._end_epoch()
                reason = self._stop_reason()
                self._checkpoint()
        self.bar.close()
        if not (self.history and self.history[-1]["step"] == state.step):
            self._evaluate()
            self._checkpoint()
        if self.rows:
            self.rows.restore()
        stopped_by = reason or "max_steps"
        if self.d.main:
            atomic_write_json(self.run_dir / "train_state.json", {"loop": dataclasses.asdict(state),
                                                                   "stopped_by": stopped_by})
        final = self.history[-1]
        return TrainResult(state=state, history=self.history, stopped_by=stopped_by,
                           final_eval={k: v for k, v in final.items() if k not in ("step", "epoch")})

    def _step(self, group: list, t0: float) -> None:
        """One optimizer step on ``group`` (grad_accum micro-batches), its loss normalised by global counts."""
        objective, cfg, d, state = self.objective, self.cfg, self.d, self.state
        keys = sorted({k for b in group for k in objective.counts(b)})
        local = [sum(objective.counts(b).get(k, 0.0) for b in group) for k in keys]
        local.append(float(sum(objective.tokens(b) for b in group)))
        reduced = _all_reduce(local, d)
        totals = dict(zip(keys, reduced[:-1]))
        if hasattr(objective, "set_progress"):  # e.g. a schedule inside the model (pre-training's scaffold)
            objective.set_progress(self._progress())
        step_loss = 0.0
        for i, b in enumerate(group):
            sync = i == len(group) - 1
            ctx = self.ddp_model.no_sync() if (d.world > 1 and not sync) else contextlib.nullcontext()
            with ctx:
                with torch.autocast(d.device.type, dtype=torch.bfloat16, enabled=self.bf16):
                    loss, stats = objective.loss(self.ddp_model, b, totals)
                # DDP averages gradients over processes; the loss is already a global mean, so undo it.
                (loss * d.world if d.world > 1 else loss).backward()
            step_loss += float(loss.detach())
            for k, v in stats.items():
                self.window[k] = self.window.get(k, 0.0) + float(v)
        if d.world > 1:
            step_loss = _all_reduce([step_loss], d)[0]
        if not math.isfinite(step_loss):
            self.bar.close()
            raise WellreadError(f"the loss became {step_loss} at step {state.step + 1}; stopped without saving "
                                f"(the last good checkpoint, step {_ckpt_step(self.ckpt_path)}, is kept). "
                                "Try a lower --lr", file=self.run_dir)
        self.lr = cfg.lr * lr_factor(self._progress(), cfg.warmup)
        for g in self.optimizer.param_groups:
            g["lr"] = self.lr
        if self.rows:
            self.rows.clip(self.params, cfg.clip)
        elif cfg.clip > 0:
            torch.nn.utils.clip_grad_norm_(self.params, cfg.clip)
        self.optimizer.step()
        if self.rows:
            self.rows.release()
        self.optimizer.zero_grad(set_to_none=True)
        state.step += 1
        state.micro_in_epoch += len(group)
        state.tokens += int(reduced[-1])
        self.window_tokens += int(reduced[-1])
        if d.device.type == "cuda":
            torch.cuda.synchronize()
        dt = time.perf_counter() - t0
        if d.world > 1:
            dt = _all_reduce([dt], d)[0] / d.world  # all processes agree on the clock, so on when to stop
        state.elapsed += dt
        self.bar.update(1)
        self.window["loss"] = self.window.get("loss", 0.0) + step_loss
        self.window["steps"] = self.window.get("steps", 0.0) + 1

    def _log_train(self) -> None:
        """A metrics line: the mean loss (and the objective's statistics) over the steps since the last line,
        those before a resume included (the window is part of the checkpoint)."""
        now = time.perf_counter()
        metrics = {"kind": "train", "step": self.state.step, "epoch": self.state.epoch, "lr": self.lr,
                   "loss": self.window["loss"] / self.window["steps"], "window_steps": int(self.window["steps"]),
                   **self.objective.summarize(self.window), "tokens": self.state.tokens,
                   "tokens_per_s": self.window_tokens / max(now - self.window_t0, 1e-9),
                   "elapsed_s": round(self.state.elapsed, 3)}
        self.window_tokens, self.window_t0 = 0, now
        self.window = {}
        self.log.write(metrics)
        self.bar.set_postfix(loss=f"{metrics['loss']:.4f}")

    def _evaluate(self) -> dict[str, float]:
        self.model.eval()
        with torch.no_grad():
            metrics = self.objective.evaluate(self.model)
        self.ddp_model.train()
        self.history.append({"step": self.state.step, "epoch": self.state.epoch, **metrics})
        self.log.write({"kind": "eval", "step": self.state.step, "epoch": self.state.epoch, **metrics})
        return metrics

    def _end_epoch(self) -> None:
        self.state.epoch += 1
        self.state.micro_in_epoch = 0
        if self.eval_each_epoch:
            metrics = self._evaluate()
            if self.on_epoch_end is not None and self.d.main:
                self.on_epoch_end(self.state.epoch, self.model, metrics)

    def _progress(self) -> float:
        """Where the schedule is, in [0, 1]: by steps, or by training time under a budget."""
        p = 0.0
        if self.total_steps:
            p = self.state.step / self.total_steps
        if self.budget:
            p = max(p, self.state.elapsed / self.budget)
        return min(p, 1.0)

    def _stop_reason(self) -> str | None:
        cfg, state = self.cfg, self.state
        if self.total_steps is not None and state.step >= self.total_steps:
            by_epochs = cfg.epochs is not None and (cfg.max_steps is None or self.total_steps < cfg.max_steps)
            return "epochs" if by_epochs else "max_steps"
        if self.budget is not None and state.elapsed >= self.budget:
            return "time_budget"
        return None

    def _checkpoint_due(self) -> bool:
        if self.cfg.checkpoint_every:
            return self.state.step % self.cfg.checkpoint_every == 0
        return self.state.elapsed - self.last_checkpoint >= 60.0 * self.cfg.checkpoint_minutes

    def _checkpoint(self) -> None:
        self.last_checkpoint = self.state.elapsed
        rngs = [_rng_state()]
        if self.d.world > 1:
            gathered: list[Any] = [None] * self.d.world
            dist.all_gather_object(gathered, rngs[0])
            rngs = gathered
        if self.d.main:
            save_checkpoint(self.ckpt_path, {"fingerprint": self.fingerprint, "settings": self.settings,
                                             "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                                             "loop": dataclasses.asdict(self.state), "rng": rngs,
                                             "history": self.history, "window": self.window,
                                             "metrics_lines": self.log.lines})


def _ckpt_step(path: Path) -> int | str:
    if not path.exists():
        return "none"
    try:
        return load_checkpoint(path)["loop"]["step"]
    except WellreadError:
        return "unreadable"
