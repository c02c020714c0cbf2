"""Device independence on a CPU-only host: checkpoints that load anywhere, rows that say where they were trained,
and the device a job picks (issue 24). The GPU side of the same checks: tests/test_cuda.py, benchmarks/gpu_check.py."""

import contextlib
import logging

import pandas as pd
import pytest
import torch
import torch.serialization as serialization
from conftest import tiny_config

from ssmpipe import config as cfg
from ssmpipe import sweep, train
from ssmpipe.atomic import stamp
from ssmpipe.checkpoint import load_state
from ssmpipe.errors import StoreError
from ssmpipe.store import Store

METRICS = ["train_loss", "train_acc", "test_loss", "test_acc"]
SHARD = {
    "shard_size": 100,
    "grid.seq_len": [16],
    "grid.seed": [0, 1],
    "grid.model.init.real": [-0.5, -0.1],
    "grid.model.init.imag": [1.0],
    "fixed.train.epochs": 4,
}


@contextlib.contextmanager
def saved_as_cuda():
    """While open, torch.save tags every CPU tensor's storage "cuda:0", as a file written on a GPU node is tagged:
    loading it without a map_location then fails on a host without CUDA exactly as such a file does."""

    def tag(obj):
        return "cuda:0" if getattr(obj, "device", None) is not None and obj.device.type == "cpu" else None

    serialization.register_package(-100, tag, lambda obj, location: None)
    try:
        yield
    finally:
        serialization._package_registry[:] = [e for e in serialization._package_registry if e[1] is not tag]


def tensors(obj, path="state"):
    """(path, tensor) of every tensor in a checkpoint's containers."""
    if isinstance(obj, torch.Tensor):
        yield path, obj
    elif isinstance(obj, dict):
        for k, v in obj.items():
            yield from tensors(v, f"{path}[{k!r}]")
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            yield from tensors(v, f"{path}[{i}]")


def one_shard(root, **changes):
    plan = sweep.plan(cfg.check(tiny_config(results=str(root), **{**SHARD, **changes})))
    assert len(plan.pending) == 1
    return plan.pending[0]


def shard_rows(root, shard):
    return pd.read_parquet(Store(root).runs_path(shard)).set_index(["run_id", "epoch"]).sort_index()


class Killed(BaseException):
    """Stands for SIGKILL: not an Exception, so no group records it as failed."""


def train_until(root, shard, epoch, monkeypatch, replace=None):
    """Train the shard in this process (train_shard's `replace`) and stop it once its checkpoint holds `epoch`; -> the
    checkpoint's path."""
    real = train._save

    def save(state, path):
        real(state, path)
        if state.get("current", {}).get("epoch") == epoch:
            raise Killed

    with monkeypatch.context() as m:
        m.setattr(train, "_save", save)
        with pytest.raises(Killed):
            train.train_shard(str(root), shard, "cpu", replace)
    return Store(root).ckpt_path(shard)


def trained_and_stopped(tmp_path, monkeypatch, epoch=2):
    """One shard trained whole under tmp_path/ref, and the same shard under tmp_path/run stopped once its checkpoint
    holds `epoch`: (ref, run, shard, that checkpoint's path)."""
    ref, run = tmp_path / "ref", tmp_path / "run"
    shard = one_shard(ref)
    assert one_shard(run) == shard
    train.train_shard(str(ref), shard, "cpu")
    return ref, run, shard, train_until(run, shard, epoch, monkeypatch)


def test_a_checkpoint_holds_only_cpu_tensors_and_a_resume_equals_an_uninterrupted_run(tmp_path, monkeypatch):
    ref, run, shard, ckpt = trained_and_stopped(tmp_path, monkeypatch)
    state = torch.load(ckpt, weights_only=True)  # no map_location: each tensor where it was saved
    found = dict(tensors(state))
    assert any("['opt']['state']" in p and "exp_avg_sq" in p for p in found)  # Adam's moments are in it
    assert {p: t.device.type for p, t in found.items() if t.device.type != "cpu"} == {}
    train.train_shard(str(run), shard, "cpu")
    pd.testing.assert_frame_equal(shard_rows(run, shard)[METRICS], shard_rows(ref, shard)[METRICS], check_exact=True)


