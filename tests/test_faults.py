"""Candidate faults through a container that speaks the contract: retried, reported, quarantined, resumable.

Three capture files of eight CSV records each; with MultiRecord and one request in flight, each
file is one invocation, told apart by its feature values. A fault hits file 2 (or everything from
it on). Re-running the same run id against a healthy container must invoke only what did not
finish, and end with every record joined exactly once.
"""
from __future__ import annotations

import json
from pathlib import Path

import duckdb
import pytest

import pipeline
from capture_helpers import at, capture_line, capture_path, write_capture_tree
from contract_server import ContractServer
from steps import transformer
from steps.config import config_from_mapping

FILES = 3
CALLS_PER_FILE, ROWS_PER_CALL = 4, 2
RECORDS = FILES * CALLS_PER_FILE * ROWS_PER_CALL
FILE_2_MARK = b"2.5,"


def on_file_2(fault: str, attempts: int | None = None):
    """A fault hook: `fault` on requests for file 2 (only its first `attempts` ones, when given)."""
    seen = []

    def hook(call):
        if FILE_2_MARK not in call.body:
            return None
        seen.append(call)
        return fault if attempts is None or len(seen) <= attempts else None
    return hook


@pytest.fixture
def capture(tmp_path) -> Path:
    root = tmp_path / "capture"
    files = {}
    for number in range(1, FILES + 1):
        value = f"{number}.5"
        files[capture_path("ep", "v", at(9 + number))] = [
            capture_line(f"{value},1.0\n{value},2.0", "0.7\n0.7", event_id=f"f{number}-{call}")
            for call in range(CALLS_PER_FILE)]
    write_capture_tree(root, files)
    return root


def config_for(tmp_path: Path, capture: Path, url: str, **replay):
    return config_from_mapping({
        "workspace": str(tmp_path / "ws"), "capture": {"root": str(capture)}, "candidate": {"model": url},
        "replay": {"max_concurrent_transforms": 1, "invocation_max_retries": 2, "invocation_timeout_s": 5, **replay},
    })


def replay_summary(outcome) -> dict:
    return json.loads((outcome.run_dir / "replay" / "candidate.json").read_text())["csv"]


def table_ids(tmp_path: Path, run_id: str) -> list[str]:
    with duckdb.connect(str(tmp_path / "ws" / "shadow.duckdb"), read_only=True) as db:
        return [r for (r,) in db.execute("select record_id from shadow_records where run_id = ?", [run_id]).fetchall()]


def assert_complete(tmp_path: Path, outcome) -> None:
    """No gaps, no duplicates: every captured record joined once, in the table once."""
    accounting = outcome.accounting
    assert (accounting.captured, accounting.joined, accounting.quarantined) == (RECORDS, RECORDS, 0)
    ids = table_ids(tmp_path, outcome.run_id)
    assert len(ids) == len(set(ids)) == RECORDS
    # An identical candidate with no labels: nothing against it, but 24 records cannot show equivalence.
    evaluation = json.loads((outcome.run_dir / "report" / "evaluation.json").read_text())
    equivalence = next(c for c in evaluation["checks"] if c["name"] == "equivalent_to_production")
    assert outcome.decision == "Inconclusive" and equivalence["outcome"] == "undecided"
    assert equivalence["estimate"] == 0.0


def run_faulty_then_healthy(tmp_path, capture, hook, reason: str, **replay):
    """Run once against a faulty container, check file 2 is reported and quarantined, then resume."""
    with ContractServer(fault=hook, sleep_s=2.5) as faulty:
        first = pipeline.run_local(config_for(tmp_path, capture, faulty.url, **replay), run_id="r1")
    summary = replay_summary(first)
    (failure,) = [f for f in summary["files_failed"] if "10/" not in f["file"] and "12/" not in f["file"]]
    assert failure["reason"] == reason and failure["file"].endswith(".jsonl.csv")
    assert first.accounting.by_reason == {"replay_file_failed": CALLS_PER_FILE * ROWS_PER_CALL}
    assert first.accounting.balanced and first.decision == "Rejected"
    rows = _join_quarantine(first.run_dir)
    assert {row["capture_file"] for row in rows} == {failure["file"].removesuffix(".csv")}
    assert all(reason in row["detail"] and "re-run the same run id" in row["detail"] for row in rows)

    with ContractServer() as healthy:
        second = pipeline.run_local(config_for(tmp_path, capture, healthy.url, **replay), run_id="r1")
        assert healthy.invocations == 1  # only file 2: the others are checkpointed
    assert_complete(tmp_path, second)
    return summary


