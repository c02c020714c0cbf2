"""Where every file under a results root lives: the one place its layout is spelled (no I/O here).

    data/<task>/<key>.npz                   cached data sets
    store/specs/<shard>.json                the points of a shard (written when planned)
    store/runs/<shard>.parquet              one row per (run, epoch); present = shard done
    store/ckpt/<shard>.pt                   a shard's checkpoint while it trains
    store/locks/<shard>.lock                held by the one process training the shard
    store/progress/<shard>.json             how far its training is (ssmpipe/progress.py)
    store/verified/<shard>.json             which runs file was last checked (ssmpipe/store.py)
    store/quarantine/                       files the store could not trust, moved aside (never deleted)
    store/slurm/                            the store's shared SLURM status poll (ssmpipe/slurm.py)
    <sweep>/points.json, config.yaml        a sweep's manifest and config snapshot (ssmpipe/manifest.py)
    <sweep>/runs.parquet, report/           its table (ssmpipe/table.py) and report
    <sweep>/logs/, slurm/                   its jobs' logs; its SLURM jobs' files (submitit's)
    <study>/study.json, best.yaml, ray/     a tune study's summary, best config and Ray state (ssmpipe/tune/)
    papers/index.html                       the reproduction page (ssmpipe/report/papers.py)

A tune trial's rows and spec are a shard's, named tune-<study>-<trial>.
"""

from __future__ import annotations

import re
from pathlib import Path

RESERVED = ("data", "papers", "store")  # top-level folders that are not sweeps
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")  # a shard's (or host's) name: a plain file name, no folder


class Layout:
    """The paths of one results root. Any argument may be a Snakemake wildcard ("{shard}"): paths are only joined."""

    def __init__(self, root: str | Path):
        self.root = Path(root)

    # --- the store, shared by every sweep of the root
    def data_path(self, key: str) -> Path:
        return self.root / "data" / key.split("-")[0] / f"{key}.npz"

    def specs_dir(self) -> Path:
        return self.root / "store" / "specs"

    def spec_path(self, shard: str) -> Path:
        return self.specs_dir() / f"{shard}.json"

    def runs_dir(self) -> Path:
        return self.root / "store" / "runs"

    def runs_path(self, shard: str) -> Path:
        return self.runs_dir() / f"{shard}.parquet"

    def ckpt_path(self, shard: str) -> Path:
        return self.root / "store" / "ckpt" / f"{shard}.pt"

    def lock_path(self, shard: str) -> Path:
        return self.root / "store" / "locks" / f"{shard}.lock"

    def progress_path(self, shard: str) -> Path:
        return self.root / "store" / "progress" / f"{shard}.json"

    def verified_path(self, shard: str) -> Path:
        return self.root / "store" / "verified" / f"{shard}.json"

    def quarantine_dir(self) -> Path:
        return self.root / "store" / "quarantine"

    def slurm_state_dir(self) -> Path:
        return self.root / "store" / "slurm"

    # --- a sweep's (or a tune study's) own folder
    def sweep_dir(self, sweep: str) -> Path:
        return self.root / sweep

    def manifest_path(self, sweep: str) -> Path:
        return self.sweep_dir(sweep) / "points.json"

    def config_path(self, sweep: str) -> Path:
        return self.sweep_dir(sweep) / "config.yaml"

    def table_path(self, sweep: str) -> Path:
        return self.sweep_dir(sweep) / "runs.parquet"

    def previous_table_path(self, sweep: str) -> Path:
        """Where a table that shrank, or went stale, is kept."""
        return self.sweep_dir(sweep) / "runs.previous.parquet"

    def report_dir(self, sweep: str) -> Path:
        return self.sweep_dir(sweep) / "report"

    def report_path(self, sweep: str) -> Path:
        return self.report_dir(sweep) / "index.html"

    def logs_dir(self, sweep: str) -> Path:
        return self.sweep_dir(sweep) / "logs"

    def slurm_dir(self, sweep: str) -> Path:
        """A sweep's (or study's) SLURM logs and submitit's job files."""
        return self.sweep_dir(sweep) / "slurm"

    def study_path(self, study: str) -> Path:
        """A tune study's summary (its table, config snapshot and report are a sweep's)."""
        return self.sweep_dir(study) / "study.json"

    def best_path(self, study: str) -> Path:
        """A tune study's best settings, as a sweep config over seeds."""
        return self.sweep_dir(study) / "best.yaml"

    def papers_path(self) -> Path:
        return self.root / "papers" / "index.html"
