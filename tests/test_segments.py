"""Segments no config names: worlds with a known weak segment, null worlds, and the statistics against SciPy."""
import json
import re

import numpy as np
import pandas as pd
import pytest
from scipy import optimize, stats as scipy_stats

from analysis.compare import compare
from analysis.segments import (SegmentEvidenceBuilder, benjamini_hochberg, judge_segments, paired_difference_interval,
                               paired_difference_z)
from steps.config import CompareConfig, ConfigError

CONFIG = CompareConfig(bootstrap_resamples=0, slices=())
CHANNELS = ["web", "mobile", "store", "partner"]


def classification_world(n=6000, seed=0, weak=None, better=0.0, identical=False, json_input=False):
    """Records with CSV (or JSON) inputs and a channel header; weak(inputs, channel) marks where the candidate slips.

    Outside the weak records production and candidate are right 85% of the time, with symmetric
    disagreements (5% each way), so the whole run's delta is about zero plus what weak and better add.
    """
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 6)).round(3)
    channel = rng.choice(CHANNELS, n, p=[0.45, 0.3, 0.15, 0.1])
    truth = rng.integers(0, 3, n)
    kind = rng.choice(4, n, p=[0.8, 0.1, 0.05, 0.05])  # both right, both wrong, production only, candidate only
    p_right = (kind == 0) | (kind == 2)
    c_right = p_right.copy() if identical else (kind == 0) | (kind == 3)
    c_right |= rng.random(n) < better
    if weak is not None:
        c_right &= ~(weak(x, channel) & (rng.random(n) < 0.3))
    p_label, c_label = np.where(p_right, truth, (truth + 1) % 3), np.where(c_right, truth, (truth + 2) % 3)
    if json_input:
        inputs = [json.dumps({"customer": {"country": ch, "age": float(r[0])}, "amount": r[1]})
                  for ch, r in zip(channel, x.tolist())]
        attributes = [None] * n
    else:
        inputs = [",".join(map(str, r)) for r in x.tolist()]
        attributes = [f"channel={ch};tenant=t{k % 3}" for k, ch in enumerate(channel)]
    return pd.DataFrame({"record_id": [f"e{k}:0" for k in range(n)], "input_text": inputs,
                         "custom_attributes": attributes, "production_label": p_label.astype(str),
                         "candidate_label": c_label.astype(str), "ground_truth_label": truth.astype(str),
                         "production_hash": p_label.astype(str), "candidate_hash": c_label.astype(str)})


def scan_of(frame, task="classification", config=CONFIG, parts=3):
    builder = SegmentEvidenceBuilder(config)
    for rows in np.array_split(np.arange(len(frame)), parts):
        builder.add(frame.iloc[rows])
    return builder.finish(task)


def overall_delta(frame):
    truth = frame["ground_truth_label"]
    return float((frame["candidate_label"] == truth).mean() - (frame["production_label"] == truth).mean())


@pytest.mark.parametrize("world, name", [
    (dict(weak=lambda x, ch: ch == "partner"), "attr:channel=partner"),
    (dict(weak=lambda x, ch: x[:, 2] > 1.3), r"col_2=>=1\.[23]\d*"),  # the top decile's edge, about 1.28
    (dict(weak=lambda x, ch: ch == "store", json_input=True), "customer.country=store"),
], ids=["custom-attribute", "csv-column-range", "json-field"])
def test_a_weak_segment_of_an_unnamed_feature_is_flagged_and_named(world, name):
    frame = classification_world(**world)
    assert overall_delta(frame) > -0.05  # the whole run stays within the margin
    scan = scan_of(frame)
    judgement = judge_segments(scan)
    assert judgement.passed is False and judgement.name == "segment_quality" and judgement.severity == "critical"
    assert re.fullmatch(name, scan.listed[0].name) and scan.listed[0].flagged
    assert re.match(f"{name}: accuracy -", judgement.reason) and "BH over" in judgement.reason
    weakest = scan.listed[0]
    assert weakest.ci_high < -0.05 and weakest.p_adjusted <= 0.05 and judgement.value == weakest.change
    assert judgement.threshold == -0.01  # the gate policy's accuracy margin


@pytest.mark.parametrize("world", [dict(identical=True), dict(better=0.2), dict()],
                         ids=["identical", "uniformly-better", "same-quality"])
