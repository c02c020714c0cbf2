"""The reproduction page, built by `ssmpipe papers` from real tiny sweeps of three experiment configs (two of them
sharing a claim) and one experiment not run yet: every paper and claim, verdicts, the papers' values, run counts,
links that resolve; an unknown sweep is a one-line error."""

import copy
import html
import re
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote

import pandas as pd
import pytest
import yaml
from conftest import REPO, snakemake, write_config

from ssmpipe.report.claims import CLAIMS
from ssmpipe.report.papers import PAPERS, REFERENCE, VERDICTS, check, load_experiment

EXPERIMENTS = REPO / "config" / "experiments"
SMALL_DATA = {"task": {"n_train": 64, "n_test": 32}, "train": {"epochs": 2}}
TINY = {  # experiment file -> (changes to fixed:, the grid): each trains in seconds on 2 cores
    "000_fig2.yaml": (
        {"model": {"d_model": 4, "d_state": 4}},
        {"model.init.c_scaling": ["none", "tau"], "task.moment": [0.1], "seq_len": [16, 64], "seed": [0, 1]},
    ),
    "001_exp1.yaml": ({}, {"seq_len": [16, 24], "seed": [0, 1]}),
    "001_exp1b.yaml": ({"seq_len": 16}, {"model.init.s_A": [-0.05, 0.1], "seed": [0, 1]}),
}
NOT_RUN = EXPERIMENTS / "003_memory.yaml"  # its sweep is never trained here


def _merge(base: dict, over: dict) -> dict:
    for key, value in over.items():
        base[key] = _merge(base.get(key, {}), value) if isinstance(value, dict) else value
    return base


def _tiny(name: str) -> dict:
    config = yaml.safe_load((EXPERIMENTS / name).read_text())
    config.pop("scales")
    fixed, grid = TINY[name]
    _merge(config["fixed"], copy.deepcopy(SMALL_DATA))
    _merge(config["fixed"], copy.deepcopy(fixed))
    config["grid"] = grid
    return config


def _papers(workdir: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "ssmpipe", "papers", *args], cwd=workdir, capture_output=True, text=True, timeout=120
    )


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """The three tiny experiments trained and reported by the real workflow in one results root, then the page."""
    workdir = tmp_path_factory.mktemp("papers")
    configs = {name: _tiny(name) for name in TINY}
    configs["001_exp1.yaml"]["report"]["title"] += " <b>& escaped</b>"  # markup in a title must show as text
    for name, config in configs.items():
        snakemake(workdir, write_config(workdir, config, name))
    sweeps = [c["sweep"] for c in configs.values()]
    proc = _papers(workdir, "--results=results", "--", *sweeps, str(NOT_RUN))
    page = workdir / "results" / "papers" / "index.html"
    return workdir, configs, proc, page


def _block(text: str, claim: str) -> str:
    """The page's part about one claim: from its heading to the next claim's."""
    start = text.index(f'<h3 id="{claim}">')
    end = text.find("<h3 ", start + 1)
    return text[start : end if end > 0 else len(text)]


@pytest.mark.slow
def test_page_shows_each_paper_claim_verdict_reference_and_runs(built):
    workdir, configs, proc, page = built
    assert proc.returncode == 0, proc.stderr
    assert page.is_file() and f"papers: {Path('results/papers/index.html')}" in proc.stdout
    text = page.read_text()
    for title in PAPERS.values():
        assert html.escape(title) in text
    for config in configs.values():
        runs = pd.read_parquet(workdir / "results" / config["sweep"] / "runs.parquet")
        for claim in config["report"]["claims"]:
            block = _block(text, claim)
            row = block[block.index(f"<code>{config['sweep']}</code>") :]
            row = row[: row.find("</tr>")]
            assert any(f">{verdict}</b>" in row for verdict in VERDICTS[:3]), (claim, row)
            assert html.escape(REFERENCE[claim].says) in block and html.escape(REFERENCE[claim].section) in block
            assert f"{runs['run_id'].nunique()} runs, 2 seeds: {runs['run_id'].nunique()} ok" in row
    shared = _block(text, "s_A_driven_negative")  # checked by both 001 experiments: one row each
    assert shared.count("<tr>") == 3 and "<code>001-exp1</code>" in shared and "<code>001-exp1b</code>" in shared
    for claim in ("memory_predicts_learning", "memory_lag_tradeoff"):  # 003-memory was never trained
        assert ">not run yet</b>" in _block(text, claim) and "<code>003-memory</code>" in _block(text, claim)
    assert "&lt;b&gt;&amp; escaped&lt;/b&gt;" in text and "<b>& escaped" not in text
    ran = sum(len(c["report"]["claims"]) for c in configs.values())
    assert re.search(
        rf"<p>\d+ of {ran} claim checks \(claim × experiment\) supported at small scale; "
        r"\d+ not supported; \d+ inconclusive",
        text,
    )


