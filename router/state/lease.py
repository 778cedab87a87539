"""`Leadership`: hold a named lease in the store and know, locally, whether we lead.

The store's lease expires on the server `ttl` seconds after the server saw our
last renewal. We cannot read the server's clock, but we know when we *sent*
that renewal, which is earlier; so `sent + ttl × SAFETY` is a deadline that
falls before the server's, on our own monotonic clock. `is_leader` is true only
until then. A replica cut off from the store therefore stops acting as leader
before another replica can take the lease: two leaders never act at once
(short of a clock running more than 1/SAFETY times slower than the server's).

Renewal runs every ttl/3, so two renewals in a row can fail (an outage, a slow
command) before leadership lapses. `stop()` releases the lease so a successor
need not wait out the ttl.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import socket
import time
from collections.abc import Callable

import structlog

from router.state.base import StateStore, StoreUnavailable

log = structlog.get_logger("router.state")

SAFETY = 0.8  # lead for this share of the ttl after a renewal was sent


def default_holder() -> str:
    """Unique per process and start: host, pid and a random tag."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"


class Leadership:
    def __init__(
        self,
        store: StateStore,
        name: str = "controller",
        holder: str | None = None,
        ttl: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
        on_change: Callable[[bool], None] | None = None,
    ) -> None:
        self.name = name
        self.holder = holder or default_holder()
        self.ttl = ttl
        self._store = store
        self._clock = clock
        self._on_change = on_change
        self._until = 0.0  # local deadline of our leadership; 0: not leading
        self._was_leader = False
        self._task: asyncio.Task[None] | None = None

    @property
    def is_leader(self) -> bool:
        return self._clock() < self._until

    async def step(self) -> bool:
        """One take-or-renew attempt; returns is_leader afterwards."""
        sent = self._clock()
        try:
            won = await self._store.acquire_lease(self.name, self.holder, self.ttl)
        except StoreUnavailable as exc:
            log.warning("lease renewal failed", lease=self.name, error=str(exc))
            won = None  # unknown: keep the deadline we already have
        if won is not None:
            self._until = sent + self.ttl * SAFETY if won else 0.0
        self._report()
        return self.is_leader

    def _report(self) -> None:
        leading = self.is_leader
        if leading == self._was_leader:
            return
        self._was_leader = leading
        log.info("leadership changed", lease=self.name, holder=self.holder, leader=leading)
        if self._on_change is not None:
            self._on_change(leading)

    async def start(self) -> None:
        await self.step()
        self._task = asyncio.create_task(self._run(), name=f"lease-{self.name}")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        if self._until:
            self._until = 0.0
            with contextlib.suppress(StoreUnavailable):
                await self._store.release_lease(self.name, self.holder)
        self._report()

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.ttl / 3)
            try:
                await self.step()
            except Exception:  # never die: the next step retries
                log.exception("lease step failed", lease=self.name)
