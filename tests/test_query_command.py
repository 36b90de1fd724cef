"""`shadow-eval query` over a workspace's DuckDB file, and `shadow-eval views` for Athena."""
from __future__ import annotations

import csv
import io
import json

import pandas as pd
import pytest
import sqlglot

import pipeline
from steps.backends.catalog import VIEWS, LocalCatalog, view_statements
from steps.query import QueryError, render, run_query

RUN = {"run_id": "r1", "started_at": "2025-03-01T13:00:00Z", "finished_at": "2025-03-01T13:05:00Z",
       "endpoint": "ep", "variant": "AllTraffic", "window_start": None, "window_end": None,
       "production_model": "prod", "candidate_model": "cand", "candidate_package": "fraud/3", "captured": 10,
       "joined": 9, "quarantined": 1, "coverage": 0.9, "decision": "Rejected", "report_uri": "runs/r1/report.html"}


@pytest.fixture
def workspace(tmp_path):
    catalog = LocalCatalog(tmp_path / "ws", "shadow_eval")
    catalog.write_run(RUN)
    catalog.refresh()
    return catalog.workspace


def _main(capsys, *argv: str) -> tuple[int, str, str]:
    code = pipeline.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_run_query_reads_tables_and_views_bare_or_with_the_database(workspace):
    for name in ("shadow_latest_runs", "shadow_eval.shadow_latest_runs"):
        frame = run_query(workspace, f"SELECT run_id, package_group, package_version FROM {name}")
        assert frame.astype(object).values.tolist() == [["r1", "fraud", 3]]


SQL = "SELECT run_id, decision, coverage, started_at, window_end FROM shadow_runs"
FORMATS = [
    ("table", lambda out: out.splitlines() == [
        "run_id decision  coverage                started_at window_end",
        "    r1 Rejected       0.9 2025-03-01 13:00:00+00:00       NULL"]),
    ("csv", lambda out: list(csv.DictReader(io.StringIO(out))) == [
        {"run_id": "r1", "decision": "Rejected", "coverage": "0.9", "started_at": "2025-03-01 13:00:00+00:00",
         "window_end": ""}]),
    ("json", lambda out: json.loads(out) == [
        {"run_id": "r1", "decision": "Rejected", "coverage": 0.9, "started_at": "2025-03-01T13:00:00.000000Z",
         "window_end": None}]),
]


@pytest.mark.parametrize("fmt, check", FORMATS, ids=[f[0] for f in FORMATS])
def test_query_command_formats(capsys, workspace, fmt, check):
    code, out, err = _main(capsys, "query", SQL, "--workspace", str(workspace), "--format", fmt)
    assert (code, err) == (0, "")
    assert check(out), out


def test_query_command_says_no_rows(capsys, workspace):
    code, out, _ = _main(capsys, "query", "SELECT run_id FROM shadow_label_flips", "--workspace", str(workspace))
    assert (code, out) == (0, "run_id\n(no rows)\n")
    assert render(pd.DataFrame(), "json") == "[]\n"


FAILURES = [
    ("no workspace", None, "SELECT 1", "does not exist: run `shadow-eval run`"),
    ("bad sql", "ws", "SELECT nope FROM shadow_runs", "query failed: Binder Error"),
    ("read-only", "ws", "DROP VIEW shadow_runs", "query failed:.*read-only"),
]


@pytest.mark.parametrize("where, sql, message", [f[1:] for f in FAILURES], ids=[f[0] for f in FAILURES])
def test_query_failures_exit_1_with_duckdbs_message(capsys, workspace, tmp_path, where, sql, message):
    folder = workspace if where else tmp_path / "nowhere"
    with pytest.raises(QueryError, match=message):
        run_query(folder, sql)
    code, out, err = _main(capsys, "query", sql, "--workspace", str(folder))
    assert (code, out) == (1, "")
    assert err.startswith("shadow-eval: ")
    assert not (tmp_path / "nowhere").exists()  # a query never creates a workspace


def test_views_print_writes_every_statement_for_the_configs_database(capsys, tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text("tables:\n  database: analytics\n")
    code, out, _ = _main(capsys, "views", "--config", str(config), "--print")
    assert code == 0
    statements = [s for s in sqlglot.parse(out, read="athena") if s is not None]
    assert [s.this.sql() for s in statements] == [f"analytics.{view}" for view in VIEWS]
    assert [s.sql(dialect="athena", comments=False) for s in statements] == [
        sqlglot.parse_one(sql, read="athena").sql(dialect="athena", comments=False)
        for _, sql in view_statements("analytics")]


def test_create_athena_views_uses_the_configs_database_and_workgroup():
    boto3 = pytest.importorskip("boto3")
    from botocore.stub import ANY, Stubber

    from steps.query import create_athena_views

    client = boto3.Session(region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x").client("athena")
    stubber = Stubber(client)
    for _ in VIEWS:
        stubber.add_response("start_query_execution", {"QueryExecutionId": "q"}, {
            "QueryString": ANY, "QueryExecutionContext": {"Database": "shadow_eval"}, "WorkGroup": "shadow-eval"})
        stubber.add_response("get_query_execution", {"QueryExecution": {"Status": {"State": "SUCCEEDED"}}})

    class Session:
        def client(self, name):
            return client

    with stubber:
        created = create_athena_views("configs/aws.example.yaml", Session())
    assert list(created) == list(VIEWS)
