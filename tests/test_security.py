"""Security: least-privilege IAM, KMS/VPC/isolation passthrough, loopback-only serving, names checked before
SQL, captured inputs kept/hashed/dropped by config, and no payload or credential in the logs."""
from __future__ import annotations

import hashlib
import json
import logging
import re
import socket
from pathlib import Path

import duckdb
import pytest

import pipeline
from capture_helpers import at, capture_line, capture_path, write_capture_tree
from contract_server import ContractServer
from steps.config import AwsSettings, config_from_mapping

ROOT = Path(__file__).resolve().parents[1]
TEMPLATE = ROOT / "infra" / "shadow-eval.yaml"
GOLDEN = ROOT / "tests" / "aws" / "golden" / "definition.json"
KMS = "arn:aws:kms:us-east-1:123456789012:key/11111111-2222-3333-4444-555555555555"
SECRET = "SSN-078-05-1120"
"""A payload value that must never reach a log."""
FAKE_KEY_ID, FAKE_SECRET = "AKIAIOSFODNN7EXAMPLE", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"


# ---------------------------------------------------------------- IAM

def _policy_statements(node, where="template"):
    """Every IAM statement anywhere in a document (role policies, trust policies, key or bucket policies)."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "Statement":
                for statement in value if isinstance(value, list) else [value]:
                    if isinstance(statement, dict) and "Fn::If" in statement:
                        yield from ((where, s) for s in statement["Fn::If"][1:] if isinstance(s, dict) and "Effect" in s)
                    else:
                        yield where, statement
            else:
                yield from _policy_statements(value, f"{where}.{key}")
    elif isinstance(node, list):
        for index, item in enumerate(node):
            yield from _policy_statements(item, f"{where}[{index}]")


def _as_list(value):
    return value if isinstance(value, list) else [value]


def _check_statements(statements) -> int:
    count = 0
    for where, statement in statements:
        assert "NotAction" not in statement and "NotResource" not in statement, where
        if statement.get("Effect") != "Allow" or "Action" not in statement:
            continue
        actions = _as_list(statement["Action"])
        assert not any(a == "*" or a.endswith(":*") for a in actions), f"{where}: wildcard action {actions}"
        if "Principal" not in statement:  # a trust policy has no Resource
            resources = _as_list(statement["Resource"])
            assert not ("*" in resources and any("*" in a for a in actions)), f"{where}: * action on * resource"
        count += 1
    return count


def test_cloudformation_grants_no_star_action_on_star_resource():
    from cfnlint.decode import decode

    template, errors = decode(str(TEMPLATE))
    assert not errors
    assert _check_statements(_policy_statements(template)) >= 15


def test_no_code_generates_an_iam_policy_outside_the_template():
    # The pipeline definition and the code hold no policy documents; the template is the only one to walk.
    definition = json.loads(GOLDEN.read_text())
    assert list(_policy_statements(definition)) == []
    offenders = [str(p) for p in (ROOT / "steps").rglob("*.py")
                 if re.search(r"PolicyDocument|put_role_policy|create_policy", p.read_text())]
    assert offenders == []


def test_the_walker_catches_a_star_grant():
    bad = {"Resources": {"R": {"Properties": {"Policies": [{"PolicyDocument": {"Statement": [
        {"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}}]}}}}
    with pytest.raises(AssertionError):
        _check_statements(_policy_statements(bad))


# ---------------------------------------------------------------- KMS, VPC, network isolation

def _steps(steps):
    for step in steps:
        yield step
        arguments = step.get("Arguments", {})
        for branch in ("IfSteps", "ElseSteps"):
            yield from _steps(arguments.get(branch, []))


def test_every_job_in_the_pipeline_gets_the_kms_key_and_the_vpc():
    definition = json.loads(GOLDEN.read_text())
    jobs = 0
    for step in _steps(definition["Steps"]):
        arguments = step.get("Arguments", {})
        if step["Type"] == "Processing":
            assert arguments["ProcessingResources"]["ClusterConfig"]["VolumeKmsKeyId"] == KMS, step["Name"]
            if "ProcessingOutputConfig" in arguments:
                assert arguments["ProcessingOutputConfig"]["KmsKeyId"] == KMS, step["Name"]
            assert arguments["NetworkConfig"]["VpcConfig"] == {"SecurityGroupIds": ["sg-0abc"],
                                                               "Subnets": ["subnet-0abc"]}, step["Name"]
            jobs += 1
        elif step["Type"] == "Transform":
            assert arguments["TransformOutput"]["KmsKeyId"] == KMS, step["Name"]
            assert arguments["TransformResources"]["VolumeKmsKeyId"] == KMS, step["Name"]
            jobs += 1
    assert jobs >= 8


class _FakeSageMaker:
    class exceptions:
        ClientError = KeyError

    def __init__(self):
        self.created = []

    def describe_model(self, ModelName):
        raise KeyError(ModelName)

    def create_model(self, **request):
        self.created.append(request)


@pytest.mark.parametrize("isolated", [True, False])
def test_the_candidate_model_gets_network_isolation_and_the_vpc(isolated):
    from steps.aws_models import create_candidate_model

    settings = AwsSettings(region="us-east-1", role_arn="arn:aws:iam::123456789012:role/jobs",
                           output_s3_uri="s3://bucket/prefix", image_uri="img", kms_key_id=KMS,
                           subnets=("subnet-1",), security_group_ids=("sg-1",), enable_network_isolation=isolated)
    client = _FakeSageMaker()
    create_candidate_model(client, "shadow-eval-x", {
        "ModelPackageArn": "arn:aws:sagemaker:us-east-1:123456789012:model-package/g/1",
        "InferenceSpecification": {"Containers": [{"Image": "123456789012.dkr.ecr.us-east-1.amazonaws.com/c:1"}]}},
        settings)
    (request,) = client.created
    assert request["EnableNetworkIsolation"] is isolated
    assert request["VpcConfig"] == {"Subnets": ["subnet-1"], "SecurityGroupIds": ["sg-1"]}


# ---------------------------------------------------------------- the local model server

@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.168.1.10", ""])
def test_the_model_server_refuses_to_listen_beyond_loopback(host, tmp_path):
    from steps.model_server import create_server

    with pytest.raises(ValueError, match="loopback"):
        create_server(tmp_path, host=host)


def test_the_model_server_command_line_offers_only_loopback_hosts():
    from steps.model_server import LOOPBACK_HOSTS

    assert set(LOOPBACK_HOSTS) == {"127.0.0.1", "localhost", "::1"}


# ---------------------------------------------------------------- names before SQL

@pytest.mark.parametrize("database", ["x; DROP TABLE y", "a'b", "shadow eval", "-x"])
def test_database_names_are_checked_before_any_sql(database):
    from steps.config import ConfigError

    with pytest.raises(ConfigError, match="tables.database"):
        config_from_mapping({"tables": {"database": database}})


@pytest.mark.parametrize("run_id", ["r'; DROP TABLE shadow_records; --", "../../etc", "a b"])
def test_run_ids_are_checked_before_the_catalog_writes(run_id, tmp_path):
    from steps.backends.catalog import CatalogError, LocalCatalog

    with pytest.raises(CatalogError):
        LocalCatalog(tmp_path, "shadow_eval").write_partition("shadow_metrics", run_id, [])


# Every name that becomes a path or SQL is checked at each command's edge, with a full match.

@pytest.mark.parametrize("argv", [
    ["run", "--config", "x.yaml", "--run-id", "r1\n"],
    ["run", "--config", "x.yaml", "--run-id", "../r1"],
    ["run", "--config", "x.yaml", "--candidate-package", "fraud/1\n"],
    ["regate", "../../other/runs/r1", "--ground-truth", "gt"],
    ["regate", "r1\n", "--ground-truth", "gt"],
    ["query", "SELECT 1", "--database", "shadow_eval\n"],
], ids=["run-id-newline", "run-id-path", "package-newline", "regate-path", "regate-newline", "query-database"])
def test_every_command_refuses_a_bad_name_before_touching_anything(argv, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "x.yaml").write_text("candidate: {model: http://127.0.0.1:9}\n")
    try:
        code = pipeline.main(argv)
    except SystemExit as stopped:  # argparse's own refusal
        code = stopped.code
    (tmp_path / "x.yaml").unlink()
    assert code == pipeline.EXIT_USAGE
    assert "is not a" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("run_id", ["../r1", "r1\n", "r1/../../x"])
def test_processing_entry_points_refuse_a_bad_run_id(run_id, tmp_path):
    from steps import entrypoints

    with pytest.raises(SystemExit) as stopped:
        entrypoints.main(["gate", "--root", str(tmp_path), "--run-id", run_id, "--verdict", "Approved",
                          "--report-s3-uri", "s3://b/r"])
    assert stopped.value.code == 2 and list(tmp_path.iterdir()) == []


def test_regate_cannot_reach_another_workspace(tmp_path):
    from steps import regate
    from steps.backends.registry import LocalRegistry
    from steps.config import ConfigError

    other = _run(tmp_path / "other", "keep")  # a finished run in another workspace
    registry = LocalRegistry(tmp_path / "other" / "ws" / "registry.sqlite")
    before = {p: p.read_bytes() for p in other.run_dir.rglob("*") if p.is_file()}
    (tmp_path / "mine" / "runs").mkdir(parents=True)
    with pytest.raises(ConfigError, match="run id"):
        regate.run(tmp_path / "mine", "../../other/ws/runs/sec", tmp_path / "truth")
    assert {p: p.read_bytes() for p in other.run_dir.rglob("*") if p.is_file()} == before
    assert registry.list_groups() == []


def test_a_capture_endpoint_cannot_climb_out_of_the_capture_root(tmp_path):
    from steps.capture_files import list_capture_files
    from steps.config import ConfigError
    from steps.names import InvalidName

    with pytest.raises(ConfigError, match="capture.endpoint"):
        config_from_mapping({"capture": {"root": str(tmp_path), "endpoint": "../elsewhere"}})
    with pytest.raises(InvalidName):  # a caller that skips the config is stopped too
        list_capture_files(tmp_path, endpoint="..")


def test_a_link_out_of_the_capture_root_is_not_followed(tmp_path):
    from steps.capture_files import list_capture_files

    outside = tmp_path / "outside" / "v" / "2024" / "01" / "19" / "10"
    outside.mkdir(parents=True)
    (outside / "f.jsonl").write_text(capture_line("1.0,2.0", "0.7") + "\n")
    root = tmp_path / "capture"
    root.mkdir()
    (root / "ep").symlink_to(tmp_path / "outside")
    listing = list_capture_files(root)
    assert listing.files == () and [m.relative for m in listing.misfits] == ["ep"]
    assert "outside the capture root" in listing.misfits[0].problem


def test_paths_with_quotes_reach_duckdb_as_data(tmp_path):
    # The join quotes every path it hands DuckDB; a workspace called o'brien must just work.
    root = tmp_path / "o'brien"
    outcome = _run(root, "keep")
    assert outcome.accounting.joined == outcome.accounting.captured == 4


# ---------------------------------------------------------------- captured inputs and logs

def _run(root: Path, input_text: str, caplog=None):
    capture = root / "capture"
    write_capture_tree(capture, {capture_path("ep", "v", at(10)): [
        capture_line(f"1.0,{SECRET}\n2.0,{SECRET}", "0.7\n0.7", event_id=f"e{i}",
                     custom_attributes="trace=1") for i in range(2)]})
    with ContractServer() as server:
        config = config_from_mapping({"workspace": str(root / "ws"), "capture": {"root": str(capture)},
                                      "candidate": {"model": server.url}, "tables": {"input_text": input_text}})
        return pipeline.run_local(config, run_id="sec")


@pytest.mark.parametrize("policy", ["keep", "hash", "drop"])
def test_captured_inputs_are_kept_hashed_or_dropped_in_shadow_records(policy, tmp_path):
    outcome = _run(tmp_path, policy)
    with duckdb.connect(str(tmp_path / "ws" / "shadow.duckdb"), read_only=True) as db:
        texts = [t for (t,) in db.execute("select input_text from shadow_records order by record_id").fetchall()]
    assert len(texts) == outcome.accounting.joined == 4
    raw = f"1.0,{SECRET}"
    expected = {"keep": raw, "hash": "sha256:" + hashlib.sha256(raw.encode()).hexdigest(), "drop": None}[policy]
    assert texts[0] == expected
    if policy != "keep":
        table_bytes = b"".join(p.read_bytes() for p in (tmp_path / "ws" / "tables").rglob("*.parquet"))
        assert SECRET.encode() not in table_bytes
        report = (outcome.run_dir / "report").glob("*")
        assert all(SECRET not in p.read_text(errors="replace") for p in report if p.is_file())


def test_logs_hold_no_payload_and_no_credentials(tmp_path, caplog, monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", FAKE_KEY_ID)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", FAKE_SECRET)
    capture = tmp_path / "capture"
    write_capture_tree(capture, {capture_path("ep", "v", at(10)): [
        capture_line(f"1.0,{SECRET}", "0.7", event_id="ok"),
        capture_line(f"1.0,{SECRET}\n2.0,{SECRET},3", "0.7\n0.7", event_id="wide"),  # quarantined
        '{"captureData": "' + SECRET,  # malformed JSON that quotes the payload
    ]})

    def fail_with_echo(call):
        return "http_500" if call.number == 1 else None

    with caplog.at_level(logging.DEBUG), ContractServer(fault=fail_with_echo) as server:
        config = config_from_mapping({"workspace": str(tmp_path / "ws"), "capture": {"root": str(capture)},
                                      "candidate": {"model": server.url}, "replay": {"invocation_max_retries": 1}})
        pipeline.run_local(config, run_id="logs")
    text = "\n".join(record.getMessage() for record in caplog.records)
    assert text  # the run did log
    for forbidden in (SECRET, FAKE_KEY_ID, FAKE_SECRET):
        assert forbidden not in text
    assert not re.search(r"AKIA[0-9A-Z]{16}|aws_secret_access_key|BEGIN [A-Z ]*PRIVATE KEY", text, re.I)


def test_model_server_binds_127_0_0_1_and_logs_the_error_not_the_payload(tmp_path):
    from model_helpers import build_model_tar
    from steps.model_server import serve_model
    from steps.transformer import Container

    model = build_model_tar(tmp_path / "model.tar.gz")
    log_path = tmp_path / "server.log"
    with serve_model(str(model), log_path) as url:
        assert url.startswith("http://127.0.0.1:")
        port = int(url.rsplit(":", 1)[1])
        outside = [a[4][0] for a in socket.getaddrinfo(socket.gethostname(), None, socket.AF_INET)
                   if not a[4][0].startswith("127.")]
        for address in outside[:1]:  # the same port on another interface of this machine is closed
            with socket.socket() as probe:
                probe.settimeout(0.5)
                assert probe.connect_ex((address, port)) != 0
        status, body = Container(url, 10).request("POST", "/invocations", f"1.0,{SECRET}\n".encode(),
                                                  {"Content-Type": "text/csv", "Accept": "text/csv"})
    assert status == 500
    log_text = log_path.read_text()
    assert "invocation failed" in log_text and SECRET not in log_text
