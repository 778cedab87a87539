"""The canary's `agreement` gate: the verdict, its config, the mirrors that feed it."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from examples.model_server import ModelOptions
from router.config.reader import parse as parse_config
from router.control.base import Writer
from router.control.base import window_id as window
from router.control.canary import CanaryController, spec_of
from router.core.analysis import parse_analysis
from router.core.compare import Answer, compare
from router.core.compare_config import parse_compare
from router.core.confkit import Node
from router.core.gates import AgreementGate, Sample
from router.core.rollout import BASIS_POINTS, Rollout
from router.core.stats import rate_bounds
from router.dataplane.hashing import key_of
from router.dataplane.metrics import Metrics
from router.dataplane.routing import build_table
from router.runtime import Runtime
from router.shadow.figures import Tally, compare_id
from router.shadow.judging import judging
from router.shadow.lanes import RouteFigures
from router.shadow.stored import agreement_counts, read_agreement, window_counter
from router.state.live import LiveState
from router.state.memory import MemoryStore
from strategies.canary import CANARY, Canary, CanarySpec
from tests.test_mirror import model, models, post_many, rig

NONE = Sample()
KNOWN = frozenset({"v1", "v2"})
PATH = "routes[0].strategy.canary"
BASE = "stable: v1\ncandidate: v2\nsteps: [{weight: 20, pause: 1m}, {weight: 100}]\n"


def judged(gate: AgreementGate, agree: int, n: int) -> Any:
    extra: Mapping[str, object] = {"agreement": {gate.field: (agree, n)}}
    return gate.judge(NONE, NONE, extra)


# -- the verdict -----------------------------------------------------------------------
def test_waits_below_the_minimum_sample_even_when_clearly_bad() -> None:
    """Below min_requests the gate waits, whatever the rate; the detail gives the counts."""
    result = judged(AgreementGate(min_requests=200), 10, 150)
    assert result.verdict == "wait"
    assert result.detail.startswith("$.label agreement 6.67 % (10/150 items, 150 requests)")
    assert "waiting for 200 compared items, have 150" in result.detail


def test_thirty_percent_disagreement_fails_and_full_agreement_passes() -> None:
    """70 % agreement fails a 95 % gate at 200 comparisons; 200/200 passes it."""
    gate = AgreementGate(min=0.95, min_requests=200)
    bad, good = judged(gate, 140, 200), judged(gate, 200, 200)
    assert (bad.verdict, bad.value, bad.threshold, bad.candidate_n) == ("fail", 0.7, 0.95, 200)
    assert "at most" in bad.detail
    assert (good.verdict, good.value) == ("pass", 1.0)


def test_close_to_the_threshold_waits_for_more_comparisons() -> None:
    """96 % of 300 cannot yet be told from 95 %: not a pass, not a fail."""
    result = judged(AgreementGate(min=0.95, min_requests=200), 288, 300)
    assert result.verdict == "wait"
    assert "could still be below 95 %" in result.detail


def test_no_comparisons_and_other_fields_wait() -> None:
    """No `agreement` input, or counts of another field only: wait with n = 0."""
    gate = AgreementGate(min_requests=1)
    assert gate.judge(NONE, NONE, {}).verdict == "wait"
    other = gate.judge(NONE, NONE, {"agreement": {"$.score": (100, 100)}})
    assert (other.verdict, other.candidate_n) == ("wait", 0)


@given(
    n=st.integers(1, 5000),
    share=st.floats(0, 1),
    floor=st.floats(0.5, 0.999),
    need=st.integers(1, 1000),
)
def test_verdict_matches_the_confidence_sequence(
    n: int, share: float, floor: float, need: int
) -> None:
    """pass iff lower >= min, fail iff upper < min, both only with min_requests."""
    agree = round(n * share)
    gate = AgreementGate(min=floor, min_requests=need)
    lo, hi = rate_bounds(agree, n, gate.alpha)
    verdict = judged(gate, agree, n).verdict
    assert (verdict == "pass") == (n >= need and lo >= floor)
    assert (verdict == "fail") == (n >= need and hi < floor)


# -- config ------------------------------------------------------------------------------
def parse_canary(text: str) -> tuple[CanarySpec, list[str]]:
    errors: list[str] = []
    spec = CANARY.parse(Node(yaml.safe_load(text), PATH, errors), KNOWN)
    assert isinstance(spec, CanarySpec)
    return spec, errors


def test_gate_block_is_read_with_defaults() -> None:
    """`agreement:` reads field, min, min_requests, mirror_percent, alpha and dry_run."""
    errors: list[str] = []
    raw = {"agreement": {"field": "$.label", "min": 0.9, "mirror_percent": 25, "dry_run": True}}
    spec = parse_analysis(Node(raw, "a", errors))
    assert errors == []
    assert spec.gates == (AgreementGate("$.label", 0.9, 200, 2500, 0.01, True),)


def test_gate_block_errors_name_their_path() -> None:
    """A missing field, a bad JSONPath and a rate above 1 are refused with their path."""
    _, errors = parse_canary(BASE + "analysis: {agreement: {min: 2}}\n")
    assert (
        f"{PATH}.analysis.agreement: needs exactly one of field (a JSON path) or output (a name)"
        in errors
    )
    assert f"{PATH}.analysis.agreement.min: must be a number in 0..1, got 2" in errors
    _, errors = parse_canary(BASE + "analysis: {agreement: {field: label}}\n")
    assert errors == [
        f"{PATH}.analysis.agreement.field: bad JSONPath: must start with '$', got 'label'"
    ]


def test_gate_fields_missing_from_compare_are_compared_as_labels() -> None:
    """A gate field not under `compare` is added as a label; listed ones keep their kind."""
    spec, errors = parse_canary(
        BASE + "compare: [{field: $.score, kind: number, abs: 0.1}]\n"
        "analysis: {agreement: {field: $.label}}\n"
        "shadow_first: {field: $.score, min_requests: 50}\n"
    )
    assert errors == []
    assert [(f.field, f.kind) for f in spec.compare] == [
        ("$.score", "number"),
        ("$.label", "label"),
    ]
    assert spec.agreement_fields == ("$.label", "$.score")
    assert spec.ramp_mirror_bp == BASIS_POINTS


def test_whole_answer_agreement_adds_no_field() -> None:
    """`field: $` judges whole answers: nothing is added to `compare`."""
    spec, errors = parse_canary(BASE + "analysis: {agreement: {field: $}}\n")
    assert (errors, spec.compare, spec.agreement_fields) == ([], (), ("$",))


# -- deciding: which requests are mirrored ---------------------------------------------------
KEYS = [key_of(f"user-{i}".encode()) for i in range(8000)]


def canary(text: str) -> Canary:
    spec, errors = parse_canary(BASE + text)
    assert errors == []
    return Canary(spec)


def live(weight_bp: int, phase: str = "progressing") -> Rollout:
    return Rollout(
        "iris", kind="canary", phase=phase, weight_bp=weight_bp, stable="v1", candidate="v2"
    )


def test_stable_answers_are_mirrored_to_the_candidate_at_the_gate_share() -> None:
    """mirror_percent 30: ~30 % of stable-served requests copy to v2; the candidate's none."""
    strategy = canary("analysis: {agreement: {field: $.label, mirror_percent: 30}}\n")
    decisions = [strategy.decide(k, live(2000), None) for k in KEYS]
    stable = [d for d in decisions if d.primary == "v1"]
    mirrored = sum(d.mirrors == ("v2",) for d in stable)
    assert all(d.mirrors == () for d in decisions if d.primary == "v2")
    assert 0.27 < mirrored / len(stable) < 0.33
    # the second hash does not follow the weight bucket: both halves of the stable
    # users (by `key % 10_000`) are mirrored alike
    low = [d for k, d in zip(KEYS, decisions, strict=True) if 2000 <= k % BASIS_POINTS < 6000]
    assert 0.25 < sum(d.mirrors == ("v2",) for d in low) / len(low) < 0.35


