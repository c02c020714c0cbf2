"""SPEC 003 (Guan et al., arXiv 2510.00563): memory function and memory capacity of a linear SSM.

Driven by i.i.d. unit-variance input, the state is x = Σ_k α_k u_{−k} with α_k = Ā^k B̄ (stacked [Re; Im]), and the
best linear readout of u_{−τ} from x explains the fraction MF(τ) = α_τᵀ G⁺ α_τ of its variance, G = Σ_{k<K} α_k α_kᵀ.
With X = [α_0 … α_{K−1}]ᵀ (K n) and G = XᵀX, MF(τ) = (X G⁺ Xᵀ)_{ττ} is the τ-th diagonal entry of the projector
on the column space of X (a leverage score), so 0 ≤ MF ≤ 1, Σ_{τ<K} MF = rank X ≤ n, and any invertible change of
state coordinates α → Sα (a similarity Ā → SĀS⁻¹, B̄ → SB̄, real or complex) leaves MF unchanged.
"""

import torch

from ssmpipe.theory.autocorr import impulse_states


def memory_function(
    A_bar: torch.Tensor, B_bar: torch.Tensor, T: int, horizon: int | None = None, rcond: float = 1e-10
) -> torch.Tensor:
    """003: MF(τ) = α_τᵀ (Σ_{k<K} α_k α_kᵀ)⁺ α_τ for τ < T, K = horizon (default T). Ā diagonal (... N) or dense
    (... N N), B̄ (... N) -> (... T), float64.
    Numerics: G is never formed or inverted. MF is computed as leverage scores of X = [α_k]_{k<K} from its SVD, the
    pseudo-inverse keeping singular values > rcond·σ_max (G = XᵀX would square HiPPO's condition number); directions
    below the cutoff count as not remembered, so MC = numerical rank of X.
    With K = T, Σ_{τ<T} MF(τ) = rank X exactly (= n for a controllable system); the paper's stationary setting
    (infinite past) is K → ∞: pass horizon ≫ T (until α_k has decayed) to get MC = Σ_{τ<T} MF(τ) < n."""
    K = T if horizon is None else horizon
    if K < T:
        raise ValueError(f"horizon {K} < T {T}: MF(τ) needs α_τ inside the Gram sum")
    X = impulse_states(A_bar, B_bar, K)  # (... K n)
    U, s, _ = torch.linalg.svd(X, full_matrices=False)  # U (... K r), s (... r)
    keep = s > rcond * s[..., :1]  # (... r)
    return (U[..., :T, :].square() * keep[..., None, :]).sum(-1)  # (... T)


def memory_capacity(
    A_bar: torch.Tensor, B_bar: torch.Tensor, T: int, horizon: int | None = None, rcond: float = 1e-10
) -> torch.Tensor:
    """003: MC = Σ_{τ<T} MF(τ) ≤ n (real state dimension). -> (...), float64."""
    return memory_function(A_bar, B_bar, T, horizon, rcond).sum(-1)


def s4d_system(layer) -> tuple[torch.Tensor, torch.Tensor]:
    """(Ā, B̄) of an S4D layer, both (H N/2) complex, diagonal Ā: ZOH Ā = e^{ΔA}, B̄ = (Ā − 1)/A (Δ at A = 0), bilinear
    Ā = (1 + ΔA/2)/(1 − ΔA/2), B̄ = Δ/(1 − ΔA/2); B = 1 as in S4D (C·B̄ is `layer.discrete()`'s second output).
    The N/2 complex states stacked [Re; Im] are the layer's N real states (the conjugates are implicit)."""
    dt = layer.log_dt.exp()[:, None]  # (H 1)
    A = torch.complex(layer.A_real.clamp(max=0.0), layer.A_imag)  # (H N/2), as S4D.discrete
    if layer.discretization == "zoh":
        A_bar = torch.exp(dt * A)
        at_zero = A == 0
        B_bar = torch.where(at_zero, dt.to(A.dtype).expand_as(A), (A_bar - 1) / torch.where(at_zero, 1, A))
    else:
        A_bar, B_bar = (1 + dt * A / 2) / (1 - dt * A / 2), dt / (1 - dt * A / 2)
    return A_bar, B_bar.to(A_bar.dtype)


def s4_system(layer) -> tuple[torch.Tensor, torch.Tensor]:
    """(Ā (H N N), B̄ (H N)) of an S4 (DPLR) layer, complex, from `layer.discrete_system()`. Its N complex states
    stack to 2N reals; at the HiPPO init they span only N of them (the real HiPPO state seen in the basis V)."""
    A_bar, B_bar, _ = layer.discrete_system()
    return A_bar, B_bar
