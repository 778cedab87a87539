"""Blue/green acceptance: real router processes, real backends, a real redis-server.

`TimedLoad` (also used by tests/test_replicas.py and tests/test_faults_e2e.py)
sends requests at a fixed rate, round robin over the replicas' data ports, and
keeps when each was sent and which backend answered it, so a test can say what
every request sent after a given instant got.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from tests.support.backends import NamedBackend, named_backends
from tests.support.redis_server import RedisServer
from tests.support.routerproc import RouterProcess

FOLLOW = 0.05  # seconds another replica may take to hear of a change, on a busy machine
WATCH = {"window": "10s", "interval": "200ms", "error_rate": {}}


def bluegreen_config(
    backends: dict[str, NamedBackend], redis_url: str, *, watch: dict[str, Any] | None = None
) -> dict[str, Any]:
    return {
        "logging": {"access_sample": 0},
        "controller": {"interval": "100ms", "lease_ttl": "1s"},
        "state": {"url": redis_url, "poll_interval": "1s"},
        "backends": {n: {"url": b.url, "health": "/health"} for n, b in backends.items()},
        "routes": [
            {
                "name": "fraud",
                "match": {"path_prefix": "/fraud"},
                "strategy": {
                    "bluegreen": {"blue": "blue", "green": "green", "watch": watch or WATCH}
                },
            }
        ],
    }


@dataclass(frozen=True, slots=True)
class Hit:
    sent: float  # time.monotonic() when the request was sent
    backend: str
    status: int
    url: str = ""
    took: float = 0.0  # seconds from sending to the whole answer read


class TimedLoad:
    """Requests at a fixed rate over several routers; remembers when each was sent."""

    def __init__(self, urls: list[str], rate: float) -> None:
        self.urls = urls
        self.rate = rate
        self.hits: list[Hit] = []
        self.failures: list[str] = []
        self._stop = asyncio.Event()

    def stop(self) -> None:
        self._stop.set()

    async def run(self, limit: float) -> None:
        start = time.monotonic()
        async with aiohttp.ClientSession() as session:
            pending: set[asyncio.Task[None]] = set()
            i = 0
            while not self._stop.is_set() and (now := time.monotonic()) < start + limit:
                # as many as the clock says are due: a slow wake-up must not lower the rate
                for _ in range(int((now - start) * self.rate) - i):
                    task = asyncio.create_task(self._one(session, self.urls[i % len(self.urls)]))
                    pending.add(task)
                    task.add_done_callback(pending.discard)
                    i += 1
                await asyncio.sleep(0.002)
            await asyncio.gather(*pending)

    async def _one(self, session: aiohttp.ClientSession, url: str) -> None:
        sent = time.monotonic()
        try:
            async with session.post(url, json={"features": [1, 2]}) as r:
                await r.read()
                backend = r.headers.get("X-Router-Backend", "?")
                took = time.monotonic() - sent
                self.hits.append(Hit(sent, backend, r.status, url, took))
        except aiohttp.ClientError as exc:
            self.failures.append(repr(exc))

    def failed(self) -> list[str]:
        """Every request that did not get a 2xx answer from a backend."""
        bad = [f"{h.backend} {h.status}" for h in self.hits if not 200 <= h.status < 300]
        return self.failures + bad

    def between(self, start: float, end: float = float("inf")) -> Counter[str]:
        return Counter(h.backend for h in self.hits if start <= h.sent < end)


def routerctl(router: RouterProcess, *args: str) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "router.ops.cli", "--admin", router.admin_url, "--token"]
    return subprocess.run(
        [*cmd, "test-token", *args], capture_output=True, text=True, timeout=15, check=False
    )


def rollout(router: RouterProcess, route: str = "fraud") -> dict[str, Any]:
    found: dict[str, Any] = router.get_json(f"/v1/routes/{route}")["rollout"] or {}
    return found


async def wait_for(router: RouterProcess, within: float, **want: Any) -> dict[str, Any]:
    """Poll the router's rollout until every `want` field matches."""
    deadline, r = time.monotonic() + within, {}
    while time.monotonic() < deadline:
        r = await asyncio.to_thread(rollout, router)
        if all(r.get(k) == v for k, v in want.items()):
            return r
        await asyncio.sleep(0.05)
    raise AssertionError(f"rollout never had {want}: {r}\n{router.log()[-3000:]}")


