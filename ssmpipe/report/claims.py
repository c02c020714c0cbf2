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

from ssmpipe.store import GRAM_SINGULAR

SCALING, LAMBDA, S_A_INIT = "model.init.c_scaling", "reg.lambda", "model.init.s_A"
SINGULAR = float(np.float32(GRAM_SINGULAR))  # the cap as its float32 column reads back
NEAR_ZERO = 0.02  # s_A within this of 0 counts as driven to the stable edge (reported beside "below 0")


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
    paper, claim = "000", ("Without τ scaling the output at init grows with L (and with the moment b); "
                           "with it, it stays O(1).")
    init = runs[runs["epoch"] == 0]
    if SCALING not in init or init[SCALING].nunique() < 2 or init["seq_len"].nunique() < 2:
        return _no_data(paper, claim, "needs both init scalings and several lengths")
    table = init.groupby([SCALING, "task.moment", "seq_len"])["output_scale"].mean().unstack("seq_len")
    slopes = {s: _slope(t.columns, t.mean()) for s, t in
              ((s, table.xs(s, level=SCALING)) for s in table.index.get_level_values(SCALING).unique())}
    scaled_max = table.xs("tau", level=SCALING).to_numpy().max()
    ok = slopes["none"] > 0.1 and scaled_max <= 3.0 and abs(slopes["tau"]) < slopes["none"]
    longest = final[(final["seq_len"] == final["seq_len"].max()) & (final["status"] == "ok")]
    mse = longest.groupby(SCALING)["train_loss"].mean()
    finding = (f"log-log slope of E|y_L| against L: {slopes['none']:.2f} without scaling, {slopes['tau']:.2f} with; "
               f"largest E|y_L| with scaling {scaled_max:.2f}, "
               f"without {table.xs('none', level=SCALING).to_numpy().max():.2f}; "
               f"final training loss at L = {final['seq_len'].max()}: {mse.get('none', np.nan):.3f} without, "
               f"{mse.get('tau', np.nan):.3f} with (epoch {int(longest['epoch'].max()) if len(longest) else 0}).")
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
    near = int((ends["s_A"] <= NEAR_ZERO).sum())
    finding = (f"final s_A < 0 in {below} of {len(ends)} runs started at s_A = "
               f"{', '.join(f'{v:g}' for v in sorted(start[S_A_INIT].unique()))}; ≤ {NEAR_ZERO:g} in {near}; "
               f"diverged (final s_A read before the divergence): {int(table['diverged'].sum())}; "
               f"mean final s_A by T: " + ", ".join(f"{r.final_s_A:+.3f} (T = {r.seq_len})" for r in table.itertuples())
               + ".")
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


PAPER_001_ACCURACY = {"majority": "≈ 0.86–0.89", "imdb": "≈ 0.74 → 0.85", "listops": "≈ 0.15–0.17"}  # SPEC 001 Exp. 2


def accuracy_flat_in_length(runs: pd.DataFrame, final: pd.DataFrame) -> Verdict:
    tasks = sorted(final["task.name"].unique()) if "task.name" in final else []
    levels = "; ".join(f"{t} {v}" for t, v in PAPER_001_ACCURACY.items() if t in tasks or not tasks)
    paper, claim = "001", "With s_A = 0, test accuracy stays flat in the length T" + (f" (paper: {levels})." if levels
                                                                                   else ".")
    ok_runs = final[final["status"] == "ok"]
    if ok_runs["seq_len"].nunique() < 2:
        return _no_data(paper, claim, "needs several lengths")
    table = ok_runs.groupby("seq_len")["test_acc"].agg(["mean", "std", "size"]).reset_index()
    spread = table["mean"].max() - table["mean"].min()
    finding = (f"mean test accuracy from {table['mean'].min():.3f} to {table['mean'].max():.3f} over T = "
               f"{table['seq_len'].min()}..{table['seq_len'].max()} (spread {spread:.3f}; supported needs ≤ 0.05).")
    return Verdict(paper, claim, "supported" if spread <= 0.05 else "not supported", finding, table)


def dt_rule_keeps_output_scale(runs: pd.DataFrame, final: pd.DataFrame) -> Verdict:
    paper, claim = "002", ("With Δ from the autocorrelation rule the output at init stays O(1) as L grows; "
                           "S4D's Δ does not.")
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
    paper, claim = "002", ("The imaginary part sets a tradeoff: the best accuracy is at an intermediate Im scale, "
                           "not an extreme.")
    ok_runs = final[final["status"] == "ok"].assign(gap=lambda d: d["test_loss"] - d["train_loss"])
    imag = "model.init.imag"
    if ok_runs[imag].nunique() < 3:
        return _no_data(paper, claim, "needs at least 3 imaginary scales")
    table = ok_runs.groupby(imag)[["train_loss", "test_loss", "gap", "test_acc"]].mean().reset_index()
    best = table.loc[table["test_acc"].idxmax(), imag]
    inner = table[imag].iloc[0] < best < table[imag].iloc[-1]
    finding = (f"best mean test accuracy {table['test_acc'].max():.3f} at Im scale {best:g} "
               f"(grid {table[imag].min():g}..{table[imag].max():g}).")
    return Verdict(paper, claim, "supported" if inner else "not supported", finding, table)


