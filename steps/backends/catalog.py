"""The table catalog: one interface, and a local implementation (Parquet on disk + a DuckDB file).

Layout (docs/internals.md): `tables/<table>/run_id=<run_id>/part-0.parquet` for the partitioned
tables and `tables/shadow_runs/part-<run_id>.parquet` for runs. As in Glue/Athena, the partition
column lives in the folder name, not in the file. `<workspace>/shadow.duckdb` holds one view per
table plus the analyst views, in the schema named after the Glue database and, for convenience,
aliased in DuckDB's default schema `main`.

The analyst views: one source, no translation. `sql/NN_<view>.sql` holds one
`CREATE OR REPLACE VIEW {database}.<view> AS ...` each, written in the subset of SQL that DuckDB
and Athena (engine v3, Trino) both run as written: standard joins, CASE, window functions without
a named WINDOW clause, and only functions with the same name, arguments and meaning on both
(coalesce, nullif, try_cast, regexp_extract, row_number, lag, count, sum, min, max). The one
difference that matters is handled in the text: regexp_extract gives '' on DuckDB and NULL on
Athena when nothing matches, so every use is wrapped in nullif(..., '') or coalesce(..., '').
Division casts to double first (Athena divides integers as integers). We keep the text portable
rather than transpile it with sqlglot so the SQL an analyst reads in Athena is the file in the
repository; tests/test_views.py proves both halves: DuckDB answers the expected rows, and every
statement parses in sqlglot's Athena dialect with no function sqlglot does not know.
`{database}` is the only placeholder (substituted literally; the SQL may contain other braces).
"""
from __future__ import annotations

import ctypes
import errno
import itertools
import logging
import os
import re
import shutil
import sys
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, Protocol

import duckdb
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from steps import names

log = logging.getLogger(__name__)

RUN_ID = names.RUN_ID
"""The rule every command applies (steps.names): safe in a path, a partition value and an SQL literal."""
_DATABASE = names.DATABASE
SQL_DIR = Path(__file__).with_name("sql")

_TS = pa.timestamp("us", tz="UTC")
SCHEMAS: dict[str, pa.Schema] = {
    "shadow_records": pa.schema([
        ("record_id", pa.string()), ("event_id", pa.string()), ("record_index", pa.int32()),
        ("inference_id", pa.string()), ("inference_time", _TS), ("custom_attributes", pa.string()),
        ("endpoint", pa.string()), ("variant", pa.string()), ("capture_file", pa.string()),
        ("capture_line", pa.int32()), ("input_text", pa.string()),
        ("production_raw", pa.string()), ("candidate_raw", pa.string()), ("production_replay_raw", pa.string()),
        ("production_score", pa.float64()), ("candidate_score", pa.float64()),
        ("production_replay_score", pa.float64()),
        ("production_label", pa.string()), ("candidate_label", pa.string()),
        ("production_replay_label", pa.string()),
        ("production_hash", pa.string()), ("candidate_hash", pa.string()),
        ("exact_match", pa.bool_()), ("tolerant_match", pa.bool_()), ("label_match", pa.bool_()),
        ("score_abs_diff", pa.float64()), ("noise_abs_diff", pa.float64()), ("ground_truth_label", pa.string()),
    ]),
    "shadow_quarantine": pa.schema([
        ("record_id", pa.string()), ("event_id", pa.string()), ("capture_file", pa.string()),
        ("capture_line", pa.int32()), ("stage", pa.string()), ("reason", pa.string()), ("detail", pa.string()),
    ]),
    "shadow_metrics": pa.schema([
        ("metric", pa.string()), ("slice", pa.string()), ("value", pa.float64()), ("production", pa.float64()),
        ("candidate", pa.float64()), ("delta", pa.float64()), ("ci_low", pa.float64()),
        ("ci_high", pa.float64()), ("support", pa.int64()), ("threshold", pa.float64()), ("passed", pa.bool_()),
    ]),
    "shadow_invocations": pa.schema([
        ("side", pa.string()), ("replay_group", pa.string()), ("replay_file", pa.string()),
        ("first_line", pa.int32()), ("lines", pa.int32()), ("records", pa.int32()), ("payload_bytes", pa.int64()),
        ("response_bytes", pa.int64()), ("attempts", pa.int32()), ("retries", pa.int32()), ("errors", pa.int32()),
        ("timeouts", pa.int32()), ("http_status", pa.int32()), ("outcome", pa.string()), ("latency_s", pa.float64()),
        ("latency_per_record_s", pa.float64()), ("elapsed_s", pa.float64()), ("started_at", _TS),
    ]),
    "shadow_runs": pa.schema([
        ("run_id", pa.string()), ("started_at", _TS), ("finished_at", _TS), ("endpoint", pa.string()),
        ("variant", pa.string()), ("window_start", _TS), ("window_end", _TS),
        ("production_model", pa.string()), ("candidate_model", pa.string()), ("candidate_package", pa.string()),
        ("captured", pa.int64()), ("joined", pa.int64()), ("quarantined", pa.int64()),
        ("coverage", pa.float64()), ("decision", pa.string()), ("report_uri", pa.string()),
    ]),
}
"""Column order and types of each table, without the run_id partition column."""
PARTITIONED = ("shadow_records", "shadow_quarantine", "shadow_metrics", "shadow_invocations")
VIEW_FILE = re.compile(r"^[0-9]{2}_(?P<view>shadow_[a-z_]+)\.sql$")
VIEWS = tuple(VIEW_FILE.match(p.name)["view"] for p in sorted(SQL_DIR.glob("*.sql")) if VIEW_FILE.match(p.name))
"""The analyst views, in creation order (one file each in sql/)."""

