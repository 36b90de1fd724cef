"""Real capture files (shared/reference/capture-samples) parse to the records visible in them.

Expected counts were read off the files by hand: one entry per line, the number of records in the
request (CSV rows, JSON Lines, `instances` elements) or the quarantine code of a line that is not
an endpoint capture record.
"""
from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from analysis.capture import CallRecordsError, CaptureLineError, call_records, parse_capture_line

SAMPLES = Path(__file__).resolve().parents[2] / "shared/reference/capture-samples"
if not SAMPLES.is_dir():
    pytest.skip(f"capture samples not found at {SAMPLES}", allow_module_level=True)


def _outcomes(name: str) -> list[int | str]:
    outcomes: list[int | str] = []
    for raw in (SAMPLES / name).read_bytes().splitlines():
        try:
            outcomes.append(len(call_records(parse_capture_line(raw)).records))
        except (CaptureLineError, CallRecordsError) as exc:
            outcomes.append(exc.code)
    return outcomes


RECORDS_PER_LINE: dict[str, list[int | str]] = {
    "csv-xgb-churn-capture.jsonl": [1, 1, 1],
    "csv-inferenceid-capture.jsonl": [1],
    "csv-in-json-out-issue2785.jsonl": [1],
    "json-in-base64-out-issue2629.jsonl": [1],  # columnar document, no `instances`: one record
    "json-instances-multirecord-capture.jsonl": [1, 2],
    "jsonlines-multirecord-capture.jsonl": [1, 2],
    "sdk-tests-json-tfs-capture.jsonl": [3, 3],
    "sdk-tests-csv-capture-template.jsonl": [1] * 44,
    "merged-endpoint-json-inferenceid.jsonl": [334],
    "merged-endpoint-jsonlines-inferenceid.jsonl": [1],
    # Not endpoint capture: batch-transform merges and ground truth.
    "merged-batch-csv.jsonl": ["not_capture_record"],
    "merged-batch-json.jsonl": ["not_capture_record"],
    "merged-batch-jsonlines.jsonl": ["not_capture_record"],
    "sdk-tests-groundtruth-csv-template.jsonl": ["not_capture_record"] * 44,
}


@pytest.mark.parametrize("name, expected", RECORDS_PER_LINE.items())
def test_sample_record_counts(name, expected):
    assert _outcomes(name) == expected


def test_every_jsonl_sample_is_in_the_table():
    assert {path.name for path in SAMPLES.glob("*.jsonl")} == set(RECORDS_PER_LINE)


@pytest.mark.parametrize("name, line, field, expected", [
    ("csv-inferenceid-capture.jsonl", 0, "inference_id", "449"),
    ("csv-inferenceid-capture.jsonl", 0, "inference_time", dt.datetime(2023, 1, 4, 12, 21, 26, tzinfo=dt.timezone.utc)),
    ("json-in-base64-out-issue2629.jsonl", 0, "inference_id", "c7f0edc0-9397-4cd3-a948-bd7b639da2f5"),
    ("sdk-tests-csv-capture-template.jsonl", 0, "event_id", "74b0dd56-e7c8-368e-94b1-14a138a96000"),
    ("sdk-tests-csv-capture-template.jsonl", 0, "inference_time_raw", "{%s}"),
    ("sdk-tests-csv-capture-template.jsonl", 0, "inference_time", None),
    ("merged-endpoint-json-inferenceid.jsonl", 0, "inference_id", "7"),
])
def test_sample_metadata(name, line, field, expected):
    call = parse_capture_line((SAMPLES / name).read_bytes().splitlines()[line])
    assert getattr(call, field) == expected


@pytest.mark.parametrize("name, line, index, input_text, output_text", [
    ("csv-inferenceid-capture.jsonl", 0, 0, "77,0,44,0,1,2,0,-1,0,57,1,0,0", "0.2509244382381439"),
    ("csv-in-json-out-issue2785.jsonl", 0, 0, "0.5629733055182888,0.3018707225866159,0.5824503894753207",
     '{"score":0.012620825320482254,"predicted_label":0}'),
    ("json-in-base64-out-issue2629.jsonl", 0, 0,
     '{"longitude":[-122.44,-116.99],"latitude":[37.8,32.8],"housing_median_age":[52.0,34.0],'
     '"total_rooms":[3161.0,3657.0],"total_bedrooms":[472.0,538.0],"population":[842.0,1513.0],'
     '"households":[410.0,562.0],"median_income":[7.9761,5.2907]}',
     '{"median_house_value": [478046.66, 206551.01]}'),
    ("json-instances-multirecord-capture.jsonl", 1, 1, '{"features":[43,2,72338,12,14,2,12,0,1,1,0,0,40,37]}',
     '{"score":0.5041388273239136,"predicted_label":1}'),
    ("jsonlines-multirecord-capture.jsonl", 1, 1, '{"features":[43,2,72338,12,14,2,12,0,1,1,0,0,40,37]}',
     '{"predicted_label":1,"score":0.504138827323913}'),
    ("sdk-tests-json-tfs-capture.jsonl", 0, 2, "5.0", "5.5"),
])
def test_sample_record_texts(name, line, index, input_text, output_text):
    record = call_records(parse_capture_line((SAMPLES / name).read_bytes().splitlines()[line])).records[index]
    assert (record.input_text, record.output_text) == (input_text, output_text)
