"""The `ssmpipe` command: what every Snakemake rule calls, and what users call by hand.

A mistake of the user's (a bad config, a missing or corrupt file, an unknown sweep) is one
line on stderr, `ssmpipe: ...`, and exit status 2; anything else keeps its traceback.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from ssmpipe import config as cfg


def cmd_validate(args) -> int:
    from ssmpipe import sweep

    for config in cfg.load_sweeps(args.config):  # the tune: section's check included
        plan = sweep.plan(config, write=False)
        print(f"{args.config}: valid. sweep {config['sweep']!r}: {len(plan.points)} points, "
              f"{len(plan.shards)} shards, {len(plan.pending)} still to train")
        if config.get("tune"):
            from ssmpipe import tune

            print(f"study {tune.study_name(config)!r}: {config['tune']['num_samples']} samples of "
                  f"{', '.join(config['tune']['space'])}")
    return 0


def cmd_plan(args) -> int:
    """Write what planning decides: new shard specs, each sweep's points.json and config.yaml snapshot; quarantine
    store files that fail their checks. What the workflow's plan jobs run (--only: one part of it)."""
    from ssmpipe import sweep
    from ssmpipe.atomic import write_text
    from ssmpipe.store import Store

    for config in plan_configs(args.config, args.json):
        store = Store(config["results"])
        if args.only == "snapshot":
            write_text(store.config_path(config["sweep"]), store.snapshot_text(config), only_if_changed=True)
        elif args.only == "study":
            from ssmpipe import tune

            tune.write_study_config(config)
        else:
            plan = sweep.plan(config, write=True)
            print(f"sweep {config['sweep']!r}: {len(plan.points)} points, {len(plan.shards)} shards, "
                  f"{len(plan.pending)} to train")
    return 0


def plan_configs(configs: list[str], as_json: bool) -> list[dict]:
    """The checked sweep configs of `ssmpipe plan`'s arguments: config files, or (as_json) configs as JSON text."""
    if not as_json:
        return [c for path in configs for c in cfg.load_sweeps(path)]
    try:
        loaded = [json.loads(text) for text in configs]
    except ValueError as e:
        raise cfg.ConfigError(f"--json: a config is not JSON ({e})") from None
    return [cfg.check(c) for c in loaded]


def cmd_status(args) -> int:
    from ssmpipe import status

    print("\n".join(status.render(status.sweep_status(c)) for c in cfg.load_sweeps(args.config)))
    return 0


def cmd_data(args) -> int:
    from ssmpipe import data

    spec = json.loads(args.spec)
    data.save(data.build(spec), args.out)
    return 0


def cmd_train(args) -> int:
    if args.slurm:
        from ssmpipe import slurm

        try:
            slurm.train(args.results, args.shard, *cfg.load_slurm(args.slurm))
        except slurm.JobFailed as e:
            print(f"ssmpipe: {e}", file=sys.stderr)
            return 1
        return 0

    import torch

    from ssmpipe.train import train_shard

    if args.threads:
        torch.set_num_threads(args.threads)
    train_shard(args.results, args.shard, args.device)
    return 0


def cmd_aggregate(args) -> int:
    from ssmpipe.store import Store, aggregate

    store = Store(args.results)
    manifest = sweep_dir(args.results, args.sweep) / "points.json"
    if not manifest.is_file():
        raise cfg.InputError(f"{str(manifest)!r} does not exist: the workflow writes it when it plans the sweep")
    try:
        json.loads(manifest.read_text())
    except ValueError as e:
        raise cfg.InputError(f"{str(manifest)!r} is not JSON ({e})") from None
    out = args.out or store.sweep_dir(args.sweep) / "runs.parquet"
    table = aggregate(store, args.sweep, out)
    print(f"{out}: {table.num_rows} rows")
    return 0


def cmd_tune(args) -> int:
    from ssmpipe import tune
    from ssmpipe.slurm import JobFailed

    config = cfg.load(args.config)
    try:
        summary = tune.run(config, args.cluster, args.cpus)
    except JobFailed as e:  # --cluster slurm: the study's job could not run or failed
        print(f"ssmpipe: {e}", file=sys.stderr)
        return 1
    except tune.StudyInterrupted as e:
        print(f"ssmpipe: {e}", file=sys.stderr)
        return 130
    print(tune.describe(summary))
    return 0


def cmd_report(args) -> int:
    from ssmpipe.report import build_report
    from ssmpipe.store import Store

    sweep_dir(args.results, args.sweep)
    out = build_report(Store(args.results), args.sweep)
    print(f"report: {out}")
    return 0


def cmd_papers(args) -> int:
    from ssmpipe.report.papers import build_papers_page

    root = results_root(args.results)
    for name in args.sweeps:  # an experiment file names its sweep; a sweep name must be one under --results
        if not name.endswith((".yaml", ".yml")):
            sweep_dir(args.results, name)
    print(f"papers: {build_papers_page(root, args.sweeps, args.out)}")
    return 0


