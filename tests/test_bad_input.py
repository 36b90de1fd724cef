"""Bad input, end to end: each case builds a capture tree, runs pipeline.run_local, checks the outcome.

Every case states what it expects: the quarantine reason counts (or, for configs, an error naming
file and key). For every case `captured = joined + quarantined` holds, each quarantined record
names its capture file, line and a fix, and the gate does not approve below min_coverage.
The candidate is an in-test HTTP server speaking the container contract (tests/contract_server.py).
"""
from __future__ import annotations

import base64
import dataclasses
import gzip
import json
from collections.abc import Callable
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml

import pipeline
from analysis.quarantine import REASONS
from capture_helpers import at, capture_line, capture_path, capture_record, write_capture_tree
from contract_server import ContractServer
from steps.config import ConfigError, load_config
from steps.join import load_joined

HOUR_A, HOUR_B = capture_path("ep", "v", at(10, 0)), capture_path("ep", "v", at(11, 0))
GOOD_CALLS = 10  # of two records each: one bad record puts coverage at 20/21 < 0.99


def good_lines(prefix: str = "good", calls: int = GOOD_CALLS) -> list[str]:
    return [capture_line("1.0,2.0\n3.0,4.0", "0.7\n0.7", event_id=f"{prefix}-{i}", output_type="text/csv")
            for i in range(calls)]


def lines_bytes(lines: list[str]) -> bytes:
    return "".join(f"{line}\n" for line in lines).encode()


def with_data(record: dict, side: str, data: str) -> str:
    record["captureData"][side]["data"] = data
    return json.dumps(record)


@dataclasses.dataclass(frozen=True)
class Case:
    name: str
    files: Callable[[], dict[str, list[str] | bytes]]
    reasons: dict[str, int]
    config: dict = dataclasses.field(default_factory=dict)
    fault: str | None = None
    """A fault the candidate server injects on every call (contract_server.FAULTS)."""
    ground_truth: list[dict] | None = None


def _gt(event_id: str, labels: str) -> dict:
    return {"groundTruthData": {"data": labels, "encoding": "CSV"}, "eventMetadata": {"eventId": event_id},
            "eventVersion": "0"}


