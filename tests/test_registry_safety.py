"""Registry safety: compare-and-set from the status a run began with, one decision per race, manual decisions
kept, every transition audited (local history; SageMaker approval description, on moto)."""
from __future__ import annotations

import concurrent.futures
import dataclasses
import json
import sqlite3
import threading

import boto3
import pytest
from moto import mock_aws

import pipeline
from capture_helpers import at, capture_line, capture_path, write_capture_tree
from contract_server import ContractServer
from steps.backends.registry import LocalRegistry, parse_transition_note, transition_note
from steps.backends.registry_sagemaker import SageMakerRegistry
from steps.config import config_from_mapping
from steps.gate import record_verdict

PENDING = "PendingManualApproval"


@pytest.fixture
def registry(tmp_path):
    return LocalRegistry(tmp_path / "registry.sqlite")


def _verdict(registry, package, verdict, run_id, at_start=PENDING):
    return record_verdict(registry, package, at_start, verdict, f"gate says {verdict}", run_id, "report.html")


def test_a_verdict_applies_from_the_status_the_run_began_with(registry):
    package = registry.register("fraud", "s3://b/m.tar.gz")
    result = _verdict(registry, package, "Approved", "run-1")
    assert result["updated"] and registry.describe(package).status == "Approved"


def test_a_manual_decision_during_the_run_is_never_overwritten(registry):
    package = registry.register("fraud", "s3://b/m.tar.gz")
    registry.set_status(package, PENDING, "Rejected", "rejected by hand", None)
    result = _verdict(registry, package, "Approved", "run-1")
    assert not result["updated"] and "left alone" in result["note"]
    assert registry.describe(package).status == "Rejected"


@pytest.mark.parametrize("manual", ["Approved", "Rejected"])
def test_a_manual_decision_before_the_run_is_never_overwritten_even_from_its_own_status(registry, manual):
    package = registry.register("fraud", "s3://b/m.tar.gz")
    registry.set_status(package, PENDING, manual, f"{manual} by hand", None)
    other = "Rejected" if manual == "Approved" else "Approved"
    assert not registry.set_status(package, manual, other, "gate", "run-1")
    assert not _verdict(registry, package, other, "run-1", at_start=manual)["updated"]
    assert registry.describe(package).status == manual
    assert [h.run_id for h in registry.history(package)] == [None, None]


def test_a_package_registered_as_approved_counts_as_a_manual_decision(registry):
    package = registry.register("fraud", "s3://b/m.tar.gz", status="Approved")
    assert not registry.set_status(package, "Approved", "Rejected", "gate", "run-1")


def test_a_later_run_may_revise_an_earlier_run_s_decision(registry):
    package = registry.register("fraud", "s3://b/m.tar.gz")
    assert registry.set_status(package, PENDING, "Approved", "gate", "run-1")
    assert registry.set_status(package, "Approved", "Rejected", "re-judged", "run-2")
    assert [(h.from_status, h.to_status, h.run_id) for h in registry.history(package)] == [
        (None, PENDING, None), (PENDING, "Approved", "run-1"), ("Approved", "Rejected", "run-2")]


def test_a_person_may_always_overrule_a_run(registry):
    package = registry.register("fraud", "s3://b/m.tar.gz")
    assert registry.set_status(package, PENDING, "Rejected", "gate", "run-1")
    assert registry.set_status(package, "Rejected", "Approved", "overruled by hand", None)


def _by_hand(registry, package, status):
    """What someone with the sqlite3 shell does: no history row, no run id, nothing but the status."""
    with sqlite3.connect(registry.path) as db:
        db.execute("UPDATE packages SET approval_status = ? WHERE package_id = ?", (status, package))
    db.close()


@pytest.mark.parametrize("automatic, manual", [("Approved", "Rejected"), ("Rejected", "Approved")])
def test_a_status_set_outside_the_tool_after_a_run_s_decision_is_never_overwritten(registry, automatic, manual):
    package = registry.register("fraud", "s3://b/m.tar.gz")
    assert registry.set_status(package, PENDING, automatic, "gate", "run-1")
    _by_hand(registry, package, manual)  # the last history row still names run-1
    result = _verdict(registry, package, automatic, "run-2", at_start=manual)
    assert not result["updated"] and registry.describe(package).status == manual


