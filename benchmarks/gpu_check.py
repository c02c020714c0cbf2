"""Does ssmpipe work on this GPU, and what does the GPU buy? One short run (well under 8 minutes on one GPU).

Checks, in order (each one's figures under its key in the last line):
  1. `environment`: torch and its CUDA version, the device's name, capability and memory. Without a CUDA device the
     script prints {"cuda": false, ...} (torch's build and why it sees none) and exits 0: nothing else to check.
  2. `s4d_parity`: the packed S4D model (`PackedModel`, natively batched) against each point's own SequenceModel, on
     the GPU: outputs, τ and every parameter's gradient, in float64 (rtol 1e-9) and float32 (rtol 1e-4, against the
     float64 results), at L = 12 and L = 300 (> 256: the FFT convolution); and the GPU's float64 outputs against
     the CPU's (the same arithmetic up to rounding).
  3. `selective_parity`: the selective layer's chunked scan (`forward_eager`, the path on CUDA) against the
     step-by-step reference loop at non-square lengths L = 350 and 700, values and gradients in float64; and a
     pack of K = 4 selective models (vmap) against each point alone at L = 350. Reports the scan's padded steps.
     Where mamba-ssm is installed (ssmpipe[mamba]): the same pack in float32 natively batched, one call of its
     fused kernel per layer (`selective_cuda`), against the float64 points (rtol 1e-4 values, 1e-3 gradients).
  4. `checkpoint`: a shard trained on the GPU, stopped after epoch 2 (as a kill would), resumed on the CPU, and one
     trained on the CPU, resumed on the GPU: each finishes (no "not a checkpoint ssmpipe can trust"), every
     checkpoint holds CPU tensors only, the resumed rows say where each epoch ran (`device`), and their metrics
     agree with the uninterrupted runs' on each device within float32 tolerance.
  5. `overheads`: one epoch of real packed training steps (`Group.steps`: forward, backward, masking, per-point
     norms and clipping, the plateau, Adam) of the demo model (S4D, d_model 16, N 16, L 128, batch 64) at K = 1, 8
     and 64 points, milliseconds per step on the GPU and on the CPU, the GPU's CUDA kernels per step and the
     CPU's ops that would each launch one (torch.profiler), and a selective pack (K = 8, L = 350) on the GPU.
Last line: one JSON object, {"cuda": true, "ok": every check passed, "card": ..., "date": ..., <check>: {...}}; the
exit status is 1 if a check failed. `--rehearse` runs every check with the CPU standing in for the GPU (smaller
sizes), to test the script itself on a machine without one; its figures mean nothing.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import datetime
import json
import math
import re
import sys
import tempfile
import time
import traceback
from pathlib import Path

import torch

from ssmpipe import config as cfg
from ssmpipe import sweep, train
from ssmpipe.store import Store

METRICS = ("train_loss", "train_acc", "test_loss", "test_acc")


def environment(device: torch.device) -> dict:
    out = {"torch": torch.__version__, "torch_cuda": torch.version.cuda, "threads": torch.get_num_threads()}
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        out.update(
            card=props.name,
            capability=f"{props.major}.{props.minor}",
            memory_gib=round(props.total_memory / 2**30, 1),
            devices=torch.cuda.device_count(),
            cudnn=torch.backends.cudnn.version(),
        )
    else:
        out["card"] = "cpu (rehearsal)"
    return out


def _max_rel(a: torch.Tensor, b: torch.Tensor) -> float:
    """max |a − b| / (max |b| + 1e-30), on the CPU in float64."""
    a, b = a.detach().double().cpu(), b.detach().double().cpu()
    return float((a - b).abs().max() / (b.abs().max() + 1e-30))


def s4d_parity(device: torch.device) -> dict:
    from ssmpipe.models import PackedModel, SequenceModel
    from ssmpipe.models.s4d import S4D

    out, ok = {}, True
    info = {"input": "tokens", "d_input": 5, "target": "position", "n_out": 4}
    for L in (12, 300):
        torch.manual_seed(0)
        models = [
            SequenceModel(
                [S4D(6, 4, real=-0.4 * k, imag=0.5 + k) for _ in range(2)], 6, info, "last", "residual"
            ).double()
            for k in range(5)
        ]
        x = torch.randint(0, 5, (5, 3, L))
        want = {}  # float64 on the device, each point alone
        for k, m in enumerate(models):
            m = copy.deepcopy(m).to(device)
            o, t = m(x[k].to(device), with_tau=True)
            g = torch.Generator().manual_seed(k)
            g_o, g_t = (
                torch.randn(o.shape, generator=g, dtype=o.dtype),
                torch.randn(t.shape, generator=g, dtype=t.dtype),
            )
            ((o * g_o.to(device)).sum() + (t * g_t.to(device)).sum()).backward()
            want[k] = (o.detach(), t.detach(), {n: p.grad for n, p in m.named_parameters()}, g_o, g_t)
        cpu_out = models[0](x[0])  # the CPU's float64, for the device's rounding
        out[f"gpu_vs_cpu_float64_L{L}"] = _max_rel(want[0][0], cpu_out)
        for dtype, tol in ((torch.float64, 1e-9), (torch.float32, 1e-4)):
            packed = PackedModel([copy.deepcopy(m).to(dtype) for m in models], device)
            o, t = packed(x.to(device), slice(0, 5), with_tau=True)
            g_o = torch.stack([want[k][3] for k in range(5)]).to(device, dtype)
            g_t = torch.stack([want[k][4] for k in range(5)]).to(device, dtype)
            ((o * g_o).sum() + (t * g_t).sum()).backward()
            err = max(max(_max_rel(o[k], want[k][0]), _max_rel(t[k], want[k][1])) for k in range(5))
            grad = max(_max_rel(packed.params[n].grad[k], want[k][2][n]) for k in range(5) for n in want[k][2])
            name = f"{str(dtype).split('.')[1]}_L{L}"
            out[f"out_rel_err_{name}"], out[f"grad_rel_err_{name}"] = err, grad
            ok &= err <= tol and grad <= tol * 10
    out["gpu_vs_cpu_ok"] = all(v < 1e-9 for k, v in out.items() if k.startswith("gpu_vs_cpu"))
    return {"ok": bool(ok and out["gpu_vs_cpu_ok"]), **{k: _round(v) for k, v in out.items()}}


def selective_parity(device: torch.device) -> dict:
    from ssmpipe.models import PackedModel, SequenceModel, selective_cuda
    from ssmpipe.models.selective import Selective, selective_loop

    out, ok = {}, True
    for L in (350, 700):
        torch.manual_seed(L)
        layer = Selective(16, 16, 0.05).double().to(device)
        u = torch.randn(4, L, 16, dtype=torch.float64, device=device, requires_grad=True)
        T, C = layer.chunking(L, u.shape[0] * layer.A.numel(), u.device)
        blocks = -(-L // (T * C))
        out[f"padded_steps_L{L}"] = blocks * T * C - L
        inputs = [u, *layer.parameters()]
        y, ref = layer.forward_eager(u), selective_loop(layer, u)
        g = torch.randn_like(ref)
        fast = torch.autograd.grad((y * g).sum(), inputs)
        slow = torch.autograd.grad((ref * g).sum(), inputs)
        out[f"out_rel_err_L{L}"] = _max_rel(y, ref)
        out[f"grad_rel_err_L{L}"] = max(_max_rel(a, b) for a, b in zip(fast, slow))
        ok &= out[f"out_rel_err_L{L}"] < 1e-9 and out[f"grad_rel_err_L{L}"] < 1e-7
    # a pack of 4 (vmap over the points, the layer's block budget shared by them) against each point alone
    torch.manual_seed(1)
    info = {"input": "tokens", "d_input": 5, "target": "sequence", "n_out": 2}
    models = [
        SequenceModel([Selective(8, 8, s_A)], 8, info, "last", "plain").double() for s_A in (-0.2, -0.1, 0.0, 0.05)
    ]
    packed = PackedModel(models, device)
    x = torch.randint(0, 5, (4, 3, 350), device=device)
    o = packed(x, slice(0, 4))
    o.square().sum().backward()
    err = grad = 0.0
    for k, m in enumerate(models):
        m = m.to(device)
        alone = m(x[k])
        alone.square().sum().backward()
        err = max(err, _max_rel(o[k], alone))
        grad = max(grad, *(_max_rel(packed.params[n].grad[k], p.grad) for n, p in m.named_parameters()))
    out["packed_out_rel_err_L350"], out["packed_grad_rel_err_L350"] = err, grad
    ok &= err < 1e-9 and grad < 1e-7
    # mamba-ssm's kernel (float32, installed: ssmpipe[mamba]): the same pack in one call per layer, against float64
    out["mamba_ssm"] = device.type == "cuda" and selective_cuda.kernel() is not None
    if out["mamba_ssm"]:
        singles = [copy.deepcopy(m).float() for m in models]
        packed = PackedModel(singles, device)
        o = packed(x, slice(0, 4))
        o.square().sum().backward()
        err = max(_max_rel(o[k].double(), m(x[k])) for k, m in enumerate(models))
        grad = max(
            _max_rel(packed.params[n].grad[k].double(), p.grad)
            for k, m in enumerate(models)
            for n, p in m.named_parameters()
        )
        out["mamba_batched"], out["mamba_out_rel_err_L350"], out["mamba_grad_rel_err_L350"] = packed.batched, err, grad
        ok &= packed.batched and err < 1e-4 and grad < 1e-3
    return {"ok": bool(ok), **{k: _round(v) for k, v in out.items()}}


class _Stop(BaseException):
    """Stands for a kill after a checkpoint (not an Exception: no group records it as failed)."""


@contextlib.contextmanager
def _stopped_after(epoch: int):
    """While open, a shard's training stops (raises _Stop) once its checkpoint holds `epoch`."""
    real = train._save

    def save(state, path):
        real(state, path)
        if state.get("current", {}).get("epoch") == epoch:
            raise _Stop

    train._save = save
    try:
        yield
    finally:
        train._save = real