def test_no_segment_is_flagged_when_no_segment_is_worse(world):
    scan = scan_of(classification_world(seed=3, **world))
    judgement = judge_segments(scan)
    assert scan.tested > 20 and scan.flagged == 0
    assert judgement.passed is True and "no segment credibly worse" in judgement.reason


def test_flags_under_the_null_stay_within_alpha_across_worlds():
    """Margin 0 and no segment different: every segment sits on its null, so any flag is a false one."""
    config = CompareConfig(bootstrap_resamples=0, slices=(), segment_accuracy_margin=0.0)
    runs_with_a_flag = 0
    for seed in range(30):
        scan = scan_of(classification_world(n=1200, seed=100 + seed), config=config, parts=1)
        assert scan.tested > 20
        runs_with_a_flag += scan.flagged > 0
    assert runs_with_a_flag <= 4  # alpha 0.05 over 30 runs: 1.5 expected, 4 is beyond 2 standard errors


def regression_world(n=4000, seed=0, weak_channel=None, factor=1.0):
    rng = np.random.default_rng(seed)
    truth = rng.normal(50, 10, n)
    channel = rng.choice(CHANNELS, n, p=[0.45, 0.3, 0.15, 0.1])
    production = truth + rng.normal(0, 2, n)
    candidate = truth + rng.normal(0, 2, n) * factor
    if weak_channel:
        weak = channel == weak_channel
        candidate[weak] = truth[weak] + rng.normal(0, 4, weak.sum())
    return pd.DataFrame({"input_text": [f"{a:.2f},{b}" for a, b in zip(rng.normal(size=n), rng.integers(0, 3, n))],
                         "custom_attributes": [json.dumps({"channel": ch}) for ch in channel],
                         "production_score": production, "candidate_score": candidate,
                         "ground_truth_label": [f"{t:.4f}" for t in truth]})


def test_regression_segment_with_a_larger_error_is_flagged_on_mae():
    frame = regression_world(weak_channel="partner")
    scan = scan_of(frame, "regression")
    judgement = judge_segments(scan)
    weakest = scan.listed[0]
    assert judgement.passed is False and weakest.name == "attr:channel=partner" and weakest.metric == "mae"
    assert weakest.candidate_quality > 1.5 * weakest.production_quality and weakest.change < -0.1
    assert judgement.reason.startswith("attr:channel=partner: MAE +")
    truth = frame["ground_truth_label"].astype(float)
    rows = frame["custom_attributes"].str.contains("partner").to_numpy()
    assert weakest.production_quality == pytest.approx(np.abs(frame["production_score"] - truth)[rows].mean())


@pytest.mark.parametrize("factor", [1.0, 0.5])
def test_regression_with_no_worse_segment_flags_nothing(factor):
    frame = regression_world(seed=5, factor=factor)
    if factor == 1.0:
        frame["candidate_score"] = frame["production_score"]
    scan = scan_of(frame, "regression")
    assert scan.tested > 5 and scan.flagged == 0 and judge_segments(scan).passed is True


def test_regression_test_statistic_matches_scipy_one_sample_t():
    frame = regression_world(n=800, seed=9)
    scan = scan_of(frame, "regression", config=CompareConfig(bootstrap_resamples=0, slices=(),
                                                             segment_mae_margin=0.0, min_slice_support=1))
    segment = next(e for e in scan.listed if e.name.startswith("attr:channel="))
    rows = frame["custom_attributes"].map(json.loads).map(lambda a: a["channel"]) == segment.segment
    truth = frame["ground_truth_label"].astype(float)[rows]
    difference = np.abs(frame["candidate_score"][rows] - truth) - np.abs(frame["production_score"][rows] - truth)
    reference = scipy_stats.ttest_1samp(difference, 0.0, alternative="greater")
    assert segment.p == pytest.approx(scipy_stats.norm.sf(reference.statistic), rel=1e-6)
    low, high = scipy_stats.norm.interval(0.95, difference.mean(), scipy_stats.sem(difference))
    assert (segment.ci_low, segment.ci_high) == pytest.approx((low, high), rel=1e-6)


