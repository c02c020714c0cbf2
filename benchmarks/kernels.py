"""Are the fast SSM paths fast, and lean, enough for long sequences?

Forward + backward, on the device chosen at run time (CUDA when present, else CPU):
  * LTI (S4D) layer, FFT convolution vs the step-by-step recurrence, L = 4096 (target >= 30x);
  * selective layer (SPEC 001), chunked parallel scan vs the step-by-step loop, L = 2048 (target >= 10x);
  * peak memory of one LTI layer (H = 64, N = 64, batch 1) at 4 lengths up to L = 65,536
    (target <= 4 GiB at 65,536, growing linearly in L). On CPU: peak resident memory (VmHWM) of a
    fresh process per length, less what it held before the layer ran; on CUDA: max_memory_allocated.
Last line: one JSON object of the figures.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time

import torch

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
    lti_ratio = compare("LTI L=4096 (H 16, N 64, batch 8)", lti, lti, lambda u: recurrence(lti, u),
                        (8, 4096, 16), device)
    sel = Selective(16, 4).to(device)
    sel_ratio = compare("selective L=2048 (d 16, N 4, batch 16)", sel, sel, lambda u: selective_loop(sel, u),
                        (16, 2048, 16), device)
    memory = {}
    for L in MEMORY_LENGTHS:
        memory[L] = peak_memory_gib(L, device.type)
        print(f"LTI peak memory L={L}: {memory[L]:.3f} GiB ({memory[L] / L * 2**20:.1f} KiB per step)", flush=True)
    print(f"targets: LTI >= 30x: {lti_ratio:.1f}x; selective >= 10x: {sel_ratio:.1f}x; "
          f"memory at 65536 <= 4 GiB: {memory[65536]:.2f} GiB")
    print(json.dumps({"device": device.type, "lti_fft_vs_recurrence_L4096": round(lti_ratio, 1),
                      "selective_scan_vs_loop_L2048": round(sel_ratio, 1),
                      "lti_peak_mem_gib_L65536": round(memory[65536], 3),
                      **{f"lti_peak_mem_gib_L{L}": round(m, 3) for L, m in memory.items() if L != 65536}}))


if __name__ == "__main__":
    main()
