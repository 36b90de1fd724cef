"""The JSONPath subset that Batch Transform's DataProcessing filters accept.

Supported, as documented for InputFilter/OutputFilter: `$`, `.name` (chained), `*` (as `.*`
or `[*]`), `['a','b']`, `[i]`, `[i,j,...]` with negative indexes, `[start:end]` with either end
optional. Expressions longer than 63 characters are invalid, as in the API.

Results follow the Jayway JsonPath conventions SageMaker's filters are documented with: a
definite path (names, one index, names list at the end) gives the value itself; a path with
`*`, a slice or several indexes gives a list of matches. `['a','b']` as the last step keeps an
object with just those keys. A missing key or an index outside the value is an error, since
the filter cannot produce the record it promised.

Slice ends are exclusive by default (Python, Jayway). The DataProcessing guide's examples read
`$[1:4]` as columns 2-5, an inclusive end (doc conflict noted 2025; not verified against the
service); `compile_path(..., slice_end_inclusive=True)` gives that reading.
"""
from __future__ import annotations

import dataclasses
import re
from typing import Any

MAX_EXPRESSION_CHARS = 63


class JsonPathError(ValueError):
    """An expression outside the supported subset, or one that does not match a value."""


@dataclasses.dataclass(frozen=True)
class Names:
    names: tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class Wildcard:
    pass


@dataclasses.dataclass(frozen=True)
class Indexes:
    indexes: tuple[int, ...]


@dataclasses.dataclass(frozen=True)
class Slice:
    start: int | None
    end: int | None


Step = Names | Wildcard | Indexes | Slice


@dataclasses.dataclass(frozen=True)
class JsonPath:
    """A compiled filter expression; `apply` it to parsed JSON (or a CSV row as a list)."""

    expression: str
    steps: tuple[Step, ...]
    slice_end_inclusive: bool = False

    @property
    def is_identity(self) -> bool:
        return not self.steps

    @property
    def is_definite(self) -> bool:
        """True when the path selects one value rather than a list of matches."""
        return all(_is_definite(step, last=i == len(self.steps) - 1) for i, step in enumerate(self.steps))

    def apply(self, value: Any) -> Any:
        """The value (definite path) or list of values (indefinite path) selected from `value`."""
        matches = [value]
        for position, step in enumerate(self.steps):
            last = position == len(self.steps) - 1
            matches = [found for node in matches for found in self._step(step, node, last)]
        return matches[0] if self.is_definite else matches

    def _step(self, step: Step, node: Any, last: bool) -> list[Any]:
        if isinstance(step, Names):
            if not isinstance(node, dict):
                raise JsonPathError(f"{self.expression}: {_describe(step)} needs an object, got {_kind(node)}")
            missing = [name for name in step.names if name not in node]
            if missing:
                raise JsonPathError(f"{self.expression}: no key {missing[0]!r} in the object")
            if len(step.names) > 1 and last:
                return [{name: node[name] for name in step.names}]
            return [node[name] for name in step.names]
        if isinstance(step, Wildcard):
            if isinstance(node, dict):
                return list(node.values())
            if isinstance(node, list):
                return list(node)
            raise JsonPathError(f"{self.expression}: * needs an object or an array, got {_kind(node)}")
        if not isinstance(node, list):
            raise JsonPathError(f"{self.expression}: {_describe(step)} needs an array, got {_kind(node)}")
        if isinstance(step, Indexes):
            outside = [i for i in step.indexes if not -len(node) <= i < len(node)]
            if outside:
                raise JsonPathError(f"{self.expression}: index {outside[0]} is outside an array of {len(node)}")
            return [node[i] for i in step.indexes]
        end = step.end
        if self.slice_end_inclusive and end is not None:
            end = None if end == -1 else end + 1
        return node[step.start:end]


