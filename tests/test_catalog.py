"""Local catalog: idempotent partitions, views DuckDB answers correctly, and names checked at the door."""
from __future__ import annotations

import duckdb
import pandas as pd
import pyarrow.parquet as pq
import pytest

from steps.backends.catalog import SCHEMAS, VIEWS, CatalogError, LocalCatalog


def records(run_id: str, labels: list[tuple[str | None, str | None]]) -> pd.DataFrame:
    """shadow_records rows with the given (production, candidate) labels; other columns plausible."""
    rows = []
    for i, (production, candidate) in enumerate(labels):
        row = {name: None for name in SCHEMAS["shadow_records"].names}
        row.update(run_id=run_id, record_id=f"e{i}:0", event_id=f"e{i}", record_index=0, endpoint="ep",
                   variant="AllTraffic", capture_file="ep/AllTraffic/2025/03/01/12/a.jsonl", capture_line=i + 1,
                   input_text="1,2,3", production_label=production, candidate_label=candidate,
                   production_score=0.5, candidate_score=0.6, score_abs_diff=0.1,
                   inference_time=pd.Timestamp("2025-03-01T12:00:00Z"), label_match=production == candidate)
        rows.append(row)
    return pd.DataFrame(rows, columns=["run_id", *SCHEMAS["shadow_records"].names])


def quarantine(reasons: list[tuple[str, str]]) -> pd.DataFrame:
    return pd.DataFrame([{"record_id": f"f#{i}", "event_id": None, "capture_file": "f", "capture_line": i,
                          "stage": stage, "reason": reason, "detail": "d"}
                         for i, (stage, reason) in enumerate(reasons)])


def metrics(value: float) -> pd.DataFrame:
    return pd.DataFrame([{"metric": "accuracy", "slice": "all", "value": value, "production": 0.9, "candidate": value,
                          "delta": value - 0.9, "ci_low": None, "ci_high": None, "support": 10,
                          "threshold": 0.85, "passed": value >= 0.85}])


def run_row(run_id: str, started: str, package: str | None, decision: str = "Approved") -> dict:
    return {"run_id": run_id, "started_at": started, "finished_at": None, "endpoint": "ep", "variant": "AllTraffic",
            "window_start": "2025-03-01T00:00:00Z", "window_end": None, "production_model": "prod",
            "candidate_model": "cand", "candidate_package": package, "captured": 10, "joined": 9,
            "quarantined": 1, "coverage": 0.9, "decision": decision, "report_uri": f"runs/{run_id}/report"}


@pytest.fixture
def catalog(tmp_path):
    return LocalCatalog(tmp_path / "ws", "shadow_eval")


def test_writing_a_run_twice_gives_the_same_rows(catalog):
    frame = records("r1", [("0", "0"), ("1", "0")])
    catalog.write_partition("shadow_records", "r1", frame)
    catalog.write_partition("shadow_records", "r1", frame)
    catalog.write_run(run_row("r1", "2025-03-01T13:00:00Z", "fraud/1"))
    catalog.write_run(run_row("r1", "2025-03-01T13:00:00Z", "fraud/1"))
    catalog.refresh()
    assert catalog.query("SELECT count(*) AS n FROM shadow_records")["n"].tolist() == [2]
    assert catalog.query("SELECT count(*) AS n FROM shadow_runs")["n"].tolist() == [1]
    # A re-run with different rows replaces the partition rather than adding to it.
    catalog.write_partition("shadow_records", "r1", records("r1", [("1", "1")]))
    catalog.refresh()
    assert catalog.query("SELECT record_id FROM shadow_records")["record_id"].tolist() == ["e0:0"]
    folder = catalog.tables / "shadow_records" / "run_id=r1"
    assert sorted(p.name for p in folder.iterdir()) == ["part-0.parquet"]
    assert "run_id" not in pq.read_schema(folder / "part-0.parquet").names  # the folder carries it


