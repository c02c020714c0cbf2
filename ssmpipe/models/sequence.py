"""The deep sequence model: token encoder, n residual SSM blocks, per-position decoder."""

import torch
import torch.nn as nn
import torch.nn.functional as F

from ssmpipe.models.s4d import S4D


class SequenceModel(nn.Module):
    """Embedding -> n × [x + GELU(SSM(x)), LayerNorm] -> Linear; logits at every position."""

    def __init__(self, vocab: int, d_model: int, d_state: int, n_layers: int, init: dict):
        super().__init__()
        self.encoder = nn.Embedding(vocab, d_model)
        self.layers = nn.ModuleList(S4D(d_model, d_state, **init) for _ in range(n_layers))
        self.norms = nn.ModuleList(nn.LayerNorm(d_model) for _ in range(n_layers))
        self.decoder = nn.Linear(d_model, vocab)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B L) int tokens -> logits (B L V)."""
        h = self.encoder(x)                                                 # (B L H)
        for ssm, norm in zip(self.layers, self.norms):
            h = norm(h + F.gelu(ssm(h)))                                    # (B L H)
        return self.decoder(h)                                              # (B L V)


def build_model(settings: dict) -> SequenceModel:
    """The model of one sweep point, initialised from its own seed (so packing never changes it)."""
    torch.manual_seed(settings["seed"])
    m = settings["model"]
    return SequenceModel(settings["task"]["vocab"], m["d_model"], m["d_state"], m["n_layers"], m["init"])
