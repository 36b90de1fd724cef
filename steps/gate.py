"""Gate stage: decide and write report/evaluation.json; `record` puts the verdict in the registry, last.

The registry update is a compare-and-set from the status the package had when the run began: a
package someone approved or rejected while the run was going is left alone, and evaluation.json
says so. An Inconclusive verdict keeps the status the package had (PendingManualApproval) and only
updates its description and adds a history entry carrying the reasons. `decision` in
evaluation.json is the gate's verdict either way (what a ConditionStep reads). A required check
whose metric is missing fails the run (GateFailure): evaluation.json says why, the registry is
not touched.
"""
from __future__ import annotations

import json
import logging
import os
import uuid
from pathlib import Path
from collections.abc import Sequence
from typing import Any

from analysis.gate import CheckResult, Decision, decide
from analysis.report import build_report, summary_markdown
from analysis.results import Accounting, Comparison
from steps.backends.registry import DESCRIPTION_LIMIT, METADATA_VALUE_LIMIT, Registry, RegistryError
from steps.config import Config

log = logging.getLogger(__name__)


class GateFailure(ValueError):
    """The run cannot record a verdict: a required check could not be computed."""


def run(config: Config, run_dir: str | Path, comparison: Comparison, accounting: Accounting,
        registry: Registry | None, package_id: str | None, status_at_start: str | None, run_id: str,
        extra_checks: Sequence[CheckResult] = ()) -> Decision:
    """Decide and write report/evaluation.json; with a registry, also record the verdict (see `record`).

    registry None: a later step records the verdict (`record`, called last by the local runner once
    every table and report is in place; the SageMaker pipeline's Approve/Reject/Inconclusive step).
    extra_checks: results judged outside the policy (automatic segments), added to the decision.
    """
    run_dir = Path(run_dir)
    decision = decide(comparison, accounting, config.gate, extra_checks)
    log.info("run %s: gate says %s (%s)", run_id, decision.status, "; ".join(decision.reasons[:3]))
    evaluation = decision.to_evaluation()
    if decision.run_failure:
        evaluation["run_failed"] = decision.run_failure
        evaluation["registry"] = {"package_id": package_id, "status_at_start": status_at_start, "updated": False,
                                  "note": "the run failed; registry untouched"}
        write_evaluation(run_dir, evaluation)
        raise GateFailure(f"run {run_id} failed: {decision.run_failure}")
    evaluation["registry"] = {"package_id": package_id, "status_at_start": status_at_start,
                              "updated": False, "note": "recorded by a later step"}
    write_evaluation(run_dir, evaluation)
    if registry is not None:
        record(run_dir, comparison, accounting, decision, registry, package_id, status_at_start, run_id)
    return decision


def record(run_dir: str | Path, comparison: Comparison, accounting: Accounting, decision: Decision,
           registry: Registry, package_id: str | None, status_at_start: str | None, run_id: str) -> dict[str, Any]:
    """Record the verdict in the registry (compare-and-set) and say what happened in evaluation.json.

    The last step of a run: everything before it can fail and be resumed with the registry untouched.
    """
    run_dir = Path(run_dir)
    report_path = run_dir / "report" / "report.html"
    try:
        summary = summary_markdown(build_report({"run_id": run_id, "report_uri": str(report_path)}, accounting,
                                                comparison, decision))
        outcome = record_verdict(registry, package_id, status_at_start, decision.status, summary,
                                 run_id, _location(report_path, run_id))
    except RegistryError as exc:
        _note_registry(run_dir, {"package_id": package_id, "status_at_start": status_at_start,
                                 "updated": False, "note": f"registry error: {exc}"})
        raise
    _note_registry(run_dir, outcome)
    return outcome


def _note_registry(run_dir: Path, outcome: dict[str, Any]) -> None:
    path = run_dir / "report" / "evaluation.json"
    evaluation = json.loads(path.read_text(encoding="utf-8"))
    write_evaluation(run_dir, {**evaluation, "registry": outcome})


def write_evaluation(run_dir: Path, evaluation: dict[str, Any]) -> Path:
    """Write report/evaluation.json atomically (a ConditionStep must never read half a file)."""
    target = run_dir / "report" / "evaluation.json"
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary = target.with_name(f".{target.name}.{uuid.uuid4().hex}.tmp")
    temporary.write_text(json.dumps(evaluation, indent=2, allow_nan=False) + "\n", encoding="utf-8")
    os.replace(temporary, target)
    return target


def record_verdict(registry: Registry, package_id: str | None, status_at_start: str | None, verdict: str,
                   description: str, run_id: str, report_location: str) -> dict[str, Any]:
    """Set the package to the verdict if it still has the status the run began from; say what happened.

    Inconclusive is no approval status: the package keeps the status the run began from, and gets the
    description and a history entry with the reasons (a compare-and-set from and to that status).
    """
    base = {"package_id": package_id, "status_at_start": status_at_start}
    if package_id is None:
        return {**base, "status_now": None, "updated": False, "note": "no candidate package; registry untouched"}
    if status_at_start is None:
        now = registry.describe(package_id).status
        log.warning("run %s: status of %s at start unknown; left it %s", run_id, package_id, now)
        return {**base, "status_now": now, "updated": False,
                "note": "status at the start of the run is unknown; registry untouched"}
    metadata = {"shadow_eval_run_id": run_id, "shadow_eval_decision": verdict,
                "shadow_eval_report": report_location}
    if len(description) > DESCRIPTION_LIMIT:  # a summary edited by hand; the registry would refuse it whole
        description = description[:DESCRIPTION_LIMIT - 1] + "…"
    target = verdict if verdict in ("Approved", "Rejected") else status_at_start
    if registry.set_status(package_id, status_at_start, target, description, run_id, metadata):
        log.info("run %s: %s %s -> %s (%s)", run_id, package_id, status_at_start, target, verdict)
        note = f"set {verdict} from {status_at_start}" if target == verdict else \
            f"{verdict}: left {status_at_start}; description and history record the reasons"
        return {**base, "status_now": target, "updated": True, "note": note}
    now = registry.describe(package_id).status
    log.warning("run %s: %s changed from %s to %s while the run went on; left it alone (gate said %s)",
                run_id, package_id, status_at_start, now, verdict)
    return {**base, "status_now": now, "updated": False,
            "note": f"status changed from {status_at_start} to {now} since the run began; left alone"}


def _location(report_path: Path, run_id: str) -> str:
    """The report's absolute path, or its workspace-relative one when that is too long for metadata."""
    absolute = str(report_path.resolve())
    return absolute if len(absolute) <= METADATA_VALUE_LIMIT else f"runs/{run_id}/report/report.html"
