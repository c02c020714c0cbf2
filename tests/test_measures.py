"""The measures every run logs, through real (packed) training."""

import numpy as np
import pytest
import torch
from conftest import tiny_config

from ssmpipe import config as cfg
from ssmpipe import data, sweep
from ssmpipe.columns import MEASURES
from ssmpipe.store import Store
from ssmpipe.train import ensure_data, length_data, train_group


def _train(tmp_path, **changes):
    config = cfg.check(tiny_config(**{"grid.seq_len": [16], "grid.model.init.real": [-0.5], **changes}))
    points = [{"run_id": p.run_id, "settings": p.settings, "shard": "t"} for p in sweep.expand(config)]
    arrays = ensure_data(Store(tmp_path), data.spec_of(points[0]["settings"]))
    import pandas as pd

    rows = train_group(
        points,
        arrays,
        torch.device("cpu"),
        None,
        lambda state: None,
        "",
        length_data(Store(tmp_path), points[0]["settings"]),
    )
    return pd.DataFrame(rows)


def test_every_row_carries_every_measure(tmp_path):
    df = _train(tmp_path, **{"fixed.train.epochs": 3})
    assert set(MEASURES) <= set(df.columns)
    first, last = df[df.epoch == 0], df[df.epoch == 3]
    for col in ("tau", "tau_max", "s_A", "eig_real_min", "eig_real_max", "eig_imag_max", "output_scale"):
        assert np.isfinite(df[col]).all(), col
    assert np.isfinite(first["mc"]).all() and np.isfinite(last["mc"]).all()
    assert df[(df.epoch > 0) & (df.epoch < 3)]["mc"].isna().all()  # memory: at init and at the end
    assert first["grad_norm"].isna().all() and (df[df.epoch > 0]["grad_norm"] > 0).all()
    N = 4  # tiny_config's d_state: 2 complex pairs = 4 real states
    assert ((df["mc"].dropna() > 0) & (df["mc"].dropna() <= N + 1e-6)).all()
    assert (first["eig_real_max"] == -0.5).all() and (first["s_A"] == -0.5).all()
    assert (df["tau_max"] >= df["tau"]).all()


def test_tau_per_layer_is_logged_every_epoch(tmp_path):
    from ssmpipe.models import build_model, init_from_data
    from ssmpipe.theory import model_tau

    df = _train(tmp_path, **{"fixed.train.epochs": 1, "fixed.model.n_layers": 3, "grid.seed": [0]})
    assert df["tau_layers"].map(len).eq(3).all()
    for _, row in df.iterrows():
        assert np.mean(row["tau_layers"]) == pytest.approx(row["tau"], rel=1e-5)  # equal channels per layer
    settings = sweep.expand(
        cfg.check(
            tiny_config(
                **{"grid.seq_len": [16], "grid.model.init.real": [-0.5], "fixed.model.n_layers": 3, "grid.seed": [0]}
            )
        )
    )[0].settings
    arrays = ensure_data(Store(tmp_path), data.spec_of(settings))
    x = torch.as_tensor(arrays["x_train"][:32])  # the probe batch: the first batch
    model = init_from_data(build_model(settings, data.describe(arrays, settings["task"])), x, settings)
    want = [t.mean().item() for t in model_tau(model, x)]
    np.testing.assert_allclose(df[df.epoch == 0]["tau_layers"].iloc[0], want, rtol=1e-4)


def test_tau_scaling_makes_init_tau_one(tmp_path):
    plain = _train(tmp_path, **{"fixed.train.epochs": 1, "fixed.model.init.scale": 30.0})
    scaled = _train(
        tmp_path, **{"fixed.train.epochs": 1, "fixed.model.init.scale": 30.0, "fixed.model.init.c_scaling": "tau"}
    )
    at_init = scaled[scaled.epoch == 0]
    np.testing.assert_allclose(at_init["tau"], 1.0, rtol=1e-4)  # C ← C/√τ: τ = 1 on the probe batch
    assert (plain[plain.epoch == 0]["tau"] > 2).all()
    assert (at_init["output_scale"] < plain[plain.epoch == 0]["output_scale"]).all()


