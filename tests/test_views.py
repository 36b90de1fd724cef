"""The analyst views: expected rows from DuckDB over a small fixture run, and every statement is Athena SQL."""
from __future__ import annotations

import math

import duckdb
import pandas as pd
import pytest
import sqlglot
from sqlglot import exp

from steps.backends.catalog import SCHEMAS, SQL_DIR, VIEWS, LocalCatalog, view_statements

HASH = "ab" * 32
ARN = "arn:aws:sagemaker:us-east-1:123456789012:model-package/churn/7"


def _records(run_id: str, rows: list[tuple]) -> pd.DataFrame:
    """(production, candidate, ground truth, input_text) per record; other columns plausible."""
    frame = []
    for i, (production, candidate, truth, text) in enumerate(rows):
        row = {name: None for name in SCHEMAS["shadow_records"].names}
        row.update(record_id=f"e{i}:0", event_id=f"e{i}", record_index=0, endpoint="ep", variant="AllTraffic",
                   capture_file="ep/AllTraffic/2025/03/01/12/a.jsonl", capture_line=i + 1, input_text=text,
                   production_label=production, candidate_label=candidate, ground_truth_label=truth,
                   production_score=0.25, candidate_score=0.75, score_abs_diff=0.5,
                   inference_time=pd.Timestamp("2025-03-01T12:00:00Z"))
        frame.append(row)
    return pd.DataFrame(frame, columns=SCHEMAS["shadow_records"].names)


def _metrics(rows: list[tuple]) -> pd.DataFrame:
    """(metric, slice, value, delta, ci_high, passed) per row."""
    return pd.DataFrame([{"metric": m, "slice": s, "value": v, "production": None if d is None else v - d,
                          "candidate": v, "delta": d, "ci_low": None if hi is None else hi - 0.1, "ci_high": hi,
                          "support": 40, "threshold": None if p is None else 0.0, "passed": p}
                         for m, s, v, d, hi, p in rows])


def _run(run_id: str, started: str, package: str | None, model: str = "cand", captured: int = 10) -> dict:
    return {"run_id": run_id, "started_at": started, "finished_at": None, "endpoint": "ep", "variant": "AllTraffic",
            "window_start": None, "window_end": None, "production_model": "prod", "candidate_model": model,
            "candidate_package": package, "captured": captured, "joined": captured, "quarantined": 0,
            "coverage": 1.0, "decision": "Approved", "report_uri": f"s3://b/runs/{run_id}/report/report.html"}


@pytest.fixture(scope="module")
def catalog(tmp_path_factory):
    """Five runs: fraud v1, fraud v2 twice, a SageMaker ARN package, and a run with no package."""
    catalog = LocalCatalog(tmp_path_factory.mktemp("views") / "ws", "shadow_eval")
    catalog.write_run(_run("r1", "2025-03-01T13:00:00Z", "fraud/1"))
    catalog.write_run(_run("r2", "2025-03-02T13:00:00Z", "fraud/2"))
    catalog.write_run(_run("r3", "2025-03-03T13:00:00Z", "fraud/2"))
    catalog.write_run(_run("r4", "2025-03-01T10:00:00Z", ARN))
    catalog.write_run(_run("r5", "2025-03-01T11:00:00Z", None, model="adhoc"))
    catalog.write_partition("shadow_records", "r1", _records("r1", [
        ("0", "0", "0", "1,2,3"),          # no flip
        ("0", "1", "1", "4,5,6"),          # candidate fixed it
        ("1", "0", "1", None),             # candidate broke it; input dropped
        ("1", "0", None, HASH),            # no ground truth; input hashed
        ("0", "1", "2", f"sha256:{HASH}"),  # both wrong; input hashed with a prefix
        (None, "1", None, '{"a": 1}'),     # production gave no label: still a flip
    ]))
    catalog.write_partition("shadow_quarantine", "r1", pd.DataFrame([
        {"record_id": f"f#{i}", "event_id": None, "capture_file": "f", "capture_line": i, "stage": stage,
         "reason": reason, "detail": f"d{i}"}
        for i, (stage, reason) in enumerate([("capture", "malformed_json"), ("capture", "malformed_json"),
                                             ("replay", "replay_file_failed")])]))
    catalog.write_partition("shadow_metrics", "r3", _metrics([
        ("accuracy", "all", 0.95, 0.01, 0.03, True),
        ("accuracy", "hour=09", 0.70, -0.20, -0.10, False),   # failed its check
        ("accuracy", "hour=10", 0.85, -0.05, -0.01, None),    # no check, interval below zero
        ("accuracy", "hour=11", 0.99, 0.02, 0.05, None),      # fine
        ("accuracy", "hour=12", 0.90, -0.05, 0.02, None),     # worse, but the interval holds zero
        ("label_agreement", "country=DE", 0.80, None, None, False),  # failed, no 'all' row for it
    ]))
    for run_id, accuracy, p99, ratio, errors in (("r1", 0.80, 0.010, 1.0, 0.0), ("r2", 0.90, 0.030, 3.0, 0.02)):
        catalog.write_partition("shadow_metrics", run_id, pd.concat([
            _metrics([("accuracy", "all", accuracy, None, None, True)]), _operational_metrics(p99, ratio, errors)]))
        catalog.write_partition("shadow_invocations", run_id, _invocations(run_id, 3 if run_id == "r1" else 4))
    catalog.refresh()
    return catalog


