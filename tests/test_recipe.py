"""`wellread recipe`: the whole recipe at toy size on real data (every artefact exists and loads; a
re-run skips everything; an interrupted stage resumes), the budget's plan, the config, the sources."""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO, data_path, glue_slice_dir, toy_recipe_args
from wellread import cli
from wellread.recipe import budget as B
from wellread.recipe.config import RecipeConfig, config_yaml
from wellread.recipe.runner import StageRunner
from wellread.recipe.sources import sample_glue

STAGES = {"data", "corpus", "pretrain-tiny", "teacher", "grid-random-tiny-s0", "grid-pretrained-tiny-s0", "distill-tiny-s0",
          "evaluate", "report"}
ARMS = {"random", "pretrained", "pd", "pd+ft", "teacher"}


def _files(root) -> dict[str, int]:
    return {str(p.relative_to(root)): p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()}


def _rerun(root, out) -> str:
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        assert cli.main(toy_recipe_args(root, out)) == 0
    return err.getvalue()


# --- the whole recipe, at toy size ----------------------------------------------------------------

def test_every_stage_leaves_a_run_directory_whose_models_load(toy_recipe):
    from transformers import AutoModelForMaskedLM, AutoModelForSequenceClassification, AutoTokenizer

    from wellread.data.shards import load_corpus

    root, out, stdout = toy_recipe
    markers = {p.stem: json.loads(p.read_text()) for p in (out / "stages").glob("*.json")}
    assert set(markers) == STAGES and all(m["status"] == "finished" for m in markers.values())
    assert load_corpus(out / "corpus").num_tokens > 10_000
    assert len((out / "data" / "SST-2" / "train.tsv").read_text().splitlines()) == 121  # header + the sample
    cell = json.loads((out / "grid-random-tiny-s0" / "sst2" / "bs16_lr0.001" / "results.json").read_text())
    assert cell["train_examples"] == 120 and cell["settings"]["data_dir"] == str(out / "data")
    pre = json.loads((out / "pretrain-tiny" / "results.json").read_text())
    assert pre["steps"] == 3 and pre["objective"] == "mlm"
    AutoModelForMaskedLM.from_pretrained(out / "pretrain-tiny" / "model")
    rows = json.loads((out / "evaluate" / "results.json").read_text())["rows"]
    assert {(r["arm"], r["task"]) for r in rows} == {(a, t) for a in ARMS for t in ("stsb", "sst2")}
    for r in rows:
        model = AutoModelForSequenceClassification.from_pretrained(out / r["model"])
        AutoTokenizer.from_pretrained(out / r["model"])
        assert model.config.num_labels == (1 if r["task"] == "stsb" else 2)
        assert model.config.hidden_size == (32 if r["arm"] == "teacher" else 128)  # the teacher is the toy one
        assert r["score"] == pytest.approx(r["train_score"], abs=1e-4)  # re-scored = what the grid measured
    by = {(r["arm"], r["task"]): r for r in rows}
    assert by[("pd", "stsb")]["model"].endswith("/model") and by[("pd+ft", "stsb")]["model"].endswith("finetune/model")
    assert by[("pd", "stsb")]["dev"] != by[("pd+ft", "stsb")]["dev"]
    for f in ("report.md", "report.html", "pd-comparison.png", "pretraining.png", "curves-stsb.png"):
        assert (out / "report" / f).is_file(), f
    lines = stdout.splitlines()
    assert lines[0].split()[-2:] == ["stsb", "sst2"]
    random_row = next(ln for ln in lines if ln.startswith("fine-tuned from random init"))
    assert float(random_row.split()[-1]) == pytest.approx(100 * by[("random", "sst2")]["score"], abs=0.05)
    assert lines[-1].startswith("report: ") and lines[-1].split()[1].endswith("report.md")


def test_a_second_run_skips_every_stage_and_touches_nothing(toy_recipe):
    root, out, _ = toy_recipe
    before = _files(out)
    err = _rerun(root, out)
    assert err.count("finished earlier, skipped") == len(STAGES), err
    assert f"0 stage(s) run, {len(STAGES)} skipped" in err
    assert _files(out) == before