def test_tau_regularizer_lowers_tau(tmp_path):
    common = {"fixed.train.epochs": 4, "fixed.train.lr": 0.05}
    free = _train(tmp_path, **common)
    regular = _train(tmp_path, **common, **{"fixed.reg.lambda": 1.0})
    assert (regular[regular.epoch == 4]["tau"].to_numpy() < free[free.epoch == 4]["tau"].to_numpy()).all()


def test_frozen_eigenvalues_stay_put_and_trained_ones_move(tmp_path):
    frozen = _train(tmp_path, **{"fixed.train.epochs": 3, "fixed.model.train_A": False, "fixed.train.lr": 0.05})
    trained = _train(tmp_path, **{"fixed.train.epochs": 3, "fixed.train.lr": 0.05})
    for col in ("eig_real_min", "eig_real_max", "eig_imag_max"):
        assert frozen.groupby("run_id")[col].nunique().eq(1).all(), col
    assert trained.groupby("run_id")["eig_imag_max"].nunique().gt(1).all()


def test_selective_logs_its_spectral_abscissa(tmp_path):
    df = _train(
        tmp_path, **{"fixed.model.kind": "selective", "grid.model.init.s_A": [-0.05, 0.1], "fixed.train.epochs": 2}
    )
    first = df[df.epoch == 0]
    assert sorted(set(first["s_A"])) == [pytest.approx(-0.05), pytest.approx(0.1)]
    assert np.float32(first["s_A"].max()) == np.float32(0.1)  # exactly the configured value
    assert first["tau"].isna().all() and first["mc"].isna().all()  # no kernel: τ and MC undefined


def test_autocorr_dt_rule_sets_dt_from_the_input(tmp_path):
    from ssmpipe.models import build_model, init_from_data
    from ssmpipe.theory import dt_autocorr, lambda_max

    config = cfg.check(tiny_config(**{"fixed.model.init.dt": "autocorr", "fixed.model.init.dt_c": 0.5}))
    settings = sweep.expand(config)[0].settings
    arrays = ensure_data(Store(tmp_path), data.spec_of(settings))
    info = data.describe(arrays, settings["task"])
    x = torch.as_tensor(arrays["x_train"][:32])
    model = init_from_data(build_model(settings, info), x, settings)
    u = model.trunk(x)[1][0].detach()
    want = float(dt_autocorr(x.shape[1], lambda_max(u, stationary=True), 0.5))
    torch.testing.assert_close(model.layers[0].log_dt.exp(), torch.full((4,), want), rtol=1e-5, atol=0)


def test_memory_function_rows_sum_to_the_capacity(tmp_path):
    df = _train(tmp_path, **{"fixed.train.epochs": 2, "fixed.model.init.scheme": "lin"})
    measured = df[df["mf"].notna()]
    assert sorted(measured["epoch"].unique()) == [0, 2]  # at init and at the end, null between
    for _, row in measured.iterrows():
        mf = np.asarray(row["mf"])
        assert mf.shape == (16,) and (mf >= -1e-6).all() and (mf <= 1 + 1e-6).all()  # T = seq_len leverage scores
        assert mf.sum() == pytest.approx(row["mc"], rel=1e-5)
        assert mf[0] > mf[-1]  # memory fades with the lag


