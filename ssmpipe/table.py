"""A sweep's table (<sweep>/runs.parquet): every row of its points, from the shards that hold them.

`aggregate` builds it; a row's settings are rebuilt from the sweep's config snapshot
(`sweep_settings`), not read from the runs files, and the table never shrinks silently.
"""

from __future__ import annotations

import logging
import math
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import yaml

from ssmpipe import config as cfg
from ssmpipe.atomic import atomic_path
from ssmpipe.errors import StoreError
from ssmpipe.inputs import load_yaml, read_file
from ssmpipe.layout import Layout
from ssmpipe.manifest import read_points
from ssmpipe.runs import read_runs, runs_schema
from ssmpipe.sweep import expand, varying_keys

log = logging.getLogger("ssmpipe.table")


def aggregate(store: Layout, sweep: str, out: str | Path) -> pa.Table:
    """The sweep's table: every row of its points, from the shards that hold them, with each point's settings.

    Every point must have rows (StoreError naming its shard otherwise). A row's settings are not read from its
    runs file (one column per setting, ~2/3 of the reading) but rebuilt from the sweep's config snapshot
    (`sweep_settings`), whose points must hash to the manifest's run ids: a row's settings are those its run id
    is the hash of. The table never shrinks silently: runs the previous table had and this one lacks (the grid
    changed) are named in a warning, and the previous table is kept beside it as runs.previous.parquet (also where
    `write_manifest` puts a stale one).
    """
    points = read_points(store, sweep)
    shards = sorted({p["shard"] for p in points})
    for shard in shards:
        if not store.runs_path(shard).exists():
            n = sum(p["shard"] == shard for p in points)
            raise StoreError(
                f"{store.runs_path(shard)} does not exist: its {n} runs have no rows; rerun snakemake, "
                f"which trains what is missing"
            )
    varying, fixed = sweep_settings(store, sweep, [p["run_id"] for p in points])
    schema = runs_schema()
    table = read_runs(
        [store.runs_path(s) for s in shards],
        [p["run_id"] for p in points],
        [f.name for f in schema if f.name not in fixed and f.name not in varying.column_names[1:]],
    )
    have = set(pc.unique(table.column("run_id")).to_pylist())
    missing = [p for p in points if p["run_id"] not in have]
    if missing:
        raise StoreError(
            f"{store.runs_path(missing[0]['shard'])} holds no rows of run {missing[0]['run_id']} "
            f"({len(missing)} of the sweep's {len(points)} runs have none): rerun snakemake, "
            f"which checks each shard and retrains what is missing"
        )
    point_of_row = pc.index_in(table.column("run_id"), value_set=varying.column("run_id"))
    columns = [
        table.column(f.name)
        if f.name in table.column_names
        else varying.column(f.name).take(point_of_row)
        if f.name in varying.column_names
        else pa.repeat(pa.scalar(fixed[f.name], f.type), table.num_rows)
        for f in schema
    ]
    table = pa.Table.from_arrays(
        [*columns, pa.repeat(pa.scalar(sweep, pa.string()), table.num_rows)],
        schema=schema.append(pa.field("sweep", pa.string())),
    )
    out = Path(out)
    if out.exists():
        _keep_if_shrinking(out, table)
    with atomic_path(out) as tmp:
        pq.write_table(table, tmp)
    return table


def sweep_settings(store: Layout, sweep: str, run_ids: list[str]) -> tuple[pa.Table, dict]:
    """The settings of the sweep's points, from its config snapshot: (one row per point: its run id and the settings
    that differ between points, the grid's (`sweep.varying_keys`); setting -> its value, for every other setting).

    The snapshot's grid is expanded again (`sweep.expand`), which hashes each point's settings to its run id, so a
    row here holds the settings its run id is the hash of; the expanded ids must be exactly `run_ids` (the
    manifest's), else StoreError."""
    path = store.config_path(sweep)
    try:
        text = read_file(path).decode("utf-8")
    except (OSError, ValueError) as e:  # ValueError: not a regular file, or not UTF-8
        raise StoreError(f"{str(path)!r} is unreadable ({e.strerror}): rerun snakemake, which writes it") from None
    try:
        config = load_yaml(text, str(path))
        n = math.prod(len(values) for values in config["grid"].values())  # counted before anything is expanded
        if n != len(run_ids):
            raise StoreError(
                f"{str(path)!r} has {n:,} points, {str(store.manifest_path(sweep))!r} {len(run_ids):,}: "
                f"rerun snakemake, which plans the sweep again"
            )
        points = expand(config)
        varying = varying_keys(config)
    except StoreError:
        raise
    except OSError as e:  # a data file the task reads (task.path), hashed into each run id
        raise StoreError(
            f"{str(path)!r}: its points' run ids cannot be computed again, {e.filename!r} is unreadable ({e.strerror})"
        ) from None
    except (yaml.YAMLError, KeyError, TypeError, ValueError, AttributeError) as e:
        why = getattr(e, "problem", None) or e  # a YAML error's own words, without its multi-line excerpt
        raise StoreError(
            f"{str(path)!r} is not a sweep's config snapshot ({type(e).__name__}: {why}): rerun "
            f"snakemake, which writes it again"
        ) from None
    ids = [p.run_id for p in points]
    if set(ids) != set(run_ids):
        differ = len(set(ids) ^ set(run_ids))
        raise StoreError(
            f"{str(path)!r} and {str(store.manifest_path(sweep))!r} disagree ({differ} run ids differ): "
            f"rerun snakemake, which plans the sweep again"
        )
    names = cfg.setting_types()
    fields = [f for f in runs_schema() if f.name in names and f.name in varying]
    table = pa.Table.from_arrays(
        [pa.array(ids, pa.string()), *(pa.array([_setting(p, f.name) for p in points], f.type) for f in fields)],
        schema=pa.schema([pa.field("run_id", pa.string()), *fields]),
    )
    first = cfg.flatten(points[0].settings) if points else {}
    return table, {name: first.get(name) for name in names if name not in varying}


def _setting(point, key: str):
    """A point's value of a dotted setting key: a grid value, or from its settings (None where it has none: no data
    hash without a task.path)."""
    if key in point.axes:
        return point.axes[key]
    try:
        return cfg.get_path(point.settings, key)
    except KeyError:
        return None


def _keep_if_shrinking(out: Path, table: pa.Table) -> None:
    try:
        old = pq.read_table(out, columns=["run_id"]).column("run_id")
    except (OSError, ValueError, KeyError):
        return
    lost = set(pc.unique(old).to_pylist()) - set(pc.unique(table.column("run_id")).to_pylist())  # ids, not rows
    if lost or len(old) > table.num_rows:
        kept = out.with_name("runs.previous.parquet")
        with atomic_path(kept) as tmp:
            shutil.copyfile(out, tmp)
        log.warning(
            "ssmpipe: %s shrinks from %d to %d rows (%d runs no longer in the sweep, e.g. %s); "
            "the previous table is kept as %s",
            out,
            len(old),
            table.num_rows,
            len(lost),
            sorted(lost)[:1] or "none",
            kept,
        )
