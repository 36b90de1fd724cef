import pytest

from analysis.canonical import canonical_hash
from analysis.outputs import OutputParseError, canonical_text, non_finite, output_format, outputs_match, \
    parse_body, parse_output, parse_value, split_output
from steps.config import CompareConfig, OutputParsing

DEFAULT = OutputParsing()
JSON, JSONL, CSV = "application/json", "application/jsonlines", "text/csv; charset=utf-8"


# body, content type, parsing -> [(score, label)] per record
BODIES = [
    pytest.param('{"predictions": [{"score": 0.98, "predicted_label": 1}, {"score": 0.2, "predicted_label": 0}]}',
                 JSON, DEFAULT, [(0.98, "1"), (0.2, "0")], id="builtin-json"),
    pytest.param('{"predicted_label":1,"score":0.98}\n{"predicted_label":0,"score":0.1}\n',
                 JSONL, DEFAULT, [(0.98, "1"), (0.1, "0")], id="jsonlines"),
    pytest.param("0.98\n0.3\n", CSV, DEFAULT, [(0.98, "1"), (0.3, "0")], id="csv-score-column"),
    pytest.param("0.98,1\n0.3,0\n", CSV, OutputParsing(label_column=1), [(0.98, "1"), (0.3, "0")],
                 id="csv-score-label-row"),
    pytest.param("yes,0.7\n", CSV, OutputParsing(score_column=1, label_column=0), [(0.7, "yes")],
                 id="csv-label-first"),
    pytest.param("[0.9, 0.4]", JSON, DEFAULT, [(0.9, "1"), (0.4, "0")], id="bare-json-list"),
    pytest.param('{\n    "predictions": [3.5, 4.0, 5.5\n    ]\n}', JSON, DEFAULT,
                 [(3.5, None), (4.0, None), (5.5, None)], id="tf-serving-regression"),
    pytest.param('{"label": "cat", "score": 0.7}', JSON, DEFAULT, [(0.7, "cat")], id="label-key-fallback"),
    pytest.param('{"out": {"items": [{"p": [0.1, 0.9], "c": "b"}]}}', JSON,
                 OutputParsing(records_path="out.items", score_path="p[1]", label_path="c"), [(0.9, "b")],
                 id="configured-paths"),
    pytest.param('[[0.97]]', JSON, DEFAULT, [(0.97, "1")], id="one-number-list-record"),
    pytest.param('{"predictions": [{"score": 0.6}]}', JSON, OutputParsing(label_threshold=0.7), [(0.6, "0")],
                 id="threshold"),
    pytest.param('{"predicted_label": 1}', "text/html", DEFAULT, [(None, "1")], id="sniffed-json"),
    pytest.param('{"a":1}\n{"a":2}', None, DEFAULT, [(None, None), (None, None)], id="sniffed-jsonlines"),
    pytest.param("0.25\n", None, DEFAULT, [(0.25, "0")], id="sniffed-csv"),
    pytest.param('{"predictions": [1, 0]}', "text/csv", OutputParsing(format="json"), [(1.0, "1"), (0.0, "0")],
                 id="format-overrides-content-type"),
]


@pytest.mark.parametrize("body, content_type, parsing, expected", BODIES)
def test_bodies_parse_into_records(body, content_type, parsing, expected):
    parsed = parse_body(body, parsing, content_type, 6)
    assert [(p.score, p.label) for p in parsed] == expected
    assert len(split_output(body, parsing, content_type)) == len(expected)
    for record in parsed:
        assert record.hash == canonical_hash(record.value, 6)


@pytest.mark.parametrize("text, content_type, parsing, value", [
    ("0.98", CSV, DEFAULT, 0.98),
    ("1", CSV, DEFAULT, 1),
    ('0.5,"a,b",x', CSV, DEFAULT, [0.5, "a,b", "x"]),
    ('{"score": 0.5}', JSON, DEFAULT, {"score": 0.5}),
])
def test_parse_output_keeps_raw_and_value(text, content_type, parsing, value):
    parsed = parse_output(text, parsing, content_type, 6)
    assert parsed.raw == text and parsed.value == value


@pytest.mark.parametrize("a, b", [
    (("1", CSV), ("1.0", CSV)),
    (("1", CSV), ("1", JSON)),
    (('{"score":0.98,"predicted_label":1}', JSON), ('{"predicted_label": 1.0, "score": 0.98}', JSONL)),
])
def test_same_values_hash_alike_across_formats(a, b):
    assert parse_output(a[0], DEFAULT, a[1], 6).hash == parse_output(b[0], DEFAULT, b[1], 6).hash


