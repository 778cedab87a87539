"""The StateStore contract: one suite, run on MemoryStore and on RedisStore.

`store` and `peer` (tests/conftest.py) are two replicas' handles on the same
shared state; for memory they are one object. The last section pins what only
one implementation has: the memory store's injectable clock and slow
subscribers, the Redis URL forms.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest

from router.core.rollout import Rollout
from router.state.base import RESYNC, StateStore, StoreUnavailable
from router.state.factory import open_store
from router.state.lease import Leadership
from router.state.memory import MemoryStore
from router.state.redis import RedisStore, parse_sentinel_url

WAIT = 2.0  # bound on any single await of a message; never reached when things work


def canary(route: str = "iris", **changes: object) -> Rollout:
    return Rollout(route=route, kind="canary", phase="progressing").evolve(**changes)


# -- compare-and-set ----------------------------------------------------------
async def test_cas_creates_with_version_zero(store: StateStore) -> None:
    """Creating (expected 0) stores version 1 and it reads back equal."""
    stored = await store.cas_rollout(canary(weight_bp=500), 0)
    assert stored is not None
    assert stored.version == 1
    assert await store.get_rollout("iris") == stored


async def test_cas_refuses_a_stale_version(store: StateStore, peer: StateStore) -> None:
    """A writer holding an old version loses and the stored value is untouched."""
    first = await store.cas_rollout(canary(weight_bp=500), 0)
    assert first is not None
    second = await peer.cas_rollout(first.evolve(weight_bp=2500), first.version)
    assert second is not None
    assert await store.cas_rollout(first.evolve(phase="aborted"), first.version) is None
    assert await store.cas_rollout(canary(), 0) is None  # create over an existing one
    assert await store.get_rollout("iris") == second


async def test_cas_bumps_the_version_each_write(store: StateStore) -> None:
    """Every successful write bumps the version by exactly one."""
    current = await store.cas_rollout(canary(), 0)
    for step in range(1, 5):
        assert current is not None
        current = await store.cas_rollout(current.evolve(step=step), current.version)
    assert current is not None
    assert (current.version, current.step) == (5, 4)


async def test_concurrent_cas_has_exactly_one_winner(store: StateStore, peer: StateStore) -> None:
    """N writers racing from the same version: exactly one wins."""
    base = await store.cas_rollout(canary(), 0)
    assert base is not None
    writers = [store if i % 2 else peer for i in range(10)]
    results = await asyncio.gather(
        *(w.cas_rollout(base.evolve(step=i), base.version) for i, w in enumerate(writers))
    )
    winners = [r for r in results if r is not None]
    assert len(winners) == 1
    assert await store.get_rollout("iris") == winners[0]


# -- restore after the store lost data -------------------------------------------
async def test_restore_writes_back_a_held_value_with_its_own_version(store: StateStore) -> None:
    """Into an empty store, a replica's newer copy goes back as it was (version 7 stays 7)."""
    held = canary(version=7, revision=3, weight_bp=2500)
    assert await store.restore_rollout(held, 0)
    assert await store.get_rollout("iris") == held


async def test_restore_replaces_only_an_older_value(store: StateStore, peer: StateStore) -> None:
    """Over a config seed (version 1) the held version 7 wins; an equal or newer stored
    value is never replaced, so two replicas holding the same copy never fight."""
    seeded = await store.cas_rollout(canary(weight_bp=500), 0)
    assert seeded is not None
    held = canary(version=7, weight_bp=2500)
    assert not await peer.restore_rollout(held, 0)  # expected version is stale
    assert await peer.restore_rollout(held, seeded.version)
    assert not await store.restore_rollout(held, held.version)  # not lower than held
    assert not await store.restore_rollout(canary(version=6), held.version)
    assert await store.get_rollout("iris") == held


async def test_restore_and_announce_reach_every_replica(store: StateStore) -> None:
    """A restore is announced as any change is; `announce` sends the name alone."""
    sub = store.subscribe()
    try:
        assert await asyncio.wait_for(anext(sub), WAIT) == RESYNC
        assert await store.restore_rollout(canary("fraud", version=4), 0)
        assert await asyncio.wait_for(anext(sub), WAIT) == "fraud"
        await store.announce("iris")
        assert await asyncio.wait_for(anext(sub), WAIT) == "iris"
    finally:
        await _close(sub)


