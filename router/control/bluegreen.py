"""Blue/green's controller: checked switches, instant rollbacks, a watch after each switch.

The phases of a blue/green rollout and the moves between them are the pure
machine of router/control/bluegreen_machine.py; this module does the I/O around
it, with what every kind shares in router/control/base.py.

Switch (`routerctl switch`). The idle colour is checked first, from the
process that got the command (router/control/checks.py): its backend's health
path must answer 2xx and every `smoke` request must get its expected status,
else 409 and nothing changes (`force: true` skips the checks). The switch itself is ONE
compare-and-set of the rollout (`Writer.write`), announced by pub/sub: every
replica re-reads that one key and swaps its snapshot, so all of them route the
new way within milliseconds; a request already in flight finishes where it
was sent (the data plane decides once per request). A backend without a health
path is not health-checked; the answer says so.

Rollback (`routerctl rollback`) goes back to the previous colour at once, in
any phase, with no check: that colour was serving until the switch, and a
rollback that could be refused or delayed by a check would fail when it is
needed most. It starts no watch (a watch that could switch again would make
the panic button bounce). After an automatic or a manual switch back, rollback
is a no-op: pressing it twice never returns to the broken colour; `switch`
(checked) does that.

The watch. A switch opens a metrics window (base.window_id: revision
and switch time), so the new colour's requests from every replica are counted
on their own. The baseline is what the OLD colour did just BEFORE the switch:
its fixed 10-second windows over `watch.baseline` seconds (router/dataplane/metrics.py
read_window), the same load of the same users, by the colour whose place is
taken. The old colour's windows after the switch would be a poor baseline
(only preview requests reach it) and the new colour's preview traffic before
the switch is not the real load. The leader judges every `watch.interval`: a
failing gate switches back (phase aborted, the gates' figures in history); the
window ending with no failure settles the rollout (steady). Lack of data is
never a failure: a quiet window passes as "nothing failed".

Every replica also runs the fast path a few times a second: its own counts of
the new colour since it saw the switch against its own counts of the old
colour before that; when the error-rate gate alone already fails, it switches
back by compare-and-set without waiting for the leader (router/control/base.py).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import asdict
from typing import Any

from router.control.base import (
    Counts,
    Entry,
    KindBase,
    Reply,
    Writer,
    minus,
    sample,
    strategy_of,
    window_id,
)
from router.control.bluegreen_machine import (
    KIND,
    SWITCHED_BACK,
    WATCHING,
    initial,
    reconcile,
    reverted,
    rolled_back,
    settled,
    switched,
)
from router.control.checks import check_backend
from router.control.machine import gate_dicts
from router.core.analysis import evaluate
from router.core.gates import GateResult
from router.core.rollout import Rollout
from router.dataplane.metrics import Metrics, read_step_window, read_window
from router.dataplane.routing import CompiledRoute
from router.runtime import Runtime
from router.state.base import StateStore
from router.state.live import LiveState
from strategies.bluegreen import BlueGreen, BlueGreenSpec, other


def _actor(body: Mapping[str, Any]) -> str:
    actor, user = str(body.get("actor") or "admin api"), body.get("user")
    return f"{actor} ({user})" if user else actor


def spec_of(route: CompiledRoute) -> BlueGreenSpec:
    return strategy_of(route, BlueGreen, "blue/green").spec


class BlueGreenController(KindBase):
    kind = KIND
    verbs = frozenset({"switch", "rollback"})
    stopped = "blue/green switched back on local evidence"

    def __init__(
        self,
        runtime: Runtime,
        store: StateStore,
        live: LiveState,
        metrics: Metrics,
        writer: Writer,
    ) -> None:
        super().__init__(store, writer, metrics)
        self.runtime = runtime

    # -- the leader's tick ---------------------------------------------------------
    async def tick(self, route: CompiledRoute, now: float) -> None:
        spec = spec_of(route)
        every = spec.watch.analysis.interval
        current = await self.judged(route.name, every, now, lambda: initial(route.name, spec, now))
        if current is None:
            return
        if current.kind != KIND:  # the route was another strategy: a new revision
            fresh = initial(route.name, spec, now, current.revision + 1)
            await self.writer.write(
                fresh, current.version, [{"event": "start", "reason": fresh.reason}]
            )
            return
        r, events = reconcile(current, spec)
        if r.phase == WATCHING:
            r, more = await self._judge(route.name, r, spec, now)
            events += more
        if events:
            await self.writer.write(r, current.version, events)

    async def _judge(
        self, route: str, r: Rollout, spec: BlueGreenSpec, now: float
    ) -> tuple[Rollout, list[dict[str, Any]]]:
        gates = await self.observe(route, r, spec)
        await self.writer.explain(route, _explanation(r, gates, now))
        failed = [g for g in gates if g.acts and g.verdict == "fail"]
        if failed:
            new, event = reverted(r, spec, failed, now, "controller")
            return new, [event]
        if now >= r.step_started_at + spec.watch.window:
            new = settled(r, spec, gates, now)
            return new, [{"event": "watch_passed", "reason": new.reason, "colour": r.active}]
        return r, []

    async def observe(self, route: str, r: Rollout, spec: BlueGreenSpec) -> list[GateResult]:
        """The gates on the new colour's watch window vs the old colour before the switch."""
        window = window_id(r)
        if window is None:
            return []
        new, old = spec.backend(r.active), spec.backend(other(r.active))
        cand = (await read_step_window(self.store, route, [new], window))[new]
        start = float(r.extra.get("baseline_from", r.step_started_at - spec.watch.baseline))
        end = float(r.extra.get("baseline_to", r.step_started_at))
        base = await read_window(self.store, route, old, start, end)
        return evaluate(spec.watch.analysis, sample(cand), sample(base), {})

    # -- every replica: switch back from a clearly broken colour now (base.py) ------------
    def fast_window(self, r: Rollout) -> str | None:
        return window_id(r)

    def fast_arms(self, route: CompiledRoute, r: Rollout) -> tuple[str, str]:
        spec = spec_of(route)
        return spec.backend(r.active), spec.backend(other(r.active))

    def fast_gates(self, route: CompiledRoute, now: Counts, seen: Counts) -> list[GateResult]:
        # the baseline: the old colour's counts up to the switch, as this replica saw them
        new = minus(now[0], seen[0])
        return evaluate(spec_of(route).watch.analysis, new, sample(seen[1]), {})

    def fast_stop(
        self, route: CompiledRoute, r: Rollout, failed: tuple[GateResult, ...], now: float
    ) -> tuple[Rollout, list[Entry]] | None:
        new, event = reverted(r, spec_of(route), list(failed), now, self.writer.actor)
        return new, [event]

    # -- routerctl ---------------------------------------------------------------------
    async def command(
        self, route: CompiledRoute, verb: str, body: Mapping[str, Any], now: float
    ) -> Reply:
        spec = spec_of(route)
        if verb == "rollback":
            return await self._rollback(route.name, spec, _actor(body), now)
        return await self._switch(route.name, spec, _actor(body), bool(body.get("force")), now)

    async def _current(self, route: str, spec: BlueGreenSpec, now: float) -> Rollout:
        stored = await self.live.read(route)
        if stored is None or stored.kind != KIND:
            return initial(route, spec, now).evolve(version=stored.version if stored else 0)
        return stored

    async def _switch(
        self, route: str, spec: BlueGreenSpec, actor: str, force: bool, now: float
    ) -> Reply:
        first = await self._current(route, spec, now)
        to = other(first.active)
        started = time.monotonic()
        problems, notes = await self._checks(spec, to, force)
        if problems:
            what = f"switch to {to} ({spec.backend(to)}) refused: {'; '.join(problems)}"
            error = f"{what}. Nothing changed; force: true (routerctl switch --force) overrides"
            return 409, {"error": error, "problems": problems, "rollout": asdict(first)}
        now += time.monotonic() - started  # the switch happens after the checks

        async def attempt(n: int) -> Reply | None:
            # the first write goes on what was checked; a lost race reads again
            current = first if n == 0 else await self._current(route, spec, now)
            if n and current.active == to:
                return 409, {"error": f"{to} became active meanwhile ({current.reason})"}
            new, event = switched(current, spec, now, actor, force, "".join(notes))
            stored = await self.writer.write(new, current.version, [event], actor)
            return None if stored is None else (200, _done(stored))

        return await self.until_written(attempt)

    async def _checks(
        self, spec: BlueGreenSpec, to: str, force: bool
    ) -> tuple[list[str], list[str]]:
        if force:
            return [], [" (forced: checks skipped)"]
        backend = self.runtime.config.backends.get(spec.backend(to))
        if backend is None:
            return [f"backend {spec.backend(to)} is not configured"], []
        notes = [] if backend.health else [" (no health path configured: not health-checked)"]
        return await check_backend(backend, spec.smoke), notes

    async def _rollback(self, route: str, spec: BlueGreenSpec, actor: str, now: float) -> Reply:
        async def attempt(_: int) -> Reply | None:
            current = await self._current(route, spec, now)
            if "previous" not in current.extra:
                error = f"nothing to roll back: {current.active} has been active from the start"
                return 409, {"error": error, "rollout": asdict(current)}
            if current.phase in SWITCHED_BACK:
                message = f"nothing to do: already switched back ({current.reason})"
                return 200, {"message": message, "rollout": asdict(current)}
            new, event = rolled_back(current, spec, now, actor)
            stored = await self.writer.write(new, current.version, [event], actor)
            return None if stored is None else (200, _done(stored))

        return await self.until_written(attempt)


def _done(stored: Rollout) -> dict[str, Any]:
    return {"message": stored.reason, "rollout": asdict(stored)}


def _explanation(r: Rollout, gates: list[GateResult], now: float) -> dict[str, Any]:
    return {
        "at": now,
        "phase": r.phase,
        "active": r.active,
        "watch_started_at": r.step_started_at,
        "reason": r.reason,
        "gates": gate_dicts(tuple(gates)),
    }
