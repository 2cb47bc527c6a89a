"""Converting Google BERT TF checkpoints to the HF layout: outputs equal the source model's, bad input
is refused. The fixture is a real TF checkpoint (see tests/fixtures/make_tf_checkpoint.py)."""

from __future__ import annotations

import json
import os
import shutil
import stat
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from wellread import cli
from wellread.errors import WellreadError
from wellread.modeling import convert
from wellread.modeling.models import load_model, read_weights

FIXTURE = Path(__file__).parent / "fixtures" / "tf_bert"
MAKER = Path(__file__).parent / "fixtures" / "make_tf_checkpoint.py"
CKPT_FILES = ("bert_config.json", "vocab.txt", "bert_model.ckpt.index", "bert_model.ckpt.data-00000-of-00001")


def maker():
    """The fixture's maker script as a module (for its texts and names)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("make_tf_checkpoint", MAKER)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def expected(name: str) -> np.ndarray:
    return np.load(FIXTURE / f"{name}.npy")


def fixture_inputs() -> dict[str, torch.Tensor]:
    return {"input_ids": torch.from_numpy(expected("input_ids")).long(),
            "token_type_ids": torch.from_numpy(expected("token_type_ids")).long()}


def make_zip(path: Path, src: Path = FIXTURE, *, extra: dict[str, bytes] | None = None, folder: str = "") -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name in CKPT_FILES:
            zf.write(src / name, folder + name)
        for name, data in (extra or {}).items():
            zf.writestr(name, data)
    return path


def copy_ckpt(tmp_path: Path) -> Path:
    dst = tmp_path / "ckpt"
    dst.mkdir()
    for name in CKPT_FILES:
        shutil.copy(FIXTURE / name, dst / name)
    return dst


@pytest.fixture(scope="module")
def converted(tmp_path_factory) -> tuple[Path, convert.ConvertResult]:
    out = tmp_path_factory.mktemp("converted") / "model"
    return out, convert.convert(FIXTURE, out)


def test_tf1_checkpoint_converts_to_the_source_models_outputs(converted):
    """transformers loads the converted directory and reproduces what the source model computed
    (hidden states, pooler, MLM and NSP logits) within 1e-6; optimizer state was skipped."""
    from transformers import BertForPreTraining, BertModel

    out, result = converted
    assert result.naming == "tf1" and result.model_class == "BertForPreTraining"
    assert result.heads == ["pooler", "mlm", "nsp"] and result.tensors == 46
    assert result.skipped == {"adam_m": 46, "adam_v": 46, "global_step": 1}
    model = BertForPreTraining.from_pretrained(out).eval()
    with torch.no_grad():
        res = model(**fixture_inputs(), output_hidden_states=True)
        pooled = model.bert(**fixture_inputs()).pooler_output
    np.testing.assert_allclose(torch.stack(res.hidden_states)[:, 0].numpy(), expected("hidden_states"), rtol=0, atol=1e-6)
    np.testing.assert_allclose(pooled[0].numpy(), expected("pooler_output"), rtol=0, atol=1e-6)
    np.testing.assert_allclose(res.prediction_logits[0].numpy(), expected("mlm_logits"), rtol=0, atol=1e-6)
    np.testing.assert_allclose(res.seq_relationship_logits[0].numpy(), expected("nsp_logits"), rtol=0, atol=1e-6)
    # The encoder alone through transformers' BertModel, and through our strict loader, agree too.
    base = BertModel.from_pretrained(out).eval()
    ours = load_model(out, "base")
    with torch.no_grad():
        for m in (base, ours):
            states = torch.stack(m(**fixture_inputs(), output_hidden_states=True).hidden_states)[:, 0]
            np.testing.assert_allclose(states.numpy(), expected("hidden_states"), rtol=0, atol=1e-6)


def test_converted_directory_has_the_hf_layout_and_tokenizer(converted):
    from transformers import AutoTokenizer

    out, _ = converted
    assert {"config.json", "model.safetensors", "vocab.txt", "tokenizer.json"} <= {p.name for p in out.iterdir()}
    cfg = json.loads((out / "config.json").read_text())
    assert (cfg["num_hidden_layers"], cfg["hidden_size"], cfg["vocab_size"]) == (2, 32, 100)
    assert cfg["architectures"] == ["BertForPreTraining"]
    tok = AutoTokenizer.from_pretrained(out)
    m = maker()
    assert tok(m.TEXT_A, m.TEXT_B)["input_ids"] == expected("input_ids")[0].tolist()


def test_tf2_object_based_checkpoint_converts_to_the_same_encoder(tmp_path: Path):
    from transformers import BertModel

    result = convert.convert(FIXTURE / "tf2", tmp_path / "m")
    assert result.naming == "tf2" and result.model_class == "BertModel" and result.heads == ["pooler"]
    assert result.skipped[".OPTIMIZER_SLOT"] == 2 * 39 and result.skipped["_CHECKPOINTABLE_OBJECT_GRAPH"] == 1
    model = BertModel.from_pretrained(tmp_path / "m").eval()
    with torch.no_grad():
        res = model(**fixture_inputs(), output_hidden_states=True)
    np.testing.assert_allclose(torch.stack(res.hidden_states)[:, 0].numpy(), expected("hidden_states"), rtol=0, atol=1e-6)
    np.testing.assert_allclose(res.pooler_output[0].numpy(), expected("pooler_output"), rtol=0, atol=1e-6)


def test_name_mapping():
    assert convert.map_tf1_name("bert/encoder/layer_11/attention/self/query/kernel") == (
        "bert.encoder.layer.11.attention.self.query.weight", True)
    assert convert.map_tf1_name("bert/encoder/layer_0/output/LayerNorm/gamma") == (
        "bert.encoder.layer.0.output.LayerNorm.weight", False)
    assert convert.map_tf1_name("cls/seq_relationship/output_weights") == ("cls.seq_relationship.weight", False)
    assert convert.map_tf1_name("cls/predictions/output_bias") == ("cls.predictions.bias", False)
    assert convert.map_tf1_name("bert/encoder/layer_0/attention/self/rotary/kernel") is None
    assert convert.map_tf2_name("model/layer_with_weights-7/kernel/.ATTRIBUTES/VARIABLE_VALUE", 3) == (
        "bert.pooler.dense.weight", True)
    assert convert.map_tf2_name("model/layer_with_weights-5/_attention_output_dense/bias/.ATTRIBUTES/VARIABLE_VALUE",
                                3) == ("bert.encoder.layer.1.attention.output.dense.bias", False)
    for name in ("global_step", "bert/pooler/dense/kernel/adam_v", "bert/pooler/dense/kernel/Adam_1",
                 "model/layer_with_weights-0/embeddings/.OPTIMIZER_SLOT/optimizer/m/.ATTRIBUTES/VARIABLE_VALUE",
                 "_CHECKPOINTABLE_OBJECT_GRAPH", "save_counter/.ATTRIBUTES/VARIABLE_VALUE"):
        assert convert.is_skipped(name), name
    assert not convert.is_skipped("bert/embeddings/word_embeddings")


@pytest.mark.parametrize("remove,cls,kept,dropped", [
    (convert._NSP, "BertForMaskedLM", ["mlm"], ["pooler"]),
    (convert._MLM, "BertModel", ["pooler"], ["nsp"]),
    (convert._MLM + convert._NSP + convert._POOLER, "BertModel", [], []),
])
def test_partial_heads_choose_the_class_that_holds_them(remove, cls, kept, dropped):
    conv = convert.read_checkpoint(FIXTURE)
    for k in remove:
        del conv.tensors[k]
    model = convert.build_model(conv)
    assert type(model).__name__ == cls and conv.heads == kept and conv.dropped == dropped
    encoder = model if cls == "BertModel" else model.bert
    with torch.no_grad():
        states = torch.stack(encoder(**fixture_inputs(), output_hidden_states=True).hidden_states)[:, 0]
    np.testing.assert_allclose(states.numpy(), expected("hidden_states"), rtol=0, atol=1e-6)


def test_an_incomplete_head_is_refused(tmp_path: Path, monkeypatch):
    real = convert.CheckpointReader

    class WithoutOneTensor(real):
        def names(self):
            return [n for n in super().names() if n != "cls/predictions/transform/dense/bias"]

    monkeypatch.setattr(convert, "CheckpointReader", WithoutOneTensor)
    with pytest.raises(WellreadError, match="MLM head is incomplete: missing cls.predictions.transform.dense.bias"):
        convert.convert(FIXTURE, tmp_path / "out")


def test_a_tensor_that_is_neither_weight_nor_optimizer_state_is_refused(tmp_path: Path, monkeypatch):
    real = convert.CheckpointReader

    class WithAStranger(real):
        def names(self):
            return super().names() + ["bert/encoder/layer_0/attention/self/rotary/kernel"]

    monkeypatch.setattr(convert, "CheckpointReader", WithAStranger)
    with pytest.raises(WellreadError, match="neither BERT weights nor optimizer state: .*rotary/kernel"):
        convert.convert(FIXTURE, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_converts_from_a_zip_also_with_a_top_folder(tmp_path: Path, converted):
    ref = read_weights(converted[0])
    for i, folder in enumerate(("", "uncased_L-2_H-32_A-2/")):
        out = tmp_path / f"m{i}"
        convert.convert(make_zip(tmp_path / f"c{i}.zip", folder=folder), out)
        got = read_weights(out)
        assert got.keys() == ref.keys() and all(torch.equal(got[k], ref[k]) for k in ref)


@pytest.mark.parametrize("evil", ["../evil.txt", "/tmp/evil.txt", "a/../../evil.txt", "C:/evil.txt"])
def test_zip_with_an_escaping_path_is_refused(tmp_path: Path, evil: str):
    z = make_zip(tmp_path / "c.zip", extra={evil: b"pwned"})
    with pytest.raises(WellreadError, match="unsafe path"):
        convert.convert(z, tmp_path / "out")
    assert not (tmp_path / "out").exists() and not (tmp_path / "evil.txt").exists()


def test_zip_with_a_symlink_is_refused(tmp_path: Path):
    z = make_zip(tmp_path / "c.zip")
    with zipfile.ZipFile(z, "a") as zf:
        info = zipfile.ZipInfo("link")
        info.external_attr = (stat.S_IFLNK | 0o777) << 16
        zf.writestr(info, "/etc/passwd")
    with pytest.raises(WellreadError, match="link"):
        convert.convert(z, tmp_path / "out")


def test_truncated_zip_is_refused(tmp_path: Path):
    z = make_zip(tmp_path / "c.zip")
    data = z.read_bytes()
    for cut in (len(data) // 2, len(data) - 30):
        z.write_bytes(data[:cut])
        with pytest.raises(WellreadError, match="truncated"):
            convert.convert(z, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_corrupt_member_in_zip_is_refused(tmp_path: Path):
    z = make_zip(tmp_path / "c.zip")
    with zipfile.ZipFile(z) as zf:
        info = zf.getinfo("bert_model.ckpt.data-00000-of-00001")
    data = bytearray(z.read_bytes())
    start = info.header_offset + 30 + len(info.filename) + len(info.extra)
    data[start + info.compress_size // 2] ^= 0xFF
    z.write_bytes(bytes(data))
    with pytest.raises(WellreadError, match="corrupt or truncated member|zip"):
        convert.convert(z, tmp_path / "out")


def test_missing_vocab_is_refused(tmp_path: Path):
    ckpt = copy_ckpt(tmp_path)
    (ckpt / "vocab.txt").unlink()
    with pytest.raises(WellreadError, match="vocab.txt"):
        convert.convert(ckpt, tmp_path / "out")
    convert.convert(ckpt, tmp_path / "out", vocab=FIXTURE / "vocab.txt")  # given explicitly, it converts


def test_vocab_of_another_size_is_refused(tmp_path: Path):
    ckpt = copy_ckpt(tmp_path)
    (ckpt / "vocab.txt").write_text((FIXTURE / "vocab.txt").read_text() + "extra\n")
    with pytest.raises(WellreadError, match="101 tokens but bert_config.json says vocab_size 100"):
        convert.convert(ckpt, tmp_path / "out")


@pytest.mark.parametrize("change,match", [
    ({"hidden_size": 64}, r"has shape \[32\], but bert_config.json implies \[64\]"),
    ({"intermediate_size": 64}, r"intermediate/dense/bias has shape \[128\], but bert_config.json implies \[64\]"),
    ({"num_hidden_layers": 1}, "does not fit bert_config.json"),
    ({"num_hidden_layers": 3}, "lacks encoder weights: bert.encoder.layer.2"),
    ({"max_position_embeddings": 512}, "position_embeddings has shape"),
    ({"num_attention_heads": 3}, "not a multiple"),
    ({"hidden_size": "32"}, "hidden_size must be a positive integer"),
])
def test_config_and_weights_that_disagree_are_refused(tmp_path: Path, change: dict, match: str):
    ckpt = copy_ckpt(tmp_path)
    cfg = json.loads((ckpt / "bert_config.json").read_text())
    (ckpt / "bert_config.json").write_text(json.dumps({**cfg, **change}))
    with pytest.raises(WellreadError, match=match):
        convert.convert(ckpt, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_corrupt_index_or_truncated_data_never_gives_a_model(tmp_path: Path):
    ckpt = copy_ckpt(tmp_path)
    index = ckpt / "bert_model.ckpt.index"
    data = index.read_bytes()
    index.write_bytes(data[:100] + bytes([data[100] ^ 0xFF]) + data[101:])
    with pytest.raises(WellreadError, match="corrupt checkpoint index"):
        convert.convert(ckpt, tmp_path / "out")
    index.write_bytes(data)
    shard = ckpt / "bert_model.ckpt.data-00000-of-00001"
    os.truncate(shard, shard.stat().st_size - 4)
    with pytest.raises(WellreadError, match="truncated"):
        convert.convert(ckpt, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_an_output_folder_of_other_files_is_never_replaced(tmp_path: Path, capsys):
    from wellread.cli import main

    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    for extra in ([], ["--overwrite"]):  # wellread never deletes what it did not write, --overwrite or not
        assert main(["convert", str(FIXTURE), "--out", str(out), *extra]) == 1
        assert "holds other content (notes.txt)" in capsys.readouterr().err
        assert [p.name for p in out.iterdir()] == ["notes.txt"] and (out / "notes.txt").read_text() == "mine"


def test_check_reports_the_source_models_hidden_state_norms(converted):
    m = maker()
    norms = convert.check_model(converted[0], m.TEXT_A, m.TEXT_B)
    source = np.linalg.norm(expected("hidden_states"), axis=-1).mean(axis=-1)
    np.testing.assert_allclose(norms, source, rtol=0, atol=1e-5)


def test_cli_convert_with_check(tmp_path: Path, capsys):
    text = maker().TEXT_A
    rc = cli.main(["convert", str(FIXTURE), "--out", str(tmp_path / "m"), "--check", "--text", text])
    out = capsys.readouterr().out
    assert rc == 0 and "TF1 checkpoint: 46 tensors as BertForPreTraining" in out and "46 adam_m" in out
    norms = [float(line.split()[-1]) for line in out.splitlines() if "mean hidden-state norm" in line]
    np.testing.assert_allclose(norms, convert.check_model(tmp_path / "m", text), atol=1e-4)


def test_cli_convert_reports_bad_input_in_one_line(tmp_path: Path, capsys):
    rc = cli.main(["convert", str(tmp_path / "nothing"), "--out", str(tmp_path / "m")])
    err = capsys.readouterr().err.strip()
    assert rc == 1 and err.count("\n") == 0 and "no such checkpoint" in err
