"""The resampling statistics behind the claims (ssmpipe/report/stats.py): permutations stay within strata, ranks
share ties, tests hold their level on noise and find a clear effect, Holm corrects, the learning check is a
binomial test."""

import numpy as np

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
