"""Faults under load: the state store goes away and comes back.

Two router processes share a durable redis-server carrying a switched
blue/green route and a canary mid-ramp. The server is stopped for a few seconds
under load: every replica keeps routing on its last snapshot with no failed
request and says "degraded" on /readyz; the controllers hold. When it is back,
rollouts, active colour and history are as before, and commands work again.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

from tests.support.backends import NamedBackend, named_backends
from tests.support.redis_server import RedisServer
from tests.support.routerproc import RouterProcess
from tests.test_bluegreen_e2e import (
    TimedLoad,
    bluegreen_config,
    history,
    rollout,
    routerctl,
    wait_for,
)

OUTAGE = 3.0  # seconds the redis-server is down


def two_routes(backends: dict[str, NamedBackend], redis_url: str) -> dict[str, Any]:
    config = bluegreen_config(backends, redis_url, watch={"window": "500ms", "interval": "100ms"})
    canary = {
        "stable": "blue",
        "candidate": "green",
        "steps": [{"weight": 30, "pause": "1h"}, {"weight": 100}],
        "analysis": {"interval": "200ms", "error_rate": {}},
    }
    route = {"name": "iris", "match": {"path_prefix": "/iris"}, "strategy": {"canary": canary}}
    config["routes"].append(route)
    return config


def readiness(router: RouterProcess) -> int:
    """/readyz's status code (503 while degraded)."""
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(router.admin_url + "/readyz", timeout=2) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as err:
        with err:
            return err.code


async def readiness_during(routers: list[RouterProcess], seconds: float) -> list[set[int]]:
    """Each replica's /readyz codes seen while polling for `seconds`."""
    seen: list[set[int]] = [set() for _ in routers]
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        for i, router in enumerate(routers):
            seen[i].add(await asyncio.to_thread(readiness, router))
        await asyncio.sleep(0.1)
    return seen


async def wait_ready(routers: list[RouterProcess], within: float) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        codes = [await asyncio.to_thread(readiness, r) for r in routers]
        if codes == [200] * len(routers):
            return
        await asyncio.sleep(0.1)
    raise AssertionError("replicas never became ready again")


def state(routers: list[RouterProcess]) -> dict[str, Any]:
    """What must survive: both rollouts (minus timestamps) and both histories."""
    keep = ("version", "revision", "phase", "active", "step", "weight_bp", "stable", "candidate")
    out: dict[str, Any] = {}
    for name in ("fraud", "iris"):
        r = rollout(routers[0], name)
        out[name] = {k: r.get(k) for k in keep}
        out[f"{name} history"] = [(e["id"], e["event"]) for e in history(routers[0], name)]
    return out


async def test_redis_outage_under_load_loses_nothing(
    tmp_path: Path, fresh_redis: RedisServer
) -> None:
    """Redis stopped for 3 s at 300 req/s: no failed request, /readyz degraded meanwhile,
    rollouts and history intact after, and a rollback works once it is back."""
    async with named_backends("blue", "green") as backends:
        config = two_routes(backends, fresh_redis.url)
        routers = [RouterProcess(tmp_path, config, name=f"r{i}").start() for i in range(2)]
        urls = [r.url + p for r in routers for p in ("/fraud/x", "/iris/x")]
        load = TimedLoad(urls, 300)
        try:
            await wait_for(routers[0], 10, phase="steady")
            switched = await asyncio.to_thread(routerctl, routers[0], "switch", "fraud")
            await wait_for(routers[1], 10, phase="steady", active="green")
            await wait_for_route(routers[0], "iris", "progressing")
            before = await asyncio.to_thread(state, routers)
            runner = asyncio.create_task(load.run(limit=30))
            await asyncio.sleep(0.5)
            fresh_redis.stop()
            t_down = time.monotonic()
            seen = await readiness_during(routers, OUTAGE)
            fresh_redis.start()
            t_up = time.monotonic()
            await wait_ready(routers, 10)
            await asyncio.sleep(0.5)
            load.stop()
            await runner
            after = await asyncio.to_thread(state, routers)
            rolled = await asyncio.to_thread(routerctl, routers[1], "rollback", "fraud")
            back = await wait_for(routers[0], 5, active="blue")
        finally:
            for router in routers:
                router.stop()
    assert switched.returncode == 0, switched.stderr
    assert load.failed() == []
    outage = load.between(t_down, t_up)
    print(f"\nduring the outage: {dict(outage)}; readyz seen: {seen}")
    assert sum(outage.values()) > 0.8 * 300 * OUTAGE
    assert all(503 in codes for codes in seen)
    assert after == before
    assert after["fraud"]["active"] == "green"
    assert after["iris"]["weight_bp"] == 3000
    assert rolled.returncode == 0, rolled.stderr
    assert back["phase"] == "rolled_back"


async def wait_for_route(router: RouterProcess, name: str, phase: str) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if (await asyncio.to_thread(rollout, router, name)).get("phase") == phase:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"{name} never reached {phase}")


async def test_a_frozen_redis_stalls_no_request_and_commands_are_refused(
    tmp_path: Path, fresh_redis: RedisServer
) -> None:
    """Redis SIGSTOPped for longer than the poll interval at 300 req/s: no failed request
    (p99 reported), and `routerctl rollback` meanwhile is refused with exit code 1 and
    says that traffic stays where it is; the canary is untouched afterwards."""
    async with named_backends("blue", "green") as backends:
        config = two_routes(backends, fresh_redis.url)
        routers = [RouterProcess(tmp_path, config, name=f"r{i}").start() for i in range(2)]
        urls = [r.url + p for r in routers for p in ("/fraud/x", "/iris/x")]
        load = TimedLoad(urls, 300)
        try:
            await wait_for_route(routers[0], "iris", "progressing")
            before = await asyncio.to_thread(rollout, routers[0], "iris")
            runner = asyncio.create_task(load.run(limit=30))
            await asyncio.sleep(1.0)
            t_frozen = time.monotonic()
            fresh_redis.pause()
            await asyncio.sleep(1.5)  # past the 1 s poll interval
            refused = await asyncio.to_thread(routerctl, routers[1], "rollback", "iris")
            await asyncio.sleep(1.0)
            fresh_redis.pause(False)
            t_thawed = time.monotonic()
            await wait_ready(routers, 10)
            load.stop()
            await runner
            after = await asyncio.to_thread(rollout, routers[0], "iris")
        finally:
            fresh_redis.pause(False)
            for router in routers:
                router.stop()
    frozen = sorted(h.took for h in load.hits if t_frozen <= h.sent < t_thawed)
    calm = sorted(h.took for h in load.hits if h.sent < t_frozen)
    print(
        f"\np99 before {1000 * calm[int(0.99 * (len(calm) - 1))]:.1f} ms, with Redis frozen "
        f"{1000 * frozen[int(0.99 * (len(frozen) - 1))]:.1f} ms over {len(frozen)} requests; "
        f"rollback said: {refused.stderr.strip()}"
    )
    assert load.failed() == []
    assert len(frozen) > 0.8 * 300 * (t_thawed - t_frozen)
    assert refused.returncode == 1
    assert "state store unreachable, nothing changed" in refused.stderr
    assert "keeps routing as it was" in refused.stderr
    assert (after["phase"], after["weight_bp"], after["version"]) == (
        before["phase"],
        before["weight_bp"],
        before["version"],
    )