CASES = [
    Case("clean window approves", lambda: {HOUR_A: good_lines()}, {}),
    Case("malformed JSON line", lambda: {HOUR_A: good_lines() + ['{"captureData": {"endpointInput": ']},
         {"malformed_json": 1}),
    Case("truncated last line", lambda: {HOUR_A: lines_bytes(good_lines()) + good_lines("cut", 1)[0][:70].encode()},
         {"truncated_line": 1}),
    Case("non-UTF-8 bytes", lambda: {HOUR_A: lines_bytes(good_lines())
                                     + capture_line("1.0,XX", "0.7", event_id="latin").encode().replace(b"XX", b"\xff\xfe") + b"\n"},
         {"not_utf8": 1}),
    Case("unknown encoding", lambda: {HOUR_A: good_lines() + [
        capture_line("1.0,2.0", "0.7", event_id="enc", input_encoding="UTF16")]}, {"unknown_encoding": 1}),
    Case("invalid base64", lambda: {HOUR_A: good_lines() + [with_data(
        capture_record("x", "0.7", event_id="b64", input_type="application/x-image", output_type="text/csv"),
        "endpointInput", "!!!not base64!!!")]}, {"invalid_base64": 1}),
    Case("unknown eventVersion", lambda: {HOUR_A: good_lines() + [
        capture_line("1.0,2.0", "0.7", event_id="v9", event_version="9")]}, {"unknown_event_version": 1}),
    Case("capture with only input", lambda: {HOUR_A: good_lines() + [capture_line("1.0,2.0", None, event_id="in")]},
         {"missing_output": 1}),
    Case("capture with only output", lambda: {HOUR_A: good_lines() + [capture_line(None, "0.7", event_id="out")]},
         {"missing_input": 1}),
    Case("not a capture record", lambda: {HOUR_A: good_lines() + [json.dumps(_gt("gt", "1"))]},
         {"not_capture_record": 1}),
    Case("CSV rows of the wrong width", lambda: {HOUR_A: good_lines() + [
        capture_line("1.0,2.0\n3.0,4.0,5.0", "0.7\n0.7", event_id="wide")]}, {"csv_width_mismatch": 2}),
    Case("output record count differs from input", lambda: {HOUR_A: good_lines() + [
        capture_line("1.0,2.0\n3.0,4.0\n5.0,6.0", "0.7\n0.7", event_id="count")]}, {"output_count_mismatch": 3}),
    Case("the same eventId in two files", lambda: {HOUR_A: good_lines(), HOUR_B: good_lines(calls=1)},
         {"duplicate_event_id": 2}),
    Case("empty window", lambda: {HOUR_A: good_lines()}, {},
         config={"capture": {"window_start": "2024-02-01T00:00:00Z", "window_end": "2024-02-02T00:00:00Z"}}),
    Case("gzip file among the JSONL", lambda: {HOUR_A: good_lines(),
                                               HOUR_A.replace(".jsonl", "-b.jsonl.gz"): gzip.compress(b"{}\n")},
         {"binary_file": 1}),
    Case("binary file among the JSONL", lambda: {HOUR_A: good_lines(),
                                                 HOUR_A.replace(".jsonl", "-c.jsonl"): b"\x00\x01\x02garbage"},
         {"binary_file": 1}),
    Case("record larger than MaxPayloadInMB", lambda: {HOUR_A: good_lines() + [
        capture_line("1.0," + "9" * (1024 * 1024 + 10), "0.7", event_id="big")]},
         {"record_too_large": 1}, config={"replay": {"max_payload_mb": 1}}),
    Case("unsplittable JSON request", lambda: {HOUR_A: good_lines() + [
        capture_line('{"instances": [1, 2', '{"predictions": [0.7]}', event_id="js", input_type="application/json")]},
         {"unsplittable_input": 1}),
    Case("request in another format than the run replays", lambda: {HOUR_A: good_lines() + [
        capture_line('{"instances": [[1, 2]]}', '{"predictions": [0.7]}', event_id="js", input_type="application/json")]},
         {"input_format_mismatch": 1}, config={"capture": {"input_format": "csv"}}),
    Case("production answer that does not parse", lambda: {HOUR_A: good_lines() + [
        capture_line("1.0,2.0", "", event_id="empty-answer", output_type="text/csv")]},
         {"unparsable_production_output": 1}),
    Case("candidate answers bytes that are not text", lambda: {HOUR_A: good_lines()[:5] + [
        capture_line(b"\x89PNG-%d" % i, "0.7", event_id=f"img{i}", input_type="image/png", output_type="text/csv")
        for i in range(GOOD_CALLS)]}, {"unparsable_candidate_output": GOOD_CALLS}, fault="not-text"),
    Case("candidate fails every call", lambda: {HOUR_A: good_lines()}, {"replay_file_failed": 20}, fault="http_500"),
    Case("candidate answers fewer records than a JSON request holds", lambda: {HOUR_A: good_lines()[:2] + [
        capture_line('{"instances": [[1, 2], [3, 4]]}', '{"predictions": [0.7, 0.7]}', event_id=f"js{i}",
                     input_type="application/json") for i in range(GOOD_CALLS)]},
         {"candidate_count_mismatch": 20}, fault="short-json"),
    Case("an eventId with a line break costs only its own call", lambda: {HOUR_A: good_lines() + [
        capture_line("1.0,2.0\n3.0,4.0", "0.7\n0.7", event_id="broken\nid")]}, {"not_capture_record": 1}),
    Case("a flat JSON list is one record, as the model server reads it", lambda: {HOUR_A: good_lines() + [
        capture_line(json.dumps(list(range(1, 31))), '{"predictions": [0.7]}', event_id="flat",
                     input_type="application/json")]}, {}),
    Case("candidate answers a CSV batch with one JSON document", lambda: {HOUR_A: good_lines()}, {},
         fault="json-document"),
    Case("candidate answers a CSV batch with JSON Lines", lambda: {HOUR_A: good_lines()}, {}, fault="json-lines"),
    Case("candidate answers NaN for every record", lambda: {HOUR_A: good_lines()},
         {"candidate_invalid_score": 20}, fault="nan"),
    Case("candidate answers text that is not a score", lambda: {HOUR_A: good_lines()},
         {"candidate_invalid_score": 20}, fault="garbage"),
    Case("production's captured answer is NaN or infinite", lambda: {HOUR_A: good_lines() + [
        capture_line("1.0,2.0\n3.0,4.0", "nan\ninf", event_id="nan-prod", output_type="text/csv")]},
         {"production_invalid_score": 2}),
    Case("ground truth for unknown ids and duplicated ground truth", lambda: {HOUR_A: good_lines()}, {},
         ground_truth=[_gt("good-0", "1\n0"), _gt("good-0", "1\n1"), _gt("nobody", "1")]),
]


