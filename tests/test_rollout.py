"""The pure canary state machine: steps, aborts, promotion, commands, reconcile."""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from router.control.canary_machine import (
    PHASES,
    Event,
    Observation,
    command,
    initial,
    reconcile,
    step,
)
from router.control.machine import InvalidCommand
from router.core.gates import GateResult, Verdict
from router.core.rollout import Rollout
from strategies.canary import CanarySpec, StepSpec

SPEC = CanarySpec(
    "iris-v1",
    "iris-v2",
    (StepSpec(500, 60.0, 100), StepSpec(2500, 60.0, 100), StepSpec(10000)),
)


def gate(verdict: Verdict, *, dry_run: bool = False, name: str = "error_rate") -> GateResult:
    detail = "candidate 12/40 errors (30 %) vs stable 1/800 errors (0.125 %)"
    return GateResult(name, verdict, 0.3, 0.01, 40, 800, dry_run, detail)


def obs(*verdicts: Verdict, n: int = 500) -> Observation:
    return Observation(tuple(gate(v) for v in verdicts), n, 19 * n)


def start() -> Rollout:
    return initial("iris", SPEC, 1000.0)


def test_initial_opens_step_zero_now() -> None:
    """A new rollout is progressing at the first step's weight, its window opening now."""
    r = start()
    assert (r.kind, r.phase, r.step, r.weight_bp, r.revision) == (
        "canary",
        "progressing",
        0,
        500,
        1,
    )
    assert (r.stable, r.candidate, r.step_started_at) == ("iris-v1", "iris-v2", 1000.0)
    assert r.reason == "step 1/3 at 5 %: started"


def test_failing_gate_aborts_with_its_figures() -> None:
    """A failing gate sets weight 0, phase aborted, and the reason names the gate and counts."""
    r, events = step(start(), SPEC, obs("fail"), 1001.0)
    assert (r.phase, r.weight_bp) == ("aborted", 0)
    assert r.reason == (
        "aborted: error_rate gate failed: "
        "candidate 12/40 errors (30 %) vs stable 1/800 errors (0.125 %)"
    )
    assert [e.kind for e in events] == ["abort"]
    assert events[0].figures["gate"] == "error_rate"
    assert events[0].entry()["event"] == "abort"


def test_dry_run_failure_is_reported_once_and_never_acts() -> None:
    """A dry-run gate's failure is one history event per window; the rollout goes on."""
    o = Observation((gate("fail", dry_run=True), gate("pass")), 50, 950)
    r, events = step(start(), SPEC, o, 1001.0)
    assert r.phase == "progressing"
    assert [e.kind for e in events] == ["dry_run_fail"]
    r, events = step(r, SPEC, o, 1002.0)
    assert events == []


def test_no_advance_before_the_pause() -> None:
    """Passing gates do not advance before the step's pause; the reason says time left."""
    r, events = step(start(), SPEC, obs("pass"), 1030.0)
    assert (r.step, r.phase, events) == (0, "progressing", [])
    assert "30s of the pause left" in r.reason


def test_advance_after_pause_with_passing_gates_and_requests() -> None:
    """Pause elapsed + min_requests + every gate passing opens the next step's window."""
    r, events = step(start(), SPEC, obs("pass"), 1060.0)
    assert (r.step, r.weight_bp, r.step_started_at) == (1, 2500, 1060.0)
    assert r.reason.startswith("step 2/3 at 25 %: started")
    assert [e.kind for e in events] == ["advance"]


def test_waiting_for_data_says_what_is_missing() -> None:
    """Pause elapsed with too few requests: waiting_for_data, with counts, one event."""
    r, events = step(start(), SPEC, obs("pass", n=37), 1070.0)
    assert r.phase == "waiting_for_data"
    assert r.reason == "step 1/3 at 5 %: waiting for data — candidate 37/100 requests"
    assert [e.kind for e in events] == ["waiting"]
    r, events = step(r, SPEC, obs("wait", n=120), 1080.0)
    assert r.phase == "waiting_for_data"
    assert events == []
    assert "candidate 120 requests; error_rate: candidate 12/40" in r.reason
    r, events = step(r, SPEC, obs("pass", n=150), 1090.0)
    assert (r.phase, r.step) == ("progressing", 1)


