"""Find capture files laid out as SageMaker writes them and read them line by line.

Layout: `<root>/<endpoint>/<variant>/yyyy/mm/dd/hh/<file>`, hour folders in UTC. A file sits in the
hour of its first record and may run into the next hour, so a window [start, end) reads folders
from floor(start) - 1h up to end and then keeps records by inferenceTime.
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import os
from collections.abc import Iterator
from pathlib import Path

from analysis.capture import CaptureCall, CaptureLineError, parse_capture_line
from steps import names, safe_files

log = logging.getLogger(__name__)

HOUR = dt.timedelta(hours=1)
_SNIFF_BYTES = 8192
# gzip, zip, bzip2, xz, zstd: capture objects are plain JSON Lines, anything compressed is misplaced.
_COMPRESSED_MAGIC = (b"\x1f\x8b", b"PK\x03\x04", b"BZh", b"\xfd7zXZ\x00", b"\x28\xb5\x2f\xfd")
_TIME_LEVELS = (("year", 4), ("month", 2), ("day", 2), ("hour", 2))
_LAYOUT = "<endpoint>/<variant>/yyyy/mm/dd/hh/<file>"


@dataclasses.dataclass(frozen=True)
class CaptureFile:
    """One capture object and where the layout puts it."""

    path: Path
    relative: str
    """Path below the capture root, with / separators."""
    endpoint: str
    variant: str
    hour: dt.datetime
    """The UTC hour folder it sits in."""


@dataclasses.dataclass(frozen=True)
class Misfit:
    """A path under the capture root that does not fit the layout."""

    relative: str
    problem: str


@dataclasses.dataclass(frozen=True)
class CaptureListing:
    files: tuple[CaptureFile, ...]
    misfits: tuple[Misfit, ...]


@dataclasses.dataclass(frozen=True)
class Window:
    """A UTC window [start, end); an open side is None."""

    start: dt.datetime | None = None
    end: dt.datetime | None = None

    def __post_init__(self) -> None:
        # Capture folders and inferenceTime are UTC; a naive bound means UTC too.
        for side in ("start", "end"):
            value = getattr(self, side)
            if value is not None and value.tzinfo is None:
                object.__setattr__(self, side, value.replace(tzinfo=dt.timezone.utc))

    def folders_from(self) -> dt.datetime | None:
        """The earliest hour folder that can hold records of the window (one hour of spill)."""
        return self.start.replace(minute=0, second=0, microsecond=0) - HOUR if self.start else None

    def holds(self, inference_time: dt.datetime | None, folder_hour: dt.datetime) -> bool:
        """Whether a record is in the window; without a time, whether its folder hour overlaps it."""
        if inference_time is not None:
            return ((self.start is None or inference_time >= self.start)
                    and (self.end is None or inference_time < self.end))
        return (self.start is None or folder_hour + HOUR > self.start) and (self.end is None or folder_hour < self.end)


@dataclasses.dataclass(frozen=True)
class CaptureLine:
    """One line of a capture file: a call, or the error that made it unusable."""

    file: CaptureFile
    number: int
    """1-based line number (1 for a binary file)."""
    call: CaptureCall | None
    error: CaptureLineError | None
    in_window: bool

    @property
    def unparsed_record_id(self) -> str:
        """The record id of a line that did not parse: `<capture file>#<line>`."""
        return f"{self.file.relative}#{self.number}"


def list_capture_files(root: str | Path, endpoint: str | None = None, variant: str | None = None,
                       window: Window = Window()) -> CaptureListing:
    """Capture files under root whose hour folder can hold records of the window, sorted by path."""
    root = Path(root)
    if not root.is_dir():
        why = (safe_files.problem(root) or "a file").split(";")[0]
        raise FileNotFoundError(f"capture root {root} is not a folder: {why}; give capture.root (or --capture) "
                                "the folder holding <endpoint>/<variant>/yyyy/mm/dd/hh/")
    files: list[CaptureFile] = []
    misfits: list[Misfit] = []
    low, high = window.folders_from(), window.end
    for endpoint_dir in _children(root, endpoint, misfits, root, "endpoint folder"):
        for variant_dir in _children(endpoint_dir, variant, misfits, root, "variant folder"):
            for hour_dir, hour in _hour_folders(variant_dir, root, low, high, misfits):
                for entry in _entries(hour_dir, root, misfits):
                    relative = _relative(Path(entry.path), root)
                    if _is_dir(entry):
                        misfits.append(Misfit(relative, f"a folder inside an hour folder; expected {_LAYOUT}"))
                    elif (problem := safe_files.problem(entry.path, root)) is not None:
                        misfits.append(Misfit(relative, problem))
                    else:
                        files.append(CaptureFile(Path(entry.path), relative, endpoint_dir.name, variant_dir.name, hour))
    for misfit in misfits:
        log.warning("capture root %s: %s: %s", root, misfit.relative, misfit.problem)
    return CaptureListing(tuple(files), tuple(misfits))


def read_capture_file(file: CaptureFile, window: Window = Window()) -> Iterator[CaptureLine]:
    """Stream the lines of one capture file as calls or errors; a binary file is one binary_file line."""
    with safe_files.open_regular(file.path) as handle:
        head = handle.read(_SNIFF_BYTES)
        if head.startswith(_COMPRESSED_MAGIC) or b"\x00" in head:
            kind = "compressed" if head.startswith(_COMPRESSED_MAGIC) else "binary (NUL bytes)"
            error = CaptureLineError("binary_file", f"the file is {kind}, not JSON Lines")
            yield CaptureLine(file, 1, None, error, window.holds(None, file.hour))
            return
        handle.seek(0)
        for number, raw in enumerate(handle, 1):
            if not raw.strip():
                continue  # a blank line carries no call
            try:
                call = parse_capture_line(raw)
            except CaptureLineError as exc:
                if not raw.endswith(b"\n") and exc.code in ("malformed_json", "not_utf8"):
                    exc = CaptureLineError("truncated_line",
                                           f"the last line has no newline and does not parse ({exc.detail})")
                yield CaptureLine(file, number, None, exc, window.holds(exc.inference_time, file.hour))
                continue
            yield CaptureLine(file, number, call, None, window.holds(call.inference_time, file.hour))


def _children(folder: Path, only: str | None, misfits: list[Misfit], root: Path, what: str) -> list[Path]:
    kind = what.split()[0]  # endpoint or variant: the folder name is that name
    if only is not None:
        names.check(kind, only)  # the config checked it too; a caller of this function may not have
        chosen = folder / only
        return [chosen] if chosen.is_dir() and _inside(chosen, root, misfits) else []
    found = []
    for entry in _entries(folder, root, misfits):
        if _is_dir(entry):
            if not names.is_valid(kind, entry.name):
                misfits.append(Misfit(_relative(Path(entry.path), root), f"{entry.name!r} is not a SageMaker "
                                      f"{kind} name; expected {_LAYOUT}"))
            elif _inside(Path(entry.path), root, misfits):
                found.append(Path(entry.path))
        else:
            problem = f"a file where a {what} belongs; expected {_LAYOUT}"
            misfits.append(Misfit(_relative(Path(entry.path), root), problem))
    return found


def _hour_folders(variant_dir: Path, root: Path, low: dt.datetime | None, high: dt.datetime | None,
                  misfits: list[Misfit]) -> Iterator[tuple[Path, dt.datetime]]:
    """Walk yyyy/mm/dd/hh below a variant, skipping folders whose span misses [low, high)."""
    def walk(folder: Path, level: int, parts: tuple[int, ...]) -> Iterator[tuple[Path, dt.datetime]]:
        name, width = _TIME_LEVELS[level]
        for entry in _entries(folder, root, misfits):
            path = Path(entry.path)
            if _is_dir(entry) and not _inside(path, root, misfits):
                continue
            if not _is_dir(entry):
                misfits.append(Misfit(_relative(path, root), f"a file where a {name} folder belongs; expected {_LAYOUT}"))
                continue
            span = _span(parts + (int(entry.name),), level) if entry.name.isdigit() and len(entry.name) == width else None
            if span is None:
                misfits.append(Misfit(_relative(path, root), f"{entry.name!r} is not a {width}-digit {name}"))
                continue
            begins, ends = span
            if (high is not None and begins >= high) or (low is not None and ends <= low):
                continue
            if level == len(_TIME_LEVELS) - 1:
                yield path, begins
            else:
                yield from walk(path, level + 1, parts + (int(entry.name),))

    yield from walk(variant_dir, 0, ())


def _span(parts: tuple[int, ...], level: int) -> tuple[dt.datetime, dt.datetime] | None:
    """The UTC interval a year, month, day or hour folder covers; None for an impossible date."""
    year, month, day, hour = parts + (1, 1, 0)[len(parts) - 1:]
    try:
        begins = dt.datetime(year, month, day, hour, tzinfo=dt.timezone.utc)
        if level == 0:
            return begins, begins.replace(year=year + 1)
        if level == 1:
            return begins, (begins.replace(year=year + 1, month=1) if month == 12 else begins.replace(month=month + 1))
    except ValueError:
        return None
    return begins, begins + (dt.timedelta(days=1) if level == 2 else HOUR)


def _entries(folder: Path, root: Path, misfits: list[Misfit]) -> list[os.DirEntry]:
    """A folder's entries by name; a misfit (and nothing) when it cannot be listed."""
    try:
        with os.scandir(folder) as listing:
            return sorted(listing, key=lambda e: e.name)
    except OSError as exc:
        misfits.append(Misfit(_relative(folder, root), f"cannot be listed ({exc.strerror}); check its permissions"))
        return []


def _is_dir(entry: os.DirEntry) -> bool:
    """entry.is_dir(), False for a link loop (which raises instead)."""
    try:
        return entry.is_dir()
    except OSError:
        return False


def _inside(folder: Path, root: Path, misfits: list[Misfit]) -> bool:
    """Whether a folder (maybe a link) lies inside the capture root; a misfit when it does not."""
    if folder.resolve().is_relative_to(root.resolve()):
        return True
    misfits.append(Misfit(_relative(folder, root), f"a link to {folder.resolve()}, outside the capture root; "
                          "copy the capture in instead of linking it"))
    return False


def _relative(path: Path, root: Path) -> str:
    return path.relative_to(root).as_posix()
