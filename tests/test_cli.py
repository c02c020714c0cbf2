"""The `ssmpipe` command's shape: every subcommand takes the sweep's config file (the rules' `--results=R -- NAME`
form still works), `--version`, and every user mistake is one line on stderr with a non-zero exit."""

import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml
from conftest import tiny_config, write_config

import ssmpipe


def ssmpipe_cli(*args, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "ssmpipe", *map(str, args)],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """A folder with two tiny sweeps (config.yaml, other.yaml: 4 points in 2 shards each, one point shared) and
    exps.yaml listing both, trained with `ssmpipe train exps.yaml`."""
    folder = tmp_path_factory.mktemp("cli")
    base = {"shard_size": 2, "fixed.train.epochs": 2, "grid.model.init.real": [-0.5], "grid.seq_len": [16]}
    write_config(folder, tiny_config(**base, **{"grid.seed": [0, 1, 2, 3]}))
    write_config(folder, tiny_config(sweep="other", **base, **{"grid.seed": [3, 4]}), "other.yaml")
    write_config(folder, {"experiments": ["config.yaml", "other.yaml"], "results": "results"}, "exps.yaml")
    proc = ssmpipe_cli("train", "exps.yaml", cwd=folder)
    assert proc.returncode == 0, proc.stderr
    assert "sweep 'tiny': 2 shards trained, 2 in all" in proc.stdout
    assert "sweep 'other': 1 shards trained, 2 in all" in proc.stdout, proc.stdout  # seed 3: tiny's shard, reused
    return folder


def test_version():
    proc = ssmpipe_cli("--version", cwd=Path.cwd())
    assert proc.returncode == 0 and proc.stdout.strip() == f"ssmpipe {ssmpipe.__version__}"


def test_every_subcommand_takes_the_config_file(trained):
    # aggregate and report: from the config file, as from --results=R -- SWEEP (the rules' form)
    proc = ssmpipe_cli("aggregate", "config.yaml", cwd=trained)
    assert proc.returncode == 0 and "results/tiny/runs.parquet: 12 rows" in proc.stdout, proc.stderr  # 4 × 3 epochs
    proc = ssmpipe_cli("aggregate", "--results=results", "--out=flag.parquet", "--", "tiny", cwd=trained)
    assert proc.returncode == 0, proc.stderr
    by_config = pd.read_parquet(trained / "results" / "tiny" / "runs.parquet")
    pd.testing.assert_frame_equal(by_config, pd.read_parquet(trained / "flag.parquet"))
    proc = ssmpipe_cli("report", "config.yaml", cwd=trained)
    assert proc.returncode == 0 and (trained / "results" / "tiny" / "report" / "index.html").is_file(), proc.stderr
    proc = ssmpipe_cli("report", "--results=results", "--", "tiny", cwd=trained)
    assert proc.returncode == 0 and "report: results/tiny/report/index.html" in proc.stdout, proc.stderr

    # a config with experiments: stands for each of its sweeps
    proc = ssmpipe_cli("aggregate", "exps.yaml", cwd=trained)
    assert proc.returncode == 0 and "results/other/runs.parquet: 6 rows" in proc.stdout, proc.stderr
    proc = ssmpipe_cli("report", "exps.yaml", cwd=trained)
    assert proc.returncode == 0 and proc.stdout.count("report: ") == 2, proc.stderr
    write_config(trained, tiny_config(sweep="fresh", **{"grid.seed": [7]}), "fresh.yaml")  # never run
    write_config(trained, {"experiments": ["config.yaml", "fresh.yaml"]}, "partial.yaml")
    proc = ssmpipe_cli("report", "partial.yaml", cwd=trained)  # what has run is reported; the rest named, skipped
    assert proc.returncode == 0 and proc.stdout.count("report: ") == 1 and "results/tiny/report" in proc.stdout
    assert "sweep 'fresh' has no table yet" in proc.stderr and "skipped" in proc.stderr, proc.stderr
    proc = ssmpipe_cli("papers", "exps.yaml", cwd=trained)
    page = trained / "results" / "papers" / "index.html"
    assert proc.returncode == 0 and page.is_file() and "<code>other</code>" in page.read_text(), proc.stderr
    proc = ssmpipe_cli("status", "exps.yaml", cwd=trained)
    assert proc.returncode == 0, proc.stderr
    assert "sweep 'tiny': 4 points in 2 shards (2 trained)" in proc.stdout
    assert "sweep 'other': 2 points in 2 shards (2 trained)" in proc.stdout, proc.stdout


