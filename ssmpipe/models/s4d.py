"""Diagonal LTI SSM layer (S4D): complex diagonal A, ZOH or bilinear discretisation, FFT convolution.

Conjugate pairs are implicit: N/2 complex states give a real N-state system, the kernel
being k̄_l = 2·Re(Σ_n C_n B̄_n Ā_n^l) (B = 1, as in S4D). Eigenvalue inits (SPEC 002):
S4D-Lin, S4D-Inv, S4D-Real, random, and the sweep form λ_n = a + i·s·π·n.
"""

import math

import torch
import torch.nn as nn

SCHEMES = ("sweep", "lin", "inv", "real", "random")


def eigenvalues(scheme: str, d_state: int, real: float = -0.5, imag: float = 1.0) -> torch.Tensor:
    """The N/2 eigenvalues λ_n (complex) of one channel under an init scheme (S4D paper, Gu et al. 2022, §4)."""
    N, n = d_state, torch.arange(d_state // 2, dtype=torch.float64)
    if scheme == "sweep":      # a + i·s·π·n
        re, im = torch.full_like(n, real), imag * math.pi * n
    elif scheme == "lin":      # S4D-Lin: −½ + iπn
        re, im = torch.full_like(n, -0.5), math.pi * n
    elif scheme == "inv":      # S4D-Inv: −½ + i(N/π)(N/(2n+1) − 1)
        re, im = torch.full_like(n, -0.5), (N / math.pi) * (N / (2 * n + 1) - 1)
    elif scheme == "real":     # S4D-Real: −(n+1)
        re, im = -(n + 1), torch.zeros_like(n)
    elif scheme == "random":   # Re ~ −U(0,1), Im ~ U(0, πN/2): S4D-Lin's range of imaginary parts
        re, im = -torch.rand_like(n), torch.rand_like(n) * math.pi * N / 2
    else:
        raise ValueError(f"unknown eigenvalue init scheme {scheme!r}; known: {', '.join(SCHEMES)}")
    return torch.complex(re, im).to(torch.complex64)


class S4D(nn.Module):
    def __init__(self, d_model: int, d_state: int, scheme: str = "sweep", real: float = -0.5, imag: float = 1.0,
                 scale: float = 1.0, dt_min: float = 1e-3, dt_max: float = 1e-1,
                 discretization: str = "zoh", train_A: bool = True):
        super().__init__()
        H, N2 = d_model, d_state // 2
        if discretization not in ("zoh", "bilinear"):
            raise ValueError(f"unknown discretization {discretization!r}; known: zoh, bilinear")
        self.discretization = discretization
        log_dt = torch.rand(H) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min)  # (H), LogUniform
        lam = eigenvalues(scheme, d_state, real, imag).repeat(H, 1)                         # (H N/2)
        C = torch.randn(H, N2, 2) * math.sqrt(0.5) * scale                                 # E|C|² = scale²
        # train_A=False freezes A and Δ (reservoir-style, SPEC 003): they become buffers, not parameters.
        recurrent = nn.Parameter if train_A else (lambda t: t)
        register = self.register_parameter if train_A else self.register_buffer
        register("log_dt", recurrent(log_dt))                                              # (H)
        register("A_real", recurrent(lam.real.float().contiguous()))                       # (H N/2)
        register("A_imag", recurrent(lam.imag.float().contiguous()))                       # (H N/2)
        self.C_real = nn.Parameter(C[..., 0].contiguous())                                 # (H N/2)
        self.C_imag = nn.Parameter(C[..., 1].contiguous())                                 # (H N/2)
        self.D = nn.Parameter(torch.randn(H))                                              # (H)

    def discrete(self):
        """(log Ā, C·B̄), both (H N/2): ZOH Ā = e^{ΔA}, B̄ = (Ā − 1)/A (ΔB at A = 0); bilinear Ā = (1 + ΔA/2)/(1 − ΔA/2), B̄ = Δ/(1 − ΔA/2)."""
        dt = self.log_dt.exp()[:, None]                                     # (H 1)
        A = torch.complex(self.A_real.clamp(max=0.0), self.A_imag)          # (H N/2), Re λ ≤ 0
        dtA = A * dt
        if self.discretization == "zoh":
            at_zero = A == 0
            A_safe = torch.where(at_zero, torch.ones_like(A), A)
            B_bar = torch.where(at_zero, dt.to(A.dtype).expand_as(A), (dtA.exp() - 1) / A_safe)
            log_A_bar = dtA
        else:
            B_bar = dt / (1 - dtA / 2)
            log_A_bar = torch.log((1 + dtA / 2) / (1 - dtA / 2))
        return log_A_bar, torch.complex(self.C_real, self.C_imag) * B_bar

    def kernel(self, L: int) -> torch.Tensor:
        """k̄_l = 2·Re(Σ_n C_n B̄_n Ā_n^l) by a Vandermonde product: (H L)."""
        log_A_bar, CB = self.discrete()                                     # (H N/2)
        l = torch.arange(L, device=CB.device, dtype=self.log_dt.dtype)      # (L)
        return 2 * torch.einsum("hn,hnl->hl", CB, torch.exp(log_A_bar[..., None] * l)).real  # (H L)

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        """u: (B L H) -> y: (B L H), y = k̄ ∗ u + D·u by FFT convolution, O(L log L)."""
        L = u.shape[-2]
        k_f = torch.fft.rfft(self.kernel(L), n=2 * L)                       # (H L+1)
        u_f = torch.fft.rfft(u.transpose(-1, -2), n=2 * L)                  # (B H L+1)
        y = torch.fft.irfft(u_f * k_f, n=2 * L)[..., :L]                    # (B H L)
        return y.transpose(-1, -2) + u * self.D                             # (B L H)
