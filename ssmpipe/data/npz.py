"""A token data set from a local .npz file (x_train, y_train, x_test, y_test as (n L) ints).

Sequences longer than seq_len are cut to their first seq_len steps; shorter ones
are an error. Tokens must lie in [0, vocab); targets in [0, vocab) or -100 (ignored).
`path_problem` says what is wrong with a file at config-check time (before any job);
`load` refuses the same. Files are read with allow_pickle=False: an array of Python
objects is an error, never unpickled. Each array's .npy header is read before its data
(`npy_headers`): an archive that would inflate past MAX_BYTES, or whose header claims more
than its member holds, is refused without being read.
"""

from __future__ import annotations

import functools
import math
import stat
import zipfile
import zlib
from pathlib import Path

import numpy as np
from numpy.lib import format as npy

from ssmpipe.inputs import NotAFileError, file_kind, open_file

ARRAYS = ("x_train", "y_train", "x_test", "y_test")
IGNORE = -100  # a target that is not scored (PyTorch's ignore_index)
# The most an npz task's four arrays may hold once read, counted as int64 (what `load` makes of them, and what every
# train job then holds in memory, with the cache's copy and torch's): 2 GiB = 268M tokens. The largest data sets of
# the papers (LRA's text and listops at their lengths, 25k x 4096 twice and 96k x 2000) hold 1.6 GB as int64; the
# limit is a fixed number, not a share of this machine's memory, so a file passes or fails the same at planning and
# on every node. An 8 GiB node then peaks near 3 x 2 GiB while a file is checked and cut (_summary, astype).
MAX_BYTES = 2 << 30


def load(task: dict, seq_len: int) -> dict[str, np.ndarray]:
    path = Path(task["path"])
    if not path.is_file():
        raise FileNotFoundError(f"task.path = {str(path)!r}: no such file")
    arrays = _read(path)
    problem = arrays if isinstance(arrays, str) else _problem(_summary(arrays), task["vocab"], seq_len)
    if problem:
        raise ValueError(f"task.path = {str(path)!r}: {problem}")
    return {name: arrays[name][:, :seq_len].astype(np.int64) for name in ARRAYS}


def path_problem(path: str | Path, vocab: int, seq_len: int) -> str | None:
    """Why the file at `path` is no npz data set for this vocab and seq_len, or None when it is."""
    path = Path(path)
    try:
        st = path.stat()
    except FileNotFoundError:
        return "no such file"
    if not stat.S_ISREG(st.st_mode):
        return f"{file_kind(st.st_mode)}, not a .npz file"
    summary = _cached_summary(str(path.resolve()), st.st_mtime_ns, st.st_size)
    return summary if isinstance(summary, str) else _problem(summary, vocab, seq_len)


@functools.lru_cache(maxsize=16)
def _cached_summary(path: str, mtime_ns: int, size: int) -> dict | str:
    """A file's summary, read once per version of it (the check runs at every axis value)."""
    arrays = _read(Path(path))
    return arrays if isinstance(arrays, str) else _summary(arrays)


def _read(path: Path) -> dict[str, np.ndarray] | str:
    """The four arrays, or why they cannot be read (their headers and sizes checked before their data is read)."""
    try:
        with open_file(path) as fh:  # a FIFO or device: refused at once, never waited on
            if fh.read(len(npy.MAGIC_PREFIX)) == npy.MAGIC_PREFIX:  # np.load would read the whole array
                return "a single .npy array, not an .npz archive of x_train, y_train, x_test, y_test"
            fh.seek(0)
            with np.load(fh, allow_pickle=False) as f:  # a zip: only its directory is read here
                return _read_arrays(f)
    except NotAFileError as e:
        return f"{e.kind}, not a .npz file"
    except ValueError as e:  # neither a zip of .npy arrays nor one .npy array (numpy's guess: a pickle)
        why = "neither a zip of .npy arrays nor one .npy array" if "allow_pickle" in str(e) else str(e)
        return f"not a readable .npz file ({' '.join(why.split())})"
    except (OSError, EOFError, zipfile.BadZipFile, zlib.error) as e:
        return f"not a readable .npz file ({type(e).__name__}: {' '.join(str(e).split())})"


def _read_arrays(f: np.lib.npyio.NpzFile) -> dict[str, np.ndarray] | str:
    missing = [name for name in ARRAYS if name not in f.files]
    if missing:
        return (
            f"has no array {' and no '.join(missing)} (has {', '.join(f.files) or 'none'}); "
            f"an npz task needs {', '.join(ARRAYS)}"
        )
    headers = npy_headers(f.zip, ARRAYS)
    if isinstance(headers, str):
        return headers
    as_int64 = {name: math.prod(shape) * max(dtype.itemsize, 8) for name, (shape, dtype, _) in headers.items()}
    if sum(as_int64.values()) > MAX_BYTES:
        name = max(as_int64, key=as_int64.get)
        shape, dtype, nbytes = headers[name]
        return (
            f"would hold {size_text(sum(as_int64.values()))} once read as int64, more than the "
            f"{size_text(MAX_BYTES)} an npz task may (npz.MAX_BYTES); its largest array, {name}, inflates to "
            f"{size_text(nbytes)} ({dtype} of shape {shape})"
        )
    return {name: f[name] for name in ARRAYS}  # each header checked: every one an int or float .npy array