async def test_identity_is_stable_while_the_data_lives(store: StateStore, peer: StateStore) -> None:
    """Two reads, two replicas: one epoch and one run id."""
    first, second = await store.identity(), await peer.identity()
    assert first == second
    assert first.epoch
    assert first.run_id


async def test_get_rollouts_leaves_out_missing(store: StateStore) -> None:
    """get_rollouts returns the stored routes only, keyed by route."""
    await store.cas_rollout(canary("a"), 0)
    await store.cas_rollout(canary("c"), 0)
    found = await store.get_rollouts(["a", "b", "c"])
    assert sorted(found) == ["a", "c"]
    assert found["c"].route == "c"
    assert await store.get_rollout("b") is None


# -- history ------------------------------------------------------------------
async def test_history_is_ordered_and_capped(store: StateStore) -> None:
    """History keeps the newest entries, oldest first, and drops old ones."""
    cap, written = 5, 250  # Redis trims whole stream nodes (~100 entries): write past one
    for n in range(written):
        await store.add_history("iris", {"n": n, "event": "step"}, cap=cap)
    kept = [e["n"] for e in await store.history("iris", count=1000)]
    assert cap <= len(kept) < written
    assert kept == list(range(written - len(kept), written))
    assert [e["n"] for e in await store.history("iris", count=3)] == [247, 248, 249]


async def test_history_entries_gain_id_and_ts(store: StateStore) -> None:
    """Entries come back as written plus a stream id and an epoch timestamp."""
    before = time.time()
    await store.add_history("iris", {"event": "abort", "reason": "p99 too high", "weight": 5})
    await store.add_history("iris", {"event": "retry"})
    first, second = await store.history("iris")
    assert first["event"] == "abort"
    assert (first["reason"], first["weight"]) == ("p99 too high", 5)
    assert before - 1 <= first["ts"] <= time.time() + 1
    assert first["id"] != second["id"]
    assert await store.history("other") == []


# -- pub/sub ------------------------------------------------------------------
async def test_subscription_starts_with_resync_then_names(
    store: StateStore, peer: StateStore
) -> None:
    """A subscriber sees RESYNC first, then the name of a route another replica changed."""
    messages = store.subscribe()
    try:
        assert await asyncio.wait_for(anext(messages), WAIT) == RESYNC
        await peer.cas_rollout(canary("fraud"), 0)
        assert await asyncio.wait_for(anext(messages), WAIT) == "fraud"
    finally:
        await _close(messages)


async def test_failed_cas_publishes_nothing(store: StateStore, peer: StateStore) -> None:
    """Only a successful CAS is announced."""
    await peer.cas_rollout(canary("a"), 0)
    messages = store.subscribe()
    try:
        assert await asyncio.wait_for(anext(messages), WAIT) == RESYNC
        assert await peer.cas_rollout(canary("a"), 0) is None
        await peer.cas_rollout(canary("b"), 0)
        assert await asyncio.wait_for(anext(messages), WAIT) == "b"
    finally:
        await _close(messages)


async def _close(messages: AsyncIterator[str]) -> None:
    aclose = getattr(messages, "aclose", None)
    if aclose is not None:
        await aclose()


# -- leases -------------------------------------------------------------------
async def test_lease_is_exclusive_and_renewable(store: StateStore, peer: StateStore) -> None:
    """One holder at a time; the holder renews; others are refused."""
    assert await store.acquire_lease("controller", "a", ttl=5)
    assert not await peer.acquire_lease("controller", "b", ttl=5)
    assert await store.acquire_lease("controller", "a", ttl=5)
    assert await peer.lease_holder("controller") == "a"


async def test_lease_release_only_by_holder(store: StateStore, peer: StateStore) -> None:
    """Release by someone else does nothing; by the holder frees the lease."""
    assert await store.acquire_lease("controller", "a", ttl=5)
    await peer.release_lease("controller", "b")
    assert await peer.lease_holder("controller") == "a"
    await store.release_lease("controller", "a")
    assert await peer.lease_holder("controller") is None
    assert await peer.acquire_lease("controller", "b", ttl=5)


async def test_lease_expires_after_ttl(store: StateStore, peer: StateStore) -> None:
    """A holder that stops renewing loses the lease after its ttl."""
    assert await store.acquire_lease("controller", "a", ttl=0.15)
    await asyncio.sleep(0.25)
    assert await peer.lease_holder("controller") is None
    assert await peer.acquire_lease("controller", "b", ttl=5)


