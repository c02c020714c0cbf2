"""Training: one shard of sweep points in one process, packed, checkpointed after every epoch.

The shard's points are grouped by pack key; each group is one PackedModel trained
with one Adam step for all its points. Each point keeps its own seed (init and
batch order), so a packed point trains exactly as it would alone. A point whose
loss turns NaN/Inf is marked `diverged` and frozen; a group that raises is marked
`failed` with the error text; the shard goes on either way. Killed at any moment
and started again, a shard resumes from its last checkpoint, bit-identically on the same device type
(each row says where it trained: `where`).
"""

from __future__ import annotations

import io
import logging
import math
import os
import time
import traceback
import zipfile

import filelock
import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from ssmpipe import data
from ssmpipe import progress as live
from ssmpipe.atomic import atomic_path, stamp
from ssmpipe.checkpoint import device_free, load_state
from ssmpipe.errors import StoreError
from ssmpipe.keys import pack_key
from ssmpipe.measures import chance_accuracy, measure_packed
from ssmpipe.models import PackedModel, build_model, init_from_data
from ssmpipe.runs import read_runs
from ssmpipe.store import Store

log = logging.getLogger("ssmpipe.train")


class DeviceError(StoreError):
    """The job cannot train on the device it asked for (GPUs, and torch sees no CUDA device): one line saying why."""


def pick_device(name: str | None = None, gpus: int | None = None) -> torch.device:
    """The device to train on.

    gpus: the GPUs per node the job asked its scheduler for (a SLURM job: slurm.gpus_per_node); None for a local
    run. A job that asked for GPUs trains on CUDA, and fails at once (DeviceError) where torch sees none (a CPU
    build of torch, no driver, no GPU granted) rather than train on the CPU for hours; one that asked for none
    trains on the CPU, whatever GPU it can see (a node's GPUs need not be isolated) and whatever `name` says.
    A local run trains on the device named, else CUDA when present, else the CPU (CUDA_VISIBLE_DEVICES= hides
    the GPUs: CPU); a named CUDA device torch cannot see is a DeviceError too.
    """
    if gpus is not None and gpus <= 0:
        if name and torch.device(name).type != "cpu":
            log.warning(
                "device %s ignored: the job asked for no GPU (slurm.gpus_per_node: 0), it trains on the CPU", name
            )
        return torch.device("cpu")
    if gpus is not None:
        if not torch.cuda.is_available():
            raise DeviceError(
                f"asked for {gpus} GPU{'s' if gpus != 1 else ''} per node, but torch sees no CUDA "
                f"device ({no_cuda_reason()})"
            )
        if gpus > 1 and not name:
            log.warning("asked for %d GPUs per node: a shard trains on one (cuda:0), the others idle", gpus)
        return torch.device(name if name and torch.device(name).type == "cuda" else "cuda")
    if name:
        device = torch.device(name)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise DeviceError(f"device {name!r}, but torch sees no CUDA device ({no_cuda_reason()})")
        return device
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def no_cuda_reason() -> str:
    """Why torch sees no CUDA device, as far as this process can tell (for DeviceError's message)."""
    if torch.version.cuda is None:
        return (
            f"torch {torch.__version__} built for CPU? A GPU job needs torch built for CUDA: the CUDA env, "
            f"workflow/envs/ssmpipe-cuda.yaml"
        )
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    return (
        f"torch {torch.__version__} is built for CUDA {torch.version.cuda}, but finds no GPU: "
        f"CUDA_VISIBLE_DEVICES={visible!r}; no GPU granted, or no NVIDIA driver on this node?"
    )


def where(device: torch.device | str) -> dict:
    """The columns that say where a row was trained: device ("cpu", or "cuda:" and the card's name) and cuda_version
    (torch's CUDA version on CUDA, else None). Results are bit-for-bit reproducible only on the same device type."""
    device = torch.device(device)
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device) if torch.cuda.is_available() else "unavailable"
        return {"device": f"cuda:{name}", "cuda_version": torch.version.cuda}
    return {"device": device.type, "cuda_version": None}


