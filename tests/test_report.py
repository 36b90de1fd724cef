"""Report: golden report.json and summary.md, a self-contained HTML page, and a summary that always fits.

Regenerate the golden files deliberately with SHADOW_EVAL_UPDATE_GOLDEN=1 and review the diff.
"""
from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest

from analysis.gate import decide
from analysis.report import SUMMARY_LIMIT, build_report, render_html, summary_markdown
from analysis.results import Accounting, Comparison, MetricValue
from steps import report as report_step
from steps.config import GateCheck, GateConfig

GOLDEN = Path(__file__).parent / "golden"
UPDATE = os.environ.get("SHADOW_EVAL_UPDATE_GOLDEN") == "1"

RUN_INFO = {"run_id": "20250301T120000Z-abc123", "started_at": "2025-03-01T12:00:00Z",
            "candidate_package": "fraud/7", "status_at_start": "PendingManualApproval",
            "config": {"gate": {"min_coverage": 0.99}, "capture": {"endpoint": "fraud-prod"}},
            "report_uri": "runs/20250301T120000Z-abc123/report/report.html"}
ACCOUNTING = Accounting(captured=1200, joined=1188, quarantined=12,
                        by_reason={"malformed_json": 2, "replay_file_failed": 10})
COMPARISON = Comparison(
    metrics=(
        MetricValue("label_agreement", 0.9731, support=1188),
        MetricValue("cohen_kappa", 0.9102, support=1188),
        MetricValue("accuracy", 0.9411, production=0.9385, candidate=0.9411, delta=0.0026, ci_low=-0.004,
                    ci_high=0.0093, support=1188),
        MetricValue("psi", float("nan"), support=1188),
        MetricValue("accuracy", 0.81, slice="hour=03", production=0.9, candidate=0.81, delta=-0.09, support=40),
    ),
    flip_matrix={"legit": {"legit": 1001, "fraud": 12}, "fraud": {"legit": 20, "fraud": 155}},
    score_delta={"mean": 0.0012, "std": 0.021, "min": -0.31, "p01": -0.05, "p05": -0.02, "p50": 0.0008,
                 "p95": 0.024, "p99": 0.06, "max": 0.27, "mean_abs": 0.011},
    has_ground_truth=True, task="classification",
    settings={"task_reason": "ground truth holds non-numeric values, so they are class labels",
              "task_source": "detected"},
)
GATE = GateConfig(min_records=500, min_coverage=0.99, checks=(
    GateCheck("label_agreement", 0.98, name="agreement"),
    GateCheck("accuracy", -0.01, relative_to_production=True),
    GateCheck("psi", 0.2, "at_most", severity="warning"),
))
DECISION = decide(COMPARISON, ACCOUNTING, GATE)


def _golden(name: str, text: str) -> None:
    path = GOLDEN / name
    if UPDATE:
        path.parent.mkdir(exist_ok=True)
        path.write_text(text, encoding="utf-8")
    assert path.exists(), f"no golden file {path}; run with SHADOW_EVAL_UPDATE_GOLDEN=1 and review it"
    assert text == path.read_text(encoding="utf-8")


def test_report_json_matches_golden():
    report = build_report(RUN_INFO, ACCOUNTING, COMPARISON, DECISION)
    _golden("report.json", json.dumps(report, indent=2, ensure_ascii=False, allow_nan=False) + "\n")
    assert list(report) == ["report_version", "run", "verdict", "accounting", "checks", "headline", "metrics",
                            "flip_matrix", "score_delta", "has_ground_truth", "task", "statistics", "diff",
                            "segments", "distributions", "weak_segments"]


def test_summary_matches_golden():
    _golden("summary.md", summary_markdown(build_report(RUN_INFO, ACCOUNTING, COMPARISON, DECISION)))


def test_html_is_one_self_contained_escaped_page():
    hostile = Comparison(COMPARISON.metrics, {"<script>alert(1)</script>": {"x": 3}}, COMPARISON.score_delta)
    run_info = {**RUN_INFO, "candidate_package": 'fraud/7"><img src=x onerror=alert(1)>'}
    page = render_html(build_report(run_info, ACCOUNTING, hostile, DECISION))
    assert "<h1>Rejected</h1>" in page and 'class="banner bad"' in page
    assert "<svg" in page and "<style>" in page
    lower = page.lower()
    assert not re.search(r"<(script|img|link|iframe|object|embed)\b", lower)
    assert not re.search(r"<[^>]*\s(src|href|on\w+)\s*=", lower)  # no fetching attributes, no handlers
    for forbidden in ("url(", "@import", "http://", "https://"):
        assert forbidden not in lower, forbidden
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    for section in ("Records", "Quarantine by reason", "Checks", "Metrics", "Label flips", "Score delta"):
        assert re.search(rf"<h[23]>{section}", page), section
    assert "1200 captured = 1188 joined + 12 quarantined" in page
    assert 'id="verdict"' in page