# -- counters -----------------------------------------------------------------
async def test_counters_add_up_across_writers(store: StateStore, peer: StateStore) -> None:
    """Two replicas' increments sum per field; a missing hash reads as {}."""
    await store.add_counters("iris", {"v2": {"ok": 3, "err": 1}}, ttl=60)
    await peer.add_counters("iris", {"v2": {"ok": 4}, "v1": {"ok": 10}}, ttl=60)
    found = await store.read_counters("iris", ["v1", "v2", "none"])
    assert found == {"v1": {"ok": 10}, "v2": {"ok": 7, "err": 1}, "none": {}}


async def test_counters_many_routes_in_one_call(store: StateStore) -> None:
    """add_counters_many writes each route's own hashes."""
    batch = {"a": {"x": {"n": 1}}, "b": {"x": {"n": 2}, "y": {"m": 5}}}
    await store.add_counters_many(batch, ttl=60)
    await store.add_counters_many(batch, ttl=60)
    assert await store.read_counters("a", ["x"]) == {"x": {"n": 2}}
    assert await store.read_counters("b", ["x", "y"]) == {"x": {"n": 4}, "y": {"m": 10}}


async def test_counters_expire_after_ttl(store: StateStore) -> None:
    """A counter hash not updated for ttl seconds is gone."""
    await store.add_counters("iris", {"v2": {"ok": 1}}, ttl=0.15)
    await asyncio.sleep(0.25)
    assert await store.read_counters("iris", ["v2"]) == {"v2": {}}


# -- samples ------------------------------------------------------------------
async def test_samples_are_capped_newest_first(store: StateStore, peer: StateStore) -> None:
    """Samples keep the newest `cap`, newest first; count limits the read; clear empties."""
    for n in range(8):
        await (store if n % 2 else peer).push_sample("iris", "diff", f'{{"n":{n}}}', 5, 60)
    assert await store.samples("iris", "diff", 10) == [f'{{"n":{n}}}' for n in (7, 6, 5, 4, 3)]
    assert await store.samples("iris", "diff", 2) == ['{"n":7}', '{"n":6}']
    assert await store.samples("iris", "other", 2) == []
    await peer.clear_samples("iris", "diff")
    assert await store.samples("iris", "diff", 10) == []


async def test_samples_expire_after_ttl(store: StateStore) -> None:
    """A sample list not pushed to for ttl seconds is gone."""
    await store.push_sample("iris", "diff", "{}", 5, 0.15)
    await asyncio.sleep(0.25)
    assert await store.samples("iris", "diff", 5) == []


async def test_ping_answers(store: StateStore) -> None:
    """A reachable store says so."""
    assert await store.ping()


# -- one implementation only --------------------------------------------------
class FakeClock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


async def test_memory_expiry_follows_the_injected_clock() -> None:
    """MemoryStore expires leases, counters and samples on its clock, not wall time."""
    clock = FakeClock()
    mem = MemoryStore(clock=clock)
    assert await mem.acquire_lease("c", "a", ttl=10)
    await mem.add_counters("r", {"x": {"n": 1}}, ttl=10)
    await mem.push_sample("r", "k", "{}", 3, ttl=10)
    clock.now += 9.9
    assert await mem.lease_holder("c") == "a"
    assert await mem.read_counters("r", ["x"]) == {"x": {"n": 1}}
    clock.now += 0.2
    assert await mem.lease_holder("c") is None
    assert await mem.read_counters("r", ["x"]) == {"x": {}}
    assert await mem.samples("r", "k", 3) == []


async def test_memory_slow_subscriber_gets_resync_not_unbounded_queue() -> None:
    """A subscriber that falls behind loses names and is told RESYNC instead."""
    mem = MemoryStore(queue_size=2)
    messages = mem.subscribe()
    assert await anext(messages) == RESYNC
    for name in ("a", "b", "c", "d"):
        await mem.cas_rollout(canary(name), 0)
    assert await anext(messages) == RESYNC
    await mem.cas_rollout(canary("e"), 0)
    assert await anext(messages) == "e"
    await _close(messages)