def _not_text(answer: bytes, mime: str) -> bytes:
    # A binary request gets one bare answer (no newline); that is the one to spoil.
    return b"\xff\xfe\x00" if not answer.endswith(b"\n") else answer


def _one_short(answer: bytes, mime: str) -> bytes:
    if b"predictions" not in answer:
        return answer
    return json.dumps({"predictions": json.loads(answer)["predictions"][:-1]}).encode()


def _nan(answer: bytes, mime: str) -> bytes:
    return answer.replace(b"0.7", b"NaN")


def _as_json_document(answer: bytes, mime: str) -> bytes:
    """The same scores, a CSV batch answered with one `{"predictions": [...]}` document."""
    if mime != "text/csv":
        return answer
    return json.dumps({"predictions": [{"score": float(x)} for x in answer.decode().split()]}, indent=1).encode()


def _as_json_lines(answer: bytes, mime: str) -> bytes:
    if mime != "text/csv":
        return answer
    return "".join(json.dumps({"score": float(x), "predicted_label": 1}) + "\n" for x in answer.decode().split()).encode()


def _candidate(kind: str | None) -> ContractServer:
    """The contract server, failing as the case says or answering wrongly (blank, one answer short, NaN) or
    answering right in another shape."""
    shapes = {"nan": _nan, "json-document": _as_json_document, "json-lines": _as_json_lines}
    if kind in shapes:
        return ContractServer(rewrite=shapes[kind])
    if kind == "not-text":
        return ContractServer(rewrite=_not_text)
    if kind == "short-json":
        return ContractServer(rewrite=_one_short)
    return ContractServer(fault=(lambda call: kind) if kind else None)


def _config_file(tmp_path: Path, capture_root: Path, model: str, extra: dict, truth_root: Path | None) -> Path:
    config = {"workspace": str(tmp_path / "ws"), "capture": {"root": str(capture_root)},
              "candidate": {"model": model},
              "replay": {"invocation_max_retries": 0, "invocation_timeout_s": 5}}
    for section, values in extra.items():
        config.setdefault(section, {}).update(values)
    if truth_root is not None:
        config["ground_truth"] = {"root": str(truth_root)}
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def run_case(case: Case, tmp_path: Path) -> tuple[pipeline.RunOutcome, dict]:
    capture_root = tmp_path / "capture"
    capture_root.mkdir()
    write_capture_tree(capture_root, case.files())
    truth_root = None
    if case.ground_truth is not None:
        truth_root = tmp_path / "truth"
        write_capture_tree(truth_root, {"2024/01/19/10/gt.jsonl": [json.dumps(r) for r in case.ground_truth]})
    with _candidate(case.fault) as server:
        config = load_config(_config_file(tmp_path, capture_root, server.url, case.config, truth_root))
        outcome = pipeline.run_local(config, run_id="case")
    evaluation = json.loads((outcome.run_dir / "report" / "evaluation.json").read_text())
    return outcome, evaluation


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_input_case(case: Case, tmp_path):
    outcome, evaluation = run_case(case, tmp_path)
    accounting = outcome.accounting
    assert dict(accounting.by_reason) == case.reasons
    assert accounting.balanced and accounting.captured == accounting.joined + accounting.quarantined
    assert evaluation["accounting"]["captured"] == accounting.captured

    # Whose loss decides: the candidate's own failures reject, bad capture is excluded, nothing rejects otherwise.
    checks = {check["name"]: check for check in evaluation["checks"]}
    assert evaluation["accounting"]["by_owner"] == accounting.by_owner
    assert sum(accounting.by_owner.values()) == accounting.quarantined
    if accounting.by_owner["evaluation"] == 0 and (accounting.candidate_coverage or 1.0) < config_min_coverage():
        assert outcome.decision == "Rejected"
        assert not checks["candidate_coverage"]["passed"]
    elif accounting.by_owner["candidate"] == 0:
        assert outcome.decision != "Rejected", evaluation["reasons"]
        assert checks["candidate_coverage"]["outcome"] in ("pass", "missing")

    rows = _quarantine_rows(outcome.run_dir)
    assert len(rows) == accounting.quarantined
    for row in rows:
        # Each record says where it came from and what to do about it.
        assert row["capture_file"] and row["capture_file"].startswith("ep/v/")
        assert row["capture_line"] >= 1
        assert REASONS[row["reason"]].fix in row["detail"]
        assert row["stage"] == REASONS[row["reason"]].stage


