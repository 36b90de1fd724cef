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
        InferenceSpecification={"Containers": [{"Image": "123456789012.dkr.ecr.us-east-1.amazonaws.com/churn:2",
                                                "ModelDataUrl": "s3://model-artifacts/churn-2.tar.gz"}],
                                "SupportedContentTypes": ["text/csv"], "SupportedResponseMIMETypes": ["text/csv"]},
    )["ModelPackageArn"]


def _register(aws, status: str = "PendingManualApproval", data: str = "s3://model-artifacts/churn.tar.gz") -> str:
    return aws.client("sagemaker").create_model_package(
        ModelPackageGroupName=GROUP, ModelApprovalStatus=status,
        InferenceSpecification={"Containers": [{"Image": "123456789012.dkr.ecr.us-east-1.amazonaws.com/churn:3",
                                                "ModelDataUrl": data}],
                                "SupportedContentTypes": ["text/csv"], "SupportedResponseMIMETypes": ["text/csv"]},
    )["ModelPackageArn"]


def _put_capture(aws, when, rows: list[str], salt: str) -> None:
    key = "datacapture/" + capture_path("churn-prod", "AllTraffic", when, salt)
    lines = [capture_line(row, "0.7", event_id=f"{salt}-{i}", inference_time=when) for i, row in enumerate(rows)]
    aws.client("s3").put_object(Bucket="capture-bucket", Key=key, Body="".join(f"{x}\n" for x in lines).encode())


def _production_endpoint(aws) -> None:
    sagemaker = aws.client("sagemaker")
    sagemaker.create_model(ModelName="churn-prod-model", ExecutionRoleArn="arn:aws:iam::123456789012:role/prod-own",
                           PrimaryContainer={"Image": "123456789012.dkr.ecr.us-east-1.amazonaws.com/churn:1",
                                             "ModelDataUrl": "s3://model-artifacts/churn-1.tar.gz",
                                             "Environment": {"THREADS": "2"}})
    sagemaker.create_endpoint_config(EndpointConfigName="churn-prod-config", ProductionVariants=[{
        "VariantName": "AllTraffic", "ModelName": "churn-prod-model", "InstanceType": "ml.m5.large",
        "InitialInstanceCount": 1}])
    sagemaker.create_endpoint(EndpointName="churn-prod", EndpointConfigName="churn-prod-config")


def _prepare_args(root, package_arn: str = "", run_id: str = "exec123"):
    return entrypoints._parser().parse_args([
        "prepare", "--root", str(root), "--run-id", run_id, "--capture-s3-uri", CAPTURE,
        "--endpoint", "churn-prod", "--variant", "AllTraffic", "--window-start", "2024-01-19T10:00:00Z",
        "--window-end", "2024-01-19T11:00:00Z", "--candidate-package-arn", package_arn,
        "--candidate-model-name", f"shadow-eval-{run_id}-candidate",
        "--production-model-name", f"shadow-eval-{run_id}-production"])


def _read(root, name: str) -> dict:
    return json.loads((root / "output" / "run" / name).read_text())


def test_download_hours_reads_only_the_window(aws, tmp_path):
    _put_capture(aws, at(9, 58), ["1,2"], "a")     # the hour before: may run into the window
    _put_capture(aws, at(10, 5), ["3,4"], "b")
    _put_capture(aws, at(12, 0), ["5,6"], "c")     # after the window: never downloaded
    count = entrypoints.download_hours(aws.client("s3"), f"{CAPTURE}/churn-prod/AllTraffic", tmp_path,
                                       at(9), at(11))
    assert count == 2
    assert sorted(p.relative_to(tmp_path).parts[:4] for p in tmp_path.rglob("*.jsonl")) == \
        [("2024", "01", "19", "09"), ("2024", "01", "19", "10")]


