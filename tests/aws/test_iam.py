"""Least privilege, shown: every AWS call is allowed by the stack's policy of the role that makes it,
and every grant is used by some call or carries the reason a call the tests cannot record needs it.

Calls the code makes (the Processing entry points) are recorded from boto3 while the cloud chain runs
against moto; calls the services make for us (Pipelines starting jobs, Processing moving its inputs
and outputs, Batch Transform reading and writing under the ModelRole, EventBridge starting the
pipeline) are derived from the rendered pipeline definition. tests/aws/iam_policy.py evaluates.
"""
from __future__ import annotations

import json
import shutil

import boto3
import pytest
from moto import mock_aws

import test_entrypoint_chain as chain
from capture_helpers import at
from iam_policy import ACCOUNT, PARTITION, REGION, Need, needs, recording, resolve_stack
from steps import entrypoints

GROUP = "churn-models"
LABELS = "s3://example-label-bucket/ground-truth/churn-prod"
KEY = "arn:aws:kms:us-east-1:123456789012:key/11111111-2222-3333-4444-555555555555"

# Grants no recorded or derived call exercises, with the call that needs them.
SERVICE_SIDE = {
    ("JobRole", "ReadWriteOutput", "s3:AbortMultipartUpload"):
        "Processing's upload of output/<name>/ aborts a failed multipart upload",
    ("JobRole", "ListOutput", "s3:GetBucketLocation"):
        "Athena, running CREATE OR REPLACE VIEW as the caller, checks the result location's bucket",
    ("JobRole", "GlueTables", "glue:GetDatabase"):
        "Athena, running CREATE OR REPLACE VIEW as the caller, reads the database from the Glue catalog",
    ("JobRole", "GlueTables", "glue:UpdateTable"):
        "Athena's CREATE OR REPLACE VIEW of an existing view; awswrangler when a release adds a column",
    ("JobRole", "JobLogs", "logs:CreateLogGroup"): "the Processing job's log agent (/aws/sagemaker/ProcessingJobs)",
    ("JobRole", "JobLogs", "logs:CreateLogStream"): "the Processing job's log agent",
    ("JobRole", "JobLogs", "logs:PutLogEvents"): "the Processing job's log agent",
    ("JobRole", "JobLogs", "logs:DescribeLogStreams"): "the Processing job's log agent",
    ("JobRole", "JobMetrics", "cloudwatch:PutMetricData"): "Processing job instance metrics (/aws/sagemaker/*)",
    ("JobRole", "PullImageToken", "ecr:GetAuthorizationToken"): "Processing pulls aws.image_uri",
    ("JobRole", "PullImage", "ecr:BatchGetImage"): "Processing pulls aws.image_uri",
    ("JobRole", "PullImage", "ecr:GetDownloadUrlForLayer"): "Processing pulls aws.image_uri",
    ("JobRole", "PullImage", "ecr:BatchCheckLayerAvailability"): "Processing pulls aws.image_uri",
    ("JobRole", "UseKey", "kms:Encrypt"): "Processing encrypts the job's ML storage volume (VolumeKmsKeyId)",
    ("JobRole", "UseKey", "kms:CreateGrant"): "Processing attaches the KMS-encrypted volume (VolumeKmsKeyId)",
    ("JobRole", "UseKey", "kms:DescribeKey"): "Processing validates VolumeKmsKeyId / OutputConfig.KmsKeyId",
    ("ModelRole", "PullImageToken", "ecr:GetAuthorizationToken"): "Batch Transform pulls the model images",
    ("ModelRole", "PullModelImages", "ecr:BatchGetImage"): "Batch Transform pulls the model images",
    ("ModelRole", "PullModelImages", "ecr:GetDownloadUrlForLayer"): "Batch Transform pulls the model images",
    ("ModelRole", "PullModelImages", "ecr:BatchCheckLayerAvailability"): "Batch Transform pulls the model images",
    ("ModelRole", "WriteReplayOutput", "s3:AbortMultipartUpload"):
        "Batch Transform aborts the multipart upload of an object it could not finish",
    ("ModelRole", "TransformLogs", "logs:CreateLogGroup"): "the Transform job's log agent",
    ("ModelRole", "TransformLogs", "logs:CreateLogStream"): "the Transform job's log agent",
    ("ModelRole", "TransformLogs", "logs:PutLogEvents"): "the Transform job's log agent",
    ("ModelRole", "TransformLogs", "logs:DescribeLogStreams"): "the Transform job's log agent",
    ("ModelRole", "TransformMetrics", "cloudwatch:PutMetricData"): "Transform job instance metrics",
    ("ModelRole", "UseKey", "kms:CreateGrant"): "Batch Transform attaches the KMS-encrypted volume",
    ("ModelRole", "UseKey", "kms:DescribeKey"): "Batch Transform validates VolumeKmsKeyId / TransformOutput.KmsKeyId",
    ("PipelineRole", "RunJobs", "sagemaker:AddTags"): "Pipelines tags each job it creates with the execution",
}
VPC_ACTIONS = {"ec2:CreateNetworkInterface", "ec2:CreateNetworkInterfacePermission", "ec2:DeleteNetworkInterface",
               "ec2:DeleteNetworkInterfacePermission", "ec2:DescribeNetworkInterfaces", "ec2:DescribeVpcs",
               "ec2:DescribeDhcpOptions", "ec2:DescribeSubnets", "ec2:DescribeSecurityGroups"}
