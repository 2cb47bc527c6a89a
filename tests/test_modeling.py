"""HF-layout models: initialise, save, load strictly; real all-MiniLM-L6-v2 weights round-trip exactly."""

from __future__ import annotations

import hashlib
import json

import pytest
import torch

from tests.conftest import data_path
from wellread import tokenization
from wellread.errors import WellreadError
from wellread.modeling import models


def sst2_dev_sentences(n: int = 32) -> list[str]:
    with open(data_path("glue", "SST-2", "dev.tsv"), encoding="utf-8") as f:
        next(f)
        return [next(f).split("\t")[0] for _ in range(n)]


def _batch(tok, sentences):
    tok.enable_padding(pad_id=tok.token_to_id("[PAD]"), pad_token="[PAD]")
    try:
        encs = tok.encode_batch(sentences)
    finally:
        tok.no_padding()
    return {
        "input_ids": torch.tensor([e.ids for e in encs]),
        "attention_mask": torch.tensor([e.attention_mask for e in encs]),
        "token_type_ids": torch.tensor([e.type_ids for e in encs]),
    }


def test_our_loader_gives_transformers_hidden_states_on_real_minilm_weights(minilm_dir):
    from transformers import AutoModel

    ours, tok = models.load_pretrained(minilm_dir)
    ref = AutoModel.from_pretrained(minilm_dir).eval()
    batch = _batch(tok, sst2_dev_sentences())
    with torch.no_grad():
        a = ours(**batch).last_hidden_state
        b = ref(**batch).last_hidden_state
    assert a.shape == (32, batch["input_ids"].shape[1], 384)
    assert (a - b).abs().max().item() <= 1e-5


def test_saving_minilm_with_our_writer_and_reloading_is_exact(minilm_dir, tmp_path):
    model, tok = models.load_pretrained(minilm_dir)
    out = models.save_model(model, tok, tmp_path / "minilm")
    again, tok2 = models.load_pretrained(out)
    a, b = model.state_dict(), again.state_dict()
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert tokenization.vocab_list(tok2) == tokenization.vocab_list(tok)


def test_init_writes_the_hf_layout_that_transformers_loads_without_missing_weights(std_tokenizer, tmp_path):
    from transformers import AutoModel, AutoModelForMaskedLM, AutoTokenizer, BertForPreTraining

    out = models.save_model(models.init_model("tiny", std_tokenizer, seed=3), std_tokenizer, tmp_path / "tiny")
    assert {p.name for p in out.iterdir()} >= {"config.json", "model.safetensors", "vocab.txt", "tokenizer.json",
                                                "tokenizer_config.json", "special_tokens_map.json"}
    cfg = json.loads((out / "config.json").read_text())
    assert (cfg["num_hidden_layers"], cfg["hidden_size"], cfg["num_attention_heads"], cfg["intermediate_size"]) == (2, 128, 2, 512)
    for cls in (AutoModel, AutoModelForMaskedLM, BertForPreTraining):
        _, info = cls.from_pretrained(out, output_loading_info=True)
        assert not info["missing_keys"], (cls.__name__, info["missing_keys"])
        assert not info.get("mismatched_keys"), (cls.__name__, info["mismatched_keys"])
    hf_tok = AutoTokenizer.from_pretrained(out)
    assert hf_tok("a well-read student")["input_ids"] == std_tokenizer.encode("a well-read student").ids


def test_the_same_seed_gives_the_same_weights_bit_for_bit(tiny_test_vocab, tmp_path):
    tok = tokenization.load_tokenizer(tiny_test_vocab)
    digests = []
    for i, seed in enumerate((7, 7, 8)):
        out = models.save_model(models.init_model("L-2_H-128", tok, seed=seed), tok, tmp_path / f"m{i}")
        digests.append(hashlib.sha256((out / "model.safetensors").read_bytes()).hexdigest())
    assert digests[0] == digests[1] != digests[2]


def test_a_missing_or_mis_shaped_weight_is_an_error_not_a_random_init(tiny_test_vocab, tmp_path):
    from safetensors.torch import load_file, save_file

    tok = tokenization.load_tokenizer(tiny_test_vocab)
    out = models.save_model(models.init_model("tiny", tok), tok, tmp_path / "m")
    state = load_file(out / "model.safetensors")
    dropped = {k: v for k, v in state.items() if "layer.1.output.dense.weight" not in k}
    save_file(dropped, out / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(WellreadError, match="missing.*layer.1.output.dense.weight"):
        models.load_model(out)
    state["bert.pooler.dense.weight"] = torch.zeros(128, 64)
    save_file(state, out / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(WellreadError, match=r"pooler.dense.weight has shape \(128, 64\)"):
        models.load_model(out)


def test_a_failed_save_leaves_the_previous_model_untouched(tiny_test_vocab, tmp_path, monkeypatch):
    tok = tokenization.load_tokenizer(tiny_test_vocab)
    out = models.save_model(models.init_model("tiny", tok, seed=1), tok, tmp_path / "m")
    before = {p.name: p.read_bytes() for p in out.iterdir()}

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(models, "write_tokenizer_files", boom)
    with pytest.raises(OSError):
        models.save_model(models.init_model("tiny", tok, seed=2), tok, out)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert [p.name for p in tmp_path.iterdir()] == ["m"], "no temporary directory is left behind"


def test_an_output_directory_with_other_content_is_refused(tiny_test_vocab, tmp_path):
    tok = tokenization.load_tokenizer(tiny_test_vocab)
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(WellreadError, match="holds other content"):
        models.save_model(models.init_model("tiny", tok), tok, tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"]


