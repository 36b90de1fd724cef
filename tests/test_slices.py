"""Slices: hour, a feature's bins or values, a custom attribute; minimum support; metrics per slice."""
from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import accuracy_score

from analysis.compare import compare
from analysis.slices import MISSING, attribute, bin_label, feature, segments, slice_values
from steps.config import CompareConfig, ConfigError, SliceConfig, config_from_mapping

T0 = dt.datetime(2025, 3, 3, 12, 5, tzinfo=dt.timezone.utc)


@pytest.mark.parametrize("value, expected", [(5, "<10"), (10, "[10,20)"), (19.9, "[10,20)"), (20, ">=20"),
                                             ("15", "[10,20)"), (None, MISSING), ("abc", MISSING)])
def test_bin_labels(value, expected):
    assert bin_label(value, (10.0, 20.0)) == expected


@pytest.mark.parametrize("text, column, path, expected", [
    ("1.5,abc,7", 2, None, "7"), ("1.5,abc", 5, None, None), ('{"a": {"b": 3}}', None, "a.b", 3),
    ('{"features": [4, 5]}', None, "features[1]", 5), ("not json", None, "a", None), (None, 0, None, None)])
def test_feature_values(text, column, path, expected):
    assert feature(text, column, path) == expected


@pytest.mark.parametrize("text, expected", [('{"client": "web", "x": 1}', "web"), ("client=ios;tier=gold", "ios"),
                                            ("tier=gold, client=android", "android"), ("tier=gold", None), (None, None)])
def test_custom_attributes(text, expected):
    assert attribute(text, "client") == expected


def _frame(n=120):
    rng = np.random.default_rng(3)
    good = rng.random(n) < 0.95
    segment = np.array(["web", "ios", "android"])[np.arange(n) % 3]
    truth = rng.integers(0, 2, n).astype(str)
    candidate = np.where((segment == "android") & (rng.random(n) < 0.5), 1 - truth.astype(int), truth.astype(int))
    production = np.where(good, truth.astype(int), 1 - truth.astype(int))
    return pd.DataFrame({
        "record_id": [f"e{i}:0" for i in range(n)],
        "inference_time": [T0 + dt.timedelta(minutes=2 * i) for i in range(n)],
        "custom_attributes": [f"client={s}" for s in segment],
        "input_text": [f"{i % 50},{s}" for i, s in enumerate(segment)],
        "production_label": production.astype(str), "candidate_label": candidate.astype(str),
        "ground_truth_label": truth, "production_score": production * 0.8 + 0.1,
        "candidate_score": candidate * 0.8 + 0.1, "production_hash": [f"p{i}" for i in range(n)],
        "candidate_hash": [f"c{i}" for i in range(n)], "tolerant_match": [False] * n,
    })


def test_segments_by_hour_feature_and_attribute_with_minimum_support():
    frame = _frame()
    specs = (SliceConfig("hour", "hour"), SliceConfig("bucket", column=0, bins=(10, 40)),
             SliceConfig("client", "attribute", key="client"))
    found = segments(frame, specs, min_support=20)
    names = [s.name for s, _ in found]
    assert names[:5] == [f"hour=2025-03-03T{h}:00Z" for h in range(12, 17)]
    assert names[5:8] == ["bucket=<10", "bucket=[10,40)", "bucket=>=40"]
    assert set(names[8:]) == {"client=android", "client=ios", "client=web"}
    for spec in specs:  # every record lands in exactly one segment of each definition
        assert sum(s.support for s, _ in found if s.definition == spec.name) == len(frame)
    small = [s for s, _ in found if s.support < 20]
    assert small and not any(s.compared for s in small) and all(s.compared for s, _ in found if s.support >= 20)


def test_missing_times_and_values_form_their_own_segment():
    frame = _frame(4).assign(inference_time=[None, T0, T0, None], input_text=["x", "1", "2", "3"])
    assert slice_values(frame, SliceConfig("hour", "hour")).count(MISSING) == 2
    assert slice_values(frame, SliceConfig("v", column=1)) == [MISSING, MISSING, MISSING, MISSING]


def test_slice_metrics_equal_the_metrics_of_the_slice_alone():
    frame = _frame()
    config = CompareConfig(bootstrap_resamples=100, min_slice_support=10,
                           slices=(SliceConfig("client", "attribute", key="client"),))
    result = compare(frame, config)
    for client in ("web", "ios", "android"):
        part = frame[frame["custom_attributes"] == f"client={client}"]
        metric = result.metric("accuracy", f"client={client}")
        assert metric.support == len(part)
        assert metric.candidate == pytest.approx(accuracy_score(part["ground_truth_label"], part["candidate_label"]))
        assert metric.production == pytest.approx(accuracy_score(part["ground_truth_label"],
                                                                 part["production_label"]))
        assert metric.ci_low <= metric.delta <= metric.ci_high
    assert result.metric("accuracy", "client=android").delta < result.metric("accuracy", "client=web").delta


def test_slices_below_support_get_no_metrics():
    result = compare(_frame(30), CompareConfig(bootstrap_resamples=0, min_slice_support=10,
                                               slices=(SliceConfig("client", "attribute", key="client"),)))
    assert {s.name for s in result.segments if s.compared} == {"client=android", "client=ios", "client=web"}
    result = compare(_frame(30), CompareConfig(bootstrap_resamples=0, min_slice_support=11,
                                               slices=(SliceConfig("hour", "hour"),)))
    assert [s.support for s in result.segments] == [28, 2]
    assert result.metric("accuracy", "hour=2025-03-03T13:00Z") is None


@pytest.mark.parametrize("slice_config, problem", [
    ({"name": "f"}, "exactly one of column"), ({"name": "f", "column": 1, "path": "a"}, "exactly one of column"),
    ({"name": "a", "by": "attribute"}, "needs key"), ({"name": "h", "by": "hour", "column": 1}, "feature slices"),
    ({"name": "f", "column": 1, "bins": [3, 1]}, "ascending"), ({"name": "f", "column": -1}, "0 or more")])
def test_slice_config_is_checked_at_load(slice_config, problem):
    with pytest.raises(ConfigError, match=problem):
        config_from_mapping({"compare": {"slices": [slice_config]}})
