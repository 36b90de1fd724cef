"""Gate: a table of comparisons and configs and the decisions they must give; and the gate stage."""
from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st

from analysis.gate import (BUILTIN_CHECKS, CHECK_KINDS, DIRECTIONS, OUTCOMES, POLICY_RULES, SEVERITIES, STATUSES,
                           CheckResult, check_kinds, decide, minority_classes, non_inferiority)
from analysis.quarantine import OWNERS, REASONS, replay_failure_code
from analysis.results import Accounting, Comparison, MetricValue
from steps import gate as gate_step
from steps.backends.registry import LocalRegistry
from analysis.compare import compare
from steps.config import CompareConfig, Config, GateCheck, GateConfig

OK = Accounting(captured=1000, joined=995, quarantined=5, by_reason={"malformed_json": 5})
M = MetricValue
# A labelled classification run whose candidate is non-inferior, plus the metrics configured checks name.
METRICS = (
    M("label_agreement", 0.97, ci_low=0.96, ci_high=0.98, support=995),
    M("accuracy", 0.91, production=0.90, candidate=0.91, delta=0.01, ci_low=0.0, ci_high=0.02, support=995),
    M("score_abs_diff_mean", 0.02, support=995),
    M("psi", float("nan"), support=995),
    M("accuracy", 0.5, slice="hour=03", production=0.9, candidate=0.5, delta=-0.4, support=20),
    M("f1", 0.9, production=0.91, candidate=0.9, delta=-0.01, ci_low=-0.03, ci_high=0.01, support=995),
    M("real_difference_rate", 0.04, ci_low=0.03, ci_high=0.05, support=995),
    M("label_agreement", 0.97, slice="hour=01", ci_low=0.95, ci_high=0.99, support=300),
    M("label_agreement", 0.96, slice="hour=02", ci_low=0.94, ci_high=0.98, support=300),
    M("label_agreement", 0.80, slice="hour=03", ci_low=0.74, ci_high=0.86, support=100),
    M("candidate_answer_rate", 1.0, ci_low=0.996, ci_high=1.0, support=995),
)
FLIPS = {"0": {"0": 900, "1": 5}, "1": {"1": 90}}
COMPARISON = Comparison(METRICS, FLIPS, {"mean": 0.001}, has_ground_truth=True, task="classification")

BASE = GateConfig(min_records=100, min_coverage=0.99)


def gate(*checks: GateCheck, **kw) -> GateConfig:
    return GateConfig(min_records=kw.get("min_records", 100), min_coverage=kw.get("min_coverage", 0.99),
                      checks=checks)


def replaced(comparison: Comparison, *metrics: MetricValue, **fields) -> Comparison:
    """comparison with these metrics replacing those of the same name and slice (or added), and fields changed."""
    keys = {(m.name, m.slice) for m in metrics}
    kept = tuple(m for m in comparison.metrics if (m.name, m.slice) not in keys)
    return dataclasses.replace(comparison, metrics=kept + metrics, **fields)


def acc_delta(delta, low, high, slice="all", support=995, production=0.9):
    return M("accuracy", production + delta, slice=slice, production=production, candidate=production + delta,
             delta=delta, ci_low=low, ci_high=high, support=support)


def recall(label, support, delta, low, high):
    return M(f"class_recall:{label}", 0.8 + delta, production=0.8, candidate=0.8 + delta, delta=delta, ci_low=low,
             ci_high=high, support=support)


def mae(delta, low, high, production=2.0, slice="all", name="mae"):
    return M(name, production + delta, slice=slice, production=production, candidate=production + delta,
             delta=delta, ci_low=low, ci_high=high, support=500)


CLASSIFICATION = COMPARISON
REGRESSION = Comparison((mae(0.0, 0.0, 0.0), mae(0.0, -0.01, 0.01, name="rmse", production=2.5),
                         M("candidate_answer_rate", 1.0, ci_low=0.99, ci_high=1.0, support=995)),
                        {}, {"mean": 0.0}, has_ground_truth=True, task="regression",
                        distributions={"scatter": [[0.1, 0.1], [0.9, 0.9]]})
SCATTER = [[i / 100, i / 100] for i in range(100)]
NO_LABELS = Comparison((M("label_agreement", 1.0, ci_low=0.996, ci_high=1.0, support=995),
                        M("real_difference_rate", 0.0, ci_low=0.0, ci_high=0.0039, support=995),
                        M("replay_exact_match_rate", 0.99, ci_low=0.98, ci_high=1.0, support=995),
                        M("candidate_answer_rate", 1.0, ci_low=0.996, ci_high=1.0, support=995)),
                       {"0": {"0": 600}, "1": {"1": 395}}, {"mean": 0.0}, distributions={"scatter": SCATTER})


