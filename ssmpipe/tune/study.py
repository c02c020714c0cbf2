"""A study on Ray Tune: the trainable, the store writes, Tuner / Tuner.restore, study.json.

Who writes a trial's rows (store/runs/tune-<study>-<trial>.parquet, once, atomically):
- the trial itself, when it ends: after its last epoch (before reporting it, so a
  scheduler's stop at max_t cannot get in between), when it diverges, or when training
  raises (status failed, then the error goes on to Ray);
- the driver, for a trial the scheduler stopped early (the trial is blocked in
  `tune.report` then, and never resumes): from the trial's last checkpoint, status
  `stopped`, at once (`StoreStopped`, a Tune callback) and again at the end of the study
  for any trial still without rows (a study killed between the two).
A trial that finds its rows already written (a resumed study) reports its last epoch
again and trains nothing; one whose run id a finished shard of the store already holds
(a grid sweep, another study) replays those rows instead of training.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shlex
import tempfile
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import torch
import yaml
from ray import tune

from ssmpipe import config as cfg
from ssmpipe import data
from ssmpipe import tune as tn
from ssmpipe.atomic import atomic_path, private_dir, write_text
from ssmpipe.checkpoint import load_state
from ssmpipe.columns import METRICS, STOPPED
from ssmpipe.errors import ConfigError
from ssmpipe.inputs import load_yaml, read_file
from ssmpipe.keys import run_id as run_id_of
from ssmpipe.runs import read_runs
from ssmpipe.store import Store
from ssmpipe.tune import StudyInterrupted

log = logging.getLogger("ssmpipe.tune")

STATE = "state.pt"  # a trial checkpoint's file: the dict train_group resumes from (read by load_state)
EXPERIMENT = "ray"  # Ray's folder under <results>/<study>/
# The part of a config that makes a study: a rerun with other values is another study.
IDENTITY = ("fixed", "tune")
COUNTED = ("ok", STOPPED, "diverged", "failed")
ENVIRONMENT = {
    "RAY_USAGE_STATS_ENABLED": "0",  # no usage reports (and no network)
    "TQDM_DISABLE": "1",  # train_group's progress bar, in a trial's log
    "TUNE_GLOBAL_CHECKPOINT_S": "2",  # Ray's experiment state at most 2 s old: a killed study loses little
    "RAY_CHDIR_TO_TRIAL_DIR": "0",  # trials run in this folder: a config's relative paths (task.path) hold
}


# --- the trainable (runs in a Ray worker) ------------------------------------


def trial(params: dict, ctx: dict) -> None:
    """One trial: train `fixed` + `params` with train_group, reporting each epoch; rows to the store."""
    from ssmpipe.train import ensure_data, length_data, pick_device, train_group, where

    torch.set_num_threads(ctx["threads"])
    store = Store(ctx["results"])
    trial_id = tune.get_context().get_trial_id()
    shard = tn.trial_shard(ctx["study"], trial_id)
    settings = tn.trial_settings(ctx["fixed"], params)
    rid = run_id_of(settings)
    point = {"run_id": rid, "settings": settings, "shard": shard}
    stamp = {"study": ctx["study"], "trial_id": trial_id}
    epochs = settings["train"]["epochs"]

    if store.runs_path(shard).exists():  # ended before this study was interrupted: train nothing
        rows = read_runs([store.runs_path(shard)]).to_pylist()
        if rows[-1]["status"] != "failed":  # a failed trial is tried again (Tuner.restore(resume_errored))
            tune.report(_metrics(rows[-1], rows[-1]["status"], ctx))
            return
    checkpoint = tune.get_checkpoint()
    if checkpoint is None and rid in ctx["stored"] and _replay(store, ctx["stored"][rid], point, stamp, ctx):
        return
    resume = None
    if checkpoint is not None:
        with checkpoint.as_directory() as folder:
            resume = load_state(Path(folder) / STATE)

    last = {"state": resume, "reporting": False}

    def report(state: dict) -> None:  # train_group's checkpoint callback, called after every epoch
        last["state"] = state
        status, rows = state["status"][0], state["rows"]
        if state["epoch"] >= epochs or status != "ok":  # the trial's last epoch: its rows first
            _write_trial(store, shard, rows, status, None, stamp, settings)
        with tempfile.TemporaryDirectory(prefix="ssmpipe-trial-") as folder:
            torch.save(state, Path(folder) / STATE)
            last["reporting"] = True  # a stop arrives as SystemExit from here, never as a failure
            tune.report(_metrics(rows[-1], status, ctx), checkpoint=tune.Checkpoint.from_directory(folder))
            last["reporting"] = False

    try:
        arrays = ensure_data(store, data.spec_of(settings))
        rows = train_group(
            [point],
            arrays,
            pick_device(ctx["device"]),
            resume,
            report,
            f"trial {trial_id}",
            length_data(store, settings),
        )
    except Exception as e:
        if last["reporting"]:
            raise
        done = list(last["state"]["rows"]) if last["state"] else []
        if not done:
            done = [
                {
                    "run_id": rid,
                    "shard_id": shard,
                    "settings": settings,
                    "epoch": 0,
                    **dict.fromkeys(METRICS, math.nan),
                    "wall_s": 0.0,
                    **where(ctx["device"]),
                }
            ]
        _write_trial(store, shard, done, "failed", f"{type(e).__name__}: {e}", stamp, settings)
        raise
    if not store.runs_path(shard).exists():  # resumed after its last epoch's checkpoint
        _write_trial(store, shard, rows, rows[-1]["status"], None, stamp, settings)


def _metrics(row: dict, status: str, ctx: dict) -> dict:
    """What a trial reports for one epoch; a NaN/Inf metric reads as the worst value to the search."""
    out = {
        "epoch": int(row["epoch"]),
        "status": status,
        "run_id": row["run_id"],
        "node": tn.node_name(),
        **{k: float(row[k]) for k in (*METRICS, "wall_s") if row.get(k) is not None},
    }
    value = out.get(ctx["metric"], math.nan)
    if not math.isfinite(value):
        out[ctx["metric"]] = -math.inf if ctx["mode"] == "max" else math.inf
    return out


def _replay(store: Store, shard: str, point: dict, stamp: dict, ctx: dict) -> bool:
    """Report a run the store already holds (trained by a sweep or another study) instead of training it."""
    rows = read_runs([store.runs_path(shard)], [point["run_id"]]).to_pylist()
    if not rows or rows[-1]["status"] not in ("ok", "diverged"):
        return False
    trial_rows = [{**r, "settings": point["settings"]} for r in rows]
    _write_trial(store, point["shard"], trial_rows, rows[-1]["status"], None, stamp, None)
    log.info(
        "trial %s: run %s is in the store (shard %s): replayed, not trained", stamp["trial_id"], point["run_id"], shard
    )
    for row in rows:
        tune.report(_metrics(row, row["status"], ctx))
    return True


def _write_trial(
    store: Store, shard: str, rows: list[dict], status: str, error: str | None, stamp: dict, settings: dict | None
) -> None:
    """A trial's rows, stamped; a finished trial's spec too, so grid sweeps reuse it.

    The spec is written first: Snakemake (rerun-triggers mtime) would retrain a shard whose
    spec is newer than its rows.
    """
    if settings is not None and status in ("ok", "diverged"):
        store.write_spec(shard, [(rows[0]["run_id"], settings)])
    store.write_runs(shard, [{**r, "status": status, "error": error, **stamp} for r in rows])


# --- the driver --------------------------------------------------------------


class StoreStopped(tune.Callback):
    """Writes the rows of a trial that ended without writing them (stopped early: status stopped)."""

    def __init__(self, results: str, study: str):
        self.results, self.study = results, study

    def on_trial_complete(self, iteration, trials, trial, **info):
        settle(Store(self.results), self.study, trial.trial_id, trial.checkpoint, None)

    def on_trial_error(self, iteration, trials, trial, **info):
        settle(Store(self.results), self.study, trial.trial_id, trial.checkpoint, "the trial's process ended")


def settle(store: Store, study: str, trial_id: str, checkpoint, error: str | None) -> None:
    """Write a trial's rows from its last checkpoint unless it wrote them itself."""
    shard = tn.trial_shard(study, trial_id)
    if store.runs_path(shard).exists():
        return
    if checkpoint is None:
        log.warning("trial %s ended with no checkpoint and no rows: nothing to store", trial_id)
        return
    with checkpoint.as_directory() as folder:
        state = load_state(Path(folder) / STATE)
    status = state["status"][0]
    if error is not None:
        status = "failed"
    elif status == "ok":
        status = STOPPED
    _write_trial(store, shard, state["rows"], status, error, {"study": study, "trial_id": trial_id}, None)


