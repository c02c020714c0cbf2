"""What does a SLURM job cost a shard, over training it here? (Needs a SLURM cluster: ../shared/ci/slurm-up.sh.)

Measures, on this machine and its SLURM:
  * one train job, one after another, N times each way: `ssmpipe train SHARD` (local) and
    `ssmpipe train --slurm CONFIG SHARD` (submit through submitit, wait, 1 CPU, no GPU);
    the difference is the per-job overhead (sbatch, scheduling, the job's Python start, polling);
  * the default sweep's shape shrunk to the tiny test sweep, through `snakemake --cores 2` and
    `snakemake --profile profiles/slurm` (2 shards), counting its SLURM calls (squeue, sacct,
    sbatch: wrappers first on PATH) at the default slurm.poll_s.
(How the status queries scale with the shards in flight: tests/test_slurm_scale.py; what the login node and the
scheduler pay as the sweep widens, a SLURM job per shard against job arrays: benchmarks/slurm_arrays.py.)
The last line printed is a JSON object of the figures.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
from conftest import tiny_config

from ssmpipe import config as cfg
from ssmpipe import sweep

REQUESTS = {"gpus_per_node": 0, "cpus_per_task": 1, "mem_gb": 1, "timeout_min": 5}
N = 4  # shards, each trained once per launcher


def timed(cmd: list[str], cwd: Path = REPO, env: dict | None = None) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, cwd=cwd, check=True, capture_output=True, env=env)
    return time.perf_counter() - start


def counting_path(folder: Path, log: Path) -> dict:
    """An environment whose PATH starts with wrappers of squeue, sacct and sbatch that log a line per call."""
    folder.mkdir(parents=True)
    for name in ("squeue", "sacct", "sbatch"):
        (folder / name).write_text(f'#!/bin/sh\necho {name} >> "{log}"\nexec {shutil.which(name)} "$@"\n')
        (folder / name).chmod(0o755)
    return {**os.environ, "PATH": f"{folder}:{os.environ['PATH']}"}


def main() -> None:
    work = Path(tempfile.mkdtemp(prefix="slurm-overhead-"))
    figures = {}
    ssmpipe = [sys.executable, "-m", "ssmpipe"]
    # per job: the same N shards, trained locally in one store and on SLURM in another
    for launcher in ("local", "slurm"):
        results = work / launcher / "results"
        config = tiny_config(
            sweep="overhead",
            results=str(results),
            shard_size=1,
            slurm=REQUESTS,
            **{"grid.seq_len": [16], "grid.seed": [0, 1]},
        )
        configfile = work / launcher / "config.yaml"
        configfile.parent.mkdir(parents=True)
        configfile.write_text(yaml.safe_dump(config))
        shards = sweep.plan(cfg.load(configfile)).shards[:N]
        flags = ["--slurm", str(configfile)] if launcher == "slurm" else ["--threads", "1"]
        times = [timed([*ssmpipe, "train", "--results", str(results), *flags, shard]) for shard in shards]
        figures[f"job_{launcher}_s"] = round(statistics.median(times), 2)
    figures["job_overhead_s"] = round(figures["job_slurm_s"] - figures["job_local_s"], 2)
    # a whole (tiny) sweep, each way
    for launcher, profile in (("local", ["--cores", "2"]), ("slurm", ["--profile", "profiles/slurm"])):
        workdir = work / f"sweep-{launcher}"
        workdir.mkdir()
        config = tiny_config(sweep="tiny", slurm=REQUESTS)
        (workdir / "config.yaml").write_text(yaml.safe_dump(config))
        calls = work / "calls.log"
        env = counting_path(work / "bin", calls) if launcher == "slurm" else None
        figures[f"sweep_{launcher}_s"] = round(
            timed(
                [
                    sys.executable,
                    "-m",
                    "snakemake",
                    *profile,
                    "-d",
                    str(workdir),
                    "--configfile",
                    str(workdir / "config.yaml"),
                ],
                env=env,
            ),
            1,
        )
        if env:
            names = calls.read_text().split()
            figures.update({f"sweep_slurm_{name}_calls": names.count(name) for name in ("squeue", "sacct", "sbatch")})
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
