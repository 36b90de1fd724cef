"""The join stage over a run folder built by hand as docs/internals.md lays it out."""
import datetime as dt
import json
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from analysis.compare import compare
from analysis.results import Accounting
from steps import join
from steps.config import config_from_mapping
from steps.prepare import QUARANTINE_SCHEMA, RECORDS_SCHEMA

CAPTURE = "ep/AllTraffic/2024/01/01/00"
A, B, C = (f"{CAPTURE}/{name}.jsonl" for name in "abc")
CSV_A, CSV_C = f"csv/{A}.csv", f"csv/{C}.csv"
JSONL_B, JSONL_C, JSON_B = f"jsonlines/{B}.jsonl", f"jsonlines/{C}.jsonl", f"json/{B}.json"
JSON_TYPE, JSONL_TYPE, CSV_TYPE = "application/json", "application/jsonlines", "text/csv"
PLAN = {"groups": {
    "csv": {"content_type": CSV_TYPE, "accept": CSV_TYPE, "split_type": "Line", "batch_strategy": "MultiRecord",
            "assemble_with": "Line", "files": 2, "records": 6,
            "data_processing": {"InputFilter": "$[1:]", "JoinSource": "Input", "OutputFilter": "$"}},
    "jsonlines": {"content_type": JSONL_TYPE, "accept": JSONL_TYPE, "split_type": "Line",
                  "batch_strategy": "MultiRecord", "assemble_with": "Line", "files": 2, "records": 3,
                  "data_processing": {"InputFilter": "$", "JoinSource": "Input", "OutputFilter": "$"}},
    "json": {"content_type": JSON_TYPE, "accept": JSON_TYPE, "split_type": "Line", "batch_strategy": "SingleRecord",
             "assemble_with": "Line", "files": 1, "records": 2,
             "data_processing": {"InputFilter": "$", "JoinSource": "Input", "OutputFilter": "$"}},
    "binary": {"content_type": "image/png", "accept": JSON_TYPE, "split_type": "None",
               "batch_strategy": "SingleRecord", "assemble_with": "None", "files": 2, "records": 2,
               "data_processing": None}}}


def record(event_id, index, capture_file, capture_line, replay_file, replay_line, input_text, output_text,
           output_type, replay_index=0, count=1, inference_id=None, input_type=None):
    return {"record_id": f"{event_id}:{index}", "event_id": event_id, "record_index": index, "record_count": count,
            "inference_id": inference_id, "inference_time": dt.datetime(2024, 1, 1, 0, 30, tzinfo=dt.timezone.utc),
            "custom_attributes": None, "endpoint": "ep", "variant": "AllTraffic", "capture_file": capture_file,
            "capture_line": capture_line, "replay_file": replay_file, "replay_line": replay_line,
            "replay_index": replay_index, "input_content_type": input_type or output_type,
            "input_encoding": "CSV" if output_type == CSV_TYPE else "JSON", "input_text": input_text,
            "output_content_type": output_type, "output_encoding": "CSV" if output_type == CSV_TYPE else "JSON",
            "output_text": output_text}


PART_A = [
    record("e1", 0, A, 1, CSV_A, 1, "1,2", "0.9", CSV_TYPE, count=2, inference_id="inf-1"),
    record("e1", 1, A, 1, CSV_A, 2, "3,4", "0.2", CSV_TYPE, count=2, inference_id="inf-1"),
    record("e2", 0, A, 2, CSV_A, 3, "5,6", "0.7", CSV_TYPE),
    record("e3", 0, A, 3, CSV_A, 4, "7,8", "", CSV_TYPE),  # production answered nothing parsable
    record("e4", 0, A, 4, CSV_A, 5, "9,9", "0.1", CSV_TYPE),  # its .out line carries another id
]
OUT_A = "e1:0,1,2,0.91\ne1:1,3,4,0.6\ne2:0,5,6,0.7\ne3:0,7,8,0.5\nzzz,9,9,0.1\n"
NOISE_A = "e1:0,1,2,0.9\ne1:1,3,4,0.2\ne2:0,5,6,0.7000001\ne3:0,7,8,0.5\ne4:0,9,9,0.1\n"
PART_B = [
    record("e5", 0, B, 1, JSONL_B, 1, '{"f":[1]}', '{"predicted_label":1,"score":0.98}', JSONL_TYPE),
    record("e6", 0, B, 2, JSONL_B, 2, '{"f":[9]}', '{"predicted_label":0,"score":0.1}', JSONL_TYPE),
    record("e7", 0, B, 3, JSON_B, 1, '{"x":1}', '{"score":0.4,"predicted_label":0}', JSON_TYPE, count=2),
    record("e7", 1, B, 3, JSON_B, 1, '{"x":2}', '{"score":0.8,"predicted_label":1}', JSON_TYPE, replay_index=1,
           count=2),
    record("e8", 0, B, 5, f"binary/{B}.d/5.bin", 1, "iVBORw==", '{"score":0.3,"predicted_label":0}', JSON_TYPE,
           input_type="image/png"),
    record("e13", 0, B, 6, f"binary/{B}.d/6.bin", 1, "iVBORw==", '{"score":0.3,"predicted_label":0}', JSON_TYPE,
           input_type="image/png"),
]
OUT_JSONL_B = ('{"SageMakerOutput":{"predicted_label":1,"score":0.98},"f":[1]}\n'
               '{"SageMakerOutput":{"predicted_label":0,"score":0.1},"f":[2]}\n')
