"""The capture writer writes what SageMaker writes: layout, names, rotation, records, encodings."""
from __future__ import annotations

import base64
import datetime as dt
import json
import random
import re
from pathlib import Path

import pytest

from steps.capture_writer import (CaptureWriter, DataCaptureSettings, GroundTruthLabel, capture_encoding,
                                  ground_truth_line, write_ground_truth)

SAMPLES = Path("/work/shared/reference/capture-samples")
UTC = dt.timezone.utc
T0 = dt.datetime(2024, 1, 19, 19, 27, 57, 62000, tzinfo=UTC)
UUID4 = r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}"
OBJECT_KEY = re.compile(rf"^ep/AllTraffic/(\d{{4}})/(\d{{2}})/(\d{{2}})/(\d{{2}})/"
                        rf"(\d{{2}})-(\d{{2}})-(\d{{3}})-{UUID4}\.jsonl$")
# Sample files written by the service itself (the SDK's CSV template is hand-made and ordered differently).
SERVICE_SAMPLES = ["csv-xgb-churn-capture.jsonl", "csv-inferenceid-capture.jsonl", "csv-in-json-out-issue2785.jsonl",
                   "json-in-base64-out-issue2629.jsonl", "json-instances-multirecord-capture.jsonl",
                   "jsonlines-multirecord-capture.jsonl", "sdk-tests-json-tfs-capture.jsonl"]
SDK_DEFAULT_TYPES = dict(csv_content_types=("text/csv",), json_content_types=("application/json",))


def settings(tmp_path: Path, **overrides) -> DataCaptureSettings:
    return DataCaptureSettings(destination=tmp_path, endpoint="ep", **{**SDK_DEFAULT_TYPES, **overrides})


def write_calls(tmp_path: Path, times: list[dt.datetime], **overrides) -> CaptureWriter:
    with CaptureWriter(settings(tmp_path, **overrides), random.Random(1)) as writer:
        for moment in times:
            writer.capture(b"1,2,3", "text/csv", b"0.5\n", "text/csv; charset=utf-8", moment)
    return writer


