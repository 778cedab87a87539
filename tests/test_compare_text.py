"""Text comparators: each kind's notion of agreement, its config and its figures."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from router.core.compare import Answer, compare
from router.core.compare_config import parse_compare
from router.core.compare_kinds import FieldSpec, compare_field
from router.core.compare_text import jaccard, json_valid, refuses
from router.core.protocols import get
from router.shadow.figures import Tally, summarize


def spec(kind: str, field: str = "text", **settings: object) -> FieldSpec:
    """As parse_compare builds it (overlap's threshold defaults to 0.5 there)."""
    if kind == "overlap":
        settings.setdefault("min_similarity", 0.5)
    return FieldSpec(field, kind, name=kind, **settings)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kind", "a", "b", "agree"),
    [
        ("length_ratio", "a" * 100, "b" * 150, True),
        ("length_ratio", "a" * 100, "b" * 201, False),
        ("length_ratio", "a" * 100, "b" * 49, False),
        ("length_ratio", "", "", True),
        ("length_ratio", "", "x", False),
        ("refusal", "Paris is the capital.", "It is Paris.", True),
        ("refusal", "I can't help with that.", "I'm sorry, but I cannot assist with that.", True),
        ("refusal", "Paris.", "I can’t help with that.", False),  # a typographic apostrophe
        ("json_valid", '{"a": 1}', '```json\n{"a": 2}\n```', True),
        ("json_valid", '{"a": 1}', "{'a': 1}", False),
        ("json_valid", "not json", "not json either", True),  # neither: the same validity
        ("finish_reason", "stop", "stop", True),
        ("finish_reason", "stop", "length", False),
        ("tool_calls", ["a", "b"], ["b", "a"], True),
        ("tool_calls", ["a"], [], False),
        ("overlap", "the cat sat on the mat", "The cat sat on a mat", True),
        ("overlap", "the cat sat on the mat", "dogs bark loudly at night", False),
    ],
)
def test_each_kind_agrees_as_documented(kind: str, a: object, b: object, agree: bool) -> None:
    result = compare_field(spec(kind), a, b)
    assert (result.agree, result.field) == (agree, kind)


def test_labels_feed_a_confusion_matrix() -> None:
    r = compare_field(spec("refusal"), "Sure: Paris.", "I cannot help with that request.")
    assert r.labels == ("answer", "refusal")
    assert compare_field(spec("json_valid"), "[1]", "[").labels == ("valid", "invalid")
    assert compare_field(spec("tool_calls"), ["f"], None).labels == ("f", "(none)")


def test_distances() -> None:
    assert compare_field(spec("length_ratio"), "a" * 100, "a" * 120).diff == pytest.approx(0.2)
    assert compare_field(spec("overlap"), "a b c d", "a b c e").diff == pytest.approx(1 - 3 / 5)
    assert jaccard("", "") == 1.0


def test_a_value_that_is_not_text_is_a_type_disagreement() -> None:
    r = compare_field(spec("overlap"), "text", 42)
    assert (r.agree, r.reason) == (False, "type")


def test_refusal_is_looked_for_at_the_start_only() -> None:
    long = "Here is the recipe. " * 40 + "I can't help with that part."
    assert not refuses(long)
    assert refuses("I won't help with that", ("won't help",))
    assert not refuses("I can't help with that", ("won't help",))  # own patterns replace


def test_json_valid_against_a_schema() -> None:
    schema = json.dumps({"type": "object", "required": ["city"]})
    assert json_valid('{"city": "Oslo"}', schema)
    assert not json_valid('{"town": "Oslo"}', schema)


def test_config_of_text_kinds(tmp_path: Path) -> None:
    schema = tmp_path / "answer.schema.json"
    schema.write_text('{"type": "object"}')
    errors: list[str] = []
    items = [
        ("c[0]", {"output": "text", "kind": "length_ratio", "min": 0.8, "max": 1.25}),
        ("c[1]", {"output": "text", "kind": "refusal", "patterns": ["^No\\b"]}),
        ("c[2]", {"output": "text", "kind": "json_valid", "schema": str(schema)}),
        ("c[3]", {"output": "text", "kind": "overlap", "min": 0.7}),
        ("c[4]", {"output": "finish_reason", "kind": "finish_reason"}),
        ("c[5]", {"output": "tool_calls", "kind": "tool_calls"}),
        ("c[6]", {"output": "text", "kind": "label", "name": "exact"}),
    ]
    specs = parse_compare(items, errors)
    assert errors == []
    assert [s.key for s in specs] == [
        "length_ratio", "refusal", "json_valid", "overlap", "finish_reason", "tool_calls", "exact",
    ]  # fmt: skip
    assert specs[0].band == (0.8, 1.25)
    assert specs[1].patterns == ("^No\\b",)
    assert json.loads(specs[2].schema) == {"type": "object"}
    assert specs[3].min_similarity == 0.7


