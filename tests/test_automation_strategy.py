"""The automation ladder: each level's decisions, the confidence gate, config parsing."""

from __future__ import annotations

import json
import random
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from router.core.confkit import Node
from router.core.rollout import Rollout
from strategies.automation import (
    FAILURES,
    LEVELS,
    AutomationSpec,
    FollowUp,
    build,
    parse,
)
from strategies.base import Decision
from strategies.registry import REGISTRY

KNOWN = frozenset({"iris-v2", "review-desk", "other"})
BLOCK: dict[str, Any] = {
    "model": "iris-v2",
    "human": "review-desk",
    "level": "partial",
    "confidence": "$.confidence",
    "threshold": 0.8,
}
PATH = "routes[0].strategy.automation"


def parsed(block: dict[str, Any]) -> tuple[AutomationSpec, list[str]]:
    errors: list[str] = []
    spec = parse(Node(block, PATH, errors), KNOWN)
    assert isinstance(spec, AutomationSpec)
    return spec, errors


def strategy(**changes: Any) -> Any:
    spec, errors = parsed({**BLOCK, **changes})
    assert errors == []
    return build(spec)


def at(level: str) -> Rollout:
    return Rollout(route="inspect", kind="automation", level=level)


def test_registered_under_its_word() -> None:
    """`automation` in config.yaml finds this strategy in the registry."""
    assert REGISTRY["automation"].build is build


def test_first_decision_of_each_level() -> None:
    """human and shadow go to the human (shadow mirrors the model); the rest ask the model."""
    s = strategy()
    got = {level: s.decide(1, at(level), None) for level in LEVELS}
    assert got["human"] == Decision("review-desk", "human")
    assert got["shadow"] == Decision("review-desk", "shadow", ("iris-v2",))
    assert got["assist"] == Decision("iris-v2", "assist", follow_up=True)
    assert got["partial"] == Decision("iris-v2", "partial", follow_up=True)
    assert got["full"] == Decision("iris-v2", "full", follow_up=True)  # the human as fallback
    assert strategy(fallback=False).decide(1, at("full"), None) == Decision("iris-v2", "full")


def test_live_level_overrides_config_unless_invalid() -> None:
    """The live rollout's level wins; an empty or unknown one falls back to the config's."""
    s = strategy(level="full")
    assert s.decide(1, None, None).reason == "full"
    assert s.decide(1, at("human"), None).reason == "human"
    assert s.decide(1, at("bogus"), None).reason == "full"
    assert s.decide(1, at(""), None).reason == "full"


def test_partial_serves_confident_answers_and_defers_the_rest() -> None:
    """Partial: confident answers are served; a low confidence defers; every failure of the
    model goes to the human too, its reason naming the failure."""
    s = strategy()
    live = at("partial")
    assert s.after({"confidence": 0.8}, 200, live) == Decision("iris-v2", "confident")
    assert s.after({"confidence": 0.95, "label": "a"}, 201, live).primary == "iris-v2"
    assert s.after({"confidence": 0.79}, 200, live) == Decision("review-desk", "deferred")
    for answer, status, failure, why in [
        ({"label": "a"}, 200, "", "no_confidence"),
        ({"confidence": "0.9"}, 200, "", "no_confidence"),
        ({"confidence": True}, 200, "", "no_confidence"),
        ({"confidence": float("nan")}, 200, "", "no_confidence"),
        ({"confidence": 1.5}, 200, "", "confidence_out_of_range"),
        ({"confidence": -0.1}, 200, "", "confidence_out_of_range"),
        ({"confidence": 0.99}, 500, "", "5xx"),
        ({"confidence": 0.99}, 404, "", "4xx"),
        (None, 0, "", "no_answer"),
        (None, 0, "timeout", "timeout"),
        (None, 0, "refused", "refused"),
        (None, 200, "", "not_json"),
        (None, 200, "too_large", "too_large"),
        ([0.99], 200, "", "no_confidence"),
    ]:
        d = s.after(answer, status, live, failure)
        assert d == Decision("review-desk", f"fallback:{why}"), answer
        assert why in FAILURES


