"""The deep sequence model: encoder, n residual SSM blocks, pooling, decoder.

The layer kind is a config choice (model.kind); what the data looks like (tokens or
real values in, a target per position or per sequence out) comes from the data set
(`ssmpipe.data.describe`), so one model definition serves every task.
"""

import torch
import torch.nn as nn
import torch.nn.functional as F

from ssmpipe.models.s4 import S4
from ssmpipe.models.s4d import S4D
from ssmpipe.models.selective import Selective
from ssmpipe.theory.autocorr import dt_autocorr, lambda_max
from ssmpipe.theory.tau import input_stats, tau, tau_scaling


def s4d_layer(d_model: int, model: dict) -> nn.Module:
    init = model["init"]
    return S4D(
        d_model,
        model["d_state"],
        scheme=init["scheme"],
        real=init["real"],
        imag=init["imag"],
        scale=init["scale"],
        dt_min=init["dt_min"],
        dt_max=init["dt_max"],
        discretization=model["discretization"],
        train_A=model["train_A"],
    )


def s4_layer(d_model: int, model: dict) -> nn.Module:
    init = model["init"]
    return S4(
        d_model,
        model["d_state"],
        scale=init["scale"],
        dt_min=init["dt_min"],
        dt_max=init["dt_max"],
        discretization=model["discretization"],
        train_A=model["train_A"],
    )


def selective_layer(d_model: int, model: dict) -> nn.Module:
    return Selective(d_model, model["d_state"], s_A=model["init"]["s_A"])


# model.kind -> factory(d_model, model settings) -> module (B L H) -> (B L H)
LAYERS = {"s4d": s4d_layer, "s4": s4_layer, "selective": selective_layer}


class SequenceModel(nn.Module):
    """encoder -> n × block -> pooling -> decoder; block `residual`: LayerNorm(x + GELU(SSM(x))), `plain`: SSM(x)."""

    def __init__(self, layers: list[nn.Module], d_model: int, info: dict, pooling: str, block: str = "residual"):
        super().__init__()
        if info["input"] == "tokens":
            self.encoder = nn.Embedding(info["d_input"], d_model)
        else:  # zero bias at init: the SSM sees the task's own mean and autocorrelation (002: white noise stays white)
            self.encoder = nn.Linear(info["d_input"], d_model)
            nn.init.zeros_(self.encoder.bias)
        self.layers = nn.ModuleList(layers)
        self.norms = nn.ModuleList(nn.LayerNorm(d_model) for _ in layers) if block == "residual" else None
        self.decoder = nn.Linear(d_model, info["n_out"])
        self.pooling = pooling if info["target"] == "sequence" else "none"

    def trunk(self, x: torch.Tensor):
        """Encoder and blocks: x -> (h (B L H), the input (B L H) of every SSM layer)."""
        h = self.encoder(x if x.dtype == torch.long or x.dim() == 3 else x[..., None])  # (B L H)
        inputs = []
        for i, ssm in enumerate(self.layers):
            inputs.append(h)
            h = ssm(h) if self.norms is None else self.norms[i](h + F.gelu(ssm(h)))  # (B L H)
        return h, inputs

    def forward(self, x: torch.Tensor, with_tau: bool = False):
        """x: (B L) tokens or (B L C) values -> (B L n_out) per position, or (B n_out) pooled.

        with_tau: also return τ of every layer (n_layers H) from its input's batch statistics
        (SPEC 000; the statistics are data, the gradient flows through the kernels).
        """
        h, inputs = self.trunk(x)
        if self.pooling == "last":
            h = h[:, -1]  # (B H)
        elif self.pooling == "mean":
            h = h.mean(1)  # (B H)
        out = self.decoder(h)
        if not with_tau:
            return out
        return out, torch.stack(
            [tau(ssm.kernel(u.shape[1]), *input_stats(u.detach())) for ssm, u in zip(self.layers, inputs)]
        )


def build_model(settings: dict, info: dict) -> SequenceModel:
    """The model of one sweep point, initialised from its own seed (so packing never changes it)."""
    torch.manual_seed(settings["seed"])
    m = settings["model"]
    layers = [LAYERS[m["kind"]](m["d_model"], m) for _ in range(m["n_layers"])]
    return SequenceModel(layers, m["d_model"], info, m["pooling"], m["block"])


@torch.no_grad()
def init_from_data(model: SequenceModel, x: torch.Tensor, settings: dict) -> SequenceModel:
    """The init's data-dependent part, layer by layer on a batch x, each layer fed by the layers re-initialised so far.

    init.dt = autocorr: Δ = c/√(L·λ_max(E[uuᵀ])) of the layer's input (SPEC 002), every channel.
    init.c_scaling = tau: C ← C/√τ per channel, τ from the layer's input statistics (SPEC 000).
    """
    init = settings["model"]["init"]
    if init["dt"] == "s4d" and init["c_scaling"] == "none":
        return model
    for i, layer in enumerate(model.layers):
        u = model.trunk(x)[1][i]  # (B L H)
        if init["dt"] == "autocorr":
            dt = dt_autocorr(u.shape[1], lambda_max(u, stationary=True), init["dt_c"])  # unbiased at batch ≪ L
            layer.log_dt.fill_(float(torch.log(dt)))
        if init["c_scaling"] == "tau":
            factor = tau_scaling(tau(layer.kernel(u.shape[1]), *input_stats(u))).to(layer.C_real.dtype)  # (H)
            layer.C_real.mul_(factor[:, None])
            layer.C_imag.mul_(factor[:, None])
    return model
