"""How long does one redraw of `ssmpipe status --watch` take on a 5,000-point sweep in flight?

A synthetic store: 5,000 points in 625 shards, 600 trained, 10 training now (each holding its
shard's lock, with a progress record), 15 to train. Measured in this process, interleaved,
best of --repeats:
  * baseline: a full status (plan the sweep, read every trained shard's statuses): what a
    user would otherwise run each time (`watch ssmpipe status my-sweep.yaml`);
  * redraw: `sweep_status(config, previous)`, what --watch does after its first table (the plan
    and the trained shards' counts reused; only the 25 untrained shards checked).
The last line printed is a JSON object of the figures.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from conftest import tiny_config

from ssmpipe import config as cfg
from ssmpipe import sweep
from ssmpipe.progress import Progress
from ssmpipe.runs import write_runs
from ssmpipe.status import render, sweep_status
from ssmpipe.store import Store


def synthetic_store(root: Path) -> tuple[dict, list]:
    """The sweep's config and the locks held for its 10 training shards."""
    config = cfg.check(
        tiny_config(
            results=str(root),
            shard_size=8,
            **{
                "grid.model.init.real": [-x / 10 for x in range(10)],
                "grid.model.init.imag": [0.1 * x for x in range(10)],
                "grid.seq_len": [16, 20, 24, 28, 32],
                "grid.seed": list(range(10)),
            },
        )
    )
    plan = sweep.plan(config)
    store = Store(root)
    points = {p.run_id: p for p in plan.points}
    members: dict[str, list] = {}
    for run_id, shard in plan.shard_of.items():
        members.setdefault(shard, []).append(points[run_id])
    for shard in plan.shards[:600]:
        write_runs(
            [
                {
                    "run_id": p.run_id,
                    "shard_id": shard,
                    "settings": p.settings,
                    "epoch": e,
                    "train_loss": 1.0,
                    "train_acc": 0.5,
                    "test_loss": 1.0,
                    "test_acc": 0.5,
                    "wall_s": 0.1,
                    "status": "ok",
                    "error": None,
                }
                for p in members[shard]
                for e in range(3)
            ],
            store.runs_path(shard),
        )
    locks = []
    for shard in plan.shards[600:610]:
        lock = store.shard_lock(shard)
        lock.acquire()
        locks.append(lock)
        progress = Progress(root, shard, [20])
        progress.start()
        progress.epoch(0, {"epoch": 0, "rows": [{"epoch": 0, "train_loss": 1.0}] * 8})
    return config, locks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        config, locks = synthetic_store(Path(folder) / "results")
        first = sweep_status(config)
        assert first.shards["training"] == 10 and first.shards["trained"] == 600, render(first)
        full, redraw = [], []
        for _ in range(args.repeats):  # interleaved: baseline, then redraw
            start = time.perf_counter()
            sweep_status(config)
            full.append(time.perf_counter() - start)
            start = time.perf_counter()
            again = sweep_status(config, first)
            redraw.append(time.perf_counter() - start)
            assert again.points == first.points
        for lock in locks:
            lock.release()
    figures = {
        "points": 5000,
        "shards": 625,
        "full_status_s": round(min(full), 4),
        "redraw_s": round(min(redraw), 4),
        "speedup": round(min(full) / min(redraw), 1),
    }
    print(f"full status {figures['full_status_s']} s, --watch redraw {figures['redraw_s']} s (best of {args.repeats})")
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
