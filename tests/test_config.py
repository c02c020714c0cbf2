"""Bad input: each bad config gives its own clear error, exits non-zero, starts no job, touches nothing."""

import subprocess
import sys

import pytest
from conftest import snakemake, tiny_config, write_config

from ssmpipe import config as cfg

MISSING = "/nonexistent/tokens.npz"

# name -> (config changes, words the error must contain: the key and the value)
BAD = {
    "unknown top-level key": ({"epochs": 3}, ["epochs", "3", "unknown key"]),
    "unknown nested key": ({"fixed.model.init.reall": -1.0}, ["reall", "-1.0", "unknown key"]),
    "wrong type": ({"fixed.seq_len": "long"}, ["fixed.seq_len", "'long'", "not of type 'integer'"]),
    "out of range": ({"fixed.model.init.real": 0.5}, ["fixed.model.init.real", "0.5", "maximum"]),
    "empty axis": ({"grid.seed": []}, ["grid.seed", "[]", "at least one value"]),
    "unknown axis": ({"grid.model.init.foo": [1, 2]}, ["grid.model.init.foo", "[1, 2]", "unknown setting"]),
    "axis value out of range": ({"grid.model.init.real": [-1.0, 2.0]}, ["grid.model.init.real[1]", "2.0"]),
    "axis value wrong type": ({"grid.seq_len": [16, "x"]}, ["grid.seq_len[1]", "'x'", "integer"]),
    "axis is not a list": ({"grid.seed": 3}, ["grid.seed", "3", "not of type 'array'"]),
    "axis names a group": ({"grid.model": [1]}, ["grid.model", "unknown setting"]),
    "duplicate axis value": ({"grid.seed": [0, 1, 0]}, ["grid.seed", "0", "twice"]),
    "missing data path": (
        {"fixed.task.name": "npz", "fixed.task.path": MISSING},
        ["task.path", MISSING, "no such file"],
    ),
    "npz without path": ({"fixed.task.name": "npz"}, ["task.path", "missing"]),
    "unknown task": ({"fixed.task.name": "mnist"}, ["fixed.task.name", "'mnist'", "is not one of"]),
    "zero shard size": ({"shard_size": 0}, ["shard_size", "0", "minimum"]),
    "lag not below length": ({"grid.task.lag": [3, 16]}, ["task.lag = 16", "seq_len = 16"]),
    "lag not below a test length": (
        {"fixed.test_seq_lens": [32, 3]},
        ["test_seq_lens: 3", "task.lag = 3", "seq_len = 3"],
    ),
    "profile of a scalar": (
        {"report": {"figures": [{"name": "m", "kind": "profile", "metric": "mc"}]}},
        ["report.figures[0].metric", "'mc'", "'profile'", "mf"],
    ),
    "lengths with an x": (
        {"report": {"figures": [{"name": "m", "kind": "lengths", "metric": "len_test_acc", "x": "seq_len"}]}},
        ["report.figures[0]", "'lengths'", "no x"],
    ),
    "dt_min above dt_max": ({"fixed.model.init.dt_min": 0.5}, ["dt_min = 0.5", "dt_max = 0.1"]),
    "odd state size": ({"fixed.model.d_state": 5}, ["fixed.model.d_state", "5", "multiple of 2"]),
    "bad sweep name": ({"sweep": "../escape"}, ["sweep", "'../escape'", "does not match"]),
    "missing sweep name": ({"sweep": None}, ["sweep", "required"]),
}


def _bad(changes):
    config = tiny_config(**{k: v for k, v in changes.items() if v is not None})
    for k, v in changes.items():
        if v is None:
            config.pop(k)
    return config


@pytest.mark.parametrize("name", sorted(BAD))
def test_check_names_key_and_value(name):
    changes, words = BAD[name]
    with pytest.raises(cfg.ConfigError) as err:
        cfg.check(_bad(changes))
    message = str(err.value)
    for word in words:
        assert word in message, f"{name}: {word!r} not in {message!r}"


def test_each_bad_config_has_its_own_message():
    messages = set()
    for changes, _ in BAD.values():
        with pytest.raises(cfg.ConfigError) as err:
            cfg.check(_bad(changes))
        messages.add(str(err.value))
    assert len(messages) == len(BAD) >= 10


