"""The canary rollout as a pure state machine: (rollout, observation, now) -> (rollout, events).

No I/O and no clock: the controller reads the metric windows, asks
router/core/gates.py for gate verdicts, passes them here with the time, and
writes back whatever comes out (compare-and-set on `version`), appending the
events to history. Commands from `routerctl` go through `command` the same way.

Phases and what moves them (transitions are data: `TABLE` below, router/control/machine.py):

    waiting           shadow first: weight 0, the candidate only gets mirrored copies;
                      its agreement gate passing (or resume/promote) starts step 0
    progressing       the current step's window is being judged
    waiting_for_data  the step's pause is over but a gate or min_requests lacks data
    paused            an operator stopped the ramp; no advance
    promoted          the candidate is the stable backend; weight 10000
    aborted           weight 0, every request on the stable backend; sticky

Rules of `step`, in order:
1. promoted and aborted ignore observations: an aborted rollout stays aborted
   under any data until `retry` or a new revision (`reconcile`). So does a
   `waiting` rollout whose spec has no shadow_first (an operator starts it).
2. Any acting (non-dry-run) gate that fails aborts — also while paused: a
   pause stops the ramp, never the safety net.
3. Paused: nothing else happens.
4. Advance when every acting gate passes, the step's pause has elapsed and its
   min_requests are met: the next step starts a new window (step_started_at =
   now). Passing the last step below 100 % promotes.
5. Pause elapsed but not ready: waiting_for_data, and the reason says what is
   missing, with counts. Never a failure for lack of data.

Shadow first. With `shadow_first` in the spec, `initial` (hence a new revision
and a retry) starts in `waiting` at weight 0, its window opening then. The
gates judged there are the shadow-first agreement gate alone (`judging_gates`):
the candidate serves nobody, so its metric gates could never pass. Rule 2
applies as written (too little agreement aborts, and the candidate never got a
user); when the gate passes, step 0 opens a new window. A pause in shadow first
is remembered in `extra["paused_in"]`, so resume returns there and promote
opens step 0 rather than skipping it.

Weight only grows, except by abort or rollback (and by an operator editing the
steps, which `reconcile` applies to the running rollout).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum

from router.control.machine import Table
from router.core.gates import Gate, GateResult
from router.core.rollout import BASIS_POINTS, Rollout
from strategies.canary import CanarySpec, StepSpec


class Phase(StrEnum):
    WAITING = "waiting"
    PROGRESSING = "progressing"
    PAUSED = "paused"
    WAITING_FOR_DATA = "waiting_for_data"
    PROMOTED = "promoted"
    ABORTED = "aborted"


WAITING, PROGRESSING, PAUSED = Phase.WAITING, Phase.PROGRESSING, Phase.PAUSED
WAITING_FOR_DATA, PROMOTED, ABORTED = Phase.WAITING_FOR_DATA, Phase.PROMOTED, Phase.ABORTED
PHASES = tuple(Phase)
_RAMPING = frozenset({WAITING, PROGRESSING, PAUSED, WAITING_FOR_DATA})


def _each(phases: frozenset[Phase], *to: Phase) -> dict[Phase, frozenset[Phase]]:
    return dict.fromkeys(phases, frozenset(to))


# trigger -> phase it may leave -> phases it may enter (Table.move refuses the rest)
_MOVES: dict[str, dict[Phase, frozenset[Phase]]] = {
    # automatic, from `step` and `reconcile`
    "passed": {
        WAITING: frozenset({PROGRESSING}),
        **_each(frozenset({PROGRESSING, WAITING_FOR_DATA}), PROGRESSING, PROMOTED),
    },
    "failed": _each(_RAMPING, ABORTED),
    "judging": _each(frozenset({PROGRESSING, WAITING_FOR_DATA}), PROGRESSING),
    "starved": _each(frozenset({PROGRESSING, WAITING_FOR_DATA}), WAITING_FOR_DATA),
    "edited": {WAITING: frozenset({PROGRESSING})},  # shadow first removed from the config
    # an operator's verbs (routerctl; TABLE.verbs lists them in the order refusals name them)
    "promote": _each(_RAMPING, PROGRESSING, PROMOTED),
    "pause": _each(frozenset({WAITING, PROGRESSING, WAITING_FOR_DATA}), PAUSED),
    "resume": {WAITING: frozenset({PROGRESSING}), PAUSED: frozenset({PROGRESSING, WAITING})},
    "abort": _each(_RAMPING, ABORTED),
    "retry": _each(frozenset({ABORTED}), WAITING, PROGRESSING),
    # idempotent when already aborted (no move at all): a panic button
    "rollback": {**_each(_RAMPING | {PROMOTED}, ABORTED), ABORTED: frozenset()},
}
TABLE = Table(
    kind="canary",
    phases=Phase,
    moves=_MOVES,
    verbs=("promote", "pause", "resume", "abort", "retry", "rollback"),
    refusals={
        WAITING: "it is in shadow first (promote to start step 1)",
        PROMOTED: "it is already promoted (rollback to undo)",
        ABORTED: "it is aborted (retry to start again)",
        PAUSED: "it is already paused",
        PROGRESSING: "it is progressing",
        WAITING_FOR_DATA: "it is progressing",
    },
    windowed=_RAMPING,  # shadow first too: its comparisons are judged
    uncounted=frozenset({WAITING}),  # ... but no user reaches the candidate there
)

Figure = float | int | str


@dataclass(frozen=True, slots=True)
class Observation:
    """What the controller saw over the current step's window."""

    gates: tuple[GateResult, ...] = ()
    candidate_requests: int = 0
    baseline_requests: int = 0


