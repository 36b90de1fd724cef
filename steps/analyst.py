"""What the analyst notebook calls: open the tables (local DuckDB or Athena) and read one run's story.

Every function takes `tables` (anything with `.query(sql) -> DataFrame`: LocalCatalog or GlueCatalog)
and returns a DataFrame or a small dict, so notebooks/shadow_run.ipynb holds no logic of its own.
The SQL is written for both engines (the same subset as the views in backends/sql/).
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pandas as pd

from steps.backends.catalog import RUN_ID, Catalog, CatalogError, LocalCatalog
from steps.config import load_config

NO_LABEL = "(none)"


def open_tables(workspace: str | Path | None = None, config: str | Path | None = None,
                boto3_session: Any = None) -> Catalog:
    """Athena when `config` has an aws: section (its database and workgroup), else `<workspace>/shadow.duckdb`.

    Without arguments, the environment decides: SHADOW_EVAL_CONFIG, then SHADOW_EVAL_WORKSPACE
    (default `.shadow-eval/demo`, where `shadow-eval demo` leaves its world).
    """
    config = config or os.environ.get("SHADOW_EVAL_CONFIG")
    if config:
        loaded = load_config(config)
        if loaded.aws is not None:
            from steps.backends.catalog_glue import GlueCatalog

            if boto3_session is None:
                import boto3

                boto3_session = boto3.Session(region_name=loaded.aws.region)
            return GlueCatalog(loaded.aws.uri("tables"), loaded.tables.database, boto3_session,
                               loaded.aws.athena_workgroup)
        workspace = workspace or loaded.workspace
        catalog = LocalCatalog(workspace, loaded.tables.database)
    else:
        catalog = LocalCatalog(workspace or os.environ.get("SHADOW_EVAL_WORKSPACE", ".shadow-eval/demo"))
    if not catalog.db_path.exists():
        raise FileNotFoundError(f"{catalog.db_path} does not exist: run `shadow-eval demo --workspace "
                                f"{catalog.workspace}` (or `shadow-eval run`) first")
    return catalog


def pick_run(tables: Catalog, run_id: str | None = None) -> dict[str, Any]:
    """The shadow_runs row of run_id, or of the latest run when None."""
    if run_id is not None:
        where = f"WHERE run_id = {_literal(run_id)}"
    else:
        where = ""
    frame = tables.query(f"SELECT * FROM shadow_runs {where} ORDER BY started_at DESC, run_id DESC LIMIT 1")
    if frame.empty:
        raise LookupError(f"no run {run_id!r} in shadow_runs" if run_id else "shadow_runs is empty: no run yet")
    return {k: (None if _missing(v) else v) for k, v in frame.iloc[0].to_dict().items()}


def accounting(tables: Catalog, run: dict[str, Any]) -> pd.DataFrame:
    """captured = joined + quarantined, the coverage, and whether the books balance, as one row."""
    row = {k: run[k] for k in ("run_id", "captured", "joined", "quarantined", "coverage", "decision")}
    row["balanced"] = run["captured"] == run["joined"] + run["quarantined"]
    return pd.DataFrame([row])


def quarantine(tables: Catalog, run: dict[str, Any]) -> pd.DataFrame:
    """Quarantined records of the run by stage and reason (view shadow_quarantine_by_reason)."""
    return tables.query("SELECT stage, reason, records, share_of_captured, example_record_id, example_detail "
                        f"FROM shadow_quarantine_by_reason WHERE run_id = {_literal(run['run_id'])} "
                        "ORDER BY records DESC, stage, reason")


def flip_matrix(tables: Catalog, run: dict[str, Any]) -> pd.DataFrame:
    """Records by production label (rows) and candidate label (columns); the diagonal agrees."""
    counts = tables.query("SELECT production_label, candidate_label, count(*) AS records FROM shadow_records "
                          f"WHERE run_id = {_literal(run['run_id'])} GROUP BY production_label, candidate_label")
    if counts.empty:
        return pd.DataFrame()
    counts = counts.astype({"production_label": object, "candidate_label": object})
    counts = counts.fillna({"production_label": NO_LABEL, "candidate_label": NO_LABEL})
    labels = sorted(set(counts["production_label"]) | set(counts["candidate_label"]))
    matrix = counts.pivot_table(index="production_label", columns="candidate_label", values="records",
                                aggfunc="sum", fill_value=0).reindex(index=labels, columns=labels, fill_value=0)
    matrix.index.name, matrix.columns.name = "production \\ candidate", None
    return matrix.astype("int64")


def label_flips(tables: Catalog, run: dict[str, Any], limit: int = 20) -> pd.DataFrame:
    """The run's flipped records with their inputs and who was right (view shadow_label_flip_records)."""
    return tables.query("SELECT record_id, inference_time, input_kept, input_text, production_label, candidate_label, "
                        "ground_truth_label, flip_outcome, production_score, candidate_score FROM "
                        f"shadow_label_flip_records WHERE run_id = {_literal(run['run_id'])} "
                        f"ORDER BY score_abs_diff DESC, record_id LIMIT {int(limit)}")


