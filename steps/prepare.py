"""Prepare: turn the capture window into replay inputs, captured records and quarantine.

Writes, under `<run_dir>/prepare/` (contract in docs/internals.md): `replay-input/<group>/...`
one file per capture file and group, `records/<n>.parquet` and `quarantine/<n>.parquet` one part
per capture file, and `replay-plan.json`. Every in-window record lands in records or quarantine.
"""
from __future__ import annotations

import collections
import dataclasses
import json
import logging
import shutil
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from analysis.capture import CallRecord, CallRecordsError, CallSplit, CaptureCall, call_records
from analysis.quarantine import REASONS
from analysis.records import content_type_for, media_type
from steps.capture_files import CaptureFile, CaptureLine, Window, list_capture_files, read_capture_file
from steps.config import Config

log = logging.getLogger(__name__)

GROUPS = ("csv", "jsonlines", "json", "binary")
_EXTENSIONS = {"csv": ".csv", "jsonlines": ".jsonl", "json": ".json"}
_MIB = 1024 * 1024

RECORDS_SCHEMA = pa.schema([
    ("record_id", pa.string()), ("event_id", pa.string()), ("record_index", pa.int32()),
    ("record_count", pa.int32()), ("inference_id", pa.string()),
    ("inference_time", pa.timestamp("us", tz="UTC")), ("custom_attributes", pa.string()),
    ("endpoint", pa.string()), ("variant", pa.string()), ("capture_file", pa.string()),
    ("capture_line", pa.int32()), ("replay_file", pa.string()), ("replay_line", pa.int32()),
    ("replay_index", pa.int32()), ("input_content_type", pa.string()), ("input_encoding", pa.string()),
    ("input_text", pa.string()), ("output_content_type", pa.string()), ("output_encoding", pa.string()),
    ("output_text", pa.string()),
])
QUARANTINE_SCHEMA = pa.schema([
    ("run_id", pa.string()), ("record_id", pa.string()), ("event_id", pa.string()), ("capture_file", pa.string()),
    ("capture_line", pa.int32()), ("stage", pa.string()), ("reason", pa.string()), ("detail", pa.string()),
])


@dataclasses.dataclass(frozen=True)
class PrepareResult:
    """What prepare read and where it went: `records == prepared + quarantined`."""

    files: int
    calls: int
    """In-window capture lines (a line that does not parse is one call of one record)."""
    records: int
    prepared: int
    quarantined: int
    quarantine_reasons: dict[str, int]
    out_of_window: int
    """Calls in the folders read whose inferenceTime falls outside the window."""
    groups: dict[str, dict[str, Any]]
    """The replay plan's groups."""
    misfits: tuple[str, ...] = ()
    """Paths under the capture root that were not read, each as `<path>: <why, and what to do>`."""

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self) | {"misfits": list(self.misfits)}


def run(config: Config, run_dir: str | Path) -> PrepareResult:
    """Run the prepare stage for config.capture into `<run_dir>/prepare/` (rewritten from scratch)."""
    out = Path(run_dir) / "prepare"
    if out.exists():
        shutil.rmtree(out)  # a re-run rebuilds the same files; stale parts must not linger
    for folder in ("replay-input", "records", "quarantine"):
        (out / folder).mkdir(parents=True)
    capture = config.capture
    window = Window(capture.window_start, capture.window_end)
    listing = list_capture_files(capture.root, capture.endpoint, capture.variant, window)
    tally = _Tally()
    splitter = _Splitter.from_config(config)
    for number, file in enumerate(listing.files):
        records, quarantine = _prepare_file(file, window, splitter, out / "replay-input", tally)
        for row in quarantine:  # shadow_quarantine takes these parts as they are, beside join's
            row["run_id"] = Path(run_dir).name
        _write_part(records, RECORDS_SCHEMA, out / "records" / f"{number:05d}.parquet")
        _write_part(quarantine, QUARANTINE_SCHEMA, out / "quarantine" / f"{number:05d}.parquet")
    if not listing.files:  # readers glob the parts; give them a schema to read
        _write_part([], RECORDS_SCHEMA, out / "records" / "00000.parquet")
        _write_part([], QUARANTINE_SCHEMA, out / "quarantine" / "00000.parquet")
    groups = _replay_groups(tally, config.replay.batch_strategy)
    (out / "replay-plan.json").write_text(json.dumps({"groups": groups}, indent=2) + "\n", encoding="utf-8")
    result = PrepareResult(
        files=len(listing.files), calls=tally.calls, records=tally.prepared + sum(tally.reasons.values()),
        prepared=tally.prepared, quarantined=sum(tally.reasons.values()), quarantine_reasons=dict(tally.reasons),
        out_of_window=tally.out_of_window, groups=groups, misfits=tuple(f"{m.relative}: {m.problem}" for m in listing.misfits))
    log.info("prepare: %d files, %d calls, %d records = %d prepared + %d quarantined, %d calls out of window",
             result.files, result.calls, result.records, result.prepared, result.quarantined, result.out_of_window)
    if not result.records:
        log.warning("prepare: no captured record in the window (%d files read under %s for endpoint %s, variant %s, "
                    "window %s to %s, %d calls outside it); check capture.root, capture.endpoint, capture.variant "
                    "and the window", result.files, capture.root, capture.endpoint or "any",
                    capture.variant or "any", _when(capture.window_start), _when(capture.window_end),
                    result.out_of_window)
    return result


