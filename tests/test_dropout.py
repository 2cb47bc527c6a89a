"""The fast CPU dropout: its drop rate, scaling and gradient, and a BERT that uses it computes what transformers does."""

from __future__ import annotations

import pytest
import torch

from wellread.modeling.dropout import fast_dropout, keep_mask, restore, use_fast_dropout
from wellread.modeling.models import load_model


def test_drop_rate_scaling_and_gradient():
    torch.manual_seed(0)
    x = torch.randn(64, 128, 129, requires_grad=True)  # an element count not a multiple of four uniforms a word
    y = fast_dropout(x, 0.1)
    dropped = y == 0
    assert abs(dropped.float().mean().item() - 0.1) < 0.002
    torch.testing.assert_close(y[~dropped], x[~dropped] / 0.9)
    y.sum().backward()
    torch.testing.assert_close(x.grad, (~dropped).float() / 0.9)
    assert fast_dropout(x, 0.1, training=False) is x and fast_dropout(x, 0.0) is x


def test_masks_follow_the_seed_and_are_not_repeated():
    torch.manual_seed(3)
    a, b = keep_mask((1000,), 0.5), keep_mask((1000,), 0.5)
    torch.manual_seed(3)
    assert torch.equal(keep_mask((1000,), 0.5), a)
    assert not torch.equal(a, b)
    assert abs(a.float().mean().item() - 0.5) < 0.06


@pytest.mark.parametrize("p", [0.3, 0.5])
def test_rate_for_other_probabilities(p):
    torch.manual_seed(1)
    assert abs(1 - keep_mask((200_000,), p).float().mean().item() - p) < 0.005


def test_bert_with_fast_dropout_equals_transformers_without_dropout(small_model_dir):
    net = load_model(small_model_dir, "base")
    ids = torch.tensor([[2, 5, 9, 11, 3, 0, 0], [2, 7, 8, 4, 6, 10, 3]])
    mask = (ids != 0).long()
    with torch.no_grad():
        want = net(input_ids=ids, attention_mask=mask).last_hidden_state
        saved = use_fast_dropout(net)
        assert net.config._attn_implementation.startswith("wellread_")
        got = net(input_ids=ids, attention_mask=mask).last_hidden_state  # eval mode: transformers' own attention
        assert torch.equal(got, want)  # so dev scores during training equal the saved model's
        net.train()
        torch.manual_seed(0)
        noisy = net(input_ids=ids, attention_mask=mask).last_hidden_state
        assert not torch.allclose(noisy, got)
    restore(saved)
    assert not any(type(m).__name__ == "FastDropout" for m in net.modules())
    assert not net.config._attn_implementation.startswith("wellread")
    assert not any("wellread" in k for k in net.config.to_dict())


