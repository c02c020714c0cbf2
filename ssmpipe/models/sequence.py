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


def s4d_layer(d_model: int, model: dict) -> nn.Module:
    init = model["init"]
    return S4D(d_model, model["d_state"], scheme=init["scheme"], real=init["real"], imag=init["imag"],
               scale=init["scale"], dt_min=init["dt_min"], dt_max=init["dt_max"],
               discretization=model["discretization"], train_A=model["train_A"])


def s4_layer(d_model: int, model: dict) -> nn.Module:
    init = model["init"]
    return S4(d_model, model["d_state"], scale=init["scale"], dt_min=init["dt_min"], dt_max=init["dt_max"],
              discretization=model["discretization"], train_A=model["train_A"])


def selective_layer(d_model: int, model: dict) -> nn.Module:
    return Selective(d_model, model["d_state"], s_A=model["init"]["s_A"])


# model.kind -> factory(d_model, model settings) -> module (B L H) -> (B L H)
LAYERS = {"s4d": s4d_layer, "s4": s4_layer, "selective": selective_layer}


class SequenceModel(nn.Module):
    """encoder -> n × [x + GELU(SSM(x)), LayerNorm] -> pooling -> decoder."""

    def __init__(self, layers: list[nn.Module], d_model: int, info: dict, pooling: str):
        super().__init__()
        if info["input"] == "tokens":
            self.encoder = nn.Embedding(info["d_input"], d_model)
        else:
            self.encoder = nn.Linear(info["d_input"], d_model)
        self.layers = nn.ModuleList(layers)
        self.norms = nn.ModuleList(nn.LayerNorm(d_model) for _ in layers)
        self.decoder = nn.Linear(d_model, info["n_out"])
        self.pooling = pooling if info["target"] == "sequence" else "none"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B L) tokens or (B L C) values -> (B L n_out) per position, or (B n_out) pooled."""
        h = self.encoder(x if x.dtype == torch.long or x.dim() == 3 else x[..., None])  # (B L H)
        for ssm, norm in zip(self.layers, self.norms):
            h = norm(h + F.gelu(ssm(h)))                                    # (B L H)
        if self.pooling == "last":
            h = h[:, -1]                                                    # (B H)
        elif self.pooling == "mean":
            h = h.mean(1)                                                   # (B H)
        return self.decoder(h)


def build_model(settings: dict, info: dict) -> SequenceModel:
    """The model of one sweep point, initialised from its own seed (so packing never changes it)."""
    torch.manual_seed(settings["seed"])
    m = settings["model"]
    layers = [LAYERS[m["kind"]](m["d_model"], m) for _ in range(m["n_layers"])]
    return SequenceModel(layers, m["d_model"], info, m["pooling"])
