"""Every experiment in one DAG: a config listing experiment configs plans them all in one Snakemake call (data sets
and shards shared), builds each experiment's report and the reproduction page, and a second call has nothing to do."""

import re
from pathlib import Path

import pandas as pd
import pytest
import yaml
from conftest import REPO, job_counts, snakemake

pytestmark = pytest.mark.slow


def tiny_experiment(name: str, folder: Path) -> Path:
    """config/experiments/<name>.yaml at a few points: each axis its first two values, two epochs, little data."""
    raw = yaml.safe_load((REPO / "config" / "experiments" / f"{name}.yaml").read_text())
    raw.pop("scales", None)
    raw["grid"] = {k: v[:2] for k, v in raw["grid"].items()}
    raw["fixed"]["train"]["epochs"] = min(raw["fixed"]["train"].get("epochs", 2), 2)
    raw["fixed"]["task"].update(n_train=64, n_test=32)
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def test_two_experiments_and_the_reproduction_page_in_one_call(tmp_path):
    files = [tiny_experiment(name, tmp_path) for name in ("002_timescale", "003_memory")]
    papers = tmp_path / "papers.yaml"
    papers.write_text(yaml.safe_dump({"experiments": [str(f) for f in files], "results": "results"}))

    first = snakemake(tmp_path, papers)
    jobs = job_counts(first)
    assert jobs["aggregate"] == jobs["report"] == 2 and jobs["papers"] == 1 and jobs["train"] >= 2
    results = tmp_path / "results"
    for sweep in ("002-timescale", "003-memory"):
        html = (results / sweep / "report" / "index.html").read_text()
        assert "data:image/png;base64," in html
    page = (results / "papers" / "index.html").read_text()
    for claim in ("dt_rule_keeps_output_scale", "memory_predicts_learning", "memory_lag_tradeoff"):
        assert claim in page or claim.replace("_", " ") in page.lower()
    for href in re.findall(r'(?:href|src)="([^"#:]+)"', page):  # relative links resolve
        assert (results / "papers" / href).resolve().exists(), href
    assert "ssmpipe: reproduction page at results/papers/index.html" in first.stdout + first.stderr

    again = snakemake(tmp_path, papers)
    assert job_counts(again) == {} and "Nothing to be done" in again.stdout + again.stderr


def test_two_experiments_of_one_sweep_name_are_an_error_before_any_job(tmp_path):
    one = tiny_experiment("003_memory", tmp_path)
    papers = tmp_path / "papers.yaml"
    papers.write_text(yaml.safe_dump({"experiments": [str(one), str(one)]}))
    proc = snakemake(tmp_path, papers, check=False)
    assert (
        proc.returncode != 0
        and "experiments[1]" in proc.stderr
        and "'003-memory' is also experiments[0]'s" in proc.stderr
    )
    assert not (tmp_path / "results").exists()


@pytest.mark.parametrize(
    "papers, words",
    [
        (
            {"experiments": "config/experiments/003_memory.yaml"},
            ["experiments = 'config/experiments/003_memory.yaml'", "a list of experiment config files"],
        ),
        ({"experiments": ["nowhere.yaml"]}, ["config file 'nowhere.yaml' does not exist"]),
        (
            {"experiments": ["config/experiments/003_memory.yaml"], "grid": {}},
            ["unknown key 'grid' beside experiments"],
        ),
        (
            {"experiments": ["config/experiments/003_memory.yaml"], "scale": "huge"},
            ["experiments[0]", "scale = 'huge'"],
        ),
    ],
)
def test_a_bad_list_of_experiments_is_one_line(tmp_path, papers, words):
    import subprocess
    import sys

    path = tmp_path / "papers.yaml"
    path.write_text(yaml.safe_dump(papers))
    proc = subprocess.run(
        [sys.executable, "-m", "ssmpipe", "validate", str(path)], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2 and len(lines) == 1 and lines[0].startswith("ssmpipe: config error: "), proc.stderr
    assert all(w in lines[0] for w in words), lines[0]


def test_validate_names_every_experiment_of_config_papers():
    import subprocess
    import sys

    proc = subprocess.run(
        [sys.executable, "-m", "ssmpipe", "validate", "config/papers.yaml"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    listed = yaml.safe_load((REPO / "config" / "papers.yaml").read_text())["experiments"]
    on_disk = (REPO / "config" / "experiments").glob("*.yaml")
    assert sorted(listed) == sorted(f"config/experiments/{p.name}" for p in on_disk)
    imdb = [f for f in listed if "imdb" in f]  # no aclImdb here: each left out, and said so
    assert proc.returncode == 0 and proc.stdout.count(": valid. sweep ") == len(listed) - len(imdb), proc.stderr
    assert proc.stdout.count("is left out, it needs data: task.path: an aclImdb folder") == len(imdb) == 3


def test_an_experiment_that_needs_data_is_left_out_until_it_has_them(tmp_path):
    """config/papers.yaml lists the IMDb experiments: without task.path the DAG leaves them out (the page gets their
    files, to say "needs data"); pointed at an aclImdb folder (the tiny fixture) they train like any other."""
    files = [tiny_experiment(name, tmp_path) for name in ("003_s4_vs_s4d", "001_exp2_imdb")]
    papers = tmp_path / "papers.yaml"
    papers.write_text(yaml.safe_dump({"experiments": [str(f) for f in files], "results": "results"}))

    first = snakemake(tmp_path, papers, "-p")
    jobs = job_counts(first)
    assert jobs["report"] == 1 and jobs["papers"] == 1
    assert f"{files[1]} left out, it needs data: task.path: an aclImdb folder" in first.stderr
    assert not (tmp_path / "results" / "001-exp2-imdb").exists()
    assert re.search(rf"ssmpipe papers .* -- 003-s4-vs-s4d {re.escape(str(files[1]))}", first.stdout + first.stderr)
    page = (tmp_path / "results" / "papers" / "index.html").read_text()
    assert "001-exp2-imdb" in page

    raw = yaml.safe_load(files[1].read_text())
    raw["fixed"]["task"].update(path=str(REPO / "tests" / "fixtures" / "aclImdb"), vocab=64)
    raw["fixed"]["test_seq_lens"] = [8]
    raw["grid"]["seq_len"] = [8, 16]
    files[1].write_text(yaml.safe_dump(raw, sort_keys=False))
    second = snakemake(tmp_path, papers)
    assert "left out" not in second.stderr
    assert job_counts(second)["train"] == 2  # the IMDb experiment's two lengths; the other's runs are stored
    runs = pd.read_parquet(tmp_path / "results" / "001-exp2-imdb" / "runs.parquet")
    assert set(runs["status"]) == {"ok"} and runs["run_id"].nunique() == 4 and set(runs["seq_len"]) == {8, 16}
