"""ssmpipe.theory: the papers' measures against brute-force definitions and the behaviour the papers claim (float64).

000 τ and the C/√τ scaling; 002 autocorrelation, Δ rule, Gram conditioning; 003 memory function; 001 S₂, s_A, ρ_A."""

import copy
import math

import pytest
import torch
import torch.nn.functional as F

from ssmpipe.models.s4 import S4, diagonalised
from ssmpipe.models.s4d import S4D, eigenvalues
from ssmpipe.models.selective import Selective
from ssmpipe.models.sequence import SequenceModel
from ssmpipe.theory import (
    autocorrelation,
    dt_autocorr,
    gram_condition,
    gram_matrix,
    impulse_states,
    input_stats,
    lambda_max,
    layer_inputs,
    memory_capacity,
    memory_function,
    model_tau,
    rho_A,
    s2,
    s4_system,
    s4d_system,
    selective_rho_A,
    spectral_abscissa,
    tau,
    tau_scaling,
)

f64 = torch.float64


# ---------------------------------------------------------------- 000: τ


def tau_by_loops(kernel, u):
    """τ per channel straight from its definition: batch moments and sums as Python loops."""
    B, L_u, H = u.shape
    L = kernel.shape[1]
    out = []
    for h in range(H):
        abs_part, mean_part = 0.0, 0.0
        for j in range(L):
            t = L_u - 1 - j  # position paired with lag j
            col = [u[b, t, h].item() for b in range(B)]
            mu = sum(col) / B
            sigma = math.sqrt(sum((c - mu) ** 2 for c in col) / B)
            abs_part += abs(kernel[h, j].item()) * sigma
            mean_part += kernel[h, j].item() * mu
        out.append((abs_part + abs(mean_part)) ** 2)
    return torch.tensor(out, dtype=f64)


@pytest.mark.parametrize("L_kernel,L_u", [(12, 12), (7, 12)])
def test_tau_equals_its_definition(L_kernel, L_u):
    torch.manual_seed(0)
    H, B = 3, 9
    t = torch.arange(L_u, dtype=f64)[None, :, None]
    u = 2.0 + torch.randn(B, L_u, H, dtype=f64) * (1 + 0.3 * t) + 0.1 * t  # mean and std vary along the sequence
    kernel = torch.randn(H, L_kernel, dtype=f64)
    mean, std = input_stats(u)
    assert mean.shape == std.shape == (L_u, H)
    torch.testing.assert_close(tau(kernel, mean, std), tau_by_loops(kernel, u), rtol=1e-12, atol=0)
    kernel.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda k: tau(k, mean, std), (kernel,))
    torch.testing.assert_close(tau_scaling(torch.tensor([4.0, 0.25], dtype=f64)), torch.tensor([0.5, 2.0], dtype=f64))


def processes(B, L, H, seed):
    """Input processes with very different (μ, K): white, constant mean 5, growing variance (b = 1), random walk."""
    g = torch.Generator().manual_seed(seed)
    e = torch.randn(B, L, H, dtype=f64, generator=g)
    t = torch.arange(L, dtype=f64)[None, :, None]
    return {"white": e, "mean 5": 5 + e, "variance 1 + t": e * (1 + t).sqrt(), "random walk": e.cumsum(1)}


@pytest.mark.parametrize("scheme", ["lin", "real"])
def test_tau_scaling_bounds_the_output_second_moment(scheme):
    """C ← C/√τ (τ from a batch) gives E[y_L²] ≤ 1 at L = 1000 for every process; unscaled, some exceed 1."""
    torch.manual_seed(1)
    L, H, B = 1000, 2, 400
    layer = S4D(H, 64, scheme=scheme).double()
    with torch.no_grad():
        layer.D.zero_()  # τ bounds the convolution k̄ ∗ u
    fit, fresh = processes(B, L, H, seed=2), processes(B, L, H, seed=3)
    unscaled, scaled_max = {}, 0.0
    for name, u in fit.items():
        with torch.no_grad():
            mean, std = input_stats(u)
            factor = tau_scaling(tau(layer.kernel(L), mean, std))  # (H)
            scaled = copy.deepcopy(layer)
            scaled.C_real.mul_(factor[:, None])
            scaled.C_imag.mul_(factor[:, None])
            unscaled[name] = layer(fresh[name])[:, -1].square().mean(0).max().item()
            same = scaled(u)[:, -1].square().mean(0)  # the batch τ came from: exact bound
            new = scaled(fresh[name])[:, -1].square().mean(0)  # an independent batch: up to sampling
        assert (same <= 1 + 1e-9).all(), (name, same)
        assert (new <= 1.25).all(), (name, new)
        scaled_max = max(scaled_max, same.max().item())
    assert max(unscaled.values()) > 10, unscaled
    assert unscaled["random walk"] > 1 and unscaled["variance 1 + t"] > 1 and unscaled["mean 5"] > 1, unscaled
    assert scaled_max > 0.02  # the bound is not vacuous


