"""Mirrors without a data plane: offers, bounds, flushing through a store outage, lifecycle."""

from __future__ import annotations

import asyncio
import json

from router.config.reader import parse
from router.core.compare import Answer
from router.dataplane.routing import build_table
from router.dataplane.shadow_copy import MirrorCopy
from router.dataplane.upstream import UpstreamPool
from router.runtime import Runtime
from router.shadow.client import request_bytes
from router.shadow.mirror import Mirrors
from router.state.memory import MemoryStore
from router.state.redis import RedisStore
from tests.support.rawbackend import RawBackend, echo
from tests.support.redis_server import RedisServer
from tests.test_mirror import config_text, shadow_route

ROUTES = shadow_route("r", "/", "{primary: p, shadows: [s], compare: [{field: $.x, kind: label}]}")


def runtime_for(ports: dict[str, int], extra: str = "timeout: 5s") -> Runtime:
    config = parse(config_text(ports, ROUTES, extra))
    return Runtime(config=config, table=build_table(config))


def copy_of(x: str, body: bytes = b"{}", rid: str = "id-1") -> MirrorCopy:
    answer = json.dumps({"x": x}).encode()
    return MirrorCopy("r", ("s",), b"POST", b"/p", [], body, rid, 200, answer, 0.001)


def test_request_bytes_frames_the_copy() -> None:
    """The copy drops hop-by-hop and connection-listed headers, adds ours and a length."""
    runtime = runtime_for({"p": 1, "s": 2})
    pool = UpstreamPool(runtime.config.backends["s"])
    headers = [
        (b"connection", b"x-hop"),
        (b"x-hop", b"1"),
        (b"x-shadow-request", b"0"),
        (b"x-request-id", b"old"),
        (b"transfer-encoding", b"chunked"),
        (b"x-keep", b"yes"),
    ]
    data = request_bytes(pool, b"POST", b"/a?b", headers, b"hi", (b"x-request-id", b"r1"))
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    assert lines[0] == b"POST /a?b HTTP/1.1"
    assert sorted(lines[1:]) == sorted(
        [b"host: 127.0.0.1:2", b"x-keep: yes", b"x-request-id: r1", b"x-shadow-request: 1",
         b"content-length: 2"]
    )  # fmt: skip
    assert body == b"hi"
    get = request_bytes(pool, b"GET", b"/", [], b"", (b"x-request-id", b"r2"))
    assert b"content-length" not in get


async def test_offers_before_start_or_to_unknown_backends_are_counted_drops() -> None:
    """offer never raises: no lane (not started, unknown backend) means a counted drop."""
    mirrors = Mirrors(runtime_for({"p": 1, "s": 2}), MemoryStore())
    mirrors.offer(copy_of("a"))  # not started yet
    await mirrors.start()
    weird = MirrorCopy("r", ("ghost",), b"POST", b"/", [], b"", "id", 200, b"", 0.0)
    mirrors.offer(weird)
    mirrors.offer(None)  # type: ignore[arg-type]  # a bug upstream must not raise here
    await mirrors.stop()
    events = mirrors.routes["r"].events
    assert events == {}  # flushed at stop
    figures = await mirrors.summary("r")
    assert (figures["offered"], figures["dropped"]) == (2, 2)
    assert mirrors.errors == 1
    assert mirrors.totals.dropped == {("r", "s", "no_lane"): 1, ("r", "ghost", "no_lane"): 1}


async def test_byte_budget_bounds_the_queues() -> None:
    """Copies beyond max_queued_bytes are dropped and counted, whatever the queue length."""
    backend = await RawBackend(echo).start()
    try:
        runtime = runtime_for({"p": 1, "s": backend.port})
        mirrors = Mirrors(runtime, MemoryStore(), max_queued_bytes=3000, workers_per_backend=1)
        await mirrors.start()
        for i in range(10):
            mirrors.offer(copy_of("a", b"b" * 1000, f"id-{i}"))
        queued = mirrors.queued_bytes
        await mirrors.stop()
    finally:
        await backend.close()
    assert queued <= 3000
    figures = await mirrors.summary("r")
    assert figures["dropped"] >= 7
    assert mirrors.totals.dropped == {("r", "s", "memory_full"): figures["dropped"]}


