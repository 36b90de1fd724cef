"""Gate policy: turn a comparison and its record accounting into Approved, Rejected or Inconclusive.

The policy, in the paragraph a reviewer reads once. Every captured record is joined or quarantined
with a reason that names its owner: the capture's losses are excluded and reported, the candidate's
count against it (its coverage below gate.min_coverage rejects), the evaluation's own losses above
1 - min_coverage make the run Inconclusive, never Rejected. With ground truth, the task's quality
metric is judged by non-inferiority on the paired interval of candidate - production: accuracy
(classification; plus the recall of every class under gate.policy.minority_class_share of the
labelled records) or MAE (regression), overall and per slice. The lower bound of the accuracy
delta at or above -accuracy_margin approves (for MAE: the upper bound at or below mae_margin x
production's MAE); an interval wholly on the wrong side of zero and beyond the margin rejects; an
interval that straddles the margin cannot decide (Inconclusive). A slice or a minority class rejects
only when it credibly loses more than the margin (Holm over the family). Without ground truth the
candidate is Approved only when it is equivalent to production within replay noise (the upper bound
of real_difference_rate at or below equivalence_margin), Rejected when clearly broken (its answers
collapse to one value while production's vary, or its labels agree with production's below
agreement_floor), and otherwise Inconclusive, awaiting ground truth (`regate` decides when labels
land). Agreement, flips and score shift are configured checks, warnings by default.

Every check carries its value, threshold, outcome and reason, and its severity says what its outcome
does (SEVERITIES); the built-in rules are declared in BUILTIN_CHECKS and POLICY_RULES and a test
proves each has a case for each outcome it can give.
"""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from typing import Any, Literal, Protocol

from analysis.compare import METRICS
from analysis.operational import OPERATIONAL_METRICS
from analysis.quarantine import owner_of
from analysis.segments import judge_segments
from analysis.results import Accounting, Comparison, MetricValue
from analysis.statistics import holm, one_sided_p, wilson_interval


class GateCheck(Protocol):
    """What the core needs of steps.config.GateCheck (the core may not import steps)."""

    metric: str
    threshold: float
    direction: str
    relative_to_production: bool
    severity: str
    name: str | None
    judge_on: str
    slices: bool


class PolicyConfig(Protocol):
    """What the core needs of steps.config.PolicyConfig: the margins of the default policy."""

    accuracy_margin: float
    recall_margin: float
    minority_class_share: float
    mae_margin: float
    equivalence_margin: float
    agreement_floor: float


class GateConfig(Protocol):
    """What the core needs of steps.config.GateConfig."""

    min_records: int
    min_coverage: float
    checks: tuple[GateCheck, ...]
    slice_alpha: float
    policy: PolicyConfig


GATE_METRICS = {**METRICS, **OPERATIONAL_METRICS}
"""Every metric a configured check may name: the comparison's and the operational ones."""

Status = Literal["Approved", "Rejected", "Inconclusive"]
STATUSES: tuple[Status, ...] = ("Approved", "Rejected", "Inconclusive")
Outcome = Literal["pass", "fail", "undecided", "missing"]
OUTCOMES: tuple[Outcome, ...] = ("pass", "fail", "undecided", "missing")
"""pass / fail: the evidence is on one side; undecided: measured, but the interval straddles the threshold;
missing: the metric could not be computed."""
SEVERITIES: dict[str, str] = {
    "integrity": "the evaluation itself is sound; anything but pass makes the run Inconclusive, whatever else",
    "critical": "fail rejects; undecided or missing makes the run Inconclusive (a required check missing fails "
                "the run)",
    "evidence": "needed to approve; anything but pass makes the run Inconclusive, never Rejected",
    "warning": "reported; never changes the verdict",
}
DIRECTIONS = ("at_least", "at_most")
JUDGED_ON = ("point", "interval")
CHECK_KINDS = ("absolute", "relative_to_production", "interval", "non_inferiority", "slices", "warning")
"""The kinds of configured check; a test proves each has a case that passes and one that fails."""
EVALUATION_VERSION = 3
_DEFAULT_CONFIDENCE = 0.95


@dataclasses.dataclass(frozen=True)
class CheckResult:
    """One check's verdict: what was measured, against what, and why it passed or not."""

    name: str
    metric: str
    value: float | None
    threshold: float
    direction: str
    severity: str
    passed: bool
    outcome: Outcome
    reason: str
    judged_on: str = "point"
    """point: the estimate was judged; interval: the interval's bound (value is then the bound)."""
    estimate: float | None = None
    ci_low: float | None = None
    ci_high: float | None = None
    slices: tuple[dict[str, Any], ...] = ()
    """A slice check's evidence, one entry per slice judged: value, interval, p, Holm p, flagged."""
    required: bool = False
    """A configured check marked required: its metric missing fails the run instead of waiting."""

    def to_json(self) -> dict[str, Any]:
        out = {
            "name": self.name,
            "metric": self.metric,
            "value": _finite(self.value),
            "threshold": _finite(self.threshold),
            "direction": self.direction,
            "severity": self.severity,
            "passed": self.passed,
            "outcome": self.outcome,
            "reason": self.reason,
            "judged_on": self.judged_on,
            "estimate": _finite(self.estimate),
            "ci_low": _finite(self.ci_low),
            "ci_high": _finite(self.ci_high),
        }
        if self.required:
            out["required"] = True
        if self.slices:
            out["slices"] = [dict(entry) for entry in self.slices]
        return out