def _join_quarantine(run_dir: Path) -> list[dict]:
    import pyarrow.parquet as pq
    return [row for part in sorted((run_dir / "join" / "quarantine").glob("*.parquet"))
            for row in pq.read_table(part).to_pylist()]


def test_http_500_on_a_batch_is_retried_as_configured_then_quarantined(tmp_path, capture):
    summary = run_faulty_then_healthy(tmp_path, capture, on_file_2("http_500"), "http_500")
    assert summary["retries"] == 2 and summary["invocations"] == FILES + 2


def test_a_transient_http_500_is_absorbed_by_a_retry(tmp_path, capture):
    with ContractServer(fault=on_file_2("http_500", attempts=1)) as server:
        outcome = pipeline.run_local(config_for(tmp_path, capture, server.url), run_id="r1")
    assert replay_summary(outcome)["retries"] == 1
    assert_complete(tmp_path, outcome)


def test_no_retries_when_configured_so(tmp_path, capture):
    with ContractServer(fault=on_file_2("http_500", attempts=1)) as server:
        outcome = pipeline.run_local(config_for(tmp_path, capture, server.url, invocation_max_retries=0), run_id="r1")
    assert replay_summary(outcome)["invocations"] == FILES
    assert outcome.accounting.by_reason == {"replay_file_failed": CALLS_PER_FILE * ROWS_PER_CALL}


def test_a_timeout_is_retried_then_quarantined(tmp_path, capture):
    run_faulty_then_healthy(tmp_path, capture, on_file_2("sleep"), "timeout",
                            invocation_timeout_s=1, invocation_max_retries=1)


def test_a_truncated_response_is_retried_then_quarantined(tmp_path, capture):
    run_faulty_then_healthy(tmp_path, capture, on_file_2("truncated"), "truncated_response")


def test_a_short_response_fails_the_file(tmp_path, capture):
    run_faulty_then_healthy(tmp_path, capture, on_file_2("short"), "output_count_mismatch")


def test_a_server_that_dies_mid_run_leaves_the_rest_for_a_rerun(tmp_path, capture):
    with ContractServer(fault=on_file_2("die")) as dying:
        first = pipeline.run_local(config_for(tmp_path, capture, dying.url, invocation_max_retries=1), run_id="r1")
    failed = replay_summary(first)["files_failed"]
    assert [f["reason"] for f in failed] == ["connection_error", "connection_error"]  # files 2 and 3
    assert first.accounting.by_reason == {"replay_file_failed": 2 * CALLS_PER_FILE * ROWS_PER_CALL}
    assert first.decision == "Rejected"
    with ContractServer() as healthy:
        second = pipeline.run_local(config_for(tmp_path, capture, healthy.url), run_id="r1")
        assert healthy.invocations == 2
    assert_complete(tmp_path, second)


def test_an_interrupted_run_resumes_from_its_per_file_checkpoints(tmp_path, capture, monkeypatch):
    real_write = transformer._write_atomically
    outs = []

    def crash_on_second_out(path, data):
        if path.suffix == ".out":
            outs.append(path)
            if len(outs) == 2:
                raise KeyboardInterrupt("the machine went away")
        real_write(path, data)

    monkeypatch.setattr(transformer, "_write_atomically", crash_on_second_out)
    with ContractServer() as server, pytest.raises(KeyboardInterrupt):
        pipeline.run_local(config_for(tmp_path, capture, server.url), run_id="r1")
    monkeypatch.setattr(transformer, "_write_atomically", real_write)
    with ContractServer() as server:
        outcome = pipeline.run_local(config_for(tmp_path, capture, server.url), run_id="r1")
        assert server.invocations == 2  # file 1 finished before the interruption
    assert_complete(tmp_path, outcome)


def test_a_rerun_after_success_invokes_nothing_and_duplicates_nothing(tmp_path, capture):
    with ContractServer() as server:
        first = pipeline.run_local(config_for(tmp_path, capture, server.url), run_id="r1")
        again = pipeline.run_local(config_for(tmp_path, capture, server.url), run_id="r1")
        assert server.invocations == FILES
    assert_complete(tmp_path, first)
    assert_complete(tmp_path, again)