def run_study(
    config: dict, cpus: int | None = None, gpus: float | None = None, address: str | None = None, nodes: int = 1
) -> dict:
    """Run the config's study with Ray on this machine (or resume it); write its outputs; return study.json.

    With `address`, the study runs on the Ray cluster there (a head started by
    ssmpipe.tune.cluster), once `nodes` nodes have joined it.
    """
    cfg.check_tune(config)
    t, study = config["tune"], cfg.study_name(config)
    store = Store(Path(config["results"]).resolve())
    folder = store.sweep_dir(study)
    _same_study(config, store)
    write_text(store.config_path(study), yaml.safe_dump(cfg.plain(config), sort_keys=False), only_if_changed=True)
    if gpus is None:
        gpus = torch.cuda.device_count()
    if t["gpus_per_trial"] > 0 and gpus == 0:
        raise ConfigError(f"tune.gpus_per_trial = {t['gpus_per_trial']!r}, but there is no GPU here")

    t0 = time.perf_counter()
    for key, value in ENVIRONMENT.items():  # before ray.init: Ray's processes and the trials inherit them
        os.environ.setdefault(key, value)
    import ray
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

    job = os.environ.get("SLURM_JOB_ID")
    if address is None:  # "local": a Ray of its own, even where a `ray start` left its address in /tmp/ray
        ray.init(
            address="local",
            num_cpus=cpus or os.cpu_count(),
            num_gpus=gpus,
            include_dashboard=False,
            log_to_driver=False,
            object_store_memory=256 * 2**20,
            logging_level=logging.WARNING,
        )
        log.info(
            "study %s: Ray started with %d CPUs and %d GPUs%s",
            study,
            cpus or os.cpu_count(),
            gpus,
            f" in SLURM job {job}" if job else "",
        )
    else:
        ray.init(address=address, log_to_driver=False, logging_level=logging.WARNING)
    try:
        if address is not None:
            joined = _wait_for_nodes(ray, nodes)
            log.info(
                "study %s: Ray cluster of %d nodes at %s, %d CPUs and %d GPUs%s",
                study,
                len(joined),
                address,
                sum(n["Resources"].get("CPU", 0) for n in joined),
                sum(n["Resources"].get("GPU", 0) for n in joined),
                f" in SLURM job {job}" if job else "",
            )
        ctx = {
            "results": str(store.root),
            "study": study,
            "fixed": config["fixed"],
            "metric": t["metric"],
            "mode": t["mode"],
            "threads": t["cpus_per_trial"],
            "device": "cuda" if t["gpus_per_trial"] else "cpu",
            "stored": _stored_runs(store),
        }
        trainable = tune.with_resources(
            tune.with_parameters(trial, ctx=ctx), {"cpu": t["cpus_per_trial"], "gpu": t["gpus_per_trial"]}
        )
        experiment = private_dir(folder / EXPERIMENT)  # Ray unpickles its files on restore: only this user writes there
        if tune.Tuner.can_restore(experiment):
            log.info("study %s: resuming %s", study, experiment)
            tuner = tune.Tuner.restore(str(experiment), trainable, resume_unfinished=True, resume_errored=True)
        else:
            scheduler = (
                ASHAScheduler(
                    time_attr="epoch",
                    max_t=cfg.max_epochs(config),
                    grace_period=t["grace_period"],
                    reduction_factor=t["reduction_factor"],
                )
                if t["scheduler"] == "asha"
                else FIFOScheduler()
            )
            tuner = tune.Tuner(
                trainable,
                param_space=param_space(t["space"]),
                tune_config=tune.TuneConfig(
                    metric=t["metric"],
                    mode=t["mode"],
                    scheduler=scheduler,
                    search_alg=searcher(t),
                    num_samples=t["num_samples"],
                    max_concurrent_trials=None if t["search"] == "random" else t["max_concurrent_trials"],
                    reuse_actors=True,
                    trial_dirname_creator=trial_dirname,
                ),
                run_config=tune.RunConfig(
                    name=EXPERIMENT,
                    storage_path=str(folder),
                    callbacks=[StoreStopped(str(store.root), study)],
                    failure_config=tune.FailureConfig(max_failures=0),
                    log_to_file=True,
                    verbose=1,
                ),
            )
        results = tuner.fit()
        ended = _ended_trials(experiment)
        trials, unfinished, nodes_of = [], [], {}
        for result in results:
            trial_id = Path(result.path).name
            if ended is not None and trial_id not in ended:  # interrupted (Ctrl-C): it resumes on the next run
                unfinished.append(trial_id)
                continue
            settle(store, study, trial_id, result.checkpoint, str(result.error) if result.error else None)
            trials.append((trial_id, result.config))
            if (result.metrics or {}).get("node"):
                nodes_of[trial_id] = result.metrics["node"]
    finally:
        ray.shutdown()
    if unfinished:
        raise StudyInterrupted(
            f"study {study} was interrupted with {len(unfinished)} trials unfinished "
            f"({len(trials)} ended); run the same command again to resume it"
        )
    return summarise(config, store, trials, time.perf_counter() - t0, nodes_of)


