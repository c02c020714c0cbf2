"""The papers' measures as pure functions (SPEC 000–003), one module per idea; no training, no I/O.

- `tau`            (000, Liu & Li 2024): τ(θ) per channel from a kernel and input statistics, the init scaling
                   C ← C/√τ, and τ of every layer of a deep model (layer inputs by forward hooks).
- `autocorr`       (002, Liu & Li 2025): input autocorrelation E[uuᵀ], λ_max, the timescale rule
                   Δ = c/√(L·λ_max), the SSM Gram matrix and its condition number.
- `memory`         (003, Guan et al. 2025): memory function MF(τ) and capacity MC, (Ā, B̄) of S4D / S4 layers.
- `selective_bound` (001, Honarpisheh et al. 2025): S₂, spectral abscissa s_A, ρ_A.

Shapes in comments: H channels, L (or T) steps, N states, B batch.
"""

from ssmpipe.theory.autocorr import (
    autocorrelation,
    dt_autocorr,
    gram_condition,
    gram_matrix,
    impulse_states,
    lambda_max,
)
from ssmpipe.theory.memory import memory_capacity, memory_function, s4_system, s4d_system
from ssmpipe.theory.selective_bound import rho_A, s2, selective_rho_A, spectral_abscissa
from ssmpipe.theory.tau import input_stats, layer_inputs, model_tau, tau, tau_scaling

__all__ = [
    "input_stats",
    "tau",
    "tau_scaling",
    "layer_inputs",
    "model_tau",
    "autocorrelation",
    "lambda_max",
    "dt_autocorr",
    "impulse_states",
    "gram_matrix",
    "gram_condition",
    "memory_function",
    "memory_capacity",
    "s4d_system",
    "s4_system",
    "s2",
    "spectral_abscissa",
    "rho_A",
    "selective_rho_A",
]
