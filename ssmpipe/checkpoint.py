"""Checkpoints: torch state saved device-free, and loaded without running code from the file.

`device_free` is what a checkpoint holds (every tensor on the CPU, so it loads on any host);
`load_state` reads one back with torch's weights_only unpickler.
"""

from __future__ import annotations

from pathlib import Path

from ssmpipe.errors import StoreError


def load_state(path: str | Path, map_location="cpu") -> dict:
    """A checkpoint (a dict of tensors, numbers, strings, lists, dicts), loaded with torch's weights_only unpickler:
    a file asking for anything else (a crafted pickle's os.system, say) is refused, never run, as is one that is not
    a torch file at all: StoreError naming the file.

    Its tensors land on `map_location` (default the CPU) whatever device they were saved from, so a checkpoint
    written on a GPU node loads on a CPU-only host (ssmpipe saves them device-free anyway: `device_free`); whoever
    resumes from it moves what it needs to its own device (`train.Group.restore`)."""
    import pickle

    import torch

    try:
        return torch.load(path, weights_only=True, map_location=map_location)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError) as e:
        lines = [line.strip() for line in str(e).splitlines() if line.strip()] or [type(e).__name__]
        reason = next((line for line in lines if "nsupported" in line), lines[0])  # torch's words: what it refused
        raise StoreError(
            f"{path}: not a checkpoint ssmpipe can trust ({type(e).__name__}: {reason}); move it "
            f"aside to train from scratch"
        ) from None


def device_free(obj):
    """obj (dicts, lists, tuples of tensors and plain values: an optimizer's state_dict, a checkpoint) with every
    tensor on the CPU: what a checkpoint holds, so that it loads on any host (a CPU tensor is returned as is)."""
    if isinstance(obj, dict):
        return {k: device_free(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(device_free(v) for v in obj)
    return obj.cpu() if hasattr(obj, "is_cuda") and obj.device.type != "cpu" else obj
