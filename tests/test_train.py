"""Packed training, divergence and failure handling, and SIGKILL-and-resume."""

import signal
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from conftest import tiny_config

from ssmpipe import config as cfg
from ssmpipe import data, keys, sweep
from ssmpipe.checkpoint import load_state
from ssmpipe.models import PackedModel, build_model, packing
from ssmpipe.store import Store
from ssmpipe.train import backward_part, ensure_data, train_group, train_shard

METRICS = ["train_loss", "train_acc", "test_loss", "test_acc"]
NEW_MEASURES = ["chance_acc", "dt", "rho_A", "S2"]


def _points(**changes):
    config = cfg.check(tiny_config(**changes))
    return [{"run_id": p.run_id, "settings": p.settings, "shard": "test"} for p in sweep.expand(config)]


def _train(points, tmp_path):
    arrays = ensure_data(Store(tmp_path), data.spec_of(points[0]["settings"]))
    rows = train_group(points, arrays, torch.device("cpu"), None, lambda *a: None)
    return pd.DataFrame(rows).set_index(["run_id", "epoch"]).sort_index()


@pytest.mark.parametrize("kind", ["s4d", "s4", "selective"])
def test_packed_training_equals_separate_trainings(tmp_path, kind):
    reals = [-1.0, -0.5, 0.0] if kind == "s4d" else [-0.5]  # s4, selective: init.real plays no part
    points = _points(
        **{
            "grid.seq_len": [16],
            "grid.model.init.real": reals,
            "grid.seed": list(range(6 // len(reals))),
            "fixed.train.epochs": 3,
            "fixed.model.kind": kind,
        }
    )
    assert len({keys.pack_key(p["settings"]) for p in points}) == 1 and len(points) == 6
    packed = _train(points, tmp_path)
    alone = pd.concat([_train([p], tmp_path) for p in points]).sort_index()
    assert packed.index.equals(alone.index) and len(packed) == 6 * 4
    np.testing.assert_allclose(packed[METRICS].to_numpy(), alone[METRICS].to_numpy(), rtol=1e-5, atol=1e-6)
    # the new per-epoch measures too, packed (vmapped probe, or S4D's batched one) as alone; NaN where undefined
    np.testing.assert_allclose(packed[NEW_MEASURES].to_numpy(), alone[NEW_MEASURES].to_numpy(), rtol=1e-4)
    undefined = ["dt"] if kind == "selective" else ["rho_A", "S2"]
    assert packed[undefined].isna().all().all()
    assert np.isfinite(packed[[m for m in NEW_MEASURES if m not in undefined]].to_numpy()).all()
    assert packed.groupby(level="run_id")["chance_acc"].nunique().eq(1).all()
    assert (packed["status"] == "ok").all()
    # the points really differ from each other (so equality above is not trivial)
    final = packed.xs(3, level="epoch")["train_loss"]
    assert final.nunique() == 6


def test_packed_training_in_uneven_sub_packs_equals_separate_trainings(tmp_path, monkeypatch):
    """5 points in sub-packs of 2, 2, 1 (forward and backward one sub-pack at a time) train as each alone."""
    points = _points(
        **{
            "grid.seq_len": [16],
            "grid.model.init.real": [-1.0, -0.5, -0.1, 0.0, -0.3],
            "grid.seed": [0],
            "fixed.train.epochs": 3,
        }
    )
    tiny = points[0]["settings"]
    per_point = tiny["train"]["batch_size"] * 16 * tiny["model"]["d_model"]  # B·L·H
    monkeypatch.setattr(packing, "SUBPACK_ELEMENTS", 2 * per_point // torch.get_num_threads())  # sub-packs of 2
    packed = _train(points, tmp_path)
    alone = pd.concat([_train([p], tmp_path) for p in points]).sort_index()
    np.testing.assert_allclose(packed[METRICS].to_numpy(), alone[METRICS].to_numpy(), rtol=1e-5, atol=1e-6)
    assert packed.xs(3, level="epoch")["train_loss"].nunique() == 5


def test_packed_steps_equal_separate_modules_each_with_its_own_adam(monkeypatch):
    """The reference a user would write: K nn.Modules, K Adams, plain cross-entropy; packed: sub-packs of 2 of 5.
    In float64, so that Adam's normalised first steps don't blow float32 rounding up to visible differences."""
    points = _points(**{"grid.seq_len": [16], "grid.model.init.real": [-1.0, -0.5, -0.1, 0.0, -0.3], "grid.seed": [0]})
    info = {"input": "tokens", "d_input": 4, "target": "position", "n_out": 4, "loss": "ce"}
    monkeypatch.setattr(packing, "SUBPACK_ELEMENTS", 2 * 8 * 16 * 4 // torch.get_num_threads())  # sub-packs of 2
    singles = [build_model(p["settings"], info).double() for p in points]
    packed = PackedModel([build_model(p["settings"], info).double() for p in points])
    assert packed.batched and len(packed.subpacks(torch.zeros(8, 16))) == 3
    opts = [torch.optim.Adam(m.parameters(), lr=0.01) for m in singles]
    popt = torch.optim.Adam(packed.parameters(), lr=0.01)
    gen = torch.Generator().manual_seed(0)
    alive = torch.ones(5, dtype=torch.bool)
    for _ in range(4):
        x, y = torch.randint(0, 4, (5, 8, 16), generator=gen), torch.randint(0, 4, (5, 8, 16), generator=gen)
        want = []
        for m, o, xk, yk in zip(singles, opts, x, y):
            o.zero_grad()
            loss = F.cross_entropy(m(xk).reshape(-1, 4), yk.reshape(-1))
            loss.backward()
            o.step()
            want.append(loss.item())
        popt.zero_grad()
        got = torch.cat(
            [backward_part(packed, sub, x[sub], y[sub], alive[sub], 0.0, 0.0)[0] for sub in packed.subpacks(x[0])]
        )
        popt.step()
        np.testing.assert_allclose(got.numpy(), want, rtol=1e-10)
    for k, m in enumerate(singles):
        for name, p in m.named_parameters():
            torch.testing.assert_close(packed.params[name][k].detach(), p.detach(), rtol=1e-8, atol=1e-10, msg=name)
            torch.testing.assert_close(packed.params[name].grad[k], p.grad, rtol=1e-7, atol=1e-12, msg=name)
    assert not torch.allclose(singles[0].decoder.weight, singles[1].decoder.weight)


def test_divergence_is_recorded_and_the_rest_train_on(tmp_path):
    # scale 1e39 overflows float32: C is ±inf, the loss NaN (1e38 stays finite, LayerNorm absorbs it)
    points = _points(
        **{
            "grid.seq_len": [16],
            "grid.seed": [0],
            "grid.model.init.real": [-0.5],
            "grid.model.init.scale": [1.0, 1e39],
            "fixed.train.epochs": 3,
        }
    )
    rows = _train(points, tmp_path)
    huge = next(p["run_id"] for p in points if p["settings"]["model"]["init"]["scale"] == 1e39)
    fine = next(p["run_id"] for p in points if p["run_id"] != huge)
    assert (rows.loc[huge, "status"] == "diverged").all()
    assert not np.isfinite(rows.loc[huge, "test_loss"]).all()
    assert len(rows.loc[huge]) < 4  # stopped after it diverged
    assert (rows.loc[fine, "status"] == "ok").all() and len(rows.loc[fine]) == 4
    alone = _train([p for p in points if p["run_id"] == fine], tmp_path)
    np.testing.assert_allclose(
        rows.loc[fine, METRICS].to_numpy(), alone.loc[fine, METRICS].to_numpy(), rtol=1e-5, atol=1e-6
    )


def test_large_learning_rate_diverges_mid_training(tmp_path):
    points = _points(
        **{
            "grid.seq_len": [16],
            "grid.seed": [0],
            "grid.model.init.real": [-0.5],
            "fixed.train.lr": 1e30,
            "fixed.train.epochs": 4,
        }
    )
    rows = _train(points, tmp_path)
    assert (rows["status"] == "diverged").all()
    assert np.isfinite(rows.xs(0, level="epoch")["train_loss"]).all()  # fine at init


def test_a_failing_group_is_recorded_and_the_shard_goes_on(tmp_path):
    """A group whose data cannot be read (tokens outside the vocabulary) fails with its error; delay trains."""
    npz = tmp_path / "tokens.npz"
    arrays = data.build(data.spec_of(cfg.check(tiny_config())["fixed"]))
    results = tmp_path / "results"
    config = cfg.check(
        tiny_config(results=str(results), shard_size=100, **{"grid.seq_len": [16], "grid.model.init.real": [-0.5]})
    )
    delay = sweep.expand(config)[0].settings
    data.save({**arrays, "x_train": arrays["x_train"] + 100}, npz)  # past config checks: settings made by hand
    bad = data.with_data_hash({**delay, "task": {**delay["task"], "name": "npz", "path": str(npz)}})
    points = [(keys.run_id(s), s) for s in (delay, bad)]
    shard = keys.digest(sorted(r for r, _ in points))
    store = Store(results)
    store.write_spec(shard, points)
    train_shard(str(results), shard)
    df = pd.read_parquet(store.runs_path(shard))
    by_task = df.groupby("task.name")["status"].agg(set)
    assert by_task["npz"] == {"failed"} and by_task["delay"] == {"ok"}
    assert df[df["task.name"] == "npz"]["error"].str.contains("tokens.npz").all()
    assert not store.ckpt_path(shard).exists()


def _shard_results(root, config_changes):
    config = cfg.check(tiny_config(results=str(root), **config_changes))
    plan = sweep.plan(config)
    assert len(plan.pending) == 1
    return plan.pending[0]


RESUME = {
    "shard_size": 100,
    "grid.seq_len": [64],
    "grid.seed": [0, 1],
    "grid.model.init.real": [-0.5, -0.1],
    "fixed.task.n_train": 512,
    "fixed.task.lag": 8,
    "fixed.model.d_model": 16,
    "fixed.model.d_state": 16,
    "fixed.train.epochs": 12,
}


def _train_cmd(root, shard):
    return [sys.executable, "-m", "ssmpipe", "train", "--results", str(root), "--threads", "1", shard]


@pytest.mark.slow
def test_sigkill_and_resume_is_bit_identical(tmp_path):
    ref_root, run_root = tmp_path / "ref", tmp_path / "run"
    shard = _shard_results(ref_root, RESUME)
    assert _shard_results(run_root, RESUME) == shard
    subprocess.run(_train_cmd(ref_root, shard), check=True, capture_output=True)

    store = Store(run_root)
    proc = subprocess.Popen(_train_cmd(run_root, shard), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline:  # kill once the shard has checkpointed a few epochs
        if store.ckpt_path(shard).exists():
            try:
                epoch = load_state(store.ckpt_path(shard))["current"]["epoch"]  # plain tensors and containers
            except Exception:
                epoch = -1  # renamed over while we read: try again
            if epoch >= 4:
                break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not store.runs_path(shard).exists(), "shard finished before it was killed: make it longer"
    killed_at = load_state(store.ckpt_path(shard))["current"]["epoch"]
    assert 4 <= killed_at < 12

    resumed = subprocess.run(_train_cmd(run_root, shard), check=True, capture_output=True, text=True)
    assert f"after epoch {killed_at}" in resumed.stderr
    ref = pd.read_parquet(Store(ref_root).runs_path(shard)).set_index(["run_id", "epoch"]).sort_index()
    got = pd.read_parquet(store.runs_path(shard)).set_index(["run_id", "epoch"]).sort_index()
    assert len(got) == 4 * 13
    pd.testing.assert_frame_equal(got[METRICS], ref[METRICS], check_exact=True)  # bit-identical
    assert not store.ckpt_path(shard).exists()


def test_plateau_matches_torch_reduce_lr_on_plateau_per_point():
    from ssmpipe.train import Plateau

    losses = torch.tensor(
        [
            [1.0, 0.9, 0.9, 0.95, 0.9, 0.8, 0.8, 0.8, 0.8, 0.7, 0.7, 0.7, 0.7],
            [1.0, 0.5, 0.4, 0.3, 0.2, 0.2, 0.2, 0.2, 0.2, 0.2, 0.2, 0.2, 0.1],
        ],
        dtype=torch.float64,
    )
    ours = Plateau(2, factor=0.5, patience=2, device="cpu")
    for epoch in range(losses.shape[1]):
        ours.update(losses[:, epoch])
        for k in range(2):
            opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
            ref = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, factor=0.5, patience=2)
            for e in range(epoch + 1):
                ref.step(losses[k, e].item())
            assert ours.scale[k].item() == pytest.approx(opt.param_groups[0]["lr"]), (k, epoch)
        assert ours.reduced == (ours.scale.tolist() != [1.0, 1.0])  # a step copies the parameters only then
    assert ours.scale.tolist() != [1.0, 1.0]
    ours.load(Plateau(2, factor=0.5, patience=2, device="cpu").state())
    assert not ours.reduced


def test_a_plateau_step_is_adam_at_each_points_own_learning_rate():
    """Plateau.step with point k's scale s_k: the packed Adam step equals Adam with lr·s_k on point k alone."""
    from ssmpipe.train import Plateau

    torch.manual_seed(0)
    packed = torch.randn(3, 4, requires_grad=True)  # (K 4): three points packed
    grads = [torch.randn(3, 4) for _ in range(3)]
    plateau = Plateau(3, factor=0.5, patience=0, device="cpu")
    plateau.scale = torch.tensor([1.0, 0.5, 0.25], dtype=torch.float64)
    alone = [packed[k].detach().clone().requires_grad_() for k in range(3)]
    opts = [torch.optim.Adam([a], lr=0.1 * s) for a, s in zip(alone, (1.0, 0.5, 0.25))]
    opt = torch.optim.Adam([packed], lr=0.1)
    for g in grads:  # Adam's moments carry over steps: three of them
        packed.grad = g.clone()
        plateau.step(opt, [packed])
        for k, (a, o) in enumerate(zip(alone, opts)):
            a.grad = g[k].clone()
            o.step()
    for k in range(3):
        torch.testing.assert_close(packed[k].detach(), alone[k].detach())


def test_clip_per_point_equals_clipping_each_point_alone():
    from ssmpipe.train import clip_per_point

    torch.manual_seed(0)
    params = [torch.randn(3, 4, 5, requires_grad=True), torch.randn(3, 7, requires_grad=True)]
    for p, scale in zip(params, (1.0, 10.0)):
        p.grad = torch.randn_like(p) * scale
    want = []
    for k in range(3):
        alone = [p[k].detach().clone().requires_grad_() for p in params]
        for a, p in zip(alone, params):
            a.grad = p.grad[k].clone()
        torch.nn.utils.clip_grad_norm_(alone, max_norm=1.5)
        want.append([a.grad for a in alone])
    clip_per_point(params, 1.5)
    for k in range(3):
        for p, w in zip(params, want[k]):
            torch.testing.assert_close(p.grad[k], w, rtol=1e-5, atol=1e-7)


def test_packed_equals_separate_with_clipping_schedule_penalty_and_tau_regularizer(tmp_path):
    points = _points(
        **{
            "grid.seq_len": [16],
            "grid.model.init.real": [-1.0, -0.1],
            "grid.seed": [0, 1],
            "fixed.train.epochs": 4,
            "fixed.train.clip": 0.05,
            "fixed.train.plateau_factor": 0.5,
            "fixed.train.plateau_patience": 0,
            "fixed.reg.lambda": 0.1,
        }
    )
    packed = _train(points, tmp_path)
    alone = pd.concat([_train([p], tmp_path) for p in points]).sort_index()
    np.testing.assert_allclose(packed[METRICS].to_numpy(), alone[METRICS].to_numpy(), rtol=1e-5, atol=1e-6)
    plain = _train(
        _points(
            **{"grid.seq_len": [16], "grid.model.init.real": [-1.0, -0.1], "grid.seed": [0, 1], "fixed.train.epochs": 4}
        ),
        tmp_path,
    )
    assert not np.allclose(plain["train_loss"].to_numpy(), packed["train_loss"].to_numpy())  # the options act


class _Stop(Exception):
    pass


@pytest.mark.parametrize(
    "kind, stateful",
    [
        (
            "s4d",
            {
                "fixed.train.lr": 0.5,
                "fixed.train.plateau_factor": 0.5,
                "fixed.train.plateau_patience": 0,
                "fixed.train.clip": 0.05,
                "fixed.reg.lambda": 0.01,
            },
        ),
        (
            "selective",
            {
                "fixed.train.lr": 0.3,
                "fixed.train.plateau_factor": 0.5,
                "fixed.train.plateau_patience": 0,
                "fixed.train.clip": 0.05,
            },
        ),
    ],
)
def test_resume_from_any_epoch_is_bit_identical_with_every_stateful_option_on(tmp_path, kind, stateful):
    """A group stopped once the lr plateau has acted (patience 0; from epoch 2 on) and resumed from its checkpoint
    (saved and loaded as a file is) ends with the rows of an uninterrupted run, bit for bit, with gradient clipping
    and the τ regularizer on too: each one's state must be in the checkpoint."""
    changes = {
        "grid.seq_len": [16],
        "grid.model.init.imag": [0.0] if kind == "selective" else [1.0],
        "fixed.model.kind": kind,
        "fixed.train.epochs": 6,
        **stateful,
    }
    points = _points(**changes)
    arrays = ensure_data(Store(tmp_path), data.spec_of(points[0]["settings"]))
    cpu = torch.device("cpu")
    reference = train_group(points, arrays, cpu, None, lambda state: None)
    saved = tmp_path / "state.pt"

    def stop_after_two(state):
        torch.save(state, saved)
        if state["epoch"] >= 2 and (state["plateau"]["scale"] < 1).any() or state["epoch"] == 5:
            raise _Stop

    with pytest.raises(_Stop):
        train_group(points, arrays, cpu, None, stop_after_two)
    state = load_state(saved)
    assert (state["plateau"]["scale"] < 1).any()  # the plateau has acted by then: its state matters
    assert any(r["grad_norm"] > 0.05 for r in state["rows"] if r["epoch"] > 0)  # clipping acts
    resumed = train_group(points, arrays, cpu, state, lambda state: None)
    assert pd.DataFrame(resumed)[METRICS].equals(pd.DataFrame(reference)[METRICS])
