"""One SageMaker data-capture line: parse it into a call, and split the call into its records.

A capture line is one HTTP invocation (eventVersion "0", see sagemaker-formats.md Part 1, as
researched 2026-11): `captureData.endpointInput/endpointOutput` each hold the body verbatim as a
string with encoding CSV, JSON or BASE64, chosen separately per side; `eventMetadata` holds
eventId, inferenceTime and, when the caller sent them, inferenceId and customAttributes.
Key order is free and extra keys (groundTruthData in merged files) are ignored.
"""
from __future__ import annotations

import base64
import binascii
import dataclasses
import datetime as dt
import json
import unicodedata

from analysis.records import Format, SplitError, compact_json, detect_format, request_records, split_body

ENCODINGS = ("CSV", "JSON", "BASE64")
EVENT_VERSION = "0"
_JSON_FAMILY = {"json", "jsonlines"}


class CaptureLineError(ValueError):
    """A capture line that is not a usable call; `code` is a key of analysis.quarantine.REASONS.

    `event_id` and `inference_time` are set when the line got as far as a readable eventId.
    """

    def __init__(self, code: str, detail: str, event_id: str | None = None,
                 inference_time: dt.datetime | None = None):
        super().__init__(f"{code}: {detail}")
        self.code, self.detail, self.event_id, self.inference_time = code, detail, event_id, inference_time


class CallRecordsError(ValueError):
    """A call whose records cannot be prepared; all `record_count` records are quarantined with `code`."""

    def __init__(self, code: str, detail: str, record_count: int = 1):
        super().__init__(f"{code}: {detail}")
        self.code, self.detail, self.record_count = code, detail, record_count


class NotTextError(ValueError):
    """A payload whose bytes are not UTF-8 text."""


@dataclasses.dataclass(frozen=True)
class Payload:
    """One side of a call as captured: `data` is kept verbatim (base64 text for BASE64)."""

    content_type: str | None
    encoding: str
    data: str

    def body(self) -> bytes:
        """The bytes the endpoint saw."""
        if self.encoding == "BASE64":
            return base64.b64decode(self.data)
        return self.data.encode("utf-8")

    def text(self) -> str:
        """The body as text; raises NotTextError when BASE64 bytes are not UTF-8."""
        if self.encoding != "BASE64":
            return self.data
        try:
            return self.body().decode("utf-8")
        except UnicodeDecodeError as exc:
            raise NotTextError(f"the BASE64 body is not UTF-8 text (byte {exc.start})") from None

    def base64(self) -> str:
        """The body as base64 text."""
        return self.data if self.encoding == "BASE64" else base64.b64encode(self.body()).decode("ascii")


@dataclasses.dataclass(frozen=True)
class CaptureCall:
    """One captured HTTP invocation."""

    event_id: str
    inference_id: str | None
    inference_time: dt.datetime | None
    """Aware UTC; None when the captured value does not parse (see inference_time_raw)."""
    inference_time_raw: str | None
    custom_attributes: str | None
    """As captured; JSON text when the captured value is not a string."""
    event_version: str
    input: Payload | None
    output: Payload | None


@dataclasses.dataclass(frozen=True)
class CallRecord:
    """One record of a call: the input as the model received it and production's answer to it."""

    record_index: int
    record_count: int
    input_text: str
    """CSV row, JSON Lines line, compact JSON element, or base64 for binary."""
    output_text: str | None
    """Production's answer for this record as text (base64 only when the body is not UTF-8)."""


@dataclasses.dataclass(frozen=True)
class CallSplit:
    """A call cut into records, plus the unit a replay sends for them."""

    input_format: Format
    records: tuple[CallRecord, ...]
    request_document: str | None
    """json only: the whole request, compact, replayed as one line."""


