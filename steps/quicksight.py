"""`shadow-eval quicksight`: an Athena data source and one QuickSight dataset per analyst view.

    shadow-eval quicksight --config configs/aws.example.yaml \
        --principal arn:aws:quicksight:us-east-1:123456789012:group/default/analysts --print > quicksight.json
    shadow-eval quicksight --config configs/aws.example.yaml --principal ARN --create

The requests are built once (`build_requests`) and checked against botocore's QuickSight service
model (`validate_requests`) before they are printed or sent. `--print` writes them as JSON, keyed by
API operation, for infrastructure code (their fields are CreateDataSource / CreateDataSet input,
which CloudFormation's AWS::QuickSight::DataSource and ::DataSet mirror); it makes no network call.
`--create` sends them with boto3 and updates what already exists. Datasets are RelationalTable
reads of the Glue views in DIRECT_QUERY mode, so a dashboard always shows the latest runs; their
columns come from the same view SQL, described by DuckDB over an empty catalog.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import re
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

import duckdb

from steps.backends.catalog import VIEWS, LocalCatalog
from steps.config import load_config

DATA_SOURCE_ACTIONS = (
    "quicksight:DescribeDataSource", "quicksight:DescribeDataSourcePermissions", "quicksight:PassDataSource",
    "quicksight:UpdateDataSource", "quicksight:DeleteDataSource", "quicksight:UpdateDataSourcePermissions",
)
"""What the QuickSight console grants an owner of a data source."""
DATA_SET_ACTIONS = (
    "quicksight:DescribeDataSet", "quicksight:DescribeDataSetPermissions", "quicksight:PassDataSet",
    "quicksight:DescribeIngestion", "quicksight:ListIngestions", "quicksight:UpdateDataSet",
    "quicksight:DeleteDataSet", "quicksight:CreateIngestion", "quicksight:CancelIngestion",
    "quicksight:UpdateDataSetPermissions",
)
"""What the QuickSight console grants an owner of a dataset."""
IMPORT_MODES = ("DIRECT_QUERY", "SPICE")
_ACCOUNT = re.compile(r"^\d{12}$")
_ARN = re.compile(r"^arn:(?P<partition>aws[a-z-]*):(?P<service>[a-z0-9-]+):(?P<region>[a-z0-9-]*):(?P<account>\d{12})?:")
_QUICKSIGHT_TYPES = {"VARCHAR": "STRING", "INTEGER": "INTEGER", "BIGINT": "INTEGER", "HUGEINT": "INTEGER",
                     "DOUBLE": "DECIMAL", "FLOAT": "DECIMAL", "BOOLEAN": "BOOLEAN",
                     "TIMESTAMP WITH TIME ZONE": "DATETIME", "TIMESTAMP": "DATETIME", "DATE": "DATETIME"}


class QuickSightError(ValueError):
    """Missing or malformed settings, or a request botocore's service model rejects."""


@dataclasses.dataclass(frozen=True)
class QuickSightSettings:
    account_id: str
    region: str
    database: str
    workgroup: str
    principals: tuple[str, ...]
    prefix: str = "shadow-eval"
    import_mode: str = "DIRECT_QUERY"
    partition: str = "aws"

    @property
    def data_source_id(self) -> str:
        return f"{self.prefix}-athena"

    @property
    def data_source_arn(self) -> str:
        return f"arn:{self.partition}:quicksight:{self.region}:{self.account_id}:datasource/{self.data_source_id}"


