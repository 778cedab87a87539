"""Several router processes on one Redis behave as one router.

One leader runs the controllers (a lease; a survivor takes over when the
leader dies), every replica follows a change at once, their metrics add up in
the store, and a replica that restarts joins with the current state.
"""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path

from router.dataplane.metrics import read_window
from router.state.redis import RedisStore
from tests.support.backends import named_backends
from tests.support.redis_server import RedisServer
from tests.support.routerproc import RouterProcess
from tests.test_bluegreen_e2e import TimedLoad, bluegreen_config, routerctl, wait_for

LEASE_TTL = 1.0  # the configs' controller.lease_ttl


def leaders(routers: list[RouterProcess]) -> list[int]:
    """Indexes of the replicas that say they lead (/v1/status "leader")."""
    return [i for i, r in enumerate(routers) if r.get_json("/v1/status")["leader"]]


async def one_leader(routers: list[RouterProcess], within: float) -> int:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        found = await asyncio.to_thread(leaders, routers)
        assert len(found) <= 1, f"two leaders at once: {found}"
        if found:
            return found[0]
        await asyncio.sleep(0.05)
    raise AssertionError(f"no leader within {within}s")


async def test_another_replica_leads_within_twice_the_lease(
    tmp_path: Path, fresh_redis: RedisServer
) -> None:
    """Three routers, exactly one leader; SIGKILL it and a survivor leads within 2 x ttl."""
    async with named_backends("blue", "green") as backends:
        config = bluegreen_config(backends, fresh_redis.url)
        routers = [RouterProcess(tmp_path, config, name=f"r{i}").start() for i in range(3)]
        try:
            first = await one_leader(routers, 5)
            killed = routers[first]
            t_kill = time.monotonic()
            killed.stop(sig=signal.SIGKILL)  # no goodbye: the lease is not released
            survivors = [r for r in routers if r is not killed]
            second = await one_leader(survivors, 4 * LEASE_TTL)
            took = time.monotonic() - t_kill
        finally:
            for router in routers:
                router.stop()
    print(f"\nnew leader after {took:.2f}s (lease {LEASE_TTL:g}s)")
    assert survivors[second] is not killed
    assert took <= 2 * LEASE_TTL


async def test_replicas_follow_one_switch_add_up_metrics_and_rejoin(
    tmp_path: Path, fresh_redis: RedisServer
) -> None:
    """A switch on one replica moves all three; their request counts add up in Redis; while
    one replica is killed the others serve on, and restarted it serves the current colour."""
    async with named_backends("blue", "green") as backends:
        config = bluegreen_config(backends, fresh_redis.url)
        routers = [RouterProcess(tmp_path, config, name=f"r{i}").start() for i in range(3)]
        store = RedisStore(fresh_redis.url)
        await store.start()
        try:
            for router in routers:
                await wait_for(router, 10, phase="steady", active="blue")
            wall_start = time.time()
            switched = await asyncio.to_thread(routerctl, routers[0], "switch", "fraud")
            t_switched = time.monotonic()
            load = TimedLoad([r.url + "/fraud/x" for r in routers], 300)
            await load.run(limit=1.0)
            counted = await _counted(store, len(load.hits), wall_start)
            others = TimedLoad([r.url + "/fraud/x" for r in routers[:2]], 200)
            running = asyncio.create_task(others.run(limit=20))
            await asyncio.sleep(0.3)
            routers[2].stop(sig=signal.SIGKILL)
            rolled = await asyncio.to_thread(routerctl, routers[1], "rollback", "fraud")
            t_rolled = time.monotonic()
            await asyncio.to_thread(routers[2].start)
            others.stop()
            await running
            rejoined = TimedLoad([routers[2].url + "/fraud/x"], 100)
            await rejoined.run(limit=0.3)
        finally:
            await store.close()
            for router in routers:
                router.stop()
    assert switched.returncode == 0, switched.stderr
    assert rolled.returncode == 0, rolled.stderr
    assert load.failed() == []
    assert set(load.between(t_switched)) == {"green"}
    assert counted == len(load.hits)
    assert others.failed() == []  # the survivors carry on while one replica is gone
    assert set(others.between(t_rolled)) == {"blue"}
    assert rejoined.failed() == []
    assert set(rejoined.between(0)) == {"blue"}


async def _counted(store: RedisStore, want: int, since: float) -> int:
    """Requests of the route in the store's windows, once every replica flushed (≤ 5 s)."""
    total, deadline = 0, time.monotonic() + 5
    while time.monotonic() < deadline:
        stats = [
            await read_window(store, "fraud", b, since, time.time() + 1) for b in ("blue", "green")
        ]
        total = sum(s.requests for s in stats)
        if total >= want:
            return total
        await asyncio.sleep(0.2)
    return total


async def test_a_replica_killed_mid_ramp_comes_back_at_the_same_step(
    tmp_path: Path, fresh_redis: RedisServer
) -> None:
    """A canary advanced to its second step; one of two replicas SIGKILLed and started
    again: it serves that step's weight at once, and nothing restarted the ramp."""
    from tests.test_faults_e2e import two_routes, wait_for_route
    from tests.test_state_restore_e2e import wait_rollout

    async with named_backends("blue", "green") as backends:
        config = two_routes(backends, fresh_redis.url)
        config["routes"][1]["strategy"]["canary"]["steps"] = [
            {"weight": 10, "pause": "1h"},
            {"weight": 40, "pause": "1h"},
            {"weight": 100},
        ]
        routers = [RouterProcess(tmp_path, config, name=f"r{i}").start() for i in range(2)]
        try:
            await wait_for_route(routers[0], "iris", "progressing")
            moved = await asyncio.to_thread(routerctl, routers[0], "promote", "iris")
            assert moved.returncode == 0, moved.stderr
            await wait_rollout(routers[1], "iris", 5, step=1, weight_bp=4000)
            before = await asyncio.to_thread(rollout_of, routers[1])
            routers[1].stop(sig=signal.SIGKILL)
            routers[1].start()
            after = await asyncio.to_thread(rollout_of, routers[1])
            await asyncio.sleep(1.0)  # a few controller ticks of the new process
            later = await asyncio.to_thread(rollout_of, routers[0])
            events = [e["event"] for e in routers[0].get_json("/v1/routes/iris/history")["entries"]]
        finally:
            for router in routers:
                router.stop()
    assert (after["step"], after["weight_bp"], after["version"]) == (1, 4000, before["version"])
    assert (later["step"], later["weight_bp"], later["version"]) == (1, 4000, before["version"])
    assert events.count("start") == 1


def rollout_of(router: RouterProcess) -> dict[str, object]:
    found: dict[str, object] = router.get_json("/v1/routes/iris")["rollout"]
    return found
