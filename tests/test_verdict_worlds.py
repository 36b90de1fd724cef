"""The default policy's verdict on worlds with known truth (issue 10 item 6), through the real path.

Each case builds a world (bench/verdict_worlds.py), checks the world really has the property it claims,
measured on its own ground truth, then runs `shadow-eval run` (pipeline.main -> run_local: capture ->
prepare -> replay through the model server -> join -> compare -> gate -> registry) with
configs/local.yaml's gate untouched, and asserts the decision, its exit status and the registry.
"""
from __future__ import annotations

import contextlib
import io
import json
import re
from pathlib import Path

import pytest

import pipeline
from bench import verdict_worlds as worlds
from steps.backends.registry import LocalRegistry

SEED = 20
RECORDS = 1500
EXIT = {"Approved": 0, "Rejected": 3, "Inconclusive": 4}
# Segment names the reasons may use for the unnamed segments (attribute key=value; CSV column 3 or field x3).
SEGMENT_PATTERNS = {"segment_attribute": r"channel\W{0,3}partner",
                    "segment_column": r"\bx3\b|\bc3\b|(col(umn)?|field|feature)[\W_]{0,2}\[?3\b|\[3\]"}
MISSING = re.compile(r"not computed|no value|cannot judge|awaiting", re.IGNORECASE)
FAST = {("identical", False), ("identical", True), ("better", True), ("worse", True), ("better", False),
        ("segment_attribute", True)}

_built: dict[str, worlds.World] = {}


@pytest.fixture(scope="module")
def world_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("worlds")


def world(name: str, root: Path) -> worlds.World:
    """One world per spec for the whole module: its labelled and unlabelled runs share the capture."""
    if name not in _built:
        _built[name] = worlds.build(root / name, worlds.WORLDS[name], seed=SEED, records=RECORDS)
    return _built[name]


def cases():
    for name, spec in worlds.WORLDS.items():
        if name == "better3":
            continue  # the bench's world; "better" is the test's
        for labels in (False, True):
            if name.startswith("shape") and labels:
                continue  # the shape is the point; labels add nothing
            expected = spec.expect_labelled if labels else spec.expect_unlabelled
            marks = () if (name, labels) in FAST else (pytest.mark.slow,)
            yield pytest.param(name, labels, expected, marks=marks,
                               id=f"{name}-{'labels' if labels else 'no-labels'}-{expected}")


def run_cli(argv: list[str]) -> tuple[int, dict]:
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        code = pipeline.main(argv)
    return code, json.loads(buffer.getvalue())


@pytest.mark.parametrize(("name", "labels", "expected"), list(cases()))
def test_default_policy_decides_as_the_evidence_says(world_dir, name, labels, expected):
    built = world(name, world_dir)
    assert_world_has_its_property(built)
    package = built.register_candidate()
    code, result = run_cli(["run", "--config", str(built.config(labels)), "--candidate-package", package, "--json"])
    evaluation = json.loads((Path(result["report"]).parent / "evaluation.json").read_text())
    records = result["records"]
    assert records["captured"] == len(built.records) == records["joined"] + records["quarantined"]
    assert (result["decision"], code) == (expected, EXIT[expected]), evaluation["reasons"]
    assert evaluation["decision"] == expected
    status = LocalRegistry(built.workspace / "registry.sqlite").describe(package).status
    assert status == ("PendingManualApproval" if expected == "Inconclusive" else expected)
    reasons = " ".join(evaluation["reasons"])
    if expected == "Rejected":  # on evidence against the candidate, not only on what could not be computed
        critical = [r for r in evaluation["reasons"] if not r.lower().startswith("warning")]
        assert any(not MISSING.search(reason) for reason in critical), evaluation["reasons"]
    if name in SEGMENT_PATTERNS and labels:
        assert re.search(SEGMENT_PATTERNS[name], reasons, re.IGNORECASE), evaluation["reasons"]
    if built.spec.task == "regression" and labels:  # judged on mean absolute error
        assert "mae" in json.dumps(evaluation["reasons"] if expected == "Rejected" else evaluation).lower()