# id, comparison, accounting, gate config, expected status, expected outcome per check name (others pass)
CASES = [
    # -------- the accounting: whose loss a record is
    ("all_pass", COMPARISON, OK, gate(GateCheck("label_agreement", 0.95)), "Approved", {}),
    ("records_lost", COMPARISON, Accounting(1000, 992, 5, {"malformed_json": 5}), BASE, "Inconclusive",
     {"accounting_balanced": "fail"}),
    ("reasons_do_not_add_up", COMPARISON, Accounting(1000, 995, 5, {"malformed_json": 3}), BASE, "Inconclusive",
     {"accounting_balanced": "fail"}),
    ("too_few_records", COMPARISON, Accounting(50, 50, 0), BASE, "Inconclusive", {"min_records": "fail"}),
    ("nothing_captured", COMPARISON, Accounting(0, 0, 0), BASE, "Inconclusive",
     {"min_records": "fail", "candidate_coverage": "missing"}),
    ("candidate_failures_reject", COMPARISON, Accounting(1000, 980, 20, {"replay_file_failed": 20}), BASE,
     "Rejected", {"candidate_coverage": "fail"}),
    ("candidate_failed_everything", COMPARISON, Accounting(200, 0, 200, {"replay_file_failed": 200}), BASE,
     "Rejected", {"candidate_coverage": "fail", "min_records": "fail"}),
    ("evaluation_loss_is_inconclusive", COMPARISON, Accounting(1000, 980, 20, {"replay_output_missing": 20}), BASE,
     "Inconclusive", {"evaluation_loss": "fail"}),
    ("evaluation_loss_hides_candidate_failures", COMPARISON,
     Accounting(1000, 950, 50, {"replay_output_missing": 30, "replay_file_failed": 20}), BASE, "Inconclusive",
     {"evaluation_loss": "fail", "candidate_coverage": "fail"}),
    ("layout_mismatch_everywhere", COMPARISON, Accounting(500, 0, 500, {"replay_output_missing": 500}), BASE,
     "Inconclusive", {"evaluation_loss": "fail", "min_records": "fail", "candidate_coverage": "missing"}),
    ("unknown_code_is_the_evaluations", COMPARISON, Accounting(1000, 900, 100, {"a_code_from_the_future": 100}),
     BASE, "Inconclusive", {"evaluation_loss": "fail"}),
    ("bad_capture_is_excluded_and_reported", COMPARISON, Accounting(1000, 900, 100, {"malformed_json": 100}), BASE,
     "Approved", {"capture_loss": "fail"}),
    ("capture_spoiled_everything", COMPARISON, Accounting(100, 0, 100, {"not_utf8": 100}), BASE, "Inconclusive",
     {"min_records": "fail", "candidate_coverage": "missing", "capture_loss": "fail"}),
    # -------- with labels, classification: non-inferiority on accuracy, guards on slices and minority classes
    ("better_candidate_despite_low_agreement",
     replaced(COMPARISON, acc_delta(0.04, 0.02, 0.06), M("label_agreement", 0.88, ci_low=0.86, ci_high=0.9)),
     OK, gate(GateCheck("label_agreement", 0.95, severity="warning")), "Approved", {"label_agreement": "fail"}),
    ("credibly_worse", replaced(COMPARISON, acc_delta(-0.05, -0.07, -0.03)), OK, BASE, "Rejected",
     {"accuracy_non_inferior": "fail"}),
    ("interval_straddles_the_margin", replaced(COMPARISON, acc_delta(-0.01, -0.04, 0.02)), OK, BASE, "Inconclusive",
     {"accuracy_non_inferior": "undecided"}),
    ("accuracy_without_interval", replaced(COMPARISON, acc_delta(0.01, None, None)), OK, BASE, "Inconclusive",
     {"accuracy_non_inferior": "missing"}),
    ("accuracy_not_computed", replaced(COMPARISON, M("accuracy", None, support=0)), OK, BASE, "Inconclusive",
     {"accuracy_non_inferior": "missing"}),
    ("slice_credibly_worse", replaced(COMPARISON, acc_delta(-0.1, -0.14, -0.06, slice="channel=web", support=300)),
     OK, BASE, "Rejected", {"accuracy_per_slice": "fail"}),
    ("slice_noisy_but_not_credibly_worse",
     replaced(COMPARISON, acc_delta(-0.03, -0.09, 0.03, slice="channel=web", support=100)), OK, BASE, "Approved", {}),
    ("minority_class_loses_recall",
     replaced(COMPARISON, recall("0", 850, 0.0, -0.01, 0.01), recall("1", 145, -0.3, -0.4, -0.2)), OK, BASE,
     "Rejected", {"minority_class_recall": "fail"}),
    ("minority_class_within_noise",
     replaced(COMPARISON, recall("0", 850, 0.0, -0.01, 0.01), recall("1", 145, -0.02, -0.1, 0.06)), OK, BASE,
     "Approved", {}),
    ("balanced_classes_are_not_guarded",
     replaced(COMPARISON, recall("0", 500, 0.0, -0.01, 0.01), recall("1", 495, -0.3, -0.4, -0.2)), OK, BASE,
     "Approved", {}),
    # -------- with labels, regression: MAE non-inferiority relative to production's MAE
    ("regression_identical", REGRESSION, OK, BASE, "Approved", {}),
    ("regression_worse", replaced(REGRESSION, mae(0.5, 0.3, 0.7)), OK, BASE, "Rejected", {"mae_non_inferior": "fail"}),
    ("regression_straddles", replaced(REGRESSION, mae(0.05, -0.1, 0.2)), OK, BASE, "Inconclusive",
     {"mae_non_inferior": "undecided"}),
    ("regression_better", replaced(REGRESSION, mae(-0.2, -0.3, -0.1)), OK, BASE, "Approved", {}),
    ("regression_slice_worse", replaced(REGRESSION, mae(1.0, 0.7, 1.3, slice="region=eu")), OK, BASE, "Rejected",
     {"mae_per_slice": "fail"}),
    ("regression_rmse_only_warns", replaced(REGRESSION, mae(1.0, 0.8, 1.2, name="rmse", production=2.5)), OK, BASE,
     "Approved", {"rmse_non_inferior": "fail"}),
    ("regression_mae_missing", replaced(REGRESSION, M("mae", None)), OK, BASE, "Inconclusive",
     {"mae_non_inferior": "missing"}),
    # -------- without labels: equivalent approves, broken rejects, anything else awaits ground truth
    ("identical_without_labels", NO_LABELS, OK, BASE, "Approved", {}),
    ("different_without_labels",
     replaced(NO_LABELS, M("real_difference_rate", 0.2, ci_low=0.17, ci_high=0.23, support=995)), OK, BASE,
     "Inconclusive", {"equivalent_to_production": "fail"}),
    ("too_few_to_show_equivalence",
     replaced(NO_LABELS, M("real_difference_rate", 0.0, ci_low=0.0, ci_high=0.036, support=100)), OK, BASE,
     "Inconclusive", {"equivalent_to_production": "undecided"}),
    ("difference_rate_missing", replaced(NO_LABELS, M("real_difference_rate", None)), OK, BASE, "Inconclusive",
     {"equivalent_to_production": "missing"}),
    ("constant_label", replaced(NO_LABELS, M("real_difference_rate", 0.4, ci_low=0.37, ci_high=0.43, support=995),
                                flip_matrix={"0": {"1": 600}, "1": {"1": 395}}), OK, BASE, "Rejected",
     {"answers_collapsed": "fail", "equivalent_to_production": "fail"}),
    ("constant_score", replaced(NO_LABELS, M("real_difference_rate", 0.9, ci_low=0.88, ci_high=0.92, support=995),
                                distributions={"scatter": [[i / 100, 0.5] for i in range(100)]}), OK, BASE,
     "Rejected", {"answers_collapsed": "fail", "equivalent_to_production": "fail"}),
    ("inverted_labels", replaced(NO_LABELS, M("label_agreement", 0.02, ci_low=0.01, ci_high=0.03),
                                 M("real_difference_rate", 0.98, ci_low=0.97, ci_high=0.99, support=995)), OK,
     BASE, "Rejected", {"labels_agree": "fail", "equivalent_to_production": "fail"}),
    ("scores_gone", replaced(NO_LABELS, M("candidate_answer_rate", 0.0, ci_low=0.0, ci_high=0.004, support=995),
                             M("real_difference_rate", 1.0, ci_low=0.996, ci_high=1.0, support=995)), OK, BASE,
     "Rejected", {"candidate_answers": "fail", "equivalent_to_production": "fail"}),
    # -------- configured checks
    ("at_least_fails", OK, gate(GateCheck("label_agreement", 0.98)), "Rejected", {"label_agreement": "fail"}),
    ("at_least_boundary_passes", OK, gate(GateCheck("label_agreement", 0.97)), "Approved", {}),
    ("at_most_passes", OK, gate(GateCheck("score_abs_diff_mean", 0.05, "at_most")), "Approved", {}),
    ("at_most_fails", OK, gate(GateCheck("score_abs_diff_mean", 0.01, "at_most")), "Rejected",
     {"score_abs_diff_mean": "fail"}),
    ("at_most_boundary_passes", OK, gate(GateCheck("score_abs_diff_mean", 0.02, "at_most")), "Approved", {}),
    ("relative_passes", OK, gate(GateCheck("accuracy", -0.02, relative_to_production=True)), "Approved", {}),
    ("relative_fails", OK, gate(GateCheck("accuracy", 0.02, relative_to_production=True)), "Rejected",
     {"accuracy_delta": "fail"}),
    ("relative_at_most_fails", OK, gate(GateCheck("accuracy", -0.05, "at_most", relative_to_production=True)),
     "Rejected", {"accuracy_delta": "fail"}),
    ("relative_without_delta_is_missing", OK,
     gate(GateCheck("label_agreement", 0.0, relative_to_production=True)), "Inconclusive",
     {"label_agreement_delta": "missing"}),
    ("warning_fails_but_approves", OK,
     gate(GateCheck("label_agreement", 0.99, severity="warning", name="agreement_high")), "Approved",
     {"agreement_high": "fail"}),
    ("missing_metric_is_inconclusive", OK, gate(GateCheck("cohen_kappa", 0.8)), "Inconclusive",
     {"cohen_kappa": "missing"}),
    ("missing_required_metric_fails_the_run", OK, gate(GateCheck("cohen_kappa", 0.8, required=True)), "Inconclusive",
     {"cohen_kappa": "missing"}),
    ("missing_metric_warning_approves", OK, gate(GateCheck("cohen_kappa", 0.8, severity="warning")), "Approved",
     {"cohen_kappa": "missing"}),
    ("nan_metric_is_missing", OK, gate(GateCheck("psi", 0.2, "at_most")), "Inconclusive", {"psi": "missing"}),
    ("critical_and_warning", OK,
     gate(GateCheck("label_agreement", 0.99), GateCheck("score_abs_diff_mean", 0.01, "at_most", severity="warning")),
     "Rejected", {"label_agreement": "fail", "score_abs_diff_mean": "fail"}),
    ("warning_passes", OK, gate(GateCheck("label_agreement", 0.9, severity="warning")), "Approved", {}),
    ("non_inferiority_passes", OK, gate(GateCheck("f1", -0.05, relative_to_production=True, judge_on="interval")),
     "Approved", {}),
    ("non_inferiority_undecided_on_the_bound", OK,
     gate(GateCheck("f1", -0.02, relative_to_production=True, judge_on="interval")), "Inconclusive",
     {"f1_delta": "undecided"}),
    ("non_inferiority_fails_wholly_below", OK,
     gate(GateCheck("f1", 0.02, relative_to_production=True, judge_on="interval")), "Rejected",
     {"f1_delta": "fail"}),
    ("interval_at_most_passes", OK, gate(GateCheck("real_difference_rate", 0.06, "at_most", judge_on="interval")),
     "Approved", {}),
    ("interval_at_most_undecided_though_the_point_passes", OK,
     gate(GateCheck("real_difference_rate", 0.045, "at_most", judge_on="interval")), "Inconclusive",
     {"real_difference_rate": "undecided"}),
    ("interval_at_most_fails_wholly_above", OK,
     gate(GateCheck("real_difference_rate", 0.02, "at_most", judge_on="interval")), "Rejected",
     {"real_difference_rate": "fail"}),
    ("interval_missing_is_missing", OK, gate(GateCheck("score_abs_diff_mean", 0.01, judge_on="interval")),
     "Inconclusive", {"score_abs_diff_mean": "missing"}),
    ("relative_interval_on_a_value_interval_is_missing", OK,
     gate(GateCheck("real_difference_rate", 0.1, relative_to_production=True, judge_on="interval")), "Inconclusive",
     {"real_difference_rate_delta": "missing"}),
    ("slice_flags_a_bad_segment", OK, gate(GateCheck("label_agreement", 0.9, slices=True)), "Rejected",
     {"label_agreement per slice": "fail"}),
    ("slices_pass_when_none_is_credibly_bad", OK, gate(GateCheck("label_agreement", 0.79, slices=True)),
     "Approved", {}),
    ("slice_warning_approves", OK, gate(GateCheck("label_agreement", 0.9, slices=True, severity="warning")),
     "Approved", {"label_agreement per slice": "fail"}),
    ("slices_without_any_slice_are_missing", OK, gate(GateCheck("f1", 0.5, slices=True)), "Inconclusive",
     {"f1 per slice": "missing"}),
]
# Configured-check rows leave out the comparison: they judge COMPARISON.
CASES = [c if len(c) == 6 else (c[0], COMPARISON, *c[1:]) for c in CASES]