def _wait_for_nodes(ray, nodes: int, timeout_s: float = 300) -> list[dict]:
    """The Ray cluster's live nodes once there are `nodes` of them; RuntimeError after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while True:
        alive = [n for n in ray.nodes() if n["Alive"]]
        if len(alive) >= nodes:
            return alive
        if time.monotonic() > deadline:
            raise RuntimeError(
                f"only {len(alive)} of {nodes} Ray nodes joined within {timeout_s:.0f} s "
                f"(see the job's other tasks' logs)"
            )
        time.sleep(1)


def _ended_trials(experiment: Path) -> set[str] | None:
    """Ids of the trials that Ray's saved state has ended (TERMINATED, ERROR): those a restore will not resume.

    Read from the newest experiment_state-<start time>.json (by name: Ray copies every file at
    the end, so mtimes do not tell), which Ray writes last, before it stops the trials still
    running (an interrupted study: in memory they read TERMINATED then). None if that file
    cannot be read.
    """
    states = sorted(experiment.glob("experiment_state-*.json"))
    try:
        trials = [json.loads(entry[0]) for entry in json.loads(states[-1].read_text())["trial_data"]]
        return {t["trial_id"] for t in trials if t["status"] in ("TERMINATED", "ERROR")}
    except (IndexError, KeyError, TypeError, ValueError, OSError) as e:
        log.warning("could not read Ray's experiment state in %s (%s): taking every trial as ended", experiment, e)
        return None


def param_space(space: dict) -> dict:
    """The config's space as Ray Tune's: dotted setting key -> sampler."""
    make = {
        "choice": tune.choice,
        "grid": tune.grid_search,
        "uniform": lambda v: tune.uniform(*v),
        "loguniform": lambda v: tune.loguniform(*v),
    }
    return {key: make[kind](list(values)) for key, spec in space.items() for kind, values in spec.items()}


def searcher(t: dict):
    if t["search"] == "optuna":
        from ray.tune.search.optuna import OptunaSearch

        return OptunaSearch(seed=t["seed"])
    if t["search"] == "hyperopt":
        from ray.tune.search.hyperopt import HyperOptSearch

        return HyperOptSearch(random_state_seed=t["seed"])
    from ray.tune.search import BasicVariantGenerator

    return BasicVariantGenerator(random_state=t["seed"], max_concurrent=t["max_concurrent_trials"])


def trial_dirname(trial) -> str:
    return trial.trial_id


def _same_study(config: dict, store: Store) -> None:
    """A study folder holds one study: resuming it with another space or other settings is an error."""
    folder, snapshot = store.sweep_dir(cfg.study_name(config)), store.config_path(cfg.study_name(config))
    if not snapshot.is_file() or not (folder / EXPERIMENT).exists():
        return
    before = load_yaml(read_file(snapshot).decode("utf-8"), str(snapshot))
    for key in IDENTITY:
        if cfg.plain(before.get(key)) != cfg.plain(config.get(key)):
            raise ConfigError(
                f"study {cfg.study_name(config)!r} in {folder} was started with another {key}: "
                f"section ({cfg.plain(before.get(key))!r}); name a new study (tune.study) or delete "
                f"{folder} to start it again"
            )


def _stored_runs(store: Store) -> dict[str, str]:
    """Run id -> a finished shard holding it (one with a spec: grid shards and finished trials), checked first."""
    stored: dict[str, str] = {}
    for shard, (ids, done) in store.trusted_all(store.iter_specs(), repair=False).items():
        for rid in ids or [] if done else []:
            stored.setdefault(rid, shard)
    return stored


# --- the study's outputs -----------------------------------------------------


def summarise(
    config: dict, store: Store, trials: list[tuple[str, dict]], wall_s: float, nodes: dict[str, str] | None = None
) -> dict:
    """Write the study's table, study.json and best.yaml from its trials' rows in the store.

    `nodes`: trial id -> the node (SLURM node, else host) its last epoch ran on, as each trial's `node`.
    """
    t, study = config["tune"], cfg.study_name(config)
    folder = store.sweep_dir(study)
    paths = [store.runs_path(tn.trial_shard(study, tid)) for tid, _ in trials]
    table = read_runs([p for p in paths if p.exists()])
    table = table.append_column("sweep", pa.array([study] * table.num_rows, pa.string()))
    with atomic_path(store.table_path(study)) as tmp:
        pq.write_table(table, tmp)

    runs = table.to_pandas()
    params_of = dict(trials)
    entries = []
    for tid, rows in runs.groupby("trial_id", sort=True):
        rows = rows.sort_values("epoch")
        final = rows.iloc[-1]
        entries.append(
            {
                "trial_id": tid,
                "run_id": final["run_id"],
                "params": _jsonable(params_of.get(tid, {})),
                "status": final["status"],
                "epochs": int(final["epoch"]),
                "value": _float(final[t["metric"]]),
                "error": final["error"] if isinstance(final["error"], str) else None,
                "node": (nodes or {}).get(tid),
            }
        )
    missing = sorted(set(params_of) - {e["trial_id"] for e in entries})
    finished = [e for e in entries if e["status"] == "ok" and e["value"] is not None]
    pick = max if t["mode"] == "max" else min
    best = pick(finished, key=lambda e: e["value"]) if finished else None
    if best:
        best = {
            **best,
            "epoch": best["epochs"],
            "settings": _jsonable(tn.trial_settings(config["fixed"], best["params"])),
        }

    previous = store.study_path(study)
    walls = json.loads(previous.read_text()).get("wall_s", []) if previous.is_file() else []
    summary = {
        "study": study,
        "results": str(config["results"]),
        "dir": str(folder),
        "metric": t["metric"],
        "mode": t["mode"],
        "scheduler": t["scheduler"],
        "search": t["search"],
        "space": t["space"],
        "max_epochs": cfg.max_epochs(config),
        "n_trials": len(trials),
        "counts": {s: sum(e["status"] == s for e in entries) for s in COUNTED},
        "trials_without_rows": missing,
        "best": best,
        "wall_s": [*walls, round(wall_s, 2)],
        "trials": entries,
    }
    write_text(store.study_path(study), json.dumps(summary, indent=1, default=str, allow_nan=False))
    (store.best_path(study)).unlink(missing_ok=True)
    if best:
        sweep = {
            "sweep": f"{study}-best",
            "results": str(config["results"]),
            "shard_size": 8,
            "fixed": best["settings"],
            "grid": {"seed": [0, 1, 2, 3, 4]},
            "report": {"title": f"Seeds around the best config of study {study}"},
        }
        command = shlex.quote(str(store.best_path(study))).replace("\n", "\n# ")  # a path to paste into a shell
        header = f"# The best config of the study as a sweep over seeds: snakemake --configfile {command}\n"
        write_text(store.best_path(study), header + yaml.safe_dump(sweep, sort_keys=False))
    return summary


def _float(v):
    return float(v) if v is not None and math.isfinite(float(v)) else None


def _jsonable(obj):
    if isinstance(obj, dict):
        return {k: _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if hasattr(obj, "item"):  # numpy scalars
        return obj.item()
    return obj
