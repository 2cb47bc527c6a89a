"""Crash consistency: a run SIGKILLed at any write, again and again, then run once more with the same
command, finishes with the result of a run never interrupted, and no file of the user's is lost.

``tests/killer.py`` runs each command in a forked child that kills itself at its N-th write (a file
about to be fsynced or renamed, a checkpoint half written, a metrics line half appended). A *kill
chain* kills the same command at a random write, runs it again, kills it again, ... until a run gets
through; then its outputs are compared with an uninterrupted run's: the model bit for bit, the
results and the metrics log but for timings, no temporaries left, the user's files as they were.
Small models and few steps keep it fast (about a minute for the six commands on one core).
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import random
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO, data_path, write_glue_slice
from tests.test_bad_values import _classifier

KILLS: dict = {"survived": 0, "kinds": set()}  # quoted in docs/reliability.md
TIMING = re.compile(r"seconds|per_s|elapsed|wall|shards_computed|shards_reused")  # how the run went, not what


class Killer:
    def __init__(self) -> None:
        env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO), "TQDM_DISABLE": "1"}
        self.proc = subprocess.Popen([sys.executable, "-m", "tests.killer"], cwd=REPO, env=env, text=True,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE)

    def job(self, args: list, kill_at: int | None = None) -> dict:
        self.proc.stdin.write(json.dumps({"args": [str(a) for a in args], "kill_at": kill_at}) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        assert line, "the killer process died"
        return json.loads(line)

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=60)


@pytest.fixture(scope="module")
def killer():
    k = Killer()
    yield k
    k.close()


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> Path:
    """The user's folder: a letters vocabulary, an SST-2 slice, a small classifier, text, shards, own files."""
    root = tmp_path_factory.mktemp("user")
    letters = [chr(c) for c in range(ord("a"), ord("z") + 1)]
    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *letters, *(f"##{c}" for c in letters), ".", ",", "'"]
    (root / "vocab.txt").write_text("\n".join(words) + "\n", encoding="utf-8")
    write_glue_slice(root / "glue", ("SST-2",), 48, 16)
    _classifier(root / "clf", root / "vocab.txt")
    with gzip.open(data_path("text", "kjv_bible_verses.txt.gz"), "rt", encoding="utf-8") as f:
        lines = [next(f).strip() for _ in range(400)]
    (root / "text.txt").write_text("\n\n".join("\n".join(lines[i:i + 10]) for i in range(0, 400, 10)) + "\n",
                                   encoding="utf-8")
    from wellread.data.corpus import build_corpus

    build_corpus([root / "text.txt"], root / "vocab.txt", root / "shards", workers=1, doc_mode="blank",
                 shard_tokens=4000, show_progress=False)
    (root / "notes.txt").write_text("the user's own file\n", encoding="utf-8")
    return root


def snapshot(root: Path, skip: tuple[str, ...] = ()) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
            for p in sorted(root.rglob("*")) if not any(part in skip for part in p.relative_to(root).parts)}


def temporaries(root: Path) -> list[str]:
    return [str(p) for p in root.rglob("*") if re.match(r"^\..+\.tmp$", p.name) or p.name.endswith(".tmp.png")]


def _plain(obj, out: Path):
    """``obj`` without timings, with the run directory's own path written as OUT (to compare two runs)."""
    if isinstance(obj, dict):
        return {k: _plain(v, out) for k, v in obj.items() if not TIMING.search(k)}
    if isinstance(obj, list):
        return [_plain(v, out) for v in obj]
    if isinstance(obj, str):
        return obj.replace(str(out), "OUT")
    return obj


def metrics(path: Path, out: Path) -> list:
    return [_plain({k: v for k, v in json.loads(ln).items() if k != "tokens_per_s"}, out)
            for ln in path.read_text(encoding="utf-8").splitlines()]


def same_model(a: Path, b: Path) -> None:
    import torch
    from safetensors.torch import load_file

    x, y = load_file(a / "model.safetensors"), load_file(b / "model.safetensors")
    assert x.keys() == y.keys()
    for k in x:
        assert torch.equal(x[k], y[k]), f"{k} differs from the uninterrupted run's"


