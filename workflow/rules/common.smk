import json

# Validate the config, plan the sweep (which points are stored, which shards to train),
# and give the rules their paths. All logic lives in the ssmpipe package.
import sys

from snakemake.utils import validate

from ssmpipe import config as cfg
from ssmpipe import sweep
from ssmpipe.store import Store

# ssmpipe's check names the offending key and value; then Snakemake's own validation
# with the same schema file fills in the defaults.
_checked = cfg.check(config)  # an experiment's `scales` are merged in and removed
config.clear()
config.update(_checked)
validate(config, "../schemas/config.schema.yaml")

PLAN = sweep.plan(config)
STORE = Store(config["results"])
RESULTS = config["results"]
SWEEP_DIR = str(STORE.sweep_dir(config["sweep"]))
REPORT = f"{SWEEP_DIR}/report/index.html"
SSMPIPE = f"{sys.executable} -m ssmpipe"
DONE = STORE.done_shards()


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