def test_training_attention_masks_padding_as_transformers_does(small_model_dir):
    net = load_model(small_model_dir, "base", hidden_dropout_prob=1e-9, attention_probs_dropout_prob=1e-9)
    ids = torch.tensor([[2, 5, 9, 11, 3, 0, 0], [2, 7, 8, 4, 6, 10, 3]])
    mask = (ids != 0).long()
    with torch.no_grad():
        want = net(input_ids=ids, attention_mask=mask).last_hidden_state  # eval: transformers' attention
        use_fast_dropout(net)
        net.train()  # our eager path with (practically) nothing dropped, on the original's padding mask
        got = net(input_ids=ids, attention_mask=mask).last_hidden_state
    torch.testing.assert_close(got[mask.bool()], want[mask.bool()], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("mask_kind", ["none", "bool", "additive"])
def test_fused_attention_core_equals_the_eager_composition(mask_kind):
    """Same dropout mask (same seed), same output and gradients as softmax(q kᵀ s + mask) -> dropout -> v."""
    from wellread.modeling.dropout import _AttentionCore

    b, s, h, d, p = 4, 48, 3, 16, 0.1
    g = torch.Generator().manual_seed(0)
    proj = [torch.randn(b, s, h * d, generator=g, requires_grad=True) for _ in range(3)]
    heads = [x.view(b, s, h, d).transpose(1, 2) for x in proj]  # transformers' head-strided views
    lengths = torch.tensor([48, 30, 41, 5])
    keep_key = torch.arange(s)[None, :] < lengths[:, None]
    mask = {"none": None, "bool": keep_key[:, None, None, :].expand(b, 1, s, s),
            "additive": torch.where(keep_key, 0.0, torch.finfo(torch.float32).min)[:, None, None, :]}[mask_kind]
    up = torch.randn(b, s, h, d, generator=g)

    torch.manual_seed(5)
    out, weights = _AttentionCore.apply(*heads, mask, d ** -0.5, p)
    (out * up).sum().backward()
    got = [x.grad.clone() for x in proj]
    for x in proj:
        x.grad = None

    torch.manual_seed(5)
    scores = torch.matmul(heads[0], heads[1].transpose(2, 3)) * d ** -0.5
    if mask is not None:
        scores = scores.masked_fill(~mask, torch.finfo(scores.dtype).min) if mask.dtype == torch.bool else scores + mask
    keep = keep_mask((b, h, s, s), p)
    want_out = torch.matmul(scores.softmax(-1) * keep / (1 - p), heads[2]).transpose(1, 2)
    (want_out * up).sum().backward()
    torch.testing.assert_close(out, want_out, atol=1e-5, rtol=1e-5)
    assert out.is_contiguous() and not weights.requires_grad
    assert 0.05 < (weights == 0).float().mean().item() < 0.2 + (0.7 if mask_kind != "none" else 0)
    for a, w in zip(got, proj):
        torch.testing.assert_close(a, w.grad, atol=1e-5, rtol=1e-5)


def test_bert_trains_the_same_with_the_fused_attention(small_model_dir):
    """A training step of a BERT (padding in the batch) with the fused core equals one with the eager path."""
    ids = torch.randint(5, 1000, (8, 64), generator=torch.Generator().manual_seed(1))
    ids[3, 40:] = 0
    ids[6, 9:] = 0
    results = []
    for fused in (True, False):
        net = load_model(small_model_dir, "base")
        use_fast_dropout(net, fused_attention=fused)
        net.train()
        torch.manual_seed(0)
        out = net(input_ids=ids, attention_mask=(ids != 0).long()).last_hidden_state
        out.pow(2).mean().backward()
        results.append((out.detach(), {n: w.grad for n, w in net.named_parameters() if w.grad is not None}))
    (a, ga), (b, gb) = results
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    assert set(ga) == set(gb) and len(ga) > 10
    for n in ga:
        torch.testing.assert_close(ga[n], gb[n], atol=1e-5, rtol=1e-4, msg=n)


@pytest.mark.parametrize("fused", [True, False])
@pytest.mark.parametrize("mask_kind", ["none", "bool", "additive"])
def test_training_attention_adds_the_pretraining_scaffold_per_head(fused, mask_kind):
    """Given the scaffold's [heads, S, S] bias, training attention is softmax(q kᵀ s + mask + bias); evaluation
    leaves it out."""
    from types import SimpleNamespace

    from wellread.experiments.cpu_aids import attention_scaffold
    from wellread.modeling import dropout

    b, s, h, d, p = 3, 80, 2, 16, 0.1  # 38,400 scores: our dropout's masks (smaller ones use PyTorch's)
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(b, s, h * d, generator=g).view(b, s, h, d).transpose(1, 2) for _ in range(3))
    keep_key = torch.arange(s)[None, :] < torch.tensor([80, 25, 63])[:, None]
    mask = {"none": None, "bool": keep_key[:, None, None, :].expand(b, 1, s, s),
            "additive": torch.where(keep_key, 0.0, torch.finfo(torch.float32).min)[:, None, None, :]}[mask_kind]
    bias = attention_scaffold(SimpleNamespace(num_attention_heads=h), 128)
    assert bias[0, 10, 11] == -1.0 and bias[1, 10, 13] == -1.5 and bias[0, 7, 7] == 0.0
    module = SimpleNamespace(training=True, config=SimpleNamespace(_wellread_attention="eager"))

    torch.manual_seed(5)
    out, _ = dropout.attention(module, q, k, v, mask, dropout=p, attention_bias=bias * 0.5, fused=fused)
    torch.manual_seed(5)
    scores = torch.matmul(q, k.transpose(2, 3)) * d ** -0.5 + 0.5 * bias[:, :s, :s]
    if mask is not None:
        scores = scores.masked_fill(~mask, torch.finfo(scores.dtype).min) if mask.dtype == torch.bool else scores + mask
    want = torch.matmul(scores.softmax(-1) * keep_mask((b, h, s, s), p) / (1 - p), v).transpose(1, 2)
    torch.testing.assert_close(out, want, atol=1e-5, rtol=1e-5)
    module.training = False
    plain, _ = dropout.attention(module, q, k, v, mask, attention_bias=bias * 0.5, fused=fused)
    evaluated, _ = dropout.attention(module, q, k, v, mask, fused=fused)
    torch.testing.assert_close(plain, evaluated, atol=0, rtol=0)


def test_with_a_gpu_only_the_scaffold_keeps_our_attention(small_model_dir, monkeypatch):
    from wellread.modeling.dropout import FastDropout, fast_cpu_dropout

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    net = load_model(small_model_dir, "base")
    with fast_cpu_dropout(net):
        assert not hasattr(net.config, "_wellread_attention")
    with fast_cpu_dropout(net, attention=True):
        assert net.config._attn_implementation.startswith("wellread")  # the scaffold is applied...
        assert not any(isinstance(m, FastDropout) for m in net.modules())  # ...PyTorch's dropout stays
    assert not hasattr(net.config, "_wellread_attention")
