"""Nothing in a config or a file reaches a shell or an unpickler (issue 11, section 1).

Shell syntax in every config string that is a path or a name, through a real Snakemake
run (sweep and tune study), runs nothing; a name the schema constrains is refused before
any job; a crafted pickle where a trial checkpoint belongs is refused, naming the file.
"""

import html
import json
import os
import pickle
import stat
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from conftest import REPO, job_counts, snakemake, tiny_config, write_config

from ssmpipe import config as cfg
from ssmpipe import slurm
from ssmpipe.config import ConfigError

# Command substitutions first (they run even where the command then fails), the comment last.
INJECTIONS = (
    "$(touch PWNED{}2)",
    "`touch PWNED{}3`",
    "' ; touch PWNED{}4 '",
    '" && touch PWNED{}5 "',
    "; touch PWNED{}1 #",
)


def evil(tag: str) -> str:
    """A name holding every injection; each would create a file PWNED<tag><n> in the job's folder."""
    return f"{tag} " + " ".join(s.format(tag) for s in INJECTIONS)


def pwned(*roots: Path) -> list[Path]:
    """Files an injection created (named PWNED...) under roots (virtualenv and git folders skipped)."""
    found = []
    for root in roots:
        for folder, dirs, files in os.walk(root):
            dirs[:] = [d for d in dirs if d not in (".venv", ".git")]
            found += [Path(folder) / f for f in files + dirs if f.startswith("PWNED")]
    return found


@pytest.mark.slow
def test_shell_syntax_in_paths_and_names_runs_nothing(tmp_path):
    """results root, npz path, report and figure titles and captions: all reach the jobs, none runs."""
    npz = tmp_path / f"{evil('npz')}.npz"
    rng = np.random.default_rng(0)
    np.savez(
        npz,
        **{
            f"{xy}_{split}": rng.integers(0, 4, (n, 16), dtype=np.int64)
            for split, n in (("train", 64), ("test", 32))
            for xy in "xy"
        },
    )
    results = f"-r {evil('results')}"  # a leading '-' too: still a value, not an option
    figures = [
        {**f, "title": evil(f"title{i}"), "caption": evil(f"caption{i}")}
        for i, f in enumerate(cfg.load_schema()["properties"]["report"]["properties"]["figures"]["default"])
    ]
    config = tiny_config(
        results=results,
        **{
            "fixed.task": {"name": "npz", "path": str(npz), "vocab": 4},
            "grid.seq_len": [16],
            "report.title": evil("title"),
            "report.figures": figures,
            "tune": {"space": {"seed": {"choice": [0, 1]}}, "num_samples": 2},
        },
    )
    snakemake(tmp_path, write_config(tmp_path, config))

    assert pwned(tmp_path, Path.cwd(), REPO) == []
    assert {p.name for p in tmp_path.iterdir()} == {"config.yaml", npz.name, results, ".snakemake"}
    root = tmp_path / results
    runs = pq.read_table(root / "tiny" / "runs.parquet").to_pylist()
    assert len(runs) == 4 * 3 and {r["status"] for r in runs} == {"ok"}  # 4 points, epochs 0-2
    assert {r["task.path"] for r in runs} == {str(npz)}
    assert len(list((root / "store" / "runs").glob("*.parquet"))) == 1 + 2  # the shard, the study's 2 trials
    assert html.escape(evil("title")) in (root / "tiny" / "report" / "index.html").read_text()
    study = root / "tiny-tune"
    assert json.loads((study / "study.json").read_text())["n_trials"] == 2
    assert (study / "report" / "index.html").is_file() and (study / "snakemake-config.yaml").is_file()
    assert stat.S_IMODE((study / "ray").stat().st_mode) == 0o700  # Ray unpickles what is in there


