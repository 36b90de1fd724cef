"""The container contract against the real model server subprocess, with tiny scikit-learn models."""
from __future__ import annotations

import http.client
import io
import json
import subprocess
import sys
import tarfile
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from steps import replay
from steps.config import ReplayConfig
from steps.model_server import ModelArtifactError, ModelServerError, create_server, extract_model, serve_model
from steps.transformer import TransformJobError
from model_helpers import TRAIN_FEATURES, build_model_tar, train_model

# Hooks that make every call visible: predict_fn counts its calls and reports the batch it got.
# model_fn reads its own file, so this server never loads scikit-learn (and starts quickly).
COUNTING_HOOKS = """
    import json, os

    CALLS = 0

    def model_fn(model_dir):
        with open(os.path.join(model_dir, "threshold.txt")) as threshold:
            return {"threshold": float(threshold.read())}

    def input_fn(body, content_type):
        assert isinstance(body, str), "text content types arrive decoded"
        if content_type != "text/csv":
            raise ValueError("custom input_fn only reads text/csv")
        return [[float(x) for x in line.split(";")] for line in body.splitlines()]

    def predict_fn(data, model):
        global CALLS
        CALLS += 1
        labels = [int(sum(row) > model["threshold"]) for row in data]
        return {"call": CALLS, "batch": len(data), "labels": labels}

    def output_fn(prediction, accept):
        return json.dumps(prediction), "application/x-custom"
"""

FEATURES = TRAIN_FEATURES[[0, 4, 1, 6]]
LABELS = train_model().predict(FEATURES).tolist()
CSV_BODY = "".join(",".join(str(v) for v in row) + "\n" for row in FEATURES)


@pytest.fixture(scope="module")
def default_server(tmp_path_factory):
    folder = tmp_path_factory.mktemp("default")
    log_path = folder / "server.log"
    with serve_model(build_model_tar(folder / "model.tar.gz"), log_path, {"EXTRA_FLAG": "1"},
                     execution_parameters={"MaxConcurrentTransforms": 4, "BatchStrategy": "MULTI_RECORD"}) as url:
        yield url, log_path


@pytest.fixture(scope="module")
def hooked_server(tmp_path_factory):
    folder = tmp_path_factory.mktemp("hooked")
    with serve_model(build_model_tar(folder / "model.tar.gz", COUNTING_HOOKS,
                                                extra_files={"threshold.txt": "4"}), folder / "server.log") as url:
        yield url


def call(url: str, method: str, path: str, body: str | bytes | None = None,
         headers: dict | None = None) -> tuple[int, str, str | None]:
    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
    try:
        connection.request(method, path, body=body, headers=headers or {})
        response = connection.getresponse()
        return response.status, response.read().decode(), response.getheader("Content-Type")
    finally:
        connection.close()


def invoke(url: str, body: str, content_type: str, accept: str | None = None) -> tuple[int, str, str | None]:
    headers = {"Content-Type": content_type, **({"Accept": accept} if accept else {})}
    return call(url, "POST", "/invocations", body, headers)


def test_ping_answers_200_with_an_empty_body(default_server):
    url, _ = default_server
    assert call(url, "GET", "/ping")[:2] == (200, "")
    assert urlsplit(url).hostname == "127.0.0.1"


def test_execution_parameters_are_served_when_configured(default_server, hooked_server):
    status, body, content_type = call(default_server[0], "GET", "/execution-parameters")
    assert (status, json.loads(body), content_type) == (
        200, {"MaxConcurrentTransforms": 4, "BatchStrategy": "MULTI_RECORD"}, "application/json")
    assert call(hooked_server, "GET", "/execution-parameters")[0] == 404


JSON_ROWS = [list(row) for row in FEATURES]


