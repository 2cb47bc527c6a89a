"""QA inference: `wellread predict` / `export --int8` / `serve` for (question, context) pairs."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import REPO, data_path, needs_squad
from tests.test_infer import _http, _post, start_serve
from tests.test_squad_finetune import _slice
from wellread import env
from wellread.data.squad import QASettings, read_squad
from wellread.errors import WellreadError
from wellread.infer.openvino import can_quantize
from wellread.infer.qa import QAPredictor, export_qa_onnx
from wellread.train.finetune import FinetuneConfig, finetune

CONTEXT = "Super Bowl 50 was played in 2016. The Denver Broncos defeated the Carolina Panthers 24-10."


@pytest.fixture(scope="module")
def qa_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("qa")
    data = _slice(data_path("squad", "dev-v1.1.json"), root / "dev-v1.1.json", articles=2, paragraphs=2)
    finetune(FinetuneConfig(model="tiny", random_init=True, task="squad", data_dir=data, out=root / "run",
                            qa=QASettings(train_articles=1), batch_size=8, lr=3e-3, quiet=True))
    return root / "run", data


def _wellread(*args):
    return subprocess.run([sys.executable, "-m", "wellread", *args], cwd=REPO, capture_output=True, text=True,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})


@needs_squad
def test_answers_carry_the_text_at_their_character_offsets(qa_run):
    run, _ = qa_run
    long_context = " ".join(["The village square is quiet in winter."] * 150) + " " + CONTEXT
    out = QAPredictor(run).answer([("Who won?", CONTEXT), ("Who won?", long_context)])
    for row, ctx in zip(out, (CONTEXT, long_context)):
        assert row["answer"] == ctx[row["start"]:row["end"]] and 0 < row["score"] <= 1
    with pytest.raises(WellreadError, match="context is empty"):
        QAPredictor(run).answer([("Who won?", "  ")])


@needs_squad
def test_predict_writes_records_and_the_official_predictions_file(qa_run, tmp_path):
    run, data = qa_run
    (tmp_path / "in.jsonl").write_text(json.dumps({"id": "x", "question": "Who won?", "context": CONTEXT}) + "\n")
    p = _wellread("predict", "--model", str(run), "--input", str(tmp_path / "in.jsonl"), "--output",
                  str(tmp_path / "out.jsonl"), "--quiet")
    assert p.returncode == 0, p.stderr
    row = json.loads((tmp_path / "out.jsonl").read_text())
    assert row["id"] == "x" and row["answer"] == CONTEXT[row["start"]:row["end"]]
    p = _wellread("predict", "--model", str(run), "--input", str(data), "--output", str(tmp_path / "p.json"), "--quiet")
    assert p.returncode == 0, p.stderr
    p = _wellread("evaluate", "--task", "squad", "--data-dir", str(data), "--predictions", str(tmp_path / "p.json"),
                  "--json")
    assert p.returncode == 0 and json.loads(p.stdout)["missing"] == 0
    (tmp_path / "bad.jsonl").write_text(json.dumps({"question": "Who won?"}) + "\n")
    p = _wellread("predict", "--model", str(run), "--input", str(tmp_path / "bad.jsonl"), "--output", "-")
    assert p.returncode == 1 and "Traceback" not in p.stderr and "context" in p.stderr


@needs_squad
def test_export_int8_is_checked_and_answers_like_pytorch(qa_run, tmp_path):
    run, data = qa_run
    p = _wellread("export", "--model", str(run), "--out", str(tmp_path / "exp"), "--int8")
    assert p.returncode == 0, p.stderr
    record = json.loads((tmp_path / "exp" / "export.json").read_text())
    assert record["graph"] == "layers written out (additive attention mask)"
    assert record["check"]["onnx"]["max_abs_diff_probability"] < 1e-4
    assert record["check"]["onnx"]["label_agreement"] == 1.0 and "onnx-int8" in record["check"]
    # int8 weights with one scale per output column (one per matrix cost the MiniLM teacher 2.9 F1)
    import onnx

    graph = onnx.load(str(tmp_path / "exp" / "model.int8.onnx")).graph
    scales = [list(i.dims) for i in graph.initializer if i.name.endswith("_scale")]
    assert record["int8"]["per_channel"] and scales and all(len(d) == 1 and d[0] > 1 for d in scales)
    torch_answers = QAPredictor(run).answer([("Who won?", CONTEXT)])
    onnx_answers = QAPredictor(tmp_path / "exp", backend="onnx").answer([("Who won?", CONTEXT)])
    assert onnx_answers[0]["answer"] == torch_answers[0]["answer"]
    assert onnx_answers[0]["score"] == pytest.approx(torch_answers[0]["score"], abs=1e-4)


@needs_squad
@pytest.mark.skipif(not env.have("openvino"), reason="openvino is not installed")
def test_openvino_backend_answers_like_pytorch_and_is_checked_at_export(qa_run, tmp_path):
    run, data = qa_run
    export_qa_onnx(run, tmp_path / "exp", int8=True)  # auto may pick onnx-int8 (a CPU without AMX)
    check = json.loads((tmp_path / "exp" / "export.json").read_text())["check"]["openvino"]
    assert check["precision"] == ("bf16" if env.cpu().native_bf16 else "fp32") and check["windows"] > check["n"]
    examples = read_squad(data, "squad").examples
    ours = QAPredictor(tmp_path / "exp", backend="openvino")
    want = QAPredictor(run).predictions(examples)
    got = ours.predictions(examples)
    same = [got.text[k] == want.text[k] for k in want.text]
    assert sum(same) >= 0.9 * len(same), f"{sum(same)} of {len(same)} answers as PyTorch's"
    first = examples[0]
    assert got.nbest[first.id][0]["score"] == pytest.approx(want.nbest[first.id][0]["score"], abs=0.05)
    assert QAPredictor(tmp_path / "exp", backend="auto").backend == env.auto_backend()


@needs_squad
@pytest.mark.skipif(not can_quantize(), reason="openvino and nncf are not installed")
def test_export_with_task_squad_calibrates_on_training_questions_and_gates_every_int8_model(qa_run, tmp_path):
    run, data = qa_run
    p = _wellread("export", "--model", str(run), "--out", str(tmp_path / "exp"), "--int8", "--task", "squad",
                  "--data-dir", str(data.parent))
    assert p.returncode == 0, p.stderr
    record = json.loads((tmp_path / "exp" / "export.json").read_text())
    gate = record["int8_gate"]
    # the fine-tuning run's split by article: 1 training article calibrates, the other is the gate's
    assert gate["data"] == {"kind": "by_article", "file": str(data), "train_articles": 1, "from": "the fine-tuning run"}
    examples = read_squad(data, "squad").examples
    held_out = [e for e in examples if e.article >= 1]
    assert gate["n"] == len(held_out) and set(gate["backends"]) == {"onnx-int8", "openvino-int8"} and gate["passed"]
    assert record["openvino_int8"]["calibration"] == f"{len([e for e in examples if e.article < 1])} given questions"
    ours = QAPredictor(tmp_path / "exp", backend="openvino-int8")
    assert ours.precision.startswith("int8")
    gold = {e.id: [a for a, _ in e.answers] for e in held_out}
    from wellread.eval.squad import squad_scores

    got = squad_scores(gold, ours.predictions(held_out).text, v2=False)
    assert got["f1"] == pytest.approx(gate["backends"]["openvino-int8"]["int8_metrics"]["f1"], abs=1e-9)
    assert "int8 gate on" in p.stdout and "openvino-int8" in p.stdout
    # a classification task is not a QA gate; the SQuAD gate needs the data
    for extra, message in ((["--task", "sst2"], "its gate is --task squad or squad_v2"),
                           (["--task", "squad"], "--task squad needs --data-dir")):
        p = _wellread("export", "--model", str(run), "--out", str(tmp_path / "no"), "--int8", *extra)
        assert p.returncode == 1 and message in p.stderr and not (tmp_path / "no").exists(), p.stderr


@needs_squad
def test_serve_answers_question_context_pairs(qa_run):
    run, _ = qa_run
    url, proc = start_serve("--model", str(run))
    try:
        status, body = _post(url, {"inputs": [{"question": "Who won?", "context": CONTEXT}]})
        assert status == 200
        got = body["predictions"][0]
        assert got == pytest.approx(QAPredictor(run).answer([("Who won?", CONTEXT)])[0])
        assert _http("GET", url + "/info")[1]["kind"] == "question-answering"
    finally:
        proc.kill()
        proc.communicate()