Parts = pd.DataFrame | pa.Table | Iterable[str | Path | pa.Table]


class CatalogError(ValueError):
    """A bad table name, run id or frame shape; raised before anything is written."""


class Catalog(Protocol):
    """Where run tables go (Parquet + DuckDB here; S3 + Glue through awswrangler, queried by Athena, later)."""

    def write_partition(self, table: str, run_id: str, data: Parts) -> None:
        """Replace the run's partition of a table with these rows (idempotent per run id)."""
        ...

    def write_run(self, row: dict[str, Any]) -> None:
        """Replace the shadow_runs row of row["run_id"]."""
        ...

    def refresh(self) -> None:
        """Make the catalog see every partition and (re)create the analyst views."""
        ...

    def query(self, sql: str) -> pd.DataFrame: ...


class LocalCatalog:
    """Parquet under `<workspace>/tables` and a DuckDB file whose schema `database` has the views."""

    def __init__(self, workspace: str | Path, database: str = "shadow_eval"):
        if not isinstance(database, str) or not _DATABASE.fullmatch(database):
            # Glue database names are lower-case letters, digits and _; DuckDB takes the same.
            raise CatalogError(f"{database!r} is not a database name (letters, digits and _)")
        self.workspace = Path(workspace)
        self.database = database
        self.tables = self.workspace / "tables"
        self.db_path = self.workspace / "shadow.duckdb"

    def write_partition(self, table: str, run_id: str, data: Parts) -> None:
        """Replace `tables/<table>/run_id=<run_id>/` with these rows, one file per part, atomically.

        Each part (a frame, a table, or each Parquet file of a list) is checked and written as its own
        `part-<i>.parquet` into a hidden folder beside the partition, one part in memory at a time; the
        folder then takes the partition's place in one rename, so readers see the old rows or the new.
        """
        _check_run_id(run_id)
        if table not in PARTITIONED:
            raise CatalogError(f"{table!r} is not a partitioned table ({', '.join(PARTITIONED)})")
        schema = SCHEMAS[table]
        tables = iter_tables(data, schema, table, run_id)
        first = next(tables)  # the first part is checked before anything is written
        folder = self.tables / table / f"run_id={run_id}"
        folder.parent.mkdir(parents=True, exist_ok=True)
        staging = folder.with_name(f".{folder.name}.{uuid.uuid4().hex}.tmp")
        staging.mkdir()
        rows = written = 0
        try:
            for part in itertools.chain([first], tables):
                if part.num_rows:
                    pq.write_table(part, staging / f"part-{written}.parquet")
                    written, rows = written + 1, rows + part.num_rows
            if not written:  # an empty partition still has its (empty) file, typed for the views
                pq.write_table(schema.empty_table(), staging / "part-0.parquet")
            _swap_in(staging, folder)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        log.info("wrote %s rows in %s parts to %s run_id=%s", rows, max(written, 1), table, run_id)

    def write_run(self, row: dict[str, Any]) -> None:
        """Write `tables/shadow_runs/part-<run_id>.parquet` (one file per run, replaced atomically)."""
        run_id = row.get("run_id")
        _check_run_id(run_id)
        schema = SCHEMAS["shadow_runs"]
        unknown = sorted(set(row) - set(schema.names))
        missing = sorted(set(schema.names) - set(row))
        if unknown or missing:
            raise CatalogError(f"shadow_runs row: unknown columns {unknown}, missing columns {missing}")
        frame = _conform(pa.Table.from_pandas(pd.DataFrame([row]), preserve_index=False), schema, "shadow_runs", None)
        _atomic_parquet(frame, self.tables / "shadow_runs" / f"part-{run_id}.parquet")

    def refresh(self) -> None:
        """(Re)create the table views over the Parquet and the analyst views from sql/*.sql."""
        self.workspace.mkdir(parents=True, exist_ok=True)
        with self._connect_for_writing() as db:
            db.execute(f"CREATE SCHEMA IF NOT EXISTS {self.database}")
            for table in SCHEMAS:
                db.execute(f"CREATE OR REPLACE VIEW {self.database}.{table} AS {self._source(table)}")
            for _, statement in view_statements(self.database):
                db.execute(statement)
            # Whoever opens the file without `USE <database>` still finds every name in main.
            for name in (*SCHEMAS, *VIEWS):
                db.execute(f"CREATE OR REPLACE VIEW main.{name} AS SELECT * FROM {self.database}.{name}")

    def _connect_for_writing(self) -> duckdb.DuckDBPyConnection:
        try:
            return duckdb.connect(str(self.db_path))
        except duckdb.IOException as exc:
            if "lock" not in str(exc).lower():
                raise CatalogError(f"{self.db_path}: cannot open the DuckDB file: {exc}") from None
            holder = re.search(r"PID (\d+)", str(exc))
            raise CatalogError(
                f"{self.db_path} is locked by another program{f' (PID {holder[1]})' if holder else ''}: close that "
                "connection (a notebook or duckdb shell; even a read-only one blocks the writer) and re-run; the "
                "run's Parquet files are already in place") from None

    def query(self, sql: str) -> pd.DataFrame:
        """Run one read-only query with the catalog's schema as the default."""
        if not self.db_path.exists():
            self.refresh()
        with duckdb.connect(str(self.db_path), read_only=True) as db:
            db.execute(f"USE {self.database}")
            return db.sql(sql).to_arrow_table().to_pandas()

    def _source(self, table: str) -> str:
        """DuckDB-only: the SELECT behind a table view (on AWS the Glue table plays this part)."""
        schema = SCHEMAS[table]
        if table in PARTITIONED:
            pattern = self.tables / table / "run_id=*" / "*.parquet"
            has_files = any((self.tables / table).glob("run_id=*/*.parquet"))
            columns = ["run_id", *schema.names]
            options = "hive_partitioning = true, hive_types = {'run_id': VARCHAR}, union_by_name = true"
        else:
            pattern = self.tables / table / "part-*.parquet"
            has_files = any((self.tables / table).glob("part-*.parquet"))
            columns = list(schema.names)
            options = "union_by_name = true"
        if not has_files:
            # read_parquet fails on an empty glob; an empty, typed relation keeps the views valid.
            typed = ["CAST(NULL AS VARCHAR) AS run_id"] if table in PARTITIONED else []
            typed += [f"CAST(NULL AS {_duck_type(f.type)}) AS {f.name}" for f in schema]
            return f"SELECT {', '.join(typed)} WHERE false"
        path = str(pattern.resolve()).replace("'", "''")
        return f"SELECT {', '.join(columns)} FROM read_parquet('{path}', {options})"


