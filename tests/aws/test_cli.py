"""`shadow-eval pipeline ...` against a moto server on 127.0.0.1 (the SDK's own clients included).

The account holds the roles infra/shadow-eval.yaml creates, and the SDK validates the pipeline role
as it would in an account (GetRole, trust in sagemaker.amazonaws.com).
"""
from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

import boto3
import pytest

from iam_policy import needs, recording, resolve_stack
from steps import aws_cli
from steps.aws_pipeline import config_uri
from test_iam import stack_parameters

DOCS = Path(__file__).resolve().parents[2] / "docs" / "aws.md"


@pytest.fixture(scope="module")
def moto_server():
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def bare_account(moto_server, monkeypatch, aws_config):
    """A fresh moto account with the output bucket; every boto3 client points at the server."""
    import requests

    requests.post(f"{moto_server}/moto-api/reset", timeout=10)
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_server)
    _, settings = aws_config
    session = boto3.Session(region_name=settings.region)
    session.client("s3").create_bucket(Bucket=settings.bucket)
    return session


@pytest.fixture
def account(bare_account, aws_config):
    """The account after the stack is deployed: its roles, with the template's trust and policies."""
    iam = bare_account.client("iam")
    for logical, role in resolve_stack(stack_parameters(aws_config[1])).items():
        iam.create_role(RoleName=role.name, AssumeRolePolicyDocument=json.dumps(role.trust))
        iam.put_role_policy(RoleName=role.name, PolicyName=f"shadow-eval-{logical}", PolicyDocument=json.dumps(
            {"Version": "2012-10-17", "Statement": role.statements}))
    return bare_account


def test_definition_command_writes_json(aws_config_path, tmp_path):
    parser = argparse.ArgumentParser()
    aws_cli.add_pipeline_commands(parser.add_subparsers())
    out = tmp_path / "def.json"
    args = parser.parse_args(["pipeline", "definition", "--config", str(aws_config_path), "--out", str(out)])
    assert args.command(args) == 0
    assert [s["Name"] for s in json.loads(out.read_text())["Steps"]] == ["Prepare", "Route"]


def test_upsert_uploads_config_and_creates_pipeline(account, aws_config_path, aws_config):
    config, settings = aws_config
    arn = aws_cli.upsert(aws_config_path, account)
    assert arn.endswith(f":pipeline/{settings.pipeline_name}")
    bucket, key = aws_cli._split_s3(config_uri(config))
    assert re.fullmatch(r"shadow-eval/config/[0-9a-f]{16}/shadow-eval\.yaml", key)
    body = account.client("s3").get_object(Bucket=bucket, Key=key)["Body"].read()
    assert body == aws_config_path.read_bytes()
    head = account.client("s3").head_object(Bucket=bucket, Key=key)
    assert (head["ServerSideEncryption"], head["SSEKMSKeyId"]) == ("aws:kms", settings.kms_key_id)
    described = account.client("sagemaker").describe_pipeline(PipelineName=settings.pipeline_name)
    assert described["RoleArn"] == settings.pipeline_role_arn
    steps = json.loads(described["PipelineDefinition"])["Steps"]
    assert [s["Name"] for s in steps] == ["Prepare", "Route"]
    assert {p["Name"]: p["DefaultValue"] for p in json.loads(described["PipelineDefinition"])["Parameters"]}[
        "ConfigS3Uri"] == f"s3://{bucket}/{key}"
    assert aws_cli.upsert(aws_config_path, account) == arn  # the second upsert updates
    assert json.loads(account.client("sagemaker").describe_pipeline(
        PipelineName=settings.pipeline_name)["PipelineDefinition"])["Steps"] == steps


@pytest.mark.slow
def test_upsert_validates_the_pipeline_role_and_a_failure_leaves_the_deployed_pipeline_as_it_was(
        bare_account, aws_config_path, aws_config, tmp_path):
    from sagemaker.core.helper.iam_role_resolver import RoleValidationError

    config, settings = aws_config
    # No stack yet: the SDK finds no role that trusts SageMaker, and no pipeline is created.
    with pytest.raises(RoleValidationError):
        aws_cli.upsert(aws_config_path, bare_account)
    assert bare_account.client("sagemaker").list_pipelines()["PipelineSummaries"] == []
    # A role that trusts the wrong service is refused the same way.
    bare_account.client("iam").create_role(RoleName="shadow-eval-pipeline", AssumeRolePolicyDocument=json.dumps({
        "Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Principal": {"Service": "events.amazonaws.com"},
                                                "Action": "sts:AssumeRole"}]}))
    with pytest.raises(RoleValidationError, match="sagemaker.amazonaws.com"):
        aws_cli.upsert(aws_config_path, bare_account)


@pytest.mark.slow
def test_a_failed_upsert_never_changes_the_config_the_deployed_pipeline_reads(account, aws_config_path, tmp_path):
    arn = aws_cli.upsert(aws_config_path, account)
    sagemaker = account.client("sagemaker")
    before = json.loads(sagemaker.describe_pipeline(PipelineName="shadow-eval")["PipelineDefinition"])
    changed = tmp_path / "changed.yaml"
    changed.write_text(aws_config_path.read_text().replace("max_payload_mb: 6", "max_payload_mb: 5"))
    from sagemaker.mlops.workflow.pipeline import Pipeline

    def fail(*args, **kwargs):
        raise RuntimeError("throttled")

    with pytest.MonkeyPatch.context() as patch, pytest.raises(RuntimeError, match="throttled"):
        patch.setattr(Pipeline, "upsert", fail)
        aws_cli.upsert(changed, account)
    after = json.loads(sagemaker.describe_pipeline(PipelineName="shadow-eval")["PipelineDefinition"])
    assert after == before
    (config_param,) = [p for p in after["Parameters"] if p["Name"] == "ConfigS3Uri"]
    bucket, key = aws_cli._split_s3(config_param["DefaultValue"])
    assert account.client("s3").get_object(Bucket=bucket, Key=key)["Body"].read() == aws_config_path.read_bytes()
    assert aws_cli.upsert(changed, account) == arn  # the next run completes it


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


