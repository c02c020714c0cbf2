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
import gc
import itertools
import json
import math
from contextlib import contextmanager
from dataclasses import dataclass, field, replace

from ssmpipe import config as cfg
from ssmpipe import data, manifest
from ssmpipe.keys import canonical, coerce, digest, is_per_point, pack_key, sha16, shared_settings, typed
from ssmpipe.store import Store, claimed_ids


@dataclass(frozen=True)
class Point:
    run_id: str
    settings: dict  # shares unchanged parts with other points: read it, never change it in place
    axes: dict  # the grid values of this point, by dotted key
    pack: str  # its pack key (`pack_key`): points with the same one pack into one model


@dataclass
class Plan:
    config: dict
    points: list[Point]
    shard_of: dict[str, str]  # run id -> shard id holding (or to hold) it
    shards: list[str]  # every shard the sweep reads, sorted
    pending: list[str] = field(default_factory=list)  # shards still to train
    data: dict[str, dict[str, dict]] = field(default_factory=dict)  # pending shard -> data key -> data spec
    untrusted: list[str] = field(default_factory=list)  # store files that fail their checks (write=True moves them)


def _with(settings: dict, keys: list[str], values) -> dict:
    """settings with each dotted key set to its value, copied only along the keys' paths (the rest is shared)."""
    return _setter(tuple(keys))(settings, values)


@functools.lru_cache(maxsize=8)
def _setter(keys: tuple[str, ...]):
    """A function (settings, values) -> settings with keys set (see `_with`); the paths are split once."""
    paths = [k.split(".") for k in keys]
    parents = sorted({tuple(p[:i]) for p in paths for i in range(1, len(p))}, key=len)  # outermost first

    def put(settings: dict, values) -> dict:
        out = dict(settings)
        for *above, name in parents:  # a fresh copy of every dict on a key's path, once
            node = out
            for part in above:
                node = node[part]
            node[name] = dict(node.get(name, {}))
        for (*above, name), value in zip(paths, values):
            node = out
            for part in above:
                node = node[part]
            node[name] = value
        return out

    return put


def _holes(text: str, marks: list[str]) -> tuple[list[str], list[int]] | None:
    """text split around each mark (each must occur once): (len(marks) + 1 parts, mark index of each hole in text
    order); None if some mark does not occur exactly once."""
    if any(text.count(m) != 1 for m in marks):
        return None
    order = sorted(range(len(marks)), key=lambda i: text.index(marks[i]))
    parts, rest = [], text
    for i in order:
        head, rest = rest.split(marks[i], 1)
        parts.append(head)
    return [*parts, rest], order


class _Hasher:
    """digest(settings) of grid points without re-encoding the fixed settings per point.

    The canonical JSON of a point is that of the fixed settings with each grid key's value put in; so the fixed part
    is encoded once with a unique marker per grid key, and each point's text is the pieces around the markers joined
    with its values' JSON (encoded once per axis value). Same text, same sha256 as `digest` (tests check the two agree).
    """

    def __init__(self, base: dict, keys: list[str], axes: list[list], drop=lambda s: s, holes=None):
        holes = [i for i in range(len(keys)) if holes is None or holes(keys[i])]
        marks = [f"\ue000ssmpipe-hole-{i}\ue000" for i in range(len(keys))]
        self.holes, self.parts, self.order = holes, None, None
        if "task.path" in keys:  # each point's data hash is its own: no common text
            return
        text = canonical(drop(data.with_data_hash(_with(base, keys, marks))))
        found = _holes(text, [json.dumps(marks[i]) for i in holes])
        if found:
            self.parts, self.order = found
        self.encoded = [[canonical(v) for v in axis] for axis in axes]

    def __call__(self, index: tuple[int, ...]) -> str:
        """The digest of the point whose value of axis i is axes[i][index[i]]."""
        pieces = [self.parts[0]]
        for h, part in zip(self.order, self.parts[1:]):
            i = self.holes[h]
            pieces += (self.encoded[i][index[i]], part)
        return sha16("".join(pieces))


