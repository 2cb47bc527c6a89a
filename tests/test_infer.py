"""Inference: the Predictor's three backends, ONNX export, `wellread predict` on files, `wellread serve`.

The model is real: a Tiny fine-tuned for a few seconds on real SST-2 (about 75% dev accuracy, so
agreement between backends means something); the regression model reuses its encoder, and is
scored on real STS-B sentence pairs.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import REPO, data_path
from wellread import cli, env
from wellread.data.batching import Inputs
from wellread.errors import WellreadError
from wellread.infer.loading import open_predictor
from wellread.infer.openvino import can_quantize
from wellread.infer.predictor import Predictor

# --- real models, trained once per session ---------------------------------------------------------


def _glue_slice(root: Path, folder: str, train_rows: int) -> Path:
    (root / folder).mkdir(parents=True)
    lines = data_path("glue", folder, "train.tsv").read_text(encoding="utf-8").splitlines()
    (root / folder / "train.tsv").write_text("\n".join(lines[: train_rows + 1]) + "\n", encoding="utf-8")
    shutil.copy(data_path("glue", folder, "dev.tsv"), root / folder / "dev.tsv")
    return root


@pytest.fixture(scope="session")
def sst2_model(tmp_path_factory) -> tuple[Path, dict]:
    """A random-init Tiny fine-tuned on the first 8,000 SST-2 training rows (1 epoch, ~12 s on 1 core)."""
    from wellread.train.finetune import FinetuneConfig, finetune

    root = _glue_slice(tmp_path_factory.mktemp("glue"), "SST-2", 8000)
    run = tmp_path_factory.mktemp("sst2") / "run"
    r = finetune(FinetuneConfig(model="tiny", random_init=True, task="sst2", data_dir=root, out=run, batch_size=32,
                                lr=1e-3, epochs=1, inputs=Inputs(max_length=64), quiet=True, threads=1))
    return run / "model", r


@pytest.fixture(scope="session")
def sst2_export(sst2_model, tmp_path_factory) -> tuple[Path, dict]:
    from wellread.infer.onnx import export_onnx

    out = tmp_path_factory.mktemp("export") / "sst2-onnx"
    return out, export_onnx(sst2_model[0], out, int8=True, quiet=True)


@pytest.fixture(scope="session")
def sst2_dev() -> tuple[list[str], np.ndarray]:
    rows = [ln.split("\t") for ln in data_path("glue", "SST-2", "dev.tsv").read_text(encoding="utf-8").splitlines()[1:]]
    return [r[0] for r in rows], np.array([r[1] for r in rows])


@pytest.fixture(scope="session")
def stsb_model(sst2_model, tmp_path_factory) -> Path:
    """A one-score regressor (STS-B's head: num_labels 1, problem_type regression) on the SST-2 encoder.

    Its score is the SST-2 model's logit difference (positive minus negative), so scores spread widely
    and comparing backends on them means something; a few seconds of STS-B training from random init
    would only learn to predict the mean.
    """
    import torch
    from transformers import BertForSequenceClassification

    from wellread.data.tasks import get_task
    from wellread.modeling.models import read_config, read_weights, save_model
    from wellread.tokenization import load_tokenizer
    from wellread.train.finetune import set_task_head

    src = sst2_model[0]
    config = read_config(src)
    set_task_head(config, get_task("stsb"))
    state = read_weights(src)
    w, b = state.pop("classifier.weight"), state.pop("classifier.bias")
    model = BertForSequenceClassification(config)
    missing = model.load_state_dict(state, strict=False).missing_keys
    assert set(missing) <= {"classifier.weight", "classifier.bias", "bert.embeddings.position_ids"}, missing
    with torch.no_grad():
        model.classifier.weight.copy_((w[1] - w[0])[None])
        model.classifier.bias.copy_((b[1] - b[0])[None])
    return save_model(model.eval(), load_tokenizer(src), tmp_path_factory.mktemp("stsb") / "model")


@pytest.fixture(scope="session")
def stsb_dev() -> tuple[list[str], list[str]]:
    rows = [ln.split("\t") for ln in data_path("glue", "STS-B", "dev.tsv").read_text(encoding="utf-8").splitlines()[1:]]
    return [r[7] for r in rows[:300]], [r[8] for r in rows[:300]]


# --- the Predictor and its backends ----------------------------------------------------------------


def test_torch_predictor_scores_the_dev_accuracy_finetune_recorded(sst2_model, sst2_dev):
    model, result = sst2_model
    sentences, gold = sst2_dev
    p = Predictor(model, backend="torch", max_length=64)
    preds = [x["label"] for x in p.predict(sentences)]
    accuracy = float(np.mean(np.array(preds) == gold))
    assert accuracy == pytest.approx(result["dev"]["dev/accuracy"], abs=1e-9)
    assert accuracy > 0.65 and set(preds) == {"0", "1"}, "the fixture model must be usefully trained"


def test_onnx_fp32_equals_pytorch_on_sst2_dev(sst2_model, sst2_export, sst2_dev):
    sentences, _ = sst2_dev
    ref = Predictor(sst2_model[0], backend="torch").probabilities(sentences)
    got = Predictor(sst2_export[0], backend="onnx").probabilities(sentences)
    assert np.abs(got - ref).max() < 1e-4
    assert (got.argmax(1) == ref.argmax(1)).all()


def test_onnx_int8_agrees_with_pytorch_on_99_percent_of_sst2_dev(sst2_model, sst2_export, sst2_dev):
    sentences, gold = sst2_dev
    ref = Predictor(sst2_model[0], backend="torch").probabilities(sentences).argmax(1)
    got = Predictor(sst2_export[0], backend="onnx-int8").probabilities(sentences).argmax(1)
    assert (got == ref).mean() >= 0.99
    acc = lambda k: float(np.mean(np.array(["0", "1"])[k] == gold))  # noqa: E731
    assert acc(got) >= acc(ref) - 0.01


def test_predictions_do_not_depend_on_batch_size_or_input_order(sst2_model, sst2_dev):
    sentences = sst2_dev[0][:200]
    a = Predictor(sst2_model[0], batch_size=7).probabilities(sentences)
    b = Predictor(sst2_model[0], batch_size=64).probabilities(sentences[::-1])[::-1]
    np.testing.assert_allclose(a, b, atol=1e-5)


def test_onnx_batches_run_side_by_side_on_several_threads_with_the_same_results(sst2_export, sst2_dev):
    sentences = sst2_dev[0][:300]
    one = Predictor(sst2_export[0], backend="onnx", batch_size=16, threads=1).logits(sentences)
    two = Predictor(sst2_export[0], backend="onnx", batch_size=16, threads=2)
    np.testing.assert_allclose(two.logits(sentences), one, atol=1e-5)
    np.testing.assert_allclose(two.logits(sentences[:5]), one[:5], atol=1e-5)  # one batch: the wide session


def test_export_writes_a_dynamic_onnx_graph_and_records_its_check(sst2_model, sst2_export):
    import onnx

    out, record = sst2_export
    graph = onnx.load(str(out / "model.onnx")).graph
    assert [i.name for i in graph.input] == ["input_ids", "attention_mask", "token_type_ids"]
    assert [o.name for o in graph.output] == ["logits"]
    for i in graph.input:
        dims = i.type.tensor_type.shape.dim
        assert [d.dim_param for d in dims] == ["batch", "sequence"], "batch and sequence axes are dynamic"
    for name in ("config.json", "vocab.txt", "tokenizer.json"):
        assert (out / name).read_bytes() == (sst2_model[0] / name).read_bytes()
    assert record["graph"] == "last layer at [CLS] only"
    on_disk = json.loads((out / "export.json").read_text())
    assert on_disk == record
    assert record["check"]["onnx"]["max_abs_diff_probability"] < 1e-4
    assert record["check"]["onnx"]["label_agreement"] == 1.0
    assert 0 < record["check"]["onnx-int8"]["max_abs_diff_probability"] < 0.1, "int8 differs, a little"
    assert record["files"]["model.int8.onnx"] < record["files"]["model.onnx"]


def test_the_cls_only_graph_computes_what_the_transformers_forward_computes(stsb_model, stsb_dev):
    import torch

    from wellread.infer.onnx import ClsLogits, FullLogits
    from wellread.infer.predictor import load_torch_classifier

    model = load_torch_classifier(stsb_model)
    p = Predictor(stsb_model, batch_size=32)
    for _, batch in p.batches(p.encode(*stsb_dev)):  # pairs, padded, 10 batches
        args = {k: torch.from_numpy(v) for k, v in batch.items()}
        with torch.inference_mode():
            torch.testing.assert_close(ClsLogits(model)(**args), FullLogits(model)(**args), atol=1e-5, rtol=0)


def test_the_auto_backend_exists_here_and_agrees_with_pytorch(sst2_model, sst2_export, sst2_dev):
    sentences = sst2_dev[0][:200]
    p = Predictor(sst2_export[0], backend="auto")
    assert p.backend == env.auto_backend() and p.backend in env.inference_backends()
    ref = Predictor(sst2_model[0], backend="torch").probabilities(sentences)
    got = p.probabilities(sentences)
    assert (got.argmax(1) == ref.argmax(1)).mean() >= 0.99


def test_openvino_runs_the_onnx_graph_close_to_pytorch_in_input_order(sst2_model, sst2_export, sst2_dev):
    sentences = sst2_dev[0]
    ref = Predictor(sst2_model[0], backend="torch").probabilities(sentences)
    for threads in (1, 2):  # one request at a time, and batches side by side on two streams
        p = Predictor(sst2_export[0], backend="openvino", threads=threads, batch_size=16)
        assert p.precision == ("bf16" if env.cpu().native_bf16 else "fp32")
        got = p.probabilities(sentences)
        assert np.abs(got - ref).max() < (0.05 if p.precision == "bf16" else 1e-4)
        assert (got.argmax(1) == ref.argmax(1)).mean() >= 0.99
        one = p.probabilities(sentences[:1])  # a lone batch takes the latency path
        assert np.abs(one - got[:1]).max() < 1e-2


@pytest.mark.skipif(not can_quantize(), reason="openvino and nncf are not installed")
def test_openvino_int8_is_a_calibrated_int8_model_checked_at_export_and_close_to_pytorch(sst2_model, sst2_export,
                                                                                        sst2_dev):
    import openvino as ov

    out, record = sst2_export
    assert record["openvino_int8"]["calibration"] == "the built-in check inputs"
    assert record["openvino_int8"]["calibration_batches"] >= 1 and "nncf.quantize" in record["openvino_int8"]["method"]
    assert record["check"]["openvino-int8"]["label_agreement"] >= 0.9 and (out / "model.int8.bin").is_file()
    # the products really are int8: quantise/dequantise nodes around them, weights stored as int8 constants
    graph = ov.Core().read_model(str(out / "model.int8.xml"))
    kinds = [op.get_type_name() for op in graph.get_ordered_ops()]
    int8_weights = [op for op in graph.get_ordered_ops() if op.get_type_name() == "Constant"
                    and op.get_element_type() == ov.Type.i8]
    assert kinds.count("FakeQuantize") >= 4 and len(int8_weights) >= 4
    assert (out / "model.int8.bin").stat().st_size < 0.5 * (out / "model.onnx").stat().st_size
    sentences, labels = sst2_dev
    ref = Predictor(sst2_model[0], backend="torch").probabilities(sentences)
    for threads in (1, 2):
        p = Predictor(out, backend="openvino-int8", threads=threads, batch_size=16)
        assert p.precision == "int8+" + ("bf16" if env.cpu().native_bf16 else "fp32")
        got = p.probabilities(sentences)
        assert np.abs(got - ref).max() < 0.2 and (got.argmax(1) == ref.argmax(1)).mean() >= 0.95
        assert abs((got.argmax(1) == labels).mean() - (ref.argmax(1) == labels).mean()) < 0.03


def test_export_never_replaces_a_folder_it_did_not_write_even_with_overwrite(sst2_model, tmp_path, capsys):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    for extra in ([], ["--overwrite"]):
        rc = cli.main(["export", "--model", str(sst2_model[0]), "--int8", "--out", str(mine), *extra])
        err = capsys.readouterr().err
        assert rc == 1 and err.count("\n") == 1 and "holds other content (notes.txt)" in err, err
        assert [p.name for p in mine.iterdir()] == ["notes.txt"] and (mine / "notes.txt").read_text() == "keep me"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine"], "no temporary directory is left behind"


@pytest.mark.skipif(not can_quantize(), reason="openvino and nncf are not installed")
def test_openvino_int8_without_its_file_says_how_to_make_it_or_exports_on_the_fly(sst2_model, sst2_dev, capsys):
    sentences = sst2_dev[0][:50]
    with pytest.raises(WellreadError, match=r"no model.int8.xml here: run `wellread export --int8`"):
        Predictor(sst2_model[0], backend="openvino-int8")
    got = open_predictor(sst2_model[0], backend="openvino-int8").probabilities(sentences)
    assert "no model.int8.xml" in capsys.readouterr().err
    ref = Predictor(sst2_model[0], backend="torch").probabilities(sentences)
    assert (got.argmax(1) == ref.argmax(1)).mean() >= 0.9


def test_an_onnx_backend_exports_on_the_fly_when_the_file_is_missing(sst2_model, sst2_dev, capsys):
    sentences = sst2_dev[0][:100]
    with pytest.raises(WellreadError, match="no model.onnx here: run `wellread export`"):
        Predictor(sst2_model[0], backend="onnx")
    got = open_predictor(sst2_model[0], backend="onnx").probabilities(sentences)
    assert "exporting it now" in capsys.readouterr().err
    ref = Predictor(sst2_model[0], backend="torch").probabilities(sentences)
    assert np.abs(got - ref).max() < 1e-4


def test_a_regression_model_scores_sentence_pairs_on_every_backend(stsb_model, stsb_dev, tmp_path):
    from wellread.infer.onnx import export_onnx

    a, b = stsb_dev
    export_onnx(stsb_model, tmp_path / "onnx", int8=True, quiet=True)
    torch_p = Predictor(stsb_model, backend="torch")
    ref = np.array([x["score"] for x in torch_p.predict(a, b)])
    assert torch_p.is_regression and ref.std() > 0.5, "the scores spread"
    fp32 = Predictor(tmp_path / "onnx", backend="onnx").logits(a, b)[:, 0]
    int8 = Predictor(tmp_path / "onnx", backend="onnx-int8").logits(a, b)[:, 0]
    assert np.abs(fp32 - ref).max() < 1e-4
    assert np.corrcoef(int8, ref)[0, 1] > 0.99
    alone = Predictor(stsb_model).logits(a)[:, 0]
    assert np.abs(alone - ref).max() > 0.1, "the second sentence counts"


# --- wellread predict on files ----------------------------------------------------------------------


def test_predict_streams_in_chunks_and_writes_in_input_order(sst2_model, tmp_path):
    from wellread.infer.stream import predict_file

    class Spy(Predictor):
        sizes: list[int] = []

        def predict(self, texts_a, texts_b=None):
            self.sizes.append(len(texts_a))
            return super().predict(texts_a, texts_b)

    p = Spy(sst2_model[0])
    dev = data_path("glue", "SST-2", "dev.tsv")
    r = predict_file(p, dev, tmp_path / "out.jsonl", chunk_size=100, progress=False)
    assert r["inputs"] == 872 and p.sizes == [100] * 8 + [72], "never more than a chunk in memory"
    rows = [json.loads(x) for x in (tmp_path / "out.jsonl").read_text().splitlines()]
    sentences = [ln.split("\t")[0] for ln in dev.read_text(encoding="utf-8").splitlines()[1:]]
    whole = Predictor(sst2_model[0]).predict(sentences)
    assert [x["label"] for x in rows] == [x["label"] for x in whole]
    for got, want in zip(rows, whole):
        assert got["probabilities"] == pytest.approx(want["probabilities"], abs=2e-6)


def test_predict_cli_on_the_sst2_dev_tsv(sst2_model, sst2_dev, tmp_path):
    model, result = sst2_model
    out = tmp_path / "pred.jsonl"
    dev = data_path("glue", "SST-2", "dev.tsv")
    assert cli.main(["predict", "--model", str(model.parent), "--input", str(dev), "--output", str(out),
                     "--max-length", "64", "--quiet"]) == 0
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    assert len(rows) == 872
    assert all(abs(sum(r["probabilities"].values()) - 1) < 1e-5 for r in rows)
    accuracy = np.mean(np.array([r["label"] for r in rows]) == sst2_dev[1])
    assert accuracy == pytest.approx(result["dev"]["dev/accuracy"], abs=1e-9)
    assert not [f for f in tmp_path.iterdir() if f.name.endswith(".tmp")]


def test_predict_cli_jsonl_pairs_to_tsv_with_ids(stsb_model, stsb_dev, tmp_path):
    a, b = stsb_dev
    src = tmp_path / "pairs.jsonl"
    src.write_text("".join(json.dumps({"id": f"p{i}", "text_a": x, "text_b": y}) + "\n" for i, (x, y)
                           in enumerate(zip(a[:50], b[:50]))), encoding="utf-8")
    out = tmp_path / "scores.tsv"
    assert cli.main(["predict", "--model", str(stsb_model), "--input", str(src), "--output", str(out), "--quiet"]) == 0
    lines = out.read_text().splitlines()
    assert lines[0] == "id\tscore"
    want = Predictor(stsb_model).logits(a[:50], b[:50])[:, 0]
    assert [ln.split("\t")[0] for ln in lines[1:]] == [f"p{i}" for i in range(50)]
    np.testing.assert_allclose([float(ln.split("\t")[1]) for ln in lines[1:]], want, atol=2e-6)


def test_predict_cli_sts_b_dev_tsv_reads_its_sentence_pair_columns(stsb_model, stsb_dev, tmp_path):
    out = tmp_path / "stsb.jsonl"
    dev = data_path("glue", "STS-B", "dev.tsv")
    assert cli.main(["predict", "--model", str(stsb_model), "--input", str(dev), "--output", str(out), "--quiet"]) == 0
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    assert len(rows) == 1500 and rows[0]["id"] == "0"
    want = Predictor(stsb_model).logits(*stsb_dev)[:, 0]
    np.testing.assert_allclose([r["score"] for r in rows[:300]], want, atol=2e-6)


def test_predict_cli_txt_file_and_stdin(sst2_model, sst2_dev, tmp_path, monkeypatch, capsys):
    sentences = sst2_dev[0][:40]
    src = tmp_path / "s.txt"
    src.write_text("\n".join(sentences) + "\n", encoding="utf-8")
    assert cli.main(["predict", "--model", str(sst2_model[0]), "--input", str(src), "--output",
                     str(tmp_path / "s.tsv"), "--quiet"]) == 0
    lines = (tmp_path / "s.tsv").read_text().splitlines()
    assert lines[0] == "label\tprob_0\tprob_1" and len(lines) == 41
    want = [x["label"] for x in Predictor(sst2_model[0]).predict(sentences)]
    assert [ln.split("\t")[0] for ln in lines[1:]] == want
    monkeypatch.setattr(sys, "stdin", io.StringIO("\n".join(sentences) + "\n"))
    assert cli.main(["predict", "--model", str(sst2_model[0]), "--input", "-", "--output", "-", "--quiet"]) == 0
    assert [json.loads(x)["label"] for x in capsys.readouterr().out.splitlines()] == want


@pytest.mark.parametrize("name, content, where", [
    ("missing.tsv", "text1\tlabel\nhello\t1\n", ":1 (field sentence)"),
    ("short.tsv", "sentence1\tsentence2\nfine\tgood\nonly one field\n", ":3 (field sentence2)"),
    ("bad.jsonl", '{"text": "fine"}\n{"text": "fine"}\n{"text": "broken\n', ":3: invalid JSON"),
    ("nofield.jsonl", '{"text": "fine"}\n{"txt": "typo"}\n', ":2 (field text_a)"),
    ("notstring.jsonl", '{"text_a": "fine", "text_b": 3}\n', ":1 (field text_b)"),
    ("input.csv", "sentence\nhello\n", " (field input)"),
])
def test_bad_input_is_one_line_naming_file_line_and_field_and_leaves_the_output_alone(
        sst2_model, tmp_path, capsys, name, content, where):
    src = tmp_path / name
    src.write_text(content, encoding="utf-8")
    out = tmp_path / "out.jsonl"
    out.write_text("previous results\n")
    rc = cli.main(["predict", "--model", str(sst2_model[0]), "--input", str(src), "--output", str(out), "--quiet",
                   "--chunk-size", "1"])
    err = capsys.readouterr().err
    assert rc == 1
    assert err.count("\n") == 1 and err.startswith("wellread predict: error: ") and f"{src}{where}" in err
    assert out.read_text() == "previous results\n", "the old output survives a failed run"
    assert sorted(f.name for f in tmp_path.iterdir()) == sorted([name, "out.jsonl"]), "no temporary file is left"


def test_predict_refuses_an_unknown_backend_and_a_model_without_a_classifier(small_model_dir, tmp_path, capsys):
    src = tmp_path / "s.txt"
    src.write_text("hello\n")
    assert cli.main(["predict", "--model", str(small_model_dir), "--input", str(src), "--output",
                     str(tmp_path / "o.jsonl"), "--backend", "tensorrt"]) == 1
    assert "--backend: should be 'torch', 'onnx'" in capsys.readouterr().err
    assert cli.main(["predict", "--model", str(small_model_dir), "--input", str(src), "--output",
                     str(tmp_path / "o.jsonl")]) == 1
    assert "not a fine-tuned classifier" in capsys.readouterr().err
    assert not (tmp_path / "o.jsonl").exists()


# --- wellread serve -------------------------------------------------------------------------------


def test_micro_batcher_answers_concurrent_requests_with_one_model_call(sst2_model, sst2_dev):
    from wellread.infer.serve import MicroBatcher

    p = Predictor(sst2_model[0])
    calls = []

    class Counting:
        def predict(self, a, b=None):
            calls.append(len(a))
            return p.predict(a, b)

    sentences = sst2_dev[0][:10]

    async def main():
        batcher = MicroBatcher(Counting(), max_batch=64, max_wait_s=0.05)
        await batcher.start()
        try:
            return await asyncio.gather(*(batcher.predict([s], [None]) for s in sentences))
        finally:
            await batcher.stop()

    answers = asyncio.run(main())
    assert calls == [10], "ten waiting requests, one model call"
    want = p.predict(sentences)
    assert [a[0]["label"] for a in answers] == [w["label"] for w in want]
    for a, w in zip(answers, want):
        assert a[0]["probabilities"] == pytest.approx(w["probabilities"], abs=1e-5)


def test_a_failing_model_call_fails_its_requests_and_the_batcher_goes_on():
    from wellread.infer.serve import MicroBatcher

    class Flaky:
        calls = 0

        def predict(self, a, b=None):
            self.calls += 1
            if self.calls == 1:
                raise RuntimeError("out of memory")
            return [{"score": float(len(x))} for x in a]

    async def main():
        batcher = MicroBatcher(Flaky(), max_batch=8, max_wait_s=0.001)
        await batcher.start()
        try:
            with pytest.raises(RuntimeError, match="out of memory"):
                await batcher.predict(["first"], [None])
            return await batcher.predict(["second"], [None])
        finally:
            await batcher.stop()

    assert asyncio.run(main()) == [{"score": 6.0}]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback: never through a proxy


def _http(method: str, url: str, body: bytes | None = None, timeout: float = 30) -> tuple[int, dict]:
    """(status, JSON body) of one request; error statuses are returned, not raised."""
    headers = {"content-type": "application/json"} if body is not None else {}
    try:
        with _NO_PROXY.open(urllib.request.Request(url, data=body, method=method, headers=headers), timeout=timeout) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def _post(url: str, obj) -> tuple[int, dict]:
    return _http("POST", url + "/predict", json.dumps(obj).encode())


def start_serve(*args: str) -> tuple[str, subprocess.Popen]:
    """`wellread serve ARGS` in a subprocess on a free loopback port, once it answers /health: (url, process)."""
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "wellread", "serve", *args, "--port", str(port)], cwd=REPO,
                            env={**os.environ, "OMP_NUM_THREADS": "1"}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            if _http("GET", url + "/health", timeout=1)[0] == 200:
                return url, proc
        except (urllib.error.URLError, OSError):
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"the server did not start: {proc.communicate()[1][-2000:]}")
        time.sleep(0.2)


@pytest.fixture(scope="module")
def server(sst2_export):
    """`wellread serve` (ONNX fp32) in a subprocess on a loopback port, with small limits."""
    url, proc = start_serve("--model", str(sst2_export[0]), "--backend", "onnx", "--max-body-bytes", "20000",
                            "--max-inputs", "32", "--max-text-chars", "2000")
    yield url, proc
    if proc.poll() is None:
        proc.kill()
        proc.communicate()


def test_service_answers_like_the_predictor(server, sst2_export, sst2_dev):
    url, _ = server
    sentences = sst2_dev[0][:20]
    want = Predictor(sst2_export[0], backend="onnx").predict(sentences)
    for body in ({"inputs": sentences}, sentences, [{"text_a": s} for s in sentences]):
        status, answer = _post(url, body)
        assert status == 200
        got = answer["predictions"]
        assert [g["label"] for g in got] == [w["label"] for w in want]
        for g, w in zip(got, want):
            assert g["probabilities"] == pytest.approx(w["probabilities"], abs=1e-5)
    status, info = _http("GET", url + "/info")
    assert info["labels"] == ["0", "1"] and info["backend"] == "onnx" and info["limits"]["max_inputs"] == 32


def test_service_answers_concurrent_clients(server, sst2_export, sst2_dev):
    url, _ = server
    sentences = sst2_dev[0][100:148]
    want = [w["label"] for w in Predictor(sst2_export[0], backend="onnx").predict(sentences)]
    with ThreadPoolExecutor(16) as pool:
        got = list(pool.map(lambda s: _post(url, {"inputs": [s]}), sentences))
    assert [status for status, _ in got] == [200] * len(sentences)
    assert [answer["predictions"][0]["label"] for _, answer in got] == want


@pytest.mark.parametrize("method, path, body, status, says", [
    ("POST", "/predict", b'{"inputs": ["' + b"x" * 30000 + b'"]}', 413, "at most 20000"),
    ("POST", "/predict", json.dumps({"inputs": ["a"] * 33}).encode(), 413, "at most 32"),
    ("POST", "/predict", json.dumps({"inputs": ["word " * 500]}).encode(), 413, "inputs[0] has 2500 characters"),
    ("POST", "/predict", b'{"inputs": ["unclosed', 400, "invalid JSON"),
    ("POST", "/predict", b'{"inputs": 5}', 422, "inputs[0]"),
    ("POST", "/predict", b'[{"txt": "typo"}]', 422, "text_a"),
    ("POST", "/predict", b"[]", 422, "no inputs"),
    ("POST", "/predict", b"42", 422, "expected"),
    ("GET", "/nowhere", None, 404, "Not Found"),
    ("GET", "/predict", None, 405, "Method Not Allowed"),
])
def test_service_rejects_bad_requests_with_a_json_error_and_keeps_serving(server, method, path, body, status, says):
    url, _ = server
    got, answer = _http(method, url + path, body)
    assert got == status
    assert says in answer["error"]
    status, answer = _post(url, {"inputs": ["a fine film"]})
    assert status == 200 and answer["predictions"][0]["label"] in ("0", "1")


def test_service_stops_cleanly_on_sigterm(server):
    """Runs last of the service tests (it ends the module's server)."""
    url, proc = server
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=30)
    # uvicorn shuts down gracefully, then re-raises the signal so that a supervisor sees why it ended.
    assert proc.returncode == -signal.SIGTERM, err[-2000:]
    assert "Application shutdown complete" in err and "Finished server process" in err
    assert "Traceback" not in err
