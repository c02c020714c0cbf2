"""Hyperparameter search with Ray Tune: the same models, config language and store as grid sweeps.

A config's `tune:` section declares a study: a search space over the same dotted setting
keys as `grid` (choice, uniform, loguniform, grid), the metric and mode, the scheduler
(ASHA by default) and the searcher (random; optuna or hyperopt where installed). Each
trial is one point: `fixed` with the sampled values put in, typed by the schema, so its
run id is the id the same point has in a grid sweep. A trial trains with the function
the Snakemake train rule uses (`ssmpipe.train.train_group`), reports every epoch (metrics
and a checkpoint of the state train_group resumes from) to Ray Tune, and ends with its
rows in the store, stamped with the study and the trial id:

    <results>/store/runs/tune-<study>-<trial>.parquet   every trial's rows (status ok,
        diverged, failed, or stopped: ASHA stopped it early, its epochs so far kept)
    <results>/store/specs/tune-<study>-<trial>.json     finished trials only (ok, diverged):
        a grid sweep holding the same point reuses it instead of training it again
    <results>/<study>/study.json     best config, counts, one entry per trial
    <results>/<study>/runs.parquet   the study's table (as a sweep's), for `ssmpipe report`
    <results>/<study>/best.yaml      a sweep config: the best settings, a grid over seeds
    <results>/<study>/ray/           Ray Tune's state: a rerun resumes it (Tuner.restore)

This module holds what needs no Ray (the checks, the names, the settings of a trial);
`ssmpipe.tune.study` runs a study, `ssmpipe.tune.cluster` runs one inside a SLURM job.
"""

from __future__ import annotations

import copy
import importlib.util
import os
import socket
from pathlib import Path

import yaml

from ssmpipe import config as cfg
from ssmpipe.atomic import write_text
from ssmpipe.config import ConfigError
from ssmpipe.store import Store, _plain

KINDS = ("choice", "uniform", "loguniform", "grid")
SEARCHERS = {"optuna": "optuna", "hyperopt": "hyperopt"}  # search -> the module it needs
SHARD_PREFIX = "tune-"


class StudyInterrupted(RuntimeError):
    """The study stopped (Ctrl-C, SIGTERM) before every trial ended; its state is saved: a rerun resumes it."""


def study_name(config: dict) -> str:
    return config["tune"].get("study") or f"{config['sweep']}-tune"


def study_dir(config: dict) -> Path:
    return Store(config["results"]).sweep_dir(study_name(config))


def study_config(config: dict) -> tuple[Path, str]:
    """(path, YAML text) of the config `ssmpipe tune` runs the study with, <study>/snakemake-config.yaml: only the
    parts a study reads, so a change of the sweep's grid leaves the study alone."""
    keys = ("sweep", "results", "fixed", "tune", "launcher", "slurm", "report")
    text = yaml.safe_dump({k: _plain(config[k]) for k in keys if k in config}, sort_keys=False)
    return study_dir(config) / "snakemake-config.yaml", text


def write_study_config(config: dict) -> None:
    """Write the study's config, only when it changes (Snakemake keys on mtime: an unchanged one reruns nothing)."""
    write_text(*study_config(config), only_if_changed=True)


def node_name() -> str:
    """Where this process runs: its SLURM node (SLURMD_NODENAME: a job's nodes may share a host), else the host."""
    return os.environ.get("SLURMD_NODENAME") or socket.gethostname()


def trial_shard(study: str, trial_id: str) -> str:
    """The store name of a trial's rows (store/runs/<this>.parquet) and spec."""
    return f"{SHARD_PREFIX}{study}-{trial_id}"


def max_epochs(config: dict) -> int:
    """The most epochs any trial trains (ASHA's max_t)."""
    spec = config["tune"]["space"].get("train.epochs")
    if spec:
        (kind, values), = spec.items()
        return max(int(v) for v in values)
    return int(config["fixed"]["train"]["epochs"])


def trial_settings(fixed: dict, params: dict) -> dict:
    """A trial's settings: `fixed` (defaults filled in) with the sampled values put in, schema-typed; a task read from
    a path keyed by its content (task.data_hash), as a sweep's points are."""
    from ssmpipe.data import with_data_hash
    from ssmpipe.sweep import typed

    settings = copy.deepcopy(fixed)
    for key, value in params.items():
        cfg.set_path(settings, key, value)
    return with_data_hash(typed(settings))


