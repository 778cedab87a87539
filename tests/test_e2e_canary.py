"""Canary acceptance against real router processes, real backends, a real Redis."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp

from tests.support.backends import NamedBackend, named_backends
from tests.support.redis_server import RedisServer
from tests.support.routerproc import RouterProcess

TOKEN = {"Authorization": "Bearer test-token"}


def canary_config(
    backends: dict[str, NamedBackend],
    steps: list[dict[str, Any]],
    *,
    redis_url: str | None = None,
    analysis: dict[str, Any] | None = None,
) -> dict[str, Any]:
    config: dict[str, Any] = {
        "logging": {"access_sample": 0},
        "controller": {"interval": "100ms", "lease_ttl": "1s"},
        "backends": {n: {"url": b.url} for n, b in backends.items()},
        "routes": [
            {
                "name": "iris",
                "match": {"path_prefix": "/"},
                "sticky": {"header": "X-User-Id"},
                "strategy": {
                    "canary": {
                        "stable": "v1",
                        "candidate": "v2",
                        "steps": steps,
                        "analysis": analysis or {"interval": "200ms", "error_rate": {}},
                    }
                },
            }
        ],
    }
    if redis_url:
        config["state"] = {"url": redis_url, "poll_interval": "1s"}
    return config


class Load:
    """Requests at a fixed rate from distinct users; counts what each backend answered."""

    def __init__(self, url: str, rate: float) -> None:
        self.url = url
        self.rate = rate
        self.by_backend: dict[tuple[str, int], int] = {}
        self.failures: list[str] = []
        self._stop = asyncio.Event()

    def stop(self) -> None:
        self._stop.set()

    async def run(self, limit: float) -> None:
        deadline = time.monotonic() + limit
        async with aiohttp.ClientSession() as session:
            pending: set[asyncio.Task[None]] = set()
            i = 0
            while not self._stop.is_set() and time.monotonic() < deadline:
                task = asyncio.create_task(self._one(session, f"user-{i}"))
                pending.add(task)
                task.add_done_callback(pending.discard)
                i += 1
                await asyncio.sleep(1 / self.rate)
            await asyncio.gather(*pending)

    async def _one(self, session: aiohttp.ClientSession, user: str) -> None:
        try:
            async with session.post(self.url, json={}, headers={"X-User-Id": user}) as r:
                await r.read()
                key = (r.headers.get("X-Router-Backend", "?"), r.status)
                self.by_backend[key] = self.by_backend.get(key, 0) + 1
        except aiohttp.ClientError as exc:
            self.failures.append(repr(exc))


async def wait_phase(router: RouterProcess, phase: str, within: float) -> dict[str, Any]:
    deadline = time.monotonic() + within
    rollout: dict[str, Any] = {}
    while time.monotonic() < deadline:
        rollout = router.get_json("/v1/routes/iris")["rollout"] or {}
        if rollout.get("phase") == phase:
            return rollout
        await asyncio.sleep(0.05)
    raise AssertionError(f"rollout never reached {phase}: {rollout}\n{router.log()[-3000:]}")


async def broken_candidate_is_stopped(tmp_path: Path, rate: float) -> int:
    async with named_backends("v1", "v2") as backends:
        backends["v2"].status = 500
        steps: list[dict[str, Any]] = [{"weight": 5, "pause": "1h"}, {"weight": 100}]
        router = RouterProcess(tmp_path, canary_config(backends, steps)).start()
        load = Load(router.url + "/predict", rate)
        try:
            runner = asyncio.create_task(load.run(limit=60))
            rollout = await wait_phase(router, "aborted", within=60)
            await asyncio.sleep(0.5)  # requests after the abort must all go to v1
            load.stop()
            await runner
            history = router.get_json("/v1/routes/iris/history")["entries"]
        finally:
            router.stop()
    failed = load.by_backend.get(("v2", 500), 0)
    print(
        f"\n{rate:g} req/s: {failed} failed candidate requests before the abort; {load.by_backend}"
    )
    assert load.failures == []
    assert "error_rate" in rollout["reason"]
    assert any(e["event"] == "abort" and e.get("gate") == "error_rate" for e in history)
    return failed


async def test_candidate_failing_every_request_is_aborted_at_200_rps(tmp_path: Path) -> None:
    """A 100 %-failing candidate at 5 % under 200 req/s serves at most 20 failed requests."""
    assert await broken_candidate_is_stopped(tmp_path, 200) <= 20


async def test_candidate_failing_every_request_is_aborted_at_20_rps(tmp_path: Path) -> None:
    """The same at 20 req/s: the test counts requests, not time."""
    assert await broken_candidate_is_stopped(tmp_path, 20) <= 20


async def aborted_by(
    tmp_path: Path, backends: dict[str, NamedBackend], gates: dict[str, Any]
) -> Any:
    steps: list[dict[str, Any]] = [{"weight": 50, "pause": "1h"}, {"weight": 100}]
    config = canary_config(backends, steps, analysis={"interval": "200ms", **gates})
    router = RouterProcess(tmp_path, config).start()
    load = Load(router.url + "/predict", 300)
    try:
        runner = asyncio.create_task(load.run(limit=60))
        await wait_phase(router, "aborted", within=60)
        load.stop()
        await runner
        return router.get_json("/v1/routes/iris/history")["entries"][-1]
    finally:
        router.stop()


async def test_candidate_with_5_percent_errors_against_half_a_percent_is_aborted(
    tmp_path: Path,
) -> None:
    """5 % errors vs stable's 0.5 %: aborted on error_rate, figures in history."""
    async with named_backends("v1", "v2") as backends:
        backends["v1"].error_every, backends["v2"].error_every = 200, 20
        gates = {"error_rate": {"max_increase": 0.01}}
        abort = await aborted_by(tmp_path, backends, gates)
    print(f"\nabort entry: {abort}")
    assert (abort["event"], abort["gate"]) == ("abort", "error_rate")
    assert abort["candidate_n"] > 0
    assert abort["baseline_n"] > 0


