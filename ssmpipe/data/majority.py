"""Majority (SPEC 001): is more than half of the T bits 1?

Each sequence has k ~ U{0..T} ones at random positions (T = seq_len), label
y = [k > T/2]; inputs are tokens 0/1 (vocabulary 2, task.vocab is unused), one
label per sequence, no padding. Noise, on the train split only (the test split is clean):
- `label_noise` p: each label 1 becomes 0 with probability p (SPEC 001's default 0.1);
- `input_noise` q: each input bit 1 becomes 0 with probability q, labels kept from the clean
  count (what the paper's reference code does, with q = 0.25 and no label noise).
Each split and the noise draw from their own stream of the task seed, so the test split and
the clean train inputs are the same whatever the noise settings.
"""

import numpy as np

VOCAB = 2


def generate(task: dict, seq_len: int) -> dict[str, np.ndarray]:
    out = {}
    for i, split in enumerate(("train", "test")):
        x, y = sample(np.random.default_rng([task["seed"], i]), task[f"n_{split}"], seq_len)
        out[f"x_{split}"], out[f"y_{split}"] = x, y
    noise = np.random.default_rng([task["seed"], 2])
    x, y = out["x_train"], out["y_train"]
    x[(x == 1) & (noise.random(x.shape) < task["input_noise"])] = 0
    y[(y == 1) & (noise.random(y.shape) < task["label_noise"])] = 0
    return out


def sample(rng: np.random.Generator, n: int, T: int) -> tuple[np.ndarray, np.ndarray]:
    """n clean sequences: x (n T) of 0/1 with k ~ U{0..T} ones each, y (n,) = [k > T/2]."""
    k = rng.integers(0, T + 1, size=n)  # (n)
    x = rng.permuted(np.arange(T)[None, :] < k[:, None], axis=1)  # (n T), k ones per row
    return x.astype(np.int64), (k > T / 2).astype(np.int64)
