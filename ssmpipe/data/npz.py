"""A token data set from a local .npz file (x_train, y_train, x_test, y_test as (n L) ints).

Sequences longer than seq_len are cut to their first seq_len steps; shorter ones
are an error. Tokens must lie in [0, vocab); targets in [0, vocab) or -100 (ignored).
"""

from pathlib import Path

import numpy as np


def load(task: dict, seq_len: int) -> dict[str, np.ndarray]:
    path = Path(task["path"])
    if not path.is_file():
        raise FileNotFoundError(f"task.path = {str(path)!r}: no such file")
    with np.load(path) as f:
        arrays = {k: f[k] for k in f.files}
    out = {}
    for name, a in arrays.items():
        if name[:2] not in ("x_", "y_"):
            continue
        if a.ndim != 2 or a.shape[1] < seq_len:
            raise ValueError(f"{path}: {name} has shape {a.shape}; need (n L) with L ≥ seq_len = {seq_len}")
        out[name] = a[:, :seq_len].astype(np.int64)
    for name, a in out.items():
        lo = -100 if name.startswith("y_") else 0
        bad = (a >= task["vocab"]) | ((a < 0) & (a != lo))
        if bad.any():
            raise ValueError(f"{path}: {name} holds {a[bad][0]}, outside [0, vocab = {task['vocab']})")
    return out
