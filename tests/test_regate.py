"""regate: re-judge a finished run with labels that arrived later, without replaying; registry compare-and-set."""
from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import pipeline
from analysis.results import Accounting
from steps import compare, gate, regate
from steps.backends.registry import LocalRegistry
from steps.capture_writer import GroundTruthLabel, write_ground_truth
from steps.config import CompareConfig, Config, GateCheck, GateConfig, RegistryConfig, to_mapping
from steps.join import RECORDS_SCHEMA

RUN_ID = "20250303T120000Z-abc123"
T0 = dt.datetime(2025, 3, 3, 12, 0, tzinfo=dt.timezone.utc)
N = 60
# The candidate is right on every record, production wrong on every fourth: labels decide.
CANDIDATE = ["1" if i % 2 else "0" for i in range(N)]
PRODUCTION = [label if i % 4 else str(1 - int(label)) for i, label in enumerate(CANDIDATE)]


def _config(workspace: Path) -> Config:
    return Config(workspace=str(workspace), registry=RegistryConfig(group="fraud"),
                  compare=CompareConfig(bootstrap_resamples=200, min_slice_support=10),
                  gate=GateConfig(min_records=10, min_coverage=0.9, checks=(
                      GateCheck("accuracy", -0.05, relative_to_production=True, judge_on="interval"),)))


def _finished_run(tmp_path: Path, truth: list[str | None]) -> tuple[Path, LocalRegistry, str]:
    """A run folder as run_local leaves it: run.json, join/records, a first verdict in the registry."""
    workspace = tmp_path / "ws"
    run_dir = workspace / "runs" / RUN_ID
    registry = LocalRegistry(workspace / "registry.sqlite")
    package = registry.register("fraud", "s3://bucket/model.tar.gz")
    info = {"run_id": RUN_ID, "started_at": "2025-03-03T12:00:00Z", "candidate_package": package,
            "status_at_start": "PendingManualApproval", "config": to_mapping(_config(workspace))}
    (run_dir / "join" / "records").mkdir(parents=True)
    (run_dir / "run.json").write_text(json.dumps(info))
    rows = [{name: None for name in RECORDS_SCHEMA.names} | {
        "run_id": RUN_ID, "record_id": f"e{i}:0", "event_id": f"e{i}", "record_index": 0,
        "inference_time": T0 + dt.timedelta(minutes=i), "endpoint": "ep", "variant": "v", "capture_file": "f",
        "capture_line": i + 1, "input_text": f"{i}", "production_raw": PRODUCTION[i], "candidate_raw": CANDIDATE[i],
        "production_label": PRODUCTION[i], "candidate_label": CANDIDATE[i], "production_hash": PRODUCTION[i],
        "candidate_hash": CANDIDATE[i], "exact_match": PRODUCTION[i] == CANDIDATE[i],
        "tolerant_match": PRODUCTION[i] == CANDIDATE[i], "ground_truth_label": truth[i]} for i in range(N)]
    pq.write_table(pa.Table.from_pylist(rows, schema=RECORDS_SCHEMA), run_dir / "join" / "records" / "0.parquet")
    (run_dir / "report").mkdir()
    (run_dir / "report" / "evaluation.json").write_text(json.dumps({"accounting": {"captured": N}}))
    return workspace, registry, package


def _labels(tmp_path: Path, labels: dict[int, str]) -> Path:
    root = tmp_path / "ground-truth"
    write_ground_truth(root, [GroundTruthLabel(f"e{i}", label, "CSV", T0 + dt.timedelta(hours=2))
                              for i, label in labels.items()])
    return root


def test_late_labels_turn_a_missing_check_into_a_verdict_and_it_is_recorded(tmp_path):
    workspace, registry, package = _finished_run(tmp_path, [None] * N)
    # The first run had no labels: its non-inferiority check was missing, so it rejected.
    assert registry.set_status(package, "PendingManualApproval", "Rejected", "no labels yet", RUN_ID,
                               {"shadow_eval_run_id": RUN_ID, "shadow_eval_decision": "Rejected"})
    truth = _labels(tmp_path, {i: CANDIDATE[i] for i in range(N)})
    outcome = regate.run(workspace, RUN_ID, truth)
    assert outcome.decision.status == "Approved"
    assert outcome.labels["matched"] == N and outcome.labels["labelled"] == N
    assert registry.describe(package).status == "Approved"
    assert outcome.registry["updated"] is True and outcome.registry["replaced_own_verdict"] == "Rejected"
    run_dir = workspace / "runs" / RUN_ID
    evaluation = json.loads((run_dir / "report" / "evaluation.json").read_text())
    assert evaluation["decision"] == "Approved" and evaluation["regate"]["matched"] == N
    accuracy = next(c for c in evaluation["checks"] if c["metric"] == "accuracy")
    assert accuracy["outcome"] == "pass" and accuracy["judged_on"] == "interval" and accuracy["ci_low"] > -0.05
    assert pq.read_table(run_dir / "join" / "records" / "0.parquet").column("ground_truth_label").to_pylist() \
        == CANDIDATE
    for name in ("report.html", "report.json", "summary.md"):
        assert (run_dir / "report" / name).exists()
    with duckdb.connect(str(workspace / "shadow.duckdb"), read_only=True) as db:
        decision, = db.execute("SELECT decision FROM shadow_eval.shadow_runs WHERE run_id = ?", [RUN_ID]).fetchone()
        rows, = db.execute("SELECT count(*) FROM shadow_eval.shadow_metrics WHERE run_id = ? AND metric = 'accuracy'",
                           [RUN_ID]).fetchone()
    assert decision == "Approved" and rows >= 1