def kill_chain(killer: Killer, args: list, first: int, total: int, rng: random.Random, max_kills: int) -> int:
    """Kill ``args`` at its ``first`` write, then again at random writes (each run from where the last
    left off) until a run gets through or ``max_kills``, then let it finish; the number of kills."""
    kills, at = 0, first
    while True:
        r = killer.job(args, kill_at=at)
        if not r["killed"]:
            assert r["rc"] == 0, f"the run after {kills} kills failed: {r['stderr']}"
            return kills
        kills += 1
        KILLS["survived"] += 1
        KILLS["kinds"].add(r["events"][-1][0])
        at = rng.randint(1, max(1, total // 2)) if kills < max_kills else None


def crash_test(killer, inputs, tmp_path, args_for, compare, *, must_hit: set[str], max_kills: int = 5) -> None:
    """For each kind of write the run makes, a kill chain that starts with a kill at one such write."""
    user = snapshot(inputs)
    ref = tmp_path / "ref"
    r = killer.job(args_for(ref))
    assert r["rc"] == 0, r["stderr"]
    events = r["events"]
    names = {name for _, name in events}
    for hit in must_hit:
        assert any(hit in n for n in names), f"the run never writes {hit}: {sorted(names)}"
    rng = random.Random(0)
    kinds = sorted({k for k, _ in events})
    assert {"fsync", "replace"} <= set(kinds)
    for kind in kinds:
        first = rng.choice([i + 1 for i, (k, _) in enumerate(events) if k == kind])
        out = tmp_path / f"killed-at-{kind}"
        assert kill_chain(killer, args_for(out), first, len(events), rng, max_kills) > 0
        compare(ref, out)
        assert not temporaries(out), "the temporaries of killed writes are cleaned up"
        rerun = killer.job(args_for(out))  # finished: the same command only reports
        assert rerun["rc"] == 0, rerun["stderr"]
        assert not [e for e in rerun["events"] if "model" in e[1]], "a finished run is not redone"
    assert snapshot(inputs) == user, "nothing of the user's is touched"


# --- the commands ------------------------------------------------------------------------------------


def _compare_run(ref: Path, out: Path, top: tuple[Path, Path] | None = None) -> None:
    """The run in ``out`` is the one in ``ref``: the model bit for bit, results and metrics but for timings
    (``top``: the directories whose paths the records name, when not ``ref`` and ``out`` themselves)."""
    ref_top, out_top = top or (ref, out)
    same_model(ref / "model", out / "model")
    assert _plain(json.loads((out / "results.json").read_text()), out_top) == \
        _plain(json.loads((ref / "results.json").read_text()), ref_top)
    assert metrics(out / "metrics.jsonl", out_top) == metrics(ref / "metrics.jsonl", ref_top), \
        "the metrics log, losses included, as if never killed"


def test_finetune_survives_kills_at_any_write(killer, inputs, tmp_path):
    def args_for(out):
        return ["finetune", "--model", inputs / "clf", "--task", "sst2", "--data-dir", inputs / "glue", "--out", out,
                "--epochs", "2", "--batch-size", "8", "--max-length", "32", "--checkpoint-every", "2",
                "--log-every", "3", "--lr", "1e-3", "--quiet"]

    crash_test(killer, inputs, tmp_path, args_for, _compare_run,
               must_hit={"checkpoint.pt", "metrics.jsonl", "results.json", "config.yaml", "model"})


def test_corpus_survives_kills_at_any_write(killer, inputs, tmp_path):
    def args_for(out):
        return ["corpus", inputs / "text.txt", "--vocab", inputs / "vocab.txt", "--out", out, "--workers", "1",
                "--doc-mode", "blank", "--shard-tokens", "3000", "--quiet"]

    def compare(ref, out):
        want, got = json.loads((ref / "manifest.json").read_text()), json.loads((out / "manifest.json").read_text())
        assert _plain(got, out) == _plain(want, ref)
        assert snapshot(out, skip=("manifest.json",)) == snapshot(ref, skip=("manifest.json",)), "the same shards"

    crash_test(killer, inputs, tmp_path, args_for, compare, must_hit={"manifest.json", "ids.npy"})


def test_pretrain_survives_kills_at_any_write(killer, inputs, tmp_path):
    def args_for(out):
        return ["pretrain", "--model", "tiny", "--vocab", inputs / "vocab.txt", "--data", inputs / "shards",
                "--out", out, "--max-steps", "8", "--batch-size", "8", "--max-seq-length", "32",
                "--checkpoint-every", "2", "--log-every", "3", "--eval-documents", "4", "--quiet"]

    crash_test(killer, inputs, tmp_path, args_for, _compare_run,
               must_hit={"checkpoint.pt", "metrics.jsonl", "results.json", "model"})


def test_distill_and_teacher_labelling_survive_kills_at_any_write(killer, inputs, tmp_path):
    def args_for(out):
        return ["distill", "--teacher", inputs / "clf", "--student", inputs / "clf", "--task", "sst2",
                "--data-dir", inputs / "glue", "--out", out, "--cache", out.parent / f"{out.name}-cache",
                "--epochs", "1", "--batch-size", "8", "--max-length", "32", "--checkpoint-every", "2",
                "--log-every", "2", "--then-finetune", "--finetune-epochs", "1", "--quiet"]

    def compare(ref, out):
        _compare_run(ref, out)
        _compare_run(ref / "finetune", out / "finetune", (ref, out))
        assert not temporaries(out.parent / f"{out.name}-cache"), "nor in the teacher's label cache"

    crash_test(killer, inputs, tmp_path, args_for, compare,
               must_hit={"checkpoint.pt", "distill.json", "results.json", "logits"})


def test_a_grid_cell_survives_kills_at_any_write(killer, inputs, tmp_path):
    def args_for(out):
        return ["grid", "--model", inputs / "clf", "--tasks", "sst2", "--data-dir", inputs / "glue", "--out", out,
                "--batch-sizes", "8", "--learning-rates", "1e-3", "--epochs", "1", "--max-length", "32",
                "--workers", "1", "--quiet"]

    def compare(ref, out):
        cells = [p.parent for p in ref.rglob("results.json") if p.parent != ref]
        assert cells
        for cell in cells:
            _compare_run(cell, out / cell.relative_to(ref), (ref, out))
        assert _plain(json.loads((out / "results.json").read_text()), out) == \
            _plain(json.loads((ref / "results.json").read_text()), ref)

    crash_test(killer, inputs, tmp_path, args_for, compare, must_hit={"results.json", "best.json"})


def test_crash_report():
    print(f"\nkills survived: {KILLS['survived']}, at these kinds of write: {sorted(KILLS['kinds'])}")
