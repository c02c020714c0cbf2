"""The store's trust: a shard's spec and rows are used only once they check out; what fails is quarantined.

Nothing read back is trusted unchecked: a spec must hash to its own name (shards are
content-addressed), a shard's runs file must hold exactly its spec's runs, each with epochs
0, 1, … (`trusted_all`). What fails a check is moved to store/quarantine/ with a warning naming
it, and its shard trains again. A checked runs file gets a record of its stat (`_record`), so it
is not read again until it changes. Where each file lives: ssmpipe/layout.py.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import filelock
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ssmpipe.atomic import stamp, write_text
from ssmpipe.errors import StoreError
from ssmpipe.inputs import load_json, read_file
from ssmpipe.keys import digest, run_id
from ssmpipe.layout import Layout
from ssmpipe.manifest import json_lines
from ssmpipe.runs import contiguous, epoch_stats, numbered, write_runs

__all__ = ["Store", "StoreError", "claimed_ids"]
log = logging.getLogger("ssmpipe.store")


class Store(Layout):
    """A results root's store: its layout (`Layout`), and the checks of what is read back from it."""

    def shard_lock(self, shard: str) -> filelock.FileLock:
        """The inter-process lock (fcntl) of one shard: whoever trains it holds it; other processes wait."""
        self.lock_path(shard).parent.mkdir(parents=True, exist_ok=True)
        return filelock.FileLock(self.lock_path(shard))

    def read_specs(self) -> dict[str, list[str]]:
        """Shard id -> the run ids its spec claims (unchecked: `trusted` checks one), for every spec file."""
        return {shard: claimed_ids(spec) for shard, spec in self.iter_specs()}

    def iter_specs(self):
        """(shard id, its parsed spec, or None if unreadable) for every spec file, in shard order, one at a time."""
        folder = self.specs_dir()
        for p in sorted(folder.glob("*.json")) if folder.is_dir() else []:
            try:
                yield p.stem, load_json(read_file(p), str(p))
            except (OSError, ValueError):
                yield p.stem, None  # unreadable: `trusted` says why

    def done_shards(self) -> set[str]:
        """Shards with a runs file (unchecked: `runs_problem` checks one)."""
        folder = self.runs_dir()
        return {p.stem for p in folder.glob("*.parquet")} if folder.is_dir() else set()

    def write_spec(self, shard: str, points: list[tuple[str, dict]]) -> None:
        if not self.spec_path(shard).exists():
            write_text(
                self.spec_path(shard),
                json_lines({"shard": shard}, "points", [{"run_id": r, "settings": s} for r, s in points]),
            )

    def read_spec(self, shard_or_path: str | Path) -> dict:
        path = Path(shard_or_path)
        if path.suffix != ".json":
            path = self.spec_path(str(shard_or_path))
        return load_json(read_file(path), str(path))

    def spec_problem(
        self, shard: str, known: dict[str, dict] | None = None, spec: dict | None = None
    ) -> tuple[str | None, dict[str, int]]:
        """(why shard's spec cannot be trusted, or None; its run ids, each with the epochs it trains, read once).

        The spec must parse, name its shard, and be content-addressed (each point's run id the hash of its
        settings; a sweep shard's id the hash of its run ids). known: run id ->
        settings already hashed to it (the planned points): equal settings need no hashing again. spec: the spec
        file's content, if already read (`iter_specs`)."""
        known = known or {}
        try:
            spec = spec if spec is not None else self.read_spec(shard)
            ids = [p["run_id"] for p in spec["points"]]
            if spec["shard"] != shard:
                return f"it names shard {spec['shard']!r}", []
            if not ids:
                return "it holds no points", []
            epochs = {p["run_id"]: int(p["settings"]["train"]["epochs"]) for p in spec["points"]}
            if not shard.startswith("tune-") and digest(sorted(ids)) != shard:  # a trial's shard is named by its trial
                return "its run ids do not hash to its name (edited by hand?)", []
            for p in spec["points"]:
                if known.get(p["run_id"]) != p["settings"] and run_id(p["settings"]) != p["run_id"]:
                    return f"the settings of run {p['run_id']} do not hash to its id (edited by hand?)", []
        except OSError as e:
            return f"unreadable ({e.strerror})", []
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            return f"not a shard spec ({type(e).__name__}: {e})", []
        return None, epochs

    def runs_problem(self, shard: str, run_ids: dict[str, int] | list[str]) -> str | None:
        """Why shard's runs file cannot be trusted, or None: it must be readable Parquet holding rows of exactly
        `run_ids` (its spec's: run id -> the epochs it trains), each run's epochs 0, 1, … without a gap, up to its
        last epoch, or up to a row that says why it stopped early (diverged, failed, stopped by a study). A list of
        run ids alone checks all but the last epoch."""
        if not isinstance(run_ids, dict):
            run_ids = dict.fromkeys(run_ids, 0)
        try:
            table = pq.read_table(self.runs_path(shard), columns=["run_id", "epoch", "status"])
        except OSError as e:
            return f"unreadable ({type(e).__name__}: {e})"
        except (ValueError, KeyError) as e:  # pyarrow's ArrowInvalid (truncated, garbage) is a ValueError
            return f"not a runs table ({type(e).__name__}: {e})"
        rows = table.to_pydict()
        if set(rows["run_id"]) != set(run_ids):
            return (
                f"it holds {len(set(rows['run_id']))} runs, its spec {len(set(run_ids))}"
                f" ({len(set(rows['run_id']) ^ set(run_ids))} differ)"
            )
        epochs: dict[str, list[int]] = {}
        for rid, epoch in zip(rows["run_id"], rows["epoch"]):
            epochs.setdefault(rid, []).append(epoch)
        for rid, got in epochs.items():
            if sorted(got) != list(range(len(got))):
                return f"run {rid} has epochs {sorted(got)[:6]}…, not 0, 1, …"
        last = {
            rid: status
            for rid, epoch, status in zip(rows["run_id"], rows["epoch"], rows["status"])
            if epoch == len(epochs[rid]) - 1
        }
        for rid, want in run_ids.items():
            if len(epochs[rid]) - 1 < want and last.get(rid) == "ok":
                return f"run {rid} ends at epoch {len(epochs[rid]) - 1} of {want}, still ok (rows missing: truncated?)"
        return None

    def quarantine(self, path: str | Path, why: str, then: str = "its shard trains again") -> Path | None:
        """Move a file the store cannot trust to store/quarantine/ (`set_aside`)."""
        return self.set_aside(path, f"cannot be trusted: {why}", then)

    def set_aside(self, path: str | Path, why: str, then: str) -> Path | None:
        """Move a file to store/quarantine/ (kept, never deleted), warning "<path> <why>; moved to <where> (<then>)".
        None if it is already gone (another process moved it first)."""
        return self._aside(Path(path), os.replace, f"{why}; moved to", f" ({then})")

    def keep(self, path: str | Path, why: str) -> Path | None:
        """A copy of a file in store/quarantine/ (a hard link: the file itself stays), warning "<path> <why>; kept as
        <where>". None if it is missing."""
        return self._aside(Path(path), os.link, f"{why}; kept as")

    def _aside(self, path: Path, put, said: str, then: str = "") -> Path | None:
        """put(path, its place in quarantine) (a move or a link), and the warning; None if path is missing."""
        dest = self._quarantined(path)
        try:
            put(path, dest)
        except FileNotFoundError:
            return None
        log.warning("ssmpipe: %s %s %s%s", path, said, dest, then)
        return dest

    def _quarantined(self, path: Path) -> Path:
        """Where `path` goes in store/quarantine/ (made if missing): <time>-<pid>-<its folder>-<its name>, a name no
        file has yet (.1, .2, … after a second file of that name this second): nothing set aside is overwritten."""
        folder = self.quarantine_dir()
        folder.mkdir(parents=True, exist_ok=True)
        first = folder / f"{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}-{path.parent.name}-{path.name}"
        dest, n = first, 0
        while os.path.lexists(dest):
            n += 1
            dest = first.with_name(f"{first.name}.{n}")
        return dest

    def quarantine_shard(self, shard: str, why: str) -> None:
        """An untrusted spec: the shard's spec, rows and checkpoint all go (each was made from or for that spec)."""
        for path in (self.spec_path(shard), self.runs_path(shard), self.ckpt_path(shard)):
            if path.exists():
                self.quarantine(path, why if path == self.spec_path(shard) else f"its spec {why}")

    def trusted(
        self, shard: str, repair: bool, known: dict[str, dict] | None = None, spec: dict | None = None
    ) -> tuple[list[str] | None, bool]:
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
        stamps = {s: stamp(self.runs_path(s)) for s in stored}
        fresh = {
            s for s, seen in stamps.items() if seen is not None and self._recorded(s) == [*seen, _ids_hash(stored[s])]
        }  # checked before, unchanged since: not read again
        checked = self.runs_problems({s: ids for s, ids in stored.items() if stamps[s] is not None and s not in fresh})
        for shard, problem in checked.items():
            if problem:
                self._distrust(self.runs_path(shard), problem, repair)
            else:
                out[shard] = out[shard][0], True
                if repair:  # the plan job writes; a parse (repair=False) never does
                    self.record(shard, stored[shard], stamps[shard])
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

    def runs_problems(self, expected: dict[str, dict[str, int]]) -> dict[str, str | None]:
        """`runs_problem` of many shards (shard -> its spec's run ids and their epochs), their runs files read
        together (`_epoch_counts`); a shard that fails that check or has a run that ended early (or every shard, if a
        file cannot be read) is checked alone, for the message."""
        paths = {str(self.runs_path(s)): s for s in sorted(expected)}
        try:
            epochs = _epoch_counts(list(paths))
        except (OSError, ValueError, KeyError, TypeError):  # a damaged file: found, and named, one file at a time
            epochs = {}
        out = {}
        for path, shard in paths.items():
            got = epochs.get(path)
            fine = (
                got is not None
                and got.keys() == expected[shard].keys()
                and all(numbered(*c) and c[2] >= expected[shard][rid] for rid, c in got.items())
            )
            out[shard] = None if fine else self.runs_problem(shard, expected[shard])
        return out

    def write_runs(self, shard: str, rows: list[dict]) -> None:
        """Write a shard's runs file (`runs.write_runs`); rows it knows to be whole get their record at once."""
        table = write_runs(rows, self.runs_path(shard))
        if contiguous(table):  # what it wrote, it knows: no need to read it back
            try:
                self.record(shard, table.column("run_id").unique().to_pylist())
            except OSError as e:  # a record only saves a later read: the rows are written, so this is no failure
                log.warning(
                    "ssmpipe: %s not written (%s): the runs file is checked when next read", e.filename, e.strerror
                )

    # --- the record of verified runs files (store/verified/<shard>.json)
    #
    # A runs file that passed its check (or that write_runs wrote, and so knows) gets a record: its
    # (size, mtime_ns, ctime_ns, inode) and a hash of the run ids it holds. A later check skips a file whose
    # stat and spec's run ids still match: a rewritten file (atomic: a new inode; in place: a new ctime, which
    # no user can set back) is read and checked again. The record is untrusted JSON: one that does not parse
    # or match is ignored. Whoever can edit it can also write the runs file itself, which the check cannot
    # authenticate (it checks shape, not provenance); a forged record lets a file skip only the shape check,
    # and `table.aggregate` still reads every file whole (a damaged one is a StoreError naming it).

    def record(self, shard: str, run_ids, seen: list[int] | None = None) -> None:
        """Note that shard's runs file with stamp `seen` (default: as it is now) holds exactly run_ids, each with
        epochs 0, 1, … (checked)."""
        seen = seen or stamp(self.runs_path(shard))
        if seen is not None:
            write_text(self.verified_path(shard), json.dumps([*seen, _ids_hash(run_ids)]))

    def _recorded(self, shard: str) -> list | None:
        """A runs file's record ([size, mtime_ns, ctime_ns, inode, ids hash]), or None: missing or unreadable."""
        try:
            return load_json(read_file(self.verified_path(shard)))
        except (OSError, ValueError):
            return None


