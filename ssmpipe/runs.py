"""Runs tables: one row per (run, epoch), typed by `runs_schema`, written atomically and read back in bulk.

A runs file holds a shard's rows (store/runs/<shard>.parquet); a sweep's table (runs.parquet)
adds its name. A run's rows are never replaced by fewer rows (`write_runs`). Reading a file
written by an older ssmpipe gives nulls in the columns it lacks.
"""

from __future__ import annotations

import os
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ssmpipe import config as cfg
from ssmpipe.atomic import atomic_path
from ssmpipe.columns import LAYER_MEASURES, LENGTH_METRICS, MEASURES, METRICS, PROFILES
from ssmpipe.errors import StoreError

_ARROW = {
    "integer": pa.int64(),
    "number": pa.float64(),
    "string": pa.string(),
    "boolean": pa.bool_(),
    "array": pa.list_(pa.int64()),
}


def runs_schema() -> pa.Schema:
    settings = [pa.field(k, _ARROW[t]) for k, t in sorted(cfg.setting_types().items())]
    return pa.schema(
        [
            pa.field("run_id", pa.string()),
            pa.field("shard_id", pa.string()),
            *settings,
            pa.field("epoch", pa.int64()),
            *(pa.field(m, pa.float64()) for m in METRICS + MEASURES),
            *(pa.field(m, pa.list_(pa.float32())) for m in PROFILES + LENGTH_METRICS + LAYER_MEASURES),
            pa.field("wall_s", pa.float64()),
            pa.field("status", pa.string()),
            pa.field("error", pa.string()),
            pa.field("study", pa.string()),
            pa.field("trial_id", pa.string()),  # null unless a tune trial
            pa.field("device", pa.string()),  # where the epoch trained: "cpu", "cuda:<card name>"
            pa.field("cuda_version", pa.string()),
        ]
    )  # torch.version.cuda on CUDA, else null (older: null)


def rows_to_table(rows: list[dict]) -> pa.Table:
    """Rows {run_id, shard_id, settings, epoch, metrics..., wall_s, status, error} -> typed table."""
    schema = runs_schema()
    columns: dict[str, list] = {f.name: [] for f in schema}
    for row in rows:
        flat = cfg.flatten(row["settings"])
        for name in columns:
            columns[name].append(row.get(name, flat.get(name)))
    return pa.Table.from_pydict(columns, schema=schema)


def write_runs(rows: list[dict], path: str | Path) -> pa.Table:
    """Write a runs file atomically, and return its table; never over one that holds more rows of a run that did
    not fail (StoreError)."""
    table = rows_to_table(rows)
    if Path(path).exists():
        _check_no_fewer_rows(path, table)
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)
    return table


def read_runs(paths: list[str | Path], run_ids: list[str] | None = None, columns: list[str] | None = None) -> pa.Table:
    """Rows of the given store files (optionally only some run ids, and only some columns of runs_schema: each file
    is read column by column, so fewer columns read faster), one run's rows together."""
    schema = runs_schema()
    if columns is not None:
        schema = pa.schema([schema.field(name) for name in columns])
    if not paths:
        return schema.empty_table()
    parts = []
    with ThreadPoolExecutor(max(1, min(len(paths), os.cpu_count() or 1))) as pool:  # Parquet reads free the GIL
        for start in range(0, len(paths), READ_GROUP):
            group = pa.concat_tables(
                pool.map(lambda p: _conform(_read_parquet(p, schema.names), schema), paths[start : start + READ_GROUP])
            )
            parts.append(group.combine_chunks())  # one buffer per column, not one per file: 1.1 -> 0.7 GB at 3,200
    table = pa.concat_tables(parts)
    if run_ids is not None:
        ours = pc.is_in(table.column("run_id"), value_set=pa.array(run_ids, pa.string()))
        if not pc.all(ours).as_py():  # filtering costs a copy of every column: only when needed
            table = table.filter(ours)
    return table.sort_by([("run_id", "ascending"), ("epoch", "ascending")])


READ_GROUP = 256  # runs files read, then combined, at a time


def _read_parquet(path: str | Path, columns: list[str]) -> pa.Table:
    """The named columns of a runs file that has them (an older file may lack some: `_conform` fills them)."""
    try:
        file = pq.ParquetFile(path, pre_buffer=False)  # pre-buffering a small file's column chunks: ~30% slower
        present = set(file.schema_arrow.names)  # schema_arrow is built anew at each access
        return file.read(columns=[c for c in columns if c in present], use_threads=False)
    except (OSError, ValueError) as e:  # ValueError: pyarrow's ArrowInvalid (truncated, not Parquet)
        raise StoreError(f"{path}: not a runs table ssmpipe can read ({type(e).__name__}: {e})") from None


def _conform(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """A runs file's table with exactly the schema's columns: missing ones (an older file) null, others cast."""
    if table.schema.equals(schema):  # as write_runs wrote it: nothing to do (casting 71 columns is not free)
        return table
    columns = [
        table.column(f.name).cast(f.type) if f.name in table.column_names else pa.nulls(table.num_rows, f.type)
        for f in schema
    ]
    return pa.Table.from_arrays(columns, schema=schema)


def _check_no_fewer_rows(path: str | Path, new: pa.Table) -> None:
    try:
        old = pq.read_table(path, columns=["run_id", "status"]).to_pydict()
    except (OSError, ValueError, KeyError):
        return  # unreadable: nothing in it to lose
    before, after = Counter(old["run_id"]), Counter(new.column("run_id").to_pylist())  # run id -> its rows
    failed = {r for r, s in zip(old["run_id"], old["status"]) if s == "failed"}
    for rid, n in sorted(before.items()):
        if rid not in failed and after.get(rid, 0) < n:
            raise StoreError(f"{path}: refusing to replace the {n} rows of run {rid} with {after.get(rid, 0)}")


def contiguous(table: pa.Table) -> bool:
    """Whether each run of a runs table has epochs 0, 1, … without a gap or repeat (`runs_problem`'s epoch check)."""
    return all(numbered(*counts) for *_, counts in epoch_stats(table, ["run_id"]))


def epoch_stats(table: pa.Table, keys: list[str]) -> list[tuple]:
    """(*key values, (rows, lowest epoch, highest epoch, distinct epochs)) of each group of a table's rows."""
    g = (
        table.group_by(keys)
        .aggregate(
            [
                ("epoch", "count", pc.CountOptions(mode="all")),
                ("epoch", "min"),
                ("epoch", "max"),
                ("epoch", "count_distinct"),
            ]
        )
        .to_pydict()
    )
    counts = zip(g["epoch_count"], g["epoch_min"], g["epoch_max"], g["epoch_count_distinct"])
    return [(*key, c) for *key, c in zip(*(g[k] for k in keys), counts)]


def numbered(n: int, lo: int, hi: int, distinct: int) -> bool:
    """Whether n epochs from lo to hi, distinct of them, are 0, 1, …, n − 1."""
    return lo == 0 and hi == n - 1 and distinct == n
