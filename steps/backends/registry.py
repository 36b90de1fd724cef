"""The model registry: one interface, and a local SQLite implementation with SageMaker's fields.

A package id is `<group>/<version>` (versions count from 1 per group, as in SageMaker). Every
status change is a compare-and-set: it applies only while the package still has the status the
caller saw, so a package someone approved or rejected by hand during a run is never overwritten,
and of two racing runs exactly one decides. A run (a call with a run_id) never overwrites a manual
decision either, and a decision is manual unless this tool's run wrote it: the status itself says
so, not the history (which a `sqlite3` UPDATE or another program does not write). A trigger counts
every write of approval_status, whoever makes it (`status_writes`); a run's write records the count
it produced (`run_status_write`). An Approved or Rejected status whose count is not the one a run
recorded was set by someone else (by hand, by another program, or at registration) and stays. Every
transition made through this class is kept in an audit history.
"""
from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import json
import logging
import re
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Literal, Protocol

from steps import names

ApprovalStatus = Literal["PendingManualApproval", "Approved", "Rejected"]
STATUSES: tuple[str, ...] = ("PendingManualApproval", "Approved", "Rejected")
DESCRIPTION_LIMIT = 1024
"""UpdateModelPackage's ApprovalDescription is at most 1024 characters."""
METADATA_KEY_LIMIT, METADATA_VALUE_LIMIT, METADATA_ENTRIES_LIMIT = 128, 256, 50
"""CustomerMetadataProperties limits as of 2025 (keys 1-128, values up to 256, 50 entries)."""
_GROUP = names.PACKAGE_GROUP
DECISIONS = ("Approved", "Rejected")
_NOTE = re.compile(r"^shadow-eval run (?P<run_id>[A-Za-z0-9_-]{1,64}): (?P<from_status>[A-Za-z]+) -> "
                   r"(?P<to_status>[A-Za-z]+)\. ?")
log = logging.getLogger(__name__)
_PACKAGE_ID = names.LOCAL_PACKAGE_ID


class RegistryError(ValueError):
    """A bad package id, status, description or metadata; or a package that does not exist."""


@dataclasses.dataclass(frozen=True)
class PackageInfo:
    package_id: str
    group: str
    version: int
    model_uri: str
    status: str
    description: str
    metadata: dict[str, str]
    created_at: str
    updated_at: str


@dataclasses.dataclass(frozen=True)
class Transition:
    """One audited status change (from_status is None when the package was registered)."""

    package_id: str
    from_status: str | None
    to_status: str
    by: str
    reason: str
    run_id: str | None
    at: str


class Registry(Protocol):
    """What the pipeline needs of a model registry (local SQLite here; SageMaker Model Registry later)."""

    def register(self, group: str, model_uri: str, status: str = "PendingManualApproval",
                 description: str = "", metadata: dict[str, str] | None = None) -> str: ...

    def describe(self, package_id: str) -> PackageInfo: ...

    def set_status(self, package_id: str, expected_status: str, new_status: str, description: str,
                   run_id: str | None, metadata: dict[str, str] | None = None) -> bool:
        """Apply new_status only if the status is still expected_status; False (and no change) otherwise.

        With a run_id (an automatic decision) it is also False when the current status is a manual decision.

        The SageMaker implementation cannot lock: it describes, compares and updates, so its race
        window is one DescribeModelPackage round trip; it re-describes afterwards to detect a loss.
        """
        ...

    def history(self, package_id: str) -> list[Transition]: ...

    def list_packages(self, group: str) -> list[PackageInfo]: ...


_TABLES = """
CREATE TABLE IF NOT EXISTS package_groups (
    name        TEXT PRIMARY KEY,
    created_at  TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS packages (
    package_id       TEXT PRIMARY KEY,
    group_name       TEXT NOT NULL REFERENCES package_groups(name),
    version          INTEGER NOT NULL,
    model_uri        TEXT NOT NULL,
    approval_status  TEXT NOT NULL CHECK (approval_status IN ('PendingManualApproval', 'Approved', 'Rejected')),
    description      TEXT NOT NULL,
    metadata         TEXT NOT NULL,
    created_at       TEXT NOT NULL,
    updated_at       TEXT NOT NULL,
    UNIQUE (group_name, version)
);
CREATE TABLE IF NOT EXISTS history (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    package_id   TEXT NOT NULL REFERENCES packages(package_id),
    from_status  TEXT,
    to_status    TEXT NOT NULL,
    changed_by   TEXT NOT NULL,
    reason       TEXT NOT NULL,
    run_id       TEXT,
    changed_at   TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS history_package ON history(package_id, id);
"""
_TRIGGER = """
CREATE TRIGGER IF NOT EXISTS count_status_writes AFTER UPDATE OF approval_status ON packages
BEGIN
    UPDATE packages SET status_writes = OLD.status_writes + 1 WHERE package_id = NEW.package_id;
END;
"""
_COLUMNS = {"status_writes": "INTEGER NOT NULL DEFAULT 0", "run_status_write": "INTEGER"}
"""Added to packages (also to a registry file made before they existed: its decisions then count as manual)."""


