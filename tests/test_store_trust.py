"""A store to trust, tried with real processes and files: crafted checkpoints, damaged shards and specs, data
changed in place, a full disk, two Snakemake runs sharing a store, and kill -9 of Snakemake."""

import os
import pickle
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import job_counts, snakemake, tiny_config, write_config

from ssmpipe import config as cfg
from ssmpipe import data, sweep
from ssmpipe.checkpoint import load_state
from ssmpipe.store import Store

METRICS = ["train_loss", "train_acc", "test_loss", "test_acc", "tau", "mc"]


def _table(root: Path, sweep_name: str = "tiny") -> pd.DataFrame:
    df = pd.read_parquet(root / sweep_name / "runs.parquet")
    return df.set_index(["run_id", "epoch"]).sort_index()[METRICS]


def _train_cmd(root, shard):
    return [sys.executable, "-m", "ssmpipe", "train", "--results", str(root), "--threads", "1", shard]


def _one_shard(root: Path, **changes) -> str:
    plan = sweep.plan(cfg.check(tiny_config(results=str(root), shard_size=100, **{"grid.seq_len": [16], **changes})))
    assert len(plan.pending) == 1
    return plan.pending[0]


class _Evil:
    def __reduce__(self):
        return os.system, ("touch PWNED",)


def test_a_crafted_checkpoint_is_refused_naming_the_file_and_runs_nothing(tmp_path):
    root = tmp_path / "results"
    shard = _one_shard(root)
    ckpt = Store(root).ckpt_path(shard)
    ckpt.parent.mkdir(parents=True)
    torch.save({"finished": {}, "evil": _Evil()}, ckpt)  # unpickled as it was written, it would run `touch`
    proc = subprocess.run(_train_cmd(root, shard), cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    assert str(ckpt) in proc.stderr and "not a checkpoint ssmpipe can trust" in proc.stderr
    assert not (tmp_path / "PWNED").exists() and not Path("PWNED").exists()
    assert not Store(root).runs_path(shard).exists() and ckpt.exists()  # nothing trained, nothing lost
    with open(tmp_path / "plain.pkl", "wb") as f:  # a bare pickle: the same refusal
        pickle.dump(_Evil(), f)
    with pytest.raises(Exception, match="plain.pkl: not a checkpoint"):
        load_state(tmp_path / "plain.pkl")
    assert not (tmp_path / "PWNED").exists()


@pytest.mark.slow
def test_a_truncated_shard_and_an_edited_spec_are_quarantined_and_retrained_identically(tmp_path):
    configfile = write_config(tmp_path, tiny_config())
    snakemake(tmp_path, configfile)
    before = _table(tmp_path / "results")
    store = Store(tmp_path / "results")
    first, second = sorted(store.done_shards())
    runs = store.runs_path(first)
    runs.write_bytes(runs.read_bytes()[: runs.stat().st_size // 2])  # a truncated Parquet file
    spec = store.spec_path(second)
    spec.write_text(spec.read_text().replace('"lr": 0.01', '"lr": 0.02'))  # a spec edited by hand
    assert '"lr": 0.02' in spec.read_text()

    again = snakemake(tmp_path, configfile)
    out = again.stdout + again.stderr
    assert f"{runs.relative_to(tmp_path)} cannot be trusted: not a runs table (ArrowInvalid" in out
    assert f"{spec.relative_to(tmp_path)} cannot be trusted: the settings of run" in out
    assert job_counts(again)["train"] == 2
    quarantined = sorted(p.name for p in (tmp_path / "results" / "store" / "quarantine").iterdir())
    assert any(n.endswith(f"runs-{first}.parquet") for n in quarantined)
    assert any(n.endswith(f"specs-{second}.json") for n in quarantined)
    assert any(n.endswith(f"runs-{second}.parquet") for n in quarantined)  # rows made under that spec go too
    assert '"lr": 0.01' in spec.read_text()  # the spec, planned anew
    pd.testing.assert_frame_equal(_table(tmp_path / "results"), before, check_exact=True)
    assert job_counts(snakemake(tmp_path, configfile)) == {}  # and trusted from now on


@pytest.mark.slow
def test_a_changed_npz_at_the_same_path_is_a_new_data_set_and_retrains(tmp_path):
    npz = tmp_path / "tokens.npz"

    def write_tokens(seed):
        spec = data.spec_of(cfg.check(tiny_config(**{"fixed.task.seed": seed}))["fixed"])
        data.save(data.build(spec), npz)

    write_tokens(0)
    config = tiny_config(
        **{"fixed.task": {"name": "npz", "path": str(npz), "vocab": 4}, "grid.seq_len": [16], "grid.seed": [0]}
    )
    configfile = write_config(tmp_path, config)
    assert job_counts(snakemake(tmp_path, configfile))["train"] == 1
    old = pd.read_parquet(tmp_path / "results" / "tiny" / "runs.parquet")
    assert job_counts(snakemake(tmp_path, configfile)) == {}  # unchanged: nothing to do

    write_tokens(1)  # other content, same path
    changed = snakemake(tmp_path, configfile)
    assert job_counts(changed)["train"] == 1 and job_counts(changed)["data"] == 1
    new = pd.read_parquet(tmp_path / "results" / "tiny" / "runs.parquet")
    assert set(new["run_id"]).isdisjoint(old["run_id"])  # other runs, trained on the new data
    assert set(new["task.data_hash"]) != set(old["task.data_hash"])
    assert not np.allclose(
        new.sort_values(["run_id", "epoch"])["train_loss"], old.sort_values(["run_id", "epoch"])["train_loss"]
    )
    assert len(list((tmp_path / "results" / "data" / "npz").glob("*.npz"))) == 2  # both data sets cached


@pytest.mark.slow
def test_a_full_disk_while_training_fails_the_job_keeps_the_checkpoint_and_a_rerun_finishes(tmp_path):
    changes = {"fixed.train.epochs": 12, "fixed.task.n_train": 512, "fixed.model.d_model": 16}
    ref_root, root = tmp_path / "ref", tmp_path / "run"
    shard = _one_shard(ref_root, **changes)
    assert _one_shard(root, **changes) == shard
    subprocess.run(_train_cmd(ref_root, shard), check=True, capture_output=True, timeout=300)

    store = Store(root)
    proc = subprocess.Popen(_train_cmd(root, shard), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    while time.time() < deadline:  # once a few epochs are checkpointed, files may no longer grow (RLIMIT_FSIZE)
        try:
            if load_state(store.ckpt_path(shard))["current"]["epoch"] >= 2:
                break
        except Exception:
            pass  # not there yet, or renamed over while read
        time.sleep(0.05)
    size = store.ckpt_path(shard).stat().st_size
    resource.prlimit(proc.pid, resource.RLIMIT_FSIZE, (size, size))  # the next, larger checkpoint cannot fit
    _, err = proc.communicate(timeout=300)
    assert proc.returncode != 0 and "I/O error while training" in err and "File too large" in err
    assert "rerun to continue" in err
    assert not store.runs_path(shard).exists()  # no row, and so no `failed` row
    kept = load_state(store.ckpt_path(shard))["current"]["epoch"]
    assert 2 <= kept < 12

    resumed = subprocess.run(_train_cmd(root, shard), capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0 and f"after epoch {kept}" in resumed.stderr
    got = pd.read_parquet(store.runs_path(shard)).set_index(["run_id", "epoch"]).sort_index()
    ref = pd.read_parquet(Store(ref_root).runs_path(shard)).set_index(["run_id", "epoch"]).sort_index()
    assert set(got["status"]) == {"ok"}
    pd.testing.assert_frame_equal(got[METRICS], ref[METRICS], check_exact=True)


@pytest.mark.slow
def test_two_snakemake_runs_sharing_a_store_train_each_shared_shard_once(tmp_path):
    shared = tmp_path / "shared-results"
    changes = {"results": str(shared), "fixed.train.epochs": 4, "grid.model.init.real": [-0.5]}
    procs = []
    for name, lengths in (("first", [16, 24]), ("second", [16, 24, 32])):  # overlapping: lengths 16, 24 shared
        folder = tmp_path / name
        folder.mkdir()
        configfile = write_config(folder, tiny_config(sweep=name, **changes, **{"grid.seq_len": lengths}))
        procs.append(
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "snakemake",
                    "-s",
                    str(Path(__file__).parents[1] / "Snakefile"),
                    "-d",
                    str(folder),
                    "--configfile",
                    str(configfile),
                    "--cores",
                    "1",
                ],
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
        )
    outs = [p.communicate(timeout=600)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    logs = [p.read_text() for p in shared.glob("*/logs/train/*.log")]
    trained = sum("wrote" in t and "rows to" in t for t in logs)
    reused = sum("already trained (by another process)" in t for t in logs)
    shards = Store(shared).done_shards()
    assert len(shards) == 3  # 2 shared, 1 of the second only
    assert trained == 3 and reused == 2, logs  # each shard trained exactly once
    first, second = _table(shared, "first"), _table(shared, "second")
    pd.testing.assert_frame_equal(first, second.loc[first.index], check_exact=True)


@pytest.mark.slow
def test_kill_9_of_snakemake_then_the_readme_commands_resume_bit_identically(tmp_path, repo):
    config = tiny_config(**{"fixed.train.epochs": 40, "fixed.task.n_train": 512})
    ref_dir, run_dir = tmp_path / "ref", tmp_path / "run"
    ref_dir.mkdir(), run_dir.mkdir()
    snakemake(ref_dir, write_config(ref_dir, config))
    configfile = write_config(run_dir, config)

    base = [
        sys.executable,
        "-m",
        "snakemake",
        "-s",
        str(repo / "Snakefile"),
        "-d",
        str(run_dir),
        "--configfile",
        str(configfile),
        "--cores",
        "2",
    ]
    proc = subprocess.Popen(base, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    ckpts = run_dir / "results" / "store" / "ckpt"
    deadline = time.time() + 300
    while time.time() < deadline and not (ckpts.is_dir() and len(list(ckpts.glob("*.pt"))) == 2):
        time.sleep(0.1)
    os.killpg(proc.pid, signal.SIGKILL)  # Snakemake and every job it started, at once (a crash)
    proc.wait()
    interrupted = len(list(ckpts.glob("*.pt")))
    assert interrupted >= 1 and not (run_dir / "results" / "tiny" / "runs.parquet").exists()

    readme = (repo / "README.md").read_text()
    assert "snakemake --unlock" in readme  # what the README says to run next
    subprocess.run([*base, "--unlock"], check=True, capture_output=True, timeout=120)
    resumed = subprocess.run(base, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    logs = "".join(p.read_text() for p in (run_dir / "results" / "tiny" / "logs" / "train").glob("*.log"))
    assert logs.count("resuming group") == interrupted
    pd.testing.assert_frame_equal(_table(run_dir / "results"), _table(ref_dir / "results"), check_exact=True)
