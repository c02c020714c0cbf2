"""Are the fast SSM paths fast, and lean, enough for long sequences?

Forward + backward, on the device chosen at run time (CUDA when present, else CPU):
  * LTI (S4D) layer, FFT convolution vs the step-by-step recurrence, L = 4096 (target >= 30x);
  * selective layer (SPEC 001; the fused kernel on CPU, the chunked scan on CUDA) vs the step-by-step loop,
    L = 2048 (target >= 10x);
  * selective layer (d 16, N 16, batch 8): forward alone vs the loop's forward at L = 2048 (target >= 5x), and
    forward + backward at L = 8192 over its memory-bandwidth bound (target <= 10), see below;
  * peak memory of one LTI layer (H = 64, N = 64, batch 1) at 4 lengths up to L = 65,536
    (target <= 4 GiB at 65,536, growing linearly in L). On CPU: peak resident memory (VmHWM) of a
    fresh process per length, less what it held before the layer ran; on CUDA: max_memory_allocated.

The selective layer's bandwidth bound: the bytes a forward + backward must move, over the bandwidth of a large
`Tensor.copy_` (256 MiB, into a tensor already written once; read + write bytes over its time) measured in the
same run, interleaved with the layer's repeats. Bytes, at the input's item size:
  * 5·B·L·d: the forward reads u and writes y; the backward reads gy and u (Δ, B_t, C_t are functions of u) and
    writes gu (parameter gradients are O(d·N));
  * 2·B·L·d·N: the state x, written once and read once. The backward needs x_{t−1} at every step
    (∂Ā_t = λ_t x_{t−1}) while the adjoint λ runs backwards in time, so the forward's x must be stored (these
    bytes) or recomputed.
This bound (`selective_fwd_bwd_vs_bound_L8192`, the goal: <= 10) is an eager scan's: the layer's fused CPU kernel
(ssmpipe/models/selective_cpu.cpp) keeps x in cache and recomputes it, so it moves fewer bytes than the bound counts,
and the ratio flatters it. The kernel's own I/O bound (`selective_fwd_bwd_vs_io_bound_L8192`, no goal) counts what
crosses its boundary: u, Δ (B L), B_t, C_t (B L N) in and y out, and in the backward gy, u, Δ, B_t, C_t in and their
gradients out: (5·d + 3 + 6·N)·B·L items (the projections Δ, B_t, C_t stay in PyTorch, outside the kernel).
The selective figures are taken at 1 thread and at torch's default thread count (keys with `_1thread` / without);
the fused kernel (the layer's forward on CPU) is compared with the eager blocked scan (`Selective.forward_eager`,
the path on CUDA and without a compiler) and the step-by-step loop. On a machine whose cores are shared, the
default-thread figures mostly measure contention (the loop's hundreds of small parallel ops suffer most): trust the
1-thread ones there.
Optional baseline: mamba.py's Blelloch `pscan` (github alxndrTL/mamba.py, mambapy/pscan.py; compared against, not
copied), loaded at run time from the file named by the environment variable MAMBAPY_PSCAN, and skipped when that is
unset; it runs the same layer (same parameters, Ā and Δ B u formed in full, as mamba.py does).
Timings are best-of-n, the compared functions alternating within each round. Last line: one JSON object of the figures.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import time

import torch
import torch.nn.functional as F

from ssmpipe.models.s4d import S4D, recurrence
from ssmpipe.models.selective import Selective, selective_loop
from ssmpipe.train import pick_device

MEMORY_LENGTHS = (8192, 16384, 32768, 65536)


def fwd_bwd_seconds(fn, u: torch.Tensor, repeats: int) -> float:
    """Best wall time of `repeats` forward + backward passes of fn(u)."""
    best = float("inf")
    for _ in range(repeats):
        u.grad = None
        if u.is_cuda:
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn(u).square().mean().backward()
        if u.is_cuda:
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t0)
    return best


def compare(name: str, layer, fast, slow, shape, device) -> float:
    torch.manual_seed(0)
    u = torch.randn(*shape, device=device, requires_grad=True)
    fwd_bwd_seconds(fast, u, 1)  # warm-up
    fast_s, slow_s = fwd_bwd_seconds(fast, u, 5), fwd_bwd_seconds(slow, u, 1)
    print(f"{name}: fast {fast_s * 1e3:.1f} ms, reference {slow_s * 1e3:.0f} ms: {slow_s / fast_s:.1f}x", flush=True)
    return slow_s / fast_s


def interleaved_seconds(fns: dict, repeats: int, device) -> dict:
    """Best wall time of each zero-argument function, the functions alternating within each of `repeats` rounds."""
    best = dict.fromkeys(fns, float("inf"))
    for _ in range(repeats):
        for name, fn in fns.items():
            if device.type == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            fn()
            if device.type == "cuda":
                torch.cuda.synchronize()
            best[name] = min(best[name], time.perf_counter() - t0)
    return best


def copy_fn(device):
    """A 256 MiB float32 copy_ into a tensor already written, and its bytes moved (read + write)."""
    src = torch.randn(2**26, device=device)
    dst = torch.empty_like(src).copy_(src)
    return (lambda: dst.copy_(src)), 2 * src.numel() * src.element_size()


def load_pscan():
    """mamba.py's `pscan` from the file named by MAMBAPY_PSCAN, or None when unset."""
    path = os.environ.get("MAMBAPY_PSCAN")
    if not path:
        return None
    spec = importlib.util.spec_from_file_location("mambapy_pscan", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.pscan


def pscan_layer(layer: Selective, pscan):
    """The selective layer by mamba.py's pscan: u (B L d) -> y (B L d), the (B L d N) Ā and Δ B u formed in full."""

    def run(u):
        delta = F.softplus(layer.p + u @ layer.q)  # (B L)
        B_t, C_t = u @ layer.W_B.T, u @ layer.W_C.T  # (B L N)
        a = torch.exp(delta[..., None, None] * layer.A)  # (B L d N)
        b = (delta[..., None] * B_t)[..., None, :] * u[..., None]  # (B L d N)
        return (pscan(a, b) @ C_t[..., None]).squeeze(-1)  # (B L d)

    return run


def selective_figures(device, suffix: str = "") -> dict:
    """The selective layer (d 16, N 16, batch 8): forward vs the loop at L = 2048, forward + backward over the
    bandwidth bounds at L = 8192, fused vs eager, and against mamba.py's pscan when MAMBAPY_PSCAN names it.
    Figure keys end in `suffix`."""
    torch.manual_seed(0)
    B, d, N = 8, 16, 16
    layer, pscan = Selective(d, N).to(device), load_pscan()
    figures = {}

    u = torch.randn(B, 2048, d, device=device)
    fns = {"layer": lambda: layer(u), "eager": lambda: layer.forward_eager(u), "loop": lambda: selective_loop(layer, u)}
    if pscan:
        fns["pscan"] = lambda: pscan_layer(layer, pscan)(u)
    with torch.no_grad():
        fns["layer"]()  # warm-up (and the kernel's build)
        t = interleaved_seconds(fns, 5, device)
    figures[f"selective_fwd_vs_loop_L2048{suffix}"] = round(t["loop"] / t["layer"], 1)
    figures[f"selective_eager_fwd_vs_loop_L2048{suffix}"] = round(t["loop"] / t["eager"], 1)
    print(
        f"selective forward L=2048 (d {d}, N {N}, batch {B}, {torch.get_num_threads()} threads): layer "
        f"{t['layer'] * 1e3:.1f} ms, eager {t['eager'] * 1e3:.1f} ms, loop {t['loop'] * 1e3:.0f} ms: "
        f"{t['loop'] / t['layer']:.1f}x (eager {t['loop'] / t['eager']:.1f}x)",
        flush=True,
    )
    if pscan:
        figures[f"selective_fwd_vs_pscan_L2048{suffix}"] = round(t["pscan"] / t["layer"], 2)
        print(f"  pscan {t['pscan'] * 1e3:.1f} ms: layer {t['pscan'] / t['layer']:.2f}x faster", flush=True)

    L = 8192
    u = torch.randn(B, L, d, device=device, requires_grad=True)
    copy, copy_bytes = copy_fn(device)
    fns = {
        "copy": copy,
        "layer": lambda: layer(u).square().mean().backward(),
        "eager": lambda: layer.forward_eager(u).square().mean().backward(),
    }
    if pscan:
        fns["pscan"] = lambda: pscan_layer(layer, pscan)(u).square().mean().backward()
    fns["layer"]()  # warm-up
    t = interleaved_seconds(fns, 5, device)
    bandwidth, item = copy_bytes / t["copy"], u.element_size()
    bound = (5 * B * L * d + 2 * B * L * d * N) * item / bandwidth
    io_bound = (5 * d + 3 + 6 * N) * B * L * item / bandwidth
    figures[f"selective_fwd_bwd_vs_bound_L8192{suffix}"] = round(t["layer"] / bound, 1)
    figures[f"selective_fwd_bwd_vs_io_bound_L8192{suffix}"] = round(t["layer"] / io_bound, 1)
    figures[f"selective_fused_vs_eager_fwd_bwd_L8192{suffix}"] = round(t["eager"] / t["layer"], 1)
    figures[f"copy_bandwidth_gb_s{suffix}"] = round(bandwidth / 1e9, 1)
    print(
        f"selective fwd+bwd L={L}: layer {t['layer'] * 1e3:.1f} ms, eager {t['eager'] * 1e3:.1f} ms "
        f"({t['eager'] / t['layer']:.1f}x); copy bandwidth {bandwidth / 1e9:.1f} GB/s, bound {bound * 1e3:.2f} ms: "
        f"{t['layer'] / bound:.1f}x the bound, {t['layer'] / io_bound:.0f}x the kernel's I/O bound "
        f"(eager {t['eager'] / bound:.1f}x the bound)",
        flush=True,
    )
    if pscan:
        figures[f"selective_fwd_bwd_vs_pscan_L8192{suffix}"] = round(t["pscan"] / t["layer"], 2)
        print(f"  pscan {t['pscan'] * 1e3:.1f} ms: layer {t['pscan'] / t['layer']:.2f}x faster", flush=True)
    return figures


def selective_figures_by_threads(device) -> dict:
    """`selective_figures` at 1 thread (keys ending `_1thread`) and at the default thread count (on CPU)."""
    if device.type != "cpu":
        return selective_figures(device)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        one = selective_figures(device, "_1thread")
    finally:
        torch.set_num_threads(threads)
    return {**one, **selective_figures(device)}


def peak_memory_gib(L: int, device: str) -> float:
    """Peak memory of one forward + backward of an S4D layer (H 64, N 64) at length L, in a fresh process."""
    code = f"""
import torch
from ssmpipe.models.s4d import S4D
def kib(key):  # a line of /proc/self/status, e.g. VmHWM (this process's peak resident memory)
    return next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith(key + ":"))
torch.manual_seed(0)
layer = S4D(64, 64, scheme="lin").to({device!r})
u = torch.randn(1, {L}, 64, device={device!r}, requires_grad=True)
open("/proc/self/clear_refs", "w").write("5")  # reset the peak to the current resident memory
before = kib("VmRSS")
layer(u).square().mean().backward()
if {device!r} == "cuda":
    print(torch.cuda.max_memory_allocated() / 2**30)
else:
    print((kib("VmHWM") - before) / 2**20)
"""
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout
    return float(out.split()[-1])


def main() -> None:
    device = pick_device()
    print(f"device: {device}, torch threads: {torch.get_num_threads()}")
    lti = S4D(16, 64, scheme="lin").to(device)
    lti_ratio = compare(
        "LTI L=4096 (H 16, N 64, batch 8)", lti, lti, lambda u: recurrence(lti, u), (8, 4096, 16), device
    )
    sel = Selective(16, 4).to(device)
    sel_ratio = compare(
        "selective L=2048 (d 16, N 4, batch 16)", sel, sel, lambda u: selective_loop(sel, u), (16, 2048, 16), device
    )
    selective = selective_figures_by_threads(device)
    memory = {}
    for L in MEMORY_LENGTHS:
        memory[L] = peak_memory_gib(L, device.type)
        print(f"LTI peak memory L={L}: {memory[L]:.3f} GiB ({memory[L] / L * 2**20:.1f} KiB per step)", flush=True)
    print(
        f"targets: LTI >= 30x: {lti_ratio:.1f}x; selective >= 10x: {sel_ratio:.1f}x; "
        f"memory at 65536 <= 4 GiB: {memory[65536]:.2f} GiB; selective fwd vs loop >= 5x: "
        f"{selective['selective_fwd_vs_loop_L2048']}x; selective fwd+bwd <= 10x the bound: "
        f"{selective['selective_fwd_bwd_vs_bound_L8192']}x"
    )
    print(
        json.dumps(
            {
                "device": device.type,
                "lti_fft_vs_recurrence_L4096": round(lti_ratio, 1),
                "selective_scan_vs_loop_L2048": round(sel_ratio, 1),
                "lti_peak_mem_gib_L65536": round(memory[65536], 3),
                **selective,
                **{f"lti_peak_mem_gib_L{L}": round(m, 3) for L, m in memory.items() if L != 65536},
            }
        )
    )


if __name__ == "__main__":
    main()