def config_min_coverage() -> float:
    from steps.config import GateConfig
    return GateConfig().min_coverage


def _quarantine_rows(run_dir: Path) -> list[dict]:
    rows = []
    for folder in ("prepare/quarantine", "join/quarantine"):
        for part in sorted((run_dir / folder).glob("*.parquet")):
            rows += pq.read_table(part).to_pylist()
    return rows


def test_empty_window_says_so_and_never_approves(tmp_path, caplog):
    case = next(c for c in CASES if c.name == "empty window")
    with caplog.at_level("WARNING"):
        outcome, evaluation = run_case(case, tmp_path)
    assert outcome.accounting.captured == 0 and outcome.decision == "Inconclusive"
    assert any("min_records" in reason and "no captured records in the window" in reason
               for reason in evaluation["reasons"])
    assert any("no captured record in the window" in message for message in caplog.messages)


def test_ground_truth_problems_are_counted_not_lost(tmp_path):
    case = next(c for c in CASES if c.ground_truth)
    outcome, _ = run_case(case, tmp_path)
    summary = json.loads((outcome.run_dir / "join" / "summary.json").read_text())
    assert summary["ground_truth"] == {"labels": 5, "matched": 2, "unknown": 1, "duplicates": 2, "invalid": 0}


def test_binary_capture_line_names_the_fix(tmp_path):
    case = next(c for c in CASES if c.name == "gzip file among the JSONL")
    outcome, _ = run_case(case, tmp_path)
    (row,) = [r for r in _quarantine_rows(outcome.run_dir) if r["reason"] == "binary_file"]
    assert row["capture_file"].endswith(".jsonl.gz") and row["capture_line"] == 1
    assert "decompress it or move it out of the capture root" in row["detail"]


def test_ground_truth_in_another_label_vocabulary_is_a_one_line_error(tmp_path, capsys):
    capture_root, truth_root = tmp_path / "capture", tmp_path / "truth"
    write_capture_tree(capture_root, {HOUR_A: good_lines()})
    write_capture_tree(truth_root, {"2024/01/19/10/gt.jsonl": [
        json.dumps(_gt(f"good-{i}", "malignant\nbenign")) for i in range(GOOD_CALLS)]})
    with _candidate(None) as server:
        config = _config_file(tmp_path, capture_root, server.url, {}, truth_root)
        code = pipeline.main(["run", "--config", str(config), "--run-id", "vocabulary"])
    (message,) = capsys.readouterr().err.strip().splitlines()[-1:]
    assert code == 1
    assert message.startswith("shadow-eval: ground-truth labels {benign, malignant} share no value")
    assert "production {1}" in message and "candidate {1}" in message and "ground_truth.label_path" in message
    run_dir = tmp_path / "ws" / "runs" / "vocabulary"
    assert not (run_dir / "report" / "evaluation.json").exists()  # no verdict was written anywhere


