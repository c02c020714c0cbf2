"""A study inside a SLURM allocation: one submitit job that starts Ray on its node and runs the study.

`ssmpipe tune <config> --cluster slurm` submits `StudyJob` with the config's `slurm:`
requests (job name `ssmpipe-tune-<study>-<store hash>`, logs in <results>/<study>/slurm/) and waits for
it. In the job, Ray starts on the allocation's CPUs (and GPUs) only: `ray.init(num_cpus=
slurm.cpus_per_task)`, and the same `run_study` as on a workstation trains the trials and
writes the same store files, study.json and table (the results folder must be on a file
system the node shares, as for grid sweeps on SLURM).

The job is a submitit Checkpointable: signalled before its time limit (or preempted) it
is requeued, and the requeued job resumes the study from Ray's state in
<results>/<study>/ray/ (Tuner.restore), as a rerun after a crash does. Stopping the
waiting process (Ctrl-C) cancels the job; a rerun resumes the study.

One node: Ray's head is the job's only node. (More nodes would start workers on the
others with `ray start --address`; not done yet.)
"""

from __future__ import annotations

import logging
import shutil
import subprocess
from pathlib import Path

import submitit

from ssmpipe import slurm
from ssmpipe import tune as tn

log = logging.getLogger("ssmpipe.tune")


class StudyJob(submitit.helpers.Checkpointable):
    """What the study's SLURM job runs: `run_study` with Ray on the job's CPUs and GPUs."""

    def __init__(self, config: dict, cpus: int):
        self.config, self.cpus = config, cpus

    def __call__(self) -> dict:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
        from ssmpipe.tune.study import run_study

        return run_study(self.config, cpus=self.cpus)


def run_on_slurm(config: dict) -> dict:
    """Run the config's study as one SLURM job and wait for it; return its summary (study.json)."""
    study = tn.study_name(config)
    if not shutil.which("sbatch"):
        raise slurm.JobFailed(f"study {study}: --cluster slurm needs sbatch on PATH (run on a SLURM login node)")
    results, name = Path(config["results"]).resolve(), f"tune-{study}"
    live = slurm.live_jobs(results, [name]).get(name)
    if live:
        raise slurm.JobFailed(f"study {study} already has SLURM job {live[0]} ({live[1]}): wait for it to end or "
                              f"`scancel {live[0]}`, then run again (it resumes)")
    config = {**config, "results": str(results)}  # the job may start in another folder
    requests = config["slurm"]
    folder = slurm.job_folder(tn.study_dir(config).resolve() / "slurm")  # private: submitit pickles into it
    executor = submitit.AutoExecutor(folder=folder, cluster="slurm", slurm_max_num_timeout=requests["max_timeouts"])
    executor.update_parameters(**slurm.executor_parameters(requests, slurm.job_name(results, name)))
    try:
        job = executor.submit(StudyJob(config, requests["cpus_per_task"]))
    except subprocess.CalledProcessError as e:
        raise slurm.JobFailed(f"study {study}: sbatch refused the job: "
                              f"{(e.output or b'').decode(errors='replace').strip()}") from None
    log.info("study %s: SLURM job %s (%d CPU, %d GPU); log %s", study, job.job_id, requests["cpus_per_task"],
             requests["gpus_per_node"], job.paths.stderr)
    with slurm._cancelled_on_signal(job):
        slurm._wait(job)
    try:
        summary = job.result()
    except (submitit.core.utils.FailedJobError, submitit.core.utils.UncompletedJobError):
        raise slurm.JobFailed(slurm._failure(job, name)) from None
    log.info("study %s: SLURM job %s done", study, job.job_id)
    return summary
