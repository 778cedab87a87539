"""Blue/green as a pure state machine: switches, the watch after one, rollbacks.

No I/O and no clock: router/control/bluegreen.py checks the idle colour, reads
the watch's windows, asks the gates, and writes whatever comes out of here by
compare-and-set, with the event for history. Phases (`Phase`), and the moves
between them as data (`TABLE`, router/control/machine.py):

    steady        one colour takes every request; nothing is being judged
    watching      a switch happened less than `watch.window` ago; gates judge it
    aborted       the watch failed: the controller switched back by itself
    rolled_back   an operator ran `routerctl rollback`

Every switch, automatic or not, is a new revision and opens a new window (the
watch's, when the phase is watching); the previous colour and the baseline
period (what the old colour did just before the switch) go into `extra`.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from router.control.machine import Table, gate_dicts
from router.core.gates import GateResult
from router.core.rollout import Rollout
from strategies.bluegreen import BlueGreenSpec, other

KIND = "bluegreen"


class Phase(StrEnum):
    STEADY = "steady"
    WATCHING = "watching"
    ABORTED = "aborted"
    ROLLED_BACK = "rolled_back"


STEADY, WATCHING, ABORTED, ROLLED_BACK = Phase
SWITCHED_BACK = frozenset({ABORTED, ROLLED_BACK})

TABLE = Table(
    kind=KIND,
    phases=Phase,
    moves={
        "switch": dict.fromkeys(Phase, frozenset({WATCHING, STEADY})),  # checked first
        "failed": {WATCHING: frozenset({ABORTED})},  # the watch failed: back at once
        "settled": {WATCHING: frozenset({STEADY})},  # the watch ended with no failure
        # after a switch back, rollback is a no-op: it never returns to the broken colour
        "rollback": {
            **dict.fromkeys((STEADY, WATCHING), frozenset({ROLLED_BACK})),
            **dict.fromkeys(SWITCHED_BACK, frozenset[Phase]()),
        },
    },
    verbs=("switch", "rollback"),
    windowed=frozenset({WATCHING}),  # the post-switch watch
)


def initial(route: str, spec: BlueGreenSpec, now: float, revision: int = 1) -> Rollout:
    colour = spec.active
    return Rollout(
        route,
        revision=revision,
        kind=KIND,
        phase=STEADY.value,
        active=colour,
        stable=spec.backend(colour),
        candidate=spec.backend(other(colour)),
        step_started_at=now,
        updated_at=now,
        reason=f"{colour} ({spec.backend(colour)}) active, from config.yaml",
        updated_by="config",
    )


def moved(
    r: Rollout, spec: BlueGreenSpec, to: str, how: tuple[str, Phase], now: float, why: str, by: str
) -> Rollout:
    """`r` with every request on colour `to` from `now`: a new revision and window.

    `how` is the (trigger, phase) of the move, as TABLE lists it."""
    was = r.active or other(to)
    extra = {"previous": was, "baseline_from": now - spec.watch.baseline, "baseline_to": now}
    return TABLE.move(
        r,
        how[0],
        how[1],
        revision=r.revision + 1,
        active=to,
        stable=spec.backend(to),
        candidate=spec.backend(was),
        previous_stable=spec.backend(was),
        step_started_at=now,
        updated_at=now,
        reason=why,
        updated_by=by,
        extra=extra,
    )


def reconcile(r: Rollout, spec: BlueGreenSpec) -> tuple[Rollout, list[dict[str, Any]]]:
    """Follow config.yaml's backends of each colour (a new model deployed to a colour)."""
    stable, idle = spec.backend(r.active), spec.backend(other(r.active))
    if (r.stable, r.candidate) == (stable, idle):
        return r, []
    why = f"config.yaml: {r.active} is {stable}, {other(r.active)} is {idle}"
    return r.evolve(stable=stable, candidate=idle), [{"event": "config", "reason": why}]


def switched(
    r: Rollout, spec: BlueGreenSpec, now: float, by: str, force: bool, notes: str
) -> tuple[Rollout, dict[str, Any]]:
    """An operator's switch to the idle colour, its checks passed (or forced)."""
    to = other(r.active)
    phase = WATCHING if spec.watch.window > 0 else STEADY
    reason = f"switched to {to} ({spec.backend(to)}) by {by}" + notes
    if phase == WATCHING:
        reason += f"; watching for {spec.watch.window:g}s"
    event = {"event": "switch", "from": other(to), "to": to, "forced": force, "reason": reason}
    return moved(r, spec, to, ("switch", phase), now, reason, by), event


def settled(r: Rollout, spec: BlueGreenSpec, gates: list[GateResult], now: float) -> Rollout:
    waits = [g.name for g in gates if g.verdict == "wait"]
    note = f" (not enough data for {', '.join(waits)})" if waits else ""
    reason = f"{r.active} passed its {spec.watch.window:g}s watch: no gate failed{note}"
    return TABLE.move(r, "settled", STEADY, reason=reason, updated_at=now, updated_by="controller")


def reverted(
    r: Rollout, spec: BlueGreenSpec, failed: list[GateResult], now: float, by: str
) -> tuple[Rollout, dict[str, Any]]:
    back = other(r.active)
    why = "; ".join(f"{g.name}: {g.detail}" for g in failed)
    reason = f"{r.active} failed its watch ({why}); switched back to {back}"
    new = moved(r, spec, back, ("failed", ABORTED), now, reason, by)
    event = {"event": "auto_rollback", "from": r.active, "to": back, "reason": reason}
    return new, {**event, "gate": failed[0].name, "gates": gate_dicts(tuple(failed))}


def rolled_back(
    r: Rollout, spec: BlueGreenSpec, now: float, by: str
) -> tuple[Rollout, dict[str, Any]]:
    """The operator's rollback to the previous colour (one there is: `previous`)."""
    back = other(r.active)
    reason = f"rolled back to {back} ({spec.backend(back)}) by {by}"
    new = moved(r, spec, back, ("rollback", ROLLED_BACK), now, reason, by)
    return new, {"event": "rollback", "from": r.active, "to": back, "reason": reason}
