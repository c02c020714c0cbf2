"""What every run logs beyond its losses: the papers' measures, per run and epoch.

Beyond any one paper: every run carries all of them (where its layer kind defines them),
so any sweep can be re-read in the light of any paper. Columns (NaN where undefined):

    tau, tau_max       000: τ of the LTI layers (mean / max over channels and layers), on the probe batch
    tau_layers         000: τ of each LTI layer (mean over its channels), a list, first layer first
    mf                 003: the memory function MF(τ) for τ < T (a list of T floats; mean over channels and
                       layers), at init and at the end (null at other epochs), of the stationary state (Gram sum
                       over 4T steps: with T, Σ MF would be a rank)
    mc                 003: memory capacity Σ_{τ<T} MF(τ), at init and at the end
    gram_cond          002: condition number κ of the Gram matrix Σ_{k<T} α_k α_kᵀ (median over channels and
                       layers), at init and at the end; capped at GRAM_SINGULAR (numerically singular: repeated
                       or aliased modes)
    s_A                001: spectral abscissa max Re λ(A) over the layers
    rho_A              001: ρ_A = (1 + e^{p − B_q·B_u})^{s_A}, max over the selective layers (B_u on the probe batch)
    S2                 001: S₂ = Σ_{t=1}^{T} t·ρ_A^t of that ρ_A, T = seq_len (float64: S₂ ~ ρ_A^T); both NaN for LTI
    dt                 002: geometric mean of Δ, exp(mean log Δ) over the LTI layers' channels; NaN for selective
    eig_real_min/max, eig_imag_max   eigenvalue summary of the continuous state matrices
    output_scale       E|y_{L−1}| of the first SSM layer's output (less its D·u skip) on the probe batch
    grad_norm          the run's gradient norm, mean over the epoch's steps (from the training loop)
    chance_acc         max_c #{y = c} / #{y counted}: test_acc of always answering the test split's commonest label

All packed points are measured at once: `probe` is a pure tensor function of one model,
mapped over the stacked parameters like the forward pass.
"""

from __future__ import annotations

import torch
from torch.func import functional_call, vmap

from ssmpipe.columns import GRAM_SINGULAR
from ssmpipe.data import IGNORE
from ssmpipe.models import batched
from ssmpipe.models.s4 import S4
from ssmpipe.models.s4d import S4D
from ssmpipe.models.selective import Selective
from ssmpipe.theory import gram_condition, input_stats, memory_function, s2, s4_system, s4d_system, selective_rho_A, tau

NAN = float("nan")
MEMORY_HORIZON = 4  # × T: how far back the Gram sum of the memory capacity reaches
FLOAT64 = ("rho_A", "S2")  # kept in float64: S₂ grows like ρ_A^T, past float32's range at s_A > 0 and long T


def chance_accuracy(y: torch.Tensor) -> float:
    """The accuracy of always answering y's most frequent label, over the targets `evaluate` counts (≠ IGNORE):
    max_c #{y = c} / #{y ≠ IGNORE}. y (n [L]); NaN for float (regression) targets or when none is counted."""
    counted = y[y != IGNORE]  # (targets counted)
    if y.is_floating_point() or counted.numel() == 0:
        return NAN
    return torch.unique(counted, return_counts=True)[1].max().item() / counted.numel()


def geometric_dt(log_dts: list[torch.Tensor]) -> torch.Tensor:
    """SPEC 002's timescale of a model, exp(mean log Δ) over the channels of all layers: n_layers × (... H) -> (...)."""
    return torch.cat(log_dts, -1).mean(-1).exp()


def eigenvalues(layer) -> torch.Tensor:
    """Eigenvalues of a layer's continuous state matrices, flattened (complex)."""
    if isinstance(layer, S4D):
        return torch.complex(layer.A_real.clamp(max=0.0), layer.A_imag).flatten()
    if isinstance(layer, S4):
        A, *_ = layer.continuous_system()
        return torch.linalg.eigvals(A.to(torch.complex128)).flatten().to(torch.complex64)
    if isinstance(layer, Selective):
        return torch.complex(layer.A.flatten(), torch.zeros_like(layer.A.flatten()))
    raise TypeError(f"no eigenvalues for {type(layer).__name__}")


