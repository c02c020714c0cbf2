"""Training: one shard of sweep points in one process, packed, checkpointed after every epoch.

The shard's points are grouped by pack key; each group is one PackedModel trained
with one Adam step for all its points. Each point keeps its own seed (init and
batch order), so a packed point trains exactly as it would alone. A point whose
loss turns NaN/Inf is marked `diverged` and frozen; a group that raises is marked
`failed` with the error text; the shard goes on either way. Killed at any moment
and started again, a shard resumes from its last checkpoint, bit-identically on CPU.
"""

from __future__ import annotations

import logging
import time
import traceback

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from ssmpipe import data
from ssmpipe.atomic import atomic_path
from ssmpipe.models import PackedModel, build_model
from ssmpipe.store import Store, write_runs
from ssmpipe.sweep import pack_key

log = logging.getLogger("ssmpipe.train")


def pick_device(name: str | None = None) -> torch.device:
    """The device to train on: the one named, else CUDA when present, else CPU."""
    if name:
        return torch.device(name)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def per_point_loss(out: torch.Tensor, y: torch.Tensor):
    """out (K B [L] C), y (K B [L]) -> mean loss per point (K), correct (K), counted targets (K).

    Int targets: cross-entropy, targets of -100 ignored. Float targets: squared error
    (out has C = 1), and no accuracy (correct is NaN).
    """
    K = out.shape[0]
    if y.is_floating_point():
        err = (out.squeeze(-1) - y).pow(2).reshape(K, -1)                   # (K B·L)
        count = torch.full((K,), err.shape[1], device=y.device)
        return err.mean(1), torch.full((K,), float("nan"), device=y.device), count
    ce = F.cross_entropy(out.reshape(-1, out.shape[-1]), y.reshape(-1), ignore_index=data.IGNORE,
                         reduction="none").view(K, -1)                     # (K B·L), 0 where ignored
    valid = (y != data.IGNORE).view(K, -1)
    count = valid.sum(1)
    correct = ((out.argmax(-1) == y).view(K, -1) & valid).sum(1)
    return ce.sum(1) / count.clamp(min=1), correct, count


@torch.no_grad()
def evaluate(model: PackedModel, x: torch.Tensor, y: torch.Tensor, batch_size: int):
    """Loss and accuracy of every point on the whole set x (n L), y (n L) -> (K), (K)."""
    loss_sum = torch.zeros(model.K, dtype=torch.float64, device=x.device)
    correct = torch.zeros(model.K, dtype=torch.float64, device=x.device)
    count = torch.zeros(model.K, dtype=torch.float64, device=x.device)
    for i in range(0, len(x), batch_size):
        xb, yb = x[i:i + batch_size], y[i:i + batch_size]
        xb, yb = xb.expand(model.K, *xb.shape), yb.expand(model.K, *yb.shape)  # (K B L [C]), (K B [L])
        loss, c, n = per_point_loss(model(xb), yb)
        loss_sum += loss.double() * n
        correct += c
        count += n
    return (loss_sum / count).cpu(), (correct / count).cpu()


def train_group(points: list[dict], arrays: dict, device: torch.device, resume: dict | None,
                checkpoint, progress_desc: str = "") -> list[dict]:
    """Train the packed points of one group; return their rows (one per point and epoch)."""
    settings = points[0]["settings"]
    tr = settings["train"]
    K, E, bs = len(points), tr["epochs"], tr["batch_size"]
    info = data.describe(arrays, settings["task"])
    model = PackedModel([build_model(p["settings"], info) for p in points], device)
    opt = torch.optim.Adam(model.parameters(), lr=tr["lr"], weight_decay=tr["weight_decay"])
    gens = [torch.Generator().manual_seed(p["settings"]["seed"]) for p in points]
    x_tr, y_tr, x_te, y_te = (torch.as_tensor(arrays[k], device=device) for k in data.ARRAYS)  # x (n L [C])
    n = len(x_tr)

    if resume is not None:
        with torch.no_grad():
            for name, p in model.params.items():
                p.copy_(resume["params"][name])
        opt.load_state_dict(resume["opt"])
        for g, s in zip(gens, resume["gens"]):
            g.set_state(s)
        status, rows, start, elapsed = resume["status"], resume["rows"], resume["epoch"] + 1, resume["elapsed"]
    else:
        status, rows, start, elapsed = ["ok"] * K, [], 1, 0.0
        t0 = time.perf_counter()
        train_loss, train_acc = evaluate(model, x_tr, y_tr, bs)
        test_loss, test_acc = evaluate(model, x_te, y_te, bs)
        elapsed += time.perf_counter() - t0
        for k in range(K):
            if not (np.isfinite(train_loss[k].item()) and np.isfinite(test_loss[k].item())):
                status[k] = "diverged"
            rows.append(_row(points[k], 0, train_loss[k], train_acc[k], test_loss[k], test_acc[k], elapsed))
        checkpoint(model, opt, gens, status, rows, 0, elapsed)

    bar = tqdm(range(start, E + 1), desc=progress_desc, initial=start - 1, total=E, mininterval=2.0)
    for epoch in bar:
        alive = torch.tensor([s == "ok" for s in status], device=device)
        if not alive.any():
            break
        t0 = time.perf_counter()
        perms = torch.stack([torch.randperm(n, generator=g) for g in gens]).to(device)  # (K n)
        loss_sum = torch.zeros(K, dtype=torch.float64, device=device)
        correct = torch.zeros(K, dtype=torch.float64, device=device)
        count = torch.zeros(K, dtype=torch.float64, device=device)
        for i in range(0, n, bs):
            idx = perms[:, i:i + bs]                                        # (K B)
            loss, c, cnt = per_point_loss(model(x_tr[idx]), y_tr[idx])
            opt.zero_grad()
            torch.where(alive, loss, torch.zeros_like(loss)).sum().backward()
            with torch.no_grad():
                for p in model.parameters():
                    p.grad[~alive] = 0                                      # diverged points stay frozen
            opt.step()
            loss_sum += loss.detach().double() * cnt
            correct += c
            count += cnt
            alive = alive & torch.isfinite(loss.detach())
        test_loss, test_acc = evaluate(model, x_te, y_te, bs)
        elapsed += time.perf_counter() - t0
        train_loss, train_acc = (loss_sum / count).cpu(), (correct / count).cpu()
        for k in range(K):
            if status[k] != "ok":
                continue
            rows.append(_row(points[k], epoch, train_loss[k], train_acc[k], test_loss[k], test_acc[k], elapsed))
            if not (alive[k] and np.isfinite(test_loss[k].item())):
                status[k] = "diverged"
        ok = [k for k in range(K) if status[k] == "ok"]
        if ok:
            bar.set_postfix(train_loss=f"{train_loss[ok].mean():.4f}", test_acc=f"{test_acc[ok].mean():.3f}",
                            alive=f"{len(ok)}/{K}")
        log.info("%s epoch %d/%d train_loss %s test_acc %s alive %d/%d", progress_desc, epoch, E,
                 np.round(train_loss.numpy(), 4).tolist(), np.round(test_acc.numpy(), 3).tolist(),
                 status.count("ok"), K)
        checkpoint(model, opt, gens, status, rows, epoch, elapsed)
    bar.close()
    return _finalise(rows, dict(zip((p["run_id"] for p in points), status)), {})