class LocalRegistry:
    """A model registry in one SQLite file; safe across threads and processes (one connection per call)."""

    def __init__(self, path: str | Path, actor: str = "shadow-eval",
                 clock: Callable[[], dt.datetime] | None = None):
        self.path = Path(path)
        self.actor = actor
        self._clock = clock or (lambda: dt.datetime.now(dt.timezone.utc))
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # executescript commits on its own, so the schema is created outside _transaction.
        db = sqlite3.connect(self.path, timeout=30)
        try:
            db.executescript(_TABLES)
            present = {row[1] for row in db.execute("PRAGMA table_info(packages)")}
            for column, kind in _COLUMNS.items():
                if column not in present:
                    try:
                        db.execute(f"ALTER TABLE packages ADD COLUMN {column} {kind}")
                    except sqlite3.OperationalError as exc:  # another process added it first
                        if "duplicate column" not in str(exc):
                            raise
            db.executescript(_TRIGGER)
        finally:
            db.close()

    def register(self, group: str, model_uri: str, status: str = "PendingManualApproval",
                 description: str = "", metadata: dict[str, str] | None = None) -> str:
        """Add a package as the next version of its group (creating the group); returns its id."""
        if not isinstance(group, str) or not _GROUP.fullmatch(group):
            raise RegistryError(f"{group!r} is not a valid model package group name")
        if not model_uri:
            raise RegistryError("model_uri is required")
        _check_status(status)
        _check_description(description)
        meta = _check_metadata(metadata or {})
        now = self._now()
        with self._transaction() as db:
            db.execute("INSERT OR IGNORE INTO package_groups (name, created_at) VALUES (?, ?)", (group, now))
            (version,) = db.execute("SELECT COALESCE(MAX(version), 0) + 1 FROM packages WHERE group_name = ?",
                                    (group,)).fetchone()
            package_id = f"{group}/{version}"
            db.execute("INSERT INTO packages (package_id, group_name, version, model_uri, approval_status, "
                       "description, metadata, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                       (package_id, group, version, model_uri, status, description,
                        json.dumps(meta, sort_keys=True), now, now))
            db.execute("INSERT INTO history (package_id, from_status, to_status, changed_by, reason, run_id, "
                       "changed_at) VALUES (?, NULL, ?, ?, ?, NULL, ?)",
                       (package_id, status, self.actor, "registered", now))
        return package_id

    def describe(self, package_id: str) -> PackageInfo:
        """The package as it is now; RegistryError if there is no such package."""
        _parse_id(package_id)
        with self._transaction() as db:
            row = db.execute("SELECT * FROM packages WHERE package_id = ?", (package_id,)).fetchone()
        if row is None:
            raise RegistryError(f"no model package {package_id!r}")
        return _info(row)

    def set_status(self, package_id: str, expected_status: str, new_status: str, description: str,
                   run_id: str | None, metadata: dict[str, str] | None = None) -> bool:
        """Compare-and-set the approval status; metadata keys are merged, as SageMaker merges them."""
        _parse_id(package_id)
        _check_status(expected_status)
        _check_status(new_status)
        _check_description(description)
        extra = _check_metadata(metadata or {})
        now = self._now()
        with self._transaction() as db:
            row = db.execute("SELECT approval_status, metadata, status_writes, run_status_write FROM packages "
                             "WHERE package_id = ?",
                             (package_id,)).fetchone()
            if row is None:
                raise RegistryError(f"no model package {package_id!r}")
            if row["approval_status"] != expected_status:
                return False
            if run_id is not None and row["approval_status"] in DECISIONS and _manual(row):
                log.warning("%s is %s by a decision no shadow-eval run wrote; run %s leaves it alone", package_id,
                            row["approval_status"], run_id)
                return False
            merged = _check_metadata({**json.loads(row["metadata"]), **extra})
            # The WHERE repeats the comparison so the update is a compare-and-set on its own. The trigger
            # counts this write; a run records the count it produces, a person's call (no run_id) does not.
            changed = db.execute(
                "UPDATE packages SET approval_status = ?, description = ?, metadata = ?, updated_at = ?, "
                "run_status_write = CASE WHEN ? THEN status_writes + 1 ELSE run_status_write END "
                "WHERE package_id = ? AND approval_status = ?",
                (new_status, description, json.dumps(merged, sort_keys=True), now, run_id is not None,
                 package_id, expected_status),
            ).rowcount
            if changed != 1:
                return False
            db.execute("INSERT INTO history (package_id, from_status, to_status, changed_by, reason, run_id, "
                       "changed_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                       (package_id, expected_status, new_status, self.actor, description, run_id, now))
        return True

    def history(self, package_id: str) -> list[Transition]:
        """Every transition of a package, oldest first."""
        _parse_id(package_id)
        with self._transaction() as db:
            rows = db.execute("SELECT * FROM history WHERE package_id = ? ORDER BY id", (package_id,)).fetchall()
        return [Transition(r["package_id"], r["from_status"], r["to_status"], r["changed_by"], r["reason"],
                           r["run_id"], r["changed_at"]) for r in rows]

    def list_packages(self, group: str) -> list[PackageInfo]:
        """The group's packages, newest version first (as ListModelPackages sorts by default)."""
        with self._transaction() as db:
            rows = db.execute("SELECT * FROM packages WHERE group_name = ? ORDER BY version DESC",
                              (group,)).fetchall()
        return [_info(r) for r in rows]

    def list_groups(self) -> list[str]:
        """Every model package group, by name."""
        with self._transaction() as db:
            return [r["name"] for r in db.execute("SELECT name FROM package_groups ORDER BY name")]

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        # BEGIN IMMEDIATE takes the write lock up front, so read-compare-write cannot interleave.
        db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        db.row_factory = sqlite3.Row
        try:
            db.execute("PRAGMA foreign_keys = ON")
            db.execute("BEGIN IMMEDIATE")
            try:
                yield db
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")
        finally:
            db.close()

    def _now(self) -> str:
        return self._clock().astimezone(dt.timezone.utc).isoformat(timespec="microseconds").replace("+00:00", "Z")


def transition_note(run_id: str, from_status: str, to_status: str, description: str,
                    limit: int = DESCRIPTION_LIMIT) -> str:
    """An approval description that carries its transition first (`shadow-eval run R: A -> B. ...`), within limit."""
    text = f"shadow-eval run {run_id}: {from_status} -> {to_status}. {description}".rstrip()
    return text if len(text) <= limit else text[:limit - 1] + "…"


def parse_transition_note(description: str) -> tuple[str, str, str] | None:
    """(run_id, from_status, to_status) from a description transition_note wrote; None for any other text."""
    match = _NOTE.match(description or "")
    return (match["run_id"], match["from_status"], match["to_status"]) if match else None


def _manual(row: sqlite3.Row) -> bool:
    """Whether the package's status was written by anything but a shadow-eval run (see the module note)."""
    return row["run_status_write"] is None or row["run_status_write"] != row["status_writes"]


def _info(row: sqlite3.Row) -> PackageInfo:
    return PackageInfo(row["package_id"], row["group_name"], row["version"], row["model_uri"],
                       row["approval_status"], row["description"], json.loads(row["metadata"]),
                       row["created_at"], row["updated_at"])


def _parse_id(package_id: str) -> tuple[str, int]:
    match = _PACKAGE_ID.fullmatch(package_id) if isinstance(package_id, str) else None
    if not match:
        raise RegistryError(f"{package_id!r} is not a package id of the form <group>/<version>")
    return match["group"], int(match["version"])


def _check_status(status: str) -> None:
    if status not in STATUSES:
        raise RegistryError(f"{status!r} is not an approval status ({', '.join(STATUSES)})")


def _check_description(description: str) -> None:
    if len(description) > DESCRIPTION_LIMIT:
        raise RegistryError(f"description is {len(description)} characters; the limit is {DESCRIPTION_LIMIT}")


def _check_metadata(metadata: dict[str, Any]) -> dict[str, str]:
    if len(metadata) > METADATA_ENTRIES_LIMIT:
        raise RegistryError(f"{len(metadata)} metadata entries; the limit is {METADATA_ENTRIES_LIMIT}")
    clean = {}
    for key, value in metadata.items():
        if not isinstance(key, str) or not 1 <= len(key) <= METADATA_KEY_LIMIT:
            raise RegistryError(f"metadata key {key!r} must be text of 1 to {METADATA_KEY_LIMIT} characters")
        text = value if isinstance(value, str) else json.dumps(value)
        if len(text) > METADATA_VALUE_LIMIT:
            raise RegistryError(f"metadata {key!r} is {len(text)} characters; the limit is {METADATA_VALUE_LIMIT}")
        clean[key] = text
    return clean
