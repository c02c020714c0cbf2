"""Sweeps as data: grid expansion, run ids, and the sharding of points into train jobs.

A point's run id is a hash of its canonical resolved settings, so the same
settings give the same id on any machine, whatever the key order or float
spelling. Planning looks up which ids the store already holds: those are
never trained again; the rest go into shards (one train job each) of points
that pack into one model. A shard is named by the hash of its run ids and
described by a spec file in the store, so re-planning after an interruption,
or from another sweep with the same points, finds the same shard.
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import json
import math
from dataclasses import dataclass, field

from ssmpipe import config as cfg
from ssmpipe import data
from ssmpipe.store import Store, _plain

PER_POINT_KEYS = ("seed", "model.init")  # settings that may differ inside one packed model


@dataclass(frozen=True)
class Point:
    run_id: str
    settings: dict  # shares unchanged parts with other points: read it, never change it in place
    axes: dict  # the grid values of this point, by dotted key


@dataclass
class Plan:
    config: dict
    points: list[Point]
    shard_of: dict[str, str]                      # run id -> shard id holding (or to hold) it
    shards: list[str]                             # every shard the sweep reads, sorted
    pending: list[str] = field(default_factory=list)  # shards still to train
    untrusted: list[str] = field(default_factory=list)  # store files that fail their checks (write=True moves them)


def typed(settings: dict, types: dict[str, str] | None = None) -> dict:
    """Settings with numbers as the schema types them (-1 and -1.0 both become -1.0)."""
    types = types or cfg.setting_types()
    out = _plain(settings)  # a fresh copy of the nested dicts and lists
    for key, kind in types.items():
        try:
            cfg.set_path(out, key, _coerce(cfg.get_path(out, key), kind))
        except KeyError:
            continue
    return out


def _coerce(value, kind: str):
    if isinstance(value, bool):
        return value
    return float(value) if kind == "number" else int(value) if kind == "integer" else value


def digest(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:16]


def run_id(settings: dict) -> str:
    """Hash of the canonical resolved settings (sorted keys, schema-typed numbers)."""
    return digest(typed(settings, _setting_types()))


@functools.lru_cache(maxsize=1)
def _setting_types() -> dict[str, str]:
    return cfg.setting_types()  # the schema is read once per process


def pack_key(settings: dict) -> str:
    """Points with the same pack key have the same shapes, data and optimiser: they pack."""
    shared = dict(settings)
    for key in PER_POINT_KEYS:  # copied only along the key's path: the rest is shared, read-only
        *parents, last = key.split(".")
        node = shared
        for part in parents:
            node[part] = dict(node[part])
            node = node[part]
        node.pop(last, None)
    return digest(shared)


def expand(config: dict) -> list[Point]:
    """One point per element of the grid's Cartesian product (axes in sorted key order)."""
    types = cfg.setting_types()
    fixed = typed(config["fixed"], types)
    keys = sorted(config["grid"])
    axes = [[_coerce(v, types[k]) for v in config["grid"][k]] for k in keys]  # typed once, not per point
    points = []
    for values in itertools.product(*axes):
        settings = dict(fixed)  # copied only along the grid keys' paths: the rest is shared, and read-only
        for k, v in zip(keys, values):
            *parents, last = k.split(".")
            node = settings
            for part in parents:
                node[part] = dict(node.get(part, {}))
                node = node[part]
            node[last] = v
        settings = data.with_data_hash(settings)  # a task read from a path is keyed by its content
        points.append(Point(digest(settings), settings, dict(zip(keys, values))))
    return points