def _restricted_mle_z(n, n12, n21, delta):
    """Tango's statistic from a numerically maximised likelihood under p12 - p21 = delta (the oracle)."""
    rest = n - n12 - n21

    def negative_log_likelihood(p21):
        return -(n12 * np.log(p21 + delta) + n21 * np.log(p21) + rest * np.log(1 - 2 * p21 - delta))
    low, high = max(0.0, -delta) + 1e-12, (1 - delta) / 2 - 1e-12
    p21 = optimize.minimize_scalar(negative_log_likelihood, bounds=(low, high), method="bounded",
                                   options={"xatol": 1e-13}).x
    return (n12 - n21 - n * delta) / np.sqrt(n * (2 * p21 + delta * (1 - delta)))


@pytest.mark.parametrize("n, n12, n21", [(100, 5, 12), (200, 30, 10), (50, 3, 9), (500, 40, 60), (80, 0, 7)])
def test_paired_score_statistic_and_interval_match_a_numerical_likelihood(n, n12, n21):
    for delta in (-0.1, -0.05, 0.02):
        assert paired_difference_z(n, n12, n21, delta) == pytest.approx(_restricted_mle_z(n, n12, n21, delta),
                                                                        rel=1e-5, abs=1e-6)
    z = scipy_stats.norm.ppf(0.975)
    low, high = paired_difference_interval(np.array([n]), np.array([n12]), np.array([n21]), z)
    estimate = (n12 - n21) / n
    lower = optimize.brentq(lambda d: _restricted_mle_z(n, n12, n21, d) - z, -0.999, estimate)
    upper = optimize.brentq(lambda d: _restricted_mle_z(n, n12, n21, d) + z, estimate, 0.999)
    assert low[0] == pytest.approx(lower, abs=1e-5) and high[0] == pytest.approx(upper, abs=1e-5)


def test_score_statistic_at_zero_is_mcnemars():
    for b, c in ((12, 5), (30, 31), (0, 4)):
        chi2 = (b - c) ** 2 / (b + c)
        assert paired_difference_z(300, c, b, 0.0) ** 2 == pytest.approx(chi2)


def test_paired_interval_covers_at_its_nominal_level():
    rng = np.random.default_rng(1)
    truth = np.array([0.7, 0.1, 0.12, 0.08])  # both right, both wrong, candidate only right, production only right
    n, runs = 150, 2000
    tables = rng.multinomial(n, truth, size=runs)
    low, high = paired_difference_interval(np.full(runs, n), tables[:, 2], tables[:, 3], scipy_stats.norm.ppf(0.975))
    coverage = np.mean((low <= 0.04) & (0.04 <= high))
    assert 0.93 <= coverage <= 0.97


def test_benjamini_hochberg_matches_scipy():
    p = np.random.default_rng(2).random(200) ** 3
    assert benjamini_hochberg(p) == pytest.approx(scipy_stats.false_discovery_control(p, method="bh"))


def test_parts_add_up_to_the_same_scan_and_every_record_is_in_one_segment_per_feature():
    frame = classification_world(n=3000, seed=4, weak=lambda x, ch: ch == "partner")
    frame.loc[frame.index[:40], "input_text"] = None  # no input: the missing segment of every column
    whole, split = scan_of(frame, parts=1), scan_of(frame, parts=7)
    assert whole == split
    builder = SegmentEvidenceBuilder(CompareConfig(bootstrap_resamples=0, slices=(), min_slice_support=1))
    builder.add(frame)
    scan = builder.finish("classification")
    assert scan.tested == scan.segments
    by_feature = {}
    for feature in builder._features.values():  # every feature's segments partition the records
        segments = feature.segments(builder._totals, 10, len(builder._patterns))
        by_feature[feature.name] = {label: int(counts.sum()) for label, counts, _ in segments}
    assert all(sum(counts.values()) == len(frame) for counts in by_feature.values())
    assert by_feature["col_0"]["missing"] == 40 and by_feature["attr:channel"]["missing"] == 0


def test_without_ground_truth_segments_are_informational():
    frame = classification_world(n=2000, seed=6).drop(columns="ground_truth_label")
    scan = scan_of(frame, task=None)
    judgement = judge_segments(scan)
    assert scan.metric == "label_flip_rate" and scan.margin is None and scan.flagged == 0
    assert scan.listed and all(e.p is None for e in scan.listed)
    assert judgement.passed is None and "no ground truth" in judgement.reason


