"""Canonical text, hash and tolerant equality of parsed model outputs.

Two answers that mean the same value must hash alike whatever their formatting: keys are
sorted, separators compact, numbers rounded to a number of significant digits and written
one way (1, 1.0 and a CSV "1" all become `1`). Non-finite numbers are written as the
bare tokens NaN, Infinity and -Infinity, so they never collide with the strings "NaN" etc.
"""
from __future__ import annotations

import hashlib
import json
import math
import numbers
import re

_NUMBER = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")
_NON_FINITE = {"nan": math.nan, "+nan": math.nan, "-nan": math.nan, "inf": math.inf, "+inf": math.inf,
               "-inf": -math.inf, "infinity": math.inf, "+infinity": math.inf, "-infinity": -math.inf}
# Integral values up to this magnitude are exact in a float and are written without a fraction.
_EXACT_INTEGER = 2**53


def canonical_json(value: object, decimals: int) -> str:
    """Sorted-key compact JSON of a parsed value, numbers rounded to `decimals` significant digits."""
    if value is None or isinstance(value, bool):
        return json.dumps(value)
    if isinstance(value, numbers.Real):
        return canonical_number(float(value), decimals)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, dict):
        items = sorted((str(key), item) for key, item in value.items())
        return "{" + ",".join(f"{json.dumps(key, ensure_ascii=False)}:{canonical_json(item, decimals)}"
                              for key, item in items) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(canonical_json(item, decimals) for item in value) + "]"
    raise TypeError(f"no canonical form for {type(value).__name__}")


def canonical_hash(value: object, decimals: int) -> str:
    """sha256 hex of canonical_json(value, decimals)."""
    return hashlib.sha256(canonical_json(value, decimals).encode("utf-8")).hexdigest()


def canonical_number(number: float, decimals: int) -> str:
    """One spelling per rounded value: `1`, `0.98`, `1.5e-07`, `NaN`, `-Infinity`."""
    if math.isnan(number):
        return "NaN"
    if math.isinf(number):
        return "Infinity" if number > 0 else "-Infinity"
    rounded = float(f"{number:.{max(decimals, 1)}g}")
    if rounded == 0:
        return "0"  # also folds -0.0
    if rounded.is_integer() and abs(rounded) < _EXACT_INTEGER:
        return str(int(rounded))
    return repr(rounded)


def number_from_text(text: str) -> float | int | None:
    """A CSV field or label as a number (int when written without fraction), else None."""
    stripped = text.strip()
    if _NUMBER.match(stripped):
        if re.fullmatch(r"[+-]?\d+", stripped):
            return int(stripped)
        return float(stripped)
    return _NON_FINITE.get(stripped.lower())


def label_text(value: object) -> str | None:
    """A label as a string: 1, 1.0, "1", "1.0" and True all give "1"; None stays None."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, numbers.Real):
        return canonical_number(float(value), 15)
    if isinstance(value, str):
        number = number_from_text(value)
        return value.strip() if number is None else canonical_number(float(number), 15)
    return canonical_json(value, 15)


def values_match(a: object, b: object, abs_tol: float, rel_tol: float) -> bool:
    """Structural equality where numbers may differ within abs_tol or rel_tol (NaN matches NaN)."""
    a_number, b_number = _is_number(a), _is_number(b)
    if a_number or b_number:
        if not (a_number and b_number):
            return False
        x, y = float(a), float(b)
        if math.isnan(x) or math.isnan(y):
            return math.isnan(x) and math.isnan(y)
        return math.isclose(x, y, rel_tol=rel_tol, abs_tol=abs_tol)
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(values_match(a[key], b[key], abs_tol, rel_tol) for key in a)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(values_match(x, y, abs_tol, rel_tol) for x, y in zip(a, b))
    return type(a) is type(b) and a == b


def _is_number(value: object) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)
