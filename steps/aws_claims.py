"""Claims on evaluations: one execution per (package, status, capture window), however many events start.

SageMaker may deliver one model package state change more than once, and each delivery starts an
execution. Prepare claims the evaluation with a conditional S3 put (`If-None-Match: *`) of
`<output>/markers/<group>/<version>/<status>-<window>.json`; S3 lets exactly one writer create it.
"""
from __future__ import annotations

import datetime as dt
import json
import logging
from typing import Any

from steps.config import AwsSettings

log = logging.getLogger(__name__)


def claim(s3: Any, settings: AwsSettings, package_arn: str, status: str, start: dt.datetime, end: dt.datetime,
          run_id: str) -> str:
    """Claim the evaluation of (package, status, window) with a conditional put; "" if ours, else why not.

    SageMaker may deliver one state change more than once, each starting an execution; the first to
    write the marker evaluates, the others end as a no-op that names it. A retried Prepare finds its
    own marker and goes on; a failed one releases it (release).
    """
    bucket, key = _marker(settings, package_arn, status, start, end)
    body = json.dumps({"run_id": run_id, "package": package_arn, "status": status}).encode()
    encryption = ({"ServerSideEncryption": "aws:kms", "SSEKMSKeyId": settings.kms_key_id}
                  if settings.kms_key_id else {})
    try:
        s3.put_object(Bucket=bucket, Key=key, Body=body, IfNoneMatch="*", **encryption)
        return ""
    except s3.exceptions.ClientError as exc:
        if exc.response["Error"]["Code"] not in ("PreconditionFailed", "ConditionalRequestConflict"):
            raise
    owner = _marker_owner(s3, bucket, key)
    if owner == run_id:
        return ""
    return (f"execution {owner} already evaluates {package_arn} ({status}) over this window "
            f"(marker s3://{bucket}/{key}); this duplicate does nothing")


def release(s3: Any, settings: AwsSettings, package_arn: str, status: str, start: dt.datetime, end: dt.datetime,
            run_id: str) -> None:
    """Delete this execution's claim (never another's), so a later execution may evaluate the package."""
    bucket, key = _marker(settings, package_arn, status, start, end)
    try:
        if _marker_owner(s3, bucket, key) == run_id:
            s3.delete_object(Bucket=bucket, Key=key)
            log.info("prepare: released s3://%s/%s", bucket, key)
    except s3.exceptions.ClientError as exc:
        log.warning("prepare: could not release s3://%s/%s: %s", bucket, key, exc)


def _marker(settings: AwsSettings, package_arn: str, status: str, start: dt.datetime,
            end: dt.datetime) -> tuple[str, str]:
    package_path = package_arn.split(":model-package/", 1)[-1]  # <group>/<version>
    key_uri = settings.uri("markers", package_path, f"{status}-{start:%Y%m%dT%H%M%SZ}-{end:%Y%m%dT%H%M%SZ}.json")
    bucket, _, key = key_uri[len("s3://"):].partition("/")
    return bucket, key


def _marker_owner(s3: Any, bucket: str, key: str) -> str:
    return json.loads(s3.get_object(Bucket=bucket, Key=key)["Body"].read())["run_id"]
