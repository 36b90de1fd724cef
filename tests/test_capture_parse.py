"""analysis.capture: capture lines -> calls or error codes, calls -> records."""
from __future__ import annotations

import base64
import datetime as dt
import json

import pytest

from analysis.capture import (CallRecordsError, CaptureLineError, NotTextError, Payload, call_records,
                              parse_capture_line)
from analysis.quarantine import REASONS
from capture_helpers import capture_line, capture_record

NPY = b"\x93NUMPY\x01\x00v\x00\xff\xfe"
UTC = dt.timezone.utc


def _line(*args, **kwargs) -> bytes:
    return (capture_line(*args, **kwargs) + "\n").encode()


def _raw(record: dict) -> bytes:
    return json.dumps(record).encode()


# ---------------------------------------------------------------- lines -> calls

@pytest.mark.parametrize("line, expected", [
    pytest.param(_line("1,2", "0.5", input_type="text/csv"),
                 {"input": Payload("text/csv", "CSV", "1,2"), "output": Payload("text/csv", "CSV", "0.5")}, id="csv"),
    pytest.param(_line('{"instances": [1]}', '{"predictions": [2]}', input_type="application/json"),
                 {"input": Payload("application/json", "JSON", '{"instances": [1]}')}, id="json"),
    pytest.param(_line(NPY, NPY, input_type="application/x-npy"),
                 {"input": Payload("application/x-npy", "BASE64", base64.b64encode(NPY).decode())}, id="base64"),
    pytest.param(_line("1,2", '{"score": 1}', input_type="text/csv", output_type="application/json"),
                 {"output": Payload("application/json", "JSON", '{"score": 1}')}, id="mixed-csv-json"),
    pytest.param(_line("1,2", "0.5", output_type="text/csv; charset=utf-8"),
                 {"output": Payload("text/csv; charset=utf-8", "CSV", "0.5")}, id="content-type-params-kept"),
    pytest.param(_line("1", "2", input_type=None), {"input": Payload(None, "BASE64", "MQ==")}, id="no-content-type"),
    pytest.param(_line("1", "2", metadata_first=True, event_id="e-first"), {"event_id": "e-first"}, id="metadata-first"),
    pytest.param(_line("1", "2", inference_id="449"), {"inference_id": "449"}, id="inference-id"),
    pytest.param(_line("1", "2"), {"inference_id": None, "custom_attributes": None}, id="no-optional-ids"),
    pytest.param(_line("1", "2", custom_attributes="trace=7"), {"custom_attributes": "trace=7"}, id="attrs-string"),
    pytest.param(_line("1", "2", custom_attributes=["a", "b"]), {"custom_attributes": '["a","b"]'}, id="attrs-json"),
    pytest.param(_line("1", "2", inference_time="2024-01-19T19:27:57Z"),
                 {"inference_time": dt.datetime(2024, 1, 19, 19, 27, 57, tzinfo=UTC)}, id="time-z"),
    pytest.param(_line("1", "2", inference_time="2024-01-19T21:27:57.250+02:00"),
                 {"inference_time": dt.datetime(2024, 1, 19, 19, 27, 57, 250000, tzinfo=UTC)}, id="time-offset"),
    pytest.param(_line("1", "2", inference_time="{%s}"),
                 {"inference_time": None, "inference_time_raw": "{%s}"}, id="time-placeholder"),
    pytest.param(_line("1", "2", inference_time=None), {"inference_time": None, "inference_time_raw": None},
                 id="time-absent"),
    pytest.param(_line("1", "2", extra={"groundTruthData": {"data": "1", "encoding": "CSV"}}),
                 {"event_version": "0"}, id="merged-extra-key"),
    pytest.param(capture_line("1", "2").encode() + b"\r\n", {"input": Payload("text/csv", "CSV", "1")}, id="crlf"),
])
def test_line_parses_to_call(line, expected):
    call = parse_capture_line(line)
    assert {key: getattr(call, key) for key in expected} == expected


