"""Sweeps on a real SLURM cluster through `snakemake --profile slurm` and submitit.

The cluster is ../shared/ci/slurm-up.sh's single node (partition debug, account root,
one fake GPU: SLURM grants it, torch sees no CUDA device), which .ci/run brings up.
With CI=true a cluster that is not up fails these tests; elsewhere they are skipped.
Each test runs the real workflow from the repo root with the profile installed the
README's way (`make slurm-profile`, into a temporary XDG_CONFIG_HOME), and compares
with the same sweep trained locally.
"""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from conftest import REPO, job_counts, require_slurm, snakemake, tiny_config, write_config

from ssmpipe import config as cfg
from ssmpipe import slurm, sweep
from ssmpipe.slurm import job_name
from ssmpipe.store import Store

# No GPU: the CI node's GPU is fake, and a job that asks for a GPU it cannot use fails (test_a_job_that_asked_...).
REQUESTS = {
    "partition": "debug",
    "account": "root",
    "qos": "normal",
    "gpus_per_node": 0,
    "cpus_per_task": 1,
    "mem_gb": 1,
    "timeout_min": 5,
}
METRICS = ["train_loss", "train_acc", "test_loss", "test_acc"]
TABLE = "results/{}/runs.parquet"  # a target: the sweep's table, without its report


# --- the cluster, the profile, the workflow -----------------------------------------------


@pytest.fixture(scope="module")
def slurm_env(tmp_path_factory):
    """The environment of a user who ran `make slurm-profile`; fails in CI, skips elsewhere, without SLURM."""
    require_slurm()
    env = {**os.environ, "XDG_CONFIG_HOME": str(tmp_path_factory.mktemp("xdg"))}
    subprocess.run(["make", "-s", "slurm-profile"], cwd=REPO, env=env, check=True, capture_output=True)
    return env


def snakemake_slurm(env, workdir: Path, configfile: Path, *args, check=True, timeout=900, background=False):
    """`snakemake --profile slurm` from the repo root, on `workdir`; a Popen when `background`."""
    cmd = [
        sys.executable,
        "-m",
        "snakemake",
        "--profile",
        "slurm",
        "-d",
        str(workdir),
        *args,
        "--configfile",
        str(configfile),
    ]  # (--configfile takes every word after it)
    if background:  # its own session, so a test can Ctrl-C it as a terminal would
        with open(workdir / "snakemake.out", "w") as out:  # the child keeps its own copy of the descriptor
            return subprocess.Popen(
                cmd, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT, text=True, start_new_session=True
            )
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"snakemake --profile slurm failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


def slurm_config(sweep_name="tiny", epochs=None, **slurm):
    """The tiny sweep on SLURM; with `epochs`, one point that trains for a while (~0.5 s an epoch)."""
    changes = {}
    if epochs:
        changes = {
            "fixed.seq_len": 64,
            "grid.seq_len": [64],
            "grid.model.init.real": [-0.5],
            "grid.seed": [0],
            "fixed.task": {"name": "delay", "lag": 30, "vocab": 16, "n_train": 1024, "n_test": 256},
            "fixed.model": {"d_model": 32, "d_state": 32, "n_layers": 1},
            "fixed.train.epochs": epochs,
        }
    return tiny_config(sweep=sweep_name, slurm={**REQUESTS, **slurm}, **changes)


def only_shard(workdir: Path, config: dict) -> str:
    plan = sweep.plan(cfg.check({**config, "results": str(workdir / "results")}), write=False)
    assert len(plan.shards) == 1
    return plan.shards[0]


def job_ids(workdir: Path, sweep_name: str) -> list[str]:
    """A sweep's SLURM jobs, oldest first, from its log folder: '<job>', or '<array>_<task>' for an array's task."""
    folder = workdir / "results" / sweep_name / "slurm"
    ids = [p.name.removesuffix("_submitted.pkl") for p in folder.glob("*_submitted.pkl")]
    return sorted(ids, key=lambda i: tuple(int(n) for n in i.split("_")))


def array_log(workdir: Path, sweep_name: str) -> str:
    """The train_array jobs' logs of a sweep (the process that submitted its arrays and waited for them)."""
    folder = workdir / "results" / sweep_name / "logs" / "train"
    return "".join(p.read_text(errors="replace") for p in sorted(folder.glob("array-*.log")))


