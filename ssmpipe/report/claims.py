"""The papers' claims, each a statistical test on a sweep's table: a stated null, tests at LEVEL, intervals.

A claim is a function (runs, final) -> Verdict; an experiment config lists the claims its report checks
(report.claims). `final` holds each run's last epoch, `runs` every epoch. Verdicts:

    supported       every test of the claim rejects its null at LEVEL (an intersection–union test: no correction
                    needed; a claim that picks the best of several settings corrects with Holm)
    not supported   the data could decide, and some test did not reject
    inconclusive    the data cannot decide, and says why: too few runs or seeds for the test to reach LEVEL, the
                    model did not learn (test accuracy not above the test split's majority-label rate), too many
                    runs diverged, or a column the test needs was not logged
    no data         the sweep does not span what the claim is about

What this sweep measured, not what the paper found. The statistics: ssmpipe/report/stats.py; their calibration on
no-effect and planted-effect tables: ssmpipe/report/controls.py.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from ssmpipe.columns import GRAM_SINGULAR
from ssmpipe.report import stats
from ssmpipe.report.stats import LEVEL, Test

SCALING, LAMBDA, S_A_INIT, IMAG, REAL = (
    "model.init.c_scaling",
    "reg.lambda",
    "model.init.s_A",
    "model.init.imag",
    "model.init.real",
)
SINGULAR = float(np.float32(GRAM_SINGULAR))  # the cap as its float32 column reads back
NEAR_ZERO = 0.02  # |s_A| within this of 0: at the stable edge ("toward 0")
FLAT_MARGIN = 0.05  # accuracy "flat" in T: every length's mean within this of every other's
SLOPE_MARGIN = 0.15  # a log-log slope "O(1)" / an exponent "≈ the paper's": within this
MATCH_MARGIN = 0.02  # accuracy "matches" / "not less accurate": at most this much lower
MEMORY_MARGIN = 0.10  # memory "barely extended": MC grows by less than this share; S4 ≡ S4D: MCs within it
MOST_DIVERGED = 0.5  # more runs than this share diverged or failed: inconclusive
VERDICTS = ("supported", "not supported", "inconclusive", "no data")


@dataclass
class Verdict:
    paper: str
    claim: str
    verdict: str  # one of VERDICTS
    finding: str  # the effects and intervals, or why the data cannot decide
    table: pd.DataFrame
    null: str = ""  # the null hypothesis the tests reject
    tests: list[Test] = field(default_factory=list)
    note: str = ""  # what the finding adds to the tests (numbers reported, not tested)


def _verdict(paper: str, claim: str, null: str, tests: list[Test], table: pd.DataFrame, note: str = "") -> Verdict:
    """Supported when every test passed (intersection–union), else not supported; the finding lists each test."""
    word = "supported" if tests and all(t.passed for t in tests) else "not supported"
    finding = "; ".join(t.describe() for t in tests) + (f". {note}" if note else ".")
    return Verdict(paper, claim, word, finding, table, null, tests, note)


def _undecided(paper: str, claim: str, why: str, table: pd.DataFrame | None = None, null: str = "") -> Verdict:
    return Verdict(paper, claim, "inconclusive", why, pd.DataFrame() if table is None else table, null)


def _no_data(paper: str, claim: str, why: str) -> Verdict:
    return Verdict(paper, claim, "no data", why, pd.DataFrame())


# --- what every claim checks before it tests ---------------------------------------------------------------------


def not_learned(rows: pd.DataFrame, what: str = "runs") -> str | None:
    """Why these runs (final epochs) cannot say what training does: fewer than half scored above chance (the test
    split's majority-label rate, `chance_acc`, by a one-sided binomial test); None when they learned."""
    ok = rows[rows["status"] == "ok"]
    if "chance_acc" not in ok or ok.empty or ok["chance_acc"].isna().all():
        return (
            f"the {what} have no chance rate (chance_acc): rows written before it was logged, or a task "
            "without labels; retrain them to decide"
        )
    n_test = ok.get("task.n_test", np.inf)
    won = stats.learned(ok["test_acc"], ok["chance_acc"], n_test)
    if won.mean() >= 0.5:
        return None
    return (
        f"the model did not learn: {int(won.sum())} of {len(ok)} {what} score above chance (mean test accuracy "
        f"{ok['test_acc'].mean():.3f}, the test split's majority-label rate {ok['chance_acc'].median():.3f})"
    )


def too_many_diverged(rows: pd.DataFrame, what: str = "runs") -> str | None:
    bad = int((rows["status"] != "ok").sum())
    if bad > MOST_DIVERGED * len(rows):
        return f"too many {what} diverged or failed: {bad} of {len(rows)}"
    return None


def too_few_pairs(n: int, what: str) -> str | None:
    """A sign-flip test over n paired units reaches at best p = 2^-n."""
    if 2.0**-n > LEVEL:
        return f"too few runs to decide: {n} {what}; a paired test needs at least {int(np.ceil(-np.log2(LEVEL)))}"
    return None


def too_few_arrangements(strata, values, what: str) -> str | None:
    """A permutation test of values within strata (None: one stratum) reaches at best 1 / (distinct arrangements)."""
    values = np.asarray(values)
    if stats.smallest_p(np.zeros(len(values)) if strata is None else strata, values) > LEVEL:
        return f"too few runs to decide: {what} cannot reach p ≤ {LEVEL:g} by permutation"
    return None


def first_reason(*reasons: str | None) -> str | None:
    return next((r for r in reasons if r), None)


def finite(column: pd.Series) -> pd.Series:
    """Whether each value is a finite number (a column read back as objects, or holding None, included)."""
    return pd.Series(np.isfinite(pd.to_numeric(column, errors="coerce").to_numpy(float)), index=column.index)


def unit_slopes(rows: pd.DataFrame, units: list[str], x: str, y: str) -> pd.Series:
    """Least-squares slope of log y on log x within each unit (rows with finite positive y)."""
    rows = rows[finite(rows[y]) & (rows[y] > 0)]
    return (
        rows.groupby(units)
        .apply(
            lambda g: (
                float(stats.slope(np.log(g[x].to_numpy(float)), np.log(g[y].to_numpy(float))))
                if g[x].nunique() > 1
                else np.nan
            )
        )
        .dropna()
    )


def varying(rows: pd.DataFrame, skip: tuple[str, ...]) -> list[str]:
    """The grid's settings that vary among these rows, less `skip` (and seed)."""
    return [
        c
        for c in rows.columns
        if ("." in c or c == "seq_len")
        and c not in (*skip, "seed")
        and not rows[c].isna().all()
        and rows[c].map(str).nunique() > 1
    ]


def strata_of(rows: pd.DataFrame, columns: list[str]):
    """One label per row: its values of `columns` (None when there are none: a single stratum)."""
    return rows[columns].astype(str).agg("|".join, axis=1).to_numpy() if columns else None


# --- 000 ----------------------------------------------------------------------------------------------------------


def output_scale_vs_length(runs: pd.DataFrame, final: pd.DataFrame) -> Verdict:
    paper, claim = (
        "000",
        (
            "Without τ scaling the output at init and the gradient grow with L; with the scaling "
            "C → C/√τ the output stays O(1) (E|y_L| ≤ 1)."
        ),
    )
    null = "E|y_L| and the gradient norm do not grow with L (slopes ≤ 0), or the scaled output exceeds 1"
    init = runs[runs["epoch"] == 0]
    if SCALING not in init or init[SCALING].nunique() < 2 or init["seq_len"].nunique() < 2:
        return _no_data(paper, claim, "needs both init scalings and several lengths")
    units = [c for c in ("task.moment", "seed") if c in init]
    slopes = unit_slopes(init, [SCALING, *units], "seq_len", "output_scale").unstack(SCALING)  # (units, scalings)
    why = too_few_pairs(len(slopes.dropna()), "(moment, seed) units")
    table = init.groupby([SCALING, "task.moment", "seq_len"])["output_scale"].mean().unstack("seq_len").reset_index()
    if why:
        return _undecided(paper, claim, why, table, null)
    longest = init[(init["seq_len"] == init["seq_len"].max()) & (init[SCALING] == "tau")]
    tests = [
        stats.paired_test("slope of log E|y_L| on log L without scaling", slopes["none"], +1, "grows with L", paper),
        stats.paired_test("slope without − with scaling", (slopes["none"] - slopes["tau"]).dropna(), +1, "", paper),
        stats.bound_test(
            f"E|y_L| with scaling at L = {init['seq_len'].max()}",
            longest["output_scale"],
            -1,
            1.0,
            "O(1): second moment ≤ 1",
            paper,
        ),
    ]
    first = runs[runs["epoch"] == 1]
    if "grad_norm" in first and first["grad_norm"].notna().any():
        grads = unit_slopes(first, [SCALING, *units], "seq_len", "grad_norm").unstack(SCALING)
        tests.append(
            stats.paired_test(
                "slope of log gradient norm on log L without scaling", grads["none"], +1, "grows with L", paper
            )
        )
    ends = final[(final["seq_len"] == final["seq_len"].max()) & (final["status"] == "ok")]
    mse = ends.groupby(SCALING)["train_loss"].mean()
    note = (
        f"Training MSE at L = {final['seq_len'].max()}: {mse.get('none', np.nan):.3g} without scaling, "
        f"{mse.get('tau', np.nan):.3g} with (reported, not tested)"
    )
    return _verdict(paper, claim, null, tests, table, note)


def regularizer_gap(runs: pd.DataFrame, final: pd.DataFrame) -> Verdict:
    paper, claim = (
        "000",
        (
            "The τ regularizer (some λ > 0) narrows the generalization gap and lowers the test loss, "
            "without costing test accuracy."
        ),
    )
    null = "at every λ > 0 the gap or the test loss is no lower than at λ = 0 (paired by task, scaling and seed)"
    if LAMBDA not in final or final[LAMBDA].nunique() < 2 or not (final[LAMBDA] == 0).any():
        return _no_data(paper, claim, "needs λ = 0 and some λ > 0 (reg.lambda)")
    ok = final[final["status"] == "ok"]
    table = (
        ok.groupby([c for c in ("task.name", SCALING, LAMBDA) if c in ok])[
            ["train_loss", "test_loss", "gap", "test_acc"]
        ]
        .mean()
        .reset_index()
    )
    why = first_reason(not_learned(final[final[LAMBDA] == 0], "runs at λ = 0"), too_many_diverged(final))
    if why:
        return _undecided(paper, claim, why, table, null)
    pair = [c for c in ("task.name", SCALING, "seed") if c in ok and c != LAMBDA] + varying(
        ok, (LAMBDA, "task.name", SCALING)
    )
    wide = ok.set_index([*pair, LAMBDA])[["gap", "test_loss", "test_acc"]].unstack(LAMBDA)
    per_lambda = []
    for lam in sorted(v for v in ok[LAMBDA].unique() if v > 0):
        d = wide.xs(lam, level=LAMBDA, axis=1) - wide.xs(0.0, level=LAMBDA, axis=1)
        d = d.dropna()
        parts = [
            stats.paired_test(f"gap at λ = {lam:g} − at λ = 0", d["gap"], -1, salt=str(lam)),
            stats.paired_test(f"test loss at λ = {lam:g} − at λ = 0", d["test_loss"], -1, salt=str(lam)),
            stats.paired_test(
                f"test accuracy at λ = {lam:g} − at λ = 0", d["test_acc"], +1, salt=str(lam), margin=-MATCH_MARGIN
            ),
        ]
        per_lambda.append((lam, parts, len(d)))
    why = too_few_pairs(min(n for *_, n in per_lambda), "(task, scaling, seed) pairs")
    if why:
        return _undecided(paper, claim, why, table, null)
    # one intersection–union p per λ (its largest), Holm over the λs: the best of k is corrected
    joint = [
        Test(f"λ = {lam:g}", 0.0, 0.0, 0.0, max(t.p for t in parts), all(t.passed for t in parts), "")
        for lam, parts, _ in per_lambda
    ]
    corrected = stats.holm(joint)
    best = min(range(len(per_lambda)), key=lambda i: corrected[i].p)
    lam, parts, _ = per_lambda[best]
    holm = corrected[best]
    nan = float("nan")
    family = Test(
        f"all three at λ = {lam:g}, the best of {len(per_lambda)} λ > 0",
        nan,
        nan,
        nan,
        holm.p,
        holm.passed,
        f"adjusted p ≤ {LEVEL:g} (Holm)",
    )
    return _verdict(paper, claim, null, [*parts, family], table)


def tau_tracks_gap(runs: pd.DataFrame, final: pd.DataFrame) -> Verdict:
    paper, claim = (
        "000",
        ("The generalization bound grows with τ(θ): runs with a larger τ after training have a larger gap."),
    )
    null = "τ after training and the gap are not associated (ranks within each task and scaling)"
    ok = final[(final["status"] == "ok") & finite(final["tau"])] if "tau" in final else final.iloc[:0]
    if len(ok) < 3 or ok["tau"].nunique() < 3:
        return _no_data(paper, claim, "needs τ (LTI layers) in several trained runs")
    within = [c for c in ("task.name", SCALING) if c in ok and ok[c].nunique() > 1]
    strata = strata_of(ok, within)
    why = first_reason(not_learned(final), too_few_arrangements(strata, ok["tau"], "the runs"))
    table = ok.groupby([*within, LAMBDA] if LAMBDA in ok else within or ["seed"])[["tau", "gap"]].median().reset_index()
    if why:
        return _undecided(paper, claim, why, table, null)
    test = stats.correlation_test(
        "Spearman(τ after training, gap)", ok["tau"], ok["gap"], strata, +1, "the bound is increasing in τ"
    )
    return _verdict(paper, claim, null, [test], table)


# --- 001 ----------------------------------------------------------------------------------------------------------


def s_A_driven_negative(runs: pd.DataFrame, final: pd.DataFrame) -> Verdict:
    paper, claim = (
        "001",
        (
            f"Training drives the spectral abscissa from s_A = 0.1 at init toward 0 (|s_A| ≤ "
            f"{NEAR_ZERO:g}), in runs that learned."
        ),
    )
    null = "s_A does not fall during training, or ends outside the stable edge"
    start = runs[(runs["epoch"] == 0) & (runs[S_A_INIT] > 0)] if S_A_INIT in runs else runs.iloc[:0]
    if start.empty:
        return _no_data(paper, claim, "needs runs started at s_A > 0")
    ends = final[final["run_id"].isin(start["run_id"])]
    trained = ends[ends["status"] == "ok"].assign(s_A_init=lambda d: d["run_id"].map(start.set_index("run_id")["s_A"]))
    table = (
        ends.groupby("seq_len")
        .agg(
            runs=("run_id", "size"),
            final_s_A=("s_A", "mean"),
            below_zero=("s_A", lambda s: int((s < 0).sum())),
            not_ok=("status", lambda s: int((s != "ok").sum())),
        )
        .reset_index()
    )
    why = first_reason(too_many_diverged(ends), not_learned(ends), too_few_pairs(len(trained), "trained runs"))
    if why:
        return _undecided(paper, claim, why, table, null)
    tests = [
        stats.paired_test("final s_A − s_A at init", trained["s_A"] - trained["s_A_init"], -1, "falls during training"),
        stats.equivalence_test(
            "final s_A (mean)", lambda v: v.mean(-1), trained["s_A"].to_numpy(), None, -NEAR_ZERO, NEAR_ZERO, "toward 0"
        ),
    ]
    note = (
        f"final s_A < 0 in {int((trained['s_A'] < 0).sum())} of {len(trained)} trained runs; "
        f"{int((ends['status'] != 'ok').sum())} runs diverged or failed (left out)"
    )
    return _verdict(paper, claim, null, tests, table, note)


def s_A_init_sweep(runs: pd.DataFrame, final: pd.DataFrame) -> Verdict:
    paper, claim = "001", "Runs started with s_A > 0 generalize worse (or diverge) than those with s_A ≤ 0."
    null = "the test accuracy does not depend on the sign of s_A at init (labels exchangeable)"
    if S_A_INIT not in final or final[S_A_INIT].nunique() < 2 or not (final[S_A_INIT] > 0).any():
        return _no_data(paper, claim, "needs several values of model.init.s_A, some > 0")
    # a run that diverged or failed scores the chance rate: no better than a model that learned nothing
    chance = final.get("chance_acc", np.nan)
    outcome = final["test_acc"].where(final["status"] == "ok", chance)
    table = (
        final.assign(outcome=outcome)
        .groupby(S_A_INIT)
        .agg(
            test_acc=("outcome", "mean"), final_s_A=("s_A", "mean"), not_ok=("status", lambda s: int((s != "ok").sum()))
        )
        .reset_index()
    )
    why = not_learned(final[final[S_A_INIT] <= 0], "runs started at s_A ≤ 0")
    if not why and outcome.isna().any():
        why = "a run that diverged has no chance rate to score (chance_acc not logged)"
    strata = strata_of(final, varying(final, (S_A_INIT,)))
    why = why or too_few_arrangements(strata, final[S_A_INIT] > 0, "the sign of s_A over these runs")
    if why:
        return _undecided(paper, claim, why, table, null)
    test = stats.group_test(
        "mean test accuracy, s_A > 0 − s_A ≤ 0 (diverged: chance)",
        outcome,
        final[S_A_INIT] > 0,
        strata,
        -1,
        "worse, or diverges",
    )
    return _verdict(
        paper,
        claim,
        null,
        [test],
        table,
        f"runs not ok: {int(table.loc[table[S_A_INIT] <= 0, 'not_ok'].sum())} at s_A ≤ 0, "
        f"{int(table.loc[table[S_A_INIT] > 0, 'not_ok'].sum())} at s_A > 0",
    )


PAPER_001_ACCURACY = {"majority": "≈ 0.86–0.89", "imdb": "≈ 0.74 → 0.85", "listops": "≈ 0.15–0.17"}  # SPEC 001 Exp. 2


def accuracy_flat_in_length(runs: pd.DataFrame, final: pd.DataFrame) -> Verdict:
    tasks = sorted(final["task.name"].unique()) if "task.name" in final else []
    levels = "; ".join(f"{t} {v}" for t, v in PAPER_001_ACCURACY.items() if t in tasks or not tasks)
    paper, claim = (
        "001",
        (
            f"With s_A = 0, test accuracy stays flat in the length T (every length's mean within "
            f"{FLAT_MARGIN:g} of every other's), above chance" + (f" (paper: {levels})." if levels else ".")
        ),
    )
    null = f"the means at two lengths differ by more than {FLAT_MARGIN:g} (equivalence test)"
    if final["seq_len"].nunique() < 2:
        return _no_data(paper, claim, "needs several lengths")
    ok = final[final["status"] == "ok"]
    table = ok.groupby("seq_len")["test_acc"].agg(["mean", "std", "size"]).reset_index()
    table["chance"] = ok.groupby("seq_len")["chance_acc"].median().to_numpy() if "chance_acc" in ok else np.nan
    why = first_reason(too_many_diverged(final), not_learned(final))
    if why:
        return _undecided(paper, claim, why, table, null)
    group = stats.codes(ok["seq_len"])
    onehot = np.eye(group.max() + 1)[group] / np.bincount(group)  # (n k): a run's weight in its T's mean

    def spread(acc: np.ndarray) -> np.ndarray:  # (R n) -> (R): largest − smallest mean
        means = acc @ onehot
        return means.max(-1) - means.min(-1)

    test = stats.equivalence_test(
        "largest − smallest mean test accuracy over T",
        spread,
        ok["test_acc"].to_numpy(),
        ok["seq_len"].to_numpy(),
        0.0,
        FLAT_MARGIN,
        levels,
    )
    return _verdict(
        paper,
        claim,
        null,
        [test],
        table,
        f"mean test accuracy {table['mean'].min():.3f} to {table['mean'].max():.3f} over T = "
        f"{table['seq_len'].min()}..{table['seq_len'].max()}",
    )


def selective_bound_tracks_gap(runs: pd.DataFrame, final: pd.DataFrame) -> Verdict:
    paper, claim = "001", "The bound term S₂ = Σ t·ρ_A^t after training tracks the gap: larger S₂, larger gap."
    null = "S₂ after training and the gap are not associated"
    ok = final[(final["status"] == "ok") & finite(final["S2"])] if "S2" in final else final.iloc[:0]
    if len(ok) < 3 or ok["S2"].nunique() < 3:
        return _no_data(paper, claim, "needs the bound terms (S2, a selective layer) in several trained runs")
    strata = strata_of(ok, [c for c in ("task.name", "seq_len") if c in ok and ok[c].nunique() > 1])
    table = ok.groupby([S_A_INIT] if S_A_INIT in ok else ["seq_len"])[["rho_A", "S2", "gap"]].median().reset_index()
    why = first_reason(not_learned(final), too_few_arrangements(strata, ok["S2"], "the runs"))
    if why:
        return _undecided(paper, claim, why, table, null)
    test = stats.correlation_test(
        "Spearman(S₂ after training, gap)", ok["S2"], ok["gap"], strata, +1, "the bound grows with S₂"
    )
    return _verdict(paper, claim, null, [test], table)


# --- 002 ----------------------------------------------------------------------------------------------------------

PAPER_DT_EXPONENT = {"variance": -0.5, "majority": -1.0}  # SPEC 002: white noise Δ ~ L^-1/2, correlated Δ ~ L^-1


def dt_rule_keeps_output_scale(runs: pd.DataFrame, final: pd.DataFrame) -> Verdict:
    paper, claim = (
        "002",
        (
            "With Δ from the autocorrelation rule the output at init stays O(1) as L grows (log-log "
            f"slope below {SLOPE_MARGIN:g}), and Δ scales as the paper derives; with S4D's Δ the "
            "output grows faster."
        ),
    )
    null = (
        f"with the rule the slope of log E|y_L| on log L is {SLOPE_MARGIN:g} or more, or no smaller than with "
        f"S4D's Δ, or Δ's exponent is beyond the paper's ± {SLOPE_MARGIN:g}"
    )
    init = runs[runs["epoch"] == 0]
    if "model.init.dt" not in init or init["model.init.dt"].nunique() < 2 or init["seq_len"].nunique() < 2:
        return _no_data(paper, claim, "needs both Δ rules (model.init.dt) and several lengths")
    task = [c for c in ("task.name",) if c in init]
    slopes = unit_slopes(init, ["model.init.dt", *task, "seed"], "seq_len", "output_scale").unstack("model.init.dt")
    table = init.groupby(["model.init.dt", *task, "seq_len"])["output_scale"].mean().unstack("seq_len").reset_index()
    why = too_few_pairs(len(slopes.dropna()), "(task, seed) units")
    if why:
        return _undecided(paper, claim, why, table, null)
    tests = []
    for name, part in slopes.groupby(level=0) if task else [("", slopes)]:
        rule = part["autocorr"].dropna().to_numpy()
        tests.append(
            stats.bound_test(
                f"slope of log E|y_L| on log L, autocorr rule{' ' + name if name else ''}",
                rule,
                -1,
                SLOPE_MARGIN,
                "O(1): does not grow",
            )
        )
    tests.append(
        stats.paired_test(
            "slope with S4D's Δ − with the rule",
            (slopes["s4d"] - slopes["autocorr"]).dropna(),
            +1,
            "S4D's Δ does not keep O(1)",
        )
    )
    rule_rows = init[init["model.init.dt"] == "autocorr"]
    if "dt" in rule_rows and rule_rows["dt"].notna().any():
        dts = unit_slopes(rule_rows, [*task, "seed"], "seq_len", "dt")
        for name, part in dts.groupby(level=0) if task else [("", dts)]:
            exponent = PAPER_DT_EXPONENT.get(name)
            if exponent is not None:
                tests.append(
                    stats.equivalence_test(
                        f"exponent of Δ in L, autocorr rule, {name}",
                        lambda v: v.mean(-1),
                        part.to_numpy(),
                        None,
                        exponent - SLOPE_MARGIN,
                        exponent + SLOPE_MARGIN,
                        f"Δ ~ L^{exponent:g}",
                    )
                )
    return _verdict(paper, claim, null, tests, table)


def imaginary_part_tradeoff(runs: pd.DataFrame, final: pd.DataFrame) -> Verdict:
    paper, claim = (
        "002",
        (
            "The imaginary part sets an approximation–estimation tradeoff: as Im grows the train loss "
            "falls and the generalization gap grows."
        ),
    )
    null = "the train loss does not fall, or the gap does not grow, with the Im scale (ranks within each real part)"
    ok = final[final["status"] == "ok"]
    if IMAG not in ok or ok[IMAG].nunique() < 3:
        return _no_data(paper, claim, "needs at least 3 imaginary scales")
    table = ok.groupby(IMAG)[["train_loss", "test_loss", "gap", "test_acc"]].mean().reset_index()
    strata = strata_of(ok, varying(ok, (IMAG,)))
    why = first_reason(too_many_diverged(final), not_learned(final), too_few_arrangements(strata, ok[IMAG], "the runs"))
    if why:
        return _undecided(paper, claim, why, table, null)
    tests = [
        stats.correlation_test(
            "Spearman(Im scale, train loss)", ok[IMAG], ok["train_loss"], strata, -1, "approximation improves with Im"
        ),
        stats.correlation_test(
            "Spearman(Im scale, gap)", ok[IMAG], ok["gap"], strata, +1, "estimation worsens with Im"
        ),
    ]
    return _verdict(paper, claim, null, tests, table)


def gram_conditioning(runs: pd.DataFrame, final: pd.DataFrame) -> Verdict:
    paper, claim = (
        "002",
        (
            "The imaginary part sets the conditioning of the SSM's Gram matrix (Im = 0: every mode "
            "alike, singular), and better-conditioned settings train faster."
        ),
    )
    null = "κ at init and the mean train loss over the epochs are not associated (ranks within each real part)"
    init = runs[(runs["epoch"] == 0) & (runs["status"] == "ok")].set_index("run_id")
    trained = runs[(runs["epoch"] > 0) & (runs["status"] == "ok")]
    if IMAG not in init or init[IMAG].nunique() < 3 or init["gram_cond"].isna().all() or trained.empty:
        return _no_data(paper, claim, "needs LTI runs at 3 or more imaginary scales, trained at least one epoch")
    within = [c for c in (REAL, "model.init.scheme") if c in init and init[c].nunique() > 1]
    # speed: the mean train loss over the training epochs (the area under the loss curve; lower is faster)
    joined = (
        init[[IMAG, "gram_cond", *within]]
        .join(trained.groupby("run_id")["train_loss"].mean().rename("loss_auc"), how="inner")
        .join(final.set_index("run_id")["test_acc"])
    )
    table = (
        joined.assign(singular=joined["gram_cond"] >= SINGULAR)
        .groupby(IMAG)
        .agg(
            gram_cond_median=("gram_cond", "median"),
            singular=("singular", "mean"),
            loss_auc=("loss_auc", "mean"),
            test_acc=("test_acc", "mean"),
        )
        .reset_index()
    )
    strata = strata_of(joined, within)
    why = first_reason(not_learned(final), too_few_arrangements(strata, joined["gram_cond"], "the runs"))
    if why:
        return _undecided(paper, claim, why, table, null)
    tests = [
        stats.correlation_test(
            "Spearman(κ at init, mean train loss over the epochs)",
            joined["gram_cond"],
            joined["loss_auc"],
            strata,
            +1,
            "better conditioned trains faster",
        )
    ]
    zero = joined[joined[IMAG] == 0]
    if len(zero):
        share = float((zero["gram_cond"] >= SINGULAR).mean())
        tests.append(
            Test(
                "share of runs with κ singular at Im = 0",
                share,
                share,
                share,
                float("nan"),
                share == 1.0,
                "all (a property of the init, no sampling)",
                "singular",
            )
        )
    return _verdict(
        paper,
        claim,
        null,
        tests,
        table,
        "median κ at init by Im scale: "
        + ", ".join(f"{r[IMAG]:g}: {_kappa(r.gram_cond_median)}" for _, r in table.iterrows()),
    )


def _kappa(value: float) -> str:
    return "singular" if value >= SINGULAR else f"{value:.3g}"


def zero_real_part_stable(runs: pd.DataFrame, final: pd.DataFrame) -> Verdict:
    paper, claim = (
        "002",
        (
            f"With Δ from the autocorrelation rule, Re λ = 0 (no decay) trains stably and is not less "
            f"accurate (by more than {MATCH_MARGIN:g}) than Re λ < 0."
        ),
    )
    null = (
        f"runs at Re λ = 0 diverge, or score more than {MATCH_MARGIN:g} below the mean of Re λ < 0 at the same "
        "other settings and seed"
    )
    if REAL not in final or not (final[REAL] == 0).any() or not (final[REAL] < 0).any():
        return _no_data(paper, claim, "needs Re λ = 0 and Re λ < 0 (model.init.real)")
    table = (
        final.groupby(REAL)
        .agg(
            test_acc=("test_acc", "mean"), runs=("run_id", "size"), not_ok=("status", lambda s: int((s != "ok").sum()))
        )
        .reset_index()
    )
    why = not_learned(final[final[REAL] < 0], "runs at Re λ < 0")
    pair = varying(final, (REAL,)) + ["seed"]
    zero = final[final[REAL] == 0].set_index(pair)
    rest = final[(final[REAL] < 0) & (final["status"] == "ok")].groupby(pair)["test_acc"].mean()
    diff = (zero["test_acc"].where(zero["status"] == "ok", zero.get("chance_acc", np.nan)) - rest).dropna()
    why = why or too_few_pairs(len(diff), "paired settings")
    if why:
        return _undecided(paper, claim, why, table, null)
    stable = (zero["status"] == "ok").to_numpy(float)
    tests = [
        stats.bound_test("share of runs at Re λ = 0 that finished ok", stable, +1, 0.9, "stable"),
        stats.paired_test(
            "test accuracy at Re λ = 0 − at Re λ < 0 (diverged: chance)",
            diff,
            +1,
            "avoids memory decay",
            margin=-MATCH_MARGIN,
        ),
    ]
    return _verdict(paper, claim, null, tests, table)


# --- 003 ----------------------------------------------------------------------------------------------------------


def memory_predicts_learning(runs: pd.DataFrame, final: pd.DataFrame) -> Verdict:
    paper, claim = "003", "What the model remembers at init is what it learns: more memory at init, better accuracy."
    null = "memory at init and final test accuracy are not associated (ranks within the other settings)"
    init = runs[runs["epoch"] == 0].set_index("run_id")
    joined = (
        final[final["status"] == "ok"].assign(mc_init=lambda d: d["run_id"].map(init["mc"])).dropna(subset=["mc_init"])
    )
    if joined["mc_init"].nunique() < 3:
        return _no_data(paper, claim, "needs runs with different memory capacities at init")
    predictors = {"mc_init": "MC"}
    if "mf" in init and "task.lag" in joined:  # the memory of the lag the task asks for: MF(τ = lag) at init
        mf = joined["run_id"].map(init["mf"])
        joined["mf_lag_init"] = [
            m[lag] if m is not None and lag < len(m) else np.nan for m, lag in zip(mf, joined["task.lag"])
        ]
        if joined["mf_lag_init"].notna().all():
            predictors["mf_lag_init"] = "MF(τ = lag)"
    predictor = list(predictors)[-1]  # the verdict reads the most specific one
    within = varying(joined, ("model.init.scheme",))
    strata = strata_of(joined, within)
    by = [c for c in within if c != "task.lag"] + ["model.init.scheme"] + (["task.lag"] if "task.lag" in within else [])
    table = joined.groupby(by)[[*predictors, "test_acc"]].mean().reset_index()
    why = first_reason(
        too_many_diverged(final), not_learned(final), too_few_arrangements(strata, joined[predictor], "the runs")
    )
    if why:
        return _undecided(paper, claim, why, table, null)
    test = stats.correlation_test(
        f"Spearman({predictors[predictor]} at init, final test accuracy)",
        joined[predictor],
        joined["test_acc"],
        strata,
        +1,
        "what is remembered is learned",
    )
    return _verdict(
        paper,
        claim,
        null,
        [test],
        table,
        f"{len(joined)} runs" + (f", ranks within each {', '.join(within)}" if within else ""),
    )


def memory_lag_tradeoff(runs: pd.DataFrame, final: pd.DataFrame) -> Verdict:
    paper, claim = (
        "003",
        (
            "Accuracy–length tradeoff: more memory at long lags (MF at the longest lag, at init) helps "
            "recall at that lag and costs precision at the shortest."
        ),
    )
    null = (
        "memory at the longest lag is not associated with accuracy at the longest lag, or not negatively with "
        "accuracy at the shortest"
    )
    lag, scheme = "task.lag", "model.init.scheme"
    if lag not in final or final[lag].nunique() < 2 or final[scheme].nunique() < 2 or "mf" not in runs:
        return _no_data(paper, claim, "needs several lags (task.lag) and inits (model.init.scheme)")
    short, long = final[lag].min(), final[lag].max()
    mf = runs[runs["epoch"] == 0].set_index("run_id")["mf"]
    ok = (
        final[final["status"] == "ok"]
        .assign(mf_long=lambda d: [m[long] if m is not None and long < len(m) else np.nan for m in d["run_id"].map(mf)])
        .dropna(subset=["mf_long"])
    )
    table = (
        ok.groupby([scheme, lag])
        .agg(mf_init_at_longest_lag=("mf_long", "mean"), test_acc=("test_acc", "mean"))
        .reset_index()
    )
    at_short, at_long = ok[ok[lag] == short], ok[ok[lag] == long]
    why = first_reason(
        too_many_diverged(final),
        not_learned(final[final[lag] == short], f"runs at lag {short}"),
        too_few_arrangements(None, at_short["mf_long"], f"the runs at lag {short}"),
    )
    if why:
        return _undecided(paper, claim, why, table, null)
    others = varying(ok, (scheme, lag))
    tests = [
        stats.correlation_test(
            f"Spearman(MF(τ = {long}) at init, test accuracy at lag {long})",
            at_long["mf_long"],
            at_long["test_acc"],
            strata_of(at_long, others),
            +1,
            "long memory helps long lags",
        ),
        stats.correlation_test(
            f"Spearman(MF(τ = {long}) at init, test accuracy at lag {short})",
            at_short["mf_long"],
            at_short["test_acc"],
            strata_of(at_short, others),
            -1,
            "and costs short ones",
        ),
    ]
    return _verdict(paper, claim, null, tests, table)


def fixed_vs_trained(runs: pd.DataFrame, final: pd.DataFrame) -> Verdict:
    paper, claim = (
        "003",
        (
            f"Freezing the eigenvalues (reservoir) converges faster (a higher mean test accuracy over "
            f"the epochs) and matches learning them (final accuracy at most {MATCH_MARGIN:g} lower), "
            "per task."
        ),
    )
    null = "frozen runs are no faster, or end more than the margin below trained ones (paired by init and seed)"
    if "model.train_A" not in final or final["model.train_A"].nunique() < 2:
        return _no_data(paper, claim, "needs model.train_A true and false")
    ok_runs = runs[runs["status"] == "ok"]
    speed = ok_runs[ok_runs["epoch"] > 0].groupby("run_id")["test_acc"].mean()
    ok = final[final["status"] == "ok"].assign(speed=lambda d: d["run_id"].map(speed))
    pair = varying(ok, ("model.train_A",)) + ["seed"]
    table = (
        ok.groupby([c for c in ("task.name", "model.train_A") if c in ok])
        .agg(final_test_acc=("test_acc", "mean"), mean_test_acc_over_epochs=("speed", "mean"))
        .reset_index()
    )
    wide = ok.set_index([*pair, "model.train_A"])[["speed", "test_acc"]].unstack("model.train_A")
    diff = (wide.xs(False, level="model.train_A", axis=1) - wide.xs(True, level="model.train_A", axis=1)).dropna()
    why = first_reason(too_many_diverged(final), not_learned(final[final["model.train_A"]], "runs that train A"))
    tasks = diff.groupby(level="task.name") if "task.name" in pair else [("all", diff)]
    why = why or first_reason(*(too_few_pairs(len(d), f"(init, seed) pairs for {t}") for t, d in tasks))
    if why:
        return _undecided(paper, claim, why, table, null)
    tests = []
    for task, d in tasks:
        tests += [
            stats.paired_test(
                f"{task}: mean test accuracy over epochs, frozen − trained",
                d["speed"],
                +1,
                "converges faster",
                salt=task,
            ),
            stats.paired_test(
                f"{task}: final test accuracy, frozen − trained",
                d["test_acc"],
                +1,
                "matches or beats (except ListOps)",
                salt=task,
                margin=-MATCH_MARGIN,
            ),
        ]
    return _verdict(paper, claim, null, tests, table)


def memory_s4_equals_s4d(runs: pd.DataFrame, final: pd.DataFrame) -> Verdict:
    paper, claim = (
        "003",
        (
            f"MF is invariant under similarity: S4 (DPLR/HiPPO-LegS) and S4D with the same spectrum "
            f"(S4D-Real) have the same memory at init (MC within {MEMORY_MARGIN:.0%})."
        ),
    )
    null = (
        f"MC at init differs between S4 and S4D with the same spectrum by more than {MEMORY_MARGIN:.0%} (paired by "
        "seed: the same Δ)"
    )
    init = runs[runs["epoch"] == 0]
    if "model.kind" not in init or not {"s4", "s4d"} <= set(init["model.kind"]) or init["mc"].isna().all():
        return _no_data(paper, claim, "needs model.kind s4 and s4d, with MC at init")
    # HiPPO-LegS with N states has the N real eigenvalues −1..−N: S4D-Real's with d_state 2N (S4D's d_state counts
    # each complex mode twice), so S4 at N pairs with S4D at 2N; S4 and S4D at the same d_state are the control
    modes = init.get("model.d_state", pd.Series(1, index=init.index)) * np.where(init["model.kind"] == "s4", 2, 1)
    init = init.assign(modes=modes)
    pair = varying(init, ("model.kind", "model.init.scheme", "model.d_state")) + ["modes", "seed"]
    wide = init.set_index([*pair, "model.kind"])["mc"].unstack("model.kind")
    table = (
        init.groupby(["model.kind", *[c for c in init.columns if c == "model.d_state"]])["mc"]
        .agg(["mean", "std", "size"])
        .reset_index()
    )
    paired = wide.dropna()
    if len(paired) < 2:
        return _undecided(
            paper, claim, f"too few runs to decide: {len(paired)} S4/S4D runs with the same spectrum", table, null
        )
    ratio = (paired["s4"] / paired["s4d"] - 1).to_numpy()
    test = stats.equivalence_test(
        "MC of S4 / MC of S4D with its spectrum − 1",
        lambda v: v.mean(-1),
        ratio,
        None,
        -MEMORY_MARGIN,
        MEMORY_MARGIN,
        "equal (similarity-invariant)",
    )
    note = ""
    if "model.d_state" in init:  # the control: the same d_state, half the modes
        same = (
            init.set_index([*[c for c in pair if c != "modes"], "model.d_state", "model.kind"])["mc"]
            .unstack("model.kind")
            .dropna()
        )
        if len(same):
            note = (
                f"control, S4 and S4D at the same d_state (S4D with half the modes): MC of S4 / MC of S4D − 1 = "
                f"{float((same['s4'] / same['s4d'] - 1).mean()):.3g} over {len(same)} pairs"
            )
    return _verdict(paper, claim, null, [test], table, note)


def memory_hard_to_extend(runs: pd.DataFrame, final: pd.DataFrame) -> Verdict:
    paper, claim = (
        "003",
        (
            f"Extending memory is difficult: training grows the memory capacity MC by less than "
            f"{MEMORY_MARGIN:.0%} of its value at init."
        ),
    )
    null = f"training grows MC by {MEMORY_MARGIN:.0%} or more"
    init = runs[runs["epoch"] == 0].set_index("run_id")["mc"]
    ok = final[(final["status"] == "ok") & (final["epoch"] > 0)].assign(mc_init=lambda d: d["run_id"].map(init))
    ok = ok[finite(ok["mc"]) & finite(ok["mc_init"])]
    ok = ok[ok["mc_init"].astype(float) > 0]
    if ok.empty:
        return _no_data(paper, claim, "needs MC at init and after training (LTI runs)")
    growth = (ok["mc"] / ok["mc_init"] - 1).to_numpy()
    within = [c for c in ("model.init.scheme",) if c in ok]
    table = ok.assign(growth=growth).groupby(within or ["seed"])[["mc_init", "mc", "growth"]].mean().reset_index()
    why = first_reason(too_many_diverged(final), not_learned(final), too_few_pairs(len(ok), "trained runs"))
    if why:
        return _undecided(paper, claim, why, table, null)
    test = stats.bound_test(
        "MC after training / MC at init − 1 (mean)", growth, -1, MEMORY_MARGIN, "memory is hard to extend"
    )
    return _verdict(paper, claim, null, [test], table)


CLAIMS = {
    f.__name__: f
    for f in (
        output_scale_vs_length,
        regularizer_gap,
        tau_tracks_gap,
        s_A_driven_negative,
        s_A_init_sweep,
        accuracy_flat_in_length,
        selective_bound_tracks_gap,
        dt_rule_keeps_output_scale,
        imaginary_part_tradeoff,
        gram_conditioning,
        zero_real_part_stable,
        memory_predicts_learning,
        memory_lag_tradeoff,
        fixed_vs_trained,
        memory_s4_equals_s4d,
        memory_hard_to_extend,
    )
}
