"""The statistics behind a claim's verdict: resampling tests over runs, their intervals, and the learning check.

Pure numpy. Every test resamples the table's runs (permutations under the null, bootstrap for the interval) with a
fixed generator, so a verdict is a function of the table. LEVEL is every test's level; an interval is the two-sided
(1 − 2·LEVEL) percentile bootstrap interval, which matches a one-sided test at LEVEL (and TOST for equivalence).
Resampling is vectorized: a statistic takes values of shape (R n) and returns (R).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

LEVEL = 0.05
RESAMPLES = 999
SEED = 20241202  # of every resampling (any fixed value will do: a verdict is then a function of the table)
Z_LEARNED = 1.645  # one-sided 5% normal quantile: a run learned when its test accuracy is this many SEs above chance


@dataclass(frozen=True)
class Test:
    """One statistical test of a claim: the effect, its interval, the p-value against the null, and the outcome."""

    effect: str  # what is estimated, e.g. "slope of log E|y_L| on log L, no scaling"
    estimate: float
    low: float  # the (1 − 2·LEVEL) interval
    high: float
    p: float  # one-sided p-value of the null (NaN for an equivalence test decided by the interval)
    passed: bool  # rejects its null at LEVEL
    wants: str  # what passing needs, e.g. "> 0" or "within ±0.05"
    paper: str = ""  # the paper's value of the effect, where it gives one

    def describe(self) -> str:
        p = "" if math.isnan(self.p) else f", p = {self.p:.3g}"
        paper = f"; paper: {self.paper}" if self.paper else ""
        value = "" if math.isnan(self.estimate) else f" {self.estimate:.3g} [{self.low:.3g}, {self.high:.3g}]"
        return f"{self.effect}:{value}{p} (needs {self.wants}{paper}) — {'passed' if self.passed else 'failed'}"


def generator(salt: str = "") -> np.random.Generator:
    """The fixed generator every resampling starts from (salted per test, so tests do not share draws)."""
    return np.random.default_rng([SEED, *salt.encode()])


def codes(labels) -> np.ndarray:
    """Integer codes of any labels (strata, units), 0..k−1 in sorted order."""
    return np.unique(np.asarray(labels, dtype=str), return_inverse=True)[1].reshape(-1)


def permutations(n: int, strata, rng: np.random.Generator, resamples: int = RESAMPLES) -> np.ndarray:
    """(R n) index arrays, each a random permutation of 0..n−1 that moves items only within their stratum."""
    strata = codes(strata) if strata is not None else np.zeros(n)
    order = np.argsort(strata)  # positions, grouped by stratum
    # stratum + noise in [0, 1) sorts within blocks (stratum − noise would too)
    keys = strata[order][None, :] + rng.random((resamples, n))  # pragma: no mutate
    out = np.empty((resamples, n), int)
    out[:, order] = order[np.argsort(keys)]
    return out


def bootstrap_indices(n: int, strata, rng: np.random.Generator, resamples: int = RESAMPLES) -> np.ndarray:
    """(R n) indices drawn with replacement within each stratum (each stratum keeps its size)."""
    strata = codes(strata) if strata is not None else np.zeros(n)
    out = np.empty((resamples, n), int)
    for s in np.unique(strata):
        members = np.flatnonzero(strata == s)
        out[:, members] = members[rng.integers(0, len(members), (resamples, len(members)))]
    return out


def interval(samples: np.ndarray) -> tuple[float, float]:
    """The (1 − 2·LEVEL) percentile interval of bootstrap samples (NaNs dropped)."""
    samples = samples[np.isfinite(samples)]
    if samples.size == 0:
        return math.nan, math.nan
    return float(np.quantile(samples, LEVEL)), float(np.quantile(samples, 1 - LEVEL))


def permutation_p(observed: float, null: np.ndarray) -> float:
    """One-sided p of `observed` against permuted statistics (larger is more extreme): (1 + #{null ≥ obs}) / (1 + R)."""
    if not np.isfinite(observed):
        return 1.0
    # ≥ up to rounding (a permuted statistic equal to the observed one, computed in another order); > or ≥ differ only
    # on a null at exactly that rounding distance
    return float((1 + np.sum(null >= observed - 1e-12 * abs(observed))) / (1 + null.size))  # pragma: no mutate


def smallest_p(strata, values) -> float:
    """The smallest p-value a within-strata permutation of `values` can reach: 1 / (distinct arrangements),
    Π over strata of n_s! / Π_v (count of v in s)!."""
    frame = np.rec.fromarrays([codes(strata), codes(values)])
    arrangements = 1.0
    for s in np.unique(frame.f0):
        counts = np.unique(frame.f1[frame.f0 == s], return_counts=True)[1]
        arrangements *= math.factorial(int(counts.sum())) / math.prod(math.factorial(int(c)) for c in counts)
    return 1.0 / arrangements


def ranks(values: np.ndarray, strata=None) -> np.ndarray:
    """Average ranks of the last axis, within each stratum (ties share their mean rank)."""
    values = np.asarray(values)
    strata = codes(strata) if strata is not None else np.zeros(values.shape[-1])
    out = np.empty_like(values)
    for s in np.unique(strata):
        members = np.flatnonzero(strata == s)
        out[..., members] = _average_ranks(values[..., members])
    return out


def _average_ranks(v: np.ndarray) -> np.ndarray:
    """1-based ranks along the last axis, ties at their mean rank: #{smaller} + (#{equal} + 1) / 2."""
    below = (v[..., None, :] < v[..., :, None]).sum(-1)
    equal = (v[..., None, :] == v[..., :, None]).sum(-1)
    return below + (equal + 1) / 2


def correlation(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Pearson correlation along the last axis (broadcast); NaN where either side is constant."""
    x = x - x.mean(-1, keepdims=True)
    y = y - y.mean(-1, keepdims=True)
    den = np.sqrt((x * x).sum(-1) * (y * y).sum(-1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, (x * y).sum(-1) / den, np.nan)


def slope(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Least-squares slope of y on x along the last axis (broadcast)."""
    x = x - x.mean(-1, keepdims=True)
    return (x * y).sum(-1) / (x * x).sum(-1)  # Σ (x − x̄)(y − ȳ) = Σ (x − x̄) y


def correlation_test(effect: str, x, y, strata, sign: int, paper: str = "", salt: str = "") -> Test:
    """Spearman correlation of x and y with ranks taken within strata (pooled): H0 no association (y permuted within
    strata); H1 sign·ρ > 0. Interval: bootstrap of runs within strata."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    rx, ry = ranks(x, strata), ranks(y, strata)
    rho = float(correlation(rx, ry))
    rng = generator(salt + effect)
    null = sign * correlation(rx[None, :], ry[permutations(len(y), strata, rng)])
    idx = bootstrap_indices(len(y), strata, rng)
    boot = correlation(ranks(x[idx], strata), ranks(y[idx], strata))
    p = permutation_p(sign * rho, null)
    return Test(effect, rho, *interval(boot), p, p <= LEVEL, _wants(sign), paper)


def paired_test(effect: str, diff, sign: int, paper: str = "", salt: str = "", margin: float = 0.0) -> Test:
    """Mean of paired differences (one per unit): H0 sign·(mean − margin·sign) ≤ 0, by sign flips of the centred
    differences; H1 sign·mean > margin. Interval: bootstrap over units."""
    d = np.asarray(diff, float)
    d = d[np.isfinite(d)]
    if d.size < 2:
        return Test(effect, math.nan, math.nan, math.nan, 1.0, False, _wants(sign, margin), paper)
    rng = generator(salt + effect)
    shifted = sign * d - margin
    flips = rng.choice([-1.0, 1.0], size=(RESAMPLES, d.size))
    p = permutation_p(float(shifted.mean()), (flips * shifted[None, :]).mean(1))
    boot = d[rng.integers(0, d.size, (RESAMPLES, d.size))].mean(1)
    return Test(
        effect, float(d.mean()), *interval(boot), p, p <= LEVEL and 2.0**-d.size <= LEVEL, _wants(sign, margin), paper
    )


def _wants(sign: int, margin: float = 0.0) -> str:
    """What a one-sided test of sign·effect > margin needs, as the page says it: "> 0.3", "< -0.3", "> 0"."""
    return f"> {margin:g}" if sign > 0 else f"< {-margin + 0.0:g}"  # + 0.0: a margin of 0 reads "< 0", not "< -0"


def group_test(effect: str, values, in_group, strata, sign: int, paper: str = "", salt: str = "") -> Test:
    """Difference of means, group − rest, of values: H0 labels exchangeable within strata (permuted); H1 sign·diff > 0.
    Interval: bootstrap of runs within strata × group."""
    v, g = np.asarray(values, float), np.asarray(in_group, bool)
    rng = generator(salt + effect)

    def diff(vals: np.ndarray, grp: np.ndarray) -> np.ndarray:
        return (vals * grp).sum(-1) / grp.sum(-1) - (vals * ~grp).sum(-1) / (~grp).sum(-1)

    observed = float(diff(v, g))
    null = sign * diff(v[None, :], g[permutations(len(v), strata, rng)])
    cells = [f"{s}|{b}" for s, b in zip(strata if strata is not None else np.zeros(len(v)), g)]
    idx = bootstrap_indices(len(v), cells, rng)
    boot = diff(v[idx], g[idx])
    p = permutation_p(sign * observed, null)
    return Test(effect, observed, *interval(boot), p, p <= LEVEL, _wants(sign), paper)


def equivalence_test(
    effect: str,
    boot_stat: Callable[[np.ndarray], np.ndarray],
    values: np.ndarray,
    strata,
    low: float,
    high: float,
    paper: str = "",
    salt: str = "",
) -> Test:
    """Equivalence (TOST by interval): H0 the statistic lies outside [low, high]; passed when its whole (1 − 2·LEVEL)
    bootstrap interval lies inside. boot_stat maps values (R n) -> (R); runs resampled within strata."""
    values = np.asarray(values, float)
    rng = generator(salt + effect)
    estimate = float(boot_stat(values[None, :])[0])
    lo, hi = interval(boot_stat(values[bootstrap_indices(values.shape[-1], strata, rng)]))
    return Test(
        effect,
        estimate,
        lo,
        hi,
        math.nan,
        bool(low <= lo and hi <= high),
        f"interval within [{low:g}, {high:g}]",
        paper,
    )


def bound_test(effect: str, values, sign: int, bound: float, paper: str = "", salt: str = "") -> Test:
    """A mean beyond a bound: passed when the (1 − 2·LEVEL) bootstrap interval of the mean lies on the wanted side
    (sign > 0: low > bound; sign < 0: high < bound). p: bootstrap share on the wrong side."""
    v = np.asarray(values, float)
    v = v[np.isfinite(v)]
    wants = f"{'>' if sign > 0 else '<'} {bound:g}"
    if v.size < 2:
        return Test(effect, math.nan, math.nan, math.nan, 1.0, False, wants, paper)
    rng = generator(salt + effect)
    boot = v[bootstrap_indices(v.size, None, rng)].mean(1)
    lo, hi = interval(boot)
    p = float((1 + np.sum(sign * (boot - bound) <= 0)) / (1 + boot.size))
    return Test(
        effect,
        float(v.mean()),
        lo,
        hi,
        p,
        bool(lo > bound if sign > 0 else hi < bound),
        wants,
        paper,
    )


def holm(tests: list[Test]) -> list[Test]:
    """Holm's step-down correction of one-sided tests that pick the best of several (family-wise level LEVEL)."""
    order = sorted(range(len(tests)), key=lambda i: tests[i].p)
    out, still = list(tests), True
    for rank, i in enumerate(order):
        t = tests[i]
        adjusted = min(1.0, t.p * (len(tests) - rank))
        still = still and adjusted <= LEVEL and t.passed
        out[i] = Test(t.effect, t.estimate, t.low, t.high, adjusted, still, t.wants + " (Holm-corrected)", t.paper)
    return out


def learned(test_acc, chance_acc, n_test) -> np.ndarray:
    """Per run: whether its test accuracy is above the chance rate of its test split (the majority label's share), by
    a one-sided binomial z-test at LEVEL: acc > c + z·√(c(1 − c)/n). NaN chance (no labels, regression): False."""
    acc, c, n = (np.asarray(v, float) for v in (test_acc, chance_acc, n_test))
    return acc > c + Z_LEARNED * np.sqrt(c * (1 - c) / n)