OUT_JSON_B = ('{"SageMakerOutput":{"predictions":[{"predicted_label":0,"score":0.45},'
              '{"predicted_label":1,"score":0.8}]},"instances":[{"x":1},{"x":2}]}\n')
PART_C = [
    record("e9", 0, C, 1, CSV_C, 1, "1,1", "0.5", CSV_TYPE),  # its file failed
    record("e2", 0, C, 2, CSV_C, 2, "5,6", "0.7", CSV_TYPE),  # the same call copied into another file
    record("e11", 0, C, 3, JSONL_C, 1, '{"f":[3]}', '{"score":0.5}', JSONL_TYPE),  # .out missing
]
GROUND_TRUTH = {
    "2024/01/01/01/labels.jsonl": [
        ("inf-1", "1\n0", "CSV"), ("e2", "1", "CSV"), ("e5", '{"label": 1}', "JSON"),
        ("e7", '{"instances": [{"label": 0}, {"label": 1}]}', "JSON"), ("e5", '{"label": 0}', "JSON"),
        ("nobody", "1", "CSV"), ("e1", "1", "CSV"), None],
    "2024/01/01/02/more.jsonl": [("e8", "0", "CSV")],
}


def write(path: Path, text: str | bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8"))


@pytest.fixture
def run_dir(tmp_path) -> Path:
    run = tmp_path / "runs" / "r-1"
    prepare = run / "prepare"
    for number, rows in enumerate((PART_A, PART_B, PART_C)):
        (prepare / "records").mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.Table.from_pylist(rows, schema=RECORDS_SCHEMA), prepare / "records" / f"{number:05d}.parquet")
    (prepare / "quarantine").mkdir()
    pq.write_table(pa.Table.from_pylist([{
        "record_id": f"{A}#9", "event_id": None, "capture_file": A, "capture_line": 9, "stage": "capture",
        "reason": "malformed_json", "detail": "not JSON"}], schema=QUARANTINE_SCHEMA),
        prepare / "quarantine" / "00000.parquet")
    write(prepare / "replay-plan.json", json.dumps(PLAN))
    candidate = run / "replay" / "candidate"
    write(candidate / f"{CSV_A}.out", OUT_A)
    write(candidate / f"{JSONL_B}.out", OUT_JSONL_B)
    write(candidate / f"{JSON_B}.out", OUT_JSON_B)
    write(candidate / f"binary/{B}.d/5.bin.out", '{"predictions": [{"predicted_label": 0, "score": 0.3}]}')
    write(candidate / f"binary/{B}.d/6.bin.out", "{oops")
    write(run / "replay" / "candidate.json", json.dumps({
        "side": "candidate", "files_ok": [CSV_A, JSONL_B, JSON_B],
        "files_failed": [{"file": CSV_C, "reason": "http_500", "detail": "model error"}]}))
    write(run / "replay" / "production" / f"{CSV_A}.out", NOISE_A)
    for relative, lines in GROUND_TRUTH.items():
        write(tmp_path / "gt" / relative, "".join(
            (json.dumps({"groundTruthData": {"data": data, "encoding": encoding}, "eventMetadata": {"eventId": key},
                         "eventVersion": "0"}) if item else "{bad") + "\n"
            for item in lines for key, data, encoding in [item or (None, None, None)]))
    return run


