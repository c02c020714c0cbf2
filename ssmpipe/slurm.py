"""SLURM, through submitit: the one path from ssmpipe to a SLURM cluster.

`run` submits any Checkpointable callable as one job and waits for it; `train` runs a shard that
way (Snakemake's train rule, through `ssmpipe train --slurm`), and tune/cluster.py a study.
`train_array` submits many shards as SLURM job arrays (one task per shard, or per `slurm.shards_per_job`
shards trained at once in processes of their own; `slurm.array_size` tasks per array, at most the cluster's
MaxArraySize) and waits for all of them in one process (Snakemake's train_array rule). The waiting processes
of a store share one status query per poll (`StoreJobs`), which names each array task after its shards
(<results>/store/slurm/arrays/<token>.json).
"""

from __future__ import annotations

import getpass
import hashlib
import json
import logging
import math
import multiprocessing
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import traceback
from contextlib import contextmanager, suppress
from pathlib import Path

import filelock
import submitit

from ssmpipe.atomic import private_dir, stamp, write_text
from ssmpipe.errors import ConfigError
from ssmpipe.inputs import load_json, read_file
from ssmpipe.layout import Layout

log = logging.getLogger("ssmpipe.slurm")
RECORD_DAYS = 30  # how far back `ended_jobs` asks sacct, and so how long an array's record is kept

POLL_S = 30  # slurm.poll_s's default: seconds between two status queries of a store's jobs
# States of a job that holds its shard (will train it, or is training it); COMPLETING: ending.
LIVE = ("PENDING", "RUNNING", "REQUEUED", "CONFIGURING", "RESIZING", "SUSPENDED", "PREEMPTED")


class JobFailed(RuntimeError):
    """A shard's SLURM job could not be submitted, or ended without writing the shard."""


class TrainShard(submitit.helpers.Checkpointable):
    """The callable a shard's SLURM job runs: `train_shard`, with torch on the job's CPUs, on the device its
    requests imply (`train.pick_device` with `gpus`, slurm.gpus_per_node: CUDA if it asked for GPUs, and a job
    that gets none fails at once with one line saying why; the CPU if it asked for none).

    Its inherited `checkpoint()` resubmits it unchanged: all progress is in the
    shard's checkpoint file, which `train_shard` resumes from (`replace`: as there). `gpu`: which of the job's
    GPUs it trains on (a TrainShards task spreads its shards over them), else the first.
    """

    def __init__(self, results: str, shard: str, threads: int, gpus: int | None = None, replace=None, gpu=None):
        self.results, self.shard, self.threads, self.gpus, self.replace = results, shard, threads, gpus, replace
        self.gpu = gpu

    def __call__(self) -> int:
        import torch

        from ssmpipe.train import train_shard

        torch.set_num_threads(self.threads)
        # a job pickled before `gpus` existed picks as a local run does
        device = _job_device(getattr(self, "gpus", None), getattr(self, "gpu", None))
        return train_shard(self.results, self.shard, str(device), getattr(self, "replace", None))