def test_partial_defers_about_the_unconfident_share() -> None:
    """With 30 % of answers below the threshold, about 30 % of requests go to the human."""
    s = strategy()
    rng = random.Random(8)
    n, deferred = 10_000, 0
    for _ in range(n):
        first = s.decide(rng.getrandbits(64), None, None)
        assert first.follow_up
        assert first.primary == "iris-v2"
        low = rng.random() < 0.3
        confidence = rng.uniform(0.0, 0.8) if low else rng.uniform(0.8, 1.0)
        final = s.after({"label": "x", "confidence": confidence}, 200, None)
        deferred += final is not None and final.primary == "review-desk"
    print(f"partial: deferred {deferred / n:.1%} of {n} (30 % below threshold)")
    assert 0.28 <= deferred / n <= 0.32


def test_assist_sends_the_model_answer_to_the_human_as_a_header() -> None:
    """Assist: the human gets the request with the model's answer in the suggestion header."""
    s = strategy(level="assist", suggestion={"header": "X-Model-Suggestion"})
    answer = {"label": "setosa", "note": "é\nline"}
    follow = s.after(answer, 200, None)
    assert isinstance(follow, FollowUp)
    assert (follow.primary, follow.reason) == ("review-desk", "assist")
    ((name, value),) = follow.extra_headers()
    assert name == b"x-model-suggestion"
    assert b"\n" not in value
    assert value.isascii()
    assert json.loads(value) == answer
    assert follow.request_body(b'{"x":1}') == b'{"x":1}'


def test_assist_as_a_body_field() -> None:
    """Assist with `field`: the JSON request body gains the model's answer as a member."""
    s = strategy(level="assist", suggestion={"field": "model_suggestion"})
    follow = s.after({"label": "setosa"}, 200, None)
    assert isinstance(follow, FollowUp)
    assert follow.extra_headers() == ()
    body = json.loads(follow.request_body(b'{"features": [1, 2]}'))
    assert body == {"features": [1, 2], "model_suggestion": {"label": "setosa"}}
    assert follow.request_body(b"not json") == b"not json"
    assert follow.request_body(b"[1]") == b"[1]"


def test_assist_without_a_model_answer_still_reaches_the_human() -> None:
    """Assist: a failed model call still goes to the human, without a suggestion."""
    s = strategy(level="assist")
    assert s.after({"error": "boom"}, 503, None) == Decision("review-desk", "unassisted:5xx")
    assert s.after(None, 0, None, "reset") == Decision("review-desk", "unassisted:reset")
    assert s.after(None, 200, None) == Decision("review-desk", "unassisted")


def test_full_falls_back_to_the_human_only_when_configured() -> None:
    """Full: a model that fails before its answer starts goes to the human when `fallback`
    is on (the default); off, its answer (or failure) is the client's."""
    s = strategy(level="full")
    assert s.after(None, 0, None, "timeout") == Decision("review-desk", "fallback:timeout")
    assert s.after({"x": 1}, 502, None) == Decision("review-desk", "fallback:5xx")
    assert s.after({"x": 1}, 200, None) == Decision("iris-v2", "full")
    off = strategy(level="full", fallback=False)
    assert off.after(None, 0, None, "timeout") == Decision("iris-v2", "full")


def test_a_request_too_large_to_send_twice_skips_the_model_below_full() -> None:
    """Without a copy of the request the human answers below full; at full the model does."""
    assert strategy().without_model(at("partial")) == Decision("review-desk", "unbuffered")
    assert strategy().without_model(at("full")) == Decision("iris-v2", "full")