@pytest.fixture
def config(run_dir):
    return config_from_mapping({"ground_truth": {"root": str(run_dir.parent.parent / "gt")}})


def frame_by_id(run_dir, columns=None):
    frame = join.load_joined(run_dir, columns)
    return frame.set_index("record_id")


def quarantine(result):
    tables = [pq.read_table(part) for part in sorted(result.quarantine_dir.glob("*.parquet"))]
    rows = pa.concat_tables(tables).to_pylist()
    return {row["record_id"] + "@" + row["capture_file"][-7:]: row["reason"] for row in rows}


def test_every_captured_record_ends_in_one_place(run_dir, config):
    result = join.run(config, run_dir)
    assert result.accounting.balanced
    assert (result.accounting.captured, result.accounting.joined, result.accounting.quarantined) == (15, 7, 8)
    # The candidate's HTTP 500 is its own failure; a missing .out is the evaluation's loss.
    assert result.accounting.by_reason == {"duplicate_event_id": 1, "malformed_json": 1, "replay_file_failed": 1,
                                           "replay_output_missing": 1,
                                           "replay_output_mismatch": 2, "unparsable_candidate_output": 1,
                                           "unparsable_production_output": 1}


def test_quarantine_reasons(run_dir, config):
    assert quarantine(join.run(config, run_dir)) == {
        "e3:0@a.jsonl": "unparsable_production_output", "e4:0@a.jsonl": "replay_output_mismatch",
        "e6:0@b.jsonl": "replay_output_mismatch", "e13:0@b.jsonl": "unparsable_candidate_output",
        "e9:0@c.jsonl": "replay_file_failed", "e2:0@c.jsonl": "duplicate_event_id",
        "e11:0@c.jsonl": "replay_output_missing"}


# record_id -> production score, candidate score, production label, candidate label, exact, tolerant, truth
EXPECTED_ROWS = {
    "e1:0": (0.9, 0.91, "1", "1", False, False, "1"),
    "e1:1": (0.2, 0.6, "0", "1", False, False, "0"),
    "e2:0": (0.7, 0.7, "1", "1", True, True, "1"),
    "e5:0": (0.98, 0.98, "1", "1", True, True, "0"),  # the later of two ground-truth lines wins
    "e7:0": (0.4, 0.45, "0", "0", False, False, "0"),
    "e7:1": (0.8, 0.8, "1", "1", True, True, "1"),
    "e8:0": (0.3, 0.3, "0", "0", True, True, "0"),
}


def test_joined_rows(run_dir, config):
    join.run(config, run_dir)
    frame = frame_by_id(run_dir)
    found = {record_id: (row.production_score, row.candidate_score, row.production_label, row.candidate_label,
                         row.exact_match, row.tolerant_match, row.ground_truth_label)
             for record_id, row in frame.iterrows()}
    assert found == EXPECTED_ROWS
    assert set(frame["run_id"]) == {"r-1"}
    assert frame.loc["e1:0", "score_abs_diff"] == pytest.approx(0.01)
    assert frame.loc["e1:1", "label_match"] == False  # noqa: E712 (a numpy bool)
    assert frame.loc["e1:0", "inference_id"] == "inf-1"
    assert frame.loc["e7:1", "candidate_raw"] == '{"predicted_label":1,"score":0.8}'
    assert frame.loc["e1:0", "candidate_raw"] == "0.91"


def test_noise_floor_comes_from_the_production_replay(run_dir, config):
    result = join.run(config, run_dir)
    frame = frame_by_id(run_dir)
    assert result.noise_floor
    assert frame.loc["e1:0", "production_replay_score"] == 0.9 and frame.loc["e1:0", "noise_abs_diff"] == 0
    assert frame.loc["e2:0", "noise_abs_diff"] == pytest.approx(1e-7)
    assert frame.loc["e5:0", ["production_replay_raw", "noise_abs_diff"]].isna().all()


def test_ground_truth_counts(run_dir, config):
    counts = join.run(config, run_dir).ground_truth
    assert counts == join.GroundTruthCounts(labels=10, matched=7, unknown=2, duplicates=1, invalid=1)