@dataclasses.dataclass(frozen=True)
class Decision:
    """The gate's verdict, every check behind it, and the numbers evaluation.json shows."""

    status: Status
    checks: tuple[CheckResult, ...]
    reasons: tuple[str, ...]
    metrics: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)
    accounting: dict[str, Any] = dataclasses.field(default_factory=dict)
    task: dict[str, Any] = dataclasses.field(default_factory=dict)
    """What was judged: task (classification, regression or null), how it was found, and why."""
    policy: dict[str, Any] = dataclasses.field(default_factory=dict)
    """The margins and floors the verdict used."""

    @property
    def approved(self) -> bool:
        return self.status == "Approved"

    @property
    def rejected(self) -> bool:
        return self.status == "Rejected"

    @property
    def inconclusive(self) -> bool:
        return self.status == "Inconclusive"

    @property
    def failed(self) -> tuple[CheckResult, ...]:
        return tuple(c for c in self.checks if not c.passed)

    @property
    def run_failure(self) -> str | None:
        """Why the run must fail rather than record a verdict: a required check whose metric is missing."""
        missing = [c for c in self.checks if c.required and c.outcome == "missing"]
        return "; ".join(f"required check {c.name}: {c.reason}" for c in missing) or None

    def to_evaluation(self) -> dict[str, Any]:
        """evaluation.json: a ConditionStep reads `decision` (or `approved`, 1 or 0) with JsonGet."""
        return {
            "evaluation_version": EVALUATION_VERSION,
            "approved": int(self.approved),
            "rejected": int(self.rejected),
            "inconclusive": int(self.inconclusive),
            "decision": self.status,
            "reasons": list(self.reasons),
            "task": dict(self.task),
            "policy": dict(self.policy),
            "failed_critical": sum(1 for c in self.failed if c.severity == "critical"),
            "failed_warning": sum(1 for c in self.failed if c.severity == "warning"),
            "checks": [c.to_json() for c in self.checks],
            "metrics": self.metrics,
            "accounting": self.accounting,
        }


# ---------------------------------------------------------------- built-in checks on the accounting

@dataclasses.dataclass(frozen=True)
class BuiltinCheck:
    """A check every gate runs on the record accounting, whatever the config says."""

    name: str
    meaning: str
    judge: Callable[[Accounting, GateConfig], CheckResult]


def _balanced(acc: Accounting, gate: GateConfig) -> CheckResult:
    total = acc.joined + acc.quarantined
    by_reason = sum(acc.by_reason.values())
    if acc.balanced:
        reason = f"captured {acc.captured} = joined {acc.joined} + quarantined {acc.quarantined}"
    elif total != acc.captured:
        reason = (f"the evaluation lost records: captured {acc.captured} != joined {acc.joined} + quarantined "
                  f"{acc.quarantined} ({total})")
    else:
        reason = f"quarantine reasons add up to {by_reason}, not the {acc.quarantined} quarantined"
    return CheckResult("accounting_balanced", "joined + quarantined", float(total), float(acc.captured),
                       "equal", "integrity", acc.balanced, "pass" if acc.balanced else "fail", reason)


def _min_records(acc: Accounting, gate: GateConfig) -> CheckResult:
    passed = acc.joined >= gate.min_records
    if acc.captured == 0:
        reason = "no evidence: no captured records in the window"
    elif acc.joined == 0:
        reason = f"no evidence: none of the {acc.captured} captured records could be joined"
    else:
        reason = (f"joined records {acc.joined} {'>=' if passed else '<'} min_records {gate.min_records}"
                  + ("" if passed else ": not enough evidence to judge"))
    return CheckResult("min_records", "joined", float(acc.joined), float(gate.min_records), "at_least",
                       "evidence", passed, "pass" if passed else "fail", reason)


def _evaluation_loss(acc: Accounting, gate: GateConfig) -> CheckResult:
    tolerance = 1.0 - gate.min_coverage
    lost, loss = acc.by_owner["evaluation"], acc.evaluation_loss
    if loss is None:
        return CheckResult("evaluation_loss", "evaluation-owned quarantine / usable", None, tolerance, "at_most",
                           "integrity", True, "pass", "nothing usable was captured, so the evaluation lost nothing")
    passed = loss <= tolerance
    reason = (f"the evaluation itself lost {lost} of {acc.usable} usable records ({loss:.2%}) "
              f"{'<=' if passed else '>'} tolerance {tolerance:.2%} (1 - min_coverage)")
    if not passed:
        reason += f"; cannot judge what it lost ({_owned(acc, 'evaluation')})"
    return CheckResult("evaluation_loss", "evaluation-owned quarantine / usable", loss, tolerance, "at_most",
                       "integrity", passed, "pass" if passed else "fail", reason)


