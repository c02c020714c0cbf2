"""S4 layer: DPLR state matrix A = Λ − P P^* (per channel, N×N complex) from HiPPO-LegS; ZOH or bilinear; FFT conv.

HiPPO-LegS is normal plus low rank (S4, Gu et al. 2022, §3.3): A + P Pᵀ = −½I + S with S skew-symmetric
and P_n = √(n + ½), so with S = V (iω) V^* (V unitary) A = V (Λ − P̃ P̃^*) V^*, Λ = −½ + iω, P̃ = V^*P.
The layer holds the system in that basis: N complex states, no conjugate halving, real output
y = Re(k̄) ∗ u + D·u with k̄_l = C Ā^l B̄ (Re taken once, on the kernel; u is real so Re(k̄ ∗ u) = Re(k̄) ∗ u).
Re Λ ≤ 0 (clamped) makes A + A^* = 2 Re Λ − 2 P P^* ≤ 0, so ‖Ā‖₂ ≤ 1 for both discretisations.
Kernel: dense Ā (N ≤ 64), powers by doubling in two √L-sized Krylov blocks (see `kernel`), no Cauchy/Woodbury.
"""

import math

import torch
import torch.nn as nn

from ssmpipe.models.s4d import S4D, fft_conv


def hippo_legs(N: int, dtype: torch.dtype = torch.float64) -> tuple[torch.Tensor, torch.Tensor]:
    """HiPPO-LegS (A (N N), B (N)): A_nk = −√(2n+1)√(2k+1) (n > k), −(n+1) (n = k), 0 (n < k); B_n = √(2n+1)."""
    n = torch.arange(N, dtype=dtype)
    r = (2 * n + 1).sqrt()  # (N)
    A = -torch.tril(r[:, None] * r[None, :], diagonal=-1) - torch.diag(n + 1)
    return A, r