def test_labels_can_reverse_the_verdict_again(tmp_path):
    workspace, registry, package = _finished_run(tmp_path, [None] * N)
    regate.run(workspace, RUN_ID, _labels(tmp_path / "a", {i: CANDIDATE[i] for i in range(N)}))
    assert registry.describe(package).status == "Approved"
    # Corrected labels: production was right after all.
    outcome = regate.run(workspace, RUN_ID, _labels(tmp_path / "b", {i: PRODUCTION[i] for i in range(N)}))
    assert outcome.decision.status == "Rejected" and outcome.labels["relabelled"] == N // 4
    assert registry.describe(package).status == "Rejected"
    assert [t.to_status for t in registry.history(package)] == ["PendingManualApproval", "Approved", "Rejected"]


def test_a_manual_decision_is_never_overwritten(tmp_path):
    workspace, registry, package = _finished_run(tmp_path, [None] * N)
    assert registry.set_status(package, "PendingManualApproval", "Rejected", "by hand", None)
    outcome = regate.run(workspace, RUN_ID, _labels(tmp_path, {i: CANDIDATE[i] for i in range(N)}))
    assert outcome.decision.status == "Approved" and outcome.registry["updated"] is False
    assert registry.describe(package).status == "Rejected" and registry.describe(package).description == "by hand"


def test_another_runs_verdict_is_not_ours_to_move(tmp_path):
    workspace, registry, package = _finished_run(tmp_path, [None] * N)
    assert registry.set_status(package, "PendingManualApproval", "Rejected", "other", "another-run",
                               {"shadow_eval_run_id": "another-run", "shadow_eval_decision": "Rejected"})
    outcome = regate.run(workspace, RUN_ID, _labels(tmp_path, {i: CANDIDATE[i] for i in range(N)}))
    assert outcome.registry["updated"] is False and registry.describe(package).status == "Rejected"


def test_labels_missing_from_the_folder_keep_the_old_ones(tmp_path):
    workspace, _, _ = _finished_run(tmp_path, CANDIDATE)
    outcome = regate.run(workspace, RUN_ID, _labels(tmp_path, {0: "1"}))
    assert outcome.labels == {**outcome.labels, "matched": 1, "relabelled": 1, "labelled": N}


def test_the_command_line(tmp_path, capsys):
    workspace, registry, package = _finished_run(tmp_path, [None] * N)
    truth = _labels(tmp_path, {i: CANDIDATE[i] for i in range(N)})
    code = pipeline.main(["regate", RUN_ID, "--ground-truth", str(truth), "--workspace", str(workspace), "--json"])
    assert code == 0 and json.loads(capsys.readouterr().out)["decision"] == "Approved"
    assert pipeline.main(["regate", "nope", "--ground-truth", str(truth), "--workspace", str(workspace)]) == 1


def test_an_unknown_run_is_an_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="no run"):
        regate.run(tmp_path, "missing", tmp_path)


def test_labels_in_another_vocabulary_are_an_error_and_leave_the_registry_alone(tmp_path, capsys):
    workspace, registry, package = _finished_run(tmp_path, [None] * N)
    before = (registry.describe(package).status, len(registry.history(package)))
    truth = _labels(tmp_path, {i: "malignant" if i % 2 else "benign" for i in range(N)})
    code = pipeline.main(["regate", RUN_ID, "--ground-truth", str(truth), "--workspace", str(workspace)])
    (message,) = capsys.readouterr().err.strip().splitlines()
    assert code == 1
    assert "{benign, malignant}" in message and "{0, 1}" in message and "ground_truth.label_path" in message
    assert (registry.describe(package).status, len(registry.history(package))) == before


def test_an_inconclusive_run_awaits_labels_then_regate_decides(tmp_path, capsys):
    workspace, registry, package = _finished_run(tmp_path, [None] * N)
    run_dir = workspace / "runs" / RUN_ID
    config = _config(workspace)
    # The run itself had no labels and a candidate that differs: it waits, the package stays pending.
    decision = gate.run(config, run_dir, compare.run(config, run_dir), Accounting(N, N, 0), registry, package,
                        "PendingManualApproval", RUN_ID)
    assert decision.status == "Inconclusive" and "awaiting ground truth" in decision.reasons[0]
    assert registry.describe(package).status == "PendingManualApproval"
    # Four labels, two favouring each model: the interval cannot decide yet (exit 4).
    few = _labels(tmp_path / "few", {0: PRODUCTION[0], 4: PRODUCTION[4], 8: CANDIDATE[8], 12: CANDIDATE[12]})
    assert pipeline.main(["regate", RUN_ID, "--ground-truth", str(few), "--workspace", str(workspace)]) == 4
    assert "accuracy_non_inferior" in capsys.readouterr().out
    assert registry.describe(package).status == "PendingManualApproval"
    # Every label: the candidate is right where production was wrong, so it is approved (exit 0).
    truth = _labels(tmp_path / "all", {i: CANDIDATE[i] for i in range(N)})
    assert pipeline.main(["regate", RUN_ID, "--ground-truth", str(truth), "--workspace", str(workspace)]) == 0
    assert registry.describe(package).status == "Approved"
    assert [(t.from_status, t.to_status) for t in registry.history(package)] == [
        (None, "PendingManualApproval"), ("PendingManualApproval", "PendingManualApproval"),
        ("PendingManualApproval", "PendingManualApproval"), ("PendingManualApproval", "Approved")]
    # Labels showing the candidate credibly worse reject it (exit 3).
    wrong = _labels(tmp_path / "wrong", {i: PRODUCTION[i] for i in range(N)})
    assert pipeline.main(["regate", RUN_ID, "--ground-truth", str(wrong), "--workspace", str(workspace)]) == 3
    assert registry.describe(package).status == "Rejected"