def records_in(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


@pytest.mark.parametrize("content_type, csv_types, json_types, expected", [
    ("text/csv", ("text/csv",), ("application/json",), "CSV"),
    ("text/csv; charset=utf-8", ("text/csv",), ("application/json",), "CSV"),
    ("application/json", ("text/csv",), ("application/json",), "JSON"),
    ("application/jsonlines", ("text/csv",), ("application/json", "application/jsonlines"), "JSON"),
    ("application/jsonlines", ("text/csv",), ("application/json",), "BASE64"),
    ("text/html; charset=utf-8", ("text/csv",), ("application/json",), "BASE64"),
    ("application/x-npy", ("text/csv",), ("application/json",), "BASE64"),
    ("text/csv", (), (), "BASE64"),
    (None, ("text/csv",), ("application/json",), "BASE64"),
])
def test_encoding_follows_the_configured_content_type_lists(content_type, csv_types, json_types, expected):
    assert capture_encoding(content_type, csv_types, json_types) == expected


@pytest.mark.parametrize("request_type, request_body, response_type, response_body, inference_id", [
    ("text/csv", b"1,2,3\n4,5,6\n", "text/csv; charset=utf-8", b"0.1\n0.9\n", None),
    ("application/json", b'{"instances": [{"features": [1, 2]}]}', "application/json",
     b'{\n  "predictions": [{"score": 0.5}]\n}', "449"),
    ("application/jsonlines", b'{"features":[1]}\n{"features":[2]}', "application/jsonlines",
     b'{"score":0.1}\n{"score":0.2}\n', "shadow test, index 3"),
    ("application/json", b'{"x": [1]}', "text/html; charset=utf-8", b'{"y": [2]}', None),
    ("application/x-npy", bytes(range(256)), None, b"\x93NUMPY", None),
])
def test_a_call_is_one_line_with_the_bodies_kept_exactly(tmp_path, request_type, request_body, response_type,
                                                         response_body, inference_id):
    dcs = settings(tmp_path, json_content_types=("application/json", "application/jsonlines"))
    with CaptureWriter(dcs, random.Random(3)) as writer:
        call = writer.capture(request_body, request_type, response_body, response_type, T0, inference_id)
    text = call.path.read_text(encoding="utf-8")
    assert text.endswith("\n") and text.count("\n") == 1
    (record,) = records_in(call.path)
    assert list(record) == ["captureData", "eventMetadata", "eventVersion"]
    assert record["eventVersion"] == "0"
    for side, mode, body, content_type in (("endpointInput", "INPUT", request_body, request_type),
                                           ("endpointOutput", "OUTPUT", response_body, response_type)):
        payload = record["captureData"][side]
        assert list(payload) == ["observedContentType", "mode", "data", "encoding"]
        assert payload["mode"] == mode and payload["observedContentType"] == content_type
        encoding = capture_encoding(content_type, dcs.csv_content_types, dcs.json_content_types)
        assert payload["encoding"] == encoding
        stored = base64.b64decode(payload["data"]) if encoding == "BASE64" else payload["data"].encode("utf-8")
        assert stored == body
    expected_metadata = ["eventId", "inferenceId", "inferenceTime"] if inference_id else ["eventId", "inferenceTime"]
    assert list(record["eventMetadata"]) == expected_metadata
    assert record["eventMetadata"].get("inferenceId") == inference_id
    assert record["eventMetadata"]["eventId"] == call.event_id and re.fullmatch(UUID4, call.event_id)
    assert record["eventMetadata"]["inferenceTime"] == "2024-01-19T19:27:57Z"
    assert call.ground_truth_id == (inference_id or call.event_id)


def test_objects_sit_in_the_utc_hour_folder_named_after_their_first_call(tmp_path):
    eastern = dt.timezone(dt.timedelta(hours=-5))
    writer = write_calls(tmp_path, [T0.astimezone(eastern), T0 + dt.timedelta(seconds=20)])
    (path,) = writer.objects
    key = OBJECT_KEY.match(path.relative_to(tmp_path).as_posix())
    assert key and key.groups() == ("2024", "01", "19", "19", "27", "57", "062")
    assert [r["eventMetadata"]["inferenceTime"] for r in records_in(path)] == ["2024-01-19T19:27:57Z",
                                                                              "2024-01-19T19:28:17Z"]


@pytest.mark.parametrize("offsets_s, expected_objects", [
    ([0, 30, 59.9], [3]),
    ([0, 30, 60, 61, 125], [2, 2, 1]),
    ([0, 500, 1000], [1, 1, 1]),
    # 19:27:57 + 1925 s is 20:00:02: a new hour always starts a new object.
    ([0, 1920, 1925], [1, 1, 1]),
])
def test_objects_rotate_by_age_and_at_the_hour(tmp_path, offsets_s, expected_objects):
    writer = write_calls(tmp_path, [T0 + dt.timedelta(seconds=s) for s in offsets_s], rotation_seconds=60)
    assert [len(records_in(path)) for path in writer.objects] == expected_objects
    for path in writer.objects:
        hour_folder = "/".join(path.parent.parts[-4:])
        first, *_ = records_in(path)
        minute, second = path.name.split("-")[:2]
        assert first["eventMetadata"]["inferenceTime"][14:19] == f"{minute}:{second}"
        assert all(r["eventMetadata"]["inferenceTime"][:13].replace("-", "/").replace("T", "/") == hour_folder
                   for r in records_in(path))
    assert sorted(tmp_path.rglob("*.jsonl")) == sorted(writer.objects)


@pytest.mark.parametrize("percentage, calls, expected_low, expected_high", [
    (0, 200, 0, 0),
    (100, 200, 200, 200),
    (30, 2000, 520, 680),
])
def test_sampling_percentage_is_the_share_of_calls_captured(tmp_path, percentage, calls, expected_low, expected_high):
    writer = write_calls(tmp_path, [T0 + dt.timedelta(seconds=i) for i in range(calls)],
                         sampling_percentage=percentage)
    captured = sum(len(records_in(path)) for path in writer.objects)
    assert expected_low <= captured <= expected_high


def test_the_same_seed_writes_the_same_files(tmp_path):
    times = [T0 + dt.timedelta(seconds=7 * i) for i in range(40)]
    first, second = (write_calls(tmp_path / name, times, sampling_percentage=50) for name in ("a", "b"))
    contents = [{p.relative_to(tmp_path / name): p.read_bytes() for p in w.objects}
                for name, w in (("a", first), ("b", second))]
    assert contents[0] == contents[1] and contents[0]


def test_calls_out_of_time_order_are_refused(tmp_path):
    with CaptureWriter(settings(tmp_path)) as writer:
        writer.capture(b"1", "text/csv", b"0", "text/csv", T0)
        with pytest.raises(ValueError, match="time order"):
            writer.capture(b"1", "text/csv", b"0", "text/csv", T0 - dt.timedelta(seconds=1))


def test_settings_from_the_api_shape_default_to_base64_without_a_content_type_header(tmp_path):
    bare = DataCaptureSettings.from_api({"InitialSamplingPercentage": 20, "DestinationS3Uri": str(tmp_path)}, "ep")
    listed = DataCaptureSettings.from_api({"InitialSamplingPercentage": 100, "DestinationS3Uri": str(tmp_path),
                                           "CaptureContentTypeHeader": {"CsvContentTypes": ["text/csv"],
                                                                        "JsonContentTypes": ["application/json"]}},
                                          "ep", "Shadow-01")
    assert (bare.sampling_percentage, bare.csv_content_types, bare.json_content_types) == (20, (), ())
    assert (listed.variant, listed.csv_content_types, listed.json_content_types) == (
        "Shadow-01", ("text/csv",), ("application/json",))


@pytest.fixture
def samples() -> Path:
    if not SAMPLES.is_dir():
        pytest.skip(f"{SAMPLES} is not present")
    return SAMPLES


@pytest.mark.parametrize("sample", SERVICE_SAMPLES)
def test_recapturing_a_real_sample_reproduces_it_byte_for_byte(tmp_path, samples, sample):
    original = (samples / sample).read_text(encoding="utf-8")
    records = [json.loads(line) for line in original.splitlines()]
    dcs = settings(tmp_path, json_content_types=("application/json", "application/jsonlines"))
    with CaptureWriter(dcs, random.Random(5)) as writer:
        calls = [writer.capture(*_bodies(record), _time(record), record["eventMetadata"].get("inferenceId"))
                 for record in records]
    (path,) = writer.objects
    written = path.read_text(encoding="utf-8")
    for call, record in zip(calls, records):
        written = written.replace(call.event_id, record["eventMetadata"]["eventId"])
    assert written == original


def test_ground_truth_files_are_foldered_and_named_by_collection_batch(tmp_path):
    collected = dt.datetime(2024, 1, 19, 20, 3, 41, tzinfo=UTC)
    labels = [GroundTruthLabel("449", "1", "CSV", collected),
              GroundTruthLabel("e-2", "1\n0\n1", "CSV", collected + dt.timedelta(minutes=1)),
              GroundTruthLabel("e-3", '{"instances": [{"label": 1}, {"label": 0}]}', "JSON",
                               collected + dt.timedelta(minutes=58))]
    paths = write_ground_truth(tmp_path, labels, batch_minutes=5)
    assert [p.relative_to(tmp_path).as_posix() for p in paths] == ["2024/01/19/20/0000.jsonl",
                                                                  "2024/01/19/21/0000.jsonl"]
    text = paths[0].read_text(encoding="utf-8")
    assert text.endswith("\n")
    assert [json.loads(line)["eventMetadata"]["eventId"] for line in text.splitlines()] == ["449", "e-2"]
    assert json.loads(paths[1].read_text())["groundTruthData"] == {
        "data": '{"instances": [{"label": 1}, {"label": 0}]}', "encoding": "JSON"}


def test_a_ground_truth_line_is_shaped_like_aws_own_fixture(samples):
    template = json.loads((samples / "sdk-tests-groundtruth-csv-template.jsonl").read_text().splitlines()[0])
    line = ground_truth_line(GroundTruthLabel("449", "1", "CSV", T0))
    assert line == ('{"groundTruthData":{"data":"1","encoding":"CSV"},'
                    '"eventMetadata":{"eventId":"449"},"eventVersion":"0"}')
    ours = json.loads(line)
    assert list(ours) == list(template) and list(ours["groundTruthData"]) == list(template["groundTruthData"])


def _bodies(record: dict) -> tuple[bytes, str, bytes, str]:
    def raw(payload: dict) -> bytes:
        data = payload["data"]
        return base64.b64decode(data) if payload["encoding"] == "BASE64" else data.encode("utf-8")
    given, answered = record["captureData"]["endpointInput"], record["captureData"]["endpointOutput"]
    return raw(given), given["observedContentType"], raw(answered), answered["observedContentType"]


def _time(record: dict) -> dt.datetime:
    return dt.datetime.strptime(record["eventMetadata"]["inferenceTime"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)


def test_custom_attributes_are_kept_in_the_event_metadata_only_when_sent(tmp_path):
    with CaptureWriter(settings(tmp_path), random.Random(1)) as writer:
        writer.capture(b"1", "text/csv", b"0", "text/csv", T0, custom_attributes="channel=web")
        writer.capture(b"2", "text/csv", b"1", "text/csv", T0)
    first, second = records_in(writer.objects[0])
    assert first["eventMetadata"]["customAttributes"] == "channel=web"
    assert "customAttributes" not in second["eventMetadata"]
