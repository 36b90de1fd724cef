"""Names that become paths or SQL: one rule each, checked once where they enter (CLI, config, entry points).

Every rule is a full match (`re.fullmatch`): `$` alone also matches before a trailing newline, so
`"r1\\n"` would pass a `^...$` pattern and then break every path and query that uses it.
"""
from __future__ import annotations

import re
from pathlib import Path

RUN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")
"""A run folder, a partition value and an SQL literal."""
PACKAGE_GROUP = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")
LOCAL_PACKAGE_ID = re.compile(r"(?P<group>[A-Za-z0-9][A-Za-z0-9_.-]{0,127})/(?P<version>[1-9][0-9]{0,8})")
PACKAGE_ARN = re.compile(r"arn:aws[a-z-]*:sagemaker:[a-z0-9-]+:\d{12}:model-package/"
                         r"[A-Za-z0-9](?:-*[A-Za-z0-9]){0,62}/[1-9][0-9]{0,8}")
ENDPOINT = re.compile(r"[A-Za-z0-9](?:[-_.]*[A-Za-z0-9]){0,62}")
"""An endpoint name, which is also a capture folder name (SageMaker allows only `-` inside; `_` and `.`
are taken too for capture copied by other tools, but never `..` alone or a `/`)."""
VARIANT = ENDPOINT
"""A production variant name, with the same rule."""
DATABASE = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")
"""A Glue database, or the DuckDB schema standing in for it."""
REPLAY_GROUPS = ("csv", "jsonlines", "json", "binary")

_RULES = {
    "run id": (RUN_ID, "letters, digits, _ and -, starting with a letter or digit, at most 64"),
    "model package group": (PACKAGE_GROUP, "letters, digits, _ . and -, starting with a letter or digit, at most 128"),
    "endpoint": (ENDPOINT, "letters, digits and - _ ., starting and ending with a letter or digit, at most 63"),
    "variant": (VARIANT, "letters, digits and - _ ., starting and ending with a letter or digit, at most 63"),
    "database": (DATABASE, "letters, digits and _, not starting with a digit, at most 64"),
}


class InvalidName(ValueError):
    """A name that would be unsafe as a path or in SQL; the message says what is allowed."""


def check(kind: str, value: object) -> str:
    """`value` if it fully matches the rule for `kind` (run id, endpoint, ...); InvalidName otherwise."""
    pattern, allowed = _RULES[kind]
    if not isinstance(value, str) or not pattern.fullmatch(value):
        raise InvalidName(f"{value!r} is not a plain name for a {kind} ({allowed})")
    return value


def is_valid(kind: str, value: object) -> bool:
    return isinstance(value, str) and _RULES[kind][0].fullmatch(value) is not None


def check_package_id(value: object) -> str:
    """A local `<group>/<version>` id or a SageMaker model package ARN."""
    if isinstance(value, str) and (LOCAL_PACKAGE_ID.fullmatch(value) or PACKAGE_ARN.fullmatch(value)):
        return value
    raise InvalidName(f"{value!r} is not a model package id (<group>/<version> locally, or "
                     "arn:aws:sagemaker:<region>:<account>:model-package/<group>/<version>)")


def check_replay_group(value: object) -> str:
    if value not in REPLAY_GROUPS:
        raise InvalidName(f"{value!r} is not a replay group ({', '.join(REPLAY_GROUPS)})")
    return value  # type: ignore[return-value]


def inside(root: str | Path, path: str | Path, what: str) -> Path:
    """`path` resolved, if it lies in `root` (resolved); InvalidName naming both otherwise."""
    base = Path(root).resolve()
    target = Path(path).resolve()
    if target != base and not target.is_relative_to(base):
        raise InvalidName(f"{what} {path} is outside {base}; it must stay inside it")
    return target


def argument(kind: str, optional: bool = False):
    """An argparse `type=` that checks a name (`optional`: the empty string means none)."""
    import argparse

    def parse(value: str) -> str:
        if optional and value == "":
            return value
        try:
            return check_package_id(value) if kind == "package id" else check(kind, value)
        except InvalidName as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
    parse.__name__ = kind  # argparse names the type in its error message
    return parse