def configured_results(decision, config):
    """(configured check, result) pairs; a slice check gives two results (whole run, then per slice)."""
    results = [c for c in decision.checks if c.severity in ("critical", "warning")
               and c.name not in _BUILTIN_NAMES and c.name not in _POLICY_NAMES]
    pairs = []
    for check in config.checks:
        pairs.append((check, results.pop(0)))
        if check.slices:
            pairs.append((check, results.pop(0)))
    assert not results
    return pairs


_BUILTIN_NAMES = {b.name for b in BUILTIN_CHECKS}
_POLICY_NAMES = {r.name for r in POLICY_RULES}


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_decision(case):
    _, comparison, accounting, config, status, outcomes = case
    decision = decide(comparison, accounting, config)
    assert decision.status == status, decision.reasons
    assert [c.name for c in decision.checks[:len(BUILTIN_CHECKS)]] == [b.name for b in BUILTIN_CHECKS]
    names = {c.name for c in decision.checks}
    assert set(outcomes) <= names, set(outcomes) - names
    for check in decision.checks:
        assert check.outcome == outcomes.get(check.name, "pass"), check
        assert check.passed == (check.outcome == "pass")
        assert check.severity in SEVERITIES and check.reason
    assert decision.reasons
    if status == "Rejected":  # only evidence against the candidate rejects
        rejecting = [c for c in decision.checks if c.severity == "critical" and c.outcome == "fail"]
        assert rejecting and all(any(r.startswith(c.name) for r in decision.reasons) for c in rejecting)
    if status == "Approved":
        assert all(c.passed for c in decision.checks if c.severity != "warning")
    if accounting.joined < config.min_records:  # no evidence: only the accounting is judged
        assert names <= _BUILTIN_NAMES


