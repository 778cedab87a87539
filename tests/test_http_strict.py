"""Strict HTTP/1.1 where a proxy must be: what RFC 9112 (and nginx) refuse, refused.

Raw sockets throughout, so the bytes on the wire are exactly the test's. A bad
request behind pipelined good ones must not delay their answers: they come
back at once (keep-alive), then the bad one's 400, then the close.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest

from router.config.spec import LimitsSpec
from tests.support.dataplane import (
    Plane,
    RawClient,
    backend,
    get,
    make_runtime,
    request,
    running_plane,
)
from tests.support.rawbackend import RawBackend

# A bound on a hang (the bug answered nothing for 75 s), not a speed assertion.
PROMPT = 2.0


@pytest.fixture
async def echo() -> AsyncIterator[RawBackend]:
    b = await RawBackend().start()
    yield b
    await b.close()


@pytest.fixture
async def plane(echo: RawBackend) -> AsyncIterator[Plane]:
    limits = LimitsSpec(max_body=1000, header_timeout=10.0)
    async with running_plane(make_runtime([backend("b", echo.port)], limits=limits)) as p:
        # A pooled keep-alive connection to the backend: the state the hang needed
        # (the first request's bytes waited in a buffer nobody flushed).
        assert (await request(p.port, get("/warm"))).status == 200
        yield p


async def answers(
    port: int, raw: bytes, count: int
) -> tuple[list[tuple[int, str, dict[str, Any]]], bytes]:
    """Send `raw` in one write; read `count` responses, then whatever comes until close."""
    client = await RawClient.open(port)
    try:
        await client.send(raw)
        got = []
        for _ in range(count):
            resp = await client.response(wait=PROMPT)
            got.append((resp.status, resp.header("connection") or "", json.loads(resp.body)))
        return got, await client.read_rest(wait=PROMPT)
    finally:
        await client.close()


@pytest.mark.parametrize("lengths", [(b"3", b"4"), (b"3", b"3")], ids=["differ", "same"])
async def test_pipelined_double_content_length_after_a_good_request(
    plane: Plane, echo: RawBackend, lengths: tuple[bytes, bytes]
) -> None:
    """The good request is answered at once and kept alive; the bad one gets 400; then close."""
    bad = (
        b"POST /bad HTTP/1.1\r\nHost: h\r\nContent-Length: %b\r\nContent-Length: %b\r\n\r\nabc"
        % lengths
    )
    got, rest = await answers(plane.port, get("/good") + bad, 2)
    (status1, conn1, body1), (status2, conn2, body2) = got
    assert (status1, conn1, body1["target"]) == (200, "", "/good")
    assert (status2, conn2) == (400, "close")
    assert "Content-Length" in body2["error"]
    assert rest == b""  # closed after the 400
    assert [r.target for r in echo.requests] == ["/warm", "/good"]


async def test_two_good_then_a_bad_head_answers_all_in_order(
    plane: Plane, echo: RawBackend
) -> None:
    """Every request before the bad one is answered, in order, before its 400."""
    raw = get("/1") + get("/2") + b"GET /3 HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n"
    got, rest = await answers(plane.port, raw, 3)
    assert [(s, b.get("target")) for s, _, b in got] == [(200, "/1"), (200, "/2"), (400, None)]
    assert rest == b""
    assert [r.target for r in echo.requests] == ["/warm", "/1", "/2"]


async def test_pipelined_body_over_the_limit_gets_413_in_its_turn(
    plane: Plane, echo: RawBackend
) -> None:
    """A waiting request whose chunked body passes max_body is answered 413 after the first."""
    big = b"POST /big HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
    big += b"%x\r\n%b\r\n0\r\n\r\n" % (2000, b"x" * 2000)
    got, rest = await answers(plane.port, get("/first") + big, 2)
    assert [s for s, _, _ in got] == [200, 413]
    assert rest == b""
    assert [r.target for r in echo.requests] == ["/warm", "/first"]


@pytest.mark.parametrize(
    ("raw", "status", "words"),
    [
        (b"GET /echo HTTP/1.1\r\n\r\n", 400, "without a Host"),
        (b"GET /echo HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400, "more than one Host"),
        (b"GET /echo HTTP/1.1\r\nhost: a\r\nX: 1\r\nHOST: a\r\n\r\n", 400, "more than one Host"),
        (b"GET /echo\r\n", 400, "HTTP/0.9"),
        (b"GET /echo\r\n\r\n", 400, "HTTP/0.9"),
        (b"GET /echo HTTP/2.0\r\nHost: h\r\n\r\n", 505, "HTTP/2.0"),
    ],
    ids=["no-host", "two-hosts", "two-hosts-any-case", "http09", "http09-blank", "http2"],
)
async def test_refused_request_lines_and_hosts(
    plane: Plane, echo: RawBackend, raw: bytes, status: int, words: str
) -> None:
    """Refused at once with a JSON error naming why, closed, and never forwarded."""
    got, rest = await answers(plane.port, raw, 1)
    [(got_status, conn, body)] = got
    assert (got_status, conn) == (status, "close")
    assert words in body["error"]
    assert body["request_id"]
    assert rest == b""
    assert [r.target for r in echo.requests] == ["/warm"]


async def test_http10_without_host_is_served(plane: Plane, echo: RawBackend) -> None:
    """Host is required of HTTP/1.1 only (RFC 9112 §3.2): an HTTP/1.0 request without it passes."""
    resp = await request(plane.port, b"GET /old HTTP/1.0\r\n\r\n")
    assert resp.status == 200
    assert [r.target for r in echo.requests] == ["/warm", "/old"]


async def test_request_line_in_pieces_is_not_taken_for_http09(
    plane: Plane, echo: RawBackend
) -> None:
    """A request line split across reads (`GET /x` then ` HTTP/1.1`) is a normal request."""
    client = await RawClient.open(plane.port)
    try:
        for piece in (b"GET /sp", b"lit HTTP/1", b".1\r\nHost: h\r\n", b"\r\n"):
            await client.send(piece)
        resp = await client.response(wait=PROMPT)
    finally:
        await client.close()
    assert resp.status == 200
    assert [r.target for r in echo.requests] == ["/warm", "/split"]
