"""The S4D layer's FFT path against a plain recurrence, in float64."""

import math

import pytest
import torch

from ssmpipe.models import S4D


def recurrence(layer: S4D, u: torch.Tensor) -> torch.Tensor:
    """x_t = Ā x_{t-1} + B̄ u_t, y_t = 2·Re(C x_t) + D u_t, step by step. u: (B L H)."""
    dt = layer.log_dt.exp()[:, None]
    A = torch.complex(layer.A_real.clamp(max=0), layer.A_imag)
    A_bar = torch.exp(A * dt)
    B_bar = torch.where(A == 0, dt.to(A.dtype).expand_as(A), (A_bar - 1) / torch.where(A == 0, 1, A))
    C = torch.complex(layer.C_real, layer.C_imag)
    x = torch.zeros(u.shape[0], *A.shape, dtype=A.dtype)                   # (B H N/2)
    ys = []
    for t in range(u.shape[1]):
        x = A_bar * x + B_bar * u[:, t, :, None]
        ys.append(2 * (C * x).sum(-1).real + layer.D * u[:, t])
    return torch.stack(ys, 1)                                              # (B L H)


@pytest.mark.parametrize("N,L,real,imag,dt", [(4, 16, -0.5, 1.0, 0.01), (8, 33, 0.0, 1.0, 0.1),
                                              (16, 64, -1.0, 10.0, 0.05), (2, 8, 0.0, 0.0, 0.5)])
def test_fft_equals_recurrence(N, L, real, imag, dt):
    torch.manual_seed(0)
    layer = S4D(3, N, real, imag, dt_min=dt, dt_max=dt).double()
    u = torch.randn(2, L, 3, dtype=torch.float64, requires_grad=True)
    y_fast, y_ref = layer(u), recurrence(layer, u)
    torch.testing.assert_close(y_fast, y_ref, rtol=1e-6, atol=1e-9)
    g = torch.randn_like(y_fast)
    grads_fast = torch.autograd.grad((y_fast * g).sum(), [u, *layer.parameters()])
    grads_ref = torch.autograd.grad((y_ref * g).sum(), [u, *layer.parameters()])
    for a, b in zip(grads_fast, grads_ref):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-9)


def test_eigenvalues_take_the_sweep_form():
    layer = S4D(2, 8, real=-0.25, imag=3.0)
    assert torch.all(layer.A_real == -0.25)
    torch.testing.assert_close(layer.A_imag[0], 3.0 * math.pi * torch.arange(4.0))
    assert layer.log_dt.exp().min() >= 1e-3 and layer.log_dt.exp().max() <= 1e-1
