"""The selective scan on CUDA by mamba-ssm's fused kernel (state-spaces/mamba, `selective_scan_fn`), where mamba-ssm
is installed (the optional extra ssmpipe[mamba]): the K points of a pack in one call, forward and backward.

The kernel's recurrence is this layer's (selective.py): x_t = exp(Δ_t A) ⊙ x_{t−1} + Δ_t B_t u_t, y_t = C_t · x_t,
used without its D skip, z gate or Δ bias. Its Δ is per channel, so ours, one per step and point, is expanded over
the point's d channels; its B_t, C_t may be given per group of channels (B G N L), so K points fold into K·d channels
in K groups, group k reading point k's B_t, C_t (channel i is in group i // d, as the kernel counts them). The kernel
computes in float32; float64 packs, and hosts without mamba-ssm or a GPU, run the layer's own scan (`usable`).
"""

import functools
import logging

import torch

log = logging.getLogger("ssmpipe.models.selective_cuda")


@functools.cache
def kernel():
    """mamba-ssm's selective_scan_fn, or None (logged once) where it cannot be imported."""
    try:
        from mamba_ssm.ops.selective_scan_interface import selective_scan_fn
    except Exception as e:  # noqa: BLE001 - not installed, or built for another torch or CUDA: the eager scan runs
        log.info("mamba-ssm's selective scan unavailable, the eager scan runs on CUDA: %s", str(e).splitlines()[0])
        return None
    return selective_scan_fn


def usable(u: torch.Tensor) -> bool:
    """Whether the packed scan of u runs here: u on CUDA, float32, and mamba-ssm importable."""
    return u.is_cuda and u.dtype == torch.float32 and kernel() is not None


def packed_scan(delta: torch.Tensor, A: torch.Tensor, B_t: torch.Tensor, C_t: torch.Tensor, u: torch.Tensor, scan=None):
    """K points' selective scans in one kernel call: Δ (K B L), A (K d N), B_t, C_t (K B L N), u (K B L d) ->
    y (K B L d). scan: a function with selective_scan_fn's signature (default: mamba-ssm's)."""
    K, batch, L, d = u.shape

    def channels(t: torch.Tensor) -> torch.Tensor:  # (K B L c) -> (B K·c L)
        return t.permute(1, 0, 3, 2).reshape(batch, K * t.shape[-1], L)

    y = (scan or kernel())(
        channels(u),
        channels(delta[..., None].expand(K, batch, L, d)),  # Δ_t of point k on each of its d channels
        A.reshape(K * d, A.shape[-1]),  # (K·d N)
        B_t.permute(1, 0, 3, 2),  # (B K N L): group k, point k's B_t
        C_t.permute(1, 0, 3, 2),
    )  # (B K·d L)
    return y.view(batch, K, d, L).permute(1, 0, 3, 2)  # (K B L d)