def check(config: dict) -> None:
    """What the schema cannot say about a checked config's `tune:` section; ConfigError naming key and value.

    The study's name must be neither the sweep's nor a store folder's (data, papers, store).
    Every space key must be a known leaf setting; every value (and both ends of a range)
    valid for it; ranges only over number settings, low < high (low > 0 for loguniform);
    the settings at each value, and at the extreme corner, must pass the same
    cross-field checks as a grid's (lag < seq_len, dt_min ≤ dt_max, ...).
    """
    from jsonschema import Draft202012Validator

    if not config.get("tune"):
        raise ConfigError("the config has no tune: section (a search space to run a study over); "
                          "see README.md, 'Hyperparameter search'")
    tune, schema = config["tune"], cfg.load_schema()
    types = cfg.setting_types(schema)
    cfg.check_name(study_name(config), "tune.study")
    if study_name(config) == config["sweep"]:  # its runs.parquet and report would replace the sweep's
        raise ConfigError(f"tune.study = {study_name(config)!r} is the sweep's own name; name the study otherwise")
    for key, spec in tune["space"].items():
        (kind, values), = spec.items()
        where = f"tune.space.{key}"
        leaf = cfg.setting_schema(key, schema)
        if leaf is None:
            raise ConfigError(f"{where}: unknown setting {key!r} ({kind}: {values!r}); "
                              f"known settings: {', '.join(sorted(types))}")
        if kind in ("uniform", "loguniform"):
            if types[key] != "number":
                raise ConfigError(f"{where}.{kind} = {values!r}: {key} is a setting of type {types[key]}, "
                                  f"not a number; search it with choice or grid")
            if (len(values) != 2 or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)
                    or not values[0] < values[1]):
                raise ConfigError(f"{where}.{kind} = {values!r}: needs [low, high], two numbers with low < high")
            if kind == "loguniform" and values[0] <= 0:
                raise ConfigError(f"{where}.loguniform = {values!r}: low must be > 0 for a log scale")
        else:
            seen = []
            for value in values:
                if value in seen:
                    raise ConfigError(f"{where}.{kind} has the value {value!r} twice")
                seen.append(value)
        validator = Draft202012Validator(leaf)
        for i, value in enumerate(values):
            for error in validator.iter_errors(value):
                raise ConfigError(f"{where}.{kind}[{i}] = {value!r}: {error.message}")
    if tune["search"] != "random":
        grids = [k for k, s in tune["space"].items() if "grid" in s]
        if grids:
            raise ConfigError(f"tune.space.{grids[0]}: grid entries need tune.search 'random' "
                              f"(tune.search = {tune['search']!r} samples every key)")
        if importlib.util.find_spec(SEARCHERS[tune["search"]]) is None:
            raise ConfigError(f"tune.search = {tune['search']!r}: the {SEARCHERS[tune['search']]} package is not "
                              f"installed (pip install 'ssmpipe[search]'), or use search: random")
    epochs = max_epochs(config)
    if tune["scheduler"] == "asha" and tune["grace_period"] > epochs:
        raise ConfigError(f"tune.grace_period = {tune['grace_period']!r} is more than the {epochs} epochs a trial "
                          f"trains (train.epochs)")
    for label, settings in _extremes(config):
        cfg._check_settings(settings, label)


def _extremes(config: dict):
    """Settings at every value (both ends of a range) of each key, then at the extreme corner."""
    base = copy.deepcopy(config["fixed"])
    corner = copy.deepcopy(base)
    for key, spec in config["tune"]["space"].items():
        (kind, values), = spec.items()
        for i, value in enumerate(values):
            settings = copy.deepcopy(base)
            cfg.set_path(settings, key, value)
            yield f"tune.space.{key}.{kind}[{i}]", settings
        if key in ("task.lag", "model.init.dt_min"):
            cfg.set_path(corner, key, max(values))
        elif key in ("seq_len", "model.init.dt_max"):
            cfg.set_path(corner, key, min(values))
    yield "tune.space (extreme corner)", corner


def run(config: dict, cluster: str = "local", cpus: int | None = None) -> dict:
    """Run (or resume) the config's study here or in a SLURM job; return its summary (study.json)."""
    check(config)
    if cluster == "slurm":
        from ssmpipe.tune.cluster import run_on_slurm

        return run_on_slurm(config)
    from ssmpipe.tune.study import run_study

    return run_study(config, cpus=cpus)


def describe(summary: dict) -> str:
    """A few lines for the terminal: trials by outcome, wall time, the best config."""
    c = summary["counts"]
    lines = [f"study {summary['study']!r}: {summary['n_trials']} trials ({c['ok']} trained to the end, "
             f"{c['stopped']} stopped early{' by ASHA' if summary['scheduler'] == 'asha' else ''}, "
             f"{c['diverged']} diverged, "
             f"{c['failed']} failed) in {summary['wall_s'][-1]:.1f} s"
             + (f" (all sessions: {sum(summary['wall_s']):.1f} s)" if len(summary["wall_s"]) > 1 else "")]
    best = summary["best"]
    if best:
        params = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in best["params"].items())
        lines.append(f"best: {summary['metric']} {best['value']:.4f} (epoch {best['epoch']}), trial "
                     f"{best['trial_id']} (run {best['run_id']}): {params}")
    else:
        lines.append("best: none (no trial trained to the end)")
    lines.append(f"outputs: {summary['dir']}/study.json, runs.parquet, best.yaml; "
                 f"report: ssmpipe report --results {summary['results']} {summary['study']}")
    return "\n".join(lines)
