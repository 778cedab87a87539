"""The canary strategy: parsing its YAML block and deciding one request."""

from __future__ import annotations

from typing import Any

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from router.core.confkit import Node
from router.core.gates import ErrorRateGate, LatencyGate
from router.core.rollout import BASIS_POINTS, Rollout
from router.dataplane.hashing import key_of
from strategies.canary import CANARY, Canary, CanarySpec, StepSpec
from strategies.registry import REGISTRY

KNOWN = frozenset({"iris-v1", "iris-v2", "other"})
PATH = "routes[0].strategy.canary"
BASE = """
stable: iris-v1
candidate: iris-v2
steps:
  - {weight: 5, pause: 2m, min_requests: 500}
  - {weight: 25, pause: 5m}
  - {weight: 100}
"""


def parse(text: str) -> tuple[CanarySpec, list[str]]:
    errors: list[str] = []
    spec = CANARY.parse(Node(yaml.safe_load(text), PATH, errors), KNOWN)
    assert isinstance(spec, CanarySpec)
    return spec, errors


def parse_ok(text: str) -> CanarySpec:
    spec, errors = parse(text)
    assert errors == []
    return spec


def spec_with(**changes: Any) -> CanarySpec:
    steps = (StepSpec(500, 60.0, 10), StepSpec(2500, 60.0), StepSpec(BASIS_POINTS))
    return CanarySpec("iris-v1", "iris-v2", changes.pop("steps", steps), **changes)


def live(**changes: Any) -> Rollout:
    fields: dict[str, Any] = {"kind": "canary", "phase": "progressing", "weight_bp": 500}
    fields |= {"stable": "iris-v1", "candidate": "iris-v2"} | changes
    return Rollout(route="iris", **fields)


# -- parsing ------------------------------------------------------------------------
def test_steps_are_read_in_basis_points_with_pauses() -> None:
    """Weights become basis points; pause and min_requests are read per step."""
    spec = parse_ok(BASE)
    assert spec.steps == (StepSpec(500, 120.0, 500), StepSpec(2500, 300.0, 0), StepSpec(10000))
    assert spec.override_header == "x-canary"
    assert spec.last_window == 1


def test_canary_is_registered() -> None:
    """The config word `canary` reaches this strategy through the registry."""
    assert REGISTRY["canary"] is CANARY


def test_weight_out_of_range_names_the_exact_path() -> None:
    """A weight of 140 is reported at its step with the value given."""
    _, errors = parse(BASE.replace("weight: 100", "weight: 140"))
    assert f"{PATH}.steps[2].weight: must be 0..100, got 140" in errors


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        (
            "weight: 25,",
            "weight: 5,",
            "steps[1].weight: must be above the previous step's 5, got 5",
        ),
        ("weight: 25,", "weight: 25.125,", "steps[1].weight: must have at most two decimals"),
        ("pause: 5m", "pause: soon", "steps[1].pause: must be a duration"),
        ("weight: 5,", "weight: 0,", "steps[0].weight: must be above 0"),
        ("weight: 5,", "weight: '5',", "steps[0].weight: must be 0..100, got '5'"),
    ],
)
def test_bad_steps_are_reported(old: str, new: str, expected: str) -> None:
    """Non-increasing, over-precise, zero or non-numeric weights and bad pauses name a path."""
    _, errors = parse(BASE.replace(old, new, 1))
    assert any(e.startswith(f"{PATH}.{expected}") for e in errors), errors


def test_steps_and_ramp_are_exclusive() -> None:
    """Giving both steps and ramp, or neither, is an error at the canary block."""
    both = BASE + "ramp: {policy: linear, start: 10, step: 10}\n"
    _, errors = parse(both)
    assert errors == [f"{PATH}: needs either steps or ramp (exactly one)"]
    _, errors = parse("stable: iris-v1\ncandidate: iris-v2\n")
    assert errors == [f"{PATH}: needs either steps or ramp (exactly one)"]


