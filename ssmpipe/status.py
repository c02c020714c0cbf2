"""Where a sweep stands: its points counted by state, the shards training now with their epoch, loss and ETA.

A point is in exactly one state. Trained (its shard's rows are in the store): ok, diverged
or failed, its run's status. Not yet trained, by its shard: training (a process holds the
shard's lock now, here or on a SLURM node, or its SLURM job is running), queued (its SLURM
job waits in the queue), job failed (its last SLURM job ended without writing the shard:
crashed, cancelled, out of time; SLURM's word comes before the lock's, as a cancelled job's
process holds the lock until KillWait), interrupted (a checkpoint and nobody training it: a rerun
resumes it), or to train. SLURM is asked (the store's shared poll, slurm.StoreJobs) only for
a sweep on SLURM or a store some sweep submitted jobs from. A shard training (or
interrupted) shows its progress record (ssmpipe/progress.py): group, epoch, mean train
loss, elapsed time and the time left at its pace so far.

Planning writes nothing, and only the run_id and status columns of the store are read, so a
5,000-point sweep is counted in a second or two; `watch` plans once, then on each redraw
checks only the shards not yet trained.
"""

from __future__ import annotations

import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from ssmpipe import config as cfg
from ssmpipe import progress, slurm, sweep
from ssmpipe.columns import STATUSES
from ssmpipe.runs import read_runs
from ssmpipe.store import Store

STATES = (*STATUSES, "training", "queued", "job failed", "interrupted", "to train")
SHOWN = 20  # shards listed with their progress, at most


@dataclass
class SweepStatus:
    sweep: str
    plan: sweep.Plan
    points: Counter = field(default_factory=Counter)  # state -> points
    shards: Counter = field(default_factory=Counter)  # state -> shards (shard states only)
    jobs: dict = field(default_factory=dict)  # shard -> (SLURM job id, state), live or failed
    progress: dict = field(default_factory=dict)  # shard -> (state, its progress record or None)
    trained: dict = field(default_factory=dict)  # trained shard -> Counter of its runs' statuses
    log_folder: str = ""
    time: float = 0.0

    @property
    def total(self) -> int:
        return sum(self.points.values())

    @property
    def finished(self) -> bool:
        """Every point trained (ok, diverged or failed)."""
        return len(self.trained) == len(self.plan.shards)


def sweep_status(config: dict, previous: SweepStatus | None = None) -> SweepStatus:
    """Count the points of `config`'s sweep by state (see the module docstring). previous: an earlier status of
    the same sweep, whose plan and trained shards are reused (only its untrained shards are checked again)."""
    store = Store(config["results"])
    plan = previous.plan if previous else sweep.plan(config, write=False)
    ids_of: dict[str, list[str]] = {}
    for run_id, shard in plan.shard_of.items():
        ids_of.setdefault(shard, []).append(run_id)
    status = SweepStatus(
        config["sweep"],
        plan,
        log_folder=str(slurm.log_folder(config["results"], config["sweep"])),
        trained=dict(previous.trained) if previous else {},
        time=time.time(),
    )
    if previous is None:
        status.trained.update(_trained_statuses(store, sorted(set(plan.shards) - set(plan.pending)), ids_of))
    todo = sorted(set(ids_of) - set(status.trained))
    states = _untrained_states(store, config, todo)
    # then the rows: a shard writes them before it frees its lock and deletes its checkpoint, so one that finished
    # while the states were read is seen here, never as "to train"
    newly = [s for s in todo if store.runs_path(s).exists() and not store.runs_problem(s, ids_of[s])]
    status.trained.update(_trained_statuses(store, newly, ids_of))
    for counts in status.trained.values():
        status.points.update(counts)
    status.shards["trained"] = len(status.trained)

    for shard, (state, job) in states.items():
        if shard in status.trained:
            continue
        status.points[state] += len(ids_of[shard])
        status.shards[state] += 1
        if job:
            status.jobs[shard] = job
        if state in ("training", "interrupted"):
            status.progress[shard] = (state, progress.read(config["results"], shard))
    return status


def _trained_statuses(store: Store, shards: list[str], ids_of: dict) -> dict[str, Counter]:
    """Shard -> Counter of its runs' final statuses, for trained shards (one read of two columns)."""
    if not shards:
        return {}
    shard_of = {r: s for s in shards for r in ids_of[s]}
    table = read_runs([store.runs_path(s) for s in shards], list(shard_of), ["run_id", "epoch", "status"])
    runs = table.group_by(["run_id", "status"]).aggregate([]).to_pydict()  # every row of a run has its status
    last = dict(zip(runs["run_id"], runs["status"]))
    out: dict[str, Counter] = {s: Counter() for s in shards}
    for run_id, state in last.items():
        out[shard_of[run_id]][state] += 1
    return out


