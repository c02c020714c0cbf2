"""`ssmpipe status`: a 5,000-point sweep counted by state from a real store (its speed: benchmarks/status_watch.py);
a real training process followed through training now, interrupted (killed) and done (rerun), by `status` and
`status --watch`."""

import json
import math
import subprocess
import sys
import time

from conftest import tiny_config, write_config

from ssmpipe import config as cfg
from ssmpipe import progress, sweep
from ssmpipe.runs import write_runs
from ssmpipe.status import sweep_status
from ssmpipe.store import Store


def test_status_counts_a_5000_point_sweep_by_state(tmp_path):
    config = cfg.check(
        tiny_config(
            results=str(tmp_path / "results"),
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
            rows += [
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
                    "status": state,
                    "error": None,
                }
                for e in range(3)
            ]
        write_runs(rows, store.runs_path(shard))
    for shard in plan.shards[600:610]:
        store.ckpt_path(shard).parent.mkdir(parents=True, exist_ok=True)
        store.ckpt_path(shard).write_bytes(b"checkpoint")
    pending_points = sum(len(members[s]) for s in plan.shards[610:])

    status = sweep_status(config)  # its speed: benchmarks/status_watch.py
    assert {k: status.points[k] for k in want} == want and sum(want.values()) == 600 * 8
    assert status.points["interrupted"] == sum(len(members[s]) for s in plan.shards[600:610])
    assert status.shards["interrupted"] == 10 and status.shards["to train"] == 15
    assert status.points["to train"] == pending_points and status.total == 5000

    # a redraw of --watch reuses the plan and the trained shards' counts: it checks only the 25 untrained shards
    again = sweep_status(config, status)
    assert again.points == status.points and again.shards == status.shards

    # the command: one compact table naming every state it counts
    configfile = write_config(tmp_path, config)
    out = subprocess.run(
        [sys.executable, "-m", "ssmpipe", "status", str(configfile)],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    ).stdout
    assert "5000 points in 625 shards (600 trained)" in out, out
    lines = out.splitlines()
    table = {line.split()[0]: line.split()[1:] for line in lines[2:] if not line.startswith("  shard")}
    assert table["ok"] == [str(want["ok"])] and table["diverged"] == [str(want["diverged"])]
    assert table["failed"] == [str(want["failed"])] and table["interrupted"] == ["80", "10"]
    assert table["to"] == ["train", str(pending_points), "15"]
    listed = [line for line in lines if line.startswith("  shard")]  # the interrupted shards, one line each
    assert len(listed) == 10 and all("interrupted: a checkpoint" in line for line in listed), out
    assert len(lines) - len(listed) <= 12


def _wait_for(what, timeout: float = 300):
    """Poll what() every 50 ms until it is truthy; return it."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        got = what()
        if got:
            return got
        time.sleep(0.05)
    raise AssertionError(f"{what} not true within {timeout} s")


def _table(text: str) -> dict[str, list[str]]:
    """State -> [points, shards] of one `ssmpipe status` table."""
    return {
        " ".join(w for w in line.split() if not w.isdigit()): [w for w in line.split() if w.isdigit()]
        for line in text.splitlines()[2:]
        if not line.startswith("  shard")
    }


def test_status_follows_a_shard_training_now_then_killed_then_rerun(tmp_path):
    config = cfg.check(
        tiny_config(
            results=str(tmp_path / "results"),
            **{"fixed.train.epochs": 30, "grid.model.init.real": [-0.5], "grid.seq_len": [16], "grid.seed": [0, 1]},
        )
    )
    configfile = write_config(tmp_path, config)
    ssmpipe = [sys.executable, "-m", "ssmpipe"]
    with open(tmp_path / "watch.out", "w") as out:  # not a terminal: one table per redraw
        watch = subprocess.Popen(
            [*ssmpipe, "status", "--watch", "--interval", "0.2", str(configfile)],
            stdout=out,
            stderr=subprocess.DEVNULL,
            text=True,
        )
    _wait_for(lambda: "to train" in (tmp_path / "watch.out").read_text())  # watching before the training starts
    try:
        with open(tmp_path / "train1.log", "w") as log:
            train = subprocess.Popen([*ssmpipe, "train", str(configfile)], stderr=log)
        [shard] = sweep.plan(config, write=False).shards
        try:
            record = _wait_for(lambda: (r := progress.read(config["results"], shard)) and r["epoch"] >= 3 and r)
            now = sweep_status(config)
        finally:
            train.kill()
            train.wait()
        # training now: the process holding the shard's lock, its epoch, mean train loss, pace and time left
        assert now.points["training"] == 2 and now.shards["training"] == 1 and not now.finished
        state, seen = now.progress[shard]
        assert state == "training" and seen["pid"] == train.pid and 3 <= seen["epoch"] < 30, seen
        assert seen["epochs"] == 30 and seen["alive"] == 2
        assert math.isfinite(seen["train_loss"]) and seen["train_loss"] > 0
        assert seen["epoch_s"] > 0 and math.isclose(seen["eta_s"], seen["epochs_left"] * seen["epoch_s"], rel_tol=1e-9)
        assert seen["epochs_left"] == 30 - seen["epoch"] and record["epoch"] <= seen["epoch"]

        # killed: interrupted, with the epoch it stopped after; the command says so
        stopped = sweep_status(config)
        assert stopped.points["interrupted"] == 2 and stopped.points["training"] == 0
        out = subprocess.run(
            [*ssmpipe, "status", str(configfile)], capture_output=True, text=True, check=True, timeout=300
        ).stdout
        last = progress.read(config["results"], shard)["epoch"]
        assert _table(out)["interrupted"] == ["2", "1"] and "training" not in _table(out), out
        assert f"shard {shard[:8]} interrupted: stopped after epoch {last}/30" in out, out

        # rerun: resumes, finishes; the record is gone, every point done, and --watch ends by itself (exit 0)
        with open(tmp_path / "train2.log", "w") as log:
            subprocess.run([*ssmpipe, "train", str(configfile)], stderr=log, check=True, timeout=600)
        assert f"after epoch {last}" in (tmp_path / "train2.log").read_text()
        logs = [(tmp_path / name).read_text() for name in ("train1.log", "train2.log")]
        assert "epoch 3/30 train_loss" in logs[0] and "epoch 30/30 train_loss" in logs[1]
        assert not any("\r" in text or "|" in text for text in logs)  # a log file: a line per epoch, no progress bar
        done = sweep_status(config)
        assert done.finished and done.points["ok"] == 2 and not done.progress
        assert not progress.path(config["results"], shard).exists()
        assert watch.wait(timeout=120) == 0
    finally:
        watch.kill()
    # --watch into a file: one table after another, no escape codes; it saw all three states, in order
    shown = (tmp_path / "watch.out").read_text()
    assert "\033" not in shown
    tables = [_table("\n".join(t.splitlines()[1:])) for t in shown.split("\n\n") if t.strip()]
    states = [
        next(s for s in ("to train", "training", "interrupted", "ok") if t.get(s, ["0"])[0] == "2") for t in tables
    ]
    order = [s for i, s in enumerate(states) if i == 0 or states[i - 1] != s]
    assert order == ["to train", "training", "interrupted", "training", "ok"], shown


def test_a_progress_record_is_read_back_and_anything_else_is_no_record(tmp_path):
    written = progress.Progress(tmp_path, "s", [4, 6])
    written.start()
    for epoch in range(3):  # epochs 1 and 2 follow one another in this process: timed
        written.epoch(
            0, {"epoch": epoch, "rows": [{"epoch": epoch, "train_loss": 2.0}, {"epoch": epoch, "train_loss": math.nan}]}
        )
    record = progress.read(tmp_path, "s")
    assert (record["group"], record["groups"], record["epoch"], record["epochs"]) == (1, 2, 2, 4)
    assert record["epochs_left"] == 2 + 6 and record["alive"] == 2 and record["train_loss"] == 2.0  # NaN left out
    assert record["epoch_s"] > 0 and math.isclose(record["eta_s"], 8 * record["epoch_s"], rel_tol=1e-9)
    for bad in (
        "not json",
        "[1, 2]",
        '{"epoch": 3}',
        json.dumps({**record, "epoch": "3"}),
        json.dumps({**record, "pid": True}),
        json.dumps({**record, "host": "\u001b]0;owned\u0007"}),
        json.dumps({**record, "started": None}),
    ):
        progress.path(tmp_path, "s").write_text(bad)
        assert progress.read(tmp_path, "s") is None, bad
    written.done()
    assert progress.read(tmp_path, "s") is None and not progress.path(tmp_path, "s").exists()
