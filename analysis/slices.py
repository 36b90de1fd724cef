"""Slices: cut a run's records into segments (inference hour, a feature's bins, a custom attribute).

Each configured slice definition maps every record to one segment name (`<name>=<value>`). A
segment with fewer than the minimum support is listed but not compared, so a handful of records
can neither fail a gate nor hide in it. Values in, values out.
"""
from __future__ import annotations

import bisect
import csv
import dataclasses
import json
import math
from collections.abc import Sequence
from typing import Any, Protocol

import jmespath
import pandas as pd

from analysis.canonical import number_from_text

MISSING = "missing"
"""The segment of records whose slice value is absent or unreadable."""
MAX_CATEGORIES = 20
"""A categorical slice keeps its most frequent values; the rest share the segment `other`."""


class SliceSpec(Protocol):
    """What slicing reads of steps.config.SliceConfig."""

    name: str
    by: str
    column: int | None
    path: str | None
    bins: tuple[float, ...]
    key: str | None


@dataclasses.dataclass(frozen=True)
class Segment:
    """One slice of the records: which definition, which value, how many records, whether it was compared."""

    definition: str
    name: str
    """`<definition>=<value>`, the `slice` of its metrics."""
    support: int
    compared: bool

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def slice_values(frame: pd.DataFrame, spec: SliceSpec) -> list[str]:
    """The segment value of every record (MISSING where the value is absent), in row order."""
    if spec.by == "hour":
        times = pd.to_datetime(frame["inference_time"], utc=True, errors="coerce") if "inference_time" in frame \
            else pd.Series([pd.NaT] * len(frame))
        return [MISSING if pd.isna(t) else t.strftime("%Y-%m-%dT%H:00Z") for t in times]
    if spec.by == "attribute":
        column = frame["custom_attributes"] if "custom_attributes" in frame else [None] * len(frame)
        raw = [attribute(text, spec.key or "") for text in column]
        return _categorical(raw)
    column = frame["input_text"] if "input_text" in frame else [None] * len(frame)
    raw = [feature(text, spec.column, spec.path) for text in column]
    if spec.bins:
        return [bin_label(value, spec.bins) for value in raw]
    return _categorical(None if value is None else _text(value) for value in raw)


def segments(frame: pd.DataFrame, specs: Sequence[SliceSpec], min_support: int) \
        -> list[tuple[Segment, pd.Index]]:
    """Every segment of every definition with the row labels it holds, largest definition order kept.

    Segments are sorted by name within a definition (hours in time order, bins in edge order).
    """
    out: list[tuple[Segment, pd.Index]] = []
    for spec in specs:
        values = pd.Series(slice_values(frame, spec), index=frame.index, dtype=object)
        for value in sorted(values.unique(), key=lambda v: _order(v, spec)):
            rows = values.index[values == value]
            out.append((Segment(spec.name, f"{spec.name}={value}", len(rows), len(rows) >= min_support), rows))
    return out


def feature(input_text: Any, column: int | None, path: str | None) -> Any:
    """One value of an input record: CSV column `column`, or JMESPath `path` into a JSON record."""
    if input_text is None or (isinstance(input_text, float) and math.isnan(input_text)):
        return None
    text = str(input_text)
    if column is not None:
        try:
            row = next(csv.reader([text]))
        except (csv.Error, StopIteration):
            return None
        return row[column] if column < len(row) else None
    try:
        record = json.loads(text)
    except ValueError:
        return None
    try:
        return jmespath.search(path or "@", record)
    except jmespath.exceptions.JMESPathError:
        return None


def attribute(custom_attributes: Any, key: str) -> str | None:
    """A key of the CustomAttributes header: a JSON object, or `k=v` pairs separated by ; or ,."""
    if custom_attributes is None or (isinstance(custom_attributes, float) and math.isnan(custom_attributes)):
        return None
    text = str(custom_attributes).strip()
    try:
        parsed = json.loads(text)
    except ValueError:
        parsed = None
    if isinstance(parsed, dict):
        value = parsed.get(key)
        return None if value is None else _text(value)
    for pair in text.replace(",", ";").split(";"):
        name, sep, value = pair.partition("=")
        if sep and name.strip() == key:
            return value.strip() or None
    return None


def bin_label(value: Any, edges: Sequence[float]) -> str:
    """`[a, b)` for a number between two edges, `< a` below the first, `>= b` from the last."""
    number = value if isinstance(value, (int, float)) and not isinstance(value, bool) else \
        (number_from_text(str(value)) if value is not None else None)
    if number is None or not math.isfinite(float(number)):
        return MISSING
    position = bisect.bisect_right(list(edges), float(number))
    if position == 0:
        return f"<{_edge(edges[0])}"
    if position == len(edges):
        return f">={_edge(edges[-1])}"
    return f"[{_edge(edges[position - 1])},{_edge(edges[position])})"


def _categorical(values) -> list[str]:
    values = [MISSING if v is None else v for v in values]
    counts = pd.Series(values, dtype=object).value_counts()
    keep = set(sorted(counts.index, key=lambda v: (-counts[v], v))[:MAX_CATEGORIES])
    return [v if v in keep else "other" for v in values]


def _order(value: str, spec: SliceSpec) -> tuple:
    if value == MISSING:
        return (2, 0.0, value)
    if spec.by == "feature" and spec.bins:
        if value.startswith("<"):
            return (0, -math.inf, value)
        if value.startswith(">="):
            return (1, math.inf, value)
        return (0, float(value[1:].split(",")[0]), value)
    number = number_from_text(value)
    return (0, float(number), value) if number is not None else (1, 0.0, value)


def _edge(value: float) -> str:
    return f"{value:g}"


def _text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return json.dumps(value, sort_keys=True) if isinstance(value, (dict, list)) else str(value)
