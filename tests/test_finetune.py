"""`wellread finetune` on a slice of real RTE: the run directory, the saved model, refusals, resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from tests.conftest import REPO, data_path
from wellread import cli, tokenization
from wellread.errors import WellreadError
from wellread.train.finetune import FinetuneConfig, finetune


@pytest.fixture(scope="module")
def rte_slice(tmp_path_factory):
    """The first 160 training and 64 dev rows of the real RTE, in the GLUE layout."""
    root = tmp_path_factory.mktemp("glue")
    (root / "RTE").mkdir()
    for split, n in (("train", 160), ("dev", 64)):
        lines = data_path("glue", "RTE", f"{split}.tsv").read_text(encoding="utf-8").splitlines()
        (root / "RTE" / f"{split}.tsv").write_text("\n".join(lines[: n + 1]) + "\n", encoding="utf-8")
    return root


@pytest.fixture(scope="module")
def small_pretrained(small_model_dir):
    return small_model_dir


def cfg(model, data, out, **kw) -> FinetuneConfig:
    return FinetuneConfig(model=str(model), task="rte", data_dir=data, out=out, batch_size=16, lr=1e-3,
                          epochs=2, quiet=True, **kw)


def test_finetune_writes_a_model_that_transformers_loads_with_the_task_labels(small_pretrained, rte_slice, tmp_path):
    from transformers import AutoModelForSequenceClassification

    out = tmp_path / "run"
    r = finetune(cfg(small_pretrained, rte_slice, out))
    assert r["steps"] == 2 * (160 // 16) and r["epochs_done"] == 2
    assert [h["epoch"] for h in r["history"]] == [1, 2], "dev is evaluated after each epoch"
    assert 0.0 <= r["dev"]["dev/accuracy"] <= 1.0
    hf = AutoModelForSequenceClassification.from_pretrained(out / "model").eval()
    assert hf.config.id2label == {0: "entailment", 1: "not_entailment"}
    # The dev accuracy recorded equals what the saved model scores when re-evaluated independently.
    tok = tokenization.load_tokenizer(out / "model")
    rows = [ln.split("\t") for ln in (rte_slice / "RTE" / "dev.tsv").read_text().splitlines()[1:]]
    correct = 0
    for _, a, b, label in rows:
        enc = tok.encode(a, b)
        ids = torch.tensor([enc.ids[:128]])
        with torch.no_grad():
            logits = hf(input_ids=ids, token_type_ids=torch.tensor([enc.type_ids[:128]])).logits
        correct += hf.config.id2label[int(logits.argmax())] == label
    assert correct / len(rows) == pytest.approx(r["dev"]["dev/accuracy"])
    lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert {x["kind"] for x in lines} == {"train", "eval"}


def test_a_finished_run_is_not_redone(small_pretrained, rte_slice, tmp_path):
    out = tmp_path / "run"
    first = finetune(cfg(small_pretrained, rte_slice, out))
    stamp = (out / "model" / "model.safetensors").stat().st_mtime_ns
    again = finetune(cfg(small_pretrained, rte_slice, out))
    assert again["dev"] == first["dev"]
    assert (out / "model" / "model.safetensors").stat().st_mtime_ns == stamp


def test_a_model_for_another_label_set_is_refused(small_pretrained, rte_slice, tmp_path):
    out = tmp_path / "rte"
    finetune(cfg(small_pretrained, rte_slice, out, max_steps=2))
    cola = tmp_path / "glue" / "CoLA"
    cola.mkdir(parents=True)
    cola_rows = data_path("glue", "CoLA", "train.tsv").read_text().splitlines()[:64]
    (cola / "train.tsv").write_text("\n".join(cola_rows) + "\n")
    (cola / "dev.tsv").write_text("\n".join(cola_rows[:32]) + "\n")
    bad = FinetuneConfig(model=str(out / "model"), task="cola", data_dir=tmp_path / "glue", out=tmp_path / "c",
                         batch_size=16, max_steps=1, quiet=True)
    with pytest.raises(WellreadError, match=r"classifier predicts \['entailment', 'not_entailment'\].*--new-head"):
        finetune(bad)
    bad.new_head = True
    assert finetune(bad)["steps"] == 1


def test_a_killed_finetune_resumes_to_the_same_weights(small_pretrained, rte_slice, tmp_path):
    args = ["finetune", "--model", str(small_pretrained), "--task", "rte", "--data-dir", str(rte_slice),
            "--batch-size", "8", "--lr", "1e-3", "--epochs", "3", "--checkpoint-every", "3", "--quiet",
            "--threads", "1"]  # the same threads in both processes (an earlier in-process run may have set 1)
    assert cli.main([*args, "--out", str(tmp_path / "full")]) == 0
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-m", "wellread", *args, "--out", str(tmp_path / "killed")],
                            cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ckpt = tmp_path / "killed" / "checkpoint.pt"
    deadline = time.time() + 120
    while not ckpt.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (tmp_path / "killed" / "results.json").exists(), "the run was killed before it finished"
    assert cli.main([*args, "--out", str(tmp_path / "killed")]) == 0
    from safetensors.torch import load_file

    a = load_file(tmp_path / "full" / "model" / "model.safetensors")
    b = load_file(tmp_path / "killed" / "model" / "model.safetensors")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
