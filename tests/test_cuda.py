"""The CUDA tier (`pytest -m cuda`): ssmpipe's GPU path on a real GPU, by the checks of benchmarks/gpu_check.py.

Skipped where there is no GPU. With CI=true, a GPU that is here (`nvidia-smi -L` lists one, or /dev/nvidia0 is a
device) but that torch cannot use (a CPU build of torch, a driver too old) fails them: CI on a GPU machine must
test the GPU. Without a GPU, the one test not marked `cuda` checks that gpu_check.py says so and exits 0.
"""

import importlib.util
import json
import os
import shutil
import stat
import subprocess
import sys

import pytest
import torch
from conftest import REPO

GPU_CHECK = REPO / "benchmarks" / "gpu_check.py"


def gpu_present() -> str | None:
    """What says a GPU is in this machine, whatever torch thinks: nvidia-smi's list, or the device file; else None."""
    if shutil.which("nvidia-smi"):
        try:
            listed = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=30).stdout
        except subprocess.TimeoutExpired:
            listed = ""
        gpus = [line for line in listed.splitlines() if line.startswith("GPU ")]
        if gpus:
            return gpus[0]
    try:
        if stat.S_ISCHR(os.stat("/dev/nvidia0").st_mode):
            return "/dev/nvidia0"
    except OSError:
        pass
    return None


@pytest.fixture(scope="module")
def cuda() -> torch.device:
    return require_cuda()


def require_cuda() -> torch.device:
    """The GPU; skips without one, fails under CI=true where one is present and torch cannot use it."""
    if torch.cuda.is_available():
        return torch.device("cuda")
    from ssmpipe.train import no_cuda_reason

    present = gpu_present()
    if present and os.environ.get("CI") == "true":
        pytest.fail(f"a GPU is here ({present}), but torch sees no CUDA device ({no_cuda_reason()})")
    pytest.skip("no CUDA device" + (f" usable (a GPU is here: {present}; {no_cuda_reason()})" if present else ""))


@pytest.fixture(scope="module")
def check():
    spec = importlib.util.spec_from_file_location("gpu_check", GPU_CHECK)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _ok(result: dict) -> None:
    assert result["ok"], json.dumps(result, indent=1)


@pytest.mark.cuda
def test_s4d_packed_equals_each_point_on_cuda(cuda, check):
    _ok(check.s4d_parity(cuda))


@pytest.mark.cuda
def test_selective_scan_equals_the_loop_at_non_square_lengths_on_cuda(cuda, check):
    _ok(check.selective_parity(cuda))


@pytest.mark.cuda
def test_a_checkpoint_resumes_from_gpu_on_cpu_and_back(cuda, check, tmp_path):
    _ok(check.checkpoint(cuda, tmp_path))


@pytest.mark.cuda
def test_a_slurm_job_that_asked_for_a_gpu_trains_on_it(cuda, tmp_path):
    import pandas as pd
    from conftest import tiny_config

    from ssmpipe import config as cfg
    from ssmpipe import sweep
    from ssmpipe.slurm import TrainShard
    from ssmpipe.store import Store

    config = cfg.check(tiny_config(results=str(tmp_path), shard_size=100, **{"grid.seq_len": [16]}))
    [shard] = sweep.plan(config).pending
    TrainShard(str(tmp_path), shard, 1, 1)()
    rows = pd.read_parquet(Store(tmp_path).runs_path(shard))
    assert (rows["device"] == f"cuda:{torch.cuda.get_device_name()}").all() and (rows["status"] == "ok").all()
    assert (rows["cuda_version"] == torch.version.cuda).all()


def test_gpu_check_without_a_gpu_says_so_and_exits_0():
    if torch.cuda.is_available():
        pytest.skip("a GPU is here: gpu_check.py checks it (the cuda tests above)")
    proc = subprocess.run([sys.executable, str(GPU_CHECK)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    last = json.loads(proc.stdout.strip().splitlines()[-1])
    assert last["cuda"] is False and last["torch"] == torch.__version__ and "sees no CUDA device" in last["reason"]


def test_under_ci_a_gpu_torch_cannot_use_fails_the_tier_and_no_gpu_skips_it(monkeypatch):
    import test_cuda

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setenv("CI", "true")
    monkeypatch.setattr(test_cuda, "gpu_present", lambda: "GPU 0: NVIDIA H100 80GB HBM3 (UUID: GPU-0)")
    with pytest.raises(pytest.fail.Exception, match="a GPU is here .*H100.*, but torch sees no CUDA device"):
        test_cuda.require_cuda()
    monkeypatch.setattr(test_cuda, "gpu_present", lambda: None)
    with pytest.raises(pytest.skip.Exception, match="no CUDA device"):
        test_cuda.require_cuda()