def test_validate_counts_the_points_still_to_train(tmp_path):
    config = tiny_config(
        shard_size=2, **{"grid.model.init.real": [-0.5], "grid.seq_len": [16], "grid.seed": [0, 1, 2, 3]}
    )
    configfile = write_config(tmp_path, config)
    proc = ssmpipe_cli("validate", configfile, cwd=tmp_path)
    assert proc.returncode == 0 and "4 points in 2 shards, 4 points still to train (in 2 shards)" in proc.stdout
    assert f"; results: {tmp_path / 'results'}" in proc.stdout  # a relative results: under where it runs, named
    status = ssmpipe_cli("status", configfile, cwd=tmp_path)
    assert status.returncode == 0 and f"\n  results: {tmp_path / 'results'}\n" in status.stdout, status.stdout
    grown = write_config(
        tmp_path,
        tiny_config(
            shard_size=2, **{"grid.model.init.real": [-0.5], "grid.seq_len": [16], "grid.seed": [0, 1, 2, 3, 4, 5, 6]}
        ),
        "grown.yaml",
    )
    assert ssmpipe_cli("train", configfile, cwd=tmp_path).returncode == 0
    proc = ssmpipe_cli("validate", grown, cwd=tmp_path)  # 4 points stored in 2 shards; 3 new ones in 2 shards
    assert proc.returncode == 0 and "7 points in 4 shards, 3 points still to train (in 2 shards)" in proc.stdout, (
        proc.stdout
    )


def _mistakes(folder: Path) -> list[tuple[list[str], str]]:
    """(arguments, what the one line must say) for each user mistake; the files they need are made in `folder`."""
    (folder / "adir").mkdir()
    (folder / "empty.yaml").write_text("")
    (folder / "bad.yaml").write_text("sweep: [unclosed\n")
    (folder / "afile.txt").write_text("x")
    write_config(folder, tiny_config(sweep="fresh"), "fresh.yaml")  # valid, never run
    write_config(folder, tiny_config(results="afile.txt"), "fileroot.yaml")
    return [
        ([], "the following arguments are required: COMMAND"),
        (["trian", "config.yaml"], "invalid choice: 'trian'"),
        (["status"], "the following arguments are required: config"),
        (["status", "--bogus", "config.yaml"], "unrecognized arguments: --bogus"),
        (["status", "missing.yaml"], "config file 'missing.yaml' does not exist"),
        (["status", "adir"], "config file 'adir' is a folder"),
        (["validate", "empty.yaml"], "config file 'empty.yaml' is empty"),
        (["validate", "bad.yaml"], "config file 'bad.yaml' is not valid YAML"),
        (["validate", "fileroot.yaml"], "results = 'afile.txt': a file, not a folder"),
        (["status", "--watch", "--interval", "0", "config.yaml"], "'0' is not a number of seconds"),
        (["status", "--watch", "--interval", "soon", "config.yaml"], "'soon' is not a number of seconds"),
        (["status", "--watch", "--interval", "nan", "config.yaml"], "'nan' is not a number of seconds"),
        (["status", "--interval=-5", "config.yaml"], "'-5' is not a number of seconds"),
        (["report", "tiny"], "'tiny': give the sweep's config file, or --results=RESULTS -- tiny"),
        (["report", "--results=results", "--", "nosuch"], "no sweep 'nosuch' under 'results' (there: "),
        (["report", "--results=results", "--", "../etc"], "sweep = '../etc': not a sweep name"),
        (["report", "--results=afile.txt", "--", "tiny"], "--results 'afile.txt': a file, not a folder"),
        (["report", "--results=nowhere", "--", "tiny"], "--results 'nowhere': no such folder"),
        (["report", "fresh.yaml"], "sweep 'fresh' has no table yet"),
        (["aggregate", "fresh.yaml"], "'results/fresh/points.json' does not exist"),
        (["aggregate", "--out=x.parquet", "exps.yaml"], "--out 'x.parquet': one file, but 'exps.yaml' names 2 sweeps"),
        (["papers", "missing.yaml"], "config file 'missing.yaml' does not exist"),
        (["papers", "--results=results", "--", "nosuch"], "no sweep 'nosuch' under 'results'"),
        (["train"], "give a sweep config file, or --results=RESULTS -- SHARD"),
        (["train", "config.yaml", "abc123"], "with a config file, no shard ids and no --slurm"),
        (["train", "--results=results"], "give one shard id after it (got 0)"),
        (["train", "--results=results", "--", "0123456789abcdef"], "shard '0123456789abcdef': no such shard"),
        (["train", "--results=results", "--", "../../escape"], "shard '../../escape': no such shard"),
        (["train", "--threads=many", "config.yaml"], "argument --threads: invalid int value: 'many'"),
        (["tune", "config.yaml", "--cluster=moon"], "argument --cluster: invalid choice: 'moon'"),
        (["data", "--spec={", "out.npz"], "--spec '{' is not JSON"),
    ]


