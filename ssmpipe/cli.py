"""The `ssmpipe` command: what every Snakemake rule calls, and what users call by hand.

Every subcommand but `data` (the workflow's step that builds one data set) takes the
sweep's config file (one with `experiments:` stands for each of its sweeps); `report`,
`aggregate`, `papers` and `train` also take `--results=R -- NAME`, the form the Snakemake
rules call. A mistake of the user's (a bad config, a missing or
corrupt file, an unknown sweep, a bad option) is one line on stderr, `ssmpipe: ...`, and
a non-zero exit status (2); anything else keeps its traceback.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import ssmpipe
from ssmpipe import config as cfg
from ssmpipe.atomic import stamp
from ssmpipe.layout import NAME, Layout


def cmd_validate(args) -> int:
    from ssmpipe import sweep

    configs, waiting = cfg.load_experiments(args.config)  # the tune: section's check included
    for path, why in waiting.items():
        print(f"{args.config}: {path} is left out, it needs data: {why}")
    for config in configs:
        plan = sweep.plan(config, write=False)
        pending = set(plan.pending)
        to_train = sum(shard in pending for shard in plan.shard_of.values())
        print(
            f"{args.config}: valid. sweep {config['sweep']!r}: {len(plan.points)} points in "
            f"{len(plan.shards)} shards, {to_train} points still to train (in {len(pending)} shards); "
            f"results: {Path(config['results']).resolve()}"  # relative to where it runs, as Snakemake's paths are
        )
        if config.get("tune"):
            print(
                f"study {cfg.study_name(config)!r}: {config['tune']['num_samples']} samples of "
                f"{', '.join(config['tune']['space'])}"
            )
    return 0


def cmd_plan(args) -> int:
    """Write what planning decides: new shard specs, each sweep's points.json and config.yaml snapshot; quarantine
    store files that fail their checks. What the workflow's plan jobs run (--only: one part of it)."""
    from ssmpipe import manifest, sweep

    for config in plan_configs(args.config, args.json):
        if args.only == "snapshot":
            manifest.write_snapshot(Layout(config["results"]), config)
        elif args.only == "study":
            from ssmpipe import tune

            tune.write_study_config(config)
        else:
            plan = sweep.plan(config, write=True)
            print(
                f"sweep {config['sweep']!r}: {len(plan.points)} points, {len(plan.shards)} shards, "
                f"{len(plan.pending)} to train"
            )
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

    configs = cfg.load_sweeps(args.config)
    if not args.watch:
        print("\n".join(status.render(status.sweep_status(c)) for c in configs))
        return 0
    try:
        status.watch(configs, args.interval)
    except KeyboardInterrupt:  # Ctrl-C: the user has seen enough
        print()
    return 0


def cmd_data(args) -> int:
    from ssmpipe import data

    try:
        spec = json.loads(args.spec)
    except ValueError as e:
        raise cfg.InputError(f"--spec {args.spec!r} is not JSON ({e})") from None
    task = spec.get("task") if isinstance(spec, dict) else None
    if not (isinstance(task, dict) and task.get("name") in data.TASKS and isinstance(spec.get("seq_len"), int)):
        raise cfg.InputError(
            f'--spec {args.spec!r}: not a data spec ({{"task": {{"name": one of {", ".join(data.TASKS)}, …}}, '
            f'"seq_len": an integer}}, as the workflow\'s data rule writes it)'
        )
    try:
        arrays = data.build(spec)
    except (KeyError, TypeError) as e:  # a task setting missing or of the wrong type
        raise cfg.InputError(f"--spec {args.spec!r}: not a data spec of task {task['name']!r} ({e!r})") from None
    data.save(arrays, args.out)
    return 0


