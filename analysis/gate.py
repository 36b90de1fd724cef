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

from analysis.results import Accounting, Comparison, MetricValue


class GateCheck(Protocol):
    """What the core needs of steps.config.GateCheck (the core may not import steps)."""

    metric: str
    threshold: float
    direction: str
    relative_to_production: bool
    severity: str
    name: str | None


class GateConfig(Protocol):
    """What the core needs of steps.config.GateConfig."""

    min_records: int
    min_coverage: float
    checks: tuple[GateCheck, ...]


Status = Literal["Approved", "Rejected"]
Outcome = Literal["pass", "fail", "missing"]
OUTCOMES: tuple[Outcome, ...] = ("pass", "fail", "missing")
DIRECTIONS = ("at_least", "at_most")
EVALUATION_VERSION = 1


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

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "metric": self.metric,
            "value": _finite(self.value),
            "threshold": _finite(self.threshold),
            "direction": self.direction,
            "severity": self.severity,
            "passed": self.passed,
            "outcome": self.outcome,
            "reason": self.reason,
        }


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
    return check.name or (f"{check.metric}_delta" if check.relative_to_production else check.metric)


def judge_check(check: GateCheck, metric: MetricValue | None) -> CheckResult:
    """One configured check against the metric it names; a missing or non-finite value fails."""
    name = check_name(check)
    field = "delta" if check.relative_to_production else "value"
    label = f"{check.metric} {'delta vs production' if check.relative_to_production else ''}".strip()
    value = None if metric is None else getattr(metric, field)
    if value is None or not math.isfinite(value):
        # A metric that was not computed must never pass silently: that is how gates rot.
        why = "was not computed" if metric is None else f"has no {field}"
        return CheckResult(name, check.metric, None, check.threshold, check.direction, check.severity,
                           False, "missing", f"{label} {why}; cannot judge (needs {_bound(check)})")
    passed = value >= check.threshold if check.direction == "at_least" else value <= check.threshold
    operator = {("at_least", True): ">=", ("at_least", False): "<",
                ("at_most", True): "<=", ("at_most", False): ">"}[(check.direction, passed)]
    reason = f"{label} {_fmt(value)} {operator} {_fmt(check.threshold)}"
    return CheckResult(name, check.metric, float(value), check.threshold, check.direction, check.severity,
                       passed, "pass" if passed else "fail", reason)


def decide(comparison: Comparison, accounting: Accounting, gate: GateConfig) -> Decision:
    """Run the built-in checks, then each configured check, and decide."""
    checks = [builtin.judge(accounting, gate) for builtin in BUILTIN_CHECKS]
    checks += [judge_check(check, comparison.metric(check.metric)) for check in gate.checks]
    critical = [c for c in checks if not c.passed and c.severity == "critical"]
    warnings = [c for c in checks if not c.passed and c.severity == "warning"]
    status: Status = "Rejected" if critical else "Approved"
    reasons = [f"{c.name}: {c.reason}" for c in critical]
    if not critical:
        reasons.append(f"all {sum(1 for c in checks if c.severity == 'critical')} critical checks passed")
    reasons += [f"warning {c.name}: {c.reason}" for c in warnings]
    return Decision(status, tuple(checks), tuple(reasons), headline_metrics(comparison),
                    accounting_json(accounting))


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