_ENI_WRITES = {"ec2:CreateNetworkInterface", "ec2:CreateNetworkInterfacePermission", "ec2:DeleteNetworkInterface"}
for _role, _sid in (("JobRole", "VpcJobs"), ("ModelRole", "VpcModels")):
    for _action in VPC_ACTIONS:
        _key = (_role, _sid + ("Interfaces" if _action in _ENI_WRITES else ""), _action)
        SERVICE_SIDE[_key] = "the job's network interfaces in aws.subnets (UseVpc=true)"


def stack_parameters(settings) -> dict[str, str]:
    """The stack's parameters for the test config, as docs/aws.md tells a deployer to set them."""
    return {"PipelineName": settings.pipeline_name, "OutputBucket": settings.bucket, "OutputPrefix": "shadow-eval",
            "CaptureBucket": "capture-bucket", "GroundTruthBucket": "example-label-bucket",
            "ModelPackageGroupName": GROUP, "ProductionEndpointName": "churn-prod",
            "KmsKeyArn": settings.kms_key_id,
            "ModelArtifactArns": ",".join(f"arn:aws:s3:::{b}/*" for b in settings.model_artifact_buckets),
            "ModelImageRepositoryArns": ",".join(settings.model_image_repositories),
            "UseVpc": "true" if settings.subnets else "false"}


@pytest.fixture(scope="module")
def stack(aws_config):
    return resolve_stack(stack_parameters(aws_config[1]))


