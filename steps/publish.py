"""Publish a finished run's rows to the catalog: the same call locally (DuckDB) and in the cloud (Glue)."""
from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from analysis.gate import Decision
from analysis.quarantine import withheld_detail
from analysis.results import Accounting, Comparison
from steps import compare, invocations
from steps.backends.catalog import Catalog


def publish_run(catalog: Catalog, run_dir: Path, run_info: dict[str, Any], accounting: Accounting,
                comparison: Comparison, decision: Decision, report_uri: str) -> None:
    """Replace the run's partitions of every table and its shadow_runs row, then refresh the views."""
    run_id = run_info["run_id"]
    catalog.write_partition("shadow_records", run_id, _parts(run_dir, "join", "records"))
    # Prepare and join each quarantine what their stage could not use; the table holds both.
    quarantine = _parts(run_dir, "prepare", "quarantine") + _parts(run_dir, "join", "quarantine")
    policy = run_info["config"].get("tables", {}).get("input_text", "keep")
    catalog.write_partition("shadow_quarantine", run_id,
                            quarantine if policy == "keep" else _withholding(quarantine))
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


def _withholding(parts: list[Path]) -> Iterator[pa.Table]:
    """The quarantine parts, one at a time, with every detail that may quote the payload withheld."""
    for part in parts:
        table = pq.read_table(part)
        details = [withheld_detail(code, detail) for code, detail in
                   zip(table.column("reason").to_pylist(), table.column("detail").to_pylist())]
        position = table.schema.get_field_index("detail")
        yield table.set_column(position, table.schema.field(position), pa.array(details, pa.string()))


def _parts(run_dir: Path, stage: str, folder: str) -> list[Path]:
    return sorted((run_dir / stage / folder).glob("*.parquet"))
