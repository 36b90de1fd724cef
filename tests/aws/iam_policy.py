"""A small IAM policy evaluator over infra/shadow-eval.yaml, and a recorder of the AWS calls code makes.

Why an evaluator and not moto's IAM enforcement or the IAM simulator: moto enforces only identity
policies of the caller's access key (not of a role a job would assume), and SimulatePrincipalPolicy
needs an account. The template uses only Allow statements, action and resource wildcards and the
condition operators StringEquals and StringLike, which is all this evaluates; anything else in the
template fails `resolve_stack` loudly rather than being misjudged.
"""
from __future__ import annotations

import contextlib
import dataclasses
import re
from pathlib import Path
from typing import Any, Iterator

TEMPLATE = Path(__file__).resolve().parents[2] / "infra" / "shadow-eval.yaml"
REGION, ACCOUNT, PARTITION = "us-east-1", "123456789012", "aws"
_OPERATORS = {"StringEquals", "StringLike"}


@dataclasses.dataclass(frozen=True)
class Need:
    """One permission a call needs: an action on a resource, with the condition keys the request carries."""

    action: str
    resource: str
    context: tuple[tuple[str, str], ...] = ()
    call: str = ""


@dataclasses.dataclass
class Role:
    name: str
    arn: str
    trust: dict
    statements: list[dict]

    def allowing(self, need: Need) -> list[dict]:
        """The statements that allow this need (empty: denied)."""
        return [s for s in self.statements if _matches(s, need)]


def resolve_stack(parameters: dict[str, str], template: Path = TEMPLATE) -> dict[str, Role]:
    """Every AWS::IAM::Role of the template as deployed with these parameters (defaults fill the rest)."""
    from cfnlint.decode import decode

    parsed, errors = decode(str(template))
    assert not errors, errors
    values: dict[str, Any] = {}
    for name, spec in parsed["Parameters"].items():
        value = parameters.get(name, spec.get("Default"))
        assert value is not None, f"parameter {name} has no value and no default"
        values[name] = [v.strip() for v in value.split(",") if v.strip()] if spec["Type"] == "CommaDelimitedList" \
            else value
    values.update({"AWS::Partition": PARTITION, "AWS::Region": REGION, "AWS::AccountId": ACCOUNT})
    resources = parsed["Resources"]
    names = {"AthenaWorkGroup": lambda: _resolve(resources["AthenaWorkGroup"]["Properties"]["Name"], values, {}, {}),
             "Database": lambda: values["DatabaseName"]}
    for logical, resource in resources.items():
        if resource["Type"] == "AWS::IAM::Role":
            role_name = _resolve(resource["Properties"]["RoleName"], values, {}, {})
            names[logical] = lambda n=role_name: n
    refs = {k: v() for k, v in names.items()}
    arns = {k: f"arn:{PARTITION}:iam::{ACCOUNT}:role/{v}" for k, v in refs.items() if resources[k]["Type"] == "AWS::IAM::Role"}
    conditions: dict[str, bool] = {}
    for name, expression in parsed.get("Conditions", {}).items():
        conditions[name] = _condition(expression, {**values, **refs}, conditions)
    roles = {}
    for logical, resource in resources.items():
        if resource["Type"] != "AWS::IAM::Role":
            continue
        props = _resolve(resource["Properties"], {**values, **refs}, arns, conditions)
        statements = [s for p in props.get("Policies", []) for s in p["PolicyDocument"]["Statement"]]
        assert all(s["Effect"] == "Allow" for s in statements), "the evaluator knows only Allow statements"
        roles[logical] = Role(props["RoleName"], arns[logical], props["AssumeRolePolicyDocument"], statements)
    return roles


_NO_VALUE = object()


def _resolve(node: Any, values: dict, arns: dict, conditions: dict) -> Any:
    if isinstance(node, list):
        items = [_resolve(item, values, arns, conditions) for item in node]
        return [item for item in items if item is not _NO_VALUE]
    if not isinstance(node, dict):
        return node
    if len(node) == 1:
        (key, arg), = node.items()
        if key == "Ref":
            if arg == "AWS::NoValue":
                return _NO_VALUE
            return values[arg]
        if key == "Fn::Sub":
            text, extra = (arg, {}) if isinstance(arg, str) else (arg[0], _resolve(arg[1], values, arns, conditions))
            return re.sub(r"\$\{([^}]+)\}", lambda m: str({**values, **extra}[m.group(1)]), text)
        if key == "Fn::GetAtt":
            logical, attribute = arg if isinstance(arg, list) else arg.split(".")
            assert attribute == "Arn", arg
            return arns[logical]
        if key == "Fn::If":
            name, yes, no = arg
            return _resolve(yes if conditions[name] else no, values, arns, conditions)
        assert not key.startswith("Fn::"), f"the evaluator cannot resolve {key}"
    resolved = {k: _resolve(v, values, arns, conditions) for k, v in node.items()}
    return {k: v for k, v in resolved.items() if v is not _NO_VALUE}