def _ids_hash(run_ids) -> str:
    """sha256 of the distinct run ids, sorted, one a line: the record names which runs a file was checked against."""
    return hashlib.sha256("\n".join(sorted(set(run_ids))).encode()).hexdigest()


def _epoch_counts(paths: list[str]) -> dict[str, dict[str, tuple[int, int, int, int]]]:
    """path -> run id -> (rows, lowest epoch, highest epoch, distinct epochs) of Parquet runs files; files read in
    threads (one at a time each: a dataset scan's read-ahead holds ~0.7 GB at 3,200 files), counted in one group-by."""
    if not paths:
        return {}
    with ThreadPoolExecutor(max(1, min(len(paths), os.cpu_count() or 1))) as pool:
        tables = list(
            pool.map(
                lambda p: pq.ParquetFile(p, pre_buffer=False).read(columns=["run_id", "epoch"], use_threads=False),
                paths,
            )
        )
    rows = pa.concat_tables(tables)  # ArrowInvalid (a ValueError) if some file's columns differ in type
    table = pa.table(
        {
            "file": np.repeat(np.arange(len(paths), dtype=np.int32), [t.num_rows for t in tables]),
            "run_id": rows.column("run_id"),
            "epoch": rows.column("epoch"),
        }
    )
    out: dict[str, dict] = {p: {} for p in paths}
    for f, rid, counts in epoch_stats(table, ["file", "run_id"]):
        out[paths[f]][rid] = counts
    return out


def claimed_ids(spec) -> list[str]:
    """The run ids a parsed spec claims (unchecked); [] if it is not a spec."""
    try:
        return [pt["run_id"] for pt in spec["points"]]
    except (KeyError, TypeError):
        return []
