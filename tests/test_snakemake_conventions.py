"""The workflow's Snakemake conventions: parsing writes nothing (a dry run or --lint leaves the results
alone), the plan jobs write what planning decided, --lint and snakefmt are clean, every rule has its
conda environment."""

import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pandas as pd
import pytest
import yaml
from conftest import REPO, job_counts, snakemake, tiny_config, write_config

from ssmpipe.store import Store

pytestmark = pytest.mark.slow

TUNE = {"num_samples": 2, "space": {"train.lr": {"loguniform": [0.001, 0.1]}}}


def _listing(folder: Path) -> dict[str, int]:
    """Every file and folder under `folder`, relative path -> mtime (ns)."""
    return {str(p.relative_to(folder)): p.stat().st_mtime_ns for p in sorted(folder.rglob("*"))}


def _lints(workdir: Path, configfile: Path, *args: str) -> str:
    proc = snakemake(workdir, configfile, "--lint", *args)
    return proc.stdout + proc.stderr


@pytest.mark.parametrize("tune", [False, True], ids=["sweep", "sweep-and-study"])
def test_a_dry_run_and_lint_on_a_fresh_dir_write_no_results(tmp_path, tune):
    config = tiny_config()
    if tune:
        config["tune"] = TUNE
    configfile = write_config(tmp_path, config)
    dry = snakemake(tmp_path, configfile, "-n")
    jobs = job_counts(dry)
    assert jobs["plan"] == jobs["snapshot"] == 1 and jobs["train"] == 2
    assert jobs.get("study_config") == (1 if tune else None)
    assert "Congratulations" in _lints(tmp_path, configfile)
    assert not (tmp_path / "results").exists()


def test_a_dry_run_on_a_store_to_repair_changes_nothing_and_the_plan_job_repairs_it(tmp_path):
    config = tiny_config()
    configfile = write_config(tmp_path, config)
    planned = subprocess.run(
        [sys.executable, "-m", "ssmpipe", "plan", str(configfile)],
        cwd=tmp_path,
        check=False,
        capture_output=True,
        text=True,
    )
    assert planned.returncode == 0, planned.stderr
    store = Store(tmp_path / "results")
    first, second = sorted(store.read_specs())
    # a spec edited by hand, a runs file that is no Parquet, a new title and a new seed: all to write
    spec = store.spec_path(first)
    spec.write_text(spec.read_text().replace('"lr": 0.01', '"lr": 0.02'))
    store.runs_path(second).parent.mkdir(parents=True, exist_ok=True)
    store.runs_path(second).write_bytes(b"not parquet")
    config["report"] = {"title": "Another title"}
    config["grid"]["seed"] = [0, 1, 2]
    configfile = write_config(tmp_path, config)
    before = _listing(tmp_path / "results")

    dry = snakemake(tmp_path, configfile, "-n")
    out = dry.stdout + dry.stderr
    assert f"{spec.relative_to(tmp_path)} cannot be trusted" in out
    assert job_counts(dry)["plan"] == job_counts(dry)["snapshot"] == 1 and job_counts(dry)["train"] == 4
    assert "Congratulations" in _lints(tmp_path, configfile)
    assert _listing(tmp_path / "results") == before

    # the plan and snapshot jobs alone: the untrusted files quarantined, the new specs written; then
    # the store is as planned, and a dry run has only training (and what follows) left to do
    snakemake(tmp_path, configfile, "--until", "plan", "snapshot")
    quarantined = sorted(p.name for p in (tmp_path / "results" / "store" / "quarantine").iterdir())
    assert any(n.endswith(f"specs-{first}.json") for n in quarantined)
    assert any(n.endswith(f"runs-{second}.parquet") for n in quarantined)
    assert "Another title" in store.config_path("tiny").read_text()
    again = job_counts(snakemake(tmp_path, configfile, "-n"))
    assert again["train"] == 4 and "plan" not in again and "snapshot" not in again
    assert not list((tmp_path / ".snakemake" / "ssmpipe").glob("*"))  # this run's markers are gone


def test_lint_and_snakefmt_are_clean(tmp_path):
    config = tiny_config()
    config["tune"] = TUNE
    assert "Congratulations" in _lints(tmp_path, REPO / "config" / "config.yaml")
    assert "Congratulations" in _lints(tmp_path, write_config(tmp_path, config), "--sdm", "conda")
    snakefmt = Path(sys.executable).parent / "snakefmt"
    fmt = subprocess.run(
        [str(snakefmt), "--check", "Snakefile", "workflow"], cwd=REPO, check=False, capture_output=True, text=True
    )
    assert fmt.returncode == 0, fmt.stdout + fmt.stderr


