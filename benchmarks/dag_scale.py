"""Does ssmpipe's Snakemake workflow scale to a 10,000-point sweep?

Measures, on this machine, the wall time of
  * a dry run (`snakemake -n`: config check, sweep planning, DAG) of a fresh 10,000-point sweep, and
  * a real run that only aggregates and reports 10,000 already-cached runs (synthetic store),
each against the same two figures for the default 24-point sweep, measured in the same process.
Targets (2 cores): dry run <= 20 s, aggregate + report <= 10 s. The last line printed is a JSON
object of the figures.
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

import pyarrow.parquet as pq
import yaml

from ssmpipe import config as cfg
from ssmpipe.store import Store, write_runs

REPO = Path(__file__).resolve().parents[1]
TARGETS = {"dryrun_10k_s": 20.0, "report_10k_s": 10.0}
EPOCHS = 5  # synthetic epochs 0..EPOCHS-1 per run


def sweep_config(n: int) -> dict:
    """The default sweep's shape (24 points), or a 10 x 10 x 10 x 10 = 10,000-point grid (x 10 learning rates:
    100,000 points), packed 32 points a shard."""
    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    config.update(sweep=f"bench{n}", results="results")
    if n in (10_000, 100_000):
        config["shard_size"] = 32
        config["fixed"]["task"].update(lag=4, n_train=64, n_test=32)
        config["grid"] = {"model.init.real": [round(-i / 9, 4) for i in range(10)],
                          "model.init.imag": [round(0.1 + 0.2 * i, 2) for i in range(10)],
                          "seq_len": [8 * (i + 1) for i in range(10)],
                          "seed": list(range(10))}
    if n == 100_000:
        config["grid"]["train.lr"] = [round(0.001 * 2 ** (i / 3), 6) for i in range(10)]
    checked = cfg.check(config)
    assert math.prod(len(v) for v in checked["grid"].values()) == n
    return checked


def snakemake(workdir: Path, *args: str) -> tuple[float, dict[str, int]]:
    """Run Snakemake on the repo's Snakefile in `workdir`; return (wall seconds, job stats)."""
    cmd = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "-d", str(workdir),
           "--configfile", str(workdir / "config.yaml"), "--cores", "2", *args]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    out = proc.stdout + proc.stderr
    if proc.returncode != 0:
        sys.exit(f"snakemake failed ({proc.returncode}):\n{out[-4000:]}")
    stats_text = out.split("Job stats:", 1)[1] if "Job stats:" in out else ""
    stats = {m[1]: int(m[2]) for m in re.finditer(r"^(\w+)\s+(\d+)\s*$", stats_text, re.M)}
    stats.pop("total", None)
    return wall, stats


def synthetic_store(store: Store, rng: random.Random) -> int:
    """A Parquet file of plausible rows (as ssmpipe.train writes them) for every planned shard."""
    n_runs = 0
    for shard in store.read_specs():
        rows = []
        for point in store.read_spec(shard)["points"]:
            diverged = rng.random() < 0.02
            last = rng.randrange(1, EPOCHS) if diverged else EPOCHS - 1
            final_acc = rng.uniform(0.2, 1.0)
            for epoch in range(last + 1):
                frac = epoch / (EPOCHS - 1)
                acc = 1 / 8 + (final_acc - 1 / 8) * frac
                loss = 2.1 * (1 - frac) + (0.05 + 1.5 * (1 - final_acc)) * frac
                bad = diverged and epoch == last
                rows.append({"run_id": point["run_id"], "shard_id": shard, "settings": point["settings"],
                             "epoch": epoch, "train_loss": float("nan") if bad else loss * rng.uniform(0.9, 1.0),
                             "train_acc": acc * rng.uniform(1.0, 1.05), "test_loss": float("nan") if bad else loss,
                             "test_acc": acc, "wall_s": 0.5 * (epoch + 1)})
            for row in rows[-(last + 1):]:
                row["status"], row["error"] = ("diverged" if diverged else "ok"), None
            n_runs += 1
        write_runs(rows, store.runs_path(shard))
    return n_runs


def measure(n: int, tmp_root: Path, rng: random.Random) -> dict:
    config = sweep_config(n)
    workdir = Path(tempfile.mkdtemp(prefix=f"n{n}-", dir=tmp_root))
    (workdir / "config.yaml").write_text(yaml.safe_dump(copy.deepcopy(config), sort_keys=False))
    store = Store(workdir / config["results"])

    dry_s, dry_stats = snakemake(workdir, "-n")
    print(f"[{n} points] dry run: {dry_s:.2f} s, jobs {dry_stats}", flush=True)

    t0 = time.perf_counter()
    n_runs = synthetic_store(store, rng)
    print(f"[{n} points] setup: synthetic store of {n_runs} runs in "
          f"{len(store.done_shards())} shards ({time.perf_counter() - t0:.1f} s, not timed)", flush=True)

    report_s, stats = snakemake(workdir)
    print(f"[{n} points] aggregate + report: {report_s:.2f} s, jobs {stats}", flush=True)
    assert set(stats) <= {"aggregate", "report", "all"} and stats.get("aggregate") == 1, stats

    sweep_dir = store.sweep_dir(config["sweep"])
    table = pq.read_table(sweep_dir / "runs.parquet", columns=["run_id"])
    distinct = len(set(table.column("run_id").to_pylist()))
    assert distinct == n, f"runs.parquet holds {distinct} run ids, expected {n}"
    assert (sweep_dir / "report" / "index.html").is_file()
    return {"dryrun_s": dry_s, "report_s": report_s, "train_jobs": dry_stats.get("train", 0)}


def main() -> None:
    rng = random.Random(0)
    tmp_root = Path(tempfile.mkdtemp(prefix="ssmpipe-dag-scale-", dir="/tmp"))
    try:
        small = measure(24, tmp_root, rng)
        large = measure(10_000, tmp_root, rng)
    finally:
        shutil.rmtree(tmp_root, ignore_errors=True)
    figures = {"dryrun_10k_s": round(large["dryrun_s"], 3), "report_10k_s": round(large["report_s"], 3),
               "dryrun_24_s": round(small["dryrun_s"], 3), "report_24_s": round(small["report_s"], 3),
               "dryrun_10k_vs_24": round(large["dryrun_s"] / small["dryrun_s"], 2),
               "report_10k_vs_24": round(large["report_s"] / small["report_s"], 2),
               "train_jobs_10k": large["train_jobs"]}
    for key, target in TARGETS.items():
        verdict = "met" if figures[key] <= target else "MISSED"
        print(f"target {key} <= {target:g} s: {figures[key]:.2f} s ({verdict})")
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
