"""Packing: K sweep points with equal shapes trained as one model.

Parameters are stacked along a leading point dimension (torch.func.stack_module_state)
and the single-point module is mapped over it with vmap(functional_call). Each point's
loss depends only on its own slice, so summing the K losses gives every point its own
gradients, and Adam (elementwise) updates each slice exactly as a separate run would.
"""

import copy

import torch
from torch.func import functional_call, stack_module_state, vmap


class PackedModel:
    def __init__(self, modules: list[torch.nn.Module], device: torch.device | str = "cpu"):
        self.K = len(modules)
        self.base = copy.deepcopy(modules[0]).to("meta")
        params, buffers = stack_module_state(modules)
        self.params = {k: v.detach().to(device).requires_grad_(True) for k, v in params.items()}  # (K ...)
        self.buffers = {k: v.to(device) for k, v in buffers.items()}

    def parameters(self) -> list[torch.Tensor]:
        return list(self.params.values())

    def __call__(self, x: torch.Tensor, **kwargs):
        """x: (K B ...) -> (K B ...): point k's model applied to x[k] (keyword arguments go to every point)."""
        def one(p, b, xk):
            return functional_call(self.base, (p, b), (xk,), kwargs)
        return vmap(one)(self.params, self.buffers, x)
