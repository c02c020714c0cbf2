"""Store round trip, typed columns, and atomic writes."""

import math
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import yaml
from conftest import TINY, runs_rows, tiny_config

from ssmpipe import config as cfg
from ssmpipe import store, sweep
from ssmpipe.atomic import atomic_path
from ssmpipe.errors import StoreError
from ssmpipe.runs import read_runs, rows_to_table, runs_schema, write_runs
from ssmpipe.table import aggregate


def test_round_trip_keeps_values_and_types(tmp_path):
    points = sweep.expand(cfg.check(tiny_config()))
    rows = runs_rows(points)
    path = tmp_path / "runs.parquet"
    assert write_runs(rows, path).schema == runs_schema()
    assert pq.read_schema(path).remove_metadata() == runs_schema()  # the file itself is typed, not only its reader
    table = read_runs([path])
    assert table.schema == runs_schema()
    df = table.to_pandas()
    assert len(df) == len(rows) and df["run_id"].nunique() == len(points)
    assert df["model.init.real"].dtype == "float64" and df["seq_len"].dtype == "int64"
    assert df["task.name"].eq("delay").all() and df["task.path"].isna().all()
    got = df.set_index(["run_id", "epoch"]).sort_index()
    want = pd.DataFrame(rows).set_index(["run_id", "epoch"]).sort_index()
    pd.testing.assert_series_equal(got["train_loss"], want["train_loss"])
    assert got["test_loss"].isna().sum() == want["test_loss"].isna().sum() == 3
    assert set(got["status"]) == {"ok", "diverged"}
    some = points[2]
    assert (df[df.run_id == some.run_id]["model.init.real"] == some.settings["model"]["init"]["real"]).all()


def test_read_runs_filters_run_ids(tmp_path):
    points = sweep.expand(cfg.check(tiny_config()))
    write_runs(runs_rows(points[:4]), tmp_path / "a.parquet")
    write_runs(runs_rows(points[4:]), tmp_path / "b.parquet")
    want = [points[0].run_id, points[5].run_id]
    table = read_runs([tmp_path / "a.parquet", tmp_path / "b.parquet"], want)
    assert sorted(set(table.column("run_id").to_pylist())) == sorted(want)


def test_a_runs_rows_are_never_replaced_by_fewer_unless_it_failed(tmp_path):
    points = sweep.expand(cfg.check(tiny_config()))[:2]
    path = tmp_path / "runs.parquet"
    write_runs(runs_rows(points, epochs=3), path)
    with pytest.raises(StoreError, match=f"refusing to replace the 4 rows of run {points[0].run_id} with 2"):
        write_runs(runs_rows(points, epochs=1), path)
    assert pq.read_table(path).num_rows == 8  # the file is as it was
    write_runs(runs_rows(points, epochs=5), path)  # more rows: fine
    failed = [{**r, "status": "failed"} for r in runs_rows(points, epochs=5)]
    write_runs(failed, path)
    write_runs(runs_rows(points, epochs=1), path)  # a failed run may be tried again
    assert pq.read_table(path).num_rows == 4
    single = tmp_path / "single.parquet"
    write_runs(runs_rows(points, epochs=0), single)  # one row each
    with pytest.raises(StoreError, match=f"refusing to replace the 1 rows of run {points[0].run_id} with 0$"):
        write_runs(runs_rows(points[1:], epochs=0), single)  # a whole run dropped
    assert pq.read_table(single).num_rows == 2


def test_aggregate_needs_every_point_and_never_shrinks_silently(tmp_path, caplog):
    config = cfg.check(tiny_config(results=str(tmp_path)))
    plan = sweep.plan(config)
    st = store.Store(tmp_path)
    by_shard = {}
    for p in plan.points:
        by_shard.setdefault(plan.shard_of[p.run_id], []).append(p)
    for shard, members in by_shard.items():
        write_runs([{**r, "shard_id": shard} for r in runs_rows(members)], st.runs_path(shard))
    out = st.sweep_dir("tiny") / "runs.parquet"
    assert aggregate(st, "tiny", out).num_rows == 8 * 3
    smaller = cfg.check(tiny_config(results=str(tmp_path), **{"grid.seed": [0]}))
    sweep.plan(smaller)  # the grid drops seed 1
    assert aggregate(st, "tiny", out).num_rows == 4 * 3
    assert "shrinks from 24 to 12 rows (4 runs no longer in the sweep" in caplog.text
    assert pq.read_table(out.with_name("runs.previous.parquet")).num_rows == 24  # the old table is kept
    bigger = cfg.check(tiny_config(results=str(tmp_path), **{"grid.seed": [0, 1, 2]}))
    sweep.plan(bigger)  # seed 2: planned, not trained
    with pytest.raises(StoreError, match=r"store/runs/\w+\.parquet does not exist: its 2 runs have no rows"):
        aggregate(st, "tiny", out)


