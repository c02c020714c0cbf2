"""SLURM, through submitit: the one path from ssmpipe to a SLURM cluster.

`train` runs one shard as a SLURM job and waits for it; Snakemake's train rule calls
it (through `ssmpipe train --slurm`) when the sweep's launcher is slurm, so Snakemake
keeps the DAG, the caching and the reruns, and each train job is one SLURM job. The
job asks for the config's `slurm:` requests, is named `ssmpipe-<shard>-<store>` (the
store: a hash of the results root's path, as the same shard may train in two stores),
and writes its logs to <results>/<sweep>/slurm/ (submitit's `<job id>_0_log.err|out`).
`run` is that submit-and-wait for any Checkpointable callable.

Timeouts and preemption: the job is a submitit `Checkpointable`; signalled before its
time limit (or when preempted) it is requeued, and `train_shard` resumes from the
shard's own per-epoch checkpoint, so the requeued job holds no state of its own.

A job that ends without writing the shard (crash, cancel, too many timeouts) raises
`JobFailed` naming its id, its state and its log. Stopping the waiting process
(SIGINT/SIGTERM/SIGHUP, e.g. Ctrl-C on Snakemake) cancels the job; the checkpoint
stays, so a rerun resumes. `live_jobs` and `ended_jobs` say which shards have a
SLURM job queued or running, and how their last job ended (for `ssmpipe status`).
"""

from __future__ import annotations

import getpass
import hashlib
import logging
import math
import shutil
import signal
import subprocess
import time
from contextlib import contextmanager
from pathlib import Path

import submitit

log = logging.getLogger("ssmpipe.slurm")

STATE_POLL_S = 60        # longest wait between two sacct calls of one waiting job
# States of a job that holds its shard (will train it, or is training it); COMPLETING: ending.
LIVE = ("PENDING", "RUNNING", "REQUEUED", "CONFIGURING", "RESIZING", "SUSPENDED", "PREEMPTED")


class JobFailed(RuntimeError):
    """A shard's SLURM job could not be submitted, or ended without writing the shard."""


class TrainShard(submitit.helpers.Checkpointable):
    """The callable a shard's SLURM job runs: `train_shard`, with torch on the job's CPUs.

    Its inherited `checkpoint()` resubmits it unchanged: all progress is in the
    shard's checkpoint file, which `train_shard` resumes from.
    """

    def __init__(self, results: str, shard: str, threads: int):
        self.results, self.shard, self.threads = results, shard, threads

    def __call__(self) -> int:
        import torch

        from ssmpipe.train import train_shard

        handler = logging.StreamHandler()  # ssmpipe's log into the job's stderr (submitit logs its own)
        handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
        logging.getLogger("ssmpipe").addHandler(handler)
        logging.getLogger("ssmpipe").setLevel(logging.INFO)
        torch.set_num_threads(self.threads)
        return train_shard(self.results, self.shard)


def job_name(results: str | Path, shard: str) -> str:
    """The SLURM job name of `shard` in the store at `results`."""
    store = hashlib.sha256(str(Path(results).resolve()).encode()).hexdigest()[:8]
    return f"ssmpipe-{shard}-{store}"


def executor_parameters(requests: dict, name: str, nodes: int = 1) -> dict:
    """submitit AutoExecutor parameters for the config's `slurm:` requests (ConfigError for a line break in one).

    submitit writes them into the job's sbatch script, shell-quoted but one `#SBATCH` line
    each: a line break inside a value would begin a shell line of its own. `nodes` > 1 (a
    study's Ray cluster, never a shard's job) asks for that many nodes with one task on each,
    every task with the CPUs, GPUs and memory of the requests.
    """
    from ssmpipe.config import ConfigError

    for key, value in requests.items():
        if isinstance(value, str) and _breaks_line(value):
            raise ConfigError(f"slurm.{key} = {value!r}: a SLURM request is one line")
    params = {"name": name, "timeout_min": requests["timeout_min"], "mem_gb": requests["mem_gb"],
              "cpus_per_task": requests["cpus_per_task"], "slurm_signal_delay_s": requests["signal_delay_s"],
              "slurm_srun_args": ["--open-mode=append"]}  # a requeued job's log keeps its earlier starts
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
    from ssmpipe.config import ConfigError

    executor_parameters(requests, "check")  # a line break in a request: refused before SLURM is asked
    if not shutil.which("sbatch"):
        raise ConfigError("launcher = 'slurm', but sbatch is not on PATH: run on a SLURM login node, "
                          "or without --profile slurm")
    flags = [f"--time={requests['timeout_min']}", f"--mem={math.ceil(requests['mem_gb'] * 1024)}M",
             f"--cpus-per-task={requests['cpus_per_task']}"]
    if requests["gpus_per_node"]:
        flags.append(f"--gpus-per-node={requests['gpus_per_node']}")
    flags += [f"--{key}={requests[key]}" for key in ("partition", "account", "qos", "constraint") if requests.get(key)]
    test = subprocess.run(["sbatch", "--test-only", *flags, "--wrap", "true"], capture_output=True, text=True,
                          timeout=60)
    if test.returncode != 0:
        raise ConfigError(f"slurm: SLURM would not run a job asking for {_describe(requests)}: "
                          f"{' '.join(test.stderr.split())}")


