"""What every kind's controller does the same way; each kind brings only what differs.

Theory of operation. A kind's controller (canary, blue/green, automation) is a
pure state machine (its `*_machine.py`, a `Table` of router/control/machine.py)
driven by I/O that is the same for every kind, held here:

- the window id (`window_id`): ONE function for every kind, from its table's
  judged phases: the metrics (`counted_window`, given to `Metrics.step_window`),
  mirrored comparisons, drift and stream timing file what they count under it,
  so each judged period (a canary step, a blue/green watch, an automation
  level) is judged on its own requests from every replica, and a retry or a new
  revision starts from zero;
- seeding (`seed`): a route that no replica holds starts from config.yaml, but
  only once `LiveState.may_seed` says every replica had its chance to write
  back what it holds (router/state/live.py);
- the judge throttle (`due`): the leader judges a route every `interval`, not
  every tick;
- the compare-and-set command loop (`until_written`): an operator's command
  reads, decides and writes; losing a race with another writer reads again, a
  few times, then says so;
- the local fast path (`watch`): every replica, leader or not, compares its own
  counts since it first saw the window with the baseline a few times a second;
  when the error-rate gate alone already fails there, it stops the rollout by
  compare-and-set without waiting for a flush or the leader. A kind opts in by
  giving `fast_window`, `fast_arms`, `fast_gates` and `fast_stop`.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, TypeVar

import structlog

from router.control import automation_machine, bluegreen_machine, canary_machine
from router.control.machine import Table
from router.core.gates import GateResult, Sample
from router.core.rollout import Rollout
from router.dataplane.metrics import Metrics, WindowStats
from router.dataplane.routing import CompiledRoute
from router.state.base import StateStore
from router.state.live import LiveState

log = structlog.get_logger("router.control.controller")

Reply = tuple[int, dict[str, Any]]
Entry = Mapping[str, Any]  # one history event
ANALYSIS_SAMPLE = "analysis"  # store sample kind: the latest verdicts of a route
ANALYSIS_TTL = 24 * 3600.0
CAS_ATTEMPTS = 5
KEPT_CHANGING = "the rollout kept changing under this command; try again"
FAST_GATES = frozenset({"error_rate"})  # the gates a replica may act on alone
LOCAL_EVIDENCE = "local counts of one replica"

TABLES: dict[str, Table[Any]] = {
    t.kind: t for t in (canary_machine.TABLE, bluegreen_machine.TABLE, automation_machine.TABLE)
}


def window_id(r: Rollout | None) -> str | None:
    """The id of the rollout's judged period (see the module doc); None: none open."""
    table = TABLES.get(r.kind) if r is not None else None
    return table.window(r) if table is not None and r is not None else None


def counted_window(r: Rollout | None) -> str | None:
    """The window the metrics count the route's requests under (`Metrics.step_window`)."""
    table = TABLES.get(r.kind) if r is not None else None
    return table.counted_window(r) if table is not None and r is not None else None


S = TypeVar("S")


def strategy_of(route: CompiledRoute, kind: type[S], what: str) -> S:
    """The route's strategy, which a kind's controller only ever gets for its own routes."""
    if not isinstance(route.strategy, kind):
        raise TypeError(f"route {route.name} is not {what}")
    return route.strategy


def sample(stats: WindowStats) -> Sample:
    return Sample(stats.requests, stats.errors, tuple(stats.hist))


def minus(a: WindowStats, b: WindowStats) -> Sample:
    """The counts of `a` since `b` was taken."""
    hist = tuple(x - y for x, y in zip(a.hist, b.hist, strict=True))
    return Sample(a.requests - b.requests, a.errors - b.errors, hist)


class Writer:
    """Compare-and-set writes of rollouts plus their history, shared by every kind."""

    def __init__(self, store: StateStore, live: LiveState, actor: str) -> None:
        self.store = store
        self.live = live
        self.actor = actor
        # told each stored rollout's events and who wrote them (None: the controller),
        # once written: /metrics counts transitions (router/ops/telemetry.py)
        self.on_written: Callable[[Rollout, Sequence[Entry], str | None], None] | None = None

    async def write(
        self,
        new: Rollout,
        expected_version: int,
        events: Sequence[Entry],
        actor: str | None = None,
    ) -> Rollout | None:
        """Store `new` if nobody wrote since `expected_version`; then its history."""
        stored = await self.store.cas_rollout(new, expected_version)
        if stored is None:
            return None
        self.live.apply(stored)
        for event in events:
            entry = {
                "actor": actor or self.actor,
                "revision": stored.revision,
                "phase": stored.phase,
                "step": stored.step,
                "weight_bp": stored.weight_bp,
                **event,
            }
            await self.store.add_history(stored.route, entry)
        if self.on_written is not None and events:
            self.on_written(stored, events, actor)
        return stored

    async def explain(self, route: str, figures: Mapping[str, Any]) -> None:
        """Keep the latest verdicts where every replica's `status` can read them."""
        text = json.dumps(figures, separators=(",", ":"), default=str)
        await self.store.push_sample(route, ANALYSIS_SAMPLE, text, 1, ANALYSIS_TTL)


