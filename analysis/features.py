"""Features of joined records: every input column (CSV) or scalar field (JSON) and CustomAttributes key.

Values in, values out: one array per feature over a part's records, float (NaN: missing) when the
feature's values are numbers, else text (None: missing). Names say the feature: `col_3` (CSV column
3), `customer.country` or `features[3]` (JMESPath into a JSON record), `attr:client` (header key).
"""
from __future__ import annotations

import csv
import json
import re
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv

from analysis.diff import text_values

NUMERIC_SHARE = 0.95
"""A feature whose present values are at least this share numbers is numeric (the rest count as missing)."""
_MAX_ARRAY_ITEMS = 100  # JSON arrays longer than this contribute their first items only
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


def input_features(frame: pd.DataFrame) -> dict[str, np.ndarray]:
    """Every input column (CSV) or scalar field (JSON) and CustomAttributes key of a part, one array each.

    An array is float (NaN: missing) when NUMERIC_SHARE of the present values are numbers, else object
    (str, None: missing).
    """
    n = len(frame)
    out: dict[str, np.ndarray] = {}
    texts = pd.Series(text_column(frame, "input_text"), dtype=object)
    if texts.isna().all():
        texts = pd.Series([""] * n, index=frame.index, dtype=object)
    stripped = texts.str.lstrip()
    first = stripped.str[:1]
    unusable = texts.isna() | stripped.str.startswith("sha256:").fillna(False) | (stripped == "")
    is_json = first.isin(["{", "["]) & ~unusable
    is_csv = ~is_json & ~unusable
    if is_csv.any():
        out.update(_spread(_csv_columns(texts[is_csv].tolist()), np.flatnonzero(is_csv.to_numpy()), n))
    if is_json.any():
        out.update(_spread(_json_columns(texts[is_json].tolist()), np.flatnonzero(is_json.to_numpy()), n))
    codes, headers = pd.factorize(text_column(frame, "custom_attributes"), use_na_sentinel=True)
    parsed = [_attribute_pairs(text) for text in headers]  # each distinct header once
    for key in dict.fromkeys(key for pairs in parsed for key in pairs):
        values = np.array([pairs.get(key) for pairs in parsed] + [None], dtype=object)
        out[f"attr:{key}"] = _column(list(values[codes]))  # code -1 (no header) picks the trailing None
    return out


def _csv_columns(texts: list[str]) -> dict[str, np.ndarray]:
    """CSV rows parsed by Arrow's reader when they are rectangular (fast), else row by row."""
    try:
        table = pa_csv.read_csv(pa.py_buffer("\n".join(texts).encode()),
                                read_options=pa_csv.ReadOptions(autogenerate_column_names=True),
                                parse_options=pa_csv.ParseOptions(newlines_in_values=False))
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        table = None
    if table is not None and table.num_rows == len(texts):
        out = {}
        for j, column in enumerate(table.columns):
            if pa.types.is_integer(column.type) or pa.types.is_floating(column.type):
                out[f"col_{j}"] = pc.cast(column, pa.float64()).to_numpy(zero_copy_only=False)
            else:
                out[f"col_{j}"] = _column(pc.cast(column, pa.string()).to_pylist())
        return out
    rows = []
    for text in texts:
        try:
            rows.append(next(csv.reader([text]), []))
        except csv.Error:
            rows.append([])
    width = max((len(row) for row in rows), default=0)
    return {f"col_{j}": _column([row[j] if j < len(row) else None for row in rows]) for j in range(width)}


def _json_columns(texts: list[str]) -> dict[str, np.ndarray]:
    n = len(texts)
    columns: dict[str, list] = {}
    for i, text in enumerate(texts):
        try:
            record = json.loads(text)
        except ValueError:
            continue
        fields: dict[str, Any] = {}
        _flatten(record, "", fields)
        for path, value in fields.items():
            columns.setdefault(path, [None] * n)[i] = value
    return {path: _column(values) for path, values in columns.items()}


def _flatten(value: Any, path: str, out: dict[str, Any]) -> None:
    """Scalar leaves under JMESPath names (`customer.country`, `features[3]`)."""
    if isinstance(value, dict):
        for key, item in value.items():
            key = str(key)
            name = key if _IDENTIFIER.match(key) else json.dumps(key)
            _flatten(item, f"{path}.{name}" if path else name, out)
    elif isinstance(value, list):
        for k, item in enumerate(value[:_MAX_ARRAY_ITEMS]):
            _flatten(item, f"{path}[{k}]", out)
    else:
        out[path or "@"] = value


def _attribute_pairs(text: str) -> dict[str, str]:
    """Every key of a CustomAttributes header, read as analysis.slices.attribute reads one."""
    text = text.strip()
    try:
        parsed = json.loads(text)
    except ValueError:
        parsed = None
    if isinstance(parsed, dict):
        return {str(k): _scalar_text(v) for k, v in parsed.items() if v is not None}
    pairs = {}
    for pair in text.replace(",", ";").split(";"):
        name, sep, value = pair.partition("=")
        if sep and name.strip() and value.strip():
            pairs[name.strip()] = value.strip()
    return pairs


def text_column(frame: pd.DataFrame, name: str) -> np.ndarray:
    """analysis.diff.text_values as an object array, without a Python step per value when the column is text."""
    if name not in frame:
        return np.full(len(frame), None, dtype=object)
    values = frame[name].to_numpy(dtype=object, na_value=None)
    if pd.api.types.infer_dtype(values, skipna=True) in ("string", "empty"):
        return values
    return text_values(frame, name).to_numpy(object)


def _column(values: list) -> np.ndarray:
    """Numbers as a float array (NaN: missing) when NUMERIC_SHARE of the present values are, else text (None: missing).

    The few non-numbers of a numeric column (`?`, `n/a`) count as missing; true/false are text.
    """
    array = np.empty(len(values), dtype=object)
    array[:] = values
    kind = pd.api.types.infer_dtype(array, skipna=True)
    series = pd.Series(array, dtype=object)
    present = series.notna() & (series != "")
    if kind not in ("boolean", "mixed") or not series.map(lambda v: isinstance(v, bool)).any():
        numeric = pd.to_numeric(series.where(present), errors="coerce")
        if present.any() and numeric[present].notna().mean() >= NUMERIC_SHARE:
            return numeric.to_numpy(float, na_value=np.nan)
    if kind == "string":
        return series.where(present, None).to_numpy(object)
    return np.array([_scalar_text(v) if ok else None for v, ok in zip(array, present)], dtype=object)


def _spread(columns: dict[str, np.ndarray], positions: np.ndarray, n: int) -> dict[str, np.ndarray]:
    """Columns over some records of a part, as columns over all of them (missing elsewhere)."""
    if positions.size == n:
        return columns
    out = {}
    for name, values in columns.items():
        full = np.full(n, np.nan) if values.dtype != object else np.full(n, None, dtype=object)
        full[positions] = values
        out[name] = full
    return out


def _scalar_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return number_text(value)
    if isinstance(value, (dict, list)):
        return json.dumps(value, sort_keys=True)
    return str(value)


def number_text(value: float) -> str:
    return str(int(value)) if float(value).is_integer() and abs(value) < 1e15 else f"{value:g}"
