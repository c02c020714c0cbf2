"""Where a sweep stands: its points counted by state, from the store and from SLURM.

A point is in exactly one state. Trained (its shard's rows are in the store): ok,
diverged or failed, its run's status. Not yet trained, by its shard: running or
queued (a live SLURM job: from the store's shared SLURM poll, see slurm.StoreJobs), job failed (its last SLURM job ended without writing
the shard: crashed, cancelled, out of time), interrupted (a checkpoint and no
live job: training here now, or stopped; a rerun resumes it), or to train.
Planning writes nothing, and only the run_id and status columns of the store are
read, so a 5,000-point sweep is counted in a second or two.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow.dataset as ds

from ssmpipe import slurm, sweep
from ssmpipe.store import STATUSES, Store

STATES = (*STATUSES, "running", "queued", "job failed", "interrupted", "to train")


@dataclass
class SweepStatus:
    sweep: str
    points: Counter = field(default_factory=Counter)   # state -> points
    shards: Counter = field(default_factory=Counter)   # state -> shards (shard states only)
    jobs: dict = field(default_factory=dict)           # shard -> (SLURM job id, state), live or failed
    log_folder: str = ""

    @property
    def total(self) -> int:
        return sum(self.points.values())


def sweep_status(config: dict) -> SweepStatus:
    """Count the points of `config`'s sweep by state (see the module docstring)."""
    store = Store(config["results"])
    plan = sweep.plan(config, write=False)
    ids_of: dict[str, list[str]] = {}
    for run_id, shard in plan.shard_of.items():
        ids_of.setdefault(shard, []).append(run_id)
    done = set(plan.shards) - set(plan.pending)  # shards whose rows are stored and check out
    status = SweepStatus(config["sweep"], log_folder=str(slurm.log_folder(config["results"], config["sweep"])))

    if done:
        wanted = [r for s in done for r in ids_of[s]]
        table = ds.dataset([str(store.runs_path(s)) for s in sorted(done)], format="parquet").to_table(
            columns=["run_id", "status"], filter=ds.field("run_id").isin(wanted))
        last = dict(zip(table["run_id"].to_pylist(), table["status"].to_pylist()))  # one status per run
        status.points.update(last.values())
        status.shards["trained"] = len(done)

    todo = sorted(set(ids_of) - done)
    # SLURM's view: the store's shared poll (jobs.json, renewed by the waiting train jobs) when fresh, else one squeue
    live = slurm.live_jobs(config["results"], todo, config["slurm"]["poll_s"]) if todo else {}
    ended = slurm.ended_jobs(config["results"], [s for s in todo if s not in live]) if len(live) < len(todo) else {}
    for shard in todo:
        if shard in live:
            state = "running" if live[shard][1] == "RUNNING" else "queued"
            status.jobs[shard] = live[shard]
        elif shard in ended and not ended[shard][1].startswith("COMPLETED"):
            state = "job failed"
            status.jobs[shard] = ended[shard]
        elif store.ckpt_path(shard).exists():
            state = "interrupted"
        else:
            state = "to train"
        status.points[state] += len(ids_of[shard])
        status.shards[state] += 1
    return status


def render(status: SweepStatus) -> str:
    """One compact table: points and shards per state, then the SLURM jobs of failed shards."""
    shards = sum(status.shards.values())
    lines = [f"sweep {status.sweep!r}: {status.total} points in {shards} shards "
             f"({status.shards['trained']} trained)",
             f"  {'state':<12} {'points':>7} {'shards':>7}"]
    for state in STATES:
        n = status.points[state]
        if n or state in STATUSES:
            shard_n = "" if state in STATUSES else str(status.shards[state])
            lines.append(f"  {state:<12} {n:>7} {shard_n:>7}")
    failed = [(s, j) for s, j in sorted(status.jobs.items()) if not j[1].split()[0] in slurm.LIVE]
    for shard, (job_id, state) in failed[:10]:
        log = Path(status.log_folder) / f"{job_id}_0_log.err"
        where = f"log {log}" if log.exists() else "its log is in the folder of the sweep that ran it"
        lines.append(f"  shard {shard}: SLURM job {job_id} {state}, {where}")
    if len(failed) > 10:
        lines.append(f"  ... and {len(failed) - 10} more failed jobs")
    return "\n".join(lines)
