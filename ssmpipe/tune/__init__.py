"""Hyperparameter search with Ray Tune: the same models, config language and store as grid sweeps.

A config's `tune:` section declares a study (checked by `config.check_tune`). Each trial is one
point, `fixed` with the sampled values put in (`trial_settings`), so its run id is the one the same
point has in a grid sweep; it trains with `train.train_group`, and its rows land in the store as
shard tune-<study>-<trial> (a finished trial's spec too, so grid sweeps reuse it). This module holds
what needs no Ray; `tune.study` runs a study, `tune.cluster` runs one inside a SLURM job.
"""

from __future__ import annotations

import copy
import os
import socket
from pathlib import Path

import yaml

from ssmpipe import config as cfg
from ssmpipe.atomic import write_text
from ssmpipe.data import with_data_hash
from ssmpipe.keys import typed
from ssmpipe.layout import Layout

SHARD_PREFIX = "tune-"


class StudyInterrupted(RuntimeError):
    """The study stopped (Ctrl-C, SIGTERM) before every trial ended; its state is saved: a rerun resumes it."""


def study_dir(config: dict) -> Path:
    return Layout(config["results"]).sweep_dir(cfg.study_name(config))


def study_config(config: dict) -> tuple[Path, str]:
    """(path, YAML text) of the config `ssmpipe tune` runs the study with, <study>/snakemake-config.yaml: only the
    parts a study reads, so a change of the sweep's grid leaves the study alone."""
    keys = ("sweep", "results", "fixed", "tune", "launcher", "slurm", "report")
    text = yaml.safe_dump({k: cfg.plain(config[k]) for k in keys if k in config}, sort_keys=False)
    return study_dir(config) / "snakemake-config.yaml", text


def write_study_config(config: dict) -> None:
    """Write the study's config, only when it changes (Snakemake keys on mtime: an unchanged one reruns nothing)."""
    write_text(*study_config(config), only_if_changed=True)


def node_name() -> str:
    """Where this process runs: its SLURM node (SLURMD_NODENAME: a job's nodes may share a host), else the host."""
    return os.environ.get("SLURMD_NODENAME") or socket.gethostname()


def trial_shard(study: str, trial_id: str) -> str:
    """The store name of a trial's rows (store/runs/<this>.parquet) and spec."""
    return f"{SHARD_PREFIX}{study}-{trial_id}"


def trial_settings(fixed: dict, params: dict) -> dict:
    """A trial's settings: `fixed` (defaults filled in) with the sampled values put in, schema-typed; a task read from
    a path keyed by its content (task.data_hash), as a sweep's points are."""
    settings = copy.deepcopy(fixed)
    for key, value in params.items():
        cfg.set_path(settings, key, value)
    return with_data_hash(typed(settings))


def run(config: dict, cluster: str = "local", cpus: int | None = None) -> dict:
    """Run (or resume) the config's study here or in a SLURM job; return its summary (study.json)."""
    cfg.check_tune(config)
    if cluster == "slurm":
        from ssmpipe.tune.cluster import run_on_slurm

        return run_on_slurm(config)
    from ssmpipe.tune.study import run_study

    return run_study(config, cpus=cpus)


def describe(summary: dict) -> str:
    """A few lines for the terminal: trials by outcome, wall time, the best config."""
    c = summary["counts"]
    lines = [
        f"study {summary['study']!r}: {summary['n_trials']} trials ({c['ok']} trained to the end, "
        f"{c['stopped']} stopped early{' by ASHA' if summary['scheduler'] == 'asha' else ''}, "
        f"{c['diverged']} diverged, "
        f"{c['failed']} failed) in {summary['wall_s'][-1]:.1f} s"
        + (f" (all sessions: {sum(summary['wall_s']):.1f} s)" if len(summary["wall_s"]) > 1 else "")
    ]
    best = summary["best"]
    if best:
        params = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in best["params"].items())
        lines.append(
            f"best: {summary['metric']} {best['value']:.4f} (epoch {best['epoch']}), trial "
            f"{best['trial_id']} (run {best['run_id']}): {params}"
        )
    else:
        lines.append("best: none (no trial trained to the end)")
    lines.append(
        f"outputs: {summary['dir']}/study.json, runs.parquet, best.yaml; "
        f"report: ssmpipe report --results {summary['results']} {summary['study']}"
    )
    return "\n".join(lines)