@dataclass(frozen=True, slots=True)
class Event:
    """One thing that happened, for the route's history."""

    kind: str  # start, advance, promote, abort, waiting, dry_run_fail, pause, ...
    reason: str
    figures: Mapping[str, Figure] = field(default_factory=dict)

    def entry(self) -> dict[str, Figure]:
        """A flat mapping for StateStore.add_history."""
        return {"event": self.kind, "reason": self.reason, **self.figures}


# -- plain words -----------------------------------------------------------------
def _pct(bp: int) -> str:
    return f"{bp / 100:g} %"


def _where(r: Rollout, spec: CanarySpec) -> str:
    if in_shadow_first(r):
        return "shadow first"
    return f"step {r.step + 1}/{len(spec.steps)} at {_pct(r.weight_bp)}"


def _duration(seconds: float) -> str:
    seconds = max(0.0, seconds)
    if seconds >= 120:
        return f"{seconds / 60:.0f}m"
    return f"{seconds:.0f}s"


def _gate_figures(gate: GateResult) -> dict[str, Figure]:
    return {
        "gate": gate.name,
        "value": gate.value,
        "threshold": gate.threshold,
        "candidate_n": gate.candidate_n,
        "baseline_n": gate.baseline_n,
    }


# -- shadow first and windows --------------------------------------------------------
def in_shadow_first(r: Rollout) -> bool:
    """Waiting, or paused while waiting: the candidate gets mirrored copies only."""
    return r.phase == WAITING or (r.phase == PAUSED and r.extra.get("paused_in") == WAITING)


def judging_gates(r: Rollout, spec: CanarySpec) -> tuple[Gate, ...]:
    """The gates that judge the rollout's current window (see the module doc)."""
    if not in_shadow_first(r):
        return spec.analysis.gates
    return (spec.shadow_first.gate,) if spec.shadow_first else ()


def _first_words(spec: CanarySpec) -> str:
    if spec.shadow_first is None:
        return "started"
    gate, bp = spec.shadow_first.gate, spec.shadow_first.percent_bp
    want = (
        f"{gate.min_requests} compared items of {gate.field} at >= {gate.min * 100:g} % agreement"
    )
    return f"mirroring {_pct(bp)} of requests to {spec.candidate}, no user traffic; needs {want}"


# -- starting ----------------------------------------------------------------------
def initial(route: str, spec: CanarySpec, now: float, *, revision: int = 1) -> Rollout:
    """A new rollout: shadow first when configured, else step 0; its window opens now."""
    first = 0 if spec.shadow_first else spec.steps[0].weight_bp
    phase = (WAITING if spec.shadow_first else PROGRESSING).value
    fresh = Rollout(route=route, revision=revision, kind="canary", phase=phase)
    fresh = fresh.evolve(weight_bp=first, stable=spec.stable, candidate=spec.candidate)
    fresh = fresh.evolve(step_started_at=now, updated_at=now, updated_by="controller")
    return fresh.evolve(reason=f"{_where(fresh, spec)}: {_first_words(spec)}")