@pytest.mark.parametrize("line, code", [
    pytest.param(b'{"captureData": ', "malformed_json", id="cut-json"),
    pytest.param(b"\xff\xfe{}", "not_utf8", id="latin1"),
    pytest.param(b"[1, 2]", "not_capture_record", id="array"),
    pytest.param(_raw({"groundTruthData": {"data": "1", "encoding": "CSV"}, "eventMetadata": {"eventId": "e"},
                       "eventVersion": "0"}), "not_capture_record", id="ground-truth"),
    pytest.param(_raw({"captureData": {"batchTransformOutput": {"data": "1", "encoding": "CSV"}},
                       "eventMetadata": {"eventId": "e"}, "eventVersion": "0"}), "not_capture_record", id="batch-merge"),
    pytest.param(_raw(capture_record("1", "2") | {"eventMetadata": {"inferenceTime": "2024-01-19T10:00:00Z"}}),
                 "not_capture_record", id="no-event-id"),
    pytest.param(_raw(capture_record("1", "2", event_version="1")), "unknown_event_version", id="version-1"),
    pytest.param(_raw(capture_record("1", "2", event_version=None)), "unknown_event_version", id="version-null"),
    pytest.param(_line("1", "2", input_encoding="TEXT"), "unknown_encoding", id="encoding-text"),
    pytest.param(_line("1", "2", output_encoding="base64"), "unknown_encoding", id="encoding-lower-case"),
    pytest.param(_raw(capture_record("1", "2") | {"captureData": {
        "endpointInput": {"observedContentType": "x/y", "mode": "INPUT", "data": "!!not base64", "encoding": "BASE64"},
        "endpointOutput": {"observedContentType": "text/csv", "mode": "OUTPUT", "data": "1", "encoding": "CSV"}}}),
        "invalid_base64", id="bad-base64"),
    pytest.param(_line(None, "2"), "missing_input", id="output-only"),
    pytest.param(_line("1", None), "missing_output", id="input-only"),
])
def test_line_error_codes(line, code):
    assert code in REASONS
    with pytest.raises(CaptureLineError) as caught:
        parse_capture_line(line)
    assert caught.value.code == code and caught.value.detail


@pytest.mark.parametrize("line, event_id, inference_time", [
    pytest.param(b"{cut", None, None, id="nothing-readable"),
    pytest.param(_line("1", "2", event_id="e9", inference_time="2024-01-19T10:00:00Z", output_encoding="X"),
                 "e9", dt.datetime(2024, 1, 19, 10, tzinfo=UTC), id="ids-kept-past-metadata"),
    pytest.param(_line("1", None, event_id="e9", inference_time="{%s}"), "e9", None, id="missing-output"),
])
def test_line_errors_keep_what_was_readable(line, event_id, inference_time):
    with pytest.raises(CaptureLineError) as caught:
        parse_capture_line(line)
    assert (caught.value.event_id, caught.value.inference_time) == (event_id, inference_time)


def test_missing_output_is_allowed_when_not_required():
    call = parse_capture_line(_line("1,2", None), require_output=False)
    assert call.output is None and call_records(call).records[0].output_text is None


@pytest.mark.parametrize("data, encoding, body, text", [
    ("1,2", "CSV", b"1,2", "1,2"),
    ("{\"a\": \"\u00e9\"}", "JSON", "{\"a\": \"\u00e9\"}".encode(), "{\"a\": \"\u00e9\"}"),
    (base64.b64encode("h\u00e9".encode()).decode(), "BASE64", "h\u00e9".encode(), "h\u00e9"),
])
def test_payload_body_and_text(data, encoding, body, text):
    payload = Payload("x/y", encoding, data)
    assert (payload.body(), payload.text()) == (body, text)


def test_base64_binary_payload_is_not_text():
    payload = Payload("application/x-npy", "BASE64", base64.b64encode(NPY).decode())
    assert payload.body() == NPY
    with pytest.raises(NotTextError):
        payload.text()


# ---------------------------------------------------------------- calls -> records

