"""Run ids, pack keys, shard names and data keys of fixed configs, byte for byte.

A store is content-addressed: a point's run id (and its shard's name) is what finds its rows
again, so any change to these strings re-keys every store in use (everything trains again).
They were recorded once and must never change: a move of code between modules, a refactor of
the hashing, a new default must all keep them (an intended change needs a migration of stores,
not an edit here). Also here: the module paths of the callables SLURM jobs unpickle (a job
requeued across an upgrade loads them by these names).
"""

import importlib
import pickle
import pickletools

import pytest
from conftest import REPO, tiny_config

from ssmpipe import config as cfg
from ssmpipe import keys, sweep, tune

# conftest's tiny sweep: (model.init.real, seq_len, seed) -> run id.
TINY_IDS = {
    (-0.5, 16, 0): "483deacb321cbfbd",
    (-0.5, 24, 0): "94592066c4b4f237",
    (-0.5, 16, 1): "0becc541e1c30ba7",
    (-0.5, 24, 1): "798615e7e4242274",
    (0.0, 16, 0): "c4aa3f449dac0443",
    (0.0, 24, 0): "b06af73bd8edd82a",
    (0.0, 16, 1): "0af45c28351398d2",
    (0.0, 24, 1): "aac904c359451c29",
}
TINY_PACKS = ["69e57961e5f29e62", "c5174f61edabb4c8"]
TINY_SHARDS = ["8bc6baa95a7f8de2", "ad15a214d9ef9936"]
TINY_DATA = ["delay-L16-55f2546f0190", "delay-L24-1dc19e3be493"]
# The same sweep with the selective layer (imaginary part 0).
SELECTIVE_IDS = {
    (-0.5, 16, 0): "5861d45449f6e931",
    (-0.5, 24, 0): "50ad98f4d97590dc",
    (-0.5, 16, 1): "d77e9bad85441ef4",
    (-0.5, 24, 1): "a42cf3d37bacbd95",
    (0.0, 16, 0): "d5fc9d561f031f8d",
    (0.0, 24, 0): "89eed70774c580a0",
    (0.0, 16, 1): "385b58c33ff1375c",
    (0.0, 24, 1): "0cd6c0c349900a8d",
}
SELECTIVE_SHARDS = ["cda59852e39f63e8", "f3d6c29046927518"]
# ListOps read from the fixture folder (task.path, keyed by the content of its files: task.data_hash).
LISTOPS_IDS = {(-0.5, 64, 0): "3a4a39530244db89", (-0.5, 64, 1): "4e0a404ec1aac49e"}
LISTOPS_SHARDS = ["b36411f204cf9c8f"]
LISTOPS_DATA = ["listops-L64-6c3cf5d95062"]


def _plan(tmp_path, **changes) -> sweep.Plan:
    return sweep.plan(cfg.check(tiny_config(results=str(tmp_path / "results"), **changes)), write=False)


def _ids(plan: sweep.Plan) -> dict:
    return {(p.axes["model.init.real"], p.axes["seq_len"], p.axes["seed"]): p.run_id for p in plan.points}


def _data_keys(plan: sweep.Plan) -> list[str]:
    return sorted(key for specs in plan.data.values() for key in specs)


def test_tiny_sweep_keeps_its_run_ids_packs_shards_and_data_keys(tmp_path):
    plan = _plan(tmp_path)
    assert _ids(plan) == TINY_IDS
    assert sorted({p.pack for p in plan.points}) == TINY_PACKS
    assert plan.shards == TINY_SHARDS == plan.pending  # an empty store: every shard new
    assert _data_keys(plan) == TINY_DATA
    for p in plan.points:  # the fast grid hasher and the plain hash of a point's settings agree
        assert keys.run_id(p.settings) == p.run_id and keys.pack_key(p.settings) == p.pack


def test_selective_sweep_keeps_its_run_ids_and_shards(tmp_path):
    plan = _plan(tmp_path, **{"fixed.model.kind": "selective", "grid.model.init.imag": [0.0]})
    assert _ids(plan) == SELECTIVE_IDS
    assert plan.shards == SELECTIVE_SHARDS


def test_a_sweep_over_a_data_folder_keeps_its_ids(tmp_path, monkeypatch):
    monkeypatch.chdir(REPO)  # task.path as written in the config is a setting: the same relative path
    task = {"name": "listops", "path": "tests/fixtures/listops", "n_train": 16, "n_test": 8}
    plan = _plan(tmp_path, **{"fixed.task": task, "grid.model.init.real": [-0.5], "grid.seq_len": [64]})
    assert _ids(plan) == LISTOPS_IDS
    assert plan.shards == LISTOPS_SHARDS
    assert _data_keys(plan) == LISTOPS_DATA


def test_a_tune_trial_has_the_run_id_of_the_same_grid_point(tmp_path):
    config = cfg.check(tiny_config(results=str(tmp_path), tune={"space": {"train.lr": {"loguniform": [0.001, 0.1]}}}))
    assert keys.run_id(tune.trial_settings(config["fixed"], {"train.lr": 0.01})) == TINY_IDS[(-0.5, 16, 0)]


@pytest.mark.parametrize("module, name", [("ssmpipe.slurm", "TrainShard"), ("ssmpipe.tune.cluster", "StudyJob")])
def test_slurm_callables_keep_their_module_paths(module, name):
    """submitit pickles the job's callable; a requeued job unpickles it by module and class name."""
    cls = getattr(__import__(module, fromlist=[name]), name)
    assert (cls.__module__, cls.__qualname__) == (module, name)  # what pickle writes, and looks up again
    # the names the pickle of a job holds, read without unpickling anything: the class is found by them again
    names = [arg for op, arg, _ in pickletools.genops(pickle.dumps(cls.__new__(cls))) if isinstance(arg, str)]
    assert module in names and name in names
    assert getattr(importlib.import_module(module), name) is cls


def _another(value, kind: str, schema: dict):
    """A different value of a setting's type (an enum's other member)."""
    if "enum" in schema:
        return next(v for v in schema["enum"] if v != value)
    return {
        "number": lambda v: (v or 0.0) + 0.5,
        "integer": lambda v: (v or 0) + 1,
        "boolean": lambda v: not v,
        "array": lambda v: [*(v or []), 7],
        "string": lambda v: f"{v}x",
    }[kind](value)


def test_every_setting_of_the_schema_changes_the_run_id_and_only_shared_ones_the_pack_key(tmp_path):
    """A run id that ignored one setting (say reg.lambda) would let a store hand one sweep another's results."""
    settings = sweep.expand(cfg.check(tiny_config(results=str(tmp_path))))[0].settings
    schema = cfg.load_schema()
    for key, kind in cfg.setting_types(schema).items():
        changed = cfg.plain(settings)
        try:
            value = cfg.get_path(settings, key)
        except KeyError:
            value = None  # unset (task.path): setting it is a change too
        cfg.set_path(changed, key, _another(value, kind, cfg.setting_schema(key, schema)))
        assert keys.run_id(changed) != keys.run_id(settings), key
        assert (keys.pack_key(changed) == keys.pack_key(settings)) == keys.is_per_point(key), key
