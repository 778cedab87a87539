"""LiveState: the snapshot follows the store by pub/sub, poll, and local apply.

Fakes here are small real stores (MemoryStore subclasses) that lose messages or
hold a read back, so a race can be staged step by step instead of hoped for.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Sequence

from router.core.rollout import Rollout
from router.state.base import RESYNC, StateStore
from router.state.live import SEED_GRACE, ChangeHook, LiveState
from router.state.memory import MemoryStore
from router.state.redis import RedisStore
from tests.support.redis_server import RedisServer

ROUTES = ("iris", "fraud")
FOLLOW_DEADLINE = 0.1  # pub/sub must beat this; the poll is set to a minute


async def eventually(check: Callable[[], bool], within: float = 2.0) -> float:
    """Seconds until check() held; fails the test at the timeout."""
    start = time.monotonic()
    while not check():
        if time.monotonic() - start > within:
            raise AssertionError(f"condition not met within {within}s")
        await asyncio.sleep(0.002)
    return time.monotonic() - start


def version_of(live: LiveState, route: str = "iris") -> int:
    held = live.snapshot.get(route)
    return 0 if held is None else held.version


class Changes:
    """Records on_change calls."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, int, int]] = []

    def __call__(self, route: str, old: Rollout | None, new: Rollout) -> None:
        self.seen.append((route, 0 if old is None else old.version, new.version))


async def follower(
    store: StateStore, poll: float = 60.0, on_change: ChangeHook | None = None
) -> LiveState:
    live = LiveState(store, lambda: ROUTES, poll_interval=poll, on_change=on_change)
    await live.start()
    return live


async def test_follows_a_change_from_another_replica_fast(
    store: StateStore, peer: StateStore
) -> None:
    """A CAS through another store instance reaches the snapshot by pub/sub within 100 ms."""
    await peer.cas_rollout(Rollout(route="iris", weight_bp=500), 0)
    changes = Changes()
    live = await follower(store, on_change=changes)
    try:
        assert version_of(live) == 1  # the initial load
        await eventually(lambda: changes.seen.count(("iris", 0, 1)) == 1)
        before = live.snapshot
        took_t0 = time.monotonic()
        await peer.cas_rollout(Rollout(route="iris", weight_bp=2500), 1)
        await eventually(lambda: version_of(live) == 2, within=FOLLOW_DEADLINE)
        assert time.monotonic() - took_t0 < FOLLOW_DEADLINE
        assert live.snapshot["iris"].weight_bp == 2500
        assert before["iris"].version == 1  # the old dict was replaced, not mutated
        assert changes.seen[-1] == ("iris", 1, 2)
    finally:
        await live.stop()


async def test_ignores_routes_it_does_not_follow(store: StateStore, peer: StateStore) -> None:
    """A change to a route outside routes() does not enter the snapshot."""
    live = await follower(store)
    try:
        await peer.cas_rollout(Rollout(route="elsewhere"), 0)
        await peer.cas_rollout(Rollout(route="fraud"), 0)
        await eventually(lambda: "fraud" in live.snapshot)
        assert "elsewhere" not in live.snapshot
    finally:
        await live.stop()


class DeafStore(MemoryStore):
    """A memory store whose subscription goes quiet after RESYNC: every message is lost."""

    async def subscribe(self) -> AsyncIterator[str]:
        yield RESYNC
        await asyncio.Event().wait()


async def test_poll_catches_a_lost_message() -> None:
    """With every message lost, the slow poll still brings the change in."""
    store = DeafStore()
    live = await follower(store, poll=0.1)
    try:
        await store.cas_rollout(Rollout(route="iris"), 0)
        await eventually(lambda: version_of(live) == 1)
    finally:
        await live.stop()


async def test_apply_keeps_the_newest_version() -> None:
    """apply() installs a newer version and ignores an older or equal one."""
    live = await follower(MemoryStore())
    try:
        live.apply(Rollout(route="iris", version=3, phase="paused"))
        live.apply(Rollout(route="iris", version=2, phase="progressing"))
        live.apply(Rollout(route="iris", version=3, phase="aborted"))
        assert (live.snapshot["iris"].version, live.snapshot["iris"].phase) == (3, "paused")
    finally:
        await live.stop()


