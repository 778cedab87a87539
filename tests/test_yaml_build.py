"""The one-pass YAML builder gives exactly PyYAML's values, and its refusals.

router/config/yamlbuild.py builds values straight from libyaml's events; the
slow path (`load_composed`: compose, measure, construct) is the reference.
Generated documents, every config the project ships, and the YAML features a
config file may use (anchors, merges, tags, implicit types) must come out equal,
types included.
"""

from __future__ import annotations

import datetime
import math
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from router.config import yamlbuild, yamlload

ROOT = Path(__file__).resolve().parent.parent


def same(a: Any, b: Any) -> bool:
    """Equal values of equal types, all the way down (1 == 1.0 == True is not enough)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return list(a) == list(b) and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, float) and math.isnan(a):
        return math.isnan(b)
    return bool(a == b)


def fast(text: str) -> object:
    loader = yamlload._Loader(text.encode())
    try:
        return yamlbuild.Builder(loader, yamlload.MAX_VALUES, yamlload.MAX_DEPTH).document()
    finally:
        loader.dispose()


def both(text: str) -> tuple[object, object]:
    return fast(text), yamlload.load_composed(text.encode(), "t.yaml")


SCALARS = [
    "1", "-0x1F", "0o17", "017", "1_000", "1:30", "3.5", "1e3", ".inf", "-.Inf", ".nan",
    "true", "False", "yes", "off", "~", "null", "", "2026-12-04", "2026-12-04 10:00:00Z",
    "'1'", '"yes"', "!!str 5", "!!int '7'", "!!float 2", "10s", "http://h:1/x", "<<x",
    "'a: b'", "|\n  block\n  text\n", ">-\n  folded\n  text\n", "!!binary aGVsbG8=",
]  # fmt: skip


@pytest.mark.parametrize("scalar", SCALARS)
def test_every_kind_of_scalar_is_read_as_pyyaml_reads_it(scalar: str) -> None:
    inline = "x" if "\n" in scalar else scalar.strip()
    text = f"k: {scalar}\nl: [{inline}]\n"
    got, want = both(text)
    assert same(got, want), (got, want)


FEATURES = {
    "anchors": "a: &x {p: 1, q: [1, 2]}\nb: *x\nc: &s str\nd: *s\n",
    "merge one": "base: &b {x: 1, y: 2}\nr: {<<: *b, y: 3, z: 4}\n",
    "merge list": "a: &a {x: 1}\nb: &b {x: 2, w: 0}\nr:\n  <<: [*a, *b]\n  z: 9\n",
    "int keys": "7: a\n2.5: b\nnull: c\ntrue: d\n2026-01-01: e\n",
    "empty": "",
    "comment only": "# nothing\n",
    "scalar root": "42\n",
    "list root": "- 1\n- [a, {b: c}]\n",
    "explicit doc": "---\na: 1\n...\n",
    "empty values": "a:\nb: []\nc: {}\n",
    "quoted keys": "\"a b\": 1\n'c': 2\n",
}


@pytest.mark.parametrize("text", FEATURES.values(), ids=FEATURES.keys())
def test_the_yaml_features_a_config_may_use(text: str) -> None:
    got, want = both(text)
    assert same(got, want), (got, want)


def test_the_first_mapping_of_a_merge_list_wins_whatever_the_key() -> None:
    """The YAML merge spec; PyYAML 6.0.4 agrees only for one-character keys."""
    doc = fast("a: &a {k: 1, key: 1}\nb: &b {k: 2, key: 2, w: 2}\nr: {<<: [*a, *b], w: 3}\n")
    assert isinstance(doc, dict)
    assert doc["r"] == {"k": 1, "key": 1, "w": 3}


def test_an_alias_is_the_same_object_as_its_anchor() -> None:
    """As in PyYAML: a repeated value is shared, not copied (and not expanded in memory)."""
    doc = fast("a: &x [1]\nb: *x\n")
    assert isinstance(doc, dict)
    assert doc["a"] is doc["b"]


CONFIGS = sorted(
    [*ROOT.glob("*.yaml"), *ROOT.glob("examples/**/*.yaml"), *ROOT.glob("deploy/**/*.yaml")]
)


@pytest.mark.parametrize("path", CONFIGS, ids=[str(p.relative_to(ROOT)) for p in CONFIGS])
def test_the_shipped_files_read_the_same(path: Path) -> None:
    data = path.read_bytes()
    if data.count(b"\n---") or (data.startswith(b"---\n") and b"\n---" in data[4:]):
        pytest.skip("several documents: not a config file")
    got, want = yamlload.load(data, str(path)), yamlload.load_composed(data, str(path))
    assert same(got, want)


keys = st.one_of(st.text(max_size=8), st.integers(-5, 5), st.booleans())
leaves = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=12),
    st.dates(), st.datetimes(timezones=st.just(datetime.UTC)),
)  # fmt: skip
values = st.recursive(
    leaves,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(keys, inner, max_size=4)),
    max_leaves=30,
)


@settings(max_examples=300, deadline=None)
@given(values, st.sampled_from([None, True, False]))
def test_generated_documents_read_the_same(doc: object, flow: bool | None) -> None:
    text = yaml.safe_dump(doc, default_flow_style=flow, allow_unicode=True)
    got, want = both(text)
    assert same(got, want), text


REFUSED = {
    "duplicate": ("a: 1\na: 2\n", "t.yaml:2:1: invalid YAML: duplicate key 'a'"),
    "undefined alias": ("a: *nope\n", "t.yaml:1:4: invalid YAML: found undefined alias 'nope'"),
    "second document": ("a: 1\n---\nb: 2\n", "second YAML document"),
    "bad merge": ("a: {<<: 3}\n", "expected a mapping or list of mappings for merging"),
    "unknown tag": ("a: !shiny 3\n", "could not determine a constructor"),
    "value key": ("=: 1\n", "could not determine a constructor"),
    "two merges": (
        "a: &a {x: 1}\nr: {<<: *a, <<: *a}\n",
        "t.yaml:2:13: invalid YAML: duplicate key '<<'",
    ),
}


@pytest.mark.parametrize(("text", "expected"), REFUSED.values(), ids=REFUSED.keys())
def test_a_bad_document_is_refused_with_its_place(text: str, expected: str) -> None:
    with pytest.raises(yamlload.YAMLRefused) as info:
        yamlload.load(text.encode(), "t.yaml")
    assert expected in str(info.value)


def test_what_the_builder_leaves_alone_still_reads() -> None:
    """A tagged collection goes to PyYAML's path and gives PyYAML's value."""
    text = "s: !!set {a, b}\nk: {[1, 2]: x}\n"
    with pytest.raises(yamlbuild.Unhandled):
        fast(text)
    with pytest.raises(yamlload.YAMLRefused, match="unhashable"):
        yamlload.load(text.encode(), "t.yaml")
    assert yamlload.load(b"s: !!set {a, b}\n", "t.yaml") == {"s": {"a", "b"}}