def dplr_legs(N: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(Λ, P̃, B̃, V), all complex128, with hippo_legs(N) = V (diag Λ − P̃ P̃^*) V^*, B = V B̃, V unitary."""
    A, B = hippo_legs(N)
    P = (torch.arange(N, dtype=torch.float64) + 0.5).sqrt()  # (N), rank-1 correction
    S = A + P[:, None] * P[None, :] + 0.5 * torch.eye(N, dtype=torch.float64)  # skew-symmetric
    omega, V = torch.linalg.eigh(-1j * S.to(torch.complex128))  # −iS Hermitian: S = V diag(iω) V^*
    Lambda = torch.complex(torch.full_like(omega, -0.5), omega)  # (N)
    Vh = V.conj().T
    return Lambda, Vh @ P.to(V.dtype), Vh @ B.to(V.dtype), V


class S4(nn.Module):
    def __init__(
        self,
        d_model: int,
        d_state: int,
        scale: float = 1.0,
        dt_min: float = 1e-3,
        dt_max: float = 1e-1,
        discretization: str = "zoh",
        train_A: bool = True,
    ):
        super().__init__()
        H = d_model
        if discretization not in ("zoh", "bilinear"):
            raise ValueError(f"unknown discretization {discretization!r}; known: zoh, bilinear")
        self.discretization = discretization
        log_dt = torch.rand(H) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min)  # (H), LogUniform
        Lambda, P, B, _ = (x.to(torch.complex64).repeat(H, 1) for x in dplr_legs(d_state))  # (H N) each
        C = torch.randn(H, d_state, 2) * math.sqrt(0.5) * scale  # E|C|² = scale²
        # train_A=False freezes Λ, P and Δ (reservoir-style, SPEC 003): buffers, not parameters.
        recurrent = nn.Parameter if train_A else (lambda t: t)
        register = self.register_parameter if train_A else self.register_buffer
        register("log_dt", recurrent(log_dt))  # (H)
        register("Lambda_real", recurrent(Lambda.real.contiguous()))  # (H N)
        register("Lambda_imag", recurrent(Lambda.imag.contiguous()))  # (H N)
        register("P_real", recurrent(P.real.contiguous()))  # (H N)
        register("P_imag", recurrent(P.imag.contiguous()))  # (H N)
        self.B_real = nn.Parameter(B.real.contiguous())  # (H N)
        self.B_imag = nn.Parameter(B.imag.contiguous())  # (H N)
        self.C_real = nn.Parameter(C[..., 0].contiguous())  # (H N)
        self.C_imag = nn.Parameter(C[..., 1].contiguous())  # (H N)
        self.D = nn.Parameter(torch.randn(H))  # (H)

    def continuous_system(self):
        """(A (H N N), B (H N), C (H N), Δ (H)): A = diag(Λ) − P P^*, Re Λ clamped ≤ 0."""
        Lam = torch.complex(self.Lambda_real.clamp(max=0.0), self.Lambda_imag)  # (H N)
        P = torch.complex(self.P_real, self.P_imag)  # (H N)
        A = torch.diag_embed(Lam) - P[:, :, None] * P.conj()[:, None, :]  # (H N N)
        return A, torch.complex(self.B_real, self.B_imag), torch.complex(self.C_real, self.C_imag), self.log_dt.exp()

    def discrete_system(self):
        """(Ā (H N N), B̄ (H N), C (H N)). ZOH: exp([[ΔA, ΔB], [0, 0]]) = [[Ā, B̄], [0, 1]] (Van Loan), i.e.
        Ā = e^{ΔA}, B̄ = A⁻¹(Ā − I)B without a solve (well defined at singular A). Bilinear: Ā = (I − ΔA/2)⁻¹(I + ΔA/2),
        B̄ = (I − ΔA/2)⁻¹ΔB. Computed in complex128 and cast back: ‖ΔA‖ ~ Δ·N²/2 (the P P^* term) is far from
        normal, and a complex64 matrix_exp loses ~2e-4 of the kernel at N = 64 (1e-6 this way)."""
        A, B, C, dt = self.continuous_system()
        dtype, N = A.dtype, A.shape[-1]
        dtA = (A * dt[:, None, None]).to(torch.complex128)  # (H N N)
        dtB = (B * dt[:, None]).to(torch.complex128)  # (H N)
        if self.discretization == "zoh":
            top = torch.cat([dtA, dtB[..., None]], -1)  # (H N N+1)
            E = torch.linalg.matrix_exp(torch.cat([top, torch.zeros_like(top[..., :1, :])], -2))  # (H N+1 N+1)
            A_bar, B_bar = E[..., :N, :N], E[..., :N, N]
        else:
            eye = torch.eye(N, dtype=dtA.dtype, device=dtA.device)
            left = eye - dtA / 2
            A_bar, B_bar = torch.linalg.solve(left, eye + dtA / 2), torch.linalg.solve(left, dtB)
        return A_bar.to(dtype), B_bar.to(dtype), C

    def kernel(self, L: int) -> torch.Tensor:
        """k̄_l = Re(C Ā^l B̄), l < L, split as l = a·m + b (m = 2^⌈½log₂L⌉ ≈ √L): k̄_{am+b} = (C Ā^{am})·(Ā^b B̄),
        two Krylov blocks by doubling, O(N³ log L + N²√L + N L) per channel. (H L)"""
        A_bar, B_bar, C = self.discrete_system()
        m = 2 ** math.ceil(math.log2(L) / 2) if L > 1 else 1
        right, A_m = krylov(A_bar, B_bar, m)  # (H N m): Ā^b B̄; Ā^m
        left, _ = krylov(A_m.transpose(-1, -2), C, -(-L // m))  # (H N L/m): (C Ā^{am})ᵀ
        k = torch.einsum("hna,hnb->hab", left, right)  # (H L/m m)
        return k.reshape(k.shape[0], -1)[:, :L].real  # (H L)

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        """u: (B L H) -> y: (B L H), y = k̄ ∗ u + D·u by FFT convolution, O(L log L)."""
        return fft_conv(u, self.kernel(u.shape[-2])) + u * self.D


def krylov(M: torch.Tensor, v: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """([v, Mv, …, M^{n−1}v] (H N n), M^{2^⌈log₂n⌉}) by doubling: [x] -> [x, M^w x], M^w -> M^{2w}.

    Loops over shapes only, so it is vmap-safe."""
    x = v[..., None]  # (H N 1)
    while x.shape[-1] < n:
        w = x.shape[-1]
        x = torch.cat([x, M @ x[..., : n - w]], -1)  # (H N min(2w, n))
        M = M @ M
    return x, M


@torch.no_grad()
def diagonalised(layer: S4) -> S4D:
    """The equivalent diagonal system as an S4D layer: A = W diag(λ) W⁻¹, B' = W⁻¹B, C' = CW, same Δ, D and
    discretisation; S4D's B = 1 and 2·Re(conjugate halving), so its C = C'∘B'/2 over N complex states (d_state 2N).
    Both discretisations commute with the similarity, so the kernels agree exactly in exact arithmetic;
    in floating point only as far as W is conditioned (HiPPO-LegS: cond(W) grows exponentially in N, S4 Lemma 3.2)."""
    A, B, C, dt = layer.continuous_system()
    lam, W = torch.linalg.eig(A)  # (H N), (H N N)
    Bp = torch.linalg.solve(W, B[..., None])[..., 0]  # (H N)
    CBp = (C[:, None, :] @ W)[:, 0] * Bp / 2  # (H N)
    H, N = B.shape
    diag = S4D(H, 2 * N, discretization=layer.discretization).to(dtype=layer.D.dtype, device=layer.D.device)
    for name, value in [
        ("log_dt", dt.log()),
        ("A_real", lam.real),
        ("A_imag", lam.imag),
        ("C_real", CBp.real),
        ("C_imag", CBp.imag),
        ("D", layer.D),
    ]:
        getattr(diag, name).copy_(value)
    return diag
