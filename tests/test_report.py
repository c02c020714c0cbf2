"""Report figures for curve-valued measures (MF(τ)) and the train-at-T, test-at-T′ matrix."""

import numpy as np
import pandas as pd
import pytest
from conftest import job_counts, snakemake, tiny_config, write_config

from ssmpipe.report.figures import lengths, profile


def test_profile_averages_each_groups_curves_over_seeds():
    rows = pd.DataFrame({"run_id": list("abcd"), "status": ["ok", "ok", "ok", "diverged"],
                         "model.init.scheme": ["lin", "lin", "inv", "inv"],
                         "mf": [np.array([1.0, 0.5, 0.1]), np.array([0.8, 0.3, 0.1]), np.array([0.9, 0.9, 0.9]),
                                np.array([9.0, 9.0, 9.0])]})
    fig, table = profile(rows, "mf", group="model.init.scheme")
    lin = table.set_index("model.init.scheme").loc["lin"]
    assert lin["τ=0"] == pytest.approx(0.9) and lin["τ=1"] == pytest.approx(0.4) and lin["τ=2"] == pytest.approx(0.1)
    assert lin["sum"] == pytest.approx(1.4) and lin["runs"] == 2
    inv = table.set_index("model.init.scheme").loc["inv"]
    assert inv["runs"] == 1 and inv["sum"] == pytest.approx(2.7)        # the diverged run is left out
    ax = fig.axes[0]
    assert len(ax.lines) == 2 and ax.get_xlabel() == "lag τ" and ax.get_ylabel() == "memory function MF(τ)"


def test_lengths_matrix_has_train_lengths_as_rows_and_test_lengths_as_columns():
    final = pd.DataFrame({"run_id": list("abc"), "status": ["ok"] * 3, "seq_len": [10, 10, 20],
                          "test_seq_lens": [[10, 20]] * 3,
                          "len_test_acc": [[0.9, 0.6], [0.7, 0.4], [0.8, 0.85]]})
    fig, table = lengths(final, "len_test_acc")
    got = table.pivot(index="train_len", columns="test_len", values="mean")
    np.testing.assert_allclose(got.to_numpy(), [[0.8, 0.5], [0.8, 0.85]])
    assert fig.axes[0].get_xlabel() == "test length T′" and fig.axes[0].get_ylabel() == "train length T"


@pytest.mark.slow
def test_report_draws_memory_and_length_figures_from_a_real_sweep(tmp_path):
    config = tiny_config(**{"fixed.test_seq_lens": [8, 16, 24], "fixed.model.init.scheme": "lin",
                            "grid.model.init.real": [-0.5], "grid.seed": [0]})
    config["report"] = {"figures": [
        {"name": "mf", "kind": "profile", "metric": "mf", "at": "init", "group": "seq_len"},
        {"name": "transfer", "kind": "lengths", "metric": "len_test_acc", "family": "length"}]}
    jobs = job_counts(snakemake(tmp_path, write_config(tmp_path, config)))
    assert jobs["data"] == 3 and jobs["train"] == 2                    # lengths 16, 24 and test length 8: made once
    report = tmp_path / "results" / "tiny" / "report"
    assert (report / "figures" / "mf.png").stat().st_size > 10_000
    assert (report / "figures" / "transfer.png").stat().st_size > 10_000
    runs = pd.read_parquet(tmp_path / "results" / "tiny" / "runs.parquet")
    last = runs[runs["epoch"] == runs["epoch"].max()]
    assert all(list(v) == [8, 16, 24] for v in last["test_seq_lens"])
    assert last["len_test_acc"].map(len).eq(3).all() and runs["mf"].notna().sum() == 2 * 2  # 2 runs × (init, end)
    page = (report / "length.html").read_text()
    assert page.count("data:image/png;base64,") == 1 and "<th>test_len</th>" in page  # the matrix, its table
