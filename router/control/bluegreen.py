"""Blue/green's controller: checked switches, instant rollbacks, a watch after each switch.

Phases of a blue/green rollout (`Rollout.kind == "bluegreen"`):

    steady        one colour takes every request; nothing is being judged
    watching      a switch happened less than `watch.window` ago; gates judge it
    aborted       the watch failed: the controller switched back by itself
    rolled_back   an operator ran `routerctl rollback`

Switch (`routerctl switch`). The idle colour is checked first, from the
process that got the command: its backend's health path must answer 2xx and
every `smoke` request must get its expected status, else 409 and nothing
changes (`force: true` skips the checks). The switch itself is ONE
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

The watch. A switch opens a metrics window (controller.window_id: revision
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
back by compare-and-set without waiting for the leader (router/control/controller.py).
"""

from __future__ import annotations

import ssl
import time
from collections.abc import Mapping
from dataclasses import asdict
from typing import Any

import aiohttp
import structlog

from router.config.spec import BackendSpec
from router.control.canary import FAST_GATES, gate_dicts, sample
from router.control.controller import CAS_ATTEMPTS, Reply, Writer, window_id
from router.core.gates import GateResult, Sample, evaluate
from router.core.rollout import Rollout
from router.dataplane.metrics import Metrics, WindowStats, read_step_window, read_window
from router.dataplane.routing import CompiledRoute
from router.runtime import Runtime
from router.state.base import StateStore
from router.state.live import LiveState
from strategies.bluegreen import BlueGreen, BlueGreenSpec, SmokeRequest, other

log = structlog.get_logger("router.control.controller")

KIND = "bluegreen"
STEADY, WATCHING, ABORTED, ROLLED_BACK = "steady", "watching", "aborted", "rolled_back"
CHECK_TIMEOUT = 5.0  # longest wait for one health or smoke answer, seconds


def spec_of(route: CompiledRoute) -> BlueGreenSpec:
    strategy = route.strategy
    if not isinstance(strategy, BlueGreen):
        raise TypeError(f"route {route.name} is not blue/green")
    return strategy.spec


# -- pure transitions ------------------------------------------------------------
def initial(route: str, spec: BlueGreenSpec, now: float, revision: int = 1) -> Rollout:
    colour = spec.active
    return Rollout(
        route,
        revision=revision,
        kind=KIND,
        phase=STEADY,
        active=colour,
        stable=spec.backend(colour),
        candidate=spec.backend(other(colour)),
        step_started_at=now,
        updated_at=now,
        reason=f"{colour} ({spec.backend(colour)}) active, from config.yaml",
        updated_by="config",
    )


def moved(
    r: Rollout, spec: BlueGreenSpec, to: str, phase: str, now: float, reason: str, by: str
) -> Rollout:
    """`r` with every request on colour `to` from `now`: a new revision and window."""
    was = r.active or other(to)
    extra = {"previous": was, "baseline_from": now - spec.watch.baseline, "baseline_to": now}
    return r.evolve(
        revision=r.revision + 1,
        phase=phase,
        active=to,
        stable=spec.backend(to),
        candidate=spec.backend(was),
        previous_stable=spec.backend(was),
        step_started_at=now,
        updated_at=now,
        reason=reason,
        updated_by=by,
        extra=extra,
    )


def reconcile(r: Rollout, spec: BlueGreenSpec) -> tuple[Rollout, list[dict[str, Any]]]:
    """Follow config.yaml's backends of each colour (a new model deployed to a colour)."""
    stable, idle = spec.backend(r.active), spec.backend(other(r.active))
    if (r.stable, r.candidate) == (stable, idle):
        return r, []
    why = f"config.yaml: {r.active} is {stable}, {other(r.active)} is {idle}"
    return r.evolve(stable=stable, candidate=idle), [{"event": "config", "reason": why}]


def settled(r: Rollout, spec: BlueGreenSpec, gates: list[GateResult], now: float) -> Rollout:
    waits = [g.name for g in gates if g.verdict == "wait"]
    note = f" (not enough data for {', '.join(waits)})" if waits else ""
    reason = f"{r.active} passed its {spec.watch.window:g}s watch: no gate failed{note}"
    return r.evolve(phase=STEADY, reason=reason, updated_at=now, updated_by="controller")


