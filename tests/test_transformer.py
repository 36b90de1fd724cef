"""The local transformer against an in-test container that injects faults on request."""
from __future__ import annotations

import collections
import hashlib
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from steps.transformer import (
    FAILURE_REASONS, TransformJob, TransformJobError, TransformResult, checkpoint_path, resolve_execution_parameters,
    transform,
)


class Calls:
    """What one test's transform did to the container; late answers from earlier tests cannot touch it."""

    def __init__(self, execution_parameters: dict | None = None, pings_before_healthy: int = 0, gather: int = 0):
        self.execution_parameters = execution_parameters
        self.pings_before_healthy = pings_before_healthy
        self.gather = gather
        """`delay` requests wait (up to 2 s) until this many are in flight, so concurrency shows deterministically."""
        self.requests: list[tuple[dict, bytes]] = []
        self.attempts: collections.Counter[bytes] = collections.Counter()
        self.in_flight = self.max_in_flight = 0
        self.lock = threading.Lock()
        self.changed = threading.Condition(self.lock)


class FakeContainer(ThreadingHTTPServer):
    """Answers each line of a request with its length; tokens in a line inject faults.

    fail: 500 every time · flaky: 500 on the first attempt · slow: 1.5 s on the first attempt ·
    stall: 1.5 s every time · drop: closes the connection · short: one answer line too few ·
    delay: 0.1 s (to make later requests finish first) · document: one `{"outs": [...]}` for the batch.
    """

    daemon_threads = True
    calls = Calls()

    def reset(self, **settings) -> Calls:
        self.calls = Calls(**settings)
        return self.calls

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class FakeHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: FakeContainer

    def do_GET(self) -> None:  # noqa: N802
        calls = self.server.calls
        if self.path == "/ping":
            with calls.lock:
                calls.pings_before_healthy -= 1
                healthy = calls.pings_before_healthy < 0
            self._reply(200 if healthy else 503, b"")
        elif self.path == "/execution-parameters" and calls.execution_parameters is not None:
            self._reply(200, json.dumps(calls.execution_parameters).encode())
        else:
            self._reply(404, b"")

    def do_POST(self) -> None:  # noqa: N802
        body = self.rfile.read(int(self.headers["Content-Length"]))
        calls = self.server.calls
        with calls.lock:
            calls.requests.append((dict(self.headers), body))
            calls.attempts[body] += 1
            first_attempt = calls.attempts[body] == 1
            calls.in_flight += 1
            calls.max_in_flight = max(calls.max_in_flight, calls.in_flight)
            calls.changed.notify_all()
            if b"delay" in body and calls.gather:
                # generous: on a loaded machine the other requests may take a while to arrive
                calls.changed.wait_for(lambda: calls.in_flight >= calls.gather, timeout=10)
        try:
            if b"delay" in body:
                time.sleep(0.1)
            if b"stall" in body or (b"slow" in body and first_attempt):
                time.sleep(1.5)
            if b"drop" in body:
                self.close_connection = True
                return
            if b"fail" in body or (b"flaky" in body and first_attempt):
                self._reply(500, b"model exploded")
                return
            lines = body.decode().splitlines()
            if b"short" in body:
                lines = lines[:-1]
            if b"document" in body:  # the whole batch answered with one JSON document
                answer = json.dumps({"outs": [{"n": len(line)} for line in lines]}, indent=2)
            elif "json" in (self.headers.get("Accept") or ""):
                answer = "".join(json.dumps({"n": len(line)}) + "\n" for line in lines)
            else:
                answer = "".join(f"{len(line)}\n" for line in lines)
            self._reply(200, answer.encode())
        finally:
            with calls.lock:
                calls.in_flight -= 1

    def _reply(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture(scope="module")
def server():
    container = FakeContainer(("127.0.0.1", 0), FakeHandler)
    thread = threading.Thread(target=container.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield container
    container.shutdown()
    container.server_close()


@pytest.fixture
def container(server):
    server.reset()
    return server


CSV_LINE = dict(content_type="text/csv", accept="text/csv", split_type="Line", assemble_with="Line")


def job(**knobs) -> TransformJob:
    return TransformJob(**{**CSV_LINE, "invocation_max_retries": 0, **knobs})


def write_inputs(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root


def lengths(text: str) -> str:
    return "".join(f"{len(line)}\n" for line in text.splitlines())


@pytest.fixture
def dirs(tmp_path):
    (tmp_path / "in").mkdir()
    return tmp_path / "in", tmp_path / "out"


def test_every_file_gives_its_out_in_record_order(container, dirs):
    inputs, outputs = dirs
    files = {"b.csv": "delay,1\nx\nyy\n", "a/x.csv": "delay\n" + "".join("r" * i + "\n" for i in range(1, 9)),
             "a/deep/z.csv": "12345\n"}
    write_inputs(inputs, files)
    result = transform(inputs, outputs, container.url, job(batch_strategy="SingleRecord", max_concurrent_transforms=4))
    assert result.files_ok == ("a/deep/z.csv", "a/x.csv", "b.csv") and result.files_failed == ()
    for name, text in files.items():
        assert (outputs / f"{name}.out").read_text() == lengths(text)
    assert sorted(p.relative_to(outputs).as_posix() for p in outputs.rglob("*")
                  if p.is_file() and p.suffix == ".out") == ["a/deep/z.csv.out", "a/x.csv.out", "b.csv.out"]


@pytest.mark.parametrize("strategy, requests", [("MultiRecord", 1), ("SingleRecord", 10)])
def test_multirecord_sends_one_request_singlerecord_one_per_record(container, dirs, strategy, requests):
    inputs, outputs = dirs
    write_inputs(inputs, {"f.csv": "".join(f"{i},{i}\n" for i in range(10))})
    result = transform(inputs, outputs, container.url, job(batch_strategy=strategy))
    assert len(container.calls.requests) == result.invocations == requests
    headers = container.calls.requests[0][0]
    assert (headers["Content-Type"], headers["Accept"]) == ("text/csv", "text/csv")
    assert (outputs / "f.csv.out").read_text() == "3\n" * 10


def test_split_none_sends_the_whole_file_and_assemble_none_concatenates(container, dirs):
    inputs, outputs = dirs
    write_inputs(inputs, {"one.csv": "a\nbb\n", "two.csv": "ccc"})
    transform(inputs, outputs, container.url, job(split_type="None", assemble_with="None"))
    assert [body for _, body in container.calls.requests] == [b"a\nbb\n", b"ccc"]
    assert (outputs / "one.csv.out").read_text() == "1\n2\n"


@pytest.mark.parametrize("concurrency", [1, 3])
def test_requests_in_flight_never_exceed_max_concurrent_transforms(container, dirs, concurrency):
    inputs, outputs = dirs
    container.reset(gather=concurrency)
    write_inputs(inputs, {f"f{i}.csv": "delay\ndelay\n" for i in range(3)})
    transform(inputs, outputs, container.url, job(batch_strategy="SingleRecord", max_concurrent_transforms=concurrency))
    assert container.calls.max_in_flight == concurrency


def test_a_500_then_success_within_the_retries_is_ok(container, dirs):
    inputs, outputs = dirs
    write_inputs(inputs, {"f.csv": "ok\nflaky\nok2\n"})
    result = transform(inputs, outputs, container.url, job(batch_strategy="SingleRecord", invocation_max_retries=1))
    assert (result.files_ok, result.retries, result.invocations) == (("f.csv",), 1, 4)
    assert (outputs / "f.csv.out").read_text() == "2\n5\n3\n"


@pytest.mark.parametrize("line, retries, reason, attempts", [
    ("fail", 2, "http_500", 3),
    ("flaky", 0, "http_500", 1),
    ("drop", 1, "connection_error", 2),
    ("short,1", 0, "output_count_mismatch", 1),
])
def test_a_file_whose_record_finally_fails_gets_no_out_and_is_reported(container, dirs, line, retries, reason,
                                                                       attempts):
    inputs, outputs = dirs
    write_inputs(inputs, {"bad.csv": f"ok\n{line}\n", "good.csv": "fine\n"})
    (outputs / "bad.csv.out").parent.mkdir(parents=True)
    (outputs / "bad.csv.out").write_text("stale answer from an earlier run\n")
    knobs = job(invocation_max_retries=retries, data_processing={"JoinSource": "Input"})
    result = transform(inputs, outputs, container.url, knobs, resume=False)
    assert result.files_ok == ("good.csv",)
    [failure] = result.files_failed
    assert (failure.file, failure.reason) == ("bad.csv", reason) and "records 1-2" in failure.detail
    assert not (outputs / "bad.csv.out").exists()
    assert (outputs / "good.csv.out").read_text() == "fine,4\n"
    assert sum(1 for _, body in container.calls.requests if line.encode() in body) == attempts
    assert reason in FAILURE_REASONS or reason.startswith("http_")
    assert list(outputs.glob(".*partial")) == []


@pytest.mark.parametrize("line, retries, ok", [("slow", 1, True), ("stall", 0, False)])
def test_invocation_timeout(container, dirs, line, retries, ok):
    inputs, outputs = dirs
    write_inputs(inputs, {"f.csv": f"{line}\n"})
    result = transform(inputs, outputs, container.url, job(invocation_timeout_s=0.5, invocation_max_retries=retries))
    assert (outputs / "f.csv.out").exists() is ok
    if not ok:
        assert result.files_failed[0].reason == "timeout"


@pytest.mark.parametrize("requested, advertised, used", [
    ({}, None, {"MaxConcurrentTransforms": 1, "BatchStrategy": "MultiRecord", "MaxPayloadInMB": 6}),
    ({}, {"MaxConcurrentTransforms": 3, "BatchStrategy": "SINGLE_RECORD", "MaxPayloadInMB": 2},
     {"MaxConcurrentTransforms": 3, "BatchStrategy": "SingleRecord", "MaxPayloadInMB": 2}),
    ({"max_concurrent_transforms": 2, "batch_strategy": "MultiRecord", "max_payload_mb": 0},
     {"MaxConcurrentTransforms": 3, "BatchStrategy": "SINGLE_RECORD", "MaxPayloadInMB": 2},
     {"MaxConcurrentTransforms": 2, "BatchStrategy": "MultiRecord", "MaxPayloadInMB": 0}),
    ({}, {"MaxConcurrentTransforms": 0, "BatchStrategy": "SOMETIMES"},
     {"MaxConcurrentTransforms": 1, "BatchStrategy": "MultiRecord", "MaxPayloadInMB": 6}),
])
def test_execution_parameters_precedence_request_then_container_then_default(container, dirs, requested,
                                                                             advertised, used):
    inputs, outputs = dirs
    requests = 6 if used["BatchStrategy"] == "SingleRecord" else 1
    calls = container.reset(execution_parameters=advertised, gather=min(used["MaxConcurrentTransforms"], requests))
    write_inputs(inputs, {"f.csv": "delay\n" * 6})
    result = transform(inputs, outputs, container.url, job(**requested))
    assert result.execution_parameters == used
    assert len(calls.requests) == requests
    assert calls.max_in_flight == min(used["MaxConcurrentTransforms"], requests)


def test_resume_skips_files_that_already_have_an_out(container, dirs):
    inputs, outputs = dirs
    write_inputs(inputs, {"done.csv": "a\n", "todo.csv": "bb\n"})
    (outputs).mkdir()
    (outputs / "done.csv.out").write_text("kept\n")
    checkpoint_path(outputs / "done.csv.out").write_text(hashlib.sha256(b"a\n").hexdigest())
    result = transform(inputs, outputs, container.url, job())
    assert result.files_ok == ("done.csv", "todo.csv") and result.invocations == 1
    assert [body for _, body in container.calls.requests] == [b"bb\n"]
    assert (outputs / "done.csv.out").read_text() == "kept\n"
    again = transform(inputs, outputs, container.url, job(), resume=False)
    assert again.invocations == 2 and (outputs / "done.csv.out").read_text() == "1\n"


@pytest.mark.parametrize("checkpoint", [None, "0" * 64], ids=["no checkpoint", "another input's checkpoint"])
def test_resume_redoes_an_out_without_a_matching_checkpoint(container, dirs, checkpoint):
    inputs, outputs = dirs
    write_inputs(inputs, {"f.csv": "a\nbb\n"})
    outputs.mkdir()
    (outputs / "f.csv.out").write_text("1\n")  # an earlier, shorter version of the input
    if checkpoint:
        checkpoint_path(outputs / "f.csv.out").write_text(checkpoint)
    result = transform(inputs, outputs, container.url, job())
    assert result.invocations >= 1 and (outputs / "f.csv.out").read_text() == "1\n2\n"
    assert checkpoint_path(outputs / "f.csv.out").read_text() == hashlib.sha256(b"a\nbb\n").hexdigest()


def test_the_replay_plan_csv_group_keeps_the_record_id_out_of_the_request(container, dirs):
    inputs, outputs = dirs
    write_inputs(inputs, {"f.csv": "ev1:0,1.5,2\nev1:1,3,4.25\n"})
    knobs = job(batch_strategy="MultiRecord",
                data_processing={"InputFilter": "$[1:]", "JoinSource": "Input", "OutputFilter": "$"})
    transform(inputs, outputs, container.url, knobs)
    assert [body for _, body in container.calls.requests] == [b"1.5,2\n3,4.25\n"]
    assert (outputs / "f.csv.out").read_text() == "ev1:0,1.5,2,5\nev1:1,3,4.25,6\n"


@pytest.mark.parametrize("records_path, joined", [
    ("outs", 'ev1:0,document,"{""n"":8}"\nev1:1,3,"{""n"":1}"\n'),
    (None, None),
])
def test_a_batch_answered_with_one_document_is_joined_record_by_record(container, dirs, records_path, joined):
    inputs, outputs = dirs
    write_inputs(inputs, {"f.csv": "ev1:0,document\nev1:1,3\n"})
    knobs = job(batch_strategy="MultiRecord", records_path=records_path,
                data_processing={"InputFilter": "$[1:]", "JoinSource": "Input", "OutputFilter": "$"})
    result = transform(inputs, outputs, container.url, knobs)
    if joined is None:  # without the records path the document is one answer for two records
        assert [f.reason for f in result.files_failed] == ["output_count_mismatch"]
        assert not (outputs / "f.csv.out").exists()
    else:
        assert result.files_ok == ("f.csv",) and (outputs / "f.csv.out").read_text() == joined


def test_json_documents_are_joined_under_sagemaker_output(container, dirs):
    inputs, outputs = dirs
    write_inputs(inputs, {"f.json": '{"instances":[[1,2]]}\n[3]\n'})
    knobs = job(content_type="application/json", accept="application/json", batch_strategy="SingleRecord",
                data_processing={"InputFilter": "$", "JoinSource": "Input", "OutputFilter": "$"})
    transform(inputs, outputs, container.url, knobs)
    assert (outputs / "f.json.out").read_text() == ('{"SageMakerOutput":{"n":21},"instances":[[1,2]]}\n'
                                                   '{"SageMakerInput":[3],"SageMakerOutput":{"n":3}}\n')


def test_work_waits_for_ping(container, dirs):
    inputs, outputs = dirs
    container.reset(pings_before_healthy=3)
    write_inputs(inputs, {"f.csv": "a\n"})
    assert transform(inputs, outputs, container.url, job()).files_ok == ("f.csv",)
    container.reset(pings_before_healthy=10_000)
    with pytest.raises(TransformJobError, match="did not answer 200 within 0.3 s"):
        transform(inputs, outputs, container.url, job(), resume=False, ping_timeout_s=0.3)
    assert container.calls.requests == []


def test_the_result_serialises_to_the_documented_shape(container, dirs):
    inputs, outputs = dirs
    write_inputs(inputs, {"x.csv": "fail\n", "a.csv": "ok\n"})
    result = transform(inputs, outputs, container.url, job())
    data = json.loads(json.dumps(result.to_json()))
    assert list(data) == ["side", "files_ok", "files_failed", "invocations", "retries", "seconds",
                          "execution_parameters"]
    assert data["files_ok"] == ["a.csv"]
    assert data["files_failed"] == [{"file": "x.csv", "reason": "http_500",
                                     "detail": "records 1-1: HTTP 500: model exploded"}]
    assert TransformResult.from_json(data).to_json() == data


@pytest.mark.parametrize("knobs, message", [
    ({"invocation_max_retries": 4}, "InvocationsMaxRetries"),
    ({"invocation_timeout_s": 0}, "InvocationsTimeoutInSeconds"),
    ({"max_concurrent_transforms": 20, "max_payload_mb": 6}, "<= 100"),
    ({"environment": {f"K{i}": "v" for i in range(17)}}, "at most 16"),
    ({"accept": "application/json", "data_processing": {"JoinSource": "Input"}}, "ContentType == Accept"),
    ({"split_type": "TFRecord"}, "TFRecord"),
    ({"data_processing": {"InputFilter": "$..x"}}, "deep scan"),
])
def test_knobs_createtransformjob_rejects(knobs, message):
    with pytest.raises(TransformJobError, match=message):
        job(**knobs)


def test_output_inside_input_is_refused(container, dirs):
    inputs, _ = dirs
    with pytest.raises(TransformJobError, match="inside the input folder"):
        transform(inputs, inputs / "out", container.url, job())


def test_container_environment_carries_only_the_knobs_that_were_set():
    assert job(environment={"A": "1"}).container_environment() == {"SAGEMAKER_BATCH": "true", "A": "1"}
    knobs = job(batch_strategy="SingleRecord", max_payload_mb=2, max_concurrent_transforms=4)
    assert knobs.container_environment() == {
        "SAGEMAKER_BATCH": "true", "SAGEMAKER_BATCH_STRATEGY": "SINGLE_RECORD",
        "SAGEMAKER_MAX_PAYLOAD_IN_MB": "2", "SAGEMAKER_MAX_CONCURRENT_TRANSFORMS": "4"}


def test_precedence_ignores_container_values_of_the_wrong_type():
    used = resolve_execution_parameters(job(), {"MaxConcurrentTransforms": "8", "MaxPayloadInMB": True})
    assert (used.max_concurrent_transforms, used.max_payload_mb) == (1, 6)
