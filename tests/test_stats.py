"""The report's statistics against scipy and against brute-force enumeration."""
from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from scipy import stats as scipy_stats

from lossatlas import stats


def _data(n, seed, ties=False):
    generator = np.random.default_rng(seed)
    x = generator.integers(0, 3, n).astype(float) if ties else generator.standard_normal(n)
    return x, 0.5 * x + generator.standard_normal(n)


@pytest.mark.parametrize("ties", [False, True])
def test_kendall_and_spearman_equal_scipy(ties):
    for seed in range(5):
        x, y = _data(11, seed, ties)
        assert stats.kendall_tau(x, y) == pytest.approx(scipy_stats.kendalltau(x, y).statistic, abs=1e-12)
        assert stats.spearman_rho(x, y) == pytest.approx(scipy_stats.spearmanr(x, y).statistic, abs=1e-12)


def test_exact_kendall_p_equals_scipy_exact_without_ties():
    for n in range(3, 9):
        x, y = _data(n, n)
        test = stats.permutation_test(x, y, "kendall")
        assert test.exact and test.permutations == math.factorial(n)
        assert test.p == pytest.approx(scipy_stats.kendalltau(x, y, method="exact").pvalue, rel=1e-9)


@pytest.mark.parametrize("statistic, reference", [("kendall", scipy_stats.kendalltau),
                                                  ("spearman", scipy_stats.spearmanr)])
@pytest.mark.parametrize("ties", [False, True])
def test_exact_p_equals_brute_force_enumeration(statistic, reference, ties):
    for n in (3, 5, 7):
        x, y = _data(n, 10 + n, ties)
        if np.ptp(x) == 0:
            continue
        observed = reference(x, y).statistic
        hits = [abs(reference(x, y[list(order)]).statistic) >= abs(observed) - 1e-12
                for order in itertools.permutations(range(n))]
        test = stats.permutation_test(x, y, statistic)
        assert test.statistic == pytest.approx(observed, abs=1e-12)
        assert test.p == pytest.approx(np.mean(hits), abs=1e-12)


def test_a_perfect_order_of_four_has_p_one_twelfth_not_zero():
    test = stats.permutation_test([1, 2, 3, 4], [10, 20, 30, 40])
    assert test.statistic == 1.0 and test.p == pytest.approx(1 / 12)


def test_monte_carlo_p_is_seeded_never_zero_and_close_to_scipy():
    x, y = _data(14, 3)
    test = stats.permutation_test(x, y, "spearman", permutations=20_000, seed=1)
    again = stats.permutation_test(x, y, "spearman", permutations=20_000, seed=1)
    assert not test.exact and test.permutations == 20_000 and test.p == again.p
    reference = scipy_stats.permutation_test((x, y), lambda a, b: scipy_stats.spearmanr(a, b).statistic,
                                             permutation_type="pairings", n_resamples=9999,
                                             alternative="two-sided", random_state=np.random.default_rng(2))
    assert abs(test.p - reference.pvalue) < 0.025  # two Monte Carlo estimates of one p (se ~ 0.004)
    perfect = stats.permutation_test(np.arange(14), np.arange(14) ** 2, permutations=1000)
    assert perfect.p == pytest.approx(1 / 1001)


def test_holm_and_benjamini_hochberg_on_a_hand_computed_case():
    p = [0.01, 0.04, 0.03, 0.005, np.nan]
    # Holm: sorted 0.005 x4 = 0.02, 0.01 x3 = 0.03, 0.03 x2 = 0.06, 0.04 x1 = 0.04 -> monotone 0.06
    assert np.allclose(stats.holm(p), [0.03, 0.06, 0.06, 0.02, np.nan], equal_nan=True)
    # BH: 0.005 x4/1 = 0.02, 0.01 x4/2 = 0.02, 0.03 x4/3 = 0.04, 0.04 x4/4 = 0.04
    assert np.allclose(stats.benjamini_hochberg(p), [0.02, 0.04, 0.04, 0.02, np.nan], equal_nan=True)
    many = np.random.default_rng(0).random(30) ** 3
    assert np.allclose(stats.benjamini_hochberg(many), scipy_stats.false_discovery_control(many))