def _open_ramp(
    r: Rollout, spec: CanarySpec, now: float, why: str, trigger: str
) -> tuple[Rollout, list[Event]]:
    """From shadow first to step 0: user traffic begins, in a new window."""
    moved = TABLE.move(r, trigger, PROGRESSING, step=0, weight_bp=spec.steps[0].weight_bp)
    moved = moved.evolve(extra={})
    moved = moved.evolve(step_started_at=now, updated_at=now)
    moved = moved.evolve(reason=f"{_where(moved, spec)}: started, {why}")
    figures: dict[str, Figure] = {"step": 0, "weight_bp": moved.weight_bp}
    return moved, [Event("advance", moved.reason, figures)]


def _restart(r: Rollout, spec: CanarySpec, now: float) -> Rollout:
    """Back to step 0 of the same revision (retry)."""
    fresh = initial(r.route, spec, now, revision=r.revision)
    TABLE.require(r, "retry", Phase(fresh.phase))
    return fresh.evolve(version=r.version)


def reconcile(r: Rollout, spec: CanarySpec, now: float) -> tuple[Rollout, list[Event]]:
    """Apply a config edit: a new candidate (or stable) is a new revision; edited
    steps apply to the running rollout, its step index clamped."""
    if _is_new_revision(r, spec):
        fresh = initial(r.route, spec, now, revision=r.revision + 1).evolve(version=r.version)
        why = f"new revision {fresh.revision}: {spec.candidate} against {spec.stable}"
        return fresh, [Event("revision", why, {"revision": fresh.revision})]
    if r.phase not in _RAMPING:
        return r, []
    if in_shadow_first(r):
        if r.phase == WAITING and spec.shadow_first is None:
            return _open_ramp(r, spec, now, "shadow first removed from the config", "edited")
        return r, []
    index = min(r.step, spec.last_window)
    weight = spec.steps[index].weight_bp
    if (index, weight) == (r.step, r.weight_bp):
        return r, []
    edited = r.evolve(step=index, weight_bp=weight, updated_at=now)
    edited = edited.evolve(reason=f"{_where(edited, spec)}: steps edited")
    return edited, [Event("edit", edited.reason, {"step": index, "weight_bp": weight})]


def _is_new_revision(r: Rollout, spec: CanarySpec) -> bool:
    if r.kind != "canary" or r.candidate != spec.candidate:
        return True
    # after a promotion the old stable lives on as previous_stable
    baseline = r.previous_stable if r.phase == PROMOTED else r.stable
    return baseline != spec.stable


# -- the automatic transitions ---------------------------------------------------
def step(r: Rollout, spec: CanarySpec, obs: Observation, now: float) -> tuple[Rollout, list[Event]]:
    """One controller tick: abort, advance, wait, or nothing (see the module doc)."""
    if r.phase not in _RAMPING or (r.phase == WAITING and spec.shadow_first is None):
        return r, []
    acting = [g for g in obs.gates if g.acts]
    failed = [g for g in acting if g.verdict == "fail"]
    if failed:
        return _abort_on(r, failed[0], now)
    r, events = _note_dry_runs(r, obs.gates)
    if r.phase == PAUSED:
        return r, events
    if r.phase == WAITING:
        return _shadow_first_step(r, spec, acting, now, events)
    current = spec.steps[min(r.step, len(spec.steps) - 1)]
    paused_enough = now - r.step_started_at >= current.pause
    enough = obs.candidate_requests >= current.min_requests
    if paused_enough and enough and all(g.verdict == "pass" for g in acting):
        moved, more = _advance(r, spec, now, "every gate passed", "passed")
        return moved, events + more
    if paused_enough:
        return _wait_for_data(r, spec, obs, now, current.min_requests, events)
    left = _duration(current.pause - (now - r.step_started_at))
    reason = f"{_where(r, spec)}: judging, {left} of the pause left — {_counts(obs, current)}"
    return TABLE.move(r, "judging", PROGRESSING, reason=reason), events


def _counts(obs: Observation, current: StepSpec) -> str:
    needed = current.min_requests
    text = f"candidate {obs.candidate_requests}"
    return f"{text}/{needed} requests" if needed else f"{text} requests"


