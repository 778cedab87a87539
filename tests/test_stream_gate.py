"""The ttft gate: the latency gate's rules on first-token histograms (simulated counts)."""

from __future__ import annotations

import pytest

from router.core.analysis import GATES
from router.core.confkit import ConfigError, Node
from router.core.gates import Sample
from router.core.gates_ttft import TtftGate, parse_ttft
from router.core.stats import LATENCY_BOUNDS
from router.dataplane.metrics import bucket_of

NONE = Sample()


def hist(seconds: float, n: int, spread: float = 0.0) -> list[int]:
    """n first tokens around `seconds` (±spread, evenly)."""
    counts = [0] * (len(LATENCY_BOUNDS) + 1)
    for i in range(n):
        offset = spread * (2 * i / max(n - 1, 1) - 1)
        counts[bucket_of(seconds + offset)] += 1
    return counts


def judge(gate: TtftGate, cand: list[int], base: list[int]) -> tuple[str, str]:
    r = gate.judge(NONE, NONE, {"ttft": {"candidate": cand, "stable": base}})
    return r.verdict, r.detail


def test_waits_below_the_minimum_sample_on_either_arm() -> None:
    gate = TtftGate(min_requests=100)
    verdict, detail = judge(gate, hist(0.6, 99), hist(0.1, 500))
    assert verdict == "wait"
    assert detail == (
        "waiting for 100 streams with a first token per arm, have candidate 99, stable 500"
    )
    assert judge(gate, [], [])[0] == "wait"  # no histograms at all


def test_a_candidate_500ms_late_fails_and_one_within_10_percent_passes() -> None:
    gate = TtftGate(p95_ratio=1.3, min_requests=100)
    base = hist(0.1, 400, 0.01)
    verdict, detail = judge(gate, hist(0.6, 400, 0.01), base)
    assert verdict == "fail", detail
    assert detail.startswith("time to first token: p95 candidate ")
    assert judge(gate, hist(0.11, 400, 0.01), base)[0] == "pass"


def test_p95_needs_more_streams_than_p50_to_be_sure() -> None:
    """At 100 streams a p95 cannot yet be bounded from above: the gate waits."""
    late, base = hist(0.6, 100, 0.01), hist(0.1, 100, 0.01)
    assert judge(TtftGate(p95_ratio=1.3, min_requests=100), late, base)[0] == "wait"
    assert judge(TtftGate(p50_ratio=1.3, p95_ratio=None, min_requests=100), late, base)[0] == "fail"


def test_max_p95_is_an_absolute_ceiling() -> None:
    gate = TtftGate(p95_ratio=None, max_p95=0.3, min_requests=50)
    assert judge(gate, hist(0.6, 400), hist(0.6, 400))[0] == "fail"
    assert judge(gate, hist(0.1, 400), hist(0.6, 400))[0] == "pass"


def test_config() -> None:
    errors: list[str] = []
    gate = parse_ttft(Node({"p95_ratio": 1.3, "min_requests": 100, "dry_run": True}, "g", errors))
    assert errors == []
    assert gate == TtftGate(p95_ratio=1.3, min_requests=100, dry_run=True)
    assert parse_ttft(Node({"p50_ratio": 2}, "g", errors)) == TtftGate(p50_ratio=2, p95_ratio=None)
    assert parse_ttft(Node({}, "g", errors)) == TtftGate()  # p95 within 1.5x by default
    parse_ttft(Node({"p95_ratio": 0.5, "p75_ratio": 2}, "g", errors))
    assert errors == [
        "g.p95_ratio: must be a number in 1..1000, got 0.5",
        "g.p75_ratio: unknown key",
    ]
    assert "ttft" in GATES


def test_a_canary_lists_the_gate_beside_latency() -> None:
    from router.config.reader import parse

    text = (
        "backends:\n  a: {url: http://127.0.0.1:1}\n  b: {url: http://127.0.0.1:2}\n"
        "routes:\n  - name: chat\n    match: {path_prefix: /v1}\n    protocol: openai\n"
        "    strategy:\n      canary:\n        stable: a\n        candidate: b\n"
        "        steps: [{weight: 10}, {weight: 100}]\n"
        "        analysis: {latency: {}, ttft: {p95_ratio: 1.3, min_requests: 100}}\n"
    )
    spec = parse(text).routes[0].strategy
    assert [g.name for g in spec.analysis.gates] == ["latency", "ttft"]  # type: ignore[attr-defined]
    with pytest.raises(ConfigError) as info:
        parse(text.replace("min_requests: 100", "min_requests: 0"))
    assert info.value.errors == [
        "routes[0].strategy.canary.analysis.ttft.min_requests: must be an integer in "
        "1..1000000000, got 0"
    ]