@pytest.mark.parametrize("body, content_type, accept, expected", [
    (CSV_BODY, "text/csv", "text/csv", "".join(f"{label}\n" for label in LABELS)),
    (CSV_BODY, "text/csv; charset=utf-8", "application/json", json.dumps(LABELS)),
    (CSV_BODY, "text/csv", None, json.dumps(LABELS)),
    (json.dumps({"instances": JSON_ROWS}), "application/json", "application/json", json.dumps(LABELS)),
    (json.dumps({"instances": [{"features": r} for r in JSON_ROWS]}), "application/json", "text/csv",
     "".join(f"{label}\n" for label in LABELS)),
    (json.dumps(JSON_ROWS), "application/json", "application/jsonlines", "".join(f"{label}\n" for label in LABELS)),
    (json.dumps(JSON_ROWS[1]), "application/json", "application/json", json.dumps(LABELS[1:2])),
    ("".join(json.dumps(r) + "\n" for r in JSON_ROWS), "application/jsonlines", "text/csv",
     "".join(f"{label}\n" for label in LABELS)),
    ("".join(json.dumps({"features": r}) + "\n" for r in JSON_ROWS), "application/jsonlines",
     "application/jsonlines", "".join(f"{label}\n" for label in LABELS)),
])
def test_default_hooks_read_and_write_csv_json_and_json_lines(default_server, body, content_type, accept, expected):
    status, answer, answer_type = invoke(default_server[0], body, content_type, accept)
    assert (status, answer) == (200, expected)
    assert answer_type == (accept or "application/json")


@pytest.mark.parametrize("body, content_type, accept, message", [
    ("1,2\nnot,a-number\n", "text/csv", "text/csv", "ValueError"),
    ("1,2,3\n", "text/csv", "text/csv", "features"),
    ('{"rows": []}', "application/json", "text/csv", "instances"),
    ('{"vector": [1, 2]}\n', "application/jsonlines", "text/csv", "features"),
    (CSV_BODY, "image/png", "text/csv", "unsupported content type"),
    (CSV_BODY, "text/csv", "image/png", "unsupported Accept"),
    ("", "text/csv", "text/csv", "no records"),
])
def test_errors_are_500_with_a_message_and_logged(default_server, body, content_type, accept, message):
    url, log_path = default_server
    status, answer, _ = invoke(url, body, content_type, accept)
    assert status == 500 and message in answer
    assert "invocation failed" in log_path.read_text()
    assert call(url, "GET", "/ping")[0] == 200


def test_unknown_paths_are_404(default_server):
    assert call(default_server[0], "GET", "/nope")[0] == 404
    assert call(default_server[0], "POST", "/nope", "x")[0] == 404


def test_inference_py_hooks_are_honoured_and_a_batch_is_one_predict_call(hooked_server):
    rows = "".join(";".join(str(v) for v in row) + "\n" for row in FEATURES)
    first = invoke(hooked_server, rows, "text/csv", "application/json")
    second = invoke(hooked_server, rows, "text/csv", "application/json")
    assert [r[0] for r in (first, second)] == [200, 200]
    assert first[2] == "application/x-custom"
    answers = [json.loads(r[1]) for r in (first, second)]
    assert answers[0]["batch"] == answers[1]["batch"] == len(FEATURES)
    assert answers[1]["call"] == answers[0]["call"] + 1
    assert answers[0]["labels"] == [int(sum(row) > 4) for row in FEATURES] == [0, 1, 0, 1]


def test_a_failing_hook_is_a_500(hooked_server):
    status, answer, _ = invoke(hooked_server, json.dumps(JSON_ROWS), "application/json", "text/csv")
    assert status == 500 and "custom input_fn only reads text/csv" in answer


def test_the_server_binds_loopback_only(tmp_path):
    folder = extract_model(build_model_tar(tmp_path / "model.tar.gz"), tmp_path / "model")
    with pytest.raises(ValueError, match="loopback"):
        create_server(folder, host="0.0.0.0")
    server = create_server(folder)
    try:
        assert server.server_address[0] == "127.0.0.1"
    finally:
        server.server_close()
    refused = subprocess.run([sys.executable, "-m", "steps.model_server", "--model", str(folder), "--host", "0.0.0.0"],
                             capture_output=True, text=True, timeout=30)
    assert refused.returncode == 2 and "invalid choice: '0.0.0.0'" in refused.stderr


def test_serve_model_reports_a_model_that_does_not_load(tmp_path):
    broken = build_model_tar(tmp_path / "model.tar.gz", "def model_fn(model_dir):\n    raise RuntimeError('boom')\n")
    with pytest.raises(ModelServerError, match="exited with status 1(.|\n)*boom"):
        with serve_model(broken, tmp_path / "server.log"):
            pass


def test_a_model_folder_without_a_model_file_is_explained(tmp_path):
    broken = build_model_tar(tmp_path / "model.tar.gz", model_file="weights.bin")
    with pytest.raises(ModelServerError, match="no model.joblib / model.pkl / model.pickle"):
        with serve_model(broken, tmp_path / "server.log"):
            pass


def _tar_with(path: Path, member: tarfile.TarInfo, data: bytes = b"x") -> Path:
    with tarfile.open(path, "w:gz") as tar:
        member.size = len(data) if member.isfile() else 0
        tar.addfile(member, io.BytesIO(data) if member.isfile() else None)
    return path


