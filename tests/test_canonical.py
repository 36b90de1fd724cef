import hashlib
import math

import pytest
from hypothesis import given, strategies as st

from analysis.canonical import canonical_hash, canonical_json, label_text, number_from_text, values_match


@pytest.mark.parametrize("value, decimals, expected", [
    ({"b": 1, "a": [1.0, "x"]}, 6, '{"a":[1,"x"],"b":1}'),
    (0.98, 6, "0.98"),
    (0.123456789, 6, "0.123457"),
    (0.123456789, 3, "0.123"),
    (12345678, 6, "12345700"),
    (1e-7, 6, "1e-07"),
    (-0.0, 6, "0"),
    (math.nan, 6, "NaN"),
    (math.inf, 6, "Infinity"),
    (-math.inf, 6, "-Infinity"),
    ("NaN", 6, '"NaN"'),
    (True, 6, "true"),
    (None, 6, "null"),
    ({"é": "ü"}, 6, '{"é":"ü"}'),
    ((1, 2), 6, "[1,2]"),
    (0.5, 0, "0.5"),
])
def test_canonical_json(value, decimals, expected):
    assert canonical_json(value, decimals) == expected


@pytest.mark.parametrize("a, b", [
    (1, 1.0),
    (1, number_from_text("1")),
    (number_from_text("1.0"), 1),
    ({"score": 0.9800001, "label": 1}, {"label": 1.0, "score": 0.98}),
    ([0.1 + 0.2], [0.3]),
])
def test_equal_values_hash_alike(a, b):
    assert canonical_hash(a, 6) == canonical_hash(b, 6)


@pytest.mark.parametrize("a, b", [
    (1, "1"),
    (math.nan, "NaN"),
    (1, True),
    ({"a": 1}, {"a": 1, "b": None}),
    (0.98, 0.99),
])
def test_different_values_hash_apart(a, b):
    assert canonical_hash(a, 6) != canonical_hash(b, 6)


def test_hash_is_sha256_of_canonical_text():
    assert canonical_hash({"a": 1}, 6) == hashlib.sha256(b'{"a":1}').hexdigest()


def test_unknown_types_are_refused():
    with pytest.raises(TypeError):
        canonical_json(object(), 6)


@pytest.mark.parametrize("text, expected", [
    ("1", 1), (" -2 ", -2), ("1.0", 1.0), (".5", 0.5), ("1e3", 1000.0), ("abc", None), ("1_000", None),
    ("", None), ("NaN", "nan"), ("-inf", -math.inf), ("Infinity", math.inf),
])
def test_number_from_text(text, expected):
    found = number_from_text(text)
    if expected == "nan":
        assert math.isnan(found)
    else:
        assert found == expected and type(found) is type(expected)


@pytest.mark.parametrize("value, expected", [
    (1, "1"), (1.0, "1"), ("1", "1"), ("1.0", "1"), (True, "1"), (False, "0"), (0.25, "0.25"),
    (" cat ", "cat"), (None, None), ([1, 0], "[1,0]"),
])
def test_label_text(value, expected):
    assert label_text(value) == expected


@pytest.mark.parametrize("a, b, abs_tol, rel_tol, expected", [
    (1.0, 1.0 + 1e-7, 1e-6, 0, True),
    (1.0, 1.0 + 1e-5, 1e-6, 0, False),
    (100.0, 100.01, 0, 1e-3, True),
    ({"s": 0.5, "l": 1}, {"l": 1, "s": 0.5000001}, 1e-6, 0, True),
    ({"s": 0.5}, {"s": 0.5, "x": 1}, 1, 1, False),
    ([1, 2], [1, 2, 3], 1, 1, False),
    (math.nan, math.nan, 0, 0, True),
    (math.nan, 1.0, 1, 1, False),
    (math.inf, math.inf, 0, 0, True),
    (1, True, 1, 1, False),
    ("1", 1, 1, 1, False),
    (None, None, 0, 0, True),
])
def test_values_match(a, b, abs_tol, rel_tol, expected):
    assert values_match(a, b, abs_tol, rel_tol) is expected
    assert values_match(b, a, abs_tol, rel_tol) is expected


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner, max_size=3),
    max_leaves=10)


@given(json_values)
def test_a_value_matches_itself_and_hashes_stably(value):
    assert values_match(value, value, 0.0, 0.0)
    assert canonical_hash(value, 6) == canonical_hash(value, 6)


@given(st.dictionaries(st.text(max_size=4), st.integers(), max_size=5))
def test_key_order_does_not_matter(mapping):
    assert canonical_json(dict(reversed(list(mapping.items()))), 6) == canonical_json(mapping, 6)
