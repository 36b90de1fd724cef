"""parliament over the stack's policies, as deployed with every optional part on (VPC, KMS, labels).

Run by `make test` (`python tests/aws/lint_iam.py`) and by tests/aws/test_infra.py. parliament reads
plain policy documents, not CloudFormation, so the roles are resolved first (iam_policy.resolve_stack).
Every finding must be fixed in the template or justified here with the reason it stays.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from iam_policy import resolve_stack  # noqa: E402

PARAMETERS = {"OutputBucket": "example-shadow-eval", "CaptureBucket": "capture-bucket",
              "GroundTruthBucket": "example-label-bucket", "ModelPackageGroupName": "churn-models",
              "ProductionEndpointName": "churn-prod",
              "KmsKeyArn": "arn:aws:kms:us-east-1:123456789012:key/11111111-2222-3333-4444-555555555555",
              "ModelArtifactArns": "arn:aws:s3:::model-artifacts/*",
              "ModelImageRepositoryArns": "arn:aws:ecr:us-east-1:123456789012:repository/churn", "UseVpc": "true"}

# (issue, action) -> why the grant stays. Community auditors flag classes of action, not mistakes.
JUSTIFIED = {
    ("CREDENTIALS_EXPOSURE", "ecr:getauthorizationtoken"):
        "pulling any ECR image needs a registry token; the role may pull only the named repositories",
    ("PERMISSIONS_MANAGEMENT_ACTIONS", "iam:passrole"):
        "one role, to sagemaker.amazonaws.com only (iam:PassedToService): the Models' and the jobs' roles",
    ("PERMISSIONS_MANAGEMENT_ACTIONS", "kms:creategrant"):
        "SageMaker attaches KMS-encrypted ML volumes by grant; on the configured key only",
    ("PERMISSIONS_MANAGEMENT_ACTIONS", "ec2:createnetworkinterfacepermission"):
        "SageMaker attaches the job's network interface in aws.subnets; only with UseVpc=true",
    ("PERMISSIONS_MANAGEMENT_ACTIONS", "ec2:deletenetworkinterfacepermission"):
        "SageMaker detaches the job's network interface at the end; only with UseVpc=true",
}


def findings() -> list[str]:
    """Unjustified parliament findings, one line each (empty: the template is clean)."""
    import parliament

    found = []
    for name, role in resolve_stack(PARAMETERS).items():
        document = json.dumps({"Version": "2012-10-17", "Statement": role.statements})
        for finding in parliament.analyze_policy_string(document, include_community_auditors=True).findings:
            actions = finding.location.get("actions") or [None]
            for action in actions:
                if (finding.issue, action) not in JUSTIFIED:
                    found.append(f"{name}: {finding.issue} {finding.detail} {finding.location}")
    return found


def main() -> int:
    problems = findings()
    for problem in problems:
        print(problem)
    print(f"parliament: {len(problems)} unjustified finding(s) in infra/shadow-eval.yaml")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
