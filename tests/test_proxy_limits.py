"""Limits and request smuggling: what the router refuses before any backend sees it."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import pytest

from router.config.spec import LimitsSpec
from tests.support.dataplane import Plane, RawClient, backend, get, make_runtime, running_plane
from tests.support.rawbackend import RawBackend

LIMITS = LimitsSpec(
    max_header_bytes=2048, max_body=1000, header_timeout=0.3, body_timeout=0.3, idle_timeout=0.3
)


@pytest.fixture
async def echo_backend() -> AsyncIterator[RawBackend]:
    b = await RawBackend().start()
    yield b
    await b.close()


@pytest.fixture
async def plane(echo_backend: RawBackend) -> AsyncIterator[Plane]:
    rt = make_runtime([backend("echo", echo_backend.port)], limits=LIMITS)
    async with running_plane(rt) as p:
        yield p


async def exchange(port: int, raw: bytes) -> tuple[int, bytes, bool]:
    """Send raw bytes; return the status, the body, and whether the router then closed."""
    client = await RawClient.open(port)
    try:
        await client.send(raw)
        resp = await client.response()
        rest = await client.read_rest(wait=2)
        return resp.status, resp.body, rest == b""
    finally:
        await client.close()


async def test_oversized_head_is_431(plane: Plane, echo_backend: RawBackend) -> None:
    """A request head over max_header_bytes gets 431 and never reaches the backend."""
    status, _, closed = await exchange(plane.port, get("/", "X-Big: " + "a" * 3000 + "\r\n"))
    assert status == 431
    assert closed
    assert echo_backend.requests == []


async def test_oversized_head_dribbled_without_newline_is_431(plane: Plane) -> None:
    """A header line that never ends is cut off at the limit, not buffered forever."""
    client = await RawClient.open(plane.port)
    try:
        await client.send(b"GET / HTTP/1.1\r\nX-Big: ")
        for _ in range(6):
            await client.send(b"a" * 1000)
        assert (await client.response()).status == 431
    finally:
        await client.close()


async def test_declared_body_over_cap_is_413_before_backend(
    plane: Plane, echo_backend: RawBackend
) -> None:
    """Content-Length over max_body: 413 at once, the backend never contacted."""
    raw = b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5000\r\n\r\n"
    status, body, closed = await exchange(plane.port, raw)
    assert status == 413
    assert json.loads(body)["request_id"]
    assert closed
    assert echo_backend.accepted == 0


async def test_chunked_body_over_cap_is_413(plane: Plane) -> None:
    """A chunked body that grows past max_body is refused with 413."""
    raw = b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
    raw += b"400\r\n" + b"x" * 1024 + b"\r\n0\r\n\r\n"
    status, _, closed = await exchange(plane.port, raw)
    assert status == 413
    assert closed


@pytest.mark.parametrize(
    "framing",
    [
        b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n",
        b"Content-Length: 5\r\nContent-Length: 6\r\n",
        b"Transfer-Encoding: gzip\r\n",
        b"Transfer-Encoding: chunked, identity\r\n",
        b"Content-Length: -1\r\n",
    ],
)
async def test_ambiguous_framing_is_400(
    plane: Plane, echo_backend: RawBackend, framing: bytes
) -> None:
    """Framing that could smuggle a request is refused with a JSON 400 and the connection closed."""
    raw = (
        b"POST / HTTP/1.1\r\nHost: h\r\n" + framing + b"\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\n\r\n"
    )
    status, body, closed = await exchange(plane.port, raw)
    assert status == 400
    assert "error" in json.loads(body)
    assert closed
    assert echo_backend.requests == []


async def test_garbage_request_is_400(plane: Plane) -> None:
    """Bytes that are not HTTP get a JSON 400."""
    status, body, closed = await exchange(plane.port, b"HELLO\x00THERE\r\n\r\n")
    assert status == 400
    assert json.loads(body)["error"]
    assert closed


async def test_slowloris_head_gets_408_and_closed(plane: Plane) -> None:
    """A client dribbling its head is answered 408 and closed after header_timeout."""
    client = await RawClient.open(plane.port)
    try:
        await client.send(b"GET / HTTP/1.1\r\n")
        for _ in range(3):  # dribble for half the timeout, then stall
            await asyncio.sleep(0.05)
            await client.send(b"X: 1\r\n")
        resp = await client.response(wait=2)
        assert resp.status == 408
        assert await client.read_rest(wait=2) == b""
    finally:
        await client.close()


async def test_slow_body_gets_408(plane: Plane, echo_backend: RawBackend) -> None:
    """A body that stops arriving is cut off after body_timeout with 408."""
    client = await RawClient.open(plane.port)
    try:
        await client.send(b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 100\r\n\r\nabc")
        resp = await client.response(wait=2)
        assert resp.status == 408
        assert await client.read_rest(wait=2) == b""
    finally:
        await client.close()
    assert plane.recorder.records[-1].status == 408


async def test_idle_keep_alive_closed(plane: Plane) -> None:
    """A keep-alive connection with no new request is closed after idle_timeout."""
    client = await RawClient.open(plane.port)
    try:
        await client.send(get())
        assert (await client.response()).status == 200
        assert await client.read_rest(wait=2) == b""
    finally:
        await client.close()
