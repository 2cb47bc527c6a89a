"""The one training loop: exact accumulation, resume, NaN and disk-full handling, on a toy objective."""

from __future__ import annotations

import errno
import json

import pytest
import torch

from wellread.errors import WellreadError
from wellread.train import loop
from wellread.train.loop import TrainConfig, train
from wellread.train.run import finished_results


class ToyObjective:
    """Least squares on fixed random data, with dropout so RNG state matters for resumption."""

    def __init__(self, n: int = 96, nan_at_step: int | None = None) -> None:
        g = torch.Generator().manual_seed(0)
        self.x = torch.randn(n, 8, generator=g)
        self.y = self.x @ torch.randn(8, 1, generator=g) + 0.1 * torch.randn(n, 1, generator=g)
        torch.manual_seed(0)
        self.model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Dropout(0.1), torch.nn.Linear(16, 1))
        self.nan_at_step = nan_at_step
        self.calls = 0

    def micro_batches_per_epoch(self, micro_batch, world):
        return len(self.x) // micro_batch

    def batches(self, epoch, start, micro_batch, rank, world):
        order = torch.randperm(len(self.x), generator=torch.Generator().manual_seed(1000 + epoch))
        share = micro_batch // world
        for b in range(start, len(self.x) // micro_batch):
            idx = order[b * micro_batch:(b + 1) * micro_batch][rank * share:(rank + 1) * share]
            yield {"x": self.x[idx], "y": self.y[idx]}

    def counts(self, batch):
        return {"examples": float(len(batch["x"]))}

    def tokens(self, batch):
        return len(batch["x"])

    def loss(self, model, batch, totals):
        self.calls += 1
        loss = ((model(batch["x"]) - batch["y"]) ** 2).sum() / totals["examples"]
        if self.nan_at_step is not None and self.calls >= self.nan_at_step:
            loss = loss * float("nan")
        return loss, {"n": float(len(batch["x"]))}

    def summarize(self, sums):
        return {}

    def evaluate(self, model):
        with torch.no_grad():
            return {"dev/mse": float(((model(self.x) - self.y) ** 2).mean())}


def weights(model):
    return [p.detach().clone() for p in model.parameters()]


def test_accumulation_gives_the_same_step_as_one_big_batch(tmp_path):
    results = []
    for accum in (1, 4):
        obj = ToyObjective()
        obj.model[1].p = 0.0  # dropout draws differ between splittings; the gradient must not
        # fp32: the claim is exact equality; bf16 rounds products of different batch shapes differently
        train(obj, TrainConfig(lr=1e-2, batch_size=16, grad_accum=accum, epochs=2, bf16=False, quiet=True),
              tmp_path / f"a{accum}")
        results.append(weights(obj.model))
    for a, b in zip(*results):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


class Crash(Exception):
    pass


def test_a_resumed_run_equals_an_uninterrupted_one_bit_for_bit(tmp_path):
    cfg = TrainConfig(lr=1e-2, batch_size=8, epochs=3, checkpoint_every=5, quiet=True, seed=3)
    full = ToyObjective()
    train(full, cfg, tmp_path / "full")
    # The same run dies in step 18 (mid-epoch; the last checkpoint is step 15) ...
    dying = ToyObjective()
    real_loss = dying.loss

    def loss_then_die(model, batch, totals):
        if dying.calls == 17:
            raise Crash()
        return real_loss(model, batch, totals)

    dying.loss = loss_then_die
    with pytest.raises(Crash):
        train(dying, cfg, tmp_path / "run")
    assert torch.load(tmp_path / "run" / loop.CHECKPOINT, weights_only=True)["loop"]["step"] == 15
    # ... and is resumed from fresh weights: everything must come from the checkpoint.
    resumed = ToyObjective()
    train(resumed, cfg, tmp_path / "run")
    for a, b in zip(weights(full.model), weights(resumed.model)):
        assert torch.equal(a, b)
    steps = [json.loads(x)["step"] for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    full_steps = [json.loads(x)["step"] for x in (tmp_path / "full" / "metrics.jsonl").read_text().splitlines()]
    assert steps == full_steps, "the metrics log matches the uninterrupted run's, no duplicated steps"


def test_a_nan_loss_stops_with_a_clear_error_and_keeps_the_last_checkpoint(tmp_path):
    obj = ToyObjective(nan_at_step=13)
    with pytest.raises(WellreadError, match=r"loss became nan at step 13.*checkpoint, step 12, is kept"):
        train(obj, TrainConfig(lr=1e-2, batch_size=8, epochs=3, checkpoint_every=10, quiet=True), tmp_path)
    assert torch.load(tmp_path / loop.CHECKPOINT, weights_only=True)["loop"]["step"] == 12  # the epoch-end checkpoint


def test_a_full_disk_never_replaces_a_good_checkpoint(tmp_path, monkeypatch):
    obj = ToyObjective()
    real_save = torch.save
    calls = {"n": 0}

    def flaky_save(obj, f, *a, **k):
        calls["n"] += 1
        if calls["n"] == 2:
            real_save(obj, f, *a, **k)  # a partial write...
            raise OSError(errno.ENOSPC, "No space left on device")  # ...then the disk is full
        return real_save(obj, f, *a, **k)

    monkeypatch.setattr(loop.torch, "save", flaky_save)
    with pytest.raises(WellreadError, match="No space left on device.*previous one is intact"):
        train(obj, TrainConfig(lr=1e-2, batch_size=8, epochs=3, checkpoint_every=4, quiet=True), tmp_path)
    assert torch.load(tmp_path / loop.CHECKPOINT, weights_only=True)["loop"]["step"] == 4
    assert not list(tmp_path.glob(".*.tmp")), "the partial file is removed"


def test_a_checkpoint_from_other_settings_is_refused(tmp_path):
    train(ToyObjective(), TrainConfig(lr=1e-2, batch_size=8, max_steps=3, quiet=True), tmp_path)
    with pytest.raises(WellreadError, match="checkpoint made with other settings"):
        train(ToyObjective(), TrainConfig(lr=2e-2, batch_size=8, max_steps=6, quiet=True), tmp_path)


def test_the_refusal_names_the_setting_that_changed(tmp_path):
    train(ToyObjective(), TrainConfig(lr=1e-2, batch_size=8, max_steps=3, quiet=True), tmp_path)
    with pytest.raises(WellreadError, match=r"train\.lr: 0\.01 then, 0\.02 now"):
        train(ToyObjective(), TrainConfig(lr=2e-2, batch_size=8, max_steps=3, quiet=True), tmp_path)


def _as_if_made_before(path, setting):
    """Rewrite a checkpoint as an older wellread, without ``setting``, would have written it."""
    ck = torch.load(path, weights_only=True)
    del ck["settings"]["train"][setting]
    ck["fingerprint"] = loop.config_fingerprint(ck["settings"])
    torch.save(ck, path)


def test_a_run_resumes_across_a_setting_added_since_while_it_holds_its_default(tmp_path, capsys):
    cfg = TrainConfig(lr=1e-2, batch_size=8, max_steps=3, quiet=True)
    first = ToyObjective()
    train(first, cfg, tmp_path)
    _as_if_made_before(tmp_path / loop.CHECKPOINT, "clip")
    again = ToyObjective()
    train(again, cfg, tmp_path)  # clip holds its default: the same run
    assert "resuming from step 3" in capsys.readouterr().err
    for a, b in zip(weights(first.model), weights(again.model)):
        assert torch.equal(a, b)
    assert "clip" not in torch.load(tmp_path / loop.CHECKPOINT, weights_only=True)["settings"]["train"]
    with pytest.raises(WellreadError, match=r"train\.clip: '\(absent\)' then, 0\.5 now"):
        train(ToyObjective(), TrainConfig(lr=1e-2, batch_size=8, max_steps=3, clip=0.5, quiet=True), tmp_path)


def test_settings_changes_counts_a_removed_setting_and_a_new_one_off_its_default():
    defaults = {"lr": 1e-3, "dropout": None}
    assert loop.settings_changes({"a": {"lr": 1e-3}}, {"a": {"lr": 1e-3, "dropout": None}}, defaults) == []
    assert loop.settings_changes({"a": {"lr": 1e-3}}, {"a": {"lr": 1e-3, "dropout": 0.1}}, defaults) == ["a.dropout"]
    assert loop.settings_changes({"a": {"lr": 1e-3, "old": 1}}, {"a": {"lr": 1e-3}}, defaults) == ["a.old"]
    assert loop.settings_changes({"a": {"lr": 1e-3}}, {"a": {"lr": 2e-3}}, defaults) == ["a.lr"]


def test_data_smaller_than_one_batch_is_refused(tmp_path):
    with pytest.raises(WellreadError, match="smaller than one batch"):
        train(ToyObjective(n=4), TrainConfig(lr=1e-2, batch_size=8, epochs=1, quiet=True), tmp_path)


@pytest.mark.parametrize("text, seconds", [("30m", 1800), ("1h30m", 5400), ("90s", 90), ("2h", 7200), ("45", 45)])
def test_durations(text, seconds):
    assert loop.parse_duration(text) == seconds


def test_warmup_then_linear_decay():
    assert loop.lr_factor(0.0, 0.1) == 0.0
    assert loop.lr_factor(0.05, 0.1) == pytest.approx(0.5)
    assert loop.lr_factor(0.1, 0.1) == pytest.approx(1.0)
    assert loop.lr_factor(0.55, 0.1) == pytest.approx(0.5)
    assert loop.lr_factor(1.0, 0.1) == 0.0


@pytest.mark.parametrize(("minutes", "expected"), [(1e-9, [*range(1, 37), 36]), (60.0, [12, 24, 36, 36])])
def test_checkpoints_by_training_time_and_at_each_epoch_end(tmp_path, monkeypatch, minutes, expected):
    saved: list[int] = []
    real = loop.save_checkpoint

    def spy(path, payload):
        saved.append(payload["loop"]["step"])
        real(path, payload)

    monkeypatch.setattr(loop, "save_checkpoint", spy)
    cfg = TrainConfig(lr=1e-2, batch_size=8, epochs=3, checkpoint_minutes=minutes, quiet=True)
    train(ToyObjective(), cfg, tmp_path / "run")
    # 12 steps an epoch; by time every step (a nanominute; the bound is > 0) or only at epoch ends (60 min);
    # then the final evaluation's
    assert saved == expected


@pytest.mark.parametrize("native", [False, True])
def test_bf16_on_a_cpu_without_native_bf16_says_so(tmp_path, monkeypatch, capsys, native):
    monkeypatch.setattr(loop, "native_bf16", lambda device: native)
    train(ToyObjective(), TrainConfig(lr=1e-2, batch_size=32, epochs=1, bf16=True, quiet=True), tmp_path / "run")
    assert ("no native bf16" in capsys.readouterr().err) is (not native)


def test_a_finished_run_is_recognised_after_a_setting_was_added_at_its_default(tmp_path):
    (tmp_path / "results.json").write_text(json.dumps({"settings": {"lr": 0.01}, "score": 1.0}))
    defaults = {"lr": 1e-3, "dropout": None}
    done = finished_results(tmp_path, {"lr": 0.01, "dropout": None}, defaults=defaults)
    assert done is not None and done["score"] == 1.0
    assert finished_results(tmp_path, {"lr": 0.01, "dropout": 0.2}, defaults=defaults) is None
