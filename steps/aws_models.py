"""The SageMaker Models a run replays through, both created by Prepare under the stack's ModelRole.

The candidate Model is made from its registry package; the production replay Model copies the
containers of the model behind the endpoint variant. Neither runs under a role the stack does not
control, and each is checked against the artifact buckets and image repositories the config names
(the only ones the ModelRole can read), so a Model that could not load fails Prepare with the fix.
"""
from __future__ import annotations

import logging
import re
from typing import Any

from steps.config import AwsSettings

log = logging.getLogger(__name__)

_ECR_IMAGE = re.compile(r"^(\d{12})\.dkr\.ecr\.([a-z0-9-]+)\.amazonaws\.com(?:\.cn)?/([^:@]+)")


class ModelAccessError(ValueError):
    """A model's artifact or image lies outside what the config (and so the ModelRole) grants."""


def model_role(settings: AwsSettings) -> str:
    """The role replay Models run under: aws.model_role_arn, else aws.role_arn."""
    return settings.model_role_arn or settings.role_arn


def create_candidate_model(sagemaker: Any, name: str, package: dict[str, Any], settings: AwsSettings) -> None:
    """CreateModel from the described registry package (SDK v3 has no step for it); a retry finds it made."""
    package_arn = package["ModelPackageArn"]
    check_access(package.get("InferenceSpecification", {}).get("Containers", []), settings,
                 f"candidate package {package_arn}")
    _create_once(sagemaker, {"ModelName": name, "ExecutionRoleArn": model_role(settings),
                             "Containers": [{"ModelPackageName": package_arn}],
                             "EnableNetworkIsolation": settings.enable_network_isolation}, settings)


def create_production_model(sagemaker: Any, name: str, endpoint: str, variant: str,
                            settings: AwsSettings) -> str:
    """A copy of the model behind endpoint/variant under the ModelRole; "" when there is none to copy.

    Replaying under the production model's own role would need grants the stack does not own.
    """
    source = production_model(sagemaker, endpoint, variant)
    if not source:
        return ""
    described = sagemaker.describe_model(ModelName=source)
    containers = described.get("Containers") or [described["PrimaryContainer"]]
    check_access(containers, settings, f"production model {source}")
    request: dict[str, Any] = {"ModelName": name, "ExecutionRoleArn": model_role(settings),
                               "Containers": containers,
                               "EnableNetworkIsolation": described.get("EnableNetworkIsolation", False)}
    if "InferenceExecutionConfig" in described:
        request["InferenceExecutionConfig"] = described["InferenceExecutionConfig"]
    _create_once(sagemaker, request, settings)
    return name


def production_model(sagemaker: Any, endpoint: str, variant: str) -> str:
    """The model behind an endpoint variant, or "" when it cannot be found (the noise floor is then skipped)."""
    if not endpoint:
        return ""
    try:
        config_name = sagemaker.describe_endpoint(EndpointName=endpoint)["EndpointConfigName"]
        variants = sagemaker.describe_endpoint_config(EndpointConfigName=config_name)["ProductionVariants"]
    except sagemaker.exceptions.ClientError as exc:
        log.warning("prepare: cannot resolve the production model of %s/%s: %s", endpoint, variant, exc)
        return ""
    names = [v.get("ModelName", "") for v in variants if v["VariantName"] == variant]
    return names[0] if names else ""


def check_access(containers: list[dict[str, Any]], settings: AwsSettings, what: str) -> None:
    """Every artifact bucket and ECR repository of these containers is one the config lists."""
    for container in containers:
        data = container.get("ModelDataUrl", "")
        if data.startswith("s3://") and settings.model_artifact_buckets:
            bucket = data[len("s3://"):].split("/", 1)[0]
            if bucket not in settings.model_artifact_buckets:
                raise ModelAccessError(
                    f"{what}: artifact {data} is in bucket {bucket}, which aws.model_artifact_buckets does not "
                    f"list; add it there and to the stack's ModelArtifactBuckets so the ModelRole can read it")
        repository = image_repository_arn(container.get("Image", ""))
        if repository and settings.model_image_repositories and repository not in settings.model_image_repositories:
            raise ModelAccessError(
                f"{what}: image {container['Image']} is in ECR repository {repository}, which "
                f"aws.model_image_repositories does not list; add it there and to the stack's "
                f"ModelImageRepositoryArns so the ModelRole can pull it")


def image_repository_arn(image: str) -> str:
    """The ECR repository ARN of an image URI, or "" for an image not in ECR."""
    match = _ECR_IMAGE.match(image)
    if not match:
        return ""
    account, region, name = match.groups()
    partition = "aws-cn" if region.startswith("cn-") else "aws-us-gov" if region.startswith("us-gov-") else "aws"
    return f"arn:{partition}:ecr:{region}:{account}:repository/{name}"


def _create_once(sagemaker: Any, request: dict[str, Any], settings: AwsSettings) -> None:
    if settings.subnets:
        request["VpcConfig"] = {"Subnets": list(settings.subnets),
                                "SecurityGroupIds": list(settings.security_group_ids)}
    try:
        sagemaker.describe_model(ModelName=request["ModelName"])
        log.info("prepare: model %s exists (a retried step)", request["ModelName"])
        return
    except sagemaker.exceptions.ClientError:
        pass
    sagemaker.create_model(**request)
    log.info("prepare: created model %s under %s", request["ModelName"], request["ExecutionRoleArn"])
