"""The JSONPath subset: parsing with precise errors, lookups, rendering."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from router.core.jsonpath import MISSING, compile_path, render

DOC = {
    "label": "cat",
    "scores": [0.1, 0.7, 0.2],
    "outputs": [{"name": "a", "data": [1, 2]}, {"name": "b", "data": [3]}],
    "odd key": {"it's": 5},
    "nothing": None,
}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("$", DOC),
        ("$.label", "cat"),
        ("$.scores[1]", 0.7),
        ("$.scores[-1]", 0.2),
        ("$['label']", "cat"),
        ("$[\"odd key\"]['it\\'s']", 5),
        ("$.outputs[1].name", "b"),
        ("$.outputs[*].name", ["a", "b"]),
        ("$.outputs[*].data[0]", [1, 3]),
        ("$.outputs[*].data[1]", [2]),
        ("$.nothing", None),
    ],
)
def test_get_finds_values(text: str, expected: object) -> None:
    """Each supported step form reaches the value it names."""
    assert compile_path(text).get(DOC) == expected


@pytest.mark.parametrize(
    "text",
    ["$.absent", "$.scores[3]", "$.scores[-4]", "$.label.x", "$.label[0]", "$.scores.x", "$[0]"],
)
def test_get_returns_missing_not_none(text: str) -> None:
    """A step that does not fit yields MISSING, distinct from JSON null."""
    assert compile_path(text).get(DOC) is MISSING


def test_wildcard_over_a_scalar_is_missing() -> None:
    """`[*]` over something that is neither a list nor an object finds nothing."""
    assert compile_path("$.label[*]").get(DOC) is MISSING
    assert compile_path("$['odd key'][*]").get(DOC) == [5]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("label", "must start with '$'"),
        ("$.", "expected a name after '.' at position 2"),
        ("$..a", "expected a name after '.' at position 2"),
        ("$.a[", "expected an index, '*' or a quoted name at position 4"),
        ("$.a[1", "expected ']' at position 5"),
        ("$.a['x", "unterminated quoted name starting at position 4"),
        ("$.a b", "unexpected ' ' at position 3, expected '.' or '['"),
        ("$.a[x]", "expected an index, '*' or a quoted name at position 4"),
    ],
)
def test_compile_errors_name_the_position(text: str, message: str) -> None:
    """A bad path is refused with a message naming the exact character position."""
    with pytest.raises(ValueError) as info:
        compile_path(text)
    assert str(info.value) == message


def test_render_quotes_only_what_needs_it() -> None:
    """render writes plain names with dots and quotes the rest, escaping quotes."""
    assert render([]) == "$"
    assert render(["a", "b", 2]) == "$.a.b[2]"
    assert render(["odd key", "it's"]) == "$['odd key']['it\\'s']"


@given(st.lists(st.one_of(st.text(max_size=8), st.integers(-5, 5)), max_size=6))
def test_render_then_compile_round_trips(steps: list[str | int]) -> None:
    """Any rendered path compiles back to the same steps."""
    assert compile_path(render(steps)).steps == tuple(steps)


def test_paths_compare_by_steps() -> None:
    """Two spellings of one path are equal and hash alike (for duplicate checks)."""
    assert compile_path("$.a[0]") == compile_path("$['a'][0]")
    assert len({compile_path("$.a"), compile_path('$["a"]')}) == 1
    assert json.dumps(str(compile_path("$.a"))) == '"$.a"'
