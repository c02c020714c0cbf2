"""Diagonal LTI SSM layer (S4D-style): complex diagonal A, ZOH discretisation, FFT convolution.

Eigenvalues take the sweep form of SPEC 002: λ_n = a + i·s·π·n (n = 0..N/2-1), with
real part a (≤ 0, a = 0 allowed) and imaginary scale s. Conjugate pairs are implicit:
the kernel is 2·Re(Σ_n ...), so N/2 complex states give a real N-state system.
"""

import math

import torch
import torch.nn as nn


class S4D(nn.Module):
    def __init__(self, d_model: int, d_state: int, real: float, imag: float,
                 scale: float = 1.0, dt_min: float = 1e-3, dt_max: float = 1e-1):
        super().__init__()
        H, N2 = d_model, d_state // 2
        log_dt = torch.rand(H) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min)  # (H)
        n = torch.arange(N2, dtype=torch.float32)
        self.log_dt = nn.Parameter(log_dt)                                  # (H)
        self.A_real = nn.Parameter(torch.full((H, N2), float(real)))        # (H N/2)
        self.A_imag = nn.Parameter((imag * math.pi * n).repeat(H, 1))       # (H N/2)
        C = torch.randn(H, N2, 2) * math.sqrt(0.5) * scale                  # complex normal, E|C|² = scale²
        self.C_real = nn.Parameter(C[..., 0].contiguous())                  # (H N/2)
        self.C_imag = nn.Parameter(C[..., 1].contiguous())                  # (H N/2)
        self.D = nn.Parameter(torch.randn(H))                               # (H)

    def kernel(self, L: int) -> torch.Tensor:
        """k̄_l = 2·Re(Σ_n C_n B̄_n Ā_n^l), with B = 1, Ā = exp(ΔA), B̄ = (Ā − 1)/A (ZOH; ΔB at A = 0)."""
        dt = self.log_dt.exp()[:, None]                                     # (H 1)
        A = torch.complex(self.A_real.clamp(max=0.0), self.A_imag)          # (H N/2), Re λ ≤ 0
        dtA = A * dt                                                        # (H N/2)
        at_zero = A == 0
        A_safe = torch.where(at_zero, torch.ones_like(A), A)
        B_bar = torch.where(at_zero, dt.to(A.dtype).expand_as(A), (dtA.exp() - 1) / A_safe)
        CB = torch.complex(self.C_real, self.C_imag) * B_bar                # (H N/2)
        l = torch.arange(L, device=A.device, dtype=dt.dtype)                # (L)
        powers = torch.exp(dtA[..., None] * l)                              # (H N/2 L)
        return 2 * torch.einsum("hn,hnl->hl", CB, powers).real              # (H L)

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        """u: (B L H) -> y: (B L H), y = k̄ ∗ u + D·u by FFT convolution, O(L log L)."""
        L = u.shape[-2]
        k = self.kernel(L)                                                  # (H L)
        k_f = torch.fft.rfft(k, n=2 * L)                                    # (H L+1)
        u_f = torch.fft.rfft(u.transpose(-1, -2), n=2 * L)                  # (B H L+1)
        y = torch.fft.irfft(u_f * k_f, n=2 * L)[..., :L]                    # (B H L)
        return y.transpose(-1, -2) + u * self.D                             # (B L H)