def _candidate_coverage(acc: Accounting, gate: GateConfig) -> CheckResult:
    coverage, asked = acc.candidate_coverage, acc.joined + acc.by_owner["candidate"]
    if coverage is None:
        return CheckResult("candidate_coverage", "joined / (joined + candidate-owned quarantine)", None,
                           gate.min_coverage, "at_least", "critical", False, "missing",
                           "no record reached the candidate's answers, so its coverage is unknown")
    passed = coverage >= gate.min_coverage
    reason = (f"the candidate answered {acc.joined} of {asked} records well ({coverage:.2%}) "
              f"{'>=' if passed else '<'} min_coverage {gate.min_coverage:.2%}")
    if acc.by_owner["candidate"]:
        reason += f" ({_owned(acc, 'candidate')})"
    return CheckResult("candidate_coverage", "joined / (joined + candidate-owned quarantine)", coverage,
                       gate.min_coverage, "at_least", "critical", passed, "pass" if passed else "fail", reason)


def _capture_loss(acc: Accounting, gate: GateConfig) -> CheckResult:
    tolerance = 1.0 - gate.min_coverage
    lost = acc.by_owner["capture"]
    share = lost / acc.captured if acc.captured else None
    if share is None:
        return CheckResult("capture_loss", "capture-owned quarantine / captured", None, tolerance, "at_most",
                           "warning", True, "pass", "nothing captured")
    passed = share <= tolerance
    reason = (f"{lost} of {acc.captured} captured records ({share:.2%}) were unusable captured data, excluded "
              f"from the judgement")
    if lost:
        reason += f" ({_owned(acc, 'capture')})"
    return CheckResult("capture_loss", "capture-owned quarantine / captured", share, tolerance, "at_most",
                       "warning", passed, "pass" if passed else "fail", reason)


BUILTIN_CHECKS: tuple[BuiltinCheck, ...] = (
    BuiltinCheck("accounting_balanced", "every captured record is joined or quarantined with a reason", _balanced),
    BuiltinCheck("evaluation_loss", "the evaluation lost at most 1 - min_coverage of the usable records",
                 _evaluation_loss),
    BuiltinCheck("min_records", "enough records joined to judge the candidate (no evidence is never approval)",
                 _min_records),
    BuiltinCheck("candidate_coverage", "the candidate answered at least min_coverage of the records put to it",
                 _candidate_coverage),
    BuiltinCheck("capture_loss", "how much captured data was unusable (reported)", _capture_loss),
)


def _owned(acc: Accounting, owner: str) -> str:
    codes = sorted(((n, c) for c, n in acc.by_reason.items() if owner_of(c) == owner), reverse=True)
    return ", ".join(f"{code} {n}" for n, code in codes[:4])


# ---------------------------------------------------------------- the default policy, per task

@dataclasses.dataclass(frozen=True)
class PolicyRule:
    """A rule of the default policy: when it applies, and how it judges the comparison."""

    name: str
    meaning: str
    applies: Literal["always", "classification", "regression", "no_ground_truth"]
    """classification / regression: with ground truth of that task; no_ground_truth: without any."""
    judge: Callable[[Comparison, GateConfig], CheckResult]


@dataclasses.dataclass(frozen=True)
class _Rule:
    """A GateCheck the policy builds for itself (to reuse judge_slices)."""

    metric: str
    threshold: float
    direction: str
    name: str
    severity: str = "critical"
    relative_to_production: bool = True
    judge_on: str = "interval"
    slices: bool = False


def non_inferiority(name: str, metric: MetricValue | None, margin: float, higher_is_better: bool,
                    severity: str = "critical", label: str | None = None) -> CheckResult:
    """Judge candidate - production on its paired interval against a margin, in three zones.

    Higher is better (accuracy): the lower bound at or above -margin passes (non-inferior); an interval
    wholly below zero whose lower bound misses the margin fails (credibly worse); anything else is
    undecided (the interval straddles the margin: more labelled records would tell). Lower is better
    (MAE): the mirror image, with the upper bound at or below +margin.
    """
    label = label or (metric.name if metric is not None else name)
    threshold, direction = (-margin, "at_least") if higher_is_better else (margin, "at_most")
    estimate = None if metric is None else _finite(metric.delta)
    low, high = (None, None) if metric is None else (_finite(metric.ci_low), _finite(metric.ci_high))
    base = dict(judged_on="interval", estimate=estimate, ci_low=low, ci_high=high)
    if estimate is None:
        return CheckResult(name, label, None, threshold, direction, severity, False, "missing",
                           f"{label} of candidate vs production was not computed; cannot judge", **base)
    if low is None or high is None:
        return CheckResult(name, label, None, threshold, direction, severity, False, "missing",
                           f"{label} delta {_fmt(estimate)} has no interval (compare.bootstrap_resamples 0?); "
                           "cannot judge non-inferiority", **base)
    bound = low if higher_is_better else high
    if higher_is_better:
        passed, worse = low >= threshold, high < 0
    else:
        passed, worse = high <= threshold, low > 0
    interval = f"{label} delta {_fmt(estimate)}, interval [{_fmt(low)}, {_fmt(high)}]"
    side = "lower" if higher_is_better else "upper"
    if passed:
        outcome, reason = "pass", (f"{interval}: {side} bound {_fmt(bound)} {'>=' if higher_is_better else '<='} "
                                   f"{_fmt(threshold)}, non-inferior within the margin {_fmt(margin)}")
    elif worse:
        outcome, reason = "fail", (f"{interval}: credibly worse than production (the interval excludes 0) and "
                                   f"not within the margin {_fmt(margin)}")
    else:
        outcome, reason = "undecided", (f"{interval}: the interval straddles the margin {_fmt(margin)}; more "
                                        "labelled records would tell")
    return CheckResult(name, label, bound, threshold, direction, severity, passed, outcome, reason, **base)


