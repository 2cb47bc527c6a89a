"""`wellread finetune --task squad|squad_v2` on a slice of the real dev files, split by article: the run
directory, a model that transformers loads unchanged, `evaluate --model` agreeing with the run."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from tests.conftest import REPO, data_path, needs_squad
from wellread.data import squad
from wellread.data.squad import QASettings
from wellread.infer.qa import QAPredictor
from wellread.train.finetune import FinetuneConfig, finetune


def _slice(src, dst, articles=3, paragraphs=3):
    d = json.loads(src.read_text())
    d["data"] = [{"title": a["title"], "paragraphs": a["paragraphs"][:paragraphs]} for a in d["data"][:articles]]
    dst.write_text(json.dumps(d))
    return dst


@pytest.fixture(scope="module")
def v1_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("squad")
    data = _slice(data_path("squad", "dev-v1.1.json"), root / "dev-v1.1.json")
    cfg = FinetuneConfig(model="tiny", random_init=True, task="squad", data_dir=root, out=root / "run",
                         qa=QASettings(train_articles=2), batch_size=8, max_steps=4, lr=1e-3, quiet=True)
    return finetune(cfg), root / "run", data


@needs_squad
def test_the_run_records_its_split_by_article_and_writes_the_prediction_files(v1_run):
    r, run, data = v1_run
    assert r["split"]["kind"] == "by_article" and r["split"]["train_articles"] == 2
    assert r["split"]["test_articles"] == 1
    sf = squad.read_squad(data, "squad")
    test_ids = {e.id for e in sf.examples if e.article == 2}
    assert r["train_questions"] + r["test_questions"] == len(sf.examples) and r["test_questions"] == len(test_ids)
    preds = json.loads((run / "predictions.json").read_text())
    assert set(preds) == test_ids and all(isinstance(v, str) for v in preds.values())
    nbest = json.loads((run / "nbest_predictions.json").read_text())
    assert all(0 < len(v) <= 20 and abs(sum(x["probability"] for x in v) - 1) < 1e-4 for v in nbest.values())
    assert r["steps"] == 4 and set(r["dev"]) >= {"test/exact_match", "test/f1"}


@needs_squad
def test_transformers_loads_the_model_unchanged_with_the_same_logits(v1_run):
    from transformers import AutoModelForQuestionAnswering, AutoTokenizer

    _, run, _ = v1_run
    hf = AutoModelForQuestionAnswering.from_pretrained(run / "model").eval()
    assert type(hf).__name__ == "BertForQuestionAnswering"
    hf_tok = AutoTokenizer.from_pretrained(run / "model")
    enc = hf_tok("Who won?", "The Denver Broncos won in 2016.", return_tensors="pt")
    ours = QAPredictor(run)
    with torch.no_grad():
        theirs = hf(**enc)
        mine = ours.model(**enc)
    torch.testing.assert_close(theirs.start_logits, mine.start_logits)
    torch.testing.assert_close(theirs.end_logits, mine.end_logits)
    # our tokenizer makes the same inputs as theirs
    qf = squad.preprocess(ours.tok, [squad.QAExample("q", "Who won?", "The Denver Broncos won in 2016.", (), False, 0)])
    assert qf.feats.ids.tolist() == enc["input_ids"][0].tolist()


@needs_squad
def test_evaluate_the_model_on_the_held_out_articles_gives_the_runs_scores(v1_run, tmp_path):
    r, run, data = v1_run
    p = subprocess.run([sys.executable, "-m", "wellread", "evaluate", "--task", "squad", "--model", str(run),
                        "--data-dir", str(data), "--split", "test", "--predictions", str(tmp_path / "predictions.json"),
                        "--json"], cwd=REPO, capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    got = json.loads(p.stdout)
    assert got["exact_match"] == pytest.approx(r["dev"]["test/exact_match"])
    assert got["f1"] == pytest.approx(r["dev"]["test/f1"])
    assert json.loads((tmp_path / "predictions.json").read_text()) == json.loads((run / "predictions.json").read_text())


@needs_squad
def test_a_v2_run_writes_null_odds_and_records_the_threshold(tmp_path):
    data = _slice(data_path("squad", "dev-v2.0.json"), tmp_path / "dev-v2.0.json", paragraphs=2)
    cfg = FinetuneConfig(model="tiny", random_init=True, task="squad_v2", data_dir=data, out=tmp_path / "run",
                         qa=QASettings(train_articles=2), batch_size=8, max_steps=2, quiet=True)
    r = finetune(cfg)
    assert {"test/HasAns_f1", "test/NoAns_f1", "test/best_f1", "test/best_f1_thresh"} <= set(r["dev"])
    odds = json.loads((tmp_path / "run" / "null_odds.json").read_text())
    assert set(odds) == set(json.loads((tmp_path / "run" / "predictions.json").read_text()))
    config = json.loads((tmp_path / "run" / "model" / "config.json").read_text())
    assert config["null_score_diff_threshold"] == r["dev"]["test/best_f1_thresh"]
    assert QAPredictor(tmp_path / "run").v2


@needs_squad
def test_a_tiny_model_learns_its_training_questions(tmp_path):
    """Not a stub: 4 epochs (28 steps) on one article's 3 paragraphs lift the span F1 on those questions."""
    data = _slice(data_path("squad", "dev-v1.1.json"), tmp_path / "dev-v1.1.json", articles=2, paragraphs=2)
    run = tmp_path / "run"
    cfg = FinetuneConfig(model="tiny", random_init=True, task="squad", data_dir=data, out=run, qa=QASettings(train_articles=1),
                         batch_size=8, epochs=4, lr=3e-3, warmup=0.0, dropout=0.0, quiet=True)
    finetune(cfg)
    sf = squad.read_squad(data, "squad")
    train_ex = [e for e in sf.examples if e.article == 0]
    preds = QAPredictor(run).predictions(train_ex)
    from wellread.eval.squad import squad_scores

    r = squad_scores({e.id: [a for a, _ in e.answers] for e in train_ex}, preds.text, v2=False)
    assert r["f1"] > 20, r  # untrained (lr 1e-9): F1 3.3, EM 0
    assert np.mean([len(t) for t in preds.text.values()]) > 0


@needs_squad
def test_grid_over_squad_picks_the_best_cell_by_held_out_f1(tmp_path):
    from wellread.train.grid import GridConfig, run_grid

    _slice(data_path("squad", "dev-v1.1.json"), tmp_path / "dev-v1.1.json", articles=3, paragraphs=1)
    r = run_grid(GridConfig(model="tiny", random_init=True, tasks="squad", data_dir=tmp_path, out=tmp_path / "grid",
                            batch_sizes="8", learning_rates="1e-3,1e-5", epochs=1, workers=1, quiet=True))
    t = r["tasks"]["squad"]
    assert t["finished"] == 2 and not r["failures"] and r["glue_score"] is None
    for cell in t["cells"]:
        run = json.loads((tmp_path / "grid" / cell["run"] / "results.json").read_text())
        assert cell["score"] == pytest.approx(run["dev"]["test/f1"] / 100) and run["split"]["train_articles"] == 2
    assert t["best"]["score"] == max(c["score"] for c in t["cells"])


@needs_squad
def test_report_takes_a_qa_run(v1_run, tmp_path):
    from wellread.report import write_report

    _, run, _ = v1_run
    files = write_report([run], tmp_path / "report")
    assert (tmp_path / "report" / "curves-squad.png") in files