def _operational_metrics(candidate_p99: float, ratio: float, error_rate: float) -> pd.DataFrame:
    rows = [("p99_record_latency_ratio", ratio, candidate_p99 / ratio, candidate_p99, ratio - 0.5, ratio + 0.5),
            ("p50_record_latency_ratio", 1.0, 0.001, 0.001, 0.9, 1.1),
            ("replay_p99_record_latency_ratio", 1.02, 0.01, 0.0102, 0.9, 1.2),
            ("error_rate", error_rate, 0.0, error_rate, None, None)]
    return pd.DataFrame([{"metric": m, "slice": "all", "value": v, "production": p, "candidate": c,
                          "delta": None, "ci_low": lo, "ci_high": hi, "support": 40, "threshold": None,
                          "passed": None} for m, v, p, c, lo, hi in rows])


def _invocations(run_id: str, batches: int) -> pd.DataFrame:
    rows = []
    for side in ("candidate", "production"):
        for i in range(batches):
            row = dict.fromkeys(SCHEMAS["shadow_invocations"].names)
            row.update(side=side, replay_group="csv", replay_file="a.csv", first_line=1 + 10 * i, lines=10,
                       records=10, attempts=1, retries=0, errors=0, timeouts=0, outcome="ok", http_status=200,
                       latency_s=0.01, started_at=pd.Timestamp("2025-03-01T12:00:00Z"))
            rows.append(row)
    return pd.DataFrame(rows, columns=SCHEMAS["shadow_invocations"].names)


def _rows(catalog: LocalCatalog, sql: str) -> list[list]:
    frame = catalog.query(sql).astype(object)
    return [[None if (isinstance(v, float) and math.isnan(v)) or v is pd.NA or v is pd.NaT else v for v in row]
            for row in frame.values.tolist()]


def test_every_sql_file_is_one_declared_view():
    names = sorted(p.name for p in SQL_DIR.glob("*.sql"))
    assert [name.split("_", 1)[1].removesuffix(".sql") for name in names] == list(VIEWS)
    assert set(VIEWS) == {"shadow_latest_runs", "shadow_label_flips", "shadow_label_flip_records",
                          "shadow_quarantine_by_reason", "shadow_metric_trend", "shadow_slice_regressions",
                          "shadow_latency_trend"}


def test_latest_run_per_package_with_group_and_version(catalog):
    assert _rows(catalog, "SELECT candidate_package, run_id, package_group, package_version FROM shadow_latest_runs "
                          "ORDER BY run_id") == [
        ["fraud/1", "r1", "fraud", 1],
        ["fraud/2", "r3", "fraud", 2],
        [ARN, "r4", "churn", 7],
        [None, "r5", None, None],
    ]


def test_label_flips_count_each_pair_and_who_was_right(catalog):
    assert _rows(catalog, "SELECT production_label, candidate_label, records, with_ground_truth, "
                          "production_correct, candidate_correct FROM shadow_label_flips "
                          "ORDER BY production_label NULLS FIRST, candidate_label") == [
        [None, "1", 1, 0, 0, 0],
        ["0", "1", 2, 2, 0, 1],
        ["1", "0", 2, 1, 1, 0],
    ]