def sacct(job_id: str, fields: str, every_start=False, until=lambda record: True, timeout=60) -> list[dict]:
    """sacct's records of a job (one per start of it with every_start), once there is one and each one holds
    until(record): slurmctld hands a job's record to the accounting daemon in pieces, so a field such as ReqTRES
    can still be empty for a moment after the job has ended (seen on a loaded CI machine)."""

    def records() -> list[dict]:
        out = subprocess.run(
            ["sacct", "-X", "-n", "-P", "-j", job_id, "-o", fields, *(["-D"] if every_start else [])],
            capture_output=True,
            text=True,
            check=True,
            timeout=30,
        ).stdout
        return [dict(zip(fields.split(","), line.split("|"))) for line in out.splitlines()]

    found: list[dict] = []

    def complete() -> bool:
        found[:] = records()
        return bool(found) and all(until(record) for record in found)

    wait_for(f"the accounting record of SLURM job {job_id} ({fields})", complete, timeout=timeout)
    return found


def train_locally(workdir: Path, config: dict) -> subprocess.Popen:
    """The sweep's table by the local launcher on one core, in the background."""
    cmd = [
        sys.executable,
        "-m",
        "snakemake",
        "-s",
        str(REPO / "Snakefile"),
        "-d",
        str(workdir),
        "--configfile",
        str(write_config(workdir, config)),
        "--cores",
        "1",
        TABLE.format(config["sweep"]),
    ]
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def metrics(workdir: Path, sweep_name: str) -> pd.DataFrame:
    """The sweep's table: every (run, epoch) with its status and metrics."""
    table = pd.read_parquet(
        workdir / "results" / sweep_name / "runs.parquet", columns=["run_id", "shard_id", "epoch", "status", *METRICS]
    )
    return table.sort_values(["run_id", "epoch"], ignore_index=True)


def wait_for(what: str, condition, timeout=120):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out after {timeout} s waiting for {what}"
        time.sleep(0.5)


def epochs_in_log(log: Path) -> int:
    return log.read_text(errors="replace").count(" epoch ") if log.exists() else 0


@pytest.fixture
def node_feature():
    """A feature on the cluster's node, so a job can ask for it (slurm.constraint); removed after."""
    node = subprocess.run(["sinfo", "-h", "-N", "-o", "%N"], capture_output=True, text=True, check=True).stdout.split()[
        0
    ]
    update = ["scontrol", "update", f"NodeName={node}"]
    subprocess.run([*update, "AvailableFeatures=ssmpipe_ci", "ActiveFeatures=ssmpipe_ci"], check=True, timeout=30)
    yield "ssmpipe_ci"
    subprocess.run([*update, "AvailableFeatures=", "ActiveFeatures="], check=True, timeout=30)


# --- the tests ------------------------------------------------------------------------------