def test_a_checkpoint_written_on_a_gpu_resumes_on_a_cpu_host(tmp_path, monkeypatch):
    """A checkpoint whose storages are tagged cuda:0 (written on a GPU node) and whose Adam says fused (a GPU's Adam
    is) is refused by a plain torch.load here, and resumes through load_state (map_location) to the rows of an
    uninterrupted run, bit for bit: the CPU's Adam, not a fused one, continues it."""
    ref, run, shard, ckpt = trained_and_stopped(tmp_path, monkeypatch)
    state = load_state(ckpt)
    for group in state["current"]["opt"]["param_groups"]:
        assert group["fused"] is False  # trained here
        group["fused"] = True  # as train.Group's Adam on CUDA saves it
    with saved_as_cuda():
        torch.save(state, ckpt)
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="CUDA"):
            torch.load(ckpt, weights_only=True)
        with pytest.raises(StoreError, match="not a checkpoint ssmpipe can trust"):
            load_state(ckpt, map_location=None)  # as before map_location: the progress was lost
    assert load_state(ckpt)["current"]["epoch"] == 2
    train.train_shard(str(run), shard, "cpu")
    got = shard_rows(run, shard)
    pd.testing.assert_frame_equal(got[METRICS], shard_rows(ref, shard)[METRICS], check_exact=True)
    assert not Store(run).ckpt_path(shard).exists()


WHERE = ["device", "cuda_version"]  # columns added after runs files were already stored


def test_every_row_says_where_it_was_trained(tmp_path):
    root = tmp_path / "r"
    shard = one_shard(root)
    train.train_shard(str(root), shard, "cpu")
    rows = shard_rows(root, shard)
    assert len(rows) == 4 * 5 and (rows["device"] == "cpu").all() and rows["cuda_version"].isna().all()
    assert train.where("cpu") == {"device": "cpu", "cuda_version": None}


def test_a_failed_point_without_rows_says_where_it_failed(tmp_path, monkeypatch):
    root = tmp_path / "r"
    shard = one_shard(root)

    def broken(*args, **kwargs):
        raise ValueError("no model today")

    monkeypatch.setattr(train, "Group", broken)
    train.train_shard(str(root), shard, "cpu")
    rows = shard_rows(root, shard)
    assert (rows["status"] == "failed").all() and (rows["device"] == "cpu").all() and len(rows) == 4


def test_runs_files_from_before_the_device_columns_aggregate_with_them_null(tmp_path):
    """A shard stored without device and cuda_version stays trusted (not planned again) and aggregates beside one
    that has them, its rows null there."""
    import pyarrow.parquet as pq

    from ssmpipe.table import aggregate

    config = cfg.check(tiny_config(results=str(tmp_path), shard_size=2))
    plan = sweep.plan(config)
    assert len(plan.shards) == 4
    for shard in plan.shards:
        train.train_shard(str(tmp_path), shard, "cpu")
    st = Store(tmp_path)
    old = plan.shards[0]
    table = pq.read_table(st.runs_path(old))
    pq.write_table(table.drop_columns(WHERE), st.runs_path(old))  # as an older ssmpipe wrote it
    again = sweep.plan(config)
    assert again.pending == [] and again.untrusted == []
    df = aggregate(st, "tiny", st.sweep_dir("tiny") / "runs.parquet").to_pandas()
    from_old = df["shard_id"] == old
    assert 0 < from_old.sum() < len(df)
    assert df.loc[from_old, WHERE].isna().all().all()
    assert (df.loc[~from_old, "device"] == "cpu").all() and df["cuda_version"].isna().all()
    assert pq.read_table(st.sweep_dir("tiny") / "runs.parquet").schema.field("device").type == "string"


# --- the device a job picks ---


def test_a_job_that_asked_for_gpus_and_sees_no_cuda_fails_with_one_line(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.version, "cuda", None)
    with pytest.raises(train.DeviceError) as e:
        train.pick_device(gpus=2)
    message = str(e.value)
    assert message.startswith("asked for 2 GPUs per node, but torch sees no CUDA device (torch ")
    assert "built for CPU?" in message and "workflow/envs/ssmpipe-cuda.yaml" in message and "\n" not in message
    monkeypatch.setattr(torch.version, "cuda", "12.8")  # a CUDA build on a node without a GPU
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    with pytest.raises(
        train.DeviceError,
        match=r"asked for 1 GPU per node, .*built for CUDA 12.8, but finds no GPU: "
        r"CUDA_VISIBLE_DEVICES=''",
    ):
        train.pick_device(gpus=1)
    with pytest.raises(train.DeviceError, match="device 'cuda', but torch sees no CUDA device"):
        train.pick_device("cuda")  # named locally: the same, not a crash later