def assert_world_has_its_property(built: worlds.World) -> None:
    """The world is what its name says, measured on its own ground truth (not by the tool under test)."""
    spec, labelled = built.spec, built.labelled()
    assert built.captured_mismatches == 0 or spec.production_noise, "production served what the rules compute"
    delta, low, high = worlds.paired_delta(labelled, spec.task)
    name = spec.name
    if name in ("identical", "nondeterministic", "regression_identical") or name.startswith("shape"):
        assert delta == 0 and all(r.production == r.candidate for r in built.records)
    elif name == "better":
        assert 0.03 <= delta <= 0.05 and low > 0.01
    elif name == "worse":
        assert -0.04 <= delta <= -0.02 and high < -0.01
    elif name in ("constant", "inverted"):
        assert delta < -0.2
    elif name.startswith("segment"):
        segment = built.labelled(lambda r: r.segment)
        assert 0.08 <= len(segment) / len(labelled) <= 0.16
        seg_delta, _, seg_high = worlds.paired_delta(segment, spec.task)
        assert seg_delta <= -0.1 and seg_high < -0.05
        assert low > -0.01, "the whole run stays within the default margin (one point)"
    elif name == "regression_better":
        production_mae = worlds.quality(labelled, "regression", "production")
        assert delta < -0.1 * production_mae and high < 0  # MAE falls by more than 10%
    elif name == "regression_worse":
        production_mae = worlds.quality(labelled, "regression", "production")
        assert delta > 0.1 * production_mae and low > 0
    else:
        raise AssertionError(f"no property stated for world {name}")


@pytest.mark.parametrize("name", [n for n in worlds.WORLDS if n != "nondeterministic"])
def test_each_world_has_its_property_in_expectation(name):
    """Over 20000 drawn records (no files), the world's deltas sit where its spec puts them."""
    spec = worlds.WORLDS[name]
    calls, _ = worlds.draw_records(spec, seed=1, records=20_000)
    records = [r for call in calls for r in call]
    delta, _, _ = worlds.paired_delta(records, spec.task)
    agreeing = [r for r in records if (r.production >= 0.5) == (r.candidate >= 0.5)]
    expected = {"better": 0.04, "better3": 0.03, "worse": -0.03, "segment_attribute": 0.021,
                "segment_column": 0.021}.get(name)
    if expected is not None:
        assert delta == pytest.approx(expected, abs=0.007)
    if spec.task == "classification" and agreeing:  # where the models agree, both are right BASE_ACCURACY of the time
        assert worlds.quality(agreeing, spec.task, "production") == pytest.approx(worlds.BASE_ACCURACY, abs=0.02)
    if name.startswith("segment"):
        segment = [r for r in records if r.segment]
        assert len(segment) / len(records) == pytest.approx(0.12, abs=0.015)
        assert worlds.paired_delta(segment, spec.task)[0] == pytest.approx(-0.15, abs=0.02)
    if name == "segment_attribute":
        assert all(r.segment == (r.channel == "partner") for r in records)


def test_nondeterministic_production_replays_with_small_noise(world_dir):
    """Production's captured answers differ from its noise-free ones by a little on most records."""
    built = world("nondeterministic", world_dir)
    assert built.captured_mismatches > 0.5 * len(built.records)
    flips = sum(1 for r in built.records if abs(r.production - 0.5) < 0.004)
    assert flips < 0.02 * len(built.records)  # labels near the threshold are the only ones noise can flip


def test_capture_carries_custom_attributes_and_both_encodings(world_dir):
    built = world("identical", world_dir)
    lines = [json.loads(line) for path in built.capture_root.rglob("*.jsonl") for line in path.read_text().splitlines()]
    assert sum(len(worlds.answered_scores(line["captureData"]["endpointOutput"]["data"].encode(),
                                          line["captureData"]["endpointOutput"]["observedContentType"]))
               for line in lines) == len(built.records)
    assert {line["eventMetadata"]["customAttributes"] for line in lines} == {
        "channel=web", "channel=app", "channel=partner"}
    assert {line["captureData"]["endpointInput"]["encoding"] for line in lines} == {"CSV", "JSON"}


@pytest.mark.parametrize("name", ["identical", "shape_json_document"])
def test_in_process_answers_write_the_same_capture_as_the_served_model(tmp_path, name):
    """The bench's large worlds skip the HTTP round trips; their capture is byte for byte the served one."""
    served, direct = (worlds.build(tmp_path / kind, worlds.WORLDS[name], seed=4, records=120, serve=kind == "served")
                      for kind in ("served", "direct"))
    files = {kind: {p.relative_to(w.capture_root): p.read_bytes() for p in w.capture_root.rglob("*.jsonl")}
             for kind, w in (("served", served), ("direct", direct))}
    assert files["served"] == files["direct"] and files["served"]
