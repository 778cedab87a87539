"""Rollouts and gate verdicts as gauges: where each deployment is, and why.

Theory of operation
-------------------
Everything here describes the shared state, the same on every replica, so a
dashboard takes `max by (route)` over replicas (router/ops/exposition.py keeps
these worker 0's own under `--workers N`):

- from the live snapshot every replica follows (no I/O): the phase as a state
  set (one series per phase of the route's kind, 1 for the current one), the
  step and the candidate's weight, the revision, when the step began and how
  long its pause is, and `router_rollout_info` naming the stable, candidate and
  active backends and the automation level;
- from the state store, read by `RolloutFigures` in the background (a scrape
  never waits for the store, and never blocks when it is down): the latest gate
  verdicts the leader wrote (router/control/base.py `Writer.explain`), with
  each gate's value, threshold and sample sizes; and, while a rollout is
  aborted, what aborted it (the failing gate, or an operator), from the newest
  aborted entry of its history.

A gate's value is exported only once it has one: not before the candidate has
a sample (a 0 would read as "no errors" or "no agreement"), nor while a latency
or ttft gate waits below its minimum sample per arm (its placeholder 0).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Mapping
from typing import Any, Final

import structlog

from router.control.base import ANALYSIS_SAMPLE, TABLES
from router.core.rollout import BASIS_POINTS, Rollout
from router.dataplane.metric_text import metric_lines
from router.dataplane.routing import CompiledRoute
from router.runtime import Runtime
from router.state.base import StateStore, StoreUnavailable

log = structlog.get_logger("router.ops.rollout_metrics")

REFRESH_INTERVAL: Final = 1.0
HISTORY_LOOKBACK: Final = 20  # entries read to find what aborted a rollout
VERDICTS: Final = ("pass", "fail", "wait")
# Gates judging a ratio of quantiles answer 0 while below their minimum sample per arm:
# a placeholder (no real ratio is 0), never exported as a value
RATIO_GATES: Final = frozenset({"latency", "ttft"})
Rows = list[tuple[dict[str, str], float]]


class RolloutFigures:
    """The store's latest verdicts and abort causes of every controlled route, cached."""

    def __init__(
        self, runtime: Runtime, store: StateStore, interval: float = REFRESH_INTERVAL
    ) -> None:
        self.runtime = runtime
        self.store = store
        self.interval = interval
        self.analysis: dict[str, dict[str, Any]] = {}  # route -> the leader's explanation
        self.causes: dict[str, tuple[int, str]] = {}  # route -> (version, what aborted it)
        self._task: asyncio.Task[None] | None = None

    async def refresh(self) -> None:
        """One pass over the controlled routes (StoreUnavailable ends it early)."""
        routes = {n: r for n, r in self.runtime.table.by_name.items() if _controlled(r)}
        for name in set(self.analysis) - routes.keys():
            self.analysis.pop(name, None)
        for name in set(self.causes) - routes.keys():
            self.causes.pop(name, None)
        for name in routes:
            items = await self.store.samples(name, ANALYSIS_SAMPLE, 1)
            found = _json(items[0]) if items else None
            if found is not None:
                self.analysis[name] = found
            else:
                self.analysis.pop(name, None)
            await self._cause(name, self.runtime.live.get(name))

    async def _cause(self, route: str, r: Rollout | None) -> None:
        if r is None or r.phase != "aborted":
            self.causes.pop(route, None)
            return
        known = self.causes.get(route)
        if known is not None and known[0] == r.version:
            return
        entries = await self.store.history(route, HISTORY_LOOKBACK)
        self.causes[route] = (r.version, abort_cause(entries))

    async def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="rollout-figures")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _run(self) -> None:
        while True:
            try:
                await self.refresh()
            except StoreUnavailable:
                pass  # the figures keep their last values; router_store_up says why
            except Exception:  # a bug in one pass must not stop every later one
                log.exception("rollout_figures_failed")
            await asyncio.sleep(self.interval)


def _controlled(route: CompiledRoute) -> bool:
    return route.spec.strategy_kind in TABLES


def _json(text: str) -> dict[str, Any] | None:
    try:
        found = json.loads(text)
    except ValueError:
        return None
    return found if isinstance(found, dict) else None


def abort_cause(entries: list[dict[str, Any]]) -> str:
    """What aborted a rollout, from its history (oldest first): the failing gate's
    name, `operator` for a command, `controller` otherwise."""
    for entry in reversed(entries):
        if entry.get("phase") != "aborted":
            continue
        gate = entry.get("gate")
        if isinstance(gate, str) and gate.isidentifier():
            return gate
        actor = str(entry.get("actor") or "")
        return "controller" if actor.startswith("controller") else "operator"
    return "unknown"