def test_an_interrupted_stage_resumes_and_the_others_are_skipped(toy_recipe):
    root, out, _ = toy_recipe
    cell = out / "grid-random-tiny-s0" / "stsb" / "bs16_lr0.001"
    dev = json.loads((cell / "results.json").read_text())["dev"]
    marker = out / "stages" / "grid-random-tiny-s0.json"
    m = json.loads(marker.read_text())
    marker.write_text(json.dumps(m | {"status": "running"}))  # as a kill leaves it
    (cell / "results.json").unlink()  # that cell was not finished
    err = _rerun(root, out)
    assert "grid-random-tiny-s0: running" in err and f"1 stage(s) run, {len(STAGES) - 1} skipped" in err
    assert json.loads((cell / "results.json").read_text())["dev"] == dev  # the same run, bit for bit
    assert json.loads(marker.read_text())["status"] == "finished"


def test_a_stage_whose_settings_changed_is_redone_and_so_are_the_stages_after_it(tmp_path):
    runner = StageRunner(tmp_path)
    calls = []

    def stage(name, value, after=()):
        d = tmp_path / name

        def run() -> dict:
            calls.append(name)
            d.mkdir(exist_ok=True)
            (d / "f").write_text(str(value))
            return {"v": value}

        return runner(name, {"value": value}, run, dirs=[d], after=list(after))

    stage("a", 1)
    stage("b", 1, ["a"])
    assert calls == ["a", "b"]
    runner = StageRunner(tmp_path)
    stage("a", 1)
    stage("b", 1, ["a"])
    assert calls == ["a", "b"]  # both skipped
    runner = StageRunner(tmp_path)
    (tmp_path / "a" / "stale").write_text("x")
    stage("a", 2)
    stage("b", 1, ["a"])
    assert calls == ["a", "b", "a", "b"] and not (tmp_path / "a" / "stale").exists()


# --- the budget -----------------------------------------------------------------------------------

def _work(**kw) -> B.Work:
    base = dict(tasks={"sst2": (67_349, 872), "stsb": (5_749, 1_500)}, batch_sizes=[8, 16, 32, 64, 128],
                learning_rates=[3e-4, 1e-4, 5e-5, 3e-5], core_cell=(32, 1e-4), epochs=4.0, teacher_epochs=4.0,
                text_bytes=53_000_000, workers=2)
    return B.Work(**(base | kw))


def _rest(plan: B.Plan) -> float:
    return sum(v for k, v in plan.estimate_s.items() if k != "pretrain")


def test_without_a_budget_the_work_runs_as_given():
    plan = B.plan_budget(_work(), None, B.Rates.table(), pretrain_steps=2000)
    assert plan.cells == 20 and plan.epochs == 4 and plan.teacher_epochs == 4 and plan.cuts == []
    assert plan.train_examples == {"sst2": 67_349, "stsb": 5_749} and plan.pretrain_s is None


def test_sixty_minutes_keep_every_example_and_cut_the_grid_to_its_core_cell():
    plan = B.plan_budget(_work(), 3600, B.Rates.table())
    assert (plan.batch_sizes, plan.learning_rates) == ([32], [1e-4])
    assert plan.train_examples == {"sst2": 67_349, "stsb": 5_749}
    assert plan.pretrain_s >= 0.35 * 3600 and B.pretrain_wall_s(plan.pretrain_s) + _rest(plan) == pytest.approx(3600)
    assert plan.cuts[0].startswith("grid: 20 → 1 cell (batch 32 × lr 0.0001")
    assert not plan.over_budget


def test_a_smaller_budget_never_keeps_more_and_says_what_it_cut():
    plans = [B.plan_budget(_work(), m * 60, B.Rates.table()) for m in (240, 60, 20, 10)]
    for big, small in zip(plans, plans[1:]):
        assert small.cells <= big.cells and small.epochs <= big.epochs and small.teacher_epochs <= big.teacher_epochs
        assert all(small.train_examples[t] <= big.train_examples[t] for t in big.train_examples)
        assert all(small.teacher_examples[t] <= min(big.teacher_examples[t], small.train_examples[t])
                   for t in big.train_examples)
        assert small.pretrain_s < big.pretrain_s
    twenty = plans[2]
    assert twenty.train_examples["sst2"] < 67_349 and _rest(twenty) <= 0.65 * 1200 * 1.02
    assert any(c.startswith("sst2 training set: 67,349 → ") for c in twenty.cuts), twenty.cuts
    assert any(c.startswith("the teacher's sst2 training set: 67,349 → 4,000") for c in twenty.cuts), twenty.cuts
    assert any("epoch" in c for c in twenty.cuts)