def npy_headers(zf: zipfile.ZipFile, names) -> dict[str, tuple[tuple[int, ...], np.dtype, int]] | str:
    """name -> (shape, dtype, bytes of data) from the .npy header of each of a zip's arrays `names` (as np.load names
    them), reading none of their data; or why one cannot be read. numpy allocates what a header says and zipfile
    inflates a member up to its declared size, so a header whose shape and dtype do not fill its member's declared size
    exactly (what np.save writes) is refused, as is a pickle (an object array) and what is not a .npy array."""
    out = {}
    for name in names:
        member = name if name in zf.namelist() else f"{name}.npy"  # np.load's choice (NpzFile)
        info = zf.getinfo(member)
        if info.flag_bits & 0x1 or info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
            return (
                f"its {name} is encrypted or compressed with zip method {info.compress_type}; numpy writes "
                f"stored or deflated members"
            )
        with zf.open(info) as fp:
            try:
                version = npy.read_magic(fp)
            except ValueError:
                return f"its {name} is not a .npy array"
            if version not in ((1, 0), (2, 0)):  # 3.0: for structured dtypes' non-Latin-1 field names only
                return f"its {name} is a .npy file of version {version[0]}.{version[1]}, which ssmpipe does not read"
            try:
                shape, _, dtype = (npy.read_array_header_1_0 if version == (1, 0) else npy.read_array_header_2_0)(fp)
            except ValueError as e:
                return f"its {name} has a damaged .npy header ({' '.join(str(e).split())})"
            start = fp.tell()
        if dtype.hasobject:
            return f"its {name} holds Python objects (a pickle), which ssmpipe never loads; save int arrays"
        nbytes = math.prod(shape) * dtype.itemsize
        if start + nbytes != info.file_size:
            return (
                f"its {name}'s header says {dtype} of shape {shape}, {size_text(nbytes)}, but its member "
                f"{member} holds {size_text(info.file_size - start)} of data: a damaged or crafted file"
            )
        out[name] = (shape, dtype, nbytes)
    return out


def size_text(n: int) -> str:
    """A byte count to read: 1,536 bytes (exact below 1 MiB), 4.6 MiB, 8.0 TiB."""
    if abs(n) < 1 << 20:
        return f"{n:,} bytes"
    for unit in ("KiB", "MiB", "GiB", "TiB", "PiB"):
        n /= 1024
        if abs(n) < 1024 or unit == "PiB":
            return f"{n:,.1f} {unit}"


def _summary(arrays: dict[str, np.ndarray]) -> dict:
    """name -> (shape, dtype, per-step min, per-step max); a target's IGNORE values left out of both."""
    out = {}
    for name, a in arrays.items():
        lo = hi = None
        if a.ndim == 2 and a.shape[0] and np.issubdtype(a.dtype, np.integer):
            ignored = (a == IGNORE) if name.startswith("y_") else np.zeros(a.shape, bool)
            info = np.iinfo(a.dtype)
            lo, hi = np.where(ignored, info.max, a).min(0), np.where(ignored, info.min, a).max(0)
        out[name] = (a.shape, a.dtype, lo, hi)
    return out


def _problem(summary: dict, vocab: int, seq_len: int) -> str | None:
    """The first thing wrong with the arrays for this vocab and seq_len, or None."""
    for name, (shape, dtype, _lo, _hi) in summary.items():
        if len(shape) != 2:
            return f"{name} has shape {shape}; it needs (n L): n sequences of L steps"
        if not np.issubdtype(dtype, np.integer):
            return f"{name} holds {dtype} values; tokens and targets must be integers"
        if shape[0] == 0:
            return f"{name} holds no sequences"
        if shape[1] < seq_len:
            return f"{name} has sequences of {shape[1]} steps, shorter than seq_len = {seq_len}"
    for split in ("train", "test"):
        (nx, _), (ny, _) = summary[f"x_{split}"][0], summary[f"y_{split}"][0]
        if nx != ny:
            return f"x_{split} has {nx} sequences but y_{split} has {ny}"
    for name, (_shape, _dtype, lo, hi) in summary.items():
        lo, hi = lo[:seq_len].min(), hi[:seq_len].max()  # the steps a run reads
        bad = hi if hi >= vocab else lo if lo < 0 else None
        if bad is not None:
            also = f" or {IGNORE} (ignored)" if name.startswith("y_") else ""
            return f"{name} holds {bad}, outside [0, vocab = {vocab}){also}"
    return None
