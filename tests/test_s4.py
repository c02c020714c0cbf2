"""The S4 layer (DPLR, HiPPO-LegS): DPLR form, kernel path against a plain recurrence, S4 ≡ its diagonalisation,
vmap."""

import time

import pytest
import torch
from torch.func import functional_call, stack_module_state, vmap

from ssmpipe.models.s4 import S4, diagonalised, dplr_legs, hippo_legs


def recurrence(layer: S4, u: torch.Tensor) -> torch.Tensor:
    """x_t = Ā x_{t-1} + B̄ u_t, y_t = Re(C x_t) + D u_t, step by step, with Ā, B̄ built here from the raw
    parameters (ZOH: B̄ = A⁻¹(Ā − I)B by a solve; bilinear: explicit inverse). u: (B L H)."""
    dt = layer.log_dt.exp()[:, None, None]  # (H 1 1)
    P = torch.complex(layer.P_real, layer.P_imag)
    A = (
        torch.diag_embed(torch.complex(layer.Lambda_real.clamp(max=0), layer.Lambda_imag))
        - P[:, :, None] * P.conj()[:, None, :]
    )  # (H N N)
    B = torch.complex(layer.B_real, layer.B_imag)[..., None]  # (H N 1)
    C = torch.complex(layer.C_real, layer.C_imag)  # (H N)
    eye = torch.eye(A.shape[-1], dtype=A.dtype)
    if layer.discretization == "zoh":
        A_bar = torch.linalg.matrix_exp(dt * A)
        B_bar = torch.linalg.solve(A, (A_bar - eye) @ B)[..., 0]  # (H N)
    else:
        inv = torch.linalg.inv(eye - dt * A / 2)
        A_bar, B_bar = inv @ (eye + dt * A / 2), (inv @ (dt * B))[..., 0]
    x = torch.zeros(u.shape[0], *B_bar.shape, dtype=A.dtype)  # (B H N)
    ys = []
    for t in range(u.shape[1]):
        x = (A_bar @ x[..., None])[..., 0] + B_bar * u[:, t, :, None]
        ys.append((C * x).sum(-1).real + layer.D * u[:, t])
    return torch.stack(ys, 1)  # (B L H)


