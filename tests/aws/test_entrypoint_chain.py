"""The cloud chain as plain Python, S3 and the registry in moto: Prepare, Transform, JoinCompare, Gate.

Between steps the objects move as the services move them: Processing uploads `output/<name>/` to
`runs/<id>/<name>/` and downloads a prefix into `input/<name>/`; Batch Transform writes each input
object `<prefix>/<path>` as `<output path>/<path>.out`, nested keys kept (sagemaker-formats.md §2.3).
The transform itself is the local transformer (the same DataProcessing) against an in-test container.
"""
from __future__ import annotations

import json
import shutil
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import awswrangler as wr
import pytest

from capture_helpers import at, capture_line, capture_path
from steps import entrypoints, replay
from steps.config import ReplayConfig

CAPTURE = "s3://capture-bucket/datacapture"
BUCKET = "example-shadow-eval"
OUTPUT = f"s3://{BUCKET}/shadow-eval"
GROUP = "churn-models"
GROUPS = ("csv", "jsonlines", "json")


def _container(score: str, document_per_batch: bool = False):
    """A container answering every CSV row, JSON line and JSON document with this score.

    document_per_batch: a CSV mini-batch is answered with one `{"predictions": [...]}` JSON document.
    """

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200 if self.path == "/ping" else 404)
            self.end_headers()

        def do_POST(self):
            body = self.rfile.read(int(self.headers["Content-Length"])).decode()
            kind = self.headers["Content-Type"]
            if kind == "text/csv" and document_per_batch:
                kind, answer = "application/json", json.dumps(
                    {"predictions": [{"score": float(score)} for _ in body.splitlines()]})
            elif kind == "text/csv":
                answer = "".join(f"{score}\n" for _ in body.splitlines())
            elif kind == "application/jsonlines":
                answer = "".join(f'{{"score": {score}}}\n' for _ in body.splitlines())
            else:
                answer = f'{{"score": {score}}}'
            data = answer.encode()
            self.send_response(200)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args):
            pass

    return Handler


@pytest.fixture
def containers():
    """url(score): a running container answering with that score; all stopped after the test."""
    servers = []

    def url(score: str, document_per_batch: bool = False) -> str:
        server = ThreadingHTTPServer(("127.0.0.1", 0), _container(score, document_per_batch))
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_port}"

    yield url
    for server in servers:
        server.shutdown()


@pytest.fixture
def account(aws):
    return make_account(aws)


def make_account(aws):
    """What infra/shadow-eval.yaml creates beside the buckets, the package group and the production endpoint."""
    aws.client("glue").create_database(DatabaseInput={"Name": "shadow_eval"})
    aws.client("athena").create_work_group(Name="shadow-eval", Configuration={
        "ResultConfiguration": {"OutputLocation": f"{OUTPUT}/athena-results/"}})
    sagemaker = aws.client("sagemaker")
    sagemaker.create_model_package_group(ModelPackageGroupName=GROUP)
    sagemaker.create_model(ModelName="churn-prod-model", ExecutionRoleArn="arn:aws:iam::123456789012:role/prod",
                           PrimaryContainer={"Image": "123456789012.dkr.ecr.us-east-1.amazonaws.com/churn:1",
                                             "ModelDataUrl": "s3://model-artifacts/churn-1.tar.gz"})
    sagemaker.create_endpoint_config(EndpointConfigName="churn-prod-config", ProductionVariants=[{
        "VariantName": "AllTraffic", "ModelName": "churn-prod-model", "InstanceType": "ml.m5.large",
        "InitialInstanceCount": 1}])
    sagemaker.create_endpoint(EndpointName="churn-prod", EndpointConfigName="churn-prod-config")
    return aws


@pytest.fixture
def root(tmp_path, aws_config_path):
    return make_root(tmp_path, aws_config_path)


