"""`wellread grid` on slices of real RTE and STS-B: every cell, best on dev, skip and resume, the outputs."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from tests.conftest import REPO, write_glue_slice
from wellread import cli
from wellread.errors import WellreadError
from wellread.eval.metrics import task_score
from wellread.train.finetune import FinetuneConfig, finetune
from wellread.train.grid import GridConfig, run_grid


@pytest.fixture(scope="module")
def glue_slice(tmp_path_factory):
    """The first 96 training and 48 dev rows of the real RTE and STS-B, in the GLUE layout."""
    return write_glue_slice(tmp_path_factory.mktemp("glue"), ("RTE", "STS-B"), 96, 48)


def grid_args(model, data, out, *extra) -> list[str]:
    return ["grid", "--model", str(model), "--tasks", "rte,stsb", "--data-dir", str(data), "--out", str(out),
            "--batch-sizes", "16,32", "--learning-rates", "1e-3,1e-4", "--epochs", "1", "--quiet", *extra]


@pytest.fixture(scope="module")
def grid(small_model_dir, glue_slice, tmp_path_factory):
    out = tmp_path_factory.mktemp("grid") / "g"
    assert cli.main(grid_args(small_model_dir, glue_slice, out, "--workers", "2")) == 0
    return out


def test_every_cell_is_a_finetune_run_and_the_best_has_the_highest_dev_score(grid):
    results = json.loads((grid / "results.json").read_text())
    for task, metric_keys in (("rte", ["dev/accuracy"]), ("stsb", ["dev/pearson", "dev/spearman"])):
        t = results["tasks"][task]
        assert t["finished"] == t["total"] == 4
        scores = {}
        for b in (16, 32):
            for lr in (1e-3, 1e-4):
                run = json.loads((grid / task / f"bs{b}_lr{lr:g}" / "results.json").read_text())
                assert run["settings"]["batch_size"] == b and run["settings"]["lr"] == lr
                scores[(b, lr)] = sum(run["dev"][k] for k in metric_keys) / len(metric_keys)  # the final epoch's dev
        best = max(scores, key=scores.get)
        assert (t["best"]["batch_size"], t["best"]["lr"]) == best
        assert t["best"]["score"] == pytest.approx(scores[best])
    assert len({c["score"] for c in results["tasks"]["rte"]["cells"]} | {0}) > 1


def test_a_cell_is_exactly_what_wellread_finetune_gives(grid, small_model_dir, glue_slice, tmp_path):
    alone = finetune(FinetuneConfig(model=str(small_model_dir), task="stsb", data_dir=glue_slice, out=tmp_path / "r",
                                    batch_size=32, lr=1e-4, epochs=1, quiet=True, threads=1))
    cell = json.loads((grid / "stsb" / "bs32_lr0.0001" / "results.json").read_text())
    assert cell["dev"] == alone["dev"]


def test_outputs_best_json_table_and_heatmaps(grid):
    import matplotlib.image

    best = json.loads((grid / "best.json").read_text())
    results = json.loads((grid / "results.json").read_text())
    for task in ("rte", "stsb"):
        b = results["tasks"][task]["best"]
        assert best[task]["model"] == f"{task}/bs{b['batch_size']}_lr{b['lr']:g}/model"
        assert (grid / best[task]["model"] / "model.safetensors").is_file()
        img = matplotlib.image.imread(grid / f"heatmap-{task}.png")
        assert img.ndim == 3 and img.shape[0] > 100
        others = [c for c in results["tasks"][task]["cells"] if c is not b and c["run"] != b["run"]]
        assert all(not (grid / c["run"] / "model").exists() for c in others)  # --keep-models best
        assert all(not (grid / c["run"] / "checkpoint.pt").exists() for c in results["tasks"][task]["cells"])
    table = (grid / "table.md").read_text()
    head = table.splitlines()[0]
    assert head.startswith("| Model | Score | CoLA | SST-2 | MRPC | STS-B | QQP | MNLI-m | MNLI-mm | QNLI | RTE |")
    rte = results["tasks"]["rte"]["best"]["dev"]["dev/accuracy"]
    st = results["tasks"]["stsb"]["best"]["dev"]
    row = table.splitlines()[2].split(" | ")
    assert row[10] == f"{100 * rte:.1f}" and row[5] == f"{100 * st['dev/pearson']:.1f}/{100 * st['dev/spearman']:.1f}"
    assert row[1] == "–"  # no GLUE score from two tasks


def test_predict_glue_reads_the_grid_directory(grid, glue_slice, tmp_path):
    from wellread.eval.glue import parse_models

    models = parse_models([str(grid)])
    assert set(models) == {"rte", "stsb"} and all((m / "config.json").is_file() for m in models.values())


def test_a_rerun_skips_finished_cells(grid, small_model_dir, glue_slice, capsys):
    stamp = {p: p.stat().st_mtime_ns for p in grid.glob("*/*/results.json")}
    assert len(stamp) == 8
    assert cli.main(grid_args(small_model_dir, glue_slice, grid)) == 0
    assert "8 of 8 cells already finished" in capsys.readouterr().err
    assert {p: p.stat().st_mtime_ns for p in grid.glob("*/*/results.json")} == stamp


def test_a_killed_grid_resumes_without_redoing_finished_cells(small_model_dir, glue_slice, tmp_path):
    out = tmp_path / "g"
    args = ["-m", "wellread", *grid_args(small_model_dir, glue_slice, out, "--workers", "1")]
    proc = subprocess.Popen([sys.executable, *args], cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while len(list(out.glob("*/*/results.json"))) < 2 and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = {p: p.stat().st_mtime_ns for p in out.glob("*/*/results.json")}
    assert 2 <= len(done) < 8, "the grid was killed between cells"
    assert cli.main(grid_args(small_model_dir, glue_slice, out, "--workers", "1")) == 0
    assert all(p.stat().st_mtime_ns == t for p, t in done.items())
    assert len(list(out.glob("*/*/results.json"))) == 8


def test_bad_settings_are_one_line_errors(small_model_dir, glue_slice, tmp_path, capsys):
    for bad, says in ((["--tasks", "rte,nope"], "nope"), (["--tasks", "hans"], "evaluation-only"),
                      (["--batch-sizes", "8,x"], "comma-separated"), (["--keep-models", "some"], "'best', 'all' or 'none'"),
                      (["--finetune-lr", "3e-5"], "needs --then-finetune")):
        args = grid_args(small_model_dir, glue_slice, tmp_path / "o")
        if bad[0] in args:
            args[args.index(bad[0]) + 1] = bad[1]
        else:
            args += bad
        assert cli.main(args) == 1
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and says in err[0]
    with pytest.raises(WellreadError, match="no such|not found|CoLA"):
        run_grid(GridConfig(model=str(small_model_dir), tasks="cola", data_dir=glue_slice, out=tmp_path / "c"))


@pytest.mark.slow
def test_ray_tune_runs_the_same_cells(small_model_dir, glue_slice, tmp_path, grid):
    pytest.importorskip("ray", reason="pip install 'ray[tune]' (a test dependency)")
    out = tmp_path / "ray"
    args = ["grid", "--model", str(small_model_dir), "--tasks", "stsb", "--data-dir", str(glue_slice), "--out",
            str(out), "--batch-sizes", "32", "--learning-rates", "1e-3,1e-4", "--epochs", "1", "--quiet",
            "--ray", "local"]
    assert cli.main(args) == 0
    ray_results = json.loads((out / "results.json").read_text())["tasks"]["stsb"]["cells"]
    local = {(c["batch_size"], c["lr"]): c for c in json.loads((grid / "results.json").read_text())["tasks"]["stsb"]["cells"]}
    for c in ray_results:
        assert c["status"] == "finished"
        assert c["dev"] == local[(c["batch_size"], c["lr"])]["dev"]  # same cell, same numbers, whoever ran it
    assert task_score("stsb", {m: ray_results[0]["dev"][f"dev/{m}"] for m in ("pearson", "spearman")}) == \
        pytest.approx(ray_results[0]["score"])


def test_relative_paths_work_and_a_rerun_skips(small_model_dir, glue_slice, tmp_path, monkeypatch, capsys):
    """Workers see absolute paths; the cells they finish must count as finished for relative ones too."""
    monkeypatch.chdir(glue_slice.parent)
    args = ["grid", "--model", str(small_model_dir), "--tasks", "rte", "--data-dir", glue_slice.name, "--out",
            str(os.path.relpath(tmp_path / "rel", glue_slice.parent)), "--batch-sizes", "32",
            "--learning-rates", "1e-4", "--max-steps", "2", "--quiet"]
    assert cli.main(args) == 0
    assert cli.main(args) == 0
    assert "1 of 1 cells already finished" in capsys.readouterr().err
