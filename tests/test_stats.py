"""The resampling statistics behind the claims (ssmpipe/report/stats.py): permutations stay within strata, ranks
share ties, tests hold their level on noise and find a clear effect, Holm corrects, the learning check is a
binomial test."""

import warnings

import numpy as np
import pytest

from ssmpipe.report import stats


def test_permutations_move_items_only_within_their_stratum():
    strata = np.array(["a", "b", "a", "b", "c", "a"])
    perms = stats.permutations(6, strata, np.random.default_rng(0), resamples=200)
    assert perms.shape == (200, 6)
    assert (np.sort(perms, axis=1) == np.arange(6)).all()  # each row a permutation
    assert (strata[perms] == strata[None, :]).all()  # an item lands only in its stratum
    assert len({tuple(p) for p in perms}) > 1


def test_bootstrap_resamples_within_strata():
    strata = np.array([0, 0, 1, 1, 1])
    idx = stats.bootstrap_indices(5, strata, np.random.default_rng(0), resamples=100)
    assert (strata[idx] == strata[None, :]).all()


def test_ranks_average_ties_within_strata():
    np.testing.assert_allclose(stats.ranks(np.array([3.0, 1, 2, 2, 5])), [4, 1, 2.5, 2.5, 5])
    np.testing.assert_allclose(stats.ranks(np.array([3.0, 1, 2, 2, 5]), [0, 0, 1, 1, 1]), [2, 1, 1.5, 1.5, 3])


def test_smallest_p_counts_distinct_arrangements():
    assert stats.smallest_p(np.zeros(4), [0, 0, 1, 1]) == 1 / 6  # C(4, 2)
    assert stats.smallest_p([0, 0, 1, 1], [1, 2, 3, 4]) == 1 / 4  # 2! · 2!


def test_tests_hold_their_level_on_noise_and_find_an_effect():
    rng = np.random.default_rng(1)
    false_pos = sum(
        stats.correlation_test("c", rng.normal(size=20), rng.normal(size=20), None, +1, salt=str(i)).passed
        for i in range(200)
    )
    assert false_pos <= 200 * 0.05 + 3 * np.sqrt(200 * 0.05 * 0.95)
    x = np.arange(20.0)
    assert stats.correlation_test("c", x, x + rng.normal(0, 3, 20), None, +1).passed
    flips = sum(stats.paired_test("d", rng.normal(size=10), +1, salt=str(i)).passed for i in range(200))
    assert flips <= 200 * 0.05 + 3 * np.sqrt(200 * 0.05 * 0.95)
    assert stats.paired_test("d", rng.normal(1.0, 1.0, 10), +1).passed
    assert not stats.paired_test("d", rng.normal(1.0, 1.0, 4), +1).passed  # 2^-4 > 0.05: cannot reach the level


def test_holm_corrects_a_best_of_k():
    tests = [stats.Test(f"t{i}", 0, 0, 0, p, p <= 0.05, "> 0") for i, p in enumerate([0.03, 0.04, 0.5])]
    assert not any(t.passed for t in stats.holm(tests))  # 0.03 · 3 > 0.05
    assert stats.holm([stats.Test("t", 0, 0, 0, 0.01, True, "> 0")] * 3)[0].passed


def test_equivalence_needs_the_whole_interval_inside_the_margin():
    rng = np.random.default_rng(2)
    tight = stats.equivalence_test("m", lambda v: v.mean(-1), rng.normal(0, 0.01, 20), None, -0.05, 0.05)
    wide = stats.equivalence_test("m", lambda v: v.mean(-1), rng.normal(0, 0.5, 20), None, -0.05, 0.05)
    assert tight.passed and not wide.passed and wide.low < -0.05


def test_learned_is_a_binomial_test_against_chance():
    assert list(stats.learned([0.52, 0.60, 0.7], [0.5, 0.5, 0.5], [1000, 1000, 10])) == [False, True, False]
    assert not stats.learned([0.9], [np.nan], [100])[0]


def test_correlation_and_slope_are_pearsons_and_least_squares():
    rng = np.random.default_rng(3)
    x, y = rng.normal(size=(2, 3, 12))  # three rows, broadcast along the last axis
    np.testing.assert_allclose(stats.correlation(x, y), [np.corrcoef(a, b)[0, 1] for a, b in zip(x, y)])
    np.testing.assert_allclose(stats.slope(x, y), [np.polyfit(a, b, 1)[0] for a, b in zip(x, y)])
    assert np.isnan(stats.correlation(np.ones(5), np.arange(5.0))) and np.isnan(stats.correlation(x[0], np.ones(12)))