class TrainShards(submitit.helpers.Checkpointable):
    """The callable of an array task that trains several shards at once (slurm.shards_per_job): each shard's
    `TrainShard` in a process of its own, all on the task's device, its CPUs split among them. A shard that fails
    leaves the others to finish, then fails the task (its error in the task's log); a device the task lacks fails
    it at once, as TrainShard's job. Requeued, it runs again whole: a shard stored meanwhile is reused, the others
    resume from their checkpoints."""

    def __init__(self, results: str, shards: list[str], threads: int, gpus: int, replace: dict | None = None):
        self.results, self.shards, self.threads, self.gpus, self.replace = results, shards, threads, gpus, replace or {}

    def __call__(self) -> None:
        _job_device(self.gpus)  # checked here first: one line and a failed task, not one per process
        spawn = multiprocessing.get_context("spawn")  # a fresh interpreter each (no forked CUDA or thread state)
        processes = [spawn.Process(target=_train_in_process, args=(job,)) for job in self.jobs()]
        for process in processes:
            process.start()
        for process in processes:
            process.join()
        failed = [f"{s} (exit status {p.exitcode})" for s, p in zip(self.shards, processes) if p.exitcode]
        if failed:
            raise RuntimeError(f"{len(failed)} of {len(processes)} shards failed: {', '.join(failed)}; see above")

    def jobs(self) -> list[TrainShard]:
        """Each shard's TrainShard: the task's CPUs split among them, its GPUs taken in turn (shard i on GPU i mod
        gpus_per_node)."""
        threads = max(1, self.threads // len(self.shards))
        if self.gpus > len(self.shards):
            log.warning(
                "asked for %d GPUs for %d shards: %d idle", self.gpus, len(self.shards), self.gpus - len(self.shards)
            )
        return [
            TrainShard(self.results, s, threads, self.gpus, self.replace.get(s), i % self.gpus if self.gpus else None)
            for i, s in enumerate(self.shards)
        ]


def _train_in_process(job: TrainShard) -> None:
    """A TrainShards process: one shard's TrainShard; a failure logged with its traceback, exit status 1. SLURM
    signals every process of the task: the time limit's SIGUSR2 (checkpoint and requeue) and preemption's SIGTERM
    are the task's to handle, as submitit does there; this process trains on (each epoch checkpointed) until SLURM
    ends the task."""
    for signum in (signal.SIGUSR2, signal.SIGTERM):
        signal.signal(signum, signal.SIG_IGN)
    try:
        job()
    except Exception:  # noqa: BLE001 - one shard's failure is its own: its task-mates go on
        log.error("shard %s failed:\n%s", job.shard, traceback.format_exc())
        sys.exit(1)


def _job_device(gpus: int | None, gpu: int | None = None):
    """The device a SLURM job trains on (`train.pick_device`; `gpu`: cuda:<gpu> of the GPUs it asked for), with
    ssmpipe's log into the job's stderr; a DeviceError is logged as the one line the waiting train job shows, and
    raised."""
    from ssmpipe.train import DeviceError, pick_device

    root = logging.getLogger("ssmpipe")
    if not root.handlers:  # ssmpipe's log into the job's stderr (submitit logs its own), once per process
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
        root.addHandler(handler)
    root.setLevel(logging.INFO)
    try:
        return pick_device(None if gpu is None else f"cuda:{gpu}", gpus=gpus)
    except DeviceError as e:
        log.error("ssmpipe: %s", e)  # the line the waiting train job shows from the log
        raise


def store_hash(results: str | Path) -> str:
    """The last part of the SLURM job names of the store at `results`: a hash of its path."""
    return hashlib.sha256(str(Path(results).resolve()).encode()).hexdigest()[:8]


def job_name(results: str | Path, shard: str) -> str:
    """The SLURM job name of `shard` in the store at `results`."""
    return f"ssmpipe-{shard}-{store_hash(results)}"


def array_name(results: str | Path, token: str) -> str:
    """The SLURM job name of an array of the store at `results` (its tasks' shards: arrays/<token>.json)."""
    return f"ssmpipe-a{token}-{store_hash(results)}"


def max_array_size() -> int:
    """The cluster's MaxArraySize (`scontrol show config`): an array holds at most this many tasks (0 .. size-1).

    SLURM's default (1001) when scontrol does not say, with a warning."""
    for line in _run(["scontrol", "show", "config"]).splitlines():
        key, _, value = line.partition("=")
        if key.strip() == "MaxArraySize" and value.strip().isdigit():
            return int(value.strip())
    log.warning("scontrol show config did not give MaxArraySize: taking SLURM's default, 1001")
    return 1001


def _tasks_of(shards: list[str], per_task: int) -> list[list[str]]:
    """An array's shards, task by task: task i trains shards[i·per_task : (i+1)·per_task] (an array record's layout)."""
    return [shards[i : i + per_task] for i in range(0, len(shards), per_task)]


def arrays(
    shards_of: dict[str, list[str]],
    sizes: dict[str, int],
    per_task: dict[str, int] | None = None,
    limit: int | None = None,
) -> dict[str, list[str]]:
    """Sweep -> its shards, into arrays: '<sweep>.<i>' -> the shards of at most min(sizes[sweep], limit) tasks of
    per_task[sweep] shards each (slurm.shards_per_job; default 1), in order.

    `limit`: the cluster's MaxArraySize (asked of it when None): a sweep wider than that is several arrays."""
    limit = max_array_size() if limit is None else limit
    out = {}
    for name, shards in shards_of.items():
        size = max(1, min(sizes[name], limit)) * (per_task or {}).get(name, 1)
        for i in range(0, len(shards), size):
            out[f"{name}.{i // size}"] = shards[i : i + size]
    return out


def executor_parameters(requests: dict, name: str, nodes: int = 1) -> dict:
    """submitit AutoExecutor parameters for the config's `slurm:` requests (ConfigError for a line break in one).

    submitit writes them into the job's sbatch script, shell-quoted but one `#SBATCH` line
    each: a line break inside a value would begin a shell line of its own. `nodes` > 1 (a
    study's Ray cluster, never a shard's job) asks for that many nodes with one task on each,
    every task with the CPUs, GPUs and memory of the requests.
    """
    for key, value in requests.items():
        if isinstance(value, str) and _breaks_line(value):
            raise ConfigError(f"slurm.{key} = {value!r}: a SLURM request is one line")
    params = {
        "name": name,
        "timeout_min": requests["timeout_min"],
        "mem_gb": requests["mem_gb"],
        "cpus_per_task": requests["cpus_per_task"],
        "slurm_signal_delay_s": requests["signal_delay_s"],
        "slurm_srun_args": ["--open-mode=append"],
    }  # a requeued job's log keeps its earlier starts
    if requests["gpus_per_node"]:
        params["gpus_per_node"] = requests["gpus_per_node"]
    if nodes > 1:
        params.update(nodes=nodes, tasks_per_node=1)
    for key in ("partition", "account", "qos", "constraint"):
        if requests.get(key):
            params[f"slurm_{key}"] = requests[key]
    return params


def check_requests(requests: dict) -> None:
    """Ask SLURM (sbatch --test-only) whether it would run a job with these requests; ConfigError if not."""
    executor_parameters(requests, "check")  # a line break in a request: refused before SLURM is asked
    if not shutil.which("sbatch"):
        raise ConfigError(
            "launcher = 'slurm', but sbatch is not on PATH: run on a SLURM login node, or without --profile slurm"
        )
    flags = [
        f"--time={requests['timeout_min']}",
        f"--mem={math.ceil(requests['mem_gb'] * 1024)}M",
        f"--cpus-per-task={requests['cpus_per_task']}",
    ]
    if requests["gpus_per_node"]:
        flags.append(f"--gpus-per-node={requests['gpus_per_node']}")
    flags += [f"--{key}={requests[key]}" for key in ("partition", "account", "qos", "constraint") if requests.get(key)]
    test = subprocess.run(
        ["sbatch", "--test-only", *flags, "--wrap", "true"], capture_output=True, text=True, timeout=60
    )
    if test.returncode != 0:
        raise ConfigError(
            f"slurm: SLURM would not run a job asking for {_describe(requests)}: {' '.join(test.stderr.split())}"
        )


def log_folder(results: str | Path, sweep: str) -> Path:
    """The sweep's folder of SLURM logs (and submitit's job files), by its absolute path."""
    return Layout(Path(results).resolve()).slurm_dir(sweep)


def job_folder(folder: Path) -> Path:
    """submitit's folder for a job, created private (mode 0700); ConfigError if its path breaks a line.

    submitit pickles the function the job runs (<id>_submitted.pkl, unpickled on the node)
    and its result (<id>_0_result.pkl, unpickled by the waiting process) into it, and writes
    the path into the sbatch script: only the user running ssmpipe may write there.
    """
    if _breaks_line(str(folder)):
        raise ConfigError(f"results = {str(folder)!r}: a results path for SLURM jobs is one line")
    return private_dir(folder)


def train(results: str | Path, shard: str, sweep: str, requests: dict, replace: list[int] | None = None) -> None:
    """Train `shard` as a SLURM job with the `slurm:` `requests`, logging to `sweep`'s folder; wait for it (`replace`:
    the stamp of stored rows it trains again, `train.train_shard`).

    The job is named `ssmpipe-<shard>-<store hash>` (the same shard may train in two stores). Signalled before its
    time limit (or preempted) it is requeued, and `train_shard` resumes from the shard's per-epoch checkpoint. A job
    that ends without writing the shard raises JobFailed naming its id, state and log; stopping the waiting process
    (SIGINT/SIGTERM/SIGHUP) cancels it, and the checkpoint stays, so a rerun resumes."""
    results = Path(results).resolve()
    job = TrainShard(str(results), shard, requests["cpus_per_task"], requests["gpus_per_node"], replace)
    run(job, log_folder(results, sweep), requests, job_name(results, shard), f"shard {shard}", results)


def train_array(
    results: str | Path,
    shards: list[str],
    sweep: str,
    requests: dict,
    outcome: str | Path | None = None,
    replace: dict[str, list[int]] | None = None,
) -> dict[str, str | None]:
    """Train `shards` as SLURM job arrays (one task each, or one per `slurm.shards_per_job` of them, trained at once
    by `TrainShards`) with the `slurm:` `requests`; wait for all of them.

    Returns shard -> None (stored) or why it is not (its task's id `<array>_<i>`, state, log and the log's last
    lines). A shard that another run's job holds (queued, running or ending) is waited for, not submitted again
    (and submitted if that job ends without it). The others go out as arrays of at most `slurm.array_size` tasks and the
    cluster's MaxArraySize, `slurm.array_parallelism` of each running at once (SLURM's %N; unset: no cap). Each
    task is requeued on its own (time limit, preemption) and resumes from its shard's checkpoint. With `outcome`,
    each shard's is written to `<outcome>.<shard>.ok` or `.failed` (the train_task rule reads it); SIGINT,
    SIGTERM or SIGHUP meanwhile cancel the arrays this call submitted (JobFailed if sbatch refuses one).
    replace: shard -> the stamp of its stored rows that it trains again (`train.train_shard`).
    """
    replace = replace or {}
    results = Path(results).resolve()
    if not shutil.which("sbatch"):
        raise JobFailed(
            f"{len(shards)} shards: launcher slurm needs sbatch on PATH "
            "(run on a SLURM login node, or without --profile slurm)"
        )
    layout, jobs = Layout(results), StoreJobs(results, requests.get("poll_s", POLL_S))
    live = {
        name: (job_id, info["queue"])
        for job_id, info in jobs.snapshot(max_age=2).get("jobs", {}).items()
        if info.get("queue") in (*LIVE, "COMPLETING")
        for name in names(info)
    }
    done: dict[str, str | None] = {}
    foreign: dict[str, tuple[str, str]] = {}  # shard -> another run's job holding it, waited for
    todo = []
    for shard in shards:  # (one stored since planning is submitted: its task reuses the rows if the store trusts them)
        if job_name(results, shard) in live:
            foreign[shard] = live[job_name(results, shard)]
            log.info("shard %s: SLURM job %s (%s) of another run holds it: waiting for it", shard, *foreign[shard])
        else:
            todo.append(shard)
    per_task = requests.get("shards_per_job", 1)
    folder = job_folder(log_folder(results, sweep))
    pending: dict = {}  # shard -> its submitit job (an array task, or a single job)
    cancel = _Cancel([])

    def submit(chunk: list[str]) -> None:
        token = os.urandom(6).hex()
        name = job_name(results, chunk[0]) if len(chunk) == 1 else array_name(results, token)
        if len(chunk) > 1:  # before sbatch: a poll meanwhile already knows each task's shards
            private_dir(jobs.arrays)
            prune_array_records(jobs.arrays)
            write_text(
                jobs.arrays / f"{token}.json", json.dumps({"shards": chunk, "sweep": sweep, "per_task": per_task})
            )
        bundles = _tasks_of(chunk, per_task)
        executor = submitit.AutoExecutor(folder=folder, cluster="slurm", slurm_max_num_timeout=requests["max_timeouts"])
        executor.update_parameters(
            **executor_parameters(requests, name),
            slurm_array_parallelism=requests.get("array_parallelism") or len(bundles),
        )
        cpus, gpus = requests["cpus_per_task"], requests["gpus_per_node"]
        try:
            with executor.batch():
                batch = [
                    executor.submit(
                        TrainShard(str(results), b[0], cpus, gpus, replace.get(b[0]))
                        if len(b) == 1
                        else TrainShards(str(results), b, cpus, gpus, {s: replace[s] for s in b if s in replace})
                    )
                    for b in bundles
                ]
        except (submitit.core.utils.FailedJobError, subprocess.CalledProcessError) as e:
            why = (e.output or b"").decode(errors="replace") if isinstance(e, subprocess.CalledProcessError) else str(e)
            raise JobFailed(
                f"{len(chunk)} shards: sbatch refused the array (slurm: {_describe(requests)}): {why.strip()}"
            ) from None
        cancel.ids.append(str(batch[0].job_id).split("_")[0])
        for bundle, job in zip(bundles, batch):
            jobs.register(job.job_id, str(job.paths.result_pickle))
            pending.update(dict.fromkeys(bundle, job))
        log.info(
            "%d shards: SLURM %s %s (%s); logs %s",
            len(chunk),
            "array" if len(chunk) > 1 else "job",
            cancel.ids[-1],
            _describe(requests),
            batch[0].paths.stderr.parent,
        )

    with _cancelled_on_signal(cancel):
        try:
            for chunk in arrays({sweep: todo}, {sweep: requests.get("array_size", 1)}, {sweep: per_task}).values():
                submit(chunk)
            if todo:  # one poll now: `ssmpipe status` and other runs see the new tasks at once, not a poll_s later
                jobs.snapshot(max_age=0)
            _wait_all(pending, foreign, jobs, layout, done, outcome, submit, replace)
            if todo:  # and one as they are over: jobs.json does not show them queued for another poll_s
                jobs.snapshot(max_age=0)
        except JobFailed:  # sbatch refused an array: those submitted before it go too
            cancel.cancel()
            raise
        finally:
            for job in pending.values():
                jobs.unregister(job.job_id)
    return done


def _wait_all(
    pending: dict, foreign: dict, jobs: StoreJobs, layout: Layout, done: dict, outcome, submit, replace: dict
) -> None:
    """Until every submitted task and every other run's job waited for is over: each shard's outcome into `done`.
    A shard's rows count as written once its runs file is there and is not the one `replace` names.

    A shard whose other run's job ended without it is submitted here (`submit`, a list of shards) and waited for."""
    shown: dict[str, str] = {}
    late: dict[str, float] = {}

    def stored(shard: str) -> bool:
        return stamp(layout.runs_path(shard)) not in (None, replace.get(shard))

    while pending or foreign:
        state = jobs.snapshot().get("jobs", {})
        for shard, job in list(pending.items()):
            info = state.get(str(job.job_id))
            ended = info.get("end") if info else None
            now = info and (ended or info.get("queue"))
            if now and now != shown.get(shard):
                log.info("SLURM job %s (shard %s): %s", job.job_id, shard, now)
                shown[shard] = now
            result = Path(job.paths.result_pickle)
            if not result.exists() and ended and ended.startswith("COMPLETED"):
                _refresh(result.parent)  # a result file that a shared file system shows late: up to 30 s
                if time.monotonic() - late.setdefault(shard, time.monotonic()) < 30:
                    continue
            if result.exists():
                try:
                    job.result()
                    why = None
                except (submitit.core.utils.FailedJobError, submitit.core.utils.UncompletedJobError):
                    why = _failure(job, f"shard {shard}")
            elif ended:
                why = _failure(job, f"shard {shard}", ended)
            else:
                continue
            if why and stored(shard):
                why = None  # its task failed after storing it (a bundle-mate's crash took the task down)
            del pending[shard]
            jobs.unregister(job.job_id)
            done[shard] = why
            _outcome(outcome, shard, why, f"shard {shard}: SLURM job {job.job_id} done; its log: {job.paths.stderr}")
            (log.error if why else log.info)("%s", why or f"shard {shard}: SLURM job {job.job_id} done")
        again = []
        for shard, (job_id, _) in list(foreign.items()):
            info = state.get(job_id)
            if stored(shard):
                done[shard] = None
                _outcome(outcome, shard, None, f"shard {shard}: trained by SLURM job {job_id} of another run")
            elif info and info.get("queue") in (*LIVE, "COMPLETING"):
                continue
            else:
                log.info("shard %s: SLURM job %s of another run ended without it: submitting it", shard, job_id)
                again.append(shard)
            del foreign[shard]
        if again:
            submit(again)
        if pending or foreign:
            time.sleep(1)


def _outcome(outcome, shard: str, why: str | None, ok: str) -> None:
    if outcome is not None:
        write_text(Path(f"{outcome}.{shard}.{'failed' if why else 'ok'}"), (why or ok) + "\n")


class _Cancel:
    """What `_cancelled_on_signal` cancels: the arrays (and single jobs) one `train_array` call submitted."""

    def __init__(self, ids: list[str]):
        self.ids = ids

    @property
    def job_id(self) -> str:
        return ", ".join(self.ids) or "(none yet)"

    def cancel(self, check: bool = False) -> None:
        if self.ids:
            subprocess.run(["scancel", *self.ids], capture_output=True, timeout=60, check=check)


def run(
    function: submitit.helpers.Checkpointable,
    folder: Path,
    requests: dict,
    name: str,
    what: str,
    results: str | Path | None = None,
    nodes: int = 1,
):
    """Run `function` as one SLURM job named `name` with the `slurm:` requests, logs in `folder`; wait for it.

    Returns what `function` returned (on `nodes` > 1: task 0's). Refused (JobFailed) while a job of that name is
    queued or running; SIGINT/SIGTERM/SIGHUP meanwhile cancel the job; a job that ends
    without a result raises JobFailed naming `what`, its id, state and log. Its state comes
    from the store's shared poll (`StoreJobs`; the store at `results`, by default the one
    whose log folder `folder` is).
    """
    if not shutil.which("sbatch"):
        raise JobFailed(
            f"{what}: launcher slurm needs sbatch on PATH (run on a SLURM login node, or without --profile slurm)"
        )
    jobs = StoreJobs(
        results if results is not None else Path(folder).resolve().parent.parent, requests.get("poll_s", POLL_S)
    )
    live = jobs.queued(name)
    if live:
        raise JobFailed(
            f"{what} already has SLURM job {live[0]} ({live[1]}), from another run: "
            f"wait for it to end or `scancel {live[0]}`, then run again (it resumes)"
        )
    executor = submitit.AutoExecutor(
        folder=job_folder(folder), cluster="slurm", slurm_max_num_timeout=requests["max_timeouts"]
    )
    executor.update_parameters(**executor_parameters(requests, name, nodes=nodes))
    try:
        job = executor.submit(function)
    except (submitit.core.utils.FailedJobError, subprocess.CalledProcessError) as e:  # sbatch said no, and why
        why = (e.output or b"").decode(errors="replace") if isinstance(e, subprocess.CalledProcessError) else str(e)
        raise JobFailed(f"{what}: sbatch refused the job (slurm: {_describe(requests)}): {why.strip()}") from None
    head = job.task(0) if nodes > 1 else job  # the task whose log and result count
    log.info(
        "%s: SLURM job %s (%s%s); log %s",
        what,
        job.job_id,
        f"{nodes} nodes × " if nodes > 1 else "",
        _describe(requests),
        head.paths.stderr,
    )
    with _cancelled_on_signal(job):
        ended = _wait(job, jobs)
    if ended:  # over without a result file: no need to ask submitit (sacct) again
        raise JobFailed(_failure(head, what, ended))
    try:
        result = job.results()[0] if nodes > 1 else job.result()
    except (submitit.core.utils.FailedJobError, submitit.core.utils.UncompletedJobError):
        raise JobFailed(_failure(head, what)) from None
    log.info("%s: SLURM job %s done", what, job.job_id)
    return result


def live_jobs(results: str | Path, shards: list[str], poll_s: float = POLL_S) -> dict[str, tuple[str, str]]:
    """Shard -> (job id, state) of the shards' queued or running jobs (this user's); {} without SLURM.

    From the store's shared poll (`StoreJobs`): its jobs.json when younger than `poll_s`, else
    one squeue for all of the store's jobs (which renews jobs.json).
    """
    shard_of = {job_name(results, s): s for s in shards}
    jobs = {}
    if not shutil.which("squeue"):
        return jobs
    for job_id, info in StoreJobs(results, poll_s).snapshot().get("jobs", {}).items():
        for name in names(info) if info.get("queue") in LIVE else ():
            if name in shard_of:
                jobs[shard_of[name]] = (job_id, info["queue"])
    return jobs


def names(info: dict) -> list[str]:
    """The names a job of jobs.json goes by: its shard's job name (or its own), and a bundle's other shards'."""
    return [info["name"], *info.get("also", [])]


def prune_array_records(folder: Path, days: int = RECORD_DAYS) -> list[Path]:
    """Remove the array records (arrays/<token>.json) older than `days`, which no lookup reads; the removed ones."""
    old = time.time() - days * 86400
    removed = []
    for path in folder.glob("*.json"):
        with suppress(FileNotFoundError):  # another run's prune got it first
            if path.stat().st_mtime < old:
                path.unlink()
                removed.append(path)
    return removed


def ended_jobs(results: str | Path, shards: list[str], days: int = RECORD_DAYS) -> dict[str, tuple[str, str]]:
    """Shard -> (job id, state) of each shard's last ended job (this user's, sacct, last `days` days)."""
    shard_of = {job_name(results, s): s for s in shards}
    jobs = StoreJobs(results)
    wanted = set(shards)
    for path in sorted(jobs.arrays.glob("*.json")) if jobs.arrays.is_dir() else ():  # arrays holding these shards
        try:
            if wanted & set(load_json(read_file(path))["shards"]):
                shard_of[array_name(results, path.stem)] = path.stem
        except (OSError, ValueError, KeyError, TypeError):
            continue
    names = sorted(shard_of)
    ended: dict[str, tuple[str, str]] = {}
    for i in range(0, len(names), 200):  # one sacct call per 200 names
        out = _run(
            [
                "sacct",
                "-X",
                "-n",
                "-P",
                "-u",
                getpass.getuser(),
                "-S",
                f"now-{days}days",
                "-o",
                "JobID,JobName,State",
                f"--name={','.join(names[i : i + 200])}",
            ]
        )
        for line in out.splitlines():  # oldest first: a shard's later job replaces its earlier one
            job_id, name, state = line.split("|", 2)
            for shard in map(shard_of.get, jobs.task_names(job_id, name)):
                if shard in wanted and state.split()[0] not in (*LIVE, "COMPLETING"):
                    ended[shard] = (job_id, state)
    return ended


class StoreJobs:
    """The SLURM jobs of the store at `results`, from one status query per `poll_s` shared by its processes.

    Whichever waiter first finds jobs.json older than poll_s and takes poll.lock (without waiting)
    runs one `squeue` for this user's jobs, keeps those named `ssmpipe-*-<store hash>` (and the jobs
    waited for), runs one `sacct -j` for the waited-for jobs that left the queue without a result
    file, and writes jobs.json atomically; the others only read it. A poller that dies frees the
    lock; one that hangs leaves jobs.json to age, and past `stale_s` a waiter waits `hung_s` for the
    lock, then polls without it. `ssmpipe status` and the check before a submission read the same
    file when it is fresh, and poll once (as the poller) when it is not.

    Its files, in <results>/store/slurm/ (private, 0700): jobs.json, the last poll
    ({"time", "jobs": {job id: {"name", "queue": squeue's state, "end": sacct's end state}}},
    written atomically); poll.lock, held by the process polling; waiting/<job id>.json, one
    per job a process waits for, so that a poll asks sacct how those that left the queue
    without a result file ended. See the module docstring.
    """

    def __init__(self, results: str | Path, poll_s: float = POLL_S):
        self.results = Path(results).resolve()
        self.poll_s = float(poll_s)
        self.hung_s = 130  # a poll takes at most 2 x 60 s (squeue, sacct, their timeouts)
        # jobs.json older than this while poll.lock is held: a poller hangs
        self.stale_s = 2 * self.poll_s + self.hung_s
        self.folder = Layout(self.results).slurm_state_dir()
        self.path = self.folder / "jobs.json"
        self.waiting = self.folder / "waiting"
        self.arrays = (
            self.folder / "arrays"
        )  # <token>.json: the shards of array ssmpipe-a<token>-<store hash>, in order
        self._shards_of: dict[str, list[list[str]]] = {}  # token -> each task's shards, as read from arrays/
        self._suffix = f"-{store_hash(self.results)}"
        self._lock = filelock.FileLock(self.folder / "poll.lock", timeout=0)
        self._seen: tuple = (None, {})  # (stat of jobs.json, its content) as last read

    def snapshot(self, max_age: float | None = None) -> dict:
        """The store's jobs, as of a poll at most `max_age` (default poll_s) seconds old, or the poll in progress's."""
        max_age = self.poll_s if max_age is None else max_age
        state = self._read()
        if self._age(state) < max_age:
            return state
        if not self.folder.parent.is_dir():  # no store yet (ssmpipe status of a new sweep): ask, write nothing
            return self._poll(write=False)
        private_dir(self.folder)
        try:
            self._lock.acquire()
        except filelock.Timeout:  # another process is polling: its result comes within seconds
            if self._age(state) < self.stale_s:
                return state
            try:  # no poll yet (or a very old one): wait for this one, as long as a poll can take
                self._lock.acquire(timeout=self.hung_s)
            except filelock.Timeout:
                log.warning(
                    "%s has been held for %.0f s: its poller hangs; polling here", self._lock.lock_file, self.hung_s
                )
                return self._poll()
        try:
            state = self._read()  # another process may have polled meanwhile
            return state if self._age(state) < max_age else self._poll()
        finally:
            self._lock.release()

    def queued(self, name: str, completing_s: int = 120) -> tuple[str, str] | None:
        """(job id, state) of the store's job `name` in the queue, or None; a COMPLETING one is waited for.

        A job seen in a poll older than 2 s is looked for again in a new one before it counts.
        A cancelled submitit job keeps running until SLURM kills it (KillWait, 30 s by default:
        submitit ignores SIGTERM, which preemption sends first): COMPLETING until then.
        """
        deadline, max_age = time.monotonic() + completing_s, None
        while True:
            state = self.snapshot(max_age)
            job = next(
                (
                    (job_id, info["queue"])
                    for job_id, info in state.get("jobs", {}).items()
                    if name in names(info) and info.get("queue")
                ),
                None,
            )
            if not job:
                return None
            if max_age is None and self._age(state) > 2:  # seen a while ago: look again, now
                max_age = 2
                continue
            if job[1] != "COMPLETING" or time.monotonic() > deadline:
                return job
            max_age = 2
            time.sleep(2)

    def register(self, job_id: str, result: str) -> None:
        """Note that this process waits for `job_id`, whose result file is `result`."""
        private_dir(self.waiting)
        write_text(
            self.waiting / f"{job_id}.json",
            json.dumps({"job": str(job_id), "result": result, "host": socket.gethostname(), "pid": os.getpid()}),
        )

    def unregister(self, job_id: str) -> None:
        (self.waiting / f"{job_id}.json").unlink(missing_ok=True)

    def task_names(self, job_id: str, name: str) -> list[str]:
        """The names a job goes by in jobs.json: an array task's are its shards' job names (`job_name`), as their
        single jobs' would be (one, or slurm.shards_per_job); any other job's is its own. SLURM names every task
        of an array after the array."""
        array_id, _, index = job_id.partition("_")
        prefix = "ssmpipe-a"
        index = index or "0"  # an array of one task goes out as a plain job (submitit), its id without an index
        if not (index.isdigit() and name.startswith(prefix) and name.endswith(self._suffix)):
            return [name]
        token = name[len(prefix) : -len(self._suffix)]
        if token not in self._shards_of:
            try:
                record = load_json(read_file(self.arrays / f"{token}.json"))
                shards, per_task = record["shards"], record.get("per_task", 1)  # records before bundles: one each
                if not (isinstance(per_task, int) and per_task >= 1 and isinstance(shards, list)):
                    raise ValueError(f"not an array record: {record!r}")
                self._shards_of[token] = _tasks_of(shards, per_task)
            except (OSError, ValueError, KeyError, TypeError):
                return [name]
        bundles = self._shards_of[token]
        return [job_name(self.results, s) for s in bundles[int(index)]] if int(index) < len(bundles) else [name]

    # --- internals

    def _read(self) -> dict:
        try:
            stat = self.path.stat()
        except OSError:
            return {}
        key = (stat.st_mtime_ns, stat.st_size, stat.st_ino)
        if key != self._seen[0]:
            try:
                self._seen = (key, load_json(read_file(self.path)))
            except (OSError, ValueError):  # written atomically: unreadable only if damaged; polled anew
                return {}
        return self._seen[1]

    @staticmethod
    def _age(state: dict) -> float:
        return time.time() - state["time"] if "time" in state else math.inf

    def _waited_for(self) -> dict[str, dict]:
        """Job id -> entry of the jobs processes wait for; entries of dead waiters on this host are removed."""
        entries, host = {}, socket.gethostname()
        for path in self.waiting.glob("*.json") if self.waiting.is_dir() else ():
            try:
                entry = load_json(read_file(path))
                old = time.time() - path.stat().st_mtime > 7 * 86400
            except (OSError, ValueError):
                continue
            if old or (entry.get("host") == host and not _alive(entry.get("pid"))):  # killed (SIGKILL) waiter
                path.unlink(missing_ok=True)
            else:
                entries[str(entry["job"])] = entry
        return entries

    def _poll(self, write: bool = True) -> dict:
        """Ask SLURM once for the store's jobs (squeue; sacct for waited-for jobs that left it); write jobs.json."""
        start, user, waited = time.time(), getpass.getuser(), self._waited_for()
        out = _query(["squeue", "-h", "-r", "-u", user, "-o", "%i|%j|%T"])  # -r: an array's tasks, one a line
        jobs = {}
        for line in (out or "").splitlines():
            job_id, name, queue = line.split("|", 2)
            if name.endswith(self._suffix) or job_id in waited:
                jobs[job_id] = {**_named(self.task_names(job_id, name)), "queue": queue}
        if out is None:  # squeue failed: keep the last poll's jobs, and let the next poll be due in poll_s
            jobs = self._read().get("jobs", {})
        ended = [
            job_id
            for job_id, entry in waited.items()
            if out is not None and jobs.get(job_id, {}).get("queue") not in LIVE and not Path(entry["result"]).exists()
        ]
        known = self._read().get("jobs", {})
        for job_id in [j for j in ended if known.get(j, {}).get("end")]:  # an end state stays: not asked again
            jobs.setdefault(job_id, _named(names(known[job_id])))["end"] = known[job_id]["end"]
            ended.remove(job_id)
        if ended:  # left the queue (or are leaving it) without a result file: how did they end?
            out = _query(["sacct", "-X", "-n", "-P", "-j", ",".join(ended), "-o", "JobID,JobName,State"]) or ""
            for line in out.splitlines():
                job_id, name, end = line.split("|", 2)
                if job_id in ended and end.split()[0] not in (*LIVE, "COMPLETING"):
                    jobs.setdefault(job_id, _named(self.task_names(job_id, name)))["end"] = end
        state = {"time": start, "poll_s": self.poll_s, "by": f"{socket.gethostname()}:{os.getpid()}", "jobs": jobs}
        if write:
            write_text(self.path, json.dumps(state))
        return state


# --- internals ---------------------------------------------------------------


def _named(names: list[str]) -> dict:
    """A job's names as jobs.json holds them: "name", and a bundle's other shards' under "also" (`names`)."""
    return {"name": names[0], **({"also": names[1:]} if len(names) > 1 else {})}


def _run(cmd: list[str]) -> str:
    """A SLURM query's stdout; '' when SLURM is not there or does not answer."""
    if not shutil.which(cmd[0]):
        return ""
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=True).stdout
    except (subprocess.SubprocessError, OSError) as e:
        log.warning("%s did not answer: %s", cmd[0], e)
        return ""