def test_bootstrap_interval_covers_the_true_mean_at_about_the_nominal_rate():
    generator = np.random.default_rng(0)
    covered = []
    for trial in range(200):
        sample = generator.normal(3.0, 2.0, 30)
        low, high = stats.bootstrap_ci([sample], lambda groups: groups[0].mean(axis=1), resamples=1000, seed=trial)
        covered.append(low <= 3.0 <= high)
    assert 0.88 <= np.mean(covered) <= 0.99  # percentile intervals run slightly short at n = 30


def test_bootstrap_resamples_within_groups_and_is_seeded():
    groups = [np.zeros(5), np.ones(5)]  # within-group resampling keeps each group's mean exactly
    assert stats.bootstrap_ci(groups, lambda g: g[1].mean(axis=1) - g[0].mean(axis=1), resamples=200) == (1.0, 1.0)
    data = [np.random.default_rng(1).standard_normal(8)]
    mean = lambda g: g[0].mean(axis=1)  # noqa: E731
    assert stats.bootstrap_ci(data, mean, seed=4) == stats.bootstrap_ci(data, mean, seed=4)
    assert stats.bootstrap_ci(data, mean, seed=4) != stats.bootstrap_ci(data, mean, seed=5)


def test_kendall_tau_of_many_rows_equals_scipy_row_by_row():
    generator = np.random.default_rng(3)
    x, y = generator.integers(0, 4, (50, 9)).astype(float), generator.integers(0, 4, (50, 9)).astype(float)
    x[0] = 1.0  # a constant row: undefined
    expected = [scipy_stats.kendalltau(a, b).statistic for a, b in zip(x, y)]
    assert np.allclose(stats.kendall_tau_rows(x, y), expected, equal_nan=True)


def test_granulated_tau_averages_per_axis_taus_with_the_other_axes_fixed():
    a, b = np.array([0, 0, 1, 1] * 2), np.array([0, 1, 0, 1] * 2)
    noise = np.repeat([0.1, -0.1], 4)  # two seeds per setting: averaged out
    target = a + 10 * b + noise
    measure = a - 10 * b - noise
    total, per_axis = stats.granulated_tau(measure, target, {"a": a, "b": b})
    assert per_axis == {"a": 1.0, "b": -1.0} and total == 0.0
    total, per_axis = stats.granulated_tau(target, target, {"a": a, "b": b, "c": np.zeros(8)})
    assert per_axis["a"] == per_axis["b"] == 1.0 and math.isnan(per_axis["c"]) and total == 1.0
    total, per_axis = stats.granulated_tau(np.full(8, np.nan), target, {"a": a, "b": b})
    assert math.isnan(total) and all(math.isnan(v) for v in per_axis.values())
    # Jiang et al. 2019's sign definition: a measure that does not move along an axis scores 0 there, not
    # "undefined" (which would let the one axis where it moves decide alone)
    total, per_axis = stats.granulated_tau(10 * b, target, {"a": a, "b": b})
    assert per_axis == {"a": 0.0, "b": 1.0} and total == 0.5


def test_cliffs_delta_equals_the_mann_whitney_u_statistic_rescaled():
    a, b = np.array([1.0, 2.0, 3.0, 7.0]), np.array([2.5, 4.0, 5.0])
    u = scipy_stats.mannwhitneyu(a, b).statistic
    assert stats.cliffs_delta(a, b) == pytest.approx(2 * u / (len(a) * len(b)) - 1)
    assert math.isnan(stats.cliffs_delta([], b))


