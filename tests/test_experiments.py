"""The papers' experiments: every config is valid at both scales, and claims give verdicts that can go either way."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ssmpipe import config as cfg
from ssmpipe import sweep
from ssmpipe.report.claims import CLAIMS, output_scale_vs_length, s_A_driven_negative
from ssmpipe.report.figures import final_epoch

REPO = Path(__file__).resolve().parents[1]
EXPERIMENTS = sorted((REPO / "config" / "experiments").glob("*.yaml"))
ACL_IMDB = REPO / "tests" / "fixtures" / "aclImdb"


def with_data(raw: dict) -> dict:
    """An experiment's file as read, with the tiny aclImdb fixture as task.path where it needs data."""
    if cfg.needs_data(raw) is None:
        return raw
    return {**raw, "fixed": {**raw["fixed"], "task": {**raw["fixed"]["task"], "path": str(ACL_IMDB)}}}


@pytest.mark.parametrize("scale", ["small", "paper"])
@pytest.mark.parametrize("path", EXPERIMENTS, ids=lambda p: p.stem)
def test_experiment_configs_are_valid(path, scale):
    import yaml

    raw = with_data(yaml.safe_load(path.read_text()))
    config = cfg.check({**raw, "scale": scale})
    assert config["scale"] == scale and "scales" not in config
    points = sweep.expand(config)
    assert len(points) >= 8
    assert set(config["report"]["claims"]) <= set(CLAIMS)
    assert all(isinstance(d, str) and d for d in config["report"]["deviations"])
    assert config["grid"]["seed"] == [0, 1, 2, 3, 4]  # SPEC: 5 seeds for reported means, at both scales
    small = cfg.check({**raw, "scale": "small"})
    if scale == "small":
        assert len(points) <= 150  # minutes on 2 cores: seeds and model.init pack into one model
    else:  # the paper's sizes: no fewer points per task (a task only the small scale has may go)
        per_task = [len(sweep.expand(c)) / len(c["grid"].get("task.name", [0])) for c in (config, small)]
        assert per_task[0] >= per_task[1]


def test_imdb_experiments_need_data_and_say_why():
    import yaml

    imdb = [p for p in EXPERIMENTS if "imdb" in p.stem]
    assert len(imdb) == 3
    for path in imdb:
        raw = yaml.safe_load(path.read_text())
        assert raw["fixed"]["task"]["name"] == "imdb" and raw["fixed"]["model"]["d_model"] == 16  # SPEC 001: d = 16
        for scale in ("small", "paper"):
            assert cfg.needs_data({**raw, "scale": scale}) == ("task.path: an aclImdb folder (or its Parquet export) "
                                                                "is needed (IMDb is not generated)")
            with pytest.raises(cfg.ConfigError, match="task.path is missing"):  # run on its own: an error, as before
                cfg.check({**raw, "scale": scale})
        assert cfg.needs_data(with_data(raw)) is None
        missing = {**raw, "fixed": {**raw["fixed"], "task": {**raw["fixed"]["task"], "path": "/no/aclImdb"}}}
        assert cfg.needs_data(missing) == ("task.path = '/no/aclImdb': no such folder (IMDb reads an aclImdb folder "
                                           "or its Parquet export)")
    others = [p for p in EXPERIMENTS if p not in imdb]
    assert all(cfg.needs_data(yaml.safe_load(p.read_text())) is None for p in others)


def test_a_list_of_experiments_leaves_out_those_that_need_data():
    papers = {"experiments": [str(p) for p in EXPERIMENTS], "results": "results"}
    checked, waiting = cfg.experiments(papers)
    assert sorted(waiting) == sorted(str(p) for p in EXPERIMENTS if "imdb" in p.stem)
    assert all(why.startswith("task.path: an aclImdb folder") for why in waiting.values())
    assert len(checked) == len(EXPERIMENTS) - 3 and cfg.sweeps(papers) == checked
    names = {c["sweep"] for c in checked}
    assert "003-s4-vs-s4d" in names and not any("imdb" in n for n in names)
    with pytest.raises(cfg.ConfigError, match="every one needs data not here"):
        cfg.experiments({"experiments": [str(p) for p in EXPERIMENTS if "imdb" in p.stem]})


def test_paper_scale_follows_the_reference_code():
    """Paper 001's reference code (Arya-Honarpisheh/gen_err_sel_ssm, run_main.sh and its results' file names)."""
    import yaml

    def paper(name):
        return cfg.check(with_data({**yaml.safe_load((REPO / "config" / "experiments" / f"{name}.yaml").read_text()),
                                    "scale": "paper"}))

    for name, epochs, n in (("001_exp1", 10, 1000), ("001_exp1b", 10, 1000), ("001_exp2", 40, 1000),
                            ("001_exp1_listops", 10, 1000), ("001_exp1b_listops", 10, 1000),
                            ("001_exp2_listops", 50, 1000), ("001_exp1_imdb", 10, None), ("001_exp2_imdb", 30, None)):
        c = paper(name)
        assert c["fixed"]["train"]["epochs"] == epochs, name
        if n:
            assert (c["fixed"]["task"]["n_train"], c["fixed"]["task"]["n_test"]) == (n, n), name
    assert paper("001_exp2_imdb")["grid"]["seq_len"] == list(range(100, 2001, 100))
    assert paper("001_exp1_imdb")["grid"]["seq_len"] == list(range(300, 601, 50))
    assert paper("001_exp1b_imdb")["fixed"]["seq_len"] == 500 and paper("001_exp1b_listops")["fixed"]["seq_len"] == 300
    ablation = paper("000_ablation")
    assert ablation["fixed"]["seq_len"] == 2000 and ablation["grid"]["task.name"] == ["listops"]


def test_memory_requests_grow_with_the_settings(tmp_path):
    import yaml

    def shard_mb(name, scale):
        raw = yaml.safe_load((REPO / "config" / "experiments" / f"{name}.yaml").read_text())
        config = cfg.check({**raw, "scale": scale, "results": str(tmp_path / "results")})
        plan = sweep.plan(config, write=False)
        return sweep.shard_mem_mb({config["sweep"]: plan})

    small = shard_mb("002_timescale", "small")
    assert set(small.values()) == {sweep.MEM_FLOOR_MB}  # the floor: 2 GB
    paper = shard_mb("002_timescale", "paper")
    assert len(paper) == 50 and max(paper.values()) > 8000  # L = 16384: several GB
    assert min(paper.values()) == sweep.MEM_FLOOR_MB
    point = sweep.expand(cfg.check({**yaml.safe_load((REPO / "config" / "experiments" / "002_timescale.yaml")
                                                     .read_text()), "scale": "paper"}))
    longest = next(p for p in point if p.settings["seq_len"] == 16384)
    one, two = sweep.pack_mem_mb(longest.settings, 1), sweep.pack_mem_mb(longest.settings, 2)
    assert 6000 < one < two  # the memory function alone is 92 B × 64 channels × 64 states × 16384 steps ≈ 6.2 GB
    wider = {**longest.settings, "model": {**longest.settings["model"], "d_model": 128}}
    assert sweep.pack_mem_mb(wider, 1) > one
    selective = {**longest.settings, "model": {**longest.settings["model"], "kind": "selective"}}
    assert sweep.pack_mem_mb(selective, 1) < one  # no memory function


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
