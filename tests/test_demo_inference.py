"""The demo's SageMaker scikit-learn hooks accept and answer CSV, JSON and JSON Lines."""
from __future__ import annotations

import json

import joblib
import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from steps import demo_inference as hooks

ROWS = [[1.5, -2.0], [0.25, 3.0]]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("model")
    features = np.array([[0.0, 0.0], [1.0, 1.0], [2.0, -1.0], [-1.0, 2.0]])
    joblib.dump(LogisticRegression().fit(features, [0, 1, 1, 0]), folder / "model.joblib")
    return folder


@pytest.mark.parametrize("body, content_type, expected", [
    ("1.5,-2.0", "text/csv", ROWS[:1]),
    (b"1.5,-2.0\n0.25,3.0\n", "text/csv", ROWS),
    ("1.5,-2.0\r\n0.25,3\r\n", "text/csv; charset=utf-8", ROWS),
    ('{"instances": [{"features": [1.5, -2.0]}, {"features": [0.25, 3.0]}]}', "application/json", ROWS),
    (b'{"instances": [[1.5, -2.0]]}', "application/json", ROWS[:1]),
    ('{"features": [1.5, -2.0]}\n{"features": [0.25, 3]}', "application/jsonlines", ROWS),
    ('{"features":[1.5,-2.0]}\n', "Application/JSONLines", ROWS[:1]),
])
def test_input_fn_reads_rows_from_every_content_type(body, content_type, expected):
    assert hooks.input_fn(body, content_type).tolist() == expected


@pytest.mark.parametrize("body, content_type, message", [
    ("1,2", "application/x-npy", "unsupported content type"),
    ("\n", "text/csv", "no records"),
    ('{"instances": []}', "application/json", "no records"),
])
def test_input_fn_refuses_what_it_cannot_read(body, content_type, message):
    with pytest.raises(ValueError, match=message):
        hooks.input_fn(body, content_type)


PREDICTION = [{"score": 0.125, "predicted_label": 0}, {"score": 0.75, "predicted_label": 1}]


@pytest.mark.parametrize("accept, expected_body, expected_type", [
    ("text/csv", "0.125,0\n0.75,1\n", "text/csv"),
    ("application/json", '{"predictions": [{"score": 0.125, "predicted_label": 0}, '
                         '{"score": 0.75, "predicted_label": 1}]}', "application/json"),
    ("application/jsonlines", '{"score": 0.125, "predicted_label": 0}\n{"score": 0.75, "predicted_label": 1}\n',
     "application/jsonlines"),
    ("*/*", '{"predictions": [{"score": 0.125, "predicted_label": 0}, '
            '{"score": 0.75, "predicted_label": 1}]}', "application/json"),
    (None, '{"predictions": [{"score": 0.125, "predicted_label": 0}, '
           '{"score": 0.75, "predicted_label": 1}]}', "application/json"),
])
def test_output_fn_answers_score_and_label_in_the_accepted_format(accept, expected_body, expected_type):
    assert hooks.output_fn(PREDICTION, accept) == (expected_body, expected_type)


def test_output_fn_refuses_an_accept_type_it_cannot_write():
    with pytest.raises(ValueError, match="unsupported accept type"):
        hooks.output_fn(PREDICTION, "application/x-protobuf")


@pytest.mark.parametrize("body, content_type", [
    ("1.5,-2.0\n0.25,3.0", "text/csv"),
    ('{"instances": [{"features": [1.5, -2.0]}, {"features": [0.25, 3.0]}]}', "application/json"),
    ('{"features": [1.5, -2.0]}\n{"features": [0.25, 3.0]}', "application/jsonlines"),
])
def test_every_format_gets_the_same_answers_from_the_loaded_model(model_dir, body, content_type):
    model = hooks.model_fn(str(model_dir))
    prediction = hooks.predict_fn(hooks.input_fn(body, content_type), model)
    expected_scores = model.predict_proba(np.array(ROWS))[:, 1].tolist()
    assert [row["score"] for row in prediction] == expected_scores
    assert [row["predicted_label"] for row in prediction] == model.predict(np.array(ROWS)).tolist()
    answers = {accept: hooks.output_fn(prediction, accept)[0]
               for accept in ("text/csv", "application/json", "application/jsonlines")}
    assert [float(line.split(",")[0]) for line in answers["text/csv"].splitlines()] == expected_scores
    assert [p["score"] for p in json.loads(answers["application/json"])["predictions"]] == expected_scores
    assert [json.loads(line)["score"] for line in answers["application/jsonlines"].splitlines()] == expected_scores