def test_a_large_budget_cuts_nothing_and_gives_pre_training_the_rest():
    plan = B.plan_budget(_work(), 100 * 3600, B.Rates.table(), spent_s=30)
    assert plan.cuts == [] and plan.cells == 20
    assert B.pretrain_wall_s(plan.pretrain_s) == pytest.approx(100 * 3600 - 30 - _rest(plan))  # rates: 30 s
    assert B.pretrain_wall_s(plan.pretrain_s) > 1.1 * plan.pretrain_s  # evaluations and checkpoints on top
    # the held-out evaluations come every N steps: a larger batch spends less of its time on them
    small, large = B.pretrain_overhead_share(32, 250), B.pretrain_overhead_share(128, 250)
    assert 0.15 < small < 0.25 and 0.04 < large < 0.08 and B.pretrain_overhead_share(32, 0) < 0.02
    lean = B.plan_budget(_work(pretrain_overhead=large), 100 * 3600, B.Rates.table(), spent_s=30)
    assert lean.pretrain_s > plan.pretrain_s
    assert "took 30 s of the budget" in plan.notes[-1]


def test_without_pre_training_the_cuts_grow_back_into_the_slack():
    rates = B.Rates.table()
    for minutes in (10, 20, 30, 45):
        plan = B.plan_budget(_work(pretrain=False, text_bytes=0), minutes * 60, rates)
        assert not plan.over_budget and plan.pretrain_s is None and "grown back" in plan.notes[0]
        assert _rest(plan) <= minutes * 60  # still inside the budget
        if any(n < plan.full_examples[t] for t, n in plan.teacher_examples.items()):
            assert _rest(plan) >= 0.99 * minutes * 60  # a set left cut: grown to the budget's edge
    ten = B.plan_budget(_work(pretrain=False, text_bytes=0), 600, rates)
    assert ten.train_examples["stsb"] == 5_749  # the small set whole again, the large one grown part of the way
    assert 4_000 < ten.teacher_examples["sst2"] < ten.train_examples["sst2"] < 67_349  # (tasks' teachers side by side)
    assert not any("grown back" in n for n in B.plan_budget(_work(), 600, rates).notes)  # pre-training's slack


def test_a_budget_too_small_for_the_smallest_recipe_says_so():
    plan = B.plan_budget(_work(), 60, B.Rates.table())
    assert plan.over_budget and "too small" in plan.cuts[-1]
    assert plan.cells == 1 and plan.epochs == 1 and plan.teacher_epochs == 1
    assert set(plan.train_examples.values()) == set(plan.teacher_examples.values()) == {1000}


def test_makespan_puts_the_longest_jobs_first():
    assert B.makespan([5, 4, 3, 3, 3], 2) == 10
    assert B.makespan([7, 1, 1], 4) == 7 and B.makespan([], 2) == 0


def test_calibration_measures_this_machines_rates(small_model_dir, tmp_path):
    glue = glue_slice_dir(tmp_path / "glue", {"SST-2": (96, 8)})
    rates = B.calibrate("tiny", small_model_dir, ["sst2"], glue, seconds=0.2, sample=96)
    assert rates.source == "calibrated"
    for kind in ("student_train", "student_infer", "teacher_train", "teacher_infer"):
        assert 0 < rates.get(kind, "sst2") != B.TABLE_RATES[kind]["sst2"]
    assert rates.get("student_infer", "sst2") > rates.get("student_train", "sst2")
    assert rates.corpus_bytes == B.CORPUS_BYTES_PER_S  # no pre-training text: the table's


