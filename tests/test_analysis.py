"""Gates: the always-valid error-rate test and the bucket-aware latency test."""

from __future__ import annotations

from collections.abc import Iterator, Mapping

import numpy as np
import pytest

from router.core.analysis import GATES, AnalysisSpec, evaluate, parse_analysis
from router.core.confkit import Node
from router.core.gates import ErrorRateGate, Gate, GateResult, LatencyGate, Sample
from router.core.stats import LATENCY_BOUNDS, excludes, quantile_bounds, rate_bounds

NO_EXTRA: Mapping[str, object] = {}


def hist_at(bucket: int, n: int) -> tuple[int, ...]:
    counts = [0] * (len(LATENCY_BOUNDS) + 1)
    counts[bucket] = n
    return tuple(counts)


def hist_of(seconds: np.ndarray) -> tuple[int, ...]:
    index = np.searchsorted(np.asarray(LATENCY_BOUNDS), seconds)
    return tuple(int(c) for c in np.bincount(index, minlength=len(LATENCY_BOUNDS) + 1))


# -- the confidence sequence ---------------------------------------------------------
def test_latency_bounds_are_log_spaced_from_half_a_millisecond_to_a_minute() -> None:
    """LATENCY_BOUNDS runs 0.5 ms .. 60 s with neighbours about 1.3x apart."""
    ratios = np.diff(np.log(LATENCY_BOUNDS))
    assert LATENCY_BOUNDS[0] == 0.0005
    assert LATENCY_BOUNDS[-1] == 60.0
    assert np.all(np.exp(ratios) > 1.25)
    assert np.all(np.exp(ratios) < 1.36)