Counts = tuple[WindowStats, WindowStats]  # (the new arm's, the baseline's) local counts
Attempt = Callable[[int], Awaitable[Reply | None]]


class KindBase:
    """The shared half of a KindController (router/control/controller.py)."""

    kind = ""
    verbs: frozenset[str] = frozenset()
    stopped = ""  # the log line of a stop on local evidence

    def __init__(self, store: StateStore, writer: Writer, metrics: Metrics | None = None) -> None:
        self.store = store
        self.writer = writer
        self.live = writer.live
        self.metrics = metrics
        self._judged_at: dict[str, float] = {}
        # route -> (window id, the new arm's and the baseline's local counts when first seen)
        self._local_base: dict[str, tuple[str, Counts]] = {}

    # -- the leader ---------------------------------------------------------------
    def due(self, route: str, every: float, now: float) -> bool:
        """True once per `every` seconds per route: the leader's judging pace."""
        if now - self._judged_at.get(route, 0.0) < every:
            return False
        self._judged_at[route] = now
        return True

    async def seed(
        self, route: str, now: float, fresh: Rollout, events: Sequence[Entry], actor: str = ""
    ) -> Rollout | None:
        """Store `fresh` for a route the store does not hold, once `may_seed` says so."""
        if not await self.live.may_seed(route, now):
            return None
        return await self.writer.write(fresh, 0, events, actor or None)

    async def judged(
        self, route: str, every: float, now: float, fresh: Callable[[], Rollout]
    ) -> Rollout | None:
        """The rollout the leader judges now, if it is time; seeds a missing one."""
        if route not in self.live.snapshot:
            if await self.live.read(route) is None:
                r = fresh()
                await self.seed(route, now, r, [{"event": "start", "reason": r.reason}])
            return None
        if not self.due(route, every, now):
            return None
        return await self.live.read(route)  # None: the store lost it, our copy is not back yet

    # -- routerctl -------------------------------------------------------------------
    async def until_written(self, attempt: Attempt) -> Reply:
        """Run `attempt(n)` until it replies; None means it lost a compare-and-set race."""
        for n in range(CAS_ATTEMPTS):
            reply = await attempt(n)
            if reply is not None:
                return reply
        return 409, {"error": KEPT_CHANGING}

    # -- every replica: stop a clearly broken rollout now ------------------------------
    async def watch(self, route: CompiledRoute, now: float) -> None:
        r = self.live.snapshot.get(route.name)
        window = self.fast_window(r) if r is not None and r.kind == self.kind else None
        if r is None or window is None or self.metrics is None:
            self._local_base.pop(route.name, None)
            return
        new, old = self.fast_arms(route, r)
        counts = (self.metrics.local(route.name, new), self.metrics.local(route.name, old))
        seen = self._local_base.get(route.name)
        if seen is None or seen[0] != window:
            self._local_base[route.name] = (window, counts)
            return
        gates = self.fast_gates(route, counts, seen[1])
        failed = tuple(g for g in gates if g.name in FAST_GATES and g.acts and g.verdict == "fail")
        if failed:
            await self._fast_stop(route, window, failed, now)

    async def _fast_stop(
        self, route: CompiledRoute, window: str, failed: tuple[GateResult, ...], now: float
    ) -> None:
        current = await self.live.read(route.name)
        if current is None or current.kind != self.kind or self.fast_window(current) != window:
            return  # the rollout moved on meanwhile: its new window starts clean
        stop = self.fast_stop(route, current, failed, now)
        if stop is None:
            return
        new, events = stop
        entries = [{**e, "evidence": LOCAL_EVIDENCE} for e in events]
        if await self.writer.write(new, current.version, entries) is not None:
            log.warning(self.stopped, route=route.name, reason=new.reason)

    def fast_window(self, r: Rollout) -> str | None:
        """The window the fast path watches in `r` (None: no fast path, the default)."""
        return None

    def fast_arms(self, route: CompiledRoute, r: Rollout) -> tuple[str, str]:
        """The backends of the new arm and of its baseline."""
        raise NotImplementedError

    def fast_gates(self, route: CompiledRoute, now: Counts, seen: Counts) -> list[GateResult]:
        """The gates on the local counts `now`, against those `seen` at the window's start."""
        raise NotImplementedError

    def fast_stop(
        self, route: CompiledRoute, r: Rollout, failed: tuple[GateResult, ...], now: float
    ) -> tuple[Rollout, list[Entry]] | None:
        """The stop the failed gates call for (None: none after all)."""
        raise NotImplementedError