def test_label_flip_records_carry_their_inputs_whatever_the_privacy_setting(catalog):
    assert _rows(catalog, "SELECT record_id, input_text, input_kept, production_label, candidate_label, "
                          "ground_truth_label, flip_outcome FROM shadow_label_flip_records ORDER BY record_id") == [
        ["e1:0", "4,5,6", "text", "0", "1", "1", "candidate_fixed"],
        ["e2:0", None, "dropped", "1", "0", "1", "candidate_broke"],
        ["e3:0", HASH, "hashed", "1", "0", None, "no_ground_truth"],
        ["e4:0", f"sha256:{HASH}", "hashed", "0", "1", "2", "both_wrong"],
        ["e5:0", '{"a": 1}', "text", None, "1", None, "no_ground_truth"],
    ]


def test_quarantine_by_reason_with_share_and_an_example(catalog):
    assert _rows(catalog, "SELECT run_id, stage, reason, records, share_of_captured, example_record_id, "
                          "example_detail FROM shadow_quarantine_by_reason ORDER BY reason") == [
        ["r1", "capture", "malformed_json", 2, 0.2, "f#0", "d0"],
        ["r1", "replay", "replay_file_failed", 1, 0.1, "f#2", "d2"],
    ]


def test_metric_trend_follows_package_versions(catalog):
    rows = _rows(catalog, "SELECT run_id, package_group, package_version, value, previous_run_id, previous_value, "
                          "round(change_from_previous, 6) FROM shadow_metric_trend "
                          "WHERE metric = 'accuracy' AND slice = 'all' ORDER BY run_id")
    assert rows == [
        ["r1", "fraud", 1, 0.80, None, None, None],
        ["r2", "fraud", 2, 0.90, "r1", 0.80, 0.1],
        ["r3", "fraud", 2, 0.95, "r2", 0.90, 0.05],
    ]
    # Each slice trends on its own: r3's hour slices have no earlier run.
    assert _rows(catalog, "SELECT count(*) FROM shadow_metric_trend WHERE slice <> 'all' "
                          "AND previous_run_id IS NOT NULL") == [[0]]


def test_latency_trend_follows_package_versions(catalog):
    assert _rows(catalog, "SELECT run_id, package_group, package_version, candidate_invocations, candidate_records, "
                          "candidate_p99_record_latency_s, p99_record_latency_ratio, noise_p99_record_latency_ratio, "
                          "candidate_error_rate, previous_run_id, round(p99_change_from_previous, 6) "
                          "FROM shadow_latency_trend ORDER BY run_id") == [
        ["r1", "fraud", 1, 3, 30, 0.010, 1.0, 1.02, 0.0, None, None],
        ["r2", "fraud", 2, 4, 40, 0.030, 3.0, 1.02, 0.02, "r1", 3.0],
    ]


def test_slice_regressions_are_failed_checks_or_intervals_below_zero(catalog):
    assert _rows(catalog, "SELECT run_id, candidate_package, metric, slice, value, overall_value, "
                          "round(gap_to_overall, 6), regression FROM shadow_slice_regressions "
                          "ORDER BY metric, slice") == [
        ["r3", "fraud/2", "accuracy", "hour=09", 0.70, 0.95, -0.25, "failed_check"],
        ["r3", "fraud/2", "accuracy", "hour=10", 0.85, 0.95, -0.1, "interval_below_zero"],
        ["r3", "fraud/2", "label_agreement", "country=DE", 0.80, None, None, "failed_check"],
    ]


def test_views_are_in_both_schemas_of_the_duckdb_file(catalog):
    with duckdb.connect(str(catalog.db_path), read_only=True) as db:
        found = db.execute("SELECT schema_name, view_name FROM duckdb_views() WHERE NOT internal").fetchall()
    for view in VIEWS:
        assert ("shadow_eval", view) in found and ("main", view) in found