async def test_memory_close_ends_subscriptions() -> None:
    """Closing the memory store ends open subscriptions instead of leaving them hanging."""
    mem = MemoryStore()
    messages = mem.subscribe()
    assert await anext(messages) == RESYNC
    await mem.close()
    with pytest.raises(StopAsyncIteration):
        await asyncio.wait_for(anext(messages), WAIT)


def test_sentinel_url_is_parsed() -> None:
    """redis+sentinel URLs give hosts (default port 26379), service, db and auth."""
    hosts, service, db, auth = parse_sentinel_url(
        "redis+sentinel://:s3cr%40t@10.0.0.1:26380,10.0.0.2/mymaster/2"
    )
    assert hosts == [("10.0.0.1", 26380), ("10.0.0.2", 26379)]
    assert (service, db, auth) == ("mymaster", 2, {"password": "s3cr@t"})
    assert parse_sentinel_url("redis+sentinel://h:1/svc")[1:3] == ("svc", 0)


@pytest.mark.parametrize(
    "url", ["redis+sentinel://h:1", "redis+sentinel:///svc", "redis+sentinel://h:1/svc/x"]
)
def test_bad_sentinel_url_is_refused(url: str) -> None:
    """A sentinel URL without hosts or service, or with a bad db, is a ValueError."""
    with pytest.raises(ValueError, match="sentinel url"):
        parse_sentinel_url(url)


async def test_open_store_picks_by_url() -> None:
    """No url -> MemoryStore; redis URLs -> RedisStore; an unknown scheme is refused."""
    assert isinstance(open_store(None), MemoryStore)
    made = open_store("redis://127.0.0.1:1/0")
    assert isinstance(made, RedisStore)
    await made.close()
    with pytest.raises(ValueError, match=r"state\.url"):
        open_store("mysql://x")


# -- leadership on top of leases ----------------------------------------------
async def test_leadership_one_leader_and_handover(store: StateStore, peer: StateStore) -> None:
    """Of two replicas one leads; when it stops, the other takes over at once."""
    a, b = Leadership(store, holder="a", ttl=5), Leadership(peer, holder="b", ttl=5)
    await a.start()
    await b.start()
    try:
        assert (a.is_leader, b.is_leader) == (True, False)
        await a.stop()
        assert not a.is_leader
        assert await b.step()
        assert await peer.lease_holder("controller") == "b"
    finally:
        await a.stop()
        await b.stop()


class FlakyStore(MemoryStore):
    """A memory store whose lease calls fail while `down` is set."""

    down = False

    async def acquire_lease(self, name: str, holder: str, ttl: float) -> bool:
        if self.down:
            raise StoreUnavailable("down")
        return await super().acquire_lease(name, holder, ttl)


async def test_leadership_lapses_before_the_server_side_lease() -> None:
    """Cut off from the store, a leader stops leading before its lease could pass to another."""
    clock = FakeClock()
    store = FlakyStore(clock=clock)
    seen: list[bool] = []
    lead = Leadership(store, holder="a", ttl=10, clock=clock, on_change=seen.append)
    assert await lead.step()
    store.down = True
    clock.now += 7.9
    assert await lead.step()  # unknown outcome: the deadline from the last renewal holds
    clock.now += 0.2
    assert not await lead.step()
    assert seen == [True, False]
    assert await store.lease_holder("controller") == "a"  # the server's lease outlives ours


async def test_leadership_lost_to_another_holder() -> None:
    """A leader whose lease expired and was taken by another is no longer leader."""
    clock = FakeClock()
    store = MemoryStore(clock=clock)
    a, b = (
        Leadership(store, holder="a", ttl=10, clock=clock),
        Leadership(store, holder="b", ttl=10, clock=clock),
    )
    assert await a.step()
    clock.now += 11
    assert await b.step()
    assert not await a.step()


async def test_memory_store_forgets_expired_hashes_nobody_reads_again() -> None:
    """Time-window counters written once and never read again are dropped after their ttl."""
    from router.state.memory import SWEEP_INTERVAL, MemoryStore

    now = [1000.0]
    store = MemoryStore(clock=lambda: now[0])
    for window in range(100):  # a metrics window every 10 s, each written once
        await store.add_counters("r", {f"m:b:{window}": {"n": 1}}, ttl=30.0)
        now[0] += 10.0
    now[0] += SWEEP_INTERVAL
    await store.add_counters("r", {"m:b:last": {"n": 1}}, ttl=30.0)
    assert len(store._counters) <= 1 + int(30.0 / 10.0)
