"""Gate policy: turn a comparison and its record accounting into Approved or Rejected, with reasons.

The built-in checks in BUILTIN_CHECKS always run first; each configured GateCheck follows. Every
check carries its value, threshold and outcome so the decision explains itself. A critical check
that fails (or whose metric is missing) rejects; a failed warning is listed and does not.
"""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any, Literal, Protocol

from analysis.compare import METRICS
from analysis.results import Accounting, Comparison, MetricValue
from analysis.statistics import holm, one_sided_p


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


class GateConfig(Protocol):
    """What the core needs of steps.config.GateConfig."""

    min_records: int
    min_coverage: float
    checks: tuple[GateCheck, ...]
    slice_alpha: float


Status = Literal["Approved", "Rejected"]
Outcome = Literal["pass", "fail", "missing"]
OUTCOMES: tuple[Outcome, ...] = ("pass", "fail", "missing")
DIRECTIONS = ("at_least", "at_most")
JUDGED_ON = ("point", "interval")
CHECK_KINDS = ("absolute", "relative_to_production", "interval", "non_inferiority", "slices", "warning")
"""The kinds of configured check; a test proves each has a case that passes and one that fails."""
EVALUATION_VERSION = 2
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

    @property
    def approved(self) -> bool:
        return self.status == "Approved"

    @property
    def failed(self) -> tuple[CheckResult, ...]:
        return tuple(c for c in self.checks if not c.passed)

    def to_evaluation(self) -> dict[str, Any]:
        """evaluation.json: a ConditionStep reads `approved` (1 or 0) with JsonGet."""
        return {
            "evaluation_version": EVALUATION_VERSION,
            "approved": 1 if self.approved else 0,
            "decision": self.status,
            "reasons": list(self.reasons),
            "failed_critical": sum(1 for c in self.failed if c.severity == "critical"),
            "failed_warning": sum(1 for c in self.failed if c.severity == "warning"),
            "checks": [c.to_json() for c in self.checks],
            "metrics": self.metrics,
            "accounting": self.accounting,
        }


@dataclasses.dataclass(frozen=True)
class BuiltinCheck:
    """A check every gate runs, whatever the config says."""

    name: str
    meaning: str
    judge: Callable[[Accounting, GateConfig], CheckResult]


def _balanced(acc: Accounting, gate: GateConfig) -> CheckResult:
    total = acc.joined + acc.quarantined
    by_reason = sum(acc.by_reason.values())
    if acc.balanced:
        reason = f"captured {acc.captured} = joined {acc.joined} + quarantined {acc.quarantined}"
    elif total != acc.captured:
        reason = (f"records lost: captured {acc.captured} != joined {acc.joined} + quarantined "
                  f"{acc.quarantined} ({total})")
    else:
        reason = f"quarantine reasons add up to {by_reason}, not the {acc.quarantined} quarantined"
    return CheckResult("accounting_balanced", "joined + quarantined", float(total), float(acc.captured),
                       "equal", "critical", acc.balanced, "pass" if acc.balanced else "fail", reason)


def _min_records(acc: Accounting, gate: GateConfig) -> CheckResult:
    passed = acc.joined >= gate.min_records
    reason = f"joined records {acc.joined} {'>=' if passed else '<'} min_records {gate.min_records}"
    return CheckResult("min_records", "joined", float(acc.joined), float(gate.min_records), "at_least",
                       "critical", passed, "pass" if passed else "fail", reason)


def _min_coverage(acc: Accounting, gate: GateConfig) -> CheckResult:
    passed = acc.coverage >= gate.min_coverage
    reason = (f"coverage {acc.coverage:.2%} ({acc.joined}/{acc.captured}) {'>=' if passed else '<'} "
              f"min_coverage {gate.min_coverage:.2%}")
    return CheckResult("min_coverage", "coverage", acc.coverage, gate.min_coverage, "at_least",
                       "critical", passed, "pass" if passed else "fail", reason)


BUILTIN_CHECKS: tuple[BuiltinCheck, ...] = (
    BuiltinCheck("accounting_balanced", "every captured record is joined or quarantined with a reason", _balanced),
    BuiltinCheck("min_records", "enough records joined to judge the candidate", _min_records),
    BuiltinCheck("min_coverage", "joined / captured is at least gate.min_coverage", _min_coverage),
)


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
    """One configured check against the metric it names; a missing or non-finite value fails.

    judge_on point compares the estimate; interval compares the bound on the side that matters (the
    lower bound for at_least, the upper for at_most), so noise cannot pass a candidate by luck.
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
    if interval:
        side = "lower" if check.direction == "at_least" else "upper"
        reason = (f"{label} {_fmt(estimate)}, interval [{_fmt(low)}, {_fmt(high)}]: {side} bound "
                  f"{_fmt(value)} {operator} {_fmt(check.threshold)}")
    else:
        reason = f"{label} {_fmt(value)} {operator} {_fmt(check.threshold)}"
    return CheckResult(name, check.metric, float(value), check.threshold, check.direction, check.severity,
                       passed, "pass" if passed else "fail", reason, **base)


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


def decide(comparison: Comparison, accounting: Accounting, gate: GateConfig) -> Decision:
    """Run the built-in checks, then each configured check (and its slices, when asked), and decide."""
    checks = [builtin.judge(accounting, gate) for builtin in BUILTIN_CHECKS]
    confidence = getattr(comparison, "settings", {}).get("confidence", _DEFAULT_CONFIDENCE)
    alpha = getattr(gate, "slice_alpha", 0.05)
    for check in gate.checks:
        if getattr(check, "slices", False):
            per_slice = [m for m in comparison.metrics if m.name == check.metric and m.slice != "all"]
            checks.append(judge_check(dataclasses.replace(check, slices=False) if dataclasses.is_dataclass(check)
                                      else check, comparison.metric(check.metric)))
            checks.append(judge_slices(check, per_slice, confidence, alpha))
        else:
            checks.append(judge_check(check, comparison.metric(check.metric)))
    critical = [c for c in checks if not c.passed and c.severity == "critical"]
    warnings = [c for c in checks if not c.passed and c.severity == "warning"]
    status: Status = "Rejected" if critical else "Approved"
    reasons = [f"{c.name}: {c.reason}" for c in critical]
    if not critical:
        reasons.append(f"all {sum(1 for c in checks if c.severity == 'critical')} critical checks passed")
    reasons += [f"warning {c.name}: {c.reason}" for c in warnings]
    return Decision(status, tuple(checks), tuple(reasons), headline_metrics(comparison),
                    accounting_json(accounting))


def _interval_of(check: GateCheck, metric: MetricValue | None) -> tuple[float | None, float | None]:
    """The metric's interval if it bounds the field the check judges (value or delta), else (None, None)."""
    if metric is None:
        return None, None
    spec = METRICS.get(check.metric)
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
    """The record accounting as plain data, reasons sorted by count then name."""
    return {
        "captured": accounting.captured,
        "joined": accounting.joined,
        "quarantined": accounting.quarantined,
        "coverage": accounting.coverage,
        "balanced": accounting.balanced,
        "by_reason": dict(sorted(accounting.by_reason.items(), key=lambda kv: (-kv[1], kv[0]))),
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