def _store_every_shard(plan, st):
    """Rows for every point of a plan, written to their shards as `ssmpipe train` writes them."""
    for shard in plan.shards:
        members = [p for p in plan.points if plan.shard_of[p.run_id] == shard]
        write_runs([{**r, "shard_id": shard} for r in runs_rows(members)], st.runs_path(shard))


def _comparable(table):
    """A table's rows with NaN spelled "nan" (NaN != NaN)."""
    return [
        {k: "nan" if isinstance(v, float) and math.isnan(v) else v for k, v in row.items()} for row in table.to_pylist()
    ]


def _npz(path, seed):
    rng = np.random.default_rng(seed)
    np.savez(
        path,
        **{
            f"{xy}_{split}": rng.integers(0, 4, (n, 16), dtype=np.int64)
            for split, n in (("train", 8), ("test", 4))
            for xy in "xy"
        },
    )
    return str(path)


@pytest.mark.parametrize(
    "grid",
    [
        {"model.init.real": [-1, 0], "train.lr": [0.01, 0.1], "seed": [0, 1]},  # ints given for number settings
        {"task.path": ["a.npz", "b.npz"], "model.init.imag": [1.0, 2.0]},  # each data file: its own data hash
    ],
)
def test_aggregate_rebuilds_the_settings_each_row_was_stored_with(tmp_path, grid):
    """aggregate reads a runs file's results and rebuilds the settings from the sweep's config snapshot: the
    table equals every stored column read back (the settings train wrote), row for row, value for value."""
    if "task.path" in grid:
        grid = {**grid, "task.path": [_npz(tmp_path / name, i) for i, name in enumerate(grid["task.path"])]}
    fixed = TINY["fixed"]
    if "task.path" in grid:
        fixed = {**fixed, "task": {"name": "npz", "vocab": 4, "path": grid["task.path"][0]}}
    config = cfg.check(tiny_config(results=str(tmp_path), fixed=fixed, grid=grid))
    plan = sweep.plan(config)
    st = store.Store(tmp_path)
    _store_every_shard(plan, st)
    table = aggregate(st, "tiny", st.sweep_dir("tiny") / "runs.parquet")
    stored = read_runs([st.runs_path(s) for s in plan.shards])
    assert _comparable(table.drop_columns(["sweep"])) == _comparable(stored)
    assert table.column_names == [*runs_schema().names, "sweep"] and table.num_rows == len(plan.points) * 3
    for key in grid:
        values = {cfg.get_path(p.settings, key) for p in plan.points}
        assert sorted(table.column(key).unique().to_pylist()) == sorted(values)
    if "task.path" in grid:
        assert len(table.column("task.data_hash").unique()) == 2
        Path(grid["task.path"][1]).unlink()  # a data file gone: said, not misread
        with pytest.raises(
            StoreError,
            match=r"config.yaml': its points' run ids cannot be computed again, "
            r"'.*b\.npz' is unreadable \(No such file",
        ):
            aggregate(st, "tiny", st.sweep_dir("tiny") / "runs.parquet")


def test_aggregate_refuses_a_snapshot_whose_points_are_not_the_manifests(tmp_path):
    """The settings come from the config snapshot only when its points hash to the manifest's run ids: an edited,
    damaged or missing snapshot is a StoreError naming it, and the previous table stays as it was."""
    config = cfg.check(tiny_config(results=str(tmp_path)))
    plan = sweep.plan(config)
    st = store.Store(tmp_path)
    _store_every_shard(plan, st)
    out = st.sweep_dir("tiny") / "runs.parquet"
    aggregate(st, "tiny", out)
    before = out.read_bytes()
    snapshot = st.config_path("tiny")
    good = snapshot.read_text()
    edited = yaml.safe_load(good)
    edited["fixed"]["train"]["lr"] = 0.5  # settings the rows were not trained with
    huge = yaml.safe_load(good)
    huge["grid"] = {"seed": list(range(10_000)), "train.lr": [0.1 * (i + 1) for i in range(10_000)]}
    for text, words in [
        (yaml.safe_dump(edited), "disagree (16 run ids differ): rerun snakemake"),
        (yaml.safe_dump(huge), "config.yaml' has 100,000,000 points, '"),  # refused unexpanded
        ("fixed: [", "is not a sweep's config snapshot (ParserError: expected the node content"),
        ("just a string", "is not a sweep's config snapshot (TypeError"),
        (None, "is unreadable"),
    ]:
        if text is None:
            snapshot.unlink()
        else:
            snapshot.write_text(text)
        with pytest.raises(StoreError) as e:
            aggregate(st, "tiny", out)
        assert str(snapshot) in str(e.value) and words in str(e.value) and "StoreError" not in str(e.value), e.value
        assert out.read_bytes() == before
    snapshot.write_text(good)
    assert aggregate(st, "tiny", out).num_rows == 8 * 3