def test_codes_number_labels_in_sorted_order():
    assert list(stats.codes(["b", "a", "c", "a"])) == [1, 0, 2, 0]
    assert list(stats.codes([10, 9, 10])) == [0, 1, 0]  # sorted as text: "10" < "9"


def test_permutation_p_counts_the_null_at_least_as_extreme_plus_one():
    assert stats.permutation_p(1.0, np.array([0.0, 1.0, 2.0])) == 3 / 4  # (1 + #{1, 2}) / (1 + 3)
    assert stats.permutation_p(5.0, np.array([0.0, 1.0, 2.0])) == 1 / 4
    assert stats.permutation_p(float("nan"), np.array([0.0])) == 1.0 and stats.permutation_p(np.inf, np.zeros(3)) == 1.0


def test_correlation_test_is_spearman_with_its_sign_interval_and_wording():
    x = np.arange(12.0)
    y = x**3 + np.array([0, 5, -3, 2, 0, 1, -1, 4, 0, 2, -2, 1.0])  # monotone but for two swaps
    rank = lambda v: np.argsort(np.argsort(v)).astype(float)  # noqa: E731 -- no ties here
    t = stats.correlation_test("rho", x, y, None, +1, paper="0.9")
    assert t.estimate == pytest.approx(np.corrcoef(rank(x), rank(y))[0, 1]) and t.estimate < 1
    assert t.passed and t.p == 1 / (1 + stats.RESAMPLES) and t.low <= t.estimate <= t.high <= 1
    assert (t.effect, t.wants, t.paper) == ("rho", "> 0", "0.9")
    down = stats.correlation_test("rho", x, -y, None, -1)
    assert down.passed and down.wants == "< 0" and down.estimate == pytest.approx(-t.estimate)
    assert not stats.correlation_test("rho", x, -y, None, +1).passed  # the wrong sign is no support
    # within strata: two strata whose levels differ but whose insides do not agree with x is no association
    strata = np.repeat([0, 1], 6)
    within = stats.correlation_test("rho", x, np.where(strata == 0, 0.0, 100.0) + (-1.0) ** x, strata, +1)
    assert not within.passed and within.p > 0.2
    assert stats.correlation_test("rho", x, y, None, +1, salt="a") != stats.correlation_test(
        "rho", x, y, None, +1, salt="b"
    )  # salted: other draws, so another interval


def test_paired_test_wants_the_mean_beyond_its_margin_and_drops_nans():
    d = np.array([0.3, 0.5, 0.4, 0.6, 0.35, 0.45, 0.55, 0.5, np.nan])
    t = stats.paired_test("gap", d, +1)
    assert (
        t.passed and t.estimate == pytest.approx(np.nanmean(d)) and t.low <= t.estimate <= t.high and t.wants == "> 0"
    )
    assert (
        stats.paired_test("gap", d, +1, margin=0.3).passed
        and stats.paired_test("gap", d, +1, margin=0.3).wants == "> 0.3"
    )
    assert not stats.paired_test("gap", d, +1, margin=0.6).passed  # the mean, 0.46, is not beyond 0.6
    assert not stats.paired_test("gap", d, -1).passed and stats.paired_test("gap", -d, -1).passed
    assert stats.paired_test("gap", -d, -1, margin=0.3).wants == "< -0.3"
    alone = stats.paired_test("gap", [1.0, np.nan], +1)
    assert np.isnan(alone.estimate) and alone.p == 1.0 and not alone.passed and alone.wants == "> 0"


def test_group_test_is_the_difference_of_means_within_strata():
    rng = np.random.default_rng(4)
    strata = np.repeat(["a", "b", "c"], 8)
    in_group = np.tile([True, False], 12)
    values = np.repeat([0.0, 10.0, 20.0], 8) + rng.normal(0, 0.1, 24) + 1.0 * in_group  # the group 1.0 higher
    t = stats.group_test("diff", values, in_group, strata, +1)
    assert t.estimate == pytest.approx(values[in_group].mean() - values[~in_group].mean())
    assert t.passed and t.low <= t.estimate <= t.high and abs(t.estimate - 1.0) < 0.2 and t.wants == "> 0"
    assert not stats.group_test("diff", values, in_group, strata, -1).passed
    assert stats.group_test("diff", -values, in_group, strata, -1).wants == "< 0"
    flat = np.repeat([0.0, 10.0, 20.0], 8) + rng.normal(0, 0.1, 24)  # strata differ, the group does not
    assert not stats.group_test("diff", flat, in_group, strata, +1).passed