def _untrained_states(store: Store, config: dict, todo: list[str]) -> dict[str, tuple[str, tuple | None]]:
    """Shard -> (state, its SLURM job or None) for shards not trained yet."""
    # SLURM's view, for a sweep on SLURM or a store some sweep submitted jobs from (its <sweep>/slurm/ log folder):
    # the store's shared poll (jobs.json, renewed by the waiting train jobs) when fresh, else one squeue
    on_slurm = bool(todo) and (
        config["launcher"] == "slurm"
        or any(p.parent.name not in cfg.RESERVED for p in Path(config["results"]).glob("*/slurm"))
    )  # not store/slurm/
    live = slurm.live_jobs(config["results"], todo, config["slurm"]["poll_s"]) if on_slurm else {}
    rest = [s for s in todo if s not in live]
    ended = slurm.ended_jobs(config["results"], rest) if rest and on_slurm else {}
    failed = {s for s, job in ended.items() if not job[1].startswith("COMPLETED")}
    out = {}
    for shard in todo:
        if shard in live:
            out[shard] = ("training" if live[shard][1] == "RUNNING" else "queued", live[shard])
        elif shard in failed:
            # SLURM's word before the lock's: a cancelled job's process holds the lock until KillWait ends it
            # (a rerun here of a shard whose last job failed also shows as such until it is trained)
            out[shard] = ("job failed", ended[shard])
        elif progress.lock_held(store.lock_path(shard)):
            out[shard] = ("training", None)
        elif store.ckpt_path(shard).exists() or store.progress_path(shard).exists():
            out[shard] = ("interrupted", None)
        else:
            out[shard] = ("to train", None)
    return out


def render(status: SweepStatus) -> str:
    """One compact table: points and shards per state; the shards training now (and interrupted), each with its
    epoch, loss, elapsed time and ETA; the SLURM jobs of failed shards."""
    shards = sum(status.shards.values())
    lines = [
        f"sweep {status.sweep!r}: {status.total} points in {shards} shards "
        f"({status.shards['trained']} trained)" + _sweep_eta(status),
        f"  results: {Path(status.plan.config['results']).resolve()}",
        f"  {'state':<12} {'points':>7} {'shards':>7}",
    ]
    for state in STATES:
        n = status.points[state]
        if n or state in STATUSES:
            shard_n = "" if state in STATUSES else str(status.shards[state])
            lines.append(f"  {state:<12} {n:>7} {shard_n:>7}")
    listed = sorted(status.progress.items(), key=lambda kv: (kv[1][0] != "training", kv[0]))
    lines += [
        _progress_line(shard, state, record, status.time)
        + (f" [SLURM job {status.jobs[shard][0]}]" if shard in status.jobs else "")  # an array's: <array>_<task>
        for shard, (state, record) in listed[:SHOWN]
    ]
    if len(listed) > SHOWN:
        lines.append(f"  ... and {len(listed) - SHOWN} more shards training or interrupted")
    failed = [(s, j) for s, j in sorted(status.jobs.items()) if j[1].split()[0] not in slurm.LIVE]
    for shard, (job_id, state) in failed[:10]:
        log = Path(status.log_folder) / f"{job_id}_0_log.err"
        where = f"log {log}" if log.exists() else "its log is in the folder of the sweep that ran it"
        lines.append(f"  shard {shard}: SLURM job {job_id} {state}, {where}")
    if len(failed) > 10:
        lines.append(f"  ... and {len(failed) - 10} more failed jobs")
    return "\n".join(lines)


def _progress_line(shard: str, state: str, record: dict | None, now: float) -> str:
    """`  shard 1a2b3c4d training: epoch 3/20, train loss 1.2345, 0:00:12 elapsed, 0:01:20 left (host pid 123)`."""
    head = f"  shard {shard[:8]} {state}"
    if record is None:
        return head + ": starting" if state == "training" else head + ": a checkpoint (a rerun resumes it)"
    group = f"group {record['group']}/{record['groups']}, " if record["groups"] > 1 else ""
    loss = f", train loss {record['train_loss']:.4f}" if record.get("train_loss") is not None else ""
    if state != "training":
        return f"{head}: stopped after {group}epoch {record['epoch']}/{record['epochs']}{loss}"
    eta = record.get("eta_s")
    left = "" if eta is None else f", {_clock(max(0.0, eta - (now - record['time'])))} left"
    return (
        f"{head}: {group}epoch {record['epoch']}/{record['epochs']}{loss}, "
        f"{_clock(now - record['started'])} elapsed{left} ({record['host']} pid {record['pid']})"
    )


def _sweep_eta(status: SweepStatus) -> str:
    """', about H:MM:SS left': the training shards' time left, then the shards waiting at the same pace and
    parallelism (every shard as long as the mean of those training). '' without a timed epoch."""
    timed = [r for state, r in status.progress.values() if state == "training" and r and r.get("epoch_s")]
    if not timed:
        return ""
    waiting = sum(status.shards[s] for s in ("queued", "job failed", "interrupted", "to train"))
    shard_s = sum(r["epoch_s"] * (r["epochs_left"] + r["epoch"]) for r in timed) / len(timed)  # a whole shard
    running = max(r["eta_s"] - (status.time - r["time"]) for r in timed)
    busy = max(1, status.shards["training"])
    return f", about {_clock(max(0.0, running) + waiting * shard_s / busy)} left"


def _clock(seconds: float) -> str:
    seconds = round(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def watch(configs: list[dict], interval: float, out=sys.stdout) -> None:
    """Redraw every sweep's table each `interval` seconds until all their points are trained. On a terminal
    the screen is cleared first; elsewhere (a file, a pipe) each table follows the last, with no escape codes."""
    statuses: list[SweepStatus | None] = [None] * len(configs)
    while True:
        statuses = [sweep_status(c, previous) for c, previous in zip(configs, statuses)]
        text = "\n".join(render(s) for s in statuses)
        clear = "\033[H\033[J" if out.isatty() else ""
        out.write(f"{clear}{time.strftime('%Y-%m-%d %H:%M:%S')}  (every {interval:g} s; Ctrl-C stops)\n{text}\n\n")
        out.flush()
        if all(s.finished for s in statuses):
            return
        time.sleep(interval)
