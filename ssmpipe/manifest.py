"""A sweep's own files in the store: its points (points.json) and its config snapshot (config.yaml).

The plan writes them, each only when it changes (Snakemake keys on mtime); the sweep's table and
report step aside while some of its shards must train again (`write_manifest`). `read_points`
reads the manifest back, as untrusted input.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import yaml

from ssmpipe import config as cfg
from ssmpipe.atomic import write_text
from ssmpipe.errors import StoreError
from ssmpipe.inputs import load_json, read_file
from ssmpipe.layout import NAME, Layout

log = logging.getLogger("ssmpipe.manifest")


def json_lines(head: dict, key: str, items: list) -> str:
    """JSON of {**head, key: items} with one item a line: readable, and encoded by json's C encoder (indent= is
    pure Python, ~10x slower on a 100,000-point manifest)."""
    lines = ",\n".join(json.dumps(item, sort_keys=True) for item in items)
    rest = "".join(f", {json.dumps(k)}: {json.dumps(v, sort_keys=True)}" for k, v in sorted(head.items()))
    return f"{{{json.dumps(key)}: [\n{lines}\n]{rest}}}\n"


def manifest_text(config: dict, plan) -> str:
    """The sweep's points.json: each point's run id, shard and grid values (plan: a `sweep.Plan`)."""
    points = [{"run_id": p.run_id, "shard": plan.shard_of[p.run_id], "axes": p.axes} for p in plan.points]
    return json_lines({"sweep": config["sweep"]}, "points", points)


def snapshot_text(config: dict) -> str:
    """The sweep's config.yaml: the checked config it was planned with."""
    return yaml.safe_dump(cfg.plain(config), sort_keys=False)


def stale_outputs(layout: Layout, config: dict, plan) -> list[Path]:
    """The sweep's table and report, where they exist while some of its shards must train (again)."""
    paths = (layout.table_path(config["sweep"]), layout.report_path(config["sweep"]))
    return [path for path in paths if plan.pending and path.exists()]


def write_snapshot(layout: Layout, config: dict) -> None:
    """The sweep's config.yaml, rewritten only when it changes."""
    write_text(layout.config_path(config["sweep"]), snapshot_text(config), only_if_changed=True)


def write_manifest(layout: Layout, config: dict, plan) -> None:
    """The sweep's points and its config, rewritten only when they change.

    A stale table and report (built from shards that must train again) step aside, kept as runs.previous.parquet
    and report/index.previous.html: Snakemake does not remake a missing intermediate file while the final target
    stands, so both go and the whole chain runs again."""
    write_text(layout.manifest_path(config["sweep"]), manifest_text(config, plan), only_if_changed=True)
    write_snapshot(layout, config)
    stale = stale_outputs(layout, config, plan)
    for path in stale:
        os.replace(
            path,
            layout.previous_table_path(config["sweep"])
            if path.suffix == ".parquet"
            else path.with_name("index.previous.html"),
        )
    if stale:
        log.warning(
            "ssmpipe: the table and report of sweep %r are stale (%d shards to train first); "
            "kept as runs.previous.parquet and report/index.previous.html until rebuilt",
            config["sweep"],
            len(plan.pending),
        )


def read_points(layout: Layout, sweep: str) -> list[dict]:
    """The sweep's points ({run_id, shard, axes}) from its manifest; StoreError naming the file if it cannot be read."""
    path = layout.manifest_path(sweep)
    if not path.is_file():
        raise StoreError(
            f"{str(path)!r} does not exist: the workflow writes it when it plans the sweep "
            "(snakemake --configfile CONFIG, or ssmpipe train CONFIG)"
        )
    try:
        points = load_json(read_file(path), str(path))["points"]
        for p in points:  # a shard names a file in the store, never a path to read elsewhere
            if not (isinstance(p["run_id"], str) and isinstance(p["shard"], str) and NAME.fullmatch(p["shard"])):
                raise ValueError(f"point {p!r} does not name a run and a shard")
        return points
    except OSError as e:
        raise StoreError(f"{str(path)!r} is unreadable ({e.strerror})") from None
    except (ValueError, KeyError, TypeError) as e:
        raise StoreError(f"{str(path)!r} is not JSON of a sweep's points ({type(e).__name__}: {e})") from None
