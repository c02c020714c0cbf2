"""SLURM status at cluster scale: the waiting train jobs of a store share one status query per slurm.poll_s.

Without a cluster: fake `squeue`/`sacct` on PATH and several waiting processes (ssmpipe.slurm._wait),
counting their calls. On the CI cluster (../shared/ci/slurm-up.sh, 2 nodes): sweeps with 4 and with 12
shards in flight under `snakemake --profile profiles/slurm`, with counting wrappers for sacct, squeue
and sbatch first on PATH: the status queries per minute do not grow with the shards in flight.
"""

import os
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from conftest import REPO, require_slurm, tiny_config, write_config

from ssmpipe import slurm

POLL_S = 2  # slurm.poll_s in these tests (the default: 30)


def counting_bin(folder: Path, log: Path, commands: dict[str, str]) -> Path:
    """A bin/ of shell scripts, one per command: each appends '<epoch s> <command>' to `log`, runs `commands[name]`."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, body in commands.items():
        script = folder / name
        script.write_text(f'#!/bin/sh\necho "$(date +%s.%N) {name}" >> "{log}"\n{body}\n')
        script.chmod(0o755)
    return folder


def calls(log: Path, start: float = 0, end: float = float("inf")) -> dict[str, int]:
    counts: dict[str, int] = {}
    for line in log.read_text().splitlines() if log.exists() else []:
        when, name = line.split()
        if start <= float(when) <= end:
            counts[name] = counts.get(name, 0) + 1
    return counts


# --- without a cluster: the sharing itself ----------------------------------------------------------


WAITER = textwrap.dedent("""
    import sys, types
    from pathlib import Path
    from ssmpipe import slurm
    results, job_id = Path(sys.argv[1]), sys.argv[2]
    folder = results / "tiny" / "slurm"
    job = types.SimpleNamespace(job_id=job_id, paths=types.SimpleNamespace(
        folder=folder, result_pickle=folder / f"{job_id}_0_result.pkl"))
    print(slurm._wait(job, slurm.StoreJobs(results, float(sys.argv[3]))), flush=True)