def parse_capture_line(line: bytes, *, require_input: bool = True, require_output: bool = True) -> CaptureCall:
    """Parse one capture line (with or without its newline); raises CaptureLineError."""
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise CaptureLineError("not_utf8", f"invalid UTF-8 at byte {exc.start}") from None
    try:
        record = json.loads(text)
    except json.JSONDecodeError as exc:
        raise CaptureLineError("malformed_json", f"{exc.msg} at column {exc.colno}") from None
    if not isinstance(record, dict):
        raise CaptureLineError("not_capture_record", f"a JSON {type(record).__name__}, not an object")
    metadata, capture = record.get("eventMetadata"), record.get("captureData")
    if not isinstance(metadata, dict) or not isinstance(metadata.get("eventId"), str) or not metadata["eventId"]:
        raise CaptureLineError("not_capture_record", "no eventMetadata.eventId string")
    event_id, raw_time = metadata["eventId"], metadata.get("inferenceTime")
    inference_time = parse_inference_time(raw_time) if isinstance(raw_time, str) else None
    if any(unicodedata.category(ch) == "Cc" for ch in event_id):
        # A record id travels in replay files one per line (CSV column 0): a line break would split its line
        # and fail the whole file. SageMaker's eventIds are UUIDs; this one was damaged or forged.
        raise CaptureLineError("not_capture_record", "eventMetadata.eventId contains a line break or control "
                               "character", None, inference_time)
    try:
        payload_in, payload_out = _payloads(record, capture)
    except CaptureLineError as exc:
        raise CaptureLineError(exc.code, exc.detail, event_id, inference_time) from None
    if payload_in is None and require_input:
        raise CaptureLineError("missing_input", "captureData has no endpointInput", event_id, inference_time)
    if payload_out is None and require_output:
        raise CaptureLineError("missing_output", "captureData has no endpointOutput", event_id, inference_time)
    return CaptureCall(
        event_id=event_id,
        inference_id=_as_text(metadata.get("inferenceId")),
        inference_time=inference_time,
        inference_time_raw=_as_text(raw_time),
        custom_attributes=_as_text(metadata.get("customAttributes")),
        event_version=EVENT_VERSION,
        input=payload_in,
        output=payload_out,
    )


def parse_inference_time(text: str) -> dt.datetime | None:
    """`2024-01-19T19:27:57Z` (fractions and offsets allowed) as aware UTC; None if not a time."""
    try:
        value = dt.datetime.fromisoformat(text.strip())
        if value.tzinfo is None:
            value = value.replace(tzinfo=dt.timezone.utc)
        return value.astimezone(dt.timezone.utc)
    except (ValueError, OverflowError):
        return None


def call_format(call: CaptureCall, input_format: str = "auto") -> Format:
    """The format the call's request is replayed in; raises CallRecordsError(input_format_mismatch).

    `auto` takes the format from the observed content type. A configured format also applies to
    requests whose content type names no format we know, and JSON and JSON Lines stand in for each
    other (clients often label JSON Lines as application/json); CSV against JSON is a mismatch.
    """
    assert call.input is not None, "call_format needs a call with an input"
    detected = detect_format(call.input.content_type, call.input.encoding)
    if input_format == "auto" or input_format == detected:
        return detected
    if input_format == "binary" or detected == "binary" or {input_format, detected} <= _JSON_FAMILY:
        return input_format  # type: ignore[return-value]
    raise CallRecordsError("input_format_mismatch",
                           f"the request is {detected} ({call.input.content_type}), the run replays {input_format}")


def call_records(call: CaptureCall, input_format: str = "auto", instances_path: str | None = "instances",
                 output_records_path: str | None = "predictions", output_format: str = "auto") -> CallSplit:
    """The records of a call paired with production's answers; raises CallRecordsError.

    The request splits in its replay format (JSON documents by `instances_path`); the response in
    its own detected format unless `output_format` names one (JSON documents by
    `output_records_path`). The counts must agree.
    """
    fmt = call_format(call, input_format)
    inputs, document = _split_input(call, fmt, instances_path)
    outputs = _split_output(call.output, len(inputs), output_records_path, output_format)
    records = tuple(CallRecord(index, len(inputs), text, outputs[index] if outputs else None)
                    for index, text in enumerate(inputs))
    return CallSplit(fmt, records, document)