def _computed():
    """A comparison computed from records: every section of the page has something to draw."""
    import numpy as np
    import pandas as pd

    from analysis.compare import compare
    from steps.config import CompareConfig, SliceConfig

    rng = np.random.default_rng(5)
    n = 90
    production = rng.random(n)
    candidate = np.clip(production + rng.normal(0, 0.08, n), 0, 1)
    frame = pd.DataFrame({
        "record_id": [f"e{i}:0" for i in range(n)], "input_text": [f"{i},<b>{i % 3}</b>" for i in range(n)],
        "custom_attributes": [f"client={'web' if i % 3 else 'ios'}" for i in range(n)],
        "production_raw": [f'{{"score":{p}}}' for p in production], "candidate_raw": [f"{c},x" for c in candidate],
        "production_replay_raw": ["r"] * n, "production_score": production, "candidate_score": candidate,
        "production_replay_score": production + rng.normal(0, 0.001, n),
        "production_label": (production >= 0.5).astype(int).astype(str),
        "candidate_label": (candidate >= 0.5).astype(int).astype(str),
        "production_replay_label": (production >= 0.5).astype(int).astype(str),
        "production_hash": [f"p{i}" for i in range(n)], "candidate_hash": [f"c{i}" for i in range(n)],
        "tolerant_match": [False] * n, "ground_truth_label": (rng.random(n) < production).astype(int).astype(str),
    })
    config = CompareConfig(bootstrap_resamples=100, min_slice_support=20,
                           slices=(SliceConfig("client", "attribute", key="client"),))
    return compare(frame, config)


def test_html_draws_every_plot_and_flags_slices():
    comparison = _computed()
    gate = GateConfig(min_records=10, min_coverage=0.9, checks=(
        GateCheck("accuracy", -0.5, relative_to_production=True, judge_on="interval"),
        GateCheck("label_agreement", 0.999, slices=True)))
    accounting = Accounting(captured=90, joined=90, quarantined=0)
    decision = decide(comparison, accounting, gate)
    report = build_report(RUN_INFO, accounting, comparison, decision)
    json.dumps(report, allow_nan=False)
    page = render_html(report)
    for label in ("production vs candidate scores", "score distributions", "score delta histogram",
                  "label flip matrix", "deltas with intervals"):
        assert f'aria-label="{label}"' in page, label
    for section in ("Noise floor", "Quality against ground truth", "Typed diff", "Threshold crossings",
                    "Most changed records", "Output fields only production has", "Slices"):
        assert re.search(rf"<h[23]>{section}", page), section
    assert "client=web" in page and "&lt;b&gt;" in page and "<b>1</b>" not in page
    assert not re.search(r"<(script|img|link|iframe)\b", page.lower())
    summary = summary_markdown(report)
    assert len(summary) <= SUMMARY_LIMIT and RUN_INFO["run_id"] in summary and RUN_INFO["report_uri"] in summary


def test_html_says_approved_when_approved():
    decision = decide(COMPARISON, ACCOUNTING, GateConfig(min_records=1, min_coverage=0.9))
    page = render_html(build_report(RUN_INFO, ACCOUNTING, COMPARISON, decision))
    assert "<h1>Approved</h1>" in page and 'class="banner ok"' in page


@pytest.mark.parametrize("failures, name_length", [(0, 10), (5, 10), (60, 40), (400, 500)])
def test_summary_always_fits_the_registry_limit(failures, name_length):
    metrics = tuple(MetricValue("m" * name_length + str(i), 0.1, support=1) for i in range(failures))
    checks = tuple(GateCheck(m.name, 0.5, name=f"check-{i}-" + "x" * name_length) for i, m in enumerate(metrics))
    comparison = Comparison(metrics, {}, {})
    decision = decide(comparison, ACCOUNTING, GateConfig(min_records=1, min_coverage=0.99, checks=checks))
    summary = summary_markdown(build_report({**RUN_INFO, "run_id": "r" * 300}, ACCOUNTING, comparison, decision))
    assert len(summary) <= SUMMARY_LIMIT
    first = summary.splitlines()[0]
    assert first.startswith(f"**{decision.status}**") and "rrrr" in first
    assert summary.endswith(f"Report: {RUN_INFO['report_uri']}\n")  # provenance survives every cut
    if failures:
        assert "- check-0-" in summary  # the first reason survives
        if len("".join(decision.reasons)) > SUMMARY_LIMIT:
            assert re.search(r"… \d+ more lines? in report\.json\nReport: ", summary)


def test_report_stage_writes_three_files(tmp_path):
    local_info = {k: v for k, v in RUN_INFO.items() if k != "report_uri"}
    paths = report_step.run(tmp_path / "runs" / "r1", local_info, ACCOUNTING, COMPARISON, DECISION)
    assert sorted(paths) == ["report.html", "report.json", "summary.md"]
    assert all(p.parent == tmp_path / "runs" / "r1" / "report" for p in paths.values())
    report = json.loads(paths["report.json"].read_text())
    assert report["verdict"]["status"] == "Rejected"
    assert report["run"]["report_uri"] == str(paths["report.html"])
    assert paths["summary.md"].read_text().startswith("**Rejected**")
    assert sorted(p.name for p in paths["report.json"].parent.iterdir()) == sorted(paths)


def test_report_stage_keeps_a_given_report_location(tmp_path):
    """A cloud job passes the S3 location; summary.md (the approval description) must name it, not the job folder."""
    uri = "s3://bucket/shadow-eval/runs/r1/report/report.html"
    paths = report_step.run(tmp_path / "opt" / "ml" / "r1", {**RUN_INFO, "report_uri": uri}, ACCOUNTING, COMPARISON,
                            DECISION)
    assert paths["summary.md"].read_text().endswith(f"Report: {uri}\n")
    assert json.loads(paths["report.json"].read_text())["run"]["report_uri"] == uri
