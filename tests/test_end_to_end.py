"""The whole job on the embedded default, through the command line, at small scale."""
from __future__ import annotations

import json
from pathlib import Path

import duckdb
import pytest

import pipeline
from steps.backends.registry import LocalRegistry

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    workspace = tmp_path_factory.mktemp("demo")
    code, out = _cli(["demo", "--workspace", str(workspace), "--requests", "120", "--seed", "3", "--json"])
    return workspace, code, json.loads(out)


def _cli(argv: list[str]) -> tuple[int, str]:
    import contextlib
    import io

    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        code = pipeline.main(argv)
    return code, buffer.getvalue()


def test_demo_ends_in_a_verdict_with_every_record_accounted_for(demo_run):
    workspace, code, result = demo_run
    records = result["records"]
    assert records["captured"] > 120  # multi-row calls carry several records
    assert records["captured"] == records["joined"] + records["quarantined"]
    assert result["decision"] in ("Approved", "Rejected", "Inconclusive") and result["reasons"]
    assert code == pipeline.EXIT_STATUS[result["decision"]]
    assert result["task"]["task"] == "classification" and result["task"]["why"]


def test_registry_holds_the_decision_with_its_evidence(demo_run):
    workspace, _, result = demo_run
    registry = LocalRegistry(workspace / "registry.sqlite")
    (package,) = registry.list_packages("shadow-eval-demo")
    # Inconclusive leaves the package pending; its description and history say why.
    assert package.status == (result["decision"] if result["decision"] != "Inconclusive" else "PendingManualApproval")
    assert package.metadata["shadow_eval_decision"] == result["decision"]
    assert result["run_id"] in json.dumps(package.metadata)
    assert len(package.description) <= 1024


def test_reports_and_evaluation_are_written(demo_run):
    workspace, _, result = demo_run
    report_dir = Path(result["report"]).parent
    evaluation = json.loads((report_dir / "evaluation.json").read_text())
    assert evaluation["approved"] == (1 if result["decision"] == "Approved" else 0)
    assert evaluation["decision"] == result["decision"] and evaluation["evaluation_version"] == 3
    assert evaluation["rejected"] + evaluation["inconclusive"] + evaluation["approved"] == 1
    report = json.loads((report_dir / "report.json").read_text())
    assert report["accounting"]["captured"] == result["records"]["captured"]
    html = (report_dir / "report.html").read_text()
    assert result["decision"] in html
    assert "http://" not in html and "https://" not in html


def test_tables_hold_one_row_per_joined_record(demo_run):
    workspace, _, result = demo_run
    with duckdb.connect(str(workspace / "shadow.duckdb"), read_only=True) as con:
        joined = con.execute("select count(*) from shadow_records where run_id = ?", [result["run_id"]]).fetchall()
        runs = con.execute("select decision, captured from shadow_runs where run_id = ?", [result["run_id"]]).fetchall()
    assert joined == [(result["records"]["joined"],)]
    assert runs == [(result["decision"], result["records"]["captured"])]


def test_rerunning_a_run_id_rewrites_rows_without_duplicates(demo_run):
    workspace, _, result = demo_run
    code, out = _cli(["run", "--config", str(workspace / "demo.yaml"), "--run-id", result["run_id"], "--json"])
    again = json.loads(out)
    assert again["records"] == result["records"]
    with duckdb.connect(str(workspace / "shadow.duckdb"), read_only=True) as con:
        (count,) = con.execute("select count(*) from shadow_records where run_id = ?", [result["run_id"]]).fetchone()
        (runs,) = con.execute("select count(*) from shadow_runs where run_id = ?", [result["run_id"]]).fetchone()
    assert count == result["records"]["joined"]
    assert runs == 1


def test_config_errors_exit_2_and_name_the_key(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("replay:\n  max_payload_mb: 500\n")
    assert pipeline.main(["run", "--config", str(bad), "--candidate", "m.tar.gz"]) == pipeline.EXIT_USAGE
    assert "bad.yaml: replay.max_payload_mb" in capsys.readouterr().err
