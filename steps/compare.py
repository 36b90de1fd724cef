"""Compare stage: a run's joined records in, its Comparison out; its metrics as table rows."""
from __future__ import annotations

import dataclasses
import tempfile
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from analysis import compare as paired
from analysis.gate import Decision
from analysis.ground_truth import LabelVocabularies
from analysis.results import Comparison
from steps import invocations, join
from steps.config import CompareConfig, Config

# What the statistics read, part by part; the record ids only sort the records (in DuckDB) and the
# inputs are read back only for the few top changed records.
_COLUMNS = [
    "inference_time", "production_raw", "candidate_raw", "production_replay_raw",
    "production_score", "candidate_score", "production_replay_score",
    "production_label", "candidate_label", "production_replay_label",
    "production_hash", "candidate_hash", "tolerant_match", "noise_abs_diff", "ground_truth_label",
]
_SLICE_COLUMNS = {"hour": "inference_time", "attribute": "custom_attributes", "feature": "input_text"}
_AUTO_SEGMENT_COLUMNS = ("input_text", "custom_attributes")
_CHANGE_COLUMNS = ["record_id", "input_text", "production_raw", "candidate_raw"]
# Sorting the record ids spills to disk beyond this, so the sort's memory does not grow with the window
# (one thread: DuckDB's buffers are per thread, so more cores would otherwise need a larger limit).
DUCKDB_MEMORY_LIMIT = "64MB"
DUCKDB_THREADS = 1


class LabelVocabularyError(ValueError):
    """Ground-truth labels that share no value with either model's labels: nothing could be judged on them."""


def with_segment_margins(config: Config) -> CompareConfig:
    """config.compare with the segment margins left unset taken from the gate's policy (one margin, one meaning)."""
    compare, policy = config.compare, config.gate.policy
    return dataclasses.replace(
        compare,
        segment_accuracy_margin=policy.accuracy_margin if compare.segment_accuracy_margin is None
        else compare.segment_accuracy_margin,
        segment_mae_margin=policy.mae_margin if compare.segment_mae_margin is None else compare.segment_mae_margin)


def run(config: Config, run_dir: Path) -> Comparison:
    """Every declared statistic over the run's joined records, for the whole run and each slice.

    Streams join/records part by part: memory holds one part's frame plus a few numbers per record.
    Raises LabelVocabularyError before any verdict exists when the labels cannot be scored.
    """
    run_dir = Path(run_dir)
    parts = join.parquet_parts(run_dir / "join" / "records")
    compare_config = with_segment_margins(config)
    columns = sorted({*_COLUMNS, *(_SLICE_COLUMNS.get(s.by, "input_text") for s in compare_config.slices),
                      *(_AUTO_SEGMENT_COLUMNS if compare_config.auto_segments else ())})
    schema = pa.schema([join.RECORDS_SCHEMA.field(name) for name in columns])
    accumulator = paired.Accumulator(compare_config, compare_config.task)
    vocabularies = LabelVocabularies()
    offsets = [0]
    for part in parts:
        frame = pq.read_table(part, columns=columns).to_pandas()
        vocabularies.add(*(frame[name].dropna().unique() for name in
                           ("ground_truth_label", "production_label", "candidate_label")))
        accumulator.add(frame)
        offsets.append(offsets[-1] + len(frame))
        del frame
    if not parts:
        accumulator.add(schema.empty_table().to_pandas())
    mismatch = vocabularies.mismatch(compare_config.task)
    if mismatch:
        raise LabelVocabularyError(mismatch)
    order = record_order(parts, offsets, run_dir)

    def fetch(indices: np.ndarray) -> pd.DataFrame:
        """The rows at these positions (counting records part after part), in the order asked."""
        which = np.searchsorted(offsets, indices, side="right") - 1
        rows = {}
        for k in sorted(set(which.tolist())):
            wanted = indices[which == k] - offsets[k]
            table = pq.read_table(parts[k], columns=_CHANGE_COLUMNS).take(pa.array(wanted))
            for position, row in zip(wanted, table.to_pylist()):
                rows[int(position) + offsets[k]] = row
        return pd.DataFrame([rows[int(i)] for i in indices], columns=_CHANGE_COLUMNS)

    return invocations.with_operational(accumulator.finish(order, fetch), config, run_dir)


def record_order(parts: list[Path], offsets: list[int], scratch_parent: Path) -> np.ndarray:
    """Positions of the records in record-id order (ties in part, then row order), sorted by DuckDB.

    Position p is row p - offsets[k] of parts[k]. Equal to a stable sort of all record ids at once, but
    the ids stay in DuckDB, which spills to a scratch folder beyond DUCKDB_MEMORY_LIMIT.
    """
    total = offsets[-1]
    order = np.empty(total, dtype=np.int64)
    if not total:
        return order
    files = pa.table({"filename": [str(part) for part in parts], "part": list(range(len(parts))),
                      "offset": offsets[:-1]})
    with tempfile.TemporaryDirectory(dir=scratch_parent, prefix=".compare-") as scratch, duckdb.connect() as db:
        db.execute(f"SET temp_directory = '{_sql_text(scratch)}'").fetchall()
        db.execute(f"SET memory_limit = '{DUCKDB_MEMORY_LIMIT}'").fetchall()
        db.execute(f"SET threads = {DUCKDB_THREADS}").fetchall()
        db.execute("SET preserve_insertion_order = false").fetchall()
        db.register("files", files)
        listing = ", ".join(f"'{_sql_text(str(part))}'" for part in parts)
        reader = db.sql(f"""
            SELECT f."offset" + r.file_row_number AS position
            FROM read_parquet([{listing}], filename = true, file_row_number = true) AS r
            JOIN files AS f ON f.filename = r.filename
            ORDER BY r.record_id NULLS LAST, f.part, r.file_row_number""").to_arrow_reader(1 << 16)
        done = 0
        for batch in reader:
            values = batch.column(0).to_numpy()
            order[done:done + values.size] = values
            done += values.size
    if done != total:
        raise RuntimeError(f"sorting record ids gave {done} positions for {total} records")
    return order


def _sql_text(text: str) -> str:
    return text.replace("'", "''")


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