def _split_input(call: CaptureCall, fmt: Format, instances_path: str | None) -> tuple[list[str], str | None]:
    payload = call.input
    assert payload is not None, "call_records needs a call with an input"
    if fmt == "binary":
        return [payload.base64()], None
    try:
        text = payload.text()
    except NotTextError as exc:
        raise CallRecordsError("unsplittable_input", f"{fmt} request: {exc}") from None
    try:
        if fmt == "json":
            document = json.loads(text)
            items = request_records(document, instances_path)
            return [compact_json(item) for item in items], compact_json(document)
        inputs = split_body(text, fmt)
    except (SplitError, json.JSONDecodeError) as exc:
        raise CallRecordsError("unsplittable_input", f"{fmt} request: {_message(exc)}") from None
    if fmt == "csv":
        _check_csv_width(inputs)
    return inputs, None


def _split_output(payload: Payload | None, expected: int, records_path: str | None,
                  output_format: str) -> list[str] | None:
    if payload is None:
        return None
    fmt = detect_format(payload.content_type, payload.encoding) if output_format == "auto" else output_format
    try:
        text = payload.text()
    except NotTextError:
        text, fmt = payload.base64(), "binary"
    try:
        outputs = split_body(text, fmt, records_path)
    except SplitError as exc:
        if expected == 1:
            return [text]  # one record: keep the whole answer; join reports it as unparsable
        raise CallRecordsError("output_count_mismatch",
                               f"{expected} records sent; the {fmt} response does not split: {exc.detail}",
                               expected) from None
    if fmt == "csv" and len(outputs) == 1 and expected > 1:
        # Some CSV servers (older SageMaker XGBoost among them) answer N rows with one line of N values.
        fields = outputs[0].split(",")
        if len(fields) == expected:
            outputs = fields
    if len(outputs) != expected:
        raise CallRecordsError("output_count_mismatch",
                               f"{expected} records sent, {len(outputs)} answered ({fmt} response"
                               f"{f', records at {records_path!r}' if fmt == 'json' and records_path else ''})",
                               expected)
    return outputs


def _check_csv_width(rows: list[str]) -> None:
    widths = [_csv_width(row) for row in rows]
    if len(set(widths)) > 1:
        raise CallRecordsError("csv_width_mismatch",
                               f"rows of one request have {min(widths)} to {max(widths)} columns", len(rows))


def _csv_width(row: str) -> int:
    """Fields in an RFC 4180 row: commas outside quotes (segments between quotes alternate in and out)."""
    return 1 + sum(segment.count(",") for segment in row.split('"')[::2])


def _payloads(record: dict, capture: object) -> tuple[Payload | None, Payload | None]:
    if not isinstance(capture, dict):
        raise CaptureLineError("not_capture_record", "no captureData object")
    if capture.get("endpointInput") is None and capture.get("endpointOutput") is None:
        # Batch-transform merges carry batchTransformOutput; ground truth carries no captureData at all.
        found = ", ".join(sorted(capture)) or "nothing"
        raise CaptureLineError("not_capture_record", f"captureData has no endpointInput/endpointOutput ({found})")
    version = record.get("eventVersion")
    if version != EVENT_VERSION:
        raise CaptureLineError("unknown_event_version", f"eventVersion is {version!r}")
    return (_payload(capture.get("endpointInput"), "endpointInput"),
            _payload(capture.get("endpointOutput"), "endpointOutput"))


def _payload(value: object, key: str) -> Payload | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise CaptureLineError("not_capture_record", f"captureData.{key} is not an object")
    encoding, data = value.get("encoding"), value.get("data")
    if encoding not in ENCODINGS:
        raise CaptureLineError("unknown_encoding", f"captureData.{key}.encoding is {encoding!r}")
    if not isinstance(data, str):
        raise CaptureLineError("not_capture_record", f"captureData.{key}.data is not a string")
    if encoding == "BASE64":
        try:
            base64.b64decode(data, validate=True)
        except binascii.Error as exc:
            raise CaptureLineError("invalid_base64", f"captureData.{key}.data: {exc}") from None
    content_type = value.get("observedContentType")
    return Payload(content_type if isinstance(content_type, str) else None, encoding, data)


def _as_text(value: object) -> str | None:
    if value is None:
        return None
    return value if isinstance(value, str) else compact_json(value)


def _message(exc: Exception) -> str:
    if isinstance(exc, SplitError):
        return exc.detail
    if isinstance(exc, json.JSONDecodeError):
        return f"not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
    return str(exc)
