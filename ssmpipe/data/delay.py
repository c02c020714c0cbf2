"""Delay / copy task: recall the token seen `lag` steps ago (SPEC 002, 003).

x_t ~ U{0..V-1} i.i.d.; target y_t = x_{t-lag} for t ≥ lag, ignored before.
"""

import numpy as np


def generate(task: dict, seq_len: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(task["seed"])
    out = {}
    for split, n in (("train", task["n_train"]), ("test", task["n_test"])):
        x = rng.integers(0, task["vocab"], size=(n, seq_len))  # (n L)
        y = np.full_like(x, -100)
        y[:, task["lag"] :] = x[:, : seq_len - task["lag"]]
        out[f"x_{split}"], out[f"y_{split}"] = x, y
    return out