class _Links(HTMLParser):
    def __init__(self):
        super().__init__()
        self.targets = []

    def handle_starttag(self, tag, attrs):
        self.targets += [v for k, v in attrs if k in ("href", "src") and v and not v.startswith("#")]


def _targets(page: Path) -> list[Path]:
    parser = _Links()
    parser.feed(page.read_text())
    return [page.parent / unquote(t) for t in parser.targets]


@pytest.mark.slow
def test_links_are_relative_and_resolve_to_each_report_and_figure(built):
    workdir, configs, _, page = built
    other = _papers(
        workdir, "--results=results", "--out=elsewhere/deep/page.html", "--", *[c["sweep"] for c in configs.values()]
    )
    assert other.returncode == 0, other.stderr
    for out in (page, workdir / "elsewhere" / "deep" / "page.html"):
        targets = _targets(out)
        assert all(t.resolve().is_file() for t in targets), [t for t in targets if not t.resolve().is_file()]
        resolved = {t.resolve() for t in targets}
        for config in configs.values():
            report = (workdir / "results" / config["sweep"] / "report").resolve()
            assert {report / "index.html", report / "length.html", report / "tradeoff.html"} <= resolved
            assert {report / "figures" / f"{f['name']}.png" for f in config["report"]["figures"]} <= resolved


@pytest.mark.slow
def test_page_builds_and_claims_name_their_reference_paper(built):
    workdir, configs, proc, _ = built
    assert proc.returncode == 0, proc.stderr
    for config in configs.values():  # REFERENCE's paper is the one each claim's verdict names
        experiment = load_experiment(workdir / "results", config["sweep"])
        for claim in config["report"]["claims"]:
            assert check(experiment, claim).verdict.paper == REFERENCE[claim].paper


@pytest.mark.slow
def test_unknown_sweep_or_results_is_one_line(built, tmp_path):
    workdir = built[0]
    for args, says in (
        (["--results=results", "--", "001-exp1", "nope"], "no sweep 'nope' under 'results'"),
        (["--results=missing", "--", "001-exp1"], "--results 'missing': no such folder"),
        (["--", "001-exp1"], "--results=RESULTS is required"),
    ):
        proc = _papers(workdir, *args)
        assert proc.returncode == 2 and proc.stderr.startswith("ssmpipe: ") and says in proc.stderr, proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1


def test_every_claim_has_the_papers_reference_from_the_spec():
    assert list(CLAIMS) and set(REFERENCE) == set(CLAIMS)
    assert {r.paper for r in REFERENCE.values()} == set(PAPERS)
    spec = REPO.parent / "shared" / "SPEC.md"
    if not spec.is_file():
        pytest.skip(f"{spec} is not here")
    text = spec.read_text()
    for title in PAPERS.values():  # author and arXiv number as SPEC.md's heading writes them
        assert title.split(",")[0] in text and re.search(r"arXiv \d{4}\.\d{5}", title)[0] in text
    for name, ref in REFERENCE.items():  # every number the reference quotes stands in SPEC.md's section
        section = text[text.index(f"## {ref.paper} —") :]
        section = section[: section.find("\n## ", 1)]
        for number in re.findall(r"\d+(?:\.\d+)?(?:e-\d+)?", ref.says):
            assert number in section, (name, number)