def _shadow_first_step(
    r: Rollout, spec: CanarySpec, acting: list[GateResult], now: float, events: list[Event]
) -> tuple[Rollout, list[Event]]:
    """Open step 0 once every shadow-first gate passes; else say where it stands."""
    if acting and all(g.verdict == "pass" for g in acting):
        why = f"shadow first passed: {acting[0].detail}"
        moved, more = _open_ramp(r, spec, now, why, "passed")
        return moved, events + more
    return r.evolve(reason=_shadow_first_reason(spec, acting)), events


def _shadow_first_reason(spec: CanarySpec, gates: list[GateResult]) -> str:
    needed = spec.shadow_first.gate.min_requests if spec.shadow_first else 0
    if not gates:
        return f"shadow first: no comparison yet, 0/{needed} compared items"
    g = gates[0]
    share = f"agreement {g.value * 100:.1f} %" if g.candidate_n else "no comparison yet"
    head = f"shadow first: {g.candidate_n}/{needed} compared items, {share}"
    head += f" (min {g.threshold * 100:g} %)"
    return head if g.candidate_n < needed else f"{head}; not yet sure, need more comparisons"


def _abort_on(r: Rollout, gate: GateResult, now: float) -> tuple[Rollout, list[Event]]:
    reason = f"aborted: {gate.name} gate failed: {gate.detail}"
    if in_shadow_first(r):
        reason = f"aborted in shadow first: {gate.name} gate failed: {gate.detail}"
        reason += f"; {r.candidate} never got user traffic"
    done = TABLE.move(r, "failed", ABORTED, weight_bp=0, reason=reason, updated_at=now, extra={})
    return done, [Event("abort", reason, _gate_figures(gate))]


def _note_dry_runs(r: Rollout, gates: tuple[GateResult, ...]) -> tuple[Rollout, list[Event]]:
    """Report a dry-run gate's failure once per window; it never acts."""
    seen = list(r.extra.get("dry_run_failed", []))
    fresh = [g for g in gates if g.dry_run and g.verdict == "fail" and g.name not in seen]
    if not fresh:
        return r, []
    events = [
        Event("dry_run_fail", f"{g.name} would abort: {g.detail}", _gate_figures(g)) for g in fresh
    ]
    extra = {**r.extra, "dry_run_failed": seen + [g.name for g in fresh]}
    return r.evolve(extra=extra), events


def _advance(
    r: Rollout, spec: CanarySpec, now: float, why: str, trigger: str
) -> tuple[Rollout, list[Event]]:
    """The next step (a new window), or the promotion after the last one."""
    nxt = r.step + 1
    if nxt > spec.last_window or spec.steps[nxt].weight_bp >= BASIS_POINTS:
        return _promote(r, spec, now, why, trigger)
    moved = TABLE.move(r, trigger, PROGRESSING, step=nxt, weight_bp=spec.steps[nxt].weight_bp)
    moved = moved.evolve(step_started_at=now, updated_at=now, extra={})
    moved = moved.evolve(reason=f"{_where(moved, spec)}: started, {why} at step {r.step + 1}")
    figures: dict[str, Figure] = {"step": nxt, "weight_bp": moved.weight_bp}
    return moved, [Event("advance", moved.reason, figures)]


def _promote(
    r: Rollout, spec: CanarySpec, now: float, why: str, trigger: str
) -> tuple[Rollout, list[Event]]:
    reason = f"promoted: {r.candidate} is now stable ({why}); {r.stable} is the rollback target"
    done = TABLE.move(r, trigger, PROMOTED, step=len(spec.steps) - 1, weight_bp=BASIS_POINTS)
    done = done.evolve(stable=r.candidate, previous_stable=r.stable, extra={})
    done = done.evolve(reason=reason, updated_at=now, step_started_at=now)
    return done, [Event("promote", reason, {"stable": r.candidate, "previous": r.stable})]