def guard(name: str, metrics: Sequence[MetricValue], threshold: float, direction: str, confidence: float,
          alpha: float, family: str, severity: str = "critical") -> CheckResult:
    """Fail when a member of a family (slices, classes) credibly misses the threshold after Holm; else pass.

    A guard never waits for evidence: a family too small to judge passes and says so.
    """
    rule = _Rule(metrics[0].name if metrics else name, threshold, direction, name, severity)
    result = judge_slices(rule, list(metrics), confidence, alpha)
    if result.outcome != "missing":
        return result
    return dataclasses.replace(result, passed=True, outcome="pass",
                               reason=f"no {family} has enough records and an interval to judge")


def _confidence(comparison: Comparison) -> float:
    return getattr(comparison, "settings", {}).get("confidence", _DEFAULT_CONFIDENCE)


def _accuracy(comparison: Comparison, gate: GateConfig) -> CheckResult:
    return non_inferiority("accuracy_non_inferior", comparison.metric("accuracy"), gate.policy.accuracy_margin,
                           higher_is_better=True, label="accuracy")


def _accuracy_slices(comparison: Comparison, gate: GateConfig) -> CheckResult:
    per_slice = [m for m in comparison.metrics if m.name == "accuracy" and m.slice != "all"]
    return guard("accuracy_per_slice", per_slice, -gate.policy.accuracy_margin, "at_least", _confidence(comparison),
                 gate.slice_alpha, "slice")


def minority_classes(comparison: Comparison, share: float) -> tuple[list[MetricValue], str]:
    """The class_recall metrics of classes under `share` of the labelled records and under half an even split.

    A rare class barely moves accuracy, so its recall is guarded on its own; "rare" is relative to the
    number of classes, so ten balanced classes are not ten minorities.
    """
    accuracy = comparison.metric("accuracy")
    recalls = [m for m in comparison.metrics if m.name.startswith(CLASS_RECALL) and m.slice == "all"]
    labelled = accuracy.support if accuracy is not None else 0
    if not recalls or not labelled:
        return [], "no per-class recall (no labelled classes)"
    cut = min(share, 0.5 / len(recalls))
    small = [dataclasses.replace(m, slice=m.name[len(CLASS_RECALL):]) for m in recalls if m.support / labelled < cut]
    shares = ", ".join(f"{m.name[len(CLASS_RECALL):]} {m.support / labelled:.1%}" for m in recalls[:8])
    why = (f"{len(small)} of {len(recalls)} classes hold under {cut:.1%} of the {labelled} labelled records "
           f"(min of {share:.0%} and half an even split): {shares}")
    return small, why


def _minority_recall(comparison: Comparison, gate: GateConfig) -> CheckResult:
    small, why = minority_classes(comparison, gate.policy.minority_class_share)
    if not small:
        return CheckResult("minority_class_recall", CLASS_RECALL.rstrip(":"), None, -gate.policy.recall_margin,
                           "at_least", "critical", True, "pass", f"classes balanced: {why}", judged_on="slices")
    result = guard("minority_class_recall", small, -gate.policy.recall_margin, "at_least", _confidence(comparison),
                   gate.slice_alpha, "minority class")
    return dataclasses.replace(result, reason=f"{result.reason} [{why}]")


def _mae_margin(comparison: Comparison, gate: GateConfig, name: str = "mae") -> float | None:
    metric = comparison.metric(name)
    production = None if metric is None else _finite(metric.production)
    return None if production is None else gate.policy.mae_margin * abs(production)


def _mae(comparison: Comparison, gate: GateConfig) -> CheckResult:
    margin = _mae_margin(comparison, gate)
    result = non_inferiority("mae_non_inferior", comparison.metric("mae"), margin or 0.0, higher_is_better=False,
                             label="mae")
    if margin is None:
        return result
    return dataclasses.replace(result, reason=f"{result.reason} (margin {gate.policy.mae_margin:.0%} of "
                                              f"production's MAE {_fmt(margin / gate.policy.mae_margin)})"
                               if gate.policy.mae_margin else result.reason)


def _mae_slices(comparison: Comparison, gate: GateConfig) -> CheckResult:
    per_slice = [m for m in comparison.metrics if m.name == "mae" and m.slice != "all"]
    return guard("mae_per_slice", per_slice, _mae_margin(comparison, gate) or 0.0, "at_most", _confidence(comparison),
                 gate.slice_alpha, "slice")


def _rmse(comparison: Comparison, gate: GateConfig) -> CheckResult:
    return non_inferiority("rmse_non_inferior", comparison.metric("rmse"), _mae_margin(comparison, gate, "rmse") or 0.0,
                           higher_is_better=False, severity="warning", label="rmse")


def _answers_present(comparison: Comparison, gate: GateConfig) -> CheckResult:
    metric = comparison.metric("candidate_answer_rate")
    value = None if metric is None else _finite(metric.value)
    if value is None:
        return CheckResult("candidate_answers", "candidate_answer_rate", None, gate.min_coverage, "at_least",
                           "critical", True, "pass", "production gave no score or label to compare answers with")
    passed = value >= gate.min_coverage
    reason = (f"the candidate gave a score or label on {value:.2%} of the {metric.support} records production "
              f"did {'>=' if passed else '<'} min_coverage {gate.min_coverage:.2%}")
    return CheckResult("candidate_answers", "candidate_answer_rate", value, gate.min_coverage, "at_least", "critical",
                       passed, "pass" if passed else "fail", reason, ci_low=_finite(metric.ci_low),
                       ci_high=_finite(metric.ci_high))