def reverted(
    r: Rollout, spec: BlueGreenSpec, failed: list[GateResult], now: float, by: str
) -> tuple[Rollout, dict[str, Any]]:
    back = other(r.active)
    why = "; ".join(f"{g.name}: {g.detail}" for g in failed)
    reason = f"{r.active} failed its watch ({why}); switched back to {back}"
    new = moved(r, spec, back, ABORTED, now, reason, by)
    event = {"event": "auto_rollback", "from": r.active, "to": back, "reason": reason}
    return new, {**event, "gate": failed[0].name, "gates": gate_dicts(tuple(failed))}


def acting_failures(
    gates: list[GateResult], only: frozenset[str] | None = None
) -> list[GateResult]:
    return [g for g in gates if g.acts and g.verdict == "fail" and (only is None or g.name in only)]


# -- checks of the idle colour -------------------------------------------------------
def _ssl(backend: BackendSpec) -> ssl.SSLContext | bool:
    if backend.scheme != "https":
        return False
    if not backend.tls_verify:
        return False
    return ssl.create_default_context(cafile=backend.ca_file) if backend.ca_file else True


def _base(backend: BackendSpec) -> str:
    return f"{backend.scheme}://{backend.host}:{backend.port}{backend.base_path}"


async def _ask(
    session: aiohttp.ClientSession, backend: BackendSpec, req: SmokeRequest
) -> tuple[int | None, str]:
    """(status, "") or (None, why it got no answer)."""
    try:
        async with session.request(
            req.method,
            _base(backend) + req.path,
            data=req.body.encode() if req.body else None,
            headers=dict(req.headers),
            ssl=_ssl(backend),
        ) as resp:
            await resp.read()
            return resp.status, ""
    except (aiohttp.ClientError, TimeoutError, OSError) as exc:
        return None, str(exc) or type(exc).__name__


async def check_backend(backend: BackendSpec, smoke: tuple[SmokeRequest, ...]) -> list[str]:
    """Every reason the backend is not ready to take traffic ([] when it is)."""
    timeout = aiohttp.ClientTimeout(total=min(backend.timeout, CHECK_TIMEOUT))
    async with aiohttp.ClientSession(timeout=timeout) as session:
        if backend.health:
            status, err = await _ask(session, backend, SmokeRequest("GET", backend.health))
            if status is None or not 200 <= status < 300:
                got = f"status {status}" if status is not None else err
                return [f"health check GET {backend.health} failed: {got}"]
        failures = []
        for req in smoke:
            status, err = await _ask(session, backend, req)
            if status != req.expect_status:
                got = f"status {status}" if status is not None else err
                failures.append(f"smoke {req.method} {req.path}: {got}, want {req.expect_status}")
        return failures


def _actor(body: Mapping[str, Any]) -> str:
    actor, user = str(body.get("actor") or "admin api"), body.get("user")
    return f"{actor} ({user})" if user else actor


