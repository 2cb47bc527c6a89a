"""The CPU pre-training aids (wellread.experiments.cpu_aids): each starts or biases what it says, and the
paper's path is untouched without them. Their runs end to end are in test_pretrain.py."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from wellread.errors import WellreadError
from wellread.experiments import cpu_aids
from wellread.modeling import models


def test_sinusoidal_positions_are_the_transformer_table_at_bert_init_spread():
    t = cpu_aids.sinusoidal_positions(512, 128, 0.02)
    assert t.shape == (512, 128) and t.dtype == torch.float32
    assert abs(t.std().item() - 0.02) < 1e-6
    assert t[0, 0].item() == 0.0 and t[0, 1].item() > 0
    i = 20
    omega = 10000.0 ** (-2 * i / 128)
    assert t[5, 2 * i].item() == pytest.approx(t[0, 1].item() * torch.sin(torch.tensor(5 * omega, dtype=torch.float64)).item(), rel=1e-5)
    # the dot product of two rows depends on their distance only: what makes "attend to the next word" one thing to learn
    g = t.double() @ t.double().T
    for d in (1, 3, 10):
        assert g[10, 10 + d].item() == pytest.approx(g[300, 300 + d].item(), rel=1e-5)
    assert g[10, 11] > g[10, 13] > g[10, 20]


def test_init_model_starts_position_embeddings_from_the_table_and_only_them(std_tokenizer, tmp_path):
    from transformers import BertForMaskedLM

    plain = models.init_model("tiny", std_tokenizer, seed=4)
    sin = models.init_model("tiny", std_tokenizer, seed=4)
    cpu_aids.set_sinusoidal_positions(sin)
    table = cpu_aids.sinusoidal_positions(512, 128, plain.config.initializer_range)
    for (k, a), (_, b) in zip(plain.state_dict().items(), sin.state_dict().items()):
        if k.endswith("position_embeddings.weight"):
            assert torch.equal(b, table) and not torch.equal(a, b)
        else:
            assert torch.equal(a, b), k
    out = models.save_model(sin, std_tokenizer, tmp_path / "m")
    loaded = BertForMaskedLM.from_pretrained(out)
    assert torch.equal(loaded.bert.embeddings.position_embeddings.weight, table)
    with pytest.raises(WellreadError, match="sinusoidal"):
        cpu_aids.CpuAids(position_init="rope")


def test_unigram_output_bias_is_the_log_frequency_of_the_training_documents(shards, std_tokenizer):
    from wellread.data.pretraining import split_documents
    from wellread.data.shards import load_corpus

    corpus = load_corpus(shards)
    train_docs, held = split_documents(corpus.num_documents, 10)
    counts = np.zeros(corpus.vocab_size)
    for d in train_docs.tolist():
        for i in corpus.document_ids(d).tolist():
            counts[i] += 1
    assert np.array_equal(corpus.token_counts(exclude=held), counts)
    net = models.init_model("tiny", std_tokenizer, hidden_size=32, num_attention_heads=2, intermediate_size=64)
    cpu_aids.set_unigram_output_bias(net, corpus, 10)
    bias = net.cls.predictions.bias.detach().double().numpy()
    expect = counts.copy()
    expect[list(corpus.special_ids.values())] = 0
    expect = np.log((expect + 0.5) / (expect + 0.5).sum())
    assert np.allclose(bias, expect, atol=1e-5)
    assert net.cls.predictions.decoder.bias is net.cls.predictions.bias  # tied: the sparse head reads this one
    the = std_tokenizer.token_to_id("the")
    assert bias[the] > bias[std_tokenizer.token_to_id("[MASK]")] and bias.argmax() in (the, std_tokenizer.token_to_id("."), std_tokenizer.token_to_id(","))


def test_alignment_bias_raises_each_copy_tokens_twin_in_the_last_head():
    bias = cpu_aids.alignment_bias(torch.tensor([3, 0, 1]), heads=2, length=9, value=5.0)
    assert bias.shape == (3, 2, 9, 9) and not bias[:, 0].any() and not bias[1].any()
    # [CLS] a b c [SEP] a b c [SEP]: places 1-3 and 5-7 are twins
    twins = {(1, 5), (2, 6), (3, 7), (5, 1), (6, 2), (7, 3)}
    assert {tuple(ij) for ij in bias[0, 1].nonzero().tolist()} == twins and (bias[0, 1].sum() == 30)
    assert {tuple(ij) for ij in bias[2, 1].nonzero().tolist()} == {(1, 3), (3, 1)}  # [CLS] a [SEP] a [SEP]