def train_shard(results: str, shard: str, device: str | None = None) -> int:
    """Train every point of `shard` and write its Parquet file; return the number of rows."""
    store = Store(results)
    spec = store.read_spec(shard)
    dev = pick_device(device)
    ckpt_path = store.ckpt_path(shard)
    state = torch.load(ckpt_path, weights_only=False) if ckpt_path.exists() else {"finished": {}}
    if "current" in state:
        log.info("shard %s: resuming group %s after epoch %d", shard, state["current"]["group"],
                 state["current"]["epoch"])
    groups: dict[str, list[dict]] = {}
    for p in spec["points"]:
        p = {**p, "shard": shard}
        groups.setdefault(pack_key(p["settings"]), []).append(p)
    log.info("shard %s: %d points in %d packed groups on %s", shard, len(spec["points"]), len(groups), dev)

    for i, (key, points) in enumerate(sorted(groups.items())):
        if key in state["finished"]:
            continue
        current = state.get("current")
        resume = current if current and current["group"] == key else None

        def checkpoint(model, opt, gens, status, rows, epoch, elapsed, key=key):
            state["current"] = {"group": key, "epoch": epoch, "elapsed": elapsed, "status": list(status),
                                "rows": list(rows), "gens": [g.get_state() for g in gens],
                                "params": {n: p.detach().cpu() for n, p in model.params.items()},
                                "opt": opt.state_dict()}
            _save(state, ckpt_path)

        try:
            arrays = ensure_data(store, data.spec_of(points[0]["settings"]))
            rows = train_group(points, arrays, dev, resume, checkpoint, f"{shard[:8]} group {i + 1}/{len(groups)}")
        except Exception as e:  # the group fails, the shard goes on
            log.error("shard %s group %s failed:\n%s", shard, key, traceback.format_exc())
            current = state.get("current") or {}
            done = current.get("rows", []) if current.get("group") == key else []
            rows = _finalise(done, {p["run_id"]: "failed" for p in points}, {p["run_id"]: f"{type(e).__name__}: {e}"
                                                                             for p in points}, points)
        state["finished"][key] = rows
        state.pop("current", None)
        _save(state, ckpt_path)

    rows = [r for key in sorted(state["finished"]) for r in state["finished"][key]]
    write_runs(rows, store.runs_path(shard))
    ckpt_path.unlink(missing_ok=True)
    counts = {s: len({r["run_id"] for r in rows if r["status"] == s}) for s in ("ok", "diverged", "failed")}
    log.info("shard %s: wrote %d rows to %s (%s)", shard, len(rows), store.runs_path(shard), counts)
    return len(rows)


def ensure_data(store: Store, spec: dict) -> dict:
    """The data set of `spec`, from the cache (built and cached first if missing)."""
    path = store.data_path(data.key_of(spec))
    if not path.exists():
        data.save(data.build(spec), path)
    return data.load(path)


def _row(point, epoch, train_loss, train_acc, test_loss, test_acc, wall_s) -> dict:
    return {"run_id": point["run_id"], "shard_id": point["shard"], "settings": point["settings"],
            "epoch": epoch, "train_loss": float(train_loss), "train_acc": float(train_acc),
            "test_loss": float(test_loss), "test_acc": float(test_acc), "wall_s": float(wall_s)}


def _finalise(rows: list[dict], status: dict, error: dict, points: list[dict] | None = None) -> list[dict]:
    """Stamp each run's final status (and error) on all its rows; a run with no rows gets one."""
    have = {r["run_id"] for r in rows}
    for p in points or []:
        if p["run_id"] not in have:
            rows.append(_row(p, 0, *[float("nan")] * 4, 0.0))
    for r in rows:
        r["status"], r["error"] = status[r["run_id"]], error.get(r["run_id"])
    return rows


def _save(state: dict, path) -> None:
    with atomic_path(path) as tmp:
        torch.save(state, tmp)
