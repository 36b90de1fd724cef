"""Batch Transform's record handling: splitting, mini-batches, filters, joins and assembly."""
from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given, strategies as st

from analysis.dataprocessing import (
    FAILURES, MEGABYTE, DataProcessing, DataProcessingError, TransformSettings, assemble, assemble_output,
    dump_json, filter_input, mini_batches, parse_csv_row, parse_json, plan_requests, split_records,
    split_response, write_csv_row,
)
from analysis.jsonpath import compile_path


def settings(content_type="text/csv", accept=None, split="Line", strategy="MultiRecord", payload=6,
             assemble_with="Line", **data_processing) -> TransformSettings:
    return TransformSettings(content_type, accept or content_type, split, strategy, payload, assemble_with,
                             DataProcessing.from_mapping(data_processing))


def transform(data: bytes, knobs: TransformSettings, answer) -> bytes:
    """Plan, answer each request body with `answer(body)`, assemble."""
    plan = plan_requests(data, knobs)
    return assemble_output(plan, [answer(batch.body) for batch in plan.batches], knobs)


@pytest.mark.parametrize("data, split, records", [
    (b"a,1\nb,2\n", "Line", [b"a,1", b"b,2"]),
    (b"a,1\nb,2", "Line", [b"a,1", b"b,2"]),
    (b"a,1\r\nb,2\r\n", "Line", [b"a,1", b"b,2"]),
    (b"a\n\nb\n", "Line", [b"a", b"", b"b"]),
    (b"", "Line", []),
    (b"a,1\nb,2\n", "None", [b"a,1\nb,2\n"]),
])
def test_split_records(data, split, records):
    assert split_records(data, split) == records


RECORD_400K = b"x" * (400 * 1024)


@pytest.mark.parametrize("records, split, strategy, payload, shapes", [
    ([b"a", b"b", b"c"], "Line", "MultiRecord", 6, [(0, 3, b"a\nb\nc\n")]),
    ([b"a", b"b", b"c"], "Line", "SingleRecord", 6, [(0, 1, b"a\n"), (1, 1, b"b\n"), (2, 1, b"c\n")]),
    ([b"whole\nfile\n"], "None", "MultiRecord", 6, [(0, 1, b"whole\nfile\n")]),
    ([RECORD_400K] * 5, "Line", "MultiRecord", 1, [(0, 2, None), (2, 2, None), (4, 1, None)]),
    ([RECORD_400K] * 5, "Line", "MultiRecord", 0, [(0, 5, None)]),
])
def test_mini_batches_are_bounded_and_ordered(records, split, strategy, payload, shapes):
    batches = mini_batches(records, split, strategy, payload)
    assert [(b.first, b.count) for b in batches] == [(first, count) for first, count, _ in shapes]
    for batch, (_, _, body) in zip(batches, shapes):
        assert body is None or batch.body == body
        assert payload == 0 or len(batch.body) <= payload * MEGABYTE


@pytest.mark.parametrize("strategy", ["MultiRecord", "SingleRecord"])
def test_a_record_larger_than_the_payload_limit_fails(strategy):
    with pytest.raises(DataProcessingError) as error:
        mini_batches([b"ok", b"y" * MEGABYTE], "Line", strategy, 1)
    assert error.value.reason == "record_too_large"
    assert "record 2" in error.value.detail


@pytest.mark.parametrize("record, expression, content_type, filtered", [
    (b"id-1,5.1,3.5", "$[1:]", "text/csv", b"5.1,3.5"),
    (b'id-1,"a,b",x', "$[1:]", "text/csv", b'"a,b",x'),
    (b'id-1,"say ""hi""",3', "$[1]", "text/csv", b'"say ""hi"""'),
    (b"id-1,5.1,3.5", "$[0,-1]", "text/csv", b"id-1,3.5"),
    (b"id-1,5.1,3.5", "$", "text/csv", b"id-1,5.1,3.5"),
    (b'{"id":1,"features":[1.50,2e3]}', "$.features", "application/jsonlines", b"[1.50,2e3]"),
    (b'{"z":1,"id":2,"x":3}', "$['z','id']", "application/json", b'{"id":2,"z":1}'),
    (b'{"b": 1,  "a": 2}', "$", "application/json", b'{"b": 1,  "a": 2}'),
])
def test_input_filter(record, expression, content_type, filtered):
    fmt = settings(content_type).input_format
    assert filter_input(record, compile_path(expression), fmt) == filtered


