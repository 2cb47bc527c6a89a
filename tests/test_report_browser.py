"""report.html in a real browser: headless Chromium (Debian's `chromium`, driven by playwright) loads the
toy recipe's report and finds its tables and figures drawn, with nothing failing to load."""

from __future__ import annotations

import shutil

import pytest

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="no Chromium here (CI installs Debian's chromium: .ci/run)")


def test_report_html_shows_its_tables_and_figures_in_chromium(toy_recipe, tmp_path):
    from playwright.sync_api import sync_playwright

    _, out, _ = toy_recipe
    page_file = out / "report" / "report.html"
    failed, errors = [], []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM)
        page = browser.new_page(viewport={"width": 1100, "height": 900})
        page.on("requestfailed", lambda r: failed.append(r.url))
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(page_file.as_uri(), wait_until="load")
        title = page.title()
        headings = page.locator("h2").all_inner_texts()
        tables = page.locator("table")
        n_tables = tables.count()
        first_table = tables.first.inner_text()
        images = page.eval_on_selector_all("img", "els => els.map(e => [e.getAttribute('src'), e.naturalWidth,"
                                                  " e.naturalHeight, e.complete])")
        page.screenshot(path=tmp_path / "report.png", full_page=True)
        browser.close()
    assert "recipe" in title.lower()
    assert any("GLUE" in h for h in headings) and any("Distillation" in h for h in headings)
    assert n_tables >= 3 and "random init" in first_table
    srcs = {src for src, *_ in images}
    assert {"pd-comparison.png", "pretraining.png", "curves-stsb.png", "curves-sst2.png"} <= srcs
    for src, width, height, complete in images:
        assert complete and width > 100 and height > 100, src  # decoded: the file is there and is an image
    assert not failed and not errors, (failed, errors)
    assert (tmp_path / "report.png").stat().st_size > 20_000
