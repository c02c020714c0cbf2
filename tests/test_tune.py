"""Ray Tune studies (ssmpipe/tune): real Ray, the real store, the real CI SLURM; no mocks.

- bad search spaces are config errors naming key and value, before Ray starts;
- a 16-trial ASHA study stops some trials early, records the best config, and every
  trial's rows are in the store with its study and trial id, under the run id a grid
  sweep gives the same settings;
- a study SIGKILLed (or Ctrl-C'd) midway resumes (Tuner.restore) and finishes without
  redoing a finished trial; failed trials are stored, and retried by a rerun;
- optuna and hyperopt search (the search extra);
- a Snakemake workflow runs a study as one DAG node, and a study whose points a grid
  sweep already trained replays them instead of training;
- `ssmpipe tune --cluster slurm` runs a study inside one SLURM job, and on the Ray nodes of a
  two-node job (slurm.nodes: 2), whose trials run on both nodes.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from conftest import job_counts, require_slurm, snakemake, tiny_config, write_config

from ssmpipe import config as cfg
from ssmpipe import keys, sweep, tune

FIXTURES = Path(__file__).parent / "fixtures"

SPACE = {
    "train.lr": {"loguniform": [0.001, 0.3]},
    "model.init.real": {"uniform": [-1.0, 0.0]},
    "model.init.imag": {"choice": [0.1, 1.0, 10.0]},
}


def study_config(tmp_path: Path, study="s", num_samples=16, epochs=6, n_train=64, space=None, **tune_changes) -> dict:
    config = tiny_config(results=str(tmp_path / "results"), grid={})
    config["fixed"]["train"]["epochs"] = epochs
    config["fixed"]["task"]["n_train"] = n_train
    config["tune"] = {
        "study": study,
        "num_samples": num_samples,
        "space": space or SPACE,
        "grace_period": 1,
        "reduction_factor": 2,
        **tune_changes,
    }
    return config


def ssmpipe(*args, check=True, timeout=600) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "ssmpipe", *args], capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"ssmpipe {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


def trial_files(results: Path, study: str) -> dict[str, Path]:
    return {p.stem: p for p in (results / "store" / "runs").glob(f"tune-{study}-*.parquet")}


# --- config errors, before anything starts -----------------------------------------------


@pytest.mark.parametrize(
    "space, message",
    [
        ({"train.lrate": {"uniform": [0.001, 0.1]}}, "tune.space.train.lrate: unknown setting 'train.lrate'"),
        (
            {"seq_len": {"uniform": [16, 32]}},
            "tune.space.seq_len.uniform = [16, 32]: seq_len is a setting of type integer",
        ),
        ({"train.lr": {"uniform": [0.1, 0.01]}}, "tune.space.train.lr.uniform = [0.1, 0.01]: needs [low, high]"),
        ({"train.lr": {"loguniform": [0.0, 0.1]}}, "tune.space.train.lr.loguniform = [0.0, 0.1]: low must be > 0"),
        ({"train.lr": {"choice": [0.01, -1.0]}}, "tune.space.train.lr.choice[1] = -1.0: -1.0 is less than or equal to"),
        ({"model.init.real": {"uniform": [-1.0, 0.5]}}, "tune.space.model.init.real.uniform[1] = 0.5: 0.5 is greater"),
        ({"seed": {"grid": [0, 1, 0]}}, "tune.space.seed.grid has the value 0 twice"),
        (
            {"task.lag": {"choice": [3, 16]}},
            "tune.space.task.lag.choice[1]: task.lag = 16 must be shorter than seq_len",
        ),
        (
            {"model.init.dt_min": {"loguniform": [0.001, 0.05]}, "model.init.dt_max": {"uniform": [0.01, 0.1]}},
            "tune.space (extreme corner): model.init.dt_min = 0.05 is larger than model.init.dt_max = 0.01",
        ),
        ({"train.lr": {"between": [0.001, 0.1]}}, "tune.space.train.lr = 'between'"),
        (
            {"train.lrr": {"uniform": [0.001, 0.1]}},
            "tune.space.train.lrr: unknown setting 'train.lrr' (uniform: [0.001, 0.1]) (did you mean 'train.lr' or "
            "'train.clip'?); settings are dotted keys under model, reg, seed, seq_len, task, test_seq_lens, train "
            "(all of them: workflow/schemas/config.schema.yaml)",
        ),
        (
            {"task.name": {"uniform": [0, 1]}},
            "tune.space.task.name.uniform = [0, 1]: task.name is a setting of type string, not a number; search it "
            "with choice or grid",
        ),
        *(
            (
                {"train.lr": {"uniform": bad}},
                f"tune.space.train.lr.uniform = {bad!r}: needs [low, high], two numbers with low < high",
            )
            for bad in ([0.1, 0.1], [True, 0.1], [0.01])
        ),
        ({"train.lr": {"choice": [0.01, 0.01]}}, "tune.space.train.lr.choice has the value 0.01 twice"),
    ],
)
def test_bad_space_is_an_error_naming_key_and_value(tmp_path, space, message):
    config = study_config(tmp_path, space=space)
    with pytest.raises(cfg.ConfigError) as e:
        cfg.check_tune(cfg.check(config))
    assert message in str(e.value)


def test_a_study_is_checked_for_a_space_its_searcher_and_its_grace_period(tmp_path, monkeypatch):
    no_study = cfg.check(study_config(tmp_path))
    no_study.pop("tune")
    with pytest.raises(cfg.ConfigError) as e:
        cfg.check_tune(no_study)
    assert str(e.value) == (
        "the config has no tune: section (a search space to run a study over); see README.md, 'Hyperparameter search'"
    )
    cfg.check_tune(cfg.check(study_config(tmp_path, grace_period=6)))  # as many epochs as a trial trains: fine
    optuna = cfg.check(study_config(tmp_path, search="optuna"))
    cfg.check_tune(optuna)  # installed here (the search extra)
    monkeypatch.setitem(cfg.SEARCHERS, "optuna", "ssmpipe_no_such_package")
    with pytest.raises(cfg.ConfigError) as e:
        cfg.check_tune(optuna)
    assert str(e.value) == (
        "tune.search = 'optuna': the ssmpipe_no_such_package package is not installed (pip install 'ssmpipe[search]'), "
        "or use search: random"
    )
    grid = study_config(tmp_path, search="optuna", space={**SPACE, "seed": {"grid": [0, 1]}, "seq_len": {"grid": [16]}})
    with pytest.raises(cfg.ConfigError) as e:
        cfg.check_tune(cfg.check(grid))
    assert str(e.value) == (
        "tune.space.seed: grid entries need tune.search 'random' (tune.search = 'optuna' samples every key)"
    )


def test_bad_study_settings_are_errors(tmp_path):
    with pytest.raises(cfg.ConfigError, match="tune.grace_period = 8 is more than the 6 epochs"):
        cfg.check_tune(cfg.check(study_config(tmp_path, grace_period=8)))
    with pytest.raises(cfg.ConfigError, match="tune.space.seed: grid entries need tune.search 'random'"):
        cfg.check_tune(cfg.check(study_config(tmp_path, search="optuna", space={"seed": {"grid": [0, 1]}})))
    with pytest.raises(cfg.ConfigError, match="tune.metric = 'accuracy'"):
        cfg.check(study_config(tmp_path, metric="accuracy"))


def test_cli_refuses_a_bad_space_before_starting_ray(tmp_path):
    path = write_config(tmp_path, study_config(tmp_path, space={"model.d_modl": {"choice": [4, 8]}}))
    t0 = time.perf_counter()
    proc = ssmpipe("tune", str(path), check=False)
    assert proc.returncode == 2
    assert "config error: tune.space.model.d_modl: unknown setting 'model.d_modl'" in proc.stderr
    assert time.perf_counter() - t0 < 30 and not (tmp_path / "results" / "s").exists()
    proc = ssmpipe("validate", str(path), check=False)  # validate checks the space too
    assert proc.returncode == 2 and "tune.space.model.d_modl" in proc.stderr


# --- a study with real Ray ---------------------------------------------------------------


@pytest.mark.slow
def test_asha_study_stops_trials_early_and_stores_every_trial(tmp_path):
    config = study_config(tmp_path)
    proc = ssmpipe("tune", str(write_config(tmp_path, config)))
    results = tmp_path / "results"
    study = json.loads((results / "s" / "study.json").read_text())
    print(proc.stdout)

    # 16 trials; ASHA stopped some before the last epoch, the rest trained to it.
    trials = study["trials"]
    assert study["n_trials"] == 16 and len(trials) == 16 and not study["trials_without_rows"]
    stopped = [t for t in trials if t["status"] == "stopped"]
    finished = [t for t in trials if t["status"] == "ok"]
    assert stopped and finished and study["counts"]["stopped"] == len(stopped)
    assert all(t["epochs"] < 6 for t in stopped) and all(t["epochs"] == 6 for t in finished)
    assert f"{len(stopped)} stopped early by ASHA" in proc.stdout

    # The best config: the best final test_acc among the trials trained to the end.
    best = study["best"]
    assert best["value"] == max(t["value"] for t in finished)
    assert best["params"] == next(t["params"] for t in trials if t["trial_id"] == best["trial_id"])
    assert set(best["params"]) == set(SPACE)

    # Every trial's rows are in the store, stamped, under the run id of the same settings in a grid sweep.
    files = trial_files(results, "s")
    assert len(files) == 16
    table = pd.read_parquet(results / "s" / "runs.parquet")
    assert set(table["study"]) == {"s"} and set(table["trial_id"]) == {t["trial_id"] for t in trials}
    checked = cfg.check(config)
    for t in trials:
        rows = pd.read_parquet(files[f"tune-s-{t['trial_id']}"])
        assert list(rows["epoch"]) == list(range(t["epochs"] + 1))  # epoch 0 (at init) to the last it trained
        assert set(rows["status"]) == {t["status"]} and set(rows["trial_id"]) == {t["trial_id"]}
        assert set(rows["run_id"]) == {keys.run_id(tune.trial_settings(checked["fixed"], t["params"]))}
        assert rows["train.lr"].iloc[0] == pytest.approx(t["params"]["train.lr"])
        assert rows["test_acc"].notna().all()
    # Finished trials have a spec (grid sweeps reuse them); stopped ones do not (they are not fully trained).
    specs = {p.stem for p in (results / "store" / "specs").glob("tune-s-*.json")}
    assert specs == {f"tune-s-{t['trial_id']}" for t in finished}

    # A grid sweep of the best config finds that point already trained.
    best_sweep = cfg.load(results / "s" / "best.yaml")
    plan = sweep.plan({**best_sweep, "grid": {}}, write=False)
    assert [p.run_id for p in plan.points] == [best["run_id"]] and plan.pending == []

    # The report shows the study: its best config and the metric against each searched setting.
    ssmpipe("report", "--results", str(results), "s")
    page = (results / "s" / "report" / "index.html").read_text()
    assert "Best config" in page and best["trial_id"] in page and "model.init.imag" in page
    assert (results / "s" / "report" / "figures" / "study_settings.png").stat().st_size > 10_000

    # The study folder holds this study: rerunning it with another search is an error, before Ray starts.
    config["tune"]["num_samples"] = 32
    proc = ssmpipe("tune", str(write_config(tmp_path, config)), check=False)
    assert proc.returncode == 2
    assert "study 's'" in proc.stderr and "was started with another tune: section" in proc.stderr


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT], ids=["SIGKILL", "Ctrl-C"])
def test_killed_study_resumes_without_redoing_finished_trials(tmp_path, sig):
    config = study_config(tmp_path, study="k", num_samples=10, n_train=512)  # ~1-s trials: the kill lands midway
    path = write_config(tmp_path, config)
    results = tmp_path / "results"
    with open(tmp_path / "first.log", "w") as log:  # the child keeps its own copy of the descriptor
        first = subprocess.Popen(
            [sys.executable, "-m", "ssmpipe", "tune", str(path)], stdout=log, stderr=log, start_new_session=True
        )
    deadline = time.monotonic() + 240
    while len(trial_files(results, "k")) < 4 and first.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    os.killpg(first.pid, sig)  # the study and the Ray it started: a crash, or Ctrl-C in its terminal
    assert first.wait(timeout=120) == (-signal.SIGKILL if sig == signal.SIGKILL else 130)
    done = {name: p.stat().st_mtime_ns for name, p in trial_files(results, "k").items()}
    assert 4 <= len(done) < 10, f"the kill did not land midway: {len(done)} trials done"
    assert not (results / "k" / "study.json").exists()  # an interrupted study has no summary yet
    if sig == signal.SIGINT:
        assert "run the same command again to resume it" in (tmp_path / "first.log").read_text()

    proc = ssmpipe("tune", str(path))
    study = json.loads((results / "k" / "study.json").read_text())
    assert study["n_trials"] == 10 and len(study["trials"]) == 10 and not study["trials_without_rows"]
    files = trial_files(results, "k")
    assert len(files) == 10
    for name, mtime in done.items():  # a trial that had ended was not trained (nor written) again
        assert files[name].stat().st_mtime_ns == mtime, name
    assert study["best"] is not None and study["counts"]["stopped"] > 0
    assert study["counts"]["failed"] == study["counts"]["diverged"] == 0
    for path in files.values():  # trials resumed mid-way have each epoch once, as if never interrupted
        epochs = list(pd.read_parquet(path)["epoch"])
        assert epochs == list(range(len(epochs)))
    assert "resuming" in proc.stderr


@pytest.mark.slow
def test_failed_and_diverged_trials_are_stored_and_a_rerun_retries_only_failed_ones(tmp_path):
    good, bad = tmp_path / "good", tmp_path / "bad"  # LRA ListOps folders; bad's header passes the config check,
    shutil.copytree(FIXTURES / "listops", good)  # a row of its deeper down (a Target that is no integer) fails
    shutil.copytree(FIXTURES / "listops", bad)  # when a trial reads it
    rows = (bad / "basic_train.tsv").read_text().splitlines()
    (bad / "basic_train.tsv").write_text("\n".join([*rows[:5], rows[5].rsplit("\t", 1)[0] + "\tx", *rows[6:]]) + "\n")
    config = study_config(
        tmp_path,
        study="f",
        num_samples=1,
        epochs=3,
        scheduler="fifo",
        space={"task.path": {"grid": [str(good), str(bad)]}, "train.lr": {"grid": [0.01, 1.0e9]}},
    )
    config["fixed"]["task"] = {"name": "listops", "path": str(good)}
    config["fixed"]["seq_len"] = 128
    path = write_config(tmp_path, config)
    proc = ssmpipe("tune", str(path))
    results = tmp_path / "results"
    study = json.loads((results / "f" / "study.json").read_text())
    assert study["counts"] == {"ok": 1, "stopped": 0, "diverged": 1, "failed": 2}, proc.stdout
    status = {(t["params"]["task.path"].endswith("good"), t["params"]["train.lr"]): t for t in study["trials"]}
    assert status[True, 0.01]["status"] == "ok" and status[True, 0.01]["epochs"] == 3
    assert status[True, 1.0e9]["status"] == "diverged" and status[True, 1.0e9]["epochs"] < 3
    for lr in (0.01, 1.0e9):
        failed = status[False, lr]
        assert failed["status"] == "failed" and "ValueError" in failed["error"]
    assert study["best"]["trial_id"] == status[True, 0.01]["trial_id"]

    mtimes = {
        t["trial_id"]: (t["status"], trial_files(results, "f")[f"tune-f-{t['trial_id']}"].stat().st_mtime_ns)
        for t in study["trials"]
    }
    ssmpipe("tune", str(path))  # the rerun retries the errored trials (resume_errored), and only them
    study = json.loads((results / "f" / "study.json").read_text())
    assert study["counts"]["failed"] == 2 and study["n_trials"] == 4 and len(study["wall_s"]) == 2
    for tid, (status, mtime) in mtimes.items():
        retried = trial_files(results, "f")[f"tune-f-{tid}"].stat().st_mtime_ns != mtime
        assert retried == (status == "failed"), (tid, status)


@pytest.mark.slow
@pytest.mark.parametrize("search", ["optuna", "hyperopt"])
def test_optuna_and_hyperopt_search(tmp_path, search):
    pytest.importorskip(search, reason="the search extra (pip install 'ssmpipe[search]') is not installed")
    config = study_config(tmp_path, study=search, num_samples=4, epochs=3, search=search, seed=1)
    proc = ssmpipe("tune", str(write_config(tmp_path, config)))
    study = json.loads((tmp_path / "results" / search / "study.json").read_text())
    assert study["search"] == search and study["n_trials"] == 4 and study["best"] is not None, proc.stdout
    table = pd.read_parquet(tmp_path / "results" / search / "runs.parquet")
    assert table["trial_id"].nunique() == 4 and table["train.lr"].between(0.001, 0.3).all()
    assert table["model.init.imag"].isin([0.1, 1.0, 10.0]).all()


# --- Snakemake: a study as one DAG node; a study reusing a grid sweep's runs ---------------


@pytest.mark.slow
def test_snakemake_runs_a_study_as_one_node_and_studies_reuse_grid_runs(tmp_path):
    config = tiny_config(results="results", grid={"seed": [0, 1]})
    config["fixed"]["train"]["epochs"] = 3
    config["tune"] = {"num_samples": 2, "space": {"train.lr": {"loguniform": [0.001, 0.1]}}}
    path = write_config(tmp_path, config)
    proc = snakemake(tmp_path, path)
    counts = job_counts(proc)
    assert counts["tune"] == 1 and counts["tune_report"] == 1 and counts["train"] == 1
    study = json.loads((tmp_path / "results" / "tiny-tune" / "study.json").read_text())
    assert study["n_trials"] == 2 and (tmp_path / "results" / "tiny-tune" / "report" / "index.html").exists()
    assert job_counts(snakemake(tmp_path, path)) == {}  # nothing left to do
    # Then a sweep of seeds 0-4 around the best config: seed 0 is the best trial, trained already.
    best_sweep = tmp_path / "results" / "tiny-tune" / "best.yaml"
    assert job_counts(snakemake(tmp_path, best_sweep, "-n"))["train"] == 1  # one shard: seeds 1-4
    plan = sweep.plan(cfg.check({**cfg.load(best_sweep), "results": str(tmp_path / "results")}), write=False)
    assert plan.shard_of[study["best"]["run_id"]] == f"tune-tiny-tune-{study['best']['trial_id']}"
    # Without a tune: section the DAG is the sweep's alone.
    del config["tune"]
    dry = snakemake(tmp_path, write_config(tmp_path, {**config, "sweep": "other"}, "plain.yaml"), "-n")
    assert "tune" not in job_counts(dry)

    # A study over the sweep's own points (a grid over seeds, the sweep's lr) trains nothing: it replays them.
    config["tune"] = {"study": "replay", "num_samples": 1, "space": {"seed": {"grid": [0, 1]}}}
    config["results"] = str(tmp_path / "results")
    ssmpipe("tune", str(write_config(tmp_path, config, "replay.yaml")))
    replay = pd.read_parquet(tmp_path / "results" / "replay" / "runs.parquet")
    grid = pd.read_parquet(tmp_path / "results" / "tiny" / "runs.parquet")
    assert set(replay["run_id"]) == set(grid["run_id"])
    assert not set(replay["shard_id"]).intersection(f"tune-replay-{t}" for t in replay["trial_id"])
    merged = replay.merge(grid, on=["run_id", "epoch"], suffixes=("", "_grid"))
    assert len(merged) == len(grid) and (merged["wall_s"] == merged["wall_s_grid"]).all()


# --- a study inside a SLURM job ----------------------------------------------------------


@pytest.mark.slurm
def test_study_runs_inside_a_slurm_job(tmp_path):
    require_slurm()
    config = study_config(tmp_path, study="onslurm", num_samples=4, epochs=4)
    config["slurm"] = {
        "partition": "debug",
        "account": "root",
        "gpus_per_node": 0,
        "cpus_per_task": 2,
        "mem_gb": 4,
        "timeout_min": 10,
        "signal_delay_s": 30,
    }
    proc = ssmpipe("tune", str(write_config(tmp_path, config)), "--cluster", "slurm", timeout=900)
    results = tmp_path / "results"
    study = json.loads((results / "onslurm" / "study.json").read_text())
    assert study["n_trials"] == 4 and len(trial_files(results, "onslurm")) == 4
    # It ran in a SLURM job: submitit's files and the job's log, which shows Ray starting there.
    submitted = list((results / "onslurm" / "slurm").glob("*_submitted.pkl"))
    assert len(submitted) == 1
    job_id = submitted[0].name.split("_")[0]
    assert f"SLURM job {job_id}" in proc.stderr
    job_log = (results / "onslurm" / "slurm" / f"{job_id}_0_log.err").read_text()
    assert f"study onslurm: Ray started with 2 CPUs and 0 GPUs in SLURM job {job_id}" in job_log
    # The same kind of rows as locally.
    table = pd.read_parquet(results / "onslurm" / "runs.parquet")
    assert set(table["study"]) == {"onslurm"} and table["trial_id"].nunique() == 4
    assert set(table["status"]) <= {"ok", "stopped"} and table["test_acc"].notna().all()
    final = table.sort_values("epoch").groupby("trial_id").tail(1)
    assert (final[final["status"] == "ok"]["epoch"] == 4).all()
    assert study["best"]["run_id"] in set(table["run_id"])


def test_a_study_on_slurm_nodes_asks_for_one_task_per_node_and_trials_that_fit_one(tmp_path):
    from ssmpipe import slurm
    from ssmpipe.tune.cluster import check_fits

    config = study_config(tmp_path, cpus_per_trial=2)
    config["slurm"] = {"cpus_per_task": 2, "gpus_per_node": 0, "nodes": 3}
    config = cfg.check(config)
    params = slurm.executor_parameters(config["slurm"], "n", nodes=3)
    assert params["nodes"] == 3 and params["tasks_per_node"] == 1 and params["cpus_per_task"] == 2
    one = slurm.executor_parameters(config["slurm"], "n")  # a shard's job, and a one-node study: as before
    assert "nodes" not in one and "tasks_per_node" not in one
    assert cfg.check(study_config(tmp_path))["slurm"]["nodes"] == 1
    check_fits(config)
    config["tune"]["cpus_per_trial"] = 3
    with pytest.raises(cfg.ConfigError, match="tune.cpus_per_trial = 3 is more than the 2 CPUs of a node"):
        check_fits(config)
    with pytest.raises(cfg.ConfigError, match="slurm.nodes"):
        cfg.check({**study_config(tmp_path), "slurm": {"nodes": 0}})


def require_nodes(n: int) -> list[str]:
    """The cluster's nodes that are up; skip (fail under CI=true) with fewer than `n`."""
    require_slurm()
    out = subprocess.run(["sinfo", "-h", "-N", "-o", "%N %T"], capture_output=True, text=True, timeout=10).stdout
    up = sorted(
        {
            name
            for name, state in (line.split() for line in out.splitlines())
            if state in ("idle", "mixed", "allocated", "completing")
        }
    )
    if len(up) < n:
        problem = (
            f"needs a SLURM cluster with {n} nodes, this one has {len(up)} up ({', '.join(up) or 'none'}): "
            f"as root, `SLURM_CI_NODES={n} bash ../shared/ci/slurm-up.sh`"
        )
        if os.environ.get("CI") == "true":
            pytest.fail(f"{problem} (.ci/run starts SLURM with SLURM_CI_NODES=2)")
        pytest.skip(problem)
    return up