# A constant answer must change at least this share of production's answers to count as a collapse.
_COLLAPSE_SHARE = 0.05


def _collapsed(comparison: Comparison, gate: GateConfig) -> CheckResult:
    found = []
    production_labels = {p: sum(row.values()) for p, row in comparison.flip_matrix.items()}
    candidate_labels = {c for row in comparison.flip_matrix.values() for c in row}
    total = sum(production_labels.values())
    if len(candidate_labels) == 1 and len(production_labels) >= 2:
        (only,) = candidate_labels
        changed = (total - production_labels.get(only, 0)) / total
        if changed >= _COLLAPSE_SHARE:
            found.append(f"every label is {only!r} while production's vary ({changed:.1%} of them differ)")
    scatter = (getattr(comparison, "distributions", {}) or {}).get("scatter") or []
    if scatter:
        candidate_scores = {c for _, c in scatter}
        if len(candidate_scores) == 1 and len({p for p, _ in scatter}) >= 2:
            (only,) = candidate_scores
            changed = sum(1 for p, _ in scatter if p != only) / len(scatter)
            if changed >= _COLLAPSE_SHARE:
                found.append(f"every score is {_fmt(only)} while production's vary")
    if not total and not scatter:
        return CheckResult("answers_collapsed", "distinct candidate answers", None, 2.0, "at_least", "critical",
                           True, "pass", "no labels or scores to compare")
    passed = not found
    reason = ("the candidate's answers vary as production's do" if passed else
              "the candidate's answers collapsed: " + "; ".join(found))
    return CheckResult("answers_collapsed", "distinct candidate answers", None, 2.0, "at_least", "critical", passed,
                       "pass" if passed else "fail", reason)


def _inverted(comparison: Comparison, gate: GateConfig) -> CheckResult:
    metric, floor = comparison.metric("label_agreement"), gate.policy.agreement_floor
    high = None if metric is None else _finite(metric.ci_high)
    if metric is None or _finite(metric.value) is None or high is None:
        return CheckResult("labels_agree", "label_agreement", None, floor, "at_least", "critical", True, "pass",
                           "no labels from both models to compare")
    passed = high >= floor
    reason = (f"label agreement {_fmt(metric.value)}, interval [{_fmt(metric.ci_low)}, {_fmt(high)}]: upper bound "
              f"{'>=' if passed else '<'} floor {_fmt(floor)}" + ("" if passed else ": labels inverted or unrelated"))
    return CheckResult("labels_agree", "label_agreement", high, floor, "at_least", "critical", passed,
                       "pass" if passed else "fail", reason, judged_on="interval", estimate=_finite(metric.value),
                       ci_low=_finite(metric.ci_low), ci_high=high)


def _equivalent(comparison: Comparison, gate: GateConfig) -> CheckResult:
    metric, margin = comparison.metric("real_difference_rate"), gate.policy.equivalence_margin
    estimate = None if metric is None else _finite(metric.value)
    high = None
    if estimate is not None and metric.support:
        # An equivalence test is one-sided: the upper bound of the one-sided interval at the run's confidence.
        one_sided = 1.0 - 2.0 * (1.0 - _confidence(comparison))
        high = wilson_interval(round(estimate * metric.support), metric.support, one_sided).high
    base = dict(judged_on="interval", estimate=estimate, ci_low=None if metric is None else _finite(metric.ci_low),
                ci_high=None if metric is None else _finite(metric.ci_high))
    if estimate is None or high is None:
        return CheckResult("equivalent_to_production", "real_difference_rate", None, margin, "at_most", "evidence",
                           False, "missing", "awaiting ground truth: the difference rate could not be measured",
                           **base)
    noise_floor = comparison.metric("noise_score_band") is not None
    if noise_floor:
        # By construction 1 - noise_quantile of production's own replays fall outside the noise band, so an
        # identical model differs "beyond noise" that often; the margin comes on top of that.
        margin += 1.0 - float(getattr(comparison, "settings", {}).get("noise_quantile", 1.0))
    passed = high <= margin
    noise = "beyond replay noise" if noise_floor else "beyond the tolerances (no noise floor: set production.model)"
    what = (f"the candidate's answers differ from production's {noise} on {estimate:.2%} of {metric.support} "
            f"records, one-sided {_confidence(comparison):.0%} upper bound {high:.2%}")
    if passed:
        outcome, reason = "pass", f"{what} <= equivalence margin {margin:.2%}: equivalent to production"
    elif estimate <= margin:
        outcome, reason = "undecided", (f"awaiting ground truth: {what} > equivalence margin {margin:.2%} "
                                        "(too few records to show equivalence)")
    else:
        outcome, reason = "fail", f"awaiting ground truth: {what} > equivalence margin {margin:.2%}"
    return CheckResult("equivalent_to_production", "real_difference_rate", high, margin, "at_most", "evidence",
                       passed, outcome, reason, **base)


