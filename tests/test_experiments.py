"""The papers' experiments: every config is valid at both scales, and claims give verdicts that can go either way."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ssmpipe import config as cfg
from ssmpipe import sweep
from ssmpipe.report.claims import CLAIMS, output_scale_vs_length, s_A_driven_negative
from ssmpipe.report.figures import final_epoch

EXPERIMENTS = sorted((Path(__file__).resolve().parents[1] / "config" / "experiments").glob("*.yaml"))


@pytest.mark.parametrize("scale", ["small", "paper"])
@pytest.mark.parametrize("path", EXPERIMENTS, ids=lambda p: p.stem)
def test_experiment_configs_are_valid(path, scale):
    import yaml

    raw = yaml.safe_load(path.read_text())
    config = cfg.check({**raw, "scale": scale})
    assert config["scale"] == scale and "scales" not in config
    points = sweep.expand(config)
    assert len(points) >= 8
    assert set(config["report"]["claims"]) <= set(CLAIMS)
    if scale == "small":
        assert len(points) <= 64  # minutes on 2 cores
    else:
        assert len(points) >= len(sweep.expand(cfg.check({**raw, "scale": "small"})))


def test_scale_that_does_not_exist_is_an_error():
    with pytest.raises(cfg.ConfigError, match="scale = 'huge'"):
        cfg.check({"sweep": "x", "scale": "huge", "scales": {"small": {}, "paper": {}}})


def _runs(scaling_slope_none, scaling_slope_tau):
    rows = []
    for scaling, slope in (("none", scaling_slope_none), ("tau", scaling_slope_tau)):
        for L in (16, 64, 256, 1024):
            rows.append({"run_id": f"{scaling}{L}", "epoch": 0, "model.init.c_scaling": scaling, "task.moment": 0.1,
                         "seq_len": L, "output_scale": 0.3 * (L / 16) ** slope, "status": "ok"})
    return pd.DataFrame(rows)


def test_output_scale_claim_goes_both_ways():
    yes = _runs(0.6, -0.1)
    assert output_scale_vs_length(yes, final_epoch(yes.assign(train_loss=0.0, test_loss=0.0))).verdict == "supported"
    no = _runs(0.6, 0.6)
    assert output_scale_vs_length(no, final_epoch(no.assign(train_loss=0.0, test_loss=0.0))).verdict == "not supported"


def test_s_A_claim_counts_runs_below_zero():
    def runs(final_s_A):
        rows = []
        for i, end in enumerate(final_s_A):
            for epoch, s in ((0, 0.1), (5, end)):
                rows.append({"run_id": str(i), "epoch": epoch, "model.init.s_A": 0.1, "s_A": s, "seq_len": 50,
                             "status": "ok", "train_loss": 0.1, "test_loss": 0.2})
        return pd.DataFrame(rows)

    yes, no = runs([-0.01, -0.2, 0.05]), runs([0.2, 0.3, -0.1])
    assert s_A_driven_negative(yes, final_epoch(yes)).verdict == "supported"
    verdict = s_A_driven_negative(no, final_epoch(no))
    assert verdict.verdict == "not supported" and "1 of 3" in verdict.finding


def test_claims_without_their_axes_say_no_data():
    runs = pd.DataFrame({"run_id": ["a"], "epoch": [0], "status": ["ok"], "seq_len": [16], "train_loss": [1.0],
                         "test_loss": [1.0], "test_acc": [0.5], "s_A": [np.nan], "mc": [np.nan],
                         "model.init.c_scaling": ["none"], "reg.lambda": [0.0], "model.init.s_A": [0.0],
                         "model.init.dt": ["s4d"], "model.init.imag": [1.0], "model.train_A": [True],
                         "model.init.scheme": ["lin"], "task.name": ["delay"], "task.moment": [0.1],
                         "output_scale": [1.0]})
    for name, claim in CLAIMS.items():
        assert claim(runs, final_epoch(runs)).verdict == "no data", name


def test_memory_claim_ranks_within_each_setting_of_the_other_axes():
    from ssmpipe.report.claims import memory_predicts_learning

    def runs(agree: bool):
        rows = []
        for c, base in ((0.3, 0.1), (3.0, 0.5)):                      # Δ moves memory and accuracy together
            for i, scheme in enumerate(["inv", "lin", "random"]):
                mf_lag = base + 0.01 * i
                acc = base + (0.01 * i if agree else -0.01 * i)
                for epoch, test_acc in ((0, 0.1), (3, acc)):
                    rows.append({"run_id": f"{c}{scheme}", "epoch": epoch, "status": "ok", "seed": 0,
                                 "model.init.scheme": scheme, "model.init.dt_c": c, "task.lag": 2,
                                 "mc": 10 * mf_lag, "mf": np.array([1.0, 0.5, mf_lag]), "test_acc": test_acc,
                                 "train_loss": 0.0, "test_loss": 0.0})
        return pd.DataFrame(rows)

    yes, no = runs(True), runs(False)
    verdict = memory_predicts_learning(yes, final_epoch(yes))
    assert verdict.verdict == "supported" and "MF(τ = lag) at init 1.00" in verdict.finding
    verdict = memory_predicts_learning(no, final_epoch(no))            # pooled over Δ it would look supported
    assert verdict.verdict == "not supported" and "MF(τ = lag) at init -1.00" in verdict.finding
    assert "model.init.dt_c" in verdict.finding


def test_gram_claim_needs_singular_at_zero_and_slower_training_when_ill_conditioned():
    from ssmpipe.report.claims import gram_conditioning

    def runs(kappas, slow_when_ill=True):
        rows = []
        for seed in (0, 1):
            for imag, kappa in zip((0.0, 1.0, 10.0), kappas):
                loss = np.log10(kappa) if slow_when_ill else -np.log10(kappa)
                for epoch in (0, 1, 2):
                    rows.append({"run_id": f"{imag}-{seed}", "epoch": epoch, "status": "ok", "seed": seed,
                                 "model.init.imag": imag, "model.init.real": -0.5, "gram_cond": kappa,
                                 "train_loss": loss + 0.01 * seed, "test_loss": 0.0, "test_acc": 0.5})
        return pd.DataFrame(rows)

    singular = float(np.float32(1e16))                                 # the cap, as the float32 column holds it
    yes = runs([singular, 10.0, 1e3])
    verdict = gram_conditioning(yes, final_epoch(yes))
    assert verdict.verdict == "supported" and "0: singular, 1: 10, 10: 1e+03" in verdict.finding
    faster_when_ill = runs([singular, 10.0, 1e3], slow_when_ill=False)
    assert gram_conditioning(faster_when_ill, final_epoch(faster_when_ill)).verdict == "not supported"
    not_singular = runs([1e8, 10.0, 1e3])
    assert gram_conditioning(not_singular, final_epoch(not_singular)).verdict == "not supported"


def test_lag_tradeoff_asks_whether_the_longest_memory_is_also_best_at_short_lags():
    from ssmpipe.report.claims import memory_lag_tradeoff

    def runs(long_memory_best_short: bool):
        rows = []
        for scheme, mf_long, acc in (("lin", 0.3, {2: 0.6 if long_memory_best_short else 0.4, 8: 0.5}),
                                     ("random", 0.1, {2: 0.5, 8: 0.2})):
            for lag in (2, 8):
                for epoch, test_acc in ((0, 0.1), (5, acc[lag])):
                    mf = np.full(16, 0.5)
                    mf[8] = mf_long
                    rows.append({"run_id": f"{scheme}{lag}", "epoch": epoch, "status": "ok", "task.lag": lag,
                                 "model.init.scheme": scheme, "mf": mf, "test_acc": test_acc, "train_loss": 0.0,
                                 "test_loss": 0.0})
        return pd.DataFrame(rows)

    tradeoff = runs(long_memory_best_short=False)
    verdict = memory_lag_tradeoff(tradeoff, final_epoch(tradeoff))
    assert verdict.verdict == "supported" and "at lag 2: random (0.500, lin 0.400)" in verdict.finding
    none = runs(long_memory_best_short=True)
    assert memory_lag_tradeoff(none, final_epoch(none)).verdict == "not supported"