def test_prepare_entrypoint(aws, root, package, aws_config):
    _, settings = aws_config
    _production_endpoint(aws)
    _put_capture(aws, at(10, 5), ["1,2", "3,4"], "b")
    _put_capture(aws, at(12, 0), ["5,6"], "c")
    entrypoints.run_prepare(_prepare_args(root, package), aws)

    plan = json.loads((root / "output" / "prepare" / "replay-plan.json").read_text())
    assert plan["groups"]["csv"]["records"] == 2
    assert list((root / "output" / "prepare" / "replay-input" / "csv").rglob("*.csv"))
    run = _read(root, "run.json")
    assert (run["run_id"], run["candidate_package"], run["status_at_start"], run["route"]) == \
        ("exec123", package, "PendingManualApproval", "replay")
    assert _read(root, "models.json") == {
        "route": "replay", "reason": "", "candidate_package": package,
        "candidate_model": "shadow-eval-exec123-candidate", "production_model": "shadow-eval-exec123-production",
        "production_replay": 1}
    sagemaker = aws.client("sagemaker")
    candidate = sagemaker.describe_model(ModelName="shadow-eval-exec123-candidate")
    assert candidate["Containers"][0]["ModelPackageName"] == package
    # Both replay Models run under the stack's ModelRole, never the production model's own role.
    production = sagemaker.describe_model(ModelName="shadow-eval-exec123-production")
    assert candidate["ExecutionRoleArn"] == production["ExecutionRoleArn"] == settings.model_role_arn
    (container,) = production["Containers"]
    assert (container["Image"], container["ModelDataUrl"], container["Environment"]) == \
        ("123456789012.dkr.ecr.us-east-1.amazonaws.com/churn:1", "s3://model-artifacts/churn-1.tar.gz",
         {"THREADS": "2"})
    assert production["VpcConfig"] == {"Subnets": ["subnet-0abc"], "SecurityGroupIds": ["sg-0abc"]}
    # A retried step finds its models and its own idempotency marker, and does not fail.
    assert entrypoints.run_prepare(_prepare_args(root, package), aws)["route"] == "replay"


def test_prepare_without_endpoint_replays_only_the_candidate(aws, root, package):
    _put_capture(aws, at(10, 5), ["1,2"], "b")
    models = entrypoints.run_prepare(_prepare_args(root, package), aws)
    assert (models["route"], models["production_model"], models["production_replay"]) == ("replay", "", 0)


def test_scheduled_run_evaluates_the_newest_pending_package(aws, root, package):
    _register(aws, "Approved")
    newest = _register(aws)
    _put_capture(aws, at(10, 5), ["1,2"], "b")
    models = entrypoints.run_prepare(_prepare_args(root), aws)
    assert (models["route"], models["candidate_package"]) == ("replay", newest)
    assert _read(root, "run.json")["candidate_package"] == newest


def test_scheduled_run_with_nothing_pending_is_skipped_and_says_why(aws, root):
    aws.client("sagemaker").create_model_package_group(ModelPackageGroupName=GROUP)
    _register(aws, "Approved")
    _put_capture(aws, at(10, 5), ["1,2"], "b")
    models = entrypoints.run_prepare(_prepare_args(root), aws)
    assert models == {"route": "skip", "reason": f"no package in {GROUP} is PendingManualApproval",
                      "candidate_package": ""}
    assert aws.client("sagemaker").list_models()["Models"] == []
    assert (root / "output" / "prepare").is_dir()  # Processing uploads an (empty) folder


def test_scheduled_run_can_start_one_execution_per_pending_package(aws, root, package, aws_config_path, tmp_path):
    from steps.config import load_config

    second = _register(aws)
    config_file = root / "input" / "config" / "shadow-eval.yaml"
    config_file.write_text(aws_config_path.read_text() + "  pending_packages: each\n")
    assert load_config(config_file).aws.pending_packages == "each"
    sagemaker = aws.client("sagemaker")
    sagemaker.create_pipeline(PipelineName="shadow-eval", RoleArn="arn:aws:iam::123456789012:role/shadow-eval-pipeline",
                              PipelineDefinition=json.dumps({"Version": "2020-12-01", "Steps": []}))
    models = entrypoints.run_prepare(_prepare_args(root), aws)
    assert models["route"] == "skip" and "each of the 2 pending package(s)" in models["reason"]
    started = sagemaker.list_pipeline_executions(PipelineName="shadow-eval")["PipelineExecutionSummaries"]
    params = [{p["Name"]: p["Value"] for p in sagemaker.list_pipeline_parameters_for_execution(
        PipelineExecutionArn=e["PipelineExecutionArn"])["PipelineParameters"]} for e in started]
    assert sorted(p["CandidatePackageArn"] for p in params) == sorted([package, second])
    assert {(p["WindowStart"], p["WindowEnd"]) for p in params} == {("2024-01-19T10:00:00Z", "2024-01-19T11:00:00Z")}


def test_empty_capture_window_goes_to_join_compare_without_models(aws, root, package):
    _put_capture(aws, at(12, 0), ["5,6"], "c")  # outside the window
    models = entrypoints.run_prepare(_prepare_args(root, package), aws)
    assert (models["route"], models["reason"]) == ("no-replay", "no captured records to replay in the window")
    assert (models["candidate_model"], models["production_replay"]) == ("", 0)
    assert aws.client("sagemaker").list_models()["Models"] == []
    assert _read(root, "run.json")["prepare"]["records"] == 0