def make_root(tmp_path, aws_config_path):
    """A Processing root whose config replays all three text groups and gates on label agreement.

    Seven records cannot show equivalence within the default 1% margin; 50% lets the identical
    candidate be Approved on this evidence (0/7 differ: one-sided upper bound 28%).
    """
    text = aws_config_path.read_text().replace("replay_groups: [csv, json]", "replay_groups: [csv, jsonlines, json]")
    text += ("gate:\n  min_records: 4\n  policy:\n    equivalence_margin: 0.5\n"
             "  checks:\n    - metric: label_agreement\n      threshold: 0.95\n")
    root = tmp_path / "root"
    (root / "input" / "config").mkdir(parents=True)
    (root / "input" / "config" / "shadow-eval.yaml").write_text(text)
    return root


def _register(aws) -> str:
    return aws.client("sagemaker").create_model_package(
        ModelPackageGroupName=GROUP, ModelApprovalStatus="PendingManualApproval",
        InferenceSpecification={"Containers": [{"Image": "123456789012.dkr.ecr.us-east-1.amazonaws.com/churn:2",
                                                "ModelDataUrl": "s3://model-artifacts/churn-2.tar.gz"}],
                                "SupportedContentTypes": ["text/csv"], "SupportedResponseMIMETypes": ["text/csv"]},
    )["ModelPackageArn"]


ALL_GROUPS_CALLS = (("text/csv", "1,2\n3,4", "0.7\n0.7"), ("text/csv", "5,6", "0.7"),
                    ("application/jsonlines", '{"f": [1, 2]}\n{"f": [3, 4]}', '{"score": 0.7}\n{"score": 0.7}'),
                    ("application/json", '{"f": [5, 6]}', '{"score": 0.7}'),
                    ("application/json", '{"f": [7, 8]}', '{"score": 0.7}'))


def _capture(aws, calls=ALL_GROUPS_CALLS) -> int:
    """Captured traffic (content type, data, production's answer) in the window; returns how many records it holds."""
    lines = [capture_line(data, answer, input_type=kind, inference_time=at(10, 5 + i),
                          event_id=f"{i:08d}-0000-4000-8000-000000000000")
             for i, (kind, data, answer) in enumerate(calls)]
    key = "datacapture/" + capture_path("churn-prod", "AllTraffic", at(10, 5), "a")
    aws.client("s3").put_object(Bucket="capture-bucket", Key=key, Body="".join(f"{x}\n" for x in lines).encode())
    return sum(len(data.split("\n")) for _, data, _ in calls)


def _upload(aws, folder: Path, prefix: str) -> None:
    """What Processing does with output/<name>/ at the end of a job."""
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            aws.client("s3").upload_file(str(path), BUCKET, f"{prefix}/{path.relative_to(folder).as_posix()}")


def _download(aws, prefix: str, folder: Path) -> int:
    """What Processing does for an S3Prefix input: every key below the prefix, relative path kept."""
    count = 0
    for page in aws.client("s3").get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=f"{prefix}/"):
        for item in page.get("Contents", []):
            local = folder / item["Key"][len(prefix) + 1:]
            local.parent.mkdir(parents=True, exist_ok=True)
            aws.client("s3").download_file(BUCKET, item["Key"], str(local))
            count += 1
    return count


def _transform(aws, tmp_path: Path, run: str, side: str, group: str, plan: dict, url: str) -> int:
    """A Transform job over runs/<id>/prepare/replay-input/<group>/: one <key>.out per input object."""
    source, answers = tmp_path / "bt" / side / group / "in", tmp_path / "bt" / side / group / "out"
    inputs = _download(aws, f"shadow-eval/runs/{run}/prepare/replay-input/{group}", source)
    result = replay.run(plan, source, answers, url, ReplayConfig(invocation_timeout_s=5),
                        tmp_path / "bt" / f"{side}-{group}.log", side)
    assert not result.files_failed
    outs = sorted(answers.rglob("*.out"))
    assert len(outs) == inputs  # one output object per input object, as the service writes
    for out in outs:  # only the .out objects: the local checkpoints are not what the service writes
        aws.client("s3").upload_file(str(out), BUCKET,
                                     f"shadow-eval/runs/{run}/replay/{side}/{group}/{out.relative_to(answers).as_posix()}")
    return inputs