def _query(cmd: list[str]) -> str | None:
    """A SLURM query's stdout; None when it fails (unlike `_run`: an empty queue is not a failure)."""
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=True).stdout
    except (subprocess.SubprocessError, OSError) as e:
        log.warning("%s did not answer: %s", cmd[0], e)
        return None


def _alive(pid) -> bool:
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except (PermissionError, TypeError, ValueError):
        return True
    return True


def _breaks_line(text: str) -> bool:
    return any(c in text for c in "\n\r\0")


def _describe(requests: dict) -> str:
    where = [f"{k} {requests[k]}" for k in ("partition", "account", "qos", "constraint") if requests.get(k)]
    return ", ".join(
        [
            *where,
            f"{requests['gpus_per_node']} GPU",
            f"{requests['cpus_per_task']} CPU",
            f"{requests['mem_gb']} GB",
            f"{requests['timeout_min']} min",
        ]
    )


def _wait(job, jobs: StoreJobs | None = None) -> str | None:
    """Until the job is over: None once its result file is there, else the state it ended in.

    Its result file is checked every second; its state is read from the store's shared poll
    (`jobs`; by default that of the store whose log folder holds the job's files), which
    queries SLURM once per poll_s for all of the store's jobs. No submitit status call (sacct).
    """
    if jobs is None:
        jobs = StoreJobs(Path(job.paths.folder).resolve().parent.parent)
    result, shown = Path(job.paths.result_pickle), None
    jobs.register(job.job_id, str(result))
    try:
        while True:
            if result.exists():
                return None
            info = jobs.snapshot().get("jobs", {}).get(str(job.job_id))
            state = info and (info.get("end") or info.get("queue"))
            if state and state != shown:
                log.info("SLURM job %s: %s", job.job_id, state)
                shown = state
            if info and info.get("end"):
                if info["end"].startswith("COMPLETED"):  # a result file that a shared file system shows late
                    for _ in range(30):
                        if result.exists():
                            return None
                        _refresh(result.parent)
                        time.sleep(1)
                return info["end"]
            time.sleep(1)
    finally:
        jobs.unregister(job.job_id)


