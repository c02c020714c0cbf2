# Validate the config, plan its sweeps (which points are stored, which shards to train), and give the
# rules their paths. A config is one sweep, or lists experiment configs (`experiments:`, e.g.
# config/papers.yaml): then every experiment is planned into this one DAG, sharing data sets and shards.
# Parsing computes and never writes (a dry run or --lint leaves the results alone): planning only reads
# and checks the store; the plan job (workflow/rules/plan.smk) writes what it decided. All logic lives
# in the ssmpipe package.
import argparse
import json
import re
import sys
import uuid
from pathlib import Path

from snakemake.settings.types import DeploymentMethod
from snakemake.utils import validate

from ssmpipe import config as cfg
from ssmpipe import sweep
from ssmpipe.layout import Layout


def plan_sweeps(config):
    """Sweep name -> checked config, and -> plan (reads and checks the store, writes nothing); and the experiment
    files that need data not here -> why (cfg.experiments).

    ssmpipe's check names the offending key and value (the tune: section's included); then Snakemake's
    own validation with the same schema file fills in the defaults. A bad input is one line and exit 1,
    before any job. An experiment's `scales` are merged in and removed."""
    try:
        # Each --configfile read again as ssmpipe reads a config: Snakemake's own loader keeps the last of two
        # equal keys silently, and runs __use_yte__ templates (refused here).
        for path in workflow.overwrite_configfiles:
            cfg.read(path)
        checked, waiting = cfg.experiments(config)
        sweeps = {c["sweep"]: c for c in checked}
        for c in sweeps.values():
            validate(c, "../schemas/config.schema.yaml")
        roots = sorted({c["results"] for c in sweeps.values()})
        if len(roots) > 1:
            raise cfg.ConfigError(
                f"results: the experiments name several roots ({roots}); give one beside experiments:"
            )
        return sweeps, sweep.plan_sweeps(list(sweeps.values())), waiting
    except cfg.InputError as e:
        kind = "config error: " if isinstance(e, cfg.ConfigError) else ""
        sys.exit(f"ssmpipe: {kind}{' '.join(str(e).split())}")


SWEEPS, PLANS, NEEDS_DATA = plan_sweeps(config)


# -R train (--forcerun train) or -F (--forceall): every shard of the sweeps trains again, as Snakemake reruns a
# rule's jobs whose outputs exist (`ssmpipe train --again`: the stored rows stay until new ones replace them).
# --dag, --rulegraph, --filegraph and --report draw every shard's train job, trained or not (else a trained one is
# no job at all: its runs file is a plain input, train.smk). Snakemake tells a Snakefile neither (its DAG settings
# are set after parsing): its command line, read for these options alone.
def snakemake_options(argv):
    p = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    p.add_argument("-R", "--forcerun", nargs="*", default=[])
    p.add_argument("-F", "--forceall", action="store_true")
    for drawing in ("--dag", "--rulegraph", "--filegraph", "--d3dag", "--report"):
        p.add_argument(drawing, nargs="?", const=True, dest="drawn")
    return p.parse_known_args(argv)[0]


_OPTIONS = snakemake_options(sys.argv[1:])
AGAIN = _OPTIONS.forceall or "train" in _OPTIONS.forcerun
DRAWN = bool(_OPTIONS.drawn)
# The plans whose pending shards get train jobs (PLANS: what the plan job writes).
JOB_PLANS = (
    {name: sweep.again(plan) for name, plan in PLANS.items()}
    if AGAIN or DRAWN
    else PLANS
)
# Experiments of config/papers.yaml that need data not here (cfg.needs_data: an IMDb experiment without task.path):
# left out of the DAG; the reproduction page names them, with the reason.
for _path, _why in NEEDS_DATA.items():
    print(f"ssmpipe: {_path} left out, it needs data: {_why}", file=sys.stderr)
PAPERS = "experiments" in config  # the reproduction page is built too
if not PAPERS:
    config.clear()
    config.update(next(iter(SWEEPS.values())))
FIRST = next(iter(SWEEPS.values()))
LAYOUT = Layout(FIRST["results"])  # where each file lives: ssmpipe/layout.py
RESULTS = FIRST["results"]
REPORTS = [str(LAYOUT.report_path(name)) for name in SWEEPS]
# Each sweep's table is a target of its own: a deleted (or never written) table is rebuilt, and its report after it,
# although the report stands (Snakemake does not remake a missing intermediate file for an existing target).
TABLES = [str(LAYOUT.table_path(name)) for name in SWEEPS]
PAPERS_PAGE = str(LAYOUT.papers_path())

# Every value a shell: command gets is quoted ({x:q}: shlex.quote; a list, each element): a path or
# name from the config never runs as shell code. Options take their value as --opt=VALUE and
# positionals follow "--", so a value starting with "-" stays a value. Rules get them as params:.
# The command: this interpreter (it may hold spaces: a list, `-m ssmpipe` separate words); with
# --sdm conda, the python of the rule's environment (workflow/envs/ssmpipe.yaml installs ssmpipe).
CONDA = DeploymentMethod.CONDA in workflow.deployment_settings.deployment_method
SSMPIPE = ["python" if CONDA else sys.executable, "-m", "ssmpipe"]
ENV = "../envs/ssmpipe.yaml"
# torch built for CUDA: for the train jobs of a sweep whose SLURM jobs ask for GPUs
CUDA_ENV = "../envs/ssmpipe-cuda.yaml"


