"""The canary's controller: metric windows in, rollout transitions out.

Each rollout step has a window id (router/control/base.py `window_id`): the
replicas' metrics file every request of a canary route under the id of the step
that was live when it was counted, so a step is judged on its own requests from
every replica, and a retried or new revision starts from zero
(router/dataplane/metrics.py, "step windows"). What every kind does alike (the
throttle, seeding, the command loop, the fast path's bookkeeping) is in base.py.

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

from router.control import canary_machine as machine
from router.control.base import (
    Counts,
    Entry,
    KindBase,
    Reply,
    Writer,
    counted_window,
    minus,
    sample,
    strategy_of,
    window_id,
)
from router.control.canary_machine import ABORTED, Observation, in_shadow_first, judging_gates
from router.control.machine import InvalidCommand, gate_dicts
from router.core.analysis import evaluate
from router.core.gates import GateResult
from router.core.gates_ttft import GATE as TTFT
from router.core.rollout import Rollout
from router.dataplane.metrics import Metrics, read_step_window
from router.dataplane.routing import CompiledRoute
from router.drift.labels import backend_counts, window_counts
from router.drift.watch import prediction_counts
from router.shadow.figures import compare_id
from router.shadow.stored import read_agreement
from router.shadow.streams import read_window_hists
from router.state.base import StateStore
from router.state.live import LiveState
from strategies.canary import Canary, CanarySpec


def spec_of(route: CompiledRoute) -> CanarySpec:
    return strategy_of(route, Canary, "a canary").spec


class CanaryController(KindBase):
    kind = "canary"
    verbs = frozenset({"promote", "pause", "resume", "abort", "retry", "rollback"})
    stopped = "canary aborted on local evidence"

    def __init__(
        self, store: StateStore, live: LiveState, metrics: Metrics, writer: Writer
    ) -> None:
        super().__init__(store, writer, metrics)

    # -- the leader's tick ----------------------------------------------------------
    async def tick(self, route: CompiledRoute, now: float) -> None:
        spec = spec_of(route)
        current = await self.judged(
            route.name, spec.analysis.interval, now, lambda: machine.initial(route.name, spec, now)
        )
        if current is None:
            return
        r, events = machine.reconcile(current, spec, now)
        cid = compare_id(route.spec.protocol, spec.compare)  # as router/shadow/mirror.py counts
        judged = window_id(r) is not None  # shadow first too: on its comparisons
        obs = await self.observe(route.name, r, spec, cid) if judged else Observation()
        r, more = machine.step(r, spec, obs, now)
        events += more
        if events or _moved(current, r):
            await self.writer.write(r, current.version, [e.entry() for e in events])
        await self.writer.explain(route.name, _explanation(r, spec, obs, now))

    async def observe(
        self, route: str, r: Rollout, spec: CanarySpec, compare_id: str = ""
    ) -> Observation:
        current = window_id(r)  # in shadow first no metrics are counted under it: zeros
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

    # -- every replica: stop a broken candidate now (router/control/base.py) ------------
    def fast_window(self, r: Rollout) -> str | None:
        return None if in_shadow_first(r) else counted_window(r)  # no user on the candidate

    def fast_arms(self, route: CompiledRoute, r: Rollout) -> tuple[str, str]:
        return r.candidate, r.stable

    def fast_gates(self, route: CompiledRoute, now: Counts, seen: Counts) -> list[GateResult]:
        cand, base = minus(now[0], seen[0]), minus(now[1], seen[1])
        return evaluate(spec_of(route).analysis, cand, base, {})

    def fast_stop(
        self, route: CompiledRoute, r: Rollout, failed: tuple[GateResult, ...], now: float
    ) -> tuple[Rollout, list[Entry]] | None:
        obs = Observation(failed, failed[0].candidate_n, failed[0].baseline_n)
        new, events = machine.step(r, spec_of(route), obs, now)
        return (new, [e.entry() for e in events]) if new.phase == ABORTED else None

    # -- routerctl ------------------------------------------------------------------
    async def command(
        self, route: CompiledRoute, verb: str, body: Mapping[str, Any], now: float
    ) -> Reply:
        spec = spec_of(route)
        actor = str(body.get("actor") or "routerctl")

        async def attempt(_: int) -> Reply | None:
            current = await self.live.read(route.name)
            base = current or machine.initial(route.name, spec, now)
            base, events = machine.reconcile(base, spec, now) if current else (base, [])
            try:
                r, more = machine.command(base, spec, verb, now, full=bool(body.get("full")))
            except InvalidCommand as exc:
                return 409, {"error": str(exc), "rollout": asdict(base)}
            if not more and current is not None:
                return 200, {"message": f"nothing to do: {base.reason}", "rollout": asdict(base)}
            entries = [e.entry() for e in [*events, *more]]
            stored = await self.writer.write(r, current.version if current else 0, entries, actor)
            return (
                None
                if stored is None
                else (200, {"message": stored.reason, "rollout": asdict(stored)})
            )

        return await self.until_written(attempt)


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
