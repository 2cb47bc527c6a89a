"""Dropout that costs a fraction of PyTorch's on CPU, for training BERT on a few cores.

``torch.nn.functional.dropout`` on CPU draws one Bernoulli variable per element (``bernoulli_``):
for Tiny at batch 32 its seven calls a step are ~10% of a pre-training step, and torch's Mersenne
Twister (``random_``) is not much faster. Here one draw from torch's generator seeds numpy's SFC64, whose
64-bit words make four 16-bit uniforms; an element is dropped when its uniform falls below
``round(p · 65536)``: the drop probability is ``p`` to within 1/131,072 (0.1 → 0.0999908), the kept
elements are scaled by ``1 / (1 - p)`` as PyTorch does, and the gradient is masked the same way. The
seed comes from torch's global generator, so ``torch.manual_seed`` (and a checkpoint's RNG state) fixes
the masks, and a resumed run repeats them.

``use_fast_dropout(model)`` (or the block ``with fast_cpu_dropout(model):``, used by pre-training,
fine-tuning and distillation) swaps a transformers BERT's ``nn.Dropout`` modules (embeddings, after
attention, after the feed-forward layer) and its attention-probability dropout (an attention
function registered with transformers' ``AttentionInterface``: in training, fp32 on CPU, one autograd
function (``_AttentionCore``) that does the eager product with this dropout in fewer passes, on the
masks of the model's own implementation; in evaluation the model's own attention
function, so dev scores during training equal the saved model's) for the fast ones, on CPU only;
``restore`` puts the originals back (before saving). The weights are untouched, so nothing of it
reaches a saved model.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator

import numpy as np
import torch
from transformers import AttentionInterface
from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, AttentionMaskInterface
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
from transformers.models.bert.modeling_bert import eager_attention_forward

ATTENTION_NAME = "wellread"  # registered as wellread_sdpa / wellread_eager, after the original
SMALL = 32768  # fewer elements than this: PyTorch's own is as fast (the Python call costs what it saves)
_LEVELS = 65536  # 16-bit uniforms


def keep_mask(shape: torch.Size | tuple[int, ...], p: float, device: torch.device | str = "cpu") -> torch.Tensor:
    """A bool tensor, True where an element is kept (probability 1 - round(p · 65536) / 65536)."""
    n = 1
    for s in shape:
        n *= int(s)
    seed = int(torch.empty((), dtype=torch.int64).random_())  # one draw of torch's generator
    raw = np.random.SFC64(seed).random_raw((n + 3) // 4)  # four 16-bit uniforms per 64-bit word
    uniforms = torch.from_numpy(raw.view(np.int16)[:n])  # uniform on -32768 .. 32767
    return torch.ge(uniforms, round(p * _LEVELS) - _LEVELS // 2).view(shape).to(device)


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


class _AttentionCore(torch.autograd.Function):
    """softmax(q kᵀ · scaling + mask) with dropout, times v, for fp32 CPU training, in fewer passes than
    the eager composition: the scaling rides on the copy that makes q contiguous (``matmul`` copies the
    head-strided views anyway), the mask and the softmax work in place on the scores, the dropout's
    1 / (1 - p) rides on the copy back to [B, S, heads, d]; backward reuses its buffers the same way
    (dropout and softmax gradients in place, ``scaling`` on the copies of dq and dk). Gradients are
    returned in the layout of transformers' projections, so no copy follows in their backward."""

    @staticmethod
    def forward(ctx, q, k, v, mask, scaling: float, p: float):
        b, h, s, d = q.shape
        qc = torch.mul(q, scaling, out=torch.empty(b, h, s, d, dtype=q.dtype)).view(b * h, s, d)
        kc = k.reshape(b * h, s, d)
        vc = v.reshape(b * h, s, d)
        probs = torch.bmm(qc, kc.transpose(1, 2))
        if mask is not None:
            if mask.dtype == torch.bool:
                probs.view(b, h, s, s).masked_fill_(~mask, torch.finfo(probs.dtype).min)
            else:
                probs.view(b, h, s, s).add_(mask)
        torch.ops.aten._softmax.out(probs, -1, False, out=probs)
        keep = keep_mask(probs.shape, p)
        dropped = probs.mul(keep)
        out = torch.bmm(dropped, vc).view(b, h, s, d)
        result = torch.mul(out.transpose(1, 2), 1.0 / (1.0 - p), out=torch.empty(b, s, h, d, dtype=q.dtype))
        ctx.save_for_backward(qc, kc, vc, probs, keep, dropped)
        ctx.scaling, ctx.scale = scaling, 1.0 / (1.0 - p)
        weights = dropped.view(b, h, s, s)  # what eager returns as attention weights (but unscaled)
        ctx.mark_non_differentiable(weights)
        return result, weights

    @staticmethod
    def backward(ctx, grad, _grad_weights):
        qc, kc, vc, probs, keep, dropped = ctx.saved_tensors
        bh, s, d = qc.shape
        b = grad.shape[0]
        h = bh // b
        g = torch.mul(grad.transpose(1, 2), ctx.scale, out=torch.empty(b, h, s, d, dtype=grad.dtype)).view(bh, s, d)
        dv = torch.bmm(dropped.transpose(1, 2), g)
        dp = torch.bmm(g, vc.transpose(1, 2)).mul_(keep)
        torch.ops.aten._softmax_backward_data.out(dp, probs, -1, probs.dtype, grad_input=dp)
        dq = torch.bmm(dp, kc)  # gradient of qc (which carries the scaling): d q = scaling · dq
        dk = torch.bmm(dp.transpose(1, 2), qc)  # qc = scaling · q, so this is already scaling · dp ᵀ q

        def back(x, factor):  # [b·h, s, d] -> the projections' [b, s, h, d] layout, seen as [b, h, s, d]
            y = torch.mul(x.view(b, h, s, d).transpose(1, 2), factor, out=torch.empty(b, s, h, d, dtype=x.dtype))
            return y.transpose(1, 2)

        return back(dq, ctx.scaling), back(dk, 1.0), back(dv, 1.0), None, None, None