""")


def test_waiting_processes_share_one_query_per_interval_and_learn_how_a_job_ended(tmp_path):
    results = tmp_path / "results"
    (results / "tiny" / "slurm").mkdir(parents=True)
    queue, acct, log = tmp_path / "queue.txt", tmp_path / "acct.txt", tmp_path / "calls.log"
    n = 8
    queue.write_text(
        "".join(f"{100 + i}|{slurm.job_name(results, f's{i}')}|RUNNING\n" for i in range(n))
        + "7|someone-elses-job|RUNNING\n"
    )
    acct.write_text("")
    bin_dir = counting_bin(tmp_path / "bin", log, {"squeue": f"cat {queue}", "sacct": f"cat {acct}"})
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "PYTHONPATH": str(REPO)}
    start = time.time()  # all start at once, before any poll: one polls, the others wait for it
    waiters = [
        subprocess.Popen(
            [sys.executable, "-c", WAITER, str(results), str(100 + i), "1"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(n)
    ]
    try:
        deadline = time.monotonic() + 60
        while len(list((results / "store" / "slurm" / "waiting").glob("*.json"))) < n:
            assert time.monotonic() < deadline and all(w.poll() is None for w in waiters)
            time.sleep(0.2)
        time.sleep(5)
        assert set(slurm.StoreJobs(results, 1)._read()["jobs"]) == {str(100 + i) for i in range(n)}  # this store's
        # 6 jobs end with a result file; 2 leave the queue without one: sacct says how they ended
        for i in range(6):
            (results / "tiny" / "slurm" / f"{100 + i}_0_result.pkl").write_bytes(b"")
        queue.write_text("")
        acct.write_text(
            f"106|{slurm.job_name(results, 's6')}|FAILED\n107|{slurm.job_name(results, 's7')}|CANCELLED by 0\n"
        )
        outs = [w.communicate(timeout=30)[0].strip() for w in waiters]
        took = time.time() - start
    finally:
        for w in waiters:
            w.kill()
    assert outs == ["None"] * 6 + ["FAILED", "CANCELLED by 0"], outs
    counts = calls(log, start)
    print(f"\n{n} waiting processes, {took:.1f} s at poll_s 1: {counts}")
    assert counts["squeue"] <= took + 2  # one per interval for all of them, not one per waiter
    assert counts.get("sacct", 0) <= 2  # for the two that ended without a result, together
    assert not list((results / "store" / "slurm" / "waiting").iterdir())  # each waiter unregistered


def test_a_stale_state_file_is_polled_anew_and_a_failing_squeue_does_not_make_every_waiter_poll(tmp_path):
    results = tmp_path / "results"
    (results / "store").mkdir(parents=True)
    log = tmp_path / "calls.log"
    bin_dir = counting_bin(tmp_path / "bin", log, {"squeue": "exit 1", "sacct": "exit 1"})
    old_path = os.environ["PATH"]
    os.environ["PATH"] = f"{bin_dir}:{old_path}"
    try:
        jobs = [slurm.StoreJobs(results, 1) for _ in range(4)]
        for _ in range(10):  # ~2.5 s, four readers
            for j in jobs:
                j.snapshot()
            time.sleep(0.25)
        # a poller that hangs holds the lock and lets jobs.json age: past stale_s, a waiter polls anyway
        jobs[0]._lock.acquire()
        other = slurm.StoreJobs(results, 1)
        other.stale_s, other.hung_s = 1.5, 0.5
        before = calls(log).get("squeue", 0)
        time.sleep(1.6)
        other.snapshot()
        jobs[0]._lock.release()
    finally:
        os.environ["PATH"] = old_path
    assert 2 <= before <= 4, calls(log)  # one per second however many ask, even while squeue fails
    assert calls(log)["squeue"] == before + 1


def test_an_arrays_tasks_go_by_their_shards_names_in_the_shared_poll(tmp_path):
    """squeue -r lists an array's tasks one a line, all under the array's name; the poll names each after its shard
    (arrays/<token>.json, written before sbatch), so a shard's task is found as a single job of it would be."""
    results = tmp_path / "results"
    (results / "store" / "slurm" / "arrays").mkdir(parents=True)
    (results / "store" / "slurm" / "arrays" / "0a1b2c.json").write_text('{"shards": ["s0", "s1", "s2"]}')
    array = slurm.array_name(results, "0a1b2c")
    queue, log = tmp_path / "queue.txt", tmp_path / "calls.log"
    queue.write_text(
        f"300_0|{array}|RUNNING\n300_1|{array}|PENDING\n300_7|{array}|PENDING\n"
        f"301|{slurm.job_name(results, 's3')}|RUNNING\n302_0|{slurm.array_name(results, 'ffffff')}|RUNNING\n"
    )
    bin_dir = counting_bin(tmp_path / "bin", log, {"squeue": f"cat {queue}", "sacct": "true"})
    old_path = os.environ["PATH"]
    os.environ["PATH"] = f"{bin_dir}:{old_path}"
    try:
        live = slurm.live_jobs(results, ["s0", "s1", "s2", "s3", "s4"], poll_s=1)
    finally:
        os.environ["PATH"] = old_path
    assert live == {"s0": ("300_0", "RUNNING"), "s1": ("300_1", "PENDING"), "s3": ("301", "RUNNING")}
    assert [len(a) for a in slurm.arrays({"w": [f"s{i}" for i in range(7)]}, {"w": 1000}, limit=3).values()] == [
        3,
        3,
        1,
    ]  # an array holds at most MaxArraySize tasks
    assert list(slurm.arrays({"w": ["a", "b", "c"]}, {"w": 2}, limit=1001)) == ["w.0", "w.1"]