def _cpu_only(obj) -> bool:
    if isinstance(obj, torch.Tensor):
        return obj.device.type == "cpu"
    if isinstance(obj, dict):
        return all(_cpu_only(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return all(_cpu_only(v) for v in obj)
    return True


def _shard_config(root: Path) -> dict:
    return cfg.check(
        {
            "sweep": "gpucheck",
            "results": str(root),
            "shard_size": 100,
            "fixed": {
                "task": {"name": "delay", "lag": 3, "vocab": 4, "n_train": 256, "n_test": 64, "seed": 0},
                "seq_len": 32,
                "model": {"d_model": 8, "d_state": 8, "n_layers": 1},
                "train": {"epochs": 5, "batch_size": 32, "lr": 0.01},
            },
            "grid": {"model.init.real": [-0.5, -0.1], "seed": [0, 1]},
        }
    )


def _rows(root: Path, shard: str):
    import pandas as pd

    return pd.read_parquet(Store(root).runs_path(shard)).set_index(["run_id", "epoch"]).sort_index()


def checkpoint(device: torch.device, work: Path) -> dict:
    """GPU → CPU and CPU → GPU resumes of one small shard, against the uninterrupted runs on each device."""
    out, ok = {}, True
    ref = {}
    for name in {"cpu", device.type}:
        root = work / f"ref-{name}"
        [shard] = sweep.plan(_shard_config(root)).pending
        train.train_shard(str(root), shard, name)
        ref[name] = _rows(root, shard)
    for i, (first, then) in enumerate(((device.type, "cpu"), ("cpu", device.type))):
        root = work / f"{i}-{first}-then-{then}"
        [shard] = sweep.plan(_shard_config(root)).pending
        with _stopped_after(2), contextlib.suppress(_Stop):
            train.train_shard(str(root), shard, first)
        ckpt = Store(root).ckpt_path(shard)
        saved = torch.load(ckpt, weights_only=True, map_location=None if torch.cuda.is_available() else "cpu")
        cpu_only = _cpu_only(saved)
        train.train_shard(str(root), shard, then)  # resumes after epoch 2 on the other device
        rows = _rows(root, shard)
        epochs = rows.index.get_level_values("epoch")
        devices = {e: set(rows["device"][epochs == e]) for e in sorted(set(epochs))}
        where_ok = all(len(d) == 1 for d in devices.values()) and devices[2] != devices[3] or first == then
        done = rows.index.equals(ref[first].index)
        # epochs 0-2 ran on `first` as its uninterrupted run did (bit for bit on the CPU; CUDA's atomics may differ
        # in the last bits); the rest ran on `then`: within float32 rounding, amplified by a few epochs, of both
        early = float((rows[list(METRICS)][epochs <= 2] - ref[first][list(METRICS)][epochs <= 2]).abs().max().max())
        diff = {n: float((rows[list(METRICS)] - ref[n][list(METRICS)]).abs().max().max()) for n in ref}
        out[f"{first}_then_{then}"] = {
            "finished": bool(done),
            "checkpoint_cpu_only": cpu_only,
            "device_column_ok": bool(where_ok),
            "devices": {str(e): sorted(d) for e, d in devices.items()},
            "epochs_0_2_max_abs_diff": _round(early),
            **{f"max_abs_diff_vs_{n}": _round(v) for n, v in diff.items()},
        }
        ok &= done and cpu_only and where_ok and early < 1e-4 and max(diff.values()) < 1e-3
    return {"ok": bool(ok), **out}


def _step_ms(device: torch.device, K: int, kind: str, L: int, profile: bool) -> tuple[float, float | None]:
    """Milliseconds per packed training step (one epoch of Group.steps, best of 3 after a warm-up) of K points, and
    where asked, profiled: CUDA kernels per step on a GPU, on the CPU the ops per step that would each be one."""
    from ssmpipe import data
    from ssmpipe.train import Group, ensure_data

    fixed = {
        "task": {"name": "delay", "lag": 16, "vocab": 8, "n_train": 512, "n_test": 64, "seed": 0},
        "seq_len": L,
        "model": {"kind": kind, "d_model": 16, "d_state": 16, "n_layers": 1},
        "train": {"epochs": 1, "batch_size": 64, "lr": 0.01},
    }
    reals = [-1.0, -0.5, -0.25, -0.1]
    config = cfg.check(
        {
            "sweep": "steps",
            "results": tempfile.mkdtemp(prefix="gpu-check-"),
            "fixed": fixed,
            "grid": {"model.init.real": reals, "seed": list(range(-(-K // len(reals))))},
        }
    )
    points = [{"run_id": p.run_id, "settings": p.settings, "shard": "steps"} for p in sweep.expand(config)][:K]
    arrays = ensure_data(Store(config["results"]), data.spec_of(points[0]["settings"]))
    group = Group(points, arrays, device)
    steps = -(-len(group.x_tr) // group.batch_size)

    def epoch():
        group.steps()
        if device.type == "cuda":
            torch.cuda.synchronize()

    epoch()  # warm-up
    best = math.inf
    for _ in range(3):
        t0 = time.perf_counter()
        epoch()
        best = min(best, time.perf_counter() - t0)
    kernels = None
    if profile:
        from torch.autograd import DeviceType
        from torch.profiler import ProfilerActivity
        from torch.profiler import profile as prof

        with prof(activities=[ProfilerActivity.CPU, *([ProfilerActivity.CUDA] if device.type == "cuda" else [])]) as p:
            epoch()
        if device.type == "cuda":
            kernels = sum(1 for e in p.events() if e.device_type == DeviceType.CUDA) / steps
        else:  # the ops that would each launch a kernel: leaf aten ops, less views, allocations and scalar reads
            kernels = sum(1 for e in p.events() if _computes(e)) / steps
    return best / steps * 1e3, kernels


NO_KERNEL = re.compile(
    r"aten::(_?(un)?safe_)?(view\w*|as_strided|alias|_?reshape\w*|expand\w*|permute|transpose|t|slice|select|"
    r"unsqueeze|squeeze|flatten|unflatten|unbind|split\w*|chunk|narrow|movedim|diagonal|real|imag|_?conj|"
    r"_neg_view|resolve_\w+|empty\w*|resize_|set_|lift\w*|result_type|_local_scalar_dense|item|detach|"
    r"is_\w+|sym_\w+|scalar_tensor|_has_compatible_shallow_copy_type)"
)


def _computes(event) -> bool:
    """A profiled CPU event that computes (on a GPU, a kernel launch): an aten op calling no other op, and not one
    that only makes a view, allocates, or reads a scalar."""
    return event.name.startswith("aten::") and not event.cpu_children and not NO_KERNEL.fullmatch(event.name)


def overheads(device: torch.device, rehearse: bool) -> dict:
    out = {}
    for K in (1, 8) if rehearse else (1, 8, 64):
        gpu_ms, kernels = _step_ms(device, K, "s4d", 128, profile=True)
        cpu_ms, cpu_ops = _step_ms(torch.device("cpu"), K, "s4d", 128, profile=True)
        out[f"s4d_K{K}"] = {
            "gpu_ms_per_step": _round(gpu_ms),
            "cpu_ms_per_step": _round(cpu_ms),
            "cpu_over_gpu": _round(cpu_ms / gpu_ms),
            "gpu_kernels_per_step": _round(kernels),
            "cpu_ops_per_step": _round(cpu_ops),  # what launches a kernel on a GPU, as the CPU runs it
        }
        print(
            f"S4D demo step, K = {K}: {device.type} {gpu_ms:.2f} ms, cpu {cpu_ms:.2f} ms"
            + (f", {kernels:.0f} kernels" if kernels else ""),
            flush=True,
        )
    gpu_ms, kernels = _step_ms(device, 2 if rehearse else 8, "selective", 350, profile=True)
    out["selective_K8_L350"] = {"gpu_ms_per_step": _round(gpu_ms), "gpu_kernels_per_step": _round(kernels)}
    print(
        f"selective step, K = 8, L = 350: {device.type} {gpu_ms:.2f} ms"
        + (f", {kernels:.0f} kernels" if kernels else ""),
        flush=True,
    )
    return {"ok": True, **out}


def _round(v):
    if isinstance(v, float) and math.isfinite(v):
        return float(f"{v:.3g}")
    return v


def run(device: torch.device, rehearse: bool) -> dict:
    result = {
        "cuda": device.type == "cuda",
        "rehearsal": rehearse,
        "date": datetime.date.today().isoformat(),
        "environment": environment(device),
    }
    result["card"] = result["environment"]["card"]
    print(f"environment: {json.dumps(result['environment'])}", flush=True)
    with tempfile.TemporaryDirectory(prefix="ssmpipe-gpu-check-") as work:
        checks = {
            "s4d_parity": lambda: s4d_parity(device),
            "selective_parity": lambda: selective_parity(device),
            "checkpoint": lambda: checkpoint(device, Path(work)),
            "overheads": lambda: overheads(device, rehearse),
        }
        for name, check in checks.items():
            t0 = time.perf_counter()
            try:
                result[name] = check()
            except Exception as e:  # noqa: BLE001 - a check that raises has failed; the others still run
                traceback.print_exc()
                result[name] = {"ok": False, "error": f"{type(e).__name__}: {' '.join(str(e).split())[:500]}"}
            result[name]["seconds"] = round(time.perf_counter() - t0, 1)
            print(f"{name}: {'ok' if result[name]['ok'] else 'FAILED'} ({result[name]['seconds']} s)", flush=True)
    result["ok"] = all(result[name]["ok"] for name in checks)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--rehearse",
        action="store_true",
        help="run every check with the CPU standing in for the GPU (tests this script; no figures)",
    )
    args = parser.parse_args(argv)
    t0 = time.perf_counter()
    if args.rehearse:
        result = run(torch.device("cpu"), rehearse=True)
    elif not torch.cuda.is_available():
        from ssmpipe.train import no_cuda_reason

        print(
            json.dumps(
                {
                    "cuda": False,
                    "torch": torch.__version__,
                    "torch_cuda": torch.version.cuda,
                    "reason": f"torch sees no CUDA device ({no_cuda_reason()})",
                    "checked": [],
                }
            )
        )
        return 0
    else:
        result = run(torch.device("cuda"), rehearse=False)
    result["seconds"] = round(time.perf_counter() - t0, 1)
    print(json.dumps(result))
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
