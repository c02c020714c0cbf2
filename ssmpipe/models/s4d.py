"""Diagonal LTI SSM layer (S4D): complex diagonal A, ZOH or bilinear discretisation, FFT convolution.

Conjugate pairs are implicit: N/2 complex states give a real N-state system, the kernel
being k̄_l = 2·Re(Σ_n C_n B̄_n Ā_n^l) (B = 1, as in S4D). Eigenvalue inits (SPEC 002):
S4D-Lin, S4D-Inv, S4D-Real, random, and the sweep form λ_n = a + i·s·π·n; SPEC 003's "linear" and
"step" spectra (the paper names them without formulas; the ones here are ssmpipe's choice, S4D-Lin's
frequencies with the decay rates spread evenly, or in two groups).
"""

import math

import torch
import torch.nn as nn

SCHEMES = ("sweep", "lin", "inv", "real", "random", "linear", "step")
STEP_RATES = (-0.05, -1.0)  # step spectrum: decay rates of the slow and the fast half of the modes


def eigenvalues(scheme: str, d_state: int, real: float = -0.5, imag: float = 1.0) -> torch.Tensor:
    """The N/2 eigenvalues λ_n (complex) of one channel under an init scheme (S4D paper, Gu et al. 2022, §4)."""
    N, n = d_state, torch.arange(d_state // 2, dtype=torch.float64)
    if scheme == "sweep":  # a + i·s·π·n
        re, im = torch.full_like(n, real), imag * math.pi * n
    elif scheme == "lin":  # S4D-Lin: −½ + iπn
        re, im = torch.full_like(n, -0.5), math.pi * n
    elif scheme == "inv":  # S4D-Inv: −½ + i(N/π)(N/(2n+1) − 1)
        re, im = torch.full_like(n, -0.5), (N / math.pi) * (N / (2 * n + 1) - 1)
    elif scheme == "real":  # S4D-Real: −(n+1)
        re, im = -(n + 1), torch.zeros_like(n)
    elif scheme == "random":  # Re ~ −U(0,1), Im ~ U(0, πN/2): S4D-Lin's range of imaginary parts
        re, im = -torch.rand_like(n), torch.rand_like(n) * math.pi * N / 2
    elif scheme == "linear":  # decay rates spread evenly over (0, 1]: −(n+1)/(N/2) + iπn
        re, im = -(n + 1) / (N // 2), math.pi * n
    elif scheme == "step":  # half the modes slow, half fast: −0.05 or −1, + iπn
        re, im = torch.full_like(n, STEP_RATES[1]).masked_fill(n < N // 4, STEP_RATES[0]), math.pi * n
    else:
        raise ValueError(f"unknown eigenvalue init scheme {scheme!r}; known: {', '.join(SCHEMES)}")
    return torch.complex(re, im).to(torch.complex64)


def fft_conv(u: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """Causal convolution y_t = Σ_{l≤t} k_l u_{t−l} per channel by FFT (padded to 2L): u (B L H), k (H L) -> (B L H)."""
    L = u.shape[-2]
    k_f = torch.fft.rfft(k, n=2 * L)  # (H L+1)
    u_f = torch.fft.rfft(u.transpose(-1, -2), n=2 * L)  # (B H L+1)
    return torch.fft.irfft(u_f * k_f, n=2 * L)[..., :L].transpose(-1, -2)  # (B L H)


def vandermonde(c: torch.Tensor, z: torch.Tensor, L: int) -> torch.Tensor:
    """k_l = 2·Re Σ_n c_n e^{z_n l} for l < L; c, z: (H N/2) complex -> k: (H L) real.

    With l = a·m + b (m ≈ √L), e^{z l} = e^{z a m}·e^{z b}, so k is one batched matrix product
    of two (N/2 × √L) blocks of powers: O(H·N·L) work in BLAS, O(H·N·√L + H·L) memory
    (the (H N/2 L) Vandermonde matrix is never formed, in either pass).
    """
    m = max(1, math.isqrt(L - 1) + 1) if L > 1 else 1  # block length, m² ≥ L
    n_blocks = -(-L // m)
    b = torch.arange(m, device=z.device, dtype=z.real.dtype)
    a = torch.arange(n_blocks, device=z.device, dtype=z.real.dtype) * m
    inner = torch.exp(z[..., None] * b)  # (H N/2 m)
    outer = c[..., None] * torch.exp(z[..., None] * a)  # (H N/2 n_blocks)
    k = torch.matmul(outer.transpose(-1, -2), inner)  # (H n_blocks m)
    return 2 * k.real.flatten(-2)[..., :L]  # (H L)


def discretize(log_dt, A_real, A_imag, C_real, C_imag, method: str = "zoh"):
    """(log Ā, C·B̄), both (... H N/2), from log_dt (... H) and A, C (... H N/2); any leading (point) dimensions.

    ZOH Ā = e^{ΔA}, B̄ = (Ā − 1)/A (ΔB at A = 0); bilinear Ā = (1 + ΔA/2)/(1 − ΔA/2), B̄ = Δ/(1 − ΔA/2).
    """
    dt = log_dt.exp()[..., None]  # (... H 1)
    A = torch.complex(A_real.clamp(max=0.0), A_imag)  # (... H N/2), Re λ ≤ 0
    dtA = A * dt
    if method == "zoh":
        at_zero = A == 0
        A_safe = torch.where(at_zero, torch.ones_like(A), A)
        B_bar = torch.where(at_zero, dt.to(A.dtype).expand_as(A), (dtA.exp() - 1) / A_safe)
        log_A_bar = dtA
    else:
        B_bar = dt / (1 - dtA / 2)
        log_A_bar = torch.log((1 + dtA / 2) / (1 - dtA / 2))
    return log_A_bar, torch.complex(C_real, C_imag) * B_bar


class S4D(nn.Module):
    def __init__(
        self,
        d_model: int,
        d_state: int,
        scheme: str = "sweep",
        real: float = -0.5,
        imag: float = 1.0,
        scale: float = 1.0,
        dt_min: float = 1e-3,
        dt_max: float = 1e-1,
        discretization: str = "zoh",
        train_A: bool = True,
    ):
        super().__init__()
        H, N2 = d_model, d_state // 2
        if discretization not in ("zoh", "bilinear"):
            raise ValueError(f"unknown discretization {discretization!r}; known: zoh, bilinear")
        self.discretization = discretization
        log_dt = torch.rand(H) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min)  # (H), LogUniform
        lam = eigenvalues(scheme, d_state, real, imag).repeat(H, 1)  # (H N/2)
        C = torch.randn(H, N2, 2) * math.sqrt(0.5) * scale  # E|C|² = scale²
        # train_A=False freezes A and Δ (reservoir-style, SPEC 003): they become buffers, not parameters.
        recurrent = nn.Parameter if train_A else (lambda t: t)
        register = self.register_parameter if train_A else self.register_buffer
        register("log_dt", recurrent(log_dt))  # (H)
        register("A_real", recurrent(lam.real.float().contiguous()))  # (H N/2)
        register("A_imag", recurrent(lam.imag.float().contiguous()))  # (H N/2)
        self.C_real = nn.Parameter(C[..., 0].contiguous())  # (H N/2)
        self.C_imag = nn.Parameter(C[..., 1].contiguous())  # (H N/2)
        self.D = nn.Parameter(torch.randn(H))  # (H)

    def discrete(self):
        """(log Ā, C·B̄), both (H N/2): see `discretize`."""
        return discretize(self.log_dt, self.A_real, self.A_imag, self.C_real, self.C_imag, self.discretization)

    def kernel(self, L: int) -> torch.Tensor:
        """k̄_l = 2·Re(Σ_n C_n B̄_n Ā_n^l) by a Vandermonde product: (H L)."""
        log_A_bar, CB = self.discrete()  # (H N/2)
        return vandermonde(CB, log_A_bar, L)  # (H L)

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        """u: (B L H) -> y: (B L H), y = k̄ ∗ u + D·u by FFT convolution, O(L log L)."""
        return fft_conv(u, self.kernel(u.shape[-2])) + u * self.D


def recurrence(layer: S4D, u: torch.Tensor) -> torch.Tensor:
    """The reference: x_t = Ā x_{t-1} + B̄ u_t, y_t = 2·Re(C x_t) + D u_t, one step at a time. u: (B L H)."""
    dt = layer.log_dt.exp()[:, None]
    A = torch.complex(layer.A_real.clamp(max=0.0), layer.A_imag)
    if layer.discretization == "zoh":
        A_bar = torch.exp(A * dt)
        B_bar = torch.where(A == 0, dt.to(A.dtype).expand_as(A), (A_bar - 1) / torch.where(A == 0, 1, A))
    else:
        A_bar = (1 + dt * A / 2) / (1 - dt * A / 2)
        B_bar = dt / (1 - dt * A / 2)
    C = torch.complex(layer.C_real, layer.C_imag)
    x = torch.zeros(u.shape[0], *A.shape, dtype=A.dtype, device=u.device)  # (B H N/2)
    ys = []
    for t in range(u.shape[1]):
        x = A_bar * x + B_bar * u[:, t, :, None]
        ys.append(2 * (C * x).sum(-1).real + layer.D * u[:, t])
    return torch.stack(ys, 1)  # (B L H)
