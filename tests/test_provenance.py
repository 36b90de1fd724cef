"""Provenance: a registry entry points to its evidence (run id and report), locally and in SageMaker.

The chain an auditor follows: model package -> metadata/approval description -> run id and report
location -> the shadow_runs row and the report files.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from demo_run import demo_run
from steps.backends.catalog import LocalCatalog
from steps.backends.registry import LocalRegistry

pytestmark = pytest.mark.slow
S3_REPORT = "s3://example-shadow-eval/shadow-eval/runs/{run_id}/report/report.html"
AWS_CONFIG = Path(__file__).resolve().parent / "aws" / "configs" / "aws.yaml"


def test_local_registry_entry_leads_to_the_run_and_its_report():
    run = demo_run()
    registry = LocalRegistry(run.workspace / run.config.registry.path)
    package = registry.describe(run.world.package_id)
    run_id = run.outcome.run_id
    assert package.status == (run.outcome.decision if run.outcome.decision != "Inconclusive"
                              else "PendingManualApproval")
    assert package.metadata["shadow_eval_run_id"] == run_id
    assert package.metadata["shadow_eval_decision"] == run.outcome.decision
    report = Path(package.metadata["shadow_eval_report"])
    assert report == run.outcome.report_path.resolve() and report.is_file()
    assert json.loads((report.parent / "evaluation.json").read_text())["decision"] == run.outcome.decision
    assert f"(run {run_id})" in package.description and f"Report: {report}" in package.description
    assert registry.history(run.world.package_id)[-1].run_id == run_id
    # From the run id, the tables find the same run, package and report.
    row = LocalCatalog(run.workspace, run.config.tables.database).query(
        f"SELECT candidate_package, decision, report_uri FROM shadow_latest_runs WHERE run_id = '{run_id}'")
    assert row.values.tolist() == [[run.world.package_id, run.outcome.decision, str(run.outcome.report_path)]]


def _cloud_summary(tmp_path: Path, report_uri: str) -> tuple[str, str]:
    """summary.md as the join-compare job writes it: steps.report.run with the S3 report location."""
    from analysis.gate import decide
    from steps import compare, report

    run = demo_run()
    comparison = compare.run(run.config, run.outcome.run_dir)
    decision = decide(comparison, run.outcome.accounting, run.config.gate)
    info = json.loads((run.outcome.run_dir / "run.json").read_text())
    job_dir = tmp_path / "opt" / "ml" / "processing" / "work" / "runs" / run.outcome.run_id
    paths = report.run(job_dir, {**info, "report_uri": report_uri}, run.outcome.accounting, comparison, decision)
    return paths["summary.md"].read_text(encoding="utf-8"), decision.status


def test_sagemaker_package_metadata_points_to_the_s3_report(tmp_path):
    """The gate job (steps.entrypoints.run_gate) over moto, fed the summary the join-compare job writes."""
    pytest.importorskip("moto")
    import boto3
    from moto import mock_aws

    from steps import entrypoints

    run_id = demo_run().outcome.run_id
    report_uri = S3_REPORT.format(run_id=run_id)
    summary, verdict = _cloud_summary(tmp_path, report_uri)
    root = tmp_path / "gate"
    for folder in ("config", "run", "report"):
        (root / "input" / folder).mkdir(parents=True)
    shutil.copy(AWS_CONFIG, root / "input" / "config" / "shadow-eval.yaml")
    (root / "input" / "report" / "summary.md").write_text(summary, encoding="utf-8")
    (root / "input" / "report" / "evaluation.json").write_text(json.dumps({"decision": verdict}))
    with mock_aws():
        session = boto3.Session(region_name="us-east-1", aws_access_key_id="testing",
                                aws_secret_access_key="testing")
        sagemaker = session.client("sagemaker")
        sagemaker.create_model_package_group(ModelPackageGroupName="churn-models")
        package = sagemaker.create_model_package(
            ModelPackageGroupName="churn-models", ModelApprovalStatus="PendingManualApproval",
            InferenceSpecification={"Containers": [{"Image": "123456789012.dkr.ecr.us-east-1.amazonaws.com/c:2"}],
                                    "SupportedContentTypes": ["text/csv"],
                                    "SupportedResponseMIMETypes": ["text/csv"]})["ModelPackageArn"]
        (root / "input" / "run" / "run.json").write_text(json.dumps(
            {"run_id": run_id, "candidate_package": package, "status_at_start": "PendingManualApproval"}))
        args = entrypoints._parser().parse_args(["gate", "--root", str(root), "--run-id", run_id, "--verdict",
                                                 verdict, "--report-s3-uri", report_uri])
        outcome = entrypoints.run_gate(args, session)
        described = sagemaker.describe_model_package(ModelPackageName=package)
    assert outcome["updated"] is True
    assert described["ModelApprovalStatus"] == verdict
    metadata = described["CustomerMetadataProperties"]
    assert (metadata["shadow_eval_run_id"], metadata["shadow_eval_report"], metadata["shadow_eval_decision"]) == (
        run_id, report_uri, verdict)
    assert f"(run {run_id})" in described["ApprovalDescription"]


def test_the_cloud_approval_description_names_the_s3_report(tmp_path):
    run_id = demo_run().outcome.run_id
    summary, _ = _cloud_summary(tmp_path, S3_REPORT.format(run_id=run_id))
    assert f"Report: {S3_REPORT.format(run_id=run_id)}" in summary


def test_a_long_approval_description_keeps_the_report_location():
    """Reasons and numbers give way first; the run id and the report location always stay."""
    from analysis.report import summary_markdown

    report = {"verdict": {"status": "Rejected", "reasons": [f"check {i}: " + "x" * 200 for i in range(8)]},
              "run": {"run_id": "r1", "report_uri": "s3://b/runs/r1/report/report.html"},
              "accounting": {"captured": 10, "joined": 10, "quarantined": 0, "coverage": 1.0},
              "headline": {"accuracy": {"value": 0.9}}}
    summary = summary_markdown(report)
    assert len(summary) <= 1024
    assert summary.startswith("**Rejected** by shadow-eval (run r1)")
    assert summary.rstrip("\n").endswith("Report: s3://b/runs/r1/report/report.html")
