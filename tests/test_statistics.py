"""analysis.statistics against SciPy and scikit-learn as oracles."""
from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from scipy import stats as scipy_stats
from sklearn.metrics import roc_auc_score

from analysis import statistics as stats

RNG = np.random.default_rng(11)


@pytest.mark.parametrize("b, c", [(0, 0), (0, 5), (3, 9), (12, 12), (40, 61), (200, 170), (1, 0)])
def test_mcnemar_exact_is_a_two_sided_binomial_test(b, c):
    expected = 1.0 if b + c == 0 else scipy_stats.binomtest(min(b, c), b + c, 0.5).pvalue
    assert stats.mcnemar_exact(b, c) == pytest.approx(expected, rel=1e-9, abs=1e-15)
    assert stats.mcnemar_exact(b, c) == stats.mcnemar_exact(c, b)


@pytest.mark.parametrize("k, n, p", [(0, 10, 0.3), (4, 10, 0.5), (50, 400, 0.1), (9, 10, 0.9), (-1, 5, 0.5)])
def test_binomial_cdf_matches_scipy(k, n, p):
    assert stats.binomial_cdf(k, n, p) == pytest.approx(scipy_stats.binom.cdf(k, n, p), rel=1e-9, abs=1e-300)


@pytest.mark.parametrize("shift, n, m", [(0.0, 300, 300), (0.3, 500, 400), (1.0, 120, 80)])
def test_ks_statistic_and_asymptotic_p_value_match_scipy(shift, n, m):
    a, b = RNG.normal(0, 1, n), RNG.normal(shift, 1, m)
    d, p = stats.ks_2samp(a, b)
    oracle = scipy_stats.ks_2samp(a, b)
    assert d == pytest.approx(oracle.statistic, abs=1e-12)
    assert p == pytest.approx(scipy_stats.kstwobign.sf(math.sqrt(n * m / (n + m)) * d), rel=1e-6, abs=1e-12)
    assert p == pytest.approx(scipy_stats.ks_2samp(a, b, method="asymp").pvalue, abs=0.02)


def test_psi_is_the_symmetric_kl_divergence_of_the_bin_shares():
    expected, actual = RNG.normal(0, 1, 2000), RNG.normal(0.4, 1.2, 1500)
    edges = np.quantile(expected, np.linspace(0, 1, 11)[1:-1])
    e_share = np.histogram(expected, np.r_[-np.inf, edges, np.inf])[0] / expected.size
    a_share = np.histogram(actual, np.r_[-np.inf, edges, np.inf])[0] / actual.size
    oracle = scipy_stats.entropy(a_share, e_share) + scipy_stats.entropy(e_share, a_share)
    assert stats.psi(expected, actual, 10) == pytest.approx(oracle, rel=1e-6)
    assert stats.psi(expected, expected, 10) == pytest.approx(0.0, abs=1e-12)


def test_psi_floors_empty_bins_and_needs_data():
    assert math.isfinite(stats.psi([0.1, 0.2, 0.3, 0.4], [0.9, 0.9, 0.9], 4))
    assert stats.psi([], [1.0]) is None


@pytest.mark.parametrize("successes, trials", [(0, 20), (7, 20), (20, 20), (480, 500)])
def test_wilson_interval_matches_scipy(successes, trials):
    interval = stats.wilson_interval(successes, trials, 0.95)
    oracle = scipy_stats.binomtest(successes, trials).proportion_ci(0.95, method="wilson")
    assert (interval.low, interval.high) == pytest.approx((oracle.low, oracle.high), abs=1e-9)


def test_paired_bootstrap_interval_matches_scipy_percentile_bootstrap():
    production = (RNG.random(600) < 0.90).astype(float)
    candidate = np.where(RNG.random(600) < 0.9, production, 1 - production)
    columns = np.column_stack([production, candidate])
    ours = stats.bootstrap_interval(columns, lambda m: m[..., 1] - m[..., 0], 4000, 0.95, seed=3)
    oracle = scipy_stats.bootstrap((production, candidate), lambda p, c, axis=-1: c.mean(axis) - p.mean(axis),
                                   paired=True, vectorized=True, method="percentile", n_resamples=4000,
                                   confidence_level=0.95, random_state=5).confidence_interval
    assert ours.estimate == pytest.approx(candidate.mean() - production.mean())
    assert ours.low == pytest.approx(oracle.low, abs=0.006) and ours.high == pytest.approx(oracle.high, abs=0.006)


def test_bootstrap_is_seeded_and_paired():
    columns = RNG.random((50, 2))
    first = stats.bootstrap_means(columns, 200, seed=9)
    assert np.array_equal(first, stats.bootstrap_means(columns, 200, seed=9))
    assert not np.array_equal(first, stats.bootstrap_means(columns, 200, seed=10))
    same = np.column_stack([columns[:, 0], columns[:, 0]])  # paired: identical columns resample identically
    means = stats.bootstrap_means(same, 100, seed=1)
    assert np.array_equal(means[:, 0], means[:, 1])


