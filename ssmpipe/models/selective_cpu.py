"""The fused CPU selective scan: the C++ kernel of selective_cpu.cpp (its header has the recurrence and the adjoint),
compiled at first use with torch.utils.cpp_extension into <torch's extension cache>/ssmpipe/ (once per machine, CPU
capability and torch version, ~1 min; TORCH_EXTENSIONS_DIR moves the cache; builds wait on `build_lock`), and
`scan`, its autograd op, with a vmap rule (stacked models run as one kernel call). `kernel()` is None where it cannot
be built (no compiler, no ninja): a warning is logged once and the caller runs the eager scan instead."""

import contextlib
import functools
import logging
import os
from pathlib import Path

import filelock
import torch
from torch.autograd.function import once_differentiable

log = logging.getLogger("ssmpipe.models.selective_cpu")

SOURCE = Path(__file__).with_name("selective_cpu.cpp")
CHUNK_STATE = 2**14  # state elements (T d N) of one chunk: the backward's recompute buffers stay in cache
MIN_CHUNK = 16
ARCH_FLAGS = {  # by torch's CPU capability; the extension's name carries it, so nodes sharing a cache do not clash
    "AVX512": ["-mavx512f", "-mavx512dq", "-mavx512bw", "-mavx512vl", "-mavx2", "-mfma", "-mprefer-vector-width=512"],
    "AVX2": ["-mavx2", "-mfma"],
}


@functools.cache
def kernel():
    """The compiled extension (selective_forward, selective_backward), or None (logged once) if it cannot be built."""
    capability = torch.backends.cpu.get_cpu_capability()
    name = f"ssmpipe_selective_{capability.lower()}"
    try:
        from torch.utils.cpp_extension import get_default_build_root, load_inline

        root = Path(os.environ.get("TORCH_EXTENSIONS_DIR") or get_default_build_root())
        folder = root / "ssmpipe" / f"{name}-torch{torch.__version__}"
        with build_lock(folder):
            return load_inline(
                name=name,
                cpp_sources=[SOURCE.read_text()],
                functions=["selective_forward", "selective_backward"],
                extra_cflags=["-O3", "-fopenmp-simd", *ARCH_FLAGS.get(capability, [])],
                build_directory=str(folder),
            )
    except Exception as e:  # noqa: BLE001 - any build failure means: run the eager scan
        log.warning("fused CPU selective scan unavailable, using the eager scan: %s", str(e).splitlines()[0])
        return None


@contextlib.contextmanager
def build_lock(folder: Path):
    """Held while the extension in `folder` is built or loaded: an fcntl lock (filelock), which the kernel releases
    when its process dies. Torch's own lock, the file <folder>/lock, stays behind when a build is killed (Ctrl-C
    during the first minute of a sweep), and torch then waits on it forever; under this lock no build holds it, so
    one found is such a leftover, and goes."""
    folder.mkdir(parents=True, exist_ok=True)
    with filelock.FileLock(str(folder) + ".lock"):
        (folder / "lock").unlink(missing_ok=True)
        yield folder


def _plain(t: torch.Tensor) -> bool:
    """Whether t is a plain tensor, or one batched by vmap (any depth) over a plain tensor: the op's vmap rule
    handles those; other torch.func wrappers (grad, jvp) are not supported by its hand-written backward."""
    functorch = torch._C._functorch
    while functorch.is_batchedtensor(t):
        t = functorch.get_unwrapped(t)
    return not functorch.is_functorch_wrapped_tensor(t)


def usable(*tensors: torch.Tensor) -> bool:
    """Whether the fused scan can run on these tensors: CPU, float32/float64, plain or under vmap only (`_plain`),
    and the kernel built (compiled here on first call)."""
    return (
        all(t.device.type == "cpu" and t.dtype in (torch.float32, torch.float64) and _plain(t) for t in tensors)
        and kernel() is not None
    )


def chunk(L: int, d: int, N: int) -> int:
    """Steps T between the forward's stored states: a chunk of T d N elements is CHUNK_STATE, but T is at least
    MIN_CHUNK, so the stored states are at most 1/MIN_CHUNK of the full (B L d N) state (and at most L)."""
    return min(L, max(MIN_CHUNK, CHUNK_STATE // (d * N)))


def _kernel_inputs(delta, A, Bm, Cm, u) -> list[torch.Tensor]:
    """The kernel's operands: contiguous, A as Aᵀ (G N d)."""
    return [t.contiguous() for t in (delta, A.transpose(-1, -2), Bm, Cm, u)]


class _FusedScan(torch.autograd.Function):
    """Δ (B L), A (G d N), B_t, C_t (B L N), u (B L d) -> y (B L d), A[g] serving batch rows g·B/G … (g+1)·B/G − 1;
    keeps the states entering each chunk ((B K N d), K = ⌈L/T⌉) for the backward, which recomputes each chunk's
    states from them. Under vmap over K stacked models the K copies are one kernel call of K·B rows, K·G groups."""

    @staticmethod
    def forward(delta, A, Bm, Cm, u):
        T = chunk(u.shape[1], *A.shape[-2:])
        return tuple(kernel().selective_forward(*_kernel_inputs(delta, A, Bm, Cm, u), T))  # y, chunk start states

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.mark_non_differentiable(output[1])
        ctx.save_for_backward(*inputs, output[1])

    @staticmethod
    @once_differentiable
    def backward(ctx, gy, _g_starts):
        delta, A, Bm, Cm, u, starts = ctx.saved_tensors
        T = chunk(u.shape[1], *A.shape[-2:])
        g_delta, g_At, g_B, g_C, g_u = kernel().selective_backward(
            *_kernel_inputs(delta, A, Bm, Cm, u), starts, gy.contiguous(), T
        )
        return g_delta, g_At.transpose(-1, -2), g_B, g_C, g_u

    @staticmethod
    def vmap(info, in_dims, delta, A, Bm, Cm, u):
        """K stacked problems (vmap's batch) -> one of K·B rows and K·G groups of A."""
        K = info.batch_size
        args = [
            x.movedim(dim, 0) if dim is not None else x.expand(K, *x.shape)
            for x, dim in zip((delta, A, Bm, Cm, u), in_dims)
        ]
        outputs = _FusedScan.apply(*(x.flatten(0, 1) for x in args))
        return tuple(x.unflatten(0, (K, -1)) for x in outputs), (0, 0)


def scan(delta: torch.Tensor, A: torch.Tensor, Bm: torch.Tensor, Cm: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """The selective scan by the fused kernel: Δ (B L), A (d N), B_t, C_t (B L N), u (B L d) -> y (B L d)."""
    return _FusedScan.apply(delta, A[None], Bm, Cm, u)[0]
