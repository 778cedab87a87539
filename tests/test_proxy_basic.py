"""Forwarding, headers and framing through the data plane, against raw backends."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import pytest

from router.config.spec import HeadersSpec
from tests.support.dataplane import (
    Plane,
    RawClient,
    backend,
    get,
    make_runtime,
    request,
    route,
    running_plane,
)
from tests.support.rawbackend import RawBackend, read_request, response


@pytest.fixture
async def echo_backend() -> AsyncIterator[RawBackend]:
    b = await RawBackend().start()
    yield b
    await b.close()


@pytest.fixture
async def plane(echo_backend: RawBackend) -> AsyncIterator[Plane]:
    rt = make_runtime([backend("echo", echo_backend.port)])
    async with running_plane(rt) as p:
        yield p


def echoed(body: bytes) -> dict[str, object]:
    doc: dict[str, object] = json.loads(body)
    return doc


def sent_headers(body: bytes) -> dict[str, str]:
    """The headers the echo backend received, as a dict."""
    headers: dict[str, str] = dict(json.loads(body)["headers"])
    return headers


async def test_method_target_body_forwarded_unchanged(plane: Plane) -> None:
    """Method, path, query and body reach the backend exactly as sent."""
    raw = b"PATCH /a/b%20c?x=1&y=%2F HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nhello"
    resp = await request(plane.port, raw)
    doc = echoed(resp.body)
    assert resp.status == 200
    assert (doc["method"], doc["target"], doc["body"]) == ("PATCH", "/a/b%20c?x=1&y=%2F", "hello")


async def test_forwarding_headers_added_and_hop_by_hop_removed(plane: Plane) -> None:
    """X-Forwarded-* are added (For appended), hop-by-hop and Connection-named headers dropped."""
    extra = (
        "X-Forwarded-For: 10.1.1.1\r\nConnection: keep-alive, X-Secret\r\nX-Secret: s\r\n"
        "Keep-Alive: timeout=5\r\nTE: trailers\r\nProxy-Authorization: p\r\nX-Keep: yes\r\n"
    )
    resp = await request(plane.port, get("/h", extra))
    headers = sent_headers(resp.body)
    assert headers["x-forwarded-for"] == "10.1.1.1, 127.0.0.1"
    assert headers["x-forwarded-proto"] == "http"
    assert headers["x-forwarded-host"] == "example.test"
    assert headers["x-keep"] == "yes"
    for gone in ("x-secret", "keep-alive", "te", "proxy-authorization", "connection"):
        assert gone not in headers


async def test_response_hop_by_hop_removed() -> None:
    """Backend hop-by-hop headers, and those its Connection names, never reach the client."""

    async def handler(b: RawBackend, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await read_request(r)
        w.write(
            response(
                200,
                b"ok",
                {
                    "Connection": "X-Internal",
                    "X-Internal": "1",
                    "Keep-Alive": "timeout=3",
                    "Upgrade": "h2c",
                    "X-Fine": "1",
                },
            )
        )
        await w.drain()
        await r.read()

    b = await RawBackend(handler).start()
    try:
        async with running_plane(make_runtime([backend("b", b.port)])) as p:
            resp = await request(p.port, get())
        names = {k for k, _ in resp.headers}
        assert resp.body == b"ok"
        assert "x-fine" in names
        assert not names & {"x-internal", "keep-alive", "upgrade"}
    finally:
        await b.close()


async def test_request_id_kept_or_generated_and_backend_named(plane: Plane) -> None:
    """A sane X-Request-Id is kept end to end; an insane one is replaced; X-Router-Backend set."""
    resp = await request(plane.port, get("/", "X-Request-Id: abc-123\r\n"))
    sent = sent_headers(resp.body)
    assert sent["x-request-id"] == "abc-123"
    assert resp.header("x-request-id") == "abc-123"
    assert resp.header("x-router-backend") == "echo"
    resp = await request(plane.port, get("/", "X-Request-Id: " + "a" * 200 + "\r\n"))
    rid = resp.header("x-request-id")
    assert rid
    assert rid != "a" * 200
    assert len(rid) <= 128
    assert plane.recorder.records[-1].request_id == rid


async def test_router_backend_header_can_be_turned_off(echo_backend: RawBackend) -> None:
    """HeadersSpec.router_backend=False leaves X-Router-Backend out."""
    rt = make_runtime(
        [backend("echo", echo_backend.port)], headers=HeadersSpec(router_backend=False)
    )
    async with running_plane(rt) as p:
        resp = await request(p.port, get())
    assert resp.status == 200
    assert resp.header("x-router-backend") is None


async def test_no_route_is_404_json(echo_backend: RawBackend) -> None:
    """A path no route matches gets a JSON 404 with the request id."""
    rt = make_runtime([backend("echo", echo_backend.port)], [route("only", "/only", "echo")])
    async with running_plane(rt) as p:
        resp = await request(p.port, get("/other"))
        assert resp.status == 404
        doc = echoed(resp.body)
        assert doc["error"] == "no route"
        assert doc["request_id"] == resp.header("x-request-id")
        assert [(r.route, r.status) for r in p.recorder.records] == [("", 404)]


async def test_keep_alive_and_pipelining_answered_in_order(
    plane: Plane, echo_backend: RawBackend
) -> None:
    """Three pipelined requests in one write come back in order on one connection."""
    client = await RawClient.open(plane.port)
    try:
        body = b"x" * 3000
        await client.send(
            get("/1")
            + b"POST /2 HTTP/1.1\r\nHost: h\r\nContent-Length: 3000\r\n\r\n"
            + body
            + get("/3")
        )
        targets = [echoed((await client.response()).body)["target"] for _ in range(3)]
        assert targets == ["/1", "/2", "/3"]
        await client.send(get("/4"))
        assert echoed((await client.response()).body)["target"] == "/4"
    finally:
        await client.close()
    assert echo_backend.accepted == 1
    assert [r.status for r in plane.recorder.records] == [200] * 4


async def test_chunked_request_body_streamed(plane: Plane) -> None:
    """A chunked request body arrives whole at the backend (re-chunked toward it)."""
    client = await RawClient.open(plane.port)
    try:
        await client.send(
            b"POST /c HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n"
        )
        await asyncio.sleep(0.05)
        await client.send(b"6\r\n world\r\n0\r\n\r\n")
        doc = echoed((await client.response()).body)
    finally:
        await client.close()
    assert doc["body"] == "hello world"
    assert doc["chunked"] is True


async def test_expect_100_continue(plane: Plane) -> None:
    """A client that waits for 100 Continue gets it, then its answer."""
    client = await RawClient.open(plane.port)
    try:
        await client.send(
            b"PUT /e HTTP/1.1\r\nHost: h\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\n"
        )
        interim = await client.head()
        assert interim.status == 100
        await client.send(b"data")
        resp = await client.response()
    finally:
        await client.close()
    assert resp.status == 200
    assert echoed(resp.body)["body"] == "data"
    assert "expect" not in sent_headers(resp.body)


async def _scripted(
    answer: bytes, raw: bytes, *, head_request: bool = False, close: bool = False
) -> tuple[bytes, int]:
    """Serve one scripted answer for `raw`; return what the client got and backend accepts."""

    async def handler(b: RawBackend, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        while await b.next_request(r) is not None:
            w.write(answer)
            await w.drain()
            if close:
                return

    b = await RawBackend(handler).start()
    try:
        async with running_plane(make_runtime([backend("b", b.port)])) as p:
            client = await RawClient.open(p.port)
            try:
                await client.send(raw)
                got = await client.read_rest(wait=3) if close or b"HTTP/1.0" in raw else b""
                if not got:
                    first = await client.response(head_request=head_request)
                    await client.send(get("/again"))
                    second = await client.response(head_request=head_request)
                    got = first.head + first.body + b"|" + second.head + second.body
            finally:
                await client.close()
        return got, b.accepted
    finally:
        await b.close()


async def test_head_response_has_no_body_and_connection_reused() -> None:
    """HEAD answers keep the backend's Content-Length, carry no body, reuse the connection."""
    got, accepted = await _scripted(
        response(200, b"", {"content-length": "10"}, length=False),
        get("/", method="HEAD"),
        head_request=True,
    )
    first, _ = got.split(b"|")
    assert b"content-length: 10" in first.lower()
    assert first.endswith(b"\r\n\r\n")
    assert accepted == 1


