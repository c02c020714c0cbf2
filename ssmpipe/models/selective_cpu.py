"""The fused CPU selective scan: the C++ kernel of selective_cpu.cpp (its header has the recurrence and the adjoint),
compiled at first use with torch.utils.cpp_extension into torch's extension cache (once per machine and CPU
capability, ~1 min), and `scan`, its autograd op. `kernel()` is None where it cannot be built (no compiler, no
ninja): a warning is logged once and the caller runs the eager scan instead."""

import functools
import logging
from pathlib import Path

import torch
from torch.autograd.function import once_differentiable

log = logging.getLogger("ssmpipe.models.selective_cpu")

SOURCE = Path(__file__).with_name("selective_cpu.cpp")
CHUNK_STATE = 2**14  # state elements (T d N) of one chunk: the backward's recompute buffers stay in cache
ARCH_FLAGS = {  # by torch's CPU capability; the extension's name carries it, so nodes sharing a cache do not clash
    "AVX512": ["-mavx512f", "-mavx512dq", "-mavx512bw", "-mavx512vl", "-mavx2", "-mfma", "-mprefer-vector-width=512"],
    "AVX2": ["-mavx2", "-mfma"],
}


@functools.cache
def kernel():
    """The compiled extension (selective_forward, selective_backward), or None (logged once) if it cannot be built."""
    capability = torch.backends.cpu.get_cpu_capability()
    try:
        from torch.utils.cpp_extension import load_inline
        return load_inline(name=f"ssmpipe_selective_{capability.lower()}", cpp_sources=[SOURCE.read_text()],
                           functions=["selective_forward", "selective_backward"],
                           extra_cflags=["-O3", "-fopenmp-simd", *ARCH_FLAGS.get(capability, [])])
    except Exception as e:  # noqa: BLE001 - any build failure means: run the eager scan
        log.warning("fused CPU selective scan unavailable, using the eager scan: %s", str(e).splitlines()[0])
        return None


def usable(*tensors: torch.Tensor) -> bool:
    """Whether the fused scan can run on these tensors: CPU, float32/float64, no torch.func transform (vmap, grad)
    wrapping them, and the kernel built (compiled here on first call)."""
    return (all(t.device.type == "cpu" and t.dtype in (torch.float32, torch.float64)
                and not torch._C._functorch.is_functorch_wrapped_tensor(t) for t in tensors)
            and kernel() is not None)


def chunk(L: int, d: int, N: int) -> int:
    """Steps T between the forward's stored states: a chunk of T d N elements is CHUNK_STATE at most."""
    return max(1, min(L, CHUNK_STATE // (d * N)))


class _FusedScan(torch.autograd.Function):
    """Δ (B L), A (d N), B_t, C_t (B L N), u (B L d) -> y (B L d); keeps the states entering each chunk
    ((B K N d), K = ⌈L/T⌉) for the backward, which recomputes each chunk's states from them."""

    @staticmethod
    def forward(ctx, delta, A, Bm, Cm, u):
        T = chunk(u.shape[1], *A.shape)
        inputs = [t.contiguous() for t in (delta, A.T, Bm, Cm, u)]
        y, starts = kernel().selective_forward(*inputs, T)
        ctx.save_for_backward(*inputs, starts)
        ctx.T = T
        return y

    @staticmethod
    @once_differentiable
    def backward(ctx, gy):
        g_delta, g_At, g_B, g_C, g_u = kernel().selective_backward(*ctx.saved_tensors, gy.contiguous(), ctx.T)
        return g_delta, g_At.T, g_B, g_C, g_u


def scan(delta: torch.Tensor, A: torch.Tensor, Bm: torch.Tensor, Cm: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """The selective scan by the fused kernel: Δ (B L), A (d N), B_t, C_t (B L N), u (B L d) -> y (B L d)."""
    return _FusedScan.apply(delta, A, Bm, Cm, u)
