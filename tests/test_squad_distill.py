"""`wellread distill --task squad`: the start/end KL loss, the teacher's cached logits, transfer pairs."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

from tests.conftest import REPO, data_path, needs_squad
from tests.test_squad_finetune import _slice
from wellread.data.squad import QASettings
from wellread.train.distill import DistillConfig, distill
from wellread.train.finetune import FinetuneConfig, finetune
from wellread.train.qa_distill import qa_distillation_loss


def test_the_loss_is_t_squared_times_the_mean_kl_of_start_and_end_with_padding_masked():
    torch.manual_seed(0)
    s_start, s_end, t_start, t_end = (torch.randn(2, 7) for _ in range(4))
    mask = torch.tensor([[1] * 7, [1] * 5 + [0] * 2])
    T = 2.0
    got = qa_distillation_loss(s_start, s_end, t_start, t_end, mask, temperature=T)

    def kl(s, t, n):
        p = F.softmax(t[:n] / T, -1)
        return (p * (p.log() - F.log_softmax(s[:n] / T, -1))).sum()

    for row, n in enumerate((7, 5)):
        want = T * T * (kl(s_start[row], t_start[row], n) + kl(s_end[row], t_end[row], n)) / 2
        torch.testing.assert_close(got[row], want)
    assert qa_distillation_loss(t_start, t_end, t_start, t_end, mask).abs().max() < 1e-6
    s_start[1, 5:] = 100.0  # logits at padding do not count
    torch.testing.assert_close(qa_distillation_loss(s_start, s_end, t_start, t_end, mask, temperature=T)[1], got[1])


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    root = tmp_path_factory.mktemp("qa_teacher")
    data = _slice(data_path("squad", "dev-v1.1.json"), root / "dev-v1.1.json", articles=2, paragraphs=2)
    finetune(FinetuneConfig(model="mini", random_init=True, task="squad", data_dir=data, out=root / "teacher",
                            qa=QASettings(train_articles=1), batch_size=8, max_steps=3, quiet=True))
    return root / "teacher", data


@needs_squad
def test_distill_caches_the_teachers_logits_once_and_adds_transfer_pairs(teacher, tmp_path):
    run, data = teacher
    (tmp_path / "t.jsonl").write_text(json.dumps({"question": "Who won?", "context": "The Broncos won in 2016."}) + "\n")

    def cfg(out, **kw):
        return DistillConfig(teacher=str(run), student="tiny", random_init=True, task="squad", data_dir=data, out=out,
                             qa=QASettings(train_articles=1), batch_size=8, max_steps=3, cache=tmp_path / "cache",
                             transfer=[tmp_path / "t.jsonl"], quiet=True, **kw)

    first = distill(cfg(tmp_path / "a"))
    assert not first["teacher_cache_reused"] and first["transfer_sources"][str(tmp_path / "t.jsonl")] == 1
    assert first["split"]["kind"] == "by_article" and (tmp_path / "a" / "predictions.json").is_file()
    second = distill(cfg(tmp_path / "b", temperature=2.0))
    assert second["teacher_cache_reused"] and second["teacher_cache"] == first["teacher_cache"]
    assert len(list((tmp_path / "cache").iterdir())) == 1


@needs_squad
def test_a_bad_transfer_line_is_one_error(teacher, tmp_path):
    run, data = teacher
    (tmp_path / "t.jsonl").write_text('{"question": "Who?"}\n')
    p = subprocess.run([sys.executable, "-m", "wellread", "distill", "--teacher", str(run), "--student", "tiny",
                        "--random-init", "--task", "squad", "--data-dir", str(data), "--out", str(tmp_path / "r"),
                        "--train-articles", "1", "--max-steps", "1", "--transfer", str(tmp_path / "t.jsonl")],
                       cwd=REPO, capture_output=True, text=True)
    assert p.returncode == 1 and "Traceback" not in p.stderr
    assert "t.jsonl:1 (field context)" in p.stderr and p.stderr.count("\n") == 1