def test_without_an_agreement_gate_nothing_is_mirrored() -> None:
    """A canary with only metric gates sends no copies."""
    strategy = canary("")
    assert all(strategy.decide(k, live(2000), None).mirrors == () for k in KEYS[:500])


def test_decisions_are_built_once() -> None:
    """Mirrored requests of one kind get the very same Decision object."""
    strategy = canary("analysis: {agreement: {field: $.label}}\nshadow_first: {field: $.label}\n")
    waiting = [strategy.decide(k, live(0, "waiting"), None) for k in KEYS[:50]]
    ramp = [strategy.decide(k, live(2000), None) for k in KEYS[:50]]
    ramp = [d for d in ramp if d.primary == "v1"]
    assert all(d is waiting[0] for d in waiting)
    assert (waiting[0].primary, waiting[0].reason, waiting[0].mirrors) == (
        "v1",
        "shadow_first",
        ("v2",),
    )
    assert all(d is ramp[0] for d in ramp)
    assert (ramp[0].reason, ramp[0].mirrors) == ("stable", ("v2",))


@given(key=st.integers(0, 2**64 - 1), weight=st.integers(1, BASIS_POINTS - 1))
def test_a_candidate_answer_is_never_mirrored(key: int, weight: int) -> None:
    """Whatever the key and weight, only stable-served requests carry a mirror."""
    d = MIRRORING.decide(key, live(weight), None)
    assert d.mirrors == (() if d.primary == "v2" else ("v2",))