def test_the_conda_environment_installs_torch_and_this_repository():
    env = yaml.safe_load((REPO / "workflow" / "envs" / "ssmpipe.yaml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    assert "torch==2.13.0" in pip and any("download.pytorch.org/whl/cpu" in line for line in pip)
    # conda runs pip beside Snakemake's copy of the file, <workdir>/.snakemake/conda/<hash>.yaml
    editable = next(line.split(maxsplit=1)[1] for line in pip if line.startswith("-e "))
    root = (REPO / ".snakemake" / "conda" / editable).resolve()
    assert root == REPO and 'name = "ssmpipe"' in (root / "pyproject.toml").read_text()
    # every dependency at the version the tests ran with: requirements.lock, in both envs and in the Makefile
    lock = (REPO / ".snakemake" / "conda" / next(line.split()[1] for line in pip if line.startswith("-c "))).resolve()
    assert lock == REPO / "requirements.lock"
    cuda = yaml.safe_load((REPO / "workflow" / "envs" / "ssmpipe-cuda.yaml").read_text())
    assert "-c ../../requirements.lock" in next(d["pip"] for d in cuda["dependencies"] if isinstance(d, dict))
    assert "-c requirements.lock -e '.[test]'" in (REPO / "Makefile").read_text()
    pinned = {
        re.sub(r"[-_.]+", "-", line.split("==")[0]).lower()
        for line in lock.read_text().splitlines()
        if "==" in line and not line.startswith("#")
    }
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    wanted = project["dependencies"] + project["optional-dependencies"]["test"]
    names = {re.sub(r"[-_.]+", "-", re.match(r"[A-Za-z0-9_.-]+", d).group()).lower() for d in wanted}
    assert names - {"torch", "ssmpipe"} <= pinned, names - pinned  # torch: pinned where it is installed
    assert "torch" not in pinned


def test_sweeps_planned_without_writing_share_shards_as_the_plan_job_writes_them(tmp_path):
    from ssmpipe import config as cfg
    from ssmpipe import sweep

    # b holds a's points and more: written one after the other, b reuses a's new shards
    a = cfg.check(tiny_config(sweep="a", results=str(tmp_path / "results")))
    b = cfg.check(tiny_config(sweep="b", results=str(tmp_path / "results"), shard_size=3, **{"grid.seed": [0, 1, 2]}))
    dry = sweep.plan_sweeps([a, b])
    assert not (tmp_path / "results").exists()
    written = {c["sweep"]: sweep.plan(c, write=True) for c in (a, b)}
    for name in ("a", "b"):
        assert dry[name].shard_of == written[name].shard_of and dry[name].pending == written[name].pending
    assert set(dry["a"].shards) < set(dry["b"].shards)
    assert all(
        sweep.unwritten(plan) == [] and not sweep.changed_snapshot(plan.config)
        for plan in sweep.plan_sweeps([a, b]).values()
    )


def test_plan_names_a_config_that_is_not_json_in_one_line(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "ssmpipe", "plan", "--json", "--", "{not json"],
        cwd=tmp_path,
        check=False,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2 and proc.stderr.startswith("ssmpipe: config error: --json: a config is not JSON")
    assert len(proc.stderr.strip().splitlines()) == 1 and not (tmp_path / "results").exists()


def test_forcerun_train_retrains_every_shard_and_a_trained_sweep_still_draws_its_train_jobs(tmp_path):
    """Snakemake's own ways to redo a rule work on train: -R train (and -F) trains every shard again, the rows the
    same as before and the old files kept in store/quarantine/; --rulegraph and --dag of a trained sweep still draw
    the train and data rules, and a plain rerun trains nothing."""
    config = tiny_config(**{"grid.seed": [0]})  # 4 points in 2 shards (two pack keys: the two lengths)
    configfile = write_config(tmp_path, config)
    assert job_counts(snakemake(tmp_path, configfile))["train"] == 2
    table = tmp_path / "results" / "tiny" / "runs.parquet"
    before = pd.read_parquet(table)
    store = Store(tmp_path / "results")
    shards = sorted(store.done_shards())

    for drawing in ("--rulegraph", "--dag"):
        graph = snakemake(tmp_path, configfile, drawing).stdout
        assert 'label = "train' in graph and 'label = "data' in graph, graph
    assert "train" not in job_counts(snakemake(tmp_path, configfile, "-n"))
    assert job_counts(snakemake(tmp_path, configfile, "-F", "-n")).get("train") == 2  # a dry run: nothing moved
    assert not store.quarantine_dir().exists()

    proc = snakemake(tmp_path, configfile, "-R", "train")
    assert job_counts(proc)["train"] == 2 and job_counts(proc)["aggregate"] == 1
    set_aside = sorted(p.name for p in store.quarantine_dir().iterdir())
    assert sorted(name.split("-")[-1] for name in set_aside) == [f"{s}.parquet" for s in shards], set_aside
    after = pd.read_parquet(table)
    metrics = ["run_id", "epoch", "train_loss", "test_loss", "test_acc"]
    pd.testing.assert_frame_equal(after[metrics], before[metrics])  # trained anew: the same numbers (CPU)
    assert (after["wall_s"] != before["wall_s"]).any()  # and not the old rows kept
    assert "train" not in job_counts(snakemake(tmp_path, configfile))
