"""The foundation's acceptance, run against real router processes.

Backends are real aiohttp servers; the router runs as `python -m router`.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.support.backends import NamedBackend, named_backends
from tests.support.rawbackend import RawBackend, reset
from tests.support.routerproc import ADMIN_TOKEN, RouterProcess


def split_config(backends: dict[str, NamedBackend], weights: dict[str, float]) -> dict[str, Any]:
    return {
        "logging": {"access_sample": 0},
        "backends": {n: {"url": b.url} for n, b in backends.items()},
        "routes": [
            {
                "name": "predict",
                "match": {"path_prefix": "/"},
                "sticky": {"header": "X-User-Id"},
                "strategy": {"split": {"weights": weights}},
            }
        ],
    }


async def served_by(session: aiohttp.ClientSession, url: str, user: str) -> str:
    async with session.post(url + "/predict", json={"x": 1}, headers={"X-User-Id": user}) as r:
        assert r.status == 200, await r.text()
        await r.read()
        return r.headers["X-Router-Backend"]


async def fan_out(url: str, users: list[str], concurrency: int = 16) -> list[str]:
    """Send one request per user, `concurrency` at a time; the backend per user."""
    results: list[str] = [""] * len(users)
    queue = list(enumerate(users))

    async def worker(session: aiohttp.ClientSession) -> None:
        while queue:
            i, user = queue.pop()
            results[i] = await served_by(session, url, user)

    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:
        await asyncio.gather(*(worker(session) for _ in range(concurrency)))
    return results


async def test_split_90_10_shares_over_10000_users(tmp_path: Path) -> None:
    """10,000 sticky users through a 90/10 split land within ±1.5 points of 90/10."""
    async with named_backends("a", "b") as backends:
        router = RouterProcess(tmp_path, split_config(backends, {"a": 90, "b": 10})).start()
        try:
            served = await fan_out(router.url, [f"user-{i}" for i in range(10_000)])
        finally:
            router.stop()
    shares = Counter(served)
    print(f"\nshares over 10,000 users: {dict(shares)}")
    assert abs(shares["b"] / 100 - 10) <= 1.5
    assert shares["a"] + shares["b"] == 10_000
    assert backends["b"].served == shares["b"]


async def test_same_user_same_backend_in_two_processes(tmp_path: Path) -> None:
    """Two separate router processes send each sticky user to the same backend."""
    async with named_backends("a", "b") as backends:
        cfg = split_config(backends, {"a": 50, "b": 50})
        one = RouterProcess(tmp_path, cfg, name="one").start()
        two = RouterProcess(tmp_path, cfg, name="two").start()
        users = [f"user-{i}" for i in range(300)]
        try:
            first, second = await asyncio.gather(fan_out(one.url, users), fan_out(two.url, users))
        finally:
            one.stop()
            two.stop()
    assert first == second
    assert 0.35 < Counter(first)["b"] / len(users) < 0.65  # both backends really used


async def test_hot_reload_under_load_moves_all_traffic_within_a_second(tmp_path: Path) -> None:
    """Editing 90/10 to 0/100 under load: within 1 s every new request goes to b; none fails."""
    async with named_backends("a", "b") as backends:
        router = RouterProcess(tmp_path, split_config(backends, {"a": 90, "b": 10})).start()
        log: list[tuple[float, str]] = []
        failures: list[str] = []
        stop_at = time.monotonic() + 3.0

        async def load(session: aiohttp.ClientSession, n: int) -> None:
            i = 0
            while time.monotonic() < stop_at:
                started = time.monotonic()
                try:
                    log.append((started, await served_by(session, router.url, f"u{n}-{i}")))
                except (AssertionError, aiohttp.ClientError) as exc:
                    failures.append(repr(exc))
                i += 1

        edited_at = 0.0

        async def edit() -> None:
            nonlocal edited_at
            await asyncio.sleep(1.0)
            router.write_config(split_config(backends, {"a": 0, "b": 100}))
            edited_at = time.monotonic()

        try:
            async with aiohttp.ClientSession() as session:
                await asyncio.gather(*(load(session, n) for n in range(8)), edit())
            status = router.get_json("/v1/status")
        finally:
            router.stop()
    late = [backend for started, backend in log if started > edited_at + 1.0]
    early = [backend for started, backend in log if started < edited_at]
    print(f"\nrequests: {len(log)}, after edit+1s: {len(late)}, failures: {len(failures)}")
    assert failures == []
    assert late
    assert set(late) == {"b"}
    assert "a" in early  # the old config really served before the edit
    assert status["config"]["last_reload_error"] is None


async def test_bad_edit_is_refused_and_shown_by_routerctl(tmp_path: Path) -> None:
    """A bad edit keeps the old config serving; `routerctl status` shows the exact path."""
    async with named_backends("a", "b") as backends:
        router = RouterProcess(tmp_path, split_config(backends, {"a": 0, "b": 100})).start()
        try:
            bad = split_config(backends, {"a": 0, "b": 140})
            router.write_config(bad)
            await asyncio.sleep(1.0)
            served = await fan_out(router.url, [f"user-{i}" for i in range(50)])
            out = await asyncio.to_thread(
                subprocess.run,
                [
                    sys.executable,
                    "-m",
                    "router.ops.cli",
                    "--admin",
                    router.admin_url,
                    "--token",
                    ADMIN_TOKEN,
                    "status",
                ],
                capture_output=True,
                text=True,
                timeout=10,
                check=False,
            )
        finally:
            router.stop()
    assert set(served) == {"b"}
    assert "routes[0].strategy.split.weights.b" in out.stdout, out.stdout + out.stderr
    assert "140" in out.stdout


@pytest.mark.parametrize("workers", [2])
async def test_workers_without_redis_are_refused(tmp_path: Path, workers: int) -> None:
    """`--workers 2` with in-memory state exits at once with a message naming state.url."""
    async with named_backends("a") as backends:
        router = RouterProcess(tmp_path, split_config(backends, {"a": 100}))
        out = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "router", "--config", str(router.config_path), "--workers", "2"],
            capture_output=True,
            text=True,
            timeout=20,
            check=False,
        )
    assert out.returncode != 0
    assert "state.url" in out.stderr


async def _garbage(
    backend: RawBackend, reader: asyncio.StreamReader, w: asyncio.StreamWriter
) -> None:
    if await backend.next_request(reader) is not None:
        w.write(b"\x00\x01 this is not HTTP\r\n\r\n")
        await w.drain()


async def _reset_mid_body(
    backend: RawBackend, reader: asyncio.StreamReader, w: asyncio.StreamWriter
) -> None:
    if await backend.next_request(reader) is not None:
        w.write(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n" + b"x" * 10)
        await w.drain()
        reset(w)


async def test_broken_backend_gets_502_json_and_other_routes_are_unaffected(
    tmp_path: Path,
) -> None:
    """Garbage: 502 JSON naming the backend; reset mid-body: aborted; the good route: 200."""
    garbage = await RawBackend(handler=_garbage).start()
    midway = await RawBackend(handler=_reset_mid_body).start()
    try:
        async with named_backends("good") as backends:
            config: dict[str, Any] = {
                "logging": {"access_sample": 0},
                "backends": {
                    "good": {"url": backends["good"].url},
                    "garbage": {"url": f"http://127.0.0.1:{garbage.port}"},
                    "midway": {"url": f"http://127.0.0.1:{midway.port}"},
                },
                "routes": [
                    _one_backend_route("bad", "/bad", "garbage"),
                    _one_backend_route("cut", "/cut", "midway"),
                    _one_backend_route("ok", "/", "good"),
                ],
            }
            router = RouterProcess(tmp_path, config).start()
            try:
                async with aiohttp.ClientSession() as session:
                    async with session.post(router.url + "/bad", json={}) as r:
                        bad_status, bad = r.status, await r.json()
                    with pytest.raises(aiohttp.ClientPayloadError):
                        async with session.get(router.url + "/cut") as r:
                            await r.read()
                    good = await fan_out(router.url, [f"u{i}" for i in range(50)])
            finally:
                router.stop()
    finally:
        await garbage.close()
        await midway.close()
    assert bad_status == 502
    assert bad["backend"] == "garbage"
    assert bad["request_id"]
    assert set(good) == {"good"}


def _one_backend_route(name: str, prefix: str, backend: str) -> dict[str, Any]:
    return {
        "name": name,
        "match": {"path_prefix": prefix},
        "strategy": {"split": {"weights": {backend: 100}}},
    }
