"""Paired statistics in plain numpy: bootstrap intervals, McNemar's exact test, PSI, KS, Holm, Wilson.

Nothing here needs SciPy (the tests use SciPy and scikit-learn as oracles). Every random draw takes
an explicit seed, so a run re-judged later (regate) gets the same intervals from the same records.
"""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence

import numpy as np

# Bootstrap resamples are drawn in blocks of at most this many indices, to bound memory.
_BLOCK = 1_000_000
PSI_FLOOR = 1e-4
"""An empty bin counts as this share in PSI, so one empty bin does not make PSI infinite."""


@dataclasses.dataclass(frozen=True)
class Interval:
    """A point estimate and a two-sided interval at `confidence`; low/high None when it cannot be had."""

    estimate: float | None
    low: float | None
    high: float | None
    confidence: float
    method: str


def bootstrap_means(columns: np.ndarray, resamples: int, seed: int) -> np.ndarray:
    """Column means of `resamples` paired resamples of the rows: shape (resamples, columns).

    Rows are records; resampling whole rows keeps production and candidate paired. Each resample
    is drawn as row indices, turned into row counts, and the means are counts @ columns / rows.
    """
    columns = np.asarray(columns, dtype=float)
    if columns.ndim == 1:
        columns = columns[:, None]
    rows = columns.shape[0]
    rng = np.random.default_rng(seed)
    out = np.empty((resamples, columns.shape[1]))
    block = max(1, _BLOCK // max(rows, 1))
    for start in range(0, resamples, block):
        stop = min(start + block, resamples)
        size = stop - start
        picks = rng.integers(0, rows, size=(size, rows)) + rows * np.arange(size)[:, None]
        counts = np.bincount(picks.ravel(), minlength=size * rows).reshape(size, rows)
        out[start:stop] = counts @ columns / rows
    return out


def bootstrap_means_grouped(groups: np.ndarray, group_values: np.ndarray, columns: Sequence[np.ndarray],
                            resamples: int, seed: int) -> np.ndarray:
    """bootstrap_means of [group_values[groups], *columns] without building that rows x columns matrix.

    Indicator columns are functions of a record's group (a small integer: which labels, which flags),
    so their resampled sums are group counts @ group_values, exact integers. `columns` are the real-valued
    ones, one 1-D array each. The resamples are the very ones bootstrap_means draws from `seed` (same
    blocks, same draws); memory per block is that of bootstrap_means, nothing per record is widened.
    """
    groups = np.asarray(groups)
    group_values = np.asarray(group_values, dtype=float)  # groups x indicator columns
    rows = groups.shape[0]
    width = group_values.shape[1]
    out = np.empty((resamples, width + len(columns)))
    if rows == 0:
        out[:] = np.nan
        return out
    rng = np.random.default_rng(seed)
    block = max(1, _BLOCK // max(rows, 1))
    for start in range(0, resamples, block):
        stop = min(start + block, resamples)
        size = stop - start
        draws = rng.integers(0, rows, size=(size, rows))
        counts = None
        if width:
            picked = groups[draws]
            if size > 1:
                picked = picked + group_values.shape[0] * np.arange(size)[:, None]
            counts = np.bincount(picked.ravel(), minlength=size * group_values.shape[0])
            del picked
            out[start:stop, :width] = counts.reshape(size, -1) @ group_values / rows
        if columns:
            if size > 1:
                draws += rows * np.arange(size)[:, None]
            counts = np.bincount(draws.ravel(), minlength=size * rows).reshape(size, rows)
            del draws
            counts = counts.astype(float)  # as `@` would, once for every column
            for j, column in enumerate(columns):
                out[start:stop, width + j] = counts @ column / rows
        del counts
    return out


def naive_mean(values: np.ndarray, chunk: int = _BLOCK) -> float:
    """Mean by left-to-right summation (what ndarray.mean(axis=0) of a rows x columns matrix does per column)."""
    values = np.asarray(values, dtype=float)
    if values.size == 0:
        return math.nan
    total = 0.0
    for start in range(0, values.size, chunk):
        total = float(np.cumsum(np.concatenate(([total], values[start:start + chunk])))[-1])
    return total / values.size


def bootstrap_interval(columns: np.ndarray, statistic: Callable[[np.ndarray], np.ndarray], resamples: int,
                       confidence: float, seed: int) -> Interval:
    """Percentile interval of a statistic of column means (accuracy, F1, RMSE, kappa, their deltas).

    `statistic` maps an array (..., columns) of column means to (...) values; it is applied to the
    full sample for the estimate and to every resample for the interval. Resamples where the
    statistic is undefined (NaN) are dropped; fewer than half defined gives no interval.
    """
    columns = np.asarray(columns, dtype=float)
    if columns.ndim == 1:
        columns = columns[:, None]
    if columns.shape[0] == 0:
        return Interval(None, None, None, confidence, "bootstrap")
    estimate = float(statistic(columns.mean(axis=0)))
    if columns.shape[0] < 2 or resamples < 1:
        return Interval(_finite(estimate), None, None, confidence, "bootstrap")
    values = statistic(bootstrap_means(columns, resamples, seed))
    return _percentile(estimate, values, confidence, "bootstrap")


def bootstrap_interval_by_index(rows: int, statistic: Callable[[np.ndarray], float], resamples: int,
                                confidence: float, seed: int) -> Interval:
    """Percentile interval of a statistic that needs the records themselves (ROC AUC), resample by resample."""
    if rows == 0:
        return Interval(None, None, None, confidence, "bootstrap")
    estimate = statistic(np.arange(rows))
    if rows < 2 or resamples < 1:
        return Interval(_finite(estimate), None, None, confidence, "bootstrap")
    rng = np.random.default_rng(seed)
    values = np.array([statistic(rng.integers(0, rows, rows)) for _ in range(resamples)], dtype=float)
    return _percentile(estimate, values, confidence, "bootstrap")


def _percentile(estimate: float, values: np.ndarray, confidence: float, method: str) -> Interval:
    total = values.size
    values = values[np.isfinite(values)]
    if values.size == 0 or values.size * 2 < total:
        return Interval(_finite(estimate), None, None, confidence, method)
    tail = (1.0 - confidence) / 2.0
    low, high = np.quantile(values, [tail, 1.0 - tail])
    return Interval(_finite(estimate), float(low), float(high), confidence, method)


def wilson_interval(successes: int, trials: int, confidence: float) -> Interval:
    """Wilson score interval of a proportion (better than the normal one near 0 and 1)."""
    if trials == 0:
        return Interval(None, None, None, confidence, "wilson")
    z = normal_quantile(1.0 - (1.0 - confidence) / 2.0)
    p = successes / trials
    centre = (p + z * z / (2 * trials)) / (1 + z * z / trials)
    half = z / (1 + z * z / trials) * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials))
    return Interval(p, max(0.0, centre - half), min(1.0, centre + half), confidence, "wilson")


