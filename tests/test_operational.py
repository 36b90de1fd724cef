"""analysis.operational against numpy and SciPy: quantiles, the paired bootstrap, pairing, every declared metric."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats as scipy_stats

from analysis import statistics
from analysis.gate import judge_check
from analysis.operational import (
    OPERATIONAL_METRICS, Settings, compare_operational, pair, resample_counts, transform_job_metrics,
    weighted_quantile,
)
from steps.config import GateCheck

SETTINGS = Settings(resamples=2000, confidence=0.95, seed=11)


def frame(side: str, latency, records=None, outcome=None, errors=None, timeouts=None, lines=None,
          group: str = "csv") -> pd.DataFrame:
    """Invocation rows of one side: batch i is line i + 1 of file f<i // 10>."""
    n = len(latency)
    records = np.ones(n, dtype=int) if records is None else np.asarray(records)
    outcome = ["ok"] * n if outcome is None else outcome
    errors = np.zeros(n, dtype=int) if errors is None else np.asarray(errors)
    timeouts = np.zeros(n, dtype=int) if timeouts is None else np.asarray(timeouts)
    return pd.DataFrame({
        "side": side, "replay_group": group, "replay_file": [f"f{i // 10}" for i in range(n)],
        "first_line": [i % 10 + 1 for i in range(n)], "lines": 1 if lines is None else lines, "records": records,
        "payload_bytes": 100, "attempts": errors + (np.array(outcome) == "ok"), "retries": errors,
        "errors": errors, "timeouts": timeouts, "outcome": outcome,
        "latency_s": [None if o != "ok" else v for v, o in zip(latency, outcome)],
    })


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("q", [0.0, 0.5, 0.9, 0.99, 1.0])
def test_weighted_quantile_is_numpys_quantile_of_the_repeated_values(seed, q):
    rng = np.random.default_rng(seed)
    values = rng.lognormal(size=40)
    weights = rng.integers(0, 4, size=(5, 40))
    weights[0, :] = 1
    got = weighted_quantile(values, weights, q)
    expected = [np.quantile(np.repeat(values, row), q) for row in weights]
    assert got == pytest.approx(expected, rel=1e-12)


def test_weighted_quantile_of_no_weight_is_undefined():
    assert np.isnan(weighted_quantile(np.array([1.0, 2.0]), np.zeros((1, 2)), 0.5)).all()


def test_the_resamples_are_statistics_bootstrap_means_draws():
    """A rate from resample_counts equals the same rate from statistics.bootstrap_means with the same seed."""
    rng = np.random.default_rng(3)
    events, trials = rng.integers(0, 3, 50).astype(float), rng.integers(1, 5, 50).astype(float)
    ours = np.concatenate([(c @ events) / (c @ trials) for c in resample_counts(50, 300, seed=5)])
    means = statistics.bootstrap_means(np.column_stack([events, trials]), 300, seed=5)
    assert ours == pytest.approx(means[:, 0] / means[:, 1], rel=1e-12)


def test_each_resampled_ratio_is_the_ratio_of_the_resampled_quantiles():
    rng = np.random.default_rng(8)
    production = rng.lognormal(-5, 0.3, 60)
    candidate = production * rng.lognormal(0.1, 0.2, 60)
    records = rng.integers(1, 5, 60)
    result = compare_operational(pd.concat([frame("candidate", candidate, records), frame("production", production,
                                                                                           records)]), [], SETTINGS)
    metric = next(m for m in result.metrics if m.name == "p90_record_latency_ratio")
    # The point estimate, from numpy on records repeated.
    expected = (np.quantile(np.repeat(candidate / records, records), 0.9)
                / np.quantile(np.repeat(production / records, records), 0.9))
    assert metric.value == pytest.approx(expected, rel=1e-12)
    # And the interval, from the same resamples drawn as indices and computed by numpy.
    draw = np.random.default_rng(SETTINGS.seed)
    ratios = []
    for _ in range(SETTINGS.resamples):
        i = draw.integers(0, 60, 60)
        ratios.append(np.quantile(np.repeat(candidate[i] / records[i], records[i]), 0.9)
                      / np.quantile(np.repeat(production[i] / records[i], records[i]), 0.9))
    low, high = np.quantile(ratios, [0.025, 0.975])
    assert (metric.ci_low, metric.ci_high) == pytest.approx((low, high), rel=1e-9)


def test_the_paired_interval_agrees_with_scipys_paired_bootstrap():
    rng = np.random.default_rng(21)
    production = rng.lognormal(-5, 0.5, 400)
    candidate = production * 1.3 * rng.lognormal(0, 0.1, 400)
    result = compare_operational(pd.concat([frame("candidate", candidate), frame("production", production)]), [],
                                 Settings(4000, 0.95, 2))
    metric = next(m for m in result.metrics if m.name == "p50_latency_ratio")
    reference = scipy_stats.bootstrap((candidate, production), lambda c, p: np.median(c) / np.median(p),
                                      paired=True, vectorized=False, method="percentile", n_resamples=4000,
                                      confidence_level=0.95, rng=np.random.default_rng(5))
    # Different draws: equal up to Monte Carlo error.
    assert metric.ci_low == pytest.approx(reference.confidence_interval.low, rel=0.01)
    assert metric.ci_high == pytest.approx(reference.confidence_interval.high, rel=0.01)
    assert metric.ci_low < 1.3 < metric.ci_high


