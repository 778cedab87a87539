"""`LiveState`: this replica's snapshot of every route's rollout.

The data plane never awaits the store: it reads `snapshot`, an immutable dict
that is replaced (one reference assignment) whenever a rollout changes. Two
background tasks keep it fresh:

- the subscriber follows the store's change messages. The first item of every
  subscription is RESYNC, so each (re)subscription starts with a full re-read:
  nothing written while we were not listening is missed. A message names one
  route; that route is re-read and swapped in.
- the poller re-reads everything every `poll_interval` seconds, behind pub/sub,
  for a message lost on the way.

Which value wins: a value read from the store replaces ours if it is newer.
An older one never does: versions only grow, so a store holding less than we
do has lost data (Redis restarted empty, a flush, a failover to a replica that
lagged). Then we fail static and restore: `restore_rollout` writes our copy
back, its own version included, if the store still holds what we read. The
highest version among the replicas wins, and two replicas holding the same
copy never overwrite each other; a route that no running replica holds is the
only one the controllers seed from config.yaml. A restore adds one history
entry (`restored`, naming this replica, and saying what was lost with the
store: its history, metric windows and comparison counts are not invented).

Who the store is (`identity()`: an epoch written once into an empty store,
and the server's run id) is read on every full re-read: a new epoch means the
store lost its data, a new run id alone a restart that kept it.

When the store is unreachable the snapshot stays as it is (fail static), the
follower reports unhealthy once, and both tasks retry with a backoff of 0.1 s
doubling to 2 s; the first successful read reports healthy again. Nothing
raises out of the background tasks.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from typing import Any

import structlog

from router.core.rollout import Rollout
from router.state.base import RESYNC, StateStore, StoreIdentity, StoreUnavailable

log = structlog.get_logger("router.state")

BACKOFF_MIN = 0.1
BACKOFF_MAX = 2.0
CLOSE_TIMEOUT = 2.0  # seconds a subscription may take to close
SEED_GRACE = 0.5  # seconds the replicas get to restore a route before it is seeded

HealthHook = Callable[[bool], None]
ChangeHook = Callable[[str, Rollout | None, Rollout], None]


class Backoff:
    """0.1 s doubling to 2 s; reset after a success."""

    def __init__(self, low: float = BACKOFF_MIN, high: float = BACKOFF_MAX) -> None:
        self.low, self.high, self.delay = low, high, low

    def next(self) -> float:
        delay, self.delay = self.delay, min(self.delay * 2, self.high)
        return delay

    def reset(self) -> None:
        self.delay = self.low


class LiveState:
    def __init__(
        self,
        store: StateStore,
        routes: Callable[[], Sequence[str]],
        poll_interval: float = 5.0,
        on_health: HealthHook | None = None,
        on_change: ChangeHook | None = None,
        *,
        holder: str = "",
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.snapshot: Mapping[str, Rollout] = {}
        self.healthy = True
        self.holder = holder  # this replica, as history names it
        self.identity: StoreIdentity | None = None
        self.data_lost_at: float | None = None  # when a new epoch was last seen
        self.restoring: set[str] = set()  # routes the store lost and we hold, not yet written
        self.restored: deque[dict[str, Any]] = deque(maxlen=20)  # the latest restores
        self._clock = clock
        self._asked: dict[str, float] = {}  # route -> when we asked the replicas for it
        self._store = store
        self._routes = routes
        self._poll_interval = poll_interval
        self._on_health = on_health
        self._on_change = on_change
        self._tasks: list[asyncio.Task[None]] = []

    # -- lifecycle -----------------------------------------------------------
    async def start(self) -> None:
        with contextlib.suppress(StoreUnavailable):
            await self.refresh()
        self._tasks = [
            asyncio.create_task(self._subscriber(), name="state-subscriber"),
            asyncio.create_task(self._poller(), name="state-poller"),
        ]

    async def stop(self) -> None:
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    # -- reads ---------------------------------------------------------------
    async def refresh(self, route: str | None = None) -> None:
        """Re-read one route (or every followed route) now. Raises
        StoreUnavailable after reporting unhealthy; the snapshot is kept."""
        await self._read(list(self._routes()) if route is None else [route], whole=route is None)

    async def read(self, route: str) -> Rollout | None:
        """The store's value of one route, after writing ours back if the store lost
        it (controllers read through this: they must never seed over a restore)."""
        return (await self._read([route], whole=False)).get(route)

    async def _read(self, names: list[str], *, whole: bool) -> dict[str, Rollout]:
        try:
            if whole:
                await self._check_identity()
            found = await self._store.get_rollouts(names)
            await self._restore_lost(names, found)
        except StoreUnavailable as exc:
            self._set_health(False, str(exc))
            raise
        self._set_health(True)
        self._install(found.values())
        return found

    # -- the store lost data ---------------------------------------------------
    async def _check_identity(self) -> None:
        seen, self.identity = self.identity, await self._store.identity()
        if seen is None or seen == self.identity:
            return
        if seen.epoch != self.identity.epoch:
            self.data_lost_at = self._clock()
            log.warning(
                "state store lost its data (new epoch); replicas restore what they hold",
                run_id_before=seen.run_id,
                run_id=self.identity.run_id,
            )
        else:
            log.info("state store restarted with its data", run_id=self.identity.run_id)

    async def _restore_lost(self, names: list[str], found: dict[str, Rollout]) -> None:
        """Write back what we hold where the store holds less (see the module doc)."""
        for name in names:
            held, stored = self.snapshot.get(name), found.get(name)
            if held is None or held.version == 0 or (stored and stored.version >= held.version):
                self.restoring.discard(name)
                continue
            self.restoring.add(name)
            if await self._store.restore_rollout(held, stored.version if stored else 0):
                found[name] = held
                self.restoring.discard(name)
                await self._note_restore(held, stored)
            elif again := await self._store.get_rollout(name):
                found[name] = again  # another replica wrote first; the next read judges it

    async def may_seed(self, route: str, now: float) -> bool:
        """May a controller seed this route, missing from the store, from config.yaml?

        Not before every replica had its chance to write back what it holds: the
        first call asks them (a change message for the route makes each re-read it)
        and says no; a call SEED_GRACE seconds later says yes. A new deployment
        starts that much later, once; a store that lost data gets its rollouts
        back instead of a restart from step one. A memory store has nobody to ask."""
        if not self._store.shared:
            return True
        asked = self._asked.setdefault(route, now)
        if asked == now:
            await self._store.announce(route)
        if now - asked < SEED_GRACE:
            return False
        del self._asked[route]
        return True

    async def _note_restore(self, held: Rollout, stored: Rollout | None) -> None:
        had = "nothing" if stored is None else f"version {stored.version}"
        reason = (
            f"state restored from replica {self.holder or '?'} after the store lost it "
            f"(the store had {had}): rev {held.revision}, version {held.version}, "
            f"{held.phase or 'no phase'}"
        )
        entry: dict[str, Any] = {
            "event": "restored",
            "actor": f"replica {self.holder}" if self.holder else "replica",
            "revision": held.revision,
            "phase": held.phase,
            "step": held.step,
            "weight_bp": held.weight_bp,
            "reason": reason,
            "lost": "history, metric windows and comparison counts kept only in the store",
        }
        self.restored.append({"route": held.route, "at": self._clock(), "reason": reason})
        log.warning("rollout restored into the state store", route=held.route, reason=reason)
        await self._store.add_history(held.route, entry)

    def apply(self, rollout: Rollout) -> None:
        """Install a value we just wrote ourselves (CAS), without waiting for
        the message; ignored unless newer than what we hold."""
        held = self.snapshot.get(rollout.route)
        if held is None or rollout.version > held.version:
            self._install([rollout])

    def _install(self, found: Iterable[Rollout]) -> None:
        changes: list[tuple[str, Rollout | None, Rollout]] = []
        for new in found:
            old = self.snapshot.get(new.route)
            if _newer(old, new):
                changes.append((new.route, old, new))
        if not changes:
            return
        snapshot = dict(self.snapshot)
        for name, _, new in changes:
            snapshot[name] = new
        self.snapshot = snapshot  # one reference swap: readers see all or nothing
        for name, old, new in changes:
            self._notify(name, old, new)

    def _notify(self, route: str, old: Rollout | None, new: Rollout) -> None:
        if self._on_change is None:
            return
        try:
            self._on_change(route, old, new)
        except Exception:  # a broken hook must not stop the follower
            log.exception("on_change hook failed", route=route)

    def _set_health(self, ok: bool, error: str = "") -> None:
        if ok == self.healthy:
            return
        self.healthy = ok
        if ok:
            log.info("state store reachable again")
        else:
            log.warning("state store unreachable; serving the last snapshot", error=error)
        if self._on_health is not None:
            try:
                self._on_health(ok)
            except Exception:  # same as _notify
                log.exception("on_health hook failed")

    # -- background tasks ----------------------------------------------------
    async def _subscriber(self) -> None:
        backoff = Backoff()
        while True:
            try:
                await self._follow(backoff)
            except StoreUnavailable as exc:
                self._set_health(False, str(exc))
            except Exception:  # never die: log, back off, subscribe again
                log.exception("state subscriber failed")
            await asyncio.sleep(backoff.next())

    async def _follow(self, backoff: Backoff) -> None:
        messages = self._store.subscribe()
        try:
            async for name in messages:
                if name == RESYNC:
                    await self.refresh()
                    backoff.reset()
                elif name in self._routes():
                    await self.refresh(name)
        finally:
            await _close(messages)
        log.info("state subscription ended; subscribing again")

    async def _poller(self) -> None:
        backoff = Backoff()
        while True:
            await asyncio.sleep(self._poll_interval if self.healthy else backoff.next())
            try:
                await self.refresh()
                backoff.reset()
            except StoreUnavailable:
                pass  # refresh() reported it; the sleep above is the retry
            except Exception:
                log.exception("state poll failed")


def _newer(held: Rollout | None, read: Rollout) -> bool:
    # Older never wins: a store behind us lost data, and _restore_lost writes ours
    # back; a slow read that returns after our own newer write is simply ignored.
    return held is None or read.version > held.version


async def _close(messages: AsyncIterator[str]) -> None:
    # Bounded: closing a subscription talks to the server, which may be the very
    # thing that is gone or frozen; a stop must never wait on it for long.
    aclose = getattr(messages, "aclose", None)
    if aclose is not None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(CLOSE_TIMEOUT):
                await aclose()
