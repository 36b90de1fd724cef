"""The cloud's operational figures: DescribeTransformJob and CloudWatch, every call checked by botocore's Stubber."""
from __future__ import annotations

import datetime as dt

import boto3
import pytest
from botocore.stub import ANY, Stubber

from analysis.results import Comparison
from steps.transform_metrics import NAMESPACES, PERIOD_S, TransformJobRef, attach, collect

START = dt.datetime(2025, 3, 1, 12, 0, tzinfo=dt.timezone.utc)
JOBS = {"candidate": ("shadow-cand-csv", 300.0, 12_000.0, 3.0), "production": ("shadow-prod-csv", 200.0, 8_000.0, 0.0)}


def _clients():
    session = boto3.Session(region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x")
    sagemaker, cloudwatch = session.client("sagemaker"), session.client("cloudwatch")
    return sagemaker, Stubber(sagemaker), cloudwatch, Stubber(cloudwatch)


def _described(name: str, seconds: float) -> dict:
    return {"TransformJobName": name, "TransformJobArn": f"arn:aws:sagemaker:us-east-1:123456789012:transform-job/{name}",
            "TransformJobStatus": "Completed", "ModelName": "m", "CreationTime": START,
            "TransformStartTime": START, "TransformEndTime": START + dt.timedelta(seconds=seconds),
            "TransformInput": {"DataSource": {"S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": "s3://b/in"}}},
            "TransformOutput": {"S3OutputPath": "s3://b/out"}, "BatchStrategy": "MultiRecord",
            "MaxConcurrentTransforms": 2,
            "TransformResources": {"InstanceType": "ml.m5.xlarge", "InstanceCount": 2}}


def _expect_job(sagemaker_stub, cloudwatch_stub, name, seconds, latency_us, errors):
    sagemaker_stub.add_response("describe_transform_job", _described(name, seconds), {"TransformJobName": name})
    host = [{"Name": "Host", "Value": f"{name}/i-0abc"}]
    other = [{"Name": "Host", "Value": f"{name}-other/i-0def"}]  # another job whose name starts alike
    listed = {
        NAMESPACES[0]: [{"Namespace": NAMESPACES[0], "MetricName": "CPUUtilization", "Dimensions": host},
                        {"Namespace": NAMESPACES[0], "MetricName": "CPUUtilization", "Dimensions": other},
                        {"Namespace": NAMESPACES[0], "MetricName": "DiskUtilization", "Dimensions": host}],
        NAMESPACES[1]: [{"Namespace": NAMESPACES[1], "MetricName": metric, "Dimensions": host}
                        for metric in ("ModelLatency", "Invocations", "Invocation4XXErrors", "Invocation5XXErrors")],
    }
    for namespace in NAMESPACES:
        cloudwatch_stub.add_response("list_metrics", {"Metrics": listed[namespace]}, {"Namespace": namespace})
    # Queries in the order found: CPU (m0), then ModelLatency avg/max, Invocations, 4XX, 5XX.
    values = {"m0_average": [40.0, 60.0], "m1_average": [latency_us, latency_us], "m1_maximum": [latency_us * 3, 5.0],
              "m2_sum": [60.0, 40.0], "m3_sum": [0.0, 0.0], "m4_sum": [errors, 0.0]}
    first = {"MetricDataResults": [{"Id": key, "Values": series[:1], "StatusCode": "PartialData"}
                                   for key, series in values.items()], "NextToken": "more"}
    second = {"MetricDataResults": [{"Id": key, "Values": series[1:], "StatusCode": "Complete"}
                                    for key, series in values.items()]}
    expected = {"MetricDataQueries": ANY, "StartTime": START, "ScanBy": "TimestampAscending",
                "EndTime": START + dt.timedelta(seconds=seconds + PERIOD_S)}
    cloudwatch_stub.add_response("get_metric_data", first, expected)
    cloudwatch_stub.add_response("get_metric_data", second, {**expected, "NextToken": "more"})


def test_collect_reads_each_jobs_description_and_metrics():
    sagemaker, sagemaker_stub, cloudwatch, cloudwatch_stub = _clients()
    for name, seconds, latency, errors in JOBS.values():
        _expect_job(sagemaker_stub, cloudwatch_stub, name, seconds, latency, errors)
    refs = [TransformJobRef.parse(f"{side}:csv={job[0]}") for side, job in JOBS.items()]
    with sagemaker_stub, cloudwatch_stub:
        cloud = collect(sagemaker, cloudwatch, refs)
    sagemaker_stub.assert_no_pending_responses()
    cloudwatch_stub.assert_no_pending_responses()
    candidate, production = cloud["jobs"]
    assert (candidate["job_name"], candidate["duration_s"], candidate["instance_type"], candidate["instance_count"]) \
        == ("shadow-cand-csv", 300.0, "ml.m5.xlarge", 2)
    assert candidate["model_latency_ms_avg"] == 12.0 and candidate["model_latency_ms_max"] == 36.0
    assert (candidate["invocations"], candidate["invocation_5xx_errors"], candidate["cpu_utilization_avg"]) \
        == (100.0, 3.0, 50.0)
    assert candidate["memory_utilization_max"] is None  # not published for the job: null, not zero
    assert production["model_latency_ms_avg"] == 8.0 and "per-record" in cloud["note"]


def test_attach_adds_the_cloud_metrics_to_the_comparison():
    sagemaker, sagemaker_stub, cloudwatch, cloudwatch_stub = _clients()
    for name, seconds, latency, errors in JOBS.values():
        _expect_job(sagemaker_stub, cloudwatch_stub, name, seconds, latency, errors)

    class Session:
        def client(self, name):
            return {"sagemaker": sagemaker, "cloudwatch": cloudwatch}[name]

    empty = Comparison((), {}, {})
    with sagemaker_stub, cloudwatch_stub:
        comparison = attach(empty, Session(), [f"{side}:csv={job[0]}" for side, job in JOBS.items()])
    assert comparison.metric("transform_duration_ratio").value == pytest.approx(1.5)
    assert comparison.metric("transform_model_latency_ratio").value == pytest.approx(1.5)
    assert comparison.metric("transform_error_rate").delta == pytest.approx(0.03)
    assert len(comparison.operational["cloud"]["jobs"]) == 2
    assert attach(empty, Session(), []) is empty


def test_a_denied_cloudwatch_read_is_reported_not_fatal():
    sagemaker, sagemaker_stub, cloudwatch, cloudwatch_stub = _clients()
    sagemaker_stub.add_client_error("describe_transform_job", "AccessDeniedException", "not allowed")

    class Session:
        def client(self, name):
            return {"sagemaker": sagemaker, "cloudwatch": cloudwatch}[name]

    with sagemaker_stub:
        comparison = attach(Comparison((), {}, {}), Session(), ["candidate:csv=job-1"])
    assert comparison.operational["cloud"]["jobs"] == []
    assert "AccessDeniedException" in comparison.operational["cloud"]["note"]


@pytest.mark.parametrize("text", ["candidate=job", "shadow:csv=job", "candidate:csv=", "candidate:csv=a b"])
def test_a_malformed_job_argument_names_the_expected_form(text):
    with pytest.raises(ValueError, match="SIDE:GROUP=JOB_NAME"):
        TransformJobRef.parse(text)