def _symlink(name: str, target: str) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = tarfile.SYMTYPE, target
    return info


@pytest.mark.parametrize("member", [
    tarfile.TarInfo("../escape.txt"),
    tarfile.TarInfo("/etc/escape.txt"),
    tarfile.TarInfo("code/../../escape.txt"),
    _symlink("code/link", "../../outside"),
], ids=["parent", "absolute", "nested-parent", "symlink"])
def test_archive_members_may_not_escape_the_model_folder(tmp_path, member):
    archive = _tar_with(tmp_path / "evil.tar.gz", member)
    with pytest.raises(ModelArtifactError, match="outside the model folder"):
        extract_model(archive, tmp_path / "model")
    assert not (tmp_path / "escape.txt").exists()


def test_not_a_tarball_is_a_clear_error(tmp_path):
    (tmp_path / "model.tar.gz").write_text("not a tarball")
    with pytest.raises(ModelArtifactError, match="not a readable tar.gz"):
        extract_model(tmp_path / "model.tar.gz", tmp_path / "model")


# ---- steps.replay: a replay-plan group through a URL or an artifact served for the job ----

CSV_GROUP = {"content_type": "text/csv", "accept": "text/csv", "split_type": "Line", "batch_strategy": "MultiRecord",
             "assemble_with": "Line", "files": 2, "records": 4,
             "data_processing": {"InputFilter": "$[1:]", "JoinSource": "Input", "OutputFilter": "$"}}

# No scikit-learn: it starts fast, and it refuses to load without the batch environment.
THRESHOLD_HOOKS = """
    import os

    def model_fn(model_dir):
        env = {k: os.environ.get(k) for k in ("SAGEMAKER_BATCH", "SAGEMAKER_MAX_PAYLOAD_IN_MB",
                                              "SAGEMAKER_BATCH_STRATEGY")}
        assert env == {"SAGEMAKER_BATCH": "true", "SAGEMAKER_MAX_PAYLOAD_IN_MB": "6",
                       "SAGEMAKER_BATCH_STRATEGY": "MULTI_RECORD"}, env
        return 4.0

    def predict_fn(data, model):
        return (data.sum(axis=1) > model).astype(int)
"""


def _replay_inputs(root: Path) -> dict[str, list[str]]:
    rows = {"h00/a.csv": ["ev1:0", "ev1:1"], "h01/b.csv": ["ev2:0", "ev2:1"]}
    features = iter(FEATURES.tolist())
    expected = {}
    for name, ids in rows.items():
        lines = [",".join([record_id, *map(str, next(features))]) for record_id in ids]
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text("".join(line + "\n" for line in lines))
        expected[name] = lines
    return expected


def test_replay_through_a_url_joins_each_answer_to_its_record(default_server, tmp_path):
    expected = _replay_inputs(tmp_path / "in")
    result = replay.run(CSV_GROUP, tmp_path / "in", tmp_path / "out", default_server[0], ReplayConfig(),
                        tmp_path / "unused.log", "candidate")
    assert (result.side, result.files_ok, result.files_failed) == ("candidate", ("h00/a.csv", "h01/b.csv"), ())
    labels = iter(LABELS)
    for name, lines in expected.items():
        assert (tmp_path / "out" / f"{name}.out").read_text() == "".join(f"{line},{next(labels)}\n" for line in lines)


def test_replay_serves_an_artifact_for_the_job_with_the_batch_environment(tmp_path):
    expected = _replay_inputs(tmp_path / "in")
    artifact = build_model_tar(tmp_path / "model.tar.gz", THRESHOLD_HOOKS)
    result = replay.run(CSV_GROUP, tmp_path / "in", tmp_path / "out", str(artifact), ReplayConfig(),
                        tmp_path / "logs" / "model-server-production.log", "production")
    assert (result.side, len(result.files_ok), result.invocations) == ("production", 2, 2)
    first, second = expected["h00/a.csv"]
    assert (tmp_path / "out" / "h00/a.csv.out").read_text() == f"{first},0\n{second},1\n"
    assert "model loaded" in (tmp_path / "logs" / "model-server-production.log").read_text()


def test_replay_refuses_a_plan_group_it_does_not_understand():
    with pytest.raises(TransformJobError, match="unknown key 'input_filter'"):
        replay.transform_job({**CSV_GROUP, "input_filter": "$[1:]"}, ReplayConfig())