def test_partial_deferral_carries_the_suggestion_when_configured() -> None:
    """Partial with `suggestion` written: the deferred request carries the model's answer."""
    s = strategy(suggestion={"header": "X-Hint"})
    follow = s.after({"confidence": 0.1}, 200, None)
    assert isinstance(follow, FollowUp)
    assert follow.reason == "deferred"
    assert follow.extra_headers() == ((b"x-hint", b'{"confidence":0.1}'),)
    assert strategy().after({"confidence": 0.1}, 200, None) == Decision("review-desk", "deferred")


def test_level_moved_while_the_model_answered() -> None:
    """`after` follows the live level: moved to full serves the model, to human asks the human."""
    s = strategy()
    assert s.after({"confidence": 0.0}, 200, at("full")) == Decision("iris-v2", "full")
    assert s.after({"confidence": 1.0}, 200, at("shadow")) == Decision("review-desk", "human")


def test_weights_name_who_answers() -> None:
    """weights: the human answers under human/shadow/assist, the model under partial/full."""
    s = strategy()
    shares = {level: s.weights(at(level)) for level in LEVELS}
    assert shares["assist"] == {"iris-v2": 0.0, "review-desk": 100.0}
    assert shares["partial"] == shares["full"] == {"iris-v2": 100.0, "review-desk": 0.0}
    assert all(sum(w.values()) == 100.0 for w in shares.values())


def test_parse_reports_each_problem_with_its_path() -> None:
    """Bad blocks are refused with the exact path of every problem."""
    _, errors = parsed(
        {
            "model": "nope",
            "human": "review-desk",
            "level": "most",
            "confidence": "confidence",
            "threshold": 1.5,
            "suggestion": {"header": "X-A", "field": "b"},
            "typo": 1,
        }
    )
    assert f"{PATH}.model: is not a backend defined under backends, got 'nope'" in errors
    assert any(e.startswith(f"{PATH}.level: must be one of human, shadow") for e in errors)
    assert any(e.startswith(f"{PATH}.confidence: is not a JSON path") for e in errors)
    assert any(e.startswith(f"{PATH}.threshold: must be a number in 0..1") for e in errors)
    assert any(e.startswith(f"{PATH}.suggestion: must have exactly one") for e in errors)
    assert f"{PATH}.typo: unknown key" in errors


def test_parse_requires_confidence_for_partial_and_distinct_backends() -> None:
    """partial without a confidence path, or model == human, is refused."""
    _, errors = parsed({"model": "iris-v2", "human": "iris-v2", "level": "partial"})
    assert f"{PATH}.confidence: is required when level is partial" in errors
    assert f"{PATH}.human: must differ from model, got 'iris-v2'" in errors
    spec, errors = parsed({"model": "iris-v2", "human": "review-desk"})
    assert errors == []
    assert spec.level == "human"
    assert spec.suggestion_header == "x-model-suggestion"


JSON = st.recursive(
    st.none() | st.booleans() | st.floats(allow_nan=True) | st.integers() | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner),
    max_leaves=8,
)
ANSWERS = JSON | st.fixed_dictionaries({"confidence": JSON})


@given(
    level=st.sampled_from(LEVELS),
    live_level=st.sampled_from((*LEVELS, "", "junk")),
    answer=ANSWERS,
    status=st.integers(0, 599),
    key=st.integers(0, 2**64 - 1),
    field=st.booleans(),
)
def test_any_level_any_answer_stays_inside_the_route(
    level: str, live_level: str, answer: object, status: int, key: int, field: bool
) -> None:
    """Whatever the level and the answer, every backend named is one of the route's."""
    suggestion = {"field": "hint"} if field else {"header": "X-Hint"}
    s = strategy(level=level, suggestion=suggestion)
    live = at(live_level)
    first = s.decide(key, live, None)
    names = set(s.backends())
    assert first.primary in names
    assert set(first.mirrors) <= names
    failure = "timeout" if status == 0 else ""
    final = s.after(answer, status, live, failure) if first.follow_up else None
    if final is not None:
        assert final.primary in names
        assert not final.follow_up
    if isinstance(final, FollowUp):
        json.loads(final.suggestion)
        assert final.request_body(b'{"a":1}')
