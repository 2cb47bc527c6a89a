"""`wellread recipe --task`: the paper's method on a user's task file, at toy size (a synthetic 3-class
ticket task, a small random teacher, a random Tiny as the "pre-trained" start, one cell, one epoch):
every artefact exists and loads, a re-run skips every stage, the int8 gate refuses a bad int8 model,
a sample of the training set keeps every class, and bad input is one line with nothing written."""

from __future__ import annotations

import contextlib
import io
import json
import random
import shutil

import pytest

from wellread import cli, env
from wellread.infer.openvino import can_quantize

LABELS = ["billing", "bug", "other"]
WORDS = {"billing": ["invoice", "charged", "refund", "payment", "card", "price"],
         "bug": ["crash", "error", "broken", "freeze", "button", "page"],
         "other": ["hello", "thanks", "question", "weather", "office", "team"]}
FILLER = ["the", "my", "is", "was", "again", "today", "please", "help", "with", "this"]
STAGES = {"teacher", "grid-random-tiny-s0", "grid-pretrained-tiny-s0", "distill-tiny-s0", "evaluate", "export",
          "speed", "report"}
ARMS = {"random", "pretrained", "pd", "pd+ft", "teacher"}


def _texts(rng: random.Random, label: str) -> str:
    return " ".join(rng.choice(FILLER) if rng.random() < 0.5 else rng.choice(WORDS[label])
                    for _ in range(rng.randint(4, 10)))


def make_task(root, n=(90, 30, 30)):
    """tickets.yaml over train/dev/test CSVs (quoted texts with commas), and 40 lines of unlabelled text."""
    rng = random.Random(0)
    root.mkdir(parents=True, exist_ok=True)
    for split, k in zip(("train", "dev", "test"), n):
        rows = "".join(f'"{_texts(rng, LABELS[i % 3])}, ok",{LABELS[i % 3]}\n' for i in range(k))
        (root / f"{split}.csv").write_text("body,category\n" + rows, encoding="utf-8")
    (root / "tickets.yaml").write_text("name: tickets\ntext: body\nlabel: category\ntrain: train.csv\ndev: dev.csv\n"
                                       "test: test.csv\nmetric: macro_f1\n", encoding="utf-8")
    (root / "unlabelled.txt").write_text("".join(_texts(rng, LABELS[i % 3]) + "\n" for i in range(40)),
                                         encoding="utf-8")
    return root / "tickets.yaml"


def recipe_args(root, out, *extra) -> list[str]:
    return ["recipe", "--task", str(root / "tickets.yaml"), "--out", str(out), "--teacher", str(root / "teacher"),
            "--student-init", str(root / "tiny"), "--unlabelled", str(root / "unlabelled.txt"),
            "--time-budget", "off", "--batch-sizes", "16", "--learning-rates", "1e-3", "--epochs", "1",
            "--teacher-epochs", "1", "--workers", "1", "--threads", "1", "--speed-sentences", "30", "--quiet",
            *extra]


def run_cli(args) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = cli.main(args)
    return rc, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def inputs(tmp_path_factory, small_model_dir, std_vocab):
    """The task, its unlabelled text, a small random teacher and a random Tiny (the students' start)."""
    from wellread import tokenization
    from wellread.modeling.models import init_model, save_model

    root = tmp_path_factory.mktemp("own-recipe")
    make_task(root)
    shutil.copytree(small_model_dir, root / "teacher")
    tok = tokenization.load_tokenizer(std_vocab)
    save_model(init_model("tiny", tok, seed=0), tok, root / "tiny")
    return root


@pytest.fixture(scope="module")
def recipe(inputs):
    rc, stdout, stderr = run_cli(recipe_args(inputs, inputs / "out"))
    assert rc == 0, stderr
    return inputs, inputs / "out", stdout, stderr