async def test_flush_survives_a_store_outage(fresh_redis: RedisServer) -> None:
    """Figures judged while Redis is down are kept and written once it is back."""
    store = RedisStore(fresh_redis.url)
    await store.start()
    try:
        mirrors = Mirrors(runtime_for({"p": 1, "s": 2}), store)
        mirrors.judge(copy_of("a"), "s", Answer(200, b'{"x": "a"}', 0.002))
        assert await mirrors.flush()
        fresh_redis.stop()
        mirrors.judge(copy_of("a", rid="id-2"), "s", Answer(200, b'{"x": "b"}', 0.002))
        mirrors.offer(copy_of("a", body=None))  # type: ignore[arg-type]
        assert not await mirrors.flush()
        fresh_redis.start()
        ok = [await mirrors.flush() for _ in range(3)]  # the client reconnects on its own
        figures = await mirrors.summary("r")
        diffs = await mirrors.diffs("r")
    finally:
        await store.close()
    assert True in ok
    pair = figures["shadows"]["s"]
    assert (pair["n"], pair["agreement"]["k"], figures["oversize_body"]) == (2, 1, 1)
    assert [d["id"] for d in diffs] == ["id-2"]
    # /metrics counted both comparisons as they were judged, the outage or not
    totals = mirrors.totals
    assert totals.outcomes == {("r", "s", "agree"): 1, ("r", "s", "disagree"): 1}
    assert (totals.compared, totals.agreed) == ({("r", "s", "$.x"): 2}, {("r", "s", "$.x"): 1})
    assert totals.dropped == {("r", "s", "oversize_body"): 1}


async def test_stop_cancels_workers_and_leaves_nothing_running() -> None:
    """stop() ends every named task (workers, flusher) and closes the lanes' pools."""
    backend = await RawBackend(echo).start()
    try:
        mirrors = Mirrors(runtime_for({"p": 1, "s": backend.port}), MemoryStore())
        await mirrors.start()
        mirrors.offer(copy_of("a"))
        async with asyncio.timeout(5):
            await mirrors.wait_idle()
        names = {t.get_name() for t in asyncio.all_tasks()}
        pool = mirrors.lanes["s"].pool
        await mirrors.stop()
        left = {t.get_name() for t in asyncio.all_tasks()}
    finally:
        await backend.close()
    assert {"mirror-flush", "mirror:s:0", "mirror:s:3"} <= names
    assert not {n for n in left if n.startswith("mirror")}
    assert pool.retired
    assert not pool.idle
    assert mirrors.lanes == {}


async def test_apply_config_renews_changed_pools_and_stops_removed_lanes() -> None:
    """A changed shadow spec gets a new pool; a removed backend's lane stops."""
    backend = await RawBackend(echo).start()
    try:
        runtime = runtime_for({"p": 1, "s": backend.port})
        mirrors = Mirrors(runtime, MemoryStore())
        await mirrors.start()
        mirrors.offer(copy_of("a"))
        async with asyncio.timeout(5):
            await mirrors.wait_idle()
        old = mirrors.lanes["s"].pool
        changed = runtime_for({"p": 1, "s": backend.port}, "timeout: 7s")
        mirrors.apply_config(changed.config)
        renewed = mirrors.lanes["s"].pool
        routes = shadow_route("r", "/", "{primary: p, shadows: [t]}")
        mirrors.apply_config(parse(config_text({"p": 1, "t": 2}, routes)))
        removed = "s" not in mirrors.lanes
        await mirrors.stop()
    finally:
        await backend.close()
    assert old.retired
    assert renewed is not old
    assert renewed.spec.timeout == 7.0
    assert removed


def test_breaker_opens_after_failures_in_a_row_and_backs_off() -> None:
    """Five failures in a row pause a shadow; each reopening lasts twice as long."""
    from router.shadow.lanes import BREAKER_FAILURES, BREAKER_MIN, Breaker

    b = Breaker()
    opened = [b.failed(100.0) for _ in range(BREAKER_FAILURES)]
    assert opened == [False] * (BREAKER_FAILURES - 1) + [True]
    assert b.is_open(100.0 + BREAKER_MIN - 0.01)
    assert not b.is_open(100.0 + BREAKER_MIN)
    assert b.failed(101.0)  # the probe after the pause fails: open again, longer
    assert b.is_open(101.0 + 2 * BREAKER_MIN - 0.01)
    b.answered()
    assert not b.failed(200.0)  # an answer closed it and reset the count
