"""Operational comparison end to end: containers that inject known latency and errors, measured as injected.

JSON document calls (one {"instances": [...]} request per call, replayed SingleRecord) make one
invocation per captured call, so the injected faults land on a known share of invocations. The
candidate adds 200 ms to every 20th request it receives (5%) and answers HTTP 500 to every 25th
(4%, retried); production is clean. Both are contract servers given as URLs. (20 ms is within this
shared machine's own tail under load, where production's p99 alone reached 30 ms: the p99 verdict
would then be noise, which is what the production-against-itself reference shows.)
"""
from __future__ import annotations

import json
from pathlib import Path

import duckdb
import numpy as np
import pytest

import pipeline
from capture_helpers import at, capture_line, capture_path, write_capture_tree
from contract_server import ContractServer
from steps.config import config_from_mapping

FILES, CALLS_PER_FILE = 4, 60
CALLS = FILES * CALLS_PER_FILE
EXTRA_S = 0.2
SLOW_EVERY, FAIL_EVERY = 20, 25


def candidate_faults(call):
    if call.number % FAIL_EVERY == 0:
        return "http_500"
    if call.number % SLOW_EVERY == 0:
        return "sleep"
    return None


@pytest.fixture(scope="module")
def capture(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("ops") / "capture"
    files = {}
    for number in range(FILES):
        files[capture_path("ep", "v", at(9 + number))] = [
            capture_line(json.dumps({"instances": [[number, call], [call, 1.0]]}),
                         json.dumps({"predictions": [{"score": 0.7}, {"score": 0.7}]}),
                         input_type="application/json", event_id=f"f{number}-{call}")
            for call in range(CALLS_PER_FILE)]
    write_capture_tree(root, files)
    return root


def _config(tmp_path: Path, capture: Path, candidate: str, production: str, checks: list[dict]):
    return config_from_mapping({
        "workspace": str(tmp_path / "ws"), "capture": {"root": str(capture)},
        "candidate": {"model": candidate}, "production": {"model": production},
        "replay": {"max_concurrent_transforms": 1, "invocation_max_retries": 3, "invocation_timeout_s": 5,
                   "noise_repeat_batches": 80},
        "compare": {"bootstrap_resamples": 400},
        "gate": {"min_records": 10, "checks": checks},
    })


CHECKS = [
    {"metric": "p99_latency_ratio", "direction": "at_most", "threshold": 1.5, "name": "p99 latency at most 1.5x"},
    {"metric": "p50_latency_ratio", "direction": "at_most", "threshold": 1.5, "severity": "warning"},
    {"metric": "error_rate", "relative_to_production": True, "direction": "at_most", "threshold": 0.001,
     "severity": "warning", "name": "error rate at most production's + 0.1 point"},
]


@pytest.fixture(scope="module")
def injected_run(tmp_path_factory, capture):
    tmp_path = tmp_path_factory.mktemp("run")
    with ContractServer(fault=candidate_faults, sleep_s=EXTRA_S) as candidate, ContractServer() as production:
        outcome = pipeline.run_local(_config(tmp_path, capture, candidate.url, production.url, CHECKS))
        calls = candidate.invocations
    return tmp_path, outcome, calls


def _evaluation(outcome) -> dict:
    return json.loads((outcome.run_dir / "report" / "evaluation.json").read_text())


def _rows(tmp_path: Path, sql: str) -> list[tuple]:
    with duckdb.connect(str(tmp_path / "ws" / "shadow.duckdb"), read_only=True) as db:
        return db.execute(sql).fetchall()


def test_every_invocation_is_stored_per_side_in_shadow_invocations(injected_run):
    tmp_path, outcome, calls = injected_run
    rows = dict(_rows(tmp_path, "select side, count(*) from shadow_invocations group by side"))
    assert rows["candidate"] == rows["production"] == CALLS
    assert 80 <= rows["production_repeat"] < CALLS  # whole files, until at least 80 batches
    attempts, retries, errors = _rows(tmp_path, "select sum(attempts), sum(retries), sum(errors) from "
                                                "shadow_invocations where side = 'candidate'")[0]
    assert attempts == calls and retries == errors == calls - CALLS
    assert _rows(tmp_path, "select count(*) from shadow_invocations where side = 'candidate' and (records <> 2 or lines <> 1 "
                           "or payload_bytes <= 0 or http_status <> 200 or outcome <> 'ok')") == [(0,)]


def test_the_injected_error_rate_is_measured(injected_run):
    _, outcome, calls = injected_run
    metrics = _evaluation(outcome)["metrics"]
    injected = (calls // FAIL_EVERY) / calls
    assert metrics["error_rate"]["candidate"] == pytest.approx(injected)
    assert metrics["error_rate"]["production"] == 0.0
    assert metrics["error_rate"]["ci_low"] > 0.0  # the difference is credible
    assert metrics["failed_invocation_rate"]["candidate"] == 0.0  # every 500 was retried


def test_the_injected_latency_shows_in_the_tail_not_the_median(injected_run):
    tmp_path, outcome, calls = injected_run
    slow = _rows(tmp_path, f"select count(*) from shadow_invocations where side = 'candidate' "
                           f"and latency_s >= {EXTRA_S}")[0][0]
    injected = sum(1 for n in range(1, calls + 1) if n % SLOW_EVERY == 0 and n % FAIL_EVERY != 0)
    assert injected - 1 <= slow <= injected + 3  # a busy machine may add an occasional slow call
    metrics = _evaluation(outcome)["metrics"]
    p99 = metrics["p99_latency_ratio"]
    assert p99["candidate"] >= EXTRA_S and p99["production"] < EXTRA_S
    assert p99["value"] > 1.5 and p99["ci_low"] <= p99["value"] <= p99["ci_high"]
    assert 0.5 < metrics["p50_latency_ratio"]["value"] < 2.0
    latencies = np.array([v for (v,) in _rows(tmp_path, "select latency_s from shadow_invocations "
                                                       "where side = 'candidate'")])
    assert p99["candidate"] == pytest.approx(np.quantile(latencies, 0.99), rel=1e-12)
    # Per record: each of a call's two records waited its latency / 2.
    assert metrics["p99_record_latency_ratio"]["candidate"] == pytest.approx(
        np.quantile(np.repeat(latencies / 2, 2), 0.99), rel=1e-12)


def test_the_checks_judge_the_injected_faults(injected_run):
    _, outcome, _ = injected_run
    checks = {c["name"]: c for c in _evaluation(outcome)["checks"]}
    assert checks["p99 latency at most 1.5x"]["outcome"] == "fail"
    assert checks["error rate at most production's + 0.1 point"]["outcome"] == "fail"
    assert checks["p50_latency_ratio"]["outcome"] == "pass"
    assert outcome.decision == "Rejected"


def test_production_against_itself_is_the_noise_reference(injected_run):
    _, outcome, _ = injected_run
    metrics = _evaluation(outcome)["metrics"]
    noise = metrics["replay_p50_latency_ratio"]
    assert noise["support"] >= 80
    assert 0.5 < noise["value"] < 2.0
    assert noise["ci_low"] <= 1.0 <= noise["ci_high"] or abs(noise["value"] - 1.0) < 0.5


def test_the_report_shows_latency_for_both_sides(injected_run):
    _, outcome, _ = injected_run
    report = json.loads((outcome.run_dir / "report" / "report.json").read_text())
    sides = report["operational"]["sides"]
    assert sides["candidate"]["invocations"] == sides["production"]["invocations"] == CALLS
    assert report["operational"]["pairing"]["candidate"]["paired"] == CALLS
    html = (outcome.run_dir / "report" / "report.html").read_text()
    assert 'id="operational"' in html and "latency per record" in html


def test_a_clean_candidate_passes_the_same_checks(tmp_path, capture):
    with ContractServer() as candidate, ContractServer() as production:
        outcome = pipeline.run_local(_config(tmp_path, capture, candidate.url, production.url, CHECKS[1:]))
    metrics = _evaluation(outcome)["metrics"]
    assert metrics["error_rate"]["delta"] == 0.0
    assert outcome.decision == "Approved"
    assert np.isfinite(metrics["p99_latency_ratio"]["value"])
