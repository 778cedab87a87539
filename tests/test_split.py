"""The split strategy: parsing its block, bucket ownership, stickiness."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from router.core.confkit import Node
from router.dataplane.hashing import key_of
from strategies.split import SPLIT, Split, SplitSpec

KNOWN = frozenset({"a", "b", "c"})
ROOT = Path(__file__).resolve().parent.parent


def parse_block(block: object) -> tuple[SplitSpec | None, list[str]]:
    errors: list[str] = []
    spec = SPLIT.parse(Node(block, "routes[0].strategy.split", errors), KNOWN)
    return (spec if isinstance(spec, SplitSpec) else None), errors


def build(**weights: float) -> Split:
    spec, errors = parse_block({"weights": weights})
    assert errors == []
    assert spec is not None
    return Split(spec)


def test_parse_weights_to_basis_points_sorted_by_name() -> None:
    """Weights with two decimals become basis points, laid out in name order."""
    spec, errors = parse_block({"weights": {"b": 9.75, "a": 90.25}, "override_header": "X-Be"})
    assert errors == []
    assert spec == SplitSpec((("a", 9025), ("b", 975)), "x-be")


def test_parse_weight_out_of_range_names_path_and_value() -> None:
    """A weight above 100 is reported with its exact path and the value written."""
    _, errors = parse_block({"weights": {"a": 140, "b": 10}})
    assert errors == ["routes[0].strategy.split.weights.a: must be 0..100, got 140"]


def test_parse_sum_must_be_100() -> None:
    """Weights that do not add up to 100 are refused with the sum."""
    _, errors = parse_block({"weights": {"a": 50, "b": 40.5}})
    assert errors == ["routes[0].strategy.split.weights: must sum to 100, got 90.5"]


def test_parse_refuses_unknown_backend_three_decimals_and_unknown_key() -> None:
    """Undefined backends, sub-basis-point weights and stray keys are all errors."""
    _, errors = parse_block({"weights": {"zz": 50, "a": 49.995}, "extra": 1})
    assert errors == [
        "routes[0].strategy.split.weights.zz: is not a backend defined under backends, got 'zz'",
        "routes[0].strategy.split.weights.a: must have at most two decimals (0.01 % steps)"
        ", got 49.995",
        "routes[0].strategy.split.extra: unknown key",
    ]


def test_parse_needs_at_least_one_backend() -> None:
    """An empty or missing weights mapping is an error."""
    assert parse_block({"weights": {}})[1] == [
        "routes[0].strategy.split.weights: must name at least one backend"
    ]
    assert parse_block({})[1] == ["routes[0].strategy.split.weights: is required"]


weight_lists = st.lists(st.integers(0, 10_000), min_size=1, max_size=3).filter(
    lambda ws: sum(ws) <= 10_000
)


@given(weight_lists)
def test_any_two_decimal_weights_summing_to_100_parse_exactly(raw: list[int]) -> None:
    """Percentages with two decimals (floats like 0.29) become exact basis points."""
    bps = [*raw[:-1], 10_000 - sum(raw[:-1])]
    names = ["a", "b", "c"][: len(bps)]
    spec, errors = parse_block({"weights": {n: bp / 100 for n, bp in zip(names, bps, strict=True)}})
    assert errors == []
    assert spec == SplitSpec(tuple(zip(names, bps, strict=True)))


@given(weight_lists, st.integers(0, 9_999))
def test_every_bucket_lands_on_a_backend_with_weight(raw: list[int], bucket: int) -> None:
    """Whatever the weights, every bucket maps to a backend whose weight is above 0."""
    bps = [*raw[:-1], 10_000 - sum(raw[:-1])]  # last one takes the rest: sum is 10 000
    names = ["a", "b", "c"][: len(bps)]
    split = Split(SplitSpec(tuple(zip(names, bps, strict=True))))
    decision = split.decide(bucket, None, None)
    assert dict(zip(names, bps, strict=True))[decision.primary] > 0
    assert decision.reason == "split"


def test_shares_over_sequential_ids_match_weights() -> None:
    """10,000 sequential user ids at 90/10 give each backend its share within ±1.5 points."""
    split = build(a=90, b=10)
    hits = sum(split.decide(key_of(f"user-{i}".encode()), None, None).primary == "b"
               for i in range(1, 10_001))  # fmt: skip
    assert abs(hits / 10_000 - 0.10) <= 0.015


@settings(max_examples=200)
@given(st.integers(0, 10_000), st.integers(0, 10_000), st.integers(0, 2**64 - 1))
def test_raising_a_weight_only_moves_users_into_that_backend(lo: int, hi: int, key: int) -> None:
    """With two backends, raising b's weight never moves a user from b back to a."""
    lo, hi = min(lo, hi), max(lo, hi)
    before = Split(SplitSpec((("a", 10_000 - lo), ("b", lo)))).decide(key, None, None)
    after = Split(SplitSpec((("a", 10_000 - hi), ("b", hi)))).decide(key, None, None)
    assert not (before.primary == "b" and after.primary == "a")


def test_override_header_forces_a_backend_of_the_split_and_ignores_others() -> None:
    """The override names any backend of the split, even at weight 0; other values are ignored."""
    spec, _ = parse_block({"weights": {"a": 100, "b": 0}, "override_header": "X-Backend"})
    assert spec is not None
    split = SPLIT.build(spec)
    assert split.override_header == b"x-backend"
    assert split.decide(7, None, b"b").primary == "b"
    assert split.decide(7, None, b"b").reason == "override"
    assert split.decide(7, None, b"c").primary == "a"  # c exists but is not in this split
    assert split.decide(7, None, b"nope") == split.decide(7, None, None)


def test_weights_for_status_are_percentages() -> None:
    """weights() reports each backend's configured share in percent, zero included."""
    assert build(a=99.99, b=0.01, c=0).weights(None) == {"a": 99.99, "b": 0.01, "c": 0.0}


def test_reordering_weights_in_yaml_moves_nobody() -> None:
    """Writing the same weights in another key order gives every key the same backend."""
    one, two = build(a=30, b=30, c=40), build(c=40, b=30, a=30)
    keys = [key_of(f"u{i}".encode()) for i in range(2_000)]
    assert [one.decide(k, None, None) for k in keys] == [two.decide(k, None, None) for k in keys]


_CHILD = """
import sys
from router.dataplane.hashing import key_of
from strategies.split import Split, SplitSpec
split = Split(SplitSpec((("a", 3333), ("b", 3333), ("c", 3334))))
print(",".join(split.decide(key_of(f"user-{i}".encode()), None, None).primary
               for i in range(500)))
"""


def test_same_key_same_backend_in_separate_processes() -> None:
    """Two fresh Python processes (different hash seeds) send every user to the same backend."""
    outputs = [
        subprocess.run(
            [sys.executable, "-c", _CHILD],
            cwd=ROOT,
            env={"PYTHONHASHSEED": seed, "PATH": ""},
            capture_output=True,
            text=True,
            check=True,
            timeout=30,
        ).stdout
        for seed in ("1", "2")
    ]
    here = Split(SplitSpec((("a", 3333), ("b", 3333), ("c", 3334))))
    expected = ",".join(
        here.decide(key_of(f"user-{i}".encode()), None, None).primary for i in range(500)
    )
    assert outputs[0].strip() == outputs[1].strip() == expected
    assert {"a", "b", "c"} <= set(expected.split(","))