def deep_model(layers, d_model=4):
    info = {"input": "values", "d_input": 1, "n_out": 2, "target": "sequence"}
    return SequenceModel(layers, d_model, info, pooling="mean").double()


def test_layer_inputs_and_model_tau():
    torch.manual_seed(0)
    model = deep_model([S4D(4, 8, scheme="lin"), S4(4, 4), S4D(4, 8, scheme="inv")])
    x = 3 + torch.randn(16, 50, dtype=f64).cumsum(1)
    y_before = model(x)
    inputs = layer_inputs(model, x)
    assert len(inputs) == 3 and all(u.shape == (16, 50, 4) and not u.requires_grad for u in inputs)
    assert all(not layer._forward_pre_hooks for layer in model.layers)  # hooks removed
    torch.testing.assert_close(model(x), y_before, rtol=0, atol=0)
    with torch.no_grad():
        h = model.encoder(x[..., None])
        for k, (ssm, norm) in enumerate(zip(model.layers, model.norms)):
            torch.testing.assert_close(inputs[k], h, rtol=1e-12, atol=1e-12)
            h = norm(h + F.gelu(ssm(h)))
    taus = model_tau(model, x)
    for layer, u, t in zip(model.layers, inputs, taus):
        torch.testing.assert_close(t, tau(layer.kernel(50), *input_stats(u)), rtol=1e-12, atol=0)
        assert t.shape == (4,) and (t > 0).all()
    sum(t.sum() for t in taus).backward()  # the regularizer λ·τ trains C, A, Δ
    assert model.layers[0].C_real.grad.abs().sum() > 0 and model.layers[1].B_real.grad.abs().sum() > 0
    assert model.encoder.weight.grad is None  # input statistics are data

    with pytest.raises(TypeError, match="LTI layer"):
        model_tau(deep_model([S4D(4, 8), Selective(4, 4)]), x)


# ---------------------------------------------------------------- 002: autocorrelation, Δ, Gram


def test_autocorrelation_and_lambda_max_match_definitions():
    torch.manual_seed(0)
    u = torch.randn(5, 7, 3, dtype=f64)
    R = sum(torch.outer(u[b, :, h], u[b, :, h]) for b in range(5) for h in range(3)) / 15
    torch.testing.assert_close(autocorrelation(u), R)
    torch.testing.assert_close(autocorrelation(u[..., 0]), sum(torch.outer(v, v) for v in u[..., 0]) / 5)
    top = torch.linalg.eigvalsh(R)[-1]
    torch.testing.assert_close(lambda_max(u), top)  # 15 samples > L = 7: L×L side
    torch.testing.assert_close(lambda_max(u[:2, :, 0]), torch.linalg.eigvalsh(autocorrelation(u[:2, :, 0]))[-1])
    X, L = u.transpose(1, 2).flatten(0, 1), 7  # stationary: Toeplitz of r(k)
    r = [sum((X[:, t] * X[:, t + k]).sum() for t in range(L - k)) / (15 * L) for k in range(L)]
    T = torch.stack([torch.stack([r[abs(i - j)] for j in range(L)]) for i in range(L)])
    torch.testing.assert_close(lambda_max(u, stationary=True), torch.linalg.eigvalsh(T)[-1])


def loglog_slope(xs, ys):
    x, y = torch.log(torch.tensor(xs, dtype=f64)), torch.log(torch.tensor(ys, dtype=f64))
    return (((x - x.mean()) * (y - y.mean())).sum() / (x - x.mean()).square().sum()).item()


