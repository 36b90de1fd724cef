"""Gate: a table of comparisons and configs and the decisions they must give; and the gate stage."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from analysis.gate import BUILTIN_CHECKS, CHECK_KINDS, DIRECTIONS, OUTCOMES, check_kinds, decide
from analysis.results import Accounting, Comparison, MetricValue
from steps import gate as gate_step
from steps.backends.registry import LocalRegistry
from steps.config import Config, GateCheck, GateConfig

OK = Accounting(captured=1000, joined=995, quarantined=5, by_reason={"malformed_json": 5})
METRICS = (
    MetricValue("label_agreement", 0.97, support=995),
    MetricValue("accuracy", 0.91, production=0.92, candidate=0.91, delta=-0.01, support=995),
    MetricValue("score_abs_diff_mean", 0.02, support=995),
    MetricValue("psi", float("nan"), support=995),
    MetricValue("accuracy", 0.5, slice="hour=03", production=0.9, candidate=0.5, delta=-0.4, support=20),
    MetricValue("f1", 0.9, production=0.91, candidate=0.9, delta=-0.01, ci_low=-0.03, ci_high=0.01, support=995),
    MetricValue("real_difference_rate", 0.04, ci_low=0.03, ci_high=0.05, support=995),
    MetricValue("label_agreement", 0.97, slice="hour=01", ci_low=0.95, ci_high=0.99, support=300),
    MetricValue("label_agreement", 0.96, slice="hour=02", ci_low=0.94, ci_high=0.98, support=300),
    MetricValue("label_agreement", 0.80, slice="hour=03", ci_low=0.74, ci_high=0.86, support=100),
)
COMPARISON = Comparison(METRICS, {"0": {"0": 900, "1": 5}, "1": {"1": 90}}, {"mean": 0.001})

BASE = GateConfig(min_records=100, min_coverage=0.99)


def gate(*checks: GateCheck, **kw) -> GateConfig:
    return GateConfig(min_records=kw.get("min_records", 100), min_coverage=kw.get("min_coverage", 0.99),
                      checks=checks)


# id, accounting, gate config, expected status, expected outcome per check name (others must pass)
CASES = [
    ("all_pass", OK, gate(GateCheck("label_agreement", 0.95)), "Approved", {}),
    ("records_lost", Accounting(1000, 992, 5, {"malformed_json": 5}), BASE, "Rejected",
     {"accounting_balanced": "fail"}),
    ("reasons_do_not_add_up", Accounting(1000, 995, 5, {"malformed_json": 3}), BASE, "Rejected",
     {"accounting_balanced": "fail"}),
    ("too_few_records", Accounting(50, 50, 0), BASE, "Rejected", {"min_records": "fail"}),
    ("coverage_low", Accounting(1000, 980, 20, {"replay_file_failed": 20}), BASE, "Rejected",
     {"min_coverage": "fail"}),
    ("nothing_captured", Accounting(0, 0, 0), gate(min_records=0), "Rejected", {"min_coverage": "fail"}),
    ("at_least_fails", OK, gate(GateCheck("label_agreement", 0.98)), "Rejected", {"label_agreement": "fail"}),
    ("at_least_boundary_passes", OK, gate(GateCheck("label_agreement", 0.97)), "Approved", {}),
    ("at_most_passes", OK, gate(GateCheck("score_abs_diff_mean", 0.05, "at_most")), "Approved", {}),
    ("at_most_fails", OK, gate(GateCheck("score_abs_diff_mean", 0.01, "at_most")), "Rejected",
     {"score_abs_diff_mean": "fail"}),
    ("at_most_boundary_passes", OK, gate(GateCheck("score_abs_diff_mean", 0.02, "at_most")), "Approved", {}),
    ("relative_passes", OK, gate(GateCheck("accuracy", -0.02, relative_to_production=True)), "Approved", {}),
    ("relative_fails", OK, gate(GateCheck("accuracy", 0.0, relative_to_production=True)), "Rejected",
     {"accuracy_delta": "fail"}),
    ("relative_at_most_fails", OK, gate(GateCheck("accuracy", -0.05, "at_most", relative_to_production=True)),
     "Rejected", {"accuracy_delta": "fail"}),
    ("relative_without_delta_is_missing", OK,
     gate(GateCheck("label_agreement", 0.0, relative_to_production=True)), "Rejected",
     {"label_agreement_delta": "missing"}),
    ("warning_fails_but_approves", OK,
     gate(GateCheck("label_agreement", 0.99, severity="warning", name="agreement_high")), "Approved",
     {"agreement_high": "fail"}),
    ("missing_metric_rejects", OK, gate(GateCheck("cohen_kappa", 0.8)), "Rejected", {"cohen_kappa": "missing"}),
    ("missing_metric_warning_approves", OK, gate(GateCheck("cohen_kappa", 0.8, severity="warning")), "Approved",
     {"cohen_kappa": "missing"}),
    ("nan_metric_is_missing", OK, gate(GateCheck("psi", 0.2, "at_most")), "Rejected", {"psi": "missing"}),
    ("critical_and_warning", OK,
     gate(GateCheck("label_agreement", 0.99), GateCheck("score_abs_diff_mean", 0.01, "at_most", severity="warning")),
     "Rejected", {"label_agreement": "fail", "score_abs_diff_mean": "fail"}),
    ("warning_passes", OK, gate(GateCheck("label_agreement", 0.9, severity="warning")), "Approved", {}),
    # non-inferiority: the lower bound of candidate - production must clear -margin
    ("non_inferiority_passes", OK, gate(GateCheck("f1", -0.05, relative_to_production=True, judge_on="interval")),
     "Approved", {}),
    ("non_inferiority_fails_on_the_bound", OK,
     gate(GateCheck("f1", -0.02, relative_to_production=True, judge_on="interval")), "Rejected",
     {"f1_delta": "fail"}),
    ("interval_at_most_passes", OK, gate(GateCheck("real_difference_rate", 0.06, "at_most", judge_on="interval")),
     "Approved", {}),
    ("interval_at_most_fails_though_the_point_passes", OK,
     gate(GateCheck("real_difference_rate", 0.045, "at_most", judge_on="interval")), "Rejected",
     {"real_difference_rate": "fail"}),
    ("interval_missing_is_missing", OK, gate(GateCheck("label_agreement", 0.9, judge_on="interval")), "Rejected",
     {"label_agreement": "missing"}),
    ("relative_interval_on_a_value_interval_is_missing", OK,
     gate(GateCheck("real_difference_rate", 0.1, relative_to_production=True, judge_on="interval")), "Rejected",
     {"real_difference_rate_delta": "missing"}),
    # slices: the whole run passes, one hour is credibly bad
    ("slice_flags_a_bad_segment", OK, gate(GateCheck("label_agreement", 0.9, slices=True)), "Rejected",
     {"label_agreement per slice": "fail"}),
    ("slices_pass_when_none_is_credibly_bad", OK, gate(GateCheck("label_agreement", 0.79, slices=True)),
     "Approved", {}),
    ("slice_warning_approves", OK, gate(GateCheck("label_agreement", 0.9, slices=True, severity="warning")),
     "Approved", {"label_agreement per slice": "fail"}),
    ("slices_without_any_slice_are_missing", OK, gate(GateCheck("f1", 0.5, slices=True)), "Rejected",
     {"f1 per slice": "missing"}),
]


def configured_results(decision, config):
    """(configured check, result) pairs; a slice check gives two results (whole run, then per slice)."""
    results = list(decision.checks[len(BUILTIN_CHECKS):])
    pairs = []
    for check in config.checks:
        pairs.append((check, results.pop(0)))
        if check.slices:
            pairs.append((check, results.pop(0)))
    assert not results
    return pairs


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_decision(case):
    _, accounting, config, status, outcomes = case
    decision = decide(COMPARISON, accounting, config)
    assert decision.status == status
    assert [c.name for c in decision.checks[:len(BUILTIN_CHECKS)]] == [b.name for b in BUILTIN_CHECKS]
    assert len(decision.checks) == len(BUILTIN_CHECKS) + len(config.checks) + sum(c.slices for c in config.checks)
    for check in decision.checks:
        assert check.outcome == outcomes.get(check.name, "pass"), check
        assert check.passed == (check.outcome == "pass")
        assert check.reason
    failed_critical = [c for c in decision.checks if not c.passed and c.severity == "critical"]
    assert bool(failed_critical) == (status == "Rejected")
    for check in failed_critical:
        assert any(r.startswith(check.name) for r in decision.reasons)


def test_every_rule_has_a_case():
    """Each built-in check fails somewhere in CASES; each configured kind appears in CASES."""
    decisions = [(decide(COMPARISON, acc, cfg), cfg) for _, acc, cfg, _, _ in CASES]
    failed = {c.name for d, _ in decisions for c in d.checks if not c.passed}
    assert {b.name for b in BUILTIN_CHECKS} <= failed
    configured = [pair for d, cfg in decisions for pair in configured_results(d, cfg)]
    assert {result.outcome for _, result in configured} == set(OUTCOMES)
    kinds = {(c.direction, c.relative_to_production, c.severity, r.passed) for c, r in configured}
    for direction in DIRECTIONS:
        for relative in (False, True):
            assert any(k[0] == direction and k[1] == relative and not k[3] for k in kinds), (direction, relative)
    assert {("critical", False), ("warning", False), ("critical", True)} <= {(k[2], k[3]) for k in kinds}


def test_every_check_kind_has_a_passing_and_a_failing_case():
    """A new kind of gate check (CHECK_KINDS) must come with cases here, or this fails."""
    seen = {(kind, result.passed) for _, acc, cfg, _, _ in CASES
            for check, result in configured_results(decide(COMPARISON, acc, cfg), cfg) for kind in check_kinds(check)}
    missing = [(kind, passed) for kind in CHECK_KINDS for passed in (True, False) if (kind, passed) not in seen]
    assert not missing, f"gate check kinds without a case: {missing}"


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
def test_unbalanced_accounting_never_approves(captured, joined, quarantined):
    accounting = Accounting(captured, joined, quarantined, {"malformed_json": quarantined})
    lenient = GateConfig(min_records=0, min_coverage=0.0)
    decision = decide(COMPARISON, accounting, lenient)
    assert decision.approved == (captured == joined + quarantined)


def test_evaluation_json_is_what_a_condition_step_reads():
    decision = decide(COMPARISON, OK, gate(GateCheck("accuracy", -0.02, relative_to_production=True),
                                          GateCheck("psi", 0.2, "at_most", severity="warning")))
    evaluation = json.loads(json.dumps(decision.to_evaluation(), allow_nan=False))
    assert evaluation["approved"] == 1 and evaluation["decision"] == "Approved"
    assert list(evaluation)[:3] == ["evaluation_version", "approved", "decision"]
    assert evaluation["failed_critical"] == 0 and evaluation["failed_warning"] == 1
    assert evaluation["checks"][3] == {
        "name": "accuracy_delta", "metric": "accuracy", "value": -0.01, "threshold": -0.02,
        "direction": "at_least", "severity": "critical", "passed": True, "outcome": "pass",
        "reason": "accuracy delta vs production -0.01 >= -0.02", "judged_on": "point", "estimate": -0.01,
        "ci_low": None, "ci_high": None}
    assert evaluation["checks"][4]["value"] is None and evaluation["checks"][4]["outcome"] == "missing"
    assert evaluation["metrics"]["label_agreement"]["value"] == 0.97
    assert evaluation["metrics"]["accuracy"]["delta"] == -0.01  # the whole-run value, not the slice
    assert evaluation["metrics"]["psi"]["value"] is None
    assert evaluation["accounting"] == {"captured": 1000, "joined": 995, "quarantined": 5, "coverage": 0.995,
                                        "balanced": True, "by_reason": {"malformed_json": 5}}
    rejected = decide(COMPARISON, Accounting(0, 0, 0), BASE).to_evaluation()
    assert rejected["approved"] == 0 and rejected["decision"] == "Rejected"


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


@pytest.mark.parametrize("accounting, status", [(OK, "Approved"), (Accounting(10, 10, 0), "Rejected")])
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