@pytest.mark.slow
@pytest.mark.parametrize("key", ["sweep", "tune.study", "report.figures"])
def test_shell_syntax_in_a_constrained_name_is_refused_before_any_job(tmp_path, key):
    """Names the schema constrains to a pattern (the sweep, a study, a figure): a config error, nothing run."""
    value = evil("name")
    if key == "report.figures":
        value = [{"name": value, "kind": "curves", "metric": "test_acc"}]
    config = tiny_config(**{key: value, "results": str(tmp_path / "results")})
    if key == "tune.study":
        config["tune"].update(space={"seed": {"choice": [0, 1]}}, num_samples=2)
    proc = snakemake(tmp_path, write_config(tmp_path, config), check=False)
    assert proc.returncode != 0, proc.stdout + proc.stderr
    assert job_counts(proc) == {} and pwned(tmp_path, Path.cwd(), REPO) == []
    assert not (tmp_path / "results").exists()


def test_a_line_break_never_reaches_an_sbatch_script(tmp_path):
    """submitit writes requests and the job folder one #SBATCH line each: a line break would start a shell line."""
    with pytest.raises(ConfigError, match="partition"):
        slurm.check_requests(cfg.check(tiny_config(**{"slurm.partition": "gpu\ntouch PWNED #"}))["slurm"])
    with pytest.raises(ConfigError, match="results"):
        slurm.job_folder(tmp_path / "r\ntouch PWNED #" / "slurm")
    folder = slurm.job_folder(tmp_path / "results" / "s" / "slurm")  # submitit pickles into it: private
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    assert pwned(tmp_path) == []


class Evil:
    """Unpickled, it would run a shell command."""

    def __init__(self, command: str):
        self.command = command

    def __reduce__(self):
        return os.system, (self.command,)


@pytest.mark.parametrize("writer", ["torch.save", "pickle.dump"])
def test_a_crafted_trial_checkpoint_is_refused_naming_it(tmp_path, writer):
    """A state.pt whose unpickling would run os.system: an error naming the file, the command never run."""
    from ray import tune

    from ssmpipe.checkpoint import load_state
    from ssmpipe.errors import StoreError
    from ssmpipe.store import Store
    from ssmpipe.tune.study import STATE, settle

    folder = tmp_path / "results" / "s" / "ray" / "t1" / "checkpoint_000001"
    folder.mkdir(parents=True)
    path, marker = folder / STATE, tmp_path / "PWNED"
    state = {"epoch": 1, "status": ["ok"], "rows": [Evil(f"touch '{marker}'")]}
    if writer == "torch.save":
        torch.save(state, path)
    else:
        path.write_bytes(pickle.dumps(state))
    with pytest.raises(StoreError, match="not a checkpoint ssmpipe can trust") as refused:
        load_state(path)
    assert str(path) in str(refused.value)
    with pytest.raises(StoreError, match="not a checkpoint"):  # the driver's path: a trial stopped early
        settle(Store(tmp_path / "results"), "s", "t1", tune.Checkpoint.from_directory(str(folder)), None)
    assert not marker.exists() and pwned(tmp_path) == []
    assert not (tmp_path / "results" / "store").exists()  # and no rows written from it


def test_a_trial_state_loads_weights_only(tmp_path):
    """What train_group checkpoints (tensors, generator states, optimiser state, rows) is in weights_only's set."""
    from ssmpipe import data, sweep
    from ssmpipe.checkpoint import load_state
    from ssmpipe.store import Store
    from ssmpipe.train import ensure_data, length_data, pack_key, train_group

    config = cfg.check(tiny_config(results=str(tmp_path / "results")))
    plan = sweep.plan(config)
    store = Store(config["results"])
    points = [{**p, "shard": plan.shards[0]} for p in store.read_spec(plan.shards[0])["points"]]
    points = [p for p in points if pack_key(p["settings"]) == pack_key(points[0]["settings"])]
    saved = []

    def checkpoint(state):
        torch.save(state, tmp_path / f"{state['epoch']}.pt")
        saved.append(state["epoch"])

    train_group(
        points,
        ensure_data(store, data.spec_of(points[0]["settings"])),
        torch.device("cpu"),
        None,
        checkpoint,
        "",
        length_data(store, points[0]["settings"]),
    )
    assert saved == [0, 1, 2]
    for epoch in saved:
        state = load_state(tmp_path / f"{epoch}.pt")
        assert state["epoch"] == epoch and len(state["rows"]) == len(points) * (epoch + 1)
        assert isinstance(state["opt"], dict) and all(g.dtype == torch.uint8 for g in state["gens"])


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))