def test_config_errors_of_text_kinds(tmp_path: Path) -> None:
    bad_json = tmp_path / "bad.json"
    bad_json.write_text("{")
    not_schema = tmp_path / "not_schema.json"
    not_schema.write_text('{"type": 12}')
    errors: list[str] = []
    items = [
        ("c[0]", {"output": "text", "kind": "length_ratio", "min": 3, "max": 2}),
        ("c[1]", {"output": "text", "kind": "refusal", "patterns": ["(unclosed"]}),
        ("c[2]", {"output": "text", "kind": "json_valid", "schema": str(bad_json)}),
        ("c[3]", {"output": "text", "kind": "json_valid", "schema": str(not_schema), "name": "j2"}),
        ("c[4]", {"output": "text", "kind": "overlap", "min": 1.5}),
        ("c[5]", {"field": "$.x", "kind": "overlap"}),
        ("c[6]", {"output": "text", "kind": "overlap", "abs": 1, "name": "o3"}),
    ]
    parse_compare(items, errors)
    assert errors[0] == "c[0].min: must not be above max (2), got 3"
    assert errors[1].startswith("c[1].patterns[0]: bad regular expression: missing )")
    assert errors[2].startswith("c[2].schema: is not a JSON file: ")
    assert errors[3].startswith("c[3].schema: is not a JSON schema this router can use: ")
    assert errors[4] == "c[4].min: must be a number in 0..1, got 1.5"
    assert errors[5] == (
        "c[5].kind: figures named 'overlap' twice: give one of these entries its own `name:`"
    )
    assert errors[6] == "c[6].abs: unknown key"
    assert len(errors) == 7


def test_identical_texts_agree_on_every_text_kind_and_figures_keep_each_kind() -> None:
    """One answer judged by six kinds: six figures, each under its kind's name."""
    kinds = ["length_ratio", "refusal", "json_valid", "overlap", "finish_reason", "tool_calls"]
    fields = [spec(k, {"finish_reason": "finish_reason", "tool_calls": "tool_calls"}.get(k, "text"))
              for k in kinds]  # fmt: skip
    body = json.dumps(
        {"choices": [{"index": 0, "finish_reason": "stop",
                      "message": {"role": "assistant", "content": '{"answer": 42}'}}]}
    ).encode()  # fmt: skip
    refusal = json.dumps(
        {"choices": [{"index": 0, "finish_reason": "stop",
                      "message": {"role": "assistant", "content": "I can't help with that."}}]}
    ).encode()  # fmt: skip
    tally = Tally("cmp")
    protocol = get("openai")
    for _ in range(3):
        tally.add(
            compare(fields, Answer(200, body, 0.1), Answer(200, body, 0.1), protocol=protocol)
        )
    tally.add(compare(fields, Answer(200, body, 0.1), Answer(200, refusal, 0.1), protocol=protocol))
    summary = summarize(tally.drain()["cmp"])
    rates = {name: (f.agreement.k, f.agreement.n) for name, f in summary.fields.items()}
    assert rates == {
        "finish_reason": (4, 4), "json_valid": (3, 4), "length_ratio": (4, 4),  # 23 vs 14 chars
        "overlap": (3, 4), "refusal": (3, 4), "tool_calls": (4, 4),
    }  # fmt: skip
    assert summary.fields["refusal"].confusion == (
        ("answer", "answer", 3),
        ("answer", "refusal", 1),
    )


def canary_yaml(name: str) -> str:
    return (
        "backends:\n  a: {url: http://127.0.0.1:1}\n  b: {url: http://127.0.0.1:2}\n"
        "routes:\n  - name: chat\n    match: {path_prefix: /v1}\n    protocol: openai\n"
        "    strategy:\n      canary:\n        stable: a\n        candidate: b\n"
        "        steps: [{weight: 10}, {weight: 100}]\n"
        "        compare: [{output: text, kind: refusal}, {output: text, kind: overlap}]\n"
        f"        shadow_first: {{compare: {name}, min_agreement: 0.9, min_requests: 20}}\n"
        f"        analysis: {{agreement: {{compare: {name}, min: 0.9}}}}\n"
    )


def test_a_gate_names_a_compare_entry() -> None:
    """`compare: refusal` judges the refusal figure; a name no entry has is refused."""
    from router.config.reader import parse
    from router.core.confkit import ConfigError
    from strategies.canary import CanarySpec

    config = parse(canary_yaml("refusal"))
    canary = config.routes[0].strategy
    assert isinstance(canary, CanarySpec)
    assert canary.agreement_fields == ("refusal",)
    assert [f.key for f in canary.compare] == ["refusal", "overlap"]  # nothing added
    with pytest.raises(ConfigError) as info:
        parse(canary_yaml("refusals"))
    where = "routes[0].strategy.canary"
    known = "(known: overlap, refusal), got 'refusals'"
    assert info.value.errors == [
        f"{where}.analysis.agreement.compare: names no compare entry {known}",
        f"{where}.shadow_first.compare: names no compare entry {known}",
    ]
