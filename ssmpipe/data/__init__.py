"""Data sets: one module per task, and the cache every train job reads.

A data set is named by its spec (task settings + seq_len) and stored once as a
.npz file with int64 arrays x_train, y_train, x_test, y_test of shape (n L);
targets of -100 are ignored by the loss (PyTorch's ignore_index).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from ssmpipe.atomic import atomic_path
from ssmpipe.data import delay, npz

TASKS = {"delay": delay.generate, "npz": npz.load}
ARRAYS = ("x_train", "y_train", "x_test", "y_test")
IGNORE = -100


def spec_of(settings: dict) -> dict:
    """The part of a point's settings that determines its data set."""
    return {"task": dict(sorted(settings["task"].items())), "seq_len": settings["seq_len"]}


def key_of(spec: dict) -> str:
    """Cache file stem: readable task and length, then a hash of the whole spec."""
    digest = hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:12]
    return f"{spec['task']['name']}-L{spec['seq_len']}-{digest}"


def build(spec: dict) -> dict[str, np.ndarray]:
    arrays = TASKS[spec["task"]["name"]](spec["task"], spec["seq_len"])
    check_arrays(arrays, source=spec["task"]["name"])
    return arrays


def check_arrays(arrays, source: str) -> None:
    missing = [k for k in ARRAYS if k not in arrays]
    if missing:
        raise ValueError(f"{source}: missing arrays {missing}; a data set needs {list(ARRAYS)}")
    for split in ("train", "test"):
        x, y = arrays[f"x_{split}"], arrays[f"y_{split}"]
        if x.ndim != 2 or x.shape != y.shape:
            raise ValueError(f"{source}: x_{split} {x.shape} and y_{split} {y.shape} must both be (n L)")


def save(arrays: dict[str, np.ndarray], path: str | Path) -> None:
    """Write a data set atomically (temp file in the same folder, then rename)."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez(f, **{k: np.asarray(arrays[k], dtype=np.int64) for k in ARRAYS})


def load(path: str | Path) -> dict[str, np.ndarray]:
    with np.load(path) as f:
        arrays = {k: f[k] for k in f.files}
    check_arrays(arrays, source=str(path))
    return arrays