def gram_conditioning(runs: pd.DataFrame, final: pd.DataFrame) -> Verdict:
    paper, claim = "002", ("The imaginary part sets the conditioning of the SSM's Gram matrix "
                           "(Im = 0: every mode alike, singular), and better-conditioned settings train faster.")
    imag = "model.init.imag"
    init = runs[(runs["epoch"] == 0) & (runs["status"] == "ok")].set_index("run_id")
    trained = runs[(runs["epoch"] > 0) & (runs["status"] == "ok")]
    if imag not in init or init[imag].nunique() < 3 or init["gram_cond"].isna().all() or trained.empty:
        return _no_data(paper, claim, "needs LTI runs at 3 or more imaginary scales, trained at least one epoch")
    within = [c for c in ("model.init.real", "model.init.scheme") if c in init and init[c].nunique() > 1]
    # speed: the mean train loss over the training epochs (the area under the loss curve; lower is faster)
    joined = init[[imag, "gram_cond", *within]].join(trained.groupby("run_id")["train_loss"].mean().rename("loss_auc"),
                                                     how="inner").join(final.set_index("run_id")["test_acc"])
    table = joined.assign(singular=joined["gram_cond"] >= SINGULAR).groupby(imag).agg(
        gram_cond_median=("gram_cond", "median"), singular=("singular", "mean"), loss_auc=("loss_auc", "mean"),
        test_acc=("test_acc", "mean")).reset_index()
    rho = _pooled_spearman(joined, "gram_cond", "loss_auc", within)
    zero = table[table[imag] == 0]
    finding = ("median κ at init by Im scale: " + ", ".join(f"{r[imag]:g}: {_kappa(r.gram_cond_median)}"
                                                          for _, r in table.iterrows())
               + f"; Spearman(κ at init, mean train loss over the epochs) = {rho:.2f}"
               + (f" (ranks within each {', '.join(within)})" if within else "")
               + ". Supported needs κ singular at Im = 0 (where swept) and a correlation > 0.3.")
    ok = rho > 0.3 and (zero.empty or zero["singular"].iloc[0] == 1.0)
    return Verdict(paper, claim, "supported" if ok else "not supported", finding, table)


def _kappa(value: float) -> str:
    return "singular" if value >= SINGULAR else f"{value:.3g}"


def _pooled_spearman(table: pd.DataFrame, x: str, y: str, within: list[str]) -> float:
    """Spearman correlation of x and y with ranks taken within each group of `within` (pooled over groups), so an
    axis that moves both (e.g. Δ) does not make the correlation."""
    ranks = table.groupby(within)[[x, y]].rank() if within else table[[x, y]].rank()
    return float(ranks.corr().iloc[0, 1])


def memory_predicts_learning(runs: pd.DataFrame, final: pd.DataFrame) -> Verdict:
    paper, claim = "003", "What the model remembers at init is what it learns: more memory at init, better accuracy."
    init = runs[runs["epoch"] == 0].set_index("run_id")
    joined = (final[final["status"] == "ok"].assign(mc_init=lambda d: d["run_id"].map(init["mc"]))
              .dropna(subset=["mc_init"]))
    if joined["mc_init"].nunique() < 3:
        return _no_data(paper, claim, "needs runs with different memory capacities at init")
    predictors = {"mc_init": "MC"}
    if "mf" in init and "task.lag" in joined:  # the memory of the lag the task asks for: MF(τ = lag) at init
        mf = joined["run_id"].map(init["mf"])
        joined["mf_lag_init"] = [m[lag] if m is not None and lag < len(m) else np.nan
                                 for m, lag in zip(mf, joined["task.lag"])]
        if joined["mf_lag_init"].notna().all():
            predictors["mf_lag_init"] = "MF(τ = lag)"
    predictor = list(predictors)[-1]                                       # the verdict reads the most specific one
    settings = [c for c in joined.columns if "." in c or c == "seq_len"]
    within = [c for c in settings if c not in ("model.init.scheme", "seed") and joined[c].map(str).nunique() > 1]
    rho = {p: _pooled_spearman(joined, p, "test_acc", within) for p in predictors}
    by = [c for c in within if c != "task.lag"] + ["model.init.scheme"] + (["task.lag"] if "task.lag" in within else [])
    table = joined.groupby(by)[[*predictors, "test_acc"]].mean().reset_index()
    where = f" (ranks within each {', '.join(within)})" if within else ""
    finding = (f"Spearman correlation with final test accuracy over {len(joined)} runs{where}: "
               + ", ".join(f"{name} at init {rho[p]:.2f}" for p, name in predictors.items())
               + f". Supported needs > 0.3 for {predictors[predictor]}.")
    return Verdict(paper, claim, "supported" if rho[predictor] > 0.3 else "not supported", finding, table)