def test_last_window_passing_promotes() -> None:
    """Passing the last step below 100 % promotes: candidate becomes stable."""
    r, _ = step(start(), SPEC, obs("pass"), 1060.0)
    r, events = step(r, SPEC, obs("pass"), 1120.0)
    assert (r.phase, r.weight_bp, r.stable, r.previous_stable) == (
        "promoted",
        10000,
        "iris-v2",
        "iris-v1",
    )
    assert [e.kind for e in events] == ["promote"]
    assert step(r, SPEC, obs("fail"), 1200.0) == (r, [])


def test_paused_still_aborts_but_never_advances() -> None:
    """A pause stops the ramp, not the safety net."""
    r, _ = command(start(), SPEC, "pause", 1001.0)
    assert r.phase == "paused"
    held, _ = step(r, SPEC, obs("pass"), 5000.0)
    assert (held.phase, held.step) == ("paused", 0)
    aborted, _ = step(r, SPEC, obs("fail"), 5000.0)
    assert aborted.phase == "aborted"
    resumed, _ = command(held, SPEC, "resume", 5001.0)
    assert step(resumed, SPEC, obs("pass"), 5002.0)[0].step == 1


def test_promote_advances_one_step_and_full_jumps() -> None:
    """`promote` moves one step; `promote --full` promotes at once."""
    r, _events = command(start(), SPEC, "promote", 1001.0)
    assert (r.step, r.weight_bp, r.updated_by) == (1, 2500, "routerctl")
    r, _ = command(r, SPEC, "promote", 1002.0)
    assert r.phase == "promoted"
    full, _ = command(start(), SPEC, "promote", 1001.0, full=True)
    assert (full.phase, full.stable) == ("promoted", "iris-v2")


def test_rollback_during_ramp_aborts_and_after_promotion_restores() -> None:
    """Rollback mid-ramp is an abort; after promotion it restores the previous stable."""
    r, events = command(start(), SPEC, "rollback", 1001.0)
    assert (r.phase, r.weight_bp, r.stable) == ("aborted", 0, "iris-v1")
    promoted, _ = command(start(), SPEC, "promote", 1001.0, full=True)
    back, events = command(promoted, SPEC, "rollback", 1002.0)
    assert (back.phase, back.stable, back.weight_bp) == ("aborted", "iris-v1", 0)
    assert [e.kind for e in events] == ["rollback"]
    assert command(back, SPEC, "rollback", 1003.0) == (back, [])


def test_retry_restarts_the_same_revision_at_step_zero() -> None:
    """retry turns an aborted rollout back to step 0, same revision."""
    aborted, _ = step(start(), SPEC, obs("fail"), 1001.0)
    r, events = command(aborted, SPEC, "retry", 2000.0)
    assert (r.phase, r.step, r.weight_bp, r.revision, r.step_started_at) == (
        "progressing",
        0,
        500,
        1,
        2000.0,
    )
    assert [e.kind for e in events] == ["retry"]


@pytest.mark.parametrize(
    ("phase", "verb", "message"),
    [
        ("aborted", "promote", "cannot promote iris: it is aborted (retry to start again)"),
        ("promoted", "abort", "cannot abort iris: it is already promoted (rollback to undo)"),
        ("paused", "pause", "cannot pause iris: it is already paused"),
        ("progressing", "retry", "cannot retry iris: it is progressing"),
        ("progressing", "explode", "unknown command 'explode'"),
    ],
)
def test_commands_not_allowed_in_a_phase_are_refused(phase: str, verb: str, message: str) -> None:
    """A verb the phase does not allow raises InvalidCommand with a plain message."""
    with pytest.raises(InvalidCommand) as info:
        command(start().evolve(phase=phase), SPEC, verb, 1001.0)
    assert str(info.value).startswith(message)


def test_new_candidate_is_a_new_revision() -> None:
    """Changing the candidate in config starts a fresh rollout with revision + 1."""
    aborted, _ = step(start(), SPEC, obs("fail"), 1001.0)
    spec = replace(SPEC, candidate="iris-v3")
    r, events = reconcile(aborted, spec, 3000.0)
    assert (r.revision, r.phase, r.candidate, r.weight_bp) == (2, "progressing", "iris-v3", 500)
    assert [e.kind for e in events] == ["revision"]


