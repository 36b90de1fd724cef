"""Worlds with known truth for the verdict tests and bench: capture, models, ground truth, config.

    world = build(tmp_path, WORLDS["better"], seed=3)
    outcome = pipeline.run_local(load_config(world.config(labels=True)), candidate_package=world.register_candidate())

A world is a production and a candidate model (SageMaker scikit-learn layout, code/inference.py from
verdict_inference.py) whose answers are deterministic functions of the input row, a production endpoint's
data capture written by steps.capture_writer from production's real answers (served by
steps.model_server), Model Monitor ground truth for most calls, a pending candidate in a local registry,
and a config that is configs/local.yaml with only paths changed: the gate is the default policy.

Truth is drawn after the answers, conditioned on them, so each world's property is exact in
expectation: where the models agree the label is production's with probability BASE_ACCURACY; where
they disagree it is the candidate's with probability `candidate_right` (`segment_candidate_right`
inside the segment). Accuracy delta = disagreement share x (2 x candidate_right - 1).
Traffic: CSV callers (75%) and JSON callers (25%) sending x0..x3 and a categorical tier, with
CustomAttributes `channel=web|app|partner`; the partner integration sends x2 as a whole number.
Used by tests/test_verdict_worlds.py and bench/verdict.py.
"""
from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import http.client
import importlib.util
import json
import math
import random
import statistics
import urllib.parse
from pathlib import Path

import yaml

from steps.backends.registry import LocalRegistry
from steps.capture_writer import CaptureWriter, DataCaptureSettings, GroundTruthLabel, write_ground_truth
from steps.config import load_config
from steps import demo
from steps.demo import DATA_CAPTURE_CONFIG
from steps.model_server import serve_model

REPO = Path(__file__).resolve().parent.parent
INFERENCE_CODE = Path(__file__).with_name("verdict_inference.py")
DEFAULT_CONFIG = REPO / "configs" / "local.yaml"
ENDPOINT, VARIANT = "worlds-prod", "AllTraffic"
REFERENCE = dt.datetime(2025, 6, 2, 12, 0, tzinfo=dt.timezone.utc)
TRAFFIC_HOURS = 3
BASE_ACCURACY = 0.85          # production's accuracy (where the models agree, truth is production's label this often)
REGRESSION_SIGMA = 10.0       # truth = the true model's value + N(0, sigma)
LABELLED_SHARE = 0.9          # calls with ground truth
INFERENCE_ID_SHARE = 0.3
ROWS_PER_CALL, ROWS_WEIGHTS = (1, 2, 3, 4, 5), (50, 20, 15, 10, 5)
CHANNELS, CHANNEL_WEIGHTS = ("web", "app", "partner"), (0.55, 0.33, 0.12)
TIERS, TIER_WEIGHTS = ("a", "b", "c", "d"), (0.4, 0.3, 0.2, 0.1)
X3_MEAN, X3_SD = 50.0, 15.0
X3_CUT = X3_MEAN + 1.175 * X3_SD  # the top 12% of x3


@dataclasses.dataclass(frozen=True)
class Spec:
    """What a world is: the task, the two models, how truth relates to them, who calls."""

    name: str
    task: str = "classification"
    candidate: dict = dataclasses.field(default_factory=lambda: {"rule": "same"})
    production_noise: float = 0.0
    candidate_right: float = 0.5
    """Where the models disagree: the chance truth is the candidate's label (regression: 1 = truth is the candidate's)."""
    segment_candidate_right: float | None = None
    callers: tuple[tuple[str, str, float], ...] = (("text/csv", "text/csv", 0.75),
                                                   ("application/json", "application/json", 0.25))
    expect_labelled: str = "Approved"
    """The verdict issue 10 asks of the default policy with ground truth, and without it."""
    expect_unlabelled: str = "Approved"
    answers: str | None = None
    """Both models answer in this media type whatever the Accept (a CSV batch gets one JSON document)."""


_FLIP = {"rule": "flip", "flip_share": 0.06}
_SEGMENT_ATTRIBUTE = {"rule": "flip", "flip_share": 0.05, "segment_share": 0.15, "segment": {"kind": "whole_x2"}}
_SEGMENT_COLUMN = {"rule": "flip", "flip_share": 0.05, "segment_share": 0.15,
                   "segment": {"kind": "x3_above", "cut": X3_CUT}}
_CSV_CALLERS = (("text/csv", "text/csv", 1.0),)

