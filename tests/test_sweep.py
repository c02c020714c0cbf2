"""Sweep expansion, run-id stability and sharding."""

import json

from conftest import tiny_config

from ssmpipe import config as cfg
from ssmpipe import keys, sweep
from ssmpipe.runs import write_runs


def test_expansion_is_the_grid_product():
    config = cfg.check(tiny_config())
    points = sweep.expand(config)
    assert len(points) == 2 * 1 * 2 * 2
    assert len({p.run_id for p in points}) == len(points)
    combos = {(p.settings["model"]["init"]["real"], p.settings["seq_len"], p.settings["seed"]) for p in points}
    assert combos == {(r, L, s) for r in (-0.5, 0.0) for L in (16, 24) for s in (0, 1)}
    # fixed settings and defaults reach every point
    assert all(p.settings["task"]["lag"] == 3 and p.settings["model"]["init"]["dt_max"] == 0.1 for p in points)


def test_run_id_ignores_key_order_and_number_spelling():
    config = cfg.check(tiny_config())
    settings = next(p.settings for p in sweep.expand(config) if p.settings["model"]["init"]["real"] == 0.0)
    reordered = dict(reversed(list(json.loads(json.dumps(settings, sort_keys=True)).items())))
    respelled = json.loads(json.dumps(settings))
    respelled["model"]["init"]["real"] = 0  # int where the schema says number
    respelled["model"]["init"]["dt_min"] = "1e-3"  # YAML 1.1 reads this spelling as a string
    respelled["train"]["lr"] = 1e-2
    respelled = cfg.check({"sweep": "x", "fixed": respelled})["fixed"]
    assert keys.run_id(reordered) == keys.run_id(settings) == keys.run_id(respelled)


def test_run_id_is_stable_across_processes_and_sweeps():
    """Same settings -> same id whatever else the config says (sweep name, shard size, other axes)."""
    a = {
        p.settings["seed"]: p.run_id
        for p in sweep.expand(cfg.check(tiny_config(**{"grid.seed": [0, 1]})))
        if p.settings["seq_len"] == 16 and p.settings["model"]["init"]["real"] == 0.0
    }
    b_config = tiny_config(sweep="other", shard_size=1, **{"grid.seed": [1, 0, 7]})
    b = {
        p.settings["seed"]: p.run_id
        for p in sweep.expand(cfg.check(b_config))
        if p.settings["seq_len"] == 16 and p.settings["model"]["init"]["real"] == 0.0
    }
    assert a[0] == b[0] and a[1] == b[1] and b[7] not in a.values()
    # a literal pins the hash function itself: changing it would orphan every stored run
    assert keys.digest({"b": [1, "x"], "a": 1.0}) == "8d2bede2b25fb2f2"


def test_run_id_changes_with_any_setting():
    settings = sweep.expand(cfg.check(tiny_config()))[0].settings
    changed = json.loads(json.dumps(settings))
    changed["train"]["lr"] *= 1.0000001
    assert keys.run_id(changed) != keys.run_id(settings)


def test_shards_pack_and_respect_shard_size(tmp_path):
    config = cfg.check(tiny_config(results=str(tmp_path), shard_size=3))
    plan = sweep.plan(config)
    by_shard = {}
    for p in plan.points:
        by_shard.setdefault(plan.shard_of[p.run_id], []).append(p)
    assert set(by_shard) == set(plan.shards) == set(plan.pending)
    for members in by_shard.values():
        assert 1 <= len(members) <= 3
        assert len({keys.pack_key(p.settings) for p in members}) == 1  # one packed model per shard
    # 2 lengths -> 2 pack groups of 4 points -> 2 shards each (sizes 2+2, balanced)
    assert sorted(len(m) for m in by_shard.values()) == [2, 2, 2, 2]


def test_replanning_finds_the_same_shards_and_done_ones(tmp_path):
    from ssmpipe.store import Store

    config = cfg.check(tiny_config(results=str(tmp_path)))
    first = sweep.plan(config)
    assert sweep.plan(config).shard_of == first.shard_of  # unfinished shards are reused
    done = first.shards[0]
    store = Store(tmp_path)
    write_runs(
        [
            {"run_id": rid, "shard_id": done, "settings": {}, "epoch": epoch, "status": "ok"}
            for rid in store.read_specs()[done]
            for epoch in range(config["fixed"]["train"]["epochs"] + 1)  # every epoch: a whole run
        ],
        store.runs_path(done),
    )  # the store now holds this shard
    bigger = cfg.check(tiny_config(results=str(tmp_path), **{"grid.seed": [0, 1, 2]}))
    second = sweep.plan(bigger)
    assert done in second.shards and done not in second.pending
    kept = [r for r, s in first.shard_of.items() if s == done]
    assert all(second.shard_of[r] == done for r in kept)
    new = {p.run_id for p in second.points} - set(first.shard_of)
    assert {second.shard_of[r] for r in new}.isdisjoint(first.shards)
    assert len(new) == 4


