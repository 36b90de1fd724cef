"""Build SageMaker data-capture lines and capture folders for tests.

    line = capture_line("1,2,3", "0.7", input_type="text/csv", event_id="e1")
    write_capture_tree(tmp_path, {capture_path("ep", "AllTraffic", at(10, 5)): [line]})

Encodings follow the SDK's DataCaptureConfig defaults: text/csv is captured as CSV,
application/json as JSON, any other content type as BASE64 (sagemaker-formats.md §1.4).
"""
from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
from collections.abc import Mapping, Sequence
from pathlib import Path

_DEFAULT_ENCODINGS = {"text/csv": "CSV", "application/json": "JSON"}
_ABSENT = object()


def at(hour: int, minute: int = 0, second: int = 0, day: int = 19) -> dt.datetime:
    """A UTC time on 2024-01-<day>, the date most tests use."""
    return dt.datetime(2024, 1, day, hour, minute, second, tzinfo=dt.timezone.utc)


def iso(when: dt.datetime) -> str:
    """A time as data capture writes inferenceTime: `2024-01-19T10:05:00Z`."""
    return when.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def payload(data: str | bytes, content_type: str | None, mode: str, encoding: str | None = None) -> dict:
    """One captureData side; the encoding defaults as the SDK's capture config would choose it."""
    encoding = encoding or _DEFAULT_ENCODINGS.get((content_type or "").split(";")[0].strip(), "BASE64")
    if encoding == "BASE64":
        data = base64.b64encode(data.encode("utf-8") if isinstance(data, str) else data).decode("ascii")
    elif isinstance(data, bytes):
        data = data.decode("utf-8")
    return {"observedContentType": content_type, "mode": mode, "data": data, "encoding": encoding}


def capture_record(input_data: str | bytes | None, output_data: str | bytes | None = None, *,
                   event_id: str = "00000000-0000-4000-8000-000000000000",
                   input_type: str | None = "text/csv", output_type: str | None = None,
                   input_encoding: str | None = None, output_encoding: str | None = None,
                   inference_time: str | dt.datetime | None = "2024-01-19T10:05:00Z",
                   inference_id: str | None = None, custom_attributes: object = _ABSENT,
                   event_version: object = "0", metadata_first: bool = False, extra: Mapping | None = None) -> dict:
    """A capture record as a dict. None data leaves that side out; output_type defaults to input_type."""
    output_type = input_type if output_type is None else output_type
    capture = {}
    if input_data is not None:
        capture["endpointInput"] = payload(input_data, input_type, "INPUT", input_encoding)
    if output_data is not None:
        capture["endpointOutput"] = payload(output_data, output_type, "OUTPUT", output_encoding)
    metadata: dict = {"eventId": event_id}
    if inference_id is not None:
        metadata["inferenceId"] = inference_id
    if inference_time is not None:
        metadata["inferenceTime"] = iso(inference_time) if isinstance(inference_time, dt.datetime) else inference_time
    if custom_attributes is not _ABSENT:
        metadata["customAttributes"] = custom_attributes
    parts = [("captureData", capture), ("eventMetadata", metadata), ("eventVersion", event_version)]
    if metadata_first:
        parts = [parts[1], parts[2], parts[0]]
    return dict(parts) | dict(extra or {})


def capture_line(input_data: str | bytes | None, output_data: str | bytes | None = None, **fields) -> str:
    """One capture line (compact JSON, no newline); keyword fields as for capture_record."""
    return json.dumps(capture_record(input_data, output_data, **fields), separators=(",", ":"))


def capture_path(endpoint: str, variant: str, first_record: dt.datetime, salt: str = "") -> str:
    """The path below the capture root SageMaker gives an object whose first record is at first_record."""
    token = hashlib.sha256(f"{endpoint}/{variant}/{first_record.isoformat()}/{salt}".encode()).hexdigest()
    uuid = f"{token[:8]}-{token[8:12]}-4{token[13:16]}-8{token[17:20]}-{token[20:32]}"
    return (f"{endpoint}/{variant}/{first_record:%Y/%m/%d/%H}/"
            f"{first_record:%M-%S}-{first_record.microsecond // 1000:03d}-{uuid}.jsonl")


def write_capture_tree(root: Path, files: Mapping[str, Sequence[str] | bytes]) -> list[Path]:
    """Write files below root: a list of lines is joined with a newline after each line, bytes go verbatim."""
    written = []
    for relative, content in files.items():
        target = Path(root) / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            target.write_bytes(content)
        else:
            target.write_text("".join(f"{line}\n" for line in content), encoding="utf-8")
        written.append(target)
    return written
