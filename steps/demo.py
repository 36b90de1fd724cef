"""Build a small, realistic, reproducible world to run shadow-eval on.

A production and a candidate classifier trained on scikit-learn's breast-cancer data, packaged as
SageMaker scikit-learn model.tar.gz files; production served behind the container contract and sent
held-out traffic from CSV, JSON and JSON Lines callers; its capture written as SageMaker writes it;
Model Monitor ground truth for most calls; the candidate registered PendingManualApproval; a config.
The same seed gives the same files (times run back from a fixed reference time, not the clock).
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import gzip
import http.client
import io
import json
import logging
import random
import tarfile
import urllib.parse
from pathlib import Path

import joblib
import numpy as np
import yaml
from sklearn.datasets import load_breast_cancer
from sklearn.ensemble import GradientBoostingClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler

from steps.backends.registry import LocalRegistry
from steps.capture_writer import (CaptureWriter, CapturedCall, DataCaptureSettings, GroundTruthLabel, random_uuid4,
                                  write_ground_truth)
from steps.config import load_config
from steps.model_server import serve_model

log = logging.getLogger(__name__)

ENDPOINT, VARIANT, REGISTRY_GROUP = "breast-cancer-prod", "AllTraffic", "shadow-eval-demo"
INFERENCE_CODE = Path(__file__).with_name("demo_inference.py")
REFERENCE_BASE = dt.datetime(2025, 3, 3, 12, 0, tzinfo=dt.timezone.utc)
TRAFFIC_HOURS = 3
INFERENCE_ID_SHARE, GROUND_TRUTH_SHARE = 0.4, 0.7
ROWS_PER_CALL, ROWS_PER_CALL_WEIGHTS = (1, 2, 3, 4, 5), (50, 20, 15, 10, 5)
LABEL_DELAY_MINUTES = (2, 45)
# As AWS's examples do, JSON Lines is listed as JSON so it is captured as text, not base64.
DATA_CAPTURE_CONFIG = {"InitialSamplingPercentage": 100,
                       "CaptureContentTypeHeader": {"CsvContentTypes": ["text/csv"],
                                                    "JsonContentTypes": ["application/json",
                                                                         "application/jsonlines"]}}


@dataclasses.dataclass(frozen=True)
class Caller:
    """One kind of client: what it sends, what it accepts, how much of the traffic it is."""

    content_type: str
    accept: str
    weight: int


CALLERS = (Caller("text/csv", "text/csv", 45), Caller("text/csv; charset=utf-8", "text/csv", 5),
           Caller("text/csv", "application/json", 5), Caller("application/json", "application/json", 35),
           Caller("application/jsonlines", "application/jsonlines", 10))


@dataclasses.dataclass(frozen=True)
class PlannedCall:
    """One InvokeEndpoint call before it is sent."""

    caller: Caller
    body: bytes
    true_labels: tuple[int, ...]
    """The ground truth of each row, known to the demo, revealed later as Model Monitor ground truth."""
    inference_time: dt.datetime
    inference_id: str | None


@dataclasses.dataclass(frozen=True)
class World:
    """Everything build_world made, and how much of it."""

    workspace: Path
    config_path: Path
    capture_root: Path
    ground_truth_root: Path
    production_model: Path
    candidate_model: Path
    registry_path: Path
    server_log: Path
    endpoint: str
    variant: str
    registry_group: str
    package_id: str
    reference_time: dt.datetime
    calls: int
    captured_calls: int
    records: int
    labelled_calls: int
    labelled_records: int
    capture_objects: int
    ground_truth_files: int


def build_world(workspace: Path, requests: int = 600, seed: int = 7) -> World:
    """Models, captured traffic, ground truth, a pending candidate and demo.yaml under a new workspace."""
    workspace = Path(workspace).resolve()
    config_path, capture_root, ground_truth_root = (workspace / "demo.yaml", workspace / "capture",
                                                    workspace / "ground-truth")
    for existing in (config_path, capture_root, ground_truth_root, workspace / "models"):
        if existing.exists():
            raise FileExistsError(f"{existing} exists; build the demo world in a new workspace")
    rng, reference = random.Random(seed), reference_time(seed)
    production, candidate, traffic, truth = train_models(seed)
    production_model = package_model(production, workspace / "models" / "production" / "model.tar.gz")
    candidate_model = package_model(candidate, workspace / "models" / "candidate" / "model.tar.gz")
    calls = plan_calls(rng, traffic, truth, requests, reference)
    server_log = workspace / "logs" / "demo-production-server.log"
    settings = DataCaptureSettings.from_api({**DATA_CAPTURE_CONFIG, "DestinationS3Uri": str(capture_root)},
                                            ENDPOINT, VARIANT)
    captured = []
    with serve_model(production_model, server_log) as base_url, CaptureWriter(settings, rng) as writer:
        for call in calls:
            answer, answer_type = invoke(base_url, call)
            done = writer.capture(call.body, call.caller.content_type, answer, answer_type, call.inference_time,
                                  call.inference_id)
            if done is not None:
                captured.append((call, done))
    labels = label_calls(rng, captured)
    ground_truth_files = write_ground_truth(ground_truth_root, labels)
    registry_path = workspace / "registry.sqlite"
    package_id = LocalRegistry(registry_path, clock=lambda: reference).register(
        REGISTRY_GROUP, str(candidate_model), status="PendingManualApproval",
        description="Gradient-boosted candidate for the breast-cancer classifier (shadow-eval demo)",
        metadata={"framework": "scikit-learn", "estimator": type(candidate).__name__, "demo_seed": str(seed)})
    write_config(config_path, workspace, production_model, candidate_model, capture_root, ground_truth_root)
    labelled_ids = {label.event_id for label in labels}
    world = World(
        workspace=workspace, config_path=config_path, capture_root=capture_root,
        ground_truth_root=ground_truth_root, production_model=production_model, candidate_model=candidate_model,
        registry_path=registry_path, server_log=server_log, endpoint=ENDPOINT, variant=VARIANT,
        registry_group=REGISTRY_GROUP, package_id=package_id, reference_time=reference, calls=len(calls),
        captured_calls=len(captured), records=sum(len(call.true_labels) for call, _ in captured),
        labelled_calls=len(labels),
        labelled_records=sum(len(call.true_labels) for call, done in captured if done.ground_truth_id in labelled_ids),
        capture_objects=len(writer.objects), ground_truth_files=len(ground_truth_files))
    log.info("demo world in %s: %d calls, %d records (%d labelled) in %d capture objects; candidate %s",
             workspace, world.calls, world.records, world.labelled_records, world.capture_objects, package_id)
    return world


def reference_time(seed: int) -> dt.datetime:
    """The demo's 'now': traffic happens in the hours before it; fixed per seed so runs repeat."""
    return REFERENCE_BASE + dt.timedelta(days=seed)


