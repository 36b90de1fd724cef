import json
from pathlib import Path

import pytest

from analysis.canonical import label_text
from analysis.ground_truth import GroundTruth, GroundTruthError, LabelVocabularies, ground_truth_records, \
    parse_ground_truth_line
from steps.config import GroundTruthConfig

SAMPLES = Path("/work/shared/reference/capture-samples")
SPEC = GroundTruthConfig()


def line(data: str, encoding: str = "CSV", event_id: str = "e1", **extra) -> str:
    return json.dumps({"eventVersion": "0", "eventMetadata": {"eventId": event_id},
                       "groundTruthData": {"data": data, "encoding": encoding}, **extra})


@pytest.mark.parametrize("text, spec, expected", [
    (line("1"), SPEC, GroundTruth("e1", ("1",))),
    (line("1\n0\n1.0\n"), SPEC, GroundTruth("e1", ("1", "0", "1"))),
    (line("cat"), SPEC, GroundTruth("e1", ("cat",))),
    (line('{"label": 1}', "JSON"), SPEC, GroundTruth("e1", ("1",))),
    (line('{"instances": [{"label": 0}, {"label": 1}]}', "JSON"), SPEC, GroundTruth("e1", ("0", "1"))),
    (line('{"rows": [{"y": {"v": 2.5}}]}', "JSON"), GroundTruthConfig(records_path="rows", label_path="y.v"),
     GroundTruth("e1", ("2.5",))),
    (line("[1, 0]", "JSON"), SPEC, GroundTruth("e1", ("1", "0"))),
    (line("1", event_id="449"), SPEC, GroundTruth("449", ("1",))),
    ('{"groundTruthData":{"data":"1","encoding":"CSV"},"eventMetadata":{"eventId":"k","inferenceTime":"x"}}',
     SPEC, GroundTruth("k", ("1",))),
])
def test_ground_truth_lines(text, spec, expected):
    assert parse_ground_truth_line(text, spec) == expected


@pytest.mark.parametrize("text, problem", [
    ("{nope", "malformed_json"),
    ('{"eventMetadata": {"eventId": "e"}}', "not_ground_truth_record"),
    ('{"groundTruthData": {"data": "1", "encoding": "CSV"}, "eventMetadata": {}}', "not_ground_truth_record"),
    ('[1]', "not_ground_truth_record"),
    (line("1", eventVersion="1"), "unknown_event_version"),
    (line("1", "BASE64"), "unknown_encoding"),
    (line("1\n\n0"), "unsplittable_labels"),
    (line("{bad", "JSON"), "unsplittable_labels"),
    (line('{"instances": [{"label": 0}, {"other": 1}]}', "JSON"), "missing_label"),
])
def test_ground_truth_errors(text, problem):
    with pytest.raises(GroundTruthError) as caught:
        parse_ground_truth_line(text, SPEC)
    assert caught.value.problem == problem


def test_a_file_of_lines_reports_each_line():
    text = line("1", event_id="a") + "\n\n" + "{broken\n" + line("0", event_id="b") + "\n"
    found = list(ground_truth_records(text, SPEC))
    assert [number for number, _ in found] == [1, 3, 4]
    assert found[0][1] == GroundTruth("a", ("1",))
    assert isinstance(found[1][1], GroundTruthError)
    assert found[2][1] == GroundTruth("b", ("0",))


def test_a_file_holding_one_json_array():
    text = json.dumps([json.loads(line("1", event_id="a")), json.loads(line("0", event_id="b"))], indent=2)
    assert [record for _, record in ground_truth_records(text, SPEC)] == [GroundTruth("a", ("1",)),
                                                                           GroundTruth("b", ("0",))]


def test_aws_sample_ground_truth_parses():
    text = (SAMPLES / "sdk-tests-groundtruth-csv-template.jsonl").read_text()
    records = [record for _, record in ground_truth_records(text, SPEC)]
    assert records and all(isinstance(r, GroundTruth) and r.labels in {("0",), ("1",)} for r in records)


def test_aws_merged_json_ground_truth_splits_per_instance():
    merged = json.loads((SAMPLES / "merged-endpoint-json-inferenceid.jsonl").read_text().splitlines()[0])
    record = {"groundTruthData": merged["groundTruthData"], "eventMetadata": {"eventId": "x"}, "eventVersion": "0"}
    parsed = parse_ground_truth_line(json.dumps(record), SPEC)
    assert len(parsed.labels) == 334 and set(parsed.labels) == {"0", "1"}


# truth, production, candidate labels (as label_text spells them), task -> is it an error?
VOCABULARIES = [
    pytest.param({"malignant", "benign"}, {"0", "1"}, {"0", "1"}, "auto", True, id="words-vs-codes"),
    pytest.param({"0", "1"}, {"cat", "dog"}, {"cat", "dog"}, "auto", True, id="codes-vs-words"),
    pytest.param({"0", "1"}, {"0", "1"}, {"0", "1"}, "auto", False, id="same-codes"),
    pytest.param({"1", "0", "2"}, {"0", "1"}, {"0"}, "auto", False, id="overlap-is-enough"),
    pytest.param({"yes", "no"}, {"0", "1"}, {"yes", "no"}, "auto", False, id="one-model-speaks-it"),
    pytest.param({"0.37", "1.52", "2.04"}, {"0", "1"}, {"0", "1"}, "auto", False, id="regression-target"),
    pytest.param(set(map(str, range(21, 60))), {"0", "1"}, {"0", "1"}, "auto", False, id="many-integers-regression"),
    pytest.param({"malignant"}, {"0"}, {"1"}, "regression", False, id="task-says-regression"),
    pytest.param({"malignant"}, set(), set(), "auto", False, id="models-without-labels"),
    pytest.param(set(), {"0"}, {"1"}, "auto", False, id="no-truth"),
]


@pytest.mark.parametrize("truth, production, candidate, task, error", VOCABULARIES)
def test_label_vocabularies(truth, production, candidate, task, error):
    vocabularies = LabelVocabularies()
    vocabularies.add(truth, production, [None, *candidate])
    message = vocabularies.mismatch(task)
    assert bool(message) == error
    if error:
        assert "\n" not in message and "ground_truth.label_path" in message
        for labels in (truth, production, candidate):
            assert all(label in message for label in labels)


def test_numeric_spellings_are_one_label():
    # Ground truth is read through label_text, like the models' labels: 1, 1.0, "1", "1.0" and true agree.
    assert {label_text(value) for value in (1, 1.0, "1", "1.0", " 1 ", True)} == {"1"}
    vocabularies = LabelVocabularies()
    vocabularies.add([label_text("1.0"), label_text(0)], ["1", "0"], ["1"])
    assert vocabularies.mismatch() is None
