"""The SageMaker registry and the Glue catalog against moto (in-process)."""
from __future__ import annotations

import boto3
import pandas as pd
import pyarrow as pa
import pytest
from moto import mock_aws

from steps.backends.catalog import SCHEMAS, CatalogError
from steps.backends.catalog_glue import GlueCatalog, athena_types
from steps.backends.registry import RegistryError
from steps.backends.registry_sagemaker import SageMakerRegistry

GROUP = "churn-models"
IMAGE = "123456789012.dkr.ecr.us-east-1.amazonaws.com/churn:2"


@pytest.fixture
def aws():
    with mock_aws():
        yield boto3.Session(region_name="us-east-1")


@pytest.fixture
def registry(aws):
    client = aws.client("sagemaker")
    client.create_model_package_group(ModelPackageGroupName=GROUP)
    return SageMakerRegistry(client)


def test_register_and_describe(registry):
    arn = registry.register(GROUP, f"{IMAGE}|s3://models/churn-2.tar.gz")
    info = registry.describe(arn)
    assert (info.package_id, info.group, info.version, info.status) == (arn, GROUP, 1, "PendingManualApproval")
    assert info.model_uri == f"{IMAGE}|s3://models/churn-2.tar.gz"
    assert [p.package_id for p in registry.list_packages(GROUP)] == [arn]


@pytest.mark.parametrize("verdict", ["Approved", "Rejected"])
def test_set_status_from_the_status_seen_at_start(registry, verdict):
    arn = registry.register(GROUP, IMAGE)
    assert registry.set_status(arn, "PendingManualApproval", verdict, "gate: all checks passed", "run-1",
                               {"shadow_eval_report": "s3://b/runs/run-1/report/report.html"})
    info = registry.describe(arn)
    assert info.status == verdict
    assert info.description == f"shadow-eval run run-1: PendingManualApproval -> {verdict}. gate: all checks passed"
    assert info.metadata == {"shadow_eval_report": "s3://b/runs/run-1/report/report.html",
                             "shadow_eval_run_id": "run-1"}
    (latest,) = registry.history(arn)
    assert (latest.from_status, latest.to_status, latest.run_id) == ("PendingManualApproval", verdict, "run-1")


def test_never_overwrites_a_status_changed_since_the_run_began(registry):
    arn = registry.register(GROUP, IMAGE)
    # Someone rejects the package by hand while the run is going.
    registry.client.update_model_package(ModelPackageArn=arn, ModelApprovalStatus="Rejected",
                                         ApprovalDescription="rejected by hand")
    assert not registry.set_status(arn, "PendingManualApproval", "Approved", "gate passed", "run-2")
    info = registry.describe(arn)
    assert (info.status, info.description) == ("Rejected", "rejected by hand")


def test_refuses_bad_input_before_calling_aws(registry):
    with pytest.raises(RegistryError, match="not a model package ARN"):
        registry.describe("churn-models/1")
    arn = registry.register(GROUP, IMAGE)
    with pytest.raises(RegistryError, match="1024"):
        registry.set_status(arn, "PendingManualApproval", "Approved", "x" * 1025, "run-3")
    with pytest.raises(RegistryError, match="not an approval status"):
        registry.set_status(arn, "PendingManualApproval", "Deployed", "", "run-3")
    assert registry.describe(arn).status == "PendingManualApproval"


def test_missing_package_is_a_registry_error(registry):
    with pytest.raises(RegistryError, match="cannot describe"):
        registry.describe("arn:aws:sagemaker:us-east-1:123456789012:model-package/churn-models/9")


# ---------------------------------------------------------------- catalog

@pytest.fixture
def catalog(aws):
    import awswrangler as wr

    aws.client("s3").create_bucket(Bucket="tables-bucket")
    wr.catalog.create_database("shadow_eval", boto3_session=aws)
    return GlueCatalog("s3://tables-bucket/shadow-eval/tables", "shadow_eval", aws)


def _metrics(run_id: str, value: float) -> pd.DataFrame:
    """One shadow_metrics row, typed by the shared schema (columns not named here are null)."""
    row = dict.fromkeys(SCHEMAS["shadow_metrics"].names)
    row.update(metric="label_agreement", slice="all", candidate=value, support=10, threshold=0.95,
               passed=value >= 0.95)
    return pa.Table.from_pylist([row], schema=SCHEMAS["shadow_metrics"]).to_pandas()


def test_write_partition_registers_glue_table_and_partition(catalog, aws):
    import awswrangler as wr

    catalog.write_partition("shadow_metrics", "run-a", _metrics("run-a", 0.97))
    catalog.write_partition("shadow_metrics", "run-b", _metrics("run-b", 0.90))
    types = wr.catalog.get_table_types("shadow_eval", "shadow_metrics", boto3_session=aws)
    assert types == {**athena_types(SCHEMAS["shadow_metrics"]), "run_id": "string"}
    partitions = wr.catalog.get_parquet_partitions("shadow_eval", "shadow_metrics", boto3_session=aws)
    assert sorted(values for values in partitions.values()) == [["run-a"], ["run-b"]]
    back = wr.s3.read_parquet_table("shadow_metrics", "shadow_eval", boto3_session=aws)
    assert sorted(zip(back["run_id"], back["candidate"])) == [("run-a", 0.97), ("run-b", 0.90)]


