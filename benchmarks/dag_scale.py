"""Does ssmpipe's Snakemake workflow scale to 10,000- and 100,000-point sweeps?

Measures, on this machine, the wall time and peak memory of
  * a dry run (`snakemake -n`: config check, sweep planning, DAG) of a planned, untrained sweep, and
  * a real run that only aggregates and reports the sweep's already-cached runs (synthetic store),
for the default 24-point sweep, a 10,000-point and a 100,000-point grid, in the same process. The
specs are written first by `sweep.plan(config)` (not timed), as the workflow's plan job would. Peak
memory: the largest resident set of any process of the step (RUSAGE_CHILDREN of a fresh wrapper
process), and of the aggregate and report jobs run again alone. Targets (2 cores): 10,000 points:
dry run <= 20 s, aggregate + report <= 10 s; 100,000 points: each <= 20 s. The last line printed is
a JSON object of the figures.
"""

from __future__ import annotations

import copy
import json
import math
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import yaml

from ssmpipe import config as cfg
from ssmpipe import sweep
from ssmpipe.atomic import atomic_path
from ssmpipe.config import flatten
from ssmpipe.runs import runs_schema
from ssmpipe.store import Store

REPO = Path(__file__).resolve().parents[1]
TARGETS = {"dryrun_10k_s": 20.0, "report_10k_s": 10.0, "dryrun_100k_s": 20.0, "report_100k_s": 20.0}
SIZES = {"24": 24, "10k": 10_000, "100k": 100_000}
EPOCHS = 5  # synthetic epochs 0..EPOCHS-1 per run


def sweep_config(n: int) -> dict:
    """The default sweep's shape (24 points), or a 10 x 10 x 10 x 10 = 10,000-point grid (x 10 learning rates:
    100,000 points), packed 32 points a shard."""
    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    config.update(sweep=f"bench{n}", results="results")
    config["fixed"]["train"]["epochs"] = EPOCHS - 1  # the synthetic runs' last epoch: whole runs, as the store checks
    if n in (10_000, 100_000):
        config["shard_size"] = 32
        config["fixed"]["task"].update(lag=4, n_train=64, n_test=32)
        config["grid"] = {
            "model.init.real": [round(-i / 9, 4) for i in range(10)],
            "model.init.imag": [round(0.1 + 0.2 * i, 2) for i in range(10)],
            "seq_len": [8 * (i + 1) for i in range(10)],
            "seed": list(range(10)),
        }
    if n == 100_000:
        config["grid"]["train.lr"] = [round(0.001 * 2 ** (i / 3), 6) for i in range(10)]
    checked = cfg.check(config)
    assert math.prod(len(v) for v in checked["grid"].values()) == n
    return checked


# Runs a command and prints the peak RSS (kB) of its largest process: what RUSAGE_CHILDREN holds in a fresh process.
PEAK = (
    "import resource, subprocess, sys; rc = subprocess.run(sys.argv[1:]).returncode; "
    "print('peak_rss_kb=%d' % resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, file=sys.stderr); sys.exit(rc)"
)


def peak_run(cmd: list[str], cwd: Path | None = None) -> tuple[float, str, float]:
    """(wall seconds, stdout + stderr, peak RSS in MB of its largest process) of a command."""
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", PEAK, *cmd], cwd=cwd, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - t0
    out = proc.stdout + proc.stderr
    if proc.returncode != 0:
        sys.exit(f"{' '.join(cmd[:4])} … failed ({proc.returncode}):\n{out[-4000:]}")
    rss = re.findall(r"^peak_rss_kb=(\d+)$", out, re.MULTILINE)
    return wall, out, int(rss[-1]) / 1024


def snakemake(workdir: Path, *args: str) -> tuple[float, dict[str, int], float]:
    """Run Snakemake on the repo's Snakefile in `workdir`; return (wall seconds, job stats, peak RSS MB)."""
    cmd = [
        sys.executable,
        "-m",
        "snakemake",
        "-s",
        str(REPO / "Snakefile"),
        "-d",
        str(workdir),
        "--configfile",
        str(workdir / "config.yaml"),
        "--cores",
        "2",
        *args,
    ]
    wall, out, rss = peak_run(cmd)
    stats_text = out.split("Job stats:", 1)[1] if "Job stats:" in out else ""
    stats = {m[1]: int(m[2]) for m in re.finditer(r"^(\w+)\s+(\d+)\s*$", stats_text, re.MULTILINE)}
    stats.pop("total", None)
    return wall, stats, rss