MIRRORING = Canary(parse_canary(BASE + "analysis: {agreement: {field: $.label}}\n")[0])


# -- counting: the gate's input -----------------------------------------------------------
def test_agreement_counts_read_the_comparison_layout() -> None:
    """(agree, n) per field and for whole answers, from a real comparison's counters."""
    fields = parse_compare([("c[0]", {"field": "$.label", "kind": "label"})], [])
    tally = Tally("cmp:v2")
    for shadow in (b'{"label": "a"}', b'{"label": "b"}', b'{"label": "a"}'):
        tally.add(compare(fields, Answer(200, b'{"label": "a"}', 0.01), Answer(200, shadow, 0.01)))
    counters = tally.drain()["cmp:v2"]
    assert agreement_counts(counters, ["$.label", "$", "$.x"]) == {
        "$.label": (2, 3, 3),
        "$": (2, 3, 3),
        "$.x": (0, 0, 0),
    }


def canary_route(extra: str) -> str:
    return (
        "  - name: iris\n    match: {path_prefix: /}\n    strategy:\n      canary:\n"
        "        stable: v1\n        candidate: v2\n"
        "        steps: [{weight: 20, pause: 1h}, {weight: 100}]\n" + extra
    )


async def test_mirrors_count_canary_comparisons_per_window() -> None:
    """Comparisons land in cmp:v2:<window>; the next window starts from zero."""
    wrong = ModelOptions(version="v1", constant_label="setosa")
    gate = "        shadow_first: {field: $.label, min_requests: 10}\n"
    async with (
        models(ModelOptions(version="v1"), wrong) as (p1, p2),
        rig({"v1": p1, "v2": p2}, canary_route(gate)) as r,
    ):
        first = live(0, "waiting").evolve(step_started_at=100.0)
        r.mirrors.runtime.live = {"iris": first}
        sent = await post_many(r.url + "/predict", 40)
        await r.settle()
        second = first.evolve(phase="progressing", weight_bp=2000, step_started_at=200.0)
        r.mirrors.runtime.live = {"iris": second}
        cid = judging(r.mirrors.runtime, "iris")[2]
        counts = [
            await read_agreement(r.mirrors.store, "iris", "v2", str(window(x)), ["$.label"], cid)
            for x in (first, second)
        ]
        total = await r.mirrors.store.read_counters("iris", [f"cmp:v2@{cid}"])
    setosa = sum(a["label"] == "setosa" for a in sent.answers)
    assert counts == [{"$.label": (setosa, 40, 40)}, {"$.label": (0, 0, 0)}]
    assert total[f"cmp:v2@{cid}"]["n"] == 40  # the route's overall figures are kept as well
    assert window_counter("v2", "1-100000", cid) == f"cmp:v2@{cid}:1-100000"