def test_chunk_is_balanced():
    assert [len(c) for c in sweep.chunk(list(range(10)), 4)] == [3, 3, 4]
    assert sweep.chunk(list(range(3)), 8) == [[0, 1, 2]]


def test_expanded_ids_and_pack_keys_equal_hashing_each_point_whole():
    """expand hashes points from a text template of the fixed settings; every id and pack key must be the one
    hashing the point's settings whole gives (run_id, pack_key), over nested, per-point, list, string, bool axes."""
    config = cfg.check(
        tiny_config(
            **{
                "grid.model.init.real": [-0.5, 0.0, -1e-3],
                "grid.seed": [0, 3],
                "grid.test_seq_lens": [[], [24, 32]],
                "grid.model.init.dt": ["s4d", "autocorr"],
                "grid.model.train_A": [True, False],
                "grid.train.lr": [0.01, 1e-3],
            }
        )
    )
    points = sweep.expand(config)
    assert len(points) == 3 * 1 * 2 * 2 * 2 * 2 * 2 * 2
    for p in points:
        assert p.run_id == keys.run_id(p.settings) == keys.digest(p.settings)
        assert p.pack == keys.pack_key(p.settings)
    assert len({p.run_id for p in points}) == len(points)
    assert len({p.pack for p in points}) == len(points) // (3 * 2 * 2)  # seed, init.real, init.dt pack together


def test_a_grid_over_task_path_hashes_each_point_with_its_data(tmp_path):
    import numpy as np

    paths = []
    for i in range(2):
        path = tmp_path / f"d{i}.npz"
        x = np.full((4, 16), i, np.int64)
        np.savez(path, x_train=x, y_train=x, x_test=x, y_test=x)
        paths.append(str(path))
    config = cfg.check(
        tiny_config(
            **{
                "fixed.task": {"name": "npz", "path": paths[0], "vocab": 4},
                "grid.task.path": paths,
                "grid.seq_len": [16],
            }
        )
    )
    points = sweep.expand(config)
    hashes = {p.settings["task"]["path"]: p.settings["task"]["data_hash"] for p in points}
    assert len(set(hashes.values())) == 2
    assert all(p.run_id == keys.run_id(p.settings) and p.pack == keys.pack_key(p.settings) for p in points)


def test_plan_names_each_pending_shards_data_sets_as_its_spec_does(tmp_path):
    from ssmpipe.store import Store

    config = cfg.check(tiny_config(results=str(tmp_path), **{"grid.test_seq_lens": [[], [32]]}))
    plan = sweep.plan(config)
    store = Store(tmp_path)
    assert set(plan.data) == set(plan.pending) and len(plan.pending) > 1
    for shard in plan.pending:
        assert plan.data[shard] == sweep.data_specs(p["settings"] for p in store.read_spec(shard)["points"])
    every = sweep.data_specs(p.settings for p in plan.points)  # the dedup in data_specs drops no data set
    assert {k for d in plan.data.values() for k in d} == set(every)
    assert any("L32" in k for k in every) and any("L24" in k for k in every)


def test_specs_and_manifest_read_back_as_written(tmp_path):
    from ssmpipe.store import Store

    config = cfg.check(tiny_config(results=str(tmp_path)))
    plan = sweep.plan(config)
    store = Store(tmp_path)
    manifest = json.loads(store.manifest_path("tiny").read_text())
    assert manifest["sweep"] == "tiny" and len(manifest["points"]) == len(plan.points)
    assert {p["run_id"]: p["shard"] for p in manifest["points"]} == plan.shard_of
    assert [p["axes"] for p in manifest["points"]] == [p.axes for p in plan.points]
    by_id = {p.run_id: p.settings for p in plan.points}
    for shard, spec in store.iter_specs():
        assert spec["shard"] == shard
        assert all(pt["settings"] == by_id[pt["run_id"]] for pt in spec["points"])
        assert '"lr": 0.01' in store.spec_path(shard).read_text()  # one point a line, readable