# The evaluation's own losses (an output missing where the join looks, or not lining up with its input)
# cannot be provoked through a model server; tests/test_join.py builds them on disk.
JOIN_LEVEL_REASONS = {"replay_output_missing", "replay_output_mismatch"}


def test_every_quarantine_reason_has_a_case():
    covered = {code for case in CASES for code in case.reasons} | JOIN_LEVEL_REASONS
    assert covered == set(REASONS), f"reasons without a corpus case: {sorted(set(REASONS) - covered)}"


# ---------------------------------------------------------------- configuration

CONFIG_CASES = [
    ("unknown key", {"replay": {"max_payload": 6}}, "replay.max_payload", "unknown key"),
    ("unknown section", {"gates": {}}, "gates", "unknown key"),
    ("wrong type", {"replay": {"invocation_max_retries": "three"}}, "replay.invocation_max_retries",
     "expected an integer"),
    ("wrong type for a flag", {"replay": {"noise_floor": "yes"}}, "replay.noise_floor", "expected true or false"),
    ("coverage threshold above 1", {"gate": {"min_coverage": 1.5}}, "gate.min_coverage", "outside [0, 1]"),
    ("negative min_records", {"gate": {"min_records": -1}}, "gate.min_records", "outside"),
    ("payload limit out of range", {"replay": {"max_payload_mb": 500}}, "replay.max_payload_mb", "outside"),
    ("retries out of range", {"replay": {"invocation_max_retries": 9}}, "replay.invocation_max_retries", "outside"),
    ("input_text policy unknown", {"tables": {"input_text": "encrypt"}}, "tables.input_text", "is not one of"),
    ("database name with SQL in it", {"tables": {"database": "x; drop table y"}}, "tables.database",
     "not a plain name"),
    ("database name with a trailing newline", {"tables": {"database": "shadow_eval\n"}}, "tables.database",
     "not a plain name"),
    ("gate threshold NaN", {"gate": {"checks": [{"metric": "accuracy", "threshold": float("nan")}]}},
     "gate.checks[0].threshold", "not a finite number"),
    ("infinite gate threshold", {"gate": {"checks": [{"metric": "accuracy", "threshold": float("-inf")}]}},
     "gate.checks[0].threshold", "not a finite number"),
    ("infinite tolerance", {"compare": {"abs_tolerance": float("inf")}}, "compare.abs_tolerance",
     "not a finite number"),
    ("negative tolerance", {"compare": {"rel_tolerance": -0.1}}, "compare.rel_tolerance", "outside"),
    ("NaN decision threshold", {"compare": {"thresholds": [float("nan")]}}, "compare.thresholds[0]",
     "not a finite number"),
    ("min_records of zero", {"gate": {"min_records": 0}}, "gate.min_records", "outside [1,"),
    ("NaN min_coverage", {"gate": {"min_coverage": float("nan")}}, "gate.min_coverage", "not a finite number"),
    ("endpoint that climbs out of the capture root", {"capture": {"endpoint": "../elsewhere"}}, "capture.endpoint",
     "not a plain name"),
    ("variant with a newline", {"capture": {"variant": "AllTraffic\n"}}, "capture.variant", "not a plain name"),
    ("registry outside the workspace", {"registry": {"path": "../../registry.sqlite"}}, "registry.path",
     "inside the workspace"),
    ("package group with a newline", {"registry": {"group": "fraud\n"}}, "registry.group", "not a plain name"),
]


@pytest.mark.parametrize("name,data,key,problem", CONFIG_CASES, ids=[c[0] for c in CONFIG_CASES])
def test_bad_config_names_file_and_key(name, data, key, problem, tmp_path, capsys):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert caught.value.key == key and str(path) in str(caught.value) and problem in str(caught.value)
    code = pipeline.main(["run", "--config", str(path), "--candidate", "http://127.0.0.1:9"])
    assert code == pipeline.EXIT_USAGE
    assert f"{path}: {key}:" in capsys.readouterr().err