def cmd_train(args) -> int:
    if args.results is None:  # the config form: plan the sweeps (as Snakemake does), then train each shard here
        return train_config(args)
    if len(args.shards) != 1 and not (args.slurm and args.shards):
        raise cfg.InputError(f"--results {args.results!r}: give one shard id after it (got {len(args.shards)})")
    layout = Layout(results_root(args.results))
    for shard in args.shards:
        spec = layout.spec_path(shard)
        if not NAME.fullmatch(shard) or not spec.is_file():
            raise cfg.InputError(
                f"shard {shard!r}: no such shard under {args.results!r} (no {str(spec)!r}; "
                "the workflow plans shards, or `ssmpipe train CONFIG`)"
            )
    args.shard = args.shards[0]
    # --again: each shard trains anew if its rows are still the ones stored now (their stamp; kept until replaced)
    replace = {shard: stamp(layout.runs_path(shard)) for shard in args.shards} if args.again else {}
    if args.slurm and (args.outcome or len(args.shards) > 1):  # the train_array rule: shards as SLURM job arrays
        from ssmpipe import slurm

        try:
            done = slurm.train_array(
                args.results, args.shards, *cfg.load_slurm(args.slurm), outcome=args.outcome, replace=replace
            )
        except slurm.JobFailed as e:
            print(f"ssmpipe: {e}", file=sys.stderr)
            return 1
        failed = [why for why in done.values() if why]
        for why in failed:
            print(f"ssmpipe: {why}", file=sys.stderr)
        return 1 if failed and not args.outcome else 0
    if args.slurm:
        from ssmpipe import slurm

        try:
            slurm.train(args.results, args.shard, *cfg.load_slurm(args.slurm), replace=replace.get(args.shard))
        except slurm.JobFailed as e:
            print(f"ssmpipe: {e}", file=sys.stderr)
            return 1
        return 0

    import torch

    from ssmpipe.train import train_shard

    if args.threads:
        torch.set_num_threads(args.threads)
    train_shard(args.results, args.shard, args.device, replace.get(args.shard))
    return 0


def train_config(args) -> int:
    """`ssmpipe train CONFIG`: every shard the config's sweeps still need, one after another in this process."""
    import torch

    from ssmpipe import sweep
    from ssmpipe.train import train_shard

    if not args.shards:
        raise cfg.InputError("train: give a sweep config file, or --results=RESULTS -- SHARD")
    if args.slurm or len(args.shards) > 1:
        raise cfg.InputError(
            f"train {' '.join(args.shards)}: with a config file, no shard ids and no --slurm "
            "(those go with --results=RESULTS -- SHARD, the form the workflow calls)"
        )
    if args.threads:
        torch.set_num_threads(args.threads)
    for config in cfg.load_sweeps(args.shards[0]):
        plan = sweep.plan(config)  # writes the shard specs and the manifest, as the workflow does
        for shard in plan.pending:
            train_shard(config["results"], shard, args.device)
        print(f"sweep {config['sweep']!r}: {len(plan.pending)} shards trained, {len(plan.shards)} in all")
    return 0


def cmd_aggregate(args) -> int:
    from ssmpipe.table import aggregate

    named = targets(args)
    if args.out and len(named) > 1:
        raise cfg.InputError(f"--out {args.out!r}: one file, but {args.target!r} names {len(named)} sweeps")
    for results, name in named:
        store = Layout(results)
        out = args.out or store.table_path(name)
        table = aggregate(store, name, out)
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

    named = targets(args, studies=True)
    ready = [(results, name) for results, name in named if Layout(results).table_path(name).is_file()]
    for results, name in named:  # a config's sweeps (or study) not run yet: skipped, unless none has run
        if (results, name) not in ready:
            why = (
                f"sweep {name!r} has no table yet ({str(Layout(results).table_path(name))!r}): run it first "
                f"(snakemake --configfile CONFIG), or `ssmpipe aggregate` if its shards are trained"
            )
            if not ready:
                raise cfg.InputError(why)
            print(f"ssmpipe: {why}; skipped", file=sys.stderr)
    for results, name in ready:
        print(f"report: {build_report(Layout(results), name)}")
    return 0


def cmd_papers(args) -> int:
    from ssmpipe.report.papers import build_papers_page

    if args.results is None and all(name.endswith((".yaml", ".yml")) for name in args.sweeps):
        args.results, args.sweeps = papers_of(args.sweeps)  # config files: their sweeps, under their results root
    root = results_root(args.results)
    for name in args.sweeps:  # an experiment file names its sweep; a sweep name must be one under --results
        if not name.endswith((".yaml", ".yml")):
            sweep_dir(args.results, name)
    print(f"papers: {build_papers_page(root, args.sweeps, args.out)}")
    return 0


def targets(args, studies: bool = False) -> list[tuple[str, str]]:
    """(results root, sweep name) pairs: `--results=R -- NAME`, or each sweep of the config file args.target
    (with studies, a tune: section's study too)."""
    if args.results is not None:
        sweep_dir(args.results, args.target)
        return [(args.results, args.target)]
    if not args.target.endswith((".yaml", ".yml")) and not Path(args.target).exists():
        raise cfg.InputError(f"{args.target!r}: give the sweep's config file, or --results=RESULTS -- {args.target}")
    named = []
    for config in cfg.load_sweeps(args.target):
        named.append((config["results"], config["sweep"]))
        if studies and config.get("tune"):
            named.append((config["results"], cfg.study_name(config)))
    return named


