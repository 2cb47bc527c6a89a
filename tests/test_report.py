"""`wellread report`: from a recipe directory or from plain run directories to report.md + report.html
(the GLUE table beside the published numbers, the PD comparison, curves, heatmaps, timings)."""

from __future__ import annotations

import json
import subprocess
import sys
from html.parser import HTMLParser

import pytest

from tests.conftest import REPO
from wellread import cli
from wellread.report import write_report
from wellread.report.html import markdown_to_html


class _Page(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: dict[str, int] = {}
        self.images: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags[tag] = self.tags.get(tag, 0) + 1
        if tag == "img":
            self.images.append(dict(attrs)["src"])

    def handle_data(self, data):
        self.text.append(data)


def _table(md: str, heading: str) -> dict[str, list[str]]:
    """The rows (first cell -> other cells) of the first table after ``heading``."""
    lines = md.split(heading, 1)[1].splitlines()
    rows = {}
    for ln in lines[1:]:
        if ln.startswith("|"):
            cells = [c.strip() for c in ln.strip("|").split("|")]
            if set(cells[0]) != {"-"}:  # not the header's rule
                rows[cells[0]] = cells[1:]
        elif rows:
            break
    return rows


def test_a_recipe_report_sets_our_dev_numbers_beside_the_published_ones(toy_recipe):
    _, out, _ = toy_recipe
    md = (out / "report" / "report.md").read_text()
    rows = json.loads((out / "evaluate" / "results.json").read_text())["rows"]
    by = {(r["arm"], r["task"]): r["dev"] for r in rows}
    glue = _table(md, "## GLUE: our dev scores beside the published ones")
    assert glue["model"][:2] == ["SST-2", "STS-B"]
    assert glue["fine-tuned from random init (dev)"][:2] == [
        f"{100 * by[('random', 'sst2')]['dev/accuracy']:.1f}",
        f"{100 * by[('random', 'stsb')]['dev/pearson']:.1f}/{100 * by[('random', 'stsb')]['dev/spearman']:.1f}"]
    assert glue["Tiny, Turc et al. 2019 (GLUE **test**)"] == ["83.2", "74.3/73.6", "78.6"]
    assert glue["Tiny, Google's weights fine-tuned (GLUE dev; OLM project)"][:2] == ["79.8", "67.2/69.3"]
    pd = _table(md, "## Pre-trained Distillation against its parts")
    assert list(pd)[1:] == ["fine-tuned from random init", "pre-trained + fine-tuned", "pre-trained distillation (PD)",
                            "PD + fine-tuned", "teacher: teacher, fine-tuned"]
    assert pd["PD + fine-tuned"][1].startswith(f"{100 * (by[('pd+ft', 'stsb')]['dev/pearson'] + by[('pd+ft', 'stsb')]['dev/spearman']) / 2:.1f} (bs 16, lr 0.001)")
    for section in ("### What ran", "### What the time budget cut", "## Learning curves", "## Grids", "## Timings",
                    "## Environment"):
        assert section in md
    from wellread import env

    assert env.cpu().model in md.split("## Environment")[1] and "--backend auto runs" in md  # `wellread env`
    stages = _table(md, "## Timings")
    assert set(stages) >= {"stage", "corpus", "pretrain-tiny", "teacher", "distill-tiny-s0", "evaluate"}
    assert "report" not in stages


def test_the_html_page_is_self_contained_and_its_images_load(toy_recipe):
    import matplotlib.image

    _, out, _ = toy_recipe
    page = _Page()
    page.feed((out / "report" / "report.html").read_text())
    assert page.tags["table"] >= 4 and page.tags["h2"] >= 5 and "script" not in page.tags
    assert page.images and not any(src.startswith(("/", "http")) for src in page.images)
    for src in page.images:
        img = matplotlib.image.imread(out / "report" / src)
        assert img.ndim == 3 and img.shape[0] > 200


def test_plain_run_directories_are_recognised_by_what_they_hold(toy_recipe, tmp_path, capsys):
    _, out, _ = toy_recipe
    runs = [out / "pretrain-tiny", out / "grid-random-tiny-s0", out / "distill-tiny-s0",
            out / "teacher" / "stsb" / "bs32_lr5e-05"]
    assert cli.main(["report", *map(str, runs), "--out", str(tmp_path / "r")]) == 0
    assert "wrote" in capsys.readouterr().out
    md = (tmp_path / "r" / "report.md").read_text()
    glue = _table(md, "## GLUE")
    assert set(glue) >= {"grid-random-tiny-s0 (dev)", "distill-tiny-s0 (PD) (dev)",
                         "distill-tiny-s0 (PD + fine-tune) (dev)", "bs32_lr5e-05 (dev)"}
    assert glue["bs32_lr5e-05 (dev)"][0] == "–"  # the teacher run is STS-B only
    assert "pretraining.png" in md and (tmp_path / "r" / "pretraining.png").is_file()
    assert cli.main(["report", str(out / "grid-random-tiny-s0"), "--out", str(tmp_path / "r2"), "--open"]) == 0
    assert capsys.readouterr().out.strip() == str((tmp_path / "r2" / "report.html").resolve())


def test_a_folder_of_runs_is_searched_and_one_of_none_is_refused(toy_recipe, tmp_path):
    from wellread.errors import WellreadError

    _, out, _ = toy_recipe
    files = write_report([out / "teacher" / "sst2"], tmp_path / "r")  # a folder holding one run
    assert files[0].read_text().count("| bs32_lr5e-05 (dev) |") == 1
    (tmp_path / "empty").mkdir()
    with pytest.raises(WellreadError, match="not a run directory"):
        write_report([tmp_path / "empty"], tmp_path / "r3")
    p = subprocess.run([sys.executable, "-m", "wellread", "report", str(tmp_path / "empty")], capture_output=True,
                       text=True, cwd=REPO, timeout=120)
    assert p.returncode == 1 and len(p.stderr.strip().splitlines()) == 1 and "not a run directory" in p.stderr


def test_markdown_subset_to_html():
    page = markdown_to_html("# Title <x>\n\nSome *it* and **bold** with `a|b` and [a link](x.html).\n\n"
                            "| a | b |\n|---|---|\n| 1 | 2 <3 |\n\n![plot](p.png)\n\n- one\n- two\n\n```\n<raw> & code\n```\n",
                            title="T & T")
    assert "<title>T &amp; T</title>" in page and '<h1 id="title-x">Title &lt;x&gt;</h1>' in page
    assert "<em>it</em>" in page and "<strong>bold</strong>" in page and "<code>a|b</code>" in page
    assert '<a href="x.html">a link</a>' in page
    assert "<thead><tr><th>a</th><th>b</th></tr></thead><tbody><tr><td>1</td><td>2 &lt;3</td></tr></tbody>" in page
    assert '<img src="p.png" alt="plot">' in page and "<ul><li>one</li><li>two</li></ul>" in page
    assert "<pre><code>&lt;raw&gt; &amp; code</code></pre>" in page


def test_seeds_are_averaged_with_their_spread(tmp_path):
    from wellread.report import glue_table, pd_section
    from wellread.report.collect import Collection, Score

    def score(arm, label, seed, acc):
        return Score(label=label, task="sst2", dev={"dev/accuracy": acc}, score=acc, arm=arm, seed=seed, cell=(32, 1e-4))

    col = Collection(scores=[score("random", "random init", 0, 0.80), score("random", "random init", 1, 0.82),
                             score("pd+ft", "PD + fine-tuned", 0, 0.85), score("pd+ft", "PD + fine-tuned", 1, 0.87)],
                     students=["tiny"])
    figures = []
    md = pd_section(col, tmp_path, figures)
    assert "| random init | 81.0 ± 1.4 (n=2) |" in md and "| PD + fine-tuned | 86.0 ± 1.4 (n=2) |" in md
    assert figures == [tmp_path / "pd-comparison.png"] and figures[0].is_file()
    assert "| random init (dev) | 81.0 | 81.0 |" in glue_table(col)