def _refresh(folder: Path) -> None:
    """Make NFS show a folder's new files now (submitit's trick: a chmod drops its attribute cache)."""
    with suppress(OSError):
        folder.chmod(folder.stat().st_mode)


class _Stopped(BaseException):
    """A stop signal, as a BaseException (like KeyboardInterrupt): submitit's status calls catch Exception ("Bypassing
    sacct error"), which swallowed a signal that came during one and left the job running."""


@contextmanager
def _cancelled_on_signal(job):
    """Within it, SIGINT/SIGTERM/SIGHUP cancel the job (scancel) and exit."""

    def stop(signum, frame):
        raise _Stopped(signum)

    previous = {s: signal.signal(s, stop) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    except _Stopped as e:
        job.cancel(check=False)
        log.warning(
            "stopped by %s: cancelled SLURM job %s (a rerun resumes from the shard's checkpoint)",
            signal.Signals(e.args[0]).name,
            job.job_id,
        )
        raise SystemExit(128 + e.args[0]) from None
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def _failure(job, what: str, state: str | None = None) -> str:
    """Why the job ended without a result: its id, state (asked of sacct unless given), log and the log's last lines."""
    for _ in range(0 if state else 30):  # a job that raised is still ending: its final state comes within seconds
        state = job.get_info(mode="force").get("State") or "UNKNOWN"
        if state.split()[0] not in (*LIVE, "COMPLETING", "UNKNOWN"):
            break
        time.sleep(1)
    tail = ""
    if job.paths.stderr.exists():  # its last lines, without progress bars
        lines = [
            line
            for line in job.paths.stderr.read_text(errors="replace").splitlines()
            if line.strip() and "%|" not in line
        ]
        tail = "\n".join(lines[-12:])
    return f"{what}: SLURM job {job.job_id} ended {state}; its log: {job.paths.stderr} (stdout {job.paths.stdout})" + (
        f"\nlast lines of the log:\n{tail}" if tail else ""
    )
