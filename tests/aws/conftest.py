"""AWS-path tests: fake credentials and the telemetry opt-out, set before sagemaker loads.

The SDK's role validation stays on: the CLI tests create the stack's roles in moto IAM (test_cli.py).

These run in CI (the CI lock includes the AWS packages); when CI=true a missing SDK is an error,
not a skip, so the cloud path cannot silently stop being tested.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
SDK_CONFIG = HERE / "sagemaker-offline.yaml"

# Set before anything imports sagemaker: v3 creates a boto3 client at import (needs a region) and reads
# its defaults config once per Session (telemetry opt-out).
os.environ.update({
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SECURITY_TOKEN": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "SAGEMAKER_USER_CONFIG_OVERRIDE": str(SDK_CONFIG),
})
for name in ("AWS_PROFILE", "AWS_ENDPOINT_URL", "SAGEMAKER_VALIDATE_ROLE"):
    os.environ.pop(name, None)

_REQUIRED = ("sagemaker.mlops", "boto3", "moto", "awswrangler", "jsonschema")


def _missing() -> list[str]:
    import importlib.util

    missing = []
    for module in _REQUIRED:
        try:
            found = importlib.util.find_spec(module) is not None
        except ModuleNotFoundError:
            found = False
        if not found:
            missing.append(module)
    return missing


_MISSING = _missing()
if _MISSING and os.environ.get("CI", "").lower() in ("1", "true", "yes"):
    raise RuntimeError(f"tests/aws: {', '.join(_MISSING)} not installed but CI=true; "
                       "install requirements/ci.lock (see docs/aws.md)")
# Outside CI, a machine with only the embedded default still runs the rest of the suite.
collect_ignore_glob = ["test_*.py"] if _MISSING else []


def pytest_report_header(config):
    if _MISSING:
        return f"tests/aws NOT collected: {', '.join(_MISSING)} missing (install requirements/ci.lock)"
    return None


@pytest.fixture(scope="session")
def aws_config_path() -> Path:
    return HERE / "configs" / "aws.yaml"


@pytest.fixture(scope="session")
def aws_config(aws_config_path):
    from steps.aws_settings import load_aws_config

    return load_aws_config(aws_config_path)


@pytest.fixture
def aws():
    """A moto account with the buckets the entry-point tests read and write."""
    import boto3
    from moto import mock_aws

    with mock_aws():
        session = boto3.Session(region_name="us-east-1")
        for bucket in ("capture-bucket", "example-shadow-eval"):
            session.client("s3").create_bucket(Bucket=bucket)
        yield session