def test_failed_write_leaves_old_file_and_no_temp(tmp_path):
    path = tmp_path / "runs.parquet"
    points = sweep.expand(cfg.check(tiny_config()))
    write_runs(runs_rows(points[:2]), path)
    before = path.read_bytes()
    bad = runs_rows(points[:2])
    bad[0]["epoch"] = "not an int"
    with pytest.raises((ValueError, TypeError)):  # pyarrow's ArrowInvalid / ArrowTypeError
        write_runs(bad, path)
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["runs.parquet"]


def test_writer_killed_midway_never_leaves_a_partial_file(tmp_path):
    """SIGKILL a process while it is inside atomic_path: the target is the old file or nothing."""
    path = tmp_path / "out.bin"
    path.write_bytes(b"old")
    code = textwrap.dedent(f"""
        import sys, time
        from ssmpipe.atomic import atomic_path
        with atomic_path({str(path)!r}) as tmp:
            with open(tmp, "wb") as f:
                f.write(b"partial"); f.flush()
                print("writing", flush=True)
                time.sleep(60)
    """)
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "writing"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert path.read_bytes() == b"old"
    with atomic_path(path) as tmp:
        tmp.write_bytes(b"new")
    assert path.read_bytes() == b"new"


def test_parquet_is_readable_by_pyarrow_and_pandas(tmp_path):
    points = sweep.expand(cfg.check(tiny_config()))
    path = tmp_path / "runs.parquet"
    write_runs(runs_rows(points), path)
    assert pq.read_table(path).num_rows == pd.read_parquet(path).shape[0] == len(points) * 3


def test_runs_files_checked_together_get_the_verdicts_and_messages_of_one_by_one(tmp_path):
    """runs_problems (one scan of many files) must say of each file what runs_problem says of it alone."""
    points = sweep.expand(cfg.check(tiny_config()))
    st = store.Store(tmp_path)
    ids = [p.run_id for p in points[:3]]
    damaged = {
        "good": runs_rows(points[:3]),
        "missing_run": runs_rows(points[:2]),
        "extra_run": runs_rows(points[:4]),
        "gap": [r for r in runs_rows(points[:3]) if not (r["run_id"] == ids[1] and r["epoch"] == 1)],
        "duplicate": runs_rows(points[:3]) + [r for r in runs_rows(points[:3]) if r["epoch"] == 2][:1],
        "no_epoch_0": [r for r in runs_rows(points[:3]) if r["epoch"] > 0],
        "truncated_epochs": runs_rows(points[:3], epochs=1),  # every run ok at epoch 1 of 2: its last rows lost
        "diverged_early": [
            {**r, "status": "diverged"} if r["epoch"] == 1 else r for r in runs_rows(points[:3], epochs=1)
        ],
    }
    st.runs_path("x").parent.mkdir(parents=True)
    for shard, rows in damaged.items():
        pq.write_table(rows_to_table(rows), st.runs_path(shard))
    st.runs_path("truncated").write_bytes(st.runs_path("good").read_bytes()[:300])
    expected = {shard: dict.fromkeys(ids, 2) for shard in [*damaged, "truncated"]}  # each run trains 2 epochs
    together = st.runs_problems(expected)
    alone = {shard: st.runs_problem(shard, expected[shard]) for shard in expected}
    assert together == alone
    fine = {"good", "diverged_early"}  # a run may end early where its last row says why
    assert all(together[s] is None for s in fine) and all(together[s] for s in expected if s not in fine)
    assert "not a runs table" in together["truncated"] and "has epochs" in together["gap"]
    assert "ends at epoch 1 of 2, still ok" in together["truncated_epochs"]
    del expected["truncated"]  # without a file that stops the scan, the scan decides
    assert st.runs_problems(expected) == {s: alone[s] for s in expected}