@pytest.mark.slow
@pytest.mark.parametrize(
    "name",
    [
        "unknown nested key",
        "axis value out of range",
        "missing data path",
        "empty axis",
        "lag not below length",
        "wrong type",
    ],
)
def test_snakemake_refuses_before_any_job_and_keeps_results(tmp_path, name):
    """Through the real workflow, next to a store that already holds results."""
    changes, words = BAD[name]
    keep = tmp_path / "results" / "store" / "runs" / "old.parquet"
    keep.parent.mkdir(parents=True)
    keep.write_bytes(b"computed before")
    before = sorted(p for p in (tmp_path / "results").rglob("*"))
    proc = snakemake(tmp_path, write_config(tmp_path, _bad(changes)), check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    for word in words:
        assert word in out
    assert "Job stats" not in out and "rule train" not in out
    assert sorted(p for p in (tmp_path / "results").rglob("*")) == before
    assert keep.read_bytes() == b"computed before"


def test_cli_validate_exits_2_with_the_message(tmp_path):
    path = write_config(tmp_path, _bad(BAD["out of range"][0]))
    proc = subprocess.run([sys.executable, "-m", "ssmpipe", "validate", str(path)], capture_output=True, text=True)
    assert proc.returncode == 2
    assert "fixed.model.init.real = 0.5" in proc.stderr
    good = write_config(tmp_path, tiny_config(), "good.yaml")
    proc = subprocess.run(
        [sys.executable, "-m", "ssmpipe", "validate", str(good)], capture_output=True, text=True, cwd=tmp_path
    )
    assert proc.returncode == 0 and "8 points" in proc.stdout
    assert not (tmp_path / "results").exists()  # validate writes nothing


@pytest.mark.parametrize(
    "changes, words",
    [
        (
            {"grid.model.init.rael": [0.1]},
            "unknown setting 'model.init.rael' (values [0.1]) (did you mean 'model.init.real'",
        ),
        ({"fixed.train.lrr": 0.1}, "unknown key fixed.train.'lrr' (value 0.1) (did you mean 'lr'?)"),
        ({"grid.sed": [0]}, "(did you mean 'seed'?)"),
    ],
)
def test_a_typo_gets_a_did_you_mean_and_not_every_setting_on_one_line(changes, words):
    with pytest.raises(cfg.ConfigError) as e:
        cfg.check(tiny_config(**changes))
    assert words in str(e.value)
    assert "model.init.dt_max" not in str(e.value)  # the groups of settings, not all 47 of them
    assert len(str(e.value)) < 400


@pytest.mark.parametrize("metric", ["test_acc", "mc", "grad_norm", "gap"])
def test_a_figure_may_draw_any_metric_measure_or_the_gap(metric):
    figure = {"name": "m", "kind": "lines", "metric": metric, "x": "model.init.real"}
    assert cfg.check(tiny_config(**{"report.figures": [figure]}))["report"]["figures"][0]["metric"] == metric


# Each check's whole line, in this process (what .ci/mutation's changes to config.py must break).
EXACT = {
    "profile with x": (
        {"report": {"figures": [{"name": "m", "kind": "profile", "metric": "mf", "x": "seq_len"}]}},
        "report.figures[0]: kind 'profile' takes no x (x = 'seq_len')",
    ),
    "lengths with group": (
        {"report": {"figures": [{"name": "m", "kind": "lengths", "metric": "len_test_acc", "group": "seed"}]}},
        "report.figures[0]: kind 'lengths' takes no group (group = 'seed')",
    ),
    "lines without x": (
        {"report": {"figures": [{"name": "m", "kind": "lines", "metric": "test_acc"}]}},
        "report.figures[0]: kind 'lines' needs x",
    ),
    "heatmap without group": (
        {"report": {"figures": [{"name": "m", "kind": "heatmap", "metric": "test_acc", "x": "seed"}]}},
        "report.figures[0]: kind 'heatmap' needs x and group",
    ),
    "digits too short": (
        {"fixed.task": {"name": "digits"}, "fixed.seq_len": 64, "grid": {"seq_len": [16, 64]}},
        "grid.seq_len[0]: seq_len = 16: task 'digits' needs seq_len ≥ 64 (one 8×8 image)",
    ),
    "digits past its images": (
        {"fixed.task": {"name": "digits", "n_train": 1797, "n_test": 1}, "fixed.seq_len": 64, "grid": {"seed": [0]}},
        "fixed: task.n_train = 1797 plus task.n_test = 1 exceeds the 1797 images of task 'digits'",
    ),
    "selective with an LTI timescale rule": (
        {"fixed.model.kind": "selective", "fixed.model.init.dt": "autocorr"},
        "fixed: model.init.dt = 'autocorr' needs an LTI layer (model.kind s4d or s4), not model.kind = 'selective'",
    ),
    "results with a wildcard brace": (
        {"results": "r{sweep}x"},
        "results = 'r{sweep}x': a results path may not hold a Snakemake wildcard brace",
    ),
    "shards per job without arrays": (
        {"slurm": {"shards_per_job": 4, "array_size": 1}},
        "slurm.shards_per_job = 4 needs job arrays: slurm.array_size = 1 sends each shard as a job of its own; raise "
        "array_size, or set shards_per_job to 1",
    ),
    "two errors, the first by key": (
        {"shard_size": 0, "fixed.seq_len": "x"},
        "fixed.seq_len = 'x': 'x' is not of type 'integer'",
    ),
}


@pytest.mark.parametrize("name", list(EXACT))
def test_each_check_says_its_whole_line(name):
    changes, line = EXACT[name]
    with pytest.raises(cfg.ConfigError) as e:
        cfg.check(tiny_config(**changes))
    assert str(e.value) == line


def test_digits_may_use_every_image():
    task = {"name": "digits", "n_train": 1796, "n_test": 1}
    assert cfg.check(tiny_config(**{"fixed.task": task, "fixed.seq_len": 64, "grid": {"seed": [0]}}))