def _condition(expression: Any, values: dict, conditions: dict) -> Any:
    if isinstance(expression, dict):
        (key, arg), = expression.items()
        if key == "Fn::Equals":
            left, right = (_condition(a, values, conditions) for a in arg)
            return left == right
        if key == "Fn::Not":
            return not _condition(arg[0], values, conditions)
        if key == "Condition":
            return conditions[arg]
        if key == "Ref":
            return values[arg]
        raise AssertionError(f"the evaluator cannot resolve condition {key}")
    return expression


def _listed(value: Any) -> list:
    return value if isinstance(value, list) else [value]


def _glob(pattern: str, value: str, case: bool = True) -> bool:
    regex = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.fullmatch(regex, value, 0 if case else re.IGNORECASE) is not None


def _matches(statement: dict, need: Need) -> bool:
    if not any(_glob(a, need.action, case=False) for a in _listed(statement["Action"])):
        return False
    if not any(_glob(r, need.resource) for r in _listed(statement["Resource"])):
        return False
    context = dict(need.context)
    for operator, tests in statement.get("Condition", {}).items():
        assert operator in _OPERATORS, f"the evaluator knows only {_OPERATORS}, not {operator}"
        for key, expected in tests.items():
            if key not in context:
                return False
            compare = (lambda p, v: p == v) if operator == "StringEquals" else _glob
            if not any(compare(str(p), context[key]) for p in _listed(expected)):
                return False
    return True


# ---------------------------------------------------------------- what a call needs