def test_dt_rule_scales_as_the_paper_says():
    """Δ = 1/√(L λ_max), λ_max from data: ∝ L^{-1/2} for white noise, ∝ L^{-1} for u_t = the same value for all t."""
    g = torch.Generator().manual_seed(0)
    Ls, S = [64, 128, 256, 512, 1024, 2048], 256
    white = [torch.randn(S, L, dtype=f64, generator=g) for L in Ls]
    const = [torch.randn(S, 1, dtype=f64, generator=g).expand(S, L) for L in Ls]
    dt_white = [dt_autocorr(L, lambda_max(u, stationary=True)).item() for L, u in zip(Ls, white)]
    assert abs(loglog_slope(Ls, dt_white) + 0.5) < 0.1
    dt_const = [dt_autocorr(L, lambda_max(u)).item() for L, u in zip(Ls, const)]
    assert abs(loglog_slope(Ls, dt_const) + 1.0) < 0.1
    # The plain estimate from S sequences is biased up to the Marchenko–Pastur edge (1 + √(L/S))² when L ~ S:
    # white noise then looks correlated and the rule gives a too-steep Δ(L).
    plain = [lambda_max(u).item() for u in white]
    assert plain[-1] == pytest.approx((1 + math.sqrt(Ls[-1] / S)) ** 2, rel=0.1)
    assert loglog_slope(Ls, [dt_autocorr(L, lm).item() for L, lm in zip(Ls, plain)]) < -0.65
    assert dt_autocorr(100, 4.0, c=2.0).item() == pytest.approx(0.1)


def zoh(lam, dt):
    """ZOH (Ā, B̄) of a diagonal system with B = 1."""
    A_bar = torch.exp(dt * lam)
    return A_bar, (A_bar - 1) / lam


def test_gram_matrix_equals_its_definition():
    torch.manual_seed(0)
    lam = torch.complex(-torch.rand(2, 3, dtype=f64), 5 * torch.rand(2, 3, dtype=f64))  # (H N) diagonal
    A_bar, B_bar = zoh(lam, 0.1)
    M = torch.randn(2, 4, 4, dtype=f64) / 3  # dense, real
    b = torch.randn(2, 4, dtype=f64)
    for A, Bv, dense in [(A_bar, B_bar, False), (M, b, True), (M.to(torch.complex128) * 1j**0.5, b + 0j, True)]:
        L = 37
        for h in range(2):
            alphas = []
            for k in range(L):
                Ak = torch.linalg.matrix_power(A[h], k) if dense else torch.diag(A[h]) ** k
                a = (Ak @ Bv[h]) if dense else Ak.diagonal() * Bv[h]
                alphas.append(torch.cat([a.real, a.imag]) if a.is_complex() else a)
            G = sum(torch.outer(a, a) for a in alphas)
            torch.testing.assert_close(gram_matrix(A, Bv, L)[h], G, rtol=1e-10, atol=1e-12)
            torch.testing.assert_close(impulse_states(A, Bv, L)[h], torch.stack(alphas), rtol=1e-10, atol=1e-13)
    cond = gram_condition(A_bar, B_bar, 50)
    ev = torch.linalg.eigvalsh(gram_matrix(A_bar, B_bar, 50))
    torch.testing.assert_close(cond, ev[..., -1] / ev[..., 0], rtol=1e-6, atol=0)


def test_gram_condition_versus_imaginary_scale():
    """SPEC 002: Im λ sets the Gram conditioning. S4D sweep form λ_n = −½ + i·s·π·n, N = 64, L = 1024.
    Found: κ falls as s grows from 0 (s = 0: all eigenvalues equal, singular), as long as the discrete phases s·π·Δ·n
    stay apart mod 2π; once s·Δ·m ∈ 2ℤ for some m < N/2, modes n and n + m coincide and κ is singular again.
    "Singular" is the numerical rank (σ_min ≤ σ_max·L·ε), the same verdict on every machine."""
    N, L = 64, 1024
    kappa = {}
    for dt, scales in ((1e-3, (0.0, 1.0, 10.0)), (1e-2, (0.0, 0.3, 0.5, 1.0, 10.0))):
        for s in scales:
            kappa[dt, s] = gram_condition(*zoh(eigenvalues("sweep", N, -0.5, s).to(torch.complex128), dt), L).item()
    assert kappa[1e-3, 0.0] == math.inf and kappa[1e-2, 0.0] == math.inf  # all modes alike
    assert math.inf > kappa[1e-2, 0.3] > kappa[1e-2, 0.5] > kappa[1e-2, 1.0]  # falls with s
    assert kappa[1e-2, 1.0] < 100 and kappa[1e-3, 10.0] < 10  # near-orthogonal modes
    assert kappa[1e-3, 1.0] == math.inf  # phases 1e-3·π apart: below float64
    assert kappa[1e-2, 10.0] == math.inf  # s·Δ = 0.1: modes n, n + 20 alias