POLICY_RULES: tuple[PolicyRule, ...] = (
    PolicyRule("candidate_answers", "the candidate gives a score or label wherever production does", "always",
               _answers_present),
    PolicyRule("accuracy_non_inferior", "accuracy delta's lower bound >= -accuracy_margin", "classification",
               _accuracy),
    PolicyRule("accuracy_per_slice", "no slice credibly loses more than accuracy_margin (Holm)", "classification",
               _accuracy_slices),
    PolicyRule("minority_class_recall", "no minority class credibly loses more than recall_margin of recall (Holm)",
               "classification", _minority_recall),
    PolicyRule("mae_non_inferior", "MAE delta's upper bound <= mae_margin x production's MAE", "regression", _mae),
    PolicyRule("mae_per_slice", "no slice credibly loses more than the MAE margin (Holm)", "regression", _mae_slices),
    PolicyRule("rmse_non_inferior", "RMSE delta's upper bound <= mae_margin x production's RMSE (warning)",
               "regression", _rmse),
    PolicyRule("answers_collapsed", "without labels: the candidate does not answer one constant while production "
               "varies", "no_ground_truth", _collapsed),
    PolicyRule("labels_agree", "without labels: label agreement's upper bound >= agreement_floor",
               "no_ground_truth", _inverted),
    PolicyRule("equivalent_to_production", "without labels: real_difference_rate's upper bound <= "
               "equivalence_margin (else awaiting ground truth)", "no_ground_truth", _equivalent),
)
CLASS_RECALL = "class_recall:"
"""Per-class recall metrics are named class_recall:<label> (analysis.compare)."""


def task_statement(comparison: Comparison) -> dict[str, Any]:
    """Which task the verdict judged, how it was found, and why (the report states it)."""
    settings = getattr(comparison, "settings", {}) or {}
    outputs = [kind for kind, present in (("labels", bool(comparison.flip_matrix)),
                                          ("scores", bool(getattr(comparison, "distributions", None))))
               if present]
    task = _task_judged(comparison)
    if task:
        return {"task": task, "source": settings.get("task_source", "detected"),
                "why": settings.get("task_reason") or f"ground truth fed the {task} metrics",
                "judged_on": "quality against ground truth"}
    shape = " and ".join(outputs) or "no labels or scores"
    return {"task": None, "source": "no ground truth", "judged_on": "agreement with production",
            "why": f"no ground truth joined; the models answer with {shape}, so the candidate is judged on "
                   "equivalence to production until labels arrive"}


def policy_json(gate: GateConfig, comparison: Comparison) -> dict[str, Any]:
    """The margins and floors behind the verdict."""
    policy = gate.policy
    return {"min_records": gate.min_records, "min_coverage": gate.min_coverage, "slice_alpha": gate.slice_alpha,
            "confidence": _confidence(comparison),
            **{f.name: getattr(policy, f.name) for f in dataclasses.fields(policy)}}


# ---------------------------------------------------------------- the decision

def decide(comparison: Comparison, accounting: Accounting, gate: GateConfig,
           extra_checks: Sequence[CheckResult] = ()) -> Decision:
    """Judge the accounting, then (with enough records) the policy rules that apply, configured checks and extras.

    extra_checks: results judged elsewhere (e.g. automatic segments), already carrying their severity.
    """
    checks = [builtin.judge(accounting, gate) for builtin in BUILTIN_CHECKS]
    if accounting.joined >= max(gate.min_records, 1):
        ground_truth = _task_judged(comparison)
        for rule in POLICY_RULES:
            if rule.applies == "always" or rule.applies == ground_truth or \
                    (rule.applies == "no_ground_truth" and ground_truth is None):
                checks.append(rule.judge(comparison, gate))
        checks += configured_checks(comparison, gate)
        checks += segment_checks(comparison)
        checks += list(extra_checks)
    status, reasons = verdict(checks)
    return Decision(status, tuple(checks), tuple(reasons), headline_metrics(comparison), accounting_json(accounting),
                    task_statement(comparison), policy_json(gate, comparison))


def _task_judged(comparison: Comparison) -> str | None:
    """The task ground truth fed (None without ground truth); a comparison that did not say, by its metrics."""
    if not comparison.has_ground_truth:
        return None
    if comparison.task:
        return comparison.task
    return "classification" if comparison.metric("accuracy") else "regression" if comparison.metric("mae") else None


def segment_checks(comparison: Comparison) -> list[CheckResult]:
    """segment_quality over the automatic segments (compare.auto_segments), when there was quality to judge.

    A scan with nothing to judge (no ground truth, no segment with the minimum support) adds no check:
    the task's overall quality rule already says what evidence is missing.
    """
    judged = judge_segments(getattr(comparison, "segment_scan", None))
    if judged.passed is None:
        return []
    return [CheckResult(judged.name, judged.metric, judged.value, judged.threshold, judged.direction, judged.severity,
                        judged.passed, "pass" if judged.passed else "fail", judged.reason, judged_on="segments",
                        estimate=judged.estimate, ci_low=judged.ci_low, ci_high=judged.ci_high,
                        slices=tuple({**e.to_json(), "slice": e.name} for e in judged.flagged))]