def synthetic_store(store: Store, rng: random.Random) -> int:
    """A Parquet file of plausible rows (as ssmpipe.train writes them) for every planned shard, each recorded as
    checked (as write_runs records what it wrote)."""
    schema = runs_schema()
    n_runs = 0
    for shard, spec in store.iter_specs():
        columns: dict[str, list] = {f.name: [] for f in schema}
        for point in spec["points"]:
            flat = {**flatten(point["settings"]), "run_id": point["run_id"], "shard_id": shard}
            diverged = rng.random() < 0.02
            last = rng.randrange(1, EPOCHS) if diverged else EPOCHS - 1
            final_acc = rng.uniform(0.2, 1.0)
            for epoch in range(last + 1):
                frac = epoch / (EPOCHS - 1)
                acc = 1 / 8 + (final_acc - 1 / 8) * frac
                loss = 2.1 * (1 - frac) + (0.05 + 1.5 * (1 - final_acc)) * frac
                bad = diverged and epoch == last
                row = {
                    **flat,
                    "epoch": epoch,
                    "train_loss": float("nan") if bad else loss * rng.uniform(0.9, 1.0),
                    "train_acc": acc * rng.uniform(1.0, 1.05),
                    "test_loss": float("nan") if bad else loss,
                    "test_acc": acc,
                    "wall_s": 0.5 * (epoch + 1),
                    "status": "diverged" if diverged else "ok",
                }
                for name, values in columns.items():
                    values.append(row.get(name))
            n_runs += 1
        with atomic_path(store.runs_path(shard)) as tmp:
            pq.write_table(pa.Table.from_pydict(columns, schema=schema), tmp)
        store.record(shard, [p["run_id"] for p in spec["points"]])
    return n_runs


def measure(n: int, tmp_root: Path, rng: random.Random) -> dict:
    config = sweep_config(n)
    workdir = Path(tempfile.mkdtemp(prefix=f"n{n}-", dir=tmp_root))
    (workdir / "config.yaml").write_text(yaml.safe_dump(copy.deepcopy(config), sort_keys=False))
    store = Store(workdir / config["results"])
    t0 = time.perf_counter()
    sweep.plan({**config, "results": str(store.root)})  # the specs and manifest, as the plan job writes them
    print(f"[{n} points] setup: planned ({time.perf_counter() - t0:.1f} s, not timed)", flush=True)

    dry_s, dry_stats, dry_rss = snakemake(workdir, "-n")
    print(f"[{n} points] dry run: {dry_s:.2f} s, peak RSS {dry_rss:.0f} MB, jobs {dry_stats}", flush=True)

    t0 = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "ssmpipe", "plan", "config.yaml"], cwd=workdir, check=True, capture_output=True
    )  # the plan job's work: a dry run writes nothing
    n_runs = synthetic_store(store, rng)
    print(
        f"[{n} points] setup: synthetic store of {n_runs} runs in "
        f"{len(store.done_shards())} shards ({time.perf_counter() - t0:.1f} s, not timed)",
        flush=True,
    )

    report_s, stats, report_rss = snakemake(workdir)
    print(f"[{n} points] aggregate + report: {report_s:.2f} s, peak RSS {report_rss:.0f} MB, jobs {stats}", flush=True)
    assert set(stats) <= {"aggregate", "report", "all"} and stats.get("aggregate") == 1, stats

    sweep_dir = store.sweep_dir(config["sweep"])
    table = pq.read_table(sweep_dir / "runs.parquet", columns=["run_id"])
    distinct = len(set(table.column("run_id").to_pylist()))
    assert distinct == n, f"runs.parquet holds {distinct} run ids, expected {n}"
    assert (sweep_dir / "report" / "index.html").is_file()
    jobs = {}
    for job in ("aggregate", "report"):  # alone again, for their own peak memory (not timed in the figures)
        cli = [sys.executable, "-m", "ssmpipe", job, f"--results={config['results']}", "--", config["sweep"]]
        wall, _, rss = peak_run(cli, cwd=workdir)
        jobs[job] = rss
        print(f"[{n} points] {job} alone: {wall:.2f} s, peak RSS {rss:.0f} MB", flush=True)
    return {
        "dryrun_s": dry_s,
        "report_s": report_s,
        "train_jobs": dry_stats.get("train", 0),
        "dryrun_rss_mb": dry_rss,
        "report_rss_mb": report_rss,
        "aggregate_job_rss_mb": jobs["aggregate"],
        "report_job_rss_mb": jobs["report"],
    }


def main() -> None:
    rng = random.Random(0)
    sizes = sys.argv[1:] or list(SIZES)  # e.g. `dag_scale.py 24 100k`
    tmp_root = Path(tempfile.mkdtemp(prefix="ssmpipe-dag-scale-", dir="/tmp"))
    try:
        results = {name: measure(SIZES[name], tmp_root, rng) for name in sizes}
    finally:
        shutil.rmtree(tmp_root, ignore_errors=True)
    figures = {}
    for name, r in results.items():
        figures.update(
            {
                f"dryrun_{name}_s": round(r["dryrun_s"], 3),
                f"report_{name}_s": round(r["report_s"], 3),
                f"dryrun_{name}_rss_mb": round(r["dryrun_rss_mb"]),
                f"report_{name}_rss_mb": round(r["report_rss_mb"]),
                f"aggregate_job_{name}_rss_mb": round(r["aggregate_job_rss_mb"]),
                f"report_job_{name}_rss_mb": round(r["report_job_rss_mb"]),
                f"train_jobs_{name}": r["train_jobs"],
            }
        )
    for name in results.keys() - {"24"} if "24" in results else ():
        figures[f"dryrun_{name}_vs_24"] = round(results[name]["dryrun_s"] / results["24"]["dryrun_s"], 2)
        figures[f"report_{name}_vs_24"] = round(results[name]["report_s"] / results["24"]["report_s"], 2)
    for key, target in TARGETS.items():
        if key in figures:
            verdict = "met" if figures[key] <= target else "MISSED"
            print(f"target {key} <= {target:g} s: {figures[key]:.2f} s ({verdict})")
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
