"""The cloud chain as plain Python: Prepare, then what Batch Transform would write, then JoinCompare.

The transform step is played by the local transformer against an in-test container, and its
output is laid where the pipeline's JoinCompare input puts it (input/replay/<side>/<group>/...).
"""
from __future__ import annotations

import json
import shutil
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import awswrangler as wr
import pytest

from capture_helpers import at, capture_line, capture_path
from steps import entrypoints, replay
from steps.config import ReplayConfig

CAPTURE = "s3://capture-bucket/datacapture"
OUTPUT = "s3://example-shadow-eval/shadow-eval"


class _ScoreEachRow(BaseHTTPRequestHandler):
    """A container that scores every CSV row 0.7: the production answer the capture recorded."""

    def do_GET(self):
        self.send_response(200 if self.path == "/ping" else 404)
        self.end_headers()

    def do_POST(self):
        rows = self.rfile.read(int(self.headers["Content-Length"])).decode().splitlines()
        body = "".join("0.7\n" for _ in rows).encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/csv")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


class _OneDocumentPerBatch(_ScoreEachRow):
    """The same model answering a CSV batch with one `{"predictions": [...]}` document."""

    def do_POST(self):
        rows = self.rfile.read(int(self.headers["Content-Length"])).decode().splitlines()
        body = json.dumps({"predictions": [{"score": 0.7} for _ in rows]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def _serve(handler):
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@pytest.fixture
def container():
    server = _serve(_ScoreEachRow)
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()


@pytest.fixture
def document_container():
    server = _serve(_OneDocumentPerBatch)
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()


@pytest.fixture
def catalog(aws):
    """What infra/shadow-eval.yaml creates beside the buckets: the Glue database and the Athena workgroup."""
    aws.client("glue").create_database(DatabaseInput={"Name": "shadow_eval"})
    aws.client("athena").create_work_group(Name="shadow-eval", Configuration={
        "ResultConfiguration": {"OutputLocation": "s3://example-shadow-eval/athena/"}})
    return aws


def _capture(aws) -> int:
    """Two capture objects in the window, one call of two rows and two calls of one row."""
    records = 0
    for salt, minute, rows in (("a", 5, ["1,2\n3,4"]), ("b", 40, ["5,6", "7,8"])):
        when = at(10, minute)
        lines = [capture_line(row, "".join("0.7\n" for _ in row.split("\n")), inference_time=when,
                              event_id=f"{salt}{i}000000-0000-4000-8000-000000000000") for i, row in enumerate(rows)]
        records += sum(len(row.split("\n")) for row in rows)
        key = "datacapture/" + capture_path("churn-prod", "AllTraffic", when, salt)
        aws.client("s3").put_object(Bucket="capture-bucket", Key=key, Body="".join(f"{x}\n" for x in lines).encode())
    return records


def _stage_outputs_as_inputs(root, names: list[str]) -> None:
    """What Processing uploads from output/<name> the next step downloads into input/<name>."""
    for name in names:
        shutil.copytree(root / "output" / name, root / "input" / name, dirs_exist_ok=True)


def test_prepare_transform_join_compare(catalog, tmp_path, aws_config_path, aws_config, container):
    aws = catalog
    (tmp_path / "input" / "config").mkdir(parents=True)
    shutil.copy(aws_config_path, tmp_path / "input" / "config" / "shadow-eval.yaml")
    captured = _capture(aws)
    parse = entrypoints._parser().parse_args

    entrypoints.run_prepare(parse([
        "prepare", "--root", str(tmp_path), "--run-id", "exec1", "--capture-s3-uri", CAPTURE,
        "--endpoint", "churn-prod", "--variant", "AllTraffic", "--window-start", "2024-01-19T10:00:00Z",
        "--window-end", "2024-01-19T11:00:00Z", "--candidate-model-name", "shadow-eval-exec1-candidate"]), aws)
    _stage_outputs_as_inputs(tmp_path, ["prepare", "run"])

    plan = json.loads((tmp_path / "input" / "prepare" / "replay-plan.json").read_text())
    result = replay.run(plan["groups"]["csv"], tmp_path / "input" / "prepare" / "replay-input" / "csv",
                        tmp_path / "input" / "replay" / "candidate" / "csv", container,
                        ReplayConfig(invocation_timeout_s=5), tmp_path / "server.log", "candidate")
    assert not result.files_failed

    evaluation = entrypoints.run_join_compare(parse([
        "join-compare", "--root", str(tmp_path), "--run-id", "exec1",
        "--report-s3-uri", f"{OUTPUT}/runs/exec1/report/report.html", "--tables-s3-uri", f"{OUTPUT}/tables"]), aws)

    assert evaluation["accounting"]["captured"] == captured == 4
    assert evaluation["accounting"]["joined"] == 4
    assert evaluation["registry"]["updated"] is False  # the Approve/Reject step records it
    for name in ("evaluation.json", "report.json", "summary.md", "report.html"):
        assert (tmp_path / "output" / "report" / name).is_file()
    records = wr.s3.read_parquet(f"{OUTPUT}/tables/shadow_records/", dataset=True, boto3_session=aws)
    assert sorted(records["run_id"].unique()) == ["exec1"] and len(records) == 4
    partitions = wr.catalog.get_partitions(database="shadow_eval", table="shadow_records", boto3_session=aws)
    assert [values for values in partitions.values()] == [["exec1"]]
    # The config names a KMS key: every table object is encrypted with it.
    s3 = aws.client("s3")
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket="example-shadow-eval", Prefix="shadow-eval/tables/")["Contents"]]
    assert keys and {s3.head_object(Bucket="example-shadow-eval", Key=k).get("SSEKMSKeyId") for k in keys} == \
        {aws_config[1].kms_key_id}