@pytest.fixture(scope="module")
def job_calls(tmp_path_factory, aws_config_path, aws_config):
    """Every call the Processing entry points make over the scenarios a deployment meets."""
    tmp = tmp_path_factory.mktemp("iam")
    calls = []
    with mock_aws():
        aws = boto3.Session(region_name=REGION)
        for bucket in ("capture-bucket", "example-shadow-eval", "example-label-bucket"):
            aws.client("s3").create_bucket(Bucket=bucket)
        chain.make_account(aws)
        aws.client("sagemaker").create_pipeline(
            PipelineName="shadow-eval", RoleArn=aws_config[1].pipeline_role_arn,
            PipelineDefinition=json.dumps({"Version": "2020-12-01", "Steps": []}))
        package = chain._register(aws)
        chain._capture(aws)
        recorded = {name: getattr(entrypoints, name) for name in ("run_prepare", "run_join_compare", "run_gate")}

        def recorder(function):
            def run(*args, **kwargs):
                with recording(aws) as made:
                    try:
                        return function(*args, **kwargs)
                    finally:
                        calls.extend(made)
            return run

        with pytest.MonkeyPatch.context() as patch:
            for name, function in recorded.items():
                patch.setattr(entrypoints, name, recorder(function))
            # 1. The event-started run: every group, both sides, through the gate.
            root = chain.make_root(tmp / "a", aws_config_path)
            models = chain._prepare(aws, root, "exec1", package)
            plan = json.loads((root / "output" / "prepare" / "replay-plan.json").read_text())
            with _containers() as url:
                for side in ("candidate", "production"):
                    for group in chain.GROUPS:
                        chain._transform(aws, tmp / "a", "exec1", side, group, plan["groups"][group], url)
            jobs = _replay_jobs(aws, "exec1")
            chain._join_compare_and_gate(aws, tmp / "a", "exec1", ("candidate", "production"), jobs)
            assert models["route"] == "replay"
            # A retried JoinCompare replaces the run's table partitions.
            for folder in ("join-compare", "gate"):
                shutil.rmtree(tmp / "a" / folder)
            chain._join_compare_and_gate(aws, tmp / "a", "exec1", ("candidate", "production"))
            # 2. A duplicate event for the same package; 3. the schedule, newest and each; 4. an empty window.
            second = chain._register(aws)
            chain._prepare(aws, chain.make_root(tmp / "b", aws_config_path), "exec2", package)
            chain._prepare(aws, chain.make_root(tmp / "c", aws_config_path), "exec3", "")
            each = chain.make_root(tmp / "d", aws_config_path)
            config_file = each / "input" / "config" / "shadow-eval.yaml"
            config_file.write_text(config_file.read_text().replace("\naws:\n", "\naws:\n  pending_packages: each\n"))
            chain._prepare(aws, each, "exec4", "")
            assert second
            # 5. A model the ModelRole could not read: Prepare fails and releases its claim.
            elsewhere = aws.client("sagemaker").create_model_package(
                ModelPackageGroupName=GROUP, ModelApprovalStatus="Approved",
                InferenceSpecification={"Containers": [{"Image": "123456789012.dkr.ecr.us-east-1.amazonaws.com/x:1",
                                                        "ModelDataUrl": "s3://elsewhere/m.tar.gz"}],
                                        "SupportedContentTypes": ["text/csv"],
                                        "SupportedResponseMIMETypes": ["text/csv"]})["ModelPackageArn"]
            with pytest.raises(entrypoints.aws_models.ModelAccessError):
                chain._prepare(aws, chain.make_root(tmp / "e", aws_config_path), "exec5", elsewhere)
        # 6. Ground truth is fetched as capture is (download_hours); moto lists hours, so a bounded window.
        aws.client("s3").put_object(Bucket="example-label-bucket", Key="ground-truth/churn-prod/2024/01/19/10/a.jsonl",
                                    Body=b"{}\n")
        with recording(aws) as made:
            entrypoints.download_hours(aws.client("s3"), LABELS, tmp / "labels", at(9), at(11))
        calls.extend(made)
    return calls


def _replay_jobs(aws, run: str) -> tuple[str, ...]:
    """The run's transform jobs as Pipelines names them, with the metrics SageMaker publishes for each."""
    sagemaker, cloudwatch, jobs = aws.client("sagemaker"), aws.client("cloudwatch"), []
    for side in ("candidate", "production"):
        for group in chain.GROUPS:
            name = f"pipelines-{run}x7k2q-Replay{side.title()}-{group}-Ab12Cd34"
            sagemaker.create_transform_job(
                TransformJobName=name, ModelName=f"shadow-eval-{run}-{side}",
                TransformInput={"DataSource": {"S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": "s3://b/in/"}}},
                TransformOutput={"S3OutputPath": "s3://b/out/"},
                TransformResources={"InstanceType": "ml.m5.large", "InstanceCount": 1})
            started = sagemaker.describe_transform_job(TransformJobName=name)["TransformStartTime"]
            host = [{"Name": "Host", "Value": f"{name}/i-0abc"}]
            cloudwatch.put_metric_data(Namespace="/aws/sagemaker/TransformJobs", MetricData=[
                {"MetricName": "CPUUtilization", "Dimensions": host, "Timestamp": started, "Value": 40.0}])
            cloudwatch.put_metric_data(Namespace="AWS/SageMaker", MetricData=[
                {"MetricName": "ModelLatency", "Dimensions": host, "Timestamp": started, "Value": 9000.0}])
            jobs.append(f"{side}:{group}={name}")
    return tuple(jobs)