def broken_int8(root):
    """``backend_predictions`` with broken int8 models: each int8 prediction is the class after the true one."""
    from wellread.infer import gate as G

    real = G.backend_predictions
    gold = {}
    for line in (root / "dev.csv").read_text().splitlines()[1:]:
        text, label = line.rsplit(",", 1)
        gold[text.strip('"')] = label

    def predictions(model_dir, backend, texts_a, texts_b, **kw):
        if not backend.endswith("-int8"):
            return real(model_dir, backend, texts_a, texts_b, **kw)
        return [LABELS[(LABELS.index(gold[a]) + 1) % 3] for a in texts_a]

    return predictions


def _files(root) -> dict[str, int]:
    return {str(p.relative_to(root)): p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()}


def test_the_recipe_on_a_task_file_runs_every_arm_and_leaves_a_serve_ready_student(recipe):
    from transformers import AutoModelForSequenceClassification

    from wellread.infer.predictor import Predictor

    root, out, stdout, _ = recipe
    markers = {p.stem: json.loads(p.read_text()) for p in (out / "stages").glob("*.json")}
    assert set(markers) == STAGES and all(m["status"] == "finished" for m in markers.values())
    assert not (out / "pretrain-tiny").exists()  # --student-init: no pre-training
    rows = json.loads((out / "evaluate" / "results.json").read_text())["rows"]
    assert {r["arm"] for r in rows} == ARMS
    for r in rows:
        assert set(r["splits"]) == {"dev", "test"}
        for m in r["splits"].values():
            assert m["n"] == 30 and set(m["per_class"]) == set(LABELS)
            assert m["confusion"]["labels"] == LABELS and sum(map(sum, m["confusion"]["matrix"])) == 30
            assert m["score"] == pytest.approx(m["macro_f1"])
        model = AutoModelForSequenceClassification.from_pretrained(out / r["model"])
        assert model.config.id2label == dict(enumerate(LABELS))
    # the unlabelled file went into the transfer set, and was counted
    manifest = json.loads((out / "recipe.json").read_text())
    assert manifest["sources"]["unlabelled"][str(root / "unlabelled.txt")]["inputs"] == 40
    cell = next((out / "distill-tiny-s0").rglob("results.json"))
    transfer = json.loads(cell.read_text())
    assert str(root / "unlabelled.txt") in json.dumps(transfer)
    # the best student on dev is the export, in the serve directory, int8 behind the gate
    export = json.loads((out / "serve" / "export.json").read_text())
    best = max((r for r in rows if r["arm"] != "teacher"), key=lambda r: r["score"])
    assert export["recipe"]["model"] == best["model"] and export["int8_gate"]["passed"] is True
    # served: the int8 model of the backend `auto` prefers here (OpenVINO's where it picks OpenVINO)
    int8 = ("openvino-int8" if can_quantize() and env.auto_backend() == "openvino" else "onnx-int8")
    assert (out / "serve" / "model.int8.onnx").is_file() and export["recipe"]["backend"] == int8
    assert (out / "serve" / "model.int8.xml").is_file() == can_quantize()
    preds = Predictor(out / "serve", backend=int8, threads=1).predict(["my invoice was charged twice"])
    assert preds[0]["label"] in LABELS and set(preds[0]["probabilities"]) == set(LABELS)
    # sizes and speeds: every arm's best model, the teacher, the export in both precisions
    speed = json.loads((out / "speed.json").read_text())["rows"]
    assert {s["what"] for s in speed} >= ARMS and {s["backend"] for s in speed} == {"torch", "onnx", "onnx-int8",
                                                                          *(["openvino-int8"] * can_quantize())}
    assert all(s["sentences_per_s"] > 0 and s["sentences"] == 30 and s["bytes"] > 0 for s in speed)
    assert next(s for s in speed if s["what"] == "teacher")["parameters"] < \
        next(s for s in speed if s["what"] == "pd")["parameters"]  # the toy teacher is the small one
    report = (out / "report" / "report.md").read_text()
    for text in ("| PD + fine-tuning | tiny | 0 |", "| true \\ predicted | billing | bug | other |",
                 "int8 gate on dev", "sentences/s", "wellread serve --model"):
        assert text in report, text
    assert (out / "report" / "student-test.png").is_file() and (out / "report" / "teacher-test.png").is_file()
    for absolute in (str(root), str(out.parent), "site-packages"):  # files named on any machine's terms
        assert absolute not in report, absolute
    assert f"`wellread serve --model {out.name}/serve" in report
    lines = stdout.splitlines()
    assert lines[0].split()[-2:] == ["dev", "test"] and len(lines) == 1 + len(ARMS) + 2
    assert lines[-1] == f"report: {out / 'report' / 'report.md'}"