def test_gram_condition_is_finite_for_distinct_modes_and_capped_when_they_coincide(tmp_path):
    from ssmpipe.columns import GRAM_SINGULAR
    from ssmpipe.models.s4d import S4D
    from ssmpipe.theory import gram_condition, s4d_system

    def run(imag):
        df = _train(
            tmp_path,
            **{
                "fixed.train.epochs": 1,
                "fixed.model.d_state": 8,
                "grid.model.init.imag": [imag],
                "fixed.model.init.dt_min": 0.05,
                "fixed.model.init.dt_max": 0.05,
            },
        )
        return df[df.epoch == 0]["gram_cond"].to_numpy()

    distinct, equal = run(1.0), run(0.0)  # Im λ_n = s·π·n: s = 0, all modes alike
    assert np.isfinite(distinct).all() and (distinct > 1).all() and (distinct < 1e8).all()
    assert equal == pytest.approx([GRAM_SINGULAR] * len(equal), rel=1e-6)  # float32 column
    torch.manual_seed(0)
    layer = S4D(4, 8, scheme="sweep", real=-0.5, imag=1.0, dt_min=0.05, dt_max=0.05).double()
    want = gram_condition(*s4d_system(layer), 16).median().item()  # the measure is the median over channels
    assert distinct[0] == pytest.approx(want, rel=1e-3)


def test_test_lengths_give_the_train_at_T_test_at_T_prime_row(tmp_path):
    df = _train(tmp_path, **{"fixed.train.epochs": 2, "fixed.test_seq_lens": [16, 32, 8]})
    last, earlier = df[df.epoch == 2], df[df.epoch < 2]
    assert earlier["len_test_acc"].isna().all()
    for _, row in last.iterrows():
        assert len(row["len_test_acc"]) == len(row["len_test_loss"]) == 3
        assert row["len_test_acc"][0] == pytest.approx(row["test_acc"])  # T′ = T: the usual test split
        assert row["len_test_loss"][0] == pytest.approx(row["test_loss"])
        assert row["len_test_loss"][1] != pytest.approx(row["test_loss"])


@pytest.mark.parametrize(
    "task",
    [
        {"name": "majority", "n_train": 64, "n_test": 48, "seed": 1},
        {"name": "delay", "lag": 5, "vocab": 3, "n_train": 64, "n_test": 32, "seed": 2},
    ],
)
def test_chance_acc_is_the_test_splits_commonest_label_rate(tmp_path, task):
    """chance_acc: the test_acc of answering the commonest label always, counted over what test_acc counts (delay:
    the positions t ≥ lag), from a data set generated here independently of the store's cache."""
    df = _train(tmp_path, **{"fixed.task": task, "fixed.train.epochs": 2, "grid.seed": [0]})
    settings = df["settings"].iloc[0]
    y = data.TASKS[task["name"]](settings["task"], settings["seq_len"])["y_test"]  # (n) or (n L)
    counted = y[:, task["lag"] :].ravel() if task["name"] == "delay" else y  # the ignored first lag positions go
    want = np.bincount(counted).max() / counted.size
    assert 0 < want < 1
    assert df["chance_acc"].to_numpy() == pytest.approx([want] * len(df), rel=1e-12)  # every run, every epoch
    assert df.groupby("run_id")["chance_acc"].nunique().eq(1).all()
    if task["name"] == "delay":  # over all positions it would differ
        assert np.unique(y, return_counts=True)[1].max() / y.size != pytest.approx(want, rel=1e-3)


def test_chance_acc_is_nan_for_regression_and_for_nothing_counted():
    from ssmpipe.measures import chance_accuracy

    assert np.isnan(chance_accuracy(torch.randn(8, 16)))  # float targets: regression
    assert np.isnan(chance_accuracy(torch.full((4, 16), data.IGNORE)))  # every target ignored
    assert chance_accuracy(torch.tensor([[data.IGNORE, 2, 2], [data.IGNORE, 0, 1]])) == pytest.approx(0.5)