class _containers:
    def __enter__(self):
        from http.server import ThreadingHTTPServer
        import threading

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), chain._container("0.7"))
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return f"http://127.0.0.1:{self.server.server_port}"

    def __exit__(self, *exc):
        self.server.shutdown()


def _denied(role, wanted: list[Need]) -> list[str]:
    return sorted({f"{n.call} needs {n.action} on {n.resource} {dict(n.context) or ''}"
                   for n in wanted if not role.allowing(n)})


def test_the_roles_are_the_ones_the_config_names(stack, aws_config):
    _, settings = aws_config
    assert (stack["JobRole"].arn, stack["PipelineRole"].arn, stack["EventsRole"].arn, stack["ModelRole"].arn) == \
        (settings.role_arn, settings.pipeline_role_arn, settings.events_role_arn, settings.model_role_arn)


@pytest.mark.slow
def test_every_call_the_jobs_make_is_allowed_to_the_job_role(stack, job_calls, aws_config):
    _, settings = aws_config
    wanted = [n for c in job_calls for n in needs(c.service, c.operation, c.params, settings)]
    operations = {f"{c.service}:{c.operation}" for c in job_calls}
    # The scenarios reach every kind of call the entry points make.
    assert {"sagemaker:ListModelPackages", "sagemaker:StartPipelineExecution", "sagemaker:CreateModel",
            "sagemaker:UpdateModelPackage", "s3:PutObject", "s3:GetObject", "glue:BatchCreatePartition",
            "athena:StartQueryExecution"} <= operations, operations
    assert _denied(stack["JobRole"], wanted) == []


def service_needs(definition: dict, settings, stack) -> dict[str, list[Need]]:
    """What Pipelines, Processing, Batch Transform and EventBridge do under each role, from the definition."""
    out, run = settings.output_s3_uri, f"{settings.output_s3_uri}/runs/exec1"
    sm = f"arn:{PARTITION}:sagemaker:{REGION}:{ACCOUNT}"
    bucket = settings.bucket
    by_role: dict[str, list[Need]] = {"PipelineRole": [], "JobRole": [], "ModelRole": [], "EventsRole": []}

    def obj(uri: str) -> str:
        return "arn:aws:s3:::" + uri[len("s3://"):]

    def add(role: str, action: str, resource: str, call: str, **context: str) -> None:
        by_role[role].append(Need(action, resource, tuple(sorted(context.items())), call))

    for step in _all_steps(definition["Steps"]):
        name, kind = step["Name"], step["Type"]
        if kind == "Processing":
            job = f"{sm}:processing-job/pipelines-exec1-{name.lower()}-abc123"
            for action in ("CreateProcessingJob", "DescribeProcessingJob", "StopProcessingJob"):
                add("PipelineRole", f"sagemaker:{action}", job, name)
            add("PipelineRole", "iam:PassRole", step["Arguments"]["RoleArn"], name,
                **{"iam:PassedToService": "sagemaker.amazonaws.com"})
            for source in step["Arguments"].get("ProcessingInputs", []):
                prefix = _key(source["S3Input"]["S3Uri"], out, run)
                add("JobRole", "s3:ListBucket", f"arn:aws:s3:::{bucket}", name, **{"s3:prefix": prefix})
                add("JobRole", "s3:GetObject", f"arn:aws:s3:::{bucket}/{prefix}x", name)
                add("JobRole", "kms:Decrypt", settings.kms_key_id, name)
            for target in step["Arguments"].get("ProcessingOutputConfig", {}).get("Outputs", []):
                add("JobRole", "s3:PutObject", f"arn:aws:s3:::{bucket}/{_key(target['S3Output']['S3Uri'], out, run)}/x",
                    name)
                add("JobRole", "kms:GenerateDataKey", settings.kms_key_id, name)
            for files in step.get("PropertyFiles", []):
                add("PipelineRole", "s3:GetObject", obj(f"{run}/{files['OutputName']}/{files['FilePath']}"), name)
                add("PipelineRole", "kms:Decrypt", settings.kms_key_id, name)
        elif kind == "Transform":
            job = f"{sm}:transform-job/pipelines-exec1-{name.lower()}-abc123"
            for action in ("CreateTransformJob", "DescribeTransformJob", "StopTransformJob"):
                add("PipelineRole", f"sagemaker:{action}", job, name)
            prefix = f"shadow-eval/runs/exec1/prepare/replay-input/{name.rsplit('-', 1)[1]}/"
            add("ModelRole", "s3:ListBucket", f"arn:aws:s3:::{bucket}", name, **{"s3:prefix": prefix})
            add("ModelRole", "s3:GetObject", f"arn:aws:s3:::{bucket}/{prefix}churn-prod/AllTraffic/2024/a.csv", name)
            output = _key(step["Arguments"]["TransformOutput"]["S3OutputPath"], out, run)
            add("ModelRole", "s3:PutObject", f"arn:aws:s3:::{bucket}/{output}churn-prod/AllTraffic/2024/a.csv.out", name)
            for action in ("kms:Decrypt", "kms:GenerateDataKey"):
                add("ModelRole", action, step["Arguments"]["TransformOutput"]["KmsKeyId"], name)
            for artifact in settings.model_artifact_buckets:
                add("ModelRole", "s3:GetObject", f"arn:aws:s3:::{artifact}/churn-2.tar.gz", name)
    add("EventsRole", "sagemaker:StartPipelineExecution", f"{sm}:pipeline/{settings.pipeline_name}", "EventBridge")
    return by_role