def test_a_changed_capture_file_is_replayed_again_not_served_from_a_stale_checkpoint(tmp_path, capture):
    with ContractServer() as server:
        pipeline.run_local(config_for(tmp_path, capture, server.url), run_id="r1")
    # The last object was still being written: two more calls arrived before the re-run.
    (last,) = sorted(capture.rglob("*.jsonl"))[-1:]
    with last.open("a") as handle:
        handle.write(capture_line("3.5,9.0", "0.7", event_id="late-1") + "\n")
    with ContractServer() as server:
        outcome = pipeline.run_local(config_for(tmp_path, capture, server.url), run_id="r1")
        assert server.invocations == 1
    assert outcome.accounting.joined == outcome.accounting.captured == RECORDS + 1


def test_every_transform_failure_reason_is_declared():
    declared = set(transformer.FAILURE_REASONS)
    for reason in ("timeout", "connection_error", "truncated_response", "output_count_mismatch"):
        assert reason in declared


# ---------------------------------------------------------------- resuming only what the same inputs produced

def test_wrong_answers_are_asked_again_when_the_run_is_resumed(tmp_path):
    """A container that answers one prediction for a two-record request writes a complete .out: join finds
    the count wrong; re-running the run id against the fixed container asks again for those files only."""
    root = tmp_path / "capture"
    document = json.dumps({"instances": [[1.0, 2.0], [3.0, 4.0]]})
    answer = json.dumps({"predictions": [{"score": 0.7}, {"score": 0.7}]})
    write_capture_tree(root, {capture_path("ep", "v", at(10 + hour)): [
        capture_line(document, answer, event_id=f"h{hour}-{call}", input_type="application/json")
        for call in range(2)] for hour in range(2)})

    def one_answer_short(body: bytes, kind: str) -> bytes:
        return json.dumps({"predictions": json.loads(body)["predictions"][:1]}).encode()
    mapping = {"workspace": str(tmp_path / "ws"), "capture": {"root": str(root)},
               "replay": {"max_concurrent_transforms": 1}}
    with ContractServer(rewrite=one_answer_short) as broken:
        first = pipeline.run_local(config_from_mapping({**mapping, "candidate": {"model": broken.url}}), run_id="r1")
    assert first.accounting.by_reason == {"candidate_count_mismatch": 8}
    with ContractServer() as fixed:
        second = pipeline.run_local(config_from_mapping({**mapping, "candidate": {"model": fixed.url}}), run_id="r1")
        assert fixed.invocations == 4  # every file was wrong, so every call is made again
    assert (second.accounting.captured, second.accounting.joined) == (8, 8)
    with ContractServer() as again:
        pipeline.run_local(config_from_mapping({**mapping, "candidate": {"model": again.url}}), run_id="r1")
        assert again.invocations == 0  # right answers stay checkpointed


def _model_run(tmp_path, capture, model, **config):
    mapping = {"workspace": str(tmp_path / "ws"), "capture": {"root": str(capture)}, "candidate": {"model": str(model)},
               "replay": {"max_concurrent_transforms": 1}, **config}
    return pipeline.run_local(config_from_mapping(mapping), run_id="r1")


def test_a_resume_with_another_candidate_model_refuses_and_says_what_changed(tmp_path, capture):
    from model_helpers import build_model_tar

    first_model = build_model_tar(tmp_path / "a" / "model.tar.gz")
    _model_run(tmp_path, capture, first_model)
    other_model = build_model_tar(tmp_path / "b" / "model.tar.gz", extra_files={"README": "retrained"})
    with pytest.raises(pipeline.RunChanged, match="candidate model sha256:"):
        _model_run(tmp_path, capture, other_model)
    _model_run(tmp_path, capture, tmp_path / "a" / "model.tar.gz")  # the same model resumes fine


def test_a_resume_with_another_window_or_config_refuses(tmp_path, capture):
    with ContractServer() as server:
        pipeline.run_local(config_for(tmp_path, capture, server.url), run_id="r1")
        changed = config_from_mapping({
            "workspace": str(tmp_path / "ws"), "candidate": {"model": server.url},
            "capture": {"root": str(capture), "window_start": "2024-01-19T11:00:00Z"},
            "replay": {"max_concurrent_transforms": 1, "invocation_max_retries": 2, "invocation_timeout_s": 5}})
        with pytest.raises(pipeline.RunChanged, match="capture.window_start"):
            pipeline.run_local(changed, run_id="r1")
        assert pipeline.main(["run", "--config", _yaml(tmp_path, changed), "--run-id", "r1"]) == pipeline.EXIT_USAGE


def _yaml(tmp_path: Path, config) -> str:
    import yaml

    from steps.config import to_mapping
    path = tmp_path / "changed.yaml"
    path.write_text(yaml.safe_dump(to_mapping(config)))
    return str(path)