def test_bootstrap_by_index_matches_the_means_version_for_a_mean():
    values = RNG.random(80)
    by_means = stats.bootstrap_interval(values, lambda m: m[..., 0], 500, 0.9, seed=4)
    by_index = stats.bootstrap_interval_by_index(80, lambda i: values[i].mean(), 500, 0.9, seed=4)
    assert by_index.estimate == pytest.approx(by_means.estimate)
    assert by_index.low == pytest.approx(by_means.low, abs=0.03) and by_index.high == pytest.approx(by_means.high,
                                                                                                    abs=0.03)


def test_bootstrap_of_nothing_or_one_record_has_no_interval():
    assert stats.bootstrap_interval(np.zeros((0, 1)), lambda m: m[..., 0], 100, 0.95, 1).estimate is None
    single = stats.bootstrap_interval(np.ones((1, 1)), lambda m: m[..., 0], 100, 0.95, 1)
    assert single.estimate == 1.0 and single.low is None


def _holm_by_definition(p):
    """Holm's step-down procedure as textbooks state it: reject p_(i) while p_(i) <= alpha / (m - i + 1)."""
    m = len(p)
    order = sorted(range(m), key=lambda i: p[i])
    adjusted = [0.0] * m
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[i]))
        adjusted[i] = running
    return adjusted


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(0, 1), min_size=1, max_size=25))
def test_holm_matches_the_step_down_procedure(p):
    assert stats.holm(p) == pytest.approx(_holm_by_definition(p))


def test_holm_on_a_worked_example():
    # Four tests at alpha 0.05: Holm rejects the two smallest (0.01*4 = 0.04, 0.012*3 = 0.036), not 0.04*2.
    adjusted = stats.holm([0.04, 0.01, 0.3, 0.012])
    assert adjusted == pytest.approx([0.08, 0.04, 0.3, 0.04])
    assert [a < 0.05 for a in adjusted] == [False, True, False, True]
    assert stats.holm([]) == []


@pytest.mark.parametrize("ties", [False, True])
def test_roc_auc_matches_sklearn(ties):
    truth = RNG.random(300) < 0.4
    score = RNG.random(300) + truth * 0.3
    if ties:
        score = np.round(score, 1)
    assert stats.roc_auc(truth, score) == pytest.approx(roc_auc_score(truth, score), abs=1e-12)
    assert stats.roc_auc(np.ones(3, bool), np.array([0.1, 0.2, 0.3])) is None


def test_average_ranks_match_scipy():
    values = np.array([3.0, 1.0, 3.0, 2.0, 3.0, 1.0])
    assert np.array_equal(stats.average_ranks(values), scipy_stats.rankdata(values))


@pytest.mark.parametrize("p", [1e-6, 0.01, 0.025, 0.3, 0.5, 0.9, 0.975, 0.999])
def test_normal_quantile_and_cdf_match_scipy(p):
    assert stats.normal_quantile(p) == pytest.approx(scipy_stats.norm.ppf(p), abs=1e-9)
    assert stats.normal_cdf(scipy_stats.norm.ppf(p)) == pytest.approx(p, abs=1e-12)


def test_one_sided_p_reads_the_interval_as_a_standard_error():
    # estimate 0.90, 95% interval +-0.0196 -> se 0.01; threshold 0.92 at_least: z = -2 -> p = Phi(-2).
    p = stats.one_sided_p(0.90, 0.8804, 0.9196, 0.95, 0.92, "at_least")
    assert p == pytest.approx(scipy_stats.norm.cdf(-2), rel=1e-3)
    assert stats.one_sided_p(0.90, 0.8804, 0.9196, 0.95, 0.88, "at_most") == pytest.approx(
        scipy_stats.norm.cdf(-2), rel=1e-3)
    assert stats.one_sided_p(0.5, 0.5, 0.5, 0.95, 0.6, "at_least") == 0.0
    assert stats.one_sided_p(0.5, None, None, 0.95, 0.6, "at_least") is None


@pytest.mark.parametrize("rows", [1, 2, 37, 2500])
def test_grouped_bootstrap_draws_the_same_resamples_without_the_matrix(rows):
    """Indicator columns given per group plus real-valued ones: the same means as bootstrap_means of the matrix."""
    from analysis.statistics import bootstrap_means, bootstrap_means_grouped, naive_mean

    rng = np.random.default_rng(rows)
    groups = rng.integers(0, 6, rows)
    group_values = (rng.random((6, 4)) < 0.5).astype(float)
    real = [rng.normal(size=rows), np.abs(rng.normal(size=rows)) * 1e3]
    matrix = np.column_stack([group_values[groups], *real])
    expected = bootstrap_means(matrix, 130, seed=11)
    got = bootstrap_means_grouped(groups, group_values, real, 130, seed=11)
    assert np.array_equal(got[:, :4], expected[:, :4])  # counts: exact integers
    assert np.allclose(got[:, 4:], expected[:, 4:], rtol=1e-12, atol=1e-12)  # sums in another order at most
    assert [naive_mean(column) for column in real] == list(matrix.mean(axis=0)[4:])  # the same additions