def probe(model, x: torch.Tensor, with_memory: bool) -> dict[str, torch.Tensor]:
    """The measures of one single-point SequenceModel on a probe batch x (B L [C]): 0-dim tensors; on an LTI model
    also `tau_layers` (n_layers) and, with_memory, `mf` (T)."""
    _, inputs = model.trunk(x)  # n_layers × (B L H)
    nan = torch.full((), NAN, device=x.device)
    out = {}
    lti = [(layer, u) for layer, u in zip(model.layers, inputs) if hasattr(layer, "kernel")]
    per_layer = [tau(layer.kernel(u.shape[1]), *input_stats(u)) for layer, u in lti]  # n_layers × (H)
    taus = torch.cat(per_layer) if lti else None
    out["tau"] = taus.mean() if lti else nan
    out["tau_max"] = taus.max() if lti else nan
    if lti:
        out["tau_layers"] = torch.stack([t.mean() for t in per_layer])  # (n_layers)
    if lti and with_memory:
        systems = [s4d_system(layer) if isinstance(layer, S4D) else s4_system(layer) for layer, _ in lti]
        T = x.shape[1]  # MF of the stationary state (infinite past): the Gram sum runs until α_k has decayed
        out["mf"] = torch.cat([memory_function(A, B, T, horizon=MEMORY_HORIZON * T) for A, B in systems]).mean(0)  # (T)
        out["mc"] = out["mf"].sum()
        kappa = torch.cat([gram_condition(A, B, T) for A, B in systems])  # (channels), inf where singular
        out["gram_cond"] = kappa.nan_to_num(GRAM_SINGULAR, GRAM_SINGULAR).clamp(max=GRAM_SINGULAR).median()
    else:
        out["mc"] = out["gram_cond"] = nan
    lam = torch.cat([eigenvalues(layer) for layer in model.layers])
    out["eig_real_min"], out["eig_real_max"] = lam.real.min(), lam.real.max()
    out["eig_imag_max"], out["s_A"] = lam.imag.max(), lam.real.max()
    log_dts = [layer.log_dt for layer in model.layers if hasattr(layer, "log_dt")]  # n_layers × (H), LTI only
    out["dt"] = geometric_dt(log_dts) if log_dts else nan
    rhos = [selective_rho_A(layer, u) for layer, u in zip(model.layers, inputs) if isinstance(layer, Selective)]
    out["rho_A"] = torch.stack(rhos).max() if rhos else nan  # 001: the slowest-decaying layer
    out["S2"] = s2(out["rho_A"], x.shape[1])  # T = the run's seq_len
    first, u = model.layers[0], inputs[0]
    y = first(u) - (u * first.D if hasattr(first, "D") else 0)  # the convolution / scan part
    out["output_scale"] = y[:, -1].abs().mean()
    return {k: v.double() if k in FLOAT64 else v.float() for k, v in out.items()}


class _Probe(torch.nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x, with_memory):
        return probe(self.model, x, with_memory)


@torch.no_grad()
def measure_packed(packed, x: torch.Tensor, with_memory: bool) -> dict[str, torch.Tensor]:
    """Every point's measures at once: name -> (K) tensor ((K n_layers) for tau_layers, (K T) for mf) on the CPU
    (grad_norm not included). An S4D model without the memory measures is probed natively batched (`batched.probe`,
    sub-pack by sub-pack), else `probe` is mapped over the points."""
    if batched.all_s4d(packed.base) and not with_memory:
        parts = [
            batched.probe(packed.base, packed.state(p), x.expand(p.stop - p.start, *x.shape))
            for p in packed.subpacks(x)
        ]
        return {k: torch.cat([part[k] for part in parts]).cpu() for k in parts[0]}
    wrapper = _Probe(packed.base)
    params = {f"model.{k}": v for k, v in packed.params.items()}
    buffers = {f"model.{k}": v for k, v in packed.buffers.items()}

    def one(p, b):
        return functional_call(wrapper, (p, b), (x, with_memory))

    return {k: v.cpu() for k, v in vmap(one)(params, buffers).items()}