@pytest.mark.parametrize("record, expression, content_type", [
    (b'{"id":1}', "$.features", "application/json"),
    (b"{not json", "$.features", "application/json"),
    (b"a,b", "$[5]", "text/csv"),
    (b"\xff\xfe", "$[0]", "text/csv"),
])
def test_input_filter_failures_are_typed(record, expression, content_type):
    with pytest.raises(DataProcessingError) as error:
        filter_input(record, compile_path(expression), settings(content_type).input_format)
    assert error.value.reason == "input_filter_failed"


def sum_fields(body: bytes) -> bytes:
    """A CSV model: each row's fields summed, one line per row."""
    return b"".join(b"%g\n" % sum(float(f) for f in line.split(b",")) for line in body.splitlines())


def echo_json(body: bytes) -> bytes:
    """A JSON model: each line answered with {"score": <len>, "label": "x"}."""
    return b"".join(b'{"score":%d,"label":"x"}\n' % len(line) for line in body.splitlines())


@pytest.mark.parametrize("data, knobs, model, out", [
    # The guide's CSV join: [1,2,3] + [1] -> [1,2,3,1]; with an id column filtered out and kept back.
    (b"1,2,3\n", settings(JoinSource="Input"), lambda body: b"1\n", b"1,2,3,1\n"),
    (b"r1,1,2\nr2,3,4\n", settings(InputFilter="$[1:]", JoinSource="Input"), sum_fields, b"r1,1,2,3\nr2,3,4,7\n"),
    (b"r1,1,2\nr2,3,4\n", settings(InputFilter="$[1:]", JoinSource="Input", OutputFilter="$[0,-1]"), sum_fields,
     b"r1,3\nr2,7\n"),
    (b'r1,"a,b",2\n', settings(InputFilter="$[2:]", JoinSource="Input"), sum_fields, b'r1,"a,b",2,2\n'),
    (b"1,2\n3,4\n", settings(strategy="SingleRecord", JoinSource="Input"), sum_fields, b"1,2,3\n3,4,7\n"),
    (b"1,2\n3,4\n", settings(OutputFilter="$[0]"), lambda body: b"".join(b"%d,p\n" % i for i, _ in
                                                                          enumerate(body.splitlines())), b"0\n1\n"),
    # JSON objects gain SageMakerOutput; keys sorted at every level; numbers kept as written.
    (b'{"id":"r1","features":[1.50,2]}\n', settings("application/jsonlines", JoinSource="Input"), echo_json,
     b'{"SageMakerOutput":{"label":"x","score":31},"features":[1.50,2],"id":"r1"}\n'),
    (b'[1,2]\n', settings("application/jsonlines", JoinSource="Input"), echo_json,
     b'{"SageMakerInput":[1,2],"SageMakerOutput":{"label":"x","score":5}}\n'),
    (b'"text"\n', settings("application/json", JoinSource="Input", strategy="SingleRecord"), echo_json,
     b'{"SageMakerInput":"text","SageMakerOutput":{"label":"x","score":6}}\n'),
    (b'{"SageMakerOutput":"old","a":1}\n', settings("application/jsonlines", JoinSource="Input"), echo_json,
     b'{"SageMakerOutput":{"label":"x","score":31},"a":1}\n'),
    (b'{"id":"r1","features":[1]}\n{"id":"r2","features":[2]}\n',
     settings("application/jsonlines", InputFilter="$.features", JoinSource="Input",
              OutputFilter="$['id','SageMakerOutput']"), echo_json,
     b'{"SageMakerOutput":{"label":"x","score":3},"id":"r1"}\n{"SageMakerOutput":{"label":"x","score":3},"id":"r2"}\n'),
    (b'{"a":1}\n', settings("application/jsonlines", OutputFilter="$.score"), echo_json, b"7\n"),
    # A JSON document request answered by a multi-line document is still one record's output.
    (b'{"instances":[[1],[2]]}\n', settings("application/json", JoinSource="Input", strategy="SingleRecord"),
     lambda body: b'{\n  "predictions": [0.25, 0.75]\n}\n',
     b'{"SageMakerOutput":{"predictions":[0.25,0.75]},"instances":[[1],[2]]}\n'),
    # Observed in a real .out (bt-jsonl-join-inferenceid-tail, inference-id keys left out).
    (b'{"features":[29,2,178610,15,10,0,7,4,4,0,0,0,21,37]}\n',
     settings("application/jsonlines", JoinSource="Input"),
     lambda body: b'{"score":0.047645717859268,"predicted_label":0}\n',
     b'{"SageMakerOutput":{"predicted_label":0,"score":0.047645717859268},'
     b'"features":[29,2,178610,15,10,0,7,4,4,0,0,0,21,37]}\n'),
])
def test_filters_and_joins(data, knobs, model, out):
    assert transform(data, knobs, model) == out


