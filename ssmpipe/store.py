"""The results store: where every file of ssmpipe lives, and the Parquet tables of runs.

Layout under the results root (shared by every sweep, so sweeps share points):

    data/<task>/<key>.npz            cached data sets
    store/specs/<shard>.json         the points of a shard (written when planned)
    store/runs/<shard>.parquet       one row per (run, epoch); present = shard done
    store/ckpt/<shard>.pt            a shard's checkpoint while it trains
    store/logs/<shard>.log           its log
    <sweep>/points.json, config.yaml the sweep's manifest and config
    <sweep>/runs.parquet             the sweep's table (aggregate)
    <sweep>/report/                  its report
    store/runs/tune-<study>-<trial>.parquet   a tune trial's rows (ssmpipe/tune.py); a finished
                                     trial also has its spec, so grid sweeps reuse it
    <study>/study.json, runs.parquet, ray/    a tune study's summary, table and Ray state

Every file is written atomically (ssmpipe.atomic).
"""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import yaml

from ssmpipe import config as cfg
from ssmpipe.atomic import atomic_path, write_text

METRICS = ("train_loss", "train_acc", "test_loss", "test_acc")
MEASURES = ("tau", "tau_max", "mc", "gram_cond", "s_A", "eig_real_min", "eig_real_max", "eig_imag_max",
            "output_scale", "grad_norm")  # what each is: ssmpipe/measures.py
PROFILES = ("mf",)  # measures that are a curve: a list column, null at epochs that do not measure it
LENGTH_METRICS = ("len_test_acc", "len_test_loss")  # one value per test_seq_lens entry, at the last epoch only
LAYER_MEASURES = ("tau_layers",)  # one value per layer (first layer first), every epoch; null where undefined
GRAM_SINGULAR = 1e16  # gram_cond's cap: κ from float64 singular values is noise beyond ~1/ε ≈ 4.5e15 (singular)
STATUSES = ("ok", "diverged", "failed")
STOPPED = "stopped"  # the status of a tune trial its scheduler stopped early (ssmpipe/tune.py): rows so far kept
_ARROW = {"integer": pa.int64(), "number": pa.float64(), "string": pa.string(), "boolean": pa.bool_(),
          "array": pa.list_(pa.int64())}


class Store:
    def __init__(self, root: str | Path):
        self.root = Path(root)

    # --- paths ---
    def spec_path(self, shard: str) -> Path:
        return self.root / "store" / "specs" / f"{shard}.json"

    def runs_path(self, shard: str) -> Path:
        return self.root / "store" / "runs" / f"{shard}.parquet"

    def ckpt_path(self, shard: str) -> Path:
        return self.root / "store" / "ckpt" / f"{shard}.pt"

    def log_path(self, shard: str) -> Path:
        return self.root / "store" / "logs" / f"{shard}.log"

    def data_path(self, key: str) -> Path:
        return self.root / "data" / key.split("-")[0] / f"{key}.npz"

    def sweep_dir(self, sweep: str) -> Path:
        return self.root / sweep

    # --- shard specs ---
    def read_specs(self) -> dict[str, list[str]]:
        """Shard id -> run ids, for every planned shard."""
        folder = self.root / "store" / "specs"
        if not folder.is_dir():
            return {}
        return {p.stem: [pt["run_id"] for pt in json.loads(p.read_text())["points"]]
                for p in sorted(folder.glob("*.json"))}

    def done_shards(self) -> set[str]:
        folder = self.root / "store" / "runs"
        return {p.stem for p in folder.glob("*.parquet")} if folder.is_dir() else set()

    def write_spec(self, shard: str, points: list[tuple[str, dict]]) -> None:
        if not self.spec_path(shard).exists():
            spec = {"shard": shard, "points": [{"run_id": r, "settings": s} for r, s in points]}
            write_text(self.spec_path(shard), json.dumps(spec, indent=1, sort_keys=True))

    def read_spec(self, shard_or_path: str | Path) -> dict:
        path = Path(shard_or_path)
        if path.suffix != ".json":
            path = self.spec_path(str(shard_or_path))
        return json.loads(path.read_text())

    # --- sweep manifest ---
    def manifest_path(self, sweep: str) -> Path:
        return self.sweep_dir(sweep) / "points.json"

    def config_path(self, sweep: str) -> Path:
        return self.sweep_dir(sweep) / "config.yaml"

    def write_manifest(self, config: dict, plan) -> None:
        """The sweep's points and its config, rewritten only when they change (Snakemake keys on mtime)."""
        points = [{"run_id": p.run_id, "shard": plan.shard_of[p.run_id], "axes": p.axes} for p in plan.points]
        write_text(self.manifest_path(config["sweep"]),
                   json.dumps({"sweep": config["sweep"], "points": points}, indent=1, sort_keys=True),
                   only_if_changed=True)
        write_text(self.config_path(config["sweep"]), yaml.safe_dump(_plain(config), sort_keys=False),
                   only_if_changed=True)


# --- run tables ---------------------------------------------------------------


def runs_schema() -> pa.Schema:
    settings = [pa.field(k, _ARROW[t]) for k, t in sorted(cfg.setting_types().items())]
    return pa.schema([pa.field("run_id", pa.string()), pa.field("shard_id", pa.string()), *settings,
                      pa.field("epoch", pa.int64()), *(pa.field(m, pa.float64()) for m in METRICS + MEASURES),
                      *(pa.field(m, pa.list_(pa.float32())) for m in PROFILES + LENGTH_METRICS + LAYER_MEASURES),
                      pa.field("wall_s", pa.float64()), pa.field("status", pa.string()),
                      pa.field("error", pa.string()),
                      pa.field("study", pa.string()), pa.field("trial_id", pa.string())])  # null unless a tune trial


def rows_to_table(rows: list[dict]) -> pa.Table:
    """Rows {run_id, shard_id, settings, epoch, metrics..., wall_s, status, error} -> typed table."""
    schema = runs_schema()
    columns: dict[str, list] = {f.name: [] for f in schema}
    for row in rows:
        flat = _flatten(row["settings"])
        for name in columns:
            columns[name].append(row.get(name, flat.get(name)))
    return pa.Table.from_pydict(columns, schema=schema)


def write_runs(rows: list[dict], path: str | Path) -> None:
    with atomic_path(path) as tmp:
        pq.write_table(rows_to_table(rows), tmp)


def read_runs(paths: list[str | Path], run_ids: list[str] | None = None) -> pa.Table:
    """Rows of the given store files (optionally only some run ids), one run's rows together."""
    if not paths:
        return runs_schema().empty_table()
    dataset = ds.dataset([str(p) for p in paths], format="parquet", schema=runs_schema())
    where = ds.field("run_id").isin(run_ids) if run_ids is not None else None
    table = dataset.to_table(filter=where)
    return table.sort_by([("run_id", "ascending"), ("epoch", "ascending")])


def aggregate(store: Store, sweep: str, out: str | Path) -> pa.Table:
    """The sweep's table: every row of its points, from the shards that hold them."""
    manifest = json.loads(store.manifest_path(sweep).read_text())
    points = manifest["points"]
    shards = sorted({p["shard"] for p in points})
    table = read_runs([store.runs_path(s) for s in shards], [p["run_id"] for p in points])
    table = table.append_column("sweep", pa.array([sweep] * table.num_rows, pa.string()))
    with atomic_path(out) as tmp:
        pq.write_table(table, tmp)
    return table


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _plain(obj):
    """Plain dicts and lists (Snakemake's config may hold OrderedDicts), for YAML."""
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_plain(v) for v in obj]
    return obj
