"""The whole workflow through the real Snakemake and the real CLI, in a temp dir."""

import shutil

import duckdb
import pyarrow.parquet as pq
import pytest
from conftest import job_counts, snakemake, tiny_config, write_config

from ssmpipe import config as cfg
from ssmpipe import sweep

pytestmark = pytest.mark.slow


def _mtimes(folder):
    return {p.name: p.stat().st_mtime_ns for p in folder.glob("*.parquet")}


def test_sweep_end_to_end_cache_and_extension(tmp_path):
    config = tiny_config()
    configfile = write_config(tmp_path, config)
    sweep_dir = tmp_path / "results" / "tiny"
    runs_dir = tmp_path / "results" / "store" / "runs"

    # 1. the first run trains every point, one job per shard, and builds the report
    first = snakemake(tmp_path, configfile)
    jobs = job_counts(first)
    assert jobs["train"] == 2 and jobs["data"] == 2
    assert jobs["plan"] == jobs["snapshot"] == jobs["aggregate"] == jobs["report"] == 1
    table = duckdb.sql(
        f'select run_id, epoch, status, test_acc, "model.init.real" as real, seq_len, seed '
        f"from '{sweep_dir / 'runs.parquet'}'"
    ).df()
    assert table["run_id"].nunique() == 8 and len(table) == 8 * 3
    assert set(table["status"]) == {"ok"} and table["test_acc"].between(0, 1).all()
    assert set(table["real"]) == {-0.5, 0.0} and set(table["seq_len"]) == {16, 24}
    html = (sweep_dir / "report" / "index.html").read_text()
    assert html.count("data:image/png;base64,") == 3 and "Length generalization" in html
    assert "ssmpipe: report at" in first.stdout + first.stderr

    # 2. again: nothing to do
    again = snakemake(tmp_path, configfile)
    assert job_counts(again) == {} and "Nothing to be done" in again.stdout + again.stderr

    # 3. report deleted: rebuilt without any train job
    shutil.rmtree(sweep_dir / "report")
    before = _mtimes(runs_dir)
    rebuilt = snakemake(tmp_path, configfile)
    assert job_counts(rebuilt) == {"report": 1, "all": 1}
    assert (sweep_dir / "report" / "index.html").exists() and _mtimes(runs_dir) == before

    # 3b. a stored shard's rows rewritten (new bytes, newer than the table): the table and report are rebuilt, and
    # no train job runs (a stored shard's runs file is a plain input of aggregate, not a job in the DAG)
    rewritten = sorted(runs_dir.glob("*.parquet"))[0]
    pq.write_table(pq.read_table(rewritten), rewritten, compression="gzip")
    touched = snakemake(tmp_path, configfile)
    assert job_counts(touched) == {"aggregate": 1, "report": 1, "all": 1}
    before = _mtimes(runs_dir)

    # 4. only the report's config changed: its snapshot rewritten, the report rebuilt, nothing retrained
    config["report"] = {"title": "A new title"}
    retitled = snakemake(tmp_path, write_config(tmp_path, config))
    assert job_counts(retitled) == {"snapshot": 1, "report": 1, "all": 1}
    assert "A new title" in (sweep_dir / "report" / "index.html").read_text()

    # 5. a seed added: exactly the new points train; stored shards are untouched
    old_ids = set(table["run_id"])
    config["grid"]["seed"] = [0, 1, 2]
    extended = snakemake(tmp_path, write_config(tmp_path, config))
    assert job_counts(extended)["train"] == 2
    after = _mtimes(runs_dir)
    assert {k: after[k] for k in before} == before
    new_files = [runs_dir / n for n in set(after) - set(before)]
    new_ids = set(duckdb.sql(f"select distinct run_id from read_parquet({[str(f) for f in new_files]})").df()["run_id"])
    want = {p.run_id for p in sweep.expand(cfg.check(config))} - old_ids
    assert new_ids == want and len(want) == 4
    assert duckdb.sql(f"select count(distinct run_id) from '{sweep_dir / 'runs.parquet'}'").fetchall()[0][0] == 12

    # 6. another sweep sharing points trains only what it does not share
    other = tiny_config(sweep="other", **{"grid.seed": [2, 3]})
    shared = snakemake(tmp_path, write_config(tmp_path, other, "other.yaml"))
    assert job_counts(shared)["train"] == 2  # seed 3 only: 4 points in 2 length groups
    assert (
        duckdb.sql(f"select count(distinct run_id) from '{tmp_path / 'results/other/runs.parquet'}'").fetchall()[0][0]
        == 8
    )

    # 7. the native Snakemake report, with the .rst captions
    native = snakemake(tmp_path, configfile, "--report", str(tmp_path / "native.html"))
    assert native.returncode == 0 and (tmp_path / "native.html").stat().st_size > 10_000
    # every job in its DAG has Snakemake's metadata: no marker of this run among the outputs of jobs that do not run
    assert "Missing metadata" not in native.stderr and "missing provenance" not in native.stdout + native.stderr
