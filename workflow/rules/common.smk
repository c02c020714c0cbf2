import json

# Validate the config, plan its sweeps (which points are stored, which shards to train), and give the
# rules their paths. A config is one sweep, or lists experiment configs (`experiments:`, e.g.
# config/papers.yaml): then every experiment is planned into this one DAG, sharing data sets and shards.
# All logic lives in the ssmpipe package.
import re
import sys

from snakemake.utils import validate

from ssmpipe import config as cfg
from ssmpipe import sweep
from ssmpipe.store import Store

# ssmpipe's check names the offending key and value (the tune: section's included); then Snakemake's own
# validation with the same schema file fills in the defaults. A bad input, or a store file that cannot be
# trusted, is one line and exit 1, before any job.
try:
    SWEEPS = {c["sweep"]: c for c in cfg.sweeps(config)}  # an experiment's `scales` are merged in and removed
    for _checked in SWEEPS.values():
        validate(_checked, "../schemas/config.schema.yaml")
    if len({c["results"] for c in SWEEPS.values()}) > 1:
        raise cfg.ConfigError(f"results: the experiments name several roots ({sorted({c['results'] for c in SWEEPS.values()})}); give one beside experiments:")
    PLANS = {name: sweep.plan(c) for name, c in SWEEPS.items()}  # quarantines store files that fail their checks
except cfg.InputError as e:
    sys.exit(f"ssmpipe: {'config error: ' if isinstance(e, cfg.ConfigError) else ''}{' '.join(str(e).split())}")
PAPERS = "experiments" in config  # the reproduction page is built too
if not PAPERS:
    config.clear()
    config.update(next(iter(SWEEPS.values())))
FIRST = next(iter(SWEEPS.values()))
STORE = Store(FIRST["results"])
RESULTS = FIRST["results"]
REPORTS = [f"{RESULTS}/{name}/report/index.html" for name in SWEEPS]
# Every value a shell: command gets is quoted ({x:q}: shlex.quote; a list, each element): a path or name from
# the config never runs as shell code. Options take their value as --opt=VALUE and positionals follow "--", so
# a value starting with "-" stays a value. sys.executable may hold spaces: a list, `-m ssmpipe` separate words.
SSMPIPE = [sys.executable, "-m", "ssmpipe"]
PENDING = sorted({s for plan in PLANS.values() for s in plan.pending})
DONE = {s for plan in PLANS.values() for s in plan.shards} - set(PENDING)  # stored and checked
SWEEP_OF = {s: name for name, plan in reversed(PLANS.items()) for s in plan.pending}  # a pending shard's first sweep


wildcard_constraints:
    sweep="|".join(re.escape(name) for name in SWEEPS),


def spec_of(shard):
    return STORE.read_spec(shard)


def data_specs_of(shard):
    return sweep.data_specs(p["settings"] for p in spec_of(shard)["points"])


def data_inputs(wildcards):
    """A finished shard needs nothing: its data may be gone from the cache without a retrain."""
    if wildcards.shard in DONE:
        return []
    return [str(STORE.data_path(key)) for key in data_specs_of(wildcards.shard)]


DATA_SPECS = {}
for _shard in PENDING:
    DATA_SPECS.update(data_specs_of(_shard))
