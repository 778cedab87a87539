"""Fail static when Redis loses its data: an empty restart moves no traffic.

Two router processes share a redis-server run the way many clusters run a cache
(no snapshot, no append-only file). The operator has left four routes where they
want them: blue/green switched to green, a canary promoted, a canary aborted, an
automation level set by hand. Redis is SIGKILLed under load and started again
empty. Every replica must keep routing where the operator left it, write its copy
back into the store (one `restored` entry in each route's history), never seed
from config.yaml over it, and fail no request.
"""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path
from typing import Any

from tests.support.backends import NamedBackend, named_backends
from tests.support.redis_server import RedisServer
from tests.support.routerproc import RouterProcess
from tests.test_bluegreen_e2e import TimedLoad, history, rollout, routerctl
from tests.test_faults_e2e import readiness

DOWN = 2.0  # seconds Redis stays dead
RATE = 200  # requests a second over both replicas and all four routes


def four_routes(backends: dict[str, NamedBackend], redis_url: str) -> dict[str, Any]:
    ramp = [{"weight": 10, "pause": "1h"}, {"weight": 100}]
    analysis = {"interval": "100ms", "error_rate": {}}
    watch = {"window": "300ms", "interval": "100ms"}

    def canary() -> dict[str, Any]:
        return {
            "canary": {"stable": "blue", "candidate": "green", "steps": ramp, "analysis": analysis}
        }

    routes = [
        ("fraud", {"bluegreen": {"blue": "blue", "green": "green", "watch": watch}}),
        ("iris", canary()),
        ("churn", canary()),
        ("inspect", {"automation": {"model": "green", "human": "blue", "level": "human"}}),
    ]
    return {
        "logging": {"access_sample": 0},
        "controller": {"interval": "100ms", "lease_ttl": "1s"},
        "state": {"url": redis_url, "poll_interval": "1s"},
        "backends": {n: {"url": b.url, "health": "/health"} for n, b in backends.items()},
        "routes": [
            {"name": name, "match": {"path_prefix": f"/{name}"}, "strategy": strategy}
            for name, strategy in routes
        ],
    }


# where the operator left each route, and the backend that must answer it
EXPECTED: dict[str, tuple[dict[str, Any], str]] = {
    "fraud": ({"active": "green", "phase": "steady"}, "green"),
    "iris": ({"phase": "promoted", "stable": "green"}, "green"),
    "churn": ({"phase": "aborted", "weight_bp": 0}, "blue"),
    "inspect": ({"level": "full"}, "green"),
}


async def wait_rollout(router: RouterProcess, route: str, within: float, **want: Any) -> None:
    deadline, seen = time.monotonic() + within, {}
    while time.monotonic() < deadline:
        seen = await asyncio.to_thread(rollout, router, route)
        if all(seen.get(k) == v for k, v in want.items()):
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"{route} never had {want}: {seen}\n{router.log()[-3000:]}")


async def operator_leaves_every_route(router: RouterProcess) -> None:
    """The four decisions, each taken by routerctl and seen applied."""
    for route in ("fraud", "iris", "churn"):
        await wait_rollout(router, route, 10, revision=1)
    commands = [
        ("switch", "fraud", "--force"),
        ("promote", "iris", "--full"),
        ("abort", "churn"),
        ("automation", "inspect", "full", "--force", "--reason", "restore test"),
    ]
    for args in commands:
        done = await asyncio.to_thread(routerctl, router, *args)
        assert done.returncode == 0, (args, done.stdout, done.stderr)
    for route, (want, _) in EXPECTED.items():
        await wait_rollout(router, route, 5, **want)


def answers_by_route(load: TimedLoad, since: float) -> dict[str, set[str]]:
    """Which backends answered each route's requests sent after `since`."""
    out: dict[str, set[str]] = {}
    for hit in load.hits:
        if hit.sent >= since:
            route = hit.url.split("/")[3]  # http://host:port/<route>/x
            out.setdefault(route, set()).add(hit.backend)
    return out


async def test_an_empty_redis_restart_moves_no_traffic(
    tmp_path: Path, cache_redis: RedisServer
) -> None:
    """Redis SIGKILLed under load and restarted empty: every route of both replicas
    stays where the operator left it, the store gets their copies back with one
    `restored` history entry each, /readyz is ready again, no request failed."""
    redis = cache_redis
    async with named_backends("blue", "green") as backends:
        config = four_routes(backends, redis.url)
        routers = [RouterProcess(tmp_path, config, name=f"r{i}").start() for i in range(2)]
        urls = [r.url + f"/{route}/x" for r in routers for route in EXPECTED]
        load = TimedLoad(urls, RATE)
        try:
            await operator_leaves_every_route(routers[0])
            before = {
                route: await asyncio.to_thread(rollout, routers[1], route) for route in EXPECTED
            }
            runner = asyncio.create_task(load.run(limit=30))
            await asyncio.sleep(0.5)
            redis.kill()  # SIGKILL: nothing saved, nothing said to the clients
            t_kill = time.monotonic()
            await asyncio.sleep(DOWN)
            redis.start()  # empty: --save '' --appendonly no
            t_up = time.monotonic()
            for router in routers:
                for route, (want, _) in EXPECTED.items():
                    await wait_rollout(router, route, 10, **want)
            await asyncio.sleep(1.5)  # a few controller ticks and polls after the restore
            load.stop()
            await runner
            after = {
                i: {route: await asyncio.to_thread(rollout, r, route) for route in EXPECTED}
                for i, r in enumerate(routers)
            }
            histories = {
                route: await asyncio.to_thread(history, routers[0], route) for route in EXPECTED
            }
            status = await asyncio.to_thread(routers[1].get_json, "/v1/status")
            ready = [await asyncio.to_thread(readiness, r) for r in routers]
        finally:
            for router in routers:
                router.stop(signal.SIGTERM)
    assert load.failed() == []
    served = answers_by_route(load, t_kill)
    print(f"\nanswers after the kill (restart {t_up - t_kill:.1f}s later): {served}")
    for route, (want, backend) in EXPECTED.items():
        assert served[route] == {backend}, route
        for i in after:
            got = after[i][route]
            assert {k: got[k] for k in want} == want, (i, route)
            assert (got["revision"], got["version"]) == (
                before[route]["revision"],
                before[route]["version"],
            )
        events = [e["event"] for e in histories[route]]
        assert events.count("restored") == 1, (route, events)
        assert "start" not in events, (route, events)  # never seeded from config.yaml again
    assert status["store"]["data_lost_at"] is not None
    assert ready == [200, 200]
