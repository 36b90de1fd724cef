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

from steps.aws_pipeline import config_uri, get_pipeline, pipeline_session
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
    """Upload the config where the jobs read it, then create or update the pipeline; returns its ARN."""
    config, settings = load_aws_config(config_path)
    session = boto3_session or _boto3(settings)
    bucket, key = _split_s3(config_uri(settings))
    encryption = ({"ServerSideEncryption": "aws:kms", "SSEKMSKeyId": settings.kms_key_id}
                  if settings.kms_key_id else {})
    session.client("s3").put_object(Bucket=bucket, Key=key, Body=Path(config_path).read_bytes(), **encryption)
    pipeline = get_pipeline(config, settings, _sdk_session(settings, session))
    response = pipeline.upsert(role_arn=settings.pipeline_role_arn or settings.role_arn,
                               description="shadow-eval: replay captured traffic through a candidate and gate it")
    log.info("upserted %s; config at %s", response["PipelineArn"], config_uri(settings))
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
    """The EventBridge rule on new packages of registry.group, and the schedule; returns what was set."""
    config, settings = load_aws_config(config_path)
    if settings.events_role_arn is None:
        raise ValueError("aws.events_role_arn is required for triggers (EventBridge assumes it)")
    session = boto3_session or _boto3(settings)
    pipeline_arn = session.client("sagemaker").describe_pipeline(PipelineName=settings.pipeline_name)["PipelineArn"]
    done: dict[str, Any] = {"pipeline_arn": pipeline_arn, "rule": None, "schedules": []}
    if settings.trigger_on_new_package:
        done["rule"] = _package_rule(session.client("events"), config, settings, pipeline_arn)
    if settings.schedule_cron:
        from sagemaker.mlops.workflow.triggers import PipelineSchedule

        pipeline = get_pipeline(config, settings, _sdk_session(settings, session))
        # The schedule starts the pipeline with every parameter at its default (put_triggers passes none).
        done["schedules"] = pipeline.put_triggers(
            [PipelineSchedule(name=f"{settings.pipeline_name}-{SCHEDULE_NAME}", cron=settings.schedule_cron)],
            role_arn=settings.events_role_arn)
    return done


def package_event_pattern(group: str) -> dict[str, Any]:
    """Events for a package newly registered in `group` and waiting for approval."""
    return {"source": ["aws.sagemaker"], "detail-type": [PACKAGE_EVENT],
            "detail": {"ModelPackageGroupName": [group], "ModelApprovalStatus": ["PendingManualApproval"]}}


def _package_rule(events: Any, config: Config, settings: AwsSettings, pipeline_arn: str) -> str:
    rule = f"{settings.pipeline_name}{RULE_SUFFIX}"
    events.put_rule(Name=rule, EventPattern=json.dumps(package_event_pattern(config.registry.group)),
                    State="ENABLED", RoleArn=settings.events_role_arn,
                    Description=f"Start {settings.pipeline_name} for each new package in {config.registry.group}")
    # EventBridge resolves $.detail paths in SageMakerPipelineParameters at delivery (not verifiable in moto).
    events.put_targets(Rule=rule, Targets=[{
        "Id": "shadow-eval-pipeline", "Arn": pipeline_arn, "RoleArn": settings.events_role_arn,
        "SageMakerPipelineParameters": {"PipelineParameterList": [
            {"Name": "CandidatePackageArn", "Value": "$.detail.ModelPackageArn"}]}}])
    return rule


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
