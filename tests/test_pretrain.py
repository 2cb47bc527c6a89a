"""`wellread pretrain` on real text (KJV verses): the sparse MLM head, a short run, resume, refusals."""

from __future__ import annotations

import itertools

import pytest
import torch

from wellread import tokenization
from wellread.config import from_mapping
from wellread.data.corpus import build_corpus
from wellread.data.shards import load_corpus
from wellread.errors import WellreadError
from wellread.experiments import cpu_aids
from wellread.modeling.models import load_model
from wellread.train import pretrain as pt
from wellread.train.pretrain import PretrainConfig, PretrainObjective, pretrain


@pytest.fixture(scope="module")
def small_model(small_model_dir):
    return small_model_dir


def cfg(model, data, out, **kw) -> PretrainConfig:
    """A small run's config; the CPU aids' settings go into their group, as the command line puts them."""
    base = dict(model=str(model), data=data, out=out, batch_size=16, max_seq_length=64, max_steps=30, lr=2e-3,
                warmup=0.1, eval_documents=10, eval_batches=4, eval_batch_size=16, checkpoint_every=10,
                eval_every=None, log_every=5, quiet=True)
    return from_mapping(PretrainConfig, base | kw)


@pytest.mark.parametrize("objective", ["mlm+nsp", "mlm"])
def test_sparse_head_matches_the_full_hf_head(small_model, shards, tmp_path, objective):
    net, tok, _ = pt.build_model(cfg(small_model, shards, tmp_path, dropout=0.0, objective=objective))
    corpus = load_corpus(shards, expect_vocab_hash=tokenization.vocab_hash(tok))
    c = cfg(small_model, shards, tmp_path, objective=objective)
    obj = PretrainObjective(net, corpus, tok, c)
    batch = next(obj.batches(0, 0, 16, 0, 1))
    assert len(batch["masked_labels"]) > 16
    net.train()  # dropout is 0: train mode, as the loop runs it

    loss, stats = obj.loss(obj.model, batch, obj.counts(batch))
    loss.backward()
    sparse_grads = {n: p.grad.clone() for n, p in net.named_parameters() if p.grad is not None}
    net.zero_grad(set_to_none=True)

    # HF's own head: full logits at every position, labels -100 except at the masked ones.
    B, L = batch["input_ids"].shape
    labels = torch.full((B * L,), -100, dtype=torch.long)
    labels[batch["masked_positions"]] = batch["masked_labels"]
    out = net(input_ids=batch["input_ids"], token_type_ids=batch["token_type_ids"],
              attention_mask=batch["attention_mask"], labels=labels.view(B, L),
              next_sentence_label=batch["next_sentence_label"] if objective == "mlm+nsp" else None)
    if objective == "mlm+nsp":
        full = out.loss  # HF sums the MLM and NSP means
    else:
        full = torch.nn.functional.cross_entropy(out.prediction_logits.view(B * L, -1), labels)
    full.backward()
    full_grads = {n: p.grad.clone() for n, p in net.named_parameters() if p.grad is not None}

    assert abs(loss.item() - full.item()) < 1e-5
    assert set(sparse_grads) == set(full_grads)
    for n, g in full_grads.items():
        torch.testing.assert_close(sparse_grads[n], g, atol=1e-5, rtol=1e-4, msg=n)
    assert stats["masked"] == len(batch["masked_labels"])
    # accuracy counts from HF's logits: all masked rows, and the rows shown [MASK] (not the kept or random ones);
    # the output bias pushed toward one row's answer, so that some predictions are right
    with torch.no_grad():
        net.cls.predictions.bias[batch["masked_labels"][0]] += 30.0
        _, stats = obj.loss(obj.model, batch, obj.counts(batch))
        logits = net(input_ids=batch["input_ids"], token_type_ids=batch["token_type_ids"],
                     attention_mask=batch["attention_mask"]).prediction_logits
    pos = batch["masked_positions"]
    right = logits.view(B * L, -1)[pos].argmax(-1) == batch["masked_labels"]
    assert 0 < right.sum() < len(pos)
    shown = batch["input_ids"].view(-1)[pos]
    at_mask = shown == tok.token_to_id("[MASK]")
    assert 0 < at_mask.sum() < len(pos) and (shown[~at_mask] != tok.token_to_id("[MASK]")).all()
    assert stats["masked_correct"] == right.sum() and stats["at_mask"] == at_mask.sum()
    assert stats["at_mask_correct"] == (right & at_mask).sum()