@pytest.mark.parametrize("assemble_with, responses, out", [
    ("Line", [b"0.1\n0.2\n", b"0.3"], b"0.1\n0.2\n0.3\n"),
    ("None", [b"0.1\n0.2\n", b"0.3"], b"0.1\n0.2\n0.3"),
    ("None", [b'{"predictions":[1]}', b'{"predictions":[2]}'], b'{"predictions":[1]}{"predictions":[2]}'),
    ("Line", [b""], b"\n"),
])
def test_assemble(assemble_with, responses, out):
    assert assemble(responses, assemble_with) == out


def test_responses_are_written_verbatim_without_join_or_filter():
    knobs = settings(accept="application/json", assemble_with="None", strategy="SingleRecord")
    answer = b'{"predictions": [{"score": 0.5}]}'
    assert transform(b"1,2\n3,4\n", knobs, lambda body: answer) == answer * 2


@pytest.mark.parametrize("body, count, fmt", [
    (b"0.1\n", 2, "csv"),
    (b"0.1\n0.2\n0.3\n", 2, "csv"),
    (b"", 1, "csv"),
    (b'{"a":1}\n{"a":2}\n', 1, "csv"),
    (b'{"a":1}\n', 2, "json"),
])
def test_a_response_with_the_wrong_record_count_fails(body, count, fmt):
    # (with records_path too: a document listing another number of records is still a mismatch)
    with pytest.raises(DataProcessingError) as error:
        split_response(body, count, fmt, records_path="predictions")
    assert error.value.reason == "output_count_mismatch"
    with pytest.raises(DataProcessingError) as error:
        split_response(body, count, fmt)
    assert error.value.reason == "output_count_mismatch"


# a response to a batch, its record count, the records_path -> one output per record
BATCH_ANSWERS = [
    pytest.param(b'{"predictions": [{"score": 0.25}, {"score": 0.5}]}', 2, "predictions",
                 [b'{"score":0.25}', b'{"score":0.5}'], id="one-document"),
    pytest.param(b'{\n  "out": {"rows": [1, 2.50, 3]}\n}\n', 3, "out.rows", [b"1", b"2.50", b"3"],
                 id="pretty-document-other-path-literals-kept"),
    pytest.param(b"[0.1, 0.9]", 2, None, [b"0.1", b"0.9"], id="bare-list"),
    pytest.param(b'{"score":0.1}\n{"score":0.9}\n', 2, "predictions", [b'{"score":0.1}', b'{"score":0.9}'],
                 id="json-lines"),
    pytest.param(b'{"predictions": [0.7]}', 1, "predictions", [b'{"predictions": [0.7]}'],
                 id="batch-of-one-kept-whole"),
    pytest.param(b"0.1\n0.9\n", 2, "predictions", [b"0.1", b"0.9"], id="csv-lines"),
]


@pytest.mark.parametrize("body, count, records_path, outputs", BATCH_ANSWERS)
def test_a_batch_answered_in_another_shape_splits_per_record(body, count, records_path, outputs):
    assert split_response(body, count, "csv", records_path=records_path) == outputs