def test_a_task_of_several_shards_goes_by_each_of_their_names(tmp_path):
    """slurm.shards_per_job = 2: task i of an array trains shards 2i and 2i+1 (its record says so), and the poll names
    the task after both, so each shard finds its task as it would a job of its own: live, queued or ended."""
    results = tmp_path / "results"
    arrays = results / "store" / "slurm" / "arrays"
    arrays.mkdir(parents=True)
    (arrays / "0a1b2c.json").write_text('{"shards": ["s0", "s1", "s2", "s3", "s4"], "per_task": 2}')
    (arrays / "0d0d0d.json").write_text('{"shards": ["s5", "s6"], "per_task": 0}')  # not a record ssmpipe writes
    array, odd = slurm.array_name(results, "0a1b2c"), slurm.array_name(results, "0d0d0d")
    queue, ended, log = tmp_path / "queue.txt", tmp_path / "sacct.txt", tmp_path / "calls.log"
    queue.write_text(f"300_0|{array}|RUNNING\n300_2|{array}|PENDING\n300_3|{array}|PENDING\n301_0|{odd}|RUNNING\n")
    ended.write_text(f"300_1|{array}|FAILED\n")
    bin_dir = counting_bin(tmp_path / "bin", log, {"squeue": f"cat {queue}", "sacct": f"cat {ended}"})
    old_path = os.environ["PATH"]
    os.environ["PATH"] = f"{bin_dir}:{old_path}"
    try:
        shards = [f"s{i}" for i in range(7)]
        live = slurm.live_jobs(results, shards, poll_s=1)
        jobs = slurm.StoreJobs(results, poll_s=1)
        queued = jobs.queued(slurm.job_name(results, "s1"))
        over = slurm.ended_jobs(results, ["s2", "s3", "s4"])
    finally:
        os.environ["PATH"] = old_path
    assert live == {"s0": ("300_0", "RUNNING"), "s1": ("300_0", "RUNNING"), "s4": ("300_2", "PENDING")}
    assert queued == ("300_0", "RUNNING")
    assert over == {"s2": ("300_1", "FAILED"), "s3": ("300_1", "FAILED")}
    assert jobs.task_names("301_0", odd) == [odd]  # a record it cannot read names the task by its array
    one = slurm.array_name(results, "0e0e0e")  # an array of one task, which submitit sends as a plain job
    (arrays / "0e0e0e.json").write_text('{"shards": ["s7", "s8"], "per_task": 2}')
    assert jobs.task_names("302", one) == [slurm.job_name(results, "s7"), slurm.job_name(results, "s8")]
    sizes = {"w": 2}
    assert [len(a) for a in slurm.arrays({"w": shards}, sizes, {"w": 2}, limit=1000).values()] == [4, 3]
    assert [len(a) for a in slurm.arrays({"w": shards}, sizes, {"w": 2}, limit=1).values()] == [2, 2, 2, 1]


# --- on the CI cluster: 4 and 12 shards in flight -----------------------------------------------------


def waiting_trains(root: int) -> list[int]:
    """Pids of the `ssmpipe train --slurm` processes (the Python ones, not their shells) that process `root` started,
    however deep: not another test's beside this one, nor a fork of one about to run sbatch (its parent counts)."""
    parent, argv = {}, {}
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                argv[int(proc.name)] = (proc / "cmdline").read_bytes().split(b"\0")
                parent[int(proc.name)] = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue

    def waiting(pid: int) -> bool:
        a = argv.get(pid, [b""])
        return any(x.startswith(b"--slurm") for x in a) and b"train" in a and b"python" in a[0]

    def under_root(pid: int) -> bool:
        seen = set()
        while pid in parent and pid not in seen:
            seen.add(pid)
            pid = parent[pid]
            if pid == root:
                return True
        return False

    return [pid for pid in argv if waiting(pid) and not waiting(parent.get(pid, 0)) and under_root(pid)]


def rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def sweep_in_flight(
    tmp_path: Path, shards: int, env: dict, repo: Path = REPO, poll_s: int | None = POLL_S, array_size: int = 1
) -> dict:
    """`snakemake --profile profiles/slurm --cores <shards>` (from `repo`) on `shards` one-point shards; what it cost.

    Each shard trains for 300 epochs of the tiny sweep (~5 s alone, ~10 s four at a time here). `array_size` 1: a
    SLURM job and a waiting process per shard; above: job arrays, one waiting process each."""
    workdir = tmp_path / f"in-flight-{shards}-{array_size}"
    workdir.mkdir()
    requests = {
        "partition": "debug",
        "account": "root",
        "qos": "normal",
        "gpus_per_node": 0,
        "cpus_per_task": 1,
        "mem_gb": 1,
        "timeout_min": 5,
        "array_size": array_size,
        **({"poll_s": poll_s} if poll_s else {}),
    }
    config = tiny_config(
        sweep=f"scale{shards}",
        shard_size=1,
        slurm=requests,
        **{"fixed.train.epochs": 300, "grid.seed": list(range(shards // 4))},
    )
    log = Path(env["SSMPIPE_CALLS"])
    cmd = [
        sys.executable,
        "-m",
        "snakemake",
        "--profile",
        "profiles/slurm",
        "--cores",
        str(shards),
        "-d",
        str(workdir),
        f"results/scale{shards}/runs.parquet",
        "--configfile",
        str(write_config(workdir, config)),
    ]
    began = time.time()
    with open(workdir / "snakemake.out", "w") as out:  # the child keeps its own copy of the descriptor
        proc = subprocess.Popen(cmd, cwd=repo, env=env, stdout=out, stderr=subprocess.STDOUT)
    first = last = None
    most, samples = 0, []
    try:
        while proc.poll() is None:
            pids = waiting_trains(proc.pid)
            if pids:
                first, last = first or time.time(), time.time()
                most = max(most, len(pids))
                if len(pids) == most:  # memory while the most shards are in flight
                    samples.append(sum(rss_mb(p) for p in pids) / len(pids))
            time.sleep(0.5)
            assert time.time() - (first or time.time()) < 300, "the sweep took over 5 minutes"
    finally:
        proc.kill()
    assert proc.returncode == 0, (workdir / "snakemake.out").read_text()
    counts = calls(log, first, last)
    minutes = (last - first) / 60
    return {
        "shards": shards,
        "in_flight": most,
        "seconds": round(last - first, 1),
        **counts,
        "queries_per_min": round((counts.get("squeue", 0) + counts.get("sacct", 0)) / minutes, 1),
        "rss_mb_per_shard": round(max(samples), 1),
        "sbatch_in_all": calls(log, began, time.time()).get("sbatch", 0),  # --test-only at parse time too
    }


def test_array_records_older_than_sacct_is_asked_about_are_pruned(tmp_path):
    """store/slurm/arrays/<token>.json names an array's shards for status and sacct lookups, which look back
    slurm.RECORD_DAYS days: older records go (at the next array's submission), newer ones stay."""
    old, recent = tmp_path / "a.json", tmp_path / "b.json"
    for path in (old, recent):
        path.write_text("{}")
    past = time.time() - (slurm.RECORD_DAYS + 1) * 86400
    os.utime(old, (past, past))
    assert slurm.prune_array_records(tmp_path) == [old] and sorted(tmp_path.iterdir()) == [recent]
    assert slurm.prune_array_records(tmp_path) == []


@pytest.mark.slurm
def test_status_queries_per_minute_do_not_grow_with_the_shards_in_flight(tmp_path):
    require_slurm()
    log = tmp_path / "calls.log"
    real = {name: shutil.which(name) for name in ("sacct", "squeue", "sbatch")}
    bin_dir = counting_bin(tmp_path / "bin", log, {name: f'exec {path} "$@"' for name, path in real.items()})
    env = {
        **os.environ,
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "SSMPIPE_CALLS": str(log),
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
    }
    few, many = sweep_in_flight(tmp_path, 4, env), sweep_in_flight(tmp_path, 12, env)  # a job per shard
    arrayed = sweep_in_flight(tmp_path, 12, env, array_size=1000)  # one job array
    print(f"\npoll_s {POLL_S}:\n  {few}\n  {many}\n  arrays: {arrayed}")
    assert few["in_flight"] == 4 and many["in_flight"] >= 12
    assert many["sbatch"] >= 12
    assert many["queries_per_min"] <= 1.5 * few["queries_per_min"] + 2, (few, many)
    assert many["queries_per_min"] <= 2 * 60 / POLL_S + 2  # at most one squeue and one sacct per interval
    # as one array: one sbatch and one process waiting here for all 12 shards
    assert arrayed["in_flight"] == 1 and arrayed["sbatch_in_all"] <= 2, arrayed  # the array, and --test-only
    assert arrayed["queries_per_min"] <= 2 * 60 / POLL_S + 2