def _prepare(aws, root: Path, run: str, package: str) -> dict:
    models = entrypoints.run_prepare(entrypoints._parser().parse_args([
        "prepare", "--root", str(root), "--run-id", run, "--capture-s3-uri", CAPTURE,
        "--endpoint", "churn-prod", "--variant", "AllTraffic", "--window-start", "2024-01-19T10:00:00Z",
        "--window-end", "2024-01-19T11:00:00Z", "--candidate-package-arn", package,
        "--candidate-model-name", f"shadow-eval-{run}-candidate",
        "--production-model-name", f"shadow-eval-{run}-production"]), aws)
    for name in ("prepare", "run"):
        _upload(aws, root / "output" / name, f"shadow-eval/runs/{run}/{name}")
    return models


def _join_compare_and_gate(aws, tmp_path: Path, run: str, replayed: tuple[str, ...],
                           transform_jobs: tuple[str, ...] = ()) -> tuple[dict, dict]:
    """JoinCompare, then the step the Gate routes its decision to; each in a fresh Processing root.

    transform_jobs: `SIDE:GROUP=NAME` as the pipeline passes them (--transform-job).
    """
    report_uri = f"{OUTPUT}/runs/{run}/report/report.html"
    join_root = tmp_path / "join-compare"
    shutil.copytree(tmp_path / "root" / "input" / "config", join_root / "input" / "config")
    for name in ("prepare", "run"):
        _download(aws, f"shadow-eval/runs/{run}/{name}", join_root / "input" / name)
    for side in replayed:
        assert _download(aws, f"shadow-eval/runs/{run}/replay/{side}", join_root / "input" / "replay" / side)
    parse = entrypoints._parser().parse_args
    evaluation = entrypoints.run_join_compare(parse([
        "join-compare", "--root", str(join_root), "--run-id", run, "--report-s3-uri", report_uri,
        "--tables-s3-uri", f"{OUTPUT}/tables", *(a for job in transform_jobs for a in ("--transform-job", job))]),
        aws)
    _upload(aws, join_root / "output" / "report", f"shadow-eval/runs/{run}/report")

    gate_root = tmp_path / "gate"
    shutil.copytree(join_root / "input" / "config", gate_root / "input" / "config")
    for name in ("run", "report"):
        _download(aws, f"shadow-eval/runs/{run}/{name}", gate_root / "input" / name)
    outcome = entrypoints.run_gate(parse(["gate", "--root", str(gate_root), "--run-id", run,
                                          "--verdict", evaluation["decision"], "--report-s3-uri", report_uri]), aws)
    return evaluation, outcome


REGISTRY_STATUS = {"Approved": "Approved", "Rejected": "Rejected", "Inconclusive": "PendingManualApproval"}


@pytest.mark.parametrize("candidate_score, decision", [("0.7", "Approved"), ("0.2", "Rejected")])
def test_every_group_both_sides_through_gate_and_registry(account, tmp_path, root, containers, candidate_score,
                                                          decision):
    aws, run = account, "exec1"
    captured = _capture(aws)
    package = _register(aws)
    models = _prepare(aws, root, run, package)
    assert (models["route"], models["production_replay"]) == ("replay", 1)
    plan = json.loads((root / "output" / "prepare" / "replay-plan.json").read_text())
    assert sorted(plan["groups"]) == sorted(GROUPS)

    urls = {"candidate": containers(candidate_score), "production": containers("0.7")}
    for side, url in urls.items():
        for group in GROUPS:
            assert _transform(aws, tmp_path, run, side, group, plan["groups"][group], url)
    evaluation, outcome = _join_compare_and_gate(aws, tmp_path, run, ("candidate", "production"))

    assert evaluation["accounting"]["captured"] == captured == 7
    assert evaluation["accounting"]["joined"] == 7
    assert evaluation["decision"] == decision, evaluation["reasons"]
    status = aws.client("sagemaker").describe_model_package(ModelPackageName=package)["ModelApprovalStatus"]
    assert status == REGISTRY_STATUS[decision] and outcome["updated"] is True
    records = wr.s3.read_parquet(f"{OUTPUT}/tables/shadow_records/", dataset=True, boto3_session=aws)
    assert sorted(records["run_id"].unique()) == [run] and len(records) == 7
    partitions = wr.catalog.get_partitions(database="shadow_eval", table="shadow_records", boto3_session=aws)
    assert [values for values in partitions.values()] == [[run]]
    # The config names a KMS key: every table object is encrypted with it.
    s3 = aws.client("s3")
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET, Prefix="shadow-eval/tables/")["Contents"]]
    assert keys and {s3.head_object(Bucket=BUCKET, Key=k).get("SSEKMSKeyId") for k in keys} == \
        {"arn:aws:kms:us-east-1:123456789012:key/11111111-2222-3333-4444-555555555555"}