@pytest.mark.parametrize("run_id", ["../escape", "x' OR 1=1 --", "a" * 65, "", "r1\n"])
def test_bad_run_id_is_refused_before_anything_runs(run_id, tmp_path):
    config = load_config(_config_file(tmp_path, tmp_path, "http://127.0.0.1:9", {}, None))
    with pytest.raises(ConfigError):
        pipeline.run_local(config, run_id=run_id or "-")
    assert not (tmp_path / "ws" / "runs").exists()


def test_base64_helper_is_valid():  # guards the corpus: the helper's BASE64 side must decode
    record = capture_record("abc", "0.7", input_type="application/x-image")
    assert base64.b64decode(record["captureData"]["endpointInput"]["data"]) == b"abc"


# ---------------------------------------------------------------- files that are not files

def _within(seconds: float, work: Callable[[], object]) -> object:
    """work() in a thread; fails (instead of hanging the suite) when it takes longer than seconds."""
    import threading
    result: dict = {}

    def target() -> None:
        try:
            result["value"] = work()
        except BaseException as exc:  # noqa: BLE001 - handed back to the test
            result["error"] = exc
    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"still running after {seconds} s: something blocked"
    if "error" in result:
        raise result["error"]
    return result["value"]


def _hostile_entries(folder: Path, outside: Path) -> dict[str, str]:
    """A FIFO, a socket, a link loop and a link out of the tree in folder; the name of each and what it is."""
    import os
    import socket
    folder.mkdir(parents=True, exist_ok=True)
    os.mkfifo(folder / "pipe.jsonl")
    (folder / "loop.jsonl").symlink_to(folder / "loop.jsonl")
    outside.write_text(good_lines("outside", 1)[0] + "\n")
    (folder / "out.jsonl").symlink_to(outside)
    entries = {"pipe.jsonl": "FIFO", "loop.jsonl": "symbolic link loop", "out.jsonl": "outside"}
    sock = socket.socket(socket.AF_UNIX)
    try:
        sock.bind(str(folder / "sock.jsonl"))
        entries["sock.jsonl"] = "socket"
    except OSError:  # the path is too long for a Unix socket here; the other kinds still run
        pass
    finally:
        sock.close()
    return entries


def test_fifos_sockets_link_loops_and_links_out_of_the_capture_root_are_misfits_never_a_hang(tmp_path):
    root = tmp_path / "capture"
    write_capture_tree(root, {HOUR_A: good_lines()})
    hour_folder = (root / HOUR_A).parent
    entries = _hostile_entries(hour_folder, tmp_path / "secret.jsonl")
    with ContractServer() as server:
        config = load_config(_config_file(tmp_path, root, server.url, {}, None))
        outcome = _within(60, lambda: pipeline.run_local(config, run_id="files"))
    assert (outcome.accounting.captured, outcome.accounting.joined) == (2 * GOOD_CALLS, 2 * GOOD_CALLS)
    from steps.capture_files import list_capture_files
    misfits = {Path(m.relative).name: m.problem for m in list_capture_files(root).misfits}
    assert set(misfits) == set(entries)
    for name, kind in entries.items():
        assert kind in misfits[name] and ("remove" in misfits[name] or "move" in misfits[name]
                                          or "copy" in misfits[name])


def test_ground_truth_skips_fifos_loops_and_folders_named_like_files(tmp_path, caplog):
    capture_root = tmp_path / "capture"
    write_capture_tree(capture_root, {HOUR_A: good_lines()})
    truth = tmp_path / "truth"
    write_capture_tree(truth, {"2024/01/19/10/gt.jsonl": [json.dumps(_gt("good-0", "1\n0"))]})
    hour = truth / "2024/01/19/10"
    entries = _hostile_entries(hour, tmp_path / "elsewhere.jsonl")
    (hour / "x.jsonl").mkdir()
    entries["x.jsonl"] = "folder"
    with ContractServer() as server, caplog.at_level("WARNING"):
        config = load_config(_config_file(tmp_path, capture_root, server.url, {}, truth))
        outcome = _within(60, lambda: pipeline.run_local(config, run_id="truth"))
    summary = json.loads((outcome.run_dir / "join" / "summary.json").read_text())
    assert summary["ground_truth"]["labels"] == 2 and summary["ground_truth"]["matched"] == 2
    for name, kind in entries.items():
        assert any(name in message and kind in message for message in caplog.messages), name


