"""Report figures for curve-valued measures (MF(τ)) and the train-at-T, test-at-T′ matrix; the config block."""

import re

import numpy as np
import pandas as pd
import pytest
from conftest import TINY, job_counts, snakemake, tiny_config, write_config

from ssmpipe import config as cfg
from ssmpipe.data import TASKS
from ssmpipe.models.sequence import LAYERS
from ssmpipe.report import figures, figures_of, runs_section
from ssmpipe.report.config_block import _BY_KIND, MODEL_KEYS, TASK_KEYS, config_section, split
from ssmpipe.report.figures import lengths, profile
from ssmpipe.report.study import metric_vs_settings


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
    assert chosen["fixed"]["task"] == TINY["fixed"]["task"] and "task" not in defaults["fixed"]  # typed, seed 0 too
    assert "results" in chosen and chosen["results"] == "results"  # typed at its default: set
    task = split({**config, "typed": []})[1]["fixed"]["task"]  # by value alone: delay's keys at their defaults
    assert "label_noise" in config["fixed"]["task"] and "label_noise" not in task and "moment" not in task
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


def test_config_block_counts_a_typed_default_as_set():
    config = cfg.check(tiny_config(**{"fixed.train.weight_decay": 0.0}))  # the schema's default, typed
    assert "fixed.train.weight_decay" in config["typed"] and "fixed.train.clip" not in config["typed"]
    assert cfg.check(config)["typed"] == config["typed"]  # checked again (a snapshot): kept, not every key now
    chosen, defaults = split(config)
    assert chosen["fixed"]["train"]["weight_decay"] == 0.0 and "weight_decay" not in defaults["fixed"]["train"]
    assert "typed" not in chosen and "typed" not in defaults
    assert "every setting its config file gave." in config_section(config)
    for old in ({k: v for k, v in config.items() if k != "typed"}, {**config, "typed": "fixed"}):
        chosen, defaults = split(old)  # a snapshot from before `typed` (or a garbled one): by value alone
        assert "weight_decay" not in chosen["fixed"]["train"] and defaults["fixed"]["train"]["weight_decay"] == 0.0
        assert "every setting it gave a value other than the default of" in config_section(old)


# --- the runs table, pooling said in captions, heatmap scales, per-epoch tables -------------------------------


def _final(**changes) -> pd.DataFrame:
    final = pd.DataFrame(
        {
            "run_id": ["r1", "r2", "r3", "r4"],
            "trial_id": [None] * 4,
            "epoch": [3] * 4,
            "status": ["ok", "ok", "diverged", "ok"],
            "error": [None] * 4,
            "model.init.real": [-0.5, -0.5, 0.0, 0.0],
            "seq_len": [16, 16, 16, 16],
            "seed": [0, 1, 0, 1],
            "train_loss": [1.0, 0.9, np.nan, 0.5],
            "test_loss": [1.1, 0.8, np.nan, 0.7],
            "train_acc": [0.5, 0.6, np.nan, 0.7],
            "test_acc": [0.55, 0.62, 0.99, 0.6],
            "gap": [0.1, -0.1, np.nan, 0.2],
        }
    )
    return final.assign(**changes)


def test_runs_table_holds_the_settings_that_vary_and_marks_the_best_ok_run():
    final = _final()
    config = {"grid": {"model.init.real": [-0.5, 0.0], "seq_len": [16], "seed": [0, 1]}}
    settings = figures.varying(config, final)
    assert settings == ["model.init.real", "seed"]  # seq_len takes one value
    table, best = figures.runs_table(final, settings, *figures.objective(config))
    assert list(table.columns[:4]) == ["model.init.real", "seed", "status", "epoch"] and "trial_id" not in table
    assert table.loc[best, "run_id"] == "r2"  # 0.62; r3's 0.99 diverged
    _, best = figures.runs_table(final, settings, *figures.objective({"tune": {"metric": "test_loss", "mode": "min"}}))
    assert table.loc[best, "run_id"] == "r4"  # test loss 0.7
    point = figures.best_point(final, settings, "test_acc", "max")
    assert point["model.init.real"] == 0.0 and point["mean"] == pytest.approx(0.6) and point["not_ok"] == 1
    page = runs_section(final, config)
    best_row = re.search(r'<tr class="best" data-f="([^"]*)">(.*?)</tr>', page)
    assert best_row and "r2" in best_row.group(2) and best_row.group(1) == "real=-0.5 seed=1 status=ok r2"
    assert (
        page.count("<tr data-f=") == 3
        and "Best point</b> averaged over seeds: model.init.real = 0: test_acc = 0.6" in page
    )
    assert "(1 run ok, 1 not ok)" in page


def test_runs_table_marks_nothing_when_no_run_is_ok():
    final = _final(status=["failed"] * 4, error=["boom " * 40] * 4)
    table, best = figures.runs_table(final, ["seed"], "test_acc", "max")
    assert best is None and "error" in table
    page = runs_section(final, {"grid": {"seed": [0, 1]}})
    assert 'class="best"' not in page and "none is marked best" in page and "boom boom" in page