@pytest.mark.parametrize("text, content_type, parsing", [
    ("{not json", JSON, DEFAULT),
    ("", CSV, DEFAULT),
    ('0.5,"unclosed', CSV, DEFAULT),
    ("a\nb", CSV, DEFAULT),
])
def test_unparsable_records_raise(text, content_type, parsing):
    with pytest.raises(OutputParseError):
        parse_output(text, parsing, content_type, 6)


@pytest.mark.parametrize("body, content_type", [("{bad", JSON), ('{"a":1}\nnope', JSONL), ("0.1\n\n0.2", CSV)])
def test_unsplittable_bodies_raise(body, content_type):
    with pytest.raises(OutputParseError):
        split_output(body, DEFAULT, content_type)


@pytest.mark.parametrize("parsing, content_type, text, expected", [
    (OutputParsing(format="csv"), JSON, "", "csv"),
    (DEFAULT, "application/x-ndjson", "", "jsonlines"),
    (DEFAULT, "application/vnd.x+json", "", "json"),
    (DEFAULT, None, "[1]", "json"),
    (DEFAULT, "application/octet-stream", "1,2", "csv"),
])
def test_output_format(parsing, content_type, text, expected):
    assert output_format(parsing, content_type, text) == expected


def test_parse_value_matches_parsing_the_text():
    value = {"score": 0.75, "predicted_label": 1}
    text = '{"predicted_label":1,"score":0.75}'
    assert parse_value(value, DEFAULT, 6).hash == parse_output(text, DEFAULT, JSON, 6).hash


TOLERANCE = CompareConfig(abs_tolerance=1e-3, rel_tolerance=0)


@pytest.mark.parametrize("production, candidate, expected", [
    (('{"score":0.5,"predicted_label":0}', JSON), ('{"score":0.5004,"predicted_label":0}', JSON), True),
    (('{"score":0.5,"predicted_label":0}', JSON), ('{"score":0.51,"predicted_label":0}', JSON), False),
    # shapes differ: compare score within tolerance and label (the CSV label is derived from its score)
    (('{"score":0.3,"predicted_label":0}', JSON), ("0.3004", CSV), True),
    (('{"score":0.3,"predicted_label":0}', JSON), ("0.4", CSV), False),
    (('{"score":0.3,"predicted_label":1}', JSON), ("0.3", CSV), False),
    (('{"predicted_label":"cat"}', JSON), ('"cat"', JSON), True),
    (('{"a":0.5,"b":[1]}', JSON), ('{"a":0.5,"b":[2]}', JSON), False),
])
def test_outputs_match(production, candidate, expected):
    p = parse_output(production[0], DEFAULT, production[1], 6)
    c = parse_output(candidate[0], DEFAULT, candidate[1], 6)
    assert outputs_match(p, c, TOLERANCE) is expected


@pytest.mark.parametrize("raw, expected", [
    ('{"b": 1, "a": 2.0}', '{"a":2,"b":1}'), ("0.98,1", "[0.98,1]"), ("1.0", "1"),
    ("{oops", '"{oops"'), ('0.5,"open', None),
])
def test_canonical_text(raw, expected):
    assert canonical_text(raw, 6) == expected


# answer text, content type, parsing -> why it is not finite (None: a usable answer)
NON_FINITE = [
    pytest.param("nan\n", CSV, DEFAULT, "the score is NaN", id="csv-nan-text"),
    pytest.param("-inf", CSV, DEFAULT, "the score is -Infinity", id="csv-minus-inf"),
    pytest.param('{"score": NaN}', JSON, DEFAULT, "the score is NaN", id="json-nan-literal"),
    pytest.param('{"score": "Infinity"}', JSON, DEFAULT, "the score is Infinity", id="json-inf-text"),
    pytest.param('{"predicted_label": "nan"}', JSON, DEFAULT, "the label is NaN", id="nan-label"),
    pytest.param("0.5,inf", CSV, OutputParsing(label_column=1), "the label is Infinity", id="csv-inf-label"),
    pytest.param('{"predicted_label": 1}', JSON, DEFAULT, None, id="label-only"),
    pytest.param('{"other": 1}', JSON, DEFAULT, None, id="no-score-at-all"),
    pytest.param("0.98", CSV, DEFAULT, None, id="finite"),
    pytest.param('"NaN-wave"', JSON, DEFAULT, None, id="class-name-that-is-not-a-number"),
]


@pytest.mark.parametrize("text, content_type, parsing, expected", NON_FINITE)
def test_non_finite_answers_are_named_not_missing(text, content_type, parsing, expected):
    assert non_finite(parse_output(text, parsing, content_type, 6)) == expected
