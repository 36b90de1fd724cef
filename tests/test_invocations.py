"""Recording the replay's invocations: rows per batch, captured records per batch, resume, server start and memory."""
from __future__ import annotations

import os

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from model_helpers import build_model_tar
from steps import replay
from steps.config import ReplayConfig
from steps.invocations import Measurements, peak_rss_bytes, read_run
from steps.transformer import Invocation

CSV_GROUP = {"content_type": "text/csv", "accept": "text/csv", "split_type": "Line", "batch_strategy": "MultiRecord",
             "assemble_with": "Line",
             "data_processing": {"InputFilter": "$[1:]", "JoinSource": "Input", "OutputFilter": "$"}}


def _prepared(run_dir, rows):
    """prepare/records with (replay_file, replay_line) per captured record."""
    folder = run_dir / "prepare" / "records"
    folder.mkdir(parents=True)
    pq.write_table(pa.table({"replay_file": [f for f, _ in rows], "replay_line": pa.array([n for _, n in rows],
                                                                                           pa.int32())}),
                   folder / "0.parquet")


def _invocation(file, first, lines, attempts=(("ok", 0.01),)):
    return Invocation(file, first, lines, 100, tuple((seconds, outcome) for outcome, seconds in attempts), 1.7e9, 10)


def test_rows_count_the_captured_records_each_batch_carries(tmp_path):
    # a.json: line 1 holds 3 records, line 2 holds 1, line 3 holds 2 (JSON documents).
    _prepared(tmp_path, [("json/a.json", 1)] * 3 + [("json/a.json", 2), ("json/a.json", 3), ("json/a.json", 3)])
    measure = Measurements("candidate", "json")
    measure.record(_invocation("a.json", 0, 1))
    measure.record(_invocation("a.json", 1, 2, attempts=(("http_500", 0.002), ("timeout", 5.0), ("ok", 0.02))))
    measure.write(tmp_path)
    frame, servers = read_run(tmp_path)
    assert frame[["first_line", "lines", "records", "attempts", "retries", "errors", "timeouts", "http_status",
                  "outcome"]].values.tolist() == [[1, 1, 3, 1, 0, 0, 0, 200, "ok"], [2, 2, 3, 3, 2, 2, 1, 200, "ok"]]
    assert frame["latency_s"].tolist() == [0.01, 0.02]
    assert frame["latency_per_record_s"].tolist() == pytest.approx([0.01 / 3, 0.02 / 3])
    assert frame["elapsed_s"].tolist() == pytest.approx([0.01, 5.022])
    assert servers == [{"side": "candidate", "group": "json", "external": True, "start_seconds": None,
                        "peak_rss_bytes": None, "transform_seconds": None}]


def test_a_failed_batch_keeps_its_last_status_and_no_latency_per_record(tmp_path):
    _prepared(tmp_path, [("csv/a.csv", 1)])
    measure = Measurements("candidate", "csv")
    measure.record(_invocation("a.csv", 0, 1, attempts=(("http_503", 0.1), ("http_503", 0.1))))
    frame = measure.rows({})
    assert frame[["http_status", "outcome", "errors"]].values.tolist() == [[503, "http_503", 2]]


def test_a_resumed_transform_keeps_rows_of_files_it_did_not_send_again(tmp_path):
    _prepared(tmp_path, [("csv/a.csv", 1), ("csv/b.csv", 1)])
    first = Measurements("candidate", "csv")
    first.record(_invocation("a.csv", 0, 1))
    first.record(_invocation("b.csv", 0, 1, attempts=(("timeout", 5.0),)))
    first.write(tmp_path)
    again = Measurements("candidate", "csv")  # a.csv was checkpointed; only b.csv is sent again
    again.record(_invocation("b.csv", 0, 1))
    again.write(tmp_path)
    frame, _ = read_run(tmp_path)
    assert frame[["replay_file", "outcome"]].values.tolist() == [["a.csv", "ok"], ["b.csv", "ok"]]


def test_peak_memory_of_a_live_process_and_of_none():
    assert peak_rss_bytes(os.getpid()) > 1 << 20
    assert peak_rss_bytes(2 ** 22 + 12345) is None


@pytest.mark.slow  # starts a model server process (loads scikit-learn)
def test_a_local_model_server_reports_its_start_time_and_peak_memory(tmp_path):
    model = build_model_tar(tmp_path / "model.tar.gz")
    inputs = tmp_path / "input"
    inputs.mkdir()
    (inputs / "a.csv").write_text("".join(f"r{i},{i % 4}.0,1.0\n" for i in range(20)))
    measure = Measurements("candidate", "csv")
    result = replay.run(CSV_GROUP, inputs, tmp_path / "output", str(model), ReplayConfig(),
                        tmp_path / "server.log", "candidate", measure)
    measure.write(tmp_path, result)
    frame, (server,) = read_run(tmp_path)
    assert result.files_ok == ("a.csv",) and len(frame) == result.invocations == 1
    assert frame["lines"].tolist() == [20] and frame["outcome"].tolist() == ["ok"]
    assert server["external"] is False
    assert 0 < server["start_seconds"] < 120
    assert server["peak_rss_bytes"] > 20 << 20  # a Python process with numpy and scikit-learn loaded
    assert server["transform_seconds"] == pytest.approx(result.seconds, abs=1e-6)