def mcnemar_exact(production_only_wrong: int, candidate_only_wrong: int) -> float:
    """Two-sided exact McNemar p-value from the discordant pairs (a binomial test at 1/2).

    production_only_wrong: records production got wrong and the candidate right; candidate_only_wrong
    the reverse. No discordant pairs gives p = 1.
    """
    b, c = int(production_only_wrong), int(candidate_only_wrong)
    n = b + c
    if n == 0:
        return 1.0
    return min(1.0, 2.0 * binomial_cdf(min(b, c), n, 0.5))


def binomial_cdf(k: int, n: int, p: float) -> float:
    """P(X <= k) for X ~ Binomial(n, p), summed in log space (stable for large n)."""
    if k < 0:
        return 0.0
    if k >= n:
        return 1.0
    ks = np.arange(k + 1)
    log_terms = (_log_choose(n, ks) + ks * math.log(p) + (n - ks) * math.log1p(-p))
    top = log_terms.max()
    return float(min(1.0, math.exp(top) * np.exp(log_terms - top).sum()))


def psi(expected: Sequence[float], actual: Sequence[float], bins: int = 10) -> float | None:
    """Population stability index of `actual` against `expected`, on quantile bins of `expected`.

    PSI = sum((a - e) * ln(a / e)) over bins, with empty bins counted as PSI_FLOOR. Rules of thumb:
    below 0.1 stable, 0.1 to 0.25 a moderate shift, above 0.25 a large one.
    """
    e_share, a_share = psi_shares(expected, actual, bins)
    if e_share is None:
        return None
    return float(np.sum((a_share - e_share) * np.log(a_share / e_share)))