def test_every_rule_has_a_case():
    """Each built-in check and policy rule passes somewhere and fails somewhere; every outcome, severity, status."""
    decisions = [(decide(comp, acc, cfg), cfg) for _, comp, acc, cfg, _, _ in CASES]
    results = [c for d, _ in decisions for c in d.checks]
    for name in _BUILTIN_NAMES - {"capture_loss"} | _POLICY_NAMES:
        assert any(c.name == name and c.passed for c in results), name
        assert any(c.name == name and not c.passed for c in results), name
    assert {"capture_loss"} <= {c.name for c in results if not c.passed}
    assert {c.outcome for c in results} == set(OUTCOMES)
    assert {c.severity for c in results} == set(SEVERITIES)
    assert {d.status for d, _ in decisions} == set(STATUSES)
    configured = [pair for d, cfg in decisions for pair in configured_results(d, cfg)
                  if d.checks[2].passed]  # min_records passed: configured checks were judged
    kinds = {(c.direction, c.relative_to_production, c.severity, r.passed) for c, r in configured}
    for direction in DIRECTIONS:
        for relative in (False, True):
            assert any(k[0] == direction and k[1] == relative and not k[3] for k in kinds), (direction, relative)
    assert {("critical", False), ("warning", False), ("critical", True)} <= {(k[2], k[3]) for k in kinds}