def papers_of(files: list[str]) -> tuple[str, list[str]]:
    """The results root and the items (a sweep's name once it is planned, else its config file) of the sweeps
    these config files stand for; an experiment that needs data not here (`cfg.needs_data`) by its config file."""
    import yaml

    items, roots = [], set()
    for path in files:
        configs, waiting = cfg.load_experiments(path)
        listed = [f for f in yaml.safe_load(Path(path).read_text()).get("experiments") or [path] if f not in waiting]
        for config, source in zip(configs, listed):
            roots.add(config["results"])
            planned = Layout(config["results"]).config_path(config["sweep"]).is_file()
            items.append(config["sweep"] if planned else source)
        items += list(waiting)
    if len(roots) > 1:
        raise cfg.InputError(
            f"{', '.join(files)}: the sweeps name several results roots ({sorted(roots)}); give one with --results"
        )
    return roots.pop(), items


def results_root(results: str | None) -> Path:
    """The results root, or an InputError: not given, or no folder."""
    if results is None:
        raise cfg.InputError(
            "--results=RESULTS is required (the results root holding the sweeps), unless config files are given"
        )
    root = Path(results)
    if not root.is_dir():
        raise cfg.InputError(
            f"--results {results!r}: " + ("a file, not a folder" if root.exists() else "no such folder")
        )
    return root


def sweep_dir(results: str, name: str) -> Path:
    """<results>/<name>, or an InputError: a results root that is no folder, a bad or unknown sweep name."""
    root = results_root(results)
    cfg.check_name(name, "sweep")
    if not (root / name).is_dir():
        layout = Layout(root)  # every sweep's and study's folder has its config snapshot
        known = sorted(d.name for d in root.iterdir() if layout.config_path(d.name).is_file())
        raise cfg.InputError(f"no sweep {name!r} under {results!r} (there: {', '.join(known) or 'none'})")
    return root / name


