"""build_world makes a consistent, reproducible world: models, capture, ground truth, registry, config."""
from __future__ import annotations

import base64
import collections
import datetime as dt
import json
import tarfile
from pathlib import Path

import pytest

from analysis.compare import METRICS
from steps.backends.registry import LocalRegistry
from steps.config import load_config
from steps.demo import INFERENCE_CODE, build_world

# Each build trains two models and starts a model server process that imports scikit-learn.
pytestmark = pytest.mark.slow
REQUESTS, SEED = 60, 11


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return build_world(tmp_path_factory.mktemp("world") / "ws", requests=REQUESTS, seed=SEED)


@pytest.fixture(scope="module")
def captured(world) -> list[dict]:
    return [json.loads(line) for path in sorted(world.capture_root.rglob("*.jsonl"))
            for line in path.read_text(encoding="utf-8").splitlines()]


@pytest.fixture(scope="module")
def ground_truth(world) -> list[tuple[Path, dict]]:
    return [(path, json.loads(line)) for path in sorted(world.ground_truth_root.rglob("*.jsonl"))
            for line in path.read_text(encoding="utf-8").splitlines()]


def rows_in(payload: dict) -> list:
    """The records of one captured body, split the way its content type says."""
    text = payload["data"] if payload["encoding"] != "BASE64" else base64.b64decode(payload["data"]).decode()
    kind = payload["observedContentType"].split(";")[0]
    if kind == "application/json":
        document = json.loads(text)
        return document.get("instances", document.get("predictions"))
    return text.splitlines()


def labels_in(record: dict) -> list:
    data = record["groundTruthData"]
    return json.loads(data["data"])["instances"] if data["encoding"] == "JSON" else data["data"].split("\n")


@pytest.mark.parametrize("member", ["model.joblib", "code/inference.py"])
@pytest.mark.parametrize("side", ["production_model", "candidate_model"])
def test_models_are_packaged_in_the_scikit_learn_serving_layout(world, side, member):
    with tarfile.open(getattr(world, side)) as archive:
        assert member in archive.getnames()
        if member == "code/inference.py":
            assert archive.extractfile(member).read() == INFERENCE_CODE.read_bytes()


def test_every_call_is_captured_once_with_an_answer_per_row(world, captured):
    assert world.calls == REQUESTS == world.captured_calls == len(captured)
    assert world.capture_objects == len(list(world.capture_root.rglob("*.jsonl"))) > 1
    assert all(path.is_relative_to(world.capture_root / world.endpoint / world.variant)
               for path in world.capture_root.rglob("*.jsonl"))
    per_call = [(len(rows_in(r["captureData"]["endpointInput"])), len(rows_in(r["captureData"]["endpointOutput"])))
                for r in captured]
    assert all(given == answered for given, answered in per_call)
    assert world.records == sum(given for given, _ in per_call) > world.calls


def test_traffic_mixes_callers_and_inference_ids(captured):
    kinds = collections.Counter((r["captureData"]["endpointInput"]["observedContentType"],
                                 r["captureData"]["endpointInput"]["encoding"]) for r in captured)
    assert {kind for kind, _ in kinds} >= {"text/csv", "application/json"}
    assert all(encoding == ("CSV" if kind.startswith("text/csv") else "JSON") for kind, encoding in kinds)
    with_id = sum("inferenceId" in r["eventMetadata"] for r in captured)
    assert 0 < with_id < len(captured)
    times = [r["eventMetadata"]["inferenceTime"] for r in captured]
    assert times == sorted(times)


def test_ground_truth_joins_capture_by_inference_id_else_event_id(world, captured, ground_truth):
    by_id = {r["eventMetadata"].get("inferenceId", r["eventMetadata"]["eventId"]): r for r in captured}
    assert len(by_id) == len(captured)
    assert world.labelled_calls == len(ground_truth) and world.ground_truth_files >= 1
    labelled_records = 0
    for path, record in ground_truth:
        call = by_id[record["eventMetadata"]["eventId"]]
        labels = labels_in(record)
        assert len(labels) == len(rows_in(call["captureData"]["endpointInput"]))
        labelled_records += len(labels)
        inferred = dt.datetime.strptime(call["eventMetadata"]["inferenceTime"], "%Y-%m-%dT%H:%M:%SZ")
        assert path.relative_to(world.ground_truth_root).parent.as_posix() >= f"{inferred:%Y/%m/%d/%H}"
    assert labelled_records == world.labelled_records
    assert 0.4 * world.calls <= world.labelled_calls <= 0.95 * world.calls


def test_the_candidate_waits_in_the_registry_for_approval(world):
    package = LocalRegistry(world.registry_path).describe(world.package_id)
    assert (package.status, package.group, package.model_uri) == (
        "PendingManualApproval", world.registry_group, str(world.candidate_model))


def test_the_config_loads_and_points_at_this_world(world):
    config = load_config(world.config_path)
    assert Path(config.capture.root) == world.capture_root
    assert Path(config.ground_truth.root) == world.ground_truth_root
    assert (Path(config.production.model), Path(config.candidate.model)) == (world.production_model,
                                                                             world.candidate_model)
    assert Path(config.workspace) / config.registry.path == world.registry_path
    assert config.registry.group == world.registry_group
    assert config.gate.checks and all(check.metric in METRICS for check in config.gate.checks)


def test_the_same_seed_builds_the_same_capture_and_ground_truth(world, tmp_path):
    first, second = world, build_world(tmp_path / "again", requests=REQUESTS, seed=SEED)

    def contents(root: Path) -> dict:
        return {p.relative_to(root): p.read_bytes() for p in root.rglob("*") if p.is_file()}

    assert contents(first.capture_root) == contents(second.capture_root)
    assert contents(first.ground_truth_root) == contents(second.ground_truth_root)
    assert first.production_model.read_bytes() == second.production_model.read_bytes()


def test_an_existing_world_is_never_overwritten(world):
    with pytest.raises(FileExistsError, match="new workspace"):
        build_world(world.workspace, requests=5, seed=SEED)