@pytest.mark.parametrize("join_source", ["Input", "None"])
def test_join_compare_takes_a_batch_answered_with_one_document_record_by_record(
        catalog, tmp_path, aws_config_path, document_container, join_source):
    """The candidate answers each CSV mini-batch with one JSON document. Input: the transform split it record by
    record for its join. None: the .out holds the documents as written, one per mini-batch (AssembleWith=Line)."""
    aws = catalog
    (tmp_path / "input" / "config").mkdir(parents=True)
    shutil.copy(aws_config_path, tmp_path / "input" / "config" / "shadow-eval.yaml")
    _capture(aws)
    parse = entrypoints._parser().parse_args
    entrypoints.run_prepare(parse([
        "prepare", "--root", str(tmp_path), "--run-id", "exec2", "--capture-s3-uri", CAPTURE,
        "--endpoint", "churn-prod", "--variant", "AllTraffic", "--window-start", "2024-01-19T10:00:00Z",
        "--window-end", "2024-01-19T11:00:00Z", "--candidate-model-name", "shadow-eval-exec2-candidate"]), aws)
    _stage_outputs_as_inputs(tmp_path, ["prepare", "run"])
    knobs = json.loads((tmp_path / "input" / "prepare" / "replay-plan.json").read_text())["groups"]["csv"]
    knobs["data_processing"]["JoinSource"] = join_source
    out = tmp_path / "input" / "replay" / "candidate" / "csv"
    result = replay.run(knobs, tmp_path / "input" / "prepare" / "replay-input" / "csv", out, document_container,
                        ReplayConfig(invocation_timeout_s=5), tmp_path / "server.log", "candidate")
    assert not result.files_failed
    lines = [line for path in sorted(out.rglob("*.out")) for line in path.read_text().splitlines()]
    if join_source == "None":  # as the service writes documents it did not join: one per mini-batch
        assert lines and all(line.startswith('{"predictions"') for line in lines) and len(lines) < 4
    else:  # one joined row per record: record id, input, the record's own answer
        assert len(lines) == 4 and all(line.endswith(',"{""score"":0.7}"') for line in lines)

    evaluation = entrypoints.run_join_compare(parse([
        "join-compare", "--root", str(tmp_path), "--run-id", "exec2",
        "--report-s3-uri", f"{OUTPUT}/runs/exec2/report/report.html", "--tables-s3-uri", f"{OUTPUT}/tables"]), aws)

    assert evaluation["accounting"]["captured"] == evaluation["accounting"]["joined"] == 4
    records = wr.s3.read_parquet(f"{OUTPUT}/tables/shadow_records/", dataset=True, boto3_session=aws)
    assert len(records) == 4 and (records["candidate_score"] == 0.7).all() and records["tolerant_match"].all()