def per_point_loss(out: torch.Tensor, y: torch.Tensor):
    """out (K B [L] C), y (K B [L]) -> mean loss per point (K), correct (K), counted targets (K).

    Int targets: cross-entropy, targets of -100 ignored. Float targets: squared error
    (out has C = 1), and no accuracy (correct is NaN).
    """
    K = out.shape[0]
    if y.is_floating_point():
        err = (out.squeeze(-1) - y).pow(2).reshape(K, -1)  # (K B·L)
        count = torch.full((K,), err.shape[1], device=y.device)
        return err.mean(1), torch.full((K,), float("nan"), device=y.device), count
    ce = F.cross_entropy(
        out.movedim(-1, 1),
        y,
        ignore_index=data.IGNORE,  # classes on dim 1: softmax over
        reduction="none",
    ).reshape(K, -1)  # an outer dim; (K B·L), 0 where ignored
    valid = (y != data.IGNORE).view(K, -1)
    count = valid.sum(1)
    correct = ((out.movedim(-1, 1).max(1).indices == y).view(K, -1) & valid).sum(1)  # max: argmax is slow on dim 1
    return ce.sum(1) / count.clamp(min=1), correct, count


@torch.no_grad()
def evaluate(model: PackedModel, x: torch.Tensor, y: torch.Tensor, batch_size: int):
    """Loss and accuracy of every point on the whole set x (n L), y (n L) -> (K), (K)."""
    loss_sum = torch.zeros(model.K, dtype=torch.float64, device=x.device)
    correct = torch.zeros(model.K, dtype=torch.float64, device=x.device)
    count = torch.zeros(model.K, dtype=torch.float64, device=x.device)
    for i in range(0, len(x), batch_size):
        xb, yb = x[i : i + batch_size], y[i : i + batch_size]
        xb, yb = xb.expand(model.K, *xb.shape), yb.expand(model.K, *yb.shape)  # (K B L [C]), (K B [L])
        loss, c, n = per_point_loss(model(xb), yb)
        loss_sum += loss.double() * n
        correct += c
        count += n
    return (loss_sum / count).cpu(), (correct / count).cpu()


def train_group(
    points: list[dict],
    arrays: dict,
    device: torch.device,
    resume: dict | None,
    checkpoint,
    progress_desc: str = "",
    length_arrays: dict[int, dict] | None = None,
) -> list[dict]:
    """Train the packed points of one group; return their rows (one per point and epoch).

    After every epoch `checkpoint(state)` gets the group's whole resumable state (a dict of
    tensors and lists); passing that dict back as `resume` continues bit-identically.
    length_arrays (`length_data`): the data sets at the test lengths T′; after the last epoch every
    point is tested on each one's test split (len_test_loss, len_test_acc).
    """
    group = Group(points, arrays, device)
    if resume is not None:
        group.restore(resume)
    else:
        group.record_start()
        checkpoint(group.state(0))
    epochs = group.train_settings["epochs"]
    bar = tqdm(
        range(group.epoch + 1, epochs + 1),
        desc=progress_desc,
        initial=group.epoch,
        total=epochs,
        mininterval=2.0,
        disable=None,
    )  # a bar on a terminal only; in a log file, the log line of each epoch
    for epoch in bar:
        if "ok" not in group.status:
            break
        group.train_epoch(epoch, length_arrays if epoch == epochs else None)
        ok = [k for k, s in enumerate(group.status) if s == "ok"]
        if ok:
            bar.set_postfix(
                train_loss=f"{group.train_loss[ok].mean():.4f}",
                test_acc=f"{group.test_acc[ok].mean():.3f}",
                alive=f"{len(ok)}/{group.K}",
            )
        log.info(
            "%s epoch %d/%d train_loss %s test_acc %s alive %d/%d",
            progress_desc,
            epoch,
            epochs,
            np.round(group.train_loss.numpy(), 4).tolist(),
            np.round(group.test_acc.numpy(), 3).tolist(),
            len(ok),
            group.K,
        )
        checkpoint(group.state(epoch))
    bar.close()
    return _finalise(group.rows, dict(zip((p["run_id"] for p in points), group.status)), {})


