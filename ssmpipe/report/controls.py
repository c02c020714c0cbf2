"""Controls for the claim tests: tables with no effect in them, and tables with a planted effect of realistic size.

A claim test is trusted when no-effect data gives "supported" at most at its level, and a planted effect is found.
Two sources of tables:

    planted(claim, effect, rng)   a synthetic sweep table shaped like the claim's experiment (its grid, 5 seeds);
                                  effect = 1: a realistic effect; effect = 0: the null's boundary (no effect, or for
                                  an equivalence claim a difference at its margin)
    NO_EFFECT[kind](runs, rng)    a transform that removes what a claim measures from any table, a real one too:
        permuted                  every outcome column (metrics, measures, status) permuted between runs on its own,
                                  whole trajectories at once: no relation left between outcome and settings
        at_chance                 accuracy replaced by draws at the test split's chance rate (a model that learned
                                  nothing)
        s_A_unchanged             s_A stays at its value at init, plus noise (training did not move it)

CONTROLS says which no-effect kinds apply to which claim (an equivalence claim — "flat", "equal" — is not refuted
by a permutation, which makes data flatter, so its null is the planted margin). `calibrate` counts verdicts over
draws; `benchmarks/claim_controls.py` prints the table, tests/test_claim_controls.py asserts it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ssmpipe.report import claims as C
from ssmpipe.report.figures import final_epoch

SEEDS = list(range(5))
OUTCOMES = (
    "train_loss",
    "train_acc",
    "test_loss",
    "test_acc",
    "tau",
    "mc",
    "mf",
    "gram_cond",
    "s_A",
    "output_scale",
    "grad_norm",
    "dt",
    "rho_A",
    "S2",
    "status",
)


# --- no-effect transforms -----------------------------------------------------------------------------------------


def permuted(runs: pd.DataFrame, rng: np.random.Generator) -> pd.DataFrame:
    """Each outcome column's trajectories moved to other runs (one permutation of the runs per column)."""
    out = runs.copy()
    ids = runs["run_id"].unique()
    indexed = runs.set_index(["run_id", "epoch"])
    for col in OUTCOMES:
        if col in runs:
            moved = dict(zip(ids, rng.permutation(ids)))
            where = pd.MultiIndex.from_arrays([runs["run_id"].map(moved), runs["epoch"]])
            out[col] = indexed[col].reindex(where).to_numpy()
    out["status"] = out["status"].fillna("ok") if "status" in out else "ok"
    return out


def at_chance(runs: pd.DataFrame, rng: np.random.Generator) -> pd.DataFrame:
    """Accuracies drawn as a model that learned nothing scores: Binomial(n_test, chance) / n_test."""
    n = runs["task.n_test"].to_numpy(int) if "task.n_test" in runs else np.full(len(runs), 500)
    chance = runs["chance_acc"].to_numpy(float)
    return runs.assign(test_acc=rng.binomial(n, chance) / n, train_acc=rng.binomial(n, chance) / n)


def s_A_unchanged(runs: pd.DataFrame, rng: np.random.Generator) -> pd.DataFrame:
    """s_A at every epoch = its value at init + N(0, 0.005²)."""
    start = runs[runs["epoch"] == 0].set_index("run_id")["s_A"]
    return runs.assign(s_A=runs["run_id"].map(start).to_numpy() + rng.normal(0, 0.005, len(runs)))


NO_EFFECT: dict[str, Callable[[pd.DataFrame, np.random.Generator], pd.DataFrame]] = {
    "permuted": permuted,
    "at_chance": at_chance,
    "s_A_unchanged": s_A_unchanged,
}


# --- planted-effect tables ----------------------------------------------------------------------------------------


def _grid(
    axes: dict[str, list], epochs: int, rng: np.random.Generator, chance: float = 0.5, n_test: int = 500
) -> pd.DataFrame:
    """One row per (run, epoch) of the grid's runs, each ok, with the test split's size and chance rate."""
    runs = pd.MultiIndex.from_product(list(axes.values()), names=list(axes)).to_frame(index=False)
    runs["run_id"] = [f"r{i:04d}" for i in range(len(runs))]
    runs["unit"] = rng.normal(size=len(runs))  # a per-run random effect, shared by its epochs
    runs = runs.assign(status="ok", **{"task.n_test": n_test, "chance_acc": chance})
    return runs.merge(pd.DataFrame({"epoch": range(epochs + 1)}), how="cross")


def _noise(rng: np.random.Generator, rows: pd.DataFrame, sd: float) -> np.ndarray:
    return rng.normal(0, sd, len(rows))


def _acc(rng, rows, level, sd=0.02):
    return np.clip(level + _noise(rng, rows, sd), 0, 1)