@contextmanager
def _gc_paused():
    """Python's cycle collector off while planning: a 100,000-point plan allocates millions of acyclic dicts, and
    each collection walks them all (~40% of expand's time); nothing planning makes is a cycle."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


@_gc_paused()
def expand(config: dict) -> list[Point]:
    """One point per element of the grid's Cartesian product (axes in sorted key order)."""
    types = cfg.setting_types()
    fixed = typed(config["fixed"], types)
    keys = sorted(config["grid"])
    axes = [[coerce(v, types[k]) for v in config["grid"][k]] for k in keys]  # typed once, not per point
    ids = _Hasher(fixed, keys, axes)
    packs = _Hasher(fixed, keys, axes, drop=shared_settings, holes=lambda k: not is_per_point(k))
    shared = [i for i in range(len(keys)) if not is_per_point(keys[i])]  # the axes a pack key depends on
    pack_of: dict[tuple, str] = {}
    put = _setter(tuple(keys))
    points = []
    for index in itertools.product(*(range(len(a)) for a in axes)):
        values = [a[i] for a, i in zip(axes, index)]
        settings = data.with_data_hash(put(fixed, values))  # a task read from a path is keyed by its content
        if ids.parts is None or packs.parts is None:  # a grid over task.path: each point hashed whole
            points.append(Point(digest(settings), settings, dict(zip(keys, values)), pack_key(settings)))
            continue
        group = tuple(index[i] for i in shared)
        if group not in pack_of:
            pack_of[group] = packs(index)
        points.append(Point(ids(index), settings, dict(zip(keys, values)), pack_of[group]))
    return points


def varying_keys(config: dict) -> set[str]:
    """The settings (dotted keys) whose value may differ between the points of a sweep: its grid's keys, and the
    data hash of a grid over task.path (`data.with_data_hash`)."""
    return {*config["grid"], *(["task.data_hash"] if "task.path" in config["grid"] else [])}