def test_exponential_ramp_expands_and_ends_at_max() -> None:
    """start 1, factor 2, max 100 expands to 1 2 4 8 16 32 64 100."""
    spec = parse_ok(
        "stable: iris-v1\ncandidate: iris-v2\n"
        "ramp: {policy: exponential, start: 1, factor: 2, max: 100, pause: 1m, min_requests: 200}"
    )
    assert [s.weight_bp for s in spec.steps] == [100, 200, 400, 800, 1600, 3200, 6400, 10000]
    assert all(s.pause == 60.0 and s.min_requests == 200 for s in spec.steps)


def test_linear_ramp_can_stop_below_full() -> None:
    """A linear ramp to max 50 ends at 50: passing it promotes."""
    spec = parse_ok(
        "stable: iris-v1\ncandidate: iris-v2\nramp: {policy: linear, start: 10, step: 15, max: 50}"
    )
    assert [s.weight_bp for s in spec.steps] == [1000, 2500, 4000, 5000]
    assert spec.last_window == 3


def test_backend_names_and_unknown_keys_are_checked() -> None:
    """An undefined backend, stable == candidate and a typo each name their path."""
    _, errors = parse(BASE.replace("iris-v2", "nope") + "stpes: 1\n")
    assert f"{PATH}.candidate: is not a backend defined under backends, got 'nope'" in errors
    assert f"{PATH}.stpes: unknown key" in errors
    _, errors = parse(BASE.replace("iris-v2", "iris-v1"))
    assert f"{PATH}.candidate: must differ from stable, got 'iris-v1'" in errors


def test_a_plan_with_only_a_full_step_is_refused() -> None:
    """`steps: [{weight: 100}]` has no window to judge and is refused."""
    _, errors = parse("stable: iris-v1\ncandidate: iris-v2\nsteps: [{weight: 100}]")
    assert errors == [f"{PATH}.steps: needs a step below 100 (100 % is the promotion)"]


def test_analysis_block_builds_gates() -> None:
    """Gate settings are read; unknown gates and bad values name their path."""
    spec = parse_ok(
        BASE + "analysis:\n  interval: 2s\n"
        "  error_rate: {max_increase: 0.02, alpha: 0.05, min_requests: 10, max: 0.05}\n"
        "  latency: {p50_ratio: 2, p99_ratio: 1.5, min_requests: 100, max_p99: 2s}\n"
    )
    assert spec.analysis.interval == 2.0
    assert spec.analysis.gates == (
        ErrorRateGate(max_increase=0.02, alpha=0.05, min_requests=10, max=0.05),
        LatencyGate(p50_ratio=2.0, p99_ratio=1.5, min_requests=100, max_p99=2.0),
    )
    _, errors = parse(BASE + "analysis: {agreemnt: {}, error_rate: {alpha: 2}}\n")
    assert (
        f"{PATH}.analysis.agreemnt: unknown gate; "
        "known: accuracy, agreement, error_rate, latency, prediction_drift, ttft" in errors
    )
    assert f"{PATH}.analysis.error_rate.alpha: must be a number in 1e-09..0.5, got 2" in errors


def test_no_analysis_still_watches_error_rate() -> None:
    """With no analysis block the rollout keeps a default error_rate gate."""
    assert parse_ok(BASE).analysis.gates == (ErrorRateGate(),)


# -- deciding -----------------------------------------------------------------------
KEYS = [key_of(f"user-{i}".encode()) for i in range(4000)]


def share(strategy: Canary, state: Rollout | None) -> float:
    hits = sum(strategy.decide(k, state, None).primary == "iris-v2" for k in KEYS)
    return hits / len(KEYS)


def test_no_live_state_keeps_everyone_on_stable() -> None:
    """Until the controller writes state, nobody reaches the candidate."""
    strategy = Canary(spec_with())
    assert share(strategy, None) == 0.0
    assert strategy.decide(KEYS[0], None, None).reason == "stable"


def test_weight_sends_that_share_to_the_candidate() -> None:
    """At 25 % about a quarter of users go to the candidate, reason `canary`."""
    strategy = Canary(spec_with())
    assert 0.22 < share(strategy, live(weight_bp=2500)) < 0.28
    reasons = {strategy.decide(k, live(weight_bp=2500), None).reason for k in KEYS}
    assert reasons == {"canary", "stable"}