def _output_scale_vs_length(e, rng):
    r = _grid(
        {C.SCALING: ["none", "tau"], "task.moment": [0.01, 0.1, 1.0], "seq_len": [16, 64, 256, 1000], "seed": SEEDS},
        1,
        rng,
    )
    grows = (r[C.SCALING] == "none") * (0.5 * e)  # log-log slope 0.5 without scaling
    base = np.exp(grows * np.log(r["seq_len"] / 16) + 0.3 * r["unit"])
    return r.assign(
        output_scale=np.where(r[C.SCALING] == "none", 0.3, 0.5) * base,
        grad_norm=np.where(r["epoch"] == 1, base * np.exp(_noise(rng, r, 0.2)), np.nan),
        train_loss=1.0,
        test_loss=1.0,
        train_acc=np.nan,
        test_acc=np.nan,
        chance_acc=np.nan,
    )


def _ablation(e, rng, chance=0.17, n_test=256):
    r = _grid(
        {
            "task.name": ["listops", "digits"],
            C.SCALING: ["none", "tau"],
            C.LAMBDA: [0.0, 0.0001, 0.001, 0.01, 0.1],
            "seed": SEEDS,
        },
        1,
        rng,
        chance,
        n_test,
    )
    pair = r.groupby(["task.name", C.SCALING, "seed"])["unit"].transform("first")  # shared by the λs of a pair
    helps = r[C.LAMBDA].isin([0.001, 0.01]) * e
    train = 1.0 + 0.05 * pair + _noise(rng, r, 0.02)
    test = 1.4 + 0.05 * pair + _noise(rng, r, 0.03) - 0.06 * helps
    return r.assign(
        train_loss=train,
        test_loss=test,
        train_acc=_acc(rng, r, 0.45),
        test_acc=_acc(rng, r, 0.40 + 0.02 * helps),
        tau=np.exp(rng.normal(0, 1, len(r))),
    )


def _tau_tracks_gap(e, rng):
    r = _ablation(0.0, rng)
    z = np.log(r["tau"])
    return r.assign(test_loss=r["train_loss"] + 0.4 + 0.03 * e * z + _noise(rng, r, 0.05))


def _s_A_driven(e, rng):
    r = _grid({"seq_len": [50, 150, 250, 350], "seed": SEEDS, C.S_A_INIT: [0.1]}, 10, rng, 0.5, 1000)
    drift = 0.1 - e * 0.1 * (1 - np.exp(-r["epoch"] / 3))
    return r.assign(
        s_A=np.where(r["epoch"] == 0, 0.1, drift + _noise(rng, r, 0.005)),
        test_acc=_acc(rng, r, 0.85),
        train_acc=_acc(rng, r, 0.85),
        train_loss=0.4,
        test_loss=0.45,
    )


def _s_A_init_sweep(e, rng):
    r = _grid({C.S_A_INIT: [-0.1, -0.05, 0.0, 0.05, 0.1], "seed": SEEDS}, 1, rng, 0.5, 1000)
    positive = r[C.S_A_INIT] > 0
    diverged = r.groupby("run_id")["unit"].transform("first").pipe(lambda u: u > 1.5) & positive & (e > 0)
    return r.assign(
        test_acc=_acc(rng, r, 0.85 - 0.06 * e * positive, 0.03),
        train_acc=_acc(rng, r, 0.85),
        s_A=r[C.S_A_INIT],
        status=np.where(diverged, "diverged", "ok"),
        train_loss=0.4,
        test_loss=0.45,
    )


def _flat(e, rng):
    r = _grid({"seq_len": [25, 50, 100, 200, 400], "seed": SEEDS}, 1, rng, 0.5, 1000)
    drop = (1 - e) * C.FLAT_MARGIN * np.log2(r["seq_len"] / 25) / 4  # e = 0: a drop of the margin
    return r.assign(
        test_acc=_acc(rng, r, 0.87 - drop, 0.015), train_acc=_acc(rng, r, 0.87), train_loss=0.4, test_loss=0.45
    )


def _selective_bound(e, rng):
    r = _s_A_init_sweep(0.0, rng)
    log_s2 = 5 + 20 * r[C.S_A_INIT] + rng.normal(0, 1, len(r))
    return r.assign(
        S2=np.exp(log_s2), rho_A=0.9, test_loss=r["train_loss"] + 0.1 + 0.02 * e * (log_s2 - 5) + _noise(rng, r, 0.03)
    )


