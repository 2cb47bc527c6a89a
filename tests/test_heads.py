"""The masked-only pre-training head (wellread.modeling.heads): its loss equals cross-entropy over the full
projection, its scratch array is shared only when free, and the last layer on the wanted rows equals the full
layer's output there. The objective around it is tested in test_pretrain.py."""

from __future__ import annotations

import pytest
import torch

from wellread.experiments import cpu_aids
from wellread.modeling import heads
from wellread.modeling.models import init_model


@pytest.mark.parametrize("bf16", [False, True])
def test_masked_lm_loss_equals_cross_entropy(bf16):
    g = torch.Generator().manual_seed(0)
    h0, w0, b0 = torch.randn(40, 16, generator=g), torch.randn(500, 16, generator=g) * 0.3, torch.randn(500, generator=g)
    labels = torch.randint(0, 500, (40,), generator=g)
    results = []
    for fused in (True, False):
        h, w, b = (t.clone().requires_grad_() for t in (h0, w0, b0))
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            if fused:
                loss, hits = heads.MaskedLMLoss.apply(h, w, b, labels)
                correct = hits.sum()
            else:
                logits = torch.nn.functional.linear(h, w, b).float()
                loss = torch.nn.functional.cross_entropy(logits, labels, reduction="sum")
                correct = (logits.argmax(-1) == labels).sum()
        (loss * 0.5).backward()  # a non-unit upstream gradient
        results.append((loss.detach(), int(correct), h.grad, w.grad, b.grad))
    (fl, fc, *fg), (rl, rc, *rg) = results
    tol = dict(rtol=2e-2, atol=2e-2) if bf16 else dict(rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(fl, rl, **tol)
    assert abs(fc - rc) <= (2 if bf16 else 0)
    for a, b in zip(fg, rg):
        torch.testing.assert_close(a, b, **tol)


def test_masked_lm_loss_reuses_its_array_only_when_free():
    """The logits array is reused across steps, but two graphs alive at once never share it."""
    g = torch.Generator().manual_seed(1)
    h0, w0, b0 = torch.randn(30, 32, generator=g), torch.randn(3000, 32, generator=g) * 0.3, torch.randn(3000, generator=g)
    batches = [torch.randint(0, 3000, (30,), generator=g) for _ in range(2)]
    want = []
    for labels in batches:
        h, w, b = (t.clone().requires_grad_() for t in (h0, w0, b0))
        torch.nn.functional.cross_entropy(torch.nn.functional.linear(h, w, b), labels, reduction="sum").backward()
        want.append((h.grad, w.grad, b.grad))
    scratch = heads.Scratch()  # a SparsePretrainer's own
    leaves = [[t.clone().requires_grad_() for t in (h0, w0, b0)] for _ in batches]
    losses = [heads.MaskedLMLoss.apply(*leaf, labels, scratch)[0] for leaf, labels in zip(leaves, batches)]  # both alive
    for loss in reversed(losses):
        loss.backward()
    for leaf, grads in zip(leaves, want):
        for t, expected in zip(leaf, grads):
            torch.testing.assert_close(t.grad, expected, rtol=1e-5, atol=1e-5)
    h, w, b = leaves[0]
    first = scratch.take(30, 3000, h.device)  # free again after the backward passes: the same array
    assert first.data_ptr() == scratch.take(30, 3000, h.device).data_ptr()
    with torch.no_grad():
        loss, _ = heads.MaskedLMLoss.apply(h, w, b, batches[0], scratch)  # evaluation: borrows and returns it at once
    torch.testing.assert_close(loss, losses[0].detach())
    assert scratch.take(30, 3000, h.device).data_ptr() == first.data_ptr()
    # a graph kept for a second backward after the array was lent again: autograd refuses, never wrong gradients
    loss, _ = heads.MaskedLMLoss.apply(h, w, b, batches[0], scratch)
    loss.backward(retain_graph=True)
    heads.MaskedLMLoss.apply(h, w, b, batches[1], scratch)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        loss.backward()


@pytest.mark.parametrize("training", [False, True, "per-sequence"])
def test_last_layer_on_the_wanted_rows_equals_the_full_layer(std_tokenizer, training):
    """The last layer run on a few rows (any order, sequences with padding, one sequence with none wanted)
    gives the full layer's output at those rows; in training with the attention scaffold too, and with a
    scaffold per sequence (copy pairs' alignment)."""
    from wellread.modeling.dropout import fast_cpu_dropout

    net = init_model("tiny", std_tokenizer, seed=0, hidden_size=64, num_attention_heads=4,
                              intermediate_size=128, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    g = torch.Generator().manual_seed(0)
    B, S = 4, 24
    ids = torch.randint(1000, 5000, (B, S), generator=g)
    mask = torch.ones(B, S, dtype=torch.long)
    mask[1, 15:] = 0
    mask[3, 5:] = 0
    positions = torch.tensor([1 * S + 3, 0 * S + 7, 0 * S + 2, 3 * S + 4, 1 * S + 14, 0 * S + 23, 1 * S + 0])
    bert = net.bert
    with fast_cpu_dropout(net), torch.no_grad():
        net.train(bool(training))
        bias = None
        if training:
            bias = cpu_aids.attention_scaffold(net.config, S, heads=3) * 0.7
            if training == "per-sequence":
                bias = bias[None] + cpu_aids.alignment_bias(torch.tensor([5, 0, 11, 2]), 4, S, 3.0)
        extra = {} if bias is None else {"attention_bias": bias}
        full = bert(input_ids=ids, attention_mask=mask, **extra).last_hidden_state.reshape(B * S, -1)[positions]
        hidden = bert.embeddings(input_ids=ids)
        m = heads.create_bidirectional_mask(config=bert.config, inputs_embeds=hidden, attention_mask=mask)
        for layer in bert.encoder.layer[:-1]:
            hidden = layer(hidden, m, **extra)
        rows = heads.last_layer_rows(bert.encoder.layer[-1], hidden, mask, positions, bias)
        if training:  # the scaffold matters here, so the rows must have taken their own places' penalty
            plain = bert(input_ids=ids, attention_mask=mask).last_hidden_state.reshape(B * S, -1)[positions]
            assert (plain - full).abs().max() > 1e-3
    torch.testing.assert_close(rows, full, atol=1e-5, rtol=1e-5)
