"""Data sets: one module per task, and the cache every train job reads.

A data set is named by its spec (task settings + seq_len) and stored once as a
.npz file with arrays x_train, y_train, x_test, y_test: inputs (n L) int tokens,
(n L) or (n L C) float values; targets (n L) per position or (n,) per sequence,
int classes (-100: ignored, PyTorch's ignore_index) or float values (regression).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from ssmpipe.atomic import atomic_path
from ssmpipe.data import delay, digits, imdb, listops, majority, npz, variance

TASKS = {"delay": delay.generate, "npz": npz.load, "majority": majority.generate, "variance": variance.generate,
         "digits": digits.generate, "listops": listops.load, "imdb": imdb.load}
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
        if x.ndim not in (2, 3) or y.ndim not in (1, 2) or x.shape[0] != y.shape[0] or \
                (y.ndim == 2 and y.shape != x.shape[:2]):
            raise ValueError(f"{source}: x_{split} {x.shape} and y_{split} {y.shape}: need x (n L) or (n L C) "
                             f"and y (n L) or (n,)")


def save(arrays: dict[str, np.ndarray], path: str | Path) -> None:
    """Write a data set atomically (temp file in the same folder, then rename)."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez(f, **{k: _canonical(np.asarray(arrays[k])) for k in ARRAYS})


def load(path: str | Path) -> dict[str, np.ndarray]:
    with np.load(path) as f:
        arrays = {k: f[k] for k in f.files}
    check_arrays(arrays, source=str(path))
    return arrays


def describe(arrays: dict[str, np.ndarray], task: dict) -> dict:
    """What the model must read and predict: input kind and width, target kind, outputs, loss."""
    x, y = arrays["x_train"], arrays["y_train"]
    tokens = np.issubdtype(x.dtype, np.integer)
    classes = np.issubdtype(y.dtype, np.integer)
    n_out = CLASSES.get(task["name"], int(max(y.max(), arrays["y_test"].max())) + 1) if classes else 1
    return {"input": "tokens" if tokens else "real",
            "d_input": FIXED_VOCAB.get(task["name"], task["vocab"]) if tokens else (x.shape[2] if x.ndim == 3 else 1),
            "target": "position" if y.ndim == 2 else "sequence",
            "n_out": n_out, "loss": "ce" if classes else "mse"}


def _canonical(a: np.ndarray) -> np.ndarray:
    return a.astype(np.int64) if np.issubdtype(a.dtype, np.integer) else a.astype(np.float32)