def _dt_rule(e, rng):
    r = _grid(
        {
            "task.name": ["variance", "majority"],
            "model.init.dt": ["s4d", "autocorr"],
            "seq_len": [64, 256, 1024, 2048],
            "seed": SEEDS,
        },
        1,
        rng,
    )
    growth = np.where(r["task.name"] == "variance", 0.5, 1.0) * e * (r["model.init.dt"] == "s4d")
    exponent = np.where(r["task.name"] == "variance", -0.5, -1.0)
    rule = r["model.init.dt"] == "autocorr"
    log_l = np.log(r["seq_len"] / 64)
    return r.assign(
        output_scale=0.5 * np.exp(growth * log_l + 0.1 * r["unit"]),
        dt=np.where(
            rule,
            0.1 * np.exp(exponent * log_l + _noise(rng, r, 0.02)),
            np.exp(rng.uniform(np.log(1e-3), np.log(1e-1), len(r))),
        ),
        train_loss=1.0,
        test_loss=1.0,
        test_acc=np.nan,
        chance_acc=np.nan,
    )


def _complex_grid(rng, epochs=1):
    return _grid({C.REAL: [-1.0, -0.5, -0.1, 0.0], C.IMAG: [0.0, 0.1, 1.0, 10.0], "seed": SEEDS}, epochs, rng, 0.1, 500)


def _imag_tradeoff(e, rng):
    r = _complex_grid(rng)
    step = r[C.IMAG].rank(method="dense") - 1  # 0..3
    train = 1.0 - 0.05 * e * step + _noise(rng, r, 0.05)
    return r.assign(
        train_loss=train,
        test_loss=train + 0.2 + 0.03 * e * step + _noise(rng, r, 0.05),
        test_acc=_acc(rng, r, 0.5, 0.03),
        train_acc=_acc(rng, r, 0.55, 0.03),
    )


def _gram(e, rng):
    r = _complex_grid(rng, epochs=3)
    log_kappa = np.where(r[C.IMAG] == 0, 16.0, 6 - 2 * np.log10(r[C.IMAG].clip(lower=1e-9)) + 0.5 * r["unit"])
    auc = 1 + 0.02 * e * log_kappa + 0.03 * rng.normal(size=len(r))
    run_auc = pd.Series(auc, index=r.index).groupby(r["run_id"]).transform("first")
    return r.assign(
        gram_cond=np.where(r["epoch"] == 0, np.where(r[C.IMAG] == 0, C.SINGULAR, 10**log_kappa), np.nan),
        train_loss=run_auc * np.exp(-r["epoch"] / 3),
        test_loss=1.0,
        test_acc=_acc(rng, r, 0.5, 0.03),
        train_acc=_acc(rng, r, 0.55, 0.03),
    )


def _zero_real(e, rng):
    r = _complex_grid(rng, epochs=1)
    zero = r[C.REAL] == 0
    unstable = zero & (r.groupby("run_id")["unit"].transform("first") > 0) & (e < 1)
    return r.assign(
        test_acc=_acc(rng, r, 0.5 - (1 - e) * 0.05 * zero, 0.02),
        train_acc=_acc(rng, r, 0.55),
        status=np.where(unstable, "diverged", "ok"),
        train_loss=1.0,
        test_loss=1.2,
    )


SCHEME_DECAY = {"inv": 40.0, "lin": 20.0, "random": 10.0, "real": 5.0}  # MF(τ) ≈ exp(−τ / decay), per init


def _memory(e, rng, tradeoff=False):
    r = _grid(
        {"model.init.scheme": list(SCHEME_DECAY), "task.lag": [4, 16, 32, 48], "seed": SEEDS}, 10, rng, 0.125, 256
    )
    decay = r["model.init.scheme"].map(SCHEME_DECAY) * np.exp(0.2 * r["unit"])
    mf = [np.exp(-np.arange(64) / d) for d in decay]
    at_lag = np.array([m[lag] for m, lag in zip(mf, r["task.lag"])])
    at_long = np.array([m[48] for m in mf])
    if tradeoff:
        effect = 0.4 * at_long * (r["task.lag"] == 48) - 0.3 * at_long * (r["task.lag"] == 4)
        level = 0.6 + e * effect
    else:
        level = 0.3 + e * 0.3 * at_lag
    return r.assign(
        mf=[list(m) if ep in (0, 10) else None for m, ep in zip(mf, r["epoch"])],
        mc=[float(m.sum()) for m in mf],
        test_acc=_acc(rng, r, level, 0.05),
        train_acc=0.6,
        train_loss=1.0,
        test_loss=1.1,
    )


def _fixed_vs_trained(e, rng):
    r = _grid(
        {
            "task.name": ["delay", "digits"],
            "model.train_A": [True, False],
            "model.init.scheme": ["lin", "inv"],
            "seed": SEEDS,
        },
        15,
        rng,
        0.125,
        500,
    )
    pace = np.where(r["model.train_A"], 3.0, 3.0 * (1 - 0.5 * e))
    pair = r.groupby(["task.name", "model.init.scheme", "seed"])["unit"].transform("first")  # the seed's data
    final = 0.8 + 0.02 * pair + 0.01 * r.groupby("run_id")["unit"].transform("last")
    return r.assign(
        test_acc=np.clip(0.125 + (final - 0.125) * (1 - np.exp(-r["epoch"] / pace)) + _noise(rng, r, 0.01), 0, 1),
        train_acc=0.8,
        train_loss=0.5,
        test_loss=0.6,
    )


