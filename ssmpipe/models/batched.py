"""The packed SequenceModel computed natively batched: K points' forward pass in one channels-first layout (S4D
layers; selective layers where mamba-ssm's kernel takes all K points in one call, `selective_cuda`).

vmap(functional_call) over the single-point model runs K points in its (K B L H) layout: a transpose copy
around every FFT, a log-softmax over rows as wide as the class count, and one unfused pass per elementwise
op. Here the activations stay (K H B L): the convolution runs along the contiguous L (up to L = 256 as a
Toeplitz matmul in BLAS, which beats the FFT's padding, complex products and copies at these lengths; beyond
it by FFT), the skip D·u is folded into the kernel (k_0 + D), LayerNorm and the softmax reduce over an outer
dimension (vectorised across B·L), encoder and decoder are a gather and bmm, and the convolutions and
GELU → residual → LayerNorm are autograd Functions with hand-derived backwards (fewer passes over the
activations than autograd's op-by-op graph).
The reference is each point's own `SequenceModel.forward`; tests hold the two equal.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.func import functional_call, vmap

from ssmpipe.models import selective_cuda
from ssmpipe.models.s4d import S4D, discretize, vandermonde
from ssmpipe.models.selective import Selective
from ssmpipe.theory.tau import input_stats, tau


def all_s4d(model: nn.Module) -> bool:
    """Whether model is a SequenceModel whose layers are all S4D (`probe` measures those)."""
    return all(isinstance(layer, S4D) for layer in getattr(model, "layers", [None]))


def supports(model: nn.Module, device: torch.device | str = "cpu") -> bool:
    """Whether `forward` is the way to run K points of this single-point model on device: S4D layers anywhere;
    selective layers on a GPU where mamba-ssm's kernel runs (elsewhere vmap over the layer is the fast path)."""
    if all_s4d(model):
        return True
    selective = all(isinstance(layer, Selective) for layer in getattr(model, "layers", [None]))
    return selective and torch.device(device).type == "cuda" and selective_cuda.kernel() is not None


TOEPLITZ_MAX_L = 256  # up to this length the convolution is a Toeplitz matmul (O(L²) in BLAS), beyond it an FFT