def test_a_second_run_skips_every_stage_and_touches_nothing(recipe):
    root, out, stdout, _ = recipe
    before = _files(out)
    rc, again, err = run_cli(recipe_args(root, out))
    assert rc == 0 and err.count("finished earlier, skipped") == len(STAGES), err
    assert _files(out) == before and again == stdout


def test_the_int8_gate_refuses_an_int8_model_that_loses_points(recipe, monkeypatch):
    """An int8 model whose every prediction is wrong (the next class of the true one) loses every point of
    its fp32 self: the gate refuses it, and the recipe serves the fp32 ONNX model instead."""
    from wellread.infer import gate as G

    root, out, _, _ = recipe
    broken = broken_int8(root)
    monkeypatch.setattr(G, "backend_predictions", broken)
    gate = G.int8_gate(out / "serve", str(root / "tickets.yaml"), 1.0, threads=1)
    onnx = gate["backends"]["onnx-int8"]
    assert onnx["int8"] == 0.0 and onnx["drop_points"] == pytest.approx(100 * gate["fp32"]) and not gate["passed"]
    # the recipe: a cheaper one (one arm, no teacher), its export refused in one line
    out2 = root / "out-gate"
    rc, stdout, err = run_cli(recipe_args(root, out2, "--arms", "pretrained"))
    assert rc == 0, err
    refusal = [ln for ln in err.splitlines() if "int8 export refused" in ln]
    assert len(refusal) == 1 and "points lost > --int8-max-drop 1" in refusal[0]
    assert not (out2 / "serve" / "model.int8.onnx").exists() and (out2 / "serve" / "model.onnx").is_file()
    export = json.loads((out2 / "serve" / "export.json").read_text())
    assert export["int8_gate"]["passed"] is False and export["recipe"]["backend"] == "onnx"
    assert "model.int8.onnx" not in export["files"]
    assert {s["backend"] for s in json.loads((out2 / "speed.json").read_text())["rows"]} == {"torch", "onnx"}
    assert "**refused**" in (out2 / "report" / "report.md").read_text() and "int8 refused" in stdout


@pytest.mark.skipif(not can_quantize(), reason="openvino and nncf are not installed")
def test_the_gate_refuses_one_int8_model_and_keeps_the_other(recipe, monkeypatch):
    from wellread.infer import gate as G

    root, out, _, _ = recipe
    real, broken = G.backend_predictions, broken_int8(root)

    def predictions(model_dir, backend, *args, **kwargs):  # only the OpenVINO int8 model is broken
        return (broken if backend == "openvino-int8" else real)(model_dir, backend, *args, **kwargs)

    monkeypatch.setattr(G, "backend_predictions", predictions)
    gate = G.int8_gate(out / "serve", str(root / "tickets.yaml"), 1.0, threads=1)
    assert gate["backends"]["onnx-int8"]["passed"] and not gate["backends"]["openvino-int8"]["passed"]
    assert not gate["passed"] and "openvino-int8 0.00" in G.refusal(gate) and "onnx-int8" not in G.refusal(gate)


def test_a_training_sample_keeps_every_class_the_label_order_and_the_dev_set(tmp_path):
    from wellread.data.task_files import read_split
    from wellread.data.tasks import get_task
    from wellread.recipe.own_task import sample_task

    spec = get_task(str(make_task(tmp_path / "t")))
    path = sample_task(spec, tmp_path / "sample", 3)
    sample = get_task(str(path))
    train = read_split(sample, None, "train").examples
    assert sample.labels == spec.labels and sample.name == "tickets"
    assert all(sum(e.label == lab for e in train) >= 2 for lab in LABELS) and len(train) == 6
    full = {(e.text_a, e.label) for e in read_split(spec, None, "train").examples}
    assert {(e.text_a, e.label) for e in train} <= full
    assert [(e.text_a, e.label) for e in read_split(sample, None, "dev").examples] == \
        [(e.text_a, e.label) for e in read_split(spec, None, "dev").examples]
    assert sample_task(spec, tmp_path / "again", 3).read_text() == path.read_text()  # seeded


