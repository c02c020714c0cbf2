import json

# Validate the config, plan the sweep (which points are stored, which shards to train),
# and give the rules their paths. All logic lives in the ssmpipe package.
import sys

from snakemake.utils import validate

from ssmpipe import config as cfg
from ssmpipe import sweep
from ssmpipe.store import Store

# ssmpipe's check names the offending key and value (the tune: section's included); then Snakemake's own
# validation with the same schema file fills in the defaults. A bad input, or a store file that cannot be
# trusted, is one line and exit 1, before any job.
try:
    _checked = cfg.check(config)  # an experiment's `scales` are merged in and removed
    config.clear()
    config.update(_checked)
    validate(config, "../schemas/config.schema.yaml")
    PLAN = sweep.plan(config)  # quarantines the store files that fail their checks (ssmpipe/store.py)
except cfg.InputError as e:
    sys.exit(f"ssmpipe: {'config error: ' if isinstance(e, cfg.ConfigError) else ''}{' '.join(str(e).split())}")
STORE = Store(config["results"])
RESULTS = config["results"]
SWEEP_DIR = str(STORE.sweep_dir(config["sweep"]))
REPORT = f"{SWEEP_DIR}/report/index.html"
# Every value a shell: command gets is quoted ({x:q}: shlex.quote; a list, each element): a path or name from
# the config never runs as shell code. Options take their value as --opt=VALUE and positionals follow "--", so
# a value starting with "-" stays a value. sys.executable may hold spaces: a list, `-m ssmpipe` separate words.
SSMPIPE = [sys.executable, "-m", "ssmpipe"]
DONE = set(PLAN.shards) - set(PLAN.pending)  # stored and checked


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
for _shard in PLAN.pending:
    DATA_SPECS.update(data_specs_of(_shard))