def _original(name: str):
    return eager_attention_forward if name == "eager" else ALL_ATTENTION_FUNCTIONS[name]


def attention(module, query, key, value, attention_mask, scaling=None, dropout: float = 0.0,
              attention_bias: torch.Tensor | None = None, fused: bool = True, **kwargs):
    """Training: transformers' eager BERT attention with ``fast_dropout`` on the attention probabilities
    (fp32 on CPU and ``fused``: ``_AttentionCore``, the same computation in fewer passes; otherwise the
    eager ops). Evaluation: the model's own attention function, unchanged (so dev scores during training
    equal the saved model's). ``attention_mask`` is what the original implementation's mask function made:
    None, a bool mask (True = attend) or an additive float mask. ``attention_bias`` ([(batch,) heads, S, S],
    an argument of the model's forward that transformers hands through to here) is added to the scores in
    training only: pre-training's attention scaffold (``wellread.experiments.cpu_aids``)."""
    original = module.config._wellread_attention
    if attention_bias is not None and module.training:
        attention_mask = with_bias(attention_mask, attention_bias[..., :query.size(2), :key.size(2)].to(query.dtype))
    if not module.training or dropout == 0.0:
        return _original(original)(module, query, key, value, attention_mask, scaling=scaling, dropout=dropout, **kwargs)
    if scaling is None:
        scaling = query.size(-1) ** -0.5
    if (fused and query.dtype == torch.float32 and query.device.type == "cpu" and not torch.is_autocast_enabled("cpu")
            and query.shape == key.shape == value.shape and query.numel() * query.size(2) // query.size(3) >= SMALL):
        out, weights = _AttentionCore.apply(query, key, value, attention_mask, scaling, dropout)
        return out, weights
    return eager_attention(query, key, value, attention_mask, scaling, dropout, module.training)


def eager_attention(query, key, value, mask, scaling: float, p: float, training: bool):
    """transformers' eager BERT attention with ``fast_dropout``: (output as [B, queries, heads, d], weights).
    ``mask``: None, bool (True = attend) or additive, broadcast over [B, heads, queries, keys]."""
    weights = torch.matmul(query, key.transpose(2, 3)) * scaling
    if mask is not None:
        if mask.dtype == torch.bool:
            weights = weights.masked_fill(~mask, torch.finfo(weights.dtype).min)
        else:
            weights = weights + mask
    weights = torch.nn.functional.softmax(weights, dim=-1)
    weights = fast_dropout(weights, p, training)
    out = torch.matmul(weights.to(value.dtype), value).transpose(1, 2).contiguous()
    return out, weights


def with_bias(mask: torch.Tensor | None, bias: torch.Tensor) -> torch.Tensor:
    """An additive mask: ``mask`` (None, bool with True = attend, or additive) plus ``bias`` per head
    ([heads, q, k], or [batch, heads, q, k] for a bias per sequence)."""
    if mask is None:
        return bias if bias.dim() == 4 else bias.unsqueeze(0)
    if mask.dtype == torch.bool:
        mask = torch.zeros(mask.shape, dtype=bias.dtype, device=mask.device).masked_fill_(~mask, torch.finfo(bias.dtype).min)
    return mask + bias


def _register(original: str, fused: bool) -> str:
    name = f"{ATTENTION_NAME}_{original}" if fused else f"{ATTENTION_NAME}-unfused_{original}"
    AttentionInterface.register(name, attention if fused else functools.partial(attention, fused=False))
    AttentionMaskInterface.register(name, ALL_MASK_ATTENTION_FUNCTIONS[original])  # the original's masks
    return name


def use_fast_dropout(model: torch.nn.Module, *, modules: bool = True, fused_attention: bool = True) -> dict:
    """Swap ``model``'s dropout for the fast one (CPU models only); returns what ``restore`` needs.
    ``modules=False``: only route a BERT's training attention through ``attention`` (any device), which
    is what pre-training's attention scaffold needs on a GPU. ``fused_attention=False``: the eager
    composition instead of ``_AttentionCore`` (to compare them)."""
    saved: dict = {"modules": [], "attn": None}
    if modules and next(model.parameters()).device.type != "cpu":
        return saved
    for parent in list(model.modules()) if modules else []:
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
        config._attn_implementation = _register(previous, fused_attention)
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
def fast_cpu_dropout(model: torch.nn.Module, *, attention: bool = False, fused_attention: bool = True) -> Iterator[None]:
    """``use_fast_dropout`` for the block when no GPU is there, then ``restore`` (also on error);
    ``attention``: with a GPU, still route the training attention through ``attention`` (the scaffold)."""
    if not torch.cuda.is_available():
        saved = use_fast_dropout(model, fused_attention=fused_attention)
    else:
        saved = use_fast_dropout(model, modules=False, fused_attention=fused_attention) if attention else None
    try:
        yield
    finally:
        if saved is not None:
            restore(saved)