class Parser(argparse.ArgumentParser):
    """argparse, with a usage mistake as one line (which subcommand, what is wrong, where help is) and exit 2."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: {message} (see `{self.prog} --help`)\n")


def interval(text: str) -> float:
    """--interval: seconds between two redraws, a number from 0.1 to 86400."""
    try:
        value = float(text)
    except ValueError:
        value = None
    if value is None or not 0.1 <= value <= 86400:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds from 0.1 to 86400")
    return value


def parser() -> argparse.ArgumentParser:
    p = Parser(prog="ssmpipe", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--version", action="version", version=f"ssmpipe {ssmpipe.__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    config_help = "the sweep's YAML config (with experiments:, each of its sweeps)"
    results_help = "results root holding the sweep; the positional is then a sweep name (the workflow's form)"

    s = sub.add_parser("validate", help="check a sweep config and say what it would train")
    s.add_argument("config", help=config_help)
    s.set_defaults(func=cmd_validate)

    s = sub.add_parser(
        "plan",
        help="plan sweeps into the store: write new shard specs and each sweep's points.json "
        "and config.yaml, quarantine store files that fail their checks",
    )
    s.add_argument("--json", action="store_true", help="each CONFIG is a sweep config as JSON text, not a file")
    s.add_argument(
        "--only",
        choices=["snapshot", "study"],
        help="write only each sweep's config.yaml snapshot, or "
        "only its tune study's config (<results>/<study>/snakemake-config.yaml), where they change",
    )
    s.add_argument("config", nargs="+", help=config_help)
    s.set_defaults(func=cmd_plan)

    s = sub.add_parser(
        "status",
        help="where a sweep stands: points by state (trained ok/diverged/failed, training "
        "now, queued, job failed, interrupted, to train), each training shard's epoch, loss and ETA",
    )
    s.add_argument("config", help=config_help + ", or its snapshot <results>/<sweep>/config.yaml")
    s.add_argument(
        "--watch",
        action="store_true",
        help="redraw the table every --interval seconds until every "
        "point is trained (Ctrl-C stops; not on a terminal: one table after another)",
    )
    s.add_argument("--interval", type=interval, default=5.0, metavar="S", help="seconds between redraws (default 5)")
    s.set_defaults(func=cmd_status)

    s = sub.add_parser("data", help="build one data set into its cache file (the workflow's data rule)")
    s.add_argument("--spec", required=True, help="the data spec as JSON (task settings and seq_len)")
    s.add_argument("out", help="the .npz file to write")
    s.set_defaults(func=cmd_data)

    s = sub.add_parser(
        "train",
        help="train what a sweep config still needs here, one shard after another; or, "
        "with --results, one shard (resuming from its checkpoint)",
    )
    s.add_argument("--results", help="results root holding the store; the positional is then a shard id")
    s.add_argument("--device", help="torch device (default, and on SLURM: cuda when present, else cpu)")
    s.add_argument("--threads", type=int, help="torch CPU threads (on SLURM: slurm.cpus_per_task)")
    s.add_argument(
        "--slurm",
        metavar="CONFIG",
        help="train the shard as a SLURM job (through submitit) with the "
        "requests of CONFIG's slurm: section, and wait for it; logs in <results>/<sweep>/slurm/",
    )
    s.add_argument(
        "--again",
        action="store_true",
        help="with --results: train the shards anew, their stored rows kept in place until the new ones replace "
        "them (a copy kept in <results>/store/quarantine/; the workflow passes it under snakemake -R train or -F)",
    )
    s.add_argument(
        "--outcome",
        metavar="PREFIX",
        help="with --slurm: train the shards as SLURM job arrays (slurm.array_size tasks each) and write each shard's "
        "outcome to PREFIX.<shard>.ok or .failed, exiting 0 once all are over (the workflow's train_array rule)",
    )
    s.add_argument(
        "shards",
        nargs="*",
        metavar="CONFIG|SHARD",
        help=config_help + "; with --results: the shard id (its spec is <results>/store/specs/<shard>.json; "
        "with --slurm, several: SLURM job arrays)",
    )
    s.set_defaults(func=cmd_train)

    s = sub.add_parser("aggregate", help="gather a sweep's rows from the store into one Parquet table")
    s.add_argument("--results", help=results_help)
    s.add_argument("--out", help="output file (default <results>/<sweep>/runs.parquet)")
    s.add_argument("target", metavar="CONFIG|SWEEP", help=config_help)
    s.set_defaults(func=cmd_aggregate)

    s = sub.add_parser(
        "tune",
        help="run (or resume) the config's tune: study with Ray Tune; trials' rows go to "
        "the store, the study's table and study.json to <results>/<study>/",
    )
    s.add_argument("config", help="YAML config with a tune: section")
    s.add_argument(
        "--cluster",
        choices=["local", "slurm"],
        default="local",
        help="local: Ray on this machine; slurm: Ray inside one SLURM job (the config's slurm: requests), "
        "submitted through submitit and waited for",
    )
    s.add_argument("--cpus", type=int, help="CPUs Ray may use here (default: all; on SLURM: slurm.cpus_per_task)")
    s.set_defaults(func=cmd_tune)

    s = sub.add_parser("report", help="build a sweep's (and a tune: study's) HTML report from its table")
    s.add_argument("--results", help=results_help + " (or a study's)")
    s.add_argument("target", metavar="CONFIG|SWEEP", help=config_help)
    s.set_defaults(func=cmd_report)

    s = sub.add_parser(
        "papers",
        help="build the reproduction page (default <results>/papers/index.html): each "
        "paper's claims, their verdicts in each experiment, the papers' values, from the store alone",
    )
    s.add_argument(
        "--results",
        help="results root holding the sweeps; then each SWEEP is a sweep name or an "
        "experiment's config file (without it: config files, e.g. config/papers.yaml)",
    )
    s.add_argument("--out", help="the HTML file to write (default <results>/papers/index.html)")
    s.add_argument(
        "sweeps",
        nargs="+",
        metavar="CONFIG|SWEEP",
        help="config file (with experiments:, each of its "
        "sweeps), or with --results a sweep name or experiment config file; one not run yet shows as such",
    )
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
    except OSError as e:  # the machine, not a bug: a read-only or full store folder, one not ours; named in one line
        if e.filename is None:
            raise
        print(f"ssmpipe: {e.filename}: {e.strerror}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # Ctrl-C (Snakemake passes it to every job): a normal stop, one line, no traceback
        print(
            "ssmpipe: interrupted (what was stored stays; a training shard resumes from its checkpoint)",
            file=sys.stderr,
        )
        return 130