def memory_lag_tradeoff(runs: pd.DataFrame, final: pd.DataFrame) -> Verdict:
    paper, claim = "003", ("Accuracy–length tradeoff: more memory at long lags costs precision at short ones (the init "
                           "with the most memory at the longest lag is not the most accurate at the shortest).")
    lag, scheme = "task.lag", "model.init.scheme"
    if lag not in final or final[lag].nunique() < 2 or final[scheme].nunique() < 2 or "mf" not in runs:
        return _no_data(paper, claim, "needs several lags (task.lag) and inits (model.init.scheme)")
    short, long = final[lag].min(), final[lag].max()
    init = runs[(runs["epoch"] == 0) & (runs[lag] == long) & runs["mf"].notna()]
    ok_runs = final[final["status"] == "ok"]
    table = pd.DataFrame({
        f"mf_init_at_lag_{long}": init.groupby(scheme)["mf"].apply(lambda m: float(np.mean([v[long] for v in m]))),
        f"test_acc_lag_{short}": ok_runs[ok_runs[lag] == short].groupby(scheme)["test_acc"].mean(),
        f"test_acc_lag_{long}": ok_runs[ok_runs[lag] == long].groupby(scheme)["test_acc"].mean()}).dropna()
    if len(table) < 2:
        return _no_data(paper, claim, "needs trained runs of two or more inits at the shortest and the longest lag")
    most_memory = table.iloc[:, 0].idxmax()
    best_short, best_long = table.iloc[:, 1].idxmax(), table.iloc[:, 2].idxmax()
    finding = (f"most memory at lag {long} at init: {most_memory} (MF {table.iloc[:, 0].max():.3f}); most accurate at "
               f"lag {long}: {best_long} ({table.iloc[:, 2].max():.3f}); at lag {short}: {best_short} "
               f"({table.iloc[:, 1].max():.3f}, {most_memory} {table.loc[most_memory].iloc[1]:.3f}).")
    return Verdict(paper, claim, "supported" if best_short != most_memory else "not supported", finding,
                   table.reset_index())


def fixed_vs_trained(runs: pd.DataFrame, final: pd.DataFrame) -> Verdict:
    paper, claim = "003", "Freezing the eigenvalues (reservoir) converges faster and matches learning them (per task)."
    if final["model.train_A"].nunique() < 2:
        return _no_data(paper, claim, "needs model.train_A true and false")
    tasks = runs["task.name"] if "task.name" in runs else pd.Series("task", index=runs.index)
    rows, findings = [], []
    for task, part in runs[runs["status"] == "ok"].groupby(tasks):
        curve = part.groupby(["model.train_A", "epoch"])["test_acc"].mean().unstack("epoch")  # (frozen/trained, epochs)
        target = 0.9 * curve.to_numpy().max()
        reach = curve.apply(lambda r, target=target: next((e for e, v in r.items() if v >= target), np.nan), axis=1)
        fixed, trained = (dict(final_test_acc=curve.loc[a].iloc[-1], epoch_to_90pct=reach.loc[a])
                          for a in (False, True))
        faster = fixed["epoch_to_90pct"] <= trained["epoch_to_90pct"] or np.isnan(trained["epoch_to_90pct"])
        matches = fixed["final_test_acc"] >= trained["final_test_acc"] - 0.02
        rows += [{"task.name": task, "model.train_A": a, **v} for a, v in ((False, fixed), (True, trained))]
        findings.append((faster and matches, f"{task}: final test accuracy {fixed['final_test_acc']:.3f} frozen vs "
                                             f"{trained['final_test_acc']:.3f} trained, epochs to 90% of the best "
                                             f"{fixed['epoch_to_90pct']:g} vs {trained['epoch_to_90pct']:g}"))
    ok = sum(good for good, _ in findings)
    finding = ("; ".join(text for _, text in findings)
               + f". Faster and matching (within 0.02) in {ok} of {len(findings)} tasks.")
    return Verdict(paper, claim, "supported" if ok == len(findings) else "not supported", finding, pd.DataFrame(rows))


CLAIMS = {f.__name__: f for f in (output_scale_vs_length, regularizer_gap, s_A_driven_negative, s_A_init_sweep,
                                  accuracy_flat_in_length, dt_rule_keeps_output_scale, imaginary_part_tradeoff,
                                  memory_predicts_learning, memory_lag_tradeoff, fixed_vs_trained, gram_conditioning)}
