"""Write endpoint data capture and Model Monitor ground truth the way SageMaker does.

Format as observed in real capture (see /work/shared/reference/sagemaker-formats.md Part 1, 2026-11):
objects `<dest>/<endpoint>/<variant>/yyyy/mm/dd/hh/<MM>-<SS>-<mmm>-<uuid>.jsonl` in UTC, named after
the first record's time; one compact JSON line per HTTP call with keys captureData, eventMetadata,
eventVersion; the body verbatim as text when its media type is listed in CsvContentTypes or
JsonContentTypes, else base64; inferenceId only when the caller sent one; inferenceTime to the second.
"""
from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import json
import logging
import random
import uuid
from pathlib import Path
from typing import Literal

log = logging.getLogger(__name__)

Encoding = Literal["CSV", "JSON", "BASE64"]


@dataclasses.dataclass(frozen=True)
class DataCaptureSettings:
    """The parts of SageMaker's DataCaptureConfig that shape what lands in the capture folder."""

    destination: Path
    endpoint: str
    variant: str = "AllTraffic"
    sampling_percentage: int = 100
    """Share of calls captured, 0-100, like InitialSamplingPercentage."""
    csv_content_types: tuple[str, ...] = ("text/csv",)
    json_content_types: tuple[str, ...] = ("application/json",)
    rotation_seconds: float = 60.0
    """A new object starts once a call is this much later than the current object's first call."""

    @classmethod
    def from_api(cls, data_capture_config: dict, endpoint: str, variant: str = "AllTraffic") -> DataCaptureSettings:
        """Settings from a CreateEndpointConfig DataCaptureConfig mapping, DestinationS3Uri being a local folder.

        As in the API (not the Python SDK), no CaptureContentTypeHeader means every payload is base64.
        """
        header = data_capture_config.get("CaptureContentTypeHeader") or {}
        return cls(destination=Path(data_capture_config["DestinationS3Uri"]), endpoint=endpoint, variant=variant,
                   sampling_percentage=int(data_capture_config["InitialSamplingPercentage"]),
                   csv_content_types=tuple(header.get("CsvContentTypes", ())),
                   json_content_types=tuple(header.get("JsonContentTypes", ())))

    def __post_init__(self):
        if not 0 <= self.sampling_percentage <= 100:
            raise ValueError(f"sampling_percentage must be within 0-100, got {self.sampling_percentage}")
        if self.rotation_seconds <= 0:
            raise ValueError(f"rotation_seconds must be positive, got {self.rotation_seconds}")


@dataclasses.dataclass(frozen=True)
class CapturedCall:
    """Where one captured call landed and the ids ground truth must use."""

    event_id: str
    inference_id: str | None
    inference_time: dt.datetime
    path: Path

    @property
    def ground_truth_id(self) -> str:
        """Model Monitor joins ground truth on the caller's InferenceId when there was one, else the eventId."""
        return self.inference_id if self.inference_id is not None else self.event_id


def capture_encoding(content_type: str | None, csv_types: tuple[str, ...], json_types: tuple[str, ...]) -> Encoding:
    """CSV or JSON when the media type (parameters ignored, as observed) is listed, else BASE64."""
    kind = content_type.split(";", 1)[0].strip() if content_type else None
    if kind in csv_types:
        return "CSV"
    if kind in json_types:
        return "JSON"
    return "BASE64"


def capture_payload(body: bytes, content_type: str | None, mode: Literal["INPUT", "OUTPUT"],
                    encoding: Encoding) -> dict:
    """One endpointInput/endpointOutput object, keys in the order the service writes them."""
    data = base64.b64encode(body).decode("ascii") if encoding == "BASE64" else body.decode("utf-8")
    return {"observedContentType": content_type, "mode": mode, "data": data, "encoding": encoding}


def random_uuid4(rng: random.Random) -> str:
    """A version-4 UUID drawn from rng, so a seeded world gets the same ids every run."""
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def utc_second(moment: dt.datetime) -> str:
    """`2024-01-19T19:27:57Z`: the inferenceTime format (UTC, whole seconds)."""
    return moment.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


