"""The 24 miniatures: shapes from the paper, parameter counts, names and hub ids."""

from __future__ import annotations

import pytest

from wellread.errors import WellreadError
from wellread.modeling import zoo


def test_there_are_24_miniatures_with_the_papers_shapes():
    assert len(zoo.MINIATURES) == 24
    assert {(m.layers, m.hidden) for m in zoo.MINIATURES} == {(L, H) for L in (2, 4, 6, 8, 10, 12) for H in (128, 256, 512, 768)}
    for m in zoo.MINIATURES:
        cfg = m.bert_config()
        assert cfg.num_attention_heads == m.hidden // 64
        assert cfg.intermediate_size == 4 * m.hidden
        assert cfg.vocab_size == 30522 and cfg.max_position_embeddings == 512


def test_every_config_builds_and_its_parameter_count_matches_the_formula():
    for m in zoo.MINIATURES:
        assert zoo.parameter_count(m) == m.parameter_formula(), m.name


def test_parameter_counts_match_the_published_checkpoints():
    # bert-base-uncased (BertModel with pooler) has 109,482,240 parameters; prajjwal1/bert-tiny 4,385,920.
    assert zoo.get("base").parameter_formula() == 109_482_240
    assert zoo.get("tiny").parameter_formula() == 4_385_920


def test_a_real_build_counts_the_same_as_the_meta_build():
    from transformers import BertModel

    m = zoo.get("tiny")
    model = BertModel(m.bert_config())
    assert sum(p.numel() for p in model.parameters()) == zoo.parameter_count(m)


@pytest.mark.parametrize(
    "name, lh",
    [("tiny", (2, 128)), ("Mini", (4, 256)), ("small", (4, 512)), ("medium", (8, 512)), ("base", (12, 768)),
     ("L-6_H-256", (6, 256)), ("l-10_h-512", (10, 512)), ("google/bert_uncased_L-4_H-128_A-2", (4, 128)),
     ("prajjwal1/bert-medium", (8, 512)), ("uncased_L-12_H-768_A-12", (12, 768))],
)
def test_names_aliases_and_hub_ids_resolve(name, lh):
    m = zoo.get(name)
    assert (m.layers, m.hidden) == lh


def test_hub_ids_and_zip_urls():
    assert zoo.get("tiny").hub_id == "prajjwal1/bert-tiny"
    assert zoo.get("L-6_H-512").hub_id == "google/bert_uncased_L-6_H-512_A-8"
    assert zoo.get("base").hub_id == "google/bert_uncased_L-12_H-768_A-12"
    assert zoo.get("mini").zip_url == "https://storage.googleapis.com/bert_models/2020_02_20/uncased_L-4_H-256_A-4.zip"


@pytest.mark.parametrize("bad, hint", [("tinny", "tiny"), ("L-3_H-128", r"L-\d_H-128"), ("smal", "small")])
def test_an_unknown_name_is_refused_with_a_suggestion(bad, hint):
    with pytest.raises(WellreadError, match=f"did you mean .*{hint}"):
        zoo.get(bad)
