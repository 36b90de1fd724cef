"""SageMaker scikit-learn serving hooks for the demo models (shipped as code/inference.py).

Requests, all carrying rows of the 30 breast-cancer features:
  text/csv               one row per line, no header
  application/json       {"instances": [{"features": [..30 numbers..]}, ...]} (a bare list row is accepted too)
  application/jsonlines  one {"features": [...]} per line
Responses (Accept), one answer per row with the positive-class score and the label:
  text/csv               `score,label` per line
  application/json       {"predictions": [{"score": s, "predicted_label": l}, ...]} (built-in algorithms' shape)
  application/jsonlines  one {"score": s, "predicted_label": l} per line
This file runs inside the serving container, so it imports nothing from this repository.
"""
from __future__ import annotations

import json
import os

import joblib
import numpy as np

CSV, JSON, JSONLINES = "text/csv", "application/json", "application/jsonlines"
# The scikit-learn container answers JSON when the caller does not say what it accepts.
DEFAULT_ACCEPT = JSON


def model_fn(model_dir: str):
    """The fitted estimator saved as model.joblib in the unpacked model folder."""
    return joblib.load(os.path.join(model_dir, "model.joblib"))


def input_fn(request_body: bytes | str, request_content_type: str) -> np.ndarray:
    """A request body as a 2-D float array, one row per record."""
    text = request_body.decode("utf-8") if isinstance(request_body, (bytes, bytearray)) else request_body
    kind = _media_type(request_content_type)
    if kind == CSV:
        rows = [[float(field) for field in line.split(",")] for line in _lines(text)]
    elif kind == JSON:
        rows = [_features(instance) for instance in json.loads(text)["instances"]]
    elif kind == JSONLINES:
        rows = [_features(json.loads(line)) for line in _lines(text)]
    else:
        raise ValueError(f"unsupported content type {request_content_type!r}; send {CSV}, {JSON} or {JSONLINES}")
    if not rows:
        raise ValueError("the request holds no records")
    return np.asarray(rows, dtype=float)


def predict_fn(input_data: np.ndarray, model) -> list[dict]:
    """Score and label for every row, in request order."""
    scores = model.predict_proba(input_data)[:, 1]
    labels = model.predict(input_data)
    return [{"score": float(score), "predicted_label": int(label)} for score, label in zip(scores, labels)]


def output_fn(prediction: list[dict], accept: str | None) -> tuple[str, str]:
    """The response body and its content type, in the format the caller accepts."""
    kind = _media_type(accept)
    if kind in (None, "*/*"):
        kind = DEFAULT_ACCEPT
    if kind == CSV:
        body = "".join(f"{row['score']!r},{row['predicted_label']}\n" for row in prediction)
    elif kind == JSON:
        body = json.dumps({"predictions": prediction})
    elif kind == JSONLINES:
        body = "".join(json.dumps(row) + "\n" for row in prediction)
    else:
        raise ValueError(f"unsupported accept type {accept!r}; accept {CSV}, {JSON} or {JSONLINES}")
    return body, kind


def _media_type(content_type: str | None) -> str | None:
    # Callers may add parameters (`text/csv; charset=utf-8`); only the media type decides the format.
    if not content_type:
        return None
    return content_type.split(";", 1)[0].strip().lower() or None


def _lines(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if line.strip()]


def _features(instance) -> list[float]:
    values = instance["features"] if isinstance(instance, dict) else instance
    return [float(value) for value in values]
