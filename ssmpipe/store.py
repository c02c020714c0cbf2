"""The results store: where every file of ssmpipe lives, and the Parquet tables of runs.

Layout under the results root (shared by every sweep, so sweeps share points):

    data/<task>/<key>.npz            cached data sets
    store/specs/<shard>.json         the points of a shard (written when planned)
    store/runs/<shard>.parquet       one row per (run, epoch); present = shard done
    store/ckpt/<shard>.pt            a shard's checkpoint while it trains
    store/locks/<shard>.lock         held by the one process training the shard (others wait, then reuse)
    store/quarantine/                files the store could not trust, moved aside (never deleted)
    store/verified/<shard>.json      which runs file was last checked (its stat), so a parse need not read it again
    <sweep>/points.json, config.yaml the sweep's manifest and config
    <sweep>/logs/train/<shard>.log   the log of a shard's train job in this sweep
    <sweep>/runs.parquet             the sweep's table (aggregate: each row's results from its shard's runs
                                     file, its settings rebuilt from config.yaml, checked against the run ids)
    <sweep>/report/                  its report
    store/runs/tune-<study>-<trial>.parquet   a tune trial's rows (ssmpipe/tune.py); a finished
                                     trial also has its spec, so grid sweeps reuse it
    <study>/study.json, runs.parquet, ray/    a tune study's summary, table and Ray state

Every file is written atomically (ssmpipe.atomic), and nothing read back is trusted
unchecked: a spec must hash to its own name (shards are content-addressed), a shard's
runs file must hold exactly its spec's runs, and checkpoints load as plain tensors and
containers (`load_state`, never a pickle that can run code). What fails a check is moved
to store/quarantine/ with a warning naming it, and its shard trains again. A run's rows
are never replaced by fewer rows (`write_runs`).

A runs file that passed its check (or that `write_runs` wrote, and so knows) gets a record,
store/verified/<shard>.json: its (size, mtime_ns, ctime_ns, inode) and a hash of the run ids it
holds. A later check skips a file whose stat and spec's run ids still match its record: a
rewritten file (atomic: a new inode; in place: a new ctime, which no user can set back) is read
and checked again. The record is untrusted JSON: one that does not parse or match is ignored.
Whoever can edit it can also write the runs file itself, which the check cannot authenticate
(it checks shape, not provenance); a forged record lets a file skip only the shape check, and
`aggregate` still reads every file whole (a damaged one is a StoreError naming it).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import re
import shutil
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import filelock
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import yaml

from ssmpipe import config as cfg
from ssmpipe.atomic import atomic_path, write_text

METRICS = ("train_loss", "train_acc", "test_loss", "test_acc")
MEASURES = ("tau", "tau_max", "mc", "gram_cond", "s_A", "eig_real_min", "eig_real_max", "eig_imag_max",
            "output_scale", "grad_norm", "chance_acc", "dt", "rho_A", "S2")  # what each is: ssmpipe/measures.py
PROFILES = ("mf",)  # measures that are a curve: a list column, null at epochs that do not measure it
LENGTH_METRICS = ("len_test_acc", "len_test_loss")  # one value per test_seq_lens entry, at the last epoch only
LAYER_MEASURES = ("tau_layers",)  # one value per layer (first layer first), every epoch; null where undefined
GRAM_SINGULAR = 1e16  # gram_cond's cap: κ from float64 singular values is noise beyond ~1/ε ≈ 4.5e15 (singular)
STATUSES = ("ok", "diverged", "failed")
STOPPED = "stopped"  # the status of a tune trial its scheduler stopped early (ssmpipe/tune.py): rows so far kept
log = logging.getLogger("ssmpipe.store")


class StoreError(cfg.InputError):
    """A store file ssmpipe cannot trust or write; the message names the file."""


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

    def data_path(self, key: str) -> Path:
        return self.root / "data" / key.split("-")[0] / f"{key}.npz"

    def sweep_dir(self, sweep: str) -> Path:
        return self.root / sweep

    def lock_path(self, shard: str) -> Path:
        return self.root / "store" / "locks" / f"{shard}.lock"

    def progress_path(self, shard: str) -> Path:
        return self.root / "store" / "progress" / f"{shard}.json"

    def shard_lock(self, shard: str) -> filelock.FileLock:
        """The inter-process lock (fcntl) of one shard: whoever trains it holds it; other processes wait."""
        self.lock_path(shard).parent.mkdir(parents=True, exist_ok=True)
        return filelock.FileLock(self.lock_path(shard))

    # --- shard specs ---
    def read_specs(self) -> dict[str, list[str]]:
        """Shard id -> the run ids its spec claims (unchecked: `trusted` checks one), for every spec file."""
        return {shard: _claimed(spec) for shard, spec in self.iter_specs()}

    def iter_specs(self):
        """(shard id, its parsed spec, or None if unreadable) for every spec file, in shard order, one at a time."""
        folder = self.root / "store" / "specs"
        for p in sorted(folder.glob("*.json")) if folder.is_dir() else []:
            try:
                yield p.stem, json.loads(p.read_bytes())
            except (OSError, ValueError):
                yield p.stem, None  # unreadable: `trusted` says why

    def done_shards(self) -> set[str]:
        """Shards with a runs file (unchecked: `runs_problem` checks one)."""
        folder = self.root / "store" / "runs"
        return {p.stem for p in folder.glob("*.parquet")} if folder.is_dir() else set()

    def write_spec(self, shard: str, points: list[tuple[str, dict]]) -> None:
        if not self.spec_path(shard).exists():
            write_text(self.spec_path(shard), _json_lines({"shard": shard}, "points",
                                                          [{"run_id": r, "settings": s} for r, s in points]))

    def read_spec(self, shard_or_path: str | Path) -> dict:
        path = Path(shard_or_path)
        if path.suffix != ".json":
            path = self.spec_path(str(shard_or_path))
        return json.loads(path.read_text())

    def spec_problem(self, shard: str, known: dict[str, dict] | None = None,
                     spec: dict | None = None) -> tuple[str | None, list[str]]:
        """(why shard's spec cannot be trusted, or None; its run ids, read once).

        The spec must parse, name its shard, and be content-addressed (each point's run id the hash of its
        settings; a sweep shard's id the hash of its run ids). known: run id ->
        settings already hashed to it (the planned points): equal settings need no hashing again. spec: the spec
        file's content, if already read (`iter_specs`)."""
        known = known or {}
        from ssmpipe.sweep import digest, run_id

        try:
            spec = spec if spec is not None else self.read_spec(shard)
            ids = [p["run_id"] for p in spec["points"]]
            if spec["shard"] != shard:
                return f"it names shard {spec['shard']!r}", []
            if not ids:
                return "it holds no points", []
            if not shard.startswith("tune-") and digest(sorted(ids)) != shard:  # a trial's shard is named by its trial
                return "its run ids do not hash to its name (edited by hand?)", []
            for p in spec["points"]:
                if known.get(p["run_id"]) != p["settings"] and run_id(p["settings"]) != p["run_id"]:
                    return f"the settings of run {p['run_id']} do not hash to its id (edited by hand?)", []
        except OSError as e:
            return f"unreadable ({e.strerror})", []
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            return f"not a shard spec ({type(e).__name__}: {e})", []
        return None, ids

    def runs_problem(self, shard: str, run_ids: list[str]) -> str | None:
        """Why shard's runs file cannot be trusted, or None: it must be readable Parquet holding rows of exactly
        `run_ids` (its spec's), each run's epochs 0, 1, … without a gap."""
        try:
            table = pq.read_table(self.runs_path(shard), columns=["run_id", "epoch"])
        except OSError as e:
            return f"unreadable ({type(e).__name__}: {e})"
        except (ValueError, KeyError) as e:  # pyarrow's ArrowInvalid (truncated, garbage) is a ValueError
            return f"not a runs table ({type(e).__name__}: {e})"
        rows = table.to_pydict()
        if set(rows["run_id"]) != set(run_ids):
            return (f"it holds {len(set(rows['run_id']))} runs, its spec {len(set(run_ids))}"
                    f" ({len(set(rows['run_id']) ^ set(run_ids))} differ)")
        epochs: dict[str, list[int]] = {}
        for rid, epoch in zip(rows["run_id"], rows["epoch"]):
            epochs.setdefault(rid, []).append(epoch)
        for rid, got in epochs.items():
            if sorted(got) != list(range(len(got))):
                return f"run {rid} has epochs {sorted(got)[:6]}…, not 0, 1, …"
        return None

    def quarantine(self, path: str | Path, why: str, then: str = "its shard trains again") -> Path | None:
        """Move a file the store cannot trust to store/quarantine/ (kept, never deleted), warning with its name.
        None if it is already gone (another process moved it first)."""
        path = Path(path)
        folder = self.root / "store" / "quarantine"
        folder.mkdir(parents=True, exist_ok=True)
        dest = folder / f"{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}-{path.parent.name}-{path.name}"
        try:
            os.replace(path, dest)
        except FileNotFoundError:
            return None
        log.warning("ssmpipe: %s cannot be trusted: %s; moved to %s (%s)", path, why, dest, then)
        return dest

    def quarantine_shard(self, shard: str, why: str) -> None:
        """An untrusted spec: the shard's spec, rows and checkpoint all go (each was made from or for that spec)."""
        for path in (self.spec_path(shard), self.runs_path(shard), self.ckpt_path(shard)):
            if path.exists():
                self.quarantine(path, why if path == self.spec_path(shard) else f"its spec {why}")

    def trusted(self, shard: str, repair: bool, known: dict[str, dict] | None = None,
                spec: dict | None = None) -> tuple[list[str] | None, bool]:
        """(run ids of shard's spec, or None if it is missing or untrusted; whether its rows are stored and
        trusted). With repair, what fails a check is quarantined. known, spec: as for `spec_problem`."""
        if spec is None and not self.spec_path(shard).exists():
            return None, False
        return self.trusted_all([(shard, spec)], repair, known)[shard]

    def trusted_all(self, specs, repair: bool, known: dict[str, dict] | None = None) -> dict[str, tuple]:
        """`trusted` of many shards at once: specs, (shard, parsed spec or None to read it) pairs (`iter_specs`);
        their runs files are checked together (`runs_problems`)."""
        out: dict[str, tuple[list[str] | None, bool]] = {}
        for shard, spec in specs:
            problem, ids = self.spec_problem(shard, known, spec)
            if problem:
                self._distrust(self.spec_path(shard), problem, repair)
                out[shard] = None, False
            else:
                out[shard] = ids, False
        stored = {s: ids for s, (ids, _) in out.items() if ids is not None}
        stamps = {s: _stamp(self.runs_path(s)) for s in stored}
        fresh = {s for s, stamp in stamps.items() if stamp is not None and _recorded(self.runs_path(s)) == [
            *stamp, _ids_hash(stored[s])]}  # checked before, unchanged since: not read again
        checked = self.runs_problems({s: ids for s, ids in stored.items() if stamps[s] is not None and s not in fresh})
        for shard, problem in checked.items():
            if problem:
                self._distrust(self.runs_path(shard), problem, repair)
            else:
                out[shard] = out[shard][0], True
                if repair:  # the plan job writes; a parse (repair=False) never does
                    _record(self.runs_path(shard), stamps[shard], stored[shard])
        for shard in fresh:
            out[shard] = out[shard][0], True
        return out

    def _distrust(self, path: Path, problem: str, repair: bool) -> None:
        """A file that failed its check: with repair, quarantined (a spec with its shard's rows and checkpoint)."""
        if not repair:
            log.warning("ssmpipe: %s cannot be trusted: %s", path, problem)
        elif path.suffix == ".json":
            self.quarantine_shard(path.stem, problem)
        else:
            self.quarantine(path, problem)

    def runs_problems(self, expected: dict[str, list[str]]) -> dict[str, str | None]:
        """`runs_problem` of many shards (shard -> its spec's run ids), their runs files read together
        (`_epoch_counts`); a shard that fails that check (or every shard, if a file cannot be read) is checked alone,
        for the message."""
        paths = {str(self.runs_path(s)): s for s in sorted(expected)}
        try:
            epochs = _epoch_counts(list(paths))
        except (OSError, ValueError, KeyError, TypeError):  # a damaged file: found, and named, one file at a time
            epochs = {}
        out = {}
        for path, shard in paths.items():
            got = epochs.get(path)
            fine = got is not None and got.keys() == set(expected[shard]) and all(_numbered(*c) for c in got.values())
            out[shard] = None if fine else self.runs_problem(shard, expected[shard])
        return out

    # --- sweep manifest ---
    def manifest_path(self, sweep: str) -> Path:
        return self.sweep_dir(sweep) / "points.json"

    def config_path(self, sweep: str) -> Path:
        return self.sweep_dir(sweep) / "config.yaml"

    def manifest_text(self, config: dict, plan) -> str:
        """The sweep's points.json: each point's run id, shard and grid values."""
        points = [{"run_id": p.run_id, "shard": plan.shard_of[p.run_id], "axes": p.axes} for p in plan.points]
        return _json_lines({"sweep": config["sweep"]}, "points", points)

    @staticmethod
    def snapshot_text(config: dict) -> str:
        """The sweep's config.yaml: the checked config it was planned with."""
        return yaml.safe_dump(_plain(config), sort_keys=False)

    def stale_outputs(self, config: dict, plan) -> list[Path]:
        """The sweep's table and report, where they exist while some of its shards must train (again)."""
        table = self.sweep_dir(config["sweep"]) / "runs.parquet"
        report = self.sweep_dir(config["sweep"]) / "report" / "index.html"
        return [path for path in (table, report) if plan.pending and path.exists()]

    def write_snapshot(self, config: dict) -> None:
        """The sweep's config.yaml, rewritten only when it changes (Snakemake keys on mtime)."""
        write_text(self.config_path(config["sweep"]), self.snapshot_text(config), only_if_changed=True)

    def write_manifest(self, config: dict, plan) -> None:
        """The sweep's points and its config, rewritten only when they change (Snakemake keys on mtime)."""
        write_text(self.manifest_path(config["sweep"]), self.manifest_text(config, plan), only_if_changed=True)
        self.write_snapshot(config)
        stale = self.stale_outputs(config, plan)
        # Stale: built from shards that must train (again). Snakemake does not remake a missing intermediate
        # file while the final target stands, so both step aside (kept) and the whole chain runs again.
        for path in stale:
            os.replace(path, path.with_name("runs.previous.parquet" if path.suffix == ".parquet"
                                            else "index.previous.html"))
        if stale:
            log.warning("ssmpipe: the table and report of sweep %r are stale (%d shards to train first); "
                        "kept as runs.previous.parquet and report/index.previous.html until rebuilt",
                        config["sweep"], len(plan.pending))


# --- run tables ---------------------------------------------------------------


def runs_schema() -> pa.Schema:
    settings = [pa.field(k, _ARROW[t]) for k, t in sorted(cfg.setting_types().items())]
    return pa.schema([pa.field("run_id", pa.string()), pa.field("shard_id", pa.string()), *settings,
                      pa.field("epoch", pa.int64()), *(pa.field(m, pa.float64()) for m in METRICS + MEASURES),
                      *(pa.field(m, pa.list_(pa.float32())) for m in PROFILES + LENGTH_METRICS + LAYER_MEASURES),
                      pa.field("wall_s", pa.float64()), pa.field("status", pa.string()),
                      pa.field("error", pa.string()),
                      pa.field("study", pa.string()), pa.field("trial_id", pa.string()),  # null unless a tune trial
                      pa.field("device", pa.string()),         # where the epoch trained: "cpu", "cuda:<card name>"
                      pa.field("cuda_version", pa.string())])  # torch.version.cuda on CUDA, else null (older: null)


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
    """Write a runs file atomically; never over one that holds more rows of a run that did not fail (StoreError)."""
    table = rows_to_table(rows)
    if Path(path).exists():
        _check_no_fewer_rows(path, table)
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)
    if _record_path(path) is not None and _contiguous(table):  # what it wrote, it knows: no need to read it back
        _record(path, _stamp(path), table.column("run_id").unique().to_pylist())


def _contiguous(table: pa.Table) -> bool:
    """Whether each run of a runs table has epochs 0, 1, … without a gap or repeat (`runs_problem`'s epoch check)."""
    return all(_numbered(*counts) for *_, counts in _epoch_stats(table, ["run_id"]))


def _epoch_stats(table: pa.Table, keys: list[str]) -> list[tuple]:
    """(*key values, (rows, lowest epoch, highest epoch, distinct epochs)) of each group of a table's rows."""
    g = table.group_by(keys).aggregate([("epoch", "count", pc.CountOptions(mode="all")), ("epoch", "min"),
                                        ("epoch", "max"), ("epoch", "count_distinct")]).to_pydict()
    counts = zip(g["epoch_count"], g["epoch_min"], g["epoch_max"], g["epoch_count_distinct"])
    return [(*key, c) for *key, c in zip(*(g[k] for k in keys), counts)]


def _numbered(n: int, lo: int, hi: int, distinct: int) -> bool:
    """Whether n epochs from lo to hi, distinct of them, are 0, 1, …, n − 1."""
    return lo == 0 and hi == n - 1 and distinct == n


# --- the record of verified runs files (store/verified/<shard>.json; see the module docstring) ---


def _record_path(runs: str | Path) -> Path | None:
    """store/verified/<shard>.json of store/runs/<shard>.parquet; None for a file outside a store's runs folder."""
    runs = Path(runs)
    if runs.parent.name != "runs" or runs.parent.parent.name != "store":
        return None
    return runs.parent.parent / "verified" / f"{runs.stem}.json"


def _stamp(path: str | Path) -> list[int] | None:
    """(size, mtime_ns, ctime_ns, inode) of a file, None if it is missing: a rewrite changes at least one."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino]


def _ids_hash(run_ids) -> str:
    """sha256 of the distinct run ids, sorted, one a line: the record names which runs a file was checked against."""
    return hashlib.sha256("\n".join(sorted(set(run_ids))).encode()).hexdigest()


def _record(runs: str | Path, stamp: list[int] | None, run_ids) -> None:
    """Note that the runs file with this stamp holds exactly run_ids, each with epochs 0, 1, … (checked)."""
    path = _record_path(runs)
    if path is not None and stamp is not None:
        write_text(path, json.dumps([*stamp, _ids_hash(run_ids)]))


def _recorded(runs: str | Path) -> list | None:
    """A runs file's record ([size, mtime_ns, ctime_ns, inode, ids hash]), or None: missing or unreadable (ignored)."""
    path = _record_path(runs)
    try:
        return json.loads(path.read_bytes()) if path is not None else None
    except (OSError, ValueError):
        return None


def _check_no_fewer_rows(path: str | Path, new: pa.Table) -> None:
    try:
        old = pq.read_table(path, columns=["run_id", "status"]).to_pydict()
    except (OSError, ValueError, KeyError):
        return  # unreadable: nothing in it to lose
    before, after = Counter(old["run_id"]), Counter(new.column("run_id").to_pylist())  # run id -> its rows
    failed = {r for r, s in zip(old["run_id"], old["status"]) if s == "failed"}
    for rid, n in sorted(before.items()):
        if rid not in failed and after.get(rid, 0) < n:
            raise StoreError(f"{path}: refusing to replace the {n} rows of run {rid} with {after.get(rid, 0)}")


def load_state(path: str | Path, map_location="cpu") -> dict:
    """A checkpoint (a dict of tensors, numbers, strings, lists, dicts), loaded with torch's weights_only unpickler:
    a file asking for anything else (a crafted pickle's os.system, say) is refused, never run, as is one that is not
    a torch file at all: StoreError naming the file.

    Its tensors land on `map_location` (default the CPU) whatever device they were saved from, so a checkpoint
    written on a GPU node loads on a CPU-only host (ssmpipe saves them device-free anyway: `device_free`); whoever
    resumes from it moves what it needs to its own device (`train.Group.restore`)."""
    import pickle

    import torch

    try:
        return torch.load(path, weights_only=True, map_location=map_location)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError) as e:
        lines = [line.strip() for line in str(e).splitlines() if line.strip()] or [type(e).__name__]
        reason = next((line for line in lines if "nsupported" in line), lines[0])  # torch's words: what it refused
        raise StoreError(f"{path}: not a checkpoint ssmpipe can trust ({type(e).__name__}: {reason}); move it "
                         f"aside to train from scratch") from None


