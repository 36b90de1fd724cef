"""`shadow-eval pipeline ...` against a moto server on 127.0.0.1 (the SDK's own clients included)."""
from __future__ import annotations

import argparse
import json

import boto3
import pytest

from steps import aws_cli
from steps.aws_pipeline import config_uri


@pytest.fixture(scope="module")
def moto_server():
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def account(moto_server, monkeypatch, aws_config):
    """A fresh moto account with the output bucket; every boto3 client points at the server."""
    import requests

    requests.post(f"{moto_server}/moto-api/reset", timeout=10)
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_server)
    _, settings = aws_config
    session = boto3.Session(region_name=settings.region)
    session.client("s3").create_bucket(Bucket=settings.bucket)
    return session


def test_definition_command_writes_json(aws_config_path, tmp_path):
    parser = argparse.ArgumentParser()
    aws_cli.add_pipeline_commands(parser.add_subparsers())
    out = tmp_path / "def.json"
    args = parser.parse_args(["pipeline", "definition", "--config", str(aws_config_path), "--out", str(out)])
    assert args.command(args) == 0
    assert {s["Name"] for s in json.loads(out.read_text())["Steps"]} >= {"Prepare", "ReplayProductionSwitch"}


def test_upsert_uploads_config_and_creates_pipeline(account, aws_config_path, aws_config):
    _, settings = aws_config
    arn = aws_cli.upsert(aws_config_path, account)
    assert arn.endswith(f":pipeline/{settings.pipeline_name}")
    bucket, key = aws_cli._split_s3(config_uri(settings))
    body = account.client("s3").get_object(Bucket=bucket, Key=key)["Body"].read()
    assert body == aws_config_path.read_bytes()
    head = account.client("s3").head_object(Bucket=bucket, Key=key)
    assert (head["ServerSideEncryption"], head["SSEKMSKeyId"]) == ("aws:kms", settings.kms_key_id)
    described = account.client("sagemaker").describe_pipeline(PipelineName=settings.pipeline_name)
    assert described["RoleArn"] == settings.pipeline_role_arn
    steps = json.loads(described["PipelineDefinition"])["Steps"]
    assert [s["Name"] for s in steps] == ["Prepare", "ReplayCandidate-csv", "ReplayCandidate-json",
                                          "ReplayProductionSwitch"]
    assert aws_cli.upsert(aws_config_path, account) == arn  # the second upsert updates


def test_start_passes_parameters(account, aws_config_path, aws_config):
    _, settings = aws_config
    aws_cli.upsert(aws_config_path, account)
    package = "arn:aws:sagemaker:us-east-1:123456789012:model-package/churn-models/3"
    execution = aws_cli.start(aws_config_path, {"CandidatePackageArn": package}, account)
    sagemaker = account.client("sagemaker")
    described = sagemaker.describe_pipeline_execution(PipelineExecutionArn=execution)
    assert described["PipelineArn"].endswith(f":pipeline/{settings.pipeline_name}")
    params = sagemaker.list_pipeline_parameters_for_execution(PipelineExecutionArn=execution)["PipelineParameters"]
    assert {"Name": "CandidatePackageArn", "Value": package} in params


def test_triggers_rule_targets_pipeline_and_schedule_exists(account, aws_config_path, aws_config):
    config, settings = aws_config
    arn = aws_cli.upsert(aws_config_path, account)
    done = aws_cli.put_triggers(aws_config_path, account)
    events = account.client("events")
    rule = events.describe_rule(Name=done["rule"])
    assert json.loads(rule["EventPattern"]) == aws_cli.package_event_pattern(config.registry.group)
    (target,) = events.list_targets_by_rule(Rule=done["rule"])["Targets"]
    assert (target["Arn"], target["RoleArn"]) == (arn, settings.events_role_arn)
    assert target["SageMakerPipelineParameters"] == {"PipelineParameterList": [
        {"Name": "CandidatePackageArn", "Value": "$.detail.ModelPackageArn"}]}
    (schedule_arn,) = done["schedules"]
    schedule = account.client("scheduler").get_schedule(Name=schedule_arn.rsplit("/", 1)[-1])
    assert schedule["ScheduleExpression"] == f"cron({settings.schedule_cron})"
    assert schedule["Target"]["Arn"] == arn


def test_package_event_pattern_routes_only_pending_packages_of_the_group(account):
    # moto cannot deliver to a pipeline target, so the pattern is proven with an SQS probe rule.
    sqs = account.client("sqs")
    queue = sqs.create_queue(QueueName="probe")["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    events = account.client("events")
    events.put_rule(Name="probe", EventPattern=json.dumps(aws_cli.package_event_pattern("churn-models")))
    events.put_targets(Rule="probe", Targets=[{"Id": "q", "Arn": queue_arn}])

    def send(group: str, status: str) -> None:
        events.put_events(Entries=[{"Source": "aws.sagemaker", "DetailType": aws_cli.PACKAGE_EVENT,
                                    "Detail": json.dumps({"ModelPackageGroupName": group,
                                                          "ModelApprovalStatus": status,
                                                          "ModelPackageArn": f"arn:{group}:{status}"})}])

    send("churn-models", "PendingManualApproval")
    send("churn-models", "Approved")
    send("other-models", "PendingManualApproval")
    messages = sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10).get("Messages", [])
    details = [json.loads(m["Body"])["detail"]["ModelPackageArn"] for m in messages]
    assert details == ["arn:churn-models:PendingManualApproval"]


def test_params_parse_name_value_pairs():
    assert aws_cli._params(["A=1", "B=x=y"]) == {"A": "1", "B": "x=y"}
    with pytest.raises(argparse.ArgumentTypeError):
        aws_cli._params(["nonsense"])