def configured_checks(comparison: Comparison, gate: GateConfig) -> list[CheckResult]:
    """Each configured check (and its slices, when asked)."""
    out = []
    alpha = gate.slice_alpha
    for check in gate.checks:
        required = bool(getattr(check, "required", False))
        if getattr(check, "slices", False):
            per_slice = [m for m in comparison.metrics if m.name == check.metric and m.slice != "all"]
            whole = dataclasses.replace(check, slices=False) if dataclasses.is_dataclass(check) else check
            out.append(dataclasses.replace(judge_check(whole, comparison.metric(check.metric)), required=required))
            out.append(judge_slices(check, per_slice, _confidence(comparison), alpha))
        else:
            out.append(dataclasses.replace(judge_check(check, comparison.metric(check.metric)), required=required))
    return out


def verdict(checks: Sequence[CheckResult]) -> tuple[Status, list[str]]:
    """The status the checks give (SEVERITIES), with reasons: what rejects, or what evidence is missing."""
    unsound = [c for c in checks if c.severity == "integrity" and not c.passed]
    rejecting = [c for c in checks if c.severity == "critical" and c.outcome == "fail"]
    waiting = [c for c in checks if (c.severity == "critical" and c.outcome in ("undecided", "missing"))
               or (c.severity == "evidence" and not c.passed)]
    warnings = [c for c in checks if c.severity == "warning" and not c.passed]
    deciding = [c for c in checks if c.severity in ("integrity", "critical", "evidence")]
    if unsound:
        status: Status = "Inconclusive"
        reasons = [f"{c.name}: {c.reason}" for c in unsound]
        reasons += [f"not judged while the evaluation is unsound: {c.name}: {c.reason}" for c in rejecting]
    elif rejecting:
        status, reasons = "Rejected", [f"{c.name}: {c.reason}" for c in rejecting]
    elif waiting:
        status, reasons = "Inconclusive", [f"{c.name}: {c.reason}" for c in waiting]
    else:
        status = "Approved"
        policy = [c for c in checks if c.severity in ("critical", "evidence") and c.name in _DECIDING_RULES]
        reasons = [f"{c.name}: {c.reason}" for c in policy]
        reasons.append(f"all {len(deciding)} deciding checks passed")
    reasons += [f"warning {c.name}: {c.reason}" for c in warnings]
    return status, reasons


# The rules whose pass is what an approval stands on (their reasons head an Approved verdict).
_DECIDING_RULES = ("accuracy_non_inferior", "mae_non_inferior", "equivalent_to_production")


# ---------------------------------------------------------------- configured checks

def check_name(check: GateCheck) -> str:
    """The name a configured check shows: its own, else the metric (with _delta when relative)."""
    base = check.name or (f"{check.metric}_delta" if check.relative_to_production else check.metric)
    return f"{base} per slice" if getattr(check, "slices", False) else base


def check_kinds(check: GateCheck) -> tuple[str, ...]:
    """Which of CHECK_KINDS a configured check is."""
    interval = getattr(check, "judge_on", "point") == "interval"
    kinds = ["relative_to_production" if check.relative_to_production else "absolute"]
    if interval:
        kinds.append("non_inferiority" if check.relative_to_production and check.direction == "at_least"
                     else "interval")
    if getattr(check, "slices", False):
        kinds.append("slices")
    if check.severity == "warning":
        kinds.append("warning")
    return tuple(kinds)


def judge_check(check: GateCheck, metric: MetricValue | None) -> CheckResult:
    """One configured check against the metric it names; a missing or non-finite value is `missing`.

    judge_on point compares the estimate; interval compares the bound on the side that matters (the
    lower bound for at_least, the upper for at_most), so noise cannot pass a candidate by luck, and an
    interval that reaches across the threshold is undecided (Inconclusive), not a failure.
    """
    name = check_name(check)
    field = "delta" if check.relative_to_production else "value"
    label = f"{check.metric} {'delta vs production' if check.relative_to_production else ''}".strip()
    interval = getattr(check, "judge_on", "point") == "interval"
    estimate = None if metric is None else getattr(metric, field)
    low, high = _interval_of(check, metric)
    base = dict(judged_on="interval" if interval else "point", estimate=_finite(estimate), ci_low=low, ci_high=high)
    if estimate is None or not math.isfinite(estimate):
        # A metric that was not computed must never pass silently: that is how gates rot.
        why = "was not computed" if metric is None else f"has no {field}"
        return CheckResult(name, check.metric, None, check.threshold, check.direction, check.severity,
                           False, "missing", f"{label} {why}; cannot judge (needs {_bound(check)})", **base)
    value = estimate
    if interval:
        value = low if check.direction == "at_least" else high
        if value is None:
            return CheckResult(name, check.metric, None, check.threshold, check.direction, check.severity, False,
                               "missing", f"{label} {_fmt(estimate)} has no interval for its {field}; cannot judge "
                               f"the bound (needs {_bound(check)})", **base)
    passed = value >= check.threshold if check.direction == "at_least" else value <= check.threshold
    operator = {("at_least", True): ">=", ("at_least", False): "<",
                ("at_most", True): "<=", ("at_most", False): ">"}[(check.direction, passed)]
    outcome: Outcome = "pass" if passed else "fail"
    if interval:
        side = "lower" if check.direction == "at_least" else "upper"
        reason = (f"{label} {_fmt(estimate)}, interval [{_fmt(low)}, {_fmt(high)}]: {side} bound "
                  f"{_fmt(value)} {operator} {_fmt(check.threshold)}")
        far = high if check.direction == "at_least" else low
        if not passed and far is not None and (far >= check.threshold if check.direction == "at_least"
                                               else far <= check.threshold):
            # Only an interval wholly on the wrong side is evidence against; one across the threshold waits.
            outcome, reason = "undecided", f"{reason}, but the interval reaches across it: cannot tell yet"
    else:
        reason = f"{label} {_fmt(value)} {operator} {_fmt(check.threshold)}"
    return CheckResult(name, check.metric, float(value), check.threshold, check.direction, check.severity,
                       passed, outcome, reason, **base)


