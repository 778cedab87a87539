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

Which value wins: a value read from the store replaces ours if it is newer, or
if nothing was installed for that route since the read began. The second case
matters when the store went back in time (Redis restarted without its data,
versions start again at 1); the first keeps a slow read from undoing a newer
value we installed meanwhile (our own CAS through `apply`, or a faster read).

When the store is unreachable the snapshot stays as it is (fail static), the
follower reports unhealthy once, and both tasks retry with a backoff of 0.1 s
doubling to 2 s; the first successful read reports healthy again. Nothing
raises out of the background tasks.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence

import structlog

from router.state.base import RESYNC, StateStore, StoreUnavailable
from router.state.model import Rollout

log = structlog.get_logger("router.state")

BACKOFF_MIN = 0.1
BACKOFF_MAX = 2.0

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
    ) -> None:
        self.snapshot: Mapping[str, Rollout] = {}
        self.healthy = True
        self._store = store
        self._routes = routes
        self._poll_interval = poll_interval
        self._on_health = on_health
        self._on_change = on_change
        self._seq = 0  # bumped on every install; orders reads against installs
        self._installed: dict[str, int] = {}  # route -> seq of its last install
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
        names = list(self._routes()) if route is None else [route]
        read_seq = self._seq
        try:
            found = await self._store.get_rollouts(names)
        except StoreUnavailable as exc:
            self._set_health(False, str(exc))
            raise
        self._set_health(True)
        self._install(found.values(), read_seq)

    def apply(self, rollout: Rollout) -> None:
        """Install a value we just wrote ourselves (CAS), without waiting for
        the message; ignored unless newer than what we hold."""
        held = self.snapshot.get(rollout.route)
        if held is None or rollout.version > held.version:
            self._install([rollout], self._seq)

    def _install(self, found: Iterable[Rollout], read_seq: int) -> None:
        changes: list[tuple[str, Rollout | None, Rollout]] = []
        for new in found:
            old = self.snapshot.get(new.route)
            if self._wins(old, new, read_seq):
                changes.append((new.route, old, new))
        if not changes:
            return
        snapshot = dict(self.snapshot)
        self._seq += 1
        for name, _, new in changes:
            snapshot[name] = new
            self._installed[name] = self._seq
        self.snapshot = snapshot  # one reference swap: readers see all or nothing
        for name, old, new in changes:
            self._notify(name, old, new)

    def _wins(self, held: Rollout | None, read: Rollout, read_seq: int) -> bool:
        if held is None or read.version > held.version:
            return True
        if read.version == held.version:
            return False
        stale = self._installed.get(read.route, 0) > read_seq
        if not stale:
            log.warning(
                "rollout went back in time in the store; following it",
                route=read.route,
                held=held.version,
                stored=read.version,
            )
        return not stale

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


async def _close(messages: AsyncIterator[str]) -> None:
    aclose = getattr(messages, "aclose", None)
    if aclose is not None:
        await aclose()
