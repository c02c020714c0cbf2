"""SPEC 000 (Liu & Li, ICML 2024, arXiv 2405.02670): the measure τ(θ) and the optimization designs built on it.

With y_L = Σ_l k̄_l u_{L−1−l}: E[y_L²] = Var(y_L) + (E y_L)² ≤ (Σ_l |k̄_l| σ_{L−1−l})² + (Σ_l k̄_l μ_{L−1−l})² ≤ τ
(Cauchy–Schwarz on the covariance), so C ← C/√τ (k̄ is linear in C, τ quadratic) gives E[y_L²] ≤ 1 for any (μ, K).
The bound covers the convolution k̄ ∗ u only, not a skip term D·u.
"""

import torch
import torch.nn as nn


def input_stats(u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-position mean μ̂ and std σ̂ over the batch (population std, correction 0, so the bound holds exactly
    for the batch's own empirical distribution). u: (B L H) -> μ̂ (L H), σ̂ (L H)."""
    return u.mean(0), u.std(0, correction=0)


def tau(kernel: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """000 eq. (discrete ψ²): τ = (Σ_l |k̄_l| σ̂_{L−1−l} + |Σ_l k̄_l μ̂_{L−1−l}|)², per channel; differentiable in k̄.
    kernel (H L), mean/std (L H) of the layer input (the last L positions are used) -> τ (H)."""
    L = kernel.shape[-1]
    mu, sigma = mean[-L:].flip(0).T, std[-L:].flip(0).T  # (H L): μ̂_{L−1−l}, σ̂_{L−1−l}
    psi = (kernel.abs() * sigma).sum(-1) + (kernel * mu).sum(-1).abs()  # (H)
    return psi.square()


def tau_scaling(tau_value: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """000 init scaling: the factor 1/√τ per channel for C ← C/√τ (τ clamped at eps). tau_value (H) -> (H)."""
    return tau_value.clamp_min(eps).rsqrt()


def layer_inputs(model: nn.Module, x: torch.Tensor, detach: bool = True) -> list[torch.Tensor]:
    """The input (B L H) of each SSM layer of a SequenceModel (model.layers) on one forward pass of x, caught by
    forward pre-hooks that are removed afterwards; the model is not changed. detach: no graph (run under no_grad)."""
    caught, handles = [], []
    for layer in model.layers:
        handles.append(layer.register_forward_pre_hook(lambda module, args: caught.append(args[0])))
    try:
        with torch.no_grad() if detach else torch.enable_grad():
            model(x)
    finally:
        for handle in handles:
            handle.remove()
    return caught  # n_layers × (B L H)


def model_tau(model: nn.Module, x: torch.Tensor, detach_stats: bool = True) -> list[torch.Tensor]:
    """τ of every LTI layer (S4D / S4: layer.kernel(L)) of a SequenceModel, each from its own input statistics on x.
    Differentiable in the layer parameters (kernel); the input statistics are data (detached) unless detach_stats
    is False. -> n_layers × (H)."""
    taus = []
    for layer, u in zip(model.layers, layer_inputs(model, x, detach=detach_stats)):
        if not hasattr(layer, "kernel"):
            raise TypeError(f"τ needs an LTI layer with a kernel (S4D, S4), not {type(layer).__name__}")
        mean, std = input_stats(u)
        taus.append(tau(layer.kernel(u.shape[-2]), mean, std))
    return taus