def settings_from_config(config_path: str, principals: list[str], account_id: str | None = None,
                         region: str | None = None, workgroup: str | None = None, prefix: str = "shadow-eval",
                         import_mode: str = "DIRECT_QUERY") -> QuickSightSettings:
    """Database from tables.database; region, workgroup and account (from aws.role_arn) from aws:, args first."""
    config = load_config(config_path)
    aws = config.aws
    role = _ARN.match(aws.role_arn) if aws else None
    account_id = account_id or (role["account"] if role else None)
    region = region or (aws.region if aws else None)
    workgroup = workgroup or (aws.athena_workgroup if aws else None)
    missing = [name for name, value in (("--account-id", account_id), ("--region", region),
                                        ("--workgroup", workgroup)) if not value]
    if missing:
        raise QuickSightError(f"{config_path}: no aws: section to take {', '.join(missing)} from; pass them")
    if not _ACCOUNT.match(account_id):
        raise QuickSightError(f"account id {account_id!r} is not 12 digits")
    if not principals:
        raise QuickSightError("at least one --principal (a QuickSight user or group ARN) must own the resources")
    for principal in principals:
        if not _ARN.match(principal):
            raise QuickSightError(f"principal {principal!r} is not an ARN "
                                  "(arn:aws:quicksight:<region>:<account>:user|group/<namespace>/<name>)")
    if import_mode not in IMPORT_MODES:
        raise QuickSightError(f"import mode {import_mode!r} is not one of {', '.join(IMPORT_MODES)}")
    return QuickSightSettings(account_id, region, config.tables.database, workgroup, tuple(principals), prefix,
                              import_mode, role["partition"] if role else "aws")


def view_columns(database: str = "shadow_eval") -> dict[str, list[dict[str, str]]]:
    """Each analyst view's columns as QuickSight InputColumns, from DuckDB describing the view SQL."""
    with tempfile.TemporaryDirectory() as folder:
        catalog = LocalCatalog(folder, database)
        catalog.refresh()
        with duckdb.connect(str(catalog.db_path), read_only=True) as db:
            columns = {}
            for view in VIEWS:
                described = db.execute(f"DESCRIBE {database}.{view}").fetchall()
                columns[view] = [{"Name": name, "Type": _QUICKSIGHT_TYPES[str(kind)]} for name, kind, *_ in described]
    return columns


def build_requests(settings: QuickSightSettings) -> dict[str, Any]:
    """CreateDataSource (Athena, the workgroup) and one CreateDataSet per view, as API input dictionaries."""
    data_source = {
        "AwsAccountId": settings.account_id,
        "DataSourceId": settings.data_source_id,
        "Name": f"{settings.prefix} (Athena {settings.workgroup})",
        "Type": "ATHENA",
        "DataSourceParameters": {"AthenaParameters": {"WorkGroup": settings.workgroup}},
        "Permissions": [{"Principal": p, "Actions": list(DATA_SOURCE_ACTIONS)} for p in settings.principals],
        "Tags": [{"Key": "application", "Value": "shadow-eval"}],
    }
    data_sets = []
    for view, columns in view_columns(settings.database).items():
        table_id = view.replace("_", "-")
        data_sets.append({
            "AwsAccountId": settings.account_id,
            "DataSetId": f"{settings.prefix}-{table_id}",
            "Name": f"{settings.prefix} {view}",
            "PhysicalTableMap": {table_id: {"RelationalTable": {
                "DataSourceArn": settings.data_source_arn, "Catalog": "AwsDataCatalog",
                "Schema": settings.database, "Name": view, "InputColumns": columns}}},
            "ImportMode": settings.import_mode,
            "Permissions": [{"Principal": p, "Actions": list(DATA_SET_ACTIONS)} for p in settings.principals],
            "Tags": [{"Key": "application", "Value": "shadow-eval"}],
        })
    return {"CreateDataSource": data_source, "CreateDataSet": data_sets}


def validate_requests(requests: dict[str, Any]) -> None:
    """Check every request against botocore's QuickSight model (required members, types, lengths); no network."""
    import botocore.session
    from botocore.validate import ParamValidator

    model = botocore.session.get_session().get_service_model("quicksight")
    validator = ParamValidator()
    for operation, params in _each_request(requests):
        report = validator.validate(params, model.operation_model(operation).input_shape)
        if report.has_errors():
            raise QuickSightError(f"{operation} {params.get('DataSetId') or params.get('DataSourceId')}: "
                                  f"{report.generate_report()}")


