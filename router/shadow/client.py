"""An awaitable one-shot HTTP/1.1 client over `UpstreamPool`, for mirror workers.

Theory of operation. The data plane drives pooled upstream connections with
callbacks because a Future per request costs too much on the client's path.
Mirror workers live off that path, in their own tasks, so here the same
connections are wrapped into one `await`: `Collector` is a `ResponseSink` that
gathers the status and the body (up to a cap) and resolves a Future at the
response's end. A shadow's event stream is drained to its end and timed like
the client's (`Clock`: first token, gaps, tokens), and may be as long as
STREAM_MAX_BODY to be compared. The whole request goes out in one write (the mirror copy is
complete before it is queued), so the sink never has to pause a client.

Failures map to the words the comparison counts:

    connect refused / connect timeout   UpstreamConnectError (after connect_timeout)
    reset, garbage, EOF mid-answer      UpstreamError
    no answer within the spec timeout   TimeoutError (an event stream: no read
                                        for that long)

A keep-alive connection that the backend closed while it was idle fails before
any response byte; that one case is retried once on a fresh connection, as the
data plane does, so a shadow is not blamed for a race of the connection pool.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from router.core.errors import UpstreamConnectError, UpstreamError
from router.dataplane.http1 import REQUEST_OWN, Header, connection_tokens, filtered
from router.dataplane.shadow_copy import STREAM_MAX_BODY
from router.dataplane.stream_timing import StreamTimer
from router.dataplane.upstream import UpstreamConnection, UpstreamPool

# Given the answer's head: a clock when it is an event stream (router/shadow/streams.py)
Clock = Callable[[list[Header]], StreamTimer | None]

SHADOW_HEADER = b"x-shadow-request"
_BODYLESS = frozenset({b"GET", b"HEAD", b"DELETE", b"OPTIONS", b"TRACE"})


class StaleConnection(UpstreamError):
    """A reused connection died before any response byte: worth one more try."""


class Collector:
    """A `ResponseSink` that collects one answer into `future` as (status, body)."""

    __slots__ = (
        "body",
        "clock",
        "deadline",
        "future",
        "length",
        "limit",
        "pushed",
        "status",
        "timer",
    )

    def __init__(
        self,
        future: asyncio.Future[tuple[int, bytes]],
        limit: int,
        clock: Clock | None = None,
        deadline: tuple[asyncio.Timeout, float] | None = None,
    ) -> None:
        self.future = future
        self.limit = limit  # body bytes kept; the rest is read and thrown away
        self.status = 0
        self.length = 0
        self.body: list[bytes] = []
        self.clock = clock
        self.timer: StreamTimer | None = None
        # (the exchange's timeout, the backend's timeout): a stream must go on
        # making progress, not end within one timeout
        self.deadline = deadline
        self.pushed = 0.0

    def on_response_head(
        self, status: int, reason: bytes, headers: list[Header], length: int | None
    ) -> None:
        self.status = status
        if self.clock is not None and length is None:
            self.timer = self.clock(headers)
            if self.timer is not None:
                self.limit = max(self.limit, STREAM_MAX_BODY + 1)

    def on_response_body(self, data: bytes) -> None:
        if self.timer is not None:
            self.timer.chunk(data)
        room = self.limit - self.length
        if room > 0:
            self.body.append(data if len(data) <= room else data[:room])
        self.length += len(data)

    def flush_response(self) -> None:
        if self.timer is None:
            return
        self.timer.read()
        if self.deadline is not None:
            now = self.future.get_loop().time()
            if now - self.pushed > 0.5:  # a reschedule costs a timer handle: not every read
                self.pushed = now
                self.deadline[0].reschedule(now + self.deadline[1])

    def on_response_end(self) -> None:
        if self.timer is not None:
            self.timer.finish(True)
            self.timer = None
        if not self.future.done():
            self.future.set_result((self.status, b"".join(self.body)))

    def on_upstream_lost(self, error: UpstreamError, received: bool, reused: bool) -> None:
        if self.timer is not None:
            self.timer.finish(False)
            self.timer = None
        if self.future.done():
            return
        stale = not received and reused
        self.future.set_exception(StaleConnection(error.detail) if stale else error)

    def request_sent(self) -> bool:
        return True  # written in one piece before the answer can start

    def pause_request(self) -> None:
        return None

    def resume_request(self) -> None:
        return None


def request_bytes(
    pool: UpstreamPool,
    method: bytes,
    target: bytes,
    headers: list[Header],
    body: bytes,
    rid: tuple[bytes, bytes],
    extra: bytes = b"",
    own: frozenset[bytes] = frozenset(),
) -> bytes:
    """The mirror copy as one HTTP/1.1 message: the client's end-to-end headers,
    our Host, the request id, `X-Shadow-Request: 1` and a Content-Length; `extra`
    header lines replace the client's headers named in `own` (router/core/rewrite.py)."""
    tokens: frozenset[bytes] = frozenset()
    for name, value in headers:
        if name == b"connection":
            tokens |= connection_tokens(value)
    drop = REQUEST_OWN | {rid[0], SHADOW_HEADER} | own
    framing = b"content-length: %d\r\n" % len(body) if body or method not in _BODYLESS else b""
    framing += extra
    return b"%b %b%b HTTP/1.1\r\nhost: %b\r\n%b%b: %b\r\n%b: 1\r\n%b\r\n%b" % (
        method,
        pool.base_path,
        target,
        pool.host_header,
        filtered(headers, drop, tokens),
        rid[0],
        rid[1],
        SHADOW_HEADER,
        framing,
        body,
    )


async def connect(pool: UpstreamPool) -> UpstreamConnection:
    """A fresh connection from the pool's connect (bounded by connect_timeout)."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[UpstreamConnection] = loop.create_future()

    def done(conn: UpstreamConnection | None, error: UpstreamError | None) -> None:
        if future.done():  # our caller gave up meanwhile: never leak the socket
            if conn is not None:
                conn.abandon()
        elif conn is not None:
            future.set_result(conn)
        else:
            future.set_exception(error or UpstreamConnectError())

    pool.connect(done)
    return await future


async def fetch(
    pool: UpstreamPool, data: bytes, *, head_only: bool, limit: int, clock: Clock | None = None
) -> tuple[int, bytes]:
    """Send `data`, await (status, body up to `limit`); raise UpstreamError or
    TimeoutError (after the backend's timeout) when there is no answer."""
    for attempt in range(2):
        up = pool.acquire() or await connect(pool)
        try:
            async with asyncio.timeout(pool.spec.timeout) as cm:
                return await _exchange(up, data, head_only, limit, clock, (cm, pool.spec.timeout))
        except StaleConnection:
            if attempt:
                raise
    raise StaleConnection("unreachable")  # the loop returns or raises first


async def _exchange(
    up: UpstreamConnection,
    data: bytes,
    head_only: bool,
    limit: int,
    clock: Clock | None,
    deadline: tuple[asyncio.Timeout, float],
) -> tuple[int, bytes]:
    future: asyncio.Future[tuple[int, bytes]] = asyncio.get_running_loop().create_future()
    up.bind(Collector(future, limit, clock, deadline), head_only)
    up.write(data)
    try:
        return await future
    except BaseException:
        up.abandon()  # state unknown (timeout, cancel, error): never reuse it
        raise
