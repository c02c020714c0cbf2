"""Controls for every claim test (ssmpipe/report/controls.py): tables with no effect in them are called "supported"
at most at about the test's level, a model at chance is "inconclusive", and a planted effect of realistic size is
found. Tables only, no training: a few seconds per claim."""

import math

import numpy as np
import pandas as pd
import pytest

from ssmpipe.report import controls
from ssmpipe.report.claims import CLAIMS
from ssmpipe.report.figures import final_epoch
from ssmpipe.report.stats import LEVEL

DRAWS = 30


def most_false_positives(n: int, level: float = LEVEL, risk: float = 1e-3) -> int:
    """The largest count of "supported" in n no-effect draws that a test at `level` reaches with probability ≥ risk."""
    tail, k = 1.0, 0
    while True:
        tail -= math.comb(n, k) * level**k * (1 - level) ** (n - k)  # P(X > k)
        if tail < risk:
            return k
        k += 1


def test_every_claim_has_controls():
    assert set(controls.CONTROLS) == set(CLAIMS)


@pytest.mark.parametrize("claim", sorted(controls.CONTROLS))
def test_no_effect_is_rarely_supported_and_a_planted_effect_is_found(claim):
    counts = controls.calibrate(claim, DRAWS)
    for kind in ("margin", *controls.CONTROLS[claim].no_effect):
        assert counts[kind]["supported"] <= most_false_positives(DRAWS), (kind, counts[kind])
    if "at_chance" in controls.CONTROLS[claim].no_effect:  # a model that learned nothing cannot decide anything
        assert counts["at_chance"]["inconclusive"] >= 0.9 * DRAWS, counts["at_chance"]
    assert counts["planted"]["supported"] >= 0.7 * DRAWS, counts["planted"]


def test_the_false_positive_bound_is_a_binomial_tail():
    assert most_false_positives(30) >= 30 * LEVEL
    assert most_false_positives(30) < most_false_positives(300) < 300 * 2 * LEVEL


def test_the_old_failures_of_the_review_stay_fixed():
    """Issue 19's reviewer: the smallest of several λ > 0 gaps against λ = 0 (best of k, no correction), a model at
    chance called flat in T, and s_A of −0.001 called "below 0" — each must not be supported."""
    rng = np.random.default_rng(7)
    noise = controls.planted("regularizer_gap", 0.0, rng)
    assert controls.verdict_on("regularizer_gap", noise) != "supported"
    chance = controls.at_chance(controls.planted("accuracy_flat_in_length", 1.0, rng), rng)
    assert controls.verdict_on("accuracy_flat_in_length", chance) == "inconclusive"
    stuck = controls.s_A_unchanged(controls.planted("s_A_driven_negative", 1.0, rng), rng)
    assert controls.verdict_on("s_A_driven_negative", stuck) == "not supported"


def test_underfitting_regularizer_is_not_supported():
    """λ > 0 that narrows the gap only by raising the train loss (test loss and accuracy worse) is no support."""
    rng = np.random.default_rng(3)
    runs = controls.planted("regularizer_gap", 0.0, rng)
    strong = runs["reg.lambda"] == 0.1
    runs.loc[strong, "train_loss"] += 0.3  # underfits: the gap shrinks by 0.25 …
    runs.loc[strong, "test_loss"] += 0.05  # … while the test loss grows
    runs.loc[strong, "test_acc"] -= 0.05
    verdict = controls.verdict_on("regularizer_gap", runs)
    assert verdict == "not supported"


def test_memory_claim_ranks_within_the_other_settings():
    """Δ (dt_c) moves memory and accuracy together; within each Δ more memory means less accuracy. Pooled over Δ the
    correlation would look like support; ranked within each Δ it is not."""
    rng = np.random.default_rng(5)
    runs = controls.planted("memory_predicts_learning", 0.0, rng)
    runs = runs[runs["task.lag"] == 16].assign(**{"model.init.dt_c": 0.3})
    other = runs.assign(**{"model.init.dt_c": 3.0, "run_id": runs["run_id"] + "b"})
    for part, shift in ((runs, 0.0), (other, 0.5)):
        first = part.groupby("run_id")["mf"].transform("first").map(lambda m: m[16])
        part["mf"] = [None if m is None else list(np.asarray(m) * 0 + shift + v) for m, v in zip(part["mf"], first)]
        part["test_acc"] = np.where(part["epoch"] > 0, 0.3 + shift - 0.5 * first, part["test_acc"])
    both = pd.concat([runs, other], ignore_index=True)
    verdict = CLAIMS["memory_predicts_learning"](both, final_epoch(both))
    assert verdict.verdict == "not supported" and verdict.tests[0].estimate < 0
    assert "model.init.dt_c" in verdict.note


def test_gram_claim_needs_kappa_singular_at_zero():
    rng = np.random.default_rng(6)
    runs = controls.planted("gram_conditioning", 1.0, rng)
    assert controls.verdict_on("gram_conditioning", runs) == "supported"
    runs.loc[(runs["model.init.imag"] == 0) & (runs["epoch"] == 0), "gram_cond"] = 1e8
    verdict = CLAIMS["gram_conditioning"](runs, final_epoch(runs))
    assert verdict.verdict == "not supported" and not verdict.tests[-1].passed
