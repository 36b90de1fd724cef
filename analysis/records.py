"""Split a request or response body into its records.

One HTTP call can carry many records: CSV rows, JSON Lines, or a JSON document holding a
list (`{"instances": [...]}`, `{"predictions": [...]}`). Records come back as text, verbatim
for CSV and JSON Lines, compact JSON for elements of a document.
"""
from __future__ import annotations

import json
from typing import Literal

import jmespath

Format = Literal["csv", "jsonlines", "json", "binary"]

_CSV_TYPES = {"text/csv", "text/x-csv", "application/csv"}
_JSONLINES_TYPES = {"application/jsonlines", "application/x-jsonlines", "application/jsonl", "application/x-ndjson",
                    "application/ndjson"}
_JSON_TYPES = {"application/json", "text/json"}


class SplitError(ValueError):
    """A body that does not split into records in its format."""

    def __init__(self, detail: str):
        super().__init__(detail)
        self.detail = detail


def media_type(content_type: str | None) -> str | None:
    """`text/csv; charset=utf-8` -> `text/csv`; None stays None."""
    if not content_type:
        return None
    return content_type.split(";", 1)[0].strip().lower() or None


def detect_format(content_type: str | None, encoding: str | None = None) -> Format:
    """The record format a body has, from its content type (capture encoding breaks ties)."""
    kind = media_type(content_type)
    if kind in _CSV_TYPES:
        return "csv"
    if kind in _JSONLINES_TYPES:
        return "jsonlines"
    if kind in _JSON_TYPES or (kind or "").endswith("+json"):
        return "json"
    if encoding == "CSV":
        return "csv"
    if encoding == "JSON":
        return "json"
    return "binary"


def content_type_for(fmt: Format) -> str:
    """The canonical MIME type used to replay a format."""
    return {"csv": "text/csv", "jsonlines": "application/jsonlines", "json": "application/json",
            "binary": "application/octet-stream"}[fmt]


def split_body(text: str, fmt: Format, records_path: str | None = None) -> list[str]:
    """The records of one body, in order. Raises SplitError when the body is not of its format."""
    if fmt == "csv":
        return _lines(text)
    if fmt == "jsonlines":
        lines = _lines(text)
        for number, line in enumerate(lines, 1):
            _parse_json(line, f"line {number} of the JSON Lines body")
        return lines
    if fmt == "json":
        return [compact_json(item) for item in document_records(_parse_json(text, "the JSON body"), records_path)]
    return [text]


def document_records(document: object, records_path: str | None) -> list[object]:
    """Records of a parsed JSON document: the list at records_path, the document if it is a list, else itself."""
    if records_path:
        found = jmespath.search(records_path, document) if isinstance(document, dict) else None
        if isinstance(found, list):
            return found
    if isinstance(document, list):
        return document
    return [document]


def request_records(document: object, records_path: str | None) -> list[object]:
    """Records of a JSON request: as document_records, except that a bare flat list of scalars is one record.

    A request body `[1, 2, 3]` is one row of features, as the serving containers read it, not three
    records; `{"instances": [1, 2, 3]}` stays three instances.
    """
    if isinstance(document, list) and document and all(not isinstance(item, (list, dict)) for item in document):
        return [document]
    return document_records(document, records_path)


def compact_json(value: object) -> str:
    """JSON text without insignificant whitespace, keys in their original order."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def _lines(text: str) -> list[str]:
    # A body ends with at most one newline that is a terminator, not an empty record.
    lines = text.split("\n")
    if lines[-1] == "":
        lines.pop()
    lines = [line[:-1] if line.endswith("\r") else line for line in lines]
    if not lines or any(not line.strip() for line in lines):
        if not text.strip():
            raise SplitError("the body is empty")
        raise SplitError("the body has an empty line between records")
    return lines


def _parse_json(text: str, what: str) -> object:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise SplitError(f"{what} is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
