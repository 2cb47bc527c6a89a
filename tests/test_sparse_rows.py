"""Row-sparse embedding gradients: the same clipped gradient and AdamW steps as PyTorch's dense path."""

from __future__ import annotations

import copy

import pytest
import torch

from wellread.train.loop import TrainConfig, configure_optimizer
from wellread.train.sparse_rows import RowSparseGrads


def classifier():
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    config = BertConfig(vocab_size=5000, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, num_labels=2)
    return BertForSequenceClassification(config)


@pytest.mark.parametrize("clip", [1.0, 0.05, 0.0])
def test_steps_equal_the_dense_path(clip):
    dense, sparse = classifier(), copy.deepcopy(classifier())
    cfg = TrainConfig(lr=1e-2, epochs=1, weight_decay=0.01)
    opt_d = configure_optimizer(dense, cfg, torch.device("cpu"))
    opt_s = configure_optimizer(sparse, cfg, torch.device("cpu"))
    rows = RowSparseGrads(sparse)
    assert [m.num_embeddings for m, _ in rows.entries] == [5000]  # only the word embeddings
    params = [p for p in sparse.parameters() if p.requires_grad]
    g = torch.Generator().manual_seed(1)
    for _ in range(4):
        ids = torch.randint(0, 5000, (8, 12), generator=g)
        ids[:, :3] = 7  # repeated tokens: the sparse rows must be summed
        labels = torch.randint(0, 2, (8,), generator=g)
        for model in (dense, sparse):
            model(input_ids=ids, labels=labels).loss.backward()
        assert sparse.bert.embeddings.word_embeddings.weight.grad.is_sparse
        if clip > 0:
            torch.nn.utils.clip_grad_norm_(dense.parameters(), clip)
        rows.clip(params, clip)
        for (n, a), b in zip(dense.named_parameters(), sparse.parameters()):
            torch.testing.assert_close(b.grad, a.grad, rtol=1e-5, atol=1e-7, msg=n)
        opt_d.step()
        opt_s.step()
        rows.release()
        opt_d.zero_grad(set_to_none=True)
        opt_s.zero_grad(set_to_none=True)
        for (n, a), b in zip(dense.named_parameters(), sparse.parameters()):
            torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-6, msg=n)
    assert all(not buf.any() for _, buf in rows.entries)  # the buffers are zero again between steps
    rows.restore()
    assert not sparse.bert.embeddings.word_embeddings.sparse


def test_tied_embeddings_are_left_dense():
    from transformers import BertConfig, BertForMaskedLM

    model = BertForMaskedLM(BertConfig(vocab_size=5000, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                       intermediate_size=64))
    assert not RowSparseGrads(model)  # the decoder shares the word embeddings' weight
