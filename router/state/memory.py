"""`MemoryStore`: the state store of a single router process, nothing to install.

It keeps the same promises as `RedisStore` (tests/test_state_contract.py runs
one suite against both) so a single process behaves exactly like a replica of
a Redis-backed fleet of one:

- every method body runs without an await, so on one event loop each call is
  atomic: that is the whole of the compare-and-set and lease locking;
- time comes from an injectable `clock` (epoch seconds); counters, samples and
  leases carry an expiry on that clock and are dropped lazily when touched, so
  tests move time by hand instead of sleeping;
- pub/sub is one bounded asyncio.Queue per subscriber. A subscriber that falls
  behind loses messages, and is then told RESYNC instead of the lost names:
  a slow reader costs itself a re-read, never the writer a wait or memory.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import deque
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from itertools import islice
from typing import Any

from router.core.rollout import Rollout
from router.state.base import RESYNC, StoreIdentity

Clock = Callable[[], float]


class _Subscriber:
    """One reader of the changes channel: a bounded queue and a lost flag."""

    def __init__(self, size: int) -> None:
        self.queue: asyncio.Queue[str | None] = asyncio.Queue(size)
        self.lost = False

    def offer(self, item: str | None) -> None:
        try:
            self.queue.put_nowait(item)
        except asyncio.QueueFull:
            self.lost = True

    def drain(self) -> None:
        while not self.queue.empty():
            self.queue.get_nowait()


SWEEP_INTERVAL = 60.0  # seconds between two sweeps of expired entries


class _Expiring:
    """A value with a deadline on the store's clock (inf: never)."""

    __slots__ = ("expires", "value")

    def __init__(self, value: Any, expires: float) -> None:
        self.value = value
        self.expires = expires