def test_a_status_flipped_outside_the_tool_and_back_still_counts_as_manual(registry):
    package = registry.register("fraud", "s3://b/m.tar.gz")
    assert registry.set_status(package, PENDING, "Approved", "gate", "run-1")
    _by_hand(registry, package, "Rejected")
    _by_hand(registry, package, "Approved")  # a person confirmed it: a run may no longer revise it
    assert not registry.set_status(package, "Approved", "Rejected", "re-judged", "run-2")
    assert registry.describe(package).status == "Approved"


def test_a_pending_status_set_by_hand_asks_for_a_decision(registry):
    package = registry.register("fraud", "s3://b/m.tar.gz")
    assert registry.set_status(package, PENDING, "Rejected", "gate", "run-1")
    _by_hand(registry, package, PENDING)  # "judge it again"
    assert registry.set_status(package, PENDING, "Approved", "gate", "run-2")


def test_a_registry_file_from_before_the_write_count_keeps_its_decisions(tmp_path):
    path = tmp_path / "old.sqlite"
    with sqlite3.connect(path) as db:  # the schema as it was, with a run's decision in it
        db.executescript(OLD_SCHEMA)
    db.close()
    registry = LocalRegistry(path)
    assert not registry.set_status("fraud/1", "Approved", "Rejected", "gate", "run-2")
    assert registry.describe("fraud/1").status == "Approved"
    package = registry.register("fraud", "s3://b/m2.tar.gz")
    assert registry.set_status(package, PENDING, "Approved", "gate", "run-3")
    assert registry.set_status(package, "Approved", "Rejected", "re-judged", "run-4")


OLD_SCHEMA = """
CREATE TABLE package_groups (name TEXT PRIMARY KEY, created_at TEXT NOT NULL);
CREATE TABLE packages (package_id TEXT PRIMARY KEY, group_name TEXT NOT NULL, version INTEGER NOT NULL,
    model_uri TEXT NOT NULL, approval_status TEXT NOT NULL, description TEXT NOT NULL, metadata TEXT NOT NULL,
    created_at TEXT NOT NULL, updated_at TEXT NOT NULL, UNIQUE (group_name, version));
CREATE TABLE history (id INTEGER PRIMARY KEY AUTOINCREMENT, package_id TEXT NOT NULL, from_status TEXT,
    to_status TEXT NOT NULL, changed_by TEXT NOT NULL, reason TEXT NOT NULL, run_id TEXT, changed_at TEXT NOT NULL);
INSERT INTO package_groups VALUES ('fraud', '2025-01-01T00:00:00Z');
INSERT INTO packages VALUES ('fraud/1', 'fraud', 1, 's3://b/m.tar.gz', 'Approved', 'gate', '{}',
    '2025-01-01T00:00:00Z', '2025-01-01T00:00:00Z');
INSERT INTO history VALUES (1, 'fraud/1', NULL, 'PendingManualApproval', 'shadow-eval', 'registered', NULL, 'x');
INSERT INTO history VALUES (2, 'fraud/1', 'PendingManualApproval', 'Approved', 'shadow-eval', 'gate', 'run-1', 'x');
"""


def _race(path: str, package: str, verdict: str, run_id: str) -> bool:
    return LocalRegistry(path).set_status(package, PENDING, verdict, f"gate says {verdict}", run_id)


def test_racing_runs_in_separate_processes_make_one_decision(tmp_path):
    path = str(tmp_path / "registry.sqlite")
    package = LocalRegistry(path).register("fraud", "s3://b/m.tar.gz")
    runs = [("Approved" if i % 2 else "Rejected", f"run-{i}") for i in range(6)]
    with concurrent.futures.ProcessPoolExecutor(len(runs)) as pool:
        wins = list(pool.map(_race, [path] * len(runs), [package] * len(runs), *zip(*runs)))
    assert sum(wins) == 1
    history = LocalRegistry(path).history(package)
    assert len(history) == 2 and history[1].run_id == runs[wins.index(True)][1]
    assert LocalRegistry(path).describe(package).status == runs[wins.index(True)][0]


