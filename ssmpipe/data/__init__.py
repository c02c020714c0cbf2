"""Data sets: one module per task, and the cache every train job reads.

A data set is named by its spec (task settings + seq_len) and stored once as a
.npz file with arrays x_train, y_train, x_test, y_test: inputs (n L) int tokens,
(n L) or (n L C) float values; targets (n L) per position or (n,) per sequence,
int classes (-100: ignored, PyTorch's ignore_index) or float values (regression).

A task read from a path (npz, imdb, listops with a path) is keyed by the content found
there, not by the path: planning puts the sha256 of its bytes in the settings as
`task.data_hash` (`with_data_hash`), so a changed file at the same path is another data set
(another cache file, other run ids: the runs on it train again), and `build` refuses a file
that changed after planning.

A cache file is untrusted (anything under results/ may have been put there): `load` opens only a
regular file (a FIFO is refused at once, not waited on) and refuses, before reading any array, one
that would inflate past its own size (ssmpipe writes them uncompressed) or whose .npy headers claim
more than their members hold. Its errors are ValueErrors: train's ensure_data quarantines the file
and builds the data set again.
"""

from __future__ import annotations

import hashlib
import json
import os
import zipfile
from functools import lru_cache
from pathlib import Path

import numpy as np

from ssmpipe.atomic import atomic_path
from ssmpipe.data import delay, digits, imdb, listops, majority, npz, variance
from ssmpipe.inputs import open_file

TASKS = {
    "delay": delay.generate,
    "npz": npz.load,
    "majority": majority.generate,
    "variance": variance.generate,
    "digits": digits.generate,
    "listops": listops.load,
    "imdb": imdb.load,
}
# Token tasks whose vocabulary the task itself fixes (their task.vocab is unused).
FIXED_VOCAB = {"majority": majority.VOCAB, "listops": listops.VOCAB}
# Classification tasks whose number of classes is known, whether or not every class occurs in the data.
CLASSES = {"majority": 2, "digits": 10, "listops": 10, "imdb": 2}
ARRAYS = ("x_train", "y_train", "x_test", "y_test")
IGNORE = -100


def spec_of(settings: dict, seq_len: int | None = None) -> dict:
    """The part of a point's settings that determines its data set; seq_len: made at that length instead (a test
    length T′)."""
    return {"task": dict(sorted(settings["task"].items())), "seq_len": seq_len or settings["seq_len"]}


def key_of(spec: dict) -> str:
    """Cache file stem: readable task and length, then a hash of the whole spec."""
    digest = hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:12]
    return f"{spec['task']['name']}-L{spec['seq_len']}-{digest}"


class DataChanged(RuntimeError):
    """A task's file changed after planning: the job fails (nothing stored as failed); a rerun plans it anew."""


def with_data_hash(settings: dict) -> dict:
    """settings, with task.data_hash (the content hash of task.path) when the task reads a path; else as it is."""
    path = settings["task"].get("path")
    if not path:
        return settings
    return {**settings, "task": {**settings["task"], "data_hash": content_hash(path)}}


def content_hash(path: str | Path) -> str:
    """sha256 (16 hex digits) of a file's bytes, or of a folder's files (sorted relative names and bytes)."""
    path = Path(path)
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file())
        return _hash_files(str(path), tuple((str(p.relative_to(path)), *_stamp(p)) for p in files))
    return _hash_files(str(path.parent), ((path.name, *_stamp(path)),))


def _stamp(p: Path) -> tuple[int, int]:
    st = p.stat()
    return st.st_size, st.st_mtime_ns


@lru_cache(maxsize=64)
def _hash_files(root: str, files: tuple) -> str:
    """Memoised by (name, size, mtime) per file, within one process only: a planning pass hashes each path once."""
    h = hashlib.sha256()
    for name, *_ in files:
        h.update(name.encode() + b"\0")
        with open_file(os.path.join(root, name)) as f:  # a FIFO at task.path: NotAFileError, not a wait
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        h.update(b"\0")
    return h.hexdigest()[:16]


