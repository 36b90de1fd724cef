"""`shadow-eval query` over the local tables and views, and `shadow-eval views` to create the views in Athena.

    shadow-eval query "SELECT * FROM shadow_latest_runs" --workspace .shadow-eval/demo --format csv
    shadow-eval views --config configs/aws.example.yaml            # CREATE OR REPLACE VIEW in Athena
    shadow-eval views --config configs/aws.example.yaml --print    # the same statements, no AWS call

The local database is `<workspace>/shadow.duckdb`, opened read-only; a query can name a table or
view bare (`shadow_runs`) or with the Glue database (`shadow_eval.shadow_runs`), as in Athena.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd

from steps.backends.catalog import LocalCatalog, view_statements
from steps import names
from steps.config import load_config

FORMATS = ("table", "csv", "json")
DEFAULT_WORKSPACE = ".shadow-eval"


class QueryError(ValueError):
    """The workspace has no tables yet, or DuckDB refused the SQL (its message is kept)."""


def run_query(workspace: str | Path, sql: str, database: str = "shadow_eval") -> pd.DataFrame:
    """Run one read-only SQL statement over the workspace's DuckDB file; the database is the default schema."""
    catalog = LocalCatalog(workspace, database)
    if not catalog.db_path.exists():
        raise QueryError(f"{catalog.db_path} does not exist: run `shadow-eval run` or `shadow-eval demo` "
                         "with this workspace first")
    try:
        return catalog.query(sql)
    except duckdb.Error as exc:
        raise QueryError(f"query failed: {exc}") from None


def render(frame: pd.DataFrame, fmt: str) -> str:
    """The frame as an aligned text table, CSV with a header, or a JSON array of objects (ISO-8601 times)."""
    if fmt == "csv":
        return frame.to_csv(index=False)
    if fmt == "json":
        rows = json.loads(frame.to_json(orient="records", date_format="iso", date_unit="us", double_precision=15))
        return json.dumps(rows, indent=2, ensure_ascii=False) + "\n"
    if fmt == "table":
        if frame.empty:
            return "(no rows)\n" if len(frame.columns) == 0 else " ".join(map(str, frame.columns)) + "\n(no rows)\n"
        return frame.to_string(index=False, na_rep="NULL") + "\n"
    raise ValueError(f"format {fmt!r} is not one of {', '.join(FORMATS)}")


def athena_view_script(database: str) -> str:
    """Every view's CREATE statement for Athena, separated by `;` lines (what `views --print` writes)."""
    return "".join(f"-- {view}\n{statement.strip()};\n\n" for view, statement in view_statements(database))


def create_athena_views(config_path: str | Path, boto3_session: Any = None) -> dict[str, str]:
    """Create or replace the views in the config's Glue database through its Athena workgroup."""
    from steps.aws_settings import load_aws_config
    from steps.backends.catalog_glue import create_views

    config, settings = load_aws_config(config_path)
    if boto3_session is None:
        import boto3

        boto3_session = boto3.Session(region_name=settings.region)
    return create_views(boto3_session.client("athena"), config.tables.database, settings.athena_workgroup)


# ---------------------------------------------------------------- command line

def add_query_command(subparsers: Any) -> None:
    """Register `query "SQL" [--workspace DIR] [--database NAME] [--format table|csv|json]`."""
    query = subparsers.add_parser("query", help="run SQL over the local tables and views (DuckDB, read-only)")
    query.add_argument("sql", help='one SQL statement, e.g. "SELECT * FROM shadow_latest_runs"')
    query.add_argument("--workspace", default=DEFAULT_WORKSPACE, help=f"default {DEFAULT_WORKSPACE}")
    query.add_argument("--database", default="shadow_eval", type=names.argument("database"),
                       help="schema of the views (tables.database)")
    query.add_argument("--format", choices=FORMATS, default="table")
    query.set_defaults(command=_cmd_query)


def add_views_command(subparsers: Any) -> None:
    """Register `views --config FILE [--print]`: the analyst views in Athena."""
    views = subparsers.add_parser("views", help="create the analyst views in Athena (or --print their SQL)")
    views.add_argument("--config", required=True, help="a config with an aws: section (database, workgroup)")
    views.add_argument("--print", action="store_true", dest="print_only",
                       help="write the CREATE VIEW statements to stdout; no AWS call")
    views.set_defaults(command=_cmd_views)


def _cmd_query(args: argparse.Namespace) -> int:
    frame = run_query(args.workspace, args.sql, args.database)
    sys.stdout.write(render(frame, args.format))
    return 0


def _cmd_views(args: argparse.Namespace) -> int:
    if args.print_only:
        sys.stdout.write(athena_view_script(load_config(args.config).tables.database))
        return 0
    created = create_athena_views(args.config)
    print(json.dumps(created, indent=2))
    return 0
