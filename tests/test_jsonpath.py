"""The DataProcessing JSONPath subset: a table of expressions x values -> results, and the refusals."""
from __future__ import annotations

import pytest

from analysis.jsonpath import JsonPathError, compile_path

ROW = ["id-7", "5.1", "3.5", "1.4", "0.2", "setosa"]
RECORD = {"id": 1, "features": [0.5, 1.5, 2.5], "meta": {"hour": 3, "tags": ["a", "b"]},
          "SageMakerOutput": {"score": 0.9}}

# (expression, value, exclusive-end result, inclusive-end result)
CASES = [
    ("$", ROW, ROW, ROW),
    ("$[0]", ROW, "id-7", "id-7"),
    ("$[-1]", ROW, "setosa", "setosa"),
    ("$[0,-1]", ROW, ["id-7", "setosa"], ["id-7", "setosa"]),
    ("$[ 0 , 2 ]", ROW, ["id-7", "3.5"], ["id-7", "3.5"]),
    # The guide's own examples: drop the id column; `$[1:4]` and `$[:5]` read as inclusive there.
    ("$[1:]", ROW, ROW[1:], ROW[1:]),
    ("$[1:4]", ROW, ROW[1:4], ROW[1:5]),
    ("$[:5]", ROW, ROW[:5], ROW[:6]),
    ("$[:-1]", ROW, ROW[:-1], ROW),
    ("$[-2:]", ROW, ROW[-2:], ROW[-2:]),
    ("$[2:100]", ROW, ROW[2:], ROW[2:]),
    ("$[*]", ROW, ROW, ROW),
    ("$.features", RECORD, [0.5, 1.5, 2.5], [0.5, 1.5, 2.5]),
    ("$.meta.hour", RECORD, 3, 3),
    ("$.meta.tags[1]", RECORD, "b", "b"),
    ("$.features[0:2]", RECORD, [0.5, 1.5], [0.5, 1.5, 2.5]),
    ("$['id','SageMakerOutput']", RECORD, {"id": 1, "SageMakerOutput": {"score": 0.9}},
     {"id": 1, "SageMakerOutput": {"score": 0.9}}),
    ('$["features"]', RECORD, [0.5, 1.5, 2.5], [0.5, 1.5, 2.5]),
    ("$.SageMakerOutput.score", RECORD, 0.9, 0.9),
    ("$.meta.*", RECORD, [3, ["a", "b"]], [3, ["a", "b"]]),
    ("$.*.score", {"a": {"score": 1}, "b": {"score": 2}}, [1, 2], [1, 2]),
    ("$['a','b'].x", {"a": {"x": 1}, "b": {"x": 2}}, [1, 2], [1, 2]),
    ("$[0].name", [{"name": "n"}], "n", "n"),
]


@pytest.mark.parametrize("expression, value, exclusive, inclusive", CASES, ids=[c[0] for c in CASES])
def test_selects(expression, value, exclusive, inclusive):
    assert compile_path(expression).apply(value) == exclusive
    assert compile_path(expression, slice_end_inclusive=True).apply(value) == inclusive


@pytest.mark.parametrize("expression, definite", [
    ("$", True), ("$.a.b", True), ("$[0]", True), ("$['a','b']", True),
    ("$[0,1]", False), ("$[1:]", False), ("$.*", False), ("$['a','b'].c", False),
])
def test_definite_paths_give_a_value_others_a_list(expression, definite):
    assert compile_path(expression).is_definite is definite


@pytest.mark.parametrize("expression, message", [
    ("", "non-empty"),
    ("features", "must start with"),
    ("$..score", "deep scan"),
    ("$[?(@.score > 0.5)]", "filter"),
    ("$[::2]", "step"),
    ("$[1:5:2]", "step"),
    ("$.features.length()", "functions"),
    ("$['a.b']", "nested paths"),
    ("$.", "key name"),
    ("$[abc]", "cannot read"),
    ("$[0", "cannot read"),
    ("$['a'", "cannot read"),
    ("$" + ".abcdefghij" * 6, "longer than 63"),
])
def test_rejects_unsupported_expressions(expression, message):
    with pytest.raises(JsonPathError, match=message):
        compile_path(expression)


def test_sixty_three_characters_is_the_limit():
    longest = "$." + "a" * 61
    assert compile_path(longest).apply({"a" * 61: 1}) == 1
    with pytest.raises(JsonPathError):
        compile_path(longest + "b")


@pytest.mark.parametrize("expression, value, message", [
    ("$.missing", {"a": 1}, "no key 'missing'"),
    ("$['a','zz']", {"a": 1}, "no key 'zz'"),
    ("$.a", [1, 2], "needs an object, got an array"),
    ("$[3]", [1, 2], "index 3 is outside an array of 2"),
    ("$[-3]", [1, 2], "index -3 is outside"),
    ("$[0:1]", {"a": 1}, "needs an array, got an object"),
    ("$.*", 5, "needs an object or an array, got a number"),
])
def test_values_that_do_not_match_are_errors(expression, value, message):
    with pytest.raises(JsonPathError, match=message):
        compile_path(expression).apply(value)