def build(spec: dict) -> dict[str, np.ndarray]:
    want = spec["task"].get("data_hash")
    if want and content_hash(spec["task"]["path"]) != want:
        raise DataChanged(
            f"task.path = {spec['task']['path']!r} changed since the sweep was planned (content hash "
            f"{content_hash(spec['task']['path'])}, planned {want}): rerun snakemake to plan it anew"
        )
    arrays = TASKS[spec["task"]["name"]](spec["task"], spec["seq_len"])
    check_arrays(arrays, source=spec["task"]["name"])
    return arrays


def check_arrays(arrays, source: str) -> None:
    missing = [k for k in ARRAYS if k not in arrays]
    if missing:
        raise ValueError(f"{source}: missing arrays {missing}; a data set needs {list(ARRAYS)}")
    for split in ("train", "test"):
        x, y = arrays[f"x_{split}"], arrays[f"y_{split}"]
        if (
            x.ndim not in (2, 3)
            or y.ndim not in (1, 2)
            or x.shape[0] != y.shape[0]
            or (y.ndim == 2 and y.shape != x.shape[:2])
        ):
            raise ValueError(
                f"{source}: x_{split} {x.shape} and y_{split} {y.shape}: need x (n L) or (n L C) and y (n L) or (n,)"
            )


def save(arrays: dict[str, np.ndarray], path: str | Path) -> None:
    """Write a data set atomically (temp file in the same folder, then rename); uncompressed, as `load` requires."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez(f, **{k: _canonical(np.asarray(arrays[k])) for k in ARRAYS})


def load(path: str | Path) -> dict[str, np.ndarray]:
    """A cached data set. ValueError (a NotAFileError for a FIFO, device or folder) for a file `save` did not write:
    checked before any array is read, then by `check_arrays`; zipfile.BadZipFile for one that is no zip."""
    with open_file(path) as fh, np.lib.npyio.NpzFile(fh, allow_pickle=False) as f:
        problem = _inflate_problem(f, os.fstat(fh.fileno()).st_size)
        if problem:
            raise ValueError(f"{str(path)!r}: {problem}")
        arrays = {k: f[k] for k in f.files}
    check_arrays(arrays, source=str(path))
    return arrays


def _inflate_problem(f: np.lib.npyio.NpzFile, size: int) -> str | None:
    """Why the arrays of a cache file of `size` bytes are not `save`'s (stored members, .npy headers that fill them,
    no more data than the file holds), or None."""
    packed = [i for i in f.zip.infolist() if i.compress_type != zipfile.ZIP_STORED]
    if packed:
        return f"has compressed members ({', '.join(i.filename for i in packed[:4])}); save writes them stored"
    headers = npz.npy_headers(f.zip, f.files)
    if isinstance(headers, str):
        return headers
    total = sum(headers[name][2] for name in f.files)  # a name listed twice is read twice
    if total > size:  # entries that share their data (overlapping, as in zip bombs): more than the file holds
        return (
            f"has arrays of {npz.size_text(total)} in a file of {npz.size_text(size)}: its members overlap, "
            f"which save never writes"
        )
    return None


def describe(arrays: dict[str, np.ndarray], task: dict) -> dict:
    """What the model must read and predict: input kind and width, target kind, outputs, loss."""
    x, y = arrays["x_train"], arrays["y_train"]
    tokens = np.issubdtype(x.dtype, np.integer)
    classes = np.issubdtype(y.dtype, np.integer)
    n_out = CLASSES.get(task["name"], int(max(y.max(), arrays["y_test"].max())) + 1) if classes else 1
    return {
        "input": "tokens" if tokens else "real",
        "d_input": FIXED_VOCAB.get(task["name"], task["vocab"]) if tokens else (x.shape[2] if x.ndim == 3 else 1),
        "target": "position" if y.ndim == 2 else "sequence",
        "n_out": n_out,
        "loss": "ce" if classes else "mse",
    }


def _canonical(a: np.ndarray) -> np.ndarray:
    return a.astype(np.int64) if np.issubdtype(a.dtype, np.integer) else a.astype(np.float32)