@pytest.mark.slurm
def test_sweep_on_slurm_equals_the_local_sweep_and_slurm_gets_the_requests(tmp_path, slurm_env, node_feature):
    config = slurm_config(constraint=node_feature)
    local_dir, slurm_dir = tmp_path / "local", tmp_path / "slurm"
    local_dir.mkdir(), slurm_dir.mkdir()
    start = time.perf_counter()
    snakemake(local_dir, write_config(local_dir, config))
    local_s = time.perf_counter() - start
    configfile = write_config(slurm_dir, config)
    start = time.perf_counter()
    on_slurm = snakemake_slurm(slurm_env, slurm_dir, configfile)
    slurm_s = time.perf_counter() - start
    print(f"\ntiny sweep, 2 shards: local {local_s:.1f} s, snakemake --profile slurm {slurm_s:.1f} s")

    # the same metrics, bit for bit, from one SLURM job array: a task per shard, one job waiting for it here
    assert job_counts(on_slurm)["train_task"] == 2 and job_counts(on_slurm)["train_array"] == 1
    assert "train" not in job_counts(on_slurm)
    pd.testing.assert_frame_equal(metrics(slurm_dir, "tiny"), metrics(local_dir, "tiny"), check_exact=True)
    where = pd.read_parquet(slurm_dir / TABLE.format("tiny"), columns=["device", "cuda_version"])
    assert (where["device"] == "cpu").all() and where["cuda_version"].isna().all()  # asked for no GPU: the CPU
    jobs = job_ids(slurm_dir, "tiny")
    array = jobs[0].split("_")[0]
    assert jobs == [f"{array}_0", f"{array}_1"], jobs
    names = {sacct(job, "JobName")[0]["JobName"] for job in jobs}
    assert len(names) == 1 and names.pop().startswith("ssmpipe-a")  # the array's name, its tasks' shards in store/
    assert "--array=0-1%2" in (slurm_dir / "results" / "tiny" / "slurm" / f"{array}_submission.sh").read_text()

    # what SLURM was asked for is what the config says (accounting, and the controller's view)
    for job in jobs:
        [record] = sacct(
            job, "JobName,State,Partition,Account,QOS,Timelimit,ReqTRES,Constraints", until=lambda r: r["ReqTRES"]
        )
        assert record["State"] == "COMPLETED"
        assert (record["Partition"], record["Account"], record["QOS"]) == ("debug", "root", "normal")
        assert record["Timelimit"] == "00:05:00" and record["Constraints"] == node_feature
        tres = dict(item.split("=") for item in record["ReqTRES"].split(","))
        assert "gres/gpu" not in tres and (tres["mem"], tres["cpu"]) == ("1G", "1"), record["ReqTRES"]
        shown = subprocess.run(["scontrol", "show", "job", job], capture_output=True, text=True, check=True).stdout
        for field in (
            "TimeLimit=00:05:00",
            "MinMemoryNode=1G",
            "Features=ssmpipe_ci",
            "Partition=debug",
            "Account=root",
            "QOS=normal",
            "NumCPUs=1",
        ):
            assert field in shown, (field, shown)

    # every task's log is in the sweep's log folder, named in its shard's rule's log
    shards = sweep.plan(cfg.check({**config, "results": str(slurm_dir / "results")}), write=False).shards
    for shard in shards:
        log = (slurm_dir / "results" / "tiny" / "logs" / "train" / f"{shard}.log").read_text()
        named = [p for p in (slurm_dir / "results" / "tiny" / "slurm").glob("*_0_log.err") if str(p) in log]
        assert len(named) == 1 and f"shard {shard}: SLURM job {array}_" in log, log

    status = subprocess.run(
        [sys.executable, "-m", "ssmpipe", "status", str(configfile)],
        cwd=slurm_dir,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    table = {line.split()[0]: line.split()[1:] for line in status.splitlines()[2:]}
    assert "8 points in 2 shards (2 trained)" in status and table["ok"] == ["8"], status

    # switching back to the local launcher trains nothing again
    assert not {"train", "aggregate"} & set(job_counts(snakemake(slurm_dir, configfile)))

    # -R train on SLURM: the array's tasks train every shard again, the old rows kept until replaced
    before = pd.read_parquet(slurm_dir / TABLE.format("tiny"))
    again = snakemake_slurm(slurm_env, slurm_dir, configfile, "-R", "train")
    assert job_counts(again)["train_task"] == 2 and job_counts(again)["train_array"] == 1
    after = pd.read_parquet(slurm_dir / TABLE.format("tiny"))
    pd.testing.assert_frame_equal(metrics(slurm_dir, "tiny"), metrics(local_dir, "tiny"), check_exact=True)
    key = ["run_id", "epoch"]
    walls = before.set_index(key)["wall_s"].align(after.set_index(key)["wall_s"])
    assert (walls[0] != walls[1]).any()  # trained anew, not the old rows reused
    kept = sorted(p.name.split("-")[-1] for p in Store(slurm_dir / "results").quarantine_dir().iterdir())
    assert kept == sorted(f"{s}.parquet" for s in shards), kept


@pytest.mark.slurm
@pytest.mark.parametrize("shards_per_job", [1, 2])
def test_a_shard_past_its_time_limit_is_requeued_and_resumes_bit_identically(tmp_path, slurm_env, shards_per_job):
    """Two shards in one array: the long one's task times out, is requeued on its own and resumes (as often as its
    training outlasts the limit); the short one's task runs once. Both end as the uninterrupted local run. With
    slurm.shards_per_job = 2 both shards are one task's, trained at once: the task is requeued whole, the short
    shard stored in its first start and reused, the long one resumed."""
    # ~0.65 s an epoch on one thread here: over 2 minutes of training under a 1-minute limit (at least 2 starts;
    # slower on a loaded machine: more starts, each resumed from the checkpoint the one before it left)
    config = slurm_config(
        "long",
        epochs=200,
        timeout_min=1,
        signal_delay_s=5,
        max_timeouts=20,
        gpus_per_node=0,
        cpus_per_task=shards_per_job,
        shards_per_job=shards_per_job,
    )
    config["fixed"]["task"].update(n_train=2048)
    config["grid"]["seq_len"] = [128]
    config["grid"]["train.epochs"] = [200, 10]  # two shards (shard_size 1): ~2 minutes, and a few seconds
    config["shard_size"] = 1
    local_dir, slurm_dir = tmp_path / "local", tmp_path / "slurm"
    local_dir.mkdir(), slurm_dir.mkdir()
    start = time.time()
    local = train_locally(local_dir, config)  # uninterrupted, alongside
    try:
        snakemake_slurm(slurm_env, slurm_dir, write_config(slurm_dir, config), TABLE.format("long"), timeout=900)
        slurm_s = time.time() - start
        assert local.wait(timeout=600) == 0
        local_s = (local_dir / TABLE.format("long")).stat().st_mtime - start
    finally:
        local.kill()
    tasks = job_ids(slurm_dir, "long")
    array = tasks[0].split("_")[0]
    assert tasks == ([f"{array}_0", f"{array}_1"] if shards_per_job == 1 else [array]), tasks  # one task: a job

    # every start over: a time-limit signal that lands as a task's shards are stored requeues it once more (seen
    # with two shards to a task), and that start, which reuses the rows, may still be queued when the sweep is done
    def over(start: dict) -> bool:
        return start["State"].split()[0] not in ("PENDING", "CONFIGURING", "RUNNING", "COMPLETING", "SUSPENDED")

    starts = {task: sacct(task, "JobID,State,Elapsed", every_start=True, until=over, timeout=300) for task in tasks}
    [job] = [t for t in tasks if len(starts[t]) > 1]  # the long shard's task
    for short in set(tasks) - {job}:
        assert [s["State"] for s in starts[short]] == ["COMPLETED"], starts  # requeued alone: the other task ran once
    starts = starts[job]
    err = (slurm_dir / "results" / "long" / "slurm" / f"{job}_0_log.err").read_text(errors="replace")  # every start's
    print(
        f"\nrequeued task {job}: {len(starts)} starts in {slurm_s:.0f} s ({[s['Elapsed'] for s in starts]}); "
        f"uninterrupted here: {local_s:.0f} s"
    )

    # timed out, checkpointed, requeued, resumed from its epoch checkpoint
    assert [s["State"] for s in starts][-1] == "COMPLETED" and len(starts) >= 2, starts
    assert all(s["State"] == "REQUEUED" for s in starts[:-1]), starts
    # each requeued start was signalled (submitit logs it before it checkpoints and asks SLURM to requeue); a signal
    # may also land as the last start finishes, so at least the requeues, not exactly. Its "Requeued job" line comes
    # after `scontrol requeue`, which SLURM may act on first (the process killed before it logs: seen on a loaded
    # machine), so the requeues themselves are counted from sacct's REQUEUED starts above and the resumes below.
    assert err.count("this job is timed-out") >= len(starts) - 1
    resumed_after = [int(line.split("after epoch ")[1]) for line in err.splitlines() if "resuming group" in line]
    assert resumed_after == sorted(set(resumed_after)), resumed_after
    # each start after the first resumed, unless the one before it had stored the shard as its signal came (the
    # rows then reused: seen with two shards to a task, whose requeue waits for both)
    assert 1 <= len(resumed_after) <= len(starts) - 1, (resumed_after, starts)
    if shards_per_job == 1:
        assert len(resumed_after) == len(starts) - 1, (resumed_after, starts)
    # and trained exactly as the uninterrupted local run
    pd.testing.assert_frame_equal(metrics(slurm_dir, "long"), metrics(local_dir, "long"), check_exact=True)
    assert metrics(slurm_dir, "long")["epoch"].max() == 200


@pytest.mark.slurm
def test_a_killed_job_fails_its_rule_naming_its_slurm_log_in_bounded_time(tmp_path, slurm_env):
    config = slurm_config("killed", epochs=200)  # ~45 s of training: killed long before
    shard = only_shard(tmp_path, config)
    proc = snakemake_slurm(slurm_env, tmp_path, write_config(tmp_path, config), background=True)
    try:
        wait_for(
            "the shard's job to train",
            lambda: len(job_ids(tmp_path, "killed")) == 1 and Store(tmp_path / "results").ckpt_path(shard).exists(),
        )
        [job] = job_ids(tmp_path, "killed")
        killed = time.monotonic()
        # SIGKILL to the training process, as the kernel's OOM killer would send it: no traceback, no result
        subprocess.run(["scancel", "--signal=KILL", f"{job}.0"], check=True, timeout=30)
        assert proc.wait(timeout=120) != 0
        took = time.monotonic() - killed
    finally:
        proc.kill()
    out = (tmp_path / "snakemake.out").read_text()
    slurm_log = tmp_path / "results" / "killed" / "slurm" / f"{job}_0_log.err"
    print(f"\nkilled job: the rule failed {took:.0f} s later")
    assert took < 90 and "Error in rule train" in out
    assert f"SLURM job {job} ended FAILED; its log: {slurm_log}" in out


@pytest.mark.slurm
def test_a_crashing_shard_fails_its_rule_with_the_error_and_its_slurm_log(tmp_path, slurm_env):
    """Two shards in one array: the task of the one that crashes fails that shard's rule (with the task's id, state
    and log); the other task stores its shard."""
    config = {**slurm_config("crash"), "shard_size": 2}
    config["grid"]["seq_len"] = [16]
    shards = sweep.plan(cfg.check({**config, "results": str(tmp_path / "results")}), write=False).shards
    assert len(shards) == 2
    store = Store(tmp_path / "results")
    checkpoint = store.ckpt_path(shards[1])  # a corrupt checkpoint: train_shard cannot load it
    checkpoint.parent.mkdir(parents=True)
    checkpoint.write_bytes(b"not a checkpoint")
    start = time.perf_counter()
    proc = snakemake_slurm(slurm_env, tmp_path, write_config(tmp_path, config), check=False, timeout=300)
    took = time.perf_counter() - start
    tasks = job_ids(tmp_path, "crash")
    array = tasks[0].split("_")[0]
    assert tasks == [f"{array}_0", f"{array}_1"], tasks
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0 and "Error in rule train_task" in out and took < 180
    slurm_log = tmp_path / "results" / "crash" / "slurm" / f"{array}_1_0_log.err"
    assert f"shard {shards[1]}: SLURM job {array}_1 ended FAILED; its log: {slurm_log}" in out
    assert "UnpicklingError" in out  # the task's own error, from its log
    assert store.runs_path(shards[0]).exists() and not store.runs_path(shards[1]).exists()  # only its shard failed
    assert [r["State"] for r in sacct(f"{array}_0", "State")] == ["COMPLETED"]
    status = subprocess.run(
        [sys.executable, "-m", "ssmpipe", "status", str(tmp_path / "config.yaml")],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert f"shard {shards[1]}: SLURM job {array}_1 FAILED, log {slurm_log}" in status, status  # the shard's task


@pytest.mark.slurm
def test_a_task_trains_its_shards_at_once_and_fails_only_the_one_that_crashes(tmp_path, slurm_env):
    """slurm.shards_per_job = 2: four shards go out as an array of two tasks, each training its two shards at once
    (a process each, on the task's CPUs); every stored shard equals the local run's, bit for bit, and a shard that
    crashes fails its own rule, naming its task, while its task-mate is stored."""
    config = slurm_config("bundled", cpus_per_task=2, shards_per_job=2)
    config["shard_size"] = 2  # the tiny sweep's 8 points: 4 shards
    local = tmp_path / "local"
    local.mkdir()
    snakemake(local, write_config(local, config))
    shards = sweep.plan(cfg.check({**config, "results": str(tmp_path / "results")}), write=False).shards
    assert len(shards) == 4
    store = Store(tmp_path / "results")
    crashing = shards[3]
    store.ckpt_path(crashing).parent.mkdir(parents=True)
    store.ckpt_path(crashing).write_bytes(b"not a checkpoint")  # train_shard cannot load it
    proc = snakemake_slurm(slurm_env, tmp_path, write_config(tmp_path, config), check=False, timeout=300)
    out = proc.stdout + proc.stderr
    tasks = job_ids(tmp_path, "bundled")
    array = tasks[0].split("_")[0]
    assert tasks == [f"{array}_0", f"{array}_1"], tasks  # 2 tasks for 4 shards
    assert job_counts(proc)["train_array"] == 1 and proc.returncode != 0 and "Error in rule train_task" in out
    assert [r["State"] for r in sacct(f"{array}_0", "State")] == ["COMPLETED"]
    assert [r["State"] for r in sacct(f"{array}_1", "State")] == ["FAILED"]
    slurm_log = tmp_path / "results" / "bundled" / "slurm" / f"{array}_1_0_log.err"
    assert f"shard {crashing}: SLURM job {array}_1 ended FAILED; its log: {slurm_log}" in out, out
    task_log = slurm_log.read_text(errors="replace")
    assert f"1 of 2 shards failed: {crashing} (exit status 1)" in task_log and f"shard {crashing} failed:" in task_log
    stored = [s for s in shards if store.runs_path(s).exists()]
    assert stored == shards[:3], stored  # the crashing shard's task-mate too
    waited = array_log(tmp_path, "bundled")  # the process that submitted the array and waited for its tasks
    for shard in stored:
        assert f"shard {shard}: SLURM job {array}_{shards.index(shard) // 2} done" in waited, waited
        got = pd.read_parquet(store.runs_path(shard)).sort_values(["run_id", "epoch"], ignore_index=True)
        ref = pd.read_parquet(Store(local / "results").runs_path(shard)).sort_values(["run_id", "epoch"])
        pd.testing.assert_frame_equal(got[METRICS], ref.reset_index(drop=True)[METRICS], check_exact=True)


@pytest.mark.slurm
def test_a_job_that_asked_for_a_gpu_and_sees_no_cuda_fails_with_one_line(tmp_path, slurm_env):
    """slurm.gpus_per_node: 1 reaches SLURM (gres/gpu=1, granted: the CI node's fake GPU), and the job, whose torch
    sees no CUDA device there, fails at once with the line saying so, before training anything (no checkpoint)."""
    config = slurm_config("gpu", gpus_per_node=1)
    config["grid"]["seq_len"] = [16]
    shard = only_shard(tmp_path, config)
    start = time.perf_counter()
    proc = snakemake_slurm(slurm_env, tmp_path, write_config(tmp_path, config), check=False, timeout=300)
    took = time.perf_counter() - start
    [job] = job_ids(tmp_path, "gpu")
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0 and "Error in rule train" in out and took < 180
    assert "asked for 1 GPU per node, but torch sees no CUDA device (torch " in out  # from the job's log
    [record] = sacct(job, "State,ReqTRES", until=lambda r: r["ReqTRES"])
    assert record["State"] == "FAILED" and "gres/gpu=1" in record["ReqTRES"], record
    store = Store(tmp_path / "results")
    assert not store.ckpt_path(shard).exists() and not store.runs_path(shard).exists()


@pytest.mark.slurm
def test_scancel_is_reported_and_a_rerun_resumes(tmp_path, slurm_env):
    config = slurm_config("cancel", epochs=300)  # longer than SLURM's KillWait (30 s): see below
    local_dir, slurm_dir = tmp_path / "local", tmp_path / "slurm"
    local_dir.mkdir(), slurm_dir.mkdir()
    local = train_locally(local_dir, config)  # uninterrupted, alongside
    configfile = write_config(slurm_dir, config)
    proc = snakemake_slurm(slurm_env, slurm_dir, configfile, TABLE.format("cancel"), background=True)
    try:
        wait_for("the shard's job", lambda: len(job_ids(slurm_dir, "cancel")) == 1)
        [first] = job_ids(slurm_dir, "cancel")
        first_log = slurm_dir / "results" / "cancel" / "slurm" / f"{first}_0_log.err"
        wait_for("5 epochs", lambda: epochs_in_log(first_log) >= 5)
        # (submitit ignores the SIGTERM of scancel, as preemption sends one first: training goes on
        # until SLURM's KillWait ends it, 30 s later here; a shard done by then would be stored)
        subprocess.run(["scancel", first], check=True, timeout=30)
        assert proc.wait(timeout=120) != 0
    finally:
        proc.kill()
    out = (slurm_dir / "snakemake.out").read_text()
    assert f"SLURM job {first} ended CANCELLED" in out and str(first_log) in out

    status = subprocess.run(
        [sys.executable, "-m", "ssmpipe", "status", str(configfile)],
        cwd=slurm_dir,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "job failed" in status and f"SLURM job {first} CANCELLED" in status, status

    # the rerun resumes from the epoch the cancelled job reached, and ends as the local run
    snakemake_slurm(slurm_env, slurm_dir, configfile, TABLE.format("cancel"))
    [_, second] = job_ids(slurm_dir, "cancel")
    second_log = (slurm_dir / "results" / "cancel" / "slurm" / f"{second}_0_log.err").read_text()
    resumed_after = int(second_log.split("after epoch ")[1].split()[0])
    assert resumed_after >= 4 and epochs_in_log(first_log) >= resumed_after
    assert local.wait(timeout=300) == 0
    pd.testing.assert_frame_equal(metrics(slurm_dir, "cancel"), metrics(local_dir, "cancel"), check_exact=True)


@pytest.mark.slurm
def test_stopping_snakemake_cancels_its_slurm_job(tmp_path, slurm_env):
    """Ctrl-C on Snakemake cancels the array it submitted: every task, running or pending."""
    config = slurm_config("stopped", epochs=200, array_parallelism=1, poll_s=2)  # one task runs, one waits (%1)
    config["grid"]["seed"] = [0, 1]
    config["shard_size"] = 1
    proc = snakemake_slurm(slurm_env, tmp_path, write_config(tmp_path, config), background=True)
    queue = ["squeue", "-h", "-r", "-o", "%i %T"]
    try:
        wait_for("a task to run", lambda: len(job_ids(tmp_path, "stopped")) == 2)
        tasks = job_ids(tmp_path, "stopped")
        wait_for(
            "a task to run",
            lambda: f"{tasks[0]} RUNNING" in subprocess.run(queue, capture_output=True, text=True).stdout,
        )
        shown = []  # `ssmpipe status`: the running shard with its task, once the shared poll (poll_s 2) has seen it

        def status_shows_the_task() -> bool:
            shown.append(
                subprocess.run(
                    [sys.executable, "-m", "ssmpipe", "status", str(tmp_path / "config.yaml")],
                    cwd=tmp_path,
                    capture_output=True,
                    text=True,
                    check=True,
                ).stdout
            )
            return f"[SLURM job {tasks[0]}]" in shown[-1]

        wait_for("ssmpipe status to show the running task", status_shows_the_task, timeout=60)
        os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C
        proc.wait(timeout=60)
    finally:
        proc.kill()
    array = tasks[0].split("_")[0]
    assert "training " in shown[-1] and "queued " in shown[-1], shown[-1]  # one task runs, the other waits (%1)
    wait_for(
        "the array to leave the queue",
        lambda: (
            not [
                i
                for i in subprocess.run(queue, capture_output=True, text=True).stdout.split()
                if i.startswith(f"{array}_")
            ]
        ),
        timeout=60,
    )

    # the running task and the pending one (accounting shows both within seconds; a task that never left the
    # array's pending record is shown in the array's range, <array>_[0-1%1], else as <array>_1)
    def cancelled() -> bool:
        records = sacct(array, "JobID,State")
        ids = {r["JobID"] for r in records}
        return len(records) == 2 and tasks[0] in ids and all(r["State"].startswith("CANCELLED") for r in records)

    wait_for("both tasks cancelled in accounting", cancelled, timeout=60)
    assert f"cancelled SLURM job {array}" in array_log(tmp_path, "stopped")


@pytest.mark.slurm
def test_a_sweep_wider_than_an_array_goes_out_as_several_arrays(tmp_path, slurm_env):
    limit = slurm.max_array_size()  # asked of the cluster
    shown = subprocess.run(["scontrol", "show", "config"], capture_output=True, text=True, check=True).stdout
    assert f"MaxArraySize            = {limit}" in shown
    # a sweep of more one-point shards than MaxArraySize, with array_size above it: several arrays, none too big
    wide = tiny_config(sweep="wide", shard_size=1, slurm={**REQUESTS, "array_size": 10 * limit})
    wide["grid"] = {"seed": list(range(limit + 2))}
    dry = snakemake_slurm(slurm_env, tmp_path, write_config(tmp_path, wide, "wide.yaml"), "-n", timeout=600)
    assert job_counts(dry)["train_array"] == 2 and job_counts(dry)["train_task"] == limit + 2
    assert "train" not in job_counts(dry)
    assert [len(a) for a in slurm.arrays({"w": list(range(limit + 2))}, {"w": 10 * limit}).values()] == [limit, 2]

    # and for real, with slurm.array_size under the sweep's width: 6 one-point shards in arrays of 4 and 2
    config = slurm_config("split", array_size=4)
    config["shard_size"], config["grid"]["seq_len"], config["grid"]["seed"] = 1, [16], [0, 1, 2]
    records = slurm.StoreJobs(tmp_path / "results").arrays  # each array's record: which shard each task trains
    records.mkdir(parents=True)
    stale = records / "0123456789ab.json"  # one older than sacct is asked about (slurm.RECORD_DAYS): pruned
    stale.write_text('{"shards": ["x", "y"], "sweep": "old"}')
    os.utime(stale, (time.time() - 31 * 86400,) * 2)
    proc = snakemake_slurm(slurm_env, tmp_path, write_config(tmp_path, config), TABLE.format("split"))
    assert job_counts(proc)["train_array"] == 2 and job_counts(proc)["train_task"] == 6
    assert not stale.exists() and len(list(records.glob("*.json"))) == 2
    tasks = job_ids(tmp_path, "split")
    arrays = sorted({t.split("_")[0] for t in tasks}, key=int)
    assert len(arrays) == 2 and sorted(len([t for t in tasks if t.startswith(f"{a}_")]) for a in arrays) == [2, 4]
    assert all(sacct(t, "State")[0]["State"] == "COMPLETED" for t in tasks)
    table = metrics(tmp_path, "split")
    assert (table["status"] == "ok").all() and table["run_id"].nunique() == 6


@pytest.mark.slurm
def test_two_runs_sharing_a_store_train_a_shard_once_the_second_waiting_for_the_first(tmp_path, slurm_env):
    results = tmp_path / "shared-store"
    first, second = tmp_path / "a", tmp_path / "b"
    first.mkdir(), second.mkdir()
    config = {**slurm_config("first", epochs=60), "results": str(results)}  # ~30 s of training
    shard = only_shard(tmp_path, config)
    proc = snakemake_slurm(slurm_env, first, write_config(first, config), background=True)
    try:
        wait_for(
            "the first run's job to run",
            lambda: (
                f"{job_name(results, shard)} RUNNING"
                in subprocess.run(["squeue", "-h", "-o", "%j %T"], capture_output=True, text=True).stdout
            ),
        )
        # the same point in another sweep, another workdir, the same store: waits for the first run's job
        other = snakemake_slurm(slurm_env, second, write_config(second, {**config, "sweep": "second"}), timeout=600)
        assert proc.wait(timeout=300) == 0
    finally:
        proc.kill()
    assert job_counts(other)["train_task"] == 1
    assert len(list((results / "first" / "slurm").glob("*_submitted.pkl"))) == 1  # one job for the shard
    assert not list((results / "second" / "slurm").glob("*_submitted.pkl"))  # the second run submitted nothing
    assert (
        "of another run holds it: waiting for it"
        in (results / "second" / "logs" / "train").joinpath("array-second.0.log").read_text()
    )
    table = pd.read_parquet(results / "second" / "runs.parquet", columns=["status", "epoch"])
    assert (table["status"] == "ok").all() and table["epoch"].max() == 60


@pytest.mark.slurm
def test_requests_slurm_refuses_are_an_error_before_any_job(tmp_path, slurm_env):
    configfile = write_config(tmp_path, slurm_config(partition="no_such_partition"))
    proc = snakemake_slurm(slurm_env, tmp_path, configfile, check=False, timeout=120)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0 and "SLURM would not run a job asking for partition no_such_partition" in out
    assert "invalid partition specified: no_such_partition" in out
    assert not (tmp_path / "results" / "data").exists() and not (tmp_path / "results" / "tiny" / "slurm").exists()


# --- without a cluster: errors before any job ---------------------------------------------------


def test_a_signal_delay_longer_than_the_time_limit_is_a_config_error(tmp_path):
    configfile = write_config(tmp_path, slurm_config(timeout_min=1))  # signal_delay_s defaults to 90
    proc = subprocess.run(
        [sys.executable, "-m", "ssmpipe", "validate", str(configfile)], capture_output=True, text=True
    )
    assert proc.returncode == 2
    assert "slurm.signal_delay_s = 90 must be shorter than the time limit slurm.timeout_min = 1" in proc.stderr


@pytest.mark.parametrize("array", [False, True], ids=["one-job", "array"])
def test_launcher_slurm_without_sbatch_says_so(tmp_path, array):
    config = slurm_config()
    configfile = write_config(tmp_path, {**config, "results": str(tmp_path / "results")})
    shards = sweep.plan(cfg.load(configfile)).shards[: 2 if array else 1]  # several: the train_array rule's form
    outcome = ["--outcome", str(tmp_path / "outcome")] if array else []
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "ssmpipe",
            "train",
            "--results",
            str(tmp_path / "results"),
            "--slurm",
            str(configfile),
            *outcome,
            *shards,
        ],
        capture_output=True,
        text=True,
        env={**os.environ, "PATH": str(Path(sys.executable).parent)},
    )
    assert proc.returncode == 1 and "launcher slurm needs sbatch on PATH" in proc.stderr
    assert not (tmp_path / "results" / "tiny" / "slurm").exists() and not list(tmp_path.glob("outcome*"))


def test_a_stop_signal_inside_a_library_call_that_catches_exception_still_cancels():
    """submitit's sacct poll catches Exception; a SIGINT that lands inside it must still cancel the job and exit."""
    from ssmpipe.slurm import _cancelled_on_signal

    class Job:  # what _cancelled_on_signal uses of a submitit job
        job_id, cancelled = "42", False

        def cancel(self, check=False):
            self.cancelled = True

    def poll_like_submitit():
        try:
            os.kill(os.getpid(), signal.SIGINT)  # arrives during the call
            time.sleep(5)
        except Exception:  # "Bypassing sacct error"
            pass

    job, before = Job(), signal.getsignal(signal.SIGINT)  # Python's default, or SIG_IGN when started in the background
    start = time.monotonic()
    with pytest.raises(SystemExit) as stop, _cancelled_on_signal(job):
        poll_like_submitit()
    assert stop.value.code == 128 + signal.SIGINT and job.cancelled and time.monotonic() - start < 4
    assert signal.getsignal(signal.SIGINT) is before  # handlers restored
