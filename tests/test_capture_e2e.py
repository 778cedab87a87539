"""Capture through a real router process: every exchange a record, shadows paired, figures."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp

from tests.support.echo import echo_backends
from tests.support.routerproc import RouterProcess

TOKEN = {"Authorization": "Bearer test-token"}


def capture_config(urls: dict[str, str], sink: Path, **capture: Any) -> dict[str, Any]:
    block: dict[str, Any] = {"sink": {"file": {"path": str(sink)}}, **capture}
    return {
        "logging": {"access_sample": 0},
        "backends": {n: {"url": u} for n, u in urls.items()},
        "routes": [
            {
                "name": "scores",
                "match": {"path_prefix": "/"},
                "capture": block,
                "strategy": {"shadow": {"primary": "a", "shadows": ["b"], "percent": 100}},
            }
        ],
    }


async def send(url: str, n: int, body: Callable[[int], dict[str, Any]]) -> list[str]:
    ids: list[str] = []
    async with aiohttp.ClientSession() as session:
        for i in range(n):
            async with session.post(url + "/predict", json=body(i)) as resp:
                await resp.read()
                assert resp.status == 200
                ids.append(resp.headers["X-Request-Id"])
    return ids


def lines(*paths: Path) -> list[dict[str, Any]]:
    out = []
    for path in paths:
        if path.exists():
            out += [json.loads(x) for x in path.read_text().splitlines() if x.strip()]
    return out


async def until(check: Callable[[], bool], within: float = 20.0) -> None:
    deadline = time.monotonic() + within
    while not check():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)


async def metrics(router: RouterProcess) -> str:
    async with aiohttp.ClientSession() as session, session.get(router.admin_url + "/metrics") as r:
        return await r.text()


async def test_every_exchange_is_one_record_and_each_shadow_answer_is_paired(
    tmp_path: Path,
) -> None:
    """100 % capture: one exchange record per request, one shadow record per request under the
    same id, the bodies kept as JSON; the figures count them."""
    sink = tmp_path / "capture" / "scores.jsonl"
    async with echo_backends("a", "b") as b:
        router = RouterProcess(tmp_path, capture_config({k: v.url for k, v in b.items()}, sink))
        router.start()
        try:
            ids = await send(router.url, 50, lambda i: {"features": [i, i + 1]})
            await until(lambda: len(lines(sink)) >= 100)
            page = await metrics(router)
        finally:
            router.stop()
    records = lines(sink)
    exchanges = {r["id"]: r for r in records if r["kind"] == "exchange"}
    shadows = {r["id"]: r for r in records if r["kind"] == "shadow"}
    assert set(exchanges) == set(ids) == set(shadows)
    one = exchanges[ids[7]]
    assert (one["arm"], one["role"], one["status"], one["method"]) == ("a", "primary", 200, "POST")
    assert one["request"]["json"] == {"features": [7, 8]}
    assert one["response"]["json"]["echo"] == {"features": [7, 8]}
    assert shadows[ids[7]]["arm"] == "b"
    assert shadows[ids[7]]["role"] == "shadow"
    assert shadows[ids[7]]["response"]["json"]["backend"] == "b"
    assert shadows[ids[7]]["primary"]["status"] == 200
    assert 'router_capture_records_total{route="scores",kind="exchange"} 50' in page
    assert 'router_capture_records_total{route="scores",kind="shadow"} 50' in page


async def test_sampling_mode_and_arms_choose_what_is_kept(tmp_path: Path) -> None:
    """mode: request keeps no answers; arms: [primary] keeps no shadow answers; sample 0
    keeps nothing."""
    sink = tmp_path / "s.jsonl"
    async with echo_backends("a", "b") as b:
        urls = {k: v.url for k, v in b.items()}
        router = RouterProcess(
            tmp_path, capture_config(urls, sink, mode="request", arms=["primary"])
        )
        router.start()
        try:
            await send(router.url, 20, lambda i: {"x": i})
            await until(lambda: len(lines(sink)) >= 20)
            await asyncio.sleep(0.5)  # a shadow record would have come by now
        finally:
            router.stop()
    records = lines(sink)
    assert len(records) == 20
    assert all(r["kind"] == "exchange" and "response" not in r for r in records)


async def test_a_full_file_is_rotated_and_at_most_keep_files_stay(tmp_path: Path) -> None:
    """max_bytes and keep bound the disk: older files are rotated away, lines never split."""
    sink = tmp_path / "r.jsonl"
    async with echo_backends("a", "b") as b:
        urls = {k: v.url for k, v in b.items()}
        config = capture_config(urls, sink, arms=["primary"])
        config["routes"][0]["capture"]["sink"]["file"].update(max_bytes="8KiB", keep=2)
        router = RouterProcess(tmp_path, config)
        router.start()
        try:
            await send(router.url, 120, lambda i: {"pad": "x" * 200, "i": i})
            await until(lambda: 'kind="exchange"} 120' in _sync_metrics(router))
        finally:
            router.stop()
    files = sorted(p.name for p in tmp_path.glob("r.jsonl*"))
    assert files == ["r.jsonl", "r.jsonl.1", "r.jsonl.2"]
    for path in tmp_path.glob("r.jsonl*"):
        assert path.stat().st_size <= 8 * 1024
        assert all(json.loads(x)["kind"] == "exchange" for x in path.read_text().splitlines())


def _sync_metrics(router: RouterProcess) -> str:
    return router.get_text("/metrics")
