"""steps.prepare: a small capture tree -> replay inputs, records, quarantine and the replay plan."""
from __future__ import annotations

import gzip
import json

import pyarrow.parquet as pq
import pytest

from capture_helpers import at, capture_line, capture_path, write_capture_tree
from steps import prepare
from steps.config import config_from_mapping

NPY = b"\x93NUMPY\x01\x00v\x00\xff\xfe"
EP, VAR = "churn", "AllTraffic"
MAIN = capture_path(EP, VAR, at(10, 0, 1))
SPILL = capture_path(EP, VAR, at(9, 59))
GZIP = capture_path(EP, VAR, at(10, 30), salt="gz")


def _call(event_id, request, response, when=at(10, 5), **fields):
    return capture_line(request, response, event_id=event_id, inference_time=when, **fields)


MAIN_LINES = [
    _call("e-csv", "1,2\n3,4\n", "0.1\n0.2\n", inference_id="inf-1", custom_attributes="trace=1"),
    _call("e-jl", '{"f": 1}\n{"f": 2}', '{"s": 1}\n{"s": 2}\n', input_type="application/jsonlines",
          input_encoding="JSON", output_encoding="JSON"),
    _call("e-json", '{"instances": [{"f": 1}, {"f": 2}]}', '{"predictions": [0.1, 0.2]}',
          input_type="application/json"),
    _call("e-bin", NPY, NPY, input_type="application/x-npy"),
    "{not json",
    _call("e-short", "5,6\n7,8", "0.5"),
    _call("e-late", "9,9", "0.9", when=at(11, 30)),  # after the window
    _call("e-enc", "1", "2", output_encoding="TEXT"),
]
SPILL_LINES = [
    capture_line("0,0", "0.0", event_id="e-early", inference_time=at(9, 59)),
    capture_line("1,1", "0.1", event_id="e-spill", inference_time=at(10, 1)),
]


@pytest.fixture
def prepared(tmp_path):
    write_capture_tree(tmp_path / "capture", {MAIN: MAIN_LINES, SPILL: SPILL_LINES,
                                              GZIP: gzip.compress(MAIN_LINES[0].encode())})
    config = config_from_mapping({"capture": {"root": str(tmp_path / "capture"),
                                              "window_start": at(10), "window_end": at(11)}})
    run_dir = tmp_path / "run"
    return prepare.run(config, run_dir), run_dir / "prepare"


def _table(folder):
    return pq.read_table(sorted(folder.glob("*.parquet"))).to_pylist()


def test_replay_inputs_are_written_per_capture_file_and_group(prepared):
    _, out = prepared
    inputs = out / "replay-input"
    assert (inputs / "csv" / f"{MAIN}.csv").read_text() == "e-csv:0,1,2\ne-csv:1,3,4\n"
    assert (inputs / "csv" / f"{SPILL}.csv").read_text() == "e-spill:0,1,1\n"
    assert (inputs / "jsonlines" / f"{MAIN}.jsonl").read_text() == '{"f": 1}\n{"f": 2}\n'
    assert (inputs / "json" / f"{MAIN}.json").read_text() == '{"instances":[{"f":1},{"f":2}]}\n'
    assert (inputs / "binary" / f"{MAIN}.d" / "4.bin").read_bytes() == NPY
    assert sorted(p.relative_to(inputs).parts[0] for p in inputs.rglob("*") if p.is_file()) == [
        "binary", "csv", "csv", "json", "jsonlines"]


def test_records_follow_the_contract(prepared):
    _, out = prepared
    assert all(pq.read_schema(part) == prepare.RECORDS_SCHEMA for part in (out / "records").glob("*.parquet"))
    rows = {row["record_id"]: row for row in _table(out / "records")}
    assert sorted(rows) == ["e-bin:0", "e-csv:0", "e-csv:1", "e-jl:0", "e-jl:1", "e-json:0", "e-json:1", "e-spill:0"]
    assert {k: rows["e-csv:1"][k] for k in ("event_id", "record_index", "record_count", "inference_id",
                                             "inference_time", "custom_attributes", "endpoint", "variant",
                                             "capture_file", "capture_line", "replay_file", "replay_line",
                                             "replay_index", "input_encoding", "input_text", "output_text")} == {
        "event_id": "e-csv", "record_index": 1, "record_count": 2, "inference_id": "inf-1",
        "inference_time": at(10, 5), "custom_attributes": "trace=1", "endpoint": EP, "variant": VAR,
        "capture_file": MAIN, "capture_line": 1, "replay_file": f"csv/{MAIN}.csv", "replay_line": 2,
        "replay_index": 0, "input_encoding": "CSV", "input_text": "3,4", "output_text": "0.2"}


