"""The S4D layer: FFT path against a plain recurrence (float64), eigenvalue inits, frozen A."""

import math

import pytest
import torch

from ssmpipe.models.s4d import S4D, eigenvalues, recurrence

CASES = [
    (4, 16, "sweep", -0.5, 1.0, 0.01, "zoh"),
    (8, 33, "sweep", 0.0, 1.0, 0.1, "zoh"),
    (16, 64, "sweep", -1.0, 10.0, 0.05, "zoh"),
    (2, 8, "sweep", 0.0, 0.0, 0.5, "zoh"),
    (8, 40, "lin", 0, 0, 0.05, "bilinear"),
    (16, 64, "inv", 0, 0, 0.01, "zoh"),
    (8, 20, "real", 0, 0, 0.1, "bilinear"),
    (8, 20, "random", 0, 0, 0.02, "zoh"),
    (4, 16, "sweep", 0.0, 1.0, 0.3, "bilinear"),
]


@pytest.mark.parametrize("N,L,scheme,real,imag,dt,disc", CASES)
def test_fft_equals_recurrence(N, L, scheme, real, imag, dt, disc):
    torch.manual_seed(0)
    layer = S4D(3, N, scheme=scheme, real=real, imag=imag, dt_min=dt, dt_max=dt, discretization=disc).double()
    u = torch.randn(2, L, 3, dtype=torch.float64, requires_grad=True)
    y_fast, y_ref = layer(u), recurrence(layer, u)
    torch.testing.assert_close(y_fast, y_ref, rtol=1e-6, atol=1e-9)
    g = torch.randn_like(y_fast)
    grads_fast = torch.autograd.grad((y_fast * g).sum(), [u, *layer.parameters()])
    grads_ref = torch.autograd.grad((y_ref * g).sum(), [u, *layer.parameters()])
    for a, b in zip(grads_fast, grads_ref):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-9)