def rollout_lines(runtime: Runtime, figures: RolloutFigures | None) -> list[str]:
    """Every rollout family (see the module doc), for the routes of the current table."""
    rows: dict[str, Rows] = {name: [] for name in _HELP}
    for name, route in runtime.table.by_name.items():
        r = runtime.live.get(name)
        if r is None or not _controlled(route):
            continue
        _rollout_rows(rows, route, r)
        if figures is not None:
            _gate_rows(rows, name, figures.analysis.get(name))
            if (cause := figures.causes.get(name)) is not None and r.phase == "aborted":
                rows["router_rollout_aborted"].append(({"route": name, "cause": cause[1]}, 1))
    return [
        x for fam, samples in rows.items() for x in metric_lines(fam, "gauge", _HELP[fam], samples)
    ]


def _rollout_rows(rows: dict[str, Rows], route: CompiledRoute, r: Rollout) -> None:
    name, kind = route.name, route.spec.strategy_kind
    info = {"route": name, "kind": kind, "stable": r.stable, "candidate": r.candidate}
    info.update(active=r.active, level=r.level)
    rows["router_rollout_info"].append((info, 1))
    table = TABLES[kind]
    for phase in table.phases:
        labels = {"route": name, "kind": kind, "phase": phase.value}
        rows["router_rollout_phase"].append((labels, float(r.phase == phase.value)))
    one = {"route": name}
    rows["router_rollout_revision"].append((one, r.revision))
    rows["router_rollout_step_started_timestamp_seconds"].append((one, r.step_started_at))
    rows["router_rollout_updated_timestamp_seconds"].append((one, r.updated_at))
    steps = getattr(getattr(route.strategy, "spec", None), "steps", None)
    if kind == "canary" and steps:
        rows["router_rollout_step"].append((one, r.step))
        rows["router_rollout_steps"].append((one, len(steps)))
        rows["router_rollout_weight_ratio"].append((one, r.weight_bp / BASIS_POINTS))
        pause = steps[min(r.step, len(steps) - 1)].pause
        rows["router_rollout_step_pause_seconds"].append((one, pause))


def _gate_rows(rows: dict[str, Rows], route: str, analysis: Mapping[str, Any] | None) -> None:
    if analysis is None:
        return
    gates = analysis.get("gates")
    if isinstance(at := analysis.get("at"), int | float):
        rows["router_analysis_timestamp_seconds"].append(({"route": route}, float(at)))
    for gate in gates if isinstance(gates, list) else []:
        if not isinstance(gate, dict) or not isinstance(gate.get("name"), str):
            continue
        labels = {"route": route, "gate": gate["name"]}
        for verdict in VERDICTS:
            hit = float(gate.get("verdict") == verdict)
            rows["router_gate_verdict"].append(({**labels, "verdict": verdict}, hit))
        rows["router_gate_dry_run"].append((labels, float(bool(gate.get("dry_run")))))
        if isinstance(t := gate.get("threshold"), int | float):
            rows["router_gate_threshold"].append((labels, float(t)))
        cand, base = gate.get("candidate_n"), gate.get("baseline_n")
        for arm, n in (("candidate", cand), ("baseline", base)):
            if isinstance(n, int):
                rows["router_gate_samples"].append(({**labels, "arm": arm}, n))
        value = gate.get("value")
        placeholder = gate["name"] in RATIO_GATES and not value and gate.get("verdict") == "wait"
        if (
            isinstance(value, int | float)
            and isinstance(cand, int)
            and cand > 0
            and not placeholder
        ):
            rows["router_gate_value"].append((labels, float(value)))


_HELP: Final = {
    "router_rollout_info": "1 per rollout, naming its stable, candidate and active backends "
    "and automation level.",
    "router_rollout_phase": "1 for the rollout's current phase, 0 for its kind's other phases.",
    "router_rollout_revision": "The deployment number (a new candidate is a new revision).",
    "router_rollout_step": "The canary's current step, 0 for the first.",
    "router_rollout_steps": "How many steps the canary has.",
    "router_rollout_weight_ratio": "The canary candidate's share of requests, 0..1.",
    "router_rollout_step_pause_seconds": "How long the current step lasts at least.",
    "router_rollout_step_started_timestamp_seconds": "When the current step (window) began.",
    "router_rollout_updated_timestamp_seconds": "When the rollout last changed.",
    "router_rollout_aborted": "1 while a rollout is aborted, with what aborted it: the "
    "failing gate's name, operator or controller.",
    "router_analysis_timestamp_seconds": "When the leader last judged the route's gates.",
    "router_gate_verdict": "1 for a gate's latest verdict (pass, fail, wait), 0 for the others.",
    "router_gate_value": "The figure a gate judged (error-rate increase, latency ratio, "
    "agreement, PSI, ...); absent until it has one.",
    "router_gate_threshold": "The limit a gate judges its value against.",
    "router_gate_samples": "The sample a gate judged, per arm (requests or compared items).",
    "router_gate_dry_run": "1 when a gate only reports (dry_run: true) and never acts.",
}
