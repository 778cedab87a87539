"""The canary's controller: metric windows in, rollout transitions out.

Each rollout step has a window id (`step_window`): the replicas' metrics file
every request of a canary route under the id of the step that was live when it
was counted, so a step is judged on its own requests from every replica, and a
retried or new revision starts from zero (router/dataplane/metrics.py, "step windows").

The leader's `tick` reads those counts, asks the gates, and lets the pure state
machine (router/control/canary_machine.py) decide. `watch` runs on every replica a few times a
second on its own counts only, and only with the error-rate gates: enough to
stop a clearly broken candidate after a handful of failed requests.

Agreement. Mirrored comparisons of the candidate with the stable backend are
counted by router/shadow/mirror.py under the same window id and the route's compare id
(`cmp:<candidate>@<id>:<window>`, router/shadow/stored.py), item by item.
`observe` reads them for the fields the gates name and hands them to the gates
as `extra["agreement"]` (and the step's delayed labels per arm as
`extra["accuracy"]`, router/core/gates_accuracy.py); in shadow first the only gate judged is the
shadow-first agreement gate (router/control/canary_machine.py `judging_gates`), and the
window exists although no user reaches the candidate.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict
from typing import Any

import structlog

from router.control.canary_machine import (
    ABORTED,
    PAUSED,
    PROGRESSING,
    WAITING,
    WAITING_FOR_DATA,
    Event,
    InvalidCommand,
    Observation,
    command,
    in_shadow_first,
    initial,
    judging_gates,
    reconcile,
    step,
    window,
)
from router.control.controller import CAS_ATTEMPTS, Reply, Writer
from router.core.gates import GateResult, Sample, evaluate
from router.core.gates_ttft import GATE as TTFT
from router.core.rollout import Rollout
from router.dataplane.metrics import Metrics, WindowStats, read_step_window
from router.dataplane.routing import CompiledRoute
from router.drift.labels import backend_counts, window_counts
from router.drift.watch import prediction_counts
from router.shadow.figures import compare_id
from router.shadow.stored import read_agreement
from router.shadow.streams import read_window_hists
from router.state.base import StateStore
from router.state.live import LiveState
from strategies.canary import Canary, CanarySpec

log = structlog.get_logger("router.control.controller")

STEPS = frozenset({PROGRESSING, PAUSED, WAITING_FOR_DATA})  # phases with a metrics window
JUDGED = STEPS | {WAITING}  # shadow first is judged on mirrored comparisons alone
FAST_GATES = frozenset({"error_rate"})  # the gates a replica may act on alone


def step_window(r: Rollout | None) -> str | None:
    """The id under which requests of the rollout's current step are counted (metrics).

    Equal to controller.window_id. Shadow first has no metrics window (no user
    reaches the candidate); its comparisons have one: router/control/canary_machine.py `window`."""
    if r is None or r.kind != "canary" or r.phase not in STEPS:
        return None
    return window(r)


def sample(stats: WindowStats) -> Sample:
    return Sample(stats.requests, stats.errors, tuple(stats.hist))


def spec_of(route: CompiledRoute) -> CanarySpec:
    strategy = route.strategy
    if not isinstance(strategy, Canary):
        raise TypeError(f"route {route.name} is not a canary")
    return strategy.spec


def gate_dicts(gates: tuple[GateResult, ...]) -> list[dict[str, Any]]:
    return [asdict(g) for g in gates]


class CanaryController:
    kind = "canary"
    verbs = frozenset({"promote", "pause", "resume", "abort", "retry", "rollback"})

    def __init__(
        self, store: StateStore, live: LiveState, metrics: Metrics, writer: Writer
    ) -> None:
        self.store = store
        self.live = live
        self.metrics = metrics
        self.writer = writer
        self._judged_at: dict[str, float] = {}
        # route -> (window id, candidate and stable local counts when we first saw it)
        self._local_base: dict[str, tuple[str, WindowStats, WindowStats]] = {}

    # -- the leader's tick ----------------------------------------------------------
    async def tick(self, route: CompiledRoute, now: float) -> None:
        spec = spec_of(route)
        if route.name not in self.live.snapshot:
            await self._start(route.name, spec, now)
            return
        if now - self._judged_at.get(route.name, 0.0) < spec.analysis.interval:
            return
        self._judged_at[route.name] = now
        current = await self.live.read(route.name)
        if current is None:
            return  # the store lost it and our copy could not go back yet: next tick
        r, events = reconcile(current, spec, now)
        cid = compare_id(route.spec.protocol, spec.compare)  # as router/shadow/mirror.py counts
        obs = await self.observe(route.name, r, spec, cid) if r.phase in JUDGED else Observation()
        r, more = step(r, spec, obs, now)
        events += more
        if events or _moved(current, r):
            await self.writer.write(r, current.version, [e.entry() for e in events])
        await self.writer.explain(route.name, _explanation(r, spec, obs, now))

    async def _start(self, route: str, spec: CanarySpec, now: float) -> None:
        """Seed a rollout that no replica holds from config.yaml (live.may_seed)."""
        if await self.live.read(route) is None and await self.live.may_seed(route, now):
            fresh = initial(route, spec, now)
            await self.writer.write(fresh, 0, [Event("start", fresh.reason).entry()])

    async def observe(
        self, route: str, r: Rollout, spec: CanarySpec, compare_id: str = ""
    ) -> Observation:
        current = window(r)  # in shadow first no metrics are counted under it: zeros
        if current is None:
            return Observation()
        stats = await read_step_window(self.store, route, [r.candidate, r.stable], current)
        cand, base = sample(stats[r.candidate]), sample(stats[r.stable])
        extra: dict[str, object] = {}
        if spec.agreement_fields:
            fields = spec.agreement_fields
            extra["agreement"] = await read_agreement(
                self.store, route, r.candidate, current, fields, compare_id
            )
        gates = judging_gates(r, spec)
        if not in_shadow_first(r):
            extra["prediction_drift"] = await prediction_counts(
                self.store, route, current, r.candidate, r.stable
            )
            if any(g.name == "accuracy" for g in spec.analysis.gates):
                arms = await window_counts(self.store, route, current)
                extra["accuracy"] = {
                    "candidate": backend_counts(arms, r.candidate),
                    "stable": backend_counts({r.stable: arms.get(r.stable, {})}, r.stable),
                }
        if any(g.name == TTFT for g in gates):  # first-token histograms of the window
            hists = await read_window_hists(self.store, route, [r.candidate, r.stable], current)
            extra[TTFT] = {"candidate": hists[r.candidate], "stable": hists[r.stable]}
        results = tuple(g.judge(cand, base, extra) for g in gates)
        return Observation(results, cand.requests, base.requests)

    # -- every replica: stop a broken candidate now --------------------------------
    async def watch(self, route: CompiledRoute, now: float) -> None:
        r = self.live.snapshot.get(route.name)
        window = step_window(r)
        if r is None or window is None or in_shadow_first(r):  # no user on the candidate
            self._local_base.pop(route.name, None)
            return
        cand = self.metrics.local(route.name, r.candidate)
        base = self.metrics.local(route.name, r.stable)
        seen = self._local_base.get(route.name)
        if seen is None or seen[0] != window:
            self._local_base[route.name] = (window, cand, base)
            return
        failed = self._local_failures(spec_of(route), _minus(cand, seen[1]), _minus(base, seen[2]))
        if failed:
            await self._fast_abort(route, r, failed, now)

    def _local_failures(
        self, spec: CanarySpec, cand: Sample, base: Sample
    ) -> tuple[GateResult, ...]:
        gates = evaluate(spec.analysis, cand, base, {})
        return tuple(g for g in gates if g.name in FAST_GATES and g.acts and g.verdict == "fail")

    async def _fast_abort(
        self, route: CompiledRoute, seen: Rollout, failed: tuple[GateResult, ...], now: float
    ) -> None:
        current = await self.live.read(route.name)
        if current is None or step_window(current) != step_window(seen):
            return  # the rollout moved on meanwhile: its new window starts clean
        obs = Observation(failed, failed[0].candidate_n, failed[0].baseline_n)
        r, events = step(current, spec_of(route), obs, now)
        if r.phase != ABORTED:
            return
        entries = [{**e.entry(), "evidence": "local counts of one replica"} for e in events]
        stored = await self.writer.write(r, current.version, entries)
        if stored is not None:
            log.warning("canary aborted on local evidence", route=route.name, reason=r.reason)

    # -- routerctl ------------------------------------------------------------------
    async def command(
        self, route: CompiledRoute, verb: str, body: Mapping[str, Any], now: float
    ) -> Reply:
        spec = spec_of(route)
        actor = str(body.get("actor") or "routerctl")
        for _ in range(CAS_ATTEMPTS):
            current = await self.live.read(route.name)
            base = current or initial(route.name, spec, now)
            base, events = reconcile(base, spec, now) if current else (base, [])
            try:
                r, more = command(base, spec, verb, now, full=bool(body.get("full")))
            except InvalidCommand as exc:
                return 409, {"error": str(exc), "rollout": asdict(base)}
            if not more and current is not None:
                return 200, {"message": f"nothing to do: {base.reason}", "rollout": asdict(base)}
            entries = [e.entry() for e in [*events, *more]]
            stored = await self.writer.write(r, current.version if current else 0, entries, actor)
            if stored is not None:
                return 200, {"message": stored.reason, "rollout": asdict(stored)}
        return 409, {"error": "the rollout kept changing under this command; try again"}


def _minus(a: WindowStats, b: WindowStats) -> Sample:
    hist = tuple(x - y for x, y in zip(a.hist, b.hist, strict=True))
    return Sample(a.requests - b.requests, a.errors - b.errors, hist)


def _moved(old: Rollout, new: Rollout) -> bool:
    """A change worth a write (and a pub/sub message): not the live counts in the reason."""
    keys = ("revision", "phase", "step", "weight_bp", "stable", "candidate", "previous_stable")
    return any(getattr(old, k) != getattr(new, k) for k in keys) or old.extra != new.extra


def _explanation(r: Rollout, spec: CanarySpec, obs: Observation, now: float) -> dict[str, Any]:
    return {
        "at": now,
        "steps": [s.weight_bp for s in spec.steps],
        "phase": r.phase,
        "step": r.step,
        "weight_bp": r.weight_bp,
        "reason": r.reason,
        "candidate_requests": obs.candidate_requests,
        "baseline_requests": obs.baseline_requests,
        "gates": gate_dicts(obs.gates),
    }