def needs(service: str, operation: str, params: dict, settings: Any) -> list[Need]:
    """The permissions one recorded API call needs (IAM Service Authorization Reference)."""
    call = f"{service}:{operation}"
    sm = f"arn:{PARTITION}:sagemaker:{REGION}:{ACCOUNT}"
    glue = f"arn:{PARTITION}:glue:{REGION}:{ACCOUNT}"

    def need(action: str, resource: str, **context: str) -> Need:
        return Need(action, resource, tuple(sorted(context.items())), call)

    def obj(bucket: str, key: str) -> str:
        return f"arn:{PARTITION}:s3:::{bucket}/{key}"

    def kms_put() -> list[Need]:
        key = params.get("SSEKMSKeyId")
        return [need("kms:GenerateDataKey", key)] if key else []

    def kms_get(bucket: str) -> list[Need]:
        # Objects under the output prefix are SSE-KMS when a key is configured; S3 decrypts as the caller.
        return [need("kms:Decrypt", settings.kms_key_id)] if settings.kms_key_id and bucket == settings.bucket else []

    def tables(database: str, table: str) -> list[Need]:
        return [need(f"glue:{operation}", f"{glue}:catalog"), need(f"glue:{operation}", f"{glue}:database/{database}"),
                need(f"glue:{operation}", f"{glue}:table/{database}/{table}")]

    if service == "s3":
        bucket = params.get("Bucket", "")
        if operation in ("ListObjectsV2", "ListObjects"):
            return [need("s3:ListBucket", f"arn:{PARTITION}:s3:::{bucket}", **{"s3:prefix": params.get("Prefix", "")})]
        if operation == "HeadBucket":
            return [need("s3:ListBucket", f"arn:{PARTITION}:s3:::{bucket}")]
        if operation == "GetBucketLocation":
            return [need("s3:GetBucketLocation", f"arn:{PARTITION}:s3:::{bucket}")]
        if operation in ("GetObject", "HeadObject"):
            return [need("s3:GetObject", obj(bucket, params["Key"])), *kms_get(bucket)]
        if operation in ("PutObject", "CreateMultipartUpload"):
            return [need("s3:PutObject", obj(bucket, params["Key"])), *kms_put()]
        if operation in ("UploadPart", "CompleteMultipartUpload"):
            return [need("s3:PutObject", obj(bucket, params["Key"]))]
        if operation == "AbortMultipartUpload":
            return [need("s3:AbortMultipartUpload", obj(bucket, params["Key"]))]
        if operation == "DeleteObject":
            return [need("s3:DeleteObject", obj(bucket, params["Key"]))]
        if operation == "DeleteObjects":
            return [need("s3:DeleteObject", obj(bucket, o["Key"])) for o in params["Delete"]["Objects"]]
    if service == "sagemaker":
        lower = str.lower
        if operation in ("DescribeModelPackage", "UpdateModelPackage"):
            arn = params.get("ModelPackageName") or params["ModelPackageArn"]
            return [need(f"sagemaker:{operation}", arn)]
        if operation == "ListModelPackages":
            return [need("sagemaker:ListModelPackages", "*")]
        if operation == "CreateModel":
            return [need("sagemaker:CreateModel", f"{sm}:model/{lower(params['ModelName'])}"),
                    need("iam:PassRole", params["ExecutionRoleArn"], **{"iam:PassedToService": "sagemaker.amazonaws.com"})]
        if operation == "DescribeTransformJob":
            return [need("sagemaker:DescribeTransformJob", f"{sm}:transform-job/{lower(params['TransformJobName'])}")]
        if operation == "DescribeModel":
            return [need("sagemaker:DescribeModel", f"{sm}:model/{lower(params['ModelName'])}")]
        if operation == "DescribeEndpoint":
            return [need("sagemaker:DescribeEndpoint", f"{sm}:endpoint/{lower(params['EndpointName'])}")]
        if operation == "DescribeEndpointConfig":
            return [need("sagemaker:DescribeEndpointConfig",
                         f"{sm}:endpoint-config/{lower(params['EndpointConfigName'])}")]
        if operation in ("StartPipelineExecution", "DescribePipeline"):
            return [need(f"sagemaker:{operation}", f"{sm}:pipeline/{lower(params['PipelineName'])}")]
        if operation in ("CreatePipeline", "UpdatePipeline"):
            return [need(f"sagemaker:{operation}", f"{sm}:pipeline/{lower(params['PipelineName'])}"),
                    need("iam:PassRole", params["RoleArn"], **{"iam:PassedToService": "sagemaker.amazonaws.com"})]
    if service == "cloudwatch" and operation in ("ListMetrics", "GetMetricData"):
        return [need(f"cloudwatch:{operation}", "*")]  # no resource type (Service Authorization Reference)
    if service == "iam" and operation == "GetRole":
        return [need("iam:GetRole", f"arn:{PARTITION}:iam::{ACCOUNT}:role/{params['RoleName']}")]
    if service in ("events", "eventbridge"):
        rule = f"arn:{PARTITION}:events:{REGION}:{ACCOUNT}:rule/{params.get('Rule') or params.get('Name')}"
        passed = [need("iam:PassRole", t["RoleArn"], **{"iam:PassedToService": "events.amazonaws.com"})
                  for t in params.get("Targets", []) if "RoleArn" in t]
        return [need(f"events:{operation}", rule), *passed]
    if service == "scheduler":
        schedule = f"arn:{PARTITION}:scheduler:{REGION}:{ACCOUNT}:schedule/default/{params['Name']}"
        target = params.get("Target", {})
        passed = [need("iam:PassRole", target["RoleArn"], **{"iam:PassedToService": "scheduler.amazonaws.com"})] \
            if "RoleArn" in target else []
        return [need(f"scheduler:{operation}", schedule), *passed]
    if service == "glue":
        if operation == "GetDatabase":
            return [need("glue:GetDatabase", f"{glue}:catalog"), need("glue:GetDatabase", f"{glue}:database/{params['Name']}")]
        if operation in ("GetTable",):
            return tables(params["DatabaseName"], params["Name"])
        if operation in ("CreateTable", "UpdateTable"):
            return tables(params["DatabaseName"], params["TableInput"]["Name"])
        if operation in ("GetPartitions", "BatchCreatePartition", "GetPartition", "CreatePartition"):
            return tables(params["DatabaseName"], params["TableName"])
    if service == "athena":
        workgroup = params.get("WorkGroup", settings.athena_workgroup)
        if operation in ("StartQueryExecution", "GetQueryExecution"):
            return [need(f"athena:{operation}", f"arn:{PARTITION}:athena:{REGION}:{ACCOUNT}:workgroup/{workgroup}")]
    raise AssertionError(f"{call}: no mapping to IAM actions; add it to tests/aws/iam_policy.needs")


@dataclasses.dataclass(frozen=True)
class Call:
    service: str
    operation: str
    params: dict


@contextlib.contextmanager
def recording(boto3_session: Any) -> Iterator[list[Call]]:
    """Every API call made through clients this session creates inside the block (their parameters included)."""
    calls: list[Call] = []
    active = [True]  # clients made inside the block keep the handler; it stops recording at the end

    def record(params: dict, model: Any, **_: Any) -> None:
        if active[0]:
            calls.append(Call(model.service_model.service_name, model.name, dict(params)))

    boto3_session.events.register("provide-client-params", record, unique_id="shadow-eval-recorder")
    try:
        yield calls
    finally:
        active[0] = False
        boto3_session.events.unregister("provide-client-params", unique_id="shadow-eval-recorder")