def perturbed(layer: S4, seed: int, size: float = 0.1) -> S4:
    """Move every parameter off the (channel-shared) HiPPO init, keeping Re Λ < 0 and B, P distinct per channel."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in layer.named_parameters():
            if name != "log_dt":
                p.add_(size * torch.randn(p.shape, generator=g, dtype=p.dtype))
        layer.Lambda_real.clamp_(max=-0.1)
    return layer


def test_hippo_legs_entries():
    A, B = hippo_legs(3)
    s3, s5, s15 = 3**0.5, 5**0.5, 15**0.5
    torch.testing.assert_close(A, torch.tensor([[-1.0, 0, 0], [-s3, -2, 0], [-s5, -s15, -3]], dtype=torch.float64))
    torch.testing.assert_close(B, torch.tensor([1.0, s3, s5], dtype=torch.float64))


@pytest.mark.parametrize("N", [4, 16, 64])
def test_dplr_form_reconstructs_hippo_legs(N):
    A, B = hippo_legs(N)
    Lam, P, Bt, V = dplr_legs(N)
    assert Lam.dtype == torch.complex128 and P.shape == Bt.shape == (N,)
    torch.testing.assert_close(V.conj().T @ V, torch.eye(N, dtype=V.dtype), rtol=0, atol=1e-10)  # unitary
    torch.testing.assert_close(Lam.real, torch.full((N,), -0.5, dtype=torch.float64))  # normal part: −½ + iω
    A_rec = V @ (torch.diag(Lam) - P[:, None] * P.conj()[None, :]) @ V.conj().T
    torch.testing.assert_close(A_rec, A.to(A_rec.dtype), rtol=0, atol=1e-6)
    torch.testing.assert_close(V @ Bt, B.to(Bt.dtype), rtol=0, atol=1e-6)
    # the layer starts there: every channel's A (in the V basis) is HiPPO-LegS, up to float32 rounding
    layer = S4(2, N).double()
    A_layer, B_layer, _, _ = layer.continuous_system()
    scale = A.abs().max().item()
    torch.testing.assert_close(V @ A_layer @ V.conj().T, A.to(V.dtype).expand(2, N, N), rtol=0, atol=1e-5 * scale)
    torch.testing.assert_close(V @ B_layer[..., None], B.to(V.dtype)[:, None].expand(2, N, 1), rtol=0, atol=1e-5 * N)


@pytest.mark.parametrize(
    "N,L,dt", [(2, 1, 0.5), (2, 17, 0.5), (2, 64, 1.0), (8, 17, 0.05), (8, 64, 0.1), (32, 1, 0.01), (32, 64, 0.02)]
)
def test_kernel_path_equals_recurrence(N, L, dt):
    check_against_recurrence(N, L, dt, "zoh")


@pytest.mark.parametrize("N,L,dt", [(2, 17, 0.5), (8, 64, 0.2), (32, 17, 0.01)])
def test_kernel_path_equals_recurrence_bilinear(N, L, dt):
    check_against_recurrence(N, L, dt, "bilinear")


def check_against_recurrence(N, L, dt, discretization):
    torch.manual_seed(N + L)
    layer = perturbed(S4(3, N, dt_min=dt, dt_max=dt * 2, discretization=discretization).double(), seed=N * L)
    u = torch.randn(2, L, 3, dtype=torch.float64, requires_grad=True)
    y_fast, y_ref = layer(u), recurrence(layer, u)
    assert y_fast.dtype == torch.float64
    torch.testing.assert_close(y_fast, y_ref, rtol=1e-6, atol=1e-9)
    g = torch.randn_like(y_fast)
    params = dict(layer.named_parameters())
    grads_fast = torch.autograd.grad((y_fast * g).sum(), [u, *params.values()])
    grads_ref = torch.autograd.grad((y_ref * g).sum(), [u, *params.values()])
    for name, a, b in zip(["u", *params], grads_fast, grads_ref):
        assert b.abs().sum() > 0, name  # every parameter is reached
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-9, msg=lambda m, name=name: f"d/d{name}: {m}")


@pytest.mark.parametrize(
    "N,discretization,init",
    [
        (2, "zoh", "hippo"),
        (8, "zoh", "hippo"),
        (32, "zoh", "hippo"),
        (64, "zoh", "hippo"),
        (16, "bilinear", "hippo"),
        (32, "zoh", "perturbed"),
    ],
)
def test_kernel_equals_kernel_of_diagonalisation(N, discretization, init):
    """S4 ≡ S4D (SPEC 003): A = W diag(λ) W⁻¹ gives the same kernel; the diagonal system is a real S4D layer."""
    torch.manual_seed(N)
    layer = S4(4, N, dt_min=1e-2, dt_max=1e-1, discretization=discretization).double()
    if init == "perturbed":
        perturbed(layer, seed=1)
    diag = diagonalised(layer)
    assert diag.A_real.shape == (4, N) and diag.A_real.dtype == torch.float64
    k, k_diag = layer.kernel(300), diag.kernel(300)
    torch.testing.assert_close(k_diag, k, rtol=1e-6, atol=1e-6 * k.abs().max().item())
    u = torch.randn(2, 300, 4, dtype=torch.float64)
    torch.testing.assert_close(diag(u), layer(u), rtol=1e-6, atol=1e-6 * layer(u).abs().max().item())


def test_discrete_system_shapes_and_contraction():
    layer = S4(5, 16, dt_min=0.01, dt_max=0.5).double()
    A_bar, B_bar, C = layer.discrete_system()
    assert A_bar.shape == (5, 16, 16) and B_bar.shape == C.shape == (5, 16) and A_bar.is_complex()
    assert torch.linalg.matrix_norm(A_bar, ord=2).max() <= 1 + 1e-12  # Re Λ ≤ 0 ⇒ ‖Ā‖₂ ≤ 1


@pytest.mark.parametrize("discretization", ["zoh", "bilinear"])
def test_vmap_over_stacked_layers_equals_one_by_one(discretization):
    torch.manual_seed(0)
    layers = [perturbed(S4(3, 8, discretization=discretization).double(), seed=k) for k in range(3)]
    params, buffers = stack_module_state(layers)  # (K ...)
    base = S4(3, 8, discretization=discretization).double().to("meta")
    u = torch.randn(3, 2, 20, 3, dtype=torch.float64)  # (K B L H)

    def one(p, b, x):
        return functional_call(base, (p, b), (x,))

    y = vmap(one)(params, buffers, u)  # (K B L H)
    y_each = torch.stack([layer(u[k]) for k, layer in enumerate(layers)])
    torch.testing.assert_close(y, y_each, rtol=1e-10, atol=1e-12)
    g = torch.randn_like(y)
    grads = torch.autograd.grad((y * g).sum(), list(params.values()))
    for name, grad in zip(params, grads):
        each = torch.stack(
            [
                torch.autograd.grad((layer(u[k]) * g[k]).sum(), dict(layer.named_parameters())[name])[0]
                for k, layer in enumerate(layers)
            ]
        )
        torch.testing.assert_close(grad, each, rtol=1e-8, atol=1e-10, msg=lambda m, name=name: f"d/d{name}: {m}")


def test_train_A_false_freezes_the_state_matrix():
    layer = S4(2, 4, train_A=False)
    assert {n for n, _ in layer.named_parameters()} == {"B_real", "B_imag", "C_real", "C_imag", "D"}
    assert {n for n, _ in layer.named_buffers()} == {"log_dt", "Lambda_real", "Lambda_imag", "P_real", "P_imag"}


def test_long_sequence_forward_is_finite():
    torch.manual_seed(0)
    layer = S4(8, 64)
    u = torch.randn(2, 4096, 8)
    with torch.no_grad():
        y = layer(u)
    assert y.shape == u.shape and torch.isfinite(y).all()
    # float32 kernel (doubling: 12 squarings of Ā) against the float64 one
    k32, k64 = layer.kernel(4096), layer.double().kernel(4096)
    assert (k32.double() - k64).abs().max() <= 1e-5 * k64.abs().max()


def timing(L=4096, N=64, H=16, batch=8, repeats=3):
    """Forward+backward wall time of one S4 layer on CPU (float32), best of `repeats`."""
    layer = S4(H, N)
    u = torch.randn(batch, L, H, requires_grad=True)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        layer(u).square().mean().backward()
        best = min(best, time.perf_counter() - start)
    return best


if __name__ == "__main__":
    print(f"S4 forward+backward L=4096 N=64 H=16 batch=8, float32, {torch.get_num_threads()} threads: {timing():.3f} s")
