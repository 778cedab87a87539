"""The automation ladder's controller: the evidence per level, the level verb, `auto`.

Theory of operation. An automation route's rollout holds the level in force
(`Rollout.level`, "" meaning config.yaml's) and the start of the current
level's window (`step_started_at`; router/control/controller.py `window_id`). Every
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
(`plan`), writing from -> to, the actor and the figures to history.

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

from router.control.controller import CAS_ATTEMPTS, Reply, Writer, window_id
from router.control.follow import FALLBACKS
from router.core.ladder import Evidence, Judgement, judge, next_level, plan, rank
from router.core.rollout import Rollout
from router.dataplane.metrics import metric_lines, read_step_window
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
    if not isinstance(route.strategy, Automation):
        raise TypeError(f"route {route.name} is not an automation route")
    return route.strategy


class AutomationController:
    """KindController for `automation` routes (router/control/controller.py)."""

    kind = "automation"
    verbs = frozenset({"automation"})

    def __init__(self, store: StateStore, writer: Writer, alarms: Alarms = _no_alarms) -> None:
        self.store = store
        self.writer = writer
        self.alarms = alarms  # arms whose accuracy alarms (router/drift/concept_watch.py)
        self._explained: dict[str, float] = {}
        self._flushed = 0.0

    # -- the leader's tick ------------------------------------------------------------
    async def tick(self, route: CompiledRoute, now: float) -> None:
        if now - self._explained.get(route.name, 0.0) < EXPLAIN_INTERVAL:
            return
        self._explained[route.name] = now
        r = await self._ensure(route, now)
        if r is None:
            return
        out = await self.figures(route, now, r)
        strategy = automation_of(route)
        moved = plan(out["level"], strategy.spec.ladder, _evidence(out))
        if moved is not None:
            await self._move(route, r, moved[0], now, "controller", moved[1], out)
            return  # the next tick explains the new level
        await self.writer.explain(route.name, out)

    async def _ensure(self, route: CompiledRoute, now: float) -> Rollout | None:
        """The route's rollout, seeded from config.yaml when no replica holds one; a
        level moved by an edit of config.yaml opens a new window."""
        strategy = automation_of(route)
        current = await self.writer.live.read(route.name)
        level = strategy.level(current)
        if current is None:
            if not await self.writer.live.may_seed(route.name, now):
                return None
            fresh = Rollout(route.name, kind="automation", phase="running", step_started_at=now)
            fresh = fresh.evolve(updated_at=now, updated_by="config", extra={"window": level})
            fresh = fresh.evolve(reason=f"level {level} (config.yaml)")
            return await self.writer.write(fresh, 0, [{"event": "start", "to": level}], "config")
        if current.extra.get("window") == level:
            return current
        old = current.extra.get("window")
        new = current.evolve(step_started_at=now, extra={**current.extra, "window": level})
        new = new.evolve(reason=f"level {level} (config.yaml)", updated_at=now)
        events = [{"event": "automation_level", "from": old, "to": level}] if old else []
        return await self.writer.write(new, current.version, events, "config")

    async def watch(self, route: CompiledRoute, now: float) -> None:
        """Every replica: add this process's fallback counts to the store, once a second."""
        if now - self._flushed < FLUSH_INTERVAL:
            return
        self._flushed = now
        drained = FALLBACKS.drain()
        try:
            for name, words in drained.items():
                live = self.writer.live.snapshot.get(name)
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
        r = r or await self.writer.live.read(route.name)
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
        out["deferral_rate"] = _deferral(level, model.requests, human.requests)
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
        ev = _evidence(out)
        up = out["next_level"]
        out["next"] = _judgement(judge(up, spec.ladder, ev)) if up else None
        out["held"] = _judgement(judge(level, spec.ladder, ev)) if rank(level) > 0 else None
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
        for _ in range(CAS_ATTEMPTS):
            r = await self._ensure(route, now)
            if r is None:
                return 503, {"error": "the route's state is being restored; try again"}
            old = strategy.level(r)
            if level == old:
                return 200, {"message": f"already at {level}", "rollout": asdict(r)}
            out = await self.figures(route, now, r)
            refused = _refusal(old, level, out, force)
            if refused is not None:
                return 409, refused
            why = f"forced: {reason}" if force else ""
            stored = await self._move(route, r, level, now, actor, why, out)
            if stored is not None:
                return 200, {"message": stored.reason, "rollout": asdict(stored)}
        return 409, {"error": "the rollout kept changing under this command; try again"}

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
        old = automation_of(route).level(r)
        said = f"{old} -> {level} by {actor}" + (f" ({why})" if why else "")
        new = r.evolve(level=level, step_started_at=now, updated_at=now, updated_by=actor)
        new = new.evolve(reason=said, extra={**r.extra, "window": level})
        event: dict[str, Any] = {"event": "automation_level", "from": old, "to": level}
        event["reason"] = said
        event.update(forced=why.startswith("forced"), evidence=_summary(out))
        stored = await self.writer.write(new, r.version, [event], actor)
        if stored is not None:
            log.warning("automation level", route=route.name, reason=said)
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


def _refusal(old: str, level: str, out: Mapping[str, Any], force: bool) -> dict[str, Any] | None:
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


def _judgement(j: Judgement) -> dict[str, Any]:
    return {
        "level": j.level,
        "verdict": j.verdict,
        "text": j.text(),
        "checks": [{"name": c.name, "verdict": c.verdict, "text": c.text} for c in j.checks],
    }


def _evidence(out: Mapping[str, Any]) -> Evidence:
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


def _summary(out: Mapping[str, Any]) -> dict[str, Any]:
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


def _deferral(level: str, model: int, human: int) -> float | None:
    """Under partial the model asks first; every answer from the human was deferred."""
    if level != "partial" or model + human == 0:
        return None
    return human / (model + human)
