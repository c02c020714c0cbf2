"""The papers' claims, each checked against a sweep's table: a computed verdict with the numbers behind it.

A claim is a function (runs, final) -> Verdict; an experiment config lists the claims its
report checks (report.claims). `final` holds each run's last epoch, `runs` every epoch.
Verdicts say "supported", "not supported" or "no data" — what this sweep measured, not
what the paper found.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

SCALING, LAMBDA, S_A_INIT = "model.init.c_scaling", "reg.lambda", "model.init.s_A"


@dataclass
class Verdict:
    paper: str
    claim: str
    verdict: str          # supported / not supported / no data
    finding: str          # one sentence with the numbers
    table: pd.DataFrame


def _slope(x, y) -> float:
    """Least-squares slope of log y against log x."""
    x, y = np.log(np.asarray(x, float)), np.log(np.asarray(y, float))
    return float(np.polyfit(x, y, 1)[0]) if len(x) > 1 else float("nan")


def _no_data(paper, claim, why) -> Verdict:
    return Verdict(paper, claim, "no data", why, pd.DataFrame())


def output_scale_vs_length(runs: pd.DataFrame, final: pd.DataFrame) -> Verdict:
    paper, claim = "000", "Without τ scaling the output at init grows with L (and with the moment b); with it, it stays O(1)."
    init = runs[runs["epoch"] == 0]
    if SCALING not in init or init[SCALING].nunique() < 2 or init["seq_len"].nunique() < 2:
        return _no_data(paper, claim, "needs both init scalings and several lengths")
    table = init.groupby([SCALING, "task.moment", "seq_len"])["output_scale"].mean().unstack("seq_len")
    slopes = {s: _slope(t.columns, t.mean()) for s, t in
              ((s, table.xs(s, level=SCALING)) for s in table.index.get_level_values(SCALING).unique())}
    scaled_max = table.xs("tau", level=SCALING).to_numpy().max()
    ok = slopes["none"] > 0.1 and scaled_max <= 3.0 and abs(slopes["tau"]) < slopes["none"]
    finding = (f"log-log slope of E|y_L| against L: {slopes['none']:.2f} without scaling, {slopes['tau']:.2f} with; "
               f"largest E|y_L| with scaling {scaled_max:.2f}, without {table.xs('none', level=SCALING).to_numpy().max():.2f}.")
    return Verdict(paper, claim, "supported" if ok else "not supported", finding, table.reset_index())


def regularizer_gap(runs: pd.DataFrame, final: pd.DataFrame) -> Verdict:
    paper, claim = "000", "The τ regularizer (λ > 0) narrows the generalization gap (test − train loss)."
    ok_runs = final[final["status"] == "ok"].assign(gap=lambda d: d["test_loss"] - d["train_loss"])
    if LAMBDA not in ok_runs or ok_runs[LAMBDA].nunique() < 2:
        return _no_data(paper, claim, "needs several values of reg.lambda")
    table = ok_runs.groupby([SCALING, LAMBDA])[["train_loss", "test_loss", "gap", "test_acc"]].mean().reset_index()
    by_lambda = ok_runs.groupby(LAMBDA)["gap"].mean()
    lo, hi = by_lambda.iloc[0], by_lambda[by_lambda.index > 0].min()
    finding = (f"mean gap {lo:.4f} at λ = 0, smallest gap with λ > 0: {hi:.4f} "
               f"(at λ = {by_lambda[by_lambda.index > 0].idxmin():g}).")
    return Verdict(paper, claim, "supported" if hi < 0.9 * lo else "not supported", finding + " Supported needs "
                   "a gap at least 10% smaller.", table)


def s_A_driven_negative(runs: pd.DataFrame, final: pd.DataFrame) -> Verdict:
    paper, claim = "001", "Training drives the spectral abscissa s_A below 0 from s_A = 0.1 at init."
    start = runs[(runs["epoch"] == 0) & (runs[S_A_INIT] > 0)]
    if start.empty:
        return _no_data(paper, claim, "needs runs started at s_A > 0")
    ends = final[final["run_id"].isin(start["run_id"])]
    below = int((ends["s_A"] < 0).sum())
    table = ends.groupby("seq_len").agg(runs=("run_id", "size"), final_s_A=("s_A", "mean"),
                                        below_zero=("s_A", lambda s: int((s < 0).sum())),
                                        diverged=("status", lambda s: int((s != "ok").sum()))).reset_index()
    finding = (f"final s_A < 0 in {below} of {len(ends)} runs started at s_A = "
               f"{', '.join(f'{v:g}' for v in sorted(start[S_A_INIT].unique()))}.")
    return Verdict(paper, claim, "supported" if below > len(ends) / 2 else "not supported", finding, table)


def s_A_init_sweep(runs: pd.DataFrame, final: pd.DataFrame) -> Verdict:
    paper, claim = "001", "Runs started with s_A > 0 generalize worse (or diverge) than those with s_A ≤ 0."
    if S_A_INIT not in final or final[S_A_INIT].nunique() < 2:
        return _no_data(paper, claim, "needs several values of model.init.s_A")
    table = final.groupby(S_A_INIT).agg(test_acc=("test_acc", "mean"), final_s_A=("s_A", "mean"),
                                        not_ok=("status", lambda s: int((s != "ok").sum()))).reset_index()
    neg, pos = table[table[S_A_INIT] <= 0], table[table[S_A_INIT] > 0]
    finding = (f"mean test accuracy {neg['test_acc'].mean():.3f} for s_A ≤ 0 at init, {pos['test_acc'].mean():.3f} for "
               f"s_A > 0; runs not ok: {int(neg['not_ok'].sum())} and {int(pos['not_ok'].sum())}.")
    better = neg["test_acc"].mean() >= pos["test_acc"].mean() or pos["not_ok"].sum() > neg["not_ok"].sum()
    return Verdict(paper, claim, "supported" if better else "not supported", finding, table)


def accuracy_flat_in_length(runs: pd.DataFrame, final: pd.DataFrame) -> Verdict:
    paper, claim = "001", "With s_A = 0, test accuracy stays flat in the length T (Majority: ≈ 0.86–0.89)."
    ok_runs = final[final["status"] == "ok"]
    if ok_runs["seq_len"].nunique() < 2:
        return _no_data(paper, claim, "needs several lengths")
    table = ok_runs.groupby("seq_len")["test_acc"].agg(["mean", "std", "size"]).reset_index()
    spread = table["mean"].max() - table["mean"].min()
    finding = (f"mean test accuracy from {table['mean'].min():.3f} to {table['mean'].max():.3f} over T = "
               f"{table['seq_len'].min()}..{table['seq_len'].max()} (spread {spread:.3f}; paper ≈ 0.86–0.89).")
    return Verdict(paper, claim, "supported" if spread <= 0.05 else "not supported", finding, table)


def dt_rule_keeps_output_scale(runs: pd.DataFrame, final: pd.DataFrame) -> Verdict:
    paper, claim = "002", "With Δ from the autocorrelation rule the output at init stays O(1) as L grows; S4D's Δ does not."
    init = runs[runs["epoch"] == 0]
    if init["model.init.dt"].nunique() < 2:
        return _no_data(paper, claim, "needs both Δ rules (model.init.dt)")
    table = init.groupby(["model.init.dt", "task.name", "seq_len"])["output_scale"].mean().unstack("seq_len")
    slopes = table.apply(lambda r: _slope(r.index, r.to_numpy()), axis=1).rename("slope")
    worst = {rule: slopes.xs(rule, level="model.init.dt").abs().max() for rule in ("autocorr", "s4d")}
    finding = (f"largest |log-log slope| of E|y_L| against L: {worst['autocorr']:.2f} with the autocorr rule, "
               f"{worst['s4d']:.2f} with S4D's LogUniform Δ.")
    return Verdict(paper, claim, "supported" if worst["autocorr"] < worst["s4d"] else "not supported", finding,
                   table.join(slopes).reset_index())


def imaginary_part_tradeoff(runs: pd.DataFrame, final: pd.DataFrame) -> Verdict:
    paper, claim = "002", "The imaginary part sets a tradeoff: the best accuracy is at an intermediate Im scale, not an extreme."
    ok_runs = final[final["status"] == "ok"].assign(gap=lambda d: d["test_loss"] - d["train_loss"])
    imag = "model.init.imag"
    if ok_runs[imag].nunique() < 3:
        return _no_data(paper, claim, "needs at least 3 imaginary scales")
    table = ok_runs.groupby(imag)[["train_loss", "test_loss", "gap", "test_acc"]].mean().reset_index()
    best = table.loc[table["test_acc"].idxmax(), imag]
    inner = table[imag].iloc[0] < best < table[imag].iloc[-1]
    finding = f"best mean test accuracy {table['test_acc'].max():.3f} at Im scale {best:g} (grid {table[imag].min():g}..{table[imag].max():g})."
    return Verdict(paper, claim, "supported" if inner else "not supported", finding, table)


def memory_predicts_learning(runs: pd.DataFrame, final: pd.DataFrame) -> Verdict:
    paper, claim = "003", "What the model remembers at init is what it learns: more memory capacity at init, better accuracy."
    init = runs[runs["epoch"] == 0][["run_id", "mc"]].rename(columns={"mc": "mc_init"})
    joined = final.merge(init, on="run_id")
    joined = joined[joined["status"] == "ok"].dropna(subset=["mc_init"])
    if joined["mc_init"].nunique() < 3:
        return _no_data(paper, claim, "needs runs with different memory capacities at init")
    rho = joined[["mc_init", "test_acc"]].rank().corr().iloc[0, 1]
    table = joined.groupby("model.init.scheme")[["mc_init", "mc", "test_acc"]].mean().reset_index()
    finding = f"Spearman correlation of MC at init with final test accuracy: {rho:.2f} over {len(joined)} runs."
    return Verdict(paper, claim, "supported" if rho > 0.3 else "not supported", finding, table)


def fixed_vs_trained(runs: pd.DataFrame, final: pd.DataFrame) -> Verdict:
    paper, claim = "003", "Freezing the eigenvalues (reservoir) converges faster and matches learning them."
    if final["model.train_A"].nunique() < 2:
        return _no_data(paper, claim, "needs model.train_A true and false")
    curve = runs[runs["status"] == "ok"].groupby(["model.train_A", "epoch"])["test_acc"].mean().unstack("epoch")
    target = 0.9 * curve.to_numpy().max()
    reach = curve.apply(lambda r: next((e for e, v in r.items() if v >= target), np.nan), axis=1).rename("epoch_to_90pct")
    table = curve.iloc[:, [-1]].rename(columns=lambda e: "final_test_acc").join(reach).reset_index()
    fixed, trained = table.set_index("model.train_A").loc[False], table.set_index("model.train_A").loc[True]
    faster = (fixed["epoch_to_90pct"] <= trained["epoch_to_90pct"]) or np.isnan(trained["epoch_to_90pct"])
    matches = fixed["final_test_acc"] >= trained["final_test_acc"] - 0.02
    finding = (f"final test accuracy {fixed['final_test_acc']:.3f} frozen vs {trained['final_test_acc']:.3f} trained; "
               f"epochs to 90% of the best: {fixed['epoch_to_90pct']} frozen vs {trained['epoch_to_90pct']} trained.")
    return Verdict(paper, claim, "supported" if faster and matches else "not supported", finding, table)


CLAIMS = {f.__name__: f for f in (output_scale_vs_length, regularizer_gap, s_A_driven_negative, s_A_init_sweep,
                                  accuracy_flat_in_length, dt_rule_keeps_output_scale, imaginary_part_tradeoff,
                                  memory_predicts_learning, fixed_vs_trained)}