def train_env(wildcards):
    """A train job's conda env: the CUDA one where its sweep's SLURM jobs ask for GPUs, else the CPU one (with
    --sdm conda; README, GPUs)."""
    if hasattr(wildcards, "shard"):
        shard = wildcards.shard
    else:  # a train_array job: its first shard's sweep (an array holds one sweep's shards)
        shard = ARRAYS[wildcards.array][0]
    c = SWEEPS[SWEEP_OF[shard]]
    gpus = c["launcher"] == "slurm" and c["slurm"]["gpus_per_node"] > 0
    return CUDA_ENV if gpus else ENV


# Shards: those to train (each pending shard's first sweep names its log and launcher), and what a
# sweep's table reads.
PENDING = sorted({s for plan in JOB_PLANS.values() for s in plan.pending})
# A regex of them, the train rule's shard wildcard ((?!): none).
PENDING_SHARD = "|".join(re.escape(s) for s in PENDING) or "(?!)"
SWEEP_OF = {s: name for name, plan in reversed(JOB_PLANS.items()) for s in plan.pending}
SHARD_RUNS = {
    name: [str(LAYOUT.runs_path(s)) for s in p.shards] for name, p in PLANS.items()
}
SLURM_SWEEPS = {name for name, c in SWEEPS.items() if c["launcher"] == "slurm"}
# Each pending shard's train job asks for the memory its settings need (sweep.mem_mb, at least 2 GB).
SHARD_MEM = sweep.shard_mem_mb(JOB_PLANS)
# What the plan job has still to write (empty: the store is as planned, and the job does not run).
UNWRITTEN = [why for plan in PLANS.values() for why in sweep.unwritten(plan)]


wildcard_constraints:
    sweep="|".join(re.escape(name) for name in SWEEPS),


def data_of_shards():
    """Pending shard -> the data files it trains on, and data key -> data spec, from the plans in memory
    (Plan.data: no spec file is read)."""
    files, specs = {}, {}
    for plan in JOB_PLANS.values():
        for shard, shard_specs in plan.data.items():
            files[shard] = [str(LAYOUT.data_path(key)) for key in shard_specs]
            specs.update(shard_specs)
    return files, specs


DATA_OF, DATA_SPECS = data_of_shards()
RUN = uuid.uuid4().hex  # names this run's markers


def marker(name):
    """A file no run has made: rule all asks for it so that the job making it runs (Snakemake makes a
    missing file only where a job that must run needs it). Named anew by each run, so a stale one never
    stands in for it, beside Snakemake's own metadata; removed after the run (drop_markers).
    """
    return f".snakemake/ssmpipe/{RUN}-{name}"


def drop_markers():
    """The Snakefile's onsuccess and onerror: this run's markers go."""
    for path in Path(".snakemake/ssmpipe").glob(f"{RUN}-*"):
        path.unlink(missing_ok=True)


# Where the store is not as planned, or a sweep's config snapshot is to change, rule all asks for the
# marker of the job writing it (workflow/rules/plan.smk).
PLANNED = [marker("plan")] if UNWRITTEN else []
SNAPSHOTS = [
    marker(f"snapshot-{name}")
    for name, c in SWEEPS.items()
    if sweep.changed_snapshot(c)
]


def results_of(levels):
    """A params function: the results root, `levels` folders above the job's first output (derived from
    the outputs, as --lint asks, not hard-coded)."""
    return lambda wildcards, output: str(Path(output[0]).parents[levels - 1])


def train_inputs(wildcards):
    """A pending shard's train job's inputs, from the plans in memory (no spec file is read):

    plan: the manifest of its first sweep (the plan job's output, which writes the shard's spec; one file,
      not one per shard, keeps the DAG light).
    data: its data sets.
    slurm: the config snapshot whose slurm: requests it submits with, or none (it trains here).
    """
    name = SWEEP_OF[wildcards.shard]
    return {
        "plan": str(LAYOUT.manifest_path(name)),
        "data": DATA_OF[wildcards.shard],
        "slurm": [str(LAYOUT.config_path(name))] if name in SLURM_SWEEPS else [],
    }


def launch(wildcards, input):
    """--slurm=<the shard's sweep's config snapshot> (one word, quoted whole), or nothing to train here."""
    return f"--slurm={input.slurm[0]}" if input.slurm else ""


def array_inputs(wildcards):
    """An array's train_array job's inputs (ARRAYS: workflow/rules/train.smk): its sweep's manifest, its shards'
    data sets, its config snapshot."""
    shards = ARRAYS[wildcards.array]
    name = SWEEP_OF[shards[0]]
    return {
        "plan": str(LAYOUT.manifest_path(name)),
        "data": sorted({f for s in shards for f in DATA_OF[s]}),
        "slurm": str(LAYOUT.config_path(name)),
    }