def _s4_vs_s4d(e, rng):
    r = _grid({"model.kind": ["s4", "s4d"], "model.d_state": [4, 8, 16], "seed": SEEDS}, 1, rng, 0.125, 256)
    modes = r["model.d_state"] * np.where(r["model.kind"] == "s4", 2, 1)  # S4 at N ≡ S4D at 2N
    off = (r["model.kind"] == "s4") * (1 - e) * 1.5 * C.MEMORY_MARGIN
    return r.assign(
        mc=np.log2(modes) * (1 + off + _noise(rng, r, 0.01)),
        test_acc=_acc(rng, r, 0.5),
        train_acc=0.5,
        train_loss=1.0,
        test_loss=1.1,
    )


def _hard_to_extend(e, rng):
    r = _grid({"model.init.scheme": ["inv", "lin", "random", "linear", "step"], "seed": SEEDS}, 10, rng, 0.125, 128)
    start = 10 * np.exp(0.3 * r.groupby("run_id")["unit"].transform("first"))
    grown = 1 + (1 - e) * 1.5 * C.MEMORY_MARGIN + _noise(rng, r, 0.03)
    return r.assign(
        mc=np.where(r["epoch"] == 0, start, start * grown),
        test_acc=_acc(rng, r, 0.5),
        train_acc=0.5,
        train_loss=1.0,
        test_loss=1.1,
    )


@dataclass(frozen=True)
class Control:
    planted: Callable[[float, np.random.Generator], pd.DataFrame]  # effect, rng -> runs
    no_effect: tuple[str, ...]  # NO_EFFECT kinds that remove the claim's effect


CONTROLS: dict[str, Control] = {
    "output_scale_vs_length": Control(_output_scale_vs_length, ("permuted",)),
    "regularizer_gap": Control(_ablation, ("permuted", "at_chance")),
    "tau_tracks_gap": Control(_tau_tracks_gap, ("permuted", "at_chance")),
    "s_A_driven_negative": Control(_s_A_driven, ("s_A_unchanged", "at_chance")),
    "s_A_init_sweep": Control(_s_A_init_sweep, ("permuted", "at_chance")),
    "accuracy_flat_in_length": Control(_flat, ("at_chance",)),
    "selective_bound_tracks_gap": Control(_selective_bound, ("permuted", "at_chance")),
    "dt_rule_keeps_output_scale": Control(_dt_rule, ("permuted",)),
    "imaginary_part_tradeoff": Control(_imag_tradeoff, ("permuted", "at_chance")),
    "gram_conditioning": Control(_gram, ("permuted", "at_chance")),
    "zero_real_part_stable": Control(_zero_real, ("at_chance",)),
    "memory_predicts_learning": Control(_memory, ("permuted", "at_chance")),
    "memory_lag_tradeoff": Control(lambda e, rng: _memory(e, rng, tradeoff=True), ("permuted", "at_chance")),
    "fixed_vs_trained": Control(_fixed_vs_trained, ("permuted", "at_chance")),
    "memory_s4_equals_s4d": Control(_s4_vs_s4d, ("permuted",)),
    "memory_hard_to_extend": Control(_hard_to_extend, ("at_chance",)),
}


def planted(claim: str, effect: float, rng: np.random.Generator) -> pd.DataFrame:
    return CONTROLS[claim].planted(effect, rng).drop(columns="unit")


def verdict_on(claim: str, runs: pd.DataFrame) -> str:
    return C.CLAIMS[claim](runs, final_epoch(runs)).verdict


def calibrate(claim: str, draws: int, seed: int = 0) -> dict[str, dict[str, int]]:
    """Verdict counts over `draws` tables of each kind: "planted" (effect 1), "margin" (effect 0: the null's
    boundary) and each applicable no-effect transform of a planted table."""
    rng = np.random.default_rng([seed, *claim.encode()])
    kinds = ["planted", "margin", *CONTROLS[claim].no_effect]
    counts = {k: dict.fromkeys(C.VERDICTS, 0) for k in kinds}
    for _ in range(draws):
        for kind in kinds:
            runs = planted(claim, 0.0 if kind == "margin" else 1.0, rng)
            if kind in NO_EFFECT:
                runs = NO_EFFECT[kind](runs, rng)
            counts[kind][verdict_on(claim, runs)] += 1
    return counts