def test_the_smallest_p_a_design_allows():
    levels = [0, 0, 0, 1, 1, 1]  # 3 seeds at each of two levels: C(6, 3) = 20 splits, 2 of them extreme
    test = stats.permutation_test(levels, [1, 2, 3, 7, 8, 9])
    assert test.p == test.p_min == pytest.approx(0.1)
    assert stats.permutation_test([0] * 4 + [1] * 4, np.arange(8)).p_min == pytest.approx(2 / 70)
    drawn = stats.permutation_test(np.arange(10), np.arange(10.0), permutations=1000)
    assert drawn.p_min <= drawn.p == pytest.approx(1 / 1001)  # Monte Carlo: never above p
    split = stats.permutation_test([0] * 7 + [1] * 7, np.arange(14), permutations=20_000)  # 7 + 7 levels
    assert split.p_min == pytest.approx(2 / 3432, rel=0.5)  # exact: 2 of C(14, 7) splits


def test_stratified_test_is_the_plain_test_for_one_stratum():
    generator = np.random.default_rng(5)
    x, y = generator.normal(size=7), generator.integers(0, 3, 7).astype(float)
    plain = stats.permutation_test(x, y, "kendall")
    blocked = stats.stratified_permutation_test(x, y, [0] * 7)
    assert blocked.statistic == pytest.approx(plain.statistic) and blocked.p == pytest.approx(plain.p)
    assert blocked.exact and blocked.permutations == math.factorial(7)


def test_stratified_test_of_a_consistent_effect_is_the_exact_sign_test():
    """Eight strata of two (a two-level factor, the others fixed): shuffling within strata is a fair
    coin per stratum, so agreement in all eight has two-sided p = 2 / 2^8 (the sign test), however
    much the strata differ from each other -- where the pooled tau dilutes it."""
    scale = np.repeat(10.0 ** np.arange(8), 2)  # strata spanning seven orders of magnitude
    level = np.tile([0.0, 1.0], 8)
    x = scale * (1 - 0.1 * level)  # the higher level is 10% lower in every stratum
    strata = np.repeat(np.arange(8), 2)
    blocked = stats.stratified_permutation_test(x, level, strata)
    assert blocked.statistic == -1.0 and blocked.p == pytest.approx(2 / 256) and blocked.exact
    assert stats.stratified_tau(x, level, strata) == -1.0
    assert stats.permutation_test(x, level, "kendall").p > 0.5  # pooled over the strata, nothing shows
    seven = x.copy()
    seven[1] = 2.0  # one stratum disagrees: p = 2 * (1 + 8) / 256
    assert stats.stratified_permutation_test(seven, level, strata).p == pytest.approx(18 / 256)
    drawn = stats.stratified_permutation_test(np.repeat(x, 3), np.repeat(level, 3), np.repeat(strata, 3),
                                              permutations=4000)
    assert not drawn.exact and drawn.statistic == -1.0 and drawn.p < 0.001


# -- the cluster is the unit ------------------------------------------------------------------------

def _clustered(variants, seeds, rng, correlation=0.0, spread=3.0):
    """Measure and error with per-variant offsets of sd ``spread`` (correlated ``correlation``
    across the two) plus unit seed noise: seeds of one variant share their variant's offset."""
    offsets = spread * rng.multivariate_normal([0, 0], [[1, correlation], [correlation, 1]], size=variants)
    measure = np.repeat(offsets[:, 0], seeds) + rng.standard_normal(variants * seeds)
    error = np.repeat(offsets[:, 1], seeds) + rng.standard_normal(variants * seeds)
    return measure, error, np.repeat(np.arange(variants), seeds)


@pytest.mark.parametrize("variants", [4, 8, 16])
def test_the_clustered_test_holds_its_level_where_seeds_as_observations_do_not(variants):
    """Independent per-variant offsets in measure and error, no association: the test on whole
    clusters rejects at most alpha (+ Monte Carlo error); permuting minima rejects far more."""
    rng = np.random.default_rng(variants)
    clustered, naive = [], []
    for _ in range(400):
        measure, error, clusters = _clustered(variants, 3, rng)
        clustered.append(stats.associate(measure, error, clusters, permutations=1000).p <= 0.05)
        naive.append(stats.permutation_test(measure, error, permutations=1000).p <= 0.05)
    assert np.mean(clustered) <= 0.06
    assert np.mean(naive) >= 0.12  # the pseudo-replicated test the report used before


