"""The automation ladder's rollout as a pure state machine: levels and their windows.

No I/O and no clock: router/control/automation.py gathers the figures of the
level in force, router/core/ladder.py judges the bars, and the moves come from
here, each with its event for history. An automation rollout has one phase,
`running` (`TABLE`, router/control/machine.py): what moves is the level
(`Rollout.level`, "" meaning config.yaml's), and each move opens a new window
(`step_started_at`), so the evidence behind the next step is that of the level
the ladder stands on. `extra["window"]` remembers the level whose window is
open, so an edit of config.yaml's level opens a new one too.

An operator's move (`refusal`): down is never refused; up is one level at a
time and only with its bar passed, unless forced with a reason.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from typing import Any

from router.control.machine import Table
from router.core.ladder import Evidence, Judgement, next_level, rank
from router.core.rollout import Rollout

KIND = "automation"


class Phase(StrEnum):
    RUNNING = "running"


RUNNING = Phase.RUNNING
TABLE = Table(
    kind=KIND,
    phases=Phase,
    moves={
        "config": {RUNNING: frozenset({RUNNING})},  # config.yaml's level was edited
        "automation": {RUNNING: frozenset({RUNNING})},  # a step by `auto` or an operator
    },
    verbs=("automation",),
    windowed=frozenset({RUNNING}),  # each level: the evidence for the next step
)


def seeded(route: str, level: str, now: float) -> tuple[Rollout, list[dict[str, Any]]]:
    """The rollout of a route that no replica holds, at config.yaml's level."""
    fresh = Rollout(route, kind=KIND, phase=RUNNING.value, step_started_at=now)
    fresh = fresh.evolve(updated_at=now, updated_by="config", extra={"window": level})
    fresh = fresh.evolve(reason=f"level {level} (config.yaml)")
    return fresh, [{"event": "start", "to": level}]


def relevelled(r: Rollout, level: str, now: float) -> tuple[Rollout, list[dict[str, Any]]]:
    """config.yaml's level changed: a new window (history says so when one was open)."""
    old = r.extra.get("window")
    new = _at(r, "config", step_started_at=now)
    new = new.evolve(extra={**r.extra, "window": level})
    new = new.evolve(reason=f"level {level} (config.yaml)", updated_at=now)
    return new, [{"event": "automation_level", "from": old, "to": level}] if old else []


def moved(
    r: Rollout, old: str, level: str, now: float, by: str, why: str, out: Mapping[str, Any]
) -> tuple[Rollout, dict[str, Any]]:
    """`r` at `level` from `now` (a new window), and its event with the evidence `out`."""
    said = f"{old} -> {level} by {by}" + (f" ({why})" if why else "")
    new = _at(r, "automation", level=level, step_started_at=now)
    new = new.evolve(updated_at=now, updated_by=by)
    new = new.evolve(reason=said, extra={**r.extra, "window": level})
    event: dict[str, Any] = {"event": "automation_level", "from": old, "to": level}
    event["reason"] = said
    event.update(forced=why.startswith("forced"), evidence=summary(out))
    return new, event


def _at(r: Rollout, trigger: str, **changes: Any) -> Rollout:
    """`r` moved by `trigger`. A rollout another strategy left on the route keeps
    its kind and phase (the route's next strategy switch replaces it)."""
    if r.kind != KIND:
        return r.evolve(**changes)
    return TABLE.move(r, trigger, RUNNING, **changes)


def refusal(old: str, level: str, out: Mapping[str, Any], force: bool) -> dict[str, Any] | None:
    """Why a step up may not happen now (None: it may). Down is never refused."""
    if rank(level) < rank(old) or force:
        return None
    if rank(level) > rank(old) + 1:
        return {
            "error": f"{old} -> {level} skips a level: the ladder goes one step at a time "
            f"(next: {next_level(old)}); --force --reason '...' to skip anyway",
        }
    found = out.get("next") or {}
    if found.get("verdict") == "pass":
        return None
    return {
        "error": f"not enough evidence for {level}: {found.get('text', 'no figures yet')}; "
        "--force --reason '...' to step up anyway",
        "next": found,
    }


def judgement(j: Judgement) -> dict[str, Any]:
    return {
        "level": j.level,
        "verdict": j.verdict,
        "text": j.text(),
        "checks": [{"name": c.name, "verdict": c.verdict, "text": c.text} for c in j.checks],
    }


def evidence(out: Mapping[str, Any]) -> Evidence:
    agreement = out.get("agreement") or {}
    items = agreement.get("agreement") or {}
    labels = out.get("labels") or {}
    (mk, mn), (hk, hn) = labels.get("model", (0, 0)), labels.get("human", (0, 0))
    model, human = out.get("model_requests", 0), out.get("human_requests", 0)
    partial = out.get("level") == "partial"
    # at partial only the doubtful answers meet the human: their agreement is no
    # measure of the model, so it counts toward no bar there
    return Evidence(
        compared=0 if partial else int(items.get("n", 0)),
        agreeing=0 if partial else int(items.get("k", 0)),
        model_labels=mn,
        model_correct=mk,
        human_labels=hn,
        human_correct=hk,
        requests=model + human,
        deferred=human if partial else 0,
        seconds=float(out.get("seconds", 0.0)),
        alarms=tuple(out.get("alarms") or ()),
    )


def summary(out: Mapping[str, Any]) -> dict[str, Any]:
    """The figures at the time of a move, for history (small: no per-field detail)."""
    agreement = (out.get("agreement") or {}).get("agreement") or {}
    labels = out.get("labels") or {}
    return {
        "agreement": agreement.get("rate"),
        "compared": agreement.get("n", 0),
        "model_accuracy": _ratio(labels.get("model")),
        "human_accuracy": _ratio(labels.get("human")),
        "labels": [list(labels.get("model", (0, 0))), list(labels.get("human", (0, 0)))],
        "deferral_rate": out.get("deferral_rate"),
        "requests": out.get("model_requests", 0) + out.get("human_requests", 0),
        "fallbacks": sum((out.get("fallbacks") or {}).get("level", {}).values()),
        "next": (out.get("next") or {}).get("text"),
    }


def _ratio(pair: Any) -> float | None:
    if not pair or not pair[1]:
        return None
    return float(pair[0]) / float(pair[1])


def deferral(level: str, model: int, human: int) -> float | None:
    """Under partial the model asks first; every answer from the human was deferred."""
    if level != "partial" or model + human == 0:
        return None
    return human / (model + human)
