"""The measures every run logs, through real (packed) training."""

import numpy as np
import pytest
import torch
from conftest import tiny_config

from ssmpipe import config as cfg
from ssmpipe import data, sweep
from ssmpipe.store import MEASURES, Store
from ssmpipe.train import ensure_data, length_data, train_group


def _train(tmp_path, **changes):
    config = cfg.check(tiny_config(**{"grid.seq_len": [16], "grid.model.init.real": [-0.5], **changes}))
    points = [{"run_id": p.run_id, "settings": p.settings, "shard": "t"} for p in sweep.expand(config)]
    arrays = ensure_data(Store(tmp_path), data.spec_of(points[0]["settings"]))
    import pandas as pd

    rows = train_group(points, arrays, torch.device("cpu"), None, lambda state: None, "",
                       length_data(Store(tmp_path), points[0]["settings"]))
    return pd.DataFrame(rows)


def test_every_row_carries_every_measure(tmp_path):
    df = _train(tmp_path, **{"fixed.train.epochs": 3})
    assert set(MEASURES) <= set(df.columns)
    first, last = df[df.epoch == 0], df[df.epoch == 3]
    for col in ("tau", "tau_max", "s_A", "eig_real_min", "eig_real_max", "eig_imag_max", "output_scale"):
        assert np.isfinite(df[col]).all(), col
    assert np.isfinite(first["mc"]).all() and np.isfinite(last["mc"]).all()
    assert df[(df.epoch > 0) & (df.epoch < 3)]["mc"].isna().all()      # memory: at init and at the end
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
        assert np.mean(row["tau_layers"]) == pytest.approx(row["tau"], rel=1e-5)   # equal channels per layer
    settings = sweep.expand(cfg.check(tiny_config(**{"grid.seq_len": [16], "grid.model.init.real": [-0.5],
                                                     "fixed.model.n_layers": 3, "grid.seed": [0]})))[0].settings
    arrays = ensure_data(Store(tmp_path), data.spec_of(settings))
    x = torch.as_tensor(arrays["x_train"][:32])                         # the probe batch: the first batch
    model = init_from_data(build_model(settings, data.describe(arrays, settings["task"])), x, settings)
    want = [t.mean().item() for t in model_tau(model, x)]
    np.testing.assert_allclose(df[df.epoch == 0]["tau_layers"].iloc[0], want, rtol=1e-4)


def test_tau_scaling_makes_init_tau_one(tmp_path):
    plain = _train(tmp_path, **{"fixed.train.epochs": 1, "fixed.model.init.scale": 30.0})
    scaled = _train(tmp_path, **{"fixed.train.epochs": 1, "fixed.model.init.scale": 30.0,
                                 "fixed.model.init.c_scaling": "tau"})
    at_init = scaled[scaled.epoch == 0]
    np.testing.assert_allclose(at_init["tau"], 1.0, rtol=1e-4)        # C ← C/√τ: τ = 1 on the probe batch
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
    df = _train(tmp_path, **{"fixed.model.kind": "selective", "grid.model.init.s_A": [-0.05, 0.1],
                             "fixed.train.epochs": 2})
    first = df[df.epoch == 0]
    assert sorted(set(first["s_A"])) == [pytest.approx(-0.05), pytest.approx(0.1)]
    assert np.float32(first["s_A"].max()) == np.float32(0.1)          # exactly the configured value
    assert first["tau"].isna().all() and first["mc"].isna().all()     # no kernel: τ and MC undefined


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
    assert sorted(measured["epoch"].unique()) == [0, 2]                # at init and at the end, null between
    for _, row in measured.iterrows():
        mf = np.asarray(row["mf"])
        assert mf.shape == (16,) and (mf >= -1e-6).all() and (mf <= 1 + 1e-6).all()   # T = seq_len leverage scores
        assert mf.sum() == pytest.approx(row["mc"], rel=1e-5)
        assert mf[0] > mf[-1]                                          # memory fades with the lag


def test_gram_condition_is_finite_for_distinct_modes_and_capped_when_they_coincide(tmp_path):
    from ssmpipe.models.s4d import S4D
    from ssmpipe.store import GRAM_SINGULAR
    from ssmpipe.theory import gram_condition, s4d_system

    def run(imag):
        df = _train(tmp_path, **{"fixed.train.epochs": 1, "fixed.model.d_state": 8, "grid.model.init.imag": [imag],
                                 "fixed.model.init.dt_min": 0.05, "fixed.model.init.dt_max": 0.05})
        return df[df.epoch == 0]["gram_cond"].to_numpy()

    distinct, equal = run(1.0), run(0.0)                               # Im λ_n = s·π·n: s = 0, all modes alike
    assert np.isfinite(distinct).all() and (distinct > 1).all() and (distinct < 1e8).all()
    assert equal == pytest.approx([GRAM_SINGULAR] * len(equal), rel=1e-6)  # float32 column
    torch.manual_seed(0)
    layer = S4D(4, 8, scheme="sweep", real=-0.5, imag=1.0, dt_min=0.05, dt_max=0.05).double()
    want = gram_condition(*s4d_system(layer), 16).median().item()      # the measure is the median over channels
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
