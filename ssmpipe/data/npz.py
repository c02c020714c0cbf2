"""A token data set from a local .npz file (x_train, y_train, x_test, y_test as (n L) ints).

Sequences longer than seq_len are cut to their first seq_len steps; shorter ones
are an error. Tokens must lie in [0, vocab); targets in [0, vocab) or -100 (ignored).
`path_problem` says what is wrong with a file at config-check time (before any job);
`load` refuses the same. Files are read with allow_pickle=False: an array of Python
objects is an error, never unpickled.
"""

from __future__ import annotations

import functools
import zipfile
import zlib
from pathlib import Path

import numpy as np

ARRAYS = ("x_train", "y_train", "x_test", "y_test")
IGNORE = -100  # a target that is not scored (PyTorch's ignore_index)


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
    if not path.is_file():
        return "a folder, not a .npz file" if path.is_dir() else "no such file"
    st = path.stat()
    summary = _cached_summary(str(path.resolve()), st.st_mtime_ns, st.st_size)
    return summary if isinstance(summary, str) else _problem(summary, vocab, seq_len)


@functools.lru_cache(maxsize=16)
def _cached_summary(path: str, mtime_ns: int, size: int) -> dict | str:
    """A file's summary, read once per version of it (the check runs at every axis value)."""
    arrays = _read(Path(path))
    return arrays if isinstance(arrays, str) else _summary(arrays)


def _read(path: Path) -> dict[str, np.ndarray] | str:
    """The four arrays, or why they cannot be read."""
    try:
        f = np.load(path, allow_pickle=False)
        if not isinstance(f, np.lib.npyio.NpzFile):
            return "a single .npy array, not an .npz archive of x_train, y_train, x_test, y_test"
        with f:
            missing = [name for name in ARRAYS if name not in f.files]
            if missing:
                return (f"has no array {' and no '.join(missing)} (has {', '.join(f.files) or 'none'}); "
                        f"an npz task needs {', '.join(ARRAYS)}")
            arrays = {}
            for name in ARRAYS:
                try:
                    arrays[name] = f[name]
                except ValueError as e:  # an object array: numpy would have to unpickle it
                    if "allow_pickle" not in str(e):
                        raise
                    return f"its {name} holds Python objects (a pickle), which ssmpipe never loads; save int arrays"
    except ValueError as e:  # neither a zip of .npy arrays nor one .npy array (numpy's guess: a pickle)
        why = "neither a zip of .npy arrays nor one .npy array" if "allow_pickle" in str(e) else str(e)
        return f"not a readable .npz file ({' '.join(why.split())})"
    except (OSError, EOFError, zipfile.BadZipFile, zlib.error) as e:
        return f"not a readable .npz file ({type(e).__name__}: {' '.join(str(e).split())})"
    for name, a in arrays.items():
        if not isinstance(a, np.ndarray):
            return f"its {name} is not a .npy array"
    return arrays


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
