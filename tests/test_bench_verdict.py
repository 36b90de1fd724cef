"""bench.verdict: its interval arithmetic, and that its samples partition the world's traffic."""
from __future__ import annotations

import json

import pytest
from scipy import stats

from bench import verdict


@pytest.mark.parametrize(("hits", "n"), [(0, 30), (1, 30), (15, 30), (29, 30), (30, 30), (7, 120)])
def test_wilson_interval_is_the_score_interval(hits, n):
    low, high = verdict.wilson(hits, n)
    ci = stats.binomtest(hits, n).proportion_ci(confidence_level=0.95, method="wilson")
    assert (low, high) == pytest.approx((ci.low, ci.high), abs=1e-9)


def test_rate_counts_the_outcome_against_its_target():
    samples = [verdict.Sample("worse", True, i, 100, 90, d, []) for i, d in
               enumerate(["Rejected"] * 28 + ["Approved", "Inconclusive"])]
    result = verdict.rate(samples, "worse", True, "Approved", "false accept", "at_most", 0.05)
    assert (result["count"], result["samples"], result["met"]) == (1, 30, True)
    assert result["decisions"] == {"Approved": 1, "Rejected": 28, "Inconclusive": 1}


@pytest.mark.slow
def test_bench_samples_are_disjoint_and_cover_the_world(tmp_path, capsys):
    assert verdict.main(["--samples", "2", "--records", "300", "--json", str(tmp_path / "r.json"),
                         "--out", str(tmp_path / "out")]) == 0
    results = json.loads((tmp_path / "r.json").read_text())
    assert [r["samples"] for r in results["rates"]] == [2, 2, 2, 2]
    for world in ("identical", "better3", "worse"):
        sizes = [s["records"] for s in results["per_sample"] if s["world"] == world and s["labels"]]
        assert sum(sizes) == results["world_records"][world] and all(size > 200 for size in sizes)
    assert "false-reject rate" in capsys.readouterr().out
