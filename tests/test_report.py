"""Report figures for curve-valued measures (MF(τ)) and the train-at-T, test-at-T′ matrix; the config block."""

import numpy as np
import pandas as pd
import pytest
from conftest import TINY, job_counts, snakemake, tiny_config, write_config

from ssmpipe import config as cfg
from ssmpipe.data import TASKS
from ssmpipe.models.sequence import LAYERS
from ssmpipe.report.config_block import _BY_KIND, MODEL_KEYS, TASK_KEYS, config_section, split
from ssmpipe.report.figures import lengths, profile


def test_profile_averages_each_groups_curves_over_seeds():
    rows = pd.DataFrame(
        {
            "run_id": list("abcd"),
            "status": ["ok", "ok", "ok", "diverged"],
            "model.init.scheme": ["lin", "lin", "inv", "inv"],
            "mf": [
                np.array([1.0, 0.5, 0.1]),
                np.array([0.8, 0.3, 0.1]),
                np.array([0.9, 0.9, 0.9]),
                np.array([9.0, 9.0, 9.0]),
            ],
        }
    )
    fig, table = profile(rows, "mf", group="model.init.scheme")
    lin = table.set_index("model.init.scheme").loc["lin"]
    assert lin["τ=0"] == pytest.approx(0.9) and lin["τ=1"] == pytest.approx(0.4) and lin["τ=2"] == pytest.approx(0.1)
    assert lin["sum"] == pytest.approx(1.4) and lin["runs"] == 2
    inv = table.set_index("model.init.scheme").loc["inv"]
    assert inv["runs"] == 1 and inv["sum"] == pytest.approx(2.7)  # the diverged run is left out
    ax = fig.axes[0]
    assert len(ax.lines) == 2 and ax.get_xlabel() == "lag τ" and ax.get_ylabel() == "memory function MF(τ)"


def test_lengths_matrix_has_train_lengths_as_rows_and_test_lengths_as_columns():
    final = pd.DataFrame(
        {
            "run_id": list("abc"),
            "status": ["ok"] * 3,
            "seq_len": [10, 10, 20],
            "test_seq_lens": [[10, 20]] * 3,
            "len_test_acc": [[0.9, 0.6], [0.7, 0.4], [0.8, 0.85]],
        }
    )
    fig, table = lengths(final, "len_test_acc")
    got = table.pivot(index="train_len", columns="test_len", values="mean")
    np.testing.assert_allclose(got.to_numpy(), [[0.8, 0.5], [0.8, 0.85]])
    assert fig.axes[0].get_xlabel() == "test length T′" and fig.axes[0].get_ylabel() == "train length T"


@pytest.mark.slow
def test_report_draws_memory_and_length_figures_from_a_real_sweep(tmp_path):
    config = tiny_config(
        **{
            "fixed.test_seq_lens": [8, 16, 24],
            "fixed.model.init.scheme": "lin",
            "grid.model.init.real": [-0.5],
            "grid.seed": [0],
        }
    )
    config["report"] = {
        "figures": [
            {"name": "mf", "kind": "profile", "metric": "mf", "at": "init", "group": "seq_len"},
            {"name": "transfer", "kind": "lengths", "metric": "len_test_acc", "family": "length"},
        ]
    }
    jobs = job_counts(snakemake(tmp_path, write_config(tmp_path, config)))
    assert jobs["data"] == 3 and jobs["train"] == 2  # lengths 16, 24 and test length 8: made once
    report = tmp_path / "results" / "tiny" / "report"
    assert (report / "figures" / "mf.png").stat().st_size > 10_000
    assert (report / "figures" / "transfer.png").stat().st_size > 10_000
    runs = pd.read_parquet(tmp_path / "results" / "tiny" / "runs.parquet")
    last = runs[runs["epoch"] == runs["epoch"].max()]
    assert all(list(v) == [8, 16, 24] for v in last["test_seq_lens"])
    assert last["len_test_acc"].map(len).eq(3).all() and runs["mf"].notna().sum() == 2 * 2  # 2 runs × (init, end)
    page = (report / "length.html").read_text()
    assert page.count("data:image/png;base64,") == 1 and "<th>test_len</th>" in page  # the matrix, its table


# --- the config block: what the sweep set, the defaults it used, only settings its runs read -----------------


