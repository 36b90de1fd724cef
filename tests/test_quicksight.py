"""`shadow-eval quicksight`: requests built from the config and views, checked by botocore's service model."""
from __future__ import annotations

import json
import socket

import pytest

import pipeline
from steps.backends.catalog import VIEWS
from steps.quicksight import (
    QuickSightError, build_requests, create, settings_from_config, validate_requests, view_columns,
)

boto3 = pytest.importorskip("boto3")
from botocore.stub import Stubber  # noqa: E402  (after the skip: botocore comes with boto3)

CONFIG = "configs/aws.example.yaml"
ANALYSTS = "arn:aws:quicksight:us-east-1:123456789012:group/default/analysts"
ADMIN = "arn:aws:quicksight:us-east-1:123456789012:user/default/admin"


def _client():
    return boto3.Session(region_name="us-east-1", aws_access_key_id="x",
                         aws_secret_access_key="x").client("quicksight")


@pytest.fixture(scope="module")
def requests():
    return build_requests(settings_from_config(CONFIG, [ANALYSTS, ADMIN]))


def test_print_writes_the_requests_as_json_without_touching_the_network(capsys, monkeypatch):
    def no_network(*args, **kwargs):
        raise AssertionError("--print opened a connection")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    code = pipeline.main(["quicksight", "--config", CONFIG, "--principal", ANALYSTS, "--print"])
    out, err = capsys.readouterr()
    assert code == 0, err
    printed = json.loads(out)
    assert printed == build_requests(settings_from_config(CONFIG, [ANALYSTS]))
    source = printed["CreateDataSource"]
    assert (source["AwsAccountId"], source["Type"], source["DataSourceParameters"]) == (
        "123456789012", "ATHENA", {"AthenaParameters": {"WorkGroup": "shadow-eval"}})
    assert [p["Principal"] for p in source["Permissions"]] == [ANALYSTS]


def test_one_dataset_per_view_reads_the_glue_view_through_the_data_source(requests):
    arn = "arn:aws:quicksight:us-east-1:123456789012:datasource/shadow-eval-athena"
    columns = view_columns("shadow_eval")
    assert [d["DataSetId"] for d in requests["CreateDataSet"]] == [f"shadow-eval-{v.replace('_', '-')}" for v in VIEWS]
    for view, data_set in zip(VIEWS, requests["CreateDataSet"]):
        (table,) = data_set["PhysicalTableMap"].values()
        relational = table["RelationalTable"]
        assert (relational["DataSourceArn"], relational["Catalog"], relational["Schema"], relational["Name"]) == (
            arn, "AwsDataCatalog", "shadow_eval", view)
        assert relational["InputColumns"] == columns[view]
        assert data_set["ImportMode"] == "DIRECT_QUERY"
        assert [p["Principal"] for p in data_set["Permissions"]] == [ANALYSTS, ADMIN]
    types = {c["Name"]: c["Type"] for c in columns["shadow_metric_trend"]}
    assert (types["started_at"], types["value"], types["package_version"], types["passed"], types["metric"]) == (
        "DATETIME", "DECIMAL", "INTEGER", "BOOLEAN", "STRING")


def test_every_request_passes_botocores_validation_through_a_stubbed_client(requests):
    client = _client()
    stubber = Stubber(client)
    stubber.add_response("create_data_source", {"Status": 202, "DataSourceId": "shadow-eval-athena"},
                         requests["CreateDataSource"])
    for data_set in requests["CreateDataSet"]:
        stubber.add_response("create_data_set", {"Status": 201, "DataSetId": data_set["DataSetId"]}, data_set)
    with stubber:
        client.create_data_source(**requests["CreateDataSource"])
        for data_set in requests["CreateDataSet"]:
            client.create_data_set(**data_set)
    stubber.assert_no_pending_responses()


def test_create_waits_for_the_data_source_and_updates_what_exists(requests):
    client = _client()
    stubber = Stubber(client)
    stubber.add_response("create_data_source", {"Status": 202, "CreationStatus": "CREATION_IN_PROGRESS"},
                         requests["CreateDataSource"])
    describe = {"AwsAccountId": "123456789012", "DataSourceId": "shadow-eval-athena"}
    stubber.add_response("describe_data_source", {"DataSource": {"Status": "CREATION_IN_PROGRESS"}}, describe)
    stubber.add_response("describe_data_source", {"DataSource": {"Status": "CREATION_SUCCESSFUL"}}, describe)
    first, *others = requests["CreateDataSet"]
    stubber.add_client_error("create_data_set", "ResourceExistsException", http_status_code=409,
                             expected_params=first)
    stubber.add_response("update_data_set", {"Status": 200},
                         {k: v for k, v in first.items() if k not in ("Permissions", "Tags")})
    for data_set in others:
        stubber.add_response("create_data_set", {"Status": 201}, data_set)
    slept = []
    with stubber:
        done = create(requests, client, sleep=slept.append)
    stubber.assert_no_pending_responses()
    assert done["data_source"] == "created" and len(slept) == 1
    assert done["data_sets"] == {d["DataSetId"]: "updated" if d is first else "created"
                                 for d in requests["CreateDataSet"]}


def test_a_failed_data_source_stops_before_any_dataset(requests):
    client = _client()
    stubber = Stubber(client)
    stubber.add_response("create_data_source", {"Status": 202})
    stubber.add_response("describe_data_source", {"DataSource": {"Status": "CREATION_FAILED"}})
    with stubber, pytest.raises(QuickSightError, match="CREATION_FAILED"):
        create(requests, client, sleep=lambda s: None)


def test_validation_names_the_request_and_the_problem(requests):
    broken = json.loads(json.dumps(requests))
    del broken["CreateDataSet"][2]["PhysicalTableMap"]
    broken["CreateDataSet"][2]["ImportMode"] = 7
    with pytest.raises(QuickSightError, match="CreateDataSet shadow-eval-shadow-label-flip-records:.*PhysicalTableMap"):
        validate_requests(broken)


SETTINGS_ERRORS = [
    ("no principal", CONFIG, [], {}, "at least one --principal"),
    ("principal not an ARN", CONFIG, ["analysts"], {}, "not an ARN"),
    ("bad account", CONFIG, [ANALYSTS], {"account_id": "12"}, "12 digits"),
    ("no aws section", "configs/local.yaml", [ANALYSTS], {}, "--account-id, --region, --workgroup"),
]


@pytest.mark.parametrize("config, principals, extra, message", [c[1:] for c in SETTINGS_ERRORS],
                         ids=[c[0] for c in SETTINGS_ERRORS])
def test_settings_errors(config, principals, extra, message):
    with pytest.raises(QuickSightError, match=message):
        settings_from_config(config, principals, **extra)


def test_arguments_override_the_config():
    settings = settings_from_config("configs/local.yaml", [ANALYSTS], account_id="210987654321", region="eu-west-1",
                                    workgroup="analysts", prefix="churn", import_mode="SPICE")
    requests = build_requests(settings)
    assert requests["CreateDataSource"]["DataSourceId"] == "churn-athena"
    assert requests["CreateDataSet"][0]["PhysicalTableMap"]["shadow-latest-runs"]["RelationalTable"][
        "DataSourceArn"] == "arn:aws:quicksight:eu-west-1:210987654321:datasource/churn-athena"
    assert {d["ImportMode"] for d in requests["CreateDataSet"]} == {"SPICE"}
    validate_requests(requests)
