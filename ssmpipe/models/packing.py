"""Packing: K sweep points with equal shapes trained as one model.

Parameters are stacked along a leading point dimension (torch.func.stack_module_state). Each
point's loss depends only on its own slice, so summing the K losses gives every point its own
gradients, and Adam (elementwise) updates each slice exactly as a separate run would.

The forward pass runs the points natively batched (`batched.forward`) where the model is an
S4D SequenceModel (or a selective one on a GPU with mamba-ssm), else maps the single-point module
over them with vmap(functional_call).
On the CPU the points go through in sub-packs whose activations fit in the cores' caches
(`subpacks`, a share per thread: with several threads every op parallelises over a bigger
sub-pack): a (K B L H) tensor of 64 demo points is 32 MiB, and streaming it through memory
once per op cost more than the packing saved. On CUDA one sub-pack holds them all.
"""

import copy

import torch
from torch.func import functional_call, stack_module_state, vmap

from ssmpipe.models import batched
from ssmpipe.models.sequence import SequenceModel

SUBPACK_ELEMENTS = 2**18  # CPU: activation elements (B·L·H per point) of a sub-pack per thread, 1 MiB in float32


class PackedModel:
    def __init__(self, modules: list[torch.nn.Module], device: torch.device | str = "cpu"):
        self.K = len(modules)
        self.base = copy.deepcopy(modules[0]).to("meta")
        self.batched = batched.supports(self.base, device)
        params, buffers = stack_module_state(modules)
        self.params = {k: v.detach().to(device).requires_grad_(True) for k, v in params.items()}  # (K ...)
        self.buffers = {k: v.to(device) for k, v in buffers.items()}

    def parameters(self) -> list[torch.Tensor]:
        return list(self.params.values())

    def state(self, points: slice) -> dict[str, torch.Tensor]:
        """The stacked buffers and parameters of some points, by name: (K′ ...) each (all K: the tensors themselves, so
        backward writes no zeros-and-copy per parameter for a slice of them)."""
        whole = points.indices(self.K) == (0, self.K, 1)
        return {k: v if whole else v[points] for k, v in {**self.buffers, **self.params}.items()}

    def subpacks(self, x: torch.Tensor) -> list[slice]:
        """The point ranges one forward/backward should take at a time, given one point's input x (B L ...):
        cache-sized on the CPU, all K on an accelerator."""
        if x.device.type != "cpu":
            return [slice(0, self.K)]
        width = self.base.decoder.in_features if isinstance(self.base, SequenceModel) else x.shape[-1]  # H
        per_point = x.shape[0] * x.shape[1] * width  # B·L·H
        size = max(1, SUBPACK_ELEMENTS * torch.get_num_threads() // per_point)  # each thread's share fits its core
        return [slice(i, min(i + size, self.K)) for i in range(0, self.K, size)]

    def __call__(self, x: torch.Tensor, points: slice | None = None, **kwargs):
        """x: (K B ...) -> (K B ...): point k's model applied to x[k] (keyword arguments go to every point).

        points: only those points (x holds their inputs only); gradients flow into their slices of the
        parameters. Without it, all K, sub-pack by sub-pack, outputs concatenated."""
        if points is None:
            parts = [self(x[p], p, **kwargs) for p in self.subpacks(x[0])]
            if isinstance(parts[0], tuple):
                return (_cat([o for o, _ in parts]), torch.cat([t for _, t in parts]))
            return _cat(parts)
        if self.batched:
            return batched.forward(self.base, self.state(points), x, **kwargs)
        params = {k: v[points] for k, v in self.params.items()}
        buffers = {k: v[points] for k, v in self.buffers.items()}

        def one(p, b, xk):
            return functional_call(self.base, (p, b), (xk,), kwargs)

        return vmap(one)(params, buffers, x)


def _cat(outs: list[torch.Tensor]) -> torch.Tensor:
    """Sub-packs' outputs (K′ B [L] C) joined along K, in class-major memory order (K C B [L]) as `batched` has it."""
    return torch.cat([o.movedim(-1, 1) for o in outs]).movedim(1, -1)