@dataclasses.dataclass
class _Tally:
    calls: int = 0
    out_of_window: int = 0
    prepared: int = 0
    reasons: collections.Counter = dataclasses.field(default_factory=collections.Counter)
    group_files: collections.Counter = dataclasses.field(default_factory=collections.Counter)
    group_records: collections.Counter = dataclasses.field(default_factory=collections.Counter)
    binary_types: collections.Counter = dataclasses.field(default_factory=collections.Counter)
    binary_accepts: collections.Counter = dataclasses.field(default_factory=collections.Counter)


@dataclasses.dataclass(frozen=True)
class _Splitter:
    """call_records with the run's knobs, plus the MaxPayloadInMB check on each replay unit."""

    input_format: str
    instances_path: str | None
    output_format: str
    output_records_path: str
    max_unit_bytes: int | None

    @classmethod
    def from_config(cls, config: Config) -> _Splitter:
        output = config.production.output
        # MaxPayloadInMB=0 is SageMaker's unbounded streaming mode.
        return cls(config.capture.input_format, config.capture.instances_path, output.format,
                   output.records_path or "predictions", config.replay.max_payload_mb * _MIB or None)

    def split(self, call: CaptureCall) -> CallSplit:
        return call_records(call, self.input_format, self.instances_path, self.output_records_path, self.output_format)

    def too_large(self, size: int) -> bool:
        return self.max_unit_bytes is not None and size > self.max_unit_bytes


def _prepare_file(file: CaptureFile, window: Window, splitter: _Splitter, replay_root: Path,
                  tally: _Tally) -> tuple[list[dict], list[dict]]:
    records: list[dict] = []
    quarantine: list[dict] = []
    with _ReplayFiles(replay_root, file.relative, tally) as replay:
        for line in read_capture_file(file, window):
            if not line.in_window:
                tally.out_of_window += 1
                continue
            tally.calls += 1
            if line.error is not None:
                quarantine.append(_quarantined(line.unparsed_record_id, line.error.event_id, line, line.error.code,
                                               line.error.detail))
                continue
            call = line.call
            try:
                split = splitter.split(call)
            except CallRecordsError as exc:
                quarantine.extend(_quarantined(f"{call.event_id}:{index}", call.event_id, line, exc.code, exc.detail)
                                  for index in range(exc.record_count))
                continue
            for record, place in zip(split.records, replay.write(split, call, line.number, splitter)):
                record_id = f"{call.event_id}:{record.record_index}"
                if isinstance(place, str):
                    quarantine.append(_quarantined(record_id, call.event_id, line, "record_too_large", place))
                else:
                    records.append(_record_row(record_id, call, line, record, place))
    for row in quarantine:
        tally.reasons[row["reason"]] += 1
    tally.prepared += len(records)
    return records, quarantine


class _ReplayFiles:
    """The replay inputs of one capture file, one per group, opened on first use."""

    def __init__(self, replay_root: Path, capture_relative: str, tally: _Tally):
        self._root, self._relative, self._tally = replay_root, capture_relative, tally
        self._handles: dict[str, Any] = {}
        self._lines: collections.Counter = collections.Counter()

    def __enter__(self) -> _ReplayFiles:
        return self

    def __exit__(self, *exc_info: object) -> None:
        for handle in self._handles.values():
            handle.close()

    def write(self, split: CallSplit, call: CaptureCall, capture_line: int,
              splitter: _Splitter) -> list[tuple[str, int, int] | str]:
        """Write a call's replay units; per record (replay_file, replay_line, replay_index) or why it is too large."""
        group = split.input_format
        if group == "binary":
            body = call.input.body()
            if splitter.too_large(len(body)):
                return [_too_large(len(body), splitter)]
            name = f"binary/{self._relative}.d/{capture_line}.bin"
            target = self._root / name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(body)
            self._tally.group_files["binary"] += 1
            self._tally.group_records["binary"] += 1
            self._tally.binary_types[media_type(call.input.content_type) or "application/octet-stream"] += 1
            if call.output is not None and media_type(call.output.content_type):
                self._tally.binary_accepts[media_type(call.output.content_type)] += 1
            return [(name, 1, 0)]
        if group == "json":
            unit = split.request_document + "\n"
            if splitter.too_large(len(unit.encode("utf-8"))):
                return [_too_large(len(unit.encode("utf-8")), splitter)] * len(split.records)
            line = self._append(group, unit)
            self._tally.group_records[group] += len(split.records)
            return [(self._name(group), line, record.record_index) for record in split.records]
        places: list[tuple[str, int, int] | str] = []
        for record in split.records:
            text = record.input_text
            unit = (f"{_csv_field(f'{call.event_id}:{record.record_index}')},{text}" if group == "csv" else text) + "\n"
            if splitter.too_large(len(unit.encode("utf-8"))):
                places.append(_too_large(len(unit.encode("utf-8")), splitter))
                continue
            places.append((self._name(group), self._append(group, unit), 0))
            self._tally.group_records[group] += 1
        return places

    def _name(self, group: str) -> str:
        return f"{group}/{self._relative}{_EXTENSIONS[group]}"

    def _append(self, group: str, unit: str) -> int:
        if group not in self._handles:
            target = self._root / self._name(group)
            target.parent.mkdir(parents=True, exist_ok=True)
            self._handles[group] = open(target, "w", encoding="utf-8", newline="")
            self._tally.group_files[group] += 1
        self._handles[group].write(unit)
        self._lines[group] += 1
        return self._lines[group]