def _records(line: bytes, input_format="auto", instances_path="instances", output_records_path="predictions",
             output_format="auto"):
    split = call_records(parse_capture_line(line), input_format, instances_path, output_records_path, output_format)
    return split.input_format, [(r.input_text, r.output_text) for r in split.records]


@pytest.mark.parametrize("line, kwargs, expected", [
    pytest.param(_line("1,2,3", "0.5"), {}, ("csv", [("1,2,3", "0.5")]), id="csv-one-row"),
    pytest.param(_line("1,2\n3,4\n", "0.1\n0.2\n"), {}, ("csv", [("1,2", "0.1"), ("3,4", "0.2")]), id="csv-rows"),
    pytest.param(_line("1,2\r\n3,4", "0.1\r\n0.2"), {}, ("csv", [("1,2", "0.1"), ("3,4", "0.2")]), id="csv-crlf"),
    pytest.param(_line('"a,b",1\n"c""",2', "0.1\n0.2"), {}, ("csv", [('"a,b",1', "0.1"), ('"c""",2', "0.2")]),
                 id="csv-quoted-commas"),
    pytest.param(_line("1,2\n3,4\n5,6", "0.1,0.2,0.3"), {}, ("csv", [("1,2", "0.1"), ("3,4", "0.2"), ("5,6", "0.3")]),
                 id="csv-rows-answered-on-one-line"),
    pytest.param(_line("1,2\n3,4", '{"predictions": [{"score": 0.1}, {"score": 0.2}]}', output_type="application/json"),
                 {}, ("csv", [("1,2", '{"score":0.1}'), ("3,4", '{"score":0.2}')]), id="csv-in-json-out"),
    pytest.param(_line('{"f":[1]}\n{"f":[2]}', '{"s":1}\n{"s":2}\n', input_type="application/jsonlines",
                       input_encoding="JSON", output_encoding="JSON"),
                 {}, ("jsonlines", [('{"f":[1]}', '{"s":1}'), ('{"f":[2]}', '{"s":2}')]), id="jsonlines"),
    pytest.param(_line('{"instances": [{"f": 1}, {"f": 2}]}', '{"predictions": [0.1, 0.2]}',
                       input_type="application/json"),
                 {}, ("json", [('{"f":1}', "0.1"), ('{"f":2}', "0.2")]), id="json-instances"),
    pytest.param(_line('{"rows": [[1], [2]]}', '{"out": [0.1, 0.2]}', input_type="application/json"),
                 {"instances_path": "rows", "output_records_path": "out"},
                 ("json", [("[1]", "0.1"), ("[2]", "0.2")]), id="json-configured-paths"),
    pytest.param(_line('{"inputs": {"rows": [[1], [2]]}}', '{"out": [0.1, 0.2]}', input_type="application/json"),
                 {"instances_path": "inputs.rows", "output_records_path": "out"},
                 ("json", [("[1]", "0.1"), ("[2]", "0.2")]), id="json-nested-jmespath"),
    pytest.param(_line('[[1], [2]]', '[0.1, 0.2]', input_type="application/json"), {},
                 ("json", [("[1]", "0.1"), ("[2]", "0.2")]), id="json-bare-lists"),
    pytest.param(_line('{"x": [1, 2]}', '{"y": [3, 4]}', input_type="application/json"), {},
                 ("json", [('{"x":[1,2]}', '{"y":[3,4]}')]), id="json-columnar-is-one-record"),
    pytest.param(_line('{"x": 1}', '{"y": 2}', input_type="application/json", output_type="text/html; charset=utf-8"),
                 {}, ("json", [('{"x":1}', '{"y": 2}')]), id="json-in-base64-text-out"),
    pytest.param(_line(NPY, NPY, input_type="application/x-npy"), {},
                 ("binary", [(base64.b64encode(NPY).decode(), base64.b64encode(NPY).decode())]), id="binary"),
    pytest.param(_line('{"a":1}\n{"a":2}', '{"s":1}\n{"s":2}', input_type="application/json"),
                 {"input_format": "jsonlines", "output_format": "jsonlines"},
                 ("jsonlines", [('{"a":1}', '{"s":1}'), ('{"a":2}', '{"s":2}')]),
                 id="json-lines-labelled-json"),
    pytest.param(_line("1,2", "0.5", input_type="text/plain", input_encoding="CSV", output_type="text/csv"),
                 {"input_format": "csv"}, ("csv", [("1,2", "0.5")]), id="unknown-type-as-configured"),
    pytest.param(_line("1,2", "0.5"), {"input_format": "binary"},
                 ("binary", [(base64.b64encode(b"1,2").decode(), "0.5")]), id="anything-as-binary"),
    pytest.param(_line('{"instances": [1, 2]}', "[0.1, 0.2]", input_type="application/json", output_type="text/plain"),
                 {"output_format": "json"}, ("json", [("1", "0.1"), ("2", "0.2")]), id="configured-output-format"),
    pytest.param(_line('{"instances": [1]}', "oops", input_type="application/json", output_type="application/json"),
                 {}, ("json", [("1", "oops")]), id="one-record-unparsable-answer-kept"),
])
def test_call_records(line, kwargs, expected):
    assert _records(line, **kwargs) == expected