def test_racing_threads_through_the_gate_make_one_decision(registry):
    for round_number in range(5):
        package = registry.register("fraud", f"s3://b/m{round_number}.tar.gz")
        barrier, results = threading.Barrier(4), []

        def run(verdict, run_id):
            barrier.wait()
            results.append(_verdict(registry, package, verdict, run_id)["updated"])
        threads = [threading.Thread(target=run, args=("Approved" if i % 2 else "Rejected", f"run-{i}"))
                   for i in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert sorted(results) == [False, False, False, True]
        assert len(registry.history(package)) == 2


# ---------------------------------------------------------------- through the whole local run

@pytest.fixture
def world(tmp_path):
    root = tmp_path / "capture"
    write_capture_tree(root, {capture_path("ep", "v", at(10)): [
        capture_line("1.0,2.0", "0.7", event_id=f"e{i}") for i in range(5)]})
    registry = LocalRegistry(tmp_path / "ws" / "registry.sqlite")
    package = registry.register("shadow-eval-demo", "s3://b/candidate.tar.gz")
    return root, registry, package


def _run(tmp_path, root, url, package, run_id="r1"):
    # Five identical answers cannot show equivalence within 1%; a lenient margin lets the gate decide.
    config = config_from_mapping({"workspace": str(tmp_path / "ws"), "capture": {"root": str(root)},
                                  "candidate": {"model": url}, "gate": {"policy": {"equivalence_margin": 0.5}}})
    return pipeline.run_local(config, run_id=run_id, candidate_package=package)


def test_a_manual_rejection_while_the_run_replays_survives_an_approving_gate(tmp_path, world):
    root, registry, package = world

    def reject_by_hand(call):
        if call.number == 1:
            registry.set_status(package, PENDING, "Rejected", "rejected by hand mid-run", None)
        return None
    with ContractServer(fault=reject_by_hand) as server:
        outcome = _run(tmp_path, root, server.url, package)
    assert outcome.decision == "Approved"  # the gate's verdict ...
    assert registry.describe(package).status == "Rejected"  # ... is not what the registry holds
    evaluation = json.loads((outcome.run_dir / "report" / "evaluation.json").read_text())
    assert evaluation["registry"]["updated"] is False and evaluation["registry"]["status_now"] == "Rejected"
    assert [h.run_id for h in registry.history(package)] == [None, None]


def test_resuming_a_decided_run_does_not_decide_twice(tmp_path, world):
    root, registry, package = world
    with ContractServer() as server:
        _run(tmp_path, root, server.url, package)
        _run(tmp_path, root, server.url, package)
    assert [(h.to_status, h.run_id) for h in registry.history(package)] == [(PENDING, None), ("Approved", "r1")]


def test_bad_capture_is_excluded_not_held_against_the_candidate(tmp_path, world):
    root, registry, package = world
    write_capture_tree(root, {capture_path("ep", "v", at(11)): ["{broken"]})  # 1 of 6 records quarantined
    with ContractServer() as server:
        outcome = _run(tmp_path, root, server.url, package)
    assert outcome.accounting.by_owner == {"capture": 1, "candidate": 0, "evaluation": 0}
    assert outcome.decision == "Approved" and registry.describe(package).status == "Approved"


def test_a_candidate_that_fails_calls_never_approves(tmp_path, world):
    root, registry, package = world
    with ContractServer(fault=lambda call: "http_500") as server:
        outcome = _run(tmp_path, root, server.url, package)
    assert outcome.accounting.by_owner["candidate"] == 5
    assert outcome.decision == "Rejected" and registry.describe(package).status == "Rejected"


def test_an_inconclusive_run_leaves_the_package_pending_with_its_reasons(tmp_path, world):
    root, registry, package = world
    config = config_from_mapping({"workspace": str(tmp_path / "ws"), "capture": {"root": str(root)},
                                  "candidate": {"model": "unused"}})
    with ContractServer() as server:
        outcome = pipeline.run_local(dataclasses.replace(config, candidate=dataclasses.replace(
            config.candidate, model=server.url)), run_id="r1", candidate_package=package)
    assert outcome.decision == "Inconclusive"  # five identical answers cannot show equivalence within 1%
    info = registry.describe(package)
    assert info.status == PENDING and info.description.startswith("**Inconclusive**")
    assert "equivalent_to_production" in info.description
    assert [(h.from_status, h.to_status, h.run_id) for h in registry.history(package)] == [
        (None, PENDING, None), (PENDING, PENDING, "r1")]


# ---------------------------------------------------------------- SageMaker Model Registry (moto)

GROUP, IMAGE = "churn", "123456789012.dkr.ecr.us-east-1.amazonaws.com/churn:2"


@pytest.fixture
def sagemaker():
    with mock_aws():
        client = boto3.Session(region_name="us-east-1").client("sagemaker")
        client.create_model_package_group(ModelPackageGroupName=GROUP)
        yield SageMakerRegistry(client)


def test_sagemaker_description_carries_the_transition(sagemaker):
    arn = sagemaker.register(GROUP, IMAGE)
    assert sagemaker.set_status(arn, PENDING, "Rejected", "coverage 95% < 99%", "run-7")
    info = sagemaker.describe(arn)
    assert parse_transition_note(info.description) == ("run-7", PENDING, "Rejected")
    assert info.description.endswith("coverage 95% < 99%")
    (latest,) = sagemaker.history(arn)
    assert (latest.from_status, latest.to_status, latest.run_id) == (PENDING, "Rejected", "run-7")


def test_sagemaker_manual_decision_is_never_overwritten(sagemaker):
    arn = sagemaker.register(GROUP, IMAGE)
    sagemaker.client.update_model_package(ModelPackageArn=arn, ModelApprovalStatus="Approved",
                                          ApprovalDescription="approved by the risk team")
    assert not sagemaker.set_status(arn, "Approved", "Rejected", "gate failed", "run-8")
    info = sagemaker.describe(arn)
    assert (info.status, info.description) == ("Approved", "approved by the risk team")
    (latest,) = sagemaker.history(arn)
    assert latest.run_id is None


def test_sagemaker_a_status_changed_in_the_console_without_a_description_is_manual(sagemaker):
    arn = sagemaker.register(GROUP, IMAGE)
    assert sagemaker.set_status(arn, PENDING, "Approved", "ok", "run-1")
    # The console (or an API call) changes the status and leaves run-1's description in place.
    sagemaker.client.update_model_package(ModelPackageArn=arn, ModelApprovalStatus="Rejected")
    assert not sagemaker.set_status(arn, "Rejected", "Approved", "gate passed", "run-2")
    assert sagemaker.describe(arn).status == "Rejected"


def test_sagemaker_a_later_run_may_revise_a_run_s_decision(sagemaker):
    arn = sagemaker.register(GROUP, IMAGE)
    assert sagemaker.set_status(arn, PENDING, "Approved", "ok", "run-1")
    assert sagemaker.set_status(arn, "Approved", "Rejected", "re-judged", "run-2")
    assert parse_transition_note(sagemaker.describe(arn).description) == ("run-2", "Approved", "Rejected")


def test_transition_note_fits_the_approval_description_limit():
    note = transition_note("run-1", PENDING, "Approved", "x" * 5000)
    assert len(note) == 1024 and parse_transition_note(note) == ("run-1", PENDING, "Approved")


def test_a_status_set_with_sqlite3_between_runs_survives_the_next_run(tmp_path, world):
    root, registry, package = world
    with ContractServer() as server:
        assert _run(tmp_path, root, server.url, package, run_id="r1").decision == "Approved"
        _by_hand(registry, package, "Rejected")  # no history row: the last one still names r1
        outcome = _run(tmp_path, root, server.url, package, run_id="r2")
    assert outcome.decision == "Approved" and registry.describe(package).status == "Rejected"
    evaluation = json.loads((outcome.run_dir / "report" / "evaluation.json").read_text())
    assert evaluation["registry"]["updated"] is False and evaluation["registry"]["status_now"] == "Rejected"


def test_a_failure_before_the_registry_leaves_it_untouched_and_a_resume_decides(tmp_path, world, monkeypatch):
    root, registry, package = world
    real = pipeline.publish_run

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device", str(tmp_path / "ws" / "tables"))
    monkeypatch.setattr(pipeline, "publish_run", disk_full)
    with ContractServer() as server:
        with pytest.raises(OSError):
            _run(tmp_path, root, server.url, package)
        assert registry.describe(package).status == PENDING and len(registry.history(package)) == 1
        evaluation = json.loads((tmp_path / "ws" / "runs" / "r1" / "report" / "evaluation.json").read_text())
        assert evaluation["registry"]["updated"] is False
        monkeypatch.setattr(pipeline, "publish_run", real)
        outcome = _run(tmp_path, root, server.url, package)
    assert outcome.decision == registry.describe(package).status == "Approved"
