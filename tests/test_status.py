"""`ssmpipe status`: a 5,000-point sweep counted by state from a real store, fast."""

import subprocess
import sys
import time

from conftest import tiny_config, write_config

from ssmpipe import config as cfg
from ssmpipe import sweep
from ssmpipe.status import sweep_status
from ssmpipe.store import Store, write_runs


def test_status_counts_a_5000_point_sweep_by_state(tmp_path):
    config = cfg.check(tiny_config(results=str(tmp_path / "results"), shard_size=8, **{
        "grid.model.init.real": [-x / 10 for x in range(10)], "grid.model.init.imag": [0.1 * x for x in range(10)],
        "grid.seq_len": [16, 20, 24, 28, 32], "grid.seed": list(range(10))}))
    plan = sweep.plan(config)
    store = Store(config["results"])
    assert len(plan.points) == 5000 and len(plan.shards) == 625
    points = {p.run_id: p for p in plan.points}
    members: dict[str, list] = {}
    for run_id, shard in plan.shard_of.items():
        members.setdefault(shard, []).append(points[run_id])

    # 600 shards trained (every 10th point diverged, every 50th failed), 10 interrupted, 15 untouched
    want = {"ok": 0, "diverged": 0, "failed": 0}
    for i, shard in enumerate(plan.shards[:600]):
        rows = []
        for j, p in enumerate(members[shard]):
            state = "failed" if (i * 8 + j) % 50 == 0 else "diverged" if (i * 8 + j) % 10 == 0 else "ok"
            want[state] += 1
            rows += [{"run_id": p.run_id, "shard_id": shard, "settings": p.settings, "epoch": e, "train_loss": 1.0,
                      "train_acc": 0.5, "test_loss": 1.0, "test_acc": 0.5, "wall_s": 0.1, "status": state,
                      "error": None} for e in range(3)]
        write_runs(rows, store.runs_path(shard))
    for shard in plan.shards[600:610]:
        store.ckpt_path(shard).parent.mkdir(parents=True, exist_ok=True)
        store.ckpt_path(shard).write_bytes(b"checkpoint")
    pending_points = sum(len(members[s]) for s in plan.shards[610:])

    start = time.perf_counter()
    status = sweep_status(config)
    took = time.perf_counter() - start
    assert took < 10, f"status of 5,000 points took {took:.1f} s"
    assert {k: status.points[k] for k in want} == want and sum(want.values()) == 600 * 8
    assert status.points["interrupted"] == sum(len(members[s]) for s in plan.shards[600:610])
    assert status.shards["interrupted"] == 10 and status.shards["to train"] == 15
    assert status.points["to train"] == pending_points and status.total == 5000

    # the command: one compact table naming every state it counts
    configfile = write_config(tmp_path, config)
    start = time.perf_counter()
    out = subprocess.run([sys.executable, "-m", "ssmpipe", "status", str(configfile)], capture_output=True,
                         text=True, check=True, timeout=120).stdout
    took = time.perf_counter() - start
    assert "5000 points in 625 shards (600 trained)" in out and took < 20, (out, took)
    table = {line.split()[0]: line.split()[1:] for line in out.splitlines()[2:] if not line.startswith("  shard")}
    assert table["ok"] == [str(want["ok"])] and table["diverged"] == [str(want["diverged"])]
    assert table["failed"] == [str(want["failed"])] and table["interrupted"] == ["80", "10"]
    assert table["to"] == ["train", str(pending_points), "15"]
    assert len(out.splitlines()) <= 12