def test_pairing_keeps_only_batches_both_sides_sent_alike():
    candidate = frame("candidate", [0.01] * 20)
    production = frame("production", [0.01] * 20)
    production.loc[3, "lines"] = 2        # a different batch on production's side
    production = production.drop(index=[7])  # never sent by production
    x, y, counts = pair(candidate, production)
    assert counts == {"paired": 18, "unpaired_this_side": 2, "unpaired_production": 1, "both_answered": 18}
    assert len(x.records) == len(y.records) == 18


def test_failed_batches_count_as_failures_not_latencies():
    outcome = ["ok"] * 18 + ["http_500", "timeout"]
    candidate = frame("candidate", [0.02] * 20, outcome=outcome, errors=[0] * 18 + [4, 4], timeouts=[0] * 19 + [4])
    production = frame("production", [0.01] * 20)
    metrics = {m.name: m for m in compare_operational(pd.concat([candidate, production]), [], SETTINGS).metrics}
    assert metrics["failed_invocation_rate"].candidate == pytest.approx(2 / 20)
    assert metrics["error_rate"].candidate == pytest.approx(8 / (18 + 8))
    assert metrics["timeout_rate"].candidate == pytest.approx(4 / (18 + 8))
    assert metrics["error_rate"].delta == pytest.approx(8 / 26)
    assert metrics["p50_latency_ratio"].value == pytest.approx(2.0)
    assert metrics["p50_latency_ratio"].support == 18
    assert metrics["throughput_ratio"].value == pytest.approx(0.5)


def test_every_declared_metric_has_a_case():
    rng = np.random.default_rng(4)
    production = rng.lognormal(-5, 0.2, 30)
    rows = pd.concat([frame("candidate", production * 1.1), frame("production", production),
                      frame("production_repeat", production * rng.lognormal(0, 0.05, 30))])
    servers = [{"side": side, "group": "csv", "start_seconds": start, "peak_rss_bytes": rss, "external": False}
               for side, start, rss in (("candidate", 1.5, 200 * 2**20), ("production", 1.0, 150 * 2**20))]
    metrics = {m.name: m for m in compare_operational(rows, servers, SETTINGS).metrics}
    jobs = [{"side": side, "group": "csv", "duration_s": seconds, "model_latency_ms_avg": latency,
             "invocations": 100.0, "invocation_4xx_errors": 0.0, "invocation_5xx_errors": errors}
            for side, seconds, latency, errors in (("candidate", 300.0, 12.0, 2.0), ("production", 200.0, 8.0, 0.0))]
    metrics |= {m.name: m for m in transform_job_metrics(jobs)}
    assert set(metrics) == set(OPERATIONAL_METRICS)
    assert metrics["transform_duration_ratio"].value == pytest.approx(1.5)
    assert metrics["transform_model_latency_ratio"].value == pytest.approx(1.5)
    assert metrics["transform_error_rate"].delta == pytest.approx(0.02)
    assert metrics["server_peak_rss_mb"].delta == pytest.approx(50.0)
    assert metrics["server_start_seconds"].value == 1.5
    assert metrics["p50_latency_ratio"].value == pytest.approx(1.1)
    assert metrics["replay_p50_latency_ratio"].support == 30


def test_without_production_only_the_candidates_own_rates_exist():
    candidate = frame("candidate", [0.01] * 10, outcome=["ok"] * 9 + ["http_500"], errors=[0] * 9 + [4])
    metrics = {m.name: m for m in compare_operational(candidate, [], SETTINGS).metrics}
    assert set(metrics) == {"error_rate", "timeout_rate", "failed_invocation_rate"}
    assert metrics["error_rate"].value == pytest.approx(4 / 13) and metrics["error_rate"].delta is None
    relative = judge_check(GateCheck("error_rate", 0.001, "at_most", True, "warning"), metrics["error_rate"])
    assert relative.outcome == "missing"


@pytest.mark.parametrize("check, outcome", [
    (GateCheck("p50_latency_ratio", 1.3, "at_most"), "pass"),
    # the estimate meets 1.3 but the upper bound is above it: the interval cannot tell yet
    (GateCheck("p50_latency_ratio", 1.3, "at_most", judge_on="interval"), "undecided"),
    (GateCheck("p50_latency_ratio", 1.05, "at_most"), "fail"),
    (GateCheck("throughput_ratio", 0.6, "at_least", judge_on="interval"), "pass"),
    (GateCheck("error_rate", 0.001, "at_most", relative_to_production=True), "pass"),
])
def test_configured_checks_judge_operational_metrics(check, outcome):
    rng = np.random.default_rng(9)
    production = rng.lognormal(-5, 0.4, 50)
    rows = pd.concat([frame("candidate", production * 1.2 * rng.lognormal(0, 0.3, 50)),
                      frame("production", production)])
    metrics = {m.name: m for m in compare_operational(rows, [], SETTINGS).metrics}
    result = judge_check(check, metrics[check.metric])
    assert result.outcome == outcome, result.reason