def test_views_answer_what_analysts_ask(catalog):
    catalog.write_partition("shadow_records", "r1", records("r1", [("0", "0"), ("0", "1"), ("0", "1"), (None, "1")]))
    catalog.write_partition("shadow_records", "r2", records("r2", [("1", "0"), ("1", "1")]))
    catalog.write_partition("shadow_quarantine", "r1", quarantine([("capture", "malformed_json")] * 2
                                                                   + [("replay", "replay_file_failed")]))
    catalog.write_partition("shadow_metrics", "r1", metrics(0.8))
    catalog.write_partition("shadow_metrics", "r2", metrics(0.95))
    catalog.write_run(run_row("r1", "2025-03-01T13:00:00Z", "fraud/1", "Rejected"))
    catalog.write_run(run_row("r2", "2025-03-02T13:00:00Z", "fraud/1"))
    catalog.write_run(run_row("r3", "2025-03-01T09:00:00Z", "fraud/2"))
    catalog.refresh()

    flips = catalog.query("SELECT run_id, production_label, candidate_label, records FROM shadow_label_flips "
                          "ORDER BY run_id, production_label NULLS FIRST")
    assert flips.astype(object).where(flips.notna(), None).values.tolist() == [
        ["r1", None, "1", 1], ["r1", "0", "1", 2], ["r2", "1", "0", 1]]
    by_reason = catalog.query("SELECT run_id, stage, reason, records FROM shadow_quarantine_by_reason ORDER BY reason")
    assert by_reason.values.tolist() == [["r1", "capture", "malformed_json", 2],
                                         ["r1", "replay", "replay_file_failed", 1]]
    latest = catalog.query("SELECT candidate_package, run_id, decision FROM shadow_latest_runs ORDER BY 1")
    assert latest.values.tolist() == [["fraud/1", "r2", "Approved"], ["fraud/2", "r3", "Approved"]]
    trend = catalog.query("SELECT run_id, candidate, decision FROM shadow_metric_trend ORDER BY started_at")
    assert trend.values.tolist() == [["r1", 0.8, "Rejected"], ["r2", 0.95, "Approved"]]
    runs = catalog.query("SELECT started_at, finished_at FROM shadow_runs WHERE run_id = 'r1'")
    assert runs["started_at"][0] == pd.Timestamp("2025-03-01T13:00:00Z") and pd.isna(runs["finished_at"][0])


def test_empty_catalog_has_every_table_and_view(catalog):
    catalog.refresh()
    for name in [*SCHEMAS, *VIEWS]:
        assert catalog.query(f"SELECT count(*) AS n FROM {name}")["n"].tolist() == [0]
    columns = catalog.query("SELECT * FROM shadow_records").columns.tolist()
    assert columns == ["run_id", *SCHEMAS["shadow_records"].names]


def test_the_duckdb_file_answers_with_and_without_the_database_name(catalog):
    catalog.write_partition("shadow_metrics", "r1", metrics(0.9))
    catalog.refresh()
    with duckdb.connect(str(catalog.db_path), read_only=True) as db:
        for name in ("shadow_metrics", "shadow_eval.shadow_metrics"):
            assert db.execute(f"SELECT run_id, candidate FROM {name}").fetchall() == [("r1", 0.9)]


def test_parquet_parts_are_combined_and_an_empty_list_empties_the_partition(catalog, tmp_path):
    parts = []
    for i, labels in enumerate([[("0", "0")], [("1", "0"), ("1", "1")]]):
        path = tmp_path / f"{i}.parquet"
        records("r1", labels).drop(columns=["run_id"]).to_parquet(path)
        parts.append(path)
    catalog.write_partition("shadow_records", "r1", parts)
    catalog.refresh()
    assert catalog.query("SELECT count(*) AS n FROM shadow_records")["n"].tolist() == [3]
    catalog.write_partition("shadow_records", "r1", [])
    catalog.refresh()
    assert catalog.query("SELECT count(*) AS n FROM shadow_records")["n"].tolist() == [0]


BAD_RUN_IDS = ["", "../r1", "r1/x", "run_id=r1", "r1'; DROP VIEW shadow_runs; --", "r.1", "-r1", "r" * 65, None]


@pytest.mark.parametrize("run_id", BAD_RUN_IDS)
def test_bad_run_ids_never_reach_a_path(catalog, run_id):
    with pytest.raises(CatalogError, match="run id"):
        catalog.write_partition("shadow_records", run_id, records("x", []).drop(columns=["run_id"]))
    with pytest.raises(CatalogError, match="run id"):
        catalog.write_run({**run_row("x", "2025-03-01T00:00:00Z", None), "run_id": run_id})
    assert not catalog.tables.exists()


