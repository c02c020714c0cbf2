"""Every page of a real report, rendered in headless Chromium (tests/browser.py): what a reader sees.

A tiny sweep trained and reported by the real workflow, its reproduction page and a small tune study's
report; each page opened at 1280 and 800 px: no console error, every image decoded, nothing wider than
the page (its tables fold away in <details> and scroll inside their box, also when unfolded), every link
and anchor resolving, UTF-8 text. Each page is screenshotted at full height into the test's tmp folder
(shots/). Without Chromium these tests skip; with CI=true they fail (.ci/run installs it).
"""

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest
from browser import OPEN_ALL, Browser, chromium
from conftest import snakemake, tiny_config, write_config

WIDTHS = (1280, 800)


@pytest.fixture(scope="module")
def browser():
    binary = chromium()
    if binary is None:
        message = "no Chromium on PATH (chromium, chromium-browser or google-chrome); apt-get install chromium"
        if os.environ.get("CI") == "true":
            pytest.fail(f"{message}: .ci/run installs it")
        pytest.skip(message)
    with Browser(binary) as b:
        yield b


def _ssmpipe(workdir: Path, *args: str) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "ssmpipe", *args], cwd=workdir, capture_output=True, text=True, timeout=600, check=False
    )
    assert proc.returncode == 0, proc.stderr


@pytest.fixture(scope="module")
def sweep_report(tmp_path_factory) -> Path:
    """A tiny sweep's report (its three pages) and the reproduction page built from it."""
    workdir = tmp_path_factory.mktemp("report")
    config = tiny_config(**{"fixed.train.epochs": 3})
    config["report"] = {"title": "Tiny × sweep <i>escaped</i>", "claims": ["accuracy_flat_in_length"]}
    snakemake(workdir, write_config(workdir, config))
    _ssmpipe(workdir, "papers", "--results=results", "--out=results/papers/index.html", "--", "tiny")
    return workdir / "results"


@pytest.fixture(scope="module")
def study_report(tmp_path_factory) -> Path:
    """A 4-trial ASHA study's report."""
    workdir = tmp_path_factory.mktemp("study")
    config = tiny_config(results=str(workdir / "results"), grid={})
    config["tune"] = {
        "study": "st",
        "num_samples": 4,
        "max_concurrent_trials": 2,
        "grace_period": 1,
        "space": {"train.lr": {"loguniform": [0.001, 0.3]}, "model.init.imag": {"choice": [0.1, 1.0]}},
    }
    _ssmpipe(workdir, "tune", str(write_config(workdir, config)))
    _ssmpipe(workdir, "report", "--results", str(workdir / "results"), "st")
    return workdir / "results" / "st" / "report"


def check_page(browser: Browser, page: Path, shots: Path) -> dict:
    """Open `page` at each width, assert what a reader must get, screenshot it; return INSPECT's findings."""
    for width in WIDTHS:
        tab = browser.page(page.as_uri(), width)
        try:
            assert tab.errors() == [], (page.name, width)
            seen = tab.inspect()
            assert seen["charset"] == "UTF-8" and all(i["ok"] for i in seen["images"]), seen
            if width == WIDTHS[0]:
                tab.screenshot(shots / f"{page.parent.parent.name}-{page.stem}.png")
                closed = tab.evaluate("document.querySelectorAll('details[open]').length")
                assert closed == 0, f"{page.name}: {closed} <details> open"
            for state in ("folded", "unfolded"):
                if state == "unfolded":
                    tab.evaluate(OPEN_ALL)
                    seen = tab.inspect()
                assert seen["scrollWidth"] <= width and seen["wide"] == [], (page.name, width, state, seen["wide"])
            _links_resolve(page, seen["links"], seen["ids"])
        finally:
            tab.close()
    return seen


def _links_resolve(page: Path, links: list[str], ids: list[str]) -> None:
    """Every link is a file that exists, and its #anchor an id in that file (this page's: `ids`)."""
    assert links, page
    for link in links:
        url = urlsplit(link)
        assert url.scheme == "file", f"{page.name}: {link} leaves the report"
        target = Path(unquote(url.path))
        assert target.is_file(), f"{page.name}: {link} does not exist"
        if url.fragment:
            there = ids if target == page else re.findall(r'id="([^"]+)"', target.read_text())
            assert url.fragment in there, f"{page.name}: no id {url.fragment!r} in {target.name}"


def _sections(page: Path) -> list[str]:
    return re.findall(r'<section id="([^"]+)"', page.read_text())


@pytest.mark.slow
def test_sweep_report_pages_render_cleanly_and_each_holds_its_family(browser, sweep_report, tmp_path):
    shots = tmp_path / "shots"
    shots.mkdir()
    report = sweep_report / "tiny" / "report"
    for name in ("index", "length", "tradeoff"):
        seen = check_page(browser, report / f"{name}.html", shots)
        assert "Tiny × sweep <i>escaped</i>" in seen["title"] and seen["images"]
    assert [s for s in _sections(report / "length.html") if s.startswith("fig-")] == ["fig-lengthgen"]
    assert [s for s in _sections(report / "tradeoff.html") if s.startswith("fig-")] == ["fig-tradeoff"]
    assert {"fig-lengthgen", "fig-tradeoff", "fig-curves", "runs"} <= set(_sections(report / "index.html"))
    text = (report / "index.html").read_text()
    config = text[text.index('<section id="config">') :]
    assert "×" in config and "\\x" not in config and "label_noise" not in config  # delay does not read it
    # lengthgen's table: imag (1 value) × real (2) × seq_len (2) rows; those 3, mean, std, runs, not_ok columns
    assert "<summary>The numbers behind the figure: 4 rows × 7 columns</summary>" in text
    print(f"screenshots: {shots}")