class MemoryStore:
    shared = False

    def __init__(self, clock: Clock = time.time, queue_size: int = 1024) -> None:
        self._clock = clock
        self._queue_size = queue_size
        self._rollouts: dict[str, Rollout] = {}
        self._history: dict[str, deque[dict[str, Any]]] = {}
        self._last_id = (0, -1)  # (ms, seq) of the newest history id, like a stream
        self._counters: dict[tuple[str, str], _Expiring] = {}
        self._samples: dict[tuple[str, str], _Expiring] = {}
        self._leases: dict[str, _Expiring] = {}
        self._subscribers: set[_Subscriber] = set()
        self._next_sweep = 0.0
        # one process, one store: it cannot lose its data while anyone reads it
        self._identity = StoreIdentity(epoch=uuid.uuid4().hex, run_id=f"memory-{id(self):x}")

    # -- lifecycle -----------------------------------------------------------
    async def start(self) -> None:
        return None

    async def close(self) -> None:
        # None tells every open subscription to end (see subscribe()).
        for sub in self._subscribers:
            sub.drain()
            sub.offer(None)

    async def ping(self) -> bool:
        return True

    # -- rollouts ------------------------------------------------------------
    async def get_rollout(self, route: str) -> Rollout | None:
        return self._rollouts.get(route)

    async def get_rollouts(self, routes: Sequence[str]) -> dict[str, Rollout]:
        return {r: self._rollouts[r] for r in routes if r in self._rollouts}

    async def cas_rollout(self, new: Rollout, expected_version: int) -> Rollout | None:
        current = self._rollouts.get(new.route)
        if (current.version if current else 0) != expected_version:
            return None
        stored = new.evolve(version=expected_version + 1)
        self._rollouts[new.route] = stored
        self._publish(new.route)
        return stored

    async def restore_rollout(self, held: Rollout, expected_version: int) -> bool:
        current = self._rollouts.get(held.route)
        version = current.version if current else 0
        if version != expected_version or version >= held.version:
            return False
        self._rollouts[held.route] = held
        self._publish(held.route)
        return True

    async def announce(self, route: str) -> None:
        self._publish(route)

    async def identity(self) -> StoreIdentity:
        return self._identity

    def _publish(self, route: str) -> None:
        for sub in self._subscribers:
            sub.offer(route)

    async def subscribe(self) -> AsyncIterator[str]:
        sub = _Subscriber(self._queue_size)
        self._subscribers.add(sub)
        try:
            yield RESYNC
            while True:
                if sub.lost:
                    # What is still queued is covered by the re-read RESYNC asks for.
                    sub.lost = False
                    sub.drain()
                    yield RESYNC
                    continue
                item = await sub.queue.get()
                if item is None:
                    return
                yield item
        finally:
            self._subscribers.discard(sub)

    # -- history -------------------------------------------------------------
    async def add_history(self, route: str, entry: Mapping[str, Any], cap: int = 1000) -> None:
        ms, seq = self._next_id()
        item = {**entry, "id": f"{ms}-{seq}", "ts": ms / 1000}
        entries = self._history.setdefault(route, deque())
        entries.append(item)
        while len(entries) > cap:
            entries.popleft()

    def _next_id(self) -> tuple[int, int]:
        # Same shape and order as a Redis stream id: ms, then a sequence within the ms.
        ms = int(self._clock() * 1000)
        last_ms, last_seq = self._last_id
        self._last_id = (last_ms, last_seq + 1) if ms <= last_ms else (ms, 0)
        return self._last_id

    async def history(self, route: str, count: int = 50) -> list[dict[str, Any]]:
        entries = self._history.get(route, deque())
        start = max(0, len(entries) - count)
        return [dict(e) for e in islice(entries, start, None)]

    # -- leases --------------------------------------------------------------
    async def acquire_lease(self, name: str, holder: str, ttl: float) -> bool:
        current = self._live(self._leases, name)
        if current is not None and current.value != holder:
            return False
        self._leases[name] = _Expiring(holder, self._clock() + ttl)
        return True

    async def release_lease(self, name: str, holder: str) -> None:
        current = self._live(self._leases, name)
        if current is not None and current.value == holder:
            del self._leases[name]

    async def lease_holder(self, name: str) -> str | None:
        current = self._live(self._leases, name)
        return None if current is None else str(current.value)

    def _live(self, table: dict[Any, _Expiring], key: Any) -> _Expiring | None:
        """The entry if it has not expired yet; an expired one is dropped here."""
        entry = table.get(key)
        if entry is not None and entry.expires <= self._clock():
            del table[key]
            return None
        return entry

    # -- counters ------------------------------------------------------------
    def _sweep(self) -> None:
        """Drop every expired counter hash and sample list, once a minute at most.

        Time-window hashes (metrics every 10 s) are written once and never read
        by name again, so expiring only on access would keep them forever: Redis
        expires keys by itself, this store has to look."""
        now = self._clock()
        if now < self._next_sweep:
            return
        self._next_sweep = now + SWEEP_INTERVAL
        for table in (self._counters, self._samples):
            for key in [k for k, e in table.items() if e.expires <= now]:
                del table[key]

    async def add_counters(
        self, route: str, counters: Mapping[str, Mapping[str, int]], ttl: float
    ) -> None:
        self._sweep()
        expires = self._clock() + ttl
        for name, fields in counters.items():
            entry = self._live(self._counters, (route, name))
            values: dict[str, int] = {} if entry is None else entry.value
            for field, delta in fields.items():
                values[field] = values.get(field, 0) + delta
            self._counters[(route, name)] = _Expiring(values, expires)

    async def add_counters_many(
        self, batch: Mapping[str, Mapping[str, Mapping[str, int]]], ttl: float
    ) -> None:
        for route, counters in batch.items():
            await self.add_counters(route, counters, ttl)

    async def read_counters(self, route: str, names: Sequence[str]) -> dict[str, dict[str, int]]:
        found: dict[str, dict[str, int]] = {}
        for name in names:
            entry = self._live(self._counters, (route, name))
            found[name] = {} if entry is None else dict(entry.value)
        return found

    # -- samples -------------------------------------------------------------
    async def push_sample(self, route: str, kind: str, item: str, cap: int, ttl: float) -> None:
        entry = self._live(self._samples, (route, kind))
        items: deque[str] = deque() if entry is None else entry.value
        items.appendleft(item)
        while len(items) > cap:
            items.pop()
        self._samples[(route, kind)] = _Expiring(items, self._clock() + ttl)

    async def samples(self, route: str, kind: str, count: int) -> list[str]:
        entry = self._live(self._samples, (route, kind))
        if entry is None:
            return []
        return [item for _, item in zip(range(count), entry.value, strict=False)]

    async def clear_samples(self, route: str, kind: str) -> None:
        self._samples.pop((route, kind), None)
