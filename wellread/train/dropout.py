"""Dropout that costs a third of PyTorch's on CPU, for training BERT on a few cores.

``torch.nn.functional.dropout`` on CPU draws one Bernoulli variable per element (``bernoulli_``):
for Tiny at batch 32 its seven calls a step are ~10% of a pre-training step. Here one 32-bit draw
from torch's generator (31 random bits) makes two 15-bit uniforms, and an element is dropped when its
uniform falls below ``round(p · 32768)``: the drop probability is ``p`` to within 1/65,536 (0.1 → 0.1000061),
the kept elements are scaled by ``1 / (1 - p)`` as PyTorch does, and the gradient is masked the
same way. Everything draws from torch's global generator, so a seed (and a checkpoint's RNG state)
fixes the masks, and a resumed run repeats them.

``use_fast_dropout(model)`` (or the block ``with fast_cpu_dropout(model):``, used by pre-training,
fine-tuning and distillation) swaps a transformers BERT's ``nn.Dropout`` modules (embeddings, after
attention, after the feed-forward layer) and its attention-probability dropout (an attention
function registered with transformers' ``AttentionInterface``: in training the eager product with this
dropout, on the masks of the model's own implementation; in evaluation the model's own attention
function, so dev scores during training equal the saved model's) for the fast ones, on CPU only;
``restore`` puts the originals back (before saving). The weights are untouched, so nothing of it
reaches a saved model.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

ATTENTION_NAME = "wellread"  # registered as wellread_sdpa / wellread_eager, after the original
SMALL = 32768  # fewer elements than this: PyTorch's own is as fast (the Python call costs what it saves)
_LEVELS = 32768  # 15-bit uniforms: torch's int32 random_() draws 31 random bits, two fields of 15


def keep_mask(shape: torch.Size | tuple[int, ...], p: float, device: torch.device | str = "cpu") -> torch.Tensor:
    """A bool tensor, True where an element is kept (probability 1 - round(p · 32768) / 32768)."""
    n = 1
    for s in shape:
        n *= int(s)
    half = (n + 1) // 2
    bits = torch.empty(half, dtype=torch.int32, device=device).random_()
    threshold = round(p * _LEVELS)
    keep = torch.empty(2 * half, dtype=torch.bool, device=device)
    torch.ge(bits.bitwise_and(_LEVELS - 1), threshold, out=keep[:half])
    torch.ge(bits.bitwise_right_shift_(15).bitwise_and_(_LEVELS - 1), threshold, out=keep[half:])
    return keep[:n].view(shape)


class _Dropout(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, p: float):
        keep = keep_mask(x.shape, p, x.device)
        scale = 1.0 / (1.0 - p)
        ctx.save_for_backward(keep)
        ctx.scale = scale
        return x.mul(keep).mul_(scale)

    @staticmethod
    def backward(ctx, grad):
        (keep,) = ctx.saved_tensors
        return grad.mul(keep).mul_(ctx.scale), None


def fast_dropout(x: torch.Tensor, p: float, training: bool = True) -> torch.Tensor:
    """``F.dropout`` with 15-bit uniforms on CPU; PyTorch's own elsewhere and for small tensors."""
    if not training or p == 0.0:
        return x
    if x.device.type != "cpu" or not 0.0 < p < 1.0 or x.numel() < SMALL:
        return torch.nn.functional.dropout(x, p, training)
    return _Dropout.apply(x, p)


class FastDropout(torch.nn.Dropout):
    """An ``nn.Dropout`` (same ``p``, same train/eval switch) that uses ``fast_dropout``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return fast_dropout(x, self.p, self.training)


def _original(name: str):
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
    from transformers.models.bert.modeling_bert import eager_attention_forward

    return eager_attention_forward if name == "eager" else ALL_ATTENTION_FUNCTIONS[name]


def attention(module, query, key, value, attention_mask, scaling=None, dropout: float = 0.0, **kwargs):
    """Training: transformers' eager BERT attention with ``fast_dropout`` on the attention probabilities.
    Evaluation: the model's own attention function, unchanged (so dev scores during training equal the
    saved model's). ``attention_mask`` is what the original implementation's mask function made: None,
    a bool mask (True = attend) or an additive float mask."""
    original = module.config._wellread_attention
    if not module.training or dropout == 0.0:
        return _original(original)(module, query, key, value, attention_mask, scaling=scaling, dropout=dropout, **kwargs)
    if scaling is None:
        scaling = query.size(-1) ** -0.5
    weights = torch.matmul(query, key.transpose(2, 3)) * scaling
    if attention_mask is not None:
        if attention_mask.dtype == torch.bool:
            weights = weights.masked_fill(~attention_mask, torch.finfo(weights.dtype).min)
        else:
            weights = weights + attention_mask
    weights = torch.nn.functional.softmax(weights, dim=-1)
    weights = fast_dropout(weights, dropout, module.training)
    out = torch.matmul(weights, value).transpose(1, 2).contiguous()
    return out, weights


def _register(original: str) -> str:
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, AttentionMaskInterface

    name = f"{ATTENTION_NAME}_{original}"
    AttentionInterface.register(name, attention)
    AttentionMaskInterface.register(name, ALL_MASK_ATTENTION_FUNCTIONS[original])  # the original's masks
    return name


def use_fast_dropout(model: torch.nn.Module) -> dict:
    """Swap ``model``'s dropout for the fast one (CPU models only); returns what ``restore`` needs."""
    saved: dict = {"modules": [], "attn": None}
    if next(model.parameters()).device.type != "cpu":
        return saved
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if type(child) is torch.nn.Dropout:
                fast = FastDropout(child.p)
                fast.train(child.training)
                setattr(parent, name, fast)
                saved["modules"].append((parent, name, child))
    config = getattr(model, "config", None)
    previous = getattr(config, "_attn_implementation", None) if config is not None else None
    if getattr(config, "model_type", None) == "bert" and previous in ("eager", "sdpa"):
        config._wellread_attention = previous
        saved["attn"] = (config, previous)
        config._attn_implementation = _register(previous)
    return saved


def restore(saved: dict) -> None:
    """Undo ``use_fast_dropout``."""
    for parent, name, child in saved["modules"]:
        setattr(parent, name, child)
    if saved["attn"] is not None:
        config, previous = saved["attn"]
        config._attn_implementation = previous
        del config._wellread_attention  # never into a saved config.json


@contextlib.contextmanager
def fast_cpu_dropout(model: torch.nn.Module) -> Iterator[None]:
    """``use_fast_dropout`` for the block when no GPU is there, then ``restore`` (also on error)."""
    saved = use_fast_dropout(model) if not torch.cuda.is_available() else None
    try:
        yield
    finally:
        if saved is not None:
            restore(saved)