def device_free(obj):
    """obj (dicts, lists, tuples of tensors and plain values: an optimizer's state_dict, a checkpoint) with every
    tensor on the CPU: what a checkpoint holds, so that it loads on any host (a CPU tensor is returned as is)."""
    if isinstance(obj, dict):
        return {k: device_free(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(device_free(v) for v in obj)
    return obj.cpu() if hasattr(obj, "is_cuda") and obj.device.type != "cpu" else obj


def read_runs(paths: list[str | Path], run_ids: list[str] | None = None,
              columns: list[str] | None = None) -> pa.Table:
    """Rows of the given store files (optionally only some run ids, and only some columns of runs_schema: each file
    is read column by column, so fewer columns read faster), one run's rows together."""
    schema = runs_schema()
    if columns is not None:
        schema = pa.schema([schema.field(name) for name in columns])
    if not paths:
        return schema.empty_table()
    parts = []
    with ThreadPoolExecutor(max(1, min(len(paths), os.cpu_count() or 1))) as pool:  # Parquet reads free the GIL
        for start in range(0, len(paths), READ_GROUP):
            group = pa.concat_tables(pool.map(lambda p: _conform(_read_parquet(p, schema.names), schema),
                                              paths[start:start + READ_GROUP]))
            parts.append(group.combine_chunks())  # one buffer per column, not one per file: 1.1 -> 0.7 GB at 3,200
    table = pa.concat_tables(parts)
    if run_ids is not None:
        ours = pc.is_in(table.column("run_id"), value_set=pa.array(run_ids, pa.string()))
        if not pc.all(ours).as_py():  # filtering costs a copy of every column: only when needed
            table = table.filter(ours)
    return table.sort_by([("run_id", "ascending"), ("epoch", "ascending")])


READ_GROUP = 256  # runs files read, then combined, at a time


def _read_parquet(path: str | Path, columns: list[str]) -> pa.Table:
    """The named columns of a runs file that has them (an older file may lack some: `_conform` fills them)."""
    try:
        file = pq.ParquetFile(path, pre_buffer=False)  # pre-buffering a small file's column chunks: ~30% slower
        present = set(file.schema_arrow.names)  # schema_arrow is built anew at each access
        return file.read(columns=[c for c in columns if c in present], use_threads=False)
    except (OSError, ValueError) as e:  # ValueError: pyarrow's ArrowInvalid (truncated, not Parquet)
        raise StoreError(f"{path}: not a runs table ssmpipe can read ({type(e).__name__}: {e})") from None


def _conform(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """A runs file's table with exactly the schema's columns: missing ones (an older file) null, others cast."""
    if table.schema.equals(schema):  # as write_runs wrote it: nothing to do (casting 71 columns is not free)
        return table
    columns = [table.column(f.name).cast(f.type) if f.name in table.column_names else pa.nulls(table.num_rows, f.type)
               for f in schema]
    return pa.Table.from_arrays(columns, schema=schema)


def aggregate(store: Store, sweep: str, out: str | Path) -> pa.Table:
    """The sweep's table: every row of its points, from the shards that hold them, with each point's settings.

    Every point must have rows (StoreError naming its shard otherwise). A row's settings are not read from its
    runs file (one column per setting, ~2/3 of the reading) but rebuilt from the sweep's config snapshot
    (`sweep_settings`), whose points must hash to the manifest's run ids: a row's settings are those its run id
    is the hash of. The table never shrinks silently: runs the previous table had and this one lacks (the grid
    changed) are named in a warning, and the previous table is kept beside it as runs.previous.parquet (also where
    `write_manifest` puts a stale one).
    """
    points = _manifest_points(store, sweep)
    shards = sorted({p["shard"] for p in points})
    for shard in shards:
        if not store.runs_path(shard).exists():
            n = sum(p["shard"] == shard for p in points)
            raise StoreError(f"{store.runs_path(shard)} does not exist: its {n} runs have no rows; rerun snakemake, "
                             f"which trains what is missing")
    varying, fixed = sweep_settings(store, sweep, [p["run_id"] for p in points])
    schema = runs_schema()
    table = read_runs([store.runs_path(s) for s in shards], [p["run_id"] for p in points],
                      [f.name for f in schema if f.name not in fixed and f.name not in varying.column_names[1:]])
    have = set(pc.unique(table.column("run_id")).to_pylist())
    missing = [p for p in points if p["run_id"] not in have]
    if missing:
        raise StoreError(f"{store.runs_path(missing[0]['shard'])} holds no rows of run {missing[0]['run_id']} "
                         f"({len(missing)} of the sweep's {len(points)} runs have none): rerun snakemake, "
                         f"which checks each shard and retrains what is missing")
    point_of_row = pc.index_in(table.column("run_id"), value_set=varying.column("run_id"))
    columns = [table.column(f.name) if f.name in table.column_names
               else varying.column(f.name).take(point_of_row) if f.name in varying.column_names
               else pa.repeat(pa.scalar(fixed[f.name], f.type), table.num_rows) for f in schema]
    table = pa.Table.from_arrays([*columns, pa.repeat(pa.scalar(sweep, pa.string()), table.num_rows)],
                                 schema=schema.append(pa.field("sweep", pa.string())))
    out = Path(out)
    if out.exists():
        _keep_if_shrinking(out, table)
    with atomic_path(out) as tmp:
        pq.write_table(table, tmp)
    return table


def _manifest_points(store: Store, sweep: str) -> list[dict]:
    """The sweep's points ({run_id, shard, axes}) from its manifest; StoreError naming the file if it cannot be read."""
    path = store.manifest_path(sweep)
    if not path.is_file():
        raise StoreError(f"{str(path)!r} does not exist: the workflow writes it when it plans the sweep "
                         "(snakemake --configfile CONFIG, or ssmpipe train CONFIG)")
    try:
        points = json.loads(path.read_bytes())["points"]
        for p in points:  # a shard names a file in the store, never a path to read elsewhere
            if not (isinstance(p["run_id"], str) and isinstance(p["shard"], str) and _NAME.fullmatch(p["shard"])):
                raise ValueError(f"point {p!r} does not name a run and a shard")
        return points
    except OSError as e:
        raise StoreError(f"{str(path)!r} is unreadable ({e.strerror})") from None
    except (ValueError, KeyError, TypeError) as e:
        raise StoreError(f"{str(path)!r} is not JSON of a sweep's points ({type(e).__name__}: {e})") from None


_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")  # a shard's name: a plain file name, no folder


def sweep_settings(store: Store, sweep: str, run_ids: list[str]) -> tuple[pa.Table, dict]:
    """The settings of the sweep's points, from its config snapshot: (one row per point: its run id and the settings
    that differ between points, the grid's (`sweep.varying_keys`); setting -> its value, for every other setting).

    The snapshot's grid is expanded again (`sweep.expand`), which hashes each point's settings to its run id, so a
    row here holds the settings its run id is the hash of; the expanded ids must be exactly `run_ids` (the
    manifest's), else StoreError."""
    from ssmpipe.sweep import expand, varying_keys

    path = store.config_path(sweep)
    try:
        text = path.read_text()
    except OSError as e:
        raise StoreError(f"{str(path)!r} is unreadable ({e.strerror}): rerun snakemake, which writes it") from None
    try:
        config = yaml.safe_load(text)
        n = math.prod(len(values) for values in config["grid"].values())  # counted before anything is expanded
        if n != len(run_ids):
            raise StoreError(f"{str(path)!r} has {n:,} points, {str(store.manifest_path(sweep))!r} {len(run_ids):,}: "
                             f"rerun snakemake, which plans the sweep again")
        points = expand(config)
        varying = varying_keys(config)
    except StoreError:
        raise
    except OSError as e:  # a data file the task reads (task.path), hashed into each run id
        raise StoreError(f"{str(path)!r}: its points' run ids cannot be computed again, {e.filename!r} is unreadable "
                         f"({e.strerror})") from None
    except (yaml.YAMLError, KeyError, TypeError, ValueError, AttributeError) as e:
        why = getattr(e, "problem", None) or e  # a YAML error's own words, without its multi-line excerpt
        raise StoreError(f"{str(path)!r} is not a sweep's config snapshot ({type(e).__name__}: {why}): rerun "
                         f"snakemake, which writes it again") from None
    ids = [p.run_id for p in points]
    if set(ids) != set(run_ids):
        differ = len(set(ids) ^ set(run_ids))
        raise StoreError(f"{str(path)!r} and {str(store.manifest_path(sweep))!r} disagree ({differ} run ids differ): "
                         f"rerun snakemake, which plans the sweep again")
    names = cfg.setting_types()
    fields = [f for f in runs_schema() if f.name in names and f.name in varying]
    table = pa.Table.from_arrays([pa.array(ids, pa.string()), *(pa.array([_setting(p, f.name) for p in points], f.type)
                                                               for f in fields)],
                                 schema=pa.schema([pa.field("run_id", pa.string()), *fields]))
    first = _flatten(points[0].settings) if points else {}
    return table, {name: first.get(name) for name in names if name not in varying}


def _setting(point, key: str):
    """A point's value of a dotted setting key: a grid value, or from its settings (None where it has none: no data
    hash without a task.path)."""
    if key in point.axes:
        return point.axes[key]
    try:
        return cfg.get_path(point.settings, key)
    except KeyError:
        return None


def _keep_if_shrinking(out: Path, table: pa.Table) -> None:
    try:
        old = pq.read_table(out, columns=["run_id"]).column("run_id")
    except (OSError, ValueError, KeyError):
        return
    lost = set(pc.unique(old).to_pylist()) - set(pc.unique(table.column("run_id")).to_pylist())  # ids, not rows
    if lost or len(old) > table.num_rows:
        kept = out.with_name("runs.previous.parquet")
        with atomic_path(kept) as tmp:
            shutil.copyfile(out, tmp)
        log.warning("ssmpipe: %s shrinks from %d to %d rows (%d runs no longer in the sweep, e.g. %s); "
                    "the previous table is kept as %s", out, len(old), table.num_rows, len(lost),
                    sorted(lost)[:1] or "none", kept)


def _epoch_counts(paths: list[str]) -> dict[str, dict[str, tuple[int, int, int, int]]]:
    """path -> run id -> (rows, lowest epoch, highest epoch, distinct epochs) of Parquet runs files; files read in
    threads (one at a time each: a dataset scan's read-ahead holds ~0.7 GB at 3,200 files), counted in one group-by."""
    if not paths:
        return {}
    with ThreadPoolExecutor(max(1, min(len(paths), os.cpu_count() or 1))) as pool:
        tables = list(pool.map(lambda p: pq.ParquetFile(p, pre_buffer=False).read(columns=["run_id", "epoch"],
                                                                                  use_threads=False), paths))
    rows = pa.concat_tables(tables)  # ArrowInvalid (a ValueError) if some file's columns differ in type
    table = pa.table({"file": np.repeat(np.arange(len(paths), dtype=np.int32), [t.num_rows for t in tables]),
                      "run_id": rows.column("run_id"), "epoch": rows.column("epoch")})
    out: dict[str, dict] = {p: {} for p in paths}
    for f, rid, counts in _epoch_stats(table, ["file", "run_id"]):
        out[paths[f]][rid] = counts
    return out


def _claimed(spec) -> list[str]:
    """The run ids a parsed spec claims (unchecked); [] if it is not a spec."""
    try:
        return [pt["run_id"] for pt in spec["points"]]
    except (KeyError, TypeError):
        return []


def _json_lines(head: dict, key: str, items: list) -> str:
    """JSON of {**head, key: items} with one item a line: readable, and encoded by json's C encoder (indent= is
    pure Python, ~10x slower on a 100,000-point manifest)."""
    lines = ",\n".join(json.dumps(item, sort_keys=True) for item in items)
    rest = "".join(f", {json.dumps(k)}: {json.dumps(v, sort_keys=True)}" for k, v in sorted(head.items()))
    return f'{{{json.dumps(key)}: [\n{lines}\n]{rest}}}\n'


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