def _all_steps(steps: list[dict]):
    for step in steps:
        yield step
        if step["Type"] == "Condition":
            yield from _all_steps(step["Arguments"].get("IfSteps", []) + step["Arguments"].get("ElseSteps", []))


def _key(value, out: str, run: str) -> str:
    """An S3 URI of the definition (literal or Std:Join over OutputS3Uri and the execution id) as a key."""
    if isinstance(value, dict) and "Std:Join" in value:
        parts = []
        for part in value["Std:Join"]["Values"]:
            if part == {"Get": "Parameters.OutputS3Uri"}:
                parts.append(out)
            elif part == {"Get": "Execution.PipelineExecutionId"}:
                parts.append("exec1")
            elif isinstance(part, dict) and "Get" in part and "Steps.Prepare" in part["Get"]:
                parts.append(f"{run}/prepare")
            elif isinstance(part, dict):
                parts.append(_key(part, out, run))
            else:
                parts.append(part)
        value = value["Std:Join"]["On"].join(parts)
    elif isinstance(value, dict) and value.get("Get") == "Parameters.ConfigS3Uri":
        value = f"{out}/config/0123456789abcdef/shadow-eval.yaml"
    elif isinstance(value, dict):
        raise AssertionError(f"cannot read S3 URI {value}")
    return value[len("s3://"):].split("/", 1)[1]


@pytest.fixture(scope="module")
def service_calls(aws_config, stack):
    from steps.aws_pipeline import get_pipeline

    config, settings = aws_config
    return service_needs(json.loads(get_pipeline(config, settings).definition()), settings, stack)


@pytest.mark.slow
def test_join_compare_reads_the_replay_jobs_figures_as_the_job_role(stack, job_calls, aws_config):
    """--transform-job: DescribeTransformJob per job, ListMetrics and GetMetricData, each allowed to the JobRole."""
    _, settings = aws_config
    described = {c.params["TransformJobName"] for c in job_calls if c.operation == "DescribeTransformJob"}
    assert len(described) == 2 * len(chain.GROUPS) and all(name.startswith("pipelines-") for name in described)
    queried = {d["Value"].split("/")[0] for c in job_calls if c.operation == "GetMetricData"
               for q in c.params["MetricDataQueries"] for d in q["MetricStat"]["Metric"]["Dimensions"]}
    assert queried == described  # every job's metrics were found and read
    reads = [c for c in job_calls if c.service in ("cloudwatch", "sagemaker") and c.operation in
             ("DescribeTransformJob", "ListMetrics", "GetMetricData")]
    assert {c.operation for c in reads} == {"DescribeTransformJob", "ListMetrics", "GetMetricData"}
    wanted = [n for c in reads for n in needs(c.service, c.operation, c.params, settings)]
    assert _denied(stack["JobRole"], wanted) == []
    # Only the pipeline's own transform jobs: another job of the account is not readable.
    other = Need("sagemaker:DescribeTransformJob", f"arn:aws:sagemaker:{REGION}:{ACCOUNT}:transform-job/someone-else")
    assert not stack["JobRole"].allowing(other)


