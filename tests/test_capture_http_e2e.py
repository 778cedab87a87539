"""The CloudEvents sink through a real router: KServe-shaped events, and a stalled receiver."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Any

import aiohttp

from tests.support.cereceiver import receiver
from tests.support.echo import echo_backends
from tests.support.routerproc import RouterProcess
from tests.test_capture_e2e import until


def config(urls: dict[str, str], sink: dict[str, Any]) -> dict[str, Any]:
    return {
        "logging": {"access_sample": 0},
        "backends": {n: {"url": u} for n, u in urls.items()},
        "routes": [{
            "name": "iris", "match": {"path_prefix": "/"},
            "capture": {"sink": {"http": sink}},
            "strategy": {"shadow": {"primary": "a", "shadows": ["b"], "percent": 100}},
        }],
    }  # fmt: skip


async def post_many(url: str, n: int, concurrency: int = 8, size: int = 0) -> list[int]:
    statuses: list[int] = []
    todo = list(range(n))
    async with aiohttp.ClientSession() as session:

        async def worker() -> None:
            while todo:
                i = todo.pop()
                async with session.post(url + "/p", json={"i": i, "pad": "x" * size}) as r:
                    await r.read()
                    statuses.append(r.status)

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return statuses


def rss_kib(pid: int) -> int:
    text = Path(f"/proc/{pid}/status").read_text()
    found = re.search(r"VmRSS:\s+(\d+)", text)
    return int(found.group(1)) if found else 0


async def test_every_event_is_binary_mode_and_one_id_pairs_request_and_answers(
    tmp_path: Path,
) -> None:
    """A receiver that checks ce-* headers accepts every event: request, response and the
    shadow's response share one ce-id (the request id); ce-endpoint names the arm."""
    async with echo_backends("a", "b") as b, receiver() as ce:
        sink = {"url": ce.url, "source": "router-test", "namespace": "ml", "batch": 4}
        router = RouterProcess(tmp_path, config({k: v.url for k, v in b.items()}, sink)).start()
        try:
            statuses = await post_many(router.url, 30)
            await until(lambda: len(ce.events) >= 90)
            page = router.get_text("/metrics")
        finally:
            router.stop()
    assert statuses == [200] * 30
    assert ce.bad == []
    by_id: dict[str, list[dict[str, str]]] = {}
    for headers, _ in ce.events:
        by_id.setdefault(headers["ce-id"], []).append(headers)
    assert len(by_id) == 30
    for events in by_id.values():
        kinds = sorted((e["ce-type"].rsplit(".", 1)[1], e["ce-endpoint"], e["ce-component"])
                       for e in events)  # fmt: skip
        assert kinds == [("request", "a", "primary"), ("response", "a", "primary"),
                         ("response", "b", "shadow")]  # fmt: skip
        assert {e["ce-source"] for e in events} == {"router-test"}
        assert {e["ce-namespace"] for e in events} == {"ml"}
        assert {e["ce-inferenceservicename"] for e in events} == {"iris"}
        assert all(e["content-type"] == "application/json" for e in events)
    assert 'router_capture_records_total{route="iris",kind="exchange"} 30' in page


async def test_a_stalled_receiver_drops_and_counts_never_blocks_or_grows(tmp_path: Path) -> None:
    """A receiver that never answers: every client request still succeeds, the router's
    memory stays bounded by the sink's queue, and the drops are counted."""
    async with echo_backends("a", "b") as b, receiver(stall=True) as ce:
        sink = {"url": ce.url, "timeout": "200ms", "retries": 0, "queue": 200, "concurrency": 2}
        router = RouterProcess(tmp_path, config({k: v.url for k, v in b.items()}, sink)).start()
        try:
            assert router.proc is not None
            await post_many(router.url, 200)  # warm: pools, queues full
            before = rss_kib(router.proc.pid)
            statuses = await post_many(router.url, 3000, concurrency=16, size=2048)
            after = rss_kib(router.proc.pid)
            page = router.get_text("/metrics")
        finally:
            router.stop()
    assert statuses == [200] * 3000
    assert ce.waiting > 0
    dropped = re.search(r'router_capture_dropped_total\{route="iris",reason="sink_backlog"\} (\d+)',
                        page)  # fmt: skip
    assert dropped is not None
    assert int(dropped.group(1)) > 1000
    assert after - before < 50 * 1024, (before, after)