class CaptureWriter:
    """One variant's capture stream: samples calls, encodes them and rotates objects by time.

    Use as a context manager; calls must arrive in time order, as one instance sees them.
    """

    def __init__(self, settings: DataCaptureSettings, rng: random.Random | None = None):
        self.settings = settings
        self._rng = rng or random.Random()
        self._lines: list[str] = []
        self._path: Path | None = None
        self._opened_at: dt.datetime | None = None
        self._last_time: dt.datetime | None = None
        self.objects: list[Path] = []

    def __enter__(self) -> CaptureWriter:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def capture(self, request: bytes, request_content_type: str | None, response: bytes,
                response_content_type: str | None, inference_time: dt.datetime,
                inference_id: str | None = None, custom_attributes: str | None = None) -> CapturedCall | None:
        """Record one call; None when sampling skipped it. custom_attributes: the caller's CustomAttributes header."""
        inference_time = inference_time.astimezone(dt.timezone.utc)
        if self._last_time is not None and inference_time < self._last_time:
            raise ValueError(f"calls must arrive in time order: {inference_time} is before {self._last_time}")
        self._last_time = inference_time
        if self._rng.random() * 100 >= self.settings.sampling_percentage:
            return None
        event_id = random_uuid4(self._rng)
        line = json.dumps(self._record(request, request_content_type, response, response_content_type,
                                       inference_time, event_id, inference_id, custom_attributes),
                          separators=(",", ":"), ensure_ascii=False)
        path = self._object_for(inference_time)
        self._lines.append(line)
        return CapturedCall(event_id, inference_id, inference_time, path)

    def close(self) -> None:
        """Deliver the open object, as the service does when it rotates."""
        if self._path is not None and self._lines:
            self._path.parent.mkdir(parents=True, exist_ok=True)
            self._path.write_text("".join(line + "\n" for line in self._lines), encoding="utf-8")
            self.objects.append(self._path)
            log.debug("capture object %s: %d calls", self._path, len(self._lines))
        self._lines, self._path, self._opened_at = [], None, None

    def _record(self, request, request_type, response, response_type, inference_time, event_id, inference_id,
                custom_attributes) -> dict:
        metadata = {"eventId": event_id}
        if inference_id is not None:
            metadata["inferenceId"] = inference_id
        metadata["inferenceTime"] = utc_second(inference_time)
        if custom_attributes is not None:
            # Assumption (format notes §1: shape unconfirmed): the header's text, as the capture parser reads it.
            metadata["customAttributes"] = custom_attributes
        return {
            "captureData": {
                "endpointInput": capture_payload(request, request_type, "INPUT", self._encoding(request, request_type)),
                "endpointOutput": capture_payload(response, response_type, "OUTPUT",
                                                  self._encoding(response, response_type)),
            },
            "eventMetadata": metadata,
            "eventVersion": "0",
        }

    def _encoding(self, body: bytes, content_type: str | None) -> Encoding:
        encoding = capture_encoding(content_type, self.settings.csv_content_types, self.settings.json_content_types)
        if encoding != "BASE64":
            try:
                body.decode("utf-8")
            except UnicodeDecodeError:
                # Assumption, not observed: bytes that are not text cannot be stored verbatim in a string.
                return "BASE64"
        return encoding

    def _object_for(self, inference_time: dt.datetime) -> Path:
        # Rotate on age, and on the hour so every object sits in the folder of the hour its calls happened in.
        opened = self._opened_at
        if opened is None or _hour(inference_time) != _hour(opened) \
                or (inference_time - opened).total_seconds() >= self.settings.rotation_seconds:
            self.close()
            self._opened_at = inference_time
            self._path = self._object_path(inference_time)
        return self._path

    def _object_path(self, first_call: dt.datetime) -> Path:
        s = self.settings
        name = f"{first_call:%M-%S}-{first_call.microsecond // 1000:03d}-{random_uuid4(self._rng)}.jsonl"
        return s.destination / s.endpoint / s.variant / f"{first_call:%Y/%m/%d/%H}" / name


def _hour(moment: dt.datetime) -> dt.datetime:
    return moment.replace(minute=0, second=0, microsecond=0)


@dataclasses.dataclass(frozen=True)
class GroundTruthLabel:
    """The label(s) of one call, collected at a known time, in Model Monitor's encoding."""

    event_id: str
    """The capture's inferenceId if it had one, else its eventId."""
    data: str
    encoding: Literal["CSV", "JSON"]
    collected_at: dt.datetime


def ground_truth_line(label: GroundTruthLabel) -> str:
    """One ground-truth record: groundTruthData, eventMetadata, eventVersion."""
    record = {"groundTruthData": {"data": label.data, "encoding": label.encoding},
              "eventMetadata": {"eventId": label.event_id}, "eventVersion": "0"}
    return json.dumps(record, separators=(",", ":"), ensure_ascii=False)


def write_ground_truth(root: Path, labels: list[GroundTruthLabel], batch_minutes: int = 5) -> list[Path]:
    """Files `<root>/yyyy/mm/dd/hh/<MMSS>.jsonl`, one per upload batch, foldered by collection time."""
    batches: dict[dt.datetime, list[GroundTruthLabel]] = {}
    for label in sorted(labels, key=lambda item: item.collected_at):
        at = label.collected_at.astimezone(dt.timezone.utc)
        batch = at.replace(minute=at.minute - at.minute % batch_minutes, second=0, microsecond=0)
        batches.setdefault(batch, []).append(label)
    paths = []
    for batch, members in batches.items():
        path = root / f"{batch:%Y/%m/%d/%H}" / f"{batch:%M%S}.jsonl"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(ground_truth_line(label) + "\n" for label in members), encoding="utf-8")
        paths.append(path)
    return paths
