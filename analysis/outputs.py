"""Parse one side's answers into records with a score, a label and a canonical hash.

Production and candidate each have an OutputParsing config, so the two may answer in
different formats. Defaults cover SageMaker built-in shapes: `{"predictions": [{"score",
"predicted_label"}]}`, JSON Lines records, CSV score (and label) columns, bare number lists
and TF-Serving `{"predictions": [3.5, 4.0]}`.
"""
from __future__ import annotations

import csv
import dataclasses
import hashlib
import json
import math
import numbers
from typing import Literal, Protocol

import jmespath

from analysis.canonical import canonical_json, canonical_number, label_text, number_from_text, values_match
from analysis.records import SplitError, compact_json, detect_format, document_records, split_body

OutputFormat = Literal["csv", "json", "jsonlines"]
DEFAULT_RECORDS_PATH = "predictions"
_DEFAULT_LABEL_KEYS = ("predicted_label", "label")
# What label_text makes of a NaN or infinite label, whether it was a number or text ("nan", "inf").
_NON_FINITE_LABELS = {canonical_number(value, 1) for value in (math.nan, math.inf, -math.inf)}


class OutputParsing(Protocol):
    """What this module reads of steps.config.OutputParsing (the core does not import steps)."""

    @property
    def format(self) -> str: ...
    @property
    def records_path(self) -> str | None: ...
    @property
    def score_path(self) -> str | None: ...
    @property
    def label_path(self) -> str | None: ...
    @property
    def score_column(self) -> int | None: ...
    @property
    def label_column(self) -> int | None: ...
    @property
    def label_threshold(self) -> float: ...


class Tolerances(Protocol):
    """What this module reads of steps.config.CompareConfig."""

    @property
    def abs_tolerance(self) -> float: ...
    @property
    def rel_tolerance(self) -> float: ...


class OutputParseError(ValueError):
    """An answer that does not parse in its side's output format."""

    def __init__(self, detail: str):
        super().__init__(detail)
        self.detail = detail


@dataclasses.dataclass(frozen=True)
class ParsedOutput:
    """One record's answer: raw text, parsed value, score, label and canonical hash."""

    raw: str
    value: object
    score: float | None
    label: str | None
    canonical: str
    hash: str


def output_format(parsing: OutputParsing, content_type: str | None, text: str | None = None) -> OutputFormat:
    """The configured format, else the one the content type names, else a guess from the text."""
    if parsing.format != "auto":
        return parsing.format  # type: ignore[return-value]
    detected = detect_format(content_type)
    if detected != "binary":
        return detected
    return _sniff(text or "")


def split_output(body: str, parsing: OutputParsing, content_type: str | None) -> list[str]:
    """The per-record answers of one response body, in request order; raises OutputParseError."""
    fmt = output_format(parsing, content_type, body)
    try:
        return split_body(body, fmt, parsing.records_path or DEFAULT_RECORDS_PATH)
    except SplitError as exc:
        raise OutputParseError(exc.detail) from None


def split_document(document: object, parsing: OutputParsing) -> list[object]:
    """The records of an already parsed JSON response document (records_path, default `predictions`)."""
    return document_records(document, parsing.records_path or DEFAULT_RECORDS_PATH)


def parse_output(text: str, parsing: OutputParsing, content_type: str | None, decimals: int,
                 fmt: OutputFormat | None = None) -> ParsedOutput:
    """One record's answer text parsed into a ParsedOutput; raises OutputParseError."""
    fmt = fmt or output_format(parsing, content_type, text)
    if fmt == "csv":
        fields = _csv_fields(text)
        value: object = fields[0] if len(fields) == 1 else fields
        score = _score_value(_column(fields, parsing.score_column))
        label = label_text(_column(fields, parsing.label_column)) if parsing.label_column is not None else None
    else:
        try:
            value = json.loads(text)
        except json.JSONDecodeError as exc:
            raise OutputParseError(f"the answer is not valid JSON: {exc.msg} at column {exc.colno}") from None
        score = _json_score(value, parsing)
        label = _json_label(value, parsing)
    if label is None and score is not None:
        label = _derived_label(score, parsing.label_threshold)
    try:
        canonical = canonical_json(value, decimals)
    except TypeError as exc:
        raise OutputParseError(str(exc)) from None
    return ParsedOutput(raw=text, value=value, score=score, label=label, canonical=canonical,
                        hash=hashlib.sha256(canonical.encode("utf-8")).hexdigest())


def parse_value(value: object, parsing: OutputParsing, decimals: int) -> ParsedOutput:
    """An already parsed JSON record (a joined `SageMakerOutput`), raw kept as compact JSON."""
    return parse_output(compact_json(value), parsing, None, decimals, fmt="json")