def test_config_block_shows_what_the_sweep_set_and_folds_the_defaults_it_read():
    config = cfg.check(tiny_config(**{"report.title": "Real × imaginary"}))
    chosen, defaults = split(config)
    assert chosen["sweep"] == "tiny" and chosen["grid"] == TINY["grid"] and chosen["shard_size"] == 4
    assert chosen["fixed"]["train"] == {"epochs": 2, "batch_size": 32, "lr": 0.01}  # the schema's: 10, 64, 0.003
    assert chosen["fixed"]["task"]["name"] == "delay" and chosen["fixed"]["model"]["kind"] == "s4d"  # defaults, named
    assert defaults["fixed"]["train"]["weight_decay"] == 0.0 and defaults["fixed"]["model"]["block"] == "residual"
    assert "label_noise" not in defaults["fixed"]["task"] and "moment" not in defaults["fixed"]["task"]  # not delay's
    assert "s_A" not in defaults["fixed"]["model"]["init"]  # a selective layer's
    assert "dt_c" not in defaults["fixed"]["model"]["init"]  # the autocorr Δ rule's
    assert "real" not in defaults["fixed"]["model"]["init"] and "seq_len" not in defaults["fixed"]  # grid axes
    assert "slurm" not in chosen and "slurm" not in defaults and "tune" not in defaults  # train jobs run here
    block = config_section(config)
    assert "Real × imaginary" in block and "\\x" not in block and "<details open" not in block
    assert "seq_len: [16, 24]" in block  # one line per axis


def test_config_block_shows_report_figures_as_written():
    figure = {"name": "acc", "kind": "curves", "metric": "test_acc", "group": "seed", "logy": True}
    chosen, _ = split(cfg.check(tiny_config(**{"report.figures": [figure]})))
    assert chosen["report"]["figures"] == [figure]  # at: final, family: tradeoff left out
    assert "- {name: acc, kind: curves, metric: test_acc, group: seed, logy: true}" in config_section(
        cfg.check(tiny_config(**{"report.figures": [figure]}))
    )


def test_config_block_leaves_out_the_eigenvalue_sweep_settings_of_another_scheme():
    _, defaults = split(cfg.check(tiny_config(**{"fixed.model.init.scheme": "lin", "grid": {"seed": [0, 1]}})))
    init = defaults["fixed"]["model"]["init"]
    assert "real" not in init and "imag" not in init and init["dt_min"] == 0.001


def test_config_block_of_a_selective_model_and_a_majority_task_keeps_their_settings():
    config = cfg.check(
        tiny_config(**{"fixed.task": {"name": "majority"}, "fixed.model.kind": "selective", "grid": {"seed": [0, 1]}})
    )
    _, defaults = split(config)
    assert {"label_noise", "input_noise", "n_train"} <= set(defaults["fixed"]["task"])
    assert "lag" not in defaults["fixed"]["task"] and "vocab" not in defaults["fixed"]["task"]
    assert set(defaults["fixed"]["model"]["init"]) == {"s_A"} and "reg" not in defaults["fixed"]


def test_config_block_of_a_study_names_the_study_not_the_sweep():
    config = tiny_config(grid={})
    config["tune"] = {"study": "st", "space": {"train.lr": {"loguniform": [0.001, 0.1]}}, "num_samples": 3}
    chosen, defaults = split(cfg.check(config))
    assert next(iter(chosen)) == "study" and chosen["study"] == "st" and "sweep" not in chosen and "grid" not in chosen
    assert chosen["tune"] == {"num_samples": 3, "space": {"train.lr": {"loguniform": [0.001, 0.1]}}}
    assert defaults["tune"]["scheduler"] == "asha" and "study" not in defaults["tune"]


class _Reads(dict):
    """A dict that records which keys were read."""

    def __init__(self, *args):
        super().__init__(*args)
        self.read = set()

    def __getitem__(self, key):
        self.read.add(key)
        return super().__getitem__(key)

    def get(self, key, default=None):
        self.read.add(key)
        return super().get(key, default)


@pytest.mark.parametrize("task", ["delay", "majority", "variance", "digits", "listops"])
def test_task_keys_are_what_each_generated_task_reads(task):
    settings = cfg.check({"sweep": "t", "fixed": {"task": {"name": task, "n_train": 8, "n_test": 8}, "seq_len": 64}})
    reads = _Reads(settings["fixed"]["task"])
    TASKS[task](reads, 64)
    assert reads.read <= TASK_KEYS[task] and TASK_KEYS[task] - reads.read <= {"name", "path", "data_hash"}


@pytest.mark.parametrize("kind", ["s4d", "s4", "selective"])
def test_model_keys_hold_what_each_layer_reads(kind):
    model = cfg.check({"sweep": "t", "fixed": {"model": {"kind": kind}}})["fixed"]["model"]
    reads = _Reads({**model, "init": _Reads(model["init"])})
    LAYERS[kind](4, reads)
    read = {f"model.{k}" for k in reads.read - {"init"}} | {f"model.init.{k}" for k in reads["init"].read}
    assert read & _BY_KIND <= MODEL_KEYS[kind] and (kind != "selective" or read & _BY_KIND == {"model.init.s_A"})