WORLDS = {spec.name: spec for spec in (
    Spec("identical"),
    # +4 points: 6% disagreement, truth the candidate's on 83.3% of it.
    Spec("better", candidate=_FLIP, candidate_right=0.8333, expect_unlabelled="Inconclusive"),
    # +3 points (the bench's), and -3 points.
    Spec("better3", candidate=_FLIP, candidate_right=0.75, expect_unlabelled="Inconclusive"),
    Spec("worse", candidate=_FLIP, candidate_right=0.25, expect_labelled="Rejected", expect_unlabelled="Inconclusive"),
    Spec("constant", candidate={"rule": "constant", "constant": 0.2}, candidate_right=1 - BASE_ACCURACY,
         expect_labelled="Rejected", expect_unlabelled="Rejected"),
    Spec("inverted", candidate={"rule": "invert"}, candidate_right=1 - BASE_ACCURACY,
         expect_labelled="Rejected", expect_unlabelled="Rejected"),
    # -15 points on channel=partner (12% of calls), +4.5 elsewhere: about +2 points overall.
    Spec("segment_attribute", candidate=_SEGMENT_ATTRIBUTE, candidate_right=0.95, segment_candidate_right=0.0,
         expect_labelled="Rejected", expect_unlabelled="Inconclusive"),
    # The same on x3's top 12% (x3 > X3_CUT), a range of a column no config names.
    Spec("segment_column", candidate=_SEGMENT_COLUMN, candidate_right=0.95, segment_candidate_right=0.0,
         expect_labelled="Rejected", expect_unlabelled="Inconclusive"),
    # Production (and the identical candidate, the same artifact) jitters its scores by N(0, 0.002) per call.
    Spec("nondeterministic", production_noise=0.002),
    Spec("regression_identical", task="regression"),
    # The candidate is off by 6 (0.6 sigma) either way: MAE about 9.4 against 8.0 for the model truth centres on.
    Spec("regression_better", task="regression", candidate={"rule": "shift", "shift": 6.0}, candidate_right=1.0,
         expect_unlabelled="Inconclusive"),
    Spec("regression_worse", task="regression", candidate={"rule": "shift", "shift": 6.0}, candidate_right=0.0,
         expect_labelled="Rejected", expect_unlabelled="Inconclusive"),
    # CSV callers; the models answer every batch with one {"predictions": [...]} document, or JSON Lines.
    Spec("shape_json_document", callers=_CSV_CALLERS, answers="application/json"),
    Spec("shape_jsonlines", callers=_CSV_CALLERS, answers="application/jsonlines"),
)}


@dataclasses.dataclass(frozen=True)
class Record:
    """One input row as the world knows it."""

    row: list
    channel: str
    production: float
    """Production's noise-free answer."""
    candidate: float
    truth: float | int
    segment: bool
    """In the rows the candidate's segment rule picks (the partner channel's, or x3's top range)."""
    labelled: bool


@dataclasses.dataclass(frozen=True)
class World:
    spec: Spec
    seed: int
    workspace: Path
    capture_root: Path
    ground_truth_root: Path
    production_model: Path
    candidate_model: Path
    records: list[Record]
    calls: int
    captured_mismatches: int
    """Captured production answers that differ from the noise-free answer (0 unless production is noisy)."""

    def labelled(self, where=lambda record: True) -> list[Record]:
        """The records ground truth covers (those a run with labels is judged on)."""
        return [r for r in self.records if r.labelled and where(r)]

    def config(self, labels: bool) -> Path:
        """The run's config: configs/local.yaml with this world's paths, with or without the ground truth."""
        return self.workspace / ("world.yaml" if labels else "world-unlabelled.yaml")

    def register_candidate(self) -> str:
        """A new PendingManualApproval package for the candidate (one per run, so each verdict has its own)."""
        return LocalRegistry(self.workspace / "registry.sqlite", clock=lambda: REFERENCE).register(
            "shadow-eval-demo", str(self.candidate_model), status="PendingManualApproval",
            description=f"verdict world {self.spec.name} (seed {self.seed})",
            metadata={"world": self.spec.name, "seed": str(self.seed)})


# ------------------------------------------------------------------ the models