def results_root(results: str | None) -> Path:
    """The results root, or an InputError: not given, or no folder."""
    if results is None:
        raise cfg.InputError("--results=RESULTS is required (the results root holding the sweeps)")
    root = Path(results)
    if not root.is_dir():
        raise cfg.InputError(f"--results {results!r}: " + ("a file, not a folder" if root.exists() else
                                                           "no such folder"))
    return root


def sweep_dir(results: str, name: str) -> Path:
    """<results>/<name>, or an InputError: a results root that is no folder, a bad or unknown sweep name."""
    root = results_root(results)
    cfg.check_name(name, "sweep")
    if not (root / name).is_dir():
        known = sorted(p.parent.name for p in root.glob("*/config.yaml"))  # every sweep's and study's snapshot
        raise cfg.InputError(f"no sweep {name!r} under {results!r} (there: {', '.join(known) or 'none'})")
    return root / name


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ssmpipe", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("validate", help="check a sweep config and say what it would train")
    s.add_argument("config", help="YAML sweep config")
    s.set_defaults(func=cmd_validate)

    s = sub.add_parser("plan", help="plan sweeps into the store: write new shard specs and each sweep's points.json "
                       "and config.yaml, quarantine store files that fail their checks")
    s.add_argument("--json", action="store_true", help="each CONFIG is a sweep config as JSON text, not a file")
    s.add_argument("--only", choices=["snapshot", "study"], help="write only each sweep's config.yaml snapshot, or "
                   "only its tune study's config (<results>/<study>/snakemake-config.yaml), where they change")
    s.add_argument("config", nargs="+", help="YAML config file (experiments: plans each experiment's sweep)")
    s.set_defaults(func=cmd_plan)

    s = sub.add_parser("status", help="count a sweep's points by state: trained (ok/diverged/failed), "
                       "running/queued/failed on SLURM, interrupted, to train")
    s.add_argument("config", help="YAML sweep config (or its snapshot <results>/<sweep>/config.yaml)")
    s.set_defaults(func=cmd_status)

    s = sub.add_parser("data", help="build one data set into its cache file")
    s.add_argument("--spec", required=True, help="the data spec as JSON (task settings and seq_len)")
    s.add_argument("out", help="the .npz file to write")
    s.set_defaults(func=cmd_data)

    s = sub.add_parser("train", help="train one shard of sweep points, resuming from its checkpoint")
    s.add_argument("--results", required=True, help="results root holding the store")
    s.add_argument("--device", help="torch device (default, and on SLURM: cuda when present, else cpu)")
    s.add_argument("--threads", type=int, help="torch CPU threads (on SLURM: slurm.cpus_per_task)")
    s.add_argument("--slurm", metavar="CONFIG", help="train as a SLURM job (through submitit) with the requests "
                   "of CONFIG's slurm: section, and wait for it; logs in <results>/<sweep>/slurm/")
    s.add_argument("shard", help="shard id (its spec is <results>/store/specs/<shard>.json)")
    s.set_defaults(func=cmd_train)

    s = sub.add_parser("aggregate", help="gather a sweep's rows from the store into one Parquet table")
    s.add_argument("--results", required=True, help="results root holding the store")
    s.add_argument("--out", help="output file (default <results>/<sweep>/runs.parquet)")
    s.add_argument("sweep", help="sweep name")
    s.set_defaults(func=cmd_aggregate)

    s = sub.add_parser("tune", help="run (or resume) the config's tune: study with Ray Tune; trials' rows go to "
                       "the store, the study's table and study.json to <results>/<study>/")
    s.add_argument("config", help="YAML config with a tune: section")
    s.add_argument("--cluster", choices=["local", "slurm"], default="local",
                   help="local: Ray on this machine; slurm: Ray inside one SLURM job (the config's slurm: requests), "
                   "submitted through submitit and waited for")
    s.add_argument("--cpus", type=int, help="CPUs Ray may use here (default: all; on SLURM: slurm.cpus_per_task)")
    s.set_defaults(func=cmd_tune)

    s = sub.add_parser("report", help="build a sweep's (or a tune study's) HTML report from its table")
    s.add_argument("--results", required=True, help="results root holding the sweep")
    s.add_argument("sweep", help="sweep or study name")
    s.set_defaults(func=cmd_report)

    s = sub.add_parser("papers", help="build the reproduction page (default <results>/papers/index.html): each "
                       "paper's claims, their verdicts in each experiment, the papers' values, from the store alone")
    s.add_argument("--results", help="results root holding the sweeps (required)")
    s.add_argument("--out", help="the HTML file to write (default <results>/papers/index.html)")
    s.add_argument("sweeps", nargs="+", metavar="SWEEP", help="sweep name, or experiment config file (.yaml: its "
                   "sweep:); one not run yet shows as such")
    s.set_defaults(func=cmd_papers)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        return args.func(args)
    except cfg.InputError as e:  # one line, naming what is wrong; any other exception is a bug: its traceback shows
        kind = "config error: " if isinstance(e, cfg.ConfigError) else ""
        print(f"ssmpipe: {kind}{' '.join(str(e).split())}", file=sys.stderr)
        return 2
