"""The automation ladder's controller: the evidence per level, the level verb, `auto`.

Theory of operation. An automation route's rollout holds the level in force
(`Rollout.level`, "" meaning config.yaml's) and the start of the current
level's window (`step_started_at`; router/control/base.py `window_id`). Every
replica counts under that window: requests per backend (router/dataplane/metrics.py),
the model's answers compared with the human's (router/shadow/mirror.py, mirrored at
shadow, both legs of one request at assist and partial), delayed labels per
arm (router/drift/labels.py) and fallbacks by reason (FALLBACKS, added to the
store by `watch` on every replica). So the figures behind the next step are
exactly those of the level the ladder stands on, from every replica: the
deferral rate of partial counts partial's requests only.

The leader's `tick` seeds the rollout of a route no replica holds (and opens a
new window when config.yaml moves the level), reads the evidence, judges the
next level's bar and the current one's (router/core/ladder.py), publishes it all
for `routerctl status` and, with `advance: auto`, moves one level up or down
(`plan`), writing from -> to, the actor and the figures to history. The moves
themselves, and what an operator may ask, are the pure machine of
router/control/automation_machine.py.

`routerctl automation ROUTE LEVEL` (`command`): down is instant; up is one
level at a time and only with its bar passed, unless `force` with a `reason`,
which history keeps beside the evidence that was missing.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import asdict
from typing import Any

import structlog
from aiohttp import web

from router.control.automation_machine import (
    deferral,
    evidence,
    judgement,
    moved,
    refusal,
    relevelled,
    seeded,
)
from router.control.base import KindBase, Reply, Writer, strategy_of, window_id
from router.core.ladder import judge, next_level, plan, rank
from router.core.rollout import Rollout
from router.dataplane.follow import FALLBACKS
from router.dataplane.metric_text import metric_lines
from router.dataplane.metrics import read_step_window
from router.dataplane.routing import CompiledRoute
from router.drift.labels import backend_counts, figures, window_counts
from router.ops.admin import Refusal
from router.shadow.figures import compare_id, summarize
from router.shadow.stored import window_counter
from router.state.base import StateStore, StoreUnavailable
from strategies.automation import LEVELS, Automation

log = structlog.get_logger("router.control.controller")

EXPLAIN_INTERVAL = 2.0
FLUSH_INTERVAL = 1.0
FALLBACK_TTL = 30 * 24 * 3600.0

Alarms = Callable[[str], list[str]]


def _no_alarms(route: str) -> list[str]:
    return []


def automation_of(route: CompiledRoute) -> Automation:
    return strategy_of(route, Automation, "an automation route")


class AutomationController(KindBase):
    """KindController for `automation` routes (router/control/controller.py)."""

    kind = "automation"
    verbs = frozenset({"automation"})

    def __init__(self, store: StateStore, writer: Writer, alarms: Alarms = _no_alarms) -> None:
        super().__init__(store, writer)
        self.alarms = alarms  # arms whose accuracy alarms (router/drift/concept_watch.py)
        self._flushed = 0.0

    # -- the leader's tick ------------------------------------------------------------
    async def tick(self, route: CompiledRoute, now: float) -> None:
        if not self.due(route.name, EXPLAIN_INTERVAL, now):
            return
        r = await self._ensure(route, now)
        if r is None:
            return
        out = await self.figures(route, now, r)
        strategy = automation_of(route)
        step = plan(out["level"], strategy.spec.ladder, evidence(out))
        if step is not None:
            await self._move(route, r, step[0], now, "controller", step[1], out)
            return  # the next tick explains the new level
        await self.writer.explain(route.name, out)

    async def _ensure(self, route: CompiledRoute, now: float) -> Rollout | None:
        """The route's rollout, seeded from config.yaml when no replica holds one; a
        level moved by an edit of config.yaml opens a new window."""
        strategy = automation_of(route)
        current = await self.live.read(route.name)
        level = strategy.level(current)
        if current is None:
            return await self.seed(route.name, now, *seeded(route.name, level, now), "config")
        if current.extra.get("window") == level:
            return current
        new, events = relevelled(current, level, now)
        return await self.writer.write(new, current.version, events, "config")

    async def watch(self, route: CompiledRoute, now: float) -> None:
        """Every replica: add this process's fallback counts to the store, once a second."""
        if now - self._flushed < FLUSH_INTERVAL:
            return
        self._flushed = now
        drained = FALLBACKS.drain()
        try:
            for name, words in drained.items():
                live = self.live.snapshot.get(name)
                window = window_id(live)
                hashes = {"fallback": dict(words)}
                if window is not None:
                    hashes[f"fallback:{window}"] = dict(words)
                await self.store.add_counters(name, hashes, FALLBACK_TTL)
        except StoreUnavailable:
            FALLBACKS.restore(drained)  # they go out with the next flush

    # -- the figures ------------------------------------------------------------------
    async def figures(
        self, route: CompiledRoute, now: float, r: Rollout | None = None
    ) -> dict[str, Any]:
        """The level in force and what its window has shown, with the bars judged."""
        strategy = automation_of(route)
        spec = strategy.spec
        r = r or await self.live.read(route.name)
        level, window = strategy.level(r), window_id(r)
        out: dict[str, Any] = {"at": now, "kind": "automation", "level": level}
        out.update(next_level=next_level(level), window=window, advance=spec.ladder.advance)
        out.update(advance_to=spec.ladder.advance_to, seconds=now - r.step_started_at if r else 0)
        out["fallbacks"] = await self._fallbacks(route.name, window)
        if window is None:
            return out
        stats = await read_step_window(self.store, route.name, [spec.model, spec.human], window)
        model, human = stats[spec.model], stats[spec.human]
        out["model_requests"], out["human_requests"] = model.requests, human.requests
        out["deferral_rate"] = deferral(level, model.requests, human.requests)
        out["model_error_rate"] = model.error_rate()
        cid = compare_id(route.spec.protocol, spec.compare)
        name = window_counter(spec.model, window, cid)
        counted = (await self.store.read_counters(route.name, [name])).get(name, {})
        out["agreement"] = summarize(counted).to_dict() if counted else None
        arms = await window_counts(self.store, route.name, window)
        out["accuracy"] = figures(arms)
        out["labels"] = {
            "model": backend_counts(arms, spec.model),
            "human": backend_counts({spec.human: arms.get(spec.human, {})}, spec.human),
        }
        out["alarms"] = [a for a in self.alarms(route.name) if a.partition("~")[0] == spec.model]
        ev = evidence(out)
        up = out["next_level"]
        out["next"] = judgement(judge(up, spec.ladder, ev)) if up else None
        out["held"] = judgement(judge(level, spec.ladder, ev)) if rank(level) > 0 else None
        return out

    async def _fallbacks(self, route: str, window: str | None) -> dict[str, dict[str, int]]:
        names = ["fallback", *([f"fallback:{window}"] if window else [])]
        found = await self.store.read_counters(route, names)
        return {"total": found.get("fallback", {}), "level": found.get(names[-1], {})}

    # -- routerctl automation ROUTE LEVEL [--force --reason] ------------------------
    async def command(
        self, route: CompiledRoute, verb: str, body: Mapping[str, Any], now: float
    ) -> Reply:
        level = body.get("level")
        if level not in LEVELS:
            return 400, {"error": f"level must be one of {', '.join(LEVELS)}", "got": level}
        force, reason = bool(body.get("force")), str(body.get("reason") or "").strip()
        if force and not reason:
            return 400, {
                "error": "--force needs --reason: history keeps why the evidence was skipped"
            }
        strategy = automation_of(route)
        if level == "partial" and strategy.spec.confidence is None:
            return 409, {"error": "partial needs `confidence` (a JSON path) in config.yaml"}
        actor = str(body.get("actor") or "routerctl")

        async def attempt(_: int) -> Reply | None:
            r = await self._ensure(route, now)
            if r is None:
                return 503, {"error": "the route's state is being restored; try again"}
            old = strategy.level(r)
            if level == old:
                return 200, {"message": f"already at {level}", "rollout": asdict(r)}
            out = await self.figures(route, now, r)
            refused = refusal(old, level, out, force)
            if refused is not None:
                return 409, refused
            why = f"forced: {reason}" if force else ""
            stored = await self._move(route, r, level, now, actor, why, out)
            return (
                None
                if stored is None
                else (200, {"message": stored.reason, "rollout": asdict(stored)})
            )

        return await self.until_written(attempt)

    async def _move(
        self,
        route: CompiledRoute,
        r: Rollout,
        level: str,
        now: float,
        actor: str,
        why: str,
        out: Mapping[str, Any],
    ) -> Rollout | None:
        new, event = moved(r, automation_of(route).level(r), level, now, actor, why, out)
        stored = await self.writer.write(new, r.version, [event], actor)
        if stored is not None:
            log.warning("automation level", route=route.name, reason=new.reason)
        return stored

    # -- admin extension: Prometheus -------------------------------------------------
    def install(self, app: web.Application, refusal: Refusal) -> None:
        return None  # the level verb is a route action (router/control/controller.py)

    def metric_lines(self) -> list[str]:
        samples = [
            ({"route": route, "reason": word}, float(n))
            for (route, word), n in sorted(FALLBACKS.total.items())
        ]
        return metric_lines(
            "router_automation_fallbacks_total",
            "counter",
            "Requests the human answered because the model failed, by reason (this process).",
            samples,
        )