def load_rules():
    """verdict_inference as a module: the builder computes answers with the very code the models serve."""
    spec = importlib.util.spec_from_file_location("verdict_inference", INFERENCE_CODE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


RULES = load_rules()


def production_params(spec: Spec, noise: bool = True) -> dict:
    return {"task": spec.task, "rule": "same", "noise": spec.production_noise if noise else 0.0,
            "answers": spec.answers}


def candidate_params(spec: Spec) -> dict:
    """An identical candidate is production's model, noise included (the same artifact)."""
    if spec.candidate.get("rule") == "same":
        return production_params(spec)
    return {"task": spec.task, "answers": spec.answers, **spec.candidate}


def package_model(params: dict, tarball: Path) -> Path:
    """model.tar.gz: model.joblib (the parameters) and code/inference.py, byte-identical per parameters."""
    return demo.package_model(params, tarball, INFERENCE_CODE)


# ------------------------------------------------------------------ traffic and truth

def draw_row(rng: random.Random, channel: str) -> list:
    """x0, x1 ~ N(0, 1); x2 months in [0, 60) (whole numbers from the partner channel only); x3 ~ N(50, 15)."""
    x2 = round(rng.uniform(0, 60), 2)
    if channel == "partner":
        x2 = float(int(x2))
    elif x2.is_integer():
        x2 += 0.01
    return [round(rng.gauss(0, 1), 4), round(rng.gauss(0, 1), 4), x2, round(rng.gauss(X3_MEAN, X3_SD), 2),
            rng.choices(TIERS, TIER_WEIGHTS)[0]]


def draw_truth(rng: random.Random, spec: Spec, production: float, candidate: float, segment: bool) -> float | int:
    """Truth conditioned on the two answers, so the world's deltas hold by construction."""
    right = spec.segment_candidate_right if segment and spec.segment_candidate_right is not None \
        else spec.candidate_right
    if spec.task == "regression":
        centre = candidate if rng.random() < right else production
        return round(centre + rng.gauss(0, REGRESSION_SIGMA), 4)
    p, c = int(production >= 0.5), int(candidate >= 0.5)
    if p == c:
        return p if rng.random() < BASE_ACCURACY else 1 - p
    return c if rng.random() < right else p


def draw_records(spec: Spec, seed: int, records: int) -> tuple[list[list[Record]], random.Random]:
    """Calls (lists of records) of at least `records` records, with answers and truth; and the rng, for the rest."""
    rng = random.Random(seed)
    prod, cand = production_params(spec, noise=False), candidate_params(spec) | {"noise": 0.0}
    calls, total = [], 0
    while total < records:
        channel = rng.choices(CHANNELS, CHANNEL_WEIGHTS)[0]
        call = []
        for _ in range(rng.choices(ROWS_PER_CALL, ROWS_WEIGHTS)[0]):
            row = draw_row(rng, channel)
            p, c = RULES.answer(row, prod), RULES.answer(row, cand)
            segment = RULES.in_segment(row, spec.candidate.get("segment"))
            call.append(Record(row, channel, round(p, 6), round(c, 6),
                               draw_truth(rng, spec, round(p, 6), round(c, 6), segment), segment, False))
        calls.append(call)
        total += len(call)
    return calls, rng


def request_body(content_type: str, rows: list[list], rng: random.Random) -> bytes:
    if content_type == "text/csv":
        text = "\n".join(",".join(str(v) for v in row) for row in rows)
        return (text + "\n" if rng.random() < 0.5 else text).encode()
    return json.dumps({"instances": [dict(zip(RULES.FIELDS, row)) for row in rows]}).encode()


# ------------------------------------------------------------------ the world on disk

def build(workspace: Path, spec: Spec, seed: int, records: int = 1500, serve: bool = True) -> World:
    """Write the world under a new workspace: models, capture of production's answers, ground truth, configs.

    serve: production answers over HTTP from steps.model_server; else its hooks answer in-process (the same
    code without the HTTP round trips, for large worlds). Ground truth covers LABELLED_SHARE of the calls;
    world.config(labels=False) runs without it.
    """
    workspace = Path(workspace).resolve()
    workspace.mkdir(parents=True, exist_ok=True)
    calls, rng = draw_records(spec, seed, records)
    production_model = package_model(production_params(spec), workspace / "models" / "production" / "model.tar.gz")
    candidate_model = package_model(candidate_params(spec), workspace / "models" / "candidate" / "model.tar.gz")
    capture_root = workspace / "capture"
    settings = DataCaptureSettings.from_api({**DATA_CAPTURE_CONFIG, "DestinationS3Uri": str(capture_root)},
                                            ENDPOINT, VARIANT)
    window_ms = TRAFFIC_HOURS * 3600 * 1000
    times = sorted(REFERENCE - dt.timedelta(milliseconds=rng.randrange(1, window_ms)) for _ in calls)
    labels_out, kept, mismatches = [], [], 0
    server = serve_model(production_model, workspace / "logs" / "production-server.log") if serve \
        else contextlib.nullcontext()
    with server as url, CaptureWriter(settings, rng) as writer:
        for number, (call, moment) in enumerate(zip(calls, times)):
            content_type, accept, _ = rng.choices(spec.callers, [c[2] for c in spec.callers])[0]
            body = request_body(content_type, [r.row for r in call], rng)
            answer, answer_type = invoke(url, body, content_type, accept) if serve \
                else answer_in_process(production_params(spec), body, content_type, accept)
            mismatches += sum(abs(a - r.production) > 1e-9 for a, r in zip(answered_scores(answer, answer_type), call))
            inference_id = f"order-{seed}-{number:06d}" if rng.random() < INFERENCE_ID_SHARE else None
            done = writer.capture(body, content_type, answer, answer_type, moment, inference_id,
                                  custom_attributes=f"channel={call[0].channel}")
            labelled = rng.random() < LABELLED_SHARE
            if labelled:
                data = "\n".join(str(r.truth) for r in call)
                delay = dt.timedelta(minutes=rng.uniform(2, 45))
                labels_out.append(GroundTruthLabel(done.ground_truth_id, data, "CSV", moment + delay))
            kept.extend(dataclasses.replace(r, labelled=labelled) for r in call)
    ground_truth_root = workspace / "ground-truth"
    write_ground_truth(ground_truth_root, labels_out)
    for labels in (True, False):
        write_config(workspace, capture_root, ground_truth_root if labels else None, production_model,
                     candidate_model)
    return World(spec, seed, workspace, capture_root, ground_truth_root, production_model, candidate_model, kept,
                 len(calls), mismatches)


def write_config(workspace: Path, capture_root: Path, ground_truth_root: Path | None, production: Path,
                 candidate: Path) -> Path:
    """configs/local.yaml with only the paths set: compare and gate keep their defaults."""
    config = yaml.safe_load(DEFAULT_CONFIG.read_text())
    config["workspace"] = str(workspace)
    config["capture"] |= {"root": str(capture_root), "endpoint": ENDPOINT}
    config["production"]["model"] = str(production)
    config["candidate"]["model"] = str(candidate)
    config["ground_truth"]["root"] = str(ground_truth_root) if ground_truth_root else None
    path = workspace / ("world.yaml" if ground_truth_root else "world-unlabelled.yaml")
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    load_config(path)
    return path


def invoke(base_url: str, body: bytes, content_type: str, accept: str) -> tuple[bytes, str | None]:
    address = urllib.parse.urlsplit(base_url)
    connection = http.client.HTTPConnection(address.hostname, address.port, timeout=60)
    try:
        connection.request("POST", "/invocations", body=body, headers={"Content-Type": content_type, "Accept": accept})
        response = connection.getresponse()
        answer = response.read()
        if response.status != 200:
            raise RuntimeError(f"the production model answered {response.status}: {answer[:300]!r}")
        return answer, response.getheader("Content-Type")
    finally:
        connection.close()


def answer_in_process(params: dict, body: bytes, content_type: str, accept: str) -> tuple[bytes, str]:
    """What the served model answers, from its hooks called directly."""
    text, answer_type = RULES.output_fn(RULES.predict_fn(RULES.input_fn(body, content_type), params), accept)
    return text.encode(), answer_type


def answered_scores(body: bytes, content_type: str | None) -> list[float]:
    """The scores in a world model's answer, whatever its shape."""
    text = body.decode()
    if content_type == "text/csv":
        return [float(line) for line in text.splitlines() if line.strip()]
    if content_type == "application/jsonlines":
        return [json.loads(line)["score"] for line in text.splitlines() if line.strip()]
    return [p["score"] for p in json.loads(text)["predictions"]]


# ------------------------------------------------------------------ what the world is, measured on its own truth

def quality(records: list[Record], task: str, side: str) -> float:
    """Accuracy (classification) or mean absolute error (regression) of one side against the truth."""
    answers = [getattr(r, side) for r in records]
    if task == "regression":
        return statistics.fmean(abs(a - r.truth) for a, r in zip(answers, records))
    return statistics.fmean(int(a >= 0.5) == r.truth for a, r in zip(answers, records))


def paired_delta(records: list[Record], task: str) -> tuple[float, float, float]:
    """Candidate minus production (accuracy, or MAE) and a normal 95% interval over the paired records."""
    if task == "regression":
        diffs = [abs(r.candidate - r.truth) - abs(r.production - r.truth) for r in records]
    else:
        diffs = [int(int(r.candidate >= 0.5) == r.truth) - int(int(r.production >= 0.5) == r.truth) for r in records]
    mean = statistics.fmean(diffs)
    half = 1.96 * statistics.stdev(diffs) / math.sqrt(len(diffs)) if len(diffs) > 1 else math.inf
    return mean, mean - half, mean + half