@pytest.mark.slurm
def test_study_runs_on_two_ray_nodes_of_one_slurm_job(tmp_path):
    up = require_nodes(2)
    # 6 one-CPU trials, 4 at once on 2 nodes × 2 CPUs: the head's node cannot hold them all. Trials of a few
    # seconds: Tune gives a pending trial to a free actor of a finished one (reuse_actors) before a new one starts.
    config = study_config(
        tmp_path,
        study="nodes",
        num_samples=6,
        epochs=5,
        n_train=2048,
        scheduler="fifo",
        max_concurrent_trials=4,
        cpus_per_trial=1,
    )
    config["slurm"] = {
        "partition": "debug",
        "account": "root",
        "gpus_per_node": 0,
        "cpus_per_task": 2,
        "mem_gb": 3,
        "timeout_min": 10,
        "signal_delay_s": 30,
        "nodes": 2,
    }
    proc = ssmpipe("tune", str(write_config(tmp_path, config)), "--cluster", "slurm", timeout=600)
    results = tmp_path / "results"
    study = json.loads((results / "nodes" / "study.json").read_text())
    # Every trial stored, each with the SLURM node it ran on: both nodes of the job took trials.
    assert study["n_trials"] == 6 and len(trial_files(results, "nodes")) == 6 and not study["trials_without_rows"]
    assert study["counts"]["ok"] == 6, proc.stdout
    per_node = {}
    for t in study["trials"]:
        per_node[t["node"]] = per_node.get(t["node"], 0) + 1
    print("trials per node:", per_node)
    assert len(per_node) == 2 and set(per_node) <= set(up), per_node
    # One job of two tasks: task 0 ran the study on a Ray cluster of both nodes, task 1 a Ray worker node.
    submitted = list((results / "nodes" / "slurm").glob("*_submitted.pkl"))
    assert len(submitted) == 1
    job_id = submitted[0].name.split("_")[0]
    assert f"SLURM job {job_id} (2 nodes × " in proc.stderr and "2 CPU" in proc.stderr  # the requests it asked for
    head_log = (results / "nodes" / "slurm" / f"{job_id}_0_log.err").read_text()
    assert "study nodes: Ray cluster of 2 nodes at" in head_log and "4 CPUs" in head_log
    worker_log = (results / "nodes" / "slurm" / f"{job_id}_1_log.err").read_text()
    assert "Ray worker node joining" in worker_log
    nnodes = subprocess.run(
        ["sacct", "-X", "-n", "-P", "-j", job_id, "-o", "NNodes"], capture_output=True, text=True, timeout=30
    ).stdout.split()
    assert nnodes == ["2"], nnodes
    table = pd.read_parquet(results / "nodes" / "runs.parquet")
    assert table["trial_id"].nunique() == 6 and (table.groupby("trial_id")["epoch"].max() == 5).all()