def test_a_checkpoint_names_the_model_that_answered(tmp_path, capture):
    with ContractServer() as server:
        outcome = pipeline.run_local(config_for(tmp_path, capture, server.url), run_id="r1")
    markers = sorted((outcome.run_dir / "replay" / "candidate").rglob("*.input-sha256"))
    assert len(markers) == FILES
    assert all(marker.read_text().split()[1:] == ["container"] for marker in markers)


# ---------------------------------------------------------------- publish, then decide

def test_a_locked_duckdb_file_fails_the_run_before_the_registry_and_a_resume_finishes_it(tmp_path, capture):
    import subprocess
    import sys

    from steps.backends.registry import LocalRegistry

    registry = LocalRegistry(tmp_path / "ws" / "registry.sqlite")
    package = registry.register("shadow-eval-demo", "s3://b/candidate.tar.gz")
    with ContractServer() as server:
        pipeline.run_local(config_for(tmp_path, capture, server.url), run_id="r0")  # makes shadow.duckdb
        database = tmp_path / "ws" / "shadow.duckdb"
        analyst = subprocess.Popen([sys.executable, "-c", "import duckdb, sys, time; "
                                    f"c = duckdb.connect({str(database)!r}, read_only=True); print('open', flush=True); "
                                    "sys.stdin.read()"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        try:
            assert analyst.stdout.readline().strip() == "open"
            with pytest.raises(ValueError, match=r"shadow\.duckdb is locked by another program.*close that connection"):
                pipeline.run_local(config_for(tmp_path, capture, server.url), run_id="r1", candidate_package=package)
            assert registry.describe(package).status == "PendingManualApproval"
            assert [h.run_id for h in registry.history(package)] == [None]
        finally:
            analyst.communicate("", timeout=30)
        outcome = pipeline.run_local(config_for(tmp_path, capture, server.url), run_id="r1", candidate_package=package)
    # The resumed run records its verdict (a few records: Inconclusive keeps the package pending).
    status = {"Approved": "Approved", "Rejected": "Rejected"}.get(outcome.decision, "PendingManualApproval")
    assert registry.describe(package).status == status
    assert [h.run_id for h in registry.history(package)] == [None, "r1"]


# ---------------------------------------------------------------- the model server never outlives the run

PARENT = """
import sys, time
from pathlib import Path
from steps.model_server import serve_model
with serve_model(sys.argv[1], Path(sys.argv[2])) as url:
    print(url, flush=True)
    time.sleep(300)
"""


def test_kill_9_of_the_run_stops_its_model_server_and_removes_its_folder(tmp_path):
    import os
    import signal
    import socket
    import subprocess
    import sys
    import tempfile
    import time

    from model_helpers import build_model_tar
    from steps.model_server import SCRATCH_PREFIX

    model = build_model_tar(tmp_path / "model.tar.gz")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(pipeline.__file__).parent), os.environ.get(
        "PYTHONPATH", "")])}
    run = subprocess.Popen([sys.executable, "-c", PARENT, str(model), str(tmp_path / "server.log")], env=env,
                           stdout=subprocess.PIPE, text=True)
    url = run.stdout.readline().strip()
    port = int(url.rsplit(":", 1)[1])
    folders = list(Path(tempfile.gettempdir()).glob(f"{SCRATCH_PREFIX}{run.pid}-*"))
    assert url.startswith("http://127.0.0.1:") and len(folders) == 1, (url, folders)
    os.kill(run.pid, signal.SIGKILL)
    run.wait()
    deadline = time.monotonic() + 30  # generous: the machine may be busy
    while time.monotonic() < deadline:
        with socket.socket() as probe:
            listening = probe.connect_ex(("127.0.0.1", port)) == 0
        if not listening and not folders[0].exists():
            break
        time.sleep(0.2)
    assert not listening, "the model server outlived the run"
    assert not folders[0].exists(), "the model folder outlived the run"


def test_folders_of_dead_runs_are_swept_and_live_ones_kept(tmp_path):
    import subprocess
    import sys

    from steps.model_server import SCRATCH_PREFIX, sweep_stale_folders

    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead = tmp_path / f"{SCRATCH_PREFIX}{gone.stdout.strip()}-abc"
    live = tmp_path / f"{SCRATCH_PREFIX}{__import__('os').getpid()}-def"
    other = tmp_path / "shadow-eval-model-notapid"
    for folder in (dead, live, other):
        (folder / "code").mkdir(parents=True)
    assert sweep_stale_folders(tmp_path) == [dead]
    assert live.exists() and other.exists() and not dead.exists()