@pytest.mark.parametrize("view", VIEWS)
def test_each_view_is_athena_sql_with_only_known_functions(view):
    statement = dict(view_statements("shadow_eval"))[view]
    tree = sqlglot.parse_one(statement, read="athena")
    assert isinstance(tree, exp.Create) and tree.kind == "VIEW"
    assert tree.this.sql(dialect="athena") == f"shadow_eval.{view}"
    # A function sqlglot does not know could be DuckDB-only; every one used must be in its model.
    assert [f.sql() for f in tree.find_all(exp.Anonymous)] == []
    # The named WINDOW clause is left out on purpose (see the catalog docstring).
    assert [s.sql() for s in tree.find_all(exp.Select) if s.args.get("windows")] == []


@pytest.mark.parametrize("view", VIEWS)
def test_the_athena_reading_of_each_view_answers_like_the_view(catalog, view):
    """Read as Athena SQL and written back for DuckDB, the SELECT gives the view's own rows."""
    select = sqlglot.parse_one(dict(view_statements("shadow_eval"))[view], read="athena").expression
    as_duckdb = select.sql(dialect="duckdb")
    ordered = f"SELECT * FROM ({as_duckdb}) AS v ORDER BY ALL"
    assert _rows(catalog, ordered) == _rows(catalog, f"SELECT * FROM shadow_eval.{view} ORDER BY ALL")


def test_view_statements_refuse_a_database_that_is_not_a_name():
    from steps.backends.catalog import CatalogError

    with pytest.raises(CatalogError, match="database name"):
        view_statements("shadow_eval; DROP VIEW x")


# ---------------------------------------------------------------- created in Athena (botocore Stubber)

def _athena():
    boto3 = pytest.importorskip("boto3")
    from botocore.stub import Stubber

    client = boto3.Session(region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x").client("athena")
    return client, Stubber(client)


def _execution(state: str, reason: str | None = None) -> dict:
    status = {"State": state, **({"StateChangeReason": reason} if reason else {})}
    return {"QueryExecution": {"QueryExecutionId": "q", "Status": status}}


def test_create_views_runs_each_statement_in_the_workgroup_and_waits():
    from steps.backends.catalog_glue import create_views

    client, stubber = _athena()
    for i, (view, statement) in enumerate(view_statements("analytics")):
        # Stubber checks each request against Athena's service model as well as against these params.
        stubber.add_response("start_query_execution", {"QueryExecutionId": f"q{i}"}, {
            "QueryString": statement, "QueryExecutionContext": {"Database": "analytics"}, "WorkGroup": "shadow-eval"})
        stubber.add_response("get_query_execution", _execution("RUNNING"), {"QueryExecutionId": f"q{i}"})
        stubber.add_response("get_query_execution", _execution("SUCCEEDED"), {"QueryExecutionId": f"q{i}"})
    slept = []
    with stubber:
        created = create_views(client, "analytics", "shadow-eval", sleep=slept.append)
    stubber.assert_no_pending_responses()
    assert created == {view: f"q{i}" for i, view in enumerate(VIEWS)}
    assert len(slept) == len(VIEWS)


def test_a_failed_view_names_the_view_and_athenas_reason():
    from steps.backends.catalog_glue import AthenaQueryError, create_views

    client, stubber = _athena()
    stubber.add_response("start_query_execution", {"QueryExecutionId": "q0"})
    stubber.add_response("get_query_execution", _execution("FAILED", "SYNTAX_ERROR: line 3"))
    with stubber, pytest.raises(AthenaQueryError, match=f"{VIEWS[0]}.*FAILED: SYNTAX_ERROR: line 3"):
        create_views(client, "analytics", "shadow-eval", sleep=lambda s: None)


def test_glue_catalog_refresh_creates_the_views_through_its_session():
    from steps.backends.catalog_glue import GlueCatalog

    client, stubber = _athena()
    for _ in VIEWS:
        stubber.add_response("start_query_execution", {"QueryExecutionId": "q"})
        stubber.add_response("get_query_execution", _execution("SUCCEEDED"))

    class Session:
        def client(self, name):
            assert name == "athena"
            return client

    with stubber:
        GlueCatalog("s3://b/tables", "shadow_eval", Session(), workgroup="wg").refresh()
    stubber.assert_no_pending_responses()
