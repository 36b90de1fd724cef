"""Serving hooks of the verdict worlds' models (shipped as code/inference.py; imports nothing from the repo).

model.joblib holds a dict of parameters; every answer is a deterministic function of the input row
(plus Gaussian score noise when `noise` is set, to model a nondeterministic production).
Rows: x0, x1, x2, x3 (numbers) and tier (a, b, c or d).
Requests: text/csv (one row per line), application/json ({"instances": [{x0.., tier}, ...]} or rows as
lists), application/jsonlines (one object per line). Answers by Accept (or always in `answers`, when set:
a model that ignores Accept, as some containers do), one per row:
  text/csv               the score, one per line
  application/json       {"predictions": [{"score": s, "predicted_label": l}, ...]} (regression: score only)
  application/jsonlines  one {"score": s, "predicted_label": l} per line
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import random

import joblib

FIELDS = ("x0", "x1", "x2", "x3", "tier")
TIER_EFFECT = {"a": -0.6, "b": -0.2, "c": 0.2, "d": 0.6}
_NOISE = random.Random()  # seeded from the OS: a nondeterministic production differs run to run


def model_fn(model_dir: str) -> dict:
    """The model's parameters."""
    return joblib.load(os.path.join(model_dir, "model.joblib"))


def input_fn(body, content_type: str) -> list[list]:
    """Rows [x0, x1, x2, x3, tier] from a CSV, JSON or JSON Lines body."""
    text = body.decode("utf-8") if isinstance(body, (bytes, bytearray)) else body
    kind = content_type.split(";")[0].strip()
    lines = [line for line in text.splitlines() if line.strip()]
    if kind == "text/csv":
        return [_row(line.split(",")) for line in lines]
    if kind == "application/json":
        document = json.loads(text)
        return [_row(item) for item in (document["instances"] if isinstance(document, dict) else document)]
    if kind == "application/jsonlines":
        return [_row(json.loads(line)) for line in lines]
    raise ValueError(f"unsupported content type {content_type!r}")


def _row(item) -> list:
    values = [item[name] for name in FIELDS] if isinstance(item, dict) else list(item)
    if len(values) != len(FIELDS):
        raise ValueError(f"a row has {len(FIELDS)} fields ({', '.join(FIELDS)}), got {len(values)}")
    return [float(v) for v in values[:4]] + [str(values[4]).strip()]


def predict_fn(rows: list[list], params: dict) -> tuple[dict, list[float]]:
    """The parameters and one answer per row; with `noise`, the scores jitter from call to call."""
    answers = [answer(row, params) for row in rows]
    if params.get("noise"):
        answers = [min(1.0, max(0.0, a + _NOISE.gauss(0.0, params["noise"]))) for a in answers]
    return params, [round(a, 6) for a in answers]


def output_fn(prediction: tuple[dict, list[float]], accept: str) -> tuple[str, str]:
    """The answers in the caller's Accept type, or in the model's fixed `answers` type."""
    params, answers = prediction
    task = params["task"]
    kind = params.get("answers") or (accept or "application/json").split(";")[0].strip()
    if kind == "text/csv":
        return "".join(f"{a!r}\n" for a in answers), "text/csv"
    records = [{"score": a} if task == "regression" else {"score": a, "predicted_label": int(a >= 0.5)}
               for a in answers]
    if kind == "application/jsonlines":
        return "".join(json.dumps(r) + "\n" for r in records), "application/jsonlines"
    return json.dumps({"predictions": records}), "application/json"


def unit(row: list) -> float:
    """A uniform number in [0, 1) fixed by the row's first two features: which rows a rule touches."""
    digest = hashlib.blake2b(f"{row[0]:.4f}|{row[1]:.4f}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def in_segment(row: list, segment: dict | None) -> bool:
    """The rows a segment rule picks: x2 a whole number (as one channel sends it), or x3 above a cut."""
    if not segment:
        return False
    if segment["kind"] == "whole_x2":
        return float(row[2]).is_integer()
    if segment["kind"] == "x3_above":
        return row[3] > segment["cut"]
    raise ValueError(f"unknown segment kind {segment['kind']!r}")


def answer(row: list, params: dict) -> float:
    """The noise-free answer: a probability of class 1, or a regression value."""
    x0, x1, x2, x3, tier = row
    effect = TIER_EFFECT.get(tier, 0.0)
    rule, u = params.get("rule", "same"), unit(row)
    if params["task"] == "regression":
        value = 100 + 8 * x0 - 5 * x1 + 0.2 * (x2 - 30) + 0.1 * (x3 - 50) + 5 * effect
        if rule == "shift":
            value += params["shift"] * (1 if u < 0.5 else -1)
        return value
    score = 1 / (1 + math.exp(-(1.3 * x0 - 0.9 * x1 + 0.02 * (x2 - 30) + 0.03 * (x3 - 50) + effect)))
    if rule == "constant":
        return params["constant"]
    if rule == "invert":
        return 1 - score
    if rule == "flip":
        share = params["segment_share"] if in_segment(row, params.get("segment")) else params["flip_share"]
        return 1 - score if u < share else score
    return score