BAD_FRAMES = [
    ("unknown table", "shadow_record", records("r1", []), "not a partitioned table"),
    ("runs are not partitions", "shadow_runs", records("r1", []), "not a partitioned table"),
    ("missing column", "shadow_records", records("r1", [("0", "0")]).drop(columns=["input_text"]), "input_text"),
    ("extra column", "shadow_records", records("r1", [("0", "0")]).assign(extra=1), "extra"),
    ("other run's rows", "shadow_records", records("r2", [("0", "0")]), "r2"),
    ("wrong type", "shadow_metrics", metrics(0.9).assign(support="many"), "support"),
]


@pytest.mark.parametrize("table, frame, message", [c[1:] for c in BAD_FRAMES], ids=[c[0] for c in BAD_FRAMES])
def test_bad_frames_are_refused_before_writing(catalog, table, frame, message):
    with pytest.raises(CatalogError, match=message):
        catalog.write_partition(table, "r1", frame)
    assert not catalog.tables.exists()


@pytest.mark.parametrize("database", ["shadow-eval", "x; DROP", "", "1db"])
def test_bad_database_names_are_refused(tmp_path, database):
    with pytest.raises(CatalogError, match="database"):
        LocalCatalog(tmp_path, database)


def test_each_part_becomes_its_own_file_and_a_rewrite_swaps_the_whole_partition(catalog, tmp_path):
    parts = []
    for i, labels in enumerate([[("0", "0")], [], [("1", "0"), ("1", "1")], [("2", "2")]]):
        path = tmp_path / f"{i}.parquet"
        records("r1", labels).drop(columns=["run_id"]).to_parquet(path)
        parts.append(path)
    catalog.write_partition("shadow_records", "r1", parts)
    folder = catalog.tables / "shadow_records" / "run_id=r1"
    # the empty part writes no file; the others one each
    assert sorted(p.name for p in folder.iterdir()) == ["part-0.parquet", "part-1.parquet", "part-2.parquet"]
    catalog.refresh()
    assert catalog.query("SELECT count(*) AS n FROM shadow_records")["n"].tolist() == [4]
    catalog.write_partition("shadow_records", "r1", parts[:1])  # fewer parts: no stale file survives
    assert sorted(p.name for p in folder.iterdir()) == ["part-0.parquet"]
    catalog.refresh()
    assert catalog.query("SELECT count(*) AS n FROM shadow_records")["n"].tolist() == [1]
    assert [p.name for p in folder.parent.iterdir()] == ["run_id=r1"]  # no staging folder left behind


def test_a_bad_part_midway_leaves_the_old_partition_whole(catalog, tmp_path):
    catalog.write_partition("shadow_records", "r1", records("r1", [("0", "0"), ("1", "1")]))
    good, bad = tmp_path / "0.parquet", tmp_path / "1.parquet"
    records("r1", [("1", "0")]).drop(columns=["run_id"]).to_parquet(good)
    records("r2", [("1", "0")]).to_parquet(bad)  # another run's rows
    with pytest.raises(CatalogError, match="r2"):
        catalog.write_partition("shadow_records", "r1", [good, bad])
    catalog.refresh()
    assert catalog.query("SELECT count(*) AS n FROM shadow_records")["n"].tolist() == [2]
    folder = catalog.tables / "shadow_records"
    assert [p.name for p in folder.iterdir()] == ["run_id=r1"]


def test_parts_are_read_one_at_a_time(catalog, tmp_path, monkeypatch):
    """Publishing a window holds one part in memory, never all of them (no concatenation)."""
    import pyarrow as pa

    from steps.backends import catalog as module

    paths = []
    for i in range(3):
        path = tmp_path / f"{i}.parquet"
        records("r1", [("0", "1")] * (i + 1)).drop(columns=["run_id"]).to_parquet(path)
        paths.append(path)
    live, peak, read = [0], [0], module.pq.read_table

    def counting(path, *args, **kwargs):
        live[0] += 1
        peak[0] = max(peak[0], live[0])
        return read(path, *args, **kwargs)

    written = module.pq.write_table

    def writing(table, where, *args, **kwargs):
        written(table, where, *args, **kwargs)
        live[0] -= 1

    monkeypatch.setattr(module.pq, "read_table", counting)
    monkeypatch.setattr(module.pq, "write_table", writing)
    monkeypatch.setattr(pa, "concat_tables", lambda *a, **k: pytest.fail("parts were concatenated"))
    catalog.write_partition("shadow_records", "r1", paths)
    assert peak[0] == 1