def test_a_time_budget_plans_the_task_and_cuts_the_grid(inputs, tmp_path):
    """With a budget the planner of the GLUE recipe cuts the task's grid; the plan is written, keyed by the task."""
    from wellread.recipe.own_task import TaskRecipe, TaskRecipeConfig

    cfg = TaskRecipeConfig(task=str(inputs / "tickets.yaml"), out=tmp_path / "o", teacher=str(inputs / "teacher"),
                           student_init=str(inputs / "tiny"), time_budget="2m", calibrate=False, workers=1)
    r = TaskRecipe(cfg)
    src, inits = r.sources(None)
    r.out.mkdir(parents=True)
    key = r.task_file
    seen = []
    plan = r.make_task_plan(src, {key: (90, 30)}, 0.0, lambda rates: seen.append(rates) or 20.0)
    assert seen and seen[0].source == "table"  # the reserve is reckoned at the rates the plan uses
    from wellread.train.grid import PAPER_BATCH_SIZES, PAPER_LEARNING_RATES

    assert plan.cells < len(PAPER_BATCH_SIZES) * len(PAPER_LEARNING_RATES) and plan.budget_s == 120
    assert any(c.startswith("grid: ") for c in plan.cuts) and any("kept for the test scores" in n for n in plan.notes)
    assert plan.train_examples[key] == 90 and plan.pretrain_s is None
    assert json.loads((r.out / "plan.json").read_text())["plan"]["batch_sizes"] == plan.batch_sizes


@pytest.mark.parametrize("case, message", [
    ("unknown_key", "tickets.yaml (field colour): unknown key"),
    ("pair_line", "unlabelled.txt:2 (field text_b): the task takes single sentences"),
    ("no_init", "(field student_init): not a model directory (no config.json)"),
    ("init_size", "(field student_init): a model of 2 layers and hidden size 32, but tiny is L-2 H-128"),
    ("unseen_label", "dev.csv:3 (field category): label 'refund' never occurs in training"),
    ("task_in_tasks", "a task file goes to --task"),
    ("no_start", "no pre-trained start for the students: pass --student-init DIR"),
    ("adapt_without_init", "adapt_steps: needs --student-init"),
])
def test_bad_input_is_one_line_and_writes_nothing(inputs, tmp_path, case, message):
    root = tmp_path / "in"
    make_task(root)
    args = recipe_args(inputs, tmp_path / "out")
    args[args.index("--task") + 1] = str(root / "tickets.yaml")
    args[args.index("--unlabelled") + 1] = str(root / "unlabelled.txt")
    if case == "unknown_key":
        (root / "tickets.yaml").write_text((root / "tickets.yaml").read_text() + "colour: blue\n")
    elif case == "pair_line":
        (root / "unlabelled.txt").write_text("one text\nsecond\ttext\n")
    elif case == "no_init":
        args[args.index("--student-init") + 1] = str(tmp_path)
    elif case == "init_size":
        args[args.index("--student-init") + 1] = str(inputs / "teacher")
    elif case == "unseen_label":
        lines = (root / "dev.csv").read_text().splitlines(keepends=True)
        lines[2] = '"my card, ok",refund\n'
        (root / "dev.csv").write_text("".join(lines))
    elif case == "task_in_tasks":
        args += ["--tasks", str(root / "tickets.yaml")]
    elif case == "no_start":
        i = args.index("--student-init")
        del args[i:i + 2]
        args += ["--data", str(tmp_path / "nothing")]
    elif case == "adapt_without_init":
        i = args.index("--student-init")
        del args[i:i + 2]
        args += ["--adapt-steps", "5"]
    rc, stdout, err = run_cli(args)
    assert rc == 1 and err.count("\n") == 1 and message in err, err
    assert "Traceback" not in err and not (tmp_path / "out").exists() and stdout == ""


