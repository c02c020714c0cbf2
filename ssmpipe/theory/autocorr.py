"""SPEC 002 (Liu & Li, ICLR 2025, arXiv 2411.19455): input autocorrelation, the timescale rule, the Gram matrix.

The SSM's state after an impulse is α_k = Ā^k B̄ (k steps later); the kernel is k̄_k = C α_k, so the Gram matrix
G = Σ_{k<L} α_k α_kᵀ is, for white-noise input, the Hessian of the least-squares fit of C (its conditioning sets
the optimization speed).
Complex states are stacked as reals [Re; Im], which makes G real symmetric of size 2N.
"""

import math

import torch


def autocorrelation(u: torch.Tensor) -> torch.Tensor:
    """002: E[u uᵀ] estimated from a batch (uncentred), averaged over channels. u: (B L) or (B L H) -> (L L)."""
    X = u if u.dim() == 2 else u.transpose(1, 2).flatten(0, 1)  # (samples L)
    return X.T @ X / X.shape[0]


def lambda_max(u: torch.Tensor, stationary: bool = False) -> torch.Tensor:
    """λ_max(E[u uᵀ]) from a batch. u: (B L) or (B L H) -> 0-dim.
    stationary=False: the plain estimate (1/S) XᵀX over S sample sequences, by the smaller of XᵀX / XXᵀ (same nonzero
    spectrum). Caution: with S not ≫ L it is biased up, white noise giving ≈ (1 + √(L/S))² (Marchenko–Pastur), not 1.
    stationary=True: assumes E[u_t u_s] = r(|t−s|), r(k) = Σ_t u_t u_{t+k} / (S·L) (the biased, positive semi-definite
    estimate, by FFT), λ_max of the Toeplitz matrix r(|i−j|): close to 1 for white noise even with S ≪ L (each r(k)
    averages S·L products), but r(k) shrinks by (1 − k/L) (fully correlated input: ≈ 0.65·L instead of L)."""
    X = u if u.dim() == 2 else u.transpose(1, 2).flatten(0, 1)  # (S L)
    S, L = X.shape
    if not stationary:
        M = X.T @ X if L <= S else X @ X.T  # (min(S,L) min(S,L))
        return torch.linalg.eigvalsh(M / S)[-1]
    F = torch.fft.rfft(X, n=2 * L)  # (S L+1)
    r = torch.fft.irfft(F.abs().square().sum(0), n=2 * L)[:L] / (S * L)  # (L) r(0..L−1)
    i = torch.arange(L, device=u.device)
    return torch.linalg.eigvalsh(r[(i[:, None] - i[None, :]).abs()])[-1]  # Toeplitz (L L)


def dt_autocorr(L: int, lam_max: torch.Tensor | float, c: float = 1.0) -> torch.Tensor:
    """002 timescale rule Δ ≲ 1/√(L·λ_max(E[uuᵀ])), as Δ = c/√(L·λ_max). -> float64 tensor, lam_max's shape."""
    return c / torch.sqrt(L * torch.as_tensor(lam_max, dtype=torch.float64))


def impulse_states(A_bar: torch.Tensor, B_bar: torch.Tensor, L: int) -> torch.Tensor:
    """α_k = Ā^k B̄ for k < L, complex states stacked as reals [Re; Im]; computed in float64 / complex128.
    Ā: diagonal (... N) or dense (... N N); B̄ (... N) -> (... L n), n = N (real) or 2N (complex).
    Powers by doubling: [α_0..α_{w−1}] -> [.., Ā^w α_0..], Ā^w -> Ā^{2w} (log₂L products)."""
    dtype = torch.complex128 if (A_bar.is_complex() or B_bar.is_complex()) else torch.float64
    A, x = A_bar.to(dtype), B_bar.to(dtype)[..., None, :]  # x: (... 1 N)
    dense = A.dim() == B_bar.dim() + 1
    while x.shape[-2] < L:
        w = x.shape[-2]
        step = x[..., : L - w, :]
        x = torch.cat([x, step @ A.transpose(-1, -2) if dense else step * A[..., None, :]], -2)
        A = A @ A if dense else A * A
    return torch.cat([x.real, x.imag], -1) if x.is_complex() else x  # (... L n)


def gram_matrix(A_bar: torch.Tensor, B_bar: torch.Tensor, L: int) -> torch.Tensor:
    """002 Gram matrix G = Σ_{k<L} α_k α_kᵀ, α_k = Ā^k B̄ stacked [Re; Im]. -> (... n n), float64."""
    X = impulse_states(A_bar, B_bar, L)  # (... L n)
    return X.transpose(-1, -2) @ X


def gram_condition(A_bar: torch.Tensor, B_bar: torch.Tensor, L: int) -> torch.Tensor:
    """002 conditioning: κ(G) = λ_max(G)/λ_min(G) = (σ_max/σ_min of X = [α_0 … α_{L−1}])², from the singular values of
    the stacked states (not of G: that would square the error). Coordinates that never move (column norm of X at most
    tol·max, e.g. the [Im] half of a real mode: n = 0 of S4D-Lin / the sweep form) are not states and are left out.
    Rank is decided numerically, as numpy's matrix_rank does: σ ≤ σ_max·tol with tol = max(L, n)·ε(float64) counts as
    zero, and a numerically rank-deficient X (e.g. repeated eigenvalues) gives κ = inf on every machine (never a
    huge finite κ from a rounding-level σ_min); so does one with more moving states than steps (n > L: G has rank at
    most L). -> (...), float64."""
    X = impulse_states(A_bar, B_bar, L)  # (... L n)
    tol = max(X.shape[-2:]) * torch.finfo(torch.float64).eps
    norms = X.norm(dim=-2)  # (... n)
    states = (norms > tol * norms.amax(-1, keepdim=True)).sum(-1, keepdim=True)  # (... 1) coordinates that move
    s = torch.linalg.svdvals(X)  # (... n), descending
    rank = (s > tol * s[..., :1]).sum(-1, keepdim=True)  # (... 1) numerical rank
    last = (states - 1).clamp(0, s.shape[-1] - 1)  # σ of the last state; n > L has only L of them (rank < states)
    kappa = (s[..., 0] / s.gather(-1, last)[..., 0]).square()
    return torch.where(rank[..., 0] >= states[..., 0], kappa, torch.full_like(kappa, math.inf))