def score_summary(tables: Catalog, run: dict[str, Any]) -> pd.DataFrame:
    """Production vs candidate scores: count, mean, quantiles and the absolute difference, one row per series."""
    frame = tables.query("SELECT production_score, candidate_score, score_abs_diff, noise_abs_diff "
                         f"FROM shadow_records WHERE run_id = {_literal(run['run_id'])}")
    stats = frame.astype("float64").describe(percentiles=[0.05, 0.5, 0.95]).T
    return stats.rename(columns={"50%": "median"})


def score_histogram(tables: Catalog, run: dict[str, Any], bins: int = 10) -> pd.DataFrame:
    """Records per score bin [k/bins, (k+1)/bins) for production and candidate (scores clipped to [0, 1])."""
    run_id = _literal(run["run_id"])
    sides = []
    for side in ("production", "candidate"):
        sides.append(tables.query(
            f"SELECT least(greatest(CAST(floor({side}_score * {int(bins)}) AS integer), 0), {int(bins) - 1}) AS bin, "
            f"count(*) AS {side} FROM shadow_records WHERE run_id = {run_id} AND {side}_score IS NOT NULL "
            "GROUP BY 1").set_index("bin"))
    table = pd.DataFrame(index=pd.RangeIndex(bins, name="bin")).join(sides).fillna(0).astype("int64")
    table.index = [f"[{k / bins:.1f}, {(k + 1) / bins:.1f})" for k in table.index]
    table.index.name = "score"
    return table


def slices(tables: Catalog, run: dict[str, Any]) -> pd.DataFrame:
    """Every per-slice metric of the run (slice <> 'all'), with whether shadow_slice_regressions lists it."""
    run_id = _literal(run["run_id"])
    return tables.query(
        "SELECT m.metric, m.slice, m.value, m.production, m.candidate, m.delta, m.ci_low, m.ci_high, m.support, "
        "m.threshold, m.passed, r.regression FROM shadow_metrics AS m "
        "LEFT JOIN shadow_slice_regressions AS r ON r.run_id = m.run_id AND r.metric = m.metric AND r.slice = m.slice "
        f"WHERE m.run_id = {run_id} AND m.slice <> 'all' ORDER BY r.regression IS NULL, m.metric, m.slice")


def metrics(tables: Catalog, run: dict[str, Any]) -> pd.DataFrame:
    """The run's overall metrics (slice 'all') with the gate's threshold and outcome where a check used them."""
    return tables.query("SELECT metric, value, production, candidate, delta, ci_low, ci_high, support, threshold, "
                        f"passed FROM shadow_metrics WHERE run_id = {_literal(run['run_id'])} AND slice = 'all' "
                        "ORDER BY metric")


def trend(tables: Catalog, run: dict[str, Any]) -> pd.DataFrame:
    """The run's overall metrics beside the previous candidate's in the same package group (shadow_metric_trend)."""
    return tables.query("SELECT metric, package_version, value, previous_run_id, previous_value, change_from_previous "
                        f"FROM shadow_metric_trend WHERE run_id = {_literal(run['run_id'])} AND slice = 'all' "
                        "ORDER BY metric")


def verdict(run: dict[str, Any], boto3_session: Any = None) -> dict[str, Any]:
    """The decision and its reasons and checks, from the evaluation.json beside the run's report."""
    location = _evaluation_location(run.get("report_uri"))
    result: dict[str, Any] = {"decision": run["decision"], "evaluation": location, "reasons": [],
                              "checks": pd.DataFrame()}
    if location is None:
        result["reasons"] = ["the run has no report location"]
        return result
    try:
        evaluation = json.loads(_read_text(location, boto3_session))
    except (OSError, ValueError) as exc:
        result["reasons"] = [f"cannot read {location}: {exc}"]
        return result
    result["reasons"] = list(evaluation.get("reasons", []))
    result["checks"] = pd.DataFrame(evaluation.get("checks", []))
    return result


def _evaluation_location(report_uri: str | None) -> str | None:
    if not report_uri:
        return None
    head, _, _ = report_uri.rpartition("/")
    return f"{head}/evaluation.json" if head else "evaluation.json"


def _read_text(location: str, boto3_session: Any) -> str:
    if location.startswith("s3://"):
        import boto3

        bucket, _, key = location[len("s3://"):].partition("/")
        s3 = (boto3_session or boto3.Session()).client("s3")
        return s3.get_object(Bucket=bucket, Key=key)["Body"].read().decode("utf-8")
    return Path(location).read_text(encoding="utf-8")


def _literal(run_id: str) -> str:
    """A run id as an SQL literal; run ids are checked, so no quoting games are possible."""
    if not isinstance(run_id, str) or not RUN_ID.fullmatch(run_id):
        raise CatalogError(f"{run_id!r} is not a run id (letters, digits, _ and -, at most 64)")
    return f"'{run_id}'"


def _missing(value: Any) -> bool:
    try:
        return bool(pd.isna(value))
    except (TypeError, ValueError):
        return False