def test_a_figure_that_averages_over_a_varying_setting_says_so_in_its_caption():
    config = cfg.check(tiny_config())  # grid: real (2 values), imag (1), seq_len (2), seed
    config["report"]["figures"] = [
        {"name": "c", "kind": "curves", "metric": "test_acc", "group": "model.init.real"},
        {"name": "h", "kind": "heatmap", "metric": "test_acc", "x": "seq_len", "group": "model.init.real"},
    ]
    captions = {stem: caption for stem, (_, caption, _, _) in figures_of(config).items()}
    assert "Averaged over sequence length L = 16, 24" in captions["c"]
    assert "Averaged over" not in captions["h"]  # names both axes with several values (imag has one, seed is seed)
    assert "tested at the length it trained at: not train at T, test at T′" in captions["h"]  # x: seq_len
    assert "tested at the length" not in captions["c"]


def test_heatmap_scales_show_the_size_of_a_difference():
    final = pd.concat([_final(chance_acc=0.25)] * 2, ignore_index=True)
    final["model.init.imag"] = [0.1] * 4 + [1.0] * 4
    fig, _ = figures.heatmap(final, "test_acc", x="model.init.imag", group="model.init.real")
    norm = fig.axes[0].images[0].norm
    assert (norm.vmin, norm.vmax) == (0.25, 1.0)  # chance to 1, not 0.55 to 0.62
    assert sorted({t.get_text() for t in fig.axes[0].texts}) == ["0.58", "0.60"]  # the numbers in the cells
    fig, _ = figures.heatmap(final, "gap", x="model.init.imag", group="model.init.real")
    norm = fig.axes[0].images[0].norm
    assert norm.vcenter == 0 and norm.vmin == -norm.vmax  # diverging around 0


def _runs(epochs: int = 30) -> pd.DataFrame:
    rows = [
        {"run_id": f"r{real}{seed}", "status": "ok", "epoch": e, "model.init.real": real, "seed": seed,
         "train_loss": 2 - e / epochs, "test_loss": 2.1 - e / epochs, "train_acc": e / epochs, "test_acc": e / epochs}
        for real in (-0.5, 0.0) for seed in (0, 1) for e in range(epochs + 1)
    ]  # fmt: skip
    return pd.DataFrame(rows)


def test_curves_draw_loss_beside_accuracy_train_and_test_each_run_and_a_long_table():
    fig, table = figures.curves(_runs(), "test_acc", group="model.init.real")
    loss, acc = fig.axes[:2]
    assert loss.get_ylabel() == "loss" and acc.get_ylabel() == "accuracy"
    dashed = [line for line in acc.lines if line.get_linestyle() == "--"]
    assert len(acc.lines) == 4 + 2 * 2 and len(dashed) == 2  # 4 runs thin; train (dashed) and test mean per group
    assert table.shape == (31, 3) and list(table.columns) == ["epoch", "real=-0.5", "real=0"]  # an epoch a row


def test_a_log_axis_of_a_study_labels_its_ticks_without_overlap():
    lrs = [0.0012, 0.003, 0.007, 0.02, 0.05]
    runs = pd.DataFrame(
        {"trial_id": [f"t{i}" for i in range(5)], "epoch": 2, "status": "ok", "train.lr": lrs, "test_acc": 0.5}
    )
    study = {"study": "st", "metric": "test_acc", "space": {"train.lr": {"loguniform": [0.001, 0.06]}}, "best": None}
    fig, _ = metric_vs_settings(runs, study)
    fig.canvas.draw()
    ax = fig.axes[0]
    shown = [t for t in ax.get_xticklabels(minor=True) + ax.get_xticklabels() if t.get_text() and t.get_visible()]
    lo, hi = ax.get_xlim()
    shown = [t for t in shown if lo <= t.get_position()[0] <= hi]
    assert {t.get_text() for t in shown} >= {"0.002", "0.005", "0.01", "0.02", "0.05"}
    boxes = sorted((t.get_window_extent() for t in shown), key=lambda b: b.x0)
    assert all(a.x1 < b.x0 for a, b in zip(boxes, boxes[1:]))  # no label on another


def test_runs_table_draws_each_runs_loss_and_accuracy_in_its_row_on_one_scale():
    runs = _runs(epochs=100)  # more epochs than a row's curve draws
    final = figures.final_epoch(runs).assign(error=None)
    page = runs_section(final, {"grid": {"model.init.real": [-0.5, 0.0], "seed": [0, 1]}}, runs=runs)
    assert '<th title="train dashed, test solid">loss per epoch</th>' in page and "acc per epoch</th>" in page
    rows = re.findall(r"<tr[^>]*data-f=.*?</tr>", page)
    assert len(rows) == 4 and all(r.count("<svg") == 2 and r.count("<polyline") == 4 for r in rows)
    first = re.search(r'<polyline points="([^"]+)"', rows[0]).group(1).split()
    assert len(first) == 60 and first[0].startswith("1.0,")  # at most 60 points, from the left edge
    assert 'stroke-dasharray="3,2"' in rows[0] and "test_acc 1" in rows[0]  # train dashed; the last value titled