def test_what_the_services_do_for_us_is_allowed(stack, service_calls):
    assert {role: _denied(stack[role], wanted) for role, wanted in service_calls.items()} == \
        {role: [] for role in service_calls}
    # The replay Models read exactly the artifacts the config names, not the output prefix at large.
    model = stack["ModelRole"]
    assert not model.allowing(Need("s3:GetObject", "arn:aws:s3:::example-shadow-eval/shadow-eval/tables/x"))
    assert not model.allowing(Need("s3:GetObject", "arn:aws:s3:::another-bucket/model.tar.gz"))
    assert model.allowing(Need("ecr:BatchGetImage", "arn:aws:ecr:us-east-1:123456789012:repository/churn"))


@pytest.mark.slow
def test_no_grant_is_unused_without_the_call_that_needs_it(stack, job_calls, service_calls, aws_config):
    _, settings = aws_config
    wanted = {role: list(needs_) for role, needs_ in service_calls.items()}
    wanted["JobRole"] += [n for c in job_calls for n in needs(c.service, c.operation, c.params, settings)]
    unused = []
    for role_name, role in stack.items():
        used = {(s.get("Sid"), a) for n in wanted.get(role_name, []) for s in role.allowing(n)
                for a in _actions(s) if _action_matches(a, n.action)}
        for statement in role.statements:
            for action in _actions(statement):
                key = (role_name, statement.get("Sid"), action)
                if (statement.get("Sid"), action) not in used and key not in SERVICE_SIDE:
                    unused.append(key)
    assert unused == [], unused
    stale = [key for key in SERVICE_SIDE if key[0] in stack and not any(
        s.get("Sid") == key[1] and key[2] in _actions(s) for s in stack[key[0]].statements)]
    assert stale == [], "SERVICE_SIDE names grants the template no longer has"


def _actions(statement: dict) -> list[str]:
    return statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]


def _action_matches(granted: str, needed: str) -> bool:
    return granted.lower() == needed.lower()


def test_the_evaluator_denies_what_the_template_does_not_grant(stack):
    job = stack["JobRole"]
    assert job.allowing(Need("s3:DeleteObject", "arn:aws:s3:::example-shadow-eval/shadow-eval/tables/t/x.parquet"))
    assert not job.allowing(Need("s3:DeleteObject", "arn:aws:s3:::example-shadow-eval/shadow-eval/runs/x"))
    passed = Need("iam:PassRole", stack["ModelRole"].arn, (("iam:PassedToService", "sagemaker.amazonaws.com"),))
    assert job.allowing(passed)
    assert not job.allowing(Need("iam:PassRole", stack["ModelRole"].arn))  # no service named: condition unmet
    assert not job.allowing(Need("iam:PassRole", stack["JobRole"].arn, passed.context))
    assert not job.allowing(Need("sagemaker:CreateModel", f"arn:aws:sagemaker:{REGION}:{ACCOUNT}:model/other"))


def test_vpc_grants_exist_only_when_the_jobs_run_in_a_vpc(aws_config):
    without = resolve_stack({**stack_parameters(aws_config[1]), "UseVpc": "false"})
    for role in without.values():
        assert not [s for s in role.statements if set(_actions(s)) & VPC_ACTIONS]
    no_key = resolve_stack({**stack_parameters(aws_config[1]), "KmsKeyArn": ""})
    assert not [s for role in no_key.values() for s in role.statements if s.get("Sid") == "UseKey"]