def test_a_job_that_asked_for_no_gpu_trains_on_the_cpu_even_where_cuda_is_visible(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert train.pick_device(gpus=0) == torch.device("cpu")
    assert train.pick_device("cuda", gpus=0) == torch.device("cpu")
    assert train.pick_device(gpus=1) == torch.device("cuda")
    assert train.pick_device() == torch.device("cuda")  # a local run: CUDA when present
    assert train.pick_device("cpu") == torch.device("cpu")  # unless told otherwise
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert train.pick_device() == torch.device("cpu")


def test_a_slurm_job_trains_where_its_requests_say(tmp_path, monkeypatch, caplog):
    """TrainShard, the callable a shard's SLURM job runs: asked for a GPU and none usable, it fails before it takes
    the shard's lock or writes anything, its log saying why; asked for none, it trains on the CPU though CUDA is
    visible; pickled before `gpus` existed, it picks as a local run does."""
    from ssmpipe.slurm import TrainShard

    root = tmp_path / "r"
    shard = one_shard(root)
    store = Store(root)
    job = TrainShard(str(root), shard, 1, 1)
    if not torch.cuda.is_available():
        with pytest.raises(train.DeviceError):
            job()
        assert "ssmpipe: asked for 1 GPU per node, but torch sees no CUDA device" in caplog.text
        assert not store.ckpt_path(shard).exists() and not store.lock_path(shard).exists()
    picked = []
    real = train._train_locked

    def spy(store, shard, dev, replace=None):
        picked.append((dev, replace))
        return real(store, shard, dev, replace)

    monkeypatch.setattr(train, "_train_locked", spy)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # visible, and not asked for
    TrainShard(str(root), shard, 1, 0)()
    assert picked == [(torch.device("cpu"), None)] and (shard_rows(root, shard)["device"] == "cpu").all()
    old = TrainShard(str(root), shard, 1)
    del old.gpus, old.replace  # as unpickled from an older ssmpipe
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    old()  # stored already: reused, on the CPU
    assert picked[-1] == (torch.device("cpu"), None)
    seen = stamp(store.runs_path(shard))
    TrainShard(str(root), shard, 1, 0, seen)()  # snakemake -R train: the stamp of the rows it trains again
    assert picked[-1] == (torch.device("cpu"), seen) and stamp(store.runs_path(shard)) != seen


@pytest.mark.skipif(torch.cuda.is_available(), reason="a host without CUDA")
def test_a_task_of_several_shards_trains_each_in_its_own_process(tmp_path):
    """TrainShards, an array task's callable with slurm.shards_per_job = 2, run here as the task runs it: both shards
    train at once, each in a process of its own, to the rows each has trained alone (bit for bit); a shard that
    fails (a corrupt checkpoint) leaves the other to finish, then fails the task, naming it and its error."""
    from ssmpipe.slurm import TrainShards

    def two_shards(root):
        plan = sweep.plan(cfg.check(tiny_config(results=str(root), **{**SHARD, "shard_size": 2})))
        assert len(plan.pending) == 2
        return plan.pending

    ref, run, bad = tmp_path / "ref", tmp_path / "run", tmp_path / "bad"
    shards = two_shards(ref)
    assert two_shards(run) == two_shards(bad) == shards
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as each of the task's processes: its 2 CPUs split between 2 shards
    try:
        for shard in shards:
            train.train_shard(str(ref), shard, "cpu")
    finally:
        torch.set_num_threads(threads)
    TrainShards(str(run), shards, 2, 0)()
    for shard in shards:
        rows = shard_rows(run, shard)
        pd.testing.assert_frame_equal(rows[METRICS], shard_rows(ref, shard)[METRICS], check_exact=True)
        assert (rows["device"] == "cpu").all()
    ckpt = Store(bad).ckpt_path(shards[1])
    ckpt.parent.mkdir(parents=True, exist_ok=True)
    ckpt.write_bytes(b"not a checkpoint")
    with pytest.raises(RuntimeError, match=rf"^1 of 2 shards failed: {shards[1]} \(exit status 1\); see above$"):
        TrainShards(str(bad), shards, 2, 0)()
    assert Store(bad).runs_path(shards[0]).exists() and not Store(bad).runs_path(shards[1]).exists()


def test_a_task_spreads_its_shards_over_its_gpus(tmp_path, monkeypatch, caplog):
    """slurm.shards_per_job with gpus_per_node = 2: shard i trains on cuda:(i mod 2), each process on its share of the
    task's CPUs; more GPUs than shards leaves some idle, with a warning."""
    from ssmpipe.slurm import TrainShard, TrainShards

    jobs = TrainShards("r", ["a", "b", "c"], 7, 2, {"b": [1, 2]}).jobs()
    assert [(j.shard, j.gpu, j.threads, j.gpus, j.replace) for j in jobs] == [
        ("a", 0, 2, 2, None),
        ("b", 1, 2, 2, [1, 2]),
        ("c", 0, 2, 2, None),
    ]
    assert [j.gpu for j in TrainShards("r", ["a", "b"], 2, 0).jobs()] == [None, None]  # no GPU asked for: the CPU
    TrainShards("r", ["a"], 1, 3).jobs()
    assert "asked for 3 GPUs for 1 shards: 2 idle" in caplog.text
    picked = []
    monkeypatch.setattr(train, "train_shard", lambda results, shard, device, replace: picked.append(device))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    caplog.clear()
    TrainShard(str(tmp_path), "s", 1, 2, None, 1)()
    TrainShard(str(tmp_path), "s", 1, 2)()  # a shard's own job: the first GPU, the other idle
    assert picked == ["cuda:1", "cuda"]
    assert caplog.text.count("the others idle") == 1


def test_train_on_a_cuda_device_here_is_one_line_and_exit_2(tmp_path, capsys):
    from ssmpipe.cli import main

    root = tmp_path / "r"
    shard = one_shard(root)
    assert main(["train", "--results", str(root), "--device", "cuda", "--", shard]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("ssmpipe: device 'cuda', but torch sees no CUDA device (torch ")
    assert not Store(root).runs_path(shard).exists()


def test_the_cuda_environment_is_the_cpu_one_with_torch_built_for_cuda():
    import yaml
    from conftest import REPO

    envs = REPO / "workflow" / "envs"
    cpu, cuda = (yaml.safe_load((envs / name).read_text()) for name in ("ssmpipe.yaml", "ssmpipe-cuda.yaml"))
    assert cuda["channels"] == cpu["channels"]
    assert [d for d in cuda["dependencies"] if not isinstance(d, dict)] == [
        d for d in cpu["dependencies"] if not isinstance(d, dict)
    ]
    cpu_pip, cuda_pip = (next(d["pip"] for d in env["dependencies"] if isinstance(d, dict)) for env in (cpu, cuda))
    index = [line for line in cuda_pip if "download.pytorch.org/whl/" in line]
    assert len(index) == 1 and index[0].rsplit("/", 1)[1].startswith("cu")  # a CUDA wheel index, not cpu
    assert [line for line in cuda_pip if line not in index] == [line for line in cpu_pip if "download." not in line]
    assert "torch==2.13.0" in cuda_pip and "-e ../.." in cuda_pip


def test_gpu_check_rehearsed_on_the_cpu_passes_its_checks(tmp_path):
    """benchmarks/gpu_check.py's parity and checkpoint checks, with the CPU standing in for the GPU: the script's own
    logic, tested where there is no GPU (on one, tests/test_cuda.py runs them on it)."""
    import importlib.util

    from conftest import REPO

    spec = importlib.util.spec_from_file_location("gpu_check", REPO / "benchmarks" / "gpu_check.py")
    check = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(check)
    cpu = torch.device("cpu")
    for result in (check.s4d_parity(cpu), check.checkpoint(cpu, tmp_path)):
        assert result["ok"], result


def test_train_shard_says_what_it_does_and_reuses_rows_stored(tmp_path, monkeypatch, caplog):
    """What `ssmpipe train` logs of a shard (its job's log, what a user reads): its points, groups and device, the
    epoch a resume starts after, the rows it wrote; a shard already stored is reused, not trained again; a shard
    without a spec is an error naming the file."""
    shard = one_shard(tmp_path)
    store = Store(tmp_path)
    ckpt = train_until(tmp_path, shard, 2, monkeypatch)
    group = load_state(ckpt)["current"]["group"]
    caplog.set_level(logging.INFO)
    caplog.clear()  # the interrupted run's lines, where an earlier test left the root logger at INFO
    n = train.train_shard(str(tmp_path), shard, "cpu")
    said = [m for m in caplog.messages if m.startswith(f"shard {shard}")]
    runs = store.runs_path(shard)
    assert said[:2] == [
        f"shard {shard}: resuming group {group} after epoch 2",
        f"shard {shard}: 4 points in 1 packed groups on cpu",
    ]
    assert said[-1] == f"shard {shard}: wrote {n} rows to {runs} ({{'ok': 4, 'diverged': 0, 'failed': 0}})"
    assert n == len(pd.read_parquet(runs)) == 4 * 5 and not ckpt.exists()  # 4 points, epochs 0..4
    caplog.clear()
    assert train.train_shard(str(tmp_path), shard, "cpu") == n
    said = [m for m in caplog.messages if m.startswith(f"shard {shard}")]
    assert said == [f"shard {shard}: already trained (by another process), {n} rows reused from {runs}"]
    store.spec_path(shard).unlink()
    with pytest.raises(StoreError) as e:
        train.train_shard(str(tmp_path), shard, "cpu")
    assert str(e.value).startswith(f"{store.spec_path(shard)}: missing or untrusted (see the warning above)")