def test_rate_bounds_hold_the_observed_rate_and_narrow_with_data() -> None:
    """The sequence contains k/n, spans [0, 1] with no data, and shrinks as n grows."""
    assert rate_bounds(0, 0, 0.01) == (0.0, 1.0)
    widths = []
    for n in (10, 100, 1000, 10000):
        lo, hi = rate_bounds(n // 10, n, 0.01)
        assert lo < 0.1 < hi
        widths.append(hi - lo)
    assert widths == sorted(widths, reverse=True)
    assert rate_bounds(0, 50, 0.01)[0] == 0.0
    assert rate_bounds(50, 50, 0.01)[1] == 1.0


def test_excludes_agrees_with_bounds() -> None:
    """A rate just outside the bounds is excluded, one just inside is not."""
    lo, hi = rate_bounds(30, 1000, 0.01)
    assert excludes(30, 1000, lo * 0.99, 0.01)
    assert excludes(30, 1000, hi * 1.01, 0.01)
    assert not excludes(30, 1000, lo * 1.01, 0.01)
    assert not excludes(30, 1000, hi * 0.99, 0.01)


def test_confidence_sequence_covers_the_true_rate_at_every_look() -> None:
    """Over 400 streams of 3000 requests each looked at every 10, the true 2 % rate
    is ever left out in at most alpha (5 %) of streams: looking often costs nothing."""
    rng = np.random.default_rng(7)
    misses = 0
    for _ in range(400):
        errors = np.cumsum(rng.random(3000) < 0.02)
        misses += any(excludes(int(errors[n - 1]), n, 0.02, 0.05) for n in range(10, 3001, 10))
    assert misses <= 20, misses


# -- error rate ---------------------------------------------------------------------
def test_broken_candidate_fails_after_a_handful_of_errors() -> None:
    """Every candidate request failing at 5 % weight fails the gate within 10 requests."""
    gate = ErrorRateGate()
    first = next(
        n
        for n in range(1, 50)
        if gate.judge(Sample(n, n), Sample(19 * n, 0), NO_EXTRA).verdict == "fail"
    )
    assert first <= 10
    result = gate.judge(Sample(first, first), Sample(19 * first, 0), NO_EXTRA)
    assert f"candidate {first}/{first} errors (100 %)" in result.detail


def test_a_single_error_is_never_enough() -> None:
    """1 error in 2 candidate requests waits: no failure for lack of data."""
    result = ErrorRateGate().judge(Sample(2, 1), Sample(38, 0), NO_EXTRA)
    assert result.verdict == "wait"
    assert "waiting for 50 candidate requests, have 2" in result.detail


def test_clearly_worse_candidate_fails_and_equal_one_passes_with_enough_data() -> None:
    """5 % vs 0.5 % fails; 0.5 % vs 0.5 % passes once there is enough data."""
    gate = ErrorRateGate()
    assert gate.judge(Sample(2000, 100), Sample(38000, 190), NO_EXTRA).verdict == "fail"
    assert gate.judge(Sample(4000, 20), Sample(76000, 380), NO_EXTRA).verdict == "pass"
    assert gate.judge(Sample(300, 2), Sample(5700, 28), NO_EXTRA).verdict == "wait"


def test_pass_needs_min_requests() -> None:
    """Below min_requests the gate waits even when the bounds would pass."""
    gate = ErrorRateGate(max_increase=0.5, min_requests=500)
    assert gate.judge(Sample(400, 0), Sample(8000, 0), NO_EXTRA).verdict == "wait"
    assert gate.judge(Sample(500, 0), Sample(8000, 0), NO_EXTRA).verdict == "pass"


def test_absolute_ceiling_fails_even_when_stable_is_as_bad() -> None:
    """`max` fails a candidate above it even if the stable errs as much."""
    gate = ErrorRateGate(max_increase=0.5, max=0.05)
    result = gate.judge(Sample(2000, 400), Sample(2000, 400), NO_EXTRA)
    assert result.verdict == "fail"
    assert "max 5 %" in result.detail
    assert (
        ErrorRateGate(max_increase=0.5)
        .judge(Sample(2000, 400), Sample(2000, 400), NO_EXTRA)
        .verdict
        == "pass"
    )


def test_dry_run_is_carried_on_the_result() -> None:
    """A dry-run gate still judges; its result says it does not act."""
    result = ErrorRateGate(dry_run=True).judge(Sample(20, 20), Sample(400, 0), NO_EXTRA)
    assert result.verdict == "fail"
    assert result.dry_run
    assert not result.acts


# -- latency ----------------------------------------------------------------------------
def test_same_latency_passes() -> None:
    """Identical distributions pass once each arm has min_requests."""
    rng = np.random.default_rng(1)
    cand = hist_of(rng.lognormal(np.log(0.04), 0.5, 500))
    base = hist_of(rng.lognormal(np.log(0.04), 0.5, 9500))
    result = LatencyGate().judge(Sample(500, 0, cand), Sample(9500, 0, base), NO_EXTRA)
    assert result.verdict == "pass", result.detail


def test_slow_candidate_fails() -> None:
    """+300 ms on a 40 ms service fails the latency gate, naming the quantiles."""
    rng = np.random.default_rng(2)
    cand = hist_of(rng.lognormal(np.log(0.04), 0.5, 200) + 0.3)
    base = hist_of(rng.lognormal(np.log(0.04), 0.5, 3800))
    result = LatencyGate().judge(Sample(200, 0, cand), Sample(3800, 0, base), NO_EXTRA)
    assert result.verdict == "fail"
    assert "p50 candidate" in result.detail
    assert result.value > 1.5


def test_one_bucket_apart_never_fails_on_granularity() -> None:
    """Two buckets apart (edges 1.7x) still does not fail a 1.5x ratio: edges are compared
    candidate-low vs stable-high, so bucket width cannot cause a false failure."""
    gate = LatencyGate()
    result = gate.judge(
        Sample(5000, 0, hist_at(22, 5000)), Sample(5000, 0, hist_at(20, 5000)), NO_EXTRA
    )
    assert result.verdict != "fail", result.detail
    far = gate.judge(
        Sample(5000, 0, hist_at(24, 5000)), Sample(5000, 0, hist_at(20, 5000)), NO_EXTRA
    )
    assert far.verdict == "fail"


def test_latency_waits_below_min_requests() -> None:
    """With fewer than min_requests timed requests in an arm the gate waits."""
    result = LatencyGate().judge(
        Sample(99, 0, hist_at(30, 99)), Sample(5000, 0, hist_at(10, 5000)), NO_EXTRA
    )
    assert result.verdict == "wait"
    assert "have candidate 99" in result.detail
    assert LatencyGate().judge(Sample(0), Sample(0), NO_EXTRA).verdict == "wait"


def test_max_p99_ceiling() -> None:
    """A candidate whose p99 is surely over max_p99 fails even when stable is as slow."""
    slow = hist_at(40, 1000)  # ~18 s
    gate = LatencyGate(max_p99=2.0)
    assert gate.judge(Sample(1000, 0, slow), Sample(1000, 0, slow), NO_EXTRA).verdict == "fail"
    assert (
        LatencyGate().judge(Sample(1000, 0, slow), Sample(1000, 0, slow), NO_EXTRA).verdict
        == "pass"
    )


def test_quantile_bounds_bracket_the_true_quantile() -> None:
    """The always-valid quantile bounds enclose the sample's median bucket."""
    rng = np.random.default_rng(3)
    hist = hist_of(rng.lognormal(np.log(0.1), 0.3, 2000))
    lo, hi = quantile_bounds(hist, 0.5, 0.01)
    assert lo < 0.1 < hi
    assert hi / lo < 2.5


# -- the gate set ------------------------------------------------------------------------
def test_parse_analysis_reads_gates_in_order() -> None:
    """Each word under analysis becomes one gate; interval is read as a duration."""
    errors: list[str] = []
    raw = {"interval": "500ms", "latency": {"p99_ratio": 2}, "error_rate": {"dry_run": True}}
    spec = parse_analysis(Node(raw, "a", errors))
    assert errors == []
    assert spec == AnalysisSpec(0.5, (LatencyGate(p99_ratio=2.0), ErrorRateGate(dry_run=True)))


@pytest.fixture
def toy_gate() -> Iterator[None]:
    """Registers a toy `toy` gate that reads its figure from `extra`."""

    class Toy:
        name = "toy"

        def judge(
            self, candidate: Sample, baseline: Sample, extra: Mapping[str, object]
        ) -> GateResult:
            share = extra.get("toy")
            ok = isinstance(share, float) and share >= 0.9
            return GateResult("toy", "pass" if ok else "fail", 0.0, 0.9, 0, 0, False, "")

    def factory(node: Node) -> Gate:
        node.done()
        return Toy()

    GATES["toy"] = factory
    yield
    del GATES["toy"]


@pytest.mark.usefixtures("toy_gate")
def test_the_gate_set_is_open() -> None:
    """A gate added to GATES is parsed from config and judged with `extra`."""
    errors: list[str] = []
    spec = parse_analysis(Node({"toy": {}, "error_rate": {}}, "a", errors))
    assert errors == []
    verdicts = [r.verdict for r in evaluate(spec, Sample(10), Sample(10), {"toy": 0.5})]
    assert verdicts == ["fail", "wait"]


def test_a_a_error_gate_rarely_fails_under_repeated_looks() -> None:
    """200 A/A windows at 1 % errors, judged every 50 requests up to 4000: <= 1 % fail."""
    rng = np.random.default_rng(11)
    gate, fails = ErrorRateGate(), 0
    for _ in range(200):
        c = np.cumsum(rng.random(4000) < 0.01)
        s = np.cumsum(rng.binomial(19, 0.01, 4000))
        looks = (
            gate.judge(Sample(n, int(c[n - 1])), Sample(19 * n, int(s[n - 1])), NO_EXTRA)
            for n in range(50, 4001, 50)
        )
        fails += any(r.verdict == "fail" for r in looks)
    print(f"A/A error-rate windows failed: {fails}/200")
    assert fails <= 2


def test_foreign_histogram_shape_waits_instead_of_judging() -> None:
    """Histograms over other bounds are never misread: the latency gate waits."""
    result = LatencyGate().judge(Sample(500, 0, (500,)), Sample(500, 0, (500,)), NO_EXTRA)
    assert result.verdict == "wait"
    assert "buckets" in result.detail
