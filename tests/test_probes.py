"""wellread.eval.probes (benchmarks/word_order_probe.py, stsb_overlap.py): shuffling keeps each row's tokens and
special places; a model without position embeddings is blind to order by construction, one with them is not."""

from __future__ import annotations

import torch

from wellread.data.masking import shuffle_context
from wellread.data.pretraining import PretrainingDataset
from wellread.data.shards import load_corpus
from wellread.eval import probes
from wellread.modeling.models import init_model, save_model


def test_shuffle_keeps_each_rows_tokens_and_the_special_places():
    ids = torch.tensor([[101, 7, 8, 103, 9, 10, 102, 0, 0], [101, 11, 12, 13, 103, 14, 15, 16, 102]])
    fixed = torch.tensor([0, 100, 101, 102, 103])
    out = shuffle_context(ids, fixed, torch.Generator().manual_seed(1))
    special = torch.isin(ids, fixed)
    assert torch.equal(out[special], ids[special])
    for r in range(2):
        assert sorted(out[r].tolist()) == sorted(ids[r].tolist())
    assert not torch.equal(out, ids)


def test_shuffle_keeps_a_pairs_tokens_in_their_own_segment():
    ids = torch.tensor([[101, 7, 8, 9, 103, 10, 102, 21, 22, 23, 24, 103, 102]])
    types = torch.tensor([[0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1]])
    fixed = torch.tensor([0, 100, 101, 102, 103])
    seen = set()
    for seed in range(20):
        out = shuffle_context(ids, fixed, torch.Generator().manual_seed(seed), types)
        assert sorted(out[0, :7].tolist()) == sorted(ids[0, :7].tolist())  # A's tokens stay in A
        assert sorted(out[0, 7:].tolist()) == sorted(ids[0, 7:].tolist())
        assert torch.equal(out[torch.isin(ids, fixed)], ids[torch.isin(ids, fixed)])
        seen.add(tuple(out[0].tolist()))
    assert len(seen) > 5  # and both segments do get shuffled


def test_probe_sees_no_order_in_a_model_without_positions_and_some_in_one_with(tmp_path, std_tokenizer, shards):
    corpus = load_corpus(shards)
    held = PretrainingDataset(corpus, batch_size=8, split="eval", nsp=False, tokenizer=std_tokenizer,
                              eval_documents=4, max_seq_length=64)
    batches = list(held)[:2]
    unigram = torch.log(torch.full((corpus.vocab_size,), 1.0 / corpus.vocab_size))
    kw = dict(hidden_size=32, num_attention_heads=2, intermediate_size=64, hidden_dropout_prob=0.0,
              attention_probs_dropout_prob=0.0)
    with_pos = init_model("tiny", std_tokenizer, seed=0, initializer_range=0.5, **kw)
    without = init_model("tiny", std_tokenizer, seed=0, initializer_range=0.5, **kw)
    with torch.no_grad():
        without.bert.embeddings.position_embeddings.weight.zero_()
    results = {}
    for name, net in (("with", with_pos), ("without", without)):
        results[name] = probes.word_order_probe(save_model(net, std_tokenizer, tmp_path / name), batches,
                                    corpus.special_ids, unigram)
    blind = results["without"]
    assert abs(blind["order shuffled"]["loss"] - blind["as is"]["loss"]) < 1e-4
    seeing = results["with"]
    assert abs(seeing["order shuffled"]["loss"] - seeing["as is"]["loss"]) > 1e-3
    assert blind["unigram"]["loss"] == seeing["unigram"]["loss"]



def test_twin_attention_is_one_for_uniform_attention_and_counts_only_twins_in_b(tmp_path, std_tokenizer):
    """The twin attention (benchmarks/stsb_overlap.py): exactly 1× uniform for a real model whose heads attend
    uniformly (query and key weights zero); for hand-made attention, all weight on the twin in B gives
    (pair length / twins) ×, weight on the token itself or on B's other tokens 0×."""
    net = init_model("tiny", std_tokenizer, seed=0, hidden_size=64, num_attention_heads=2, intermediate_size=128)
    with torch.no_grad():
        for layer in net.bert.encoder.layer:
            for lin in (layer.attention.self.query, layer.attention.self.key):
                lin.weight.zero_()
                lin.bias.zero_()
    a = ["a man is playing a guitar .", "the cat sat on the mat ."]
    b = ["a man plays the guitar .", "a dog sat on a log ."]
    from transformers import BertModel

    path = save_model(net, std_tokenizer, tmp_path / "u")
    model = BertModel.from_pretrained(path, add_pooling_layer=False, attn_implementation="eager").eval()
    uniform = probes.twin_attention(model, std_tokenizer, a, b)
    assert uniform.shape == (2, 2)
    torch.testing.assert_close(torch.from_numpy(uniform), torch.ones(2, 2), atol=1e-5, rtol=1e-5)

    # [CLS] x y [SEP] y z [SEP] [PAD]: y (place 2) has one twin (place 4) among 7 real places
    ids = torch.tensor([[101, 7, 8, 102, 8, 9, 102, 0]])
    types = torch.tensor([[0, 0, 0, 0, 1, 1, 1, 0]])
    mask = torch.tensor([[1, 1, 1, 1, 1, 1, 1, 0]])
    att = torch.zeros(1, 1, 3, 8, 8)
    att[0, 0, 0, :, 4] = 1.0  # head 0: everything on place 4, the twin of place 2
    att[0, 0, 1, :, 2] = 1.0  # head 1: on place 2 itself
    att[0, 0, 2, :, 5] = 1.0  # head 2: on z, in B but no twin
    got, n = probes.twin_share(att, ids, types, mask, 102)
    assert n == 1
    torch.testing.assert_close(got, torch.tensor([[7.0, 0.0, 0.0]]))
