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
import numpy as np
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
    raw = raw_slice_values(frame, spec)
    return _categorical(raw) if _is_categorical(spec) else raw


def raw_slice_values(frame: pd.DataFrame, spec: SliceSpec) -> list[str | None]:
    """Each record's slice value before a categorical slice keeps its most frequent values (None: missing)."""
    if spec.by == "hour":
        times = pd.to_datetime(frame["inference_time"], utc=True, errors="coerce") if "inference_time" in frame \
            else pd.Series([pd.NaT] * len(frame))
        return [MISSING if pd.isna(t) else t.strftime("%Y-%m-%dT%H:00Z") for t in times]
    if spec.by == "attribute":
        column = frame["custom_attributes"] if "custom_attributes" in frame else [None] * len(frame)
        return [attribute(text, spec.key or "") for text in column]
    column = frame["input_text"] if "input_text" in frame else [None] * len(frame)
    raw = [feature(text, spec.column, spec.path) for text in column]
    if spec.bins:
        return [bin_label(value, spec.bins) for value in raw]
    return [None if value is None else _text(value) for value in raw]


def segments(frame: pd.DataFrame, specs: Sequence[SliceSpec], min_support: int) \
        -> list[tuple[Segment, pd.Index]]:
    """Every segment of every definition with the row labels it holds, largest definition order kept.

    Segments are sorted by name within a definition (hours in time order, bins in edge order).
    """
    builder = SegmentBuilder(specs, min_support)
    builder.add(frame)
    return [(segment, frame.index[rows]) for segment, rows in builder.segments(np.arange(len(frame)))]


class SegmentBuilder:
    """segments() over records that arrive part by part: per record only a small integer code is kept.

    Each definition keeps its distinct values (hours, bins, attribute or feature values) and one int32
    code per record; a categorical definition folds all but its MAX_CATEGORIES most frequent values
    into `other` at the end, exactly as segments() over all records at once does.
    """

    def __init__(self, specs: Sequence[SliceSpec], min_support: int):
        self.specs, self.min_support = tuple(specs), min_support
        self._values: list[dict[str, int]] = [{} for _ in self.specs]
        self._codes: list[list[np.ndarray]] = [[] for _ in self.specs]

    def add(self, frame: pd.DataFrame) -> None:
        """The next records (a part's frame), in the order finish's positions count them."""
        for spec, values, codes in zip(self.specs, self._values, self._codes):
            raw = raw_slice_values(frame, spec)
            codes.append(np.fromiter((values.setdefault(MISSING if v is None else v, len(values)) for v in raw),
                                     dtype=np.int32, count=len(raw)))

    def segments(self, order: np.ndarray) -> list[tuple[Segment, np.ndarray]]:
        """Every segment with the positions it holds; position i is record order[i] of those added."""
        out: list[tuple[Segment, np.ndarray]] = []
        for spec, values, codes in zip(self.specs, self._values, self._codes):
            code = np.concatenate(codes)[order] if codes else np.zeros(0, dtype=np.int32)
            names = list(values)
            if _is_categorical(spec):
                counts = np.bincount(code, minlength=len(names))
                keep = set(sorted(names, key=lambda v: (-counts[values[v]], v))[:MAX_CATEGORIES])
                names = [v if v in keep else "other" for v in names]
            final: dict[str, list[int]] = {}
            for k, name in enumerate(names):
                final.setdefault(name, []).append(k)
            present = {name: ks for name, ks in final.items() if ks}
            for value in sorted(present, key=lambda v: _order(v, spec)):
                ks = present[value]
                rows = np.flatnonzero(np.isin(code, ks) if len(ks) > 1 else code == ks[0])
                rows = rows.astype(np.int32) if code.size < 2**31 else rows  # every record is in one: 4 bytes each
                if rows.size:
                    out.append((Segment(spec.name, f"{spec.name}={value}", int(rows.size),
                                        int(rows.size) >= self.min_support), rows))
        return out


def _is_categorical(spec: SliceSpec) -> bool:
    return spec.by == "attribute" or (spec.by != "hour" and not spec.bins)


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
