"""Pre-trained Distillation on slices of real SST-2 and STS-B: the teacher's cache, the loss, the
student, stage 3, the grid objective, and bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from tests.conftest import write_glue_slice
from wellread import cli
from wellread.data.tasks import get_task
from wellread.errors import WellreadError
from wellread.modeling.models import load_classifier, save_model
from wellread.train import distill as D
from wellread.train.distill import DistillConfig, distillation_loss


@pytest.fixture(scope="module")
def glue_slice(tmp_path_factory):
    """The first 160 training and 64 dev rows of the real SST-2 and STS-B, in the GLUE layout."""
    return write_glue_slice(tmp_path_factory.mktemp("glue"), ("SST-2", "STS-B"), 160, 64)


def _teacher(src, task: str, out, seed: int = 0):
    """A teacher for ``task``: the encoder of ``src`` with a (random, seeded) classifier for the task, saved."""
    from wellread.tokenization import load_tokenizer
    from wellread.train.finetune import classifier_from_pretrained

    model = classifier_from_pretrained(src, get_task(task), seed=seed, new_head=True)
    save_model(model, load_tokenizer(src), out)
    return out


@pytest.fixture(scope="module")
def minilm_sst2_teacher(minilm_dir, tmp_path_factory):
    """A teacher with the real all-MiniLM-L6-v2 encoder (6 layers, H=384) and an SST-2 head."""
    return _teacher(minilm_dir, "sst2", tmp_path_factory.mktemp("teacher") / "sst2")


@pytest.fixture(scope="module")
def small_stsb_teacher(small_model_dir, tmp_path_factory):
    return _teacher(small_model_dir, "stsb", tmp_path_factory.mktemp("teacher") / "stsb")


def _cfg(teacher, glue, out, task="sst2", **kw) -> DistillConfig:
    base = dict(teacher=str(teacher), student="tiny", random_init=True, task=task, data_dir=glue, out=out,
                max_steps=4, batch_size=16, threads=1, quiet=True, cache=out.parent / f"cache-{out.name}")
    return DistillConfig(**(base | kw))


# --- the loss -------------------------------------------------------------------------------------

@pytest.mark.parametrize("temperature,alpha", [(1.0, 0.0), (2.0, 0.0), (2.0, 0.3)])
def test_the_loss_equals_a_reference_kl_and_cross_entropy(temperature, alpha):
    g = torch.Generator().manual_seed(0)
    s = torch.randn(6, 3, generator=g, requires_grad=True)
    t = torch.randn(6, 3, generator=g)
    gold = torch.tensor([0, 2, -1, 1, -1, 0])
    got = distillation_loss(s, t, gold, regression=False, temperature=temperature, alpha=alpha).sum()
    # Reference: PyTorch's KLDivLoss (batch sum) on the softened distributions, Hinton's T² scaling,
    # plus cross-entropy on the labelled rows only.
    kl = torch.nn.KLDivLoss(reduction="sum")(F.log_softmax(s / temperature, -1), F.softmax(t / temperature, -1))
    labelled = gold >= 0
    ce = F.cross_entropy(s[labelled], gold[labelled], reduction="sum")
    ref = (1 - alpha) * temperature ** 2 * kl + alpha * ce
    assert float(got.detach()) == pytest.approx(float(ref.detach()), rel=1e-6)
    g1, = torch.autograd.grad(got, s)
    g2, = torch.autograd.grad(ref, s)
    torch.testing.assert_close(g1, g2, rtol=1e-5, atol=1e-7)


def test_the_regression_loss_is_the_squared_error_to_the_teacher_and_the_gold_score():
    s = torch.tensor([[1.0], [2.0], [0.5]])
    t = torch.tensor([[1.5], [1.0], [0.5]])
    gold = torch.tensor([2.0, float("nan"), 1.0])
    got = distillation_loss(s, t, gold, regression=True, alpha=0.25)
    want = 0.75 * torch.tensor([0.25, 1.0, 0.0]) + 0.25 * torch.tensor([1.0, 0.0, 0.25])
    torch.testing.assert_close(got, want)


# --- the teacher's cache ----------------------------------------------------------------------------

def test_cached_logits_equal_a_fresh_forward_pass_of_the_real_minilm_teacher(minilm_sst2_teacher, glue_slice, tmp_path):
    cfg = _cfg(minilm_sst2_teacher, glue_slice, tmp_path / "run", augment=1, bf16=False)  # fp32, as the reference
    labels = D.prepare_labels(cfg)
    transfer = D.build_transfer(cfg, get_task("sst2"))
    assert len(labels.logits) == len(transfer) > 160  # the train inputs plus derived spans
    assert labels.computed_shards == 1 and labels.reused_shards == 0
    # A fresh forward pass of the teacher, one plain padded batch at a time, in transformers' own API.
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    model = AutoModelForSequenceClassification.from_pretrained(minilm_sst2_teacher).eval()
    tok = AutoTokenizer.from_pretrained(minilm_sst2_teacher)
    rows = [0, 1, 7, 159, 160, len(transfer) - 1]
    enc = tok([transfer.texts_a[i] for i in rows], padding=True, truncation=True, max_length=128, return_tensors="pt")
    with torch.no_grad():
        fresh = model(**enc).logits.numpy()
    np.testing.assert_allclose(labels.logits[rows], fresh, atol=1e-4)
    again = D.prepare_labels(cfg)  # read back, not recomputed
    assert again.computed_shards == 0 and again.reused_shards == 1
    np.testing.assert_array_equal(again.logits, labels.logits)


def test_an_interrupted_labelling_resumes_without_recomputing_finished_shards(small_stsb_teacher, glue_slice, tmp_path,
                                                                              monkeypatch):
    monkeypatch.setattr(D, "SHARD_SIZE", 48)  # 160 train pairs + 160 swapped + 160 re-paired = 480: 10 shards
    cfg = _cfg(small_stsb_teacher, glue_slice, tmp_path / "run", task="stsb", augment=2)
    real = D._predict_range
    calls = []

    def dying(*a, **k):
        if len(calls) == 3:
            raise KeyboardInterrupt  # killed while labelling the 4th shard
        calls.append(a[2])
        return real(*a, **k)

    monkeypatch.setattr(D, "_predict_range", dying)
    with pytest.raises(KeyboardInterrupt):
        D.prepare_labels(cfg)
    shards = sorted(cfg.cache.glob("logits-*.npy"))
    assert [p.name for p in shards] == ["logits-00000.npy", "logits-00001.npy", "logits-00002.npy"]
    mtimes = [p.stat().st_mtime_ns for p in shards]
    monkeypatch.setattr(D, "_predict_range", real)
    resumed = D.prepare_labels(cfg)
    assert (resumed.reused_shards, resumed.computed_shards) == (3, 7)
    assert [p.stat().st_mtime_ns for p in shards] == mtimes
    fresh = D.prepare_labels(_cfg(small_stsb_teacher, glue_slice, tmp_path / "other", task="stsb", augment=2))
    assert fresh.computed_shards == 10
    np.testing.assert_array_equal(resumed.logits, fresh.logits)


# --- the student ----------------------------------------------------------------------------------

def test_a_h128_student_distils_from_the_h384_minilm_teacher_and_loads_in_transformers(minilm_sst2_teacher,
                                                                                      glue_slice, tmp_path):
    out = tmp_path / "pd"
    args = ["distill", "--teacher", str(minilm_sst2_teacher), "--student", "tiny", "--random-init", "--task", "sst2",
            "--data-dir", str(glue_slice), "--out", str(out), "--max-steps", "6", "--batch-size", "16",
            "--then-finetune", "--finetune-epochs", "1", "--finetune-lr", "3e-5", "--threads", "1", "--quiet",
            "--cache", str(tmp_path / "cache")]
    assert cli.main(args) == 0
    r = json.loads((out / "results.json").read_text())
    assert r["finished"] and r["transfer_examples"] == 160 and r["steps"] == 6
    stage3 = json.loads((out / "finetune" / "results.json").read_text())["settings"]
    assert (stage3["lr"], stage3["epochs"], r["settings"]["lr"]) == (3e-5, 1.0, 1e-4)  # stage 3's own rate
    assert set(r["distill_dev"]) >= {"dev/accuracy"} and set(r["dev"]) >= {"dev/accuracy"}
    assert r["finetune"]["steps"] == 6  # stage 3: 160 labelled examples at batch 16, 1 epoch, capped by --max-steps
    from transformers import AutoModelForSequenceClassification

    student = AutoModelForSequenceClassification.from_pretrained(out / "model")
    assert student.config.hidden_size == 128 and student.config.id2label == dict(enumerate(get_task("sst2").labels))
    teacher = AutoModelForSequenceClassification.from_pretrained(minilm_sst2_teacher)
    assert teacher.config.hidden_size == 384
    evals = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert any(e.get("kind") == "eval" and "dev/accuracy" in e for e in evals)
    before = {p.name: p.stat().st_mtime_ns for p in (out / "model").iterdir()}
    assert cli.main(args) == 0  # a finished run is read back, not redone
    assert {p.name: p.stat().st_mtime_ns for p in (out / "model").iterdir()} == before


def test_distillation_moves_the_student_towards_the_teacher(small_stsb_teacher, small_model_dir, glue_slice, tmp_path):
    """After training on the teacher's scores, the student's predictions are closer to them than before."""
    from wellread.eval.predict import predict_logits
    from wellread.tokenization import load_tokenizer
    from wellread.train.finetune import classifier_from_pretrained

    # The student: the teacher's own encoder with a fresh head (a different seed) - it must learn the teacher's head.
    student_src = _teacher(small_model_dir, "stsb", tmp_path / "student", seed=7)
    cfg = _cfg(small_stsb_teacher, glue_slice, tmp_path / "run", task="stsb", student=str(student_src),
               random_init=False, max_steps=60, lr=1e-3, epochs=None)
    labels = D.prepare_labels(cfg)
    transfer = D.build_transfer(cfg, get_task("stsb"))
    tok = load_tokenizer(student_src)
    feats = D.cached_encode(tok, transfer.texts_a, transfer.texts_b, 128, "t")
    before = classifier_from_pretrained(student_src, get_task("stsb"), seed=0)
    err0 = np.mean((predict_logits(before, feats)[:, 0] - labels.logits[:, 0]) ** 2)
    D.distill(cfg)
    after = load_classifier(cfg.out / "model")
    err1 = np.mean((predict_logits(after, feats)[:, 0] - labels.logits[:, 0]) ** 2)
    assert err1 < 0.5 * err0


# --- the grid -------------------------------------------------------------------------------------

def test_the_grid_labels_once_and_every_cell_reuses_the_cache(minilm_sst2_teacher, glue_slice, tmp_path, monkeypatch):
    monkeypatch.setenv("WELLREAD_CACHE", str(tmp_path / "wcache"))
    out = tmp_path / "grid"
    args = ["grid", "--objective", "distill", "--teacher", f"sst2={minilm_sst2_teacher}", "--model", "tiny",
            "--random-init", "--tasks", "sst2", "--data-dir", str(glue_slice), "--out", str(out),
            "--batch-sizes", "16,32", "--learning-rates", "1e-4", "--max-steps", "3", "--workers", "1", "--quiet"]
    assert cli.main(args) == 0
    r = json.loads((out / "results.json").read_text())
    assert r["teacher_labelling"]["sst2"]["shards_computed"] == 1
    for cell in ("bs16_lr0.0001", "bs32_lr0.0001"):
        d = json.loads((out / "sst2" / cell / "distill.json").read_text())
        assert (d["teacher_shards_computed"], d["teacher_shards_reused"]) == (0, 1)
        assert d["settings"]["teacher"] == str(minilm_sst2_teacher)
    assert r["tasks"]["sst2"]["finished"] == 2
    assert "PD" in (out / "table.md").read_text()


# --- bad input ------------------------------------------------------------------------------------

def test_a_teacher_for_other_labels_is_refused(small_stsb_teacher, glue_slice, tmp_path):
    with pytest.raises(WellreadError, match="needs 0, 1"):
        D.prepare_labels(_cfg(small_stsb_teacher, glue_slice, tmp_path / "run", task="sst2"))


def test_a_cache_of_another_teacher_or_transfer_set_is_refused(minilm_sst2_teacher, small_model_dir, glue_slice,
                                                                 tmp_path):
    cfg = _cfg(minilm_sst2_teacher, glue_slice, tmp_path / "run")
    D.prepare_labels(cfg)
    other = _teacher(small_model_dir, "sst2", tmp_path / "other-teacher")
    with pytest.raises(WellreadError, match="another teacher") as e:
        D.prepare_labels(_cfg(other, glue_slice, tmp_path / "run"))
    assert "manifest.json" in str(e.value)
    with pytest.raises(WellreadError, match="another transfer set"):
        D.prepare_labels(_cfg(minilm_sst2_teacher, glue_slice, tmp_path / "run", augment=1))


def test_a_student_vocab_that_cannot_encode_the_text_is_refused(minilm_sst2_teacher, glue_slice, tmp_path,
                                                                 tiny_test_vocab):
    cfg = _cfg(minilm_sst2_teacher, glue_slice, tmp_path / "run", vocab=tiny_test_vocab)
    with pytest.raises(WellreadError, match=r"student's vocabulary cannot encode the transfer text: \d+\.\d% "):
        D.distill(cfg)


@pytest.mark.parametrize("content,message", [
    ('{"text": "fine"}\n{"text": 3}\n', ":2 (field text): no text"),
    ('{"text": "fine"}\nnot json\n', ":2: not JSON"),
])
def test_a_bad_transfer_file_names_file_and_line(minilm_sst2_teacher, glue_slice, tmp_path, content, message):
    bad = tmp_path / "transfer.jsonl"
    bad.write_text(content, encoding="utf-8")
    rc_err = _cli_error(["distill", "--teacher", str(minilm_sst2_teacher), "--student", "tiny", "--random-init",
                         "--task", "sst2", "--data-dir", str(glue_slice), "--out", str(tmp_path / "o"),
                         "--transfer", str(bad), "--max-steps", "1"])
    assert str(bad) + message in rc_err


def test_transfer_files_are_read_as_every_text_file_is(tmp_path):
    """wellread.io.open_text: .gz or not, strict UTF-8 (a bad byte names its line), for GLUE and QA transfer files."""
    import gzip

    from wellread.train.qa_distill import read_qa_transfer

    bad = tmp_path / "t.txt.gz"
    with gzip.open(bad, "wb") as f:
        f.write(b"fine\ncaf\xe9 au lait\n")
    with pytest.raises(WellreadError, match=r"t.txt.gz:2: not UTF-8 text: byte 0xe9"):
        list(D.read_transfer_file(bad, pairs=False))
    questions = tmp_path / "q.jsonl.gz"
    with gzip.open(questions, "wt", encoding="utf-8") as f:
        f.write('{"question": "who?", "context": "me"}\n')
    assert [(e.question, e.context) for e in read_qa_transfer(questions)] == [("who?", "me")]


def test_a_single_text_line_for_a_pair_task_is_refused(small_stsb_teacher, glue_slice, tmp_path):
    bad = tmp_path / "pairs.tsv"
    bad.write_text("a man plays\ta man is playing\njust one sentence\n", encoding="utf-8")
    cfg = _cfg(small_stsb_teacher, glue_slice, tmp_path / "run", task="stsb", transfer=[bad])
    with pytest.raises(WellreadError, match=r"pairs.tsv:2 \(field text_b\): the task takes sentence pairs"):
        D.build_transfer(cfg, get_task("stsb"))


def test_transfer_files_are_added_after_the_task_inputs(small_stsb_teacher, glue_slice, tmp_path):
    extra = tmp_path / "extra.tsv.gz"
    import gzip

    with gzip.open(extra, "wt", encoding="utf-8") as f:
        f.write("a dog runs\ta dog is running\n\nthe sky is blue\tgrass is green\n")
    cfg = _cfg(small_stsb_teacher, glue_slice, tmp_path / "run", task="stsb", transfer=[extra])
    t = D.build_transfer(cfg, get_task("stsb"))
    assert len(t) == 162 and t.texts_a[-1] == "the sky is blue" and t.texts_b[-1] == "grass is green"
    assert np.isnan(t.gold[-1]) and not np.isnan(t.gold[0])


def _cli_error(args) -> str:
    import contextlib
    import io

    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        rc = cli.main(args + ["--quiet", "--threads", "1"])
    assert rc == 1
    lines = [ln for ln in err.getvalue().splitlines() if ln.strip()]
    assert len(lines) == 1, lines
    return lines[0]


def test_derived_inputs_do_not_depend_on_the_run_seed(glue_slice, small_stsb_teacher, tmp_path):
    a = D.build_transfer(_cfg(small_stsb_teacher, glue_slice, tmp_path / "a", task="sst2", augment=2, seed=1),
                         get_task("sst2"))
    b = D.build_transfer(_cfg(small_stsb_teacher, glue_slice, tmp_path / "b", task="sst2", augment=2, seed=2),
                         get_task("sst2"))
    assert a.content_hash() == b.content_hash()
    spans = a.texts_a[160:]
    assert spans and all(len(s.split()) >= 3 for s in spans)
    originals = [t for t in a.texts_a[:160] if len(t.split()) >= 4]
    assert all(any(s in o for o in originals) for s in spans[:50])


def test_stage3_takes_its_own_learning_rate_only_with_then_finetune(tmp_path):
    from wellread.errors import WellreadError
    from wellread.train.finetune import after_distillation

    base = dict(teacher=str(tmp_path), student="tiny", random_init=True, task="stsb", out=tmp_path / "r", lr=3e-4)
    assert after_distillation(D.DistillConfig(**base, then_finetune=True)).lr == 3e-4  # the default: --lr
    assert after_distillation(D.DistillConfig(**base, then_finetune=True, finetune_lr=3e-5)).lr == 3e-5
    with pytest.raises(WellreadError, match="needs --then-finetune"):
        D.DistillConfig(**base, finetune_lr=3e-5)


def test_two_labellings_of_one_cache_side_by_side_wait_instead_of_breaking_each_other(small_stsb_teacher,
                                                                                      glue_slice, tmp_path,
                                                                                      monkeypatch):
    """Seeds run side by side label the same transfer set into the same cache. The second used to remove the
    first's in-flight temporary (as a killed run's) and the first then failed on its rename; now it waits."""
    import threading

    monkeypatch.setattr(D, "SHARD_SIZE", 48)  # 160 pairs + 160 derived: 7 shards
    cfg = _cfg(small_stsb_teacher, glue_slice, tmp_path / "run", task="stsb", augment=1)
    real_predict, real_wait = D._predict_range, D.wait_for_labeller
    first_busy, second_waits, go_on = threading.Event(), threading.Event(), threading.Event()
    in_flight = cfg.cache / ".logits-00001.npy.x1y2z3.tmp"  # the first's atomic write of shard 1, under way

    def slow_first(*a, **k):
        if threading.current_thread().name == "first" and a[2] == 48:  # shard 1 of the first labelling
            in_flight.write_bytes(b"half a shard")
            first_busy.set()
            assert go_on.wait(60)
            in_flight.unlink()
        return real_predict(*a, **k)

    def waiting(*a, **k):
        second_waits.set()
        real_wait(*a, **k)

    monkeypatch.setattr(D, "_predict_range", slow_first)
    monkeypatch.setattr(D, "wait_for_labeller", waiting)
    got = {}
    first = threading.Thread(target=lambda: got.update(first=D.prepare_labels(cfg)), name="first")
    second = threading.Thread(target=lambda: got.update(second=D.prepare_labels(cfg)), name="second")
    first.start()
    assert first_busy.wait(60)
    second.start()
    assert second_waits.wait(60), "the second labelling did not wait for the first"
    assert in_flight.exists()  # nothing of the first's was removed
    go_on.set()
    first.join(120)
    second.join(120)
    assert set(got) == {"first", "second"}
    assert (got["first"].computed_shards, got["second"].computed_shards, got["second"].reused_shards) == (7, 0, 7)
    np.testing.assert_array_equal(got["first"].logits, got["second"].logits)