def test_every_check_kind_has_a_passing_and_a_failing_case():
    """A new kind of gate check (CHECK_KINDS) must come with cases here, or this fails."""
    seen = {(kind, result.passed) for _, comp, acc, cfg, _, _ in CASES if acc.joined >= cfg.min_records
            for check, result in configured_results(decide(comp, acc, cfg), cfg) for kind in check_kinds(check)}
    missing = [(kind, passed) for kind in CHECK_KINDS for passed in (True, False) if (kind, passed) not in seen]
    assert not missing, f"gate check kinds without a case: {missing}"


def test_required_check_missing_is_a_run_failure_not_a_verdict():
    decision = decide(COMPARISON, OK, gate(GateCheck("cohen_kappa", 0.8, required=True)))
    assert decision.status == "Inconclusive" and "required check cohen_kappa" in decision.run_failure
    assert decide(COMPARISON, OK, gate(GateCheck("cohen_kappa", 0.8))).run_failure is None


def test_reasons_say_what_evidence_is_missing():
    empty = decide(COMPARISON, Accounting(0, 0, 0), BASE)
    assert any("no captured records in the window" in r for r in empty.reasons)
    different = M("real_difference_rate", 0.2, ci_low=0.17, ci_high=0.23, support=995)
    waiting = decide(replaced(NO_LABELS, different), OK, BASE)
    assert waiting.reasons[0].startswith("equivalent_to_production: awaiting ground truth")
    assert waiting.task["task"] is None and "no ground truth" in waiting.task["why"]


def test_minority_classes_are_small_against_the_labels_and_an_even_split():
    ten = replaced(COMPARISON, *(recall(str(k), 99, 0.0, -0.1, 0.1) for k in range(10)),
                   recall("rare", 5, 0.0, -0.1, 0.1))
    small, why = minority_classes(ten, 0.2)
    assert [m.slice for m in small] == ["rare"] and "1 of 11 classes" in why
    binary = replaced(COMPARISON, recall("0", 850, 0, 0, 0), recall("1", 145, 0, 0, 0))
    assert [m.slice for m in minority_classes(binary, 0.2)[0]] == ["1"]


def test_non_inferiority_zones():
    margin = 0.01
    zone = {(low, high): non_inferiority("q", acc_delta((low + high) / 2, low, high), margin, True).outcome
            for low, high in ((-0.005, 0.02), (-0.05, -0.02), (-0.03, 0.01), (-0.011, -0.001))}
    assert zone == {(-0.005, 0.02): "pass", (-0.05, -0.02): "fail", (-0.03, 0.01): "undecided",
                    (-0.011, -0.001): "fail"}
    lower_is_better = non_inferiority("m", mae(0.02, -0.01, 0.09), 0.1, False)
    assert lower_is_better.outcome == "pass" and lower_is_better.value == 0.09


