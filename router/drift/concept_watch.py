"""Concept drift's I/O: the leader feeds each arm's new labels to its test.

Theory of operation. Every LOOK_INTERVAL the controller's leader reads, for
each route with delayed labels (a `drift:` block with `outputs`), the
per-minute label counts of every arm (router/drift/labels.py `fb:<minute>`,
summed over replicas) from the minute it last looked at on, feeds what is new
to the arm's `ArmWatch` (router/core/concept.py) in order, and stores the states
(the route's `concept` sample, one item), so a new leader goes on where the
last one stopped. An arm entering or leaving alarm is a history entry
(`accuracy_alarm` / `accuracy_cleared`, with the figures), a log line and the
gauge `router_accuracy_alarm{route,arm}`. `reset` forgets a route's states:
the next REFERENCE labels of each arm become its reference.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Callable
from typing import Any

import structlog
from aiohttp import web

from router.core.concept import ArmWatch
from router.dataplane.metric_text import metric_lines
from router.drift.labels import HORIZON, SLOT, by_arm
from router.ops.admin import Refusal
from router.runtime import Runtime
from router.state.base import StateStore, StoreUnavailable

log = structlog.get_logger("router.core.concept")

LOOK_INTERVAL = 1.0
KIND = "concept"  # the route's sample holding the states
TTL = 30 * 24 * 3600.0


class ConceptIO:
    """One per router process; only the leader looks."""

    def __init__(
        self,
        runtime: Runtime,
        store: StateStore,
        is_leader: Callable[[], bool],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.runtime = runtime
        self.store = store
        self.is_leader = is_leader
        self.clock = clock
        self.last: dict[str, dict[str, ArmWatch]] = {}  # route -> arm -> state, as last seen
        self._task: asyncio.Task[None] | None = None

    def routes(self) -> list[str]:
        return [
            r.name for r in self.runtime.config.routes if r.drift is not None and r.drift.outputs
        ]

    async def load(self, route: str) -> tuple[int, dict[str, Any], dict[str, ArmWatch]]:
        """(last slot looked at, counts of that slot already fed, states) of a route."""
        items = await self.store.samples(route, KIND, 1)
        data: dict[str, Any] = json.loads(items[0]) if items else {}
        arms = {a: ArmWatch.from_dict(d) for a, d in data.get("arms", {}).items()}
        return int(data.get("slot", 0)), data.get("fed", {}), arms

    async def look(self, route: str) -> list[tuple[str, str, ArmWatch]]:
        """Feed the labels counted since the last look; (arm, event, state) per change."""
        now_slot = int(self.clock() // SLOT)
        slot, fed, arms = await self.load(route)
        first = max(slot, now_slot - HORIZON + 1) if slot else now_slot - HORIZON + 1
        names = [f"fb:{s}" for s in range(first, now_slot + 1)]
        hashes = await self.store.read_counters(route, names)
        events: list[tuple[str, str, ArmWatch]] = []
        for s in range(first, now_slot + 1):
            for arm, f in sorted(by_arm(hashes.get(f"fb:{s}", {})).items()):
                seen = fed.get(arm, [0, 0]) if s == slot else [0, 0]
                n, ok = f.get("n", 0) - seen[0], f.get("ok", 0) - seen[1]
                if n > 0:
                    event = arms.setdefault(arm, ArmWatch()).feed(n, ok)
                    if event:
                        events.append((arm, event, arms[arm]))
        last = by_arm(hashes.get(f"fb:{now_slot}", {}))
        state = {
            "slot": now_slot,
            "fed": {a: [f.get("n", 0), f.get("ok", 0)] for a, f in last.items()},
            "arms": {a: w.to_dict() for a, w in arms.items()},
        }
        await self.store.push_sample(route, KIND, json.dumps(state), 1, TTL)
        self.last[route] = arms
        return events

    async def look_all(self) -> None:
        if not self.is_leader():
            return
        for route in self.routes():
            for arm, event, watch in await self.look(route):
                await self._announce(route, arm, event, watch)

    async def _announce(self, route: str, arm: str, event: str, watch: ArmWatch) -> None:
        f = watch.figures()
        name = f"accuracy_{event}"
        words = (
            f"{arm}: accuracy {_pct(f['since'])} over {f['since_n']} labels since its reference "
            f"{_pct(f['reference'])} ({f['reference_n']} labels); CUSUM {f['cusum']} "
            f"(alarm at {f['threshold']})"
        )
        (log.warning if event == "alarm" else log.info)(name, route=route, arm=arm, **f)
        entry = {"event": name, "arm": arm, "actor": "concept", "reason": words, **f}
        with contextlib.suppress(StoreUnavailable):
            await self.store.add_history(route, entry)

    async def figures(self, route: str) -> dict[str, Any]:
        """Every arm's reference, statistic and alarm, as stored."""
        _, _, arms = await self.load(route)
        return {arm: w.figures() for arm, w in sorted(arms.items())}

    def alarms(self, route: str) -> list[str]:
        """Arms in alarm at the leader's last look (the ladder reads the model's)."""
        return sorted(a for a, w in self.last.get(route, {}).items() if w.alarm)

    async def reset(self, route: str) -> tuple[int, dict[str, Any]]:
        await self.store.clear_samples(route, KIND)
        self.last.pop(route, None)
        await self.store.add_history(route, {"event": "accuracy_reset", "actor": "routerctl"})
        return 200, {"message": "each arm's next labels become its accuracy reference"}

    # -- admin API and Prometheus (router/ops/admin.py AdminExtension) ---------------------
    def install(self, app: web.Application, refusal: Refusal) -> None:
        """POST /v1/routes/NAME/feedback/reset (token)."""

        async def reset(request: web.Request) -> web.Response:
            if (refused := refusal(request)) is not None:
                return refused
            status, body = await self.reset(request.match_info["name"])
            return web.json_response(body, status=status)

        app.router.add_post("/v1/routes/{name}/feedback/reset", reset)

    def metric_lines(self) -> list[str]:
        alarm: list[tuple[dict[str, str], float]] = []
        stat: list[tuple[dict[str, str], float]] = []
        for route, arms in self.last.items():
            for arm, w in arms.items():
                labels = {"route": route, "arm": arm}
                alarm.append((labels, float(w.alarm)))
                stat.append((labels, w.s))
        return [
            *metric_lines(
                "router_accuracy_alarm", "gauge", "1 while an arm's accuracy alarms.", alarm
            ),
            *metric_lines(
                "router_accuracy_cusum", "gauge", "The accuracy test's statistic per arm.", stat
            ),
        ]

    # -- lifecycle ---------------------------------------------------------------------
    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="concept-look")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(LOOK_INTERVAL)
            try:
                await self.look_all()
            except StoreUnavailable as exc:
                log.warning("concept: state store unreachable", error=str(exc))
            except Exception:  # never die: the next look tries again
                log.exception("concept look failed")


def _pct(x: object) -> str:
    return f"{float(x) * 100:.1f} %" if isinstance(x, int | float) else "-"
