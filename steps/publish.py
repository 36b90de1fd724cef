"""Publish a finished run's rows to the catalog: the same call locally (DuckDB) and in the cloud (Glue)."""
from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

from analysis.gate import Decision
from analysis.results import Accounting, Comparison
from steps import compare, invocations
from steps.backends.catalog import Catalog


def publish_run(catalog: Catalog, run_dir: Path, run_info: dict[str, Any], accounting: Accounting,
                comparison: Comparison, decision: Decision, report_uri: str) -> None:
    """Replace the run's partitions of every table and its shadow_runs row, then refresh the views."""
    run_id = run_info["run_id"]
    catalog.write_partition("shadow_records", run_id, _parts(run_dir, "join", "records"))
    # Prepare and join each quarantine what their stage could not use; the table holds both.
    catalog.write_partition("shadow_quarantine", run_id,
                            _parts(run_dir, "prepare", "quarantine") + _parts(run_dir, "join", "quarantine"))
    catalog.write_partition("shadow_metrics", run_id, compare.metrics_frame(comparison, decision, run_id))
    catalog.write_partition("shadow_invocations", run_id, invocations.parts(run_dir))
    config = run_info["config"]
    capture = config["capture"]
    catalog.write_run({
        "run_id": run_id,
        "started_at": run_info["started_at"],
        "finished_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z"),
        "endpoint": capture.get("endpoint"),
        "variant": capture.get("variant"),
        "window_start": capture.get("window_start"),
        "window_end": capture.get("window_end"),
        "production_model": run_info.get("production_model") or config["production"]["model"],
        "candidate_model": run_info.get("candidate_model") or config["candidate"]["model"],
        "candidate_package": run_info["candidate_package"],
        "captured": accounting.captured,
        "joined": accounting.joined,
        "quarantined": accounting.quarantined,
        "coverage": accounting.coverage,
        "decision": decision.status,
        "report_uri": report_uri,
    })
    catalog.refresh()


def _parts(run_dir: Path, stage: str, folder: str) -> list[Path]:
    return sorted((run_dir / stage / folder).glob("*.parquet"))