def test_read_runs_fills_the_columns_an_older_file_lacks(tmp_path):
    points = sweep.expand(cfg.check(tiny_config()))
    table = rows_to_table(runs_rows(points[:2]))
    old = table.drop_columns(["grad_norm", "tau_layers", "study"])
    pq.write_table(old, tmp_path / "old.parquet")
    write_runs(runs_rows(points[2:4]), tmp_path / "new.parquet")
    both = read_runs([tmp_path / "old.parquet", tmp_path / "new.parquet"])
    assert both.schema == runs_schema() and both.num_rows == 4 * 3
    assert both.column("grad_norm").null_count == both.num_rows
    with pytest.raises(StoreError, match="bad.parquet: not a runs table"):
        (tmp_path / "bad.parquet").write_bytes(b"not parquet")
        read_runs([tmp_path / "new.parquet", tmp_path / "bad.parquet"])


NEW_MEASURES = ["chance_acc", "dt", "rho_A", "S2"]  # columns added after runs files were already stored


def test_aggregate_reads_runs_files_written_before_the_new_measures_with_them_null(tmp_path):
    """Shards stored before chance_acc, dt, rho_A and S2 existed stay trusted (not quarantined, not planned again),
    and aggregate gives their rows those columns as nulls beside shards that have them."""
    config = cfg.check(tiny_config(results=str(tmp_path)))
    plan = sweep.plan(config)
    st = store.Store(tmp_path)
    for shard in plan.shards:
        members = [p for p in plan.points if plan.shard_of[p.run_id] == shard]
        rows = [
            {**r, "shard_id": shard, "chance_acc": 0.25, "dt": 0.01, "rho_A": 0.9, "S2": 12.0}
            for r in runs_rows(members)
        ]
        write_runs(rows, st.runs_path(shard))
    old = plan.shards[0]
    table = pq.read_table(st.runs_path(old))
    assert set(NEW_MEASURES) <= set(table.column_names)
    pq.write_table(table.drop_columns(NEW_MEASURES), st.runs_path(old))  # as an older ssmpipe wrote it
    again = sweep.plan(config)
    assert again.pending == [] and again.untrusted == [] and st.runs_path(old).exists()
    assert not (tmp_path / "store" / "quarantine").exists()
    out = st.sweep_dir("tiny") / "runs.parquet"
    df = aggregate(st, "tiny", out).to_pandas()
    assert len(df) == len(plan.points) * 3 and pq.read_table(out).schema.field("S2").type == "double"
    from_old = df["shard_id"] == old
    assert 0 < from_old.sum() < len(df)
    assert df.loc[from_old, NEW_MEASURES].isna().all().all()
    assert (df.loc[~from_old, NEW_MEASURES].to_numpy() == [0.25, 0.01, 0.9, 12.0]).all()
    assert df["train_loss"].notna().all()  # the rest of the old rows as stored


def test_a_verified_runs_file_is_skipped_until_it_changes_then_checked_again(tmp_path, monkeypatch):
    """Store.write_runs records what it wrote; a check reads only files changed since (same size, mtime put back: still
    read), and a record that is not JSON is ignored."""
    config = cfg.check(tiny_config(results=str(tmp_path), shard_size=2))
    plan = sweep.plan(config)
    st = store.Store(tmp_path)
    for shard in plan.shards:
        members = [p for p in plan.points if plan.shard_of[p.run_id] == shard]
        st.write_runs(shard, [{**r, "shard_id": shard} for r in runs_rows(members)])
    read = []  # the runs files a check reads
    real = store._epoch_counts
    monkeypatch.setattr(store, "_epoch_counts", lambda paths: read.extend(paths) or real(paths))
    assert all(done for _, done in st.trusted_all(st.iter_specs(), repair=False).values())
    assert read == []  # all recorded by write_runs: none read

    edited, replaced, garbled = sorted(plan.shards)[:3]
    path = st.runs_path(edited)
    before = path.stat()
    time.sleep(0.05)  # past the clock tick of the write
    with open(path, "r+b") as f:  # same size, footer magic broken
        f.seek(-4, os.SEEK_END)
        f.write(b"XXXX")
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))  # mtime put back; ctime cannot be
    assert path.stat().st_size == before.st_size and path.stat().st_mtime_ns == before.st_mtime_ns
    table = pq.read_table(st.runs_path(replaced))
    with atomic_path(st.runs_path(replaced)) as tmp:  # the same rows, a new file
        pq.write_table(table, tmp)
    st.verified_path(garbled).write_text("{not json")

    again = sweep.plan(config)  # the plan job: checks, repairs, records
    assert sorted(read) == sorted(str(st.runs_path(s)) for s in (edited, replaced, garbled))
    assert again.pending == [edited]  # the broken file quarantined
    assert not path.exists() and any((tmp_path / "store" / "quarantine").glob(f"*{edited}.parquet"))
    read.clear()
    assert sweep.plan(config, write=False).pending == [edited] and read == []  # the rest recorded again