def _triggers_state(account, config, settings) -> dict:
    events, scheduler = account.client("events"), account.client("scheduler")
    rule = events.describe_rule(Name=f"{settings.pipeline_name}{aws_cli.RULE_SUFFIX}")
    schedule = scheduler.get_schedule(Name=f"{settings.pipeline_name}-{aws_cli.SCHEDULE_NAME}")
    return {"pattern": json.loads(rule["EventPattern"]), "state": rule["State"],
            "targets": events.list_targets_by_rule(Rule=rule["Name"])["Targets"],
            "schedule": {k: schedule[k] for k in ("ScheduleExpression", "State", "Target")}}


def test_triggers_with_the_stack_roles_and_twice_is_the_same(account, aws_config_path, aws_config):
    config, settings = aws_config
    arn = aws_cli.upsert(aws_config_path, account)
    done = aws_cli.put_triggers(aws_config_path, account)
    state = _triggers_state(account, config, settings)
    assert state["pattern"] == aws_cli.package_event_pattern(config.registry.group)
    assert state["state"] == "ENABLED"
    (target,) = state["targets"]
    assert (target["Arn"], target["RoleArn"]) == (arn, settings.events_role_arn)
    assert target["SageMakerPipelineParameters"] == {"PipelineParameterList": [
        {"Name": "CandidatePackageArn", "Value": "$.detail.ModelPackageArn"}]}
    assert state["schedule"]["ScheduleExpression"] == f"cron({settings.schedule_cron})"
    assert state["schedule"]["Target"]["Arn"] == arn
    assert state["schedule"]["Target"]["RoleArn"] == settings.events_role_arn
    assert done["schedule"].endswith(f"/{settings.pipeline_name}-{aws_cli.SCHEDULE_NAME}")
    assert aws_cli.put_triggers(aws_config_path, account) == done
    assert _triggers_state(account, config, settings) == state


def test_triggers_failing_part_way_leave_no_live_half_and_the_next_run_completes(account, aws_config_path,
                                                                                 aws_config):
    config, settings = aws_config
    aws_cli.upsert(aws_config_path, account)
    failing = boto3.Session(region_name=settings.region)

    def refuse(**kwargs):
        raise RuntimeError("PutTargets throttled")

    failing.events.register("before-call.events.PutTargets", refuse)
    with pytest.raises(RuntimeError, match="throttled"):
        aws_cli.put_triggers(aws_config_path, failing)
    rule = account.client("events").describe_rule(Name=f"{settings.pipeline_name}{aws_cli.RULE_SUFFIX}")
    assert rule["State"] == "DISABLED"  # a rule without its target never fires
    aws_cli.put_triggers(aws_config_path, account)
    state = _triggers_state(account, config, settings)
    assert state["state"] == "ENABLED" and len(state["targets"]) == 1


def test_triggers_the_config_turns_off_are_removed(account, aws_config_path, aws_config, tmp_path):
    _, settings = aws_config
    aws_cli.upsert(aws_config_path, account)
    aws_cli.put_triggers(aws_config_path, account)
    off = tmp_path / "off.yaml"
    off.write_text(aws_config_path.read_text().replace('  schedule_cron: "0 3 * * ? *"\n', "")
                   + "  trigger_on_new_package: false\n")
    assert aws_cli.put_triggers(off, account)["schedule"] is None
    with pytest.raises(account.client("events").exceptions.ResourceNotFoundException):
        account.client("events").describe_rule(Name=f"{settings.pipeline_name}{aws_cli.RULE_SUFFIX}")
    with pytest.raises(account.client("scheduler").exceptions.ResourceNotFoundException):
        account.client("scheduler").get_schedule(Name=f"{settings.pipeline_name}-{aws_cli.SCHEDULE_NAME}")
    aws_cli.put_triggers(off, account)  # removing what is gone is a no-op


def test_triggers_need_the_pipeline_first(account, aws_config_path):
    with pytest.raises(ValueError, match="pipeline upsert"):
        aws_cli.put_triggers(aws_config_path, account)


@pytest.mark.slow
def test_the_deployer_permissions_docs_list_are_exactly_what_the_commands_use(account, aws_config_path, aws_config):
    _, settings = aws_config
    with recording(account) as calls:
        aws_cli.upsert(aws_config_path, account)
        aws_cli.upsert(aws_config_path, account)
        aws_cli.put_triggers(aws_config_path, account)
        aws_cli.put_triggers(aws_config_path, account)
        aws_cli.start(aws_config_path, {}, account)
    used = {n.action for c in calls for n in needs(c.service, c.operation, c.params, settings)}
    block = DOCS.read_text().split("<!-- deployer-actions -->")[1].split("<!-- /deployer-actions -->")[0]
    documented = set(re.findall(r"`([a-z0-9-]+:[A-Za-z]+)`", block))
    assert used == documented, (sorted(used - documented), sorted(documented - used))


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