def view_statements(database: str) -> list[tuple[str, str]]:
    """(view, CREATE OR REPLACE VIEW statement) for every analyst view, in creation order, for this database."""
    if not isinstance(database, str) or not _DATABASE.fullmatch(database):
        raise CatalogError(f"{database!r} is not a database name (letters, digits and _)")
    return [(VIEW_FILE.match(path.name)["view"], path.read_text(encoding="utf-8").replace("{database}", database))
            for path in sorted(SQL_DIR.glob("*.sql")) if VIEW_FILE.match(path.name)]


def _check_run_id(run_id: Any) -> None:
    if not isinstance(run_id, str) or not RUN_ID.fullmatch(run_id):
        raise CatalogError(f"{run_id!r} is not a run id (letters, digits, _ and -, at most 64)")


def _as_table(data: Parts, schema: pa.Schema) -> pa.Table:
    """All the parts as one table (small data only: it holds every part at once; see iter_tables)."""
    if isinstance(data, pd.DataFrame):
        return pa.Table.from_pandas(data, preserve_index=False)
    if isinstance(data, pa.Table):
        return data
    parts = [pq.read_table(Path(p)) for p in data]
    if not parts:
        return schema.empty_table()
    return pa.concat_tables(parts, promote_options="permissive")


def iter_tables(data: Parts, schema: pa.Schema, name: str, run_id: str | None) -> Iterator[pa.Table]:
    """The parts one at a time, each conformed to the table's schema; an empty table when there are none.

    A frame or a table is one part; a list of Parquet files gives one part per file, read when its
    turn comes, so memory holds one part however many there are.
    """
    if isinstance(data, (pd.DataFrame, pa.Table)):
        yield _conform(_as_table(data, schema), schema, name, run_id)
        return
    empty = True
    for path in data:  # Parquet files, or tables made one at a time by a generator
        empty = False
        yield _conform(path if isinstance(path, pa.Table) else pq.read_table(Path(path)), schema, name, run_id)
    if empty:
        yield _conform(schema.empty_table(), schema, name, run_id)