def parse_body(body: str, parsing: OutputParsing, content_type: str | None, decimals: int) -> list[ParsedOutput]:
    """A whole response body parsed record by record."""
    fmt = output_format(parsing, content_type, body)
    try:
        texts = split_body(body, fmt, parsing.records_path or DEFAULT_RECORDS_PATH)
    except SplitError as exc:
        raise OutputParseError(exc.detail) from None
    return [parse_output(text, parsing, None, decimals, fmt=fmt) for text in texts]


def non_finite(parsed: ParsedOutput) -> str | None:
    """Why an answer's score or label is not a finite value (NaN, inf, or their text), else None.

    A non-finite answer is not a missing one: the record cannot be judged, and whose answer it is decides
    who is at fault (the candidate's replayed answer, or production's captured one).
    """
    if parsed.score is not None and not math.isfinite(parsed.score):
        return f"the score is {canonical_number(parsed.score, 1)}"
    if parsed.label in _NON_FINITE_LABELS:
        return f"the label is {parsed.label}"
    return None


def canonical_text(raw: str, decimals: int) -> str | None:
    """The canonical form of one answer's raw text whatever its format (sniffed); None if it does not parse."""
    try:
        if _sniff(raw) == "csv":
            fields = _csv_fields(raw)
            return canonical_json(fields[0] if len(fields) == 1 else fields, decimals)
        return canonical_json(json.loads(raw), decimals)
    except (OutputParseError, ValueError, TypeError):
        return None


def outputs_match(production: ParsedOutput, candidate: ParsedOutput, compare: Tolerances) -> bool:
    """Tolerant equality: the parsed values match, or, when the two answer in different shapes,
    the scores match within tolerance and the labels are equal."""
    if values_match(production.value, candidate.value, compare.abs_tolerance, compare.rel_tolerance):
        return True
    if _shape(production.value) == _shape(candidate.value):
        return False
    if production.label != candidate.label:
        return False
    if production.score is None or candidate.score is None:
        return production.score is None and candidate.score is None and production.label is not None
    return values_match(production.score, candidate.score, compare.abs_tolerance, compare.rel_tolerance)


def _sniff(text: str) -> OutputFormat:
    # No usable content type (None, text/plain, BASE64 capture): let the text say what it is.
    try:
        json.loads(text)
        return "json"
    except json.JSONDecodeError:
        pass
    lines = [line for line in text.splitlines() if line.strip()]
    if lines and all(_is_json(line) for line in lines):
        return "jsonlines"
    return "csv"


def _is_json(text: str) -> bool:
    try:
        json.loads(text)
        return True
    except json.JSONDecodeError:
        return False


def _csv_fields(text: str) -> list[object]:
    line = text.rstrip("\r\n")
    if not line.strip():
        raise OutputParseError("the answer is an empty CSV row")
    if "\n" in line:
        raise OutputParseError("one record's CSV answer spans several lines")
    try:
        (row,) = list(csv.reader([line], strict=True))
    except (csv.Error, ValueError) as exc:
        raise OutputParseError(f"the answer is not one CSV row: {exc}") from None
    return [_csv_value(field) for field in row]


def _csv_value(field: str) -> object:
    number = number_from_text(field)
    return field if number is None else number


def _column(fields: list[object], index: int | None) -> object:
    if index is None or not -len(fields) <= index < len(fields):
        return None
    return fields[index]


def _json_score(value: object, parsing: OutputParsing) -> float | None:
    if parsing.score_path:
        return _score_value(_search(parsing.score_path, value))
    if isinstance(value, dict):
        return _score_value(value.get("score"))
    if isinstance(value, list) and len(value) == 1:
        return _score_value(value[0])
    return _score_value(value)


def _json_label(value: object, parsing: OutputParsing) -> str | None:
    if parsing.label_path:
        return label_text(_search(parsing.label_path, value))
    if isinstance(value, dict):
        for key in _DEFAULT_LABEL_KEYS:
            if value.get(key) is not None:
                return label_text(value[key])
    if isinstance(value, str):
        return label_text(value)  # a bare string answer is a class name
    return None


def _search(path: str, value: object) -> object:
    return jmespath.search(path, value) if isinstance(value, (dict, list)) else None


def _score_value(value: object) -> float | None:
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, numbers.Real):
        return float(value)
    if isinstance(value, str):
        number = number_from_text(value)
        return None if number is None else float(number)
    return None


def _derived_label(score: float, threshold: float) -> str | None:
    # Only a probability-like score carries a class; a regression value (TF-Serving 3.5) does not.
    if math.isnan(score) or not 0.0 <= score <= 1.0:
        return None
    return "1" if score >= threshold else "0"


def _shape(value: object) -> str:
    if isinstance(value, dict):
        return "object"
    if isinstance(value, (list, tuple)):
        return "list"
    return "scalar"