def test_joining_twice_gives_identical_parts(run_dir, config):
    first = join.run(config, run_dir)
    tables = {part.name: pq.read_table(part) for part in sorted(first.records_dir.glob("*.parquet"))}
    second = join.run(config, run_dir)
    assert second.accounting == first.accounting
    again = {part.name: pq.read_table(part) for part in sorted(second.records_dir.glob("*.parquet"))}
    assert tables.keys() == again.keys() == {"00000.parquet", "00001.parquet", "00002.parquet"}
    assert all(tables[name].equals(again[name]) for name in tables)
    assert not list((run_dir / "join").glob(".tmp-*"))


def test_parts_follow_the_table_schema(run_dir, config):
    result = join.run(config, run_dir)
    for part in result.records_dir.glob("*.parquet"):
        assert pq.read_schema(part).remove_metadata() == join.RECORDS_SCHEMA
    for part in result.quarantine_dir.glob("*.parquet"):
        assert pq.read_schema(part).remove_metadata() == join.QUARANTINE_SCHEMA


def test_without_ground_truth_or_noise_floor(run_dir):
    shutil.rmtree(run_dir / "replay" / "production")
    result = join.run(config_from_mapping({}), run_dir)
    frame = frame_by_id(run_dir)
    assert not result.noise_floor and result.ground_truth == join.GroundTruthCounts()
    assert frame["ground_truth_label"].isna().all() and frame["production_replay_raw"].isna().all()
    assert result.accounting.joined == 7


def test_load_joined_feeds_compare(run_dir, config):
    join.run(config, run_dir)
    columns = ["record_id", "production_hash", "candidate_hash", "tolerant_match", "production_label",
               "candidate_label", "production_score", "candidate_score", "ground_truth_label", "production_raw",
               "production_replay_raw", "production_replay_score"]
    frame = join.load_joined(run_dir, columns)
    assert list(frame.columns) == columns
    comparison = compare(frame, config.compare)
    assert comparison.metric("exact_match_rate").value == pytest.approx(4 / 7)
    assert comparison.metric("accuracy").production == pytest.approx(6 / 7)
    assert comparison.metric("replay_exact_match_rate").value == 1.0  # 0.7000001 rounds like 0.7
    assert comparison.flip_matrix == {"0": {"0": 2, "1": 1}, "1": {"1": 4}}


def test_a_short_out_file_is_a_mismatch_for_the_lines_it_lacks(run_dir, config):
    write(run_dir / "replay" / "candidate" / f"{CSV_A}.out", OUT_A.split("\n", 1)[0] + "\n")
    codes = quarantine(join.run(config, run_dir))
    assert codes["e1:1@a.jsonl"] == codes["e2:0@a.jsonl"] == "replay_output_mismatch"


def test_a_record_prepare_also_quarantined_is_counted_once(run_dir, config):
    pq.write_table(pa.Table.from_pylist([{
        "record_id": "e2:0", "event_id": "e2", "capture_file": A, "capture_line": 2, "stage": "prepare",
        "reason": "record_too_large", "detail": "big"}], schema=QUARANTINE_SCHEMA),
        run_dir / "prepare" / "quarantine" / "00001.parquet")
    accounting = join.run(config, run_dir).accounting
    assert accounting.balanced and (accounting.captured, accounting.joined) == (15, 6)
    assert accounting.by_reason["record_too_large"] == 1


def test_an_empty_window_joins_to_empty_parts(tmp_path):
    run = tmp_path / "runs" / "empty"
    (run / "prepare" / "records").mkdir(parents=True)
    (run / "prepare" / "quarantine").mkdir()
    pq.write_table(RECORDS_SCHEMA.empty_table(), run / "prepare" / "records" / "00000.parquet")
    write(run / "prepare" / "replay-plan.json", '{"groups": {}}')
    result = join.run(config_from_mapping({}), run)
    assert result.accounting == Accounting(0, 0, 0, {})
    assert join.load_joined(run).empty


def _csv_joined(*answers: str) -> str:
    """Part A's .out as the replay writes it (record id, input, answer), with these answer columns."""
    ids_inputs = ["e1:0,1,2", "e1:1,3,4", "e2:0,5,6", "e3:0,7,8", "e4:0,9,9"]
    return "".join(f"{prefix},{answer}\n" for prefix, answer in zip(ids_inputs, answers))