class BlueGreenController:
    kind = KIND
    verbs = frozenset({"switch", "rollback"})

    def __init__(
        self,
        runtime: Runtime,
        store: StateStore,
        live: LiveState,
        metrics: Metrics,
        writer: Writer,
    ) -> None:
        self.runtime = runtime
        self.store = store
        self.live = live
        self.metrics = metrics
        self.writer = writer
        self._judged_at: dict[str, float] = {}
        # route -> (window id, new colour's and old colour's local counts when first seen)
        self._local_base: dict[str, tuple[str, WindowStats, WindowStats]] = {}

    # -- the leader's tick ---------------------------------------------------------
    async def tick(self, route: CompiledRoute, now: float) -> None:
        spec = spec_of(route)
        if route.name not in self.live.snapshot:
            await self._start(route.name, spec, now)
            return
        if now - self._judged_at.get(route.name, 0.0) < spec.watch.analysis.interval:
            return
        self._judged_at[route.name] = now
        current = await self.live.read(route.name)
        if current is None:
            return  # the store lost it and our copy could not go back yet: next tick
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

    async def _start(self, route: str, spec: BlueGreenSpec, now: float) -> None:
        """Seed a rollout that no replica holds from config.yaml (live.may_seed)."""
        if await self.live.read(route) is None and await self.live.may_seed(route, now):
            fresh = initial(route, spec, now)
            await self.writer.write(fresh, 0, [{"event": "start", "reason": fresh.reason}])

    async def _judge(
        self, route: str, r: Rollout, spec: BlueGreenSpec, now: float
    ) -> tuple[Rollout, list[dict[str, Any]]]:
        gates = await self.observe(route, r, spec)
        await self.writer.explain(route, _explanation(r, gates, now))
        failed = acting_failures(gates)
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

    # -- every replica: switch back from a clearly broken colour now ---------------------
    async def watch(self, route: CompiledRoute, now: float) -> None:
        r = self.live.snapshot.get(route.name)
        window = window_id(r)
        if r is None or window is None or r.kind != KIND:
            self._local_base.pop(route.name, None)
            return
        spec = spec_of(route)
        new = self.metrics.local(route.name, spec.backend(r.active))
        old = self.metrics.local(route.name, spec.backend(other(r.active)))
        seen = self._local_base.get(route.name)
        if seen is None or seen[0] != window:
            self._local_base[route.name] = (window, new, old)
            return
        gates = evaluate(spec.watch.analysis, _minus(new, seen[1]), sample(seen[2]), {})
        failed = acting_failures(gates, FAST_GATES)
        if failed:
            await self._fast_revert(route, r, spec, failed, now)

    async def _fast_revert(
        self,
        route: CompiledRoute,
        seen: Rollout,
        spec: BlueGreenSpec,
        failed: list[GateResult],
        now: float,
    ) -> None:
        current = await self.live.read(route.name)
        if current is None or window_id(current) != window_id(seen):
            return  # switched again meanwhile: the new window starts clean
        new, event = reverted(current, spec, failed, now, self.writer.actor)
        entry = {**event, "evidence": "local counts of one replica"}
        if await self.writer.write(new, current.version, [entry]) is not None:
            log.warning("blue/green switched back on local evidence", route=route.name)

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
        current = await self._current(route, spec, now)
        to = other(current.active)
        started = time.monotonic()
        problems, notes = await self._checks(spec, to, force)
        if problems:
            what = f"switch to {to} ({spec.backend(to)}) refused: {'; '.join(problems)}"
            error = f"{what}. Nothing changed; force: true (routerctl switch --force) overrides"
            return 409, {"error": error, "problems": problems, "rollout": asdict(current)}
        now += time.monotonic() - started  # the switch happens after the checks
        phase = WATCHING if spec.watch.window > 0 else STEADY
        reason = f"switched to {to} ({spec.backend(to)}) by {actor}" + "".join(notes)
        if phase == WATCHING:
            reason += f"; watching for {spec.watch.window:g}s"
        event = {"event": "switch", "from": other(to), "to": to, "forced": force}
        for _ in range(CAS_ATTEMPTS):
            new = moved(current, spec, to, phase, now, reason, actor)
            stored = await self.writer.write(
                new, current.version, [{**event, "reason": reason}], actor
            )
            if stored is not None:
                return 200, {"message": stored.reason, "rollout": asdict(stored)}
            current = await self._current(route, spec, now)
            if current.active == to:
                return 409, {"error": f"{to} became active meanwhile ({current.reason})"}
        return 409, {"error": "the rollout kept changing under this command; try again"}

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
        for _ in range(CAS_ATTEMPTS):
            current = await self._current(route, spec, now)
            if "previous" not in current.extra:
                error = f"nothing to roll back: {current.active} has been active from the start"
                return 409, {"error": error, "rollout": asdict(current)}
            if current.phase in (ABORTED, ROLLED_BACK):
                message = f"nothing to do: already switched back ({current.reason})"
                return 200, {"message": message, "rollout": asdict(current)}
            back = other(current.active)
            reason = f"rolled back to {back} ({spec.backend(back)}) by {actor}"
            new = moved(current, spec, back, ROLLED_BACK, now, reason, actor)
            event = {"event": "rollback", "from": current.active, "to": back, "reason": reason}
            stored = await self.writer.write(new, current.version, [event], actor)
            if stored is not None:
                return 200, {"message": stored.reason, "rollout": asdict(stored)}
        return 409, {"error": "the rollout kept changing under this command; try again"}


def _minus(a: WindowStats, b: WindowStats) -> Sample:
    hist = tuple(x - y for x, y in zip(a.hist, b.hist, strict=True))
    return Sample(a.requests - b.requests, a.errors - b.errors, hist)


def _explanation(r: Rollout, gates: list[GateResult], now: float) -> dict[str, Any]:
    return {
        "at": now,
        "phase": r.phase,
        "active": r.active,
        "watch_started_at": r.step_started_at,
        "reason": r.reason,
        "gates": gate_dicts(tuple(gates)),
    }
