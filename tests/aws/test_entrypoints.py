"""The Processing entry points as plain Python over tmp folders laid out like /opt/ml/processing, AWS in moto."""
from __future__ import annotations

import json
import shutil

import pytest

from steps import entrypoints
from capture_helpers import at, capture_line, capture_path

GROUP = "churn-models"
CAPTURE = "s3://capture-bucket/datacapture"


@pytest.fixture
def root(tmp_path, aws_config_path):
    """A Processing root with the config where the pipeline puts it."""
    (tmp_path / "input" / "config").mkdir(parents=True)
    shutil.copy(aws_config_path, tmp_path / "input" / "config" / "shadow-eval.yaml")
    return tmp_path


@pytest.fixture
def package(aws):
    sagemaker = aws.client("sagemaker")
    sagemaker.create_model_package_group(ModelPackageGroupName=GROUP)
    return sagemaker.create_model_package(
        ModelPackageGroupName=GROUP, ModelApprovalStatus="PendingManualApproval",
        InferenceSpecification={"Containers": [{"Image": "123456789012.dkr.ecr.us-east-1.amazonaws.com/churn:2"}],
                                "SupportedContentTypes": ["text/csv"], "SupportedResponseMIMETypes": ["text/csv"]},
    )["ModelPackageArn"]


def _put_capture(aws, when, rows: list[str], salt: str) -> None:
    key = "datacapture/" + capture_path("churn-prod", "AllTraffic", when, salt)
    lines = [capture_line(row, "0.7", event_id=f"{salt}-{i}", inference_time=when) for i, row in enumerate(rows)]
    aws.client("s3").put_object(Bucket="capture-bucket", Key=key, Body="".join(f"{x}\n" for x in lines).encode())


def _production_endpoint(aws) -> None:
    sagemaker = aws.client("sagemaker")
    sagemaker.create_model(ModelName="churn-prod-model", ExecutionRoleArn="arn:aws:iam::123456789012:role/x",
                           PrimaryContainer={"Image": "123456789012.dkr.ecr.us-east-1.amazonaws.com/churn:1"})
    sagemaker.create_endpoint_config(EndpointConfigName="churn-prod-config", ProductionVariants=[{
        "VariantName": "AllTraffic", "ModelName": "churn-prod-model", "InstanceType": "ml.m5.large",
        "InitialInstanceCount": 1}])
    sagemaker.create_endpoint(EndpointName="churn-prod", EndpointConfigName="churn-prod-config")


def _prepare_args(root, package_arn: str = ""):
    return entrypoints._parser().parse_args([
        "prepare", "--root", str(root), "--run-id", "exec123", "--capture-s3-uri", CAPTURE,
        "--endpoint", "churn-prod", "--variant", "AllTraffic", "--window-start", "2024-01-19T10:00:00Z",
        "--window-end", "2024-01-19T11:00:00Z", "--candidate-package-arn", package_arn,
        "--candidate-model-name", "shadow-eval-exec123-candidate"])


def test_download_hours_reads_only_the_window(aws, tmp_path):
    _put_capture(aws, at(9, 58), ["1,2"], "a")     # the hour before: may run into the window
    _put_capture(aws, at(10, 5), ["3,4"], "b")
    _put_capture(aws, at(12, 0), ["5,6"], "c")     # after the window: never downloaded
    count = entrypoints.download_hours(aws.client("s3"), f"{CAPTURE}/churn-prod/AllTraffic", tmp_path,
                                       at(9), at(11))
    assert count == 2
    assert sorted(p.relative_to(tmp_path).parts[:4] for p in tmp_path.rglob("*.jsonl")) == \
        [("2024", "01", "19", "09"), ("2024", "01", "19", "10")]


def test_prepare_entrypoint(aws, root, package):
    _production_endpoint(aws)
    _put_capture(aws, at(10, 5), ["1,2", "3,4"], "b")
    _put_capture(aws, at(12, 0), ["5,6"], "c")
    entrypoints.run_prepare(_prepare_args(root, package), aws)

    plan = json.loads((root / "output" / "prepare" / "replay-plan.json").read_text())
    assert plan["groups"]["csv"]["records"] == 2
    assert list((root / "output" / "prepare" / "replay-input" / "csv").rglob("*.csv"))
    run = json.loads((root / "output" / "run" / "run.json").read_text())
    assert (run["run_id"], run["candidate_package"], run["status_at_start"]) == \
        ("exec123", package, "PendingManualApproval")
    models = json.loads((root / "output" / "run" / "models.json").read_text())
    assert models == {"candidate_model": "shadow-eval-exec123-candidate", "production_model": "churn-prod-model"}
    model = aws.client("sagemaker").describe_model(ModelName="shadow-eval-exec123-candidate")
    assert model["Containers"][0]["ModelPackageName"] == package
    # A retried step finds its model and does not fail.
    entrypoints.run_prepare(_prepare_args(root, package), aws)


def test_prepare_without_endpoint_leaves_production_model_empty(aws, root):
    _put_capture(aws, at(10, 5), ["1,2"], "b")
    entrypoints.run_prepare(_prepare_args(root), aws)
    assert json.loads((root / "output" / "run" / "models.json").read_text())["production_model"] == ""


def _gate_inputs(root, package: str, decision: str) -> None:
    (root / "input" / "run").mkdir(parents=True)
    (root / "input" / "report").mkdir(parents=True)
    (root / "input" / "run" / "run.json").write_text(json.dumps(
        {"run_id": "exec123", "candidate_package": package, "status_at_start": "PendingManualApproval"}))
    (root / "input" / "report" / "evaluation.json").write_text(json.dumps(
        {"approved": int(decision == "Approved"), "decision": decision}))
    (root / "input" / "report" / "summary.md").write_text(f"# {decision}\n" + "x" * 2000)


def _gate_args(root, verdict: str):
    return entrypoints._parser().parse_args([
        "gate", "--root", str(root), "--run-id", "exec123", "--verdict", verdict,
        "--report-s3-uri", "s3://example-shadow-eval/shadow-eval/runs/exec123/report/report.html"])


@pytest.mark.parametrize("verdict", ["Approved", "Rejected"])
def test_gate_entrypoint_records_the_verdict(aws, root, package, verdict):
    _gate_inputs(root, package, verdict)
    outcome = entrypoints.run_gate(_gate_args(root, verdict), aws)
    assert (outcome["updated"], outcome["status_now"]) == (True, verdict)
    described = aws.client("sagemaker").describe_model_package(ModelPackageName=package)
    assert described["ModelApprovalStatus"] == verdict
    assert len(described["ApprovalDescription"]) == 1024
    assert described["CustomerMetadataProperties"]["shadow_eval_run_id"] == "exec123"


def test_gate_entrypoint_never_overwrites_a_manual_decision(aws, root, package):
    _gate_inputs(root, package, "Approved")
    aws.client("sagemaker").update_model_package(ModelPackageArn=package, ModelApprovalStatus="Rejected")
    outcome = entrypoints.run_gate(_gate_args(root, "Approved"), aws)
    assert (outcome["updated"], outcome["status_now"]) == (False, "Rejected")


def test_gate_entrypoint_refuses_a_verdict_evaluation_did_not_give(aws, root, package):
    _gate_inputs(root, package, "Rejected")
    with pytest.raises(SystemExit, match="evaluation.json says Rejected"):
        entrypoints.run_gate(_gate_args(root, "Approved"), aws)
    status = aws.client("sagemaker").describe_model_package(ModelPackageName=package)["ModelApprovalStatus"]
    assert status == "PendingManualApproval"
