"""Redis outages: fail fast, fail static, recover by itself.

Each test owns a durable redis-server (`fresh_redis`: appendonly, fsync on
every write) that it stops and starts on the same port and data dir.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
from redis.asyncio import Redis

from router.core.rollout import Rollout
from router.state.base import RESYNC, StoreUnavailable
from router.state.live import LiveState
from router.state.redis import RedisStore, rollout_key
from tests.support.redis_server import RedisServer, SentinelServer

FAIL_FAST = 2.0  # an operation against a dead server must give up within this
ROUTES = ("iris",)


async def eventually(check: Callable[[], bool], within: float = 5.0) -> None:
    deadline = time.monotonic() + within
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {within}s")
        await asyncio.sleep(0.01)


@pytest.fixture
async def store(fresh_redis: RedisServer) -> AsyncIterator[RedisStore]:
    made = RedisStore(fresh_redis.url)
    await made.start()
    yield made
    await made.close()


class Health:
    def __init__(self) -> None:
        self.calls: list[bool] = []

    def __call__(self, ok: bool) -> None:
        self.calls.append(ok)


def operations(store: RedisStore) -> dict[str, Callable[[], Awaitable[object]]]:
    r = Rollout(route="iris")
    return {
        "get_rollout": lambda: store.get_rollout("iris"),
        "get_rollouts": lambda: store.get_rollouts(["iris", "fraud"]),
        "cas_rollout": lambda: store.cas_rollout(r, 0),
        "add_history": lambda: store.add_history("iris", {"event": "x"}),
        "history": lambda: store.history("iris"),
        "acquire_lease": lambda: store.acquire_lease("controller", "a", 5),
        "release_lease": lambda: store.release_lease("controller", "a"),
        "lease_holder": lambda: store.lease_holder("controller"),
        "add_counters_many": lambda: store.add_counters_many({"iris": {"v": {"n": 1}}}, 60),
        "read_counters": lambda: store.read_counters("iris", ["v"]),
        "push_sample": lambda: store.push_sample("iris", "d", "{}", 5, 60),
        "samples": lambda: store.samples("iris", "d", 5),
        "clear_samples": lambda: store.clear_samples("iris", "d"),
    }


async def test_every_operation_fails_fast_when_redis_is_down(
    store: RedisStore, fresh_redis: RedisServer
) -> None:
    """With redis stopped, each operation raises StoreUnavailable in under 2 s; ping says False."""
    assert await store.get_rollout("iris") is None  # pool holds a connection now
    fresh_redis.stop()
    for name, call in operations(store).items():
        start = time.monotonic()
        with pytest.raises(StoreUnavailable):
            await call()
        assert time.monotonic() - start < FAIL_FAST, name
    assert not await store.ping()


async def test_store_works_again_after_restart(store: RedisStore, fresh_redis: RedisServer) -> None:
    """After a restart the first command succeeds (stale pooled connections are replaced)."""
    await store.cas_rollout(Rollout(route="iris"), 0)
    fresh_redis.stop()
    fresh_redis.start()
    held = await store.get_rollout("iris")
    assert held is not None
    assert held.version == 1


async def test_subscription_raises_when_redis_goes_away(
    store: RedisStore, fresh_redis: RedisServer
) -> None:
    """A live subscription raises StoreUnavailable instead of hanging or reviving silently."""
    messages = store.subscribe()
    try:
        assert await anext(messages) == RESYNC
        fresh_redis.stop()
        with pytest.raises(StoreUnavailable):
            await asyncio.wait_for(anext(messages), FAIL_FAST)
    finally:
        await messages.aclose()  # type: ignore[attr-defined]


async def test_start_does_not_raise_when_redis_is_down(fresh_redis: RedisServer) -> None:
    """Store and follower start with redis down: unhealthy, empty, then catch up when it returns."""
    fresh_redis.stop()
    store = RedisStore(fresh_redis.url)
    health = Health()
    live = LiveState(store, lambda: ROUTES, poll_interval=60, on_health=health)
    await store.start()
    await live.start()
    try:
        assert (live.healthy, health.calls, dict(live.snapshot)) == (False, [False], {})
        fresh_redis.start()
        peer = RedisStore(fresh_redis.url)
        await peer.cas_rollout(Rollout(route="iris"), 0)
        await peer.close()
        await eventually(lambda: "iris" in live.snapshot)
        assert live.healthy
        assert health.calls == [False, True]
    finally:
        await live.stop()
        await store.close()


async def test_outage_keeps_snapshot_then_recovers(
    store: RedisStore, fresh_redis: RedisServer
) -> None:
    """Redis down: snapshot kept, unhealthy; back up: healthy, data intact, changes followed."""
    first = await store.cas_rollout(Rollout(route="iris", weight_bp=500), 0)
    assert first is not None
    await store.add_history("iris", {"event": "start"})
    await store.add_counters("iris", {"v2": {"ok": 5}}, ttl=600)
    health = Health()
    live = LiveState(store, lambda: ROUTES, poll_interval=60, on_health=health)
    await live.start()
    try:
        await asyncio.sleep(0.05)  # the subscriber is live
        fresh_redis.stop()
        await eventually(lambda: not live.healthy)
        assert live.snapshot["iris"] == first  # fail static
        assert health.calls == [False]

        fresh_redis.start()
        await eventually(lambda: live.healthy)
        assert health.calls == [False, True]
        assert await store.get_rollout("iris") == first  # durable across the restart
        assert [e["event"] for e in await store.history("iris")] == ["start"]
        assert await store.read_counters("iris", ["v2"]) == {"v2": {"ok": 5}}

        peer = RedisStore(fresh_redis.url)
        await peer.cas_rollout(first.evolve(weight_bp=2500), 1)
        await peer.close()
        await eventually(lambda: live.snapshot["iris"].version == 2, within=2.0)
    finally:
        await live.stop()


async def test_sentinel_url_finds_the_master(fresh_redis: RedisServer, tmp_path: Path) -> None:
    """A redis+sentinel:// URL asks the sentinel for the master and works like redis://."""
    sentinel = SentinelServer(tmp_path / "sentinel", fresh_redis.port)
    sentinel.start()
    store = RedisStore(sentinel.url)
    direct = RedisStore(fresh_redis.url)
    try:
        stored = await store.cas_rollout(Rollout(route="iris"), 0)
        assert stored is not None
        assert await direct.get_rollout("iris") == stored  # it wrote to that master
        messages = store.subscribe()
        assert await anext(messages) == RESYNC
        await direct.cas_rollout(stored.evolve(step=1), 1)
        assert await asyncio.wait_for(anext(messages), FAIL_FAST) == "iris"
        await messages.aclose()  # type: ignore[attr-defined]
    finally:
        await store.close()
        await direct.close()
        sentinel.kill()


async def test_unreadable_rollout_spoils_only_its_route(store: RedisStore) -> None:
    """A corrupt stored value reads as missing; the other routes still load."""
    await store.cas_rollout(Rollout(route="fraud"), 0)
    raw = Redis.from_url(store.url)
    await raw.set(rollout_key("iris"), b"{not json")
    await raw.aclose()
    assert await store.get_rollout("iris") is None
    assert sorted(await store.get_rollouts(["iris", "fraud"])) == ["fraud"]


async def test_a_hung_redis_fails_fast_too(store: RedisStore, fresh_redis: RedisServer) -> None:
    """A frozen server (accepts, never answers) gives StoreUnavailable within 2 s, then recovers."""
    await store.cas_rollout(Rollout(route="iris"), 0)
    fresh_redis.pause()
    try:
        start = time.monotonic()
        with pytest.raises(StoreUnavailable):
            await store.get_rollout("iris")
        assert time.monotonic() - start < FAIL_FAST
    finally:
        fresh_redis.pause(False)
    held = await store.get_rollout("iris")
    assert held is not None