def test_export_with_a_task_gates_the_int8_model_and_writes_nothing_when_refused(recipe, monkeypatch, tmp_path):
    from wellread.infer import gate as G

    root, out, _, _ = recipe
    model = out / json.loads((out / "serve" / "export.json").read_text())["recipe"]["model"]
    args = ["export", "--model", str(model), "--int8", "--task", str(root / "tickets.yaml"), "--out"]
    rc, stdout, err = run_cli(args + [str(tmp_path / "ok")])
    assert rc == 0, err
    record = json.loads((tmp_path / "ok" / "export.json").read_text())
    assert record["int8_gate"]["passed"] and record["int8_gate"]["n"] == 30 and "int8 gate on dev" in stdout
    if can_quantize():  # the OpenVINO int8 model too, calibrated on the task's training examples
        assert set(record["int8_gate"]["backends"]) == {"onnx-int8", "openvino-int8"}
        assert record["openvino_int8"]["calibration"] == "the given inputs"
    monkeypatch.setattr(G, "backend_predictions", broken_int8(root))
    rc, stdout, err = run_cli(args + [str(tmp_path / "refused")])
    assert rc == 1 and err.count("\n") == 1 and "int8 export refused: dev score" in err and "onnx-int8 0.00, " in err, err
    assert "nothing written" in err and not (tmp_path / "refused").exists()
    rc, _, err = run_cli(["export", "--model", str(model), "--task", str(root / "tickets.yaml"), "--out",
                          str(tmp_path / "no-int8")])
    assert rc == 1 and "add --int8" in err and not (tmp_path / "no-int8").exists()


def test_adapt_steps_pretrain_the_start_on_the_task_texts_and_every_arm_starts_from_it(inputs, tmp_path):
    """--adapt-steps: the student's start continues masked-LM training on the task's training texts (stages
    adapt-corpus-tiny, adapt-tiny), and the arms that start from the pre-trained student start from that model."""
    import numpy as np
    from safetensors.numpy import load_file

    out = tmp_path / "out"
    rc, _, err = run_cli(recipe_args(inputs, out, "--adapt-steps", "4", "--arms", "pretrained,pd"))
    assert rc == 0, err
    markers = {p.stem: json.loads(p.read_text()) for p in (out / "stages").glob("*.json")}
    assert {"adapt-corpus-tiny", "adapt-tiny"} <= set(markers)
    assert markers["adapt-tiny"]["result"]["steps"] == 4
    adapted = out / "adapt-tiny" / "model"
    assert markers["adapt-corpus-tiny"]["result"]["documents"] >= 1
    text = markers["adapt-corpus-tiny"]["settings"]["text"]
    train = {line.rsplit(",", 1)[0].strip('"') for line in (inputs / "train.csv").read_text().splitlines()[1:]}
    assert set(open(text, encoding="utf-8").read().splitlines()) == train  # the training texts, each once
    assert markers["grid-pretrained-tiny-s0"]["settings"]["model"] == str(adapted)
    assert markers["distill-tiny-s0"]["settings"]["model"] == str(adapted)
    assert "adapt-tiny" in markers["distill-tiny-s0"]["settings"]["after"]  # redone when the adaptation changes
    before, after = load_file(inputs / "tiny" / "model.safetensors"), load_file(adapted / "model.safetensors")
    changed = [k for k in before if k in after and not np.array_equal(before[k], after[k])]
    assert changed  # the start did move
    manifest = json.loads((out / "recipe.json").read_text())
    assert manifest["sources"]["student_init"] == {"tiny": str(inputs / "tiny")}
    assert manifest["sources"]["adapted"] == {"tiny": str(adapted)}
    assert "Adapted to the task first (`--adapt-steps 4`)" in (out / "report" / "report.md").read_text()
