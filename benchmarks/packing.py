"""How much faster is a 64-point sweep trained packed in one process than as 64 processes?

The same 64 small-SSM sweep points (4 real parts × 4 imaginary scales × 4 seeds, delay
task) are trained twice through the real CLI (`ssmpipe train`):
  * packed: one shard of 64 points, one process, one batched model (2 threads);
  * processes: 64 shards of one point, one process each, 2 at a time on the 2 cores
    (what a one-job-per-point sweep tool does on this machine).
Both produce the same metrics (checked). Target: processes_s / packed_s >= 20.
Last line: one JSON object of the figures.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd

from ssmpipe import config as cfg
from ssmpipe import sweep
from ssmpipe.store import Store

CONFIG = {
    "sweep": "packing",
    "fixed": {"task": {"name": "delay", "lag": 8, "vocab": 8, "n_train": 256, "n_test": 128},
              "seq_len": 64, "model": {"d_model": 16, "d_state": 16, "n_layers": 1},
              "train": {"epochs": 3, "batch_size": 64, "lr": 0.01}},
    "grid": {"model.init.real": [-1.0, -0.5, -0.1, 0.0], "model.init.imag": [0.1, 0.5, 1.0, 2.0],
             "seed": [0, 1, 2, 3]},
}


def train(root: Path, shard: str, threads: int) -> None:
    subprocess.run([sys.executable, "-m", "ssmpipe", "train", "--results", str(root), "--device", "cpu",
                    "--threads", str(threads), shard], check=True, capture_output=True)


def plan(root: Path, shard_size: int) -> list[str]:
    return sweep.plan(cfg.check({**CONFIG, "results": str(root), "shard_size": shard_size})).pending


def final_metrics(root: Path, shards: list[str]) -> pd.DataFrame:
    df = pd.concat(pd.read_parquet(Store(root).runs_path(s)) for s in shards)
    return df.set_index(["run_id", "epoch"]).sort_index()[["train_loss", "test_loss", "test_acc"]]


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="ssmpipe-packing-") as tmp:
        packed_root, procs_root = Path(tmp) / "packed", Path(tmp) / "processes"
        [packed_shard] = plan(packed_root, 64)
        single_shards = plan(procs_root, 1)
        assert len(single_shards) == 64
        # data sets are cached before timing (both sides read the same cached file)
        for root in (packed_root, procs_root):
            subprocess.run([sys.executable, "-c", "import sys; from ssmpipe.train import ensure_data; "
                            "from ssmpipe.store import Store; from ssmpipe import data, sweep, config as cfg; "
                            f"c = cfg.check({CONFIG!r}); s = sweep.expand(c)[0].settings; "
                            f"ensure_data(Store({str(root)!r}), data.spec_of(s))"], check=True)

        t0 = time.perf_counter()
        train(packed_root, packed_shard, threads=2)
        packed_s = time.perf_counter() - t0
        print(f"packed: 64 points in one process: {packed_s:.1f} s", flush=True)

        t0 = time.perf_counter()
        with ThreadPoolExecutor(max_workers=2) as pool:
            list(pool.map(lambda s: train(procs_root, s, threads=1), single_shards))
        processes_s = time.perf_counter() - t0
        print(f"processes: 64 processes, 2 at a time: {processes_s:.1f} s", flush=True)

        a, b = final_metrics(packed_root, [packed_shard]), final_metrics(procs_root, single_shards)
        max_diff = float(np.nanmax(np.abs(a.to_numpy() - b.to_numpy())))
        print(f"largest metric difference packed vs separate: {max_diff:.2e}")
        assert a.index.equals(b.index) and max_diff < 1e-4

    ratio = processes_s / packed_s
    print(f"packed vs processes: {ratio:.1f}x (target >= 20x)")
    print(json.dumps({"packed_vs_processes_64": round(ratio, 2), "packed_s": round(packed_s, 2),
                      "processes_s": round(processes_s, 2)}))


if __name__ == "__main__":
    main()