@pytest.mark.parametrize("record_id, replay_file, replay_line, replay_index, input_text, output_text", [
    pytest.param("e-jl:1", f"jsonlines/{MAIN}.jsonl", 2, 0, '{"f": 2}', '{"s": 2}', id="jsonlines"),
    pytest.param("e-json:1", f"json/{MAIN}.json", 1, 1, '{"f":2}', "0.2", id="json"),
    pytest.param("e-bin:0", f"binary/{MAIN}.d/4.bin", 1, 0, "k05VTVBZAQB2AP/+", "k05VTVBZAQB2AP/+", id="binary"),
    pytest.param("e-spill:0", f"csv/{SPILL}.csv", 1, 0, "1,1", "0.1", id="csv-from-spill-folder"),
])
def test_records_point_at_their_replay_unit(prepared, record_id, replay_file, replay_line, replay_index,
                                            input_text, output_text):
    _, out = prepared
    row = next(r for r in _table(out / "records") if r["record_id"] == record_id)
    assert (row["replay_file"], row["replay_line"], row["replay_index"], row["input_text"], row["output_text"]) == (
        replay_file, replay_line, replay_index, input_text, output_text)


def test_quarantine_follows_the_contract(prepared):
    _, out = prepared
    assert all(pq.read_schema(part) == prepare.QUARANTINE_SCHEMA for part in (out / "quarantine").glob("*.parquet"))
    rows = sorted((r["record_id"], r["event_id"], r["capture_file"], r["capture_line"], r["stage"], r["reason"])
                  for r in _table(out / "quarantine"))
    assert rows == sorted([
        (f"{MAIN}#5", None, MAIN, 5, "capture", "malformed_json"),
        ("e-short:0", "e-short", MAIN, 6, "prepare", "output_count_mismatch"),
        ("e-short:1", "e-short", MAIN, 6, "prepare", "output_count_mismatch"),
        (f"{GZIP}#1", None, GZIP, 1, "capture", "binary_file"),
        (f"{MAIN}#8", "e-enc", MAIN, 8, "capture", "unknown_encoding"),
    ])
    assert all(r["detail"] for r in _table(out / "quarantine"))


def test_plan_and_accounting(prepared):
    result, out = prepared
    plan = json.loads((out / "replay-plan.json").read_text())
    assert {group: (knobs["files"], knobs["records"], knobs["split_type"], knobs["batch_strategy"])
            for group, knobs in plan["groups"].items()} == {
        "csv": (2, 3, "Line", "MultiRecord"), "jsonlines": (1, 2, "Line", "MultiRecord"),
        "json": (1, 2, "Line", "SingleRecord"), "binary": (1, 1, "None", "SingleRecord")}
    assert plan["groups"]["csv"]["data_processing"] == {"InputFilter": "$[1:]", "JoinSource": "Input",
                                                        "OutputFilter": "$"}
    assert plan["groups"]["binary"]["content_type"] == "application/x-npy"
    assert result.groups == plan["groups"]
    assert (result.files, result.calls, result.out_of_window) == (3, 9, 2)
    assert result.quarantine_reasons == {"malformed_json": 1, "output_count_mismatch": 2, "binary_file": 1,
                                         "unknown_encoding": 1}
    prepared_rows, quarantined_rows = len(_table(out / "records")), len(_table(out / "quarantine"))
    assert (result.prepared, result.quarantined) == (prepared_rows, quarantined_rows) == (8, 5)
    assert result.records == result.prepared + result.quarantined == 13
    json.dumps(result.to_json())  # the runner stores it in run.json


def test_rerun_rewrites_the_same_files(prepared, tmp_path):
    result, out = prepared
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file() and p.suffix != ".parquet"}
    config = config_from_mapping({"capture": {"root": str(tmp_path / "capture"),
                                              "window_start": at(10), "window_end": at(11)}})
    assert prepare.run(config, tmp_path / "run") == result
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file() and p.suffix != ".parquet"} == before


@pytest.mark.parametrize("request_body, input_type, quarantined", [
    pytest.param("1," + "x" * 1_100_000, "text/csv", ["big:0"], id="csv-row"),
    pytest.param("1,1\n1," + "x" * 1_100_000, "text/csv", ["big:1"], id="only-the-large-csv-row"),
    pytest.param('{"instances": [1, "' + "x" * 1_100_000 + '"]}', "application/json", ["big:0", "big:1"],
                 id="json-document"),
])
def test_records_over_max_payload_are_quarantined(tmp_path, request_body, input_type, quarantined):
    answer = "0.1\n0.2" if request_body.count("\n") else ('{"predictions": [1, 2]}' if "json" in input_type else "0.1")
    write_capture_tree(tmp_path / "capture", {MAIN: [_call("big", request_body, answer, input_type=input_type)]})
    config = config_from_mapping({"capture": {"root": str(tmp_path / "capture")}, "replay": {"max_payload_mb": 1}})
    result = prepare.run(config, tmp_path / "run")
    rows = _table(tmp_path / "run" / "prepare" / "quarantine")
    assert sorted(r["record_id"] for r in rows if r["reason"] == "record_too_large") == quarantined
    assert result.records == result.prepared + result.quarantined


def test_empty_capture_root_writes_empty_parts_and_plan(tmp_path):
    (tmp_path / "capture").mkdir()
    result = prepare.run(config_from_mapping({"capture": {"root": str(tmp_path / "capture")}}), tmp_path / "run")
    out = tmp_path / "run" / "prepare"
    assert (result.files, result.records, json.loads((out / "replay-plan.json").read_text())) == (0, 0, {"groups": {}})
    assert pq.read_schema(out / "records" / "00000.parquet") == prepare.RECORDS_SCHEMA