def _wait_for_data(
    r: Rollout, spec: CanarySpec, obs: Observation, now: float, needed: int, events: list[Event]
) -> tuple[Rollout, list[Event]]:
    missing = [f"{g.name}: {g.detail}" for g in obs.gates if g.acts and g.verdict != "pass"]
    n = obs.candidate_requests
    # past min_requests, what holds the step is a gate's own sample size (in `missing`)
    counts = f"candidate {n}/{needed} requests" if n < needed else f"candidate {n} requests"
    reason = "; ".join([f"{_where(r, spec)}: waiting for data — {counts}", *missing])
    waiting = TABLE.move(r, "starved", WAITING_FOR_DATA, reason=reason)
    if r.phase != WAITING_FOR_DATA:
        figures: dict[str, Figure] = {"candidate_n": obs.candidate_requests, "needed": needed}
        events = [*events, Event("waiting", reason, figures)]
        waiting = waiting.evolve(updated_at=now)
    return waiting, events


# -- commands -----------------------------------------------------------------------
def command(
    r: Rollout, spec: CanarySpec, verb: str, now: float, *, full: bool = False
) -> tuple[Rollout, list[Event]]:
    """An operator's verb: promote [--full], pause, resume, abort, retry, rollback."""
    TABLE.check(r, verb)
    out, events = _COMMANDS[verb](r, spec, now, full)
    if not events:
        return r, events  # a no-op (rollback when already aborted) writes nothing
    return out.evolve(updated_by="routerctl", updated_at=now), events


def _cmd_promote(
    r: Rollout, spec: CanarySpec, now: float, full: bool
) -> tuple[Rollout, list[Event]]:
    if full:
        return _promote(r, spec, now, "promoted in full by operator", "promote")
    if in_shadow_first(r):  # an operator's choice: user traffic starts now
        return _open_ramp(r, spec, now, "shadow first skipped by operator", "promote")
    return _advance(r, spec, now, "advanced by operator", "promote")


def _pause(r: Rollout, spec: CanarySpec, now: float, full: bool) -> tuple[Rollout, list[Event]]:
    extra = {**r.extra, "paused_in": WAITING} if r.phase == WAITING else r.extra
    reason = f"{_where(r, spec)}: paused by operator"
    out = TABLE.move(r, "pause", PAUSED, extra=extra, reason=reason)
    return out, [Event("pause", out.reason)]


def _resume(r: Rollout, spec: CanarySpec, now: float, full: bool) -> tuple[Rollout, list[Event]]:
    if r.phase == WAITING:
        out, _ = _open_ramp(r, spec, now, "resumed by operator", "resume")
        return out, [Event("resume", out.reason)]
    back = WAITING if in_shadow_first(r) else PROGRESSING
    extra = {k: v for k, v in r.extra.items() if k != "paused_in"}
    out = TABLE.move(r, "resume", back, extra=extra)
    out = out.evolve(reason=f"{_where(out, spec)}: resumed by operator")
    return out, [Event("resume", out.reason)]


def _abort(
    r: Rollout, spec: CanarySpec, now: float, full: bool, trigger: str = "abort"
) -> tuple[Rollout, list[Event]]:
    reason = f"aborted by operator at {_where(r, spec)}: all traffic on {r.stable}"
    out = TABLE.move(r, trigger, ABORTED, weight_bp=0, reason=reason, extra={})
    return out, [Event("abort", reason, {"step": r.step})]


def _retry(r: Rollout, spec: CanarySpec, now: float, full: bool) -> tuple[Rollout, list[Event]]:
    out = _restart(r, spec, now)
    out = out.evolve(reason=f"{_where(out, spec)}: retry by operator")
    return out, [Event("retry", out.reason)]


def _rollback(r: Rollout, spec: CanarySpec, now: float, full: bool) -> tuple[Rollout, list[Event]]:
    if r.phase == ABORTED:
        return r, []  # already on the stable backend
    if r.phase != PROMOTED:
        return _abort(r, spec, now, full, "rollback")
    back = r.previous_stable or spec.stable
    reason = f"rolled back by operator: {r.candidate} demoted, all traffic on {back}"
    out = TABLE.move(r, "rollback", ABORTED, stable=back, previous_stable="", weight_bp=0)
    out = out.evolve(reason=reason)
    return out, [Event("rollback", reason, {"stable": back, "demoted": r.candidate})]


_COMMANDS = {
    "promote": _cmd_promote,
    "pause": _pause,
    "resume": _resume,
    "abort": _abort,
    "retry": _retry,
    "rollback": _rollback,
}
