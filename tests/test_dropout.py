"""The fast CPU dropout: its drop rate, scaling and gradient, and a BERT that uses it computes what transformers does."""

from __future__ import annotations

import pytest
import torch

from wellread import modeling
from wellread.train.dropout import fast_dropout, keep_mask, restore, use_fast_dropout


def test_drop_rate_scaling_and_gradient():
    torch.manual_seed(0)
    x = torch.randn(64, 128, 129, requires_grad=True)  # an odd element count: the last 16-bit half is used
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
    net = modeling.load_model(small_model_dir, "base")
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
    net = modeling.load_model(small_model_dir, "base", hidden_dropout_prob=1e-9, attention_probs_dropout_prob=1e-9)
    ids = torch.tensor([[2, 5, 9, 11, 3, 0, 0], [2, 7, 8, 4, 6, 10, 3]])
    mask = (ids != 0).long()
    with torch.no_grad():
        want = net(input_ids=ids, attention_mask=mask).last_hidden_state  # eval: transformers' attention
        use_fast_dropout(net)
        net.train()  # our eager path with (practically) nothing dropped, on the original's padding mask
        got = net(input_ids=ids, attention_mask=mask).last_hidden_state
    torch.testing.assert_close(got[mask.bool()], want[mask.bool()], atol=1e-5, rtol=1e-5)
