"""Variance-growing process (SPEC 000, Fig. 2): real inputs whose variance grows with time.

Input x_t = ε_t · (1 + b·t)^{1/2}, t = 0..L-1, ε_t ~ N(0, 1) i.i.d., b = `moment` (the
paper's moment coefficient), so E x_t = 0 and Var x_t = 1 + b·t; x is float32 (n L).

Target: one real number per sequence (y (n,), MSE), the output of a fixed teacher, a linear
time-invariant filter read at the last step,
    y = (1/s) Σ_{l=0}^{L-1} k_l · x_{L-1-l},   k_l = Σ_{j=1}^{4} c_j · exp(−γ_j · l),
with c_j ~ N(0, 1) and decay rates γ_j ~ LogUniform[1e-3, 1e-1] per step drawn from the task
seed alone, and s = (Σ_l k_l² (1 + b·(L-1-l)))^{1/2}, so that Var y = 1 exactly for every L and b.
Why this target: (1) it is what an LTI SSM computes (a sum of decaying exponentials is the
kernel of a 4-state diagonal SSM; the decay times, 10 to 1000 steps, lie inside the S4D
default Δ range), so the task is learnable and the training MSE at L = 1000 measures
optimisation, not an approximation floor; (2) the teacher kernel does not depend on L, so a
length sweep changes only the length; (3) the unit-variance target makes MSEs comparable
across L and b (predicting 0 scores 1), so what grows with L and b is the model's output and
gradient at init, which is the quantity the experiment is about.
"""

import numpy as np

TEACHER_MODES = 4
TEACHER_RATES = (1e-3, 1e-1)


def generate(task: dict, seq_len: int) -> dict[str, np.ndarray]:
    b, L = task["moment"], seq_len
    kernel = teacher_kernel(task["seed"], L)  # (L), k_0 first
    std = np.sqrt(1.0 + b * np.arange(L))  # (L), std of x_t
    scale = np.sqrt(np.sum(kernel[::-1] ** 2 * std**2))  # std of the raw target
    out = {}
    for i, split in enumerate(("train", "test")):
        rng = np.random.default_rng([task["seed"], i])
        x = rng.standard_normal((task[f"n_{split}"], L)) * std  # (n L), float64
        out[f"x_{split}"] = x.astype(np.float32)
        out[f"y_{split}"] = (x @ kernel[::-1] / scale).astype(np.float32)  # (n)
    return out


def teacher_kernel(seed: int, L: int) -> np.ndarray:
    """k_l for l = 0..L-1; the modes come from the seed only, so k is the same function at every L."""
    rng = np.random.default_rng([seed, 2])
    c = rng.standard_normal(TEACHER_MODES)
    lo, hi = np.log(TEACHER_RATES)
    gamma = np.exp(rng.uniform(lo, hi, TEACHER_MODES))
    return np.exp(-np.outer(np.arange(L), gamma)) @ c