async def test_candidate_adding_300ms_is_aborted_on_latency(tmp_path: Path) -> None:
    """A candidate 300 ms slower than stable is aborted by the latency gate."""
    async with named_backends("v1", "v2") as backends:
        backends["v2"].delay = 0.3
        gates = {"error_rate": {}, "latency": {"p99_ratio": 1.5, "min_requests": 50}}
        abort = await aborted_by(tmp_path, backends, gates)
    assert (abort["event"], abort["gate"]) == ("abort", "latency")


async def test_healthy_candidate_is_promoted(tmp_path: Path) -> None:
    """A candidate that behaves like stable ramps step by step and is promoted."""
    async with named_backends("v1", "v2") as backends:
        steps: list[dict[str, Any]] = [
            {"weight": 20, "pause": "500ms", "min_requests": 10},
            {"weight": 60, "pause": "500ms", "min_requests": 10},
            {"weight": 100},
        ]
        analysis = {"interval": "200ms", "error_rate": {"max_increase": 0.5}}
        config = canary_config(backends, steps, analysis=analysis)
        router = RouterProcess(tmp_path, config).start()
        load = Load(router.url + "/predict", 200)
        try:
            runner = asyncio.create_task(load.run(limit=60))
            rollout = await wait_phase(router, "promoted", within=60)
            load.stop()
            await runner
            history = router.get_json("/v1/routes/iris/history")["entries"]
        finally:
            router.stop()
    assert rollout["stable"] == "v2"
    assert rollout["weight_bp"] == 10_000
    moves = [e["event"] for e in history if e["event"] != "waiting"]
    assert moves == ["start", "advance", "promote"]
    assert load.failures == []


async def wait_for_gates(router: RouterProcess, within: float) -> None:
    """Until the (new) leader has judged the route once and left its verdicts."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if router.get_json("/v1/status")["analysis"].get("iris", {}).get("gates"):
            return
        await asyncio.sleep(0.05)
    raise AssertionError("no gate verdicts after the restart")


def routerctl(router: RouterProcess, *args: str) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "router.ops.cli", "--admin", router.admin_url, "--token"]
    return subprocess.run(
        [*cmd, "test-token", *args], capture_output=True, text=True, timeout=10, check=False
    )


async def test_routerctl_steers_and_a_restart_resumes_the_same_step(
    tmp_path: Path, fresh_redis: RedisServer
) -> None:
    """promote/pause via routerctl; killing the router keeps step, weight and history."""
    async with named_backends("v1", "v2") as backends:
        steps: list[dict[str, Any]] = [
            {"weight": 5, "pause": "1h"},
            {"weight": 25, "pause": "1h"},
            {"weight": 100},
        ]
        config = canary_config(backends, steps, redis_url=fresh_redis.url)
        router = RouterProcess(tmp_path, config).start()
        try:
            await wait_phase(router, "progressing", within=10)
            promoted = await asyncio.to_thread(routerctl, router, "promote", "iris")
            paused = await asyncio.to_thread(routerctl, router, "pause", "iris")
            before = router.get_json("/v1/routes/iris")["rollout"]
            router.stop(sig=9)  # SIGKILL: no goodbye
            router.start()
            after = await wait_phase(router, "paused", within=10)
            await wait_for_gates(router, within=10)
            status = await asyncio.to_thread(routerctl, router, "status", "iris")
            history = await asyncio.to_thread(routerctl, router, "history", "iris", "--json")
        finally:
            router.stop()
    assert promoted.returncode == 0, promoted.stdout + promoted.stderr
    assert paused.returncode == 0, paused.stdout + paused.stderr
    assert (before["step"], before["weight_bp"], before["phase"]) == (1, 2500, "paused")
    assert (after["step"], after["weight_bp"]) == (1, 2500)
    assert "paused" in status.stdout
    assert "error_rate" in status.stdout  # the gate table of the rollout view
    events = [e["event"] for e in json.loads(history.stdout)]
    assert events == ["start", "advance", "pause"]