def test_promoted_rollout_is_not_restarted_by_unchanged_config() -> None:
    """After promotion the old stable is previous_stable: same config, no new revision."""
    promoted, _ = command(start(), SPEC, "promote", 1001.0, full=True)
    assert reconcile(promoted, SPEC, 2000.0) == (promoted, [])
    follow_up = replace(SPEC, stable="iris-v2", candidate="iris-v3")
    assert reconcile(promoted, follow_up, 2000.0)[0].revision == 2


def test_edited_steps_apply_to_the_running_rollout() -> None:
    """Editing steps changes the current weight and clamps the step index."""
    r, _ = command(start(), SPEC, "promote", 1001.0)  # step 1 at 25 %
    edited = replace(SPEC, steps=(StepSpec(1000), StepSpec(10000)))
    r2, events = reconcile(r, edited, 1002.0)
    assert (r2.step, r2.weight_bp, r2.revision) == (0, 1000, 1)
    assert [e.kind for e in events] == ["edit"]
    assert reconcile(r2, edited, 1003.0) == (r2, [])


# -- properties -----------------------------------------------------------------------
VERDICTS = st.sampled_from(["pass", "fail", "wait"])
ACTIONS = st.one_of(
    st.tuples(st.just("obs"), st.lists(VERDICTS, min_size=1, max_size=2), st.integers(0, 300)),
    st.tuples(
        st.just("cmd"),
        st.sampled_from(["promote", "pause", "resume", "abort", "retry", "rollback", "full"]),
        st.integers(0, 300),
    ),
)


def apply(r: Rollout, action: tuple[str, object, int], now: float) -> tuple[Rollout, list[Event]]:
    kind, what, n = action
    if kind == "obs":
        assert isinstance(what, list)
        return step(r, SPEC, obs(*what, n=n), now)
    verb = "promote" if what == "full" else str(what)
    try:
        return command(r, SPEC, verb, now, full=what == "full")
    except InvalidCommand:
        return r, []


@settings(max_examples=300, deadline=None)
@given(
    actions=st.lists(ACTIONS, max_size=40),
    gaps=st.lists(st.floats(0, 100), min_size=40, max_size=40),
)
def test_invariants_under_any_sequence(
    actions: list[tuple[str, object, int]], gaps: list[float]
) -> None:
    """Weight stays in 0..10000; it only drops by abort/rollback; phases stay known;
    promotion only via the last step or a promote command."""
    r, now = start(), 1000.0
    for action, gap in zip(actions, gaps, strict=False):
        now += gap
        before = r
        r, events = apply(r, action, now)
        kinds = {e.kind for e in events}
        assert 0 <= r.weight_bp <= 10000
        assert r.phase in PHASES
        if r.weight_bp < before.weight_bp:
            assert kinds & {"abort", "rollback"}, (before, r)
        if r.phase == "promoted" and before.phase != "promoted":
            assert "promote" in kinds
            assert action[0] == "cmd" or before.step == SPEC.last_window


@settings(max_examples=200, deadline=None)
@given(verdicts=st.lists(st.lists(VERDICTS, min_size=1, max_size=3), max_size=30))
def test_aborted_stays_aborted_under_any_observations(verdicts: list[list[Verdict]]) -> None:
    """No sequence of observations moves an aborted rollout; only retry or a revision does."""
    aborted, _ = step(start(), SPEC, obs("fail"), 1001.0)
    r, now = aborted, 1001.0
    for vs in verdicts:
        now += 120.0
        r, events = step(r, SPEC, obs(*vs, n=10_000), now)
        assert r == aborted
        assert events == []


def test_waiting_rollout_ignores_data_until_resumed() -> None:
    """A `waiting` rollout (shadow first) ignores verdicts; resume starts step 0."""
    waiting = start().evolve(phase="waiting", weight_bp=0)
    assert step(waiting, SPEC, obs("fail"), 2000.0) == (waiting, [])
    r, events = command(waiting, SPEC, "resume", 2000.0)
    assert (r.phase, r.step, r.weight_bp, r.step_started_at) == ("progressing", 0, 500, 2000.0)
    assert [e.kind for e in events] == ["resume"]