def log_folder(results: str | Path, sweep: str) -> Path:
    """The sweep's folder of SLURM logs (and submitit's job files): Store(results).sweep_dir(sweep) / "slurm".

    Spelled out, not asked of ssmpipe.store: importing it (pyarrow, pandas) would cost each
    waiting train job ~45 MB.
    """
    return Path(results).resolve() / sweep / "slurm"


def job_folder(folder: Path) -> Path:
    """submitit's folder for a job, created private (mode 0700); ConfigError if its path breaks a line.

    submitit pickles the function the job runs (<id>_submitted.pkl, unpickled on the node)
    and its result (<id>_0_result.pkl, unpickled by the waiting process) into it, and writes
    the path into the sbatch script: only the user running ssmpipe may write there.
    """
    from ssmpipe.config import ConfigError

    if _breaks_line(str(folder)):
        raise ConfigError(f"results = {str(folder)!r}: a results path for SLURM jobs is one line")
    return private_dir(folder)


def private_dir(folder: Path) -> Path:
    """`folder`, created if missing, readable and writable by its owner only (0700): for files that get unpickled."""
    folder.mkdir(parents=True, exist_ok=True)
    folder.chmod(0o700)
    return folder


def train(results: str | Path, shard: str, sweep: str, requests: dict) -> None:
    """Train `shard` as a SLURM job with the `slurm:` `requests`, logging to `sweep`'s folder; wait for it."""
    results = Path(results).resolve()
    run(TrainShard(str(results), shard, requests["cpus_per_task"]), log_folder(results, sweep), requests,
        job_name(results, shard), f"shard {shard}")


def run(function: submitit.helpers.Checkpointable, folder: Path, requests: dict, name: str, what: str):
    """Run `function` as one SLURM job named `name` with the `slurm:` requests, logs in `folder`; wait for it.

    Returns what `function` returned. Refused (JobFailed) while a job of that name is
    queued or running; SIGINT/SIGTERM/SIGHUP meanwhile cancel the job; a job that ends
    without a result raises JobFailed naming `what`, its id, state and log.
    """
    if not shutil.which("sbatch"):
        raise JobFailed(f"{what}: launcher slurm needs sbatch on PATH (run on a SLURM login node, "
                        "or without --profile slurm)")
    live = _queued(name)
    if live:
        raise JobFailed(f"{what} already has SLURM job {live[0]} ({live[1]}), from another run: "
                        f"wait for it to end or `scancel {live[0]}`, then run again (it resumes)")
    executor = submitit.AutoExecutor(folder=job_folder(folder), cluster="slurm",
                                     slurm_max_num_timeout=requests["max_timeouts"])
    executor.update_parameters(**executor_parameters(requests, name))
    try:
        job = executor.submit(function)
    except submitit.core.utils.FailedJobError as e:  # sbatch said no: its message names what
        raise JobFailed(f"{what}: sbatch refused the job (slurm: {_describe(requests)}): {str(e).strip()}") from None
    log.info("%s: SLURM job %s (%s); log %s", what, job.job_id, _describe(requests), job.paths.stderr)
    with _cancelled_on_signal(job):
        _wait(job)
    try:
        result = job.result()
    except (submitit.core.utils.FailedJobError, submitit.core.utils.UncompletedJobError):
        raise JobFailed(_failure(job, what)) from None
    log.info("%s: SLURM job %s done", what, job.job_id)
    return result


