"""Issue 21's hostile and clumsy inputs, each refused in one line before any job, or coped with, losing nothing.

Names that pass a $-anchored pattern with a line break, Snakemake wildcard braces in a path, YAML that runs code
or repeats a key or multiplies by aliases (through `snakemake --configfile`, whose own loader reads it first), a
data spec that is not one, settings that cannot work together (d_state > seq_len), a folder of unpickled state that
another user owns, a store folder that cannot be written, a checkpoint that does not fit its model, a deleted or
shrinking table. (Bounded readers themselves: tests/test_inputs.py.)
"""

import os
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import torch
from conftest import job_counts, snakemake, tiny_config, write_config

from ssmpipe import config as cfg
from ssmpipe import keys, sweep
from ssmpipe.atomic import atomic_path, private_dir
from ssmpipe.columns import GRAM_SINGULAR
from ssmpipe.store import Store

# One point, one epoch: a shard that trains in seconds.
ONE = {"grid.model.init.real": [-0.5], "grid.seq_len": [16], "grid.seed": [0], "fixed.train.epochs": 1}


def ssmpipe(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "ssmpipe", *args], cwd=cwd, capture_output=True, text=True, timeout=600
    )


def one_line(proc: subprocess.CompletedProcess) -> str:
    """The error a user sees: exactly one line from ssmpipe, no traceback."""
    lines = [line for line in proc.stderr.splitlines() if line.startswith("ssmpipe:")]
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    return lines[0]


@pytest.mark.parametrize(
    "changes, words",
    [
        ({"sweep": "probe\n"}, "sweep = 'probe\\n': not a sweep name"),
        ({"sweep": "store\n"}, "sweep = 'store\\n': not a sweep name"),
        ({"results": "out/r{sweep}x"}, "a Snakemake wildcard brace"),
        ({"results": "out/a\nb"}, "the control character '\\n'"),
        ({"report": {"figures": [{"name": "acc\n", "kind": "curves", "metric": "test_acc"}]}}, "lowercase letters"),
    ],
)
def test_a_name_or_path_with_a_line_break_or_brace_is_refused(tmp_path, changes, words):
    with pytest.raises(cfg.ConfigError, match=None) as e:
        cfg.check(tiny_config(**{"results": str(tmp_path / "results"), **changes}))
    assert words in str(e.value)


def test_snakemakes_config_loader_is_read_again_duplicate_keys_and_templates_refused(tmp_path):
    """Snakemake reads --configfile itself (last key wins; __use_yte__ templates run); the workflow then reads the
    file as ssmpipe does and stops, before any job, in one line naming the key."""
    base = f"sweep: dup\nresults: {tmp_path / 'results'}\ngrid: {{seed: [0]}}\n"
    dup = tmp_path / "dup.yaml"
    dup.write_text(base + "fixed: {train: {lr: 0.01, lr: 100.0}}\n")
    proc = snakemake(tmp_path, dup, "-n", check=False)
    assert proc.returncode != 0 and "duplicate key 'lr' at line 4" in one_line(proc)
    yte = tmp_path / "yte.yaml"
    yte.write_text("__use_yte__: true\n" + base)
    proc = ssmpipe("validate", str(yte), cwd=tmp_path)
    assert proc.returncode == 2 and "__use_yte__" in one_line(proc) and "runs code" in one_line(proc)
    assert not (tmp_path / "results").exists()


def test_an_alias_bomb_through_snakemake_stops_at_once(tmp_path):
    """~1 KB of nested aliases (387 million values expanded): Snakemake's loader keeps them shared, and ssmpipe's
    walk of the config stops at its limit instead of running for minutes."""
    lines = [f"sweep: bomb\nresults: {tmp_path / 'results'}\ngrid: {{seed: [0]}}", "a0: &a0 [1,1,1,1,1,1,1,1,1]"]
    lines += [f"a{i}: &a{i} [" + ",".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, 9)]
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text("\n".join([*lines, "fixed: {train: {lr: 0.01}, x: *a8}"]) + "\n")
    start = time.monotonic()
    proc = snakemake(tmp_path, bomb, "-n", check=False)
    assert proc.returncode != 0 and "more than 1,000,000 values" in one_line(proc)
    assert time.monotonic() - start < 60  # it took minutes and gigabytes before


@pytest.mark.parametrize("spec", ["{}", "[1]", '{"task": {"name": "delay"}, "seq_len": 16}', '{"task": 3}'])
def test_a_data_spec_that_is_not_one_is_one_line(tmp_path, spec):
    proc = ssmpipe("data", f"--spec={spec}", "--", str(tmp_path / "x.npz"), cwd=tmp_path)
    assert proc.returncode == 2 and "not a data spec" in one_line(proc)
    assert not (tmp_path / "x.npz").exists()