def test_slice_evidence_lists_every_slice_with_holm_adjusted_p_values():
    decision = decide(COMPARISON, OK, gate(GateCheck("label_agreement", 0.9, slices=True)))
    result = decision.checks[-1]
    assert result.judged_on == "slices" and [e["slice"] for e in result.slices] == ["hour=01", "hour=02", "hour=03"]
    flagged = [e["slice"] for e in result.slices if e["flagged"]]
    assert flagged == ["hour=03"] and "hour=03" in result.reason
    ps = [e["p"] for e in result.slices]
    assert min(ps) == ps[2] and result.slices[2]["p_holm"] == pytest.approx(3 * ps[2])
    assert result.to_json()["slices"][2]["flagged"] is True


def test_without_holm_a_marginal_slice_would_be_flagged():
    """Three slices each 1.9 standard errors below: alone each p < 0.05, Holm keeps family-wise error at 0.05."""
    metrics = tuple(MetricValue("label_agreement", 0.881, slice=f"s{i}", ci_low=0.881 - 0.0196,
                                ci_high=0.881 + 0.0196, support=500) for i in range(3)) + \
        (MetricValue("label_agreement", 0.95, support=1500),)
    comparison = Comparison(metrics, {}, {})
    result = decide(comparison, OK, gate(GateCheck("label_agreement", 0.9, slices=True))).checks[-1]
    assert all(e["p"] < 0.05 for e in result.slices) and not any(e["flagged"] for e in result.slices)
    assert result.passed


@given(captured=st.integers(0, 10_000), joined=st.integers(0, 10_000), quarantined=st.integers(0, 10_000))
def test_unbalanced_accounting_never_decides(captured, joined, quarantined):
    accounting = Accounting(captured, joined, quarantined, {"malformed_json": quarantined})
    lenient = GateConfig(min_records=1, min_coverage=0.0)
    decision = decide(COMPARISON, accounting, lenient)
    assert decision.approved == (captured == joined + quarantined and joined >= 1)
    if captured != joined + quarantined:
        assert decision.status == "Inconclusive"


@given(joined=st.integers(0, 99), candidate=st.integers(0, 50), evaluation=st.integers(0, 50))
def test_no_evidence_is_never_approved_and_lost_records_never_reject(joined, candidate, evaluation):
    accounting = Accounting(joined + candidate + evaluation, joined, candidate + evaluation,
                            {"replay_file_failed": candidate, "replay_output_missing": evaluation})
    decision = decide(COMPARISON, accounting, BASE)
    assert not decision.approved
    if candidate == 0:
        assert decision.status == "Inconclusive"


def test_evaluation_json_is_what_a_condition_step_reads():
    decision = decide(COMPARISON, OK, gate(GateCheck("accuracy", -0.02, relative_to_production=True),
                                          GateCheck("psi", 0.2, "at_most", severity="warning")))
    evaluation = json.loads(json.dumps(decision.to_evaluation(), allow_nan=False))
    assert evaluation["approved"] == 1 and evaluation["decision"] == "Approved"
    assert list(evaluation)[:5] == ["evaluation_version", "approved", "rejected", "inconclusive", "decision"]
    assert evaluation["evaluation_version"] == 3 and evaluation["rejected"] == evaluation["inconclusive"] == 0
    assert evaluation["failed_critical"] == 0 and evaluation["failed_warning"] == 1
    configured = {c["name"]: c for c in evaluation["checks"]}
    assert configured["accuracy_delta"] == {
        "name": "accuracy_delta", "metric": "accuracy", "value": 0.01, "threshold": -0.02,
        "direction": "at_least", "severity": "critical", "passed": True, "outcome": "pass",
        "reason": "accuracy delta vs production 0.01 >= -0.02", "judged_on": "point", "estimate": 0.01,
        "ci_low": 0.0, "ci_high": 0.02}
    assert configured["psi"]["value"] is None and configured["psi"]["outcome"] == "missing"
    assert configured["accuracy_non_inferior"]["outcome"] == "pass"
    assert evaluation["metrics"]["label_agreement"]["value"] == 0.97
    assert evaluation["metrics"]["accuracy"]["delta"] == 0.01  # the whole-run value, not the slice
    assert evaluation["metrics"]["psi"]["value"] is None
    assert evaluation["accounting"] == {"captured": 1000, "joined": 995, "quarantined": 5, "coverage": 0.995,
                                        "balanced": True, "by_reason": {"malformed_json": 5},
                                        "by_owner": {"capture": 5, "candidate": 0, "evaluation": 0},
                                        "candidate_coverage": 1.0, "evaluation_loss": 0.0}
    assert evaluation["task"]["task"] == "classification"
    assert evaluation["policy"]["accuracy_margin"] == 0.01 and evaluation["policy"]["equivalence_margin"] == 0.01
    inconclusive = decide(COMPARISON, Accounting(0, 0, 0), BASE).to_evaluation()
    assert (inconclusive["approved"], inconclusive["rejected"], inconclusive["inconclusive"]) == (0, 0, 1)
    assert inconclusive["decision"] == "Inconclusive"