async def test_204_and_304_have_no_body() -> None:
    """204 and 304 are framed without a body and the next request still works."""
    got, _ = await _scripted(response(204, length=False), get())
    assert got.count(b"HTTP/1.1 204") == 2
    assert b"transfer-encoding" not in got.lower()
    got, _ = await _scripted(response(304, length=False, headers={"ETag": '"x"'}), get())
    assert got.count(b"HTTP/1.1 304") == 2
    assert b"transfer-encoding" not in got.lower()


async def test_interim_1xx_skipped() -> None:
    """A backend's 103 Early Hints before the real answer is skipped; the 200 arrives."""
    got, _ = await _scripted(
        b"HTTP/1.1 103 Early Hints\r\nLink: </x>\r\n\r\n" + response(200, b"real"), get()
    )
    assert b"103" not in got
    assert got.count(b"real") == 2


async def test_close_delimited_body_rechunked_for_http11() -> None:
    """A body ended by the backend closing reaches an HTTP/1.1 client chunked and complete."""

    async def handler(b: RawBackend, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await b.next_request(r)
        w.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil-")
        await w.drain()
        await asyncio.sleep(0.05)
        w.write(b"close")

    b = await RawBackend(handler).start()
    try:
        async with running_plane(make_runtime([backend("b", b.port)])) as p:
            client = await RawClient.open(p.port)
            await client.send(get())
            resp = await client.response()
            await client.send(get("/2"))
            resp2 = await client.response()
            await client.close()
    finally:
        await b.close()
    assert resp.header("transfer-encoding") == "chunked"
    assert resp.body == b"until-close"
    assert resp2.body == b"until-close"
    assert b.accepted == 2


async def test_http10_client_never_gets_chunked() -> None:
    """An HTTP/1.0 client gets a chunked backend body de-chunked and close-delimited."""

    async def handler(b: RawBackend, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await b.next_request(r)
        w.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n")
        await w.drain()
        w.write(b"2\r\nde\r\n0\r\n\r\n")
        await r.read()

    b = await RawBackend(handler).start()
    try:
        async with running_plane(make_runtime([backend("b", b.port)])) as p:
            client = await RawClient.open(p.port)
            await client.send(b"GET / HTTP/1.0\r\n\r\n")
            raw = await client.read_rest()
            await client.close()
    finally:
        await b.close()
    head, _, body = raw.partition(b"\r\n\r\n")
    assert b"chunked" not in head.lower()
    assert body == b"abcde"
    assert b"connection: close" in head.lower()


async def test_http10_keep_alive_with_length() -> None:
    """An HTTP/1.0 client asking keep-alive gets Content-Length and keeps its connection."""
    b = await RawBackend().start()
    try:
        async with running_plane(make_runtime([backend("b", b.port)])) as p:
            client = await RawClient.open(p.port)
            await client.send(b"GET /x HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
            first = await client.response()
            await client.send(b"GET /y HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
            second = await client.response()
            await client.close()
    finally:
        await b.close()
    assert first.header("connection") == "keep-alive"
    assert first.header("content-length")
    assert echoed(second.body)["target"] == "/y"


async def test_sse_events_stream_unbuffered() -> None:
    """Server-sent events reach the client one by one while the backend is still sending."""
    gate = asyncio.Event()

    async def handler(b: RawBackend, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await b.next_request(r)
        w.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n"
        )
        for i in range(3):
            event = f"data: {i}\n\n".encode()
            w.write(b"%x\r\n%b\r\n" % (len(event), event))
            await w.drain()
            await gate.wait()
            gate.clear()
        w.write(b"0\r\n\r\n")
        await w.drain()
        await r.read()

    b = await RawBackend(handler).start()
    try:
        async with running_plane(make_runtime([backend("b", b.port)])) as p:
            client = await RawClient.open(p.port)
            await client.send(get("/events", "Accept: text/event-stream\r\n"))
            resp = await client.head()
            assert resp.header("content-type") == "text/event-stream"
            for i in range(3):
                size = int(await asyncio.wait_for(client.reader.readuntil(b"\r\n"), 2), 16)
                data = await client.reader.readexactly(size + 2)
                assert data == f"data: {i}\n\n\r\n".encode()
                gate.set()  # the backend sends the next event only after we read this one
            assert await client.reader.readexactly(5) == b"0\r\n\r\n"
            await client.close()
    finally:
        await b.close()


async def test_backend_base_path_and_host(echo_backend: RawBackend) -> None:
    """base_path is prepended; Host names the backend; the client's host is X-Forwarded-Host."""
    rt = make_runtime([backend("echo", echo_backend.port, base_path="/v2/")])
    async with running_plane(rt) as p:
        resp = await request(p.port, get("/models?q=1"))
    doc = echoed(resp.body)
    headers = sent_headers(resp.body)
    assert doc["target"] == "/v2/models?q=1"
    assert headers["host"] == f"127.0.0.1:{echo_backend.port}"


async def test_request_body_streamed_before_complete() -> None:
    """The backend gets the first body bytes while the client still holds the rest."""
    first_part = asyncio.Event()

    async def handler(b: RawBackend, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await r.readuntil(b"\r\n\r\n")
        assert await r.readexactly(5) == b"early"
        first_part.set()
        rest = await r.readexactly(4)
        w.write(response(200, b"got " + rest))
        await w.drain()
        await r.read()

    b = await RawBackend(handler).start()
    try:
        async with running_plane(make_runtime([backend("b", b.port)])) as p:
            client = await RawClient.open(p.port)
            await client.send(b"POST /up HTTP/1.1\r\nHost: h\r\nContent-Length: 9\r\n\r\nearly")
            await asyncio.wait_for(first_part.wait(), 2)
            await client.send(b"late")
            resp = await client.response()
            await client.close()
    finally:
        await b.close()
    assert resp.body == b"got late"