def test_calibration_times_the_corpus_builder_on_the_pretraining_text(tmp_path, monkeypatch):
    import gzip

    from wellread.tokenization import load_tokenizer

    prose = tmp_path / "prose.txt.gz"
    with gzip.open(prose, "wt", encoding="utf-8") as f:
        f.write("The quick brown fox jumps over the lazy dog. It ran far away.\n" * 5000)
    monkeypatch.setenv("TOKENIZERS_PARALLELISM", "true")
    tok = load_tokenizer(Path(B.__file__).parents[1] / "resources" / "bert-base-uncased-vocab.txt")
    rate = B.corpus_rate([prose], tok, sample_bytes=64 * 1024)
    assert rate != B.CORPUS_BYTES_PER_S and 1e4 < rate < 1e9  # bytes/s of one worker, measured
    assert os.environ["TOKENIZERS_PARALLELISM"] == "true"  # the process' own setting is given back
    work = B.Work(tasks={"sst2": (1000, 100)}, batch_sizes=[32], learning_rates=[1e-4], core_cell=(32, 1e-4),
                  epochs=1, teacher_epochs=1, text_bytes=10_000_000, workers=2)
    plan = B.plan_budget(work, None, B.Rates.table())
    fast = B.Rates.table()
    fast.corpus_bytes = 2 * B.CORPUS_BYTES_PER_S
    assert B.estimate(work, plan, fast)["corpus"] - 2 == pytest.approx((plan.estimate_s["corpus"] - 2) / 2)


def test_a_grid_of_one_job_is_not_charged_for_starting_workers():
    work = B.Work(tasks={"sst2": (1000, 100)}, batch_sizes=[32, 64], learning_rates=[1e-4], core_cell=(32, 1e-4),
                  epochs=1, teacher_epochs=1, workers=2, arms=("random",), pretrain=False)
    rates = B.Rates.table()
    two = B.plan_budget(work, None, rates)
    one = B.plan_budget(dataclasses.replace(work, batch_sizes=[32]), None, rates)
    run = 1000 / rates.get("student_train", "sst2") + 100 / rates.get("student_infer", "sst2") + B.RUN_OVERHEAD_S
    assert one.estimate_s["grid-random"] == pytest.approx(run / rates.all_threads("student", 2) + B.GRID_OVERHEAD_S)
    assert two.estimate_s["grid-random"] == pytest.approx(B.makespan([run, run], 2) + B.GRID_OVERHEAD_S + B.SPAWN_S)


def test_the_plan_is_kept_while_the_settings_and_the_data_stay(tmp_path):
    from wellread.recipe.sources import Sources
    from wellread.recipe.stages import Recipe

    (tmp_path / "prose.txt").write_text("a paragraph of prose\n" * 1000)
    src = Sources(glue=tmp_path, text=[tmp_path / "prose.txt"], teacher=None, published={})
    sizes = {"sst2": (67_349, 872), "stsb": (5_749, 1_500)}
    cfg = RecipeConfig(out=tmp_path / "r", time_budget="20m", calibrate=False, workers=2)
    (tmp_path / "r").mkdir()
    first = Recipe(cfg).make_plan(src, sizes, 0.0)
    saved = json.loads((tmp_path / "r" / "plan.json").read_text())
    saved["plan"]["cuts"] = ["as planned before"]
    (tmp_path / "r" / "plan.json").write_text(json.dumps(saved))
    assert Recipe(cfg).make_plan(src, sizes, 5.0).cuts == ["as planned before"]  # reused, not re-planned
    again = Recipe(RecipeConfig(out=tmp_path / "r", time_budget="60m", calibrate=False, workers=2)).make_plan(
        src, sizes, 0.0)
    assert again.cuts != ["as planned before"] and again.budget_s == 3600 and again.pretrain_s > first.pretrain_s


# --- the config and the sources -----------------------------------------------------------------------

def test_print_config_shows_the_default_and_loads_back(tmp_path, capsys):
    from wellread.config import from_mapping

    assert cli.main(["recipe", "--print-config"]) == 0
    text = capsys.readouterr().out
    assert text == config_yaml() and "time_budget: 60m" in text
    assert from_mapping(RecipeConfig, yaml.safe_load(text)) == RecipeConfig()
    f = tmp_path / "recipe.yaml"
    f.write_text(text.replace("time_budget: 60m", "time_budget: 20m"))
    assert cli.main(["recipe", "--config", str(f), "--tasks", "rte", "cola", "--print-config"]) == 0
    got = yaml.safe_load(capsys.readouterr().out)
    assert got["time_budget"] == "20m" and got["tasks"] == ["rte", "cola"]


def _run(*args, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "wellread", *args], capture_output=True, text=True, cwd=REPO,
                          env=os.environ | env, timeout=120)