def test_gram_condition_decides_rank_with_a_relative_tolerance():
    """Singular is decided by σ_min ≤ σ_max·max(L, n)·ε, never by an exact zero: the same verdict on every BLAS."""
    A = torch.tensor([0.9, 0.5], dtype=f64)
    for scale in (1.0, 1e-150, 1e150):  # the verdict is scale-free
        assert math.isfinite(gram_condition(A, scale * torch.ones(2, dtype=f64), 20).item())
        tiny = torch.tensor([0.9, 0.9 * (1 + 1e-15)], dtype=f64)  # modes equal up to rounding
        assert gram_condition(tiny, scale * torch.ones(2, dtype=f64), 20).item() == math.inf
    # a real mode's [Im] half never moves: left out, not counted as a zero singular value
    assert math.isfinite(
        gram_condition(torch.tensor([0.9 + 0j, 0.5 + 0.5j]), torch.ones(2, dtype=torch.complex128), 20).item()
    )


# ---------------------------------------------------------------- 003: memory function


def test_memory_function_equals_the_direct_formula():
    torch.manual_seed(0)
    lam = torch.complex(-0.2 - torch.rand(4, dtype=f64), 3 * torch.rand(4, dtype=f64))
    A_bar, B_bar = zoh(lam, 0.3)
    for T, horizon in [(30, None), (30, 80)]:
        X = impulse_states(A_bar, B_bar, horizon or T)  # (K 8)
        G_inv = torch.linalg.inv(X.T @ X)
        direct = torch.stack([X[t] @ G_inv @ X[t] for t in range(T)])
        torch.testing.assert_close(memory_function(A_bar, B_bar, T, horizon), direct, rtol=1e-8, atol=1e-10)
    assert memory_capacity(A_bar, B_bar, 30).item() == pytest.approx(8, abs=1e-8)  # K = T: MC = rank
    assert memory_capacity(A_bar, B_bar, 30, horizon=400).item() < 8 - 1e-3  # infinite past: MC < n


def test_memory_function_is_invariant_under_similarity():
    torch.manual_seed(0)
    N, T = 6, 200
    lam = torch.complex(-0.05 - torch.rand(N, dtype=f64), 4 * torch.rand(N, dtype=f64))
    A_bar, B_bar = zoh(lam, 0.2)  # diagonal, complex: n = 12
    S = torch.eye(N, dtype=torch.complex128) + 0.4 * torch.randn(N, N, dtype=torch.complex128)
    A_sim = S @ torch.diag(A_bar) @ torch.linalg.inv(S)
    mf, mf_sim = memory_function(A_bar, B_bar, T), memory_function(A_sim, S @ B_bar, T)
    torch.testing.assert_close(mf_sim, mf, rtol=0, atol=1e-8)
    torch.testing.assert_close(
        memory_function(A_bar, B_bar, T, 2000), memory_function(A_sim, S @ B_bar, T, 2000), rtol=0, atol=1e-8
    )
    M = torch.randn(N, N, dtype=f64) / 3  # real dense system, real similarity
    b, R = torch.randn(N, dtype=f64), torch.eye(N, dtype=f64) + 0.4 * torch.randn(N, N, dtype=f64)
    torch.testing.assert_close(
        memory_function(R @ M @ torch.linalg.inv(R), R @ b, 50), memory_function(M, b, 50), rtol=0, atol=1e-8
    )
    assert (mf >= 0).all() and (mf <= 1 + 1e-12).all() and mf.sum() <= 2 * N + 1e-6


@pytest.mark.parametrize("perturb", [False, True])
def test_s4_memory_equals_its_diagonalisation(perturb):
    torch.manual_seed(0)
    N, T = 8, 512
    layer = S4(2, N).double()
    with torch.no_grad():
        layer.log_dt.copy_(torch.log(torch.tensor([0.02, 0.05], dtype=f64)))
        if perturb:  # leave the real HiPPO init: 2N real states
            for p in (layer.B_real, layer.B_imag, layer.Lambda_imag, layer.P_real):
                p.add_(0.2 * torch.randn_like(p))
    mf_s4 = memory_function(*s4_system(layer), T)  # dense Ā (H N N)
    mf_diag = memory_function(*s4d_system(diagonalised(layer)), T)  # diagonal Ā (H N)
    torch.testing.assert_close(mf_diag, mf_s4, rtol=0, atol=1e-6)
    n_real = 2 * N if perturb else N  # HiPPO-LegS is real: N of 2N at init
    torch.testing.assert_close(mf_s4.sum(-1), torch.full((2,), float(n_real), dtype=f64), rtol=0, atol=1e-6)