def test_extra_checks_join_the_decision():
    segment = CheckResult("segment credit_band=low", "accuracy", -0.2, -0.01, "at_least", "critical", False, "fail",
                          "credibly worse")
    decision = decide(COMPARISON, OK, BASE, extra_checks=(segment,))
    assert decision.status == "Rejected" and decision.checks[-1] is segment


# ---------------------------------------------------------------- whose loss a record is

def test_every_quarantine_reason_has_an_owner():
    assert {r.owner for r in REASONS.values()} == set(OWNERS)
    assert all(r.owner in OWNERS for r in REASONS.values())


# The transformer's reasons for a file without .out, and whose failure each is (steps.transformer).
TRANSFORM_OWNERS = {"http_<status>": "candidate", "timeout": "candidate", "connection_error": "candidate",
                    "truncated_response": "candidate", "output_count_mismatch": "candidate",
                    "output_unparsable": "candidate", "unreadable_input": "evaluation", "invalid_job": "evaluation",
                    "record_too_large": "evaluation", "input_filter_failed": "evaluation",
                    "output_filter_failed": "evaluation"}


def test_every_transform_failure_is_attributed():
    from steps.transformer import FAILURE_REASONS

    assert set(TRANSFORM_OWNERS) == set(FAILURE_REASONS)
    for reason, owner in TRANSFORM_OWNERS.items():
        code = replay_failure_code(reason.replace("<status>", "503"))
        assert REASONS[code].owner == owner, reason
    assert REASONS[replay_failure_code(None)].owner == "evaluation"  # no .out where the join looks


def test_owners_split_the_quarantine():
    accounting = Accounting(100, 80, 20, {"malformed_json": 5, "replay_file_failed": 10, "replay_output_missing": 4,
                                          "something_new": 1})
    assert accounting.by_owner == {"capture": 5, "candidate": 10, "evaluation": 5}
    assert accounting.usable == 95 and accounting.candidate_coverage == 80 / 90
    assert accounting.evaluation_loss == 5 / 95


# ---------------------------------------------------------------- the gate stage

def _stage(tmp_path: Path, accounting: Accounting, status_at_start: str | None, *, change_to: str | None = None,
           register: bool = True):
    registry = LocalRegistry(tmp_path / "registry.sqlite")
    package = registry.register("fraud", "s3://bucket/model.tar.gz") if register else None
    if change_to:  # someone decides by hand while the run is going
        assert registry.set_status(package, "PendingManualApproval", change_to, "by hand", None)
    run_dir = tmp_path / "runs" / "r1"
    config = Config(gate=gate(GateCheck("label_agreement", 0.95)))
    decision = gate_step.run(config, run_dir, COMPARISON, accounting, registry, package, status_at_start, "r1")
    evaluation = json.loads((run_dir / "report" / "evaluation.json").read_text())
    return decision, evaluation, registry, package


@pytest.mark.parametrize("accounting, status", [(OK, "Approved"),
                                                (Accounting(1000, 900, 100, {"replay_file_failed": 100}), "Rejected")])
def test_stage_records_the_verdict(tmp_path, accounting, status):
    decision, evaluation, registry, package = _stage(tmp_path, accounting, "PendingManualApproval")
    assert decision.status == status == evaluation["decision"]
    assert evaluation["registry"]["updated"] is True and evaluation["registry"]["status_now"] == status
    info = registry.describe(package)
    assert info.status == status
    assert info.description.startswith(f"**{status}**") and len(info.description) <= 1024
    assert info.metadata["shadow_eval_run_id"] == "r1"
    assert info.metadata["shadow_eval_report"].endswith("runs/r1/report/report.html")
    assert registry.history(package)[-1].run_id == "r1"


@pytest.mark.parametrize("accounting, why", [
    (Accounting(10, 10, 0), "min_records"),
    (Accounting(1000, 500, 500, {"replay_output_missing": 500}), "evaluation_loss"),  # a layout mismatch
])
def test_stage_inconclusive_keeps_the_status_and_records_the_reasons(tmp_path, accounting, why):
    decision, evaluation, registry, package = _stage(tmp_path, accounting, "PendingManualApproval")
    assert decision.status == evaluation["decision"] == "Inconclusive" and evaluation["inconclusive"] == 1
    info = registry.describe(package)
    assert info.status == "PendingManualApproval" and evaluation["registry"]["status_now"] == "PendingManualApproval"
    assert info.description.startswith("**Inconclusive**") and why in info.description
    assert info.metadata["shadow_eval_decision"] == "Inconclusive"
    last = registry.history(package)[-1]
    assert (last.from_status, last.to_status, last.run_id) == ("PendingManualApproval", "PendingManualApproval", "r1")
    assert why in last.reason