def test_position_arithmetic_equals_iterating(small_model, shards, tmp_path):
    net, tok, _ = pt.build_model(cfg(small_model, shards, tmp_path))
    obj = PretrainObjective(net, load_corpus(shards), tok, cfg(small_model, shards, tmp_path))
    ds = obj.dataset(16)
    start = ds.state_dict()
    states = []
    for _batch in itertools.islice(ds, 120):  # past the end of the first epoch (~90 documents' instances)
        states.append(ds.state_dict())
    assert states[-1]["epoch"] >= 1, "the walk must cross an epoch boundary to be tested"
    for n in (1, 7, 33, 64, 120):
        assert ds.position_after(start, n) == states[n - 1]
    assert ds.position_after(states[9], 50) == states[59]


def test_short_run_writes_a_fill_mask_model_and_learns(small_model, shards, tmp_path):
    import json

    from transformers import BertForMaskedLM, pipeline

    out = tmp_path / "run"
    r = pretrain(cfg(small_model, shards, out, eval_every=30))
    assert r["steps"] == 30 and r["tokens"] > 30 * 16 * 10 and r["tokens_per_s"] > 0
    assert set(r["eval"]) >= {"eval/mlm_loss", "eval/mlm_accuracy", "eval/mlm_accuracy_at_mask", "eval/nsp_accuracy"}
    train_log = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    losses = [x["mlm_loss"] for x in train_log if x["kind"] == "train"]
    assert losses[-1] < losses[0] - 0.5, losses
    assert json.loads((out / "results.json").read_text())["steps"] == 30
    assert not (out / "curves.png").exists()  # training draws nothing; the command does (test_cli_pretrain_...)

    hf, info = BertForMaskedLM.from_pretrained(out / "model", output_loading_info=True)
    assert not info["missing_keys"], info
    ours = load_model(out / "model", "pretraining")
    torch.testing.assert_close(hf.cls.predictions.decoder.weight, ours.bert.embeddings.word_embeddings.weight)
    fill = pipeline("fill-mask", model=str(out / "model"))
    answers = fill("and god said , let there be [MASK] .")
    assert len(answers) == 5 and all("token_str" in a for a in answers)
    # A finished run re-run prints its results instead of training again.
    assert pretrain(cfg(small_model, shards, out, eval_every=30))["wall_seconds"] == r["wall_seconds"]


def test_dropout_override_is_for_training_only(small_model, shards, tmp_path):
    """--dropout 0 turns every dropout off while pre-training; the saved model keeps the architecture's
    rate, so fine-tuning from it uses the usual 0.1."""
    import json

    net, _, _ = pt.build_model(cfg(small_model, shards, tmp_path, dropout=0.0))
    ps = [m.p for m in net.modules() if isinstance(m, torch.nn.Dropout)]
    assert len(ps) >= 7 and set(ps) == {0.0}  # embeddings, 2 x (attention probs, attention out, ffn out)
    assert net.config.hidden_dropout_prob == net.config.attention_probs_dropout_prob == 0.1
    out = tmp_path / "run"
    pretrain(cfg(small_model, shards, out, dropout=0.0, max_steps=2, objective="mlm"))
    saved = json.loads((out / "model" / "config.json").read_text())
    assert saved["hidden_dropout_prob"] == saved["attention_probs_dropout_prob"] == 0.1
    assert set(m.p for m in load_model(out / "model", "pretraining").modules()
               if isinstance(m, torch.nn.Dropout)) == {0.1}


class Boom(Exception):
    pass


RESUME = dict(objective="mlm", masking="whole-word", max_steps=12, checkpoint_every=5)