def group_knobs(group: str, batch_strategy: str, content_type: str | None = None,
                accept: str | None = None) -> dict[str, Any]:
    """CreateTransformJob knobs that replay one input format faithfully (docs/internals.md, "Replay plan")."""
    if group == "binary":
        # One request per file, sent whole with the type it was captured with.
        return {"content_type": content_type or "application/octet-stream", "accept": accept or "*/*",
                "split_type": "None", "batch_strategy": "SingleRecord", "assemble_with": "None",
                "data_processing": None}
    mime = content_type_for(group)
    return {"content_type": mime, "accept": mime, "split_type": "Line",
            # A JSON document is one request: MultiRecord would concatenate documents into one body.
            "batch_strategy": "SingleRecord" if group == "json" else batch_strategy, "assemble_with": "Line",
            "data_processing": {"InputFilter": "$[1:]" if group == "csv" else "$", "JoinSource": "Input",
                                "OutputFilter": "$"}}


def _replay_groups(tally: _Tally, batch_strategy: str) -> dict[str, dict[str, Any]]:
    """The replay plan's groups: knobs per input format present, with files and records."""
    groups: dict[str, dict[str, Any]] = {}
    for group in GROUPS:
        if not tally.group_records[group]:
            continue
        content_type = accept = None
        if group == "binary":
            # One transform job has one ContentType: the most common request type; the Accept production answered with.
            content_type = tally.binary_types.most_common(1)[0][0]
            accept = tally.binary_accepts.most_common(1)[0][0] if tally.binary_accepts else None
            if len(tally.binary_types) > 1:
                log.warning("binary requests have several content types %s; replaying all as %s",
                            dict(tally.binary_types), content_type)
        groups[group] = group_knobs(group, batch_strategy, content_type, accept) | {
            "files": tally.group_files[group], "records": tally.group_records[group]}
    return groups


def _record_row(record_id: str, call: CaptureCall, line: CaptureLine, record: CallRecord,
                place: tuple[str, int, int]) -> dict[str, Any]:
    replay_file, replay_line, replay_index = place
    output = call.output
    return {
        "record_id": record_id, "event_id": call.event_id, "record_index": record.record_index,
        "record_count": record.record_count, "inference_id": call.inference_id,
        "inference_time": call.inference_time, "custom_attributes": call.custom_attributes,
        "endpoint": line.file.endpoint, "variant": line.file.variant, "capture_file": line.file.relative,
        "capture_line": line.number, "replay_file": replay_file, "replay_line": replay_line,
        "replay_index": replay_index, "input_content_type": call.input.content_type,
        "input_encoding": call.input.encoding, "input_text": record.input_text,
        "output_content_type": output.content_type if output else None,
        "output_encoding": output.encoding if output else None, "output_text": record.output_text,
    }


def _quarantined(record_id: str, event_id: str | None, line: CaptureLine, code: str, detail: str) -> dict[str, Any]:
    reason = REASONS[code]
    return {"record_id": record_id, "event_id": event_id, "capture_file": line.file.relative,
            "capture_line": line.number, "stage": reason.stage, "reason": code, "detail": f"{detail}; {reason.fix}"}


def _too_large(size: int, splitter: _Splitter) -> str:
    return f"the replay unit is {size} bytes, over MaxPayloadInMB ({splitter.max_unit_bytes} bytes)"


def _when(moment) -> str:
    return moment.isoformat().replace("+00:00", "Z") if moment else "open"


def _csv_field(value: str) -> str:
    """RFC 4180 quoting, only when needed (eventIds are UUIDs and never need it)."""
    if any(ch in value for ch in ',"\r\n'):
        return '"' + value.replace('"', '""') + '"'
    return value


def _write_part(rows: list[dict], schema: pa.Schema, target: Path) -> None:
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), target)
