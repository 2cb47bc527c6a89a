"""Word-embedding gradients that stay row-sparse until the optimizer needs them.

A fine-tuning step of Tiny at batch 8 touches ~100 of the 30,522 rows of the word embeddings, yet
PyTorch's dense embedding gradient is a fresh 30,522 × 128 tensor each step: zeroed (15.6 MB),
read again by the clipping norm and scaled in place by it. With small batches that memory traffic,
not the model, is most of a step. Here the embedding returns a sparse gradient (``sparse=True``);
``clip`` takes the global norm over the dense gradients and the coalesced sparse rows, scales both,
and writes the rows into a persistent dense buffer that is all zeros elsewhere; the optimizer (the
same fused AdamW, over every row, as before) reads that buffer as the gradient; ``release`` zeroes
the written rows again. The optimizer sees the same gradient as with dense embedding gradients, so
the update is AdamW's, unchanged (only the order of a few floating-point sums differs).

Used by the loop for untied embeddings of at least ``MIN_ROWS`` rows on one CPU process
(classification models: a pre-training model ties its embeddings to the output layer, whose
gradient is dense anyway).
"""

from __future__ import annotations

import collections

import torch

MIN_ROWS = 4096


class RowSparseGrads:
    def __init__(self, model: torch.nn.Module) -> None:
        uses = collections.Counter(id(p) for m in model.modules() for p in m.parameters(recurse=False))
        self.entries: list[tuple[torch.nn.Embedding, torch.Tensor]] = []
        for m in model.modules():
            if (isinstance(m, torch.nn.Embedding) and not m.sparse and m.num_embeddings >= MIN_ROWS
                    and m.weight.requires_grad and uses[id(m.weight)] == 1 and m.weight.device.type == "cpu"):
                m.sparse = True
                self.entries.append((m, torch.zeros_like(m.weight)))
        self._written: list[tuple[torch.Tensor, torch.Tensor]] = []

    def __bool__(self) -> bool:
        return bool(self.entries)

    def clip(self, params: list[torch.Tensor], max_norm: float) -> None:
        """Clip every gradient to the global norm ``max_norm`` (0: no clipping), as
        ``torch.nn.utils.clip_grad_norm_`` does, and turn the sparse ones into the dense buffers."""
        sparse_ids = {id(m.weight) for m, _ in self.entries}
        dense = [p.grad for p in params if p.grad is not None and id(p) not in sparse_ids]
        rows = []
        for m, buf in self.entries:
            g = m.weight.grad
            if g is None:
                continue
            if g.is_sparse:
                g = g.coalesce()
                rows.append((m.weight, buf, g.indices()[0], g.values()))
            else:  # a dense gradient after all (e.g. the module was used with sparse=False): as it is
                dense.append(g)
        if max_norm > 0:
            norms = list(torch._foreach_norm(dense, 2.0)) + [torch.linalg.vector_norm(v, 2.0) for *_, v in rows]
            if norms:
                total = torch.linalg.vector_norm(torch.stack(norms), 2.0)
                coef = torch.clamp(max_norm / (total + 1e-6), max=1.0)
                if dense:
                    torch._foreach_mul_(dense, coef)
                rows = [(w, buf, idx, vals * coef) for w, buf, idx, vals in rows]
        for w, buf, idx, vals in rows:
            buf.index_copy_(0, idx, vals)
            w.grad = buf
            self._written.append((buf, idx))

    def release(self) -> None:
        """After the optimizer step: the buffers back to zeros, the gradients to None."""
        for buf, idx in self._written:
            buf.index_fill_(0, idx, 0.0)
        self._written.clear()
        for m, _ in self.entries:
            m.weight.grad = None

    def restore(self) -> None:
        for m, _ in self.entries:
            m.sparse = False
        self.entries.clear()
