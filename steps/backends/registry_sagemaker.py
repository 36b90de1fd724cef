"""The SageMaker Model Registry behind the Registry protocol; the package id is the package ARN.

Compare-and-set without a lock: DescribeModelPackage, compare, UpdateModelPackage, describe again.
The Model Registry keeps no transition log, so the ApprovalDescription carries the transition
(`shadow-eval run <id>: <from> -> <to>. <summary>`, see registry.transition_note) and history()
reads it back; a decision whose description does not start so was made by a person and a run
never overwrites it.
SageMaker has no conditional update, so a change made by someone else between the first
describe and the update (one round trip, well under a second) is overwritten; the second
describe then sees our status, so that loss is not detectable either. What is guaranteed: a
package whose status changed at any time before the final describe is never overwritten.
"""
from __future__ import annotations

import datetime as dt
import logging
from typing import Any

from steps import names
from steps.backends.registry import (
    DECISIONS, PackageInfo, RegistryError, Transition, _check_description, _check_metadata, _check_status,
    parse_transition_note, transition_note,
)

log = logging.getLogger(__name__)

_PACKAGE_ARN = names.PACKAGE_ARN


class SageMakerRegistry:
    """Model packages in one account and region, through a boto3 SageMaker client passed in."""

    def __init__(self, sagemaker_client: Any, actor: str = "shadow-eval"):
        self.client = sagemaker_client
        self.actor = actor

    @classmethod
    def from_session(cls, boto3_session: Any, endpoint_url: str | None = None) -> SageMakerRegistry:
        """A registry on a client from this boto3 session (endpoint_url for tests and VPC endpoints)."""
        return cls(boto3_session.client("sagemaker", endpoint_url=endpoint_url))

    def register(self, group: str, model_uri: str, status: str = "PendingManualApproval",
                 description: str = "", metadata: dict[str, str] | None = None) -> str:
        """Create a versioned package from an inference image URI ("image" or "image|s3://model.tar.gz")."""
        _check_status(status)
        _check_description(description)
        image, _, model_data = model_uri.partition("|")
        container = {"Image": image, **({"ModelDataUrl": model_data} if model_data else {})}
        request: dict[str, Any] = {
            "ModelPackageGroupName": group, "ModelApprovalStatus": status,
            "InferenceSpecification": {"Containers": [container], "SupportedContentTypes": ["text/csv"],
                                       "SupportedResponseMIMETypes": ["text/csv"]},
        }
        if description:
            request["ModelPackageDescription"] = description
        if metadata:
            request["CustomerMetadataProperties"] = _check_metadata(metadata)
        return self.client.create_model_package(**request)["ModelPackageArn"]

    def describe(self, package_id: str) -> PackageInfo:
        """The package as SageMaker has it now; RegistryError if it does not exist."""
        _check_arn(package_id)
        try:
            package = self.client.describe_model_package(ModelPackageName=package_id)
        except self.client.exceptions.ClientError as exc:
            raise RegistryError(f"cannot describe {package_id}: {exc}") from exc
        containers = package.get("InferenceSpecification", {}).get("Containers", [{}])
        image = containers[0].get("Image", "")
        model_data = containers[0].get("ModelDataUrl")
        created = package.get("CreationTime")
        updated = package.get("LastModifiedTime", created)
        return PackageInfo(
            package_id=package["ModelPackageArn"], group=package.get("ModelPackageGroupName", ""),
            version=int(package.get("ModelPackageVersion", 0)),
            model_uri=f"{image}|{model_data}" if model_data else image,
            status=package["ModelApprovalStatus"], description=package.get("ApprovalDescription", ""),
            metadata=dict(package.get("CustomerMetadataProperties", {})),
            created_at=_iso(created), updated_at=_iso(updated))

    def set_status(self, package_id: str, expected_status: str, new_status: str, description: str,
                   run_id: str | None, metadata: dict[str, str] | None = None) -> bool:
        """Set new_status only if the package still has expected_status (see the module note on the race)."""
        _check_status(expected_status)
        _check_status(new_status)
        _check_description(description)
        extra = _check_metadata({**(metadata or {}), **({"shadow_eval_run_id": run_id} if run_id else {})})
        before = self.describe(package_id)
        if before.status != expected_status:
            log.info("%s is %s, not %s: left alone", package_id, before.status, expected_status)
            return False
        if run_id is not None and before.status in DECISIONS and _manual(before):
            log.warning("%s is %s by a manual decision; run %s leaves it alone", package_id, before.status, run_id)
            return False
        if run_id is not None:
            description = transition_note(run_id, expected_status, new_status, description)
        # UpdateModelPackage merges CustomerMetadataProperties key by key, as the local registry does.
        self.client.update_model_package(
            ModelPackageArn=package_id, ModelApprovalStatus=new_status,
            ApprovalDescription=description, CustomerMetadataProperties=extra)
        after = self.describe(package_id)
        if after.status != new_status:
            log.warning("%s is %s right after we set %s: someone else changed it", package_id, after.status,
                        new_status)
            return False
        return True

    def history(self, package_id: str) -> list[Transition]:
        """Only the latest transition, read from the approval description: the Model Registry keeps no
        transition log (CloudTrail and the "SageMaker Model Package State Change" events do)."""
        info = self.describe(package_id)
        package = self.client.describe_model_package(ModelPackageName=package_id)
        note = parse_transition_note(info.description)
        if note is not None and note[2] == info.status:
            run_id, from_status, _ = note
            return [Transition(package_id, from_status, info.status, self.actor, info.description, run_id,
                               info.updated_at)]
        by = package.get("LastModifiedBy", {}).get("UserProfileName") or "unknown"
        return [Transition(package_id, None, info.status, by, info.description, None, info.updated_at)]

    def list_packages(self, group: str) -> list[PackageInfo]:
        """The group's packages, newest version first."""
        arns: list[str] = []
        paginator = self.client.get_paginator("list_model_packages")
        for page in paginator.paginate(ModelPackageGroupName=group, SortBy="CreationTime", SortOrder="Descending"):
            arns += [item["ModelPackageArn"] for item in page["ModelPackageSummaryList"]]
        return [self.describe(arn) for arn in arns]


def pending_packages(sagemaker_client: Any, group: str) -> list[str]:
    """ARNs of the group's packages still PendingManualApproval, newest first (what a scheduled run evaluates)."""
    arns: list[str] = []
    paginator = sagemaker_client.get_paginator("list_model_packages")
    for page in paginator.paginate(ModelPackageGroupName=group, ModelApprovalStatus="PendingManualApproval",
                                   SortBy="CreationTime", SortOrder="Descending"):
        arns += [item["ModelPackageArn"] for item in page["ModelPackageSummaryList"]]
    return arns


def _manual(info: PackageInfo) -> bool:
    """Whether the package's decision was not written by a shadow-eval run (its description says who)."""
    note = parse_transition_note(info.description)
    return note is None or note[2] != info.status


def _check_arn(package_id: str) -> None:
    if not isinstance(package_id, str) or not _PACKAGE_ARN.fullmatch(package_id):
        raise RegistryError(f"{package_id!r} is not a model package ARN "
                            "(arn:aws:sagemaker:<region>:<account>:model-package/<group>/<version>)")


def _iso(value: Any) -> str:
    if isinstance(value, dt.datetime):
        return value.astimezone(dt.timezone.utc).isoformat(timespec="microseconds").replace("+00:00", "Z")
    return str(value or "")
