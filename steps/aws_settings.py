"""The `aws:` section of a config file: what only the cloud path needs (account, roles, S3, instances).

Until Config grows an `aws` field, `load_aws_config` splits the section off before the shared
loader sees it, and validates it with the same rules (unknown keys are errors that name the key).
"""
from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any

import yaml

from steps.config import Config, ConfigError, _build, config_from_mapping

_S3_URI = re.compile(r"^s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](/.*)?$")
_ROLE_ARN = re.compile(r"^arn:aws[a-z-]*:iam::\d{12}:role/.+$")
_CRON = re.compile(r"^\S+( \S+){5}$")


@dataclasses.dataclass(frozen=True)
class AwsSettings:
    region: str
    role_arn: str
    """Execution role of the Processing jobs, the candidate Model and the pipeline itself."""
    output_s3_uri: str
    """s3://bucket/prefix: runs/<execution id>/..., tables/<table>/..., config/ live below it."""
    image_uri: str
    """Processing image with shadow-eval installed (`python -m steps.entrypoints ...` must run in it)."""
    pipeline_name: str = "shadow-eval"
    candidate_package_arn: str = ""
    """Default of the CandidatePackageArn parameter; an EventBridge trigger passes the real one."""
    replay_groups: tuple[str, ...] = ()
    """Input formats to replay (one TransformStep each); empty takes capture.input_format."""
    processing_instance_type: str = "ml.m5.xlarge"
    transform_instance_type: str = "ml.m5.xlarge"
    transform_instance_count: int = 1
    """An int, not a parameter: SDK 3.27 rejects ParameterInteger for TransformResources.InstanceCount."""
    kms_key_id: str | None = None
    """Encrypts job volumes and outputs when set."""
    subnets: tuple[str, ...] = ()
    security_group_ids: tuple[str, ...] = ()
    enable_network_isolation: bool = False
    """Applies to the candidate Model (and so to its transform containers)."""
    events_role_arn: str | None = None
    """Role EventBridge and EventBridge Scheduler assume to start the pipeline."""
    schedule_cron: str | None = None
    """Six-field EventBridge cron for a scheduled run, e.g. `0 3 * * ? *`; None: no schedule."""
    trigger_on_new_package: bool = True
    """Start a run when a package in registry.group is registered as PendingManualApproval."""
    athena_workgroup: str = "shadow-eval"
    endpoint_url: str | None = None
    """An AWS endpoint override (tests, moto); AWS_ENDPOINT_URL works too."""

    @property
    def bucket(self) -> str:
        return self.output_s3_uri[len("s3://"):].split("/", 1)[0]

    def uri(self, *parts: str) -> str:
        """An S3 URI below output_s3_uri."""
        return "/".join([self.output_s3_uri.rstrip("/"), *parts])


def load_aws_config(path: str | Path) -> tuple[Config, AwsSettings]:
    """Read a config file whose `aws:` section describes the account; both halves validated."""
    source = str(path)
    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    except FileNotFoundError:
        raise ConfigError(source, "<file>", "no such file") from None
    except yaml.YAMLError as exc:
        raise ConfigError(source, "<file>", f"not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(source, "<root>", "expected a mapping of sections")
    return split_aws_mapping(data, source)


def split_aws_mapping(data: dict[str, Any], source: str = "<config>") -> tuple[Config, AwsSettings]:
    """Validate a mapping with an `aws:` section into the shared Config and the AWS settings."""
    rest = dict(data)
    if "aws" not in rest:
        raise ConfigError(source, "aws", "required for the SageMaker pipeline (see docs/aws.md)")
    # _build is the shared loader's own validator; the lead will move `aws` into Config itself.
    settings = _build(AwsSettings, rest.pop("aws"), "aws", source)
    config = config_from_mapping(rest, source)
    _check(settings, config, source)
    return config, settings


def replay_groups(settings: AwsSettings, config: Config) -> tuple[str, ...]:
    """The groups the pipeline replays: aws.replay_groups, else the one capture.input_format names."""
    if settings.replay_groups:
        return settings.replay_groups
    return (config.capture.input_format,)


def _check(settings: AwsSettings, config: Config, source: str) -> None:
    for key in ("output_s3_uri",):
        if not _S3_URI.match(getattr(settings, key)):
            raise ConfigError(source, f"aws.{key}", f"{getattr(settings, key)!r} is not an s3://bucket/prefix URI")
    for key in ("role_arn", "events_role_arn"):
        value = getattr(settings, key)
        if value is not None and not _ROLE_ARN.match(value):
            raise ConfigError(source, f"aws.{key}", f"{value!r} is not an IAM role ARN")
    groups = ("csv", "jsonlines", "json", "binary")
    for group in settings.replay_groups:
        if group not in groups:
            raise ConfigError(source, "aws.replay_groups", f"{group!r} is not one of {', '.join(groups)}")
    if not settings.replay_groups and config.capture.input_format == "auto":
        raise ConfigError(source, "aws.replay_groups", "required when capture.input_format is auto: a pipeline "
                          "has one TransformStep per input format, fixed when it is built")
    if len(set(settings.replay_groups)) != len(settings.replay_groups):
        raise ConfigError(source, "aws.replay_groups", "lists a group twice")
    if settings.schedule_cron is not None and not _CRON.match(settings.schedule_cron):
        raise ConfigError(source, "aws.schedule_cron", "expected six fields, e.g. '0 3 * * ? *'")
    if not 1 <= settings.transform_instance_count <= 100:
        raise ConfigError(source, "aws.transform_instance_count", "must be 1 to 100, as in CreateTransformJob")
    if bool(settings.subnets) != bool(settings.security_group_ids):
        raise ConfigError(source, "aws.subnets", "subnets and security_group_ids go together")