def test_rewriting_a_run_replaces_only_its_partition(catalog, aws):
    import awswrangler as wr

    catalog.write_partition("shadow_metrics", "run-a", _metrics("run-a", 0.97))
    catalog.write_partition("shadow_metrics", "run-b", _metrics("run-b", 0.90))
    catalog.write_partition("shadow_metrics", "run-a", _metrics("run-a", 0.99))
    back = wr.s3.read_parquet_table("shadow_metrics", "shadow_eval", boto3_session=aws)
    assert sorted(zip(back["run_id"], back["candidate"])) == [("run-a", 0.99), ("run-b", 0.90)]


def test_empty_partition_still_creates_the_table(catalog, aws):
    import awswrangler as wr

    catalog.write_partition("shadow_quarantine", "run-a", pd.DataFrame(columns=SCHEMAS["shadow_quarantine"].names))
    assert wr.catalog.does_table_exist("shadow_eval", "shadow_quarantine", boto3_session=aws)


def test_write_run_one_object_per_run(catalog, aws):
    import awswrangler as wr

    row = dict.fromkeys(SCHEMAS["shadow_runs"].names)
    row |= {"run_id": "run-a", "started_at": "2026-11-20T10:00:00Z", "finished_at": "2026-11-20T10:05:00Z",
           "endpoint": "churn-prod", "variant": "AllTraffic", "window_start": None, "window_end": None,
           "production_model": "m-prod", "candidate_model": "m-cand", "candidate_package": "arn:x",
           "captured": 10, "joined": 9, "quarantined": 1, "coverage": 0.9, "decision": "Rejected",
           "report_uri": "s3://tables-bucket/runs/run-a/report/report.html"}
    catalog.write_run(row)
    catalog.write_run({**row, "decision": "Approved"})
    keys = wr.s3.list_objects("s3://tables-bucket/shadow-eval/tables/shadow_runs/", boto3_session=aws)
    assert keys == ["s3://tables-bucket/shadow-eval/tables/shadow_runs/part-run-a.parquet"]
    back = wr.s3.read_parquet_table("shadow_runs", "shadow_eval", boto3_session=aws)
    assert back["decision"].tolist() == ["Approved"]


def test_catalog_refuses_bad_names_before_writing(catalog):
    with pytest.raises(CatalogError):
        catalog.write_partition("shadow_runs", "run-a", _metrics("run-a", 1.0))
    with pytest.raises(CatalogError):
        catalog.write_partition("shadow_metrics", "../escape", _metrics("x", 1.0))


def test_parts_are_written_one_at_a_time_first_replacing_the_partition(catalog, aws, tmp_path):
    import awswrangler as wr

    catalog.write_partition("shadow_metrics", "run-a", _metrics("run-a", 0.5))
    paths = []
    for i, value in enumerate((0.97, 0.98, 0.99)):
        path = tmp_path / f"{i}.parquet"
        _metrics("run-a", value).to_parquet(path)
        paths.append(path)
    catalog.write_partition("shadow_metrics", "run-a", paths)
    back = wr.s3.read_parquet_table("shadow_metrics", "shadow_eval", boto3_session=aws)
    assert sorted(back["candidate"]) == [0.97, 0.98, 0.99]  # the old row is gone, every part landed
    keys = wr.s3.list_objects("s3://tables-bucket/shadow-eval/tables/shadow_metrics/run_id=run-a/",
                              boto3_session=aws)
    assert len(keys) == 3


def test_a_kms_key_encrypts_every_object_written(aws, monkeypatch):
    import awswrangler as wr

    aws.client("s3").create_bucket(Bucket="tables-bucket")
    wr.catalog.create_database("shadow_eval", boto3_session=aws)
    key = aws.client("kms").create_key()["KeyMetadata"]["Arn"]
    catalog = GlueCatalog("s3://tables-bucket/t", "shadow_eval", aws, kms_key_id=key)
    calls = []
    real = wr.s3.to_parquet
    monkeypatch.setattr(wr.s3, "to_parquet", lambda *a, **k: calls.append(k) or real(*a, **k))
    catalog.write_partition("shadow_metrics", "run-a", _metrics("run-a", 0.97))
    row = dict.fromkeys(SCHEMAS["shadow_runs"].names) | {"run_id": "run-a", "decision": "Approved"}
    catalog.write_run(row)
    expected = {"ServerSideEncryption": "aws:kms", "SSEKMSKeyId": key}
    assert [c["s3_additional_kwargs"] for c in calls] == [expected, expected]
    s3 = aws.client("s3")
    for obj in s3.list_objects_v2(Bucket="tables-bucket")["Contents"]:
        head = s3.head_object(Bucket="tables-bucket", Key=obj["Key"])
        assert head["ServerSideEncryption"] == "aws:kms" and head["SSEKMSKeyId"] == key, obj["Key"]
    assert GlueCatalog("s3://b/t", "d", aws).s3_additional_kwargs is None
