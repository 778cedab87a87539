"""The controller: moves rollouts forward, and back, with nobody watching.

Theory of operation. Every router process runs a `Controller`, but only the
holder of the `controller` lease (router/state/lease.py) makes the regular
decisions: each tick it reads every rollout from the store (never the snapshot:
the store is the truth), reconciles it with config.yaml (a new candidate is a
new revision, edited steps apply to the running one), reads the metric counts of
the current step from every replica (router/dataplane/metrics.py, "step windows"), asks
the gates (router/core/gates.py) and the kind's pure state machine
(router/control/*_machine.py, tables of router/control/machine.py) what to
do, and writes the result by compare-and-set. History gets one entry per event
with the figures behind it. A write is announced by pub/sub, so every
replica's data plane follows within milliseconds.

Stopping is urgent, going forward is not. Every replica, leader or not, also
watches its own counts a few times a second; when its local data alone already
fails an error-rate gate, it aborts at once by compare-and-set, without waiting
for a flush or the leader. Promotion is only decided by the leader on data
aggregated from every replica.

When the store is unreachable nothing moves: no promotion, no abort on missing
data; the data plane keeps routing on its last snapshot.

Strategy kinds plug in as `KindController`s (router/control/canary.py,
bluegreen.py, automation.py, on the shared half in base.py): `tick` for the
leader's regular pass, `command` for `routerctl` verbs, `watch` for the
per-replica fast path.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict
from typing import Any, Protocol

import structlog

from router.control.base import ANALYSIS_SAMPLE, Reply
from router.core.rollout import Rollout
from router.dataplane.routing import CompiledRoute
from router.runtime import Runtime
from router.state.base import StateStore, StoreUnavailable
from router.state.lease import Leadership

log = structlog.get_logger("router.control.controller")

WATCH_INTERVAL = 0.2  # seconds between local fast-abort checks

# Commands are refused, not queued, while the store is down: a queued rollback
# applied minutes later, after the operator moved on, would be a surprise.
_STORE_DOWN = (
    "state store unreachable, nothing changed ({exc}). Every replica keeps routing as "
    "it was; run the command again once the store answers, or change the route's "
    "strategy in config.yaml, which every replica applies without the store"
)


class KindController(Protocol):
    kind: str
    verbs: frozenset[str]

    async def tick(self, route: CompiledRoute, now: float) -> None: ...

    async def command(
        self, route: CompiledRoute, verb: str, body: Mapping[str, Any], now: float
    ) -> Reply: ...

    async def watch(self, route: CompiledRoute, now: float) -> None: ...


class Controller:
    """Runs the kind controllers: ticks when leading, fast checks always."""

    def __init__(
        self,
        runtime: Runtime,
        store: StateStore,
        leadership: Leadership,
        kinds: Sequence[KindController],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.runtime = runtime
        self.store = store
        self.leadership = leadership
        self.kinds = {k.kind: k for k in kinds}
        self.clock = clock
        self._tasks: list[asyncio.Task[None]] = []

    # -- lifecycle ----------------------------------------------------------
    async def start(self) -> None:
        await self.leadership.start()
        self._tasks = [
            asyncio.create_task(self._loop(self._tick_all, self._interval), name="controller"),
            asyncio.create_task(self._loop(self._watch_all, _watch_interval), name="fast-abort"),
        ]

    async def stop(self) -> None:
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self.leadership.stop()

    def _interval(self) -> float:
        return self.runtime.config.controller.interval

    async def _loop(self, body: Callable[[float], Any], interval: Callable[[], float]) -> None:
        while True:
            await asyncio.sleep(interval())
            try:
                await body(self.clock())
            except StoreUnavailable as exc:  # hold every rollout where it is
                log.warning("controller holds: state store unreachable", error=str(exc))
            except Exception:  # never die: the next tick tries again
                log.exception("controller tick failed")

    # -- passes -----------------------------------------------------------------
    def _routes(self) -> list[tuple[CompiledRoute, KindController]]:
        routes = self.runtime.table.by_name.values()
        return [(r, k) for r in routes if (k := self.kinds.get(r.spec.strategy_kind))]

    async def _tick_all(self, now: float) -> None:
        if not self.leadership.is_leader:
            return
        for route, kind in self._routes():
            await kind.tick(route, now)

    async def _watch_all(self, now: float) -> None:
        for route, kind in self._routes():
            await kind.watch(route, now)

    async def tick(self, now: float | None = None) -> None:
        """One leader pass now (tests and `routerctl` use it to skip the wait)."""
        await self._tick_all(self.clock() if now is None else now)

    # -- routerctl ---------------------------------------------------------------
    def verbs(self) -> list[str]:
        return sorted({v for k in self.kinds.values() for v in k.verbs})

    def action(self, verb: str) -> Callable[[str, dict[str, Any]], Any]:
        """The admin API's handler for one verb (see router/ops/admin.py `actions`)."""

        async def handle(route_name: str, body: dict[str, Any]) -> Reply:
            route = self.runtime.table.by_name.get(route_name)
            kind = self.kinds.get(route.spec.strategy_kind) if route else None
            if route is None or kind is None or verb not in kind.verbs:
                what = route.spec.strategy_kind if route else "unknown"
                return 409, {"error": f"{verb} does not apply to route {route_name!r} ({what})"}
            try:
                return await kind.command(route, verb, body, self.clock())
            except StoreUnavailable as exc:
                return 503, {"error": _STORE_DOWN.format(exc=exc)}

        return handle

    async def explain(self) -> dict[str, Any]:
        """The latest verdicts of every controlled route, for /v1/status."""
        out: dict[str, Any] = {}
        for route, _ in self._routes():
            with contextlib.suppress(StoreUnavailable, ValueError):
                items = await self.store.samples(route.name, ANALYSIS_SAMPLE, 1)
                if items:
                    out[route.name] = json.loads(items[0])
        return {"analysis": out, "leader": self.leadership.is_leader}


def _watch_interval() -> float:
    return WATCH_INTERVAL


def rollout_dict(r: Rollout) -> dict[str, Any]:
    return asdict(r)