async def test_automation_agreement_figure() -> None:
    """Mirrors.agreement gives each mirrored backend's agreement; None before any copy."""
    async with model(ModelOptions(version="v1")) as p1:
        routes = (
            "  - name: iris\n    match: {path_prefix: /}\n    strategy:\n"
            "      shadow: {primary: v1, shadows: [v1b]}\n"
        )
        async with rig({"v1": p1, "v1b": p1}, routes) as r:
            before = await r.mirrors.agreement("iris")
            await post_many(r.url + "/predict", 10)
            await r.settle()
            after = await r.mirrors.agreement("iris")
    assert before is None
    assert after is not None
    assert (after["v1b"]["n"], after["v1b"]["agreement"]["k"]) == (10, 10)


@pytest.mark.parametrize("percent", [0, 130])
def test_shadow_first_percent_must_send_copies(percent: int) -> None:
    """shadow_first.percent 0 (no data, ever) and out-of-range values are refused."""
    _, errors = parse_canary(BASE + f"shadow_first: {{field: $.label, percent: {percent}}}\n")
    assert any(e.startswith(f"{PATH}.shadow_first.percent: must") for e in errors)


# -- the controller: counts of the current window reach the gate ----------------------------
async def test_controller_aborts_a_ramp_on_the_agreement_of_its_window() -> None:
    """Mid-ramp, 60/100 agreeing comparisons in the step's window abort on `agreement`;
    the same counts under an older window, or another compare config, are not looked at."""
    config = parse_config(
        "backends:\n  v1: {url: http://127.0.0.1:9}\n  v2: {url: http://127.0.0.1:9}\n"
        "routes:\n"
        + canary_route("        analysis: {agreement: {field: $.label, min_requests: 50}}\n")
    )
    runtime = Runtime(config=config, table=build_table(config))
    store = MemoryStore()
    live_state = LiveState(store, routes=lambda: ["iris"])
    writer = Writer(store, live_state, actor="controller@test")
    ctl = CanaryController(store, live_state, Metrics(), writer)
    route = runtime.table.by_name["iris"]
    await ctl.tick(route, 1000.0)
    started = await store.get_rollout("iris")
    assert started is not None
    assert started.phase == "progressing"
    bad = {"n": 100, "agree": 60, "f|$.label|n": 100, "f|$.label|agree": 60}
    cid = compare_id("json", spec_of(route).compare)
    await store.add_counters("iris", {window_counter("v2", "1-1", cid): bad}, 60.0)
    await ctl.tick(route, 1010.0)
    assert (await store.get_rollout("iris")) == started  # another window's counts: ignored
    await store.add_counters("iris", {window_counter("v2", str(window(started))): bad}, 60.0)
    await ctl.tick(route, 1015.0)
    assert (await store.get_rollout("iris")) == started  # another compare config's: ignored
    await store.add_counters("iris", {window_counter("v2", str(window(started)), cid): bad}, 60.0)
    await ctl.tick(route, 1020.0)
    aborted = await store.get_rollout("iris")
    assert aborted is not None
    assert (aborted.phase, aborted.weight_bp) == ("aborted", 0)
    assert aborted.reason.startswith("aborted: agreement gate failed: $.label agreement 60 %")


def test_window_counts_survive_a_failed_flush_and_past_windows_are_dropped() -> None:
    """A failed flush puts a window's counts back; a window that saw nothing since the
    last flush is forgotten (its hash lives on in the store)."""
    figures = RouteFigures()
    name = window_counter("v2", "1-1000")
    same = Answer(200, b'{"label": "a"}', 0.01)
    figures.window_tally(name).add(compare((), same, same))
    drained = figures.drain()
    assert drained[name]["agree"] == 1
    figures.restore(drained)  # the store was down
    assert figures.drain()[name]["n"] == 1
    assert figures.drain() == {}
    assert name not in figures.windows
