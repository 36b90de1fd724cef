"""What the cloud can say about a replay's cost: each Batch Transform job's duration, resources, CloudWatch metrics.

Batch Transform reports no latency per record or per mini-batch, and its retries are invisible. What
is measured here, per transform job:
- DescribeTransformJob: status, instance type and count, start and end time (the duration);
- CloudWatch GetMetricData over the job's run (one-minute periods): ModelLatency (microseconds),
  Invocations, Invocation4XXErrors, Invocation5XXErrors, CPUUtilization and MemoryUtilization, for
  every metric ListMetrics finds in the /aws/sagemaker/TransformJobs or AWS/SageMaker namespace
  with a dimension naming the job (Host = `<job>/<instance>`). A metric SageMaker did not publish
  for the job stays null, never zero.
Only the local replay measures per-batch latency and its quantiles, batches paired across the
sides, retries per batch, the production-against-itself noise reference, and the model server's
start time and peak memory.
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import re
from typing import Any

from analysis.operational import transform_job_metrics
from analysis.results import Comparison

log = logging.getLogger("shadow_eval.transform_metrics")

NAMESPACES = ("/aws/sagemaker/TransformJobs", "AWS/SageMaker")
STATISTICS = {"ModelLatency": ("Average", "Maximum"), "Invocations": ("Sum",), "Invocation4XXErrors": ("Sum",),
              "Invocation5XXErrors": ("Sum",), "CPUUtilization": ("Average",), "MemoryUtilization": ("Maximum",)}
PERIOD_S = 60
_JOB_ARGUMENT = re.compile(r"^(?P<side>candidate|production):(?P<group>[a-z]+)=(?P<name>[A-Za-z0-9-]{1,63})$")
NOTE = ("Batch Transform exposes no per-record latency: job duration, instances and CloudWatch metrics only. "
        "Per-batch latency, pairing and the noise reference need the local replay.")


@dataclasses.dataclass(frozen=True)
class TransformJobRef:
    side: str
    group: str
    name: str

    @classmethod
    def parse(cls, text: str) -> TransformJobRef:
        """`candidate:csv=<job name>`, as the pipeline passes --transform-job."""
        match = _JOB_ARGUMENT.match(text)
        if not match:
            raise ValueError(f"--transform-job {text!r}: expected SIDE:GROUP=JOB_NAME, SIDE candidate or production")
        return cls(**match.groupdict())


def collect(sagemaker: Any, cloudwatch: Any, jobs: list[TransformJobRef]) -> dict[str, Any]:
    """Each job's description and CloudWatch figures, as report data."""
    return {"jobs": [_job(sagemaker, cloudwatch, job) for job in jobs], "note": NOTE}


def attach(comparison: Comparison, session: Any, job_arguments: list[str] | None) -> Comparison:
    """The comparison plus the transform jobs' figures (operational["cloud"]) and metrics; unchanged without jobs.

    A missing permission or throttling leaves the figures out with the reason; it never fails the run.
    """
    if not job_arguments:
        return comparison
    jobs = [TransformJobRef.parse(text) for text in job_arguments]
    try:
        cloud = collect(session.client("sagemaker"), session.client("cloudwatch"), jobs)
    except Exception as exc:  # noqa: BLE001 - botocore's ClientError and friends: report, do not fail the verdict
        log.warning("transform job metrics unavailable: %s", exc)
        cloud = {"jobs": [], "note": f"{NOTE} Not read: {type(exc).__name__}: {exc}"}
    return dataclasses.replace(comparison, metrics=tuple(comparison.metrics) + tuple(transform_job_metrics(cloud["jobs"])),
                               operational={**comparison.operational, "cloud": cloud})


def _job(sagemaker: Any, cloudwatch: Any, job: TransformJobRef) -> dict[str, Any]:
    described = sagemaker.describe_transform_job(TransformJobName=job.name)
    resources = described.get("TransformResources", {})
    start, end = described.get("TransformStartTime"), described.get("TransformEndTime")
    entry: dict[str, Any] = {
        "side": job.side, "group": job.group, "job_name": job.name, "status": described.get("TransformJobStatus"),
        "instance_type": resources.get("InstanceType"), "instance_count": resources.get("InstanceCount"),
        "started_at": start.isoformat() if start else None, "ended_at": end.isoformat() if end else None,
        "duration_s": (end - start).total_seconds() if start and end else None,
        "batch_strategy": described.get("BatchStrategy"),
        "max_concurrent_transforms": described.get("MaxConcurrentTransforms"),
    }
    figures = _cloudwatch(cloudwatch, job.name, start, end) if start else {}
    latency = figures.get(("ModelLatency", "Average"))
    latency_max = figures.get(("ModelLatency", "Maximum"))
    entry.update({
        "model_latency_ms_avg": latency / 1000.0 if latency is not None else None,
        "model_latency_ms_max": latency_max / 1000.0 if latency_max is not None else None,
        "invocations": figures.get(("Invocations", "Sum")),
        "invocation_4xx_errors": figures.get(("Invocation4XXErrors", "Sum")),
        "invocation_5xx_errors": figures.get(("Invocation5XXErrors", "Sum")),
        "cpu_utilization_avg": figures.get(("CPUUtilization", "Average")),
        "memory_utilization_max": figures.get(("MemoryUtilization", "Maximum")),
    })
    return entry


def _cloudwatch(cloudwatch: Any, job: str, start: dt.datetime, end: dt.datetime | None) -> dict[tuple[str, str], float]:
    """(metric, statistic) -> the job's figure over its run, combined over its instances."""
    metrics = []
    for namespace in NAMESPACES:
        for page in cloudwatch.get_paginator("list_metrics").paginate(Namespace=namespace):
            for metric in page.get("Metrics", []):
                if metric.get("MetricName") in STATISTICS and any(
                        d["Value"] == job or d["Value"].startswith(f"{job}/") for d in metric.get("Dimensions", [])):
                    metrics.append(metric)
    if not metrics:
        return {}
    queries, keys = [], {}
    for i, metric in enumerate(metrics):
        for statistic in STATISTICS[metric["MetricName"]]:
            query_id = f"m{i}_{statistic.lower()}"
            keys[query_id] = (metric["MetricName"], statistic)
            queries.append({"Id": query_id, "ReturnData": True, "MetricStat": {
                "Metric": {k: metric[k] for k in ("Namespace", "MetricName", "Dimensions")},
                "Period": PERIOD_S, "Stat": statistic}})
    stop = (end or dt.datetime.now(dt.timezone.utc)) + dt.timedelta(seconds=PERIOD_S)
    values: dict[tuple[str, str], list[float]] = {}
    for first in range(0, len(queries), 500):  # GetMetricData takes at most 500 queries
        token = None
        while True:
            request = {"MetricDataQueries": queries[first:first + 500], "StartTime": start, "EndTime": stop,
                       "ScanBy": "TimestampAscending"}
            if token:
                request["NextToken"] = token
            answer = cloudwatch.get_metric_data(**request)
            for result in answer.get("MetricDataResults", []):
                values.setdefault(keys[result["Id"]], []).extend(result.get("Values", []))
            token = answer.get("NextToken")
            if not token:
                break
    combined = {}
    for (name, statistic), series in values.items():
        if series:
            combined[(name, statistic)] = (sum(series) if statistic == "Sum" else max(series)
                                           if statistic == "Maximum" else sum(series) / len(series))
    return combined
