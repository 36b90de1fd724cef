"""infra/shadow-eval.yaml: cfn-lint clean, and least privilege in the sense the template promises."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

TEMPLATE = Path(__file__).resolve().parents[2] / "infra" / "shadow-eval.yaml"
# AWS grants these on no narrower resource than "*" (Service Authorization Reference: no resource type),
# and each is on "*" only with a condition or in a statement only VPC jobs get (test_iam checks UseVpc).
STAR_RESOURCE_ALLOWED = {"ecr:GetAuthorizationToken", "ec2:CreateNetworkInterface", "ec2:CreateNetworkInterfacePermission",
                         "ec2:DeleteNetworkInterface", "ec2:DeleteNetworkInterfacePermission",
                         "ec2:DescribeNetworkInterfaces", "ec2:DescribeVpcs", "ec2:DescribeDhcpOptions",
                         "ec2:DescribeSubnets", "ec2:DescribeSecurityGroups",
                         "sagemaker:ListModelPackages",  # Prepare finds the pending packages of the group
                         "cloudwatch:PutMetricData",     # conditioned on the /aws/sagemaker/* namespaces
                         # JoinCompare reads the replay jobs' figures; CloudWatch has no resource type for these
                         "cloudwatch:ListMetrics", "cloudwatch:GetMetricData"}


@pytest.fixture(scope="module")
def template() -> dict:
    from cfnlint.decode import decode

    parsed, errors = decode(str(TEMPLATE))
    assert not errors
    return parsed


def test_cfn_lint_passes():
    import cfnlint.api

    problems = cfnlint.api.lint_file(TEMPLATE)
    assert [str(p) for p in problems] == []


def _statements(template: dict):
    for name, resource in template["Resources"].items():
        for policy in resource.get("Properties", {}).get("Policies", []):
            for statement in policy["PolicyDocument"]["Statement"]:
                if "Fn::If" in statement:  # a conditional statement: check its "true" branch
                    statement = statement["Fn::If"][1]
                yield name, statement


def _listed(value) -> list:
    return value if isinstance(value, list) else [value]


def test_no_wildcard_actions_and_star_resources_only_where_aws_requires(template):
    seen = 0
    for role, statement in _statements(template):
        actions = _listed(statement["Action"])
        assert all("*" not in action for action in actions), f"{role}: wildcard action in {actions}"
        if "*" in _listed(statement["Resource"]):
            assert set(actions) <= STAR_RESOURCE_ALLOWED, f"{role}: {actions} on *"
        seen += 1
    assert seen >= 15


def test_roles_match_the_settings_they_fill(template):
    outputs = template["Outputs"]
    assert {k: v["Description"] for k, v in outputs.items()} == {
        "JobRoleArn": "aws.role_arn", "PipelineRoleArn": "aws.pipeline_role_arn",
        "EventsRoleArn": "aws.events_role_arn", "ModelRoleArn": "aws.model_role_arn", "DatabaseName": "tables.database",
        "AthenaWorkGroupName": "aws.athena_workgroup"}
    trust = template["Resources"]["EventsRole"]["Properties"]["AssumeRolePolicyDocument"]["Statement"][0]
    assert sorted(trust["Principal"]["Service"]) == ["events.amazonaws.com", "scheduler.amazonaws.com"]


def test_parliament_finds_nothing_unjustified():
    try:
        import parliament
    except ImportError:
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            raise
        pytest.skip("parliament is not installed here (requirements/ci.lock has it)")
    import lint_iam

    assert lint_iam.findings() == []
    # The linter is live: a resource that does not fit the action is found.
    bad = parliament.analyze_policy_string(json.dumps({"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": "s3:GetObject", "Resource": "arn:aws:s3:::bucket"}]}))
    assert [f.issue for f in bad.findings] == ["RESOURCE_MISMATCH"]