def test_override_header_forces_either_side() -> None:
    """`always` and `never` win over weight and phase; other values are ignored."""
    strategy = Canary(spec_with())
    assert strategy.override_header == b"x-canary"
    aborted = live(phase="aborted", weight_bp=0)
    assert strategy.decide(KEYS[0], aborted, b"Always") == strategy.decide(0, None, b"always")
    assert strategy.decide(KEYS[0], aborted, b"always").primary == "iris-v2"
    assert strategy.decide(KEYS[0], live(weight_bp=10000), b"never").primary == "iris-v1"
    assert strategy.decide(KEYS[0], None, b"maybe").reason == "stable"


def test_aborted_sends_everyone_to_stable() -> None:
    """An aborted rollout routes every user to the stable backend, reason `aborted`."""
    strategy = Canary(spec_with())
    decisions = {strategy.decide(k, live(phase="aborted", weight_bp=2500), None) for k in KEYS}
    assert {(d.primary, d.reason) for d in decisions} == {("iris-v1", "aborted")}


def test_promoted_sends_everyone_to_the_new_stable_and_rollback_returns() -> None:
    """After promotion all go to the candidate; after rollback all go back."""
    strategy = Canary(spec_with())
    promoted = live(phase="promoted", stable="iris-v2", previous_stable="iris-v1", weight_bp=0)
    assert {strategy.decide(k, promoted, None).primary for k in KEYS} == {"iris-v2"}
    assert strategy.decide(KEYS[0], promoted, None).reason == "promoted"
    rolled_back = live(phase="aborted", stable="iris-v1", weight_bp=0)
    assert {strategy.decide(k, rolled_back, None).primary for k in KEYS} == {"iris-v1"}


def test_state_for_another_candidate_or_kind_is_ignored() -> None:
    """Live state for a different candidate (not reconciled yet) sends nobody there."""
    strategy = Canary(spec_with())
    assert share(strategy, live(candidate="other", weight_bp=10000)) == 0.0
    assert share(strategy, live(kind="bluegreen", weight_bp=10000)) == 0.0


def test_stale_stable_name_never_reaches_the_proxy() -> None:
    """A stored stable outside the spec falls back to the spec's backend."""
    strategy = Canary(spec_with())
    assert strategy.decide(1, live(phase="aborted", stable="gone"), None).primary == "iris-v1"
    promoted = live(phase="promoted", stable="gone")
    assert strategy.decide(1, promoted, None).primary == "iris-v2"


def test_weights_for_status_display() -> None:
    """weights() gives percent per backend in every phase."""
    strategy = Canary(spec_with())
    assert strategy.weights(None) == {"iris-v1": 100.0, "iris-v2": 0.0}
    assert strategy.weights(live(weight_bp=525)) == {"iris-v1": 94.75, "iris-v2": 5.25}
    promoted = live(phase="promoted", stable="iris-v2", weight_bp=10000)
    assert strategy.weights(promoted) == {"iris-v1": 0.0, "iris-v2": 100.0}
    assert strategy.weights(live(phase="aborted")) == {"iris-v1": 100.0, "iris-v2": 0.0}


@given(
    key=st.integers(min_value=0, max_value=2**64 - 1),
    low=st.integers(min_value=0, max_value=BASIS_POINTS),
    high=st.integers(min_value=0, max_value=BASIS_POINTS),
)
def test_raising_the_weight_only_moves_users_into_the_candidate(
    key: int, low: int, high: int
) -> None:
    """Sticky: a user on the candidate at a weight stays there at any higher weight."""
    low, high = min(low, high), max(low, high)
    strategy = Canary(spec_with())
    before = strategy.decide(key, live(weight_bp=low), None).primary
    after = strategy.decide(key, live(weight_bp=high), None).primary
    assert before == "iris-v1" or after == "iris-v2"


def test_ramp_start_must_be_below_max() -> None:
    """A ramp whose start is 0 or not below max is refused at ramp.start."""
    _, errors = parse("stable: iris-v1\ncandidate: iris-v2\nramp: {start: 60, max: 50}")
    assert errors == [f"{PATH}.ramp.start: must be above 0 and below max (50), got 60"]
    _, errors = parse("stable: iris-v1\ncandidate: iris-v2\nramp: {start: 0}")
    assert errors == [f"{PATH}.ramp.start: must be above 0 and below max (100), got 0"]