class Group:
    """One packed group of points in training: its model, one Adam for all of it, each point's batch-order generator
    and learning-rate scale, its data on the device, and the rows logged so far (`state` / `restore`: resumable).

    Each epoch is named steps: `steps` (one pass over the training set), then `evaluate` on the test set, the
    measures (`measure`), and a row per point still training (`record`)."""

    def __init__(self, points: list[dict], arrays: dict, device: torch.device):
        settings = points[0]["settings"]
        self.points, self.device, self.K = points, device, len(points)
        tr = self.train_settings = settings["train"]
        self.batch_size, self.lam = tr["batch_size"], settings["reg"]["lambda"]
        info = data.describe(arrays, settings["task"])
        self.x_tr, self.y_tr, self.x_te, self.y_te = (
            torch.as_tensor(arrays[k], device=device) for k in data.ARRAYS
        )  # x (n L [C])
        self.probe_x = self.x_tr[: self.batch_size]  # the batch measures are taken on
        self.chance_acc = chance_accuracy(self.y_te)  # the test_acc of learning nothing
        singles = [
            init_from_data(build_model(p["settings"], info).to(device), self.probe_x, p["settings"]) for p in points
        ]
        self.model = PackedModel(singles, device)
        # On CUDA Adam is fused: a kernel or two a step for all parameters (torch's default there, foreach, launches
        # several); the CPU keeps the per-tensor loop its stored results were trained with
        self.opt = torch.optim.Adam(
            self.model.parameters(), lr=tr["lr"], weight_decay=tr["weight_decay"], fused=device.type == "cuda"
        )
        self.gens = [torch.Generator().manual_seed(p["settings"]["seed"]) for p in points]
        self.plateau = Plateau(self.K, tr["plateau_factor"], tr["plateau_patience"], device)
        self.status, self.rows, self.epoch, self.elapsed = ["ok"] * self.K, [], 0, 0.0
        self.where = where(device)  # each row's device and cuda_version

    def state(self, epoch: int) -> dict:
        return {
            "epoch": epoch,
            "elapsed": self.elapsed,
            "status": list(self.status),
            "rows": list(self.rows),
            "gens": [g.get_state() for g in self.gens],
            "params": {k: p.detach().cpu() for k, p in self.model.params.items()},
            "opt": device_free(self.opt.state_dict()),
            "plateau": self.plateau.state(),
        }  # all on the CPU

    def restore(self, state: dict) -> None:
        """Continue from a `state` (a checkpoint's); CheckpointMismatch if it does not fit this group's model."""
        try:
            with torch.no_grad():
                for name, p in self.model.params.items():
                    saved = state["params"][name]
                    if tuple(saved.shape) != tuple(p.shape):
                        raise ValueError(f"{name} is {tuple(saved.shape)}, the model's {tuple(p.shape)}")
                    p.copy_(saved)
            self.opt.load_state_dict(on_this_device(state["opt"], self.opt))
            if len(state["gens"]) != self.K or len(state["status"]) != self.K:
                raise ValueError(f"it holds {len(state['status'])} points, the group {self.K}")
        except (KeyError, TypeError, ValueError, RuntimeError, AttributeError) as e:
            raise CheckpointMismatch(f"it does not fit the shard's model ({type(e).__name__}: {e})") from None
        for g, s in zip(self.gens, state["gens"]):
            g.set_state(s)
        self.plateau.load(state["plateau"])
        self.status, self.rows = state["status"], state["rows"]
        self.epoch, self.elapsed = state["epoch"], state["elapsed"]

    def record_start(self) -> None:
        """Epoch 0: every point's losses and measures at init; a point non-finite already is diverged."""
        t0 = time.perf_counter()
        self.train_loss, self.train_acc = evaluate(self.model, self.x_tr, self.y_tr, self.batch_size)
        self.test_loss, self.test_acc = evaluate(self.model, self.x_te, self.y_te, self.batch_size)
        self.elapsed += time.perf_counter() - t0
        measured = self.measure(0, [math.nan] * self.K)
        for k in range(self.K):
            if not (np.isfinite(self.train_loss[k].item()) and np.isfinite(self.test_loss[k].item())):
                self.status[k] = "diverged"
            self.rows.append(self._row(k, 0, measured[k]))

    def train_epoch(self, epoch: int, length_arrays: dict[int, dict] | None) -> None:
        """One epoch: train, test, measure (and test at each length T′ of length_arrays), record."""
        t0 = time.perf_counter()
        alive, grad_norm = self.steps()
        self.test_loss, self.test_acc = evaluate(self.model, self.x_te, self.y_te, self.batch_size)
        self.elapsed += time.perf_counter() - t0
        self.plateau.update(self.train_loss.to(self.device))
        measured = self.measure(epoch, grad_norm)
        if length_arrays:  # train at T, test at T′
            at = [
                evaluate(
                    self.model,
                    *(torch.as_tensor(a[k], device=self.device) for k in ("x_test", "y_test")),
                    self.batch_size,
                )
                for a in length_arrays.values()
            ]  # per T′: loss (K), acc (K)
            for k in range(self.K):
                measured[k]["len_test_loss"] = [loss[k].item() for loss, _ in at]
                measured[k]["len_test_acc"] = [acc[k].item() for _, acc in at]
        self.record(epoch, alive, measured)

    def steps(self) -> tuple[torch.Tensor, list[float]]:
        """One pass over the training set in each point's own batch order, one Adam step per batch for all points
        still training (a point whose objective turns non-finite stops). Sets train_loss, train_acc (K); returns
        which points are alive (K) and each point's mean gradient norm."""
        tr, n, bs = self.train_settings, len(self.x_tr), self.batch_size
        alive = torch.tensor([s == "ok" for s in self.status], device=self.device)
        perms = torch.stack([torch.randperm(n, generator=g) for g in self.gens]).to(self.device)  # (K n)
        loss_sum, correct, count, grad_norm_sum = (
            torch.zeros(self.K, dtype=torch.float64, device=self.device) for _ in range(4)
        )
        for i in range(0, n, bs):
            idx = perms[:, i : i + bs]  # (K B)
            self.opt.zero_grad()
            loss, c, cnt, objective = map(
                torch.cat,
                zip(
                    *(
                        backward_part(
                            self.model,
                            sub,
                            self.x_tr[idx[sub]],
                            self.y_tr[idx[sub]],
                            alive[sub],
                            self.lam,
                            tr["collapse_penalty"],
                        )
                        for sub in self.model.subpacks(self.x_tr[idx[0]])
                    )
                ),
            )  # (K) each
            with torch.no_grad():
                dead = ~alive
                for p in self.model.parameters():  # diverged points stay frozen (masked_fill_: no host sync)
                    p.grad.masked_fill_(per_point(dead, p), 0)
                norms = grad_norms(self.model.parameters())  # (K)
                grad_norm_sum += norms
                if tr["clip"] > 0:
                    clip_per_point(self.model.parameters(), tr["clip"], norms)
            self.plateau.step(self.opt, self.model.parameters())
            loss_sum += loss.detach().double() * cnt
            correct += c
            count += cnt
            alive = alive & torch.isfinite(objective.detach())
        self.train_loss, self.train_acc = (loss_sum / count).cpu(), (correct / count).cpu()
        return alive, (grad_norm_sum / -(-n // bs)).tolist()

    def measure(self, epoch: int, grad_norm: list[float]) -> list[dict]:
        """Each point's measures (NaN for points no longer training), its mean gradient norm and the test split's
        chance accuracy."""
        values = measure_packed(self.model, self.probe_x, with_memory=epoch in (0, self.train_settings["epochs"]))
        return [
            {**{k: v[i].tolist() for k, v in values.items()}, "grad_norm": grad_norm[i], "chance_acc": self.chance_acc}
            for i in range(self.K)
        ]

    def record(self, epoch: int, alive: torch.Tensor, measured: list[dict]) -> None:
        """A row for each point still training; one that stopped (or tests non-finite) is diverged from here on."""
        for k in range(self.K):
            if self.status[k] != "ok":
                continue
            if not (alive[k] and np.isfinite(self.test_loss[k].item())):
                self.status[k] = "diverged"
            self.rows.append(self._row(k, epoch, measured[k]))
        self.epoch = epoch

    def _row(self, k: int, epoch: int, measured: dict) -> dict:
        """Point k's row of this epoch: its current losses and accuracies, the time so far, its measures."""
        return _row(
            self.points[k],
            epoch,
            self.train_loss[k],
            self.train_acc[k],
            self.test_loss[k],
            self.test_acc[k],
            self.elapsed,
            {**measured, **self.where},
        )


def backward_part(
    model: PackedModel,
    points: slice,
    x: torch.Tensor,
    y: torch.Tensor,
    alive: torch.Tensor,
    lam: float,
    collapse_penalty: float,
):
    """Forward and backward of the sub-pack `points` on its batch x, y (K′ B ...): the gradients of its live
    points' objectives land in their slices of the packed parameters. -> loss, correct, count, objective (K′)."""
    if lam > 0:
        out, taus = model(x, points, with_tau=True)  # taus (K′ layers H)
    else:
        out, taus = model(x, points), None
    loss, c, cnt = per_point_loss(out, y)
    objective = loss + (lam * taus.mean((1, 2)) if taus is not None else 0)  # SPEC 000: R_n + λ·τ
    if collapse_penalty > 0:
        objective = objective + collapse_penalty * collapse(out)
    torch.where(alive, objective, torch.zeros_like(objective)).sum().backward()
    return loss.detach(), c, cnt, objective.detach()


def collapse(out: torch.Tensor) -> torch.Tensor:
    """SPEC 001's penalty against predicting one class: max(0, 0.1 − std over the batch of P(class 1)).

    out (K B 2) -> (K)."""
    return (0.1 - out.softmax(-1)[..., 1].std(1)).clamp(min=0)


def per_point(v: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    """A value per point, v (K), shaped to act on each point's slice of a packed tensor p (K ...): (K 1 ... 1)."""
    return v.view(-1, *[1] * (p.dim() - 1))


@torch.no_grad()
def grad_norms(params: list[torch.Tensor]) -> torch.Tensor:
    """Each point's gradient norm over all its parameters (slice k of each): (K), float64 (a norm op per parameter)."""
    per_param = [torch.linalg.vector_norm(p.grad.flatten(1), dim=1, dtype=torch.float64) for p in params]  # (K) each
    return torch.linalg.vector_norm(torch.stack(per_param), dim=0)


@torch.no_grad()
def clip_per_point(params: list[torch.Tensor], max_norm: float, norms: torch.Tensor | None = None) -> None:
    """Scale each point's gradient (slice k of every parameter) to norm ≤ max_norm, as clip_grad_norm_ would alone."""
    norms = grad_norms(params) if norms is None else norms
    factor = (max_norm / (norms + 1e-6)).clamp(max=1.0)
    for p in params:
        p.grad.mul_(per_point(factor.to(p.dtype), p))


class Plateau:
    """ReduceLROnPlateau (mode min, threshold 1e-4 rel) for each packed point on its own.

    Adam's step is linear in the learning rate, so scaling point k's step by its factor
    equals running Adam with lr·factor_k for that point alone.
    """

    def __init__(self, K: int, factor: float, patience: int, device):
        self.factor, self.patience = factor, patience
        self.scale = torch.ones(K, dtype=torch.float64, device=device)
        self.best = torch.full((K,), float("inf"), dtype=torch.float64, device=device)
        self.bad = torch.zeros(K, dtype=torch.long, device=device)

    @property
    def scale(self) -> torch.Tensor:
        return self._scale

    @scale.setter
    def scale(self, value: torch.Tensor) -> None:
        self._scale = value
        self.reduced = bool((value != 1).any())  # read once per epoch here, not once per step

    def step(self, opt, params: list[torch.Tensor]) -> None:
        """Adam's step, point k's at lr·scale_k: no copy of the parameters until some point's rate is reduced."""
        if not self.reduced:
            opt.step()
            return
        before = [p.detach().clone() for p in params]
        opt.step()
        with torch.no_grad():
            for p, old in zip(params, before):
                p.copy_(old.lerp_(p, per_point(self.scale.to(p.dtype), p)))  # old + s·(p − old)

    def update(self, loss: torch.Tensor) -> None:
        better = loss < self.best * (1 - 1e-4)
        self.best = torch.where(better, loss, self.best)
        self.bad = torch.where(better, 0, self.bad + 1)
        reduce = self.bad > self.patience
        self.scale = torch.where(reduce, self.scale * self.factor, self.scale)
        self.bad = torch.where(reduce, 0, self.bad)

    def state(self) -> dict:
        return {"scale": self.scale.cpu(), "best": self.best.cpu(), "bad": self.bad.cpu()}

    def load(self, state: dict) -> None:
        device = self.scale.device
        self.scale, self.best, self.bad = (state[k].to(device) for k in ("scale", "best", "bad"))


def on_this_device(saved: dict, opt: torch.optim.Optimizer) -> dict:
    """An optimizer state_dict saved anywhere, set to run as `opt` runs here: its groups' fused/foreach flags are this
    optimizer's (a GPU's fused Adam resumes as the CPU's loop, and back), so load_state_dict places `step` to match."""
    flags = [{k: g[k] for k in ("fused", "foreach") if k in g} for g in opt.param_groups]
    groups = saved["param_groups"]
    return {**saved, "param_groups": [{**g, **f} for g, f in zip(groups, flags)] + groups[len(flags) :]}


class CheckpointMismatch(StoreError):
    """A checkpoint that loads but does not fit the model it is to resume (edited, or another shard's)."""


class TrainIOError(StoreError):
    """An I/O error while training (disk full, permissions, a vanished folder): the job fails, the checkpoint stays."""


def train_shard(results: str, shard: str, device: str | None = None, replace: list[int] | None = None) -> int:
    """Train every point of `shard` and write its Parquet file; return the number of rows.

    One process at a time trains a shard (its lock in the store); a process that finds the
    shard's rows stored and trusted once it holds the lock reuses them and trains nothing, unless
    they are the very file `replace` stamps (`atomic.stamp`; `ssmpipe train --again`, Snakemake's
    -R train): then the shard trains anew, and its old rows stay in place until the new ones
    replace them (a copy kept in store/quarantine/). A job requeued after writing them reuses them.
    """
    store = Store(results)
    lock = store.shard_lock(shard)
    try:
        lock.acquire(timeout=0)
    except filelock.Timeout:
        log.info("shard %s: another process is training it (lock %s): waiting for it", shard, lock.lock_file)
        lock.acquire()
    try:
        return _train_locked(store, shard, pick_device(device), replace)
    finally:
        lock.release()


def _train_locked(store: Store, shard: str, dev: torch.device, replace: list[int] | None = None) -> int:
    ids, stored = store.trusted(shard, repair=True)
    if ids is None:
        raise StoreError(
            f"{store.spec_path(shard)}: missing or untrusted (see the warning above): rerun "
            f"snakemake to plan the shard anew"
        )
    replacing = stored and replace is not None and stamp(store.runs_path(shard)) == replace
    if replacing:
        log.info("shard %s: trains again; its stored rows stay until the new ones replace them", shard)
    elif stored:
        n = read_runs([store.runs_path(shard)]).num_rows
        log.info(
            "shard %s: already trained (by another process), %d rows reused from %s", shard, n, store.runs_path(shard)
        )
        return n
    spec = store.read_spec(shard)
    ckpt_path = store.ckpt_path(shard)
    state = load_state(ckpt_path, map_location="cpu") if ckpt_path.exists() else {"finished": {}}  # any device's
    if "current" in state:
        log.info(
            "shard %s: resuming group %s after epoch %d", shard, state["current"]["group"], state["current"]["epoch"]
        )
    groups: dict[str, list[dict]] = {}
    for p in spec["points"]:
        p = {**p, "shard": shard}
        groups.setdefault(pack_key(p["settings"]), []).append(p)
    log.info("shard %s: %d points in %d packed groups on %s", shard, len(spec["points"]), len(groups), dev)
    order = sorted(groups)
    progress = live.Progress(store.root, shard, [groups[k][0]["settings"]["train"]["epochs"] for k in order])
    first_unfinished = next((k for k in order if k not in state["finished"]), order[-1])
    at = state.get("current") or {"group": first_unfinished, "epoch": 0}
    progress.start(order.index(at["group"]), at["epoch"])

    for i, (key, points) in enumerate(sorted(groups.items())):
        if key in state["finished"]:
            continue
        current = state.get("current")
        resume = current if current and current["group"] == key else None

        def checkpoint(group_state, key=key, i=i):
            state["current"] = {"group": key, **group_state}
            _save(state, ckpt_path)
            progress.epoch(i, group_state)

        try:
            arrays = ensure_data(store, data.spec_of(points[0]["settings"]))
            rows = train_group(
                points,
                arrays,
                dev,
                resume,
                checkpoint,
                f"{shard[:8]} group {i + 1}/{len(groups)}",
                length_data(store, points[0]["settings"]),
            )
        except CheckpointMismatch as e:  # not the points' fault: the checkpoint goes, and the shard starts again
            store.quarantine(ckpt_path, str(e), "its shard trains from scratch")
            return _train_locked(store, shard, dev, replace)
        except (OSError, data.DataChanged) as e:  # the machine's fault, not the points': the job fails
            raise TrainIOError(
                f"shard {shard}: {'I/O error' if isinstance(e, OSError) else 'data changed'} while "
                f"training ({e}); nothing of it is stored as failed, "
                f"its checkpoint {ckpt_path} {'is kept' if ckpt_path.exists() else 'was not written'}"
                f": rerun to continue"
            ) from e
        except Exception as e:  # the group fails, the shard goes on
            log.error("shard %s group %s failed:\n%s", shard, key, traceback.format_exc())
            current = state.get("current") or {}
            done = current.get("rows", []) if current.get("group") == key else []
            rows = _finalise(
                done,
                {p["run_id"]: "failed" for p in points},
                {p["run_id"]: f"{type(e).__name__}: {e}" for p in points},
                points,
                where(dev),
            )
        state["finished"][key] = rows
        state.pop("current", None)
        _save(state, ckpt_path)

    rows = [r for key in sorted(state["finished"]) for r in state["finished"][key]]
    try:
        if replacing:
            store.keep(store.runs_path(shard), "is replaced by the shard's new rows (trained again)")
        store.write_runs(shard, rows)
    except OSError as e:
        raise TrainIOError(
            f"shard {shard}: I/O error writing its rows ({e}); its checkpoint {ckpt_path} is kept: rerun to continue"
        ) from e
    try:  # the rows are stored: what is left is tidying, and a failure of it must not fail the job (Snakemake would
        # then delete the rows it just stored)
        ckpt_path.unlink(missing_ok=True)
        progress.done()
    except OSError as e:
        log.warning("shard %s: rows stored, but %s could not be removed (%s)", shard, e.filename, e.strerror)
    counts = {s: len({r["run_id"] for r in rows if r["status"] == s}) for s in ("ok", "diverged", "failed")}
    log.info("shard %s: wrote %d rows to %s (%s)", shard, len(rows), store.runs_path(shard), counts)
    return len(rows)


def ensure_data(store: Store, spec: dict) -> dict:
    """The data set of `spec`, from the cache (built and cached first if missing; an unreadable one is quarantined
    and built again)."""
    path = store.data_path(data.key_of(spec))
    if path.exists():
        try:
            return data.load(path)
        except (ValueError, EOFError, zipfile.BadZipFile) as e:
            store.quarantine(path, f"not a data set ({type(e).__name__}: {e})", "it is built again")
    data.save(data.build(spec), path)
    return data.load(path)


def length_data(store: Store, settings: dict) -> dict[int, dict]:
    """T′ -> the data set of a point's task made at length T′, for each of its test_seq_lens (cached like any)."""
    return {T: ensure_data(store, data.spec_of(settings, T)) for T in settings["test_seq_lens"]}


def _row(point, epoch, train_loss, train_acc, test_loss, test_acc, wall_s, measured=None) -> dict:
    return {
        "run_id": point["run_id"],
        "shard_id": point["shard"],
        "settings": point["settings"],
        "epoch": epoch,
        "train_loss": float(train_loss),
        "train_acc": float(train_acc),
        "test_loss": float(test_loss),
        "test_acc": float(test_acc),
        "wall_s": float(wall_s),
        **(measured or {}),
    }


def _finalise(
    rows: list[dict], status: dict, error: dict, points: list[dict] | None = None, device: dict | None = None
) -> list[dict]:
    """Stamp each run's final status (and error) on all its rows; a run with no rows gets one (trained on `device`,
    `where`'s columns)."""
    have = {r["run_id"] for r in rows}
    for p in points or []:
        if p["run_id"] not in have:
            rows.append(_row(p, 0, *[float("nan")] * 4, 0.0, device))
    for r in rows:
        r["status"], r["error"] = status[r["run_id"]], error.get(r["run_id"])
    return rows


def _save(state: dict, path) -> None:
    """Checkpoint atomically; serialised in memory first so a failed write is Python's OSError (disk full, EFBIG),
    not torch's RuntimeError from its own file writer."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    with atomic_path(path) as tmp:
        tmp.write_bytes(buffer.getbuffer())
