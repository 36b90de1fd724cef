"""The command line: capture-stats totals, exit codes, and errors that say what to fix."""
from __future__ import annotations

import json

import pytest

import pipeline
from capture_helpers import at, capture_line, capture_path, write_capture_tree


@pytest.fixture
def capture_root(tmp_path):
    first = at(19, 27, 57)
    lines = [
        capture_line("1,2\n3,4", "0.1\n0.9\n", event_id="11111111-1111-4111-8111-111111111111", inference_time=first),
        capture_line("5,6", "0.5", event_id="22222222-2222-4222-8222-222222222222", inference_time=first),
    ]
    write_capture_tree(tmp_path, {capture_path("ep", "AllTraffic", first): lines + ["{not json"]})
    return tmp_path


def test_capture_stats_json_names_its_totals(capture_root, capsys):
    assert pipeline.main(["capture-stats", str(capture_root), "--json"]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert (stats["files"], stats["calls"], stats["records"], stats["quarantined"]) == (1, 3, 4, 1)
    assert stats["quarantine_reasons"] == {"malformed_json": 1}


def test_capture_stats_text_is_for_people(capture_root, capsys):
    assert pipeline.main(["capture-stats", str(capture_root)]) == 0
    out = capsys.readouterr().out
    assert "malformed_json" in out and "records" in out


def test_run_without_a_candidate_is_a_config_error(tmp_path, capsys):
    config = tmp_path / "c.yaml"
    config.write_text(f"workspace: {tmp_path / 'ws'}\n")
    assert pipeline.main(["run", "--config", str(config)]) == pipeline.EXIT_USAGE
    assert "candidate.model" in capsys.readouterr().err


def test_bad_run_id_is_refused_before_anything_runs(tmp_path, capsys):
    config = tmp_path / "c.yaml"
    config.write_text(f"workspace: {tmp_path / 'ws'}\n")
    code = pipeline.main(["run", "--config", str(config), "--candidate", "m.tar.gz", "--run-id", "../x"])
    assert code == pipeline.EXIT_USAGE
    assert "run_id" in capsys.readouterr().err
    assert not (tmp_path / "ws" / "runs").exists()


def test_the_local_runner_refuses_the_sagemaker_registry(tmp_path, capsys):
    config = tmp_path / "c.yaml"
    config.write_text(f"workspace: {tmp_path / 'ws'}\nregistry:\n  kind: sagemaker\n")
    assert pipeline.main(["run", "--config", str(config), "--candidate", "m.tar.gz"]) == pipeline.EXIT_USAGE
    assert "registry.kind" in capsys.readouterr().err