def test_an_empty_window_ends_inconclusive_and_leaves_the_package_pending(account, tmp_path, root):
    aws, run = account, "exec2"
    package = _register(aws)
    models = _prepare(aws, root, run, package)
    assert models["route"] == "no-replay"
    evaluation, outcome = _join_compare_and_gate(aws, tmp_path, run, ())
    assert (evaluation["accounting"]["captured"], evaluation["accounting"]["joined"]) == (0, 0)
    assert evaluation["decision"] == "Inconclusive"
    assert any("no captured records" in reason for reason in evaluation["reasons"])
    described = aws.client("sagemaker").describe_model_package(ModelPackageName=package)
    assert described["ModelApprovalStatus"] == "PendingManualApproval" and outcome["status_now"] == described[
        "ModelApprovalStatus"]
    # A compare-and-set from PendingManualApproval to itself: the description carries the reasons.
    assert outcome["updated"] is True and "no captured records" in described["ApprovalDescription"]
    assert described["CustomerMetadataProperties"]["shadow_eval_decision"] == "Inconclusive"
    assert [m["ModelName"] for m in aws.client("sagemaker").list_models()["Models"]] == ["churn-prod-model"]


@pytest.mark.parametrize("join_source", ["Input", "None"])
def test_join_compare_takes_a_batch_answered_with_one_document_record_by_record(account, tmp_path, root, containers,
                                                                                join_source):
    """The candidate answers each CSV mini-batch with one JSON document. Input: the transform split it record by
    record for its join. None: the .out holds the documents as written, one per mini-batch (AssembleWith=Line)."""
    aws, run = account, "exec3"
    captured = _capture(aws, [("text/csv", "1,2\n3,4", "0.7\n0.7"), ("text/csv", "5,6", "0.7"),
                              ("text/csv", "7,8", "0.7")])
    models = _prepare(aws, root, run, _register(aws))
    assert models["route"] == "replay"
    plan = json.loads((root / "output" / "prepare" / "replay-plan.json").read_text())
    assert sorted(plan["groups"]) == ["csv"]
    knobs = plan["groups"]["csv"]
    knobs["data_processing"]["JoinSource"] = join_source
    assert _transform(aws, tmp_path, run, "candidate", "csv", knobs, containers("0.7", document_per_batch=True))
    out = tmp_path / "bt" / "candidate" / "csv" / "out"
    lines = [line for path in sorted(out.rglob("*.out")) for line in path.read_text().splitlines()]
    if join_source == "None":  # as the service writes documents it did not join: one per mini-batch
        assert lines and all(line.startswith('{"predictions"') for line in lines) and len(lines) < captured
    else:  # one joined row per record: record id, input, the record's own answer
        assert len(lines) == captured and all(line.endswith(',"{""score"":0.7}"') for line in lines)

    evaluation, _ = _join_compare_and_gate(aws, tmp_path, run, ("candidate",))

    assert evaluation["accounting"]["captured"] == evaluation["accounting"]["joined"] == captured == 4
    records = wr.s3.read_parquet(f"{OUTPUT}/tables/shadow_records/", dataset=True, boto3_session=aws)
    assert len(records) == 4 and (records["candidate_score"] == 0.7).all() and records["tolerant_match"].all()
