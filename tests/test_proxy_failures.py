"""Backend failures: 502/504 before the head, aborts after it, retries, pooling."""

from __future__ import annotations

import asyncio
import json

from tests.support.dataplane import RawClient, backend, get, make_runtime, request, running_plane
from tests.support.rawbackend import RawBackend, free_port, reset, response


async def test_connect_refused_is_502_json() -> None:
    """A backend nobody listens on gives 502 JSON naming the backend and the request id,
    and counts as a failure of that backend for the reason `refused` (/metrics)."""
    rt = make_runtime([backend("gone", free_port())])
    async with running_plane(rt) as p:
        resp = await request(p.port, get())
        doc = json.loads(resp.body)
        records = p.recorder.records
    assert resp.status == 502
    assert doc["backend"] == "gone"
    assert doc["request_id"] == resp.header("x-request-id")
    assert [(r.backend, r.status) for r in records] == [("gone", 502)]
    assert p.plane.failures == {("main", "gone", "refused"): 1}


async def _answer_with(raw: bytes, *, rst: bool = False) -> RawBackend:
    async def handler(b: RawBackend, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await b.next_request(r)
        w.write(raw)
        await w.drain()
        if rst:
            reset(w)
        else:
            await r.read()

    return await RawBackend(handler).start()


async def test_reset_before_head_is_502() -> None:
    """A backend that resets before answering gives 502."""
    b = await _answer_with(b"", rst=True)
    try:
        async with running_plane(make_runtime([backend("b", b.port)])) as p:
            resp = await request(
                p.port, b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\n\r\nhi"
            )
    finally:
        await b.close()
    assert resp.status == 502
    assert json.loads(resp.body)["backend"] == "b"
    assert p.plane.failures == {("main", "b", "reset"): 1}


async def test_garbage_before_head_is_502() -> None:
    """A backend that answers with bytes that are not HTTP gives 502."""
    b = await _answer_with(b"SSH-2.0-OpenSSH\r\n\r\n")
    try:
        async with running_plane(make_runtime([backend("b", b.port)])) as p:
            resp = await request(p.port, get())
    finally:
        await b.close()
    assert resp.status == 502
    assert p.plane.failures == {("main", "b", "invalid"): 1}


async def test_unexpected_101_is_502() -> None:
    """A 101 the router never asked for is a protocol error (502), not a tunnel."""
    b = await _answer_with(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\n\r\n")
    try:
        async with running_plane(make_runtime([backend("b", b.port)])) as p:
            resp = await request(p.port, get())
    finally:
        await b.close()
    assert resp.status == 502


async def test_hanging_backend_is_504() -> None:
    """No response head within the backend's timeout gives 504 JSON; the connection is dropped."""
    b = await _answer_with(b"")
    try:
        rt = make_runtime([backend("slow", b.port, timeout=0.2)])
        async with running_plane(rt) as p:
            resp = await request(p.port, get())
            records = p.recorder.records
    finally:
        await b.close()
    assert resp.status == 504
    assert json.loads(resp.body)["backend"] == "slow"
    assert [r.status for r in records] == [504]
    assert p.plane.failures == {("main", "slow", "timeout"): 1}


async def test_truncated_length_body_aborts_client() -> None:
    """A backend dying mid-body aborts the client: the response can't look complete."""
    b = await _answer_with(response(200, b"0123456789" * 10)[:-50], rst=True)
    try:
        async with running_plane(make_runtime([backend("b", b.port)])) as p:
            client = await RawClient.open(p.port)
            await client.send(get())
            head = await client.head()
            rest = await client.read_rest()
            await client.close()
            records = p.recorder.records
    finally:
        await b.close()
    assert head.status == 200
    assert len(rest) < 100
    assert [r.status for r in records] == [502]
    assert p.plane.failures == {("main", "b", "reset"): 1}  # after the head: counted too


async def test_truncated_chunked_body_has_no_last_chunk() -> None:
    """A chunked stream cut by the backend never gets the terminating 0-chunk."""
    b = await _answer_with(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n", rst=True
    )
    try:
        async with running_plane(make_runtime([backend("b", b.port)])) as p:
            client = await RawClient.open(p.port)
            await client.send(get())
            await client.head()
            rest = await client.read_rest()
            await client.close()
    finally:
        await b.close()
    assert rest.startswith(b"5\r\nhello\r\n")
    assert b"0\r\n\r\n" not in rest


def _dies_on_second_request(kind: str) -> RawBackend:
    """First connection: answers once, then reads the next request and closes silently."""

    async def handler(b: RawBackend, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        first_conn = b.accepted == 1
        while (req := await b.next_request(r)) is not None:
            if first_conn and len(b.requests) == 2:
                return  # drop the connection without a byte of answer
            w.write(response(200, f"{kind}:{req.target}".encode()))
            await w.drain()

    return RawBackend(handler)


async def test_idempotent_request_retried_once_on_fresh_connection() -> None:
    """A GET sent on a reused connection that dies before answering is retried on a new one."""
    b = await _dies_on_second_request("ok").start()
    try:
        async with running_plane(make_runtime([backend("b", b.port)])) as p:
            client = await RawClient.open(p.port)
            await client.send(get("/1"))
            assert (await client.response()).body == b"ok:/1"
            await client.send(get("/2"))
            second = await client.response()
            await client.close()
    finally:
        await b.close()
    assert second.status == 200
    assert second.body == b"ok:/2"
    assert b.accepted == 2


async def test_post_not_retried() -> None:
    """A POST on a reused connection that dies gets 502, never a second delivery."""
    b = await _dies_on_second_request("ok").start()
    try:
        async with running_plane(make_runtime([backend("b", b.port)])) as p:
            client = await RawClient.open(p.port)
            await client.send(get("/1"))
            await client.response()
            await client.send(b"POST /2 HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\n\r\nx")
            second = await client.response()
            await client.close()
    finally:
        await b.close()
    assert second.status == 502
    assert [r.target for r in b.requests] == ["/1", "/2"]


async def test_idle_connection_closed_by_backend_is_discarded() -> None:
    """A pooled connection the backend closed while idle is not used again."""

    async def handler(b: RawBackend, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await b.next_request(r)
        w.write(response(200, b"once"))
        await w.drain()  # then close: keep-alive was never promised to last

    b = await RawBackend(handler).start()
    try:
        async with running_plane(make_runtime([backend("b", b.port)])) as p:
            first = await request(p.port, get())
            await asyncio.sleep(0.1)
            second = await request(
                p.port, b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n\r\n"
            )
            assert not p.plane.pools["b"].idle or not p.plane.pools["b"].idle[0].closed
    finally:
        await b.close()
    assert (first.status, second.status) == (200, 200)
    assert b.accepted == 2


async def test_backend_connection_close_not_reused() -> None:
    """`Connection: close` from the backend means a fresh connection for the next request."""

    async def handler(b: RawBackend, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await b.next_request(r)
        w.write(response(200, b"bye", {"Connection": "close"}))
        await w.drain()
        await r.read()

    b = await RawBackend(handler).start()
    try:
        async with running_plane(make_runtime([backend("b", b.port)])) as p:
            client = await RawClient.open(p.port)
            for _ in range(2):
                await client.send(get())
                resp = await client.response()
                assert resp.body == b"bye"
                assert resp.header("connection") is None  # the client's connection stays open
            await client.close()
    finally:
        await b.close()
    assert b.accepted == 2


async def test_client_connection_close_honoured() -> None:
    """A client's `Connection: close` gets its answer and then the connection closes."""
    b = await RawBackend().start()
    try:
        async with running_plane(make_runtime([backend("b", b.port)])) as p:
            client = await RawClient.open(p.port)
            await client.send(get("/", "Connection: close\r\n"))
            resp = await client.response()
            rest = await client.read_rest()
            await client.close()
    finally:
        await b.close()
    assert resp.status == 200
    assert resp.header("connection") == "close"
    assert rest == b""


async def test_pool_size_bounds_idle_connections() -> None:
    """pool_size=1: after two concurrent requests only one connection stays idle and is reused."""
    release, both_in = asyncio.Event(), asyncio.Event()

    async def handler(b: RawBackend, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        while await b.next_request(r) is not None:
            if len(b.requests) == 2:
                both_in.set()
            await release.wait()
            w.write(response(200, b"ok"))
            await w.drain()

    b = await RawBackend(handler).start()
    try:
        async with running_plane(make_runtime([backend("b", b.port, pool_size=1)])) as p:
            pending = [asyncio.ensure_future(request(p.port, get())) for _ in range(2)]
            await asyncio.wait_for(both_in.wait(), 2)
            release.set()
            assert [r.status for r in await asyncio.gather(*pending)] == [200, 200]
            assert len(p.plane.pools["b"].idle) == 1
            await request(p.port, get())
    finally:
        await b.close()
    assert b.accepted == 2


def _held_backend(release: asyncio.Event, arrived: list[int]) -> RawBackend:
    """Answers each request once `release` is set; `arrived` counts requests seen."""

    async def handler(b: RawBackend, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        while await b.next_request(r) is not None:
            arrived.append(1)
            await release.wait()
            w.write(response(200, b"ok"))
            await w.drain()

    return RawBackend(handler)


async def test_requests_over_max_connections_wait_for_one() -> None:
    """max_connections=1: three concurrent requests take turns on one connection, all
    200, and the backend never sees a second connection (no connect per request)."""
    release, arrived = asyncio.Event(), list[int]()
    b = await _held_backend(release, arrived).start()
    try:
        spec = backend("b", b.port, max_connections=1)
        async with running_plane(make_runtime([spec])) as p:
            pending = [asyncio.ensure_future(request(p.port, get())) for _ in range(3)]
            await asyncio.sleep(0.3)
            assert (len(arrived), len(p.plane.pools["b"].waiting)) == (1, 2)
            release.set()
            assert [r.status for r in await asyncio.gather(*pending)] == [200, 200, 200]
    finally:
        await b.close()
    assert b.accepted == 1


async def test_a_request_that_waits_past_queue_timeout_gets_503_naming_the_backend() -> None:
    """The one connection held: the next request is answered 503 JSON after
    queue_timeout, and the held one still completes."""
    release, arrived = asyncio.Event(), list[int]()
    b = await _held_backend(release, arrived).start()
    try:
        spec = backend("b", b.port, max_connections=1, queue_timeout=0.2)
        async with running_plane(make_runtime([spec])) as p:
            held = asyncio.ensure_future(request(p.port, get()))
            await asyncio.sleep(0.1)
            waited = await asyncio.wait_for(request(p.port, get()), 3)
            release.set()
            first = await held
    finally:
        await b.close()
    body = json.loads(waited.body)
    assert waited.status == 503
    assert body["backend"] == "b"
    assert body["error"] == "backend busy"
    assert first.status == 200