def test_bound_test_wants_the_whole_interval_of_the_mean_past_the_bound():
    v = np.array([0.61, 0.58, 0.63, 0.6, 0.62, 0.59, 0.6, 0.61, np.nan])
    above = stats.bound_test("acc", v, +1, 0.5)
    assert (
        above.passed and above.estimate == pytest.approx(np.nanmean(v)) and above.low > 0.5 and above.wants == "> 0.5"
    )
    assert above.p == 1 / (1 + stats.RESAMPLES)  # no bootstrap mean on the wrong side
    assert not stats.bound_test("acc", v, +1, 0.6).passed  # the interval straddles 0.6
    below = stats.bound_test("acc", v, -1, 0.7)
    assert below.passed and below.high < 0.7 and below.wants == "< 0.7"
    assert not stats.bound_test("acc", v, -1, 0.5).passed and stats.bound_test("acc", v, -1, 0.5).p == 1.0
    alone = stats.bound_test("acc", [0.9], +1, 0.5)
    assert np.isnan(alone.estimate) and alone.p == 1.0 and not alone.passed and alone.wants == "> 0.5"


def test_holm_multiplies_each_p_by_the_tests_left_and_stops_at_the_first_failure():
    ps = [0.04, 0.01, 0.02, 0.3]
    tests = [stats.Test(f"t{i}", 0.0, 0.0, 0.0, p, True, "> 0") for i, p in enumerate(ps)]
    out = stats.holm(tests)
    assert [t.p for t in out] == pytest.approx([min(1.0, 0.04 * 2), 0.01 * 4, 0.02 * 3, min(1.0, 0.3 * 1)])
    assert [t.passed for t in out] == [False, True, False, False]  # 0.06 > 0.05 stops the rest
    assert all(t.wants == "> 0 (Holm-corrected)" and t.effect == f"t{i}" for i, t in enumerate(out))
    failed = [stats.Test("t", 0.0, 0.0, 0.0, 0.001, False, "> 0")] + tests[1:2]
    assert [t.passed for t in stats.holm(failed)] == [False, False]  # a test that failed stays failed, and stops Holm


def test_learned_needs_the_accuracy_above_chance_by_the_binomial_margin():
    c, n = 0.5, 400
    edge = c + stats.Z_LEARNED * np.sqrt(c * (1 - c) / n)  # 0.541125
    assert list(stats.learned([edge - 1e-6, edge + 1e-6], [c, c], [n, n])) == [False, True]


def test_a_test_describes_itself_in_one_line():
    t = stats.Test("slope", 0.51234, 0.4, 0.6, 0.0123, True, "> 0", paper="0.5")
    assert t.describe() == "slope: 0.512 [0.4, 0.6], p = 0.0123 (needs > 0; paper: 0.5) — passed"
    eq = stats.Test("gap", float("nan"), float("nan"), float("nan"), float("nan"), False, "within")
    assert eq.describe() == "gap: (needs within) — failed"


# --- each part's contract, case by case (what .ci/mutation's changes to stats.py must break)


def test_resampling_is_reproducible_unsalted_by_default_and_salted_apart():
    assert (stats.generator("a").random(5) == stats.generator("a").random(5)).all()
    assert (stats.generator().random(5) == stats.generator("").random(5)).all()
    assert not (stats.generator("a").random(5) == stats.generator("b").random(5)).any()
    x = np.arange(10.0)
    y = x + np.array([3, -2, 1, 0, -1, 2, -3, 1, 0, 2.0])
    t = stats.correlation_test("rho", x, y, None, +1)
    assert t == stats.correlation_test("rho", x, y, None, +1, salt="") and t.paper == ""  # the same verdict each build


def test_a_bootstrap_draws_every_member_and_an_interval_keeps_its_one_sample():
    assert set(stats.bootstrap_indices(3, None, np.random.default_rng(0), 200).ravel()) == {0, 1, 2}
    assert set(stats.bootstrap_indices(4, [0, 1, 0, 1], np.random.default_rng(0), 200).ravel()) == {0, 1, 2, 3}
    assert stats.interval(np.array([0.3])) == (0.3, 0.3)
    assert stats.interval(np.array([np.nan, 0.3, np.inf])) == (0.3, 0.3)
    assert all(np.isnan(stats.interval(np.array([np.nan]))))


def test_ranks_of_a_batch_are_each_rows_own():
    batch = np.array([[3.0, 1, 2, 2], [1, 2, 3, 4]])
    np.testing.assert_allclose(stats.ranks(batch), [[4, 1, 2.5, 2.5], [1, 2, 3, 4]])
    np.testing.assert_allclose(stats.ranks(batch, [0, 0, 1, 1]), [[2, 1, 1.5, 1.5], [1, 2, 1, 2]])
    np.testing.assert_allclose(stats.ranks([3, 1, 2]), [3, 1, 2])  # integers too