def chunk(items: list, size: int) -> list[list]:
    """Split into ceil(n/size) chunks of near-equal length."""
    n = math.ceil(len(items) / size)
    return [items[i * len(items) // n:(i + 1) * len(items) // n] for i in range(n)]


def plan(config: dict, write: bool = True, planned: dict[str, list[str]] | None = None) -> Plan:
    """Map every point to a shard: done shards from the store, unfinished ones reused, the rest new.

    Only store files that check out count (Store.trusted). With write=True, new shard specs and
    the sweep's manifest are written (atomically; unchanged files are left alone so Snakemake
    sees nothing new), and files that fail their check are quarantined (their shards replanned).
    With write=False nothing is written; `planned` (shard -> run ids: the pending shards of sweeps
    planned before this one, whose specs a writing plan would have written) counts as stored specs,
    so sweeps planned one after another without writing share shards as they would writing.
    """
    store = Store(config["results"])
    points = expand(config)
    by_id = {p.run_id: p for p in points}
    shard_of: dict[str, str] = {}
    pending_shards: list[str] = []

    known = {p.run_id: p.settings for p in points}
    trusted: dict[str, list[str]] = {}  # shard -> run ids, of every spec that may hold our points and checks out
    done: set[str] = set()              # those whose rows are stored and check out
    untrusted: list[str] = []
    for shard, claimed in store.read_specs().items():
        if claimed and not any(rid in by_id for rid in claimed):
            continue  # another sweep's shard
        ids, stored = store.trusted(shard, repair=write, known=known)  # with write, the untrusted: quarantined
        if ids is None:  # its spec was listed, so it exists and failed a check
            untrusted.append(str(store.spec_path(shard)))
        elif not stored and store.runs_path(shard).exists():
            untrusted.append(str(store.runs_path(shard)))
        if ids is not None:
            trusted[shard] = ids
            done |= {shard} if stored else set()
    for shard, ids in (planned or {}).items():
        if shard not in trusted and any(rid in by_id for rid in ids):
            trusted[shard] = ids
    trusted = dict(sorted(trusted.items()))  # the order of the spec files a writing plan would read
    for shard, ids in trusted.items():  # 1. points some finished shard already holds
        if shard in done:
            for rid in ids:
                if rid in by_id:
                    shard_of.setdefault(rid, shard)
    for shard, ids in trusted.items():  # 2. unfinished shards made entirely of our pending points
        if shard not in done and ids and all(rid in by_id and rid not in shard_of for rid in ids):
            shard_of.update(dict.fromkeys(ids, shard))
            pending_shards.append(shard)

    groups: dict[str, list[Point]] = {}  # 3. the rest, in new shards of packable points
    for p in points:
        if p.run_id not in shard_of:
            groups.setdefault(pack_key(p.settings), []).append(p)
    for key in sorted(groups):
        members = sorted(groups[key], key=lambda p: p.run_id)
        for part in chunk(members, config["shard_size"]):
            shard = digest(sorted(p.run_id for p in part))
            if write:
                store.write_spec(shard, [(p.run_id, p.settings) for p in part])
            shard_of.update({p.run_id: shard for p in part})
            pending_shards.append(shard)

    result = Plan(config, points, shard_of, sorted(set(shard_of.values())), sorted(pending_shards),
                  [] if write else untrusted)
    if write:
        store.write_manifest(config, result)
    return result


def plan_sweeps(configs: list[dict]) -> dict[str, Plan]:
    """Sweep name -> its plan, planned in order without writing: the plans `ssmpipe plan` writes, one after another,
    with the same configs and store (a later sweep reuses the new shards of an earlier one)."""
    plans: dict[str, Plan] = {}
    planned: dict[str, list[str]] = {}
    for config in configs:
        result = plan(config, write=False, planned=planned)
        new = set(result.pending) - set(planned)
        for rid, shard in result.shard_of.items():
            if shard in new:
                planned.setdefault(shard, []).append(rid)
        plans[config["sweep"]] = result
    return plans


def unwritten(plan: Plan) -> list[str]:
    """What `plan(config, write=True)` would still change in the store for this plan (one made with
    write=False), its config snapshot aside (`changed_snapshot`): untrusted files to quarantine, new shard
    specs, a manifest that differs, a table or report gone stale. Empty: the store is as planned. Reads only."""
    store = Store(plan.config["results"])
    manifest = store.manifest_path(plan.config["sweep"])
    why = [f"{path} cannot be trusted" for path in plan.untrusted]
    why += [f"{store.spec_path(s)} is new" for s in plan.pending if not store.spec_path(s).exists()]
    if not manifest.is_file() or manifest.read_text() != store.manifest_text(plan.config, plan):
        why.append(f"{manifest} changes")
    why += [f"{path} is stale" for path in store.stale_outputs(plan.config, plan)]
    return why


def changed_snapshot(config: dict) -> bool:
    """Whether the sweep's config snapshot (<results>/<sweep>/config.yaml) differs from `config`. Reads only."""
    store = Store(config["results"])
    path = store.config_path(config["sweep"])
    return not path.is_file() or path.read_text() != store.snapshot_text(config)


def data_specs(settings_list) -> dict[str, dict]:
    """Data cache key -> data spec, for a list of point settings: each point's length and its test lengths."""
    out = {}
    for s in settings_list:
        for length in (s["seq_len"], *s["test_seq_lens"]):
            spec = data.spec_of(s, length)
            out[data.key_of(spec)] = spec
    return out