def _one_line(p: subprocess.CompletedProcess, *needles: str) -> str:
    assert p.returncode == 1, p.stderr
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("wellread recipe: error: "), p.stderr
    for n in needles:
        assert n in lines[0], lines[0]
    return lines[0]


def test_without_data_it_says_in_one_line_what_to_point_it_at(tmp_path):
    (tmp_path / "empty").mkdir()
    _one_line(_run("recipe", "--out", str(tmp_path / "r"), env={"WELLREAD_DATA": str(tmp_path / "empty")}),
              "no GLUE data", "WELLREAD_DATA", "--source hub")
    assert not (tmp_path / "r" / "stages").exists()


def test_the_hub_source_offline_names_the_file_to_fetch(tmp_path):
    line = _one_line(_run("recipe", "--source", "hub", "--out", str(tmp_path / "r"),
                          env={"WELLREAD_OFFLINE": "1", "WELLREAD_CACHE": str(tmp_path / "cache")}),
                     "offline")
    assert "https://huggingface.co/datasets/nyu-mll/glue/resolve/main/stsb/train-00000-of-00001.parquet" in line


def test_the_published_weights_offline_name_the_file_to_fetch(tmp_path):
    data_path("glue", "SST-2")
    data_path("text")  # the default data: found, so the published weights are the first thing missing
    line = _one_line(_run("recipe", "--published", "--out", str(tmp_path / "r"),
                          env={"WELLREAD_OFFLINE": "1", "WELLREAD_CACHE": str(tmp_path / "cache")}), "offline")
    assert "google/bert_uncased_L-2_H-128_A-2/resolve/main/config.json" in line


def test_bad_settings_are_refused_naming_the_field():
    from wellread.errors import WellreadError

    for kw, name in ((dict(arms=["random", "bogus"]), "arms"), (dict(tasks=["ax"]), "tasks"),
                     (dict(time_budget="soon"), "time_budget"), (dict(source="web"), "source"),
                     (dict(published=False, arms=["random", "published"]), "arms")):
        with pytest.raises(WellreadError) as e:
            RecipeConfig(**kw)
        assert e.value.field == name
    assert RecipeConfig(time_budget="off").budget_s is None and RecipeConfig(tasks="sst2,stsb").tasks == ["sst2", "stsb"]


def test_a_training_sample_keeps_the_header_the_dev_set_and_the_seed(tmp_path):
    src = glue_slice_dir(tmp_path / "glue", {"SST-2": (300, 40), "CoLA": (200, 30)})
    a = sample_glue(src, tmp_path / "a", {"sst2": 50, "cola": 10_000})
    b = sample_glue(src, tmp_path / "b", {"sst2": 50, "cola": 10_000})
    train = (a / "SST-2" / "train.tsv").read_text().splitlines()
    assert train[0] == "sentence\tlabel" and len(train) == 51
    rows = (src / "SST-2" / "train.tsv").read_text().splitlines()[1:]
    assert all(r in rows for r in train[1:]) and train[1:] == sorted(train[1:], key=rows.index)
    assert (a / "SST-2" / "train.tsv").read_text() == (b / "SST-2" / "train.tsv").read_text()
    assert (a / "SST-2" / "dev.tsv").read_text() == (src / "SST-2" / "dev.tsv").read_text()
    assert (a / "CoLA" / "train.tsv").read_text() == (src / "CoLA" / "train.tsv").read_text()  # no header, all rows


def test_the_report_names_no_path_of_this_machine(toy_recipe):
    """The report travels: files are named relative to the recipe directory or by the data source's name,
    never by this machine's absolute paths (the temporary folder, site-packages, the home directory)."""
    root, out, _ = toy_recipe
    for f in ("report.md", "report.html", "report.json"):
        text = (out / "report" / f).read_text(encoding="utf-8")
        for absolute in (str(root), "site-packages", str(REPO)):
            assert absolute not in text, (f, absolute)
    md = (out / "report" / "report.md").read_text(encoding="utf-8")
    assert "Recipe `out/`" in md and "teacher` in" not in md


# --- the short plan (a budget of minutes) ------------------------------------------------------------

