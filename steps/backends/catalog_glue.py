"""The Catalog protocol on S3 + Glue through awswrangler, queried with Athena.

Layout mirrors the local one: `<tables_uri>/<table>/run_id=<run_id>/*.parquet` for the
partitioned tables, `<tables_uri>/shadow_runs/part-<run_id>.parquet` for runs; one Glue table
each in `database`, and the analyst views from sql/*.sql created in Athena by `create_views`
(StartQueryExecution in the workgroup, whose result location and engine version apply; the
workgroup must have an output location, as Athena requires for any query).
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import pandas as pd
import pyarrow as pa

from steps.backends.catalog import (
    PARTITIONED, SCHEMAS, CatalogError, Parts, _check_run_id, _conform, iter_tables, view_statements,
)

log = logging.getLogger(__name__)


class GlueCatalog:
    """Run tables as Parquet on S3, registered in a Glue database (boto3 session passed in)."""

    def __init__(self, tables_uri: str, database: str, boto3_session: Any, workgroup: str = "primary",
                 kms_key_id: str | None = None):
        if not tables_uri.startswith("s3://"):
            raise CatalogError(f"{tables_uri!r} is not an s3:// URI")
        self.tables_uri = tables_uri.rstrip("/")
        self.database = database
        self.session = boto3_session
        self.workgroup = workgroup
        self.kms_key_id = kms_key_id
        """aws.kms_key_id: every object written is SSE-KMS encrypted with it; None: the bucket's default."""

    @property
    def s3_additional_kwargs(self) -> dict[str, str] | None:
        """What awswrangler passes to each S3 PutObject / multipart upload."""
        if not self.kms_key_id:
            return None
        return {"ServerSideEncryption": "aws:kms", "SSEKMSKeyId": self.kms_key_id}

    def write_partition(self, table: str, run_id: str, data: Parts) -> None:
        """Replace the run's partition of a table and register it in Glue."""
        import awswrangler as wr

        _check_run_id(run_id)
        if table not in PARTITIONED:
            raise CatalogError(f"{table!r} is not a partitioned table ({', '.join(PARTITIONED)})")
        schema = SCHEMAS[table]
        rows = written = 0
        for part in iter_tables(data, schema, table, run_id):
            if not part.num_rows:
                continue
            frame = part.to_pandas(types_mapper=pd.ArrowDtype)
            frame["run_id"] = pd.Series([run_id] * len(frame), dtype="string")
            # The first part replaces the run's partition; the others add their files to it.
            wr.s3.to_parquet(frame, path=f"{self.tables_uri}/{table}/", dataset=True, database=self.database,
                             table=table, partition_cols=["run_id"],
                             mode="append" if written else "overwrite_partitions",
                             dtype={**athena_types(schema), "run_id": "string"}, boto3_session=self.session,
                             s3_additional_kwargs=self.s3_additional_kwargs)
            written, rows = written + 1, rows + len(frame)
            del frame
        if not written:
            # to_parquet writes nothing for no rows; the table must still exist for the views.
            self._ensure_table(table, partitioned=True)
            return
        log.info("wrote %d rows in %d parts to %s.%s run_id=%s", rows, written, self.database, table, run_id)

    def write_run(self, row: dict[str, Any]) -> None:
        """Replace the run's object under shadow_runs/ (one object per run) and keep the table registered."""
        import awswrangler as wr

        run_id = row.get("run_id")
        _check_run_id(run_id)
        schema = SCHEMAS["shadow_runs"]
        unknown, missing = sorted(set(row) - set(schema.names)), sorted(set(schema.names) - set(row))
        if unknown or missing:
            raise CatalogError(f"shadow_runs row: unknown columns {unknown}, missing columns {missing}")
        table = _conform(pa.Table.from_pandas(pd.DataFrame([row]), preserve_index=False), schema, "shadow_runs", None)
        wr.s3.to_parquet(table.to_pandas(types_mapper=pd.ArrowDtype),
                         path=f"{self.tables_uri}/shadow_runs/part-{run_id}.parquet", dtype=athena_types(schema),
                         boto3_session=self.session, s3_additional_kwargs=self.s3_additional_kwargs)
        self._ensure_table("shadow_runs", partitioned=False)

    def refresh(self) -> None:
        """(Re)create the analyst views in Athena; partitions are already registered by each write."""
        create_views(self.session.client("athena"), self.database, self.workgroup)

    def query(self, sql: str) -> pd.DataFrame:
        """Run one query in Athena (results land in the workgroup's output location)."""
        import awswrangler as wr

        return wr.athena.read_sql_query(sql, database=self.database, workgroup=self.workgroup, ctas_approach=False,
                                        boto3_session=self.session)

    def _ensure_table(self, table: str, partitioned: bool) -> None:
        import awswrangler as wr

        if wr.catalog.does_table_exist(database=self.database, table=table, boto3_session=self.session):
            return
        wr.catalog.create_parquet_table(
            database=self.database, table=table, path=f"{self.tables_uri}/{table}/",
            columns_types=athena_types(SCHEMAS[table]),
            partitions_types={"run_id": "string"} if partitioned else None, boto3_session=self.session)


class AthenaQueryError(RuntimeError):
    """An Athena statement ended FAILED or CANCELLED (or did not end in time)."""


def create_views(athena: Any, database: str, workgroup: str, sleep: Callable[[float], None] = time.sleep,
                 timeout_s: float = 300.0) -> dict[str, str]:
    """Run every view's CREATE OR REPLACE VIEW in Athena, one after another; returns view -> query execution id.

    The statements are the same text DuckDB runs locally (steps/backends/catalog.py explains the subset).
    CREATE OR REPLACE makes a re-run harmless, so no idempotency token is sent.
    """
    done = {}
    for view, statement in view_statements(database):
        started = athena.start_query_execution(
            QueryString=statement, QueryExecutionContext={"Database": database}, WorkGroup=workgroup)
        done[view] = _wait(athena, started["QueryExecutionId"], view, sleep, timeout_s)
        log.info("created view %s.%s (%s)", database, view, done[view])
    return done


def _wait(athena: Any, execution_id: str, view: str, sleep: Callable[[float], None], timeout_s: float) -> str:
    waited, delay = 0.0, 0.5
    while True:
        status = athena.get_query_execution(QueryExecutionId=execution_id)["QueryExecution"]["Status"]
        state = status["State"]
        if state == "SUCCEEDED":
            return execution_id
        if state in ("FAILED", "CANCELLED"):
            raise AthenaQueryError(f"view {view}: Athena query {execution_id} {state}: "
                                   f"{status.get('StateChangeReason', 'no reason given')}")
        if waited >= timeout_s:
            raise AthenaQueryError(f"view {view}: Athena query {execution_id} still {state} after {timeout_s:.0f}s")
        sleep(delay)
        waited += delay
        delay = min(delay * 2, 5.0)


def athena_types(schema: pa.Schema) -> dict[str, str]:
    """Glue/Athena column types of a table schema."""
    names = {pa.string(): "string", pa.int32(): "int", pa.int64(): "bigint", pa.float64(): "double",
             pa.bool_(): "boolean"}
    return {f.name: "timestamp" if pa.types.is_timestamp(f.type) else names[f.type] for f in schema}