# Part A's candidate .out in another shape -> candidate score of each joined record (e3 has no production answer)
SHAPES = [
    pytest.param('{"predictions": [{"score": 0.91}, {"score": 0.6}]}\n{"predictions": [0.7, 0.5]}\n'
                 '{"predictions": [0.1]}\n', id="one-document-per-mini-batch"),
    pytest.param(json.dumps({"predictions": [0.91, 0.6, 0.7, 0.5, 0.1]}, indent=2), id="one-pretty-document"),
    pytest.param(_csv_joined(*('"{""score"": %s}"' % s for s in ("0.91", "0.6", "0.7", "0.5", "0.1"))),
                 id="joined-json-field"),
    pytest.param(_csv_joined(*('{"score": %s, "predicted_label": "x,y"}' % s
                               for s in ("0.91", "0.6", "0.7", "0.5", "0.1"))), id="joined-json-appended-as-is"),
    pytest.param(_csv_joined(*('"{""predictions"": [%s]}"' % s for s in ("0.91", "0.6", "0.7", "0.5", "0.1"))),
                 id="joined-one-record-document"),
]


@pytest.mark.parametrize("out", SHAPES)
def test_answers_in_another_shape_join_record_by_record(run_dir, config, out):
    write(run_dir / "replay" / "candidate" / f"{CSV_A}.out", out)
    codes = quarantine(join.run(config, run_dir))
    frame = frame_by_id(run_dir)
    assert "e4:0@a.jsonl" not in codes and codes["e3:0@a.jsonl"] == "unparsable_production_output"
    assert frame.loc[["e1:0", "e1:1", "e2:0", "e4:0"], "candidate_score"].tolist() == [0.91, 0.6, 0.7, 0.1]


@pytest.mark.parametrize("out", [
    pytest.param('{"predictions": [0.91, 0.6, 0.7, 0.5]}\n', id="a-record-short"),
    pytest.param('{"predictions": [0.91, 0.6]}\n{"predictions": [0.7, 0.5, 0.1, 0.2]}\n', id="a-record-too-many"),
    pytest.param('{"SageMakerOutput": 0.91}\n' * 5, id="joined-json-in-a-csv-job"),
])
def test_documents_that_do_not_list_one_answer_per_record_are_a_mismatch(run_dir, config, out):
    write(run_dir / "replay" / "candidate" / f"{CSV_A}.out", out)
    codes = quarantine(join.run(config, run_dir))
    assert [codes[f"{r}@a.jsonl"] for r in ("e1:0", "e1:1", "e2:0", "e4:0")] == ["replay_output_mismatch"] * 4


def test_json_lines_answered_with_documents(run_dir, config):
    candidate = run_dir / "replay" / "candidate"
    # A batch of one answered whole, joined; then the same file as one document for its mini-batch.
    write(candidate / f"{JSONL_B}.out", '{"SageMakerOutput":{"predictions":[{"predicted_label":1,"score":0.98}]},'
                                        '"f":[1]}\n{"SageMakerOutput":{"predictions":[0.1]},"f":[9]}\n')
    join.run(config, run_dir)
    assert frame_by_id(run_dir).loc[["e5:0", "e6:0"], "candidate_score"].tolist() == [0.98, 0.1]
    write(candidate / f"{JSONL_B}.out", '{"predictions":[{"predicted_label":1,"score":0.98},0.1]}\n')
    join.run(config, run_dir)
    assert frame_by_id(run_dir).loc[["e5:0", "e6:0"], "candidate_score"].tolist() == [0.98, 0.1]


def test_non_finite_answers_are_quarantined_by_whose_they_are(run_dir, config):
    write(run_dir / "replay" / "candidate" / f"{CSV_A}.out", _csv_joined("NaN", "0.6", "inf", "0.5", "0.1"))
    write(run_dir / "replay" / "production" / f"{CSV_A}.out", _csv_joined("0.9", "nan", "0.7", "0.5", "0.1"))
    codes = quarantine(join.run(config, run_dir))
    assert codes["e1:0@a.jsonl"] == codes["e2:0@a.jsonl"] == "candidate_invalid_score"
    frame = frame_by_id(run_dir)
    # The noise floor is the tool's own reference: a NaN there leaves the record joined, only unreplayed.
    assert frame.loc["e1:1", "candidate_score"] == 0.6
    assert frame.loc["e1:1", ["production_replay_raw", "noise_abs_diff"]].isna().all()