def train_models(seed: int) -> tuple[Pipeline, GradientBoostingClassifier, np.ndarray, np.ndarray]:
    """Production (scaled logistic regression), candidate (gradient boosting), held-out traffic and its labels."""
    features, target = load_breast_cancer(return_X_y=True)
    x_train, x_traffic, y_train, y_traffic = train_test_split(features, target, test_size=0.4, random_state=seed,
                                                              stratify=target)
    production = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000)).fit(x_train, y_train)
    candidate = GradientBoostingClassifier(n_estimators=100, max_depth=2, random_state=seed).fit(x_train, y_train)
    for name, model in (("production", production), ("candidate", candidate)):
        log.info("%s accuracy on the held-out traffic set: %.3f", name, model.score(x_traffic, y_traffic))
    return production, candidate, x_traffic, y_traffic


def package_model(model, tarball: Path, inference_code: Path = INFERENCE_CODE) -> Path:
    """model.tar.gz in the SageMaker scikit-learn layout: model.joblib and code/inference.py."""
    pickled = io.BytesIO()
    joblib.dump(model, pickled)
    members = {"model.joblib": pickled.getvalue(), "code/inference.py": inference_code.read_bytes()}
    tarball.parent.mkdir(parents=True, exist_ok=True)
    # Fixed times and owners so the same model gives the same bytes.
    with tarball.open("wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as zipped, \
            tarfile.open(fileobj=zipped, mode="w", format=tarfile.PAX_FORMAT) as archive:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), 0o644, 0
            archive.addfile(info, io.BytesIO(data))
    return tarball


def plan_calls(rng: random.Random, traffic: np.ndarray, truth: np.ndarray, requests: int,
               reference: dt.datetime) -> list[PlannedCall]:
    """Calls in time order over the hours before reference, rows drawn from the held-out set."""
    window_ms = TRAFFIC_HOURS * 3600 * 1000
    times = sorted(reference - dt.timedelta(milliseconds=rng.randrange(1, window_ms)) for _ in range(requests))
    calls = []
    for number, moment in enumerate(times):
        caller = rng.choices(CALLERS, weights=[c.weight for c in CALLERS])[0]
        picked = [rng.randrange(len(traffic)) for _ in range(rng.choices(ROWS_PER_CALL, ROWS_PER_CALL_WEIGHTS)[0])]
        rows = [traffic[i].tolist() for i in picked]
        inference_id = None
        if rng.random() < INFERENCE_ID_SHARE:
            inference_id = random_uuid4(rng) if rng.random() < 0.5 else f"order-{number:06d}"
        calls.append(PlannedCall(caller, request_body(rng, caller.content_type, rows),
                                 tuple(int(truth[i]) for i in picked), moment, inference_id))
    return calls


def request_body(rng: random.Random, content_type: str, rows: list[list[float]]) -> bytes:
    """What a client of this content type would send for these rows."""
    if content_type.startswith("text/csv"):
        text = "\n".join(",".join(repr(value) for value in row) for row in rows)
        # Some CSV clients end the body with a newline, some do not.
        return (text + "\n" if rng.random() < 0.5 else text).encode("utf-8")
    if content_type == "application/json":
        return json.dumps({"instances": [{"features": row} for row in rows]}).encode("utf-8")
    return "\n".join(json.dumps({"features": row}) for row in rows).encode("utf-8")


def invoke(base_url: str, call: PlannedCall) -> tuple[bytes, str | None]:
    """POST /invocations as InvokeEndpoint would; the response body and its Content-Type."""
    address = urllib.parse.urlsplit(base_url)
    connection = http.client.HTTPConnection(address.hostname, address.port, timeout=60)
    try:
        connection.request("POST", "/invocations", body=call.body,
                           headers={"Content-Type": call.caller.content_type, "Accept": call.caller.accept})
        response = connection.getresponse()
        body = response.read()
        if response.status != 200:
            raise RuntimeError(f"the production model answered {response.status}: {body[:500]!r}")
        return body, response.getheader("Content-Type")
    finally:
        connection.close()


def label_calls(rng: random.Random, captured: list[tuple[PlannedCall, CapturedCall]]) -> list[GroundTruthLabel]:
    """Ground truth for a share of the captured calls, collected minutes after each inference."""
    labels = []
    for call, done in captured:
        if rng.random() >= GROUND_TRUTH_SHARE:
            continue
        if len(call.true_labels) == 1 or rng.random() < 0.5:
            data, encoding = "\n".join(str(label) for label in call.true_labels), "CSV"
        else:
            data, encoding = json.dumps({"instances": [{"label": label} for label in call.true_labels]}), "JSON"
        delay = dt.timedelta(minutes=rng.uniform(*LABEL_DELAY_MINUTES))
        labels.append(GroundTruthLabel(done.ground_truth_id, data, encoding, call.inference_time + delay))
    return labels


def write_config(path: Path, workspace: Path, production_model: Path, candidate_model: Path, capture_root: Path,
                 ground_truth_root: Path) -> None:
    """demo.yaml with absolute paths, so it runs from any directory; checked by load_config."""
    # The demo models answer `score,label` in CSV, and {"predictions": [{"score", "predicted_label"}]} in JSON.
    output = {"format": "auto", "records_path": "predictions", "score_path": "score",
              "label_path": "predicted_label", "score_column": 0, "label_column": 1}
    config = {
        "workspace": str(workspace),
        "capture": {"root": str(capture_root), "endpoint": ENDPOINT, "variant": VARIANT,
                    "instances_path": "instances"},
        "production": {"model": str(production_model), "output": dict(output)},
        "candidate": {"model": str(candidate_model), "output": dict(output)},
        "ground_truth": {"root": str(ground_truth_root), "records_path": "instances", "label_path": "label"},
        # The default policy judges accuracy by non-inferiority; this demo accepts a loss of up to 5 points
        # (a small labelled window), and reports agreement and replay noise as warnings.
        "gate": {"min_records": 50, "min_coverage": 0.99, "slice_alpha": 0.05,
                 "policy": {"accuracy_margin": 0.05}, "checks": [
            {"metric": "label_agreement", "threshold": 0.9, "direction": "at_least", "severity": "warning",
             "name": "candidate agrees with production on at least 90% of labels"},
            {"metric": "replay_exact_match_rate", "threshold": 0.9, "direction": "at_least", "severity": "warning",
             "name": "production replays as captured (noise floor)"},
            {"metric": "tolerant_match_rate", "threshold": 0.5, "direction": "at_least", "severity": "warning",
             "name": "half of the scores within tolerance of production"}]},
        "registry": {"kind": "local", "path": "registry.sqlite", "group": REGISTRY_GROUP},
    }
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    load_config(path)