@pytest.mark.parametrize("variants", [5, 8, 16])
@pytest.mark.parametrize("correlation", [0.0, 0.6])
def test_the_cluster_interval_covers_the_population_tau(variants, correlation):
    """The variant means are bivariate normal with correlation r' = r 9 / (9 + 1/3) (offset variance
    9, the mean of 3 seeds' noise 1/3), whose Kendall tau is 2/pi arcsin r' (Greiner's relation)."""
    rng = np.random.default_rng(100 + variants)
    truth = 2 / np.pi * np.arcsin(correlation * 9 / (9 + 1 / 3))
    covered = []
    for _ in range(400):
        measure, error, clusters = _clustered(variants, 3, rng, correlation)
        found = stats.associate(measure, error, clusters, permutations=200)
        assert found.ci_low <= found.tau <= found.ci_high and found.n_clusters == variants
        covered.append(found.ci_low <= truth <= found.ci_high)
    assert np.mean(covered) >= 0.93


def test_clustered_association_is_the_plain_test_on_the_cluster_means():
    rng = np.random.default_rng(5)
    measure, error, clusters = _clustered(7, 3, rng, 0.5)
    found = stats.associate(measure, error, clusters)
    means = [(measure[clusters == c].mean(), error[clusters == c].mean()) for c in range(7)]
    plain = stats.permutation_test(*np.array(means).T)
    assert (found.tau, found.p, found.exact) == (plain.statistic, plain.p, True)
    assert found.n_clusters == 7 and found.n_observations == 21
    assert found.tau == pytest.approx(scipy_stats.kendalltau(*np.array(means).T).statistic, abs=1e-12)
    few = stats.associate(measure[:12], error[:12], clusters[:12])  # 4 clusters: no valid interval
    assert math.isnan(few.ci_low) and "4 < 5" in few.note and not math.isnan(few.p)


def test_clustered_association_within_strata_and_its_errors():
    rng = np.random.default_rng(6)
    measure, error, clusters = _clustered(8, 2, rng, 0.7)
    strata = clusters % 2  # clusters 0, 2, 4, 6 in one stratum, 1, 3, 5, 7 in the other
    found = stats.associate(measure, error, clusters, strata)
    means = np.array([(measure[clusters == c].mean(), error[clusters == c].mean()) for c in range(8)])
    blocked = stats.stratified_permutation_test(means[:, 0], means[:, 1], np.arange(8) % 2)
    assert (found.tau, found.p) == (blocked.statistic, blocked.p) and "within strata" in found.test
    with pytest.raises(ValueError, match="spans strata"):
        stats.associate(measure, error, clusters, np.arange(16) % 2)
    with pytest.raises(ValueError, match="one entry per observation"):
        stats.associate(measure, error, clusters[:-1])


def test_a_factor_whose_levels_are_the_clusters_keeps_its_seeds_as_replicates():
    """Two variants, three seeds each: as cluster means no test; as a factor of the design the six
    observations are exchangeable under its null, and the test is the plain one over them."""
    measure, level, clusters = np.array([1.0, 2, 3, 7, 8, 9]), np.repeat([0.0, 1.0], 3), np.repeat([0, 1], 3)
    assert "2 clusters < 3" == stats.associate(measure, level, clusters).note  # not declared a factor
    found = stats.associate(measure, level, clusters, factor=True)
    plain = stats.permutation_test(measure, level)
    assert (found.tau, found.p, found.p_min, found.n_clusters, found.n_observations) == \
        (plain.statistic, plain.p, plain.p_min, 2, 6)
    assert found.p == pytest.approx(0.1) and "observations shuffled" in found.test
    rng = np.random.default_rng(9)  # a target that varies within clusters is never treated as a factor
    error = level + rng.normal(size=6)
    assert "clusters permuted" in stats.associate(measure, error, clusters, factor=True).test