@pytest.fixture(scope="module")
def straight_run(small_model, shards, tmp_path_factory):
    out = tmp_path_factory.mktemp("straight") / "run"
    pretrain(cfg(small_model, shards, out, **RESUME))
    return out


@pytest.mark.parametrize("keep_index", [True, False])
def test_interrupted_and_resumed_run_equals_an_uninterrupted_one(small_model, shards, straight_run, tmp_path,
                                                                 monkeypatch, keep_index):
    from safetensors.torch import load_file

    monkeypatch.setattr(pt, "INDEX_EVERY", 2)  # positions recorded after micro-batches 2, 4, 6, ...
    real_loss = PretrainObjective.loss
    calls = {"n": 0}

    def flaky(self, model, batch, totals):
        calls["n"] += 1
        if calls["n"] == 8:  # in step 8: the last checkpoint is step 5
            raise Boom
        return real_loss(self, model, batch, totals)

    monkeypatch.setattr(PretrainObjective, "loss", flaky)
    out = tmp_path / "killed"
    with pytest.raises(Boom):
        pretrain(cfg(small_model, shards, out, **RESUME))
    monkeypatch.setattr(PretrainObjective, "loss", real_loss)
    assert not (out / "model").exists()
    assert torch.load(out / "checkpoint.pt", weights_only=True)["loop"]["step"] == 5
    if keep_index:  # resumes from the position recorded after micro-batch 4, then counts one batch on
        assert '"micro": 4' in (out / pt.INDEX).read_text()
    else:
        (out / pt.INDEX).unlink()  # the position is then found by counting instances from the start
    r = pretrain(cfg(small_model, shards, out, **RESUME))
    assert r["steps"] == 12
    a = load_file(straight_run / "model" / "model.safetensors")
    b = load_file(out / "model" / "model.safetensors")
    assert set(a) == set(b)
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_shards_of_another_vocab_are_refused(small_model, tmp_path):
    other = tokenization.build_tokenizer(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + list("abcdefghijklmnopqrstuvwxyz"))
    vocab = tokenization.save_vocab(other, tmp_path / "vocab")
    (tmp_path / "t.txt").write_text("a b c d. e f g.\n\nh i j. k l m.\n", encoding="utf-8")
    build_corpus([tmp_path / "t.txt"], vocab, tmp_path / "shards", workers=1, show_progress=False)
    with pytest.raises(WellreadError, match="shards were made with vocab .* the model's vocab is"):
        pretrain(cfg(small_model, tmp_path / "shards", tmp_path / "run", eval_documents=1))


def test_bad_settings_are_refused(small_model, shards, tmp_path):
    with pytest.raises(WellreadError, match="'mlm' or 'mlm\\+nsp'"):
        cfg(small_model, shards, tmp_path, objective="nsp")
    with pytest.raises(WellreadError, match="endless"):
        cfg(small_model, shards, tmp_path, epochs=1.0)
    with pytest.raises(WellreadError, match="hold out"):
        pretrain(cfg(small_model, shards, tmp_path / "r", eval_documents=10_000))
    with pytest.raises(WellreadError, match="'random' or 'sinusoidal'"):
        cfg(small_model, shards, tmp_path, position_init="learned")
    with pytest.raises(WellreadError, match="position-init is for a random start"):
        pretrain(cfg(small_model, shards, tmp_path / "r3", position_init="sinusoidal"))


def test_cli_pretrain_runs_and_reports(small_model, shards, tmp_path, capsys):
    from wellread import cli

    out = tmp_path / "run"
    rc = cli.main(["pretrain", "--model", str(small_model), "--data", str(shards), "--out", str(out),
                   "--objective", "mlm", "--masking", "whole-word", "--max-steps", "4", "--batch-size", "8",
                   "--max-seq-length", "32", "--eval-documents", "10", "--eval-batches", "2", "--quiet"])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "mlm_accuracy" in printed and "nsp" not in printed and str(out / "model") in printed
    import matplotlib.image

    assert matplotlib.image.imread(out / "curves.png").shape[1] > 500  # loss and accuracy curves, drawn when done
    drawn = (out / "curves.png").stat().st_mtime_ns
    assert cli.main(["pretrain", "--model", str(small_model), "--data", str(shards), "--out", str(out),
                     "--objective", "mlm", "--masking", "whole-word", "--max-steps", "4", "--batch-size", "8",
                     "--max-seq-length", "32", "--eval-documents", "10", "--eval-batches", "2", "--quiet"]) == 0
    assert (out / "curves.png").stat().st_mtime_ns == drawn  # a finished run run again: nothing redrawn
    capsys.readouterr()
    assert cli.main(["pretrain", "--model", str(small_model), "--data", str(shards), "--out", str(tmp_path / "r2"),
                     "--objective", "sop", "--max-steps", "4"]) == 1
    assert "--objective: should be 'mlm' or 'mlm+nsp'" in capsys.readouterr().err