def test_stage_with_a_required_metric_missing_fails_the_run_and_leaves_the_registry(tmp_path):
    registry = LocalRegistry(tmp_path / "registry.sqlite")
    package = registry.register("fraud", "s3://bucket/model.tar.gz")
    run_dir = tmp_path / "runs" / "r1"
    config = Config(gate=gate(GateCheck("cohen_kappa", 0.5, required=True)))
    with pytest.raises(gate_step.GateFailure, match="required check cohen_kappa"):
        gate_step.run(config, run_dir, COMPARISON, OK, registry, package, "PendingManualApproval", "r1")
    evaluation = json.loads((run_dir / "report" / "evaluation.json").read_text())
    assert evaluation["decision"] == "Inconclusive" and "cohen_kappa" in evaluation["run_failed"]
    assert len(registry.history(package)) == 1 and registry.describe(package).status == "PendingManualApproval"


def test_stage_leaves_a_package_decided_by_hand_alone(tmp_path, caplog):
    decision, evaluation, registry, package = _stage(tmp_path, OK, "PendingManualApproval", change_to="Rejected")
    assert decision.status == "Approved" and evaluation["approved"] == 1
    assert evaluation["registry"]["updated"] is False
    assert evaluation["registry"]["status_now"] == "Rejected"
    assert "since the run began" in evaluation["registry"]["note"]
    assert registry.describe(package).status == "Rejected"
    assert registry.describe(package).description == "by hand"
    assert "left it alone" in caplog.text


def test_stage_without_a_package_only_writes_evaluation(tmp_path):
    _, evaluation, registry, _ = _stage(tmp_path, OK, None, register=False)
    assert evaluation["registry"] == {"package_id": None, "status_at_start": None, "status_now": None,
                                      "updated": False, "note": "no candidate package; registry untouched"}
    assert registry.list_packages("fraud") == []
    assert not math.isnan(evaluation["accounting"]["coverage"])


# ---------------------------------------------------------------- through compare: replay noise and equivalence

def _noisy_world(rng, n: int, noise: float, shift: float = 0.0):
    """Joined records of a model whose every answer (captured, replayed, candidate) carries its own noise."""
    true = rng.random(n)
    p, r, c = (true + offset + rng.normal(0, noise, n) for offset in (0.0, 0.0, shift))
    answer = lambda x: [f'{{"score": {v:.6f}, "predicted_label": {int(v >= 0.5)}}}' for v in x]  # noqa: E731
    label = lambda x: (x >= 0.5).astype(int).astype(str)  # noqa: E731
    return pd.DataFrame({
        "record_id": [f"e{i}:0" for i in range(n)], "production_raw": answer(p), "candidate_raw": answer(c),
        "production_replay_raw": answer(r), "production_score": p.round(6), "candidate_score": c.round(6),
        "production_replay_score": r.round(6), "production_label": label(p), "candidate_label": label(c),
        "production_replay_label": label(r), "production_hash": [f"{v:.6f}" for v in p],
        "candidate_hash": [f"{v:.6f}" for v in c], "tolerant_match": np.abs(p - c) <= 1e-6,
        "noise_abs_diff": np.abs(r.round(6) - p.round(6))})


# records, production noise, candidate shift, samples, least approved, most approved
EQUIVALENCE = [
    ("deterministic_identical", 400, 0.0, 0.0, 30, 30, 30),
    ("nondeterministic_identical", 1500, 0.01, 0.0, 30, 29, 30),
    ("nondeterministic_too_few_records", 150, 0.01, 0.0, 10, 0, 0),
    ("nondeterministic_shifted_beyond_noise", 1500, 0.01, 0.03, 20, 0, 0),
]


@pytest.mark.parametrize("case", EQUIVALENCE, ids=[c[0] for c in EQUIVALENCE])
def test_equivalence_within_replay_noise(case):
    """No labels: an identical candidate is approved (the noise floor explains its differences); a changed one waits."""
    _, n, noise, shift, samples, least, most = case
    rng = np.random.default_rng(11)
    config = CompareConfig(bootstrap_resamples=0, slices=())
    statuses = [decide(compare(_noisy_world(rng, n, noise, shift), config), Accounting(n, n, 0),
                       GateConfig(min_records=100)).status for _ in range(samples)]
    assert least <= statuses.count("Approved") <= most
    assert "Rejected" not in statuses  # a different answer without labels is no evidence against the candidate