@pytest.mark.parametrize("scheme", ["lin", "inv", "real", "random", "sweep"])
def test_memory_function_bounds_for_s4d_inits(scheme):
    torch.manual_seed(0)
    N, T = 32, 1024
    layer = S4D(2, N, scheme=scheme, real=0.0, imag=0.5).double()
    A_bar, B_bar = s4d_system(layer)
    assert A_bar.shape == B_bar.shape == (2, N // 2)
    _, CB = layer.discrete()
    torch.testing.assert_close(B_bar * torch.complex(layer.C_real, layer.C_imag), CB)
    torch.testing.assert_close(A_bar, layer.discrete()[0].exp(), rtol=1e-12, atol=1e-12)
    mf = memory_function(A_bar, B_bar, T, horizon=4 * T)  # (2 T)
    assert (mf >= -1e-12).all() and (mf <= 1 + 1e-9).all()
    assert (memory_capacity(A_bar, B_bar, T, horizon=4 * T) <= N + 1e-6).all()
    assert (memory_capacity(A_bar, B_bar, T) <= N + 1e-6).all()


# ---------------------------------------------------------------- 001: S₂, s_A, ρ_A


def test_s2_closed_form_equals_the_sum():
    for rho in [0.0, 0.3, 0.9, 0.99, 1.0, 1.05, -0.5]:
        for T in [1, 2, 10, 100]:
            direct = sum(t * rho**t for t in range(1, T + 1))
            torch.testing.assert_close(s2(rho, T), torch.tensor(direct, dtype=f64), rtol=1e-9, atol=1e-12)
    rhos = torch.tensor([0.5, 1.0, 1.1], dtype=f64)
    torch.testing.assert_close(s2(rhos, 5), torch.stack([s2(r.item(), 5) for r in rhos]))
    assert all(s2(0.9, T) <= 90 + 1e-9 for T in (10, 100, 10_000))  # ρ < 1: ≤ ρ/(1 − ρ)², bounded in T
    assert s2(1.01, 2000) > 1e10  # ρ > 1: exponential in T


def test_spectral_abscissa():
    torch.manual_seed(0)
    layer = Selective(4, 4, s_A=-0.05)
    assert spectral_abscissa(layer.A) == layer.spectral_abscissa() == torch.tensor(-0.05)
    lam = eigenvalues("lin", 8)
    assert spectral_abscissa(lam).item() == pytest.approx(-0.5)
    M = torch.tensor([[-1.0, 5.0], [0.0, -2.0]], dtype=f64)  # non-normal: eigenvalues −1, −2
    assert spectral_abscissa(M, dense=True).item() == pytest.approx(-1.0)
    A, *_ = S4(1, 8).double().continuous_system()
    assert spectral_abscissa(A, dense=True).item() == pytest.approx(torch.linalg.eigvals(A).real.max().item())
    A_param = layer.A.detach().clone().requires_grad_(True)
    spectral_abscissa(A_param).backward()
    assert A_param.grad.sum() == 1


@pytest.mark.parametrize("s_A", [-0.1, -0.02, 0.0])
def test_rho_A_bounds_the_per_step_decay(s_A):
    torch.manual_seed(0)
    layer = Selective(4, 4, s_A=s_A).double()
    u = 2 * torch.randn(8, 300, 4, dtype=f64)
    delta = F.softplus(layer.p + u @ layer.q).detach()  # (B L)
    rho = selective_rho_A(layer, u)
    assert (torch.exp(delta * s_A) <= rho + 1e-12).all()
    B_q, B_u = layer.q.norm().item(), u.norm(dim=-1).max().item()
    expected = (1 + math.exp(layer.p.item() - B_q * B_u)) ** s_A
    assert rho.item() == pytest.approx(expected, rel=1e-12)
    assert rho_A(0.0, 1.0, 0.0, -1.0).item() == pytest.approx(0.5)  # (1 + e^0)^{−1}
    assert rho_A(0.0, 1.0, 0.0, -1.0, eta=-1.0).item() == pytest.approx(0.25)