@pytest.mark.parametrize("answer, joined", [
    (lambda rows: b"0.25\n0.5\n", b"id1,1,2,0.25\nid2,3,4,0.5\n"),
    (lambda rows: b'{"predictions": [0.25, 0.5]}', b"id1,1,2,0.25\nid2,3,4,0.5\n"),
    (lambda rows: b'{"predictions": [{"score": 0.25, "label": "a,b"}, {"score": 0.5, "label": "c"}]}',
     b'id1,1,2,"{""label"":""a,b"",""score"":0.25}"\nid2,3,4,"{""label"":""c"",""score"":0.5}"\n'),
    (lambda rows: b'{"score": 0.25, "p": [1, 2]}\n{"score": 0.5, "p": [3, 4]}\n',
     b'id1,1,2,"{""p"":[1,2],""score"":0.25}"\nid2,3,4,"{""p"":[3,4],""score"":0.5}"\n'),
    (lambda rows: b"[0.1, 0.9]\n[0.8, 0.2]\n", b"id1,1,2,0.1,0.9\nid2,3,4,0.8,0.2\n"),
])
def test_a_csv_join_keeps_a_json_answer_as_json(answer, joined):
    # The replay's CSV join: the id column is filtered out for the model and joined back with its answer.
    knobs = dataclasses.replace(settings(InputFilter="$[1:]", JoinSource="Input"), records_path="predictions")
    assert transform(b"id1,1,2\nid2,3,4\n", knobs, answer) == joined


@pytest.mark.parametrize("data, knobs, answer, reason", [
    (b"1,2\n", settings(JoinSource="Input", OutputFilter="$[5]"), b"3\n", "output_filter_failed"),
    (b'{"a":1}\n', settings("application/jsonlines", JoinSource="Input"), b"not json\n", "output_unparsable"),
    (b"1,2\n3,4\n", settings(JoinSource="Input"), b"3\n", "output_count_mismatch"),
])
def test_output_failures_are_typed(data, knobs, answer, reason):
    with pytest.raises(DataProcessingError) as error:
        transform(data, knobs, lambda body: answer)
    assert error.value.reason == reason


@pytest.mark.parametrize("make, message", [
    (lambda: settings("text/csv", "application/json", JoinSource="Input"), "ContentType == Accept"),
    (lambda: settings(assemble_with="None", JoinSource="Input"), "SplitType == AssembleWith"),
    (lambda: settings(split="None", assemble_with="None", JoinSource="Input"), "CSV \\(SplitType=Line\\)"),
    (lambda: settings("application/octet-stream", InputFilter="$[1:]"), "InputFilter needs"),
    (lambda: settings(accept="image/png", OutputFilter="$[0]"), "OutputFilter needs"),
    (lambda: settings(split="RecordIO"), "RecordIO"),
    (lambda: settings(payload=101), "MaxPayloadInMB"),
    (lambda: settings(JoinSource="Output"), "JoinSource"),
    (lambda: settings(InputFilter="$..a"), "deep scan"),
    (lambda: DataProcessing.from_mapping({"InputFilters": "$"}), "unknown key 'InputFilters'"),
])
def test_combinations_createtransformjob_rejects(make, message):
    with pytest.raises(DataProcessingError, match=message) as error:
        make()
    assert error.value.reason == "invalid_job"


def test_slice_end_reading_is_a_choice():
    row = b"a,b,c,d,e,f"
    exclusive = DataProcessing.from_mapping({"InputFilter": "$[1:4]"})
    inclusive = DataProcessing.from_mapping({"InputFilter": "$[1:4]"}, slice_end_inclusive=True)
    assert filter_input(row, exclusive.input_filter, "csv") == b"b,c,d"
    assert filter_input(row, inclusive.input_filter, "csv") == b"b,c,d,e"


def test_every_failure_code_is_declared():
    assert set(FAILURES) == {"invalid_job", "record_too_large", "input_filter_failed", "output_count_mismatch",
                             "output_unparsable", "output_filter_failed"}
    with pytest.raises(AssertionError):
        DataProcessingError("made_up", "x")


@given(st.lists(st.text(alphabet=st.characters(blacklist_characters="\r\n", blacklist_categories=["Cs"])),
                min_size=2))
def test_csv_rows_round_trip(fields):
    assert parse_csv_row(write_csv_row(fields)) == fields


@given(st.recursive(st.none() | st.booleans() | st.integers() | st.text() | st.floats(allow_nan=False),
                    lambda inner: st.lists(inner) | st.dictionaries(st.text(), inner), max_leaves=20))
def test_json_round_trips_through_the_sorted_compact_form(value):
    assert parse_json(dump_json(value)) == value
    assert dump_json(parse_json(dump_json(value))) == dump_json(value)