def _conform(table: pa.Table, schema: pa.Schema, name: str, run_id: str | None) -> pa.Table:
    """Exactly the declared columns, in order, cast to the declared types; run_id only from the folder."""
    if run_id is not None and "run_id" in table.column_names:
        values = set(table.column("run_id").to_pylist())
        if values - {run_id}:
            raise CatalogError(f"{name}: rows carry run_id {sorted(map(str, values - {run_id}))}, not {run_id!r}")
        table = table.drop_columns(["run_id"])
    unknown = sorted(set(table.column_names) - set(schema.names))
    missing = sorted(set(schema.names) - set(table.column_names))
    if unknown or missing:
        raise CatalogError(f"{name}: unknown columns {unknown}, missing columns {missing} (see docs/internals.md)")
    columns = []
    for field in schema:
        column = table.column(field.name)
        textual = pa.types.is_string(column.type) or pa.types.is_large_string(column.type)
        if pa.types.is_timestamp(field.type) and (textual or pa.types.is_null(column.type)):
            # Run rows carry ISO-8601 text; parse it rather than trusting an implicit cast.
            times = pd.to_datetime(pd.Series(column.to_pylist(), dtype="object"), utc=True, format="ISO8601")
            column = pa.array(times, type=field.type)
        try:
            columns.append(column.cast(field.type))
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
            raise CatalogError(f"{name}.{field.name}: cannot store {column.type} as {field.type}: {exc}") from None
    return pa.Table.from_arrays(columns, schema=schema)


def _atomic_parquet(table: pa.Table, target: Path) -> None:
    """Write beside the target under a name no reader globs, then rename over it."""
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary = target.with_name(f".{target.name}.{uuid.uuid4().hex}.tmp")
    try:
        pq.write_table(table, temporary)
        os.replace(temporary, target)
    finally:
        temporary.unlink(missing_ok=True)


def _swap_in(staging: Path, folder: Path) -> None:
    """Put the folder `staging` where `folder` is, in one atomic exchange where the OS has one."""
    if not folder.exists():
        os.replace(staging, folder)
        return
    if _exchange(staging, folder):
        return  # staging now holds the old partition; the caller removes it
    # No atomic exchange (not Linux): move the old partition aside, then the new one in.
    aside = folder.with_name(f".{folder.name}.{uuid.uuid4().hex}.old")
    os.replace(folder, aside)
    try:
        os.replace(staging, folder)
    except OSError:
        os.replace(aside, folder)
        raise
    shutil.rmtree(aside, ignore_errors=True)


def _exchange(first: Path, second: Path) -> bool:
    """renameat2(RENAME_EXCHANGE): swap two paths atomically (Linux 3.15+); False where unavailable."""
    if sys.platform != "linux":
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    if renameat2(at_fdcwd, os.fsencode(first), at_fdcwd, os.fsencode(second), rename_exchange) == 0:
        return True
    error = ctypes.get_errno()
    if error in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP):
        return False  # this kernel or filesystem cannot exchange
    raise OSError(error, os.strerror(error), str(second))


def _duck_type(arrow_type: pa.DataType) -> str:
    if pa.types.is_timestamp(arrow_type):
        return "TIMESTAMP WITH TIME ZONE"
    return {pa.string(): "VARCHAR", pa.int32(): "INTEGER", pa.int64(): "BIGINT",
            pa.float64(): "DOUBLE", pa.bool_(): "BOOLEAN"}[arrow_type]