class GatedStore(MemoryStore):
    """A memory store whose multi-route reads return late (what they read, when let go)."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = asyncio.Event()
        self.gate.set()
        self.reads_waiting = 0

    async def get_rollouts(self, routes: Sequence[str]) -> dict[str, Rollout]:
        found = await super().get_rollouts(routes)
        self.reads_waiting += 1
        await self.gate.wait()
        self.reads_waiting -= 1
        return found


async def test_slow_read_does_not_undo_a_newer_apply() -> None:
    """A read that began before our own CAS returns the old version late: it is ignored."""
    store = GatedStore()
    v1 = await store.cas_rollout(Rollout(route="iris"), 0)
    assert v1 is not None
    changes = Changes()
    live = await follower(store, on_change=changes)
    try:
        await eventually(lambda: store.reads_waiting == 0 and version_of(live) == 1)
        store.gate.clear()
        slow = asyncio.create_task(live.refresh())  # reads v1, then waits at the gate
        await eventually(lambda: store.reads_waiting >= 1)
        v2 = await store.cas_rollout(v1.evolve(weight_bp=100), 1)
        assert v2 is not None
        live.apply(v2)
        store.gate.set()
        await slow
        await asyncio.sleep(0.05)  # let the subscriber's own re-read land too
        assert live.snapshot["iris"] == v2
        assert [c for c in changes.seen if c[0] == "iris"] == [("iris", 0, 1), ("iris", 1, 2)]
    finally:
        await live.stop()


async def test_restores_what_the_store_lost(redis_server: RedisServer) -> None:
    """After Redis lost everything and someone seeded the route again (version 1), the
    replica writes back its version 4 as it was, with a `restored` history entry and the
    store's new epoch noticed; it never follows the store back in time."""
    redis_server.flush()
    store, peer = RedisStore(redis_server.url), RedisStore(redis_server.url)
    live = LiveState(store, lambda: ROUTES, poll_interval=60, holder="replica-a")
    await live.start()
    try:
        current = await peer.cas_rollout(Rollout(route="iris"), 0)
        for step in range(1, 4):
            assert current is not None
            current = await peer.cas_rollout(current.evolve(step=step), current.version)
        await eventually(lambda: version_of(live) == 4)
        epoch = await peer.identity()
        redis_server.flush()
        await peer.cas_rollout(Rollout(route="iris", reason="seeded again"), 0)
        assert await _stored_step(peer) == 3
        restored = await peer.get_rollout("iris")
        assert restored == live.snapshot["iris"] == current
        events = await peer.history("iris")
        assert [e["event"] for e in events] == ["restored"]
        assert "replica replica-a" in events[0]["actor"]
        assert "version 4" in events[0]["reason"]
        await live.refresh()
        assert live.identity is not None
        assert live.identity.epoch != epoch.epoch
        assert live.data_lost_at is not None
        assert live.restoring == set()
    finally:
        await live.stop()
        await store.close()
        await peer.close()


async def _stored_step(store: StateStore, within: float = 2.0) -> int:
    """The step of iris's stored rollout once it is 3, or whatever it is at the deadline."""
    deadline = time.monotonic() + within
    while True:
        stored = await store.get_rollout("iris")
        step = -1 if stored is None else stored.step
        if step == 3 or time.monotonic() > deadline:
            return step
        await asyncio.sleep(0.01)


async def test_stop_ends_both_tasks() -> None:
    """stop() leaves no background task running."""
    live = await follower(MemoryStore())
    names = {t.get_name() for t in asyncio.all_tasks()}
    assert {"state-subscriber", "state-poller"} <= names
    await live.stop()
    assert not {"state-subscriber", "state-poller"} & {t.get_name() for t in asyncio.all_tasks()}


async def test_a_shared_store_seeds_only_after_the_replicas_had_their_chance(
    redis_server: RedisServer,
) -> None:
    """The first ask announces the route to every replica and says no; yes only once
    SEED_GRACE has passed. A memory store (no other replica) may seed at once."""
    redis_server.flush()
    store, other = RedisStore(redis_server.url), RedisStore(redis_server.url)
    live = LiveState(store, lambda: ROUTES)
    heard = other.subscribe()
    try:
        assert await asyncio.wait_for(anext(heard), 2) == RESYNC
        assert not await live.may_seed("iris", 100.0)
        assert await asyncio.wait_for(anext(heard), 2) == "iris"
        assert not await live.may_seed("iris", 100.0 + SEED_GRACE / 2)
        assert await live.may_seed("iris", 100.0 + SEED_GRACE)
        assert await LiveState(MemoryStore(), lambda: ROUTES).may_seed("iris", 100.0)
    finally:
        await heard.aclose()  # type: ignore[attr-defined]
        await store.close()
        await other.close()
