"""`shadow-eval pipeline definition|upsert|start|triggers`: render, deploy, run and trigger the pipeline.

Only `definition` works without an account. The others use the standard AWS credential chain;
AWS_ENDPOINT_URL points every client (ours and the SDK's) at another endpoint, e.g. a moto server.
"""
from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Any

from steps.aws_pipeline import config_uri, get_pipeline
from steps.aws_settings import AwsSettings, load_aws_config
from steps.config import Config

log = logging.getLogger(__name__)

PACKAGE_EVENT = "SageMaker Model Package State Change"
RULE_SUFFIX = "-on-new-package"
SCHEDULE_NAME = "nightly"


def write_definition(config_path: str | Path, out: str | Path) -> Path:
    """Write the pipeline definition JSON; no AWS call is made."""
    config, settings = load_aws_config(config_path)
    definition = json.loads(get_pipeline(config, settings).definition())
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(definition, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    log.info("wrote %s", out)
    return out


def upsert(config_path: str | Path, boto3_session: Any = None) -> str:
    """Upload the config where the jobs read it, then create or update the pipeline; returns its ARN.

    The config key is content-addressed (config_uri): if the upsert fails after the upload, the
    deployed pipeline still reads the config it was built from; running upsert again completes it.
    """
    config, settings = load_aws_config(config_path)
    session = boto3_session or _boto3(settings)
    pipeline = get_pipeline(config, settings, _sdk_session(settings, session))
    pipeline.definition()  # a definition that cannot render fails here, before anything is written
    bucket, key = _split_s3(config_uri(config))
    session.client("s3").put_object(Bucket=bucket, Key=key, Body=Path(config_path).read_bytes(),
                                    **_encryption(settings))
    # The SDK validates the pipeline role here (GetRole: it must trust sagemaker.amazonaws.com).
    response = pipeline.upsert(role_arn=settings.pipeline_role_arn or settings.role_arn,
                               description="shadow-eval: replay captured traffic through a candidate and gate it")
    log.info("upserted %s; config at %s", response["PipelineArn"], config_uri(config))
    return response["PipelineArn"]


def start(config_path: str | Path, parameters: dict[str, str] | None = None, boto3_session: Any = None) -> str:
    """Start one execution with these parameter overrides; returns the execution ARN."""
    _, settings = load_aws_config(config_path)
    client = (boto3_session or _boto3(settings)).client("sagemaker")
    response = client.start_pipeline_execution(
        PipelineName=settings.pipeline_name,
        PipelineParameters=[{"Name": k, "Value": str(v)} for k, v in sorted((parameters or {}).items())])
    log.info("started %s", response["PipelineExecutionArn"])
    return response["PipelineExecutionArn"]


def put_triggers(config_path: str | Path, boto3_session: Any = None) -> dict[str, Any]:
    """Make the triggers what the config says: the rule on new packages and the schedule, each set or removed.

    Every call is an upsert, so applying twice changes nothing, and after a failure part-way the next
    run completes the rest; a new rule is only enabled once its target is in place. The schedule is
    made with the Scheduler API directly: the SDK's put_triggers validates the events role as if it
    were a pipeline role (trusting sagemaker.amazonaws.com), which the events role must not be.
    """
    config, settings = load_aws_config(config_path)
    if settings.events_role_arn is None and (settings.trigger_on_new_package or settings.schedule_cron):
        raise ValueError("aws.events_role_arn is required for triggers (EventBridge assumes it)")
    session = boto3_session or _boto3(settings)
    sagemaker = session.client("sagemaker")
    try:
        pipeline_arn = sagemaker.describe_pipeline(PipelineName=settings.pipeline_name)["PipelineArn"]
    except sagemaker.exceptions.ClientError as exc:
        # SageMaker answers ResourceNotFound; moto a ValidationException "Could not find pipeline".
        error = exc.response["Error"]
        if error["Code"] != "ResourceNotFound" and "Could not find" not in error.get("Message", ""):
            raise
        raise ValueError(f"pipeline {settings.pipeline_name} does not exist: run `shadow-eval pipeline upsert` "
                         "first") from None
    events, scheduler = session.client("events"), session.client("scheduler")
    rule = f"{settings.pipeline_name}{RULE_SUFFIX}"
    schedule = f"{settings.pipeline_name}-{SCHEDULE_NAME}"
    done: dict[str, Any] = {"pipeline_arn": pipeline_arn, "rule": None, "schedule": None}
    if settings.trigger_on_new_package:
        done["rule"] = _package_rule(events, rule, config, settings, pipeline_arn)
    else:
        _remove_rule(events, rule)
    if settings.schedule_cron:
        done["schedule"] = _schedule(scheduler, schedule, settings, pipeline_arn)
    else:
        _remove_schedule(scheduler, schedule)
    return done


def package_event_pattern(group: str) -> dict[str, Any]:
    """Events for a package newly registered in `group` and waiting for approval."""
    return {"source": ["aws.sagemaker"], "detail-type": [PACKAGE_EVENT],
            "detail": {"ModelPackageGroupName": [group], "ModelApprovalStatus": ["PendingManualApproval"]}}


def _package_rule(events: Any, rule: str, config: Config, settings: AwsSettings, pipeline_arn: str) -> str:
    try:
        events.describe_rule(Name=rule)
        exists = True
    except events.exceptions.ResourceNotFoundException:
        exists = False
    request = {"Name": rule, "EventPattern": json.dumps(package_event_pattern(config.registry.group)),
               "Description": f"Start {settings.pipeline_name} for each new package in {config.registry.group}"}
    if not exists:  # a new rule waits, disabled, for its target
        events.put_rule(State="DISABLED", **request)
    # EventBridge resolves $.detail paths in SageMakerPipelineParameters at delivery (not verifiable in moto).
    events.put_targets(Rule=rule, Targets=[{
        "Id": "shadow-eval-pipeline", "Arn": pipeline_arn, "RoleArn": settings.events_role_arn,
        "SageMakerPipelineParameters": {"PipelineParameterList": [
            {"Name": "CandidatePackageArn", "Value": "$.detail.ModelPackageArn"}]}}])
    events.put_rule(State="ENABLED", **request)
    return rule


def _remove_rule(events: Any, rule: str) -> None:
    try:
        targets = events.list_targets_by_rule(Rule=rule)["Targets"]
    except events.exceptions.ResourceNotFoundException:
        return
    if targets:
        events.remove_targets(Rule=rule, Ids=[t["Id"] for t in targets])
    events.delete_rule(Name=rule)
    log.info("removed rule %s (aws.trigger_on_new_package is false)", rule)


def _schedule(scheduler: Any, name: str, settings: AwsSettings, pipeline_arn: str) -> str:
    """Create or update the schedule; it starts the pipeline with no parameters (Prepare picks the package)."""
    request = {"Name": name, "ScheduleExpression": f"cron({settings.schedule_cron})",
               "FlexibleTimeWindow": {"Mode": "OFF"}, "State": "ENABLED",
               "Description": f"Evaluate packages still pending in {settings.pipeline_name}'s group",
               "Target": {"Arn": pipeline_arn, "RoleArn": settings.events_role_arn,
                          "SageMakerPipelineParameters": {"PipelineParameterList": []}}}
    try:
        return scheduler.update_schedule(**request)["ScheduleArn"]
    except scheduler.exceptions.ResourceNotFoundException:
        return scheduler.create_schedule(**request)["ScheduleArn"]


def _remove_schedule(scheduler: Any, name: str) -> None:
    try:
        scheduler.delete_schedule(Name=name)
        log.info("removed schedule %s (aws.schedule_cron is not set)", name)
    except scheduler.exceptions.ResourceNotFoundException:
        pass


def _encryption(settings: AwsSettings) -> dict[str, str]:
    return {"ServerSideEncryption": "aws:kms", "SSEKMSKeyId": settings.kms_key_id} if settings.kms_key_id else {}


def _boto3(settings: AwsSettings) -> Any:
    import boto3

    return boto3.Session(region_name=settings.region)


def _sdk_session(settings: AwsSettings, boto3_session: Any) -> Any:
    from sagemaker.core.workflow.pipeline_context import PipelineSession

    return PipelineSession(boto_session=boto3_session, default_bucket=settings.bucket)


def _split_s3(uri: str) -> tuple[str, str]:
    bucket, _, key = uri[len("s3://"):].partition("/")
    return bucket, key


# ---------------------------------------------------------------- command line

def add_pipeline_commands(subparsers: Any) -> None:
    """Register `pipeline definition|upsert|start|triggers` under the main parser's subcommands."""
    pipeline = subparsers.add_parser("pipeline", help="the SageMaker Pipeline: render, deploy, start, trigger")
    commands = pipeline.add_subparsers(required=True, metavar="ACTION")

    definition = commands.add_parser("definition", help="write the definition JSON (no AWS calls)")
    definition.add_argument("--config", required=True)
    definition.add_argument("--out", required=True)
    definition.set_defaults(command=lambda a: _done(write_definition(a.config, a.out)))

    deploy = commands.add_parser("upsert", help="upload the config and create or update the pipeline")
    deploy.add_argument("--config", required=True)
    deploy.set_defaults(command=lambda a: _done(upsert(a.config)))

    run = commands.add_parser("start", help="start one execution")
    run.add_argument("--config", required=True)
    run.add_argument("--param", action="append", default=[], metavar="NAME=VALUE",
                     help="override a pipeline parameter, e.g. CandidatePackageArn=arn:...")
    run.set_defaults(command=lambda a: _done(start(a.config, _params(a.param))))

    triggers = commands.add_parser("triggers", help="EventBridge rule on new packages and the schedule")
    triggers.add_argument("--config", required=True)
    triggers.set_defaults(command=lambda a: _done(put_triggers(a.config)))


def _params(pairs: list[str]) -> dict[str, str]:
    params = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise argparse.ArgumentTypeError(f"--param {pair!r}: expected NAME=VALUE")
        params[name] = value
    return params


def _done(result: Any) -> int:
    # The CLI's output is its result; logging goes to stderr.
    print(json.dumps(result, default=str, indent=2) if isinstance(result, dict) else result)
    return 0