def test_more_states_than_steps_trains_and_its_gram_matrix_is_singular(tmp_path):
    """d_state 32 at seq_len 16: the Gram matrix of 32 states over 16 steps has rank ≤ 16, κ = ∞ (the cap); the run
    is ok, not a failed run from an index error in the measure."""
    config = tiny_config(results=str(tmp_path / "results"), **ONE, **{"fixed.model.d_state": 32})
    proc = ssmpipe("train", str(write_config(tmp_path, config)), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    rows = pq.read_table(next((tmp_path / "results" / "store" / "runs").glob("*.parquet"))).to_pylist()
    assert {r["status"] for r in rows} == {"ok"} and all(r["gram_cond"] >= GRAM_SINGULAR * 0.99 for r in rows)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to make a folder another user owns")
def test_a_folder_of_pickled_state_that_another_user_owns_is_refused(tmp_path):
    """Ray's experiment folder and submitit's job folder are unpickled from: one someone else made is refused
    (chmod would not make its files ours), naming it."""
    theirs = tmp_path / "ray"
    theirs.mkdir()
    os.chown(theirs, 65534, 65534)  # nobody
    with pytest.raises(PermissionError) as e:
        private_dir(theirs)
    assert e.value.filename == str(theirs) and "owned by uid 65534" in str(e.value)
    assert private_dir(tmp_path / "mine").stat().st_mode & 0o777 == 0o700


def _planned_shard(tmp_path, **changes) -> tuple[Store, str, dict]:
    config = cfg.check(tiny_config(results=str(tmp_path / "results"), **ONE, **changes))
    plan = sweep.plan(config)
    (shard,) = plan.pending
    return Store(config["results"]), shard, plan.points[0].settings


def test_a_store_folder_that_cannot_be_written_is_one_line(tmp_path):
    """store/locks is a file, not a folder (as a folder it would be read-only; root writes those anyway)."""
    store, shard, _ = _planned_shard(tmp_path)
    store.lock_path(shard).parent.write_text("")
    proc = ssmpipe("train", f"--results={store.root}", "--", shard, cwd=tmp_path)
    assert proc.returncode == 1 and str(store.lock_path(shard).parent) in one_line(proc)


def test_rows_stay_when_tidying_after_them_fails(tmp_path):
    """store/progress cannot hold the progress record: training goes on (a hint only), the rows are stored and
    the job succeeds, so Snakemake never deletes them as a failed job's outputs."""
    store, shard, _ = _planned_shard(tmp_path)
    store.progress_path(shard).parent.parent.mkdir(parents=True, exist_ok=True)
    store.progress_path(shard).parent.write_text("")
    proc = ssmpipe("train", f"--results={store.root}", "--", shard, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    ids, stored = store.trusted(shard, repair=False)
    assert stored and list(ids) == [r["run_id"] for r in pq.read_table(store.runs_path(shard)).to_pylist()][:1]


def test_a_checkpoint_that_does_not_fit_its_model_is_quarantined_and_the_shard_retrains(tmp_path):
    store, shard, settings = _planned_shard(tmp_path)
    reference = tmp_path / "ref"
    ref_store, ref_shard, _ = _planned_shard(reference)
    assert ssmpipe("train", f"--results={ref_store.root}", "--", ref_shard, cwd=tmp_path).returncode == 0
    wrong = {
        "finished": {},
        "current": {
            "group": keys.pack_key(settings),
            "epoch": 1,
            "elapsed": 0.0,
            "status": ["ok"],
            "rows": [],
            "gens": [torch.Generator().get_state()],
            "params": {"encoder.weight": torch.zeros(3, 3)},
            "opt": {},
            "plateau": {},
        },
    }
    with atomic_path(store.ckpt_path(shard)) as tmp:
        torch.save(wrong, tmp)
    proc = ssmpipe("train", f"--results={store.root}", "--", shard, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "does not fit the shard's model" in proc.stderr and not store.ckpt_path(shard).exists()
    assert any(store.quarantine_dir().glob(f"*{shard}.pt"))
    rows = pq.read_table(store.runs_path(shard)).to_pylist()
    ref = pq.read_table(ref_store.runs_path(ref_shard)).to_pylist()
    assert [r["status"] for r in rows] == [r["status"] for r in ref] and {r["status"] for r in rows} == {"ok"}
    assert [r["train_loss"] for r in rows] == pytest.approx([r["train_loss"] for r in ref], rel=1e-5)  # from scratch


def test_a_deleted_table_is_rebuilt_and_a_shrinking_one_is_kept_beside(tmp_path):
    config = tiny_config(results=str(tmp_path / "results"), **{**ONE, "grid.seed": [0, 1]})
    configfile = write_config(tmp_path, config)
    snakemake(tmp_path, configfile)
    table = tmp_path / "results" / "tiny" / "runs.parquet"
    table.unlink()
    rerun = snakemake(tmp_path, configfile)
    assert job_counts(rerun).get("aggregate") == 1 and job_counts(rerun).get("report") == 1 and table.is_file()
    assert "train" not in job_counts(rerun)
    fewer = write_config(tmp_path, {**config, "grid": {**config["grid"], "seed": [0]}}, "fewer.yaml")
    snakemake(tmp_path, fewer)
    previous = table.with_name("runs.previous.parquet")
    assert pq.read_table(table).num_rows == 2 and pq.read_table(previous).num_rows == 4  # 2 epochs (0, 1) a run
    log = (tmp_path / "results" / "tiny" / "logs" / "aggregate.log").read_text()
    assert "shrinks from 4 to 2 rows" in log