def test_two_processes_take_the_same_steps_as_one(small_model, shards, tmp_path):
    """torchrun with 2 CPU processes (gloo), each on half of every batch, matches one process."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    from safetensors.torch import load_file

    from tests.conftest import REPO

    args = ["--model", str(small_model), "--data", str(shards), "--max-steps", "4", "--batch-size", "16",
            "--max-seq-length", "32", "--eval-documents", "10", "--eval-batches", "2", "--quiet", "--dropout", "0",
            "--threads", "1", "--objective", "mlm", "--no-bf16"]  # fp32: equal steps up to float rounding
    torchrun = Path(sys.executable).with_name("torchrun")
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    one = subprocess.run([sys.executable, "-m", "wellread.cli", "pretrain", *args, "--out", str(tmp_path / "w1")],
                         cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert one.returncode == 0, one.stderr[-2000:]
    two = subprocess.run([str(torchrun), "--standalone", "--nproc-per-node", "2", "-m", "wellread.cli", "pretrain",
                          *args, "--out", str(tmp_path / "w2")], cwd=REPO, env=env, capture_output=True, text=True,
                         timeout=180)
    assert two.returncode == 0, two.stderr[-2000:]
    a = load_file(tmp_path / "w1" / "model" / "model.safetensors")
    b = load_file(tmp_path / "w2" / "model" / "model.safetensors")
    assert set(a) == set(b)
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=1e-6, rtol=1e-5, msg=k)
    init = load_file(small_model / "model.safetensors")
    changed = sum(not torch.equal(init[k], a[k]) for k in init if k in a)
    assert changed > 10, "training moved the weights"


def test_cli_random_start_with_sinusoidal_positions_and_unigram_bias(shards, tmp_path, capsys):
    import json

    from wellread import cli

    out = tmp_path / "run"
    rc = cli.main(["pretrain", "--model", "tiny", "--data", str(shards), "--out", str(out), "--objective", "mlm",
                   "--position-init", "sinusoidal", "--output-bias", "unigram", "--max-steps", "2",
                   "--batch-size", "4", "--max-seq-length", "32", "--eval-documents", "10", "--eval-batches", "1",
                   "--quiet"])
    assert rc == 0, capsys.readouterr().err
    results = json.loads((out / "results.json").read_text())
    assert results["settings"]["position_init"] == "sinusoidal" and results["settings"]["output_bias"] == "unigram"
    # two small steps from the unigram start: the held-out loss is near the unigram's, far below log(30522) = 10.3
    assert results["eval"]["eval/mlm_loss"] < 8.5


def test_attention_scaffold_fades_and_stays_out_of_the_saved_model(small_model, shards, tmp_path, capsys):
    import json

    from wellread import cli
    from wellread.modeling.dropout import fast_cpu_dropout

    c = cfg(small_model, shards, tmp_path / "o", objective="mlm", attention_scaffold=0.5)
    net, tok, _ = pt.build_model(c)
    obj = PretrainObjective(net, load_corpus(shards), tok, c)
    obj.set_progress(0.0)
    full = obj.scaffold.bias({}).clone()
    assert full[0, 3, 4] == -1.0 and full[1, 3, 5] == -1.0  # head h: -2^-h per place
    first = cpu_aids.attention_scaffold(net.config, c.max_seq_length, heads=1)  # --scaffold-heads 1: head 0 only, head 1 free
    assert torch.equal(first[0], full[0]) and not first[1].any()
    ids = torch.randint(1000, 2000, (2, 32), generator=torch.Generator().manual_seed(0))
    with fast_cpu_dropout(net), torch.no_grad():  # the training forward sees the scaffold
        net.train()
        torch.manual_seed(0)
        with_it = net.bert(input_ids=ids, attention_bias=obj.scaffold.bias({})).last_hidden_state
        obj.set_progress(0.5)
        torch.manual_seed(0)
        without = net.bert(input_ids=ids).last_hidden_state
        obj.set_progress(0.0)
    assert (with_it - without).abs().max() > 1e-3
    obj.set_progress(0.25)
    torch.testing.assert_close(obj.scaffold.bias({}), 0.5 * full)
    obj.set_progress(0.5)
    assert obj.scaffold.bias({}) is None

    out = tmp_path / "run"
    rc = cli.main(["pretrain", "--model", str(small_model), "--data", str(shards), "--out", str(out), "--objective",
                   "mlm", "--attention-scaffold", "0.9", "--max-steps", "3", "--batch-size", "8",
                   "--max-seq-length", "32", "--eval-documents", "10", "--eval-batches", "1", "--quiet"])
    assert rc == 0, capsys.readouterr().err
    assert json.loads((out / "results.json").read_text())["settings"]["attention_scaffold"] == 0.9
    assert "wellread" not in (out / "model" / "config.json").read_text()
    with pytest.raises(WellreadError, match="attention_scaffold"):
        cfg(small_model, shards, tmp_path, attention_scaffold=1.5)
    with pytest.raises(WellreadError, match="scaffold_heads"):
        cfg(small_model, shards, tmp_path, scaffold_heads=-1)


def test_evaluation_measures_word_order_zero_for_a_model_blind_to_it(small_model, shards, tmp_path):
    """eval/mlm_loss_at_mask is HF's loss at the rows shown [MASK]; eval/word_order_nats is 0 for a model
    without position embeddings (its output is the same for any order of the context) and not 0 with them."""
    from wellread.data.masking import shuffle_context

    c = cfg(small_model, shards, tmp_path, objective="mlm", eval_batches=2)
    net, tok, _ = pt.build_model(c)
    with torch.no_grad():
        for p in net.parameters():
            p.mul_(20.0)  # larger weights: attention far from uniform, so that order matters when it can
    obj = PretrainObjective(net, load_corpus(shards), tok, c)
    net.eval()
    seeing = obj.evaluate(obj.model)
    assert abs(seeing["eval/word_order_nats"]) > 1e-3

    # the loss at [MASK] rows, from HF's full head, context as is and shuffled as the evaluation shuffles it
    mask_id = tok.token_to_id("[MASK]")
    fixed = torch.tensor(sorted(load_corpus(shards).special_ids.values()))
    sums, n = [0.0, 0.0], 0
    with torch.no_grad():
        for i, batch in enumerate(obj._eval_dataset(c.eval_batch_size)):
            if i >= c.eval_batches:
                break
            pos = batch["masked_positions"]
            at = batch["input_ids"].view(-1)[pos] == mask_id
            for j, ids in enumerate((batch["input_ids"], shuffle_context(batch["input_ids"], fixed,
                                                                          torch.Generator().manual_seed(i)))):
                logits = net(input_ids=ids, token_type_ids=batch["token_type_ids"],
                             attention_mask=batch["attention_mask"]).prediction_logits
                rows = logits.reshape(-1, logits.shape[-1])[pos[at]]
                sums[j] += torch.nn.functional.cross_entropy(rows, batch["masked_labels"][at], reduction="sum").item()
            n += int(at.sum())
    assert seeing["eval/mlm_loss_at_mask"] == pytest.approx(sums[0] / n, rel=1e-5)
    assert seeing["eval/word_order_nats"] == pytest.approx((sums[1] - sums[0]) / n, rel=1e-4, abs=1e-6)

    with torch.no_grad():
        net.bert.embeddings.position_embeddings.weight.zero_()
    blind = obj.evaluate(obj.model)
    assert abs(blind["eval/word_order_nats"]) < 1e-5


def test_the_heads_last_layer_runs_on_the_masked_rows_only(small_model, shards, tmp_path):
    """The feed-forward layer of the last encoder layer sees about as many rows as are masked (and [CLS]
    with NSP), not every position; the lower layers see all."""
    c = cfg(small_model, shards, tmp_path, objective="mlm+nsp")
    net, tok, _ = pt.build_model(c)
    obj = PretrainObjective(net, load_corpus(shards), tok, c)
    batch = next(obj.batches(0, 0, 16, 0, 1))
    seen = []
    hooks = [layer.intermediate.dense.register_forward_hook(lambda m, i, o: seen.append(i[0].shape[:-1].numel()))
             for layer in net.bert.encoder.layer]
    obj.loss(obj.model, batch, obj.counts(batch))
    for h in hooks:
        h.remove()
    B, S = batch["input_ids"].shape
    per_row = torch.bincount(batch["masked_positions"] // S, minlength=B).max() + 1
    assert seen == [B * S] * (len(seen) - 1) + [B * per_row]
    assert seen[-1] < B * S / 2


def test_copy_pairs_train_with_the_alignment_scaffold_and_evaluate_as_every_run(small_model, shards, tmp_path, capsys):
    """--copy-pairs: training batches are pairs, some copies, and while the scaffold lasts the last head's
    score for each copy token's twin is raised (the other heads keep the distance penalty, the last none);
    held-out batches are single segments as in every MLM run; the settings are refused with NSP or
    without a scaffold to fade with; a CLI run saves a plain BERT."""
    import json

    from wellread import cli

    c = cfg(small_model, shards, tmp_path / "o", objective="mlm", attention_scaffold=0.5, copy_pairs=0.5)
    net, tok, _ = pt.build_model(c)
    obj = PretrainObjective(net, load_corpus(shards), tok, c)
    obj.set_progress(0.25)  # half strength
    batch = next(b for b in obj.batches(0, 0, 16, 0, 1) if "copy_length" in b)
    assert (batch["token_type_ids"].sum(1) > 0).all()
    seen = []
    hook = net.bert.encoder.layer[0].attention.self.register_forward_pre_hook(
        lambda m, a, kw: seen.append(kw["attention_bias"].clone()), with_kwargs=True)
    net.train()
    obj.loss(obj.model, batch, obj.counts(batch))
    hook.remove()
    bias = seen[0]
    B, S = batch["input_ids"].shape
    assert bias.shape == (B, 2, S, S)
    torch.testing.assert_close(bias[:, 0], (cpu_aids.attention_scaffold(net.config, S, heads=1)[0] * 0.5).expand(B, S, S))
    i = int(batch["copy_length"].argmax())
    a = int(batch["copy_length"][i])
    assert bias[i, 1, 1, a + 2] == cpu_aids.ALIGN_BIAS * 0.5 and bias[i, 1].count_nonzero() == 2 * a
    assert not bias[batch["copy_length"] == 0, 1].any()
    held = next(iter(obj._eval_dataset(8)))
    assert "copy_length" not in held and not held["token_type_ids"].any()

    for bad in (dict(objective="mlm+nsp"), dict(attention_scaffold=0.0), dict(copy_pairs=1.5)):
        with pytest.raises(WellreadError, match="copy_pairs"):
            cfg(small_model, shards, tmp_path, **(dict(objective="mlm", attention_scaffold=0.5, copy_pairs=0.5) | bad))
    out = tmp_path / "run"
    rc = cli.main(["pretrain", "--model", str(small_model), "--data", str(shards), "--out", str(out), "--objective",
                   "mlm", "--attention-scaffold", "0.9", "--copy-pairs", "0.5", "--max-steps", "3", "--batch-size",
                   "8", "--max-seq-length", "32", "--eval-documents", "10", "--eval-batches", "1", "--quiet"])
    assert rc == 0, capsys.readouterr().err
    assert json.loads((out / "results.json").read_text())["settings"]["copy_pairs"] == 0.5
    assert "wellread" not in (out / "model" / "config.json").read_text()