def conv(u: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """Causal convolution y_t = Σ_{j≤t} k_j u_{t−j} along L: u (K H B L), k (K H L) -> y (K H B L)."""
    return (ToeplitzConv if u.shape[-1] <= TOEPLITZ_MAX_L else FFTConv).apply(u, k)


def toeplitz(k: torch.Tensor) -> torch.Tensor:
    """The lower-triangular Toeplitz matrices T_ij = k_{i−j} (i ≥ j, else 0): k (N L) -> T (N L L).

    r = (k reversed, L−1 zeros) read with strides (1, 1) is R_ij = r_{i+j} = T_{L−1−i, j}: T is R upside down.
    """
    N, L = k.shape
    r = torch.cat([k.flip(-1), k.new_zeros(N, L - 1)], -1)  # (N 2L−1)
    return r.as_strided((N, L, L), (2 * L - 1, 1, 1)).flip(1)  # (N L L)


def diagonal_sums(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """s_d = Σ_{t} (aᵀb)_{t, t−d} for d < L, i.e. Σ_{n,t} a_{nt} b_{n,t−d}: a, b (N B L) -> (N L).

    aᵀb is written into the right half of zeros (N L 2L); with row stride 2L+1 from offset 1 the rows of that
    buffer read diagonal L−1−e at column e (zeros where the diagonal has ended), so a column sum is s reversed.
    """
    N, _, L = a.shape
    buffer = a.new_empty(N, L, 2 * L)
    buffer[..., :L].zero_()
    torch.bmm(a.transpose(1, 2), b, out=buffer[..., L:])  # (N L L) = aᵀb
    skewed = buffer.as_strided((N, L, L), (2 * L * L, 2 * L + 1, 1), 1)  # [t, e] = (aᵀb)_{t, t−(L−1−e)}
    return torch.matmul(a.new_ones(1, L), skewed).squeeze(1).flip(-1)  # (N L)


class ToeplitzConv(torch.autograd.Function):
    """`conv` as y = u Tᵀ per channel (bmm): ∂u = ∂y T, ∂k_d = Σ_{b,t} ∂y_t u_{t−d} (`diagonal_sums`)."""

    @staticmethod
    def forward(ctx, u, k):
        K, H, B, L = u.shape
        T = toeplitz(k.reshape(K * H, L))  # (K·H L L)
        ctx.save_for_backward(u, T)
        return torch.bmm(u.reshape(K * H, B, L), T.transpose(1, 2)).view(K, H, B, L)

    @staticmethod
    def backward(ctx, dy):
        u, T = ctx.saved_tensors
        K, H, B, L = u.shape
        dy = dy.reshape(K * H, B, L)
        du = torch.bmm(dy, T).view(K, H, B, L) if ctx.needs_input_grad[0] else None
        dk = diagonal_sums(dy, u.reshape(K * H, B, L)).view(K, H, L) if ctx.needs_input_grad[1] else None
        return du, dk


class FFTConv(torch.autograd.Function):
    """`conv` by FFT, zero-padded to 2L; backward by the same padded FFTs (correlations):
    ∂u = k ⋆ ∂y, ∂k_d = Σ_{b,t} ∂y_t u_{t−d} (summed over the batch in the frequency domain)."""

    @staticmethod
    def forward(ctx, u, k):
        L = u.shape[-1]
        u_f = torch.fft.rfft(u, n=2 * L)  # (K H B L+1)
        k_f = torch.fft.rfft(k, n=2 * L)[:, :, None]  # (K H 1 L+1)
        ctx.save_for_backward(u_f, k_f)
        return torch.fft.irfft(u_f * k_f, n=2 * L)[..., :L]  # (K H B L)

    @staticmethod
    def backward(ctx, dy):
        u_f, k_f = ctx.saved_tensors
        L = dy.shape[-1]
        g_f = torch.fft.rfft(dy, n=2 * L)  # (K H B L+1)
        du = torch.fft.irfft(g_f * k_f.conj(), n=2 * L)[..., :L] if ctx.needs_input_grad[0] else None
        dk = torch.fft.irfft((g_f * u_f.conj()).sum(2), n=2 * L)[..., :L] if ctx.needs_input_grad[1] else None
        return du, dk


class GeluResidualNorm(torch.autograd.Function):
    """out = w·n + b, n = LayerNorm over channels (dim 1) of r = u + GELU(y): u, y (K H B L), w, b (K H) -> (K H B L).

    Backward (LayerNorm's, Ba et al. 2016): ∂n = w·∂out, ∂r = σ⁻¹(∂n − mean_H ∂n − n·mean_H(∂n·n)),
    ∂u = ∂r, ∂y = GELU′(y)·∂r, ∂w = Σ_{b,l} ∂out·n, ∂b = Σ_{b,l} ∂out. The weighted channel means are bmm
    with w, so ∂n is never stored.
    """

    @staticmethod
    def forward(ctx, u, y, w, b, eps: float):
        r = F.gelu(y).add_(u)  # (K H B L)
        r -= r.mean(1, keepdim=True)
        rstd = (r.square().mean(1, keepdim=True) + eps).rsqrt()  # (K 1 B L)
        n = r.mul_(rstd)
        ctx.save_for_backward(y, n, rstd, w)
        return torch.addcmul(b[..., None, None], n, w[..., None, None])

    @staticmethod
    def backward(ctx, dout):
        y, n, rstd, w = ctx.saved_tensors
        K, H, B, L = n.shape
        dout_n = dout * n  # (K H B L)
        dw, db = dout_n.sum((2, 3)), dout.sum((2, 3))  # (K H)
        w_mean = (w / H)[:, None]  # (K 1 H)
        m1 = torch.bmm(w_mean, dout.view(K, H, B * L)).view(K, 1, B, L)  # mean_H ∂n
        m2 = torch.bmm(w_mean, dout_n.view(K, H, B * L)).view(K, 1, B, L)  # mean_H ∂n·n
        dr = torch.addcmul(-m1, dout, w[..., None, None])
        dr.addcmul_(n, m2, value=-1).mul_(rstd)
        return dr, torch.ops.aten.gelu_backward(dr, y), dw, db, None


def encode(model: nn.Module, state: dict, x: torch.Tensor) -> torch.Tensor:
    """x: (K B L) tokens or (K B L [C]) values -> h (K H B L)."""
    K, B, L = x.shape[:3]
    if x.dtype == torch.long:
        table = state["encoder.weight"].transpose(1, 2)  # (K H V)
        index = x.reshape(K, 1, B * L).expand(K, table.shape[1], B * L)
        return table.gather(2, index).view(K, -1, B, L)  # (K H B L)
    values = x.reshape(K, B * L, -1).transpose(1, 2)  # (K C B·L)
    h = torch.baddbmm(state["encoder.bias"][..., None], state["encoder.weight"], values)
    return h.view(K, -1, B, L)


def kernel(layer: S4D, state: dict, prefix: str, L: int) -> torch.Tensor:
    """The S4D kernels of K points: (K H L)."""
    names = ("log_dt", "A_real", "A_imag", "C_real", "C_imag")
    log_A_bar, CB = discretize(*(state[prefix + n] for n in names), layer.discretization)  # (K H N/2)
    return vandermonde(CB, log_A_bar, L)


def selective(layer: Selective, state: dict, prefix: str, h: torch.Tensor) -> torch.Tensor:
    """The selective layers of K points on h (K H B L) -> (K H B L): Δ, B_t, C_t as `Selective.forward` forms them,
    then one scan for all K (`selective_cuda`); where that cannot run, the layer itself mapped over the points."""
    u = h.permute(0, 2, 3, 1)  # (K B L d)
    weights = {name: state[prefix + name] for name, _ in layer.named_parameters()}
    if not selective_cuda.usable(u):
        return vmap(lambda w, u1: functional_call(layer, w, (u1,)))(weights, u).permute(0, 3, 1, 2)
    delta = F.softplus(weights["p"][:, None] + torch.einsum("kbld,kd->kbl", u, weights["q"]))  # (K B L)
    B_t = torch.einsum("kbld,knd->kbln", u, weights["W_B"])  # (K B L N)
    C_t = torch.einsum("kbld,knd->kbln", u, weights["W_C"])
    return selective_cuda.packed_scan(delta, weights["A"], B_t, C_t, u).permute(0, 3, 1, 2)  # (K H B L)


def forward(model: nn.Module, state: dict, x: torch.Tensor, with_tau: bool = False):
    """K points of the SequenceModel `model` (its structure only; weights from state, name -> (K ...)) on x (K B ...):
    -> (K B [L] n_out) as SequenceModel.forward gives per point (a view of a (K n_out B [L]) tensor);
    with_tau (S4D layers) also τ (K n_layers H) of every layer, from its input's batch statistics (detached)."""
    h = encode(model, state, x)  # (K H B L)
    L = h.shape[-1]
    taus = []
    for i, layer in enumerate(model.layers):
        if isinstance(layer, Selective):
            y = selective(layer, state, f"layers.{i}.", h)
        else:
            k = kernel(layer, state, f"layers.{i}.", L)  # (K H L)
            if with_tau:
                u = h.detach().permute(0, 2, 3, 1)  # (K B L H)
                taus.append(vmap(lambda k1, u1: tau(k1, *input_stats(u1)))(k, u))  # (K H)
            D = state[f"layers.{i}.D"]  # (K H), the skip D·u as k_0 += D
            y = conv(h, torch.cat([k[..., :1] + D[..., None], k[..., 1:]], -1))
        if model.norms is None:
            h = y
        else:
            h = GeluResidualNorm.apply(h, y, state[f"norms.{i}.weight"], state[f"norms.{i}.bias"], model.norms[i].eps)
    if model.pooling == "last":
        h = h[..., -1]  # (K H B)
    elif model.pooling == "mean":
        h = h.mean(-1)  # (K H B)
    K, H = h.shape[:2]
    out = torch.baddbmm(state["decoder.bias"][..., None], state["decoder.weight"], h.reshape(K, H, -1))
    out = out.view(K, -1, *h.shape[2:]).movedim(1, -1)  # (K B [L] n_out)
    return (out, torch.stack(taus, 1)) if with_tau else out


def probe(model: nn.Module, state: dict, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """`measures.probe` of K points at once, the measures that need no memory function (mc and gram_cond NaN; rho_A
    and S2 NaN, as for any LTI layer): x (K B L ...) -> name -> (K), tau_layers (K n_layers)."""
    _, taus = forward(model, state, x, with_tau=True)  # (K n_layers H)
    u = encode(model, state, x)  # (K H B L), the first layer's input
    k = kernel(model.layers[0], state, "layers.0.", u.shape[-1])  # (K H L)
    y_last = torch.einsum("khbl,khl->khb", u, k.flip(-1))  # its convolution at t = L−1 (no D·u)
    real = torch.cat([state[f"layers.{i}.A_real"].clamp(max=0.0).flatten(1) for i in range(len(model.layers))], 1)
    imag = torch.cat([state[f"layers.{i}.A_imag"].flatten(1) for i in range(len(model.layers))], 1)  # (K n)
    log_dt = torch.cat([state[f"layers.{i}.log_dt"] for i in range(len(model.layers))], 1)  # (K n_layers·H)
    nan = taus.new_full(taus.shape[:1], float("nan"))
    out = {
        "tau": taus.mean((1, 2)),
        "tau_max": taus.amax((1, 2)),
        "tau_layers": taus.mean(2),
        "mc": nan,
        "gram_cond": nan,
        "eig_real_min": real.amin(1),
        "eig_real_max": real.amax(1),
        "eig_imag_max": imag.amax(1),
        "s_A": real.amax(1),
        "output_scale": y_last.abs().mean((1, 2)),
        "dt": log_dt.mean(1).exp(),
    }
    undefined = nan.double()  # ρ_A, S₂: selective layers only (float64)
    return {name: v.float() for name, v in out.items()} | {"rho_A": undefined, "S2": undefined}