def test_compare_puts_the_scan_on_the_comparison():
    frame = classification_world(n=4000, seed=7, weak=lambda x, ch: ch == "partner")
    comparison = compare(frame, CONFIG)
    assert comparison.segment_scan.listed[0].name == "attr:channel=partner"
    assert compare(frame, CompareConfig(bootstrap_resamples=0, slices=(), auto_segments=False)).segment_scan is None


def test_wide_inputs_keep_to_the_feature_cap():
    frame = classification_world(n=500, seed=8)
    scan = scan_of(frame, config=CompareConfig(bootstrap_resamples=0, slices=(), max_segment_features=4))
    assert scan.features == 4 and scan.features_skipped == 4


def test_a_column_with_a_few_non_numbers_is_still_binned():
    frame = classification_world(n=2000, seed=9)
    rows = frame["input_text"].str.split(",")
    frame["input_text"] = [",".join(["?"] + r[1:]) if k % 50 == 0 else ",".join(r) for k, r in enumerate(rows)]
    names = {e.name for e in scan_of(frame, config=CompareConfig(bootstrap_resamples=0, slices=(),
                                                                  min_slice_support=1)).listed}
    builder = SegmentEvidenceBuilder(CONFIG)
    builder.add(frame)
    builder.finish("classification")
    assert builder._features["col_0"].kind == "numeric" and names


@pytest.mark.parametrize("key, value", [("segment_bins", 1), ("segment_alpha", 1.5), ("segment_accuracy_margin", -0.1)])
def test_segment_settings_are_checked(key, value):
    with pytest.raises(ConfigError, match=key):
        CompareConfig(**{key: value})


def test_report_lists_the_weakest_segments_with_their_evidence():
    from analysis.gate import decide
    from analysis.report import build_report, render_html
    from analysis.results import Accounting
    from steps.config import GateConfig

    frame = classification_world(n=3000, seed=10, weak=lambda x, ch: ch == "partner")
    frame["custom_attributes"] = frame["custom_attributes"].str.replace("partner", "<b>partner</b>")
    comparison = compare(frame, CONFIG)
    report = build_report({"run_id": "r"}, Accounting(3000, 3000, 0), comparison,
                          decide(comparison, Accounting(3000, 3000, 0), GateConfig()))
    listed = report["weak_segments"]["listed"]
    assert listed[0]["name"] == "attr:channel=<b>partner</b>" and listed[0]["flagged"]
    assert json.dumps(report, allow_nan=False)
    page = render_html(report)
    assert "<h2>Weakest segments</h2>" in page and "Benjamini-Hochberg" in page
    assert "&lt;b&gt;partner" in page and "<b>partner" not in page


def _partition(builder):
    return {feature.name: sum(int(counts.sum()) for _, counts, _ in
                              feature.segments(builder._totals, 10, len(builder._patterns)))
            for feature in builder._features.values()}


def test_edges_fixed_from_a_sample_then_later_parts_and_later_kinds_still_partition_the_records(monkeypatch):
    import analysis.segments as segments
    monkeypatch.setattr(segments, "SAMPLE_RECORDS", 500)
    frame = classification_world(n=3000, seed=11)
    late = frame.index[2500:]
    frame.loc[late, "input_text"] = [t.replace(",", ",x", 1) for t in frame.loc[late, "input_text"]]  # col_1 text
    frame.loc[late[:100], "custom_attributes"] = "channel=web;region=eu"  # a key first seen late
    builder = SegmentEvidenceBuilder(CONFIG)
    for rows in np.array_split(np.arange(len(frame)), 6):
        builder.add(frame.iloc[rows])
    scan = builder.finish("classification")
    assert set(_partition(builder).values()) == {3000}
    assert builder._features["col_0"].kind == "numeric" and builder._features["col_1"].kind == "numeric"
    assert builder._features["attr:region"].kind == "categorical" and scan.tested > 20


def test_a_column_numeric_first_and_text_later_within_the_sample_stays_categorical():
    frame = classification_world(n=1000, seed=12)
    frame.loc[frame.index[500:], "input_text"] = [f"a{k % 4}," + t.split(",", 1)[1]
                                                   for k, t in enumerate(frame["input_text"][500:])]
    builder = SegmentEvidenceBuilder(CONFIG)
    builder.add(frame.iloc[:500])
    builder.add(frame.iloc[500:])
    builder.finish("classification")
    assert builder._features["col_0"].kind == "categorical" and set(_partition(builder).values()) == {1000}
