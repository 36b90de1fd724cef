"""Report stage: write report/report.json, report/summary.md and report/report.html for a run."""
from __future__ import annotations

import json
import logging
import os
import uuid
from pathlib import Path

from analysis.gate import Decision
from analysis.report import build_report, render_html, summary_markdown
from analysis.results import Accounting, Comparison

log = logging.getLogger(__name__)


def run(run_dir: str | Path, run_info: dict, accounting: Accounting, comparison: Comparison,
        decision: Decision) -> dict[str, Path]:
    """Write the three report files; returns their paths by file name.

    run_info["report_uri"], when given (the S3 location a cloud job uploads to), is where the report
    says it lives; otherwise the local report.html.
    """
    folder = Path(run_dir) / "report"
    location = run_info.get("report_uri") or str(folder / "report.html")
    report = build_report({**run_info, "report_uri": location}, accounting, comparison, decision)
    contents = {
        "report.json": json.dumps(report, indent=2, ensure_ascii=False, allow_nan=False) + "\n",
        "summary.md": summary_markdown(report),
        "report.html": render_html(report),
    }
    paths = {name: _write(folder / name, text) for name, text in contents.items()}
    log.info("report: %s (%s)", paths["report.html"], decision.status)
    return paths


def _write(target: Path, text: str) -> Path:
    """Write beside the target, then rename: a reader never sees half a report."""
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary = target.with_name(f".{target.name}.{uuid.uuid4().hex}.tmp")
    temporary.write_text(text, encoding="utf-8")
    os.replace(temporary, target)
    return target