def psi_shares(expected: Sequence[float], actual: Sequence[float], bins: int = 10) \
        -> tuple[np.ndarray | None, np.ndarray | None]:
    """The per-bin shares PSI compares (floored at PSI_FLOOR), bins from the quantiles of `expected`."""
    e, a = _finite_array(expected), _finite_array(actual)
    if e.size == 0 or a.size == 0:
        return None, None
    edges = np.unique(np.quantile(e, np.linspace(0, 1, bins + 1)[1:-1]))
    e_counts = np.bincount(np.searchsorted(edges, e, side="right"), minlength=edges.size + 1)
    a_counts = np.bincount(np.searchsorted(edges, a, side="right"), minlength=edges.size + 1)
    return (np.maximum(e_counts / e.size, PSI_FLOOR), np.maximum(a_counts / a.size, PSI_FLOOR))


def ks_2samp(first: Sequence[float], second: Sequence[float]) -> tuple[float | None, float | None]:
    """Two-sample Kolmogorov-Smirnov: the statistic D and its asymptotic two-sided p-value.

    D is exact; the p-value uses the Kolmogorov limit distribution at sqrt(n m / (n + m)) D, good
    for the sample sizes a shadow run has (hundreds and up), conservative-ish below that.
    """
    a, b = np.sort(_finite_array(first)), np.sort(_finite_array(second))
    if a.size == 0 or b.size == 0:
        return None, None
    d = 0.0
    for values in (a, b):  # the ECDFs differ most at one of the sample points; a block of them at a time
        for start in range(0, values.size, _BLOCK):
            block = values[start:start + _BLOCK]
            cdf_a = np.searchsorted(a, block, side="right") / a.size
            cdf_b = np.searchsorted(b, block, side="right") / b.size
            d = max(d, float(np.max(np.abs(cdf_a - cdf_b))))
    effective = a.size * b.size / (a.size + b.size)
    return d, kolmogorov_sf(math.sqrt(effective) * d)


