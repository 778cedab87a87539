"""Stopping connection by connection: every request begun is answered, the last one
with `Connection: close` (the data plane in process; tests/test_pod_lifecycle.py
runs the whole SIGTERM sequence on a real router process)."""

from __future__ import annotations

import asyncio

from tests.support.dataplane import RawClient, backend, get, make_runtime, running_plane
from tests.support.rawbackend import RawBackend


async def test_during_the_delay_an_idle_connection_gets_one_more_answer() -> None:
    """stop_soon: an idle keep-alive connection stays open; its next request is
    answered with Connection: close and the connection closed after it; a new
    connection is still accepted, and closed after its first answer."""
    b = await RawBackend().start()
    try:
        async with running_plane(make_runtime([backend("b", b.port)])) as p:
            idle = await RawClient.open(p.port)
            await idle.send(get("/one"))
            assert (await idle.response()).header("connection") is None  # keep-alive
            p.plane.stop_soon()
            await asyncio.sleep(0.2)  # more than the sweeps that close idle ones at drain
            await idle.send(get("/two"))
            last = await idle.response()
            assert await idle.read_rest(wait=2) == b""
            fresh = await RawClient.open(p.port)
            await fresh.send(get("/three"))
            first = await fresh.response()
            assert await fresh.read_rest(wait=2) == b""
            await idle.close()
            await fresh.close()
    finally:
        await b.close()
    assert last.status == 200
    assert last.header("connection") == "close"
    assert first.status == 200
    assert first.header("connection") == "close"


async def test_pipelined_requests_are_all_answered_the_last_one_closing() -> None:
    """Three requests in one write while stopping: three answers in order; only the
    third says close (closing after the first would drop two received requests)."""
    b = await RawBackend().start()
    try:
        async with running_plane(make_runtime([backend("b", b.port)])) as p:
            client = await RawClient.open(p.port)
            p.plane.stop_soon()
            await client.send(get("/1") + get("/2") + get("/3"))
            answers = [await client.response() for _ in range(3)]
            assert await client.read_rest(wait=2) == b""
            await client.close()
    finally:
        await b.close()
    assert [a.status for a in answers] == [200, 200, 200]
    assert [a.header("connection") for a in answers] == [None, None, "close"]


async def test_a_head_begun_before_the_listener_closed_is_answered() -> None:
    """shutdown (no longer accepting) with half a head received: the rest still gets
    read and answered with Connection: close; an idle connection is closed."""
    b = await RawBackend().start()
    try:
        async with running_plane(make_runtime([backend("b", b.port)])) as p:
            half = await RawClient.open(p.port)
            idle = await RawClient.open(p.port)
            head = get("/half")
            await half.send(head[:20])
            await asyncio.sleep(0.05)
            stopping = asyncio.ensure_future(p.plane.shutdown(drain_timeout=3))
            await asyncio.sleep(0.3)  # past the idle grace and a sweep
            assert await idle.read_rest(wait=2) == b""
            await half.send(head[20:])
            resp = await half.response()
            await stopping
            await half.close()
            await idle.close()
    finally:
        await b.close()
    assert resp.status == 200
    assert resp.header("connection") == "close"
