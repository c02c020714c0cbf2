"""SPEC 001 (Honarpisheh et al., arXiv 2502.01473): terms of the selective SSM's generalization bound.

Per step the state decays by e^{Δ_t A} with Δ_t = softplus(p + qᵀu_t), and e^{Δ_t s_A} = (1 + e^{p + qᵀu_t})^{s_A};
ρ_A bounds it over inputs with ‖u_t‖ ≤ B_u, and S₂ sums the weights t·ρ_A^t over the sequence.
"""

import torch
import torch.nn.functional as F


def s2(rho: torch.Tensor | float, T: int) -> torch.Tensor:
    """001 bound term S₂ = Σ_{t=1}^T t ρ^t = ρ(1 − ρ^T)/(1 − ρ)² − Tρ^{T+1}/(1 − ρ), T(T+1)/2 at ρ = 1 (float64).
    SPEC's printed closed form has −Tρ^T/(1−ρ), which sums t = 1..T−1 only; this follows the sum as defined."""
    rho = torch.as_tensor(rho, dtype=torch.float64)
    one = rho == 1
    r = torch.where(one, torch.zeros_like(rho), rho)  # keep the unused branch finite
    closed = r * (1 - r**T) / (1 - r) ** 2 - T * r ** (T + 1) / (1 - r)
    return torch.where(one, torch.full_like(rho, T * (T + 1) / 2), closed)


def spectral_abscissa(A: torch.Tensor, dense: bool = False) -> torch.Tensor:
    """001 s_A = max Re λ(A) over all channels (0-dim, differentiable). A: the eigenvalues of a diagonal state matrix,
    any shape (the selective layer's (d N), S4D's complex (H N/2)); dense=True: matrices (... N N)."""
    lam = torch.linalg.eigvals(A) if dense else A
    return (lam.real if lam.is_complex() else lam).max()


def rho_A(
    p: torch.Tensor | float,
    B_q: torch.Tensor | float,
    B_u: torch.Tensor | float,
    s_A: torch.Tensor | float,
    eta: float = 0.0,
) -> torch.Tensor:
    """001 ρ_A = (1 + e^{p − B_q·B_u})^{s_A + η} (SPEC 001; the reference code's commented-out check in
    test_models.ipynb computes it with η = 0, B_q = ‖q‖₂, B_u = max token-embedding norm, and |p| for p).
    For s_A ≤ 0 it is the largest per-step decay e^{Δ_t s_A} over ‖u_t‖ ≤ B_u; for s_A > 0 it is not a bound
    (the largest factor is then (1 + e^{p + B_q·B_u})^{s_A})."""
    p, B_q, B_u, s_A = (torch.as_tensor(v, dtype=torch.float64) for v in (p, B_q, B_u, s_A))
    return torch.exp((s_A + eta) * F.softplus(p - B_q * B_u))  # (1 + e^x)^a = e^{a·softplus(x)}


def selective_rho_A(layer, u: torch.Tensor, eta: float = 0.0) -> torch.Tensor:
    """ρ_A of a Selective layer on inputs u (B L d): p, B_q = ‖q‖₂, B_u = max_t ‖u_t‖₂, s_A = max A. -> 0-dim."""
    return rho_A(
        layer.p.detach().squeeze(),
        layer.q.detach().norm(),
        u.detach().norm(dim=-1).max(),
        spectral_abscissa(layer.A.detach()),
        eta,
    )