def test_a_fifo_given_as_the_config_is_a_config_error(tmp_path, capsys):
    import os
    os.mkfifo(tmp_path / "config.yaml")
    code = _within(30, lambda: pipeline.main(["run", "--config", str(tmp_path / "config.yaml")]))
    assert code == pipeline.EXIT_USAGE and "FIFO" in capsys.readouterr().err


@pytest.mark.parametrize("what", ["truncated model.tar.gz", "symlink loop as the capture root",
                                  "symlink loop as the model"])
def test_broken_paths_name_the_file_and_a_fix_without_a_traceback(what, tmp_path, capsys):
    from model_helpers import build_model_tar
    capture_root = tmp_path / "capture"
    write_capture_tree(capture_root, {HOUR_A: good_lines()})
    model = build_model_tar(tmp_path / "model.tar.gz")
    if what == "truncated model.tar.gz":
        model.write_bytes(model.read_bytes()[: model.stat().st_size // 2])
        expected = ["model.tar.gz", "truncated"]
    elif what == "symlink loop as the capture root":
        capture_root = tmp_path / "loop"
        capture_root.symlink_to(capture_root)
        expected = [str(capture_root)]
    else:
        model = tmp_path / "model-loop.tar.gz"
        model.symlink_to(model)
        expected = ["model-loop.tar.gz", "link loop"]
    config = _config_file(tmp_path, capture_root, str(model), {}, None)
    code = pipeline.main(["run", "--config", str(config)])
    err = capsys.readouterr().err
    assert code in (pipeline.EXIT_FAILED, pipeline.EXIT_USAGE)
    assert "Traceback" not in err and all(text in err for text in expected), err


def test_hash_or_drop_keeps_payloads_out_of_quarantine_details(tmp_path):
    """The model server's error names the value it could not read: that detail stays out of the table."""
    import duckdb

    from model_helpers import build_model_tar
    secret = "4111-1111-1111-1111"
    capture_root = tmp_path / "capture"
    write_capture_tree(capture_root, {HOUR_A: good_lines(calls=2) + [
        capture_line(f"1.0,{secret}", "0.7", event_id="card", output_type="text/csv")]})
    model = build_model_tar(tmp_path / "model.tar.gz")
    details = {}
    for policy in ("keep", "drop", "hash"):
        workspace = tmp_path / policy
        config = load_config(_config_file(tmp_path, capture_root, str(model), {"tables": {"input_text": policy}},
                                          None))
        config = dataclasses.replace(config, workspace=str(workspace))
        pipeline.run_local(config, run_id="pii")
        with duckdb.connect(str(workspace / "shadow.duckdb"), read_only=True) as db:
            details[policy] = [d for (d,) in db.execute("SELECT detail FROM shadow_quarantine").fetchall()]
    assert any(secret in detail for detail in details["keep"])  # the test can fail: keep shows it
    for policy in ("drop", "hash"):
        assert details[policy] and not any(secret in detail for detail in details[policy])
        assert all(REASONS["replay_file_failed"].fix in detail for detail in details[policy])
@pytest.mark.parametrize("shape", ["json-document", "json-lines"])
def test_the_same_model_answering_in_another_shape_is_joined_record_by_record(shape, tmp_path):
    # 20 unlabelled records cannot show equivalence within the default 1% margin (the worlds in
    # test_verdict_worlds.py do, at 1500); a wide margin lets this small case show the join is complete.
    case = dataclasses.replace(next(c for c in CASES if c.fault == shape),
                               config={"gate": {"policy": {"equivalence_margin": 0.2}}})
    outcome, evaluation = run_case(case, tmp_path)
    assert outcome.accounting.coverage == 1.0 and outcome.decision == "Approved", evaluation["reasons"]
    joined = load_joined(outcome.run_dir)
    assert len(joined) == 2 * GOOD_CALLS
    assert (joined["candidate_score"] == 0.7).all() and joined["tolerant_match"].all()
    assert (joined["candidate_label"] == joined["production_label"]).all()