def test_dt_is_the_geometric_mean_of_the_lti_layers_timescales(tmp_path):
    """dt at init: exp(mean log Δ) over both layers' channels of the point's own model; then every epoch, moving."""
    from ssmpipe.models import build_model, init_from_data

    changes = {
        "fixed.train.epochs": 2,
        "fixed.model.n_layers": 2,
        "grid.seed": [0],
        "fixed.train.lr": 0.05,
        "fixed.model.init.dt_min": 0.01,
        "fixed.model.init.dt_max": 0.1,
    }
    df = _train(tmp_path, **changes)
    settings = df["settings"].iloc[0]
    arrays = ensure_data(Store(tmp_path), data.spec_of(settings))
    x = torch.as_tensor(arrays["x_train"][:32])  # the probe batch
    model = init_from_data(build_model(settings, data.describe(arrays, settings["task"])), x, settings)
    log_dt = torch.cat([layer.log_dt.detach() for layer in model.layers]).double()  # (2·H)
    assert log_dt.std() > 0.1  # LogUniform: channels differ
    want = log_dt.mean().exp().item()
    assert 0.01 < want < 0.1 and want != pytest.approx(log_dt.exp().mean().item(), rel=1e-3)  # not the plain mean
    assert df[df.epoch == 0]["dt"].to_numpy() == pytest.approx([want], rel=1e-6)
    assert np.isfinite(df["dt"]).all() and df["dt"].nunique() == 3  # trained Δ moves every epoch
    assert df["rho_A"].isna().all() and df["S2"].isna().all()  # LTI: no selective bound


def test_fixed_dt_init_is_logged_as_it_was_set(tmp_path):
    df = _train(
        tmp_path,
        **{
            "fixed.train.epochs": 1,
            "fixed.model.init.dt_min": 0.05,
            "fixed.model.init.dt_max": 0.05,
            "fixed.model.kind": "s4",
        },
    )
    assert df[df.epoch == 0]["dt"].to_numpy() == pytest.approx([0.05] * df["run_id"].nunique(), rel=1e-6)


def test_selective_logs_the_bound_terms_rho_A_and_S2(tmp_path):
    """rho_A: max over layers of theory.selective_rho_A on each layer's probe input; S2 = theory.s2(rho_A, T).
    ρ_A ∈ (0, 1] where s_A ≤ 0 (1 at s_A = 0: S₂ = T(T+1)/2), > 1 at s_A > 0; dt undefined (input-dependent Δ)."""
    from ssmpipe.models import build_model, init_from_data
    from ssmpipe.theory import s2, selective_rho_A

    df = _train(
        tmp_path,
        **{
            "fixed.model.kind": "selective",
            "fixed.model.n_layers": 2,
            "grid.seed": [0],
            "grid.model.init.s_A": [-0.5, 0.0, 0.1],
            "fixed.train.epochs": 2,
        },
    )
    T = 16
    assert df["dt"].isna().all() and np.isfinite(df["rho_A"]).all() and np.isfinite(df["S2"]).all()
    for _, row in df.iterrows():  # S2 is s2 of the logged rho_A
        assert row["S2"] == pytest.approx(s2(row["rho_A"], T).item(), rel=1e-9)
    first = df[df.epoch == 0].set_index("s_A")
    arrays = ensure_data(Store(tmp_path), data.spec_of(first["settings"].iloc[0]))
    x = torch.as_tensor(arrays["x_train"][:32])  # the probe batch
    for s_A, row in first.iterrows():
        settings = row["settings"]
        model = init_from_data(build_model(settings, data.describe(arrays, settings["task"])), x, settings)
        with torch.no_grad():
            inputs = model.trunk(x)[1]  # each layer's input (B L d)
        want = max(selective_rho_A(layer, u).item() for layer, u in zip(model.layers, inputs))
        assert row["rho_A"] == pytest.approx(want, rel=1e-5)
        if s_A < 0:
            assert 0 < row["rho_A"] < 1 and T * (T + 1) / 2 > row["S2"] > 0
        elif s_A == pytest.approx(0.0):
            assert row["rho_A"] == 1 and row["S2"] == pytest.approx(T * (T + 1) / 2)
        else:
            assert row["rho_A"] > 1 and row["S2"] > T * (T + 1) / 2