def create(requests: dict[str, Any], client: Any, sleep: Callable[[float], None] = time.sleep,
           timeout_s: float = 120.0) -> dict[str, Any]:
    """Create (or update, where it exists) the data source, wait until it is usable, then each dataset."""
    validate_requests(requests)
    source = requests["CreateDataSource"]
    done: dict[str, Any] = {"data_source": _create_or_update(client, "data_source", source), "data_sets": {}}
    _wait_for_data_source(client, source["AwsAccountId"], source["DataSourceId"], sleep, timeout_s)
    for data_set in requests["CreateDataSet"]:
        done["data_sets"][data_set["DataSetId"]] = _create_or_update(client, "data_set", data_set)
    return done


def _each_request(requests: dict[str, Any]):
    yield "CreateDataSource", requests["CreateDataSource"]
    for data_set in requests["CreateDataSet"]:
        yield "CreateDataSet", data_set


def _create_or_update(client: Any, kind: str, request: dict[str, Any]) -> str:
    """Create; on ResourceExistsException update the same fields (permissions and tags stay as they are)."""
    try:
        getattr(client, f"create_{kind}")(**request)
        return "created"
    except client.exceptions.ResourceExistsException:
        update = {k: v for k, v in request.items() if k not in ("Permissions", "Tags", "Type")}
        getattr(client, f"update_{kind}")(**update)
        return "updated"


def _wait_for_data_source(client: Any, account_id: str, source_id: str, sleep: Callable[[float], None],
                          timeout_s: float) -> None:
    waited = 0.0
    while True:
        status = client.describe_data_source(AwsAccountId=account_id, DataSourceId=source_id)["DataSource"]["Status"]
        if status in ("CREATION_SUCCESSFUL", "UPDATE_SUCCESSFUL"):
            return
        if status.endswith("FAILED"):
            raise QuickSightError(f"data source {source_id} is {status}: check the workgroup and QuickSight's "
                                  "access to Athena and the S3 locations")
        if waited >= timeout_s:
            raise QuickSightError(f"data source {source_id} still {status} after {timeout_s:.0f}s")
        sleep(2.0)
        waited += 2.0


# ---------------------------------------------------------------- command line

def add_quicksight_command(subparsers: Any) -> None:
    """Register `quicksight --config FILE --principal ARN [--print | --create]`."""
    command = subparsers.add_parser("quicksight", help="QuickSight: Athena data source and a dataset per view")
    command.add_argument("--config", required=True, help="config with tables.database and an aws: section")
    command.add_argument("--principal", action="append", default=[], metavar="ARN",
                         help="QuickSight user or group ARN that owns the resources (repeatable)")
    command.add_argument("--account-id", help="default: the account of aws.role_arn")
    command.add_argument("--region", help="default: aws.region")
    command.add_argument("--workgroup", help="default: aws.athena_workgroup")
    command.add_argument("--prefix", default="shadow-eval", help="prefix of the data source and dataset ids")
    command.add_argument("--import-mode", choices=IMPORT_MODES, default="DIRECT_QUERY")
    action = command.add_mutually_exclusive_group(required=True)
    action.add_argument("--print", action="store_true", dest="print_only",
                        help="write the requests as JSON for infrastructure code; no network")
    action.add_argument("--create", action="store_true", help="create or update them with boto3")
    command.set_defaults(command=_cmd_quicksight)


def _cmd_quicksight(args: argparse.Namespace) -> int:
    settings = settings_from_config(args.config, args.principal, args.account_id, args.region, args.workgroup,
                                    args.prefix, args.import_mode)
    requests = build_requests(settings)
    validate_requests(requests)
    if args.print_only:
        sys.stdout.write(json.dumps(requests, indent=2) + "\n")
        return 0
    import boto3

    client = boto3.Session(region_name=settings.region).client("quicksight")
    print(json.dumps(create(requests, client), indent=2))
    return 0
