"""Hypothesis properties of the typed diff and the paired comparison.

diff(a, a) is all-equal; swapping production and candidate swaps the directional counts and
keeps the symmetric ones; the order of the records never matters.
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
from hypothesis import HealthCheck, given, settings, strategies as st

from analysis.compare import compare
from analysis.diff import record_diff
from steps.config import CompareConfig

CONFIG = CompareConfig(bootstrap_resamples=20, slices=(), top_changes=5)
SYMMETRIC = ("exact_match_rate", "tolerant_match_rate", "label_agreement", "cohen_kappa", "label_flip_rate",
             "threshold_crossing_rate", "one_sided_output_rate", "mean_abs_score_delta", "max_abs_score_delta",
             "score_within_abs_tolerance_rate", "score_ks")

answer = st.one_of(
    st.builds(lambda s, l: {"score": s, "label": l}, st.floats(0, 1, allow_nan=False), st.sampled_from("ab")),
    st.builds(lambda s: {"score": s}, st.floats(0, 1, allow_nan=False)),
    st.builds(lambda s, l: {"score": s, "label": l, "extra": 1}, st.floats(0, 1, allow_nan=False),
              st.sampled_from("ab")))
records = st.lists(st.tuples(answer, answer), min_size=1, max_size=25)


def frame_of(pairs, swap=False) -> pd.DataFrame:
    rows = []
    for i, (p, c) in enumerate(pairs):
        if swap:
            p, c = c, p
        rows.append({
            "record_id": f"r{i}", "input_text": f"{i}",
            "production_raw": _json(p), "candidate_raw": _json(c),
            "production_score": p["score"], "candidate_score": c["score"],
            "production_label": p.get("label"), "candidate_label": c.get("label"),
            "production_hash": _json(p), "candidate_hash": _json(c),
            "tolerant_match": _json(p) == _json(c) or (p.keys() == c.keys() and abs(p["score"] - c["score"]) <= 1e-6
                                                       and p.get("label") == c.get("label")),
        })
    return pd.DataFrame(rows)


def _json(value: dict) -> str:
    import json
    return json.dumps(value, sort_keys=True)


def _same(a, b) -> bool:
    if a is None or b is None:
        return a is b
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(answer, min_size=1, max_size=25))
def test_a_run_compared_with_itself_is_all_equal(answers):
    frame = frame_of([(a, a) for a in answers])
    result = compare(frame, CONFIG)
    for name in ("exact_match_rate", "tolerant_match_rate"):
        assert result.metric(name).value == 1.0
    for name in ("real_difference_rate", "threshold_crossing_rate", "one_sided_output_rate"):
        assert result.metric(name).value == 0.0
    assert result.metric("mean_abs_score_delta").value == 0.0
    diff = record_diff(frame, (0.5,), 5, 0.99, 1e-6, 1e-4)
    assert diff.exact == diff.tolerant == len(answers) and diff.beyond_noise == 0 and not diff.top_changes
    assert diff.records_one_sided == 0 and not diff.fields_only_production and not diff.fields_only_candidate
    assert all(c.crossed == 0 for c in diff.crossings)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(records)
def test_swapping_sides_swaps_the_counts(pairs):
    forward, backward = frame_of(pairs), frame_of(pairs, swap=True)
    a, b = record_diff(forward, (0.5,), 5, 0.99, 1e-6, 1e-4), record_diff(backward, (0.5,), 5, 0.99, 1e-6, 1e-4)
    assert a.fields_only_production == b.fields_only_candidate and a.fields_only_candidate == b.fields_only_production
    assert [(c.up, c.down) for c in a.crossings] == [(c.down, c.up) for c in b.crossings]
    assert (a.exact, a.tolerant, a.records_one_sided, a.beyond_noise) == \
        (b.exact, b.tolerant, b.records_one_sided, b.beyond_noise)
    x, y = compare(forward, CONFIG), compare(backward, CONFIG)
    for name in SYMMETRIC:
        assert _same(x.metric(name).value, y.metric(name).value), name
    assert _same(x.metric("mean_score_delta").value, None if y.metric("mean_score_delta").value is None
                 else -y.metric("mean_score_delta").value)
    transposed: dict = {}
    for p, row in x.flip_matrix.items():
        for c, n in row.items():
            transposed.setdefault(c, {})[p] = n
    assert transposed == y.flip_matrix


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(records, st.randoms(use_true_random=False))
def test_row_order_does_not_matter(pairs, random):
    frame = frame_of(pairs)
    order = list(range(len(frame)))
    random.shuffle(order)
    shuffled = frame.iloc[order]
    a, b = compare(frame, CONFIG), compare(shuffled, CONFIG)
    for m in a.metrics:
        other = b.metric(m.name, m.slice)
        assert _same(m.value, other.value) and _same(m.delta, other.delta) and m.support == other.support, m.name
        assert _same(m.ci_low, other.ci_low) and _same(m.ci_high, other.ci_high), m.name  # records resample by id
    assert a.flip_matrix == b.flip_matrix
    assert a.diff.to_json() == b.diff.to_json()
    assert a.distributions == b.distributions
    assert np.allclose([v for v in a.score_delta.values()], [v for v in b.score_delta.values()])
