"""What a wide sweep costs the login node and the scheduler: one SLURM job per shard against job arrays.

(Needs a SLURM cluster: ../shared/ci/slurm-up.sh, e.g. SLURM_CI_NODES=2.) For each width (48 and 192 one-point
shards by default) and each design, `snakemake --profile profiles/slurm --cores <width>` trains the sweep with
counting wrappers of sbatch, squeue and sacct first on PATH, sampling this host's processes every 0.5 s:

  * per_shard: `slurm.array_size: 1`, the design before issue 22 (a train job per shard, each an
    `ssmpipe train --slurm` process submitting its shard's job and waiting for it);
  * arrays: `slurm.array_size` at its default (1000, capped by the cluster's MaxArraySize): a train_array
    job per array, one process waiting for all its tasks.

Figures per run: sbatch calls; squeue and sacct calls, and status queries per minute, while shards are in flight;
the most waiting processes at once and their summed resident memory (RSS); the most processes of the whole run
(Snakemake and every process it started on this host) and their summed RSS. `slurm.poll_s` is the default 30
unless --poll-s. The last line printed is a JSON object of the figures.

    .venv/bin/python benchmarks/slurm_arrays.py [--widths 48 192] [--designs per_shard arrays] [--epochs 2]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
from conftest import tiny_config

REQUESTS = {
    "partition": "debug",
    "account": "root",
    "qos": "normal",
    "gpus_per_node": 0,
    "cpus_per_task": 1,
    "mem_gb": 1,
    "timeout_min": 10,
}


def counting_bin(folder: Path, log: Path) -> Path:
    """Wrappers of sbatch, squeue and sacct that append '<epoch s> <name>' to `log`, then run the real one."""
    folder.mkdir(parents=True)
    for name in ("sbatch", "squeue", "sacct"):
        (folder / name).write_text(
            f'#!/bin/sh\necho "$(date +%s.%N) {name}" >> "{log}"\nexec {shutil.which(name)} "$@"\n'
        )
        (folder / name).chmod(0o755)
    return folder


def process_tree(root: int) -> dict[int, tuple[list[bytes], float]]:
    """pid -> (argv, RSS in MB) of `root` and every process below it on this host."""
    parent, info = {}, {}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            stat = (proc / "stat").read_text()
            status = (proc / "status").read_text()
            argv = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        parent[int(proc.name)] = int(stat.rsplit(")", 1)[1].split()[1])
        rss = next((int(line.split()[1]) / 1024 for line in status.splitlines() if line.startswith("VmRSS:")), 0.0)
        info[int(proc.name)] = (argv, rss)
    tree, grew = {root}, True
    while grew:
        below = {pid for pid, ppid in parent.items() if ppid in tree} - tree
        tree |= below
        grew = bool(below)
    return {pid: info[pid] for pid in tree if pid in info}


def waiting(argv: list[bytes]) -> bool:
    """An `ssmpipe train --slurm` process (the Python one, not its shell): a train or train_array job waiting."""
    return any(a.startswith(b"--slurm") for a in argv) and b"train" in argv and b"python" in argv[0]


def calls(log: Path, start: float, end: float) -> dict[str, int]:
    counts = {"sbatch": 0, "squeue": 0, "sacct": 0}
    for line in log.read_text().splitlines() if log.exists() else []:
        when, name = line.split()
        if start <= float(when) <= end:
            counts[name] += 1
    return counts


def run(work: Path, width: int, design: str, epochs: int, poll_s: float | None) -> dict:
    workdir = work / f"{design}-{width}"
    workdir.mkdir()
    log = workdir / "calls.log"
    env = {**os.environ, "PATH": f"{counting_bin(workdir / 'bin', log)}:{os.environ['PATH']}"}
    requests = {**REQUESTS, **({"array_size": 1} if design == "per_shard" else {})}
    if poll_s:
        requests["poll_s"] = poll_s
    config = tiny_config(
        sweep=f"wide{width}",
        shard_size=1,
        slurm=requests,
        **{"fixed.train.epochs": epochs, "grid.seq_len": [16], "grid.seed": list(range(width // 2))},
    )
    (workdir / "config.yaml").write_text(yaml.safe_dump(config))
    cmd = [sys.executable, "-m", "snakemake", "--profile", "profiles/slurm", "--cores", str(width), "-d"]
    cmd += [str(workdir), f"results/wide{width}/runs.parquet", "--configfile", str(workdir / "config.yaml")]
    start = time.time()
    with open(workdir / "snakemake.out", "w") as out:
        proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT)
    first = last = None
    most = {"waiting": 0, "waiting_rss_mb": 0.0, "processes": 0, "processes_rss_mb": 0.0}
    try:
        while proc.poll() is None:
            tree = process_tree(proc.pid)
            waiters = [rss for argv, rss in tree.values() if waiting(argv)]
            if waiters:
                first, last = first or time.time(), time.time()
            most["waiting"] = max(most["waiting"], len(waiters))
            most["waiting_rss_mb"] = max(most["waiting_rss_mb"], sum(waiters))
            most["processes"] = max(most["processes"], len(tree))
            most["processes_rss_mb"] = max(most["processes_rss_mb"], sum(rss for _, rss in tree.values()))
            time.sleep(0.5)
    finally:
        proc.kill()
    if proc.returncode != 0:
        raise SystemExit(f"{design} {width}: snakemake failed; see {workdir / 'snakemake.out'}")
    counted = calls(log, first, last)
    minutes = max(last - first, 1e-9) / 60
    return {
        "design": design,
        "shards": width,
        "seconds": round(time.time() - start, 1),
        "in_flight_s": round(last - first, 1),
        "sbatch": calls(log, 0, float("inf"))["sbatch"],
        "squeue": counted["squeue"],
        "sacct": counted["sacct"],
        "queries_per_min": round((counted["squeue"] + counted["sacct"]) / minutes, 1),
        "waiting_processes": most["waiting"],
        "waiting_rss_mb": round(most["waiting_rss_mb"]),
        "run_processes": most["processes"],
        "run_rss_mb": round(most["processes_rss_mb"]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--widths", type=int, nargs="+", default=[48, 192])
    parser.add_argument("--designs", nargs="+", choices=["per_shard", "arrays"], default=["per_shard", "arrays"])
    parser.add_argument("--epochs", type=int, default=2, help="epochs of each one-point shard (default 2)")
    parser.add_argument("--poll-s", type=float, help="slurm.poll_s (default: the schema's, 30)")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="slurm-arrays-"))
    figures = []
    for width in args.widths:
        for design in args.designs:
            figures.append(run(work, width, design, args.epochs, args.poll_s))
            print(json.dumps(figures[-1]), flush=True)
    print(json.dumps({"runs": figures}))


if __name__ == "__main__":
    main()