def history(router: RouterProcess, route: str = "fraud") -> list[dict[str, Any]]:
    entries: list[dict[str, Any]] = router.get_json(f"/v1/routes/{route}/history")["entries"]
    return entries


async def test_switch_and_rollback_under_load_lose_nothing(
    tmp_path: Path, fresh_redis: RedisServer
) -> None:
    """At 500 req/s over two replicas: every request sent after switch/rollback returns
    lands on the new colour, and none fails. The other replica follows by pub/sub
    within milliseconds (`make bench` measures it); FOLLOW allows for a loaded machine."""
    async with named_backends("blue", "green") as backends:
        config = bluegreen_config(backends, fresh_redis.url)
        routers = [RouterProcess(tmp_path, config, name=f"r{i}").start() for i in range(2)]
        load = TimedLoad([r.url + "/fraud/predict" for r in routers], 500)
        try:
            for router in routers:
                await wait_for(router, 10, phase="steady", active="blue")
            runner = asyncio.create_task(load.run(limit=30))
            await asyncio.sleep(1.0)
            switched = await asyncio.to_thread(routerctl, routers[0], "switch", "fraud")
            t_switched = time.monotonic()
            await asyncio.sleep(1.5)
            t_rollback = time.monotonic()
            rolled = await asyncio.to_thread(routerctl, routers[1], "rollback", "fraud")
            t_rolled = time.monotonic()
            await asyncio.sleep(1.5)
            load.stop()
            await runner
            events = history(routers[0])
        finally:
            for router in routers:
                router.stop()
    assert switched.returncode == 0, switched.stdout + switched.stderr
    assert rolled.returncode == 0, rolled.stdout + rolled.stderr
    assert load.failed() == []
    on_green = load.between(t_switched + FOLLOW, t_rollback)
    on_blue = load.between(t_rolled + FOLLOW)
    print(f"\nafter switch: {dict(on_green)}; after rollback: {dict(on_blue)}")
    assert set(on_green) == {"green"}
    assert on_green["green"] > 300
    assert set(on_blue) == {"blue"}
    assert on_blue["blue"] > 300
    assert [e["event"] for e in events] == ["start", "switch", "rollback"]
    assert events[1]["actor"].startswith("routerctl")


async def test_switch_to_an_unhealthy_colour_is_refused(
    tmp_path: Path, fresh_redis: RedisServer
) -> None:
    """Green's health check failing: routerctl switch exits 1 with why, nothing changes."""
    async with named_backends("blue", "green") as backends:
        backends["green"].status = 503
        router = RouterProcess(tmp_path, bluegreen_config(backends, fresh_redis.url)).start()
        try:
            before = await wait_for(router, 10, phase="steady")
            result = await asyncio.to_thread(routerctl, router, "switch", "fraud")
            after = await asyncio.to_thread(rollout, router)
            events = history(router)
        finally:
            router.stop()
    assert result.returncode == 1
    assert "refused" in result.stderr
    assert "health check GET /health failed: status 503" in result.stderr
    assert after == before
    assert [e["event"] for e in events] == ["start"]


async def test_new_colour_failing_after_the_switch_is_switched_back(
    tmp_path: Path, fresh_redis: RedisServer
) -> None:
    """Green healthy at the switch, then answering 500: back on blue within the watch window,
    and history says which gate and why."""
    async with named_backends("blue", "green") as backends:
        router = RouterProcess(tmp_path, bluegreen_config(backends, fresh_redis.url)).start()
        load = TimedLoad([router.url + "/fraud/predict"], 200)
        try:
            await wait_for(router, 10, phase="steady")
            runner = asyncio.create_task(load.run(limit=30))
            await asyncio.sleep(1.5)  # blue's figures before the switch are the baseline
            result = await asyncio.to_thread(routerctl, router, "switch", "fraud")
            backends["green"].status = 500
            t_broken = time.monotonic()
            back = await wait_for(router, 10, active="blue", phase="aborted")
            t_back = time.monotonic()
            await asyncio.sleep(0.3)
            load.stop()
            await runner
            events = history(router)
        finally:
            router.stop()
    assert result.returncode == 0, result.stdout + result.stderr
    print(f"\nswitched back {t_back - t_broken:.2f}s after green broke; {back['reason']}")
    assert t_back - t_broken < 10
    last = events[-1]
    assert last["event"] == "auto_rollback"
    assert last["gate"] == "error_rate"
    assert "green failed its watch" in last["reason"]
    assert set(load.between(t_back + 0.1)) == {"blue"}