def test_eigenvalue_schemes_match_their_formulas():
    N = 8
    n = torch.arange(N // 2, dtype=torch.float64)
    lin, inv, real = eigenvalues("lin", N), eigenvalues("inv", N), eigenvalues("real", N)
    torch.testing.assert_close(lin, torch.complex(torch.full_like(n, -0.5), math.pi * n).to(lin.dtype))
    torch.testing.assert_close(
        inv, torch.complex(torch.full_like(n, -0.5), N / math.pi * (N / (2 * n + 1) - 1)).to(inv.dtype)
    )
    torch.testing.assert_close(real, torch.complex(-(n + 1), torch.zeros_like(n)).to(real.dtype))
    sweep = eigenvalues("sweep", N, real=-0.25, imag=3.0)
    torch.testing.assert_close(sweep, torch.complex(torch.full_like(n, -0.25), 3 * math.pi * n).to(sweep.dtype))
    linear, step = eigenvalues("linear", N), eigenvalues("step", N)
    torch.testing.assert_close(linear, torch.complex(-(n + 1) / (N // 2), math.pi * n).to(linear.dtype))
    torch.testing.assert_close(
        step, torch.complex(torch.tensor([-0.05, -0.05, -1.0, -1.0], dtype=torch.float64), math.pi * n).to(step.dtype)
    )
    rand = eigenvalues("random", 64)
    assert (rand.real <= 0).all() and (rand.real >= -1).all() and (rand.imag >= 0).all()
    assert rand.real.unique().numel() == 32
    with pytest.raises(ValueError, match="unknown eigenvalue init scheme 'legs'"):
        eigenvalues("legs", N)


def test_layer_uses_the_scheme_and_the_dt_range():
    layer = S4D(2, 8, scheme="sweep", real=-0.25, imag=3.0)
    assert torch.all(layer.A_real == -0.25)
    torch.testing.assert_close(layer.A_imag[0], 3.0 * math.pi * torch.arange(4.0))
    assert layer.log_dt.exp().min() >= 1e-3 and layer.log_dt.exp().max() <= 1e-1


def test_frozen_A_and_dt_stay_unchanged_by_training():
    torch.manual_seed(0)
    layer = S4D(4, 8, scheme="lin", train_A=False)
    frozen = {k: v.clone() for k, v in layer.named_buffers()}
    assert set(frozen) == {"log_dt", "A_real", "A_imag"}
    assert {k for k, _ in layer.named_parameters()} == {"C_real", "C_imag", "D"}
    C_before = layer.C_real.detach().clone()
    opt = torch.optim.Adam(layer.parameters(), lr=0.1)
    for _ in range(5):
        opt.zero_grad()
        layer(torch.randn(2, 32, 4)).pow(2).mean().backward()
        opt.step()
    for name, value in layer.named_buffers():
        assert torch.equal(value, frozen[name]), name
    assert not torch.equal(layer.C_real, C_before)


def test_plain_block_is_the_ssm_alone_and_residual_adds_the_norm():
    from ssmpipe.models.sequence import SequenceModel

    info = {"input": "tokens", "d_input": 2, "target": "sequence", "n_out": 2}
    torch.manual_seed(0)
    layer = S4D(4, 4)
    plain = SequenceModel([layer], 4, info, "last", block="plain")
    residual = SequenceModel([layer], 4, info, "last", block="residual")
    x = torch.randint(0, 2, (3, 10))
    h, inputs = plain.trunk(x)
    torch.testing.assert_close(h, layer(plain.encoder(x)))  # SPEC 001: embedding, SSM, readout
    torch.testing.assert_close(plain(x), plain.decoder(h[:, -1]))
    assert not any("norms" in name for name, _ in plain.named_parameters())
    assert any("norms" in name for name, _ in residual.named_parameters())
    assert not torch.allclose(residual.trunk(x)[0], h)


BATCHED_CASES = [  # block, target, pooling, input, discretization, train_A, n_layers, L (> 256: the FFT convolution)
    ("residual", "position", "last", "tokens", "zoh", True, 1, 12),
    ("residual", "sequence", "last", "real", "bilinear", False, 2, 12),
    ("plain", "sequence", "mean", "tokens", "zoh", True, 2, 9),
    ("plain", "position", "last", "real", "zoh", False, 1, 300),
    ("residual", "sequence", "mean", "tokens", "bilinear", True, 2, 300),
]


@pytest.mark.parametrize("block,target,pooling,inp,disc,train_A,n_layers,L", BATCHED_CASES)
def test_batched_packed_model_equals_each_points_own_model(block, target, pooling, inp, disc, train_A, n_layers, L):
    """The natively batched forward (outputs, τ, all gradients) against each point's SequenceModel, in float64."""
    from ssmpipe.models import PackedModel, SequenceModel, packing

    torch.manual_seed(0)
    info = {"input": inp, "d_input": 5 if inp == "tokens" else 3, "target": target, "n_out": 4}
    models = [
        SequenceModel(
            [S4D(6, 4, real=-0.4 * k, imag=0.5 + k, discretization=disc, train_A=train_A) for _ in range(n_layers)],
            6,
            info,
            pooling,
            block,
        ).double()
        for k in range(5)
    ]
    packed = PackedModel(models)
    assert packed.batched
    x = torch.randint(0, 5, (5, 3, L)) if inp == "tokens" else torch.randn(5, 3, L, 3, dtype=torch.float64)
    sub = slice(1, 4)  # a sub-pack: gradients land in its slices only
    out, taus = packed(x[sub], sub, with_tau=True)  # (3 B [L] C), (3 n_layers H)
    g_out, g_tau = torch.randn_like(out), torch.randn_like(taus)
    ((out * g_out).sum() + (taus * g_tau).sum()).backward()
    for j, k in enumerate(range(1, 4)):
        want_out, want_tau = models[k](x[k], with_tau=True)
        torch.testing.assert_close(out[j], want_out, rtol=1e-9, atol=1e-10)
        torch.testing.assert_close(taus[j], want_tau, rtol=1e-9, atol=1e-10)
        ((want_out * g_out[j]).sum() + (want_tau * g_tau[j]).sum()).backward()
        for name, p in models[k].named_parameters():
            torch.testing.assert_close(packed.params[name].grad[k], p.grad, rtol=1e-8, atol=1e-10, msg=name)
    for name, p in packed.params.items():  # points outside the sub-pack got no gradient
        assert torch.equal(p.grad[[0, 4]], torch.zeros_like(p.grad[[0, 4]])), name
    # all five at once, in sub-packs of two (the last one holds one point): the same outputs
    packing.SUBPACK_ELEMENTS, saved = 2 * 3 * L * 6 // torch.get_num_threads(), packing.SUBPACK_ELEMENTS
    try:
        assert [(s.start, s.stop) for s in packed.subpacks(x[0])] == [(0, 2), (2, 4), (4, 5)]
        with torch.no_grad():
            whole = packed(x)
    finally:
        packing.SUBPACK_ELEMENTS = saved
    for k in range(5):
        torch.testing.assert_close(whole[k], models[k](x[k]), rtol=1e-9, atol=1e-10)


@pytest.mark.parametrize("block,target,pooling,inp,disc,train_A,n_layers,L", BATCHED_CASES)
def test_batched_measures_equal_each_points_own_probe(block, target, pooling, inp, disc, train_A, n_layers, L):
    """measure_packed's batched path (`batched.probe`, in uneven sub-packs) gives every point the measures
    `measures.probe` gives its own SequenceModel, in float64; with the memory measures it maps `probe` itself."""
    from ssmpipe import measures
    from ssmpipe.models import PackedModel, SequenceModel, packing

    torch.manual_seed(0)
    info = {"input": inp, "d_input": 5 if inp == "tokens" else 3, "target": target, "n_out": 4}
    models = [
        SequenceModel(
            [
                S4D(6, 4, real=-0.4 * k - 0.1 * i, imag=0.5 + k + i, discretization=disc, train_A=train_A)
                for i in range(n_layers)
            ],
            6,
            info,
            pooling,
            block,
        ).double()
        for k in range(5)
    ]
    packed = PackedModel(models)
    x = torch.randint(0, 5, (3, L)) if inp == "tokens" else torch.randn(3, L, 3, dtype=torch.float64)
    packing.SUBPACK_ELEMENTS, saved = 2 * 3 * L * 6 // torch.get_num_threads(), packing.SUBPACK_ELEMENTS
    try:
        assert len(packed.subpacks(x)) == 3
        got = measures.measure_packed(packed, x, with_memory=False)
    finally:
        packing.SUBPACK_ELEMENTS = saved
    for k, model in enumerate(models):
        with torch.no_grad():
            want = measures.probe(model, x, with_memory=False)
        assert set(got) == set(want)
        for name, value in want.items():
            torch.testing.assert_close(got[name][k], value, rtol=1e-6, atol=1e-7, equal_nan=True, msg=name)
    assert torch.isnan(got["mc"]).all() and not torch.isnan(got["tau"]).any()
    with_memory = measures.measure_packed(packed, x, with_memory=True)
    assert with_memory["mf"].shape == (5, L) and not torch.isnan(with_memory["mc"]).any()


@pytest.mark.parametrize("L", [1, 6, 17])
def test_convolutions_and_norm_have_the_gradients_of_their_formulas(L):
    """Hand-derived backwards against finite differences (gradcheck), and both convolutions against the direct sum."""
    from ssmpipe.models.batched import FFTConv, GeluResidualNorm, ToeplitzConv

    torch.manual_seed(L)
    u = torch.randn(2, 3, 2, L, dtype=torch.float64, requires_grad=True)  # (K H B L)
    k = torch.randn(2, 3, L, dtype=torch.float64, requires_grad=True)  # (K H L)
    direct = torch.stack([sum(k[..., j, None] * u[..., t - j] for j in range(t + 1)) for t in range(L)], -1)
    for conv in (ToeplitzConv, FFTConv):
        torch.testing.assert_close(conv.apply(u, k), direct, rtol=1e-10, atol=1e-10)
        assert torch.autograd.gradcheck(conv.apply, (u, k))
    y = torch.randn_like(u, requires_grad=True)
    w, b = (torch.randn(2, 3, dtype=torch.float64, requires_grad=True) for _ in range(2))
    assert torch.autograd.gradcheck(lambda *a: GeluResidualNorm.apply(*a, 1e-5), (u, y, w, b))
    norm = torch.nn.functional.layer_norm((u + torch.nn.functional.gelu(y)).movedim(1, -1), (3,), eps=1e-5)
    torch.testing.assert_close(
        GeluResidualNorm.apply(u, y, w, b, 1e-5), (norm * w[:, None, None] + b[:, None, None]).movedim(-1, 1)
    )