def compile_path(expression: str, *, slice_end_inclusive: bool = False) -> JsonPath:
    """Parse a DataProcessing filter expression; JsonPathError says what is unsupported."""
    if not isinstance(expression, str) or not expression:
        raise JsonPathError("a filter expression must be a non-empty string starting with $")
    if len(expression) > MAX_EXPRESSION_CHARS:
        raise JsonPathError(f"{expression[:20]}...: longer than {MAX_EXPRESSION_CHARS} characters, "
                            "which CreateTransformJob rejects")
    if not expression.startswith("$"):
        raise JsonPathError(f"{expression}: must start with $")
    steps, position = [], 1
    while position < len(expression):
        step, position = _parse_step(expression, position)
        steps.append(step)
    return JsonPath(expression, tuple(steps), slice_end_inclusive)


_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_\-]*")
_INT = r"\s*(-?\d+)\s*"
_INDEXES = re.compile(rf"\[{_INT}(?:,{_INT})*\]")
_SLICE = re.compile(r"\[\s*(-?\d+)?\s*:\s*(-?\d+)?\s*\]")
_QUOTED = re.compile(r"\s*(?:'([^'\\]*)'|\"([^\"\\]*)\")\s*")


def _parse_step(expression: str, position: int) -> tuple[Step, int]:
    rest = expression[position:]
    if rest.startswith(".."):
        raise JsonPathError(f"{expression}: deep scan (..) is not supported by DataProcessing filters")
    if rest.startswith(".*"):
        return Wildcard(), position + 2
    if rest.startswith("."):
        name = _NAME.match(rest, 1)
        if not name:
            raise JsonPathError(f"{expression}: expected a key name after '.' at character {position + 1}")
        if name.end() < len(rest) and rest[name.end()] == "(":
            raise JsonPathError(f"{expression}: functions such as {name.group()}() are not supported")
        return Names((name.group(),)), position + name.end()
    if rest.startswith("[*]"):
        return Wildcard(), position + 3
    if rest.startswith("[?") or rest.startswith("[("):
        raise JsonPathError(f"{expression}: filter and script expressions are not supported")
    if rest.startswith("['") or rest.startswith('["') or rest.startswith("[ "):
        names = _parse_names(expression, position)
        if names:
            return names
    indexes = _INDEXES.match(rest)
    if indexes:
        values = tuple(int(v) for v in re.findall(r"-?\d+", indexes.group()))
        return Indexes(values), position + indexes.end()
    sliced = _SLICE.match(rest)
    if sliced:
        start, end = (None if v is None else int(v) for v in sliced.groups())
        return Slice(start, end), position + sliced.end()
    if re.match(r"\[[^\]]*:[^\]]*:", rest):
        raise JsonPathError(f"{expression}: slices with a step are not supported")
    raise JsonPathError(f"{expression}: cannot read {rest!r} at character {position + 1}; supported: "
                        "$, .name, *, ['a','b'], [i], [i,j], [start:end]")


def _parse_names(expression: str, position: int) -> tuple[Names, int] | None:
    names, cursor = [], position + 1
    while True:
        quoted = _QUOTED.match(expression, cursor)
        if not quoted:
            return None
        name = quoted.group(1) if quoted.group(1) is not None else quoted.group(2)
        if "." in name or "[" in name:
            raise JsonPathError(f"{expression}: nested paths inside brackets are not supported ({name!r})")
        names.append(name)
        cursor = quoted.end()
        if expression.startswith(",", cursor):
            cursor += 1
            continue
        if expression.startswith("]", cursor):
            return Names(tuple(names)), cursor + 1
        return None


def _is_definite(step: Step, last: bool) -> bool:
    if isinstance(step, Names):
        return len(step.names) == 1 or last
    if isinstance(step, Indexes):
        return len(step.indexes) == 1
    return False


def _describe(step: Step) -> str:
    if isinstance(step, Names):
        return "[" + ",".join(repr(n) for n in step.names) + "]"
    if isinstance(step, Indexes):
        return "[" + ",".join(map(str, step.indexes)) + "]"
    return "[start:end]"


def _kind(value: Any) -> str:
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, bool) or value is None:
        return "a boolean" if value is not None else "null"
    return "a number"
