"""Regate: re-judge a past run with ground truth that arrived later, without replaying anything.

    shadow-eval regate RUN_ID --ground-truth DIR [--workspace W]

Labels are joined onto the run's joined records (join/records parts are rewritten in place: a
label in DIR replaces the record's old one, a record DIR has no label for keeps its old one), then
the comparison, the decision, report/ (evaluation.json, report.json, report.html, summary.md) and
the run's shadow_records / shadow_metrics / shadow_runs rows are recomputed.

An Inconclusive run ("awaiting ground truth") becomes Approved or Rejected here once the labels
decide it; exit status as `run`: 0 Approved, 3 Rejected, 4 Inconclusive.

The registry follows the compare-and-set rule: the package moves only from the status the run
began with, or from the verdict this tool itself recorded for this run (the last transition in the
package's history names this run and the current status, and the package metadata says this run
decided it). A package someone approved or rejected by hand is never overwritten.
"""
from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import logging
import os
import tempfile
import uuid
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from analysis.gate import Decision, decide
from analysis.report import build_report, summary_markdown
from analysis.results import Accounting
from steps import compare, join, names, report
from steps.backends.catalog import LocalCatalog
from steps.backends.registry import LocalRegistry, Registry
from steps.config import Config, ConfigError, config_from_mapping
from steps.gate import GateFailure, record_verdict, write_evaluation
from steps.publish import publish_run

log = logging.getLogger(__name__)
EXIT_STATUS = {"Approved": 0, "Rejected": 3, "Inconclusive": 4}
"""As `run`: 0 Approved, 3 Rejected, 4 Inconclusive (1 failed, 2 bad usage come from the command line)."""
RUN_ID_KEY, DECISION_KEY = "shadow_eval_run_id", "shadow_eval_decision"


@dataclasses.dataclass(frozen=True)
class RegateOutcome:
    run_id: str
    decision: Decision
    accounting: Accounting
    labels: dict[str, int]
    """Ground truth: read, matched (records now labelled by DIR), relabelled (label changed), labelled (total)."""
    registry: dict[str, Any]
    report_path: Path

    def to_json(self) -> dict[str, Any]:
        return {"run_id": self.run_id, "decision": self.decision.status, "reasons": list(self.decision.reasons),
                "task": self.decision.task, "labels": self.labels,
                "registry": self.registry, "report": str(self.report_path),
                "checks": [c.to_json() for c in self.decision.checks]}


def run(workspace: str | Path, run_id: str, ground_truth_root: str | Path,
        registry: Registry | None = None) -> RegateOutcome:
    """Re-join labels from ground_truth_root onto a finished run, re-compare, re-decide, rewrite and re-publish."""
    workspace = Path(workspace)
    try:
        names.check("run id", run_id)
    except names.InvalidName as exc:
        raise ConfigError("<regate>", "RUN_ID", f"{exc}; give the id of a run in {workspace / 'runs'}") from None
    run_dir = workspace / "runs" / run_id
    record = run_dir / "run.json"
    if not record.is_file():
        raise FileNotFoundError(f"no run {run_id} in {workspace} (no {record})")
    if not (run_dir / "join" / "records").is_dir():
        raise FileNotFoundError(f"run {run_id} never finished its join ({run_dir / 'join' / 'records'} is missing)")
    info = json.loads(record.read_text(encoding="utf-8"))
    if info.get("run_id", run_id) != run_id:
        raise ConfigError(str(record), "run_id", f"says {info.get('run_id')!r}, not {run_id!r}: the folder was "
                          "copied or renamed; regate a run where it was made")
    mapping = info["config"]
    mapping["ground_truth"] = {**mapping.get("ground_truth", {}), "root": str(ground_truth_root)}
    config = config_from_mapping(mapping, f"{record} (+ --ground-truth)")
    if registry is None and config.registry.kind != "local":
        raise ConfigError(str(record), "registry.kind", "regate records verdicts in the local registry only; "
                          "re-run the SageMaker pipeline with the labels instead")

    labels = relabel(config, run_dir)
    accounting = _accounting(run_dir)
    comparison = compare.run(config, run_dir)
    decision = decide(comparison, accounting, config.gate)
    if decision.run_failure:
        raise GateFailure(f"regate {run_id} failed: {decision.run_failure}")
    log.info("regate %s: %s (%s)", run_id, decision.status, "; ".join(decision.reasons[:3]))

    report_path = run_dir / "report" / "report.html"
    run_info = {**info, "run_id": run_id, "regated_at": _utc_now(), "ground_truth_root": str(ground_truth_root)}
    registry = registry or LocalRegistry(workspace / config.registry.path)
    package, status_at_start = info.get("candidate_package"), info.get("status_at_start")
    evaluation = decision.to_evaluation()
    evaluation["registry"] = {"package_id": package, "status_at_start": status_at_start, "updated": False,
                              "note": "recorded by a later step"}
    evaluation["regate"] = {"at": run_info["regated_at"], "ground_truth_root": str(ground_truth_root), **labels}
    write_evaluation(run_dir, evaluation)
    paths = report.run(run_dir, run_info, accounting, comparison, decision)
    publish_run(LocalCatalog(workspace, config.tables.database), run_dir, run_info, accounting, comparison,
                decision, str(paths["report.html"]))
    # Publish, then decide: the registry moves only once every table and report says the same.
    summary = summary_markdown(build_report({"run_id": run_id, "report_uri": str(report_path)}, accounting,
                                            comparison, decision))
    outcome = record_regate_verdict(registry, package, status_at_start, decision.status, summary, run_id,
                                    str(report_path.resolve()))
    write_evaluation(run_dir, {**evaluation, "registry": outcome})
    return RegateOutcome(run_id, decision, accounting, labels, outcome, paths["report.html"])