def test_every_user_mistake_is_one_line_and_a_non_zero_exit(trained, tmp_path):
    folder = tmp_path / "work"
    folder.mkdir()
    for name in ("config.yaml", "other.yaml", "exps.yaml"):
        (folder / name).write_text((trained / name).read_text())
    (folder / "results").symlink_to(trained / "results")
    for args, says in _mistakes(folder):
        proc = ssmpipe_cli(*args, cwd=folder)
        lines = [line for line in proc.stderr.splitlines() if line.strip()]
        assert proc.returncode == 2 and len(lines) == 1, (args, proc.returncode, proc.stderr)
        assert lines[0].startswith("ssmpipe") and says in lines[0], (args, lines[0])
    assert not list(trained.rglob("escape*"))  # the shard id was refused before any lock file was made
    assert yaml.safe_load((folder / "exps.yaml").read_text())["experiments"] == ["config.yaml", "other.yaml"]


def test_ctrl_c_stops_status_watch_with_exit_0(tmp_path):
    configfile = write_config(tmp_path, tiny_config())  # never trained: --watch would go on forever
    with open(tmp_path / "watch.out", "w") as out:
        # Ctrl-C's default action for it, as in a terminal (a test run started in the background inherits SIGINT
        # ignored, and Python then never raises KeyboardInterrupt)
        watch = subprocess.Popen(
            [sys.executable, "-m", "ssmpipe", "status", "--watch", "--interval=0.2", str(configfile)],
            cwd=tmp_path,
            stdout=out,
            stderr=subprocess.PIPE,
            text=True,
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        )
    try:
        deadline = time.monotonic() + 300
        while (tmp_path / "watch.out").read_text().count("to train") < 2 and time.monotonic() < deadline:
            time.sleep(0.1)  # two tables drawn
        watch.send_signal(signal.SIGINT)
        _, err = watch.communicate(timeout=60)
    finally:
        watch.kill()
    assert watch.returncode == 0 and "Traceback" not in err and "KeyboardInterrupt" not in err, err
    assert (tmp_path / "watch.out").read_text().count("sweep 'tiny': 8 points in 2 shards (0 trained)") >= 2


def test_ctrl_c_while_training_is_one_line_and_the_checkpoint_stays(tmp_path):
    """SIGINT (what Ctrl-C on Snakemake sends every job): exit 130, one line, no traceback; a rerun resumes."""
    from ssmpipe import config as cfg
    from ssmpipe import sweep
    from ssmpipe.store import Store

    changes = {
        "grid.seq_len": [64],
        "grid.seed": [0],
        "grid.model.init.real": [-0.5],
        "fixed.train.epochs": 40,
        "fixed.task.n_train": 512,
        "fixed.model.d_model": 16,
    }
    plan = sweep.plan(cfg.check(tiny_config(results=str(tmp_path / "results"), **changes)))
    (shard,) = plan.pending
    store = Store(tmp_path / "results")
    cmd = [sys.executable, "-m", "ssmpipe", "train", f"--results={store.root}", "--", shard]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while not store.ckpt_path(shard).exists() and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "Traceback" not in err and [line for line in err.splitlines() if line.startswith("ssmpipe:")] == [
        "ssmpipe: interrupted (what was stored stays; a training shard resumes from its checkpoint)"
    ]
    assert store.ckpt_path(shard).exists() and not store.runs_path(shard).exists()
