"""steps.capture_stats: what a capture folder holds, in one pass, optionally over a process pool."""
from __future__ import annotations

import gzip

import pytest

from capture_helpers import at, capture_line, capture_path, write_capture_tree
from steps import capture_stats

NPY = b"\x93NUMPY\x01\x00v\x00\xff\xfe"


@pytest.fixture
def capture_root(tmp_path):
    write_capture_tree(tmp_path, {
        capture_path("churn", "AllTraffic", at(10, 5)): [
            capture_line("1,2\n3,4", "0.1\n0.2", event_id="a", inference_time=at(10, 5)),
            capture_line("1,2", '{"predictions": [0.3]}', event_id="b", inference_time=at(10, 50),
                         output_type="application/json"),
            capture_line("1,2\n3,4", "0.5", event_id="c", inference_time=at(11, 1)),  # spills into 11:00
            "{cut",
        ],
        capture_path("churn", "Shadow-01", at(10, 7)): [
            capture_line(NPY, NPY, event_id="d", input_type="application/x-npy", inference_time=at(10, 7)),
        ],
        capture_path("fraud", "AllTraffic", at(12, 0)): [
            capture_line('{"instances": [1, 2, 3]}', '{"predictions": [1, 0, 1]}', event_id="e",
                         input_type="application/json", inference_time=at(12, 0)),
        ],
        capture_path("fraud", "AllTraffic", at(12, 0), salt="gz"): gzip.compress(b"{}\n"),
        "fraud/README.txt": b"not capture",
    })
    return tmp_path


EVERYTHING = {
    "files": 4, "calls": 7, "records": 11, "quarantined": 4, "out_of_window": 0,
    "quarantine_reasons": {"binary_file": 1, "malformed_json": 1, "output_count_mismatch": 2},
    "encodings": {"input": {"CSV": 3, "BASE64": 1, "JSON": 1}, "output": {"CSV": 2, "JSON": 2, "BASE64": 1}},
    "content_types": {"input": {"text/csv": 3, "application/x-npy": 1, "application/json": 1},
                      "output": {"text/csv": 2, "application/json": 2, "application/x-npy": 1}},
    "time_range": {"first": "2024-01-19T10:05:00Z", "last": "2024-01-19T12:00:00Z"},
    "endpoints": {"churn": 2, "fraud": 2},
    "variants": {"churn/AllTraffic": 1, "churn/Shadow-01": 1, "fraud/AllTraffic": 2},
}


@pytest.mark.parametrize("filters, expected", [
    pytest.param({}, EVERYTHING, id="everything"),
    pytest.param({"endpoint": "churn", "variant": "AllTraffic"},
                 {"files": 1, "calls": 4, "records": 6, "quarantined": 3, "out_of_window": 0,
                  "variants": {"churn/AllTraffic": 1}}, id="one-variant"),
    pytest.param({"window_start": at(10), "window_end": at(11)},
                 {"files": 2, "calls": 4, "records": 5, "quarantined": 1, "out_of_window": 1,
                  "time_range": {"first": "2024-01-19T10:05:00Z", "last": "2024-01-19T10:50:00Z"}}, id="window"),
    pytest.param({"window_start": at(11), "window_end": at(12)},
                 {"files": 2, "calls": 1, "records": 2, "quarantined": 2, "out_of_window": 4,
                  "quarantine_reasons": {"output_count_mismatch": 2}}, id="spill-only"),
])
def test_collect(capture_root, filters, expected):
    stats = capture_stats.collect(capture_root, **filters)
    assert {key: stats[key] for key in expected} == expected


def test_misfits_are_listed(capture_root):
    assert capture_stats.collect(capture_root)["misfits"] == [
        {"path": "fraud/README.txt", "problem": "a file where a variant folder belongs; "
                                                "expected <endpoint>/<variant>/yyyy/mm/dd/hh/<file>"}]


def test_process_pool_gives_the_same_answer(tmp_path, monkeypatch):
    write_capture_tree(tmp_path, {
        capture_path("ep", "AllTraffic", at(hour, minute)): [
            capture_line("1,2\n3,4", "0.1\n0.2", event_id=f"e{hour}-{minute}-{i}", inference_time=at(hour, minute))
            for i in range(20)]
        for hour in range(10, 14) for minute in (0, 30)})
    monkeypatch.setattr(capture_stats, "_POOL_MIN_BYTES", 0)
    pooled = capture_stats.collect(tmp_path, processes=2)
    assert pooled == capture_stats.collect(tmp_path, processes=1)
    assert (pooled["files"], pooled["calls"], pooled["records"]) == (8, 160, 320)


def test_render_text_names_the_totals_and_reasons(capture_root):
    text = capture_stats.render_text(capture_stats.collect(capture_root))
    for expected in ("files: 4", "calls: 7", "records: 11", "quarantined: 4", "output_count_mismatch  2",
                     "input encodings: CSV 3", "fraud/README.txt"):
        assert expected in text