def test_a_budget_of_minutes_runs_the_short_plan_and_an_hour_the_papers():
    from wellread.config import to_dict
    from wellread.recipe.config import short_plan_choices

    short, paper = RecipeConfig(time_budget="10m"), RecipeConfig(time_budget="60m")
    assert short.short_plan and not paper.short_plan and not RecipeConfig(time_budget="off").short_plan
    assert short.tasks == ["stsb"] and paper.tasks == ["stsb", "sst2"]
    assert (short.aids.copy_pairs, short.aids.attention_scaffold, short.pd.augment, short.core_lr) == (0.5, 1.0, 2, 3e-4)
    assert (paper.aids.copy_pairs, paper.aids.attention_scaffold, paper.pd.augment, paper.core_lr) == (0.0, 0.0, 0, 1e-4)
    assert (short.finetune_lr, paper.finetune_lr) == (3e-5, None)  # PD + fine-tune: a gentler stage 3
    choices = short_plan_choices(to_dict(short))
    assert choices[0].startswith("tasks: ['stsb', 'sst2'] → ['stsb'] (STS-B alone")
    assert any(c.startswith("copy pairs: 0.0 → 0.5 (") for c in choices) and short_plan_choices(to_dict(paper)) == []
    # a setting given that differs from the paper's default is kept; --no-short-plan keeps them all
    mine = RecipeConfig(time_budget="10m", tasks="sst2", core_lr=5e-5)
    assert mine.tasks == ["sst2"] and mine.core_lr == 5e-5 and mine.pd.augment == 2
    off = RecipeConfig(time_budget="10m", short_plan=False)
    assert off.tasks == ["stsb", "sst2"] and off.aids.copy_pairs == 0.0


def test_the_report_says_what_the_short_plan_chose(toy_recipe):
    from wellread.report import recipe_header

    _, out, _ = toy_recipe
    rec = json.loads((out / "recipe.json").read_text()) | {"root": str(out), "stages": {}}
    assert "short plan" not in recipe_header(rec)
    text = recipe_header(rec | {"short_plan": ["tasks: ['stsb', 'sst2'] → ['stsb'] (why)"]})
    assert "The short plan" in text and "- tasks: ['stsb', 'sst2'] → ['stsb'] (why)" in text


def test_fewer_jobs_than_workers_take_the_spare_threads():
    assert B.threads_per_job(1, 2) == 2 and B.threads_per_job(2, 2) == 1 and B.threads_per_job(8, 2) == 1
    assert B.makespan([10.0], 2) == pytest.approx(10.0 / B.THREAD_SPEEDUP)
    assert B.makespan([10.0, 10.0], 2) == 10.0 and B.makespan([10.0], 1) == 10.0


def test_time_before_the_recipe_began_counts_against_the_budget(tmp_path):
    """`make run` passes --started-at (when make began): the install's minutes come off the budget, are said,
    and a re-run with a later start keeps the plan."""
    import time

    from wellread.recipe.sources import Sources
    from wellread.recipe.stages import Recipe

    (tmp_path / "prose.txt").write_text("a paragraph of prose\n" * 1000)
    src = Sources(glue=tmp_path, text=[tmp_path / "prose.txt"], teacher=None, published={})
    sizes = {"stsb": (5_749, 1_500)}
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    now = RecipeConfig(out=tmp_path / "a", time_budget="20m", calibrate=False, workers=2)
    late = RecipeConfig(out=tmp_path / "b", time_budget="20m", calibrate=False, workers=2, started_at=time.time() - 120)
    p_now, p_late = Recipe(now).make_plan(src, sizes, 0.0), Recipe(late).make_plan(src, sizes, 0.0)
    assert p_late.spent_s == pytest.approx(120, abs=5) and p_now.spent_s == 0.0
    assert (p_late.cells, p_late.pretrain_s) < (p_now.cells, p_now.pretrain_s)  # less time left: less work
    for p in (p_now, p_late):
        assert sum(p.estimate_s.values()) + p.spent_s == pytest.approx(1200, rel=0.02)
    assert any(n.startswith("of which 12") and "before the recipe began" in n for n in p_late.notes), p_late.notes
    rerun = RecipeConfig(out=tmp_path / "b", time_budget="20m", calibrate=False, workers=2, started_at=time.time())
    assert Recipe(rerun).make_plan(src, sizes, 0.0) == p_late  # the same settings: the saved plan
