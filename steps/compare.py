"""Compare stage: a run's joined records in, its Comparison out; its metrics as table rows."""
from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pandas as pd

from analysis import compare as paired
from analysis.gate import Decision
from analysis.results import Comparison
from steps import join
from steps.config import Config

# What the statistics read; the inputs themselves stay on disk.
_COLUMNS = [
    "record_id", "inference_time", "production_raw", "candidate_raw", "production_replay_raw",
    "production_score", "candidate_score", "production_replay_score",
    "production_label", "candidate_label", "production_replay_label",
    "production_hash", "candidate_hash", "exact_match", "tolerant_match", "label_match",
    "score_abs_diff", "noise_abs_diff", "ground_truth_label",
    # slices (hour, features, custom attributes) and the top changed records with their inputs
    "custom_attributes", "input_text",
]


def run(config: Config, run_dir: Path) -> Comparison:
    """Every declared statistic over the run's joined records, for the whole run and each slice."""
    return paired.compare(join.load_joined(run_dir, _COLUMNS), config.compare, config.compare.task)


def metrics_frame(comparison: Comparison, decision: Decision, run_id: str) -> pd.DataFrame:
    """One shadow_metrics row per metric and slice, with the gate's threshold where a check used it.

    A slice check marks each slice it judged: passed is false where the slice was flagged.
    """
    checks: dict[tuple[str, str], Any] = {}
    for c in decision.checks:
        if c.slices:
            for entry in c.slices:
                verdict = SimpleNamespace(threshold=c.threshold, passed=not entry["flagged"])
                checks.setdefault((c.metric, entry["slice"]), verdict)
        else:
            checks.setdefault((c.metric, "all"), c)
    rows = []
    for metric in comparison.metrics:
        check = checks.get((metric.name, metric.slice))
        rows.append({
            "run_id": run_id,
            "metric": metric.name,
            "slice": metric.slice,
            "value": metric.value,
            "production": metric.production,
            "candidate": metric.candidate,
            "delta": metric.delta,
            "ci_low": metric.ci_low,
            "ci_high": metric.ci_high,
            "support": metric.support,
            "threshold": check.threshold if check else None,
            "passed": check.passed if check else None,
        })
    columns = ["run_id", "metric", "slice", "value", "production", "candidate", "delta",
               "ci_low", "ci_high", "support", "threshold", "passed"]
    frame = pd.DataFrame(rows, columns=columns)
    return frame.astype({"support": "int64", "passed": "boolean"}).astype(
        {c: "float64" for c in ("value", "production", "candidate", "delta", "ci_low", "ci_high", "threshold")})
