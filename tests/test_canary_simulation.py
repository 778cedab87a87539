"""Whole rollouts on a simulated clock: traffic by weight, errors, latency, verdicts.

Each tick (one analysis interval) draws Poisson traffic, splits it by the
strategy's current weights, draws errors and latencies per arm, adds them to
the current step's window (reset when a step opens a new window), asks the
gates for verdicts and feeds them to the state machine. No I/O, seeded RNGs.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from router.control.canary_machine import Event, Observation, initial, step
from router.core.analysis import AnalysisSpec, evaluate
from router.core.gates import ErrorRateGate, LatencyGate, Sample
from router.core.rollout import Rollout
from router.core.stats import LATENCY_BOUNDS
from strategies.canary import Canary, CanarySpec, StepSpec

BOUNDS = np.asarray(LATENCY_BOUNDS)
INTERVAL = 2.0  # seconds per tick: the analysis interval
GATES = AnalysisSpec(INTERVAL, (ErrorRateGate(), LatencyGate()))
SPEC = CanarySpec(
    "v1",
    "v2",
    (StepSpec(500, 60.0, 200), StepSpec(2500, 60.0, 200), StepSpec(5000, 60.0), StepSpec(10000)),
    GATES,
)


@dataclass(frozen=True)
class World:
    rps: float
    stable_errors: float = 0.005
    candidate_errors: float = 0.005
    median: float = 0.04  # seconds, both arms (lognormal, sigma 0.5)
    candidate_extra: float = 0.0  # seconds added to every candidate request


@dataclass
class Arm:
    requests: int = 0
    errors: int = 0
    hist: np.ndarray = field(default_factory=lambda: np.zeros(len(BOUNDS) + 1, np.int64))

    def add(
        self, rng: np.random.Generator, n: int, error_rate: float, extra: float, median: float
    ) -> int:
        errors = int(rng.binomial(n, error_rate))
        latencies = rng.lognormal(np.log(median), 0.5, n) + extra
        self.hist += np.bincount(np.searchsorted(BOUNDS, latencies), minlength=len(BOUNDS) + 1)
        self.requests, self.errors = self.requests + n, self.errors + errors
        return errors

    def sample(self) -> Sample:
        return Sample(self.requests, self.errors, tuple(int(c) for c in self.hist))


@dataclass
class Run:
    rollout: Rollout
    events: list[Event]
    seconds: float
    candidate_failures: int  # failed candidate requests served, all steps together


def simulate(world: World, *, seed: int, max_seconds: float, spec: CanarySpec = SPEC) -> Run:
    rng, strategy = np.random.default_rng(seed), Canary(spec)
    r, now, events, failures = initial("sim", spec, 0.0), 0.0, [], 0
    cand, base, window = Arm(), Arm(), r.step_started_at
    while now < max_seconds and r.phase not in ("promoted", "aborted"):
        now += INTERVAL
        n = int(rng.poisson(world.rps * INTERVAL))
        n_cand = int(rng.binomial(n, strategy.weights(r)["v2"] / 100))
        failures += cand.add(
            rng, n_cand, world.candidate_errors, world.candidate_extra, world.median
        )
        base.add(rng, n - n_cand, world.stable_errors, 0.0, world.median)
        gates = tuple(evaluate(spec.analysis, cand.sample(), base.sample(), {}))
        r, new = step(r, spec, Observation(gates, cand.requests, base.requests), now)
        events += new
        if r.step_started_at != window:  # a new step: a new window
            cand, base, window = Arm(), Arm(), r.step_started_at
    return Run(r, events, now, failures)


def test_fully_broken_candidate_aborts_within_twenty_failures_at_200_rps() -> None:
    """100 % errors at 5 % weight and 200 req/s: aborted after <= 20 failed requests."""
    run = simulate(World(200, candidate_errors=1.0), seed=1, max_seconds=600)
    print(f"200 req/s: aborted after {run.candidate_failures} failed candidate requests")
    assert run.rollout.phase == "aborted"
    assert run.rollout.reason.startswith("aborted: error_rate gate failed: candidate")
    assert run.candidate_failures <= 20


def test_fully_broken_candidate_aborts_within_twenty_failures_at_20_rps() -> None:
    """The same at 20 req/s: the test counts requests, not seconds."""
    run = simulate(World(20, candidate_errors=1.0), seed=2, max_seconds=600)
    print(f"20 req/s: aborted after {run.candidate_failures} failed candidate requests")
    assert run.rollout.phase == "aborted"
    assert run.candidate_failures <= 20


def test_five_percent_errors_against_half_a_percent_aborts() -> None:
    """5 % vs 0.5 % errors aborts on error_rate before any promotion."""
    run = simulate(World(200, candidate_errors=0.05), seed=3, max_seconds=3600)
    print(f"5 % vs 0.5 %: {run.rollout.reason} after {run.seconds:g}s")
    assert run.rollout.phase == "aborted"
    assert "error_rate gate failed" in run.rollout.reason
    assert run.rollout.step == 0


def test_three_hundred_ms_slower_candidate_aborts_on_latency() -> None:
    """+300 ms on every candidate request aborts on the latency gate."""
    run = simulate(World(200, candidate_extra=0.3), seed=4, max_seconds=3600)
    print(f"+300 ms: {run.rollout.reason} after {run.seconds:g}s")
    assert run.rollout.phase == "aborted"
    assert run.rollout.reason.startswith("aborted: latency gate failed: p50 candidate")


def test_healthy_candidate_is_promoted() -> None:
    """A candidate as good as stable walks every step and is promoted."""
    run = simulate(
        World(200, stable_errors=0.002, candidate_errors=0.001), seed=5, max_seconds=7200
    )
    print(f"healthy: promoted after {run.seconds:g}s, events {[e.kind for e in run.events]}")
    assert run.rollout.phase == "promoted"
    assert [e.kind for e in run.events if e.kind != "waiting"] == ["advance", "advance", "promote"]
    assert (run.rollout.stable, run.rollout.previous_stable) == ("v2", "v1")


def test_a_a_rollouts_rarely_abort() -> None:
    """100 A/A rollouts (0.5 % errors and the same latency in both): <= 1 false abort."""
    runs = [simulate(World(200), seed=100 + i, max_seconds=3600) for i in range(100)]
    outcomes = [run.rollout.phase for run in runs]
    print(f"A/A: promoted after {np.median([run.seconds for run in runs]):g}s (median)")
    aborts = outcomes.count("aborted")
    print(f"A/A: {aborts} false aborts, {outcomes.count('promoted')} promoted of 100")
    assert aborts <= 1
    assert outcomes.count("promoted") >= 90  # the test must also let good candidates through


def test_one_request_a_minute_waits_for_data() -> None:
    """At one request a minute nothing advances or aborts; the reason says waiting, with counts."""
    run = simulate(World(1 / 60, 0.01, 0.01), seed=6, max_seconds=4 * 3600)
    r = run.rollout
    print(f"1 req/min after 4 h: {r.reason}")
    assert (r.phase, r.step, r.weight_bp) == ("waiting_for_data", 0, 500)
    assert r.reason.startswith("step 1/4 at 5 %: waiting for data — candidate ")
    assert "/200 requests" in r.reason
    assert [e.kind for e in run.events] == ["waiting"]
