"""Shared fixtures: a tiny sweep config, and running the real Snakemake / ssmpipe CLI on it."""

import copy
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]

TINY = {
    "sweep": "tiny",
    "results": "results",
    "shard_size": 4,
    "fixed": {
        "task": {"name": "delay", "lag": 3, "vocab": 4, "n_train": 64, "n_test": 32, "seed": 0},
        "seq_len": 16,
        "model": {"d_model": 4, "d_state": 4, "n_layers": 1},
        "train": {"epochs": 2, "batch_size": 32, "lr": 0.01},
    },
    "grid": {"model.init.real": [-0.5, 0.0], "model.init.imag": [1.0], "seq_len": [16, 24], "seed": [0, 1]},
}


# `make test` runs the suite on two pytest-xdist workers (-n 2 --dist loadgroup). The tests that use the one SLURM
# cluster or start Ray share one worker and run one at a time: beside each other, their jobs would queue behind
# one another's and their time bounds would measure the queue.
ONE_AT_A_TIME = {"test_tune.py", "test_browser.py"}  # Ray clusters (local ones too); and every test marked slurm


@pytest.hookimpl(tryfirst=True)  # before xdist's own hook reads the groups
def pytest_collection_modifyitems(items):
    for item in items:
        if item.get_closest_marker("slurm") or item.path.name in ONE_AT_A_TIME:
            item.add_marker(pytest.mark.xdist_group("cluster"))


def tiny_config(**changes) -> dict:
    """TINY with dotted-key changes applied, e.g. tiny_config(**{"grid.seed": [0, 1, 2]})."""
    config = copy.deepcopy(TINY)
    for key, value in changes.items():
        *parents, last = key.split(".", 1) if key.startswith("grid.") else key.split(".")
        node = config
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = value
    return config


def runs_rows(points, epochs=2) -> list[dict]:
    """A runs file's rows for sweep points (epochs 0..epochs each; the second point diverged, its test loss NaN)."""
    rows = []
    for i, p in enumerate(points):
        for e in range(epochs + 1):
            rows.append(
                {
                    "run_id": p.run_id,
                    "shard_id": "s",
                    "settings": p.settings,
                    "epoch": e,
                    "train_loss": 1.0 / (e + 1) + i,
                    "train_acc": 0.1 * e,
                    "test_loss": math.nan if i == 1 else 2.0,
                    "test_acc": 0.5,
                    "wall_s": 0.01 * e,
                    "status": "diverged" if i == 1 else "ok",
                    "error": None,
                }
            )
    return rows


def write_config(folder: Path, config: dict, name: str = "config.yaml") -> Path:
    path = folder / name
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def snakemake(workdir: Path, configfile: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    """Run the real workflow (the repo's Snakefile, its workflow profile) in `workdir`."""
    cmd = [
        sys.executable,
        "-m",
        "snakemake",
        "-s",
        str(REPO / "Snakefile"),
        "-d",
        str(workdir),
        "--configfile",
        str(configfile),
        "--cores",
        "2",
        *args,
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    if check and proc.returncode != 0:
        raise AssertionError(f"snakemake failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


def job_counts(proc: subprocess.CompletedProcess) -> dict[str, int]:
    """Snakemake's 'Job stats' table, as {rule: count}; {} when there was nothing to do."""
    lines = (proc.stdout + proc.stderr).splitlines()
    counts = {}
    for i, line in enumerate(lines):
        if line.startswith("Job stats:"):
            for row in lines[i + 3 :]:
                parts = row.split()
                if len(parts) != 2 or parts[0] == "total":
                    break
                counts[parts[0]] = int(parts[1])
            break
    return counts


def require_slurm() -> None:
    """Skip (fail under CI=true) unless a SLURM cluster can run jobs here (.ci/run starts one)."""
    problem = None
    for command in ("sbatch", "squeue", "sacct", "scontrol", "sinfo"):
        if not shutil.which(command):
            problem = f"{command} is not on PATH"
            break
    else:
        try:
            nodes = subprocess.run(["sinfo", "-h", "-N", "-o", "%T"], capture_output=True, text=True, timeout=10)
            if not {"idle", "mixed", "allocated", "completing"} & set(nodes.stdout.split()):
                problem = f"no node is up (sinfo: {nodes.stdout.split() or nodes.stderr.strip()})"
        except subprocess.TimeoutExpired:
            problem = "sinfo did not answer within 10 s"
    if problem and os.environ.get("CI") == "true":
        pytest.fail(f"SLURM is not up in CI ({problem}): .ci/run starts it with ../shared/ci/slurm-up.sh")
    if problem:
        pytest.skip(f"no SLURM cluster here ({problem}); start one with `bash ../shared/ci/slurm-up.sh` as root")


@pytest.fixture
def repo() -> Path:
    return REPO