def test_correlation_is_scale_free_and_quiet_on_a_constant_side():
    x = np.array([0.0, 0.01, 0.02, 0.04])  # a tiny spread: its norm is far below 1
    assert stats.correlation(x, 2 * x) == pytest.approx(1.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a report of a sweep with a constant metric prints no RuntimeWarning
        assert np.isnan(stats.correlation(np.ones(4), x))
        assert not stats.learned([0.9], [np.nan], [100])[0]


def test_slope_broadcasts_one_x_over_a_batch_of_ys():
    x = np.arange(5.0)
    ys = np.stack([np.stack([k * x + j for j in range(3)]) for k in (1.0, -2.0)])  # (2 3 5)
    np.testing.assert_allclose(stats.slope(x, ys), [[1.0] * 3, [-2.0] * 3])
    assert stats.slope(x, 3 * x + 1) == pytest.approx(3.0)


def test_a_p_equal_to_the_level_rejects(monkeypatch):
    """The level's definition: reject when p ≤ LEVEL (a p of exactly 0.05 passes)."""
    monkeypatch.setattr(stats, "permutation_p", lambda observed, null: stats.LEVEL)
    x = np.arange(8.0)
    assert stats.correlation_test("rho", x, x, None, +1).passed
    assert stats.paired_test("d", x + 1, +1).passed
    assert stats.group_test("g", x, x > 3, None, +1).passed


def test_correlation_test_ranks_and_resamples_within_strata():
    """y rises with x inside each stratum but falls across them: the within-strata Spearman ρ is 1, and every
    bootstrap within strata keeps it 1; ranked or resampled across strata it would not be."""
    strata = np.repeat([0, 1], 6)
    x = np.arange(12.0)
    y = np.where(strata == 0, 10.0, 0.0) + np.arange(12.0) % 6
    t = stats.correlation_test("rho", x, y, strata, +1, paper="1")
    assert stats.correlation(x, y) < 0 < t.estimate == pytest.approx(1.0)
    assert (t.low, t.high) == pytest.approx((1.0, 1.0)) and t.passed and t.paper == "1"
    flipped = stats.correlation_test("rho", x, y[::-1], strata, +1)  # y falls inside each stratum
    assert flipped.estimate == pytest.approx(-1.0) and not flipped.passed


def test_paired_test_fields_small_samples_and_missing_values():
    t = stats.paired_test("gap", [0.3, None, 0.5, 0.4, 0.6, 0.35], +1, paper="0.4")  # None: missing, as NaN
    assert (t.effect, t.paper, t.wants) == ("gap", "0.4", "> 0") and t.estimate == pytest.approx(0.43)
    assert t.passed and abs(t.p - 2**-5) < 0.02  # 5 positive differences: only no flip is as extreme, 2⁻⁵
    two = stats.paired_test("gap", [1.0, 1.2], +1)
    assert two.estimate == pytest.approx(1.1) and not two.passed  # two differences: tested, but 2⁻² > LEVEL
    assert two.paper == "" and "paper" not in two.describe()  # no paper value given: none claimed
    alone = stats.paired_test("gap", [1.0, np.nan], -1, paper="p", margin=0.2)
    assert (alone.effect, alone.paper, alone.wants, alone.p, alone.passed) == ("gap", "p", "< -0.2", 1.0, False)
    assert np.isnan(alone.low) and np.isnan(alone.high)
    assert stats.paired_test("gap", [-1.0, -2, -1.5, -1.2, -1.1], -1).wants == "< 0"
    outlier = stats.paired_test("gap", [10.0] + [0.0] * 9, +1)
    assert outlier.low == 0.0 and outlier.high > 0  # the bootstrap draws the first difference too
    strong4 = [10.0, 10.1, 9.9, 10.2]  # four differences: 2⁻⁴ > LEVEL, so never, whatever the draws
    assert not any(stats.paired_test("gap", strong4, +1, salt=str(i)).passed for i in range(100))


def test_group_test_fields_unequal_groups_and_cells():
    rng = np.random.default_rng(5)
    values = np.concatenate([rng.normal(1.0, 0.1, 4), rng.normal(0.0, 0.1, 12)])
    in_group = np.arange(16) < 4  # 4 in the group, 12 in the rest
    t = stats.group_test("diff", values, in_group, None, +1, paper="1")
    assert t.estimate == pytest.approx(values[:4].mean() - values[4:].mean())
    assert (t.effect, t.paper, t.wants) == ("diff", "1", "> 0") and t.passed and 0 < t.p <= 0.01
    assert stats.group_test("diff", values, in_group.astype(int), None, +1, paper="1") == t  # 0/1 labels as booleans
    # constant inside each stratum × group cell: a bootstrap within cells redraws the same data every time
    strata = np.repeat(["a", "b"], 8)
    cells = np.where(strata == "a", 0.0, 5.0) + 1.0 * np.tile([True, False, False, False], 4)
    flat = stats.group_test("diff", cells, np.tile([True, False, False, False], 4), strata, +1)
    assert (flat.low, flat.high) == pytest.approx((flat.estimate, flat.estimate))


def test_equivalence_test_fields_and_its_interval_edges():
    mean = lambda v: v.mean(-1)  # noqa: E731
    t = stats.equivalence_test("m", mean, np.full(10, 0.25), None, 0.25, 0.25, paper="0.25")
    assert (t.effect, t.estimate, t.low, t.high, t.passed) == ("m", 0.25, 0.25, 0.25, True)  # on both edges: inside
    assert (t.wants, t.paper) == ("interval within [0.25, 0.25]", "0.25") and np.isnan(t.p)
    rng = np.random.default_rng(6)
    below = stats.equivalence_test("m", mean, rng.normal(-0.2, 0.05, 20), None, -0.05, 0.05)
    assert below.high < 0.05 and below.low < -0.05 and not below.passed  # inside on one side only
    strata = np.repeat([0, 1], [3, 7])
    levels = np.where(strata == 0, 0.0, 1.0)  # constant inside each stratum: resampled within, always the same
    kept = stats.equivalence_test("m", mean, levels, strata, 0.0, 1.0)
    assert kept.estimate == pytest.approx(0.7) and (kept.low, kept.high) == pytest.approx((0.7, 0.7))


def test_bound_test_fields_edges_and_its_p():
    t = stats.bound_test("acc", [0.25] * 5, +1, 0.25, paper="0.3")
    assert (t.effect, t.estimate, t.low, t.passed, t.p, t.paper) == ("acc", 0.25, 0.25, False, 1.0, "0.3")
    below = stats.bound_test("acc", [0.25] * 5, -1, 0.25)  # on the bound is not past it, either way
    assert (below.high, below.passed, below.p, below.wants) == (0.25, False, 1.0, "< 0.25")
    straddle = stats.bound_test("acc", [0.5, 0.7, 0.6, 0.55, 0.65, 0.6], +1, 0.6)
    assert 0.3 < straddle.p < 0.7 and not straddle.passed  # about half the bootstrap means on each side
    assert stats.bound_test("acc", [0.61, None, 0.58, 0.63], +1, 0.5).estimate == pytest.approx(0.6067, abs=1e-4)
    two = stats.bound_test("acc", [0.9, 0.91], +1, 0.5)
    assert two.estimate == pytest.approx(0.905) and two.passed
    alone = stats.bound_test("acc", [0.9, np.nan], -1, 0.5, paper="p")
    assert (alone.effect, alone.paper, alone.wants, alone.p, alone.passed) == ("acc", "p", "< 0.5", 1.0, False)
    assert np.isnan(alone.estimate) and np.isnan(alone.low) and np.isnan(alone.high)


def test_holm_caps_at_one_passes_on_the_level_and_keeps_each_tests_numbers():
    tests = [stats.Test("a", 0.7, 0.5, 0.9, 0.0125, True, "> 0", "0.8")]
    tests += [stats.Test(name, 0.1, 0, 0.2, p, True, "> 0") for name, p in (("b", 0.6), ("c", 0.7), ("d", 0.8))]
    a, b, c, d = stats.holm(tests)
    assert (a.p, a.passed) == (0.05, True)  # 0.0125 · 4 = LEVEL: passes
    assert [t.p for t in (b, c, d)] == pytest.approx([1.0, 1.0, 0.8])  # 0.6 · 3 and 0.7 · 2 capped at 1
    assert (a.effect, a.estimate, a.low, a.high, a.paper) == ("a", 0.7, 0.5, 0.9, "0.8")


def test_learned_at_exactly_the_edge_is_not_learned_and_a_missing_chance_never_is():
    c, n = 0.5, 400
    edge = c + stats.Z_LEARNED * np.sqrt(c * (1 - c) / n)  # the same expression: the same float
    assert not stats.learned([edge], [c], [n])[0]
    assert list(stats.learned([0.9, 0.9], [None, 0.5], [100, 100])) == [False, True]  # a run stored before chance_acc