def live_jobs(results: str | Path, shards: list[str]) -> dict[str, tuple[str, str]]:
    """Shard -> (job id, state) of the shards' queued or running jobs (this user's, squeue); {} without SLURM."""
    shard_of = {job_name(results, s): s for s in shards}
    jobs = {}
    for line in _run(["squeue", "-h", "-u", getpass.getuser(), "-o", "%i|%j|%T"]).splitlines():
        job_id, name, state = line.split("|", 2)
        if name in shard_of and state in LIVE:
            jobs[shard_of[name]] = (job_id, state)
    return jobs


def ended_jobs(results: str | Path, shards: list[str], days: int = 30) -> dict[str, tuple[str, str]]:
    """Shard -> (job id, state) of each shard's last ended job (this user's, sacct, last `days` days)."""
    shard_of = {job_name(results, s): s for s in shards}
    names = sorted(shard_of)
    ended: dict[str, tuple[str, str]] = {}
    for i in range(0, len(names), 200):  # one sacct call per 200 names
        out = _run(["sacct", "-X", "-n", "-P", "-u", getpass.getuser(), "-S", f"now-{days}days",
                    "-o", "JobID,JobName,State", f"--name={','.join(names[i:i + 200])}"])
        for line in out.splitlines():  # oldest first: a shard's later job replaces its earlier one
            job_id, name, state = line.split("|", 2)
            if name in shard_of and state.split()[0] not in (*LIVE, "COMPLETING"):
                ended[shard_of[name]] = (job_id, state)
    return ended


# --- internals ---------------------------------------------------------------


def _run(cmd: list[str]) -> str:
    """A SLURM query's stdout; '' when SLURM is not there or does not answer."""
    if not shutil.which(cmd[0]):
        return ""
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=True).stdout
    except (subprocess.SubprocessError, OSError) as e:
        log.warning("%s did not answer: %s", cmd[0], e)
        return ""


def _queued(name: str, completing_s: int = 120) -> tuple[str, str] | None:
    """(job id, state) of this user's job `name` in the queue, or None; a COMPLETING one is waited for.

    A cancelled submitit job keeps running until SLURM kills it (KillWait, 30 s by default:
    submitit ignores SIGTERM, which preemption sends first): COMPLETING until then.
    """
    deadline = time.monotonic() + completing_s
    while True:
        out = _run(["squeue", "-h", "-u", getpass.getuser(), "-n", name, "-o", "%i|%T"]).split()
        job = tuple(out[0].split("|", 1)) if out else None
        if not job or job[1] != "COMPLETING" or time.monotonic() > deadline:
            return job
        time.sleep(2)


def _breaks_line(text: str) -> bool:
    return any(c in text for c in "\n\r\0")


def _describe(requests: dict) -> str:
    where = [f"{k} {requests[k]}" for k in ("partition", "account", "qos", "constraint") if requests.get(k)]
    return ", ".join([*where, f"{requests['gpus_per_node']} GPU", f"{requests['cpus_per_task']} CPU",
                      f"{requests['mem_gb']} GB", f"{requests['timeout_min']} min"])


def _wait(job) -> None:
    """Until the job is over: its result file is checked every second, SLURM at least every STATE_POLL_S."""
    next_poll, state = time.monotonic() + STATE_POLL_S, None
    while True:
        poll = time.monotonic() >= next_poll
        if job.done(force_check=poll):
            return
        if poll:
            next_poll = time.monotonic() + STATE_POLL_S
        if job.state not in (state, "UNKNOWN"):  # UNKNOWN: not in sacct yet
            state = job.state
            log.info("SLURM job %s: %s", job.job_id, state)
        time.sleep(1)


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
        log.warning("stopped by %s: cancelled SLURM job %s (a rerun resumes from the shard's checkpoint)",
                    signal.Signals(e.args[0]).name, job.job_id)
        raise SystemExit(128 + e.args[0]) from None
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def _failure(job, what: str) -> str:
    """Why the job ended without a result: its id, state, log, and the log's last lines."""
    for _ in range(30):  # a job that raised is still ending: its final state comes within seconds
        state = job.get_info(mode="force").get("State") or "UNKNOWN"
        if state.split()[0] not in (*LIVE, "COMPLETING", "UNKNOWN"):
            break
        time.sleep(1)
    tail = ""
    if job.paths.stderr.exists():  # its last lines, without progress bars
        lines = [line for line in job.paths.stderr.read_text(errors="replace").splitlines()
                 if line.strip() and "%|" not in line]
        tail = "\n".join(lines[-12:])
    return (f"{what}: SLURM job {job.job_id} ended {state}; its log: {job.paths.stderr} "
            f"(stdout {job.paths.stdout})" + (f"\nlast lines of the log:\n{tail}" if tail else ""))