# The runs table's rows as the reader sees them: shown rows only, each cell's text by its column's header.
ROWS = """[...document.querySelectorAll('#runs-table tbody tr')].filter(r => !r.hidden).map(r =>
  Object.fromEntries([...r.cells].map((c, i) => [document.querySelectorAll('#runs-table th')[i].textContent
    .replace(/ [▲▼]$/, ''), c.textContent]).concat([['best', r.classList.contains('best')]])))"""


def _column(rows: list[dict], name: str) -> list[float]:
    return [float(r[name]) for r in rows]


@pytest.mark.slow
def test_runs_table_sorts_by_a_clicked_header_filters_and_marks_the_best_run(browser, sweep_report, tmp_path):
    tab = browser.page((sweep_report / "tiny" / "report" / "index.html").as_uri(), 1280)
    try:
        rows = tab.evaluate(ROWS)
        assert len(rows) == 8 and {"model.init.real", "seq_len", "seed", "status", "test_acc", "test_loss"} <= set(
            rows[0]
        )  # real 2 × seq_len 2 × seed 2; imag has one value: not a column
        assert tab.evaluate("document.querySelectorAll('#runs-table tbody tr svg polyline').length") == 8 * 4
        best = [r for r in rows if r["best"]]
        assert len(best) == 1 and best[0][""] == "★"
        ok = [r for r in rows if r["status"] == "ok"]
        assert float(best[0]["test_acc"]) == max(_column(ok, "test_acc"))
        heads = tab.evaluate("[...document.querySelectorAll('#runs-table th')].map(th => th.textContent)")
        column = f"#runs-table th:nth-child({heads.index('test_acc') + 1})"
        tab.click(column)
        assert _column(tab.evaluate(ROWS), "test_acc") == sorted(_column(rows, "test_acc"))
        assert tab.evaluate(f"document.querySelector('{column}').getAttribute('aria-sort')") == "ascending"
        tab.click(column)
        assert _column(tab.evaluate(ROWS), "test_acc") == sorted(_column(rows, "test_acc"), reverse=True)
        tab.type("#runs input.filter", "seed=1 real=-0.5")
        shown = tab.evaluate(ROWS)
        assert [(r["seed"], r["model.init.real"]) for r in shown] == [("1", "-0.5")] * 2
        assert tab.evaluate("document.querySelector('#runs .shown').textContent") == "2 of 8 runs shown"
        tab.screenshot(tmp_path / "runs-filtered.png")
        assert tab.errors() == []
    finally:
        tab.close()


@pytest.mark.slow
def test_papers_page_renders_cleanly(browser, sweep_report, tmp_path):
    page = sweep_report / "papers" / "index.html"
    (tmp_path / "papers").mkdir()
    links = check_page(browser, page, tmp_path / "papers")["links"]
    assert any(link.endswith("/tiny/report/index.html") for link in links)


@pytest.mark.slow
def test_study_report_names_the_study_in_its_header_and_config(browser, study_report, tmp_path):
    for name in ("index", "tradeoff"):
        assert check_page(browser, study_report / f"{name}.html", tmp_path)["images"]
    text = (study_report / "index.html").read_text()
    assert "Study <code>st</code> (4 trials" in text
    config = text[text.index('<section id="config">') :]
    assert "study: st" in config and "sweep: tiny" not in config and "grid:" not in config
    assert [s for s in _sections(study_report / "tradeoff.html") if s.startswith("fig-")] == ["fig-study_settings"]
    best = json.loads((study_report.parent / "study.json").read_text())["best"]
    tab = browser.page((study_report / "index.html").as_uri(), 1280)
    try:
        rows = tab.evaluate(ROWS)
        assert len(rows) == 4 and {"trial_id", "train.lr", "model.init.imag"} <= set(rows[0])
        assert [r["trial_id"] for r in rows if r["best"]] == ([best["trial_id"]] if best else [])
    finally:
        tab.close()


def test_the_browser_sees_what_a_reader_would_not_enjoy(browser, tmp_path):
    """The checks above can fail: a console error, an image that does not decode, a table wider than the page
    (caught; the same inside a scrolling box is not), a link to a missing file."""
    page = tmp_path / "bad.html"
    page.write_text(
        '<!doctype html><html><head><meta charset="utf-8"><title>bad</title></head><body>'
        '<img alt="broken" src="missing.png"><div style="width:2000px">a wide table</div>'
        '<div style="overflow:auto"><div style="width:3000px">a wide table in its box</div></div>'
        '<a href="nowhere.html">a link</a><script>console.error("a script failed")</script></body></html>'
    )
    tab = browser.page(page.as_uri(), 800)
    try:
        errors = tab.errors()
        assert any("a script failed" in e for e in errors) and any("missing.png" in e for e in errors), errors
        seen = tab.inspect()
        assert seen["images"] == [{"alt": "broken", "ok": False}]
        assert seen["scrollWidth"] > 800 and [w.split(" ")[0] for w in seen["wide"]] == ["div"]
        with pytest.raises(AssertionError, match="nowhere.html does not exist"):
            _links_resolve(page, seen["links"], seen["ids"])
    finally:
        tab.close()
