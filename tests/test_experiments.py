"""The papers' experiments: every config is valid at both scales, and claims give verdicts that can go either way."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ssmpipe import config as cfg
from ssmpipe import sweep
from ssmpipe.report.claims import CLAIMS
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
            assert cfg.needs_data({**raw, "scale": scale}) == (
                "task.path: an aclImdb folder (or its Parquet export) is needed (IMDb is not generated)"
            )
            with pytest.raises(cfg.ConfigError, match="task.path is missing"):  # run on its own: an error, as before
                cfg.check({**raw, "scale": scale})
        assert cfg.needs_data(with_data(raw)) is None
        missing = {**raw, "fixed": {**raw["fixed"], "task": {**raw["fixed"]["task"], "path": "/no/aclImdb"}}}
        assert cfg.needs_data(missing) == (
            "task.path = '/no/aclImdb': no such folder (IMDb reads an aclImdb folder or its Parquet export)"
        )
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
        return cfg.check(
            with_data(
                {**yaml.safe_load((REPO / "config" / "experiments" / f"{name}.yaml").read_text()), "scale": "paper"}
            )
        )

    for name, epochs, n in (
        ("001_exp1", 10, 1000),
        ("001_exp1b", 10, 1000),
        ("001_exp2", 40, 1000),
        ("001_exp1_listops", 10, 1000),
        ("001_exp1b_listops", 10, 1000),
        ("001_exp2_listops", 50, 1000),
        ("001_exp1_imdb", 10, None),
        ("001_exp2_imdb", 30, None),
    ):
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
    point = sweep.expand(
        cfg.check(
            {**yaml.safe_load((REPO / "config" / "experiments" / "002_timescale.yaml").read_text()), "scale": "paper"}
        )
    )
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


def test_claims_without_their_axes_say_no_data():
    runs = pd.DataFrame(
        {
            "run_id": ["a"],
            "epoch": [0],
            "status": ["ok"],
            "seq_len": [16],
            "train_loss": [1.0],
            "test_loss": [1.0],
            "test_acc": [0.5],
            "s_A": [np.nan],
            "mc": [np.nan],
            "model.init.c_scaling": ["none"],
            "reg.lambda": [0.0],
            "model.init.s_A": [0.0],
            "model.init.dt": ["s4d"],
            "model.init.imag": [1.0],
            "model.train_A": [True],
            "model.init.scheme": ["lin"],
            "task.name": ["delay"],
            "task.moment": [0.1],
            "output_scale": [1.0],
        }
    )
    for name, claim in CLAIMS.items():
        assert claim(runs, final_epoch(runs)).verdict == "no data", name