def test_a_duplicate_event_is_a_no_op_that_names_the_first_execution(aws, root, package):
    _put_capture(aws, at(10, 5), ["1,2"], "b")
    assert entrypoints.run_prepare(_prepare_args(root, package, "first"), aws)["route"] == "replay"
    duplicate = entrypoints.run_prepare(_prepare_args(root, package, "second"), aws)
    assert duplicate["route"] == "skip"
    assert duplicate["reason"].startswith(f"execution first already evaluates {package}")
    models = [m["ModelName"] for m in aws.client("sagemaker").list_models()["Models"]]
    assert not [name for name in models if "second" in name]


def test_a_production_image_outside_the_listed_repositories_fails_prepare_with_the_fix(aws, root, package):
    sagemaker = aws.client("sagemaker")
    sagemaker.create_model(ModelName="churn-prod-model", ExecutionRoleArn="arn:aws:iam::123456789012:role/prod-own",
                           PrimaryContainer={"Image": "683313688378.dkr.ecr.us-east-1.amazonaws.com/sklearn:1.2"})
    sagemaker.create_endpoint_config(EndpointConfigName="churn-prod-config", ProductionVariants=[{
        "VariantName": "AllTraffic", "ModelName": "churn-prod-model", "InstanceType": "ml.m5.large",
        "InitialInstanceCount": 1}])
    sagemaker.create_endpoint(EndpointName="churn-prod", EndpointConfigName="churn-prod-config")
    _put_capture(aws, at(10, 5), ["1,2"], "b")
    with pytest.raises(entrypoints.aws_models.ModelAccessError,
                       match="arn:aws:ecr:us-east-1:683313688378:repository/sklearn, which aws.model_image_rep"):
        entrypoints.run_prepare(_prepare_args(root, package), aws)
    # The failed Prepare released its claim: a later execution over this window is not taken for a duplicate.
    assert "Contents" not in aws.client("s3").list_objects_v2(Bucket="example-shadow-eval", Prefix="shadow-eval/markers/")
    assert entrypoints.main(["prepare", *_argv(root, package)]) == 1  # a clear error, not a traceback


def _argv(root, package: str) -> list[str]:
    return ["--root", str(root), "--run-id", "exec9", "--capture-s3-uri", CAPTURE, "--endpoint", "churn-prod",
            "--variant", "AllTraffic", "--window-start", "2024-01-19T10:00:00Z", "--window-end",
            "2024-01-19T11:00:00Z", "--candidate-package-arn", package, "--candidate-model-name", "m-c",
            "--production-model-name", "m-p"]


def test_a_model_the_model_role_cannot_read_fails_prepare_with_the_fix(aws, root, tmp_path):
    aws.client("sagemaker").create_model_package_group(ModelPackageGroupName=GROUP)
    elsewhere = _register(aws, data="s3://someone-elses-bucket/model.tar.gz")
    _put_capture(aws, at(10, 5), ["1,2"], "b")
    with pytest.raises(entrypoints.aws_models.ModelAccessError, match="aws.model_artifact_buckets does not list"):
        entrypoints.run_prepare(_prepare_args(root, elsewhere), aws)
    assert aws.client("sagemaker").list_models()["Models"] == []


def _gate_inputs(root, package: str, decision: str) -> None:
    (root / "input" / "run").mkdir(parents=True)
    (root / "input" / "report").mkdir(parents=True)
    (root / "input" / "run" / "run.json").write_text(json.dumps(
        {"run_id": "exec123", "candidate_package": package, "status_at_start": "PendingManualApproval"}))
    (root / "input" / "report" / "evaluation.json").write_text(json.dumps(  # the evaluation_version 3 fields read here
        {"decision": decision, "approved": int(decision == "Approved"), "rejected": int(decision == "Rejected"),
         "inconclusive": int(decision == "Inconclusive")}))
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


def test_gate_entrypoint_inconclusive_keeps_the_package_pending_with_the_reasons(aws, root, package):
    _gate_inputs(root, package, "Inconclusive")
    (root / "input" / "report" / "summary.md").write_text("# Inconclusive\n- no captured records in the window\n")
    outcome = entrypoints.run_gate(_gate_args(root, "Inconclusive"), aws)
    assert (outcome["updated"], outcome["status_now"]) == (True, "PendingManualApproval")
    described = aws.client("sagemaker").describe_model_package(ModelPackageName=package)
    assert described["ModelApprovalStatus"] == "PendingManualApproval"
    assert "no captured records in the window" in described["ApprovalDescription"]
    assert described["CustomerMetadataProperties"]["shadow_eval_decision"] == "Inconclusive"


def test_gate_entrypoint_inconclusive_leaves_a_decided_package_alone(aws, root, package):
    _gate_inputs(root, package, "Inconclusive")
    aws.client("sagemaker").update_model_package(ModelPackageArn=package, ModelApprovalStatus="Approved")
    outcome = entrypoints.run_gate(_gate_args(root, "Inconclusive"), aws)
    assert (outcome["updated"], outcome["status_now"]) == (False, "Approved")