def judge_slices(check: GateCheck, metrics: list[MetricValue], confidence: float, alpha: float) -> CheckResult:
    """One check over every slice that was compared: a slice fails when it is credibly on the wrong side.

    Per slice, p is the one-sided p-value that the true value meets the threshold (from the slice's
    interval); Holm's step-down adjusts the p-values over the slices, and a slice with adjusted p
    below alpha is flagged. A slice whose estimate misses the threshold without that evidence is
    listed, not flagged. No slice with an interval means the check cannot judge (missing).
    """
    name = check_name(check)
    field = "delta" if check.relative_to_production else "value"
    judged = []
    for metric in metrics:
        estimate = getattr(metric, field)
        low, high = _interval_of(check, metric)
        if estimate is None or not math.isfinite(estimate):
            continue
        p = one_sided_p(estimate, low, high, confidence, check.threshold, check.direction)
        if p is not None:
            judged.append((metric, estimate, low, high, p))
    if not judged:
        return CheckResult(name, check.metric, None, check.threshold, check.direction, check.severity, False,
                           "missing", f"no slice of {check.metric} has enough records and an interval to judge",
                           judged_on="slices")
    adjusted = holm([p for *_, p in judged])
    evidence = []
    for (metric, estimate, low, high, p), p_holm in zip(judged, adjusted):
        misses = not (estimate >= check.threshold if check.direction == "at_least" else estimate <= check.threshold)
        evidence.append({"slice": metric.slice, "estimate": _finite(estimate), "ci_low": _finite(low),
                         "ci_high": _finite(high), "support": metric.support, "p": p, "p_holm": p_holm,
                         "misses_threshold": misses, "flagged": p_holm < alpha})
    flagged = [e for e in evidence if e["flagged"]]
    worst = min(evidence, key=lambda e: e["p_holm"])
    passed = not flagged
    if flagged:
        reason = (f"{len(flagged)} of {len(evidence)} slices credibly miss {_bound(check)} (Holm, alpha {alpha:g}): "
                  + ", ".join(f"{e['slice']} {_fmt(e['estimate'])} (p {e['p_holm']:.2g})" for e in flagged[:5]))
    else:
        missing = sum(1 for e in evidence if e["misses_threshold"])
        reason = (f"no slice of {len(evidence)} credibly misses {_bound(check)} (Holm, alpha {alpha:g}; "
                  f"{missing} miss it on the point estimate only; worst {worst['slice']} {_fmt(worst['estimate'])})")
    return CheckResult(name, check.metric, worst["estimate"], check.threshold, check.direction, check.severity,
                       passed, "pass" if passed else "fail", reason, judged_on="slices", estimate=worst["estimate"],
                       ci_low=worst["ci_low"], ci_high=worst["ci_high"], slices=tuple(evidence))


def _interval_of(check: GateCheck, metric: MetricValue | None) -> tuple[float | None, float | None]:
    """The metric's interval if it bounds the field the check judges (value or delta), else (None, None)."""
    if metric is None:
        return None, None
    spec = GATE_METRICS.get(check.metric)
    field = "delta" if check.relative_to_production else "value"
    bounds = spec.interval if spec is not None else ("delta" if metric.delta is not None else "value")
    if bounds != field:
        return None, None
    return _finite(metric.ci_low), _finite(metric.ci_high)


def headline_metrics(comparison: Comparison) -> dict[str, dict[str, Any]]:
    """Every whole-run metric as `{name: {value, production, candidate, delta, ci_low, ci_high, support}}`."""
    return {
        m.name: {"value": _finite(m.value), "production": _finite(m.production), "candidate": _finite(m.candidate),
                 "delta": _finite(m.delta), "ci_low": _finite(m.ci_low), "ci_high": _finite(m.ci_high),
                 "support": m.support}
        for m in comparison.metrics if m.slice == "all"
    }


def accounting_json(accounting: Accounting) -> dict[str, Any]:
    """The record accounting as plain data, reasons sorted by count then name, losses by owner."""
    return {
        "captured": accounting.captured,
        "joined": accounting.joined,
        "quarantined": accounting.quarantined,
        "coverage": accounting.coverage,
        "balanced": accounting.balanced,
        "by_reason": dict(sorted(accounting.by_reason.items(), key=lambda kv: (-kv[1], kv[0]))),
        "by_owner": accounting.by_owner,
        "candidate_coverage": accounting.candidate_coverage,
        "evaluation_loss": accounting.evaluation_loss,
    }


def _bound(check: GateCheck) -> str:
    return f"{'>=' if check.direction == 'at_least' else '<='} {_fmt(check.threshold)}"


def _fmt(value: float) -> str:
    return f"{value:.4g}"


def _finite(value: float | None) -> float | None:
    """JSON has no NaN or infinity; they become null."""
    if value is None or not math.isfinite(value):
        return None
    return float(value)