@pytest.mark.parametrize("line, kwargs, code, record_count", [
    pytest.param(_line("", "0.5"), {}, "unsplittable_input", 1, id="empty-csv"),
    pytest.param(_line("1,2\n\n3,4", "0.5"), {}, "unsplittable_input", 1, id="blank-row"),
    pytest.param(_line('{"instances": [1', "0.5", input_type="application/json"), {}, "unsplittable_input", 1,
                 id="cut-json"),
    pytest.param(_line(NPY, "0.5", input_type="application/jsonlines"), {}, "unsplittable_input", 1,
                 id="base64-jsonlines-not-text"),
    pytest.param(_line("1,2", "0.5"), {"input_format": "json"}, "input_format_mismatch", 1, id="csv-vs-json"),
    pytest.param(_line('{"a": 1}', "{}", input_type="application/json"), {"input_format": "csv"},
                 "input_format_mismatch", 1, id="json-vs-csv"),
    pytest.param(_line("1,2\n3,4", "0.5"), {}, "output_count_mismatch", 2, id="two-rows-one-answer"),
    pytest.param(_line('{"instances": [1, 2, 3]}', '{"predictions": [1]}', input_type="application/json"), {},
                 "output_count_mismatch", 3, id="json-three-vs-one"),
    pytest.param(_line('{"instances": [1, 2]}', '{"predictions": [1, 2]}', input_type="application/json"),
                 {"output_records_path": "scores"}, "output_count_mismatch", 2, id="wrong-output-path"),
    pytest.param(_line("1,2\n3,4", NPY, output_type="application/x-npy"), {}, "output_count_mismatch", 2,
                 id="binary-answer-to-two-rows"),
    pytest.param(_line('{"instances": [1, 2]}', "[0.1, 0.2]", input_type="application/json", output_type="text/plain"),
                 {}, "output_count_mismatch", 2, id="text-plain-answer-needs-output-format"),
    pytest.param(_line("1,2\n3,4", "0.1\n\n0.2"), {}, "output_count_mismatch", 2, id="answer-does-not-split"),
    pytest.param(_line("1,2\n3,4,5", "0.1\n0.2"), {}, "csv_width_mismatch", 2, id="csv-mixed-width"),
])
def test_call_records_errors(line, kwargs, code, record_count):
    assert code in REASONS
    with pytest.raises(CallRecordsError) as caught:
        _records(line, **kwargs)
    assert (caught.value.code, caught.value.record_count) == (code, record_count)


def test_json_request_document_is_compact_and_keeps_key_order():
    split = call_records(parse_capture_line(_line('{"z": 1, "instances": [ {"b": 1, "a": 2} ]}', '[0]',
                                                  input_type="application/json")))
    assert split.request_document == '{"z":1,"instances":[{"b":1,"a":2}]}'
    assert [r.input_text for r in split.records] == ['{"b":1,"a":2}']