def relabel(config: Config, run_dir: Path) -> dict[str, int]:
    """Join ground truth onto join/records/*.parquet in place (reusing the join's ground-truth reader)."""
    parts = join.parquet_parts(run_dir / "join" / "records")
    captured_parts = join.parquet_parts(run_dir / "prepare" / "records")
    matched = relabelled = labelled = 0
    with tempfile.TemporaryDirectory(dir=run_dir / "join", prefix=".regate-") as scratch, duckdb.connect() as db:
        counts = join.load_ground_truth(db, config, Path(scratch), captured_parts)
        for part in parts:
            table = pq.read_table(part)
            rows = table.select(["inference_id", "event_id", "record_index"]).to_pylist()
            new = join.truth_labels(db, rows) if counts.labels else [None] * len(rows)
            old = table.column("ground_truth_label").to_pylist()
            merged = [n if n is not None else o for n, o in zip(new, old)]
            matched += sum(1 for n in new if n is not None)
            relabelled += sum(1 for n, o in zip(new, old) if n is not None and n != o)
            labelled += sum(1 for m in merged if m is not None)
            position = table.schema.get_field_index("ground_truth_label")
            table = table.set_column(position, table.schema.field(position), pa.array(merged, pa.string()))
            temporary = part.with_name(f".{part.name}.{uuid.uuid4().hex}.tmp")
            pq.write_table(table, temporary)
            os.replace(temporary, part)
    return {"read": counts.labels, "matched": matched, "relabelled": relabelled, "labelled": labelled,
            "unknown": counts.unknown, "duplicates": counts.duplicates, "invalid": counts.invalid}


def record_regate_verdict(registry: Registry, package_id: str | None, status_at_start: str | None, verdict: str,
                          description: str, run_id: str, report_location: str) -> dict[str, Any]:
    """Compare-and-set from the status at start, or from this run's own earlier verdict; never over a manual change."""
    if package_id is None or status_at_start is None:
        return record_verdict(registry, package_id, status_at_start, verdict, description, run_id, report_location)
    now = registry.describe(package_id)
    if now.status == status_at_start:
        return record_verdict(registry, package_id, status_at_start, verdict, description, run_id, report_location)
    if own_verdict(registry, package_id, run_id):
        result = record_verdict(registry, package_id, now.status, verdict, description, run_id, report_location)
        return {**result, "status_at_start": status_at_start, "replaced_own_verdict": now.status}
    log.warning("regate %s: %s is %s, not this run's verdict (someone else decided); left alone", run_id, package_id,
                now.status)
    return {"package_id": package_id, "status_at_start": status_at_start, "status_now": now.status, "updated": False,
            "note": f"status is {now.status}, set by someone other than run {run_id}; left alone"}


def own_verdict(registry: Registry, package_id: str, run_id: str) -> bool:
    """Whether the package's current status is the verdict run_id recorded (and nothing changed it since)."""
    info = registry.describe(package_id)
    history = registry.history(package_id)
    if not history:
        return False
    last = history[-1]
    return (last.run_id == run_id and last.to_status == info.status
            and info.metadata.get(RUN_ID_KEY) == run_id and info.metadata.get(DECISION_KEY) == info.status)


def _accounting(run_dir: Path) -> Accounting:
    """The run's accounting from its parts; captured from the first evaluation.json when it is there."""
    joined = sum(pq.ParquetFile(part).metadata.num_rows for part in join.parquet_parts(run_dir / "join" / "records"))
    reasons: dict[str, int] = {}
    for folder in (run_dir / "prepare" / "quarantine", run_dir / "join" / "quarantine"):
        for part in join.parquet_parts(folder):
            for reason in pq.read_table(part, columns=["reason"]).column("reason").to_pylist():
                reasons[reason] = reasons.get(reason, 0) + 1
    quarantined = sum(reasons.values())
    captured = joined + quarantined
    previous = run_dir / "report" / "evaluation.json"
    if previous.exists():
        captured = json.loads(previous.read_text(encoding="utf-8")).get("accounting", {}).get("captured", captured)
    return Accounting(captured=captured, joined=joined, quarantined=quarantined, by_reason=dict(sorted(reasons.items())))


def add_regate_command(subparsers: Any) -> None:
    """`shadow-eval regate RUN_ID --ground-truth DIR`: re-judge a past run with labels that came later."""
    regate = subparsers.add_parser("regate", help="re-judge a past run with ground truth that arrived later")
    regate.add_argument("run_id", metavar="RUN_ID", type=names.argument("run id"))
    regate.add_argument("--ground-truth", required=True, help="Model Monitor ground-truth folder")
    regate.add_argument("--workspace", default=".shadow-eval", help="the workspace the run is in")
    regate.add_argument("--json", action="store_true", help="print one JSON object")
    regate.set_defaults(command=_cmd_regate)


def _cmd_regate(args: argparse.Namespace) -> int:
    outcome = run(args.workspace, args.run_id, args.ground_truth)
    if args.json:
        print(json.dumps(outcome.to_json(), indent=2, sort_keys=True))
    else:
        print(f"run {outcome.run_id} re-judged: {outcome.decision.status}")
        print(f"  ground truth: {outcome.labels['matched']} records labelled from the folder "
              f"({outcome.labels['relabelled']} changed), {outcome.labels['labelled']} labelled in all")
        for reason in outcome.decision.reasons:
            print(f"  - {reason}")
        print(f"  registry: {outcome.registry.get('note')}")
        print(f"  report: {outcome.report_path}")
    return EXIT_STATUS[outcome.decision.status]


def _utc_now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")