def chunk(items: list, size: int) -> list[list]:
    """Split into ceil(n/size) chunks of near-equal length."""
    n = math.ceil(len(items) / size)
    return [items[i * len(items) // n : (i + 1) * len(items) // n] for i in range(n)]


def plan(config: dict, write: bool = True, planned: dict[str, list[str]] | None = None) -> Plan:
    """Map every point to a shard: done shards from the store, unfinished ones reused, the rest new.

    Only store files that check out count (Store.trusted). With write=True, new shard specs and
    the sweep's manifest are written (atomically; unchanged files are left alone so Snakemake
    sees nothing new), and files that fail their check are quarantined (their shards replanned).
    With write=False nothing is written; `planned` (shard -> run ids: the pending shards of sweeps
    planned before this one, whose specs a writing plan would have written) counts as stored specs,
    so sweeps planned one after another without writing share shards as they would writing.
    """
    with _gc_paused():
        return _plan(config, write, planned or {})


def _plan(config: dict, write: bool, planned: dict[str, list[str]]) -> Plan:
    store = Store(config["results"])
    points = expand(config)
    by_id = {p.run_id: p for p in points}
    shard_of: dict[str, str] = {}
    pending_shards: list[str] = []

    known = {p.run_id: p.settings for p in points}
    ours = (
        (shard, spec)
        for shard, spec in store.iter_specs()  # every spec that may hold our points
        if not (claimed := claimed_ids(spec)) or any(rid in by_id for rid in claimed)
    )
    trusted: dict[str, list[str]] = {}  # shard -> run ids, of every spec that may hold our points and checks out
    done: set[str] = set()  # those whose rows are stored and check out
    untrusted: list[str] = []
    # with write, the untrusted are quarantined
    for shard, (ids, stored) in store.trusted_all(ours, repair=write, known=known).items():
        if ids is None:  # its spec was listed, so it exists and failed a check
            untrusted.append(str(store.spec_path(shard)))
        elif not stored and store.runs_path(shard).exists():
            untrusted.append(str(store.runs_path(shard)))
        if ids is not None:
            trusted[shard] = ids
            done |= {shard} if stored else set()
    for shard, ids in planned.items():
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
            groups.setdefault(p.pack, []).append(p)
    for key in sorted(groups):
        members = sorted(groups[key], key=lambda p: p.run_id)
        for part in chunk(members, config["shard_size"]):
            shard = digest(sorted(p.run_id for p in part))
            if write:
                store.write_spec(shard, [(p.run_id, p.settings) for p in part])
            shard_of.update({p.run_id: shard for p in part})
            pending_shards.append(shard)

    pending = sorted(pending_shards)
    result = Plan(
        config,
        points,
        shard_of,
        sorted(set(shard_of.values())),
        pending,
        _data_of(points, shard_of, pending),
        [] if write else untrusted,
    )
    if write:
        manifest.write_manifest(store, config, result)
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


def again(plan: Plan) -> Plan:
    """The plan with every shard of the sweep to train, stored or not (snakemake -R train or -F: the train rule's
    `ssmpipe train --again` keeps the stored rows until new ones replace them)."""
    return replace(plan, pending=list(plan.shards), data=_data_of(plan.points, plan.shard_of, plan.shards))


def unwritten(plan: Plan) -> list[str]:
    """What `plan(config, write=True)` would still change in the store for this plan (one made with
    write=False), its config snapshot aside (`changed_snapshot`): untrusted files to quarantine, new shard
    specs, a manifest that differs, a table or report gone stale. Empty: the store is as planned. Reads only."""
    store = Store(plan.config["results"])
    points = store.manifest_path(plan.config["sweep"])
    why = [f"{path} cannot be trusted" for path in plan.untrusted]
    why += [f"{store.spec_path(s)} is new" for s in plan.pending if not store.spec_path(s).exists()]
    if not points.is_file() or points.read_text() != manifest.manifest_text(plan.config, plan):
        why.append(f"{points} changes")
    why += [f"{path} is stale" for path in manifest.stale_outputs(store, plan.config, plan)]
    return why


def changed_snapshot(config: dict) -> bool:
    """Whether the sweep's config snapshot (<results>/<sweep>/config.yaml) differs from `config`. Reads only."""
    path = Store(config["results"]).config_path(config["sweep"])
    return not path.is_file() or path.read_text() != manifest.snapshot_text(config)


def data_specs(settings_list) -> dict[str, dict]:
    """Data cache key -> data spec, for a list of point settings: each point's length and its test lengths."""
    out, previous = {}, None
    for s in settings_list:
        same = (s["seq_len"], s["test_seq_lens"], s["task"])
        if same == previous:  # a shard's points share their task and lengths: each data set is hashed once
            continue
        previous = same
        for length in (s["seq_len"], *s["test_seq_lens"]):
            spec = data.spec_of(s, length)
            out[data.key_of(spec)] = spec
    return out


def _data_of(points: list[Point], shard_of: dict[str, str], shards: list[str]) -> dict[str, dict[str, dict]]:
    """Shard -> its data sets (data_specs), for the given shards; one point per shard and pack key is enough."""
    wanted = set(shards)
    one_each = {(shard_of[p.run_id], p.pack): p for p in points if shard_of[p.run_id] in wanted}
    out: dict[str, dict[str, dict]] = {s: {} for s in shards}
    for (shard, _), p in one_each.items():
        out[shard].update(data_specs([p.settings]))
    return out


# What a train job asks for (Snakemake's mem_mb, MB): fitted to the peak RSS of `ssmpipe train` on CPU (torch 2.13,
# 2026-12: S4D at L = 2048..4096, d_model = d_state = 64, 1..4 points; S4D with d_state 2, two layers; selective):
# the process with torch and its data, each packed point's training activations, and the memory function of the LTI
# layers (at init and at the end: X = [α_k] over 4L steps in float64, and its SVD, one layer at a time).
MEM_FLOOR_MB = 2000
MEM_MARGIN = 1.25
BASE_BYTES = 600e6
ACTIVATION_BYTES = 17  # per point, example, step, channel and layer (forward and backward; the selective layer's
#                         fused CPU scan keeps no per-state tensor)
MEMORY_FUNCTION_BYTES = 92  # per channel, real state and step, for the first point; half that for each other one


def pack_mem_mb(settings: dict, points: int) -> int:
    """The memory (MB) training `points` packed points with these settings needs: see the constants above; with a
    25% margin, and at least MEM_FLOOR_MB."""
    task, model, train = settings["task"], settings["model"], settings["train"]
    L, H, layers = settings["seq_len"], model["d_model"], model["n_layers"]
    lengths = settings.get("test_seq_lens") or []
    n_train, n_test = (25000, 25000) if task["name"] == "imdb" else (task["n_train"], task["n_test"])  # every review
    data_bytes = 16 * ((n_train + n_test) * L + n_test * sum(lengths))
    activations = ACTIVATION_BYTES * points * train["batch_size"] * max([L, *lengths]) * H * layers
    states = {"s4d": model["d_state"], "s4": 2 * model["d_state"]}.get(model["kind"], 0)  # real states; selective: none
    memory = MEMORY_FUNCTION_BYTES * H * states * L * (1 + (points - 1) / 2)
    total = MEM_MARGIN * (BASE_BYTES + data_bytes + activations + memory) / 1e6
    return max(MEM_FLOOR_MB, math.ceil(total))


def mem_mb(points: list[Point]) -> int:
    """The memory (MB) a train job of these points (one shard) asks for: the most one of its packs needs (a shard
    trains its packs one after another)."""
    packs: dict[str, list[Point]] = {}
    for p in points:
        packs.setdefault(p.pack, []).append(p)
    return max((pack_mem_mb(group[0].settings, len(group)) for group in packs.values()), default=MEM_FLOOR_MB)


def shard_mem_mb(plans: dict[str, Plan]) -> dict[str, int]:
    """Pending shard -> the memory (MB) its train job asks for (`mem_mb`), from the plans in memory."""
    members: dict[str, dict[str, Point]] = {}
    for plan in plans.values():
        pending = set(plan.pending)
        for p in plan.points:
            shard = plan.shard_of[p.run_id]
            if shard in pending:
                members.setdefault(shard, {})[p.run_id] = p  # a shard shared by two sweeps: each point once
    return {shard: mem_mb(list(points.values())) for shard, points in members.items()}
