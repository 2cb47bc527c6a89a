"""The pre-training heads on the masked positions only, and their loss.

``SparsePretrainer`` wraps a ``BertForPreTraining``: the encoder's hidden states are gathered at
``masked_positions`` (flat indices into batch × length) and only those rows go through
``cls.predictions`` (the transform and the tied decoder), so the vocabulary projection costs
~20 rows per sequence instead of 128. The last encoder layer runs on those rows too (its keys and
values from every position, ``last_layer_rows``): nothing else of it reaches the loss. The loss
(``MaskedLMLoss``) is the same as HF's full model and head with labels -100 elsewhere
(tests/test_pretrain.py and tests/test_heads.py check loss and gradients).
"""

from __future__ import annotations

import weakref

import torch
from transformers.masking_utils import create_bidirectional_mask

from wellread.modeling.dropout import eager_attention, with_bias


class Scratch:
    """One reusable (rows × vocabulary) fp32 array per device and width, for ``MaskedLMLoss`` on CPU
    (each ``SparsePretrainer`` owns one; ``clear`` frees it).

    The logits of Tiny's masked rows are ~75 MB a step: freshly allocated, glibc maps them anew each time
    (anything over 32 MB) and the first write pays a page fault per 4 KB, which costs as long as the
    projection itself. The array is lent to one forward pass and returned by its backward; while it is
    out (two forward passes before a backward, or a graph dropped without one and still alive), a call
    gets a fresh array, so sharing can never mix two batches' gradients. A graph kept for a second
    backward (``retain_graph=True``) after its array was lent again is refused by autograd's own check of
    saved tensors ("modified by an inplace operation"), never answered with another batch's gradient.
    """

    def __init__(self) -> None:
        self._arrays: dict[tuple, list] = {}  # (device, columns, dtype) -> [array, weakref to borrower or None]

    def take(self, rows: int, cols: int, device: torch.device, borrower=None,
             dtype: torch.dtype = torch.float32) -> torch.Tensor:
        if device.type != "cpu":
            return torch.empty(rows, cols, device=device, dtype=dtype)
        key = (str(device), cols, dtype)
        entry = self._arrays.get(key)
        if entry is not None and entry[1] is not None and entry[1]() is not None:
            return torch.empty(rows, cols, device=device, dtype=dtype)  # lent out
        if entry is None or entry[0].size(0) < rows:
            entry = self._arrays[key] = [torch.empty(rows + rows // 4, cols, device=device, dtype=dtype), None]
        entry[1] = weakref.ref(borrower) if borrower is not None else None
        return entry[0][:rows]

    def clear(self) -> None:
        self._arrays.clear()

    def give_back(self, array: torch.Tensor) -> None:
        entry = self._arrays.get((str(array.device), array.size(1), array.dtype))
        if entry is not None and entry[0].data_ptr() == array.data_ptr():
            entry[1] = None


CHUNK_ROWS = 32  # rows of the bf16 CPU loss at a time: 32 × 30,522 fp32 logits, 3.9 MB, stay in cache


class MaskedLMLoss(torch.autograd.Function):
    """Cross-entropy of the vocabulary projection, summed over rows, with its gradient made in one go.

    ``forward(h, weight, bias, labels, scratch)`` writes the logits ``h @ weight.T + bias`` of the masked
    rows into a reused array (from ``scratch``, a ``Scratch``; None: a fresh array each call), takes each row's maximum and the target's logit, and turns the
    array into the softmax in place with PyTorch's row-wise kernel (a row, 120 KB for 30,522 words, stays
    in cache through its passes); the gradient ``softmax - onehot`` is then kept for ``backward``.
    The loss of a row is ``max - log(p_max) - target`` (``p_max``, the largest probability, is at
    least 1 / vocabulary, so nothing underflows); a row is right when its target's logit is the maximum
    (``argmax`` on CPU is ~7× slower than ``amax``; a tie for the maximum counts as right, which only
    an exact float tie can tell apart from ``argmax``). ``F.cross_entropy`` makes the log-softmax, then on
    backward a zeroed one-hot gradient, then the softmax gradient, each over a fresh (masked rows ×
    30,522) array: for Tiny those passes cost as much as the projection itself. Returns (loss summed over
    rows, a bool per row: whether its prediction is right).

    Under bf16 autocast the two products run in bf16 and everything else in fp32 (as
    ``F.cross_entropy(logits.float())`` on autocast logits), and rightness is ``argmax``'s (bf16 logits
    tie often). (Keeping them fp32 on a CPU saves the bf16 copies of the rows x vocabulary arrays but
    measured slower on the Intel AMX kind at 2 threads: 125 against 116 ms a Tiny step.) The same loss and gradients as
    ``F.cross_entropy(h @ weight.T + bias, labels, reduction="sum")`` (tests/test_heads.py).
    """

    @staticmethod
    def forward(ctx, h, weight, bias, labels, scratch=None):
        scratch = scratch if scratch is not None else Scratch()
        kind = h.device.type
        mm_dtype = torch.get_autocast_dtype(kind) if torch.is_autocast_enabled(kind) else h.dtype
        grads = any(ctx.needs_input_grad[:3])
        rows, cols = h.size(0), weight.size(0)
        with torch.autocast(h.device.type, enabled=False):
            if mm_dtype == torch.float32 and h.dtype == weight.dtype == bias.dtype == torch.float32:
                logits = scratch.take(rows, cols, h.device, ctx if grads else None)
                torch.addmm(bias, h, weight.t(), out=logits)
                top = logits.amax(dim=1)
                target = logits.gather(1, labels[:, None]).squeeze(1)
                hits = target == top
            elif kind == "cpu":
                return MaskedLMLoss._low_precision_cpu(ctx, h, weight, bias, labels, scratch, mm_dtype, grads)
            else:
                low = torch.addmm(bias.to(mm_dtype), h.to(mm_dtype), weight.to(mm_dtype).t())
                logits = scratch.take(rows, cols, h.device, ctx if grads else None).copy_(low)
                del low
                top, pred = logits.max(dim=1)
                target = logits.gather(1, labels[:, None]).squeeze(1)
                hits = pred == labels
            torch.ops.aten._softmax.out(logits, 1, False, out=logits)  # in place, row by row
            loss = (top - logits.amax(dim=1).log() - target).sum()
            if grads:
                logits[torch.arange(rows, device=labels.device), labels] -= 1.0
                ctx.save_for_backward(logits, h, weight)
                ctx.mm_dtype = mm_dtype
                ctx.scratch = scratch
            else:
                scratch.give_back(logits)
        ctx.mark_non_differentiable(hits)
        return loss, hits

    @staticmethod
    def _low_precision_cpu(ctx, h, weight, bias, labels, scratch, mm_dtype, grads):
        """The bf16 (autocast) forward on a CPU, ``CHUNK_ROWS`` rows at a time: each chunk's logits come
        out of the bf16 product, go to fp32 in a small array that stays in cache for the maximum, the
        softmax and the gradient, and leave as the bf16 gradient the backward's products read. Over the
        whole (rows × vocabulary) array at once, the fp32 copy, the softmax passes, the conversion back for
        the backward and the bias gradient's sum each went through memory (a third of a Tiny bf16 step)."""
        rows, cols = h.size(0), weight.size(0)
        hl, wl, bl = h.to(mm_dtype), weight.to(mm_dtype), bias.to(mm_dtype)
        step = min(rows, CHUNK_ROWS)
        low = torch.empty(step, cols, dtype=mm_dtype, device=h.device)
        logits = torch.empty(step, cols, device=h.device)
        grad = scratch.take(rows, cols, h.device, ctx if grads else None, dtype=mm_dtype) if grads else None
        grad_b = torch.zeros(cols, device=h.device) if grads else None
        loss = torch.zeros((), device=h.device)
        hits = torch.empty(rows, dtype=torch.bool, device=h.device)
        for i in range(0, rows, step):
            n = min(step, rows - i)
            lab = labels[i:i + n]
            torch.addmm(bl, hl[i:i + n], wl.t(), out=low[:n])
            part = logits[:n].copy_(low[:n])
            top, pred = part.max(dim=1)
            target = part.gather(1, lab[:, None]).squeeze(1)
            hits[i:i + n] = pred == lab
            torch.ops.aten._softmax.out(part, 1, False, out=part)
            loss += (top - part.amax(dim=1).log() - target).sum()
            if grads:
                part[torch.arange(n, device=lab.device), lab] -= 1.0
                grad_b += part.sum(dim=0)
                grad[i:i + n].copy_(part)
        if grads:
            ctx.save_for_backward(grad, hl, wl, grad_b)
            ctx.mm_dtype = mm_dtype
            ctx.scratch = scratch
            ctx.dtypes = (h.dtype, weight.dtype)
            ctx.chunked = True
        ctx.mark_non_differentiable(hits)
        return loss, hits

    @staticmethod
    def backward(ctx, grad_loss, _grad_hits):
        if getattr(ctx, "chunked", False):  # the chunked bf16 forward (``_low_precision_cpu``)
            g, hl, wl, grad_b = ctx.saved_tensors
            scale = grad_loss.float()
            grad_h = grad_w = None
            with torch.autocast("cpu", enabled=False):
                if ctx.needs_input_grad[0]:
                    grad_h = (g @ wl).float().mul_(scale).to(ctx.dtypes[0])
                if ctx.needs_input_grad[1]:
                    grad_w = (g.t() @ hl).float().mul_(scale).to(ctx.dtypes[1])
            ctx.scratch.give_back(g)
            return grad_h, grad_w, grad_b * scale if ctx.needs_input_grad[2] else None, None, None
        grad, h, weight = ctx.saved_tensors
        mm = ctx.mm_dtype
        with torch.autocast(grad.device.type, enabled=False):
            g = grad.to(mm)
            scale = grad_loss.float()
            grad_h = grad_w = grad_b = None
            if ctx.needs_input_grad[0]:
                grad_h = (g @ weight.to(mm)).float().mul_(scale).to(h.dtype)
            if ctx.needs_input_grad[1] and g.dtype == weight.dtype == torch.float32 and g.device.type == "cpu":
                grad_w = torch.addmm(weight, g.t(), h, beta=0, alpha=scale.item())  # the scale in the product
            elif ctx.needs_input_grad[1]:
                grad_w = (g.t() @ h.to(mm)).float().mul_(scale).to(weight.dtype)
            if ctx.needs_input_grad[2]:
                grad_b = grad.sum(dim=0).mul_(scale)
            del g
        ctx.scratch.give_back(grad)
        return grad_h, grad_w, grad_b, None, None


class SparsePretrainer(torch.nn.Module):
    """``BertForPreTraining`` with the MLM head applied to the masked positions only.

    The last encoder layer runs on the rows the heads read too (the masked positions, and ``[CLS]`` for
    NSP): its keys and values come from every position, but its queries, attention output and
    feed-forward layer only from those ~15% of rows, whose outputs are all that the loss sees. For Tiny
    that is most of a layer of two; the result is the same (tests/test_pretrain.py compares loss and
    gradients with HF's full model).

    ``sparse_last_layer=False`` runs the last encoder layer over every position, as HF does (to compare).
    ``attention_bias`` ([(batch,) heads, S, S]) is added to every layer's attention scores in training
    (pre-training's attention scaffold, ``wellread.experiments.cpu_aids``); it needs the training attention
    of ``wellread.modeling.dropout``.

    Returns (MLM loss summed over the masked rows, a bool per masked row: predicted right, NSP logits
    or None). Its parameters are the wrapped model's (prefixed ``net.``), so a data-parallel wrapper
    around it sees the whole forward pass, the loss's vocabulary projection included.
    """

    def __init__(self, net, *, sparse_last_layer: bool = True) -> None:
        super().__init__()
        self.net = net
        self.sparse_last_layer = sparse_last_layer
        self.scratch = Scratch()

    def forward(self, input_ids, token_type_ids, attention_mask, masked_positions, masked_labels, nsp: bool = True,
                attention_bias: torch.Tensor | None = None):
        bert = self.net.bert
        extra = {} if attention_bias is None else {"attention_bias": attention_bias}
        if self.sparse_last_layer and _plain_encoder(bert):
            B, S = input_ids.shape
            wanted = masked_positions
            if nsp:  # [CLS] of every sequence, for the pooler
                wanted = torch.cat([masked_positions, torch.arange(B, device=input_ids.device) * S])
            hidden = bert.embeddings(input_ids=input_ids, token_type_ids=token_type_ids)
            mask = create_bidirectional_mask(config=bert.config, inputs_embeds=hidden, attention_mask=attention_mask)
            *lower, last = bert.encoder.layer
            for layer in lower:
                hidden = layer(hidden, mask, **extra)
            out = last_layer_rows(last, hidden, attention_mask, wanted, attention_bias)
            rows = out[:len(masked_positions)]
            pooled = bert.pooler(out[len(masked_positions):, None]) if nsp else None
        else:
            hidden, pooled = bert(input_ids=input_ids, token_type_ids=token_type_ids, attention_mask=attention_mask,
                                  return_dict=False, **extra)[:2]
            rows = hidden.reshape(-1, hidden.size(-1)).index_select(0, masked_positions)
        head = self.net.cls.predictions
        rows = head.transform(rows)
        mlm_sum, hits = MaskedLMLoss.apply(rows, head.decoder.weight, head.decoder.bias, masked_labels, self.scratch)
        nsp_logits = self.net.cls.seq_relationship(pooled) if nsp else None
        return mlm_sum, hits, nsp_logits


def _plain_encoder(bert) -> bool:
    """A BERT encoder whose last layer ``last_layer_rows`` can run: self-attention only, no chunking."""
    layers = getattr(getattr(bert, "encoder", None), "layer", None)
    c = bert.config
    return (bool(layers) and not c.is_decoder and not c.add_cross_attention and not c.chunk_size_feed_forward
            and hasattr(layers[-1], "feed_forward_chunk") and bert.pooler is not None)


def last_layer_rows(layer, hidden: torch.Tensor, attention_mask: torch.Tensor | None,
                    positions: torch.Tensor, attention_bias: torch.Tensor | None = None) -> torch.Tensor:
    """A ``BertLayer``'s output at ``positions`` (flat indices into batch × length, any order) only.

    Each sequence's wanted rows are gathered into a [batch, most wanted, hidden] block (short ones
    padded with their first row, dropped at the end); they attend to the keys and values of every
    position of their sequence, as in the full layer. In training the rows of ``attention_bias`` for
    those positions are added, as ``wellread.modeling.dropout.attention`` adds them to the full layer.
    """
    B, S, H = hidden.shape
    n = len(positions)
    row = torch.div(positions, S, rounding_mode="floor")
    counts = torch.bincount(row, minlength=B)
    width = max(int(counts.max()), 1) if n else 1
    order = torch.argsort(row, stable=True)
    starts = torch.cumsum(counts, 0) - counts
    slot = torch.empty_like(positions)
    slot[order] = torch.arange(n, device=positions.device) - starts[row[order]]
    sel = (torch.arange(B, device=positions.device) * S)[:, None].repeat(1, width)
    sel[row, slot] = positions
    xq = hidden.reshape(B * S, H).index_select(0, sel.view(-1)).view(B, width, H)

    attn = layer.attention.self
    heads, d = attn.num_attention_heads, attn.attention_head_size
    q = attn.query(xq).view(B, width, heads, d).transpose(1, 2)
    k = attn.key(hidden).view(B, S, heads, d).transpose(1, 2)
    v = attn.value(hidden).view(B, S, heads, d).transpose(1, 2)
    mask = None if attention_mask is None else attention_mask.bool()[:, None, None, :]
    bias = attention_bias if layer.training else None
    if bias is not None:  # bias[(batch,) h, query place, key place]: the rows of the wanted places
        if bias.dim() == 4:
            rows = bias[torch.arange(B, device=sel.device)[:, None], :, sel % S, :S].transpose(1, 2)
        else:
            rows = bias[:, sel % S, :S].transpose(0, 1)
        mask = with_bias(mask, rows.to(q.dtype))
    context, _ = eager_attention(q, k, v, mask, attn.scaling, attn.dropout.p, layer.training)
    context = context.reshape(B, width, H)
    out = layer.feed_forward_chunk(layer.attention.output(context, xq))
    return out.reshape(B * width, H).index_select(0, row * width + slot)