def kolmogorov_sf(x: float) -> float:
    """P(K > x) for the Kolmogorov distribution: 2 * sum((-1)^(k-1) exp(-2 k^2 x^2))."""
    if x <= 0:
        return 1.0
    if x < 0.2:  # the alternating series converges slowly here and the tail is 1 to 15 digits
        return 1.0
    k = np.arange(1, 101)
    total = 2.0 * np.sum((-1.0) ** (k - 1) * np.exp(-2.0 * k * k * x * x))
    return float(min(1.0, max(0.0, total)))


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values (step-down, monotone, capped at 1), in the input order."""
    p = np.asarray(p_values, dtype=float)
    m = p.size
    if m == 0:
        return []
    order = np.argsort(p, kind="stable")
    scaled = np.minimum(1.0, (m - np.arange(m)) * p[order])
    adjusted = np.empty(m)
    adjusted[order] = np.maximum.accumulate(scaled)
    return [float(v) for v in adjusted]


def roc_auc(truth: np.ndarray, score: np.ndarray) -> float | None:
    """Area under the ROC curve for binary truth (True = positive), ties counted half (Mann-Whitney)."""
    truth = np.asarray(truth, dtype=bool)
    positives = int(truth.sum())
    negatives = truth.size - positives
    if positives == 0 or negatives == 0:
        return None
    ranks = average_ranks(np.asarray(score, dtype=float))
    return float((ranks[truth].sum() - positives * (positives + 1) / 2) / (positives * negatives))


def average_ranks(values: np.ndarray) -> np.ndarray:
    """1-based ranks, ties given their average rank."""
    order = np.argsort(values, kind="mergesort")
    ordered = values[order]
    starts = np.r_[0, np.flatnonzero(ordered[1:] != ordered[:-1]) + 1]
    ends = np.r_[starts[1:], ordered.size]
    averaged = np.repeat((starts + ends + 1) / 2.0, ends - starts)
    ranks = np.empty(values.size)
    ranks[order] = averaged
    return ranks


def normal_cdf(x: float) -> float:
    return 0.5 * math.erfc(-x / math.sqrt(2.0))


def normal_quantile(p: float) -> float:
    """Inverse standard normal CDF (Acklam's rational approximation, refined by one Newton step)."""
    if not 0.0 < p < 1.0:
        raise ValueError(f"normal_quantile needs 0 < p < 1, got {p}")
    a = (-3.969683028665376e+01, 2.209460984245205e+02, -2.759285104469687e+02, 1.383577518672690e+02,
         -3.066479806614716e+01, 2.506628277459239e+00)
    b = (-5.447609879822406e+01, 1.615858368580409e+02, -1.556989798598866e+02, 6.680131188771972e+01,
         -1.328068155288572e+01)
    c = (-7.784894002430293e-03, -3.223964580411365e-01, -2.400758277161838e+00, -2.549732539343734e+00,
         4.374664141464968e+00, 2.938163982698783e+00)
    d = (7.784695709041462e-03, 3.224671290700398e-01, 2.445134137142996e+00, 3.754408661907416e+00)
    low = 0.02425
    if p < low:
        q = math.sqrt(-2 * math.log(p))
        x = (((((c[0] * q + c[1]) * q + c[2]) * q + c[3]) * q + c[4]) * q + c[5]) / \
            ((((d[0] * q + d[1]) * q + d[2]) * q + d[3]) * q + 1)
    elif p > 1 - low:
        q = math.sqrt(-2 * math.log(1 - p))
        x = -(((((c[0] * q + c[1]) * q + c[2]) * q + c[3]) * q + c[4]) * q + c[5]) / \
            ((((d[0] * q + d[1]) * q + d[2]) * q + d[3]) * q + 1)
    else:
        q = p - 0.5
        r = q * q
        x = (((((a[0] * r + a[1]) * r + a[2]) * r + a[3]) * r + a[4]) * r + a[5]) * q / \
            (((((b[0] * r + b[1]) * r + b[2]) * r + b[3]) * r + b[4]) * r + 1)
    error = normal_cdf(x) - p
    return x - error * math.sqrt(2 * math.pi) * math.exp(x * x / 2)


def one_sided_p(estimate: float, low: float | None, high: float | None, confidence: float, threshold: float,
                direction: str) -> float | None:
    """p-value that the true value breaks `threshold`'s side, from an interval's implied standard error.

    H0: the requirement holds (value >= threshold for at_least, <= for at_most); a small p says the
    estimate is credibly on the wrong side. The standard error is the interval's half-width over z.
    """
    if low is None or high is None:
        return None
    z = normal_quantile(1.0 - (1.0 - confidence) / 2.0)
    se = (high - low) / (2.0 * z)
    gap = (estimate - threshold) if direction == "at_least" else (threshold - estimate)
    if se <= 0:
        return 0.0 if gap < 0 else 1.0
    return normal_cdf(gap / se)


def _log_choose(n: int, k: np.ndarray) -> np.ndarray:
    lgamma = np.vectorize(math.lgamma)
    return math.lgamma(n + 1) - lgamma(k + 1) - lgamma(n - k + 1)


def _finite_array(values: Sequence[float]) -> np.ndarray:
    array = np.asarray(values, dtype=float)
    return array[np.isfinite(array)]


def _finite(value: float | None) -> float | None:
    return None if value is None or not math.isfinite(value) else float(value)
