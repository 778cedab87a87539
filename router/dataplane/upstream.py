"""Pooled HTTP/1.1 client connections toward one backend (httptools, callbacks).

Theory of operation. A `UpstreamPool` per backend keeps idle keep-alive
connections in a LIFO stack (the most recently used one is the most likely to
still be open, and the others age out on the backend's side). `acquire` pops
one synchronously; only when none is idle does the caller pay a connect, run as
a named task whose result comes back through a callback.

A `UpstreamConnection` carries one exchange at a time (no pipelining toward
backends). It parses the response with llhttp and pushes events into its
`ResponseSink` (the proxy's exchange): head, body pieces, end. Body pieces are
collected by the sink during one `feed_data` and written to the client once per
upstream read. Framing quirks the parser cannot see are handled here:

- a response to HEAD has no body whatever its Content-Length says: the message
  ends at its head and the parser is replaced before the connection is reused;
- interim 1xx responses are skipped (101 is refused: the proxy never asks for
  an upgrade, so one is a protocol error);
- a body with neither Content-Length nor chunked ends when the backend closes;
  a clean EOF ends it, a reset truncates it.

A connection goes back to the pool only when its response ended cleanly, both
sides allowed keep-alive and the whole request was sent. An idle connection
that the backend closes removes itself from the pool on `connection_lost`.

Bounds. At most `max_connections` are open to a backend at once (connecting,
busy or idle): past that, `connect` queues the request (FIFO, at most
`QUEUE_PER_CONNECTION` times that many) and the next connection released or
closed goes to it; the exchange's sweeper deadline answers 503 after
`queue_timeout`. At most `pool_size` idle ones are kept. Both default to 1,024,
so a burst of concurrency keeps its connections instead of closing all but a
few and connecting again on the next request.
"""

from __future__ import annotations

import asyncio
import ssl
from collections import deque
from collections.abc import Callable
from typing import Final, Protocol, cast

import httptools

from router.config.spec import BackendSpec
from router.core.errors import (
    UpstreamBusy,
    UpstreamConnectError,
    UpstreamError,
    UpstreamProtocolError,
    UpstreamTLSError,
    connect_reason,
)
from router.dataplane.http1 import SPENT_RESPONSE_PARSER, Header

WRITE_HIGH_WATER: Final = 64 * 1024
QUEUE_PER_CONNECTION: Final = 4  # waiting requests allowed per connection of the cap
_FRAMING: Final = frozenset({b"content-length", b"transfer-encoding"})
BODY_NONE: Final = 0
BODY_LENGTH: Final = 1
BODY_CHUNKED: Final = 2
BODY_CLOSE: Final = 3


class ResponseSink(Protocol):
    """What an upstream connection reports to (the proxy's exchange)."""

    def on_response_head(
        self, status: int, reason: bytes, headers: list[Header], length: int | None
    ) -> None: ...
    def on_response_body(self, data: bytes) -> None: ...
    def flush_response(self) -> None: ...
    def on_response_end(self) -> None: ...
    def on_upstream_lost(self, error: UpstreamError, received: bool, reused: bool) -> None: ...
    def request_sent(self) -> bool: ...
    def pause_request(self) -> None: ...
    def resume_request(self) -> None: ...


ConnectCallback = Callable[["UpstreamConnection | None", "UpstreamError | None"], None]


class UpstreamConnection:
    """One keep-alive connection to a backend; one request at a time.

    An `asyncio.Protocol` by its methods only, like `ClientConnection` (mypyc).
    """

    def __init__(self, pool: UpstreamPool) -> None:
        self.pool = pool
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.sink: ResponseSink | None = None
        self.reused = False  # served a request before: may have died while idle
        self.closed = False
        self._stale = False  # parser state unusable (after a HEAD response)
        self._reset(False)

    def _reset(self, head_only: bool) -> None:
        self.received = False  # any byte of the current response
        self.head_only = head_only
        self.done = False
        self.mode = BODY_NONE
        self._interim = False
        self._keep_alive = False
        self._reason = b""
        self._headers: list[Header] = []

    def bind(self, sink: ResponseSink, head_only: bool) -> None:
        """Give the connection its next exchange (`_reset`, inlined: once per request)."""
        if self._stale:
            self.parser = httptools.HttpResponseParser(self)
            self._stale = False
        self.sink = sink
        self.received = False
        self.head_only = head_only
        self.done = False
        self.mode = BODY_NONE
        self._interim = False
        self._keep_alive = False
        self._reason = b""
        self._headers = []

    def write(self, data: bytes) -> None:
        if self.transport is not None:
            self.transport.write(data)

    def abandon(self) -> None:
        """Drop the connection mid-exchange: its state is unknown, never reuse it."""
        self.sink = None
        if self.transport is not None and not self.closed:
            self.transport.abort()

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.transport.set_write_buffer_limits(high=WRITE_HIGH_WATER)

    def data_received(self, data: bytes) -> None:
        sink = self.sink
        if sink is None or self.done:
            # Bytes nobody asked for: the connection's framing can't be trusted.
            self.abandon()
            return
        self.received = True
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._lost(UpstreamProtocolError(f"invalid response: {exc}", "invalid"))
            return
        if self.done:
            self._finish(sink)
        else:
            sink.flush_response()

    def eof_received(self) -> bool | None:
        return None  # close our side too; connection_lost follows

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.parser = SPENT_RESPONSE_PARSER  # nothing more to parse: break the cycle
        self.pool.discard(self)
        self.pool.closed_one()
        sink = self.sink
        if sink is None:
            return
        if self.mode == BODY_CLOSE and exc is None:
            self.done = True
            self._finish(sink)
        else:
            self._lost(UpstreamProtocolError("backend closed the connection"))

    def pause_writing(self) -> None:
        if self.sink is not None:
            self.sink.pause_request()

    def resume_writing(self) -> None:
        if self.sink is not None:
            self.sink.resume_request()

    # httptools callbacks

    def on_status(self, reason: bytes) -> None:
        self._reason += reason

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name.lower(), value))

    def on_headers_complete(self) -> None:
        status = self.parser.get_status_code()
        if status < 200:
            if status == 101:
                raise UpstreamProtocolError("unexpected 101 Switching Protocols", "invalid")
            self._interim = True  # skipped; its on_message_complete is ignored
            self._headers = []
            self._reason = b""
            return
        self._keep_alive = self.parser.should_keep_alive()  # only valid before the body
        length = self._framing(status)
        if self.sink is not None:
            self.sink.on_response_head(status, self._reason, self._headers, length)

    def on_body(self, body: bytes) -> None:
        if self.sink is not None and not self._interim:
            self.sink.on_response_body(body)

    def on_message_complete(self) -> None:
        if self._interim:
            self._interim = False
        else:
            self.done = True

    # internals

    def _framing(self, status: int) -> int | None:
        """Set the body mode; return the Content-Length when there is one."""
        length: int | None = None
        chunked = False
        for name, value in self._headers:
            if name not in _FRAMING:
                continue  # most headers: one set probe
            if name == b"content-length":
                if value.strip().isdigit():
                    length = int(value)
            elif name == b"transfer-encoding":
                chunked = value.strip().lower().endswith(b"chunked")
        if self.head_only or status == 204 or status == 304:  # 1xx never get here
            self.mode = BODY_NONE
            self.done = True
            self._stale = self.head_only  # llhttp still waits for a HEAD body
        elif chunked:
            self.mode, length = BODY_CHUNKED, None
        elif length is not None:
            self.mode = BODY_LENGTH
        else:
            self.mode = BODY_CLOSE
        return length

    def _finish(self, sink: ResponseSink) -> None:
        self.sink = None
        reusable = (
            self.mode != BODY_CLOSE and not self.closed and self._keep_alive and sink.request_sent()
        )
        # Release first: a pipelined next request started by the sink may reuse us.
        if reusable:
            pool = self.pool
            if pool.waiting:
                pool.release(self)  # straight to a waiting request
            elif pool.retired or len(pool.idle) >= pool.spec.pool_size:
                self.abandon()
            else:  # pool.release(), inlined: once per request
                self.reused = True
                pool.idle.append(self)
        else:
            self.abandon()
        sink.on_response_end()

    def _lost(self, error: UpstreamError) -> None:
        sink = self.sink
        self.abandon()
        if sink is not None:
            sink.on_upstream_lost(error, self.received, self.reused)


class UpstreamPool:
    """Idle connections to one backend, LIFO, at most `spec.pool_size` of them."""

    def __init__(self, spec: BackendSpec) -> None:
        self.spec = spec
        self.name = spec.name
        self.idle: list[UpstreamConnection] = []
        self.open = 0  # connecting, busy or idle
        self.waiting: deque[ConnectCallback] = deque()  # requests over max_connections
        self.retired = False
        self._tasks: set[asyncio.Task[None]] = set()
        self._ssl = client_ssl_context(spec) if spec.scheme == "https" else None
        default_port = 443 if spec.scheme == "https" else 80
        authority = spec.host if spec.port == default_port else f"{spec.host}:{spec.port}"
        self.host_header = authority.encode("idna")
        self.base_path = spec.base_path.rstrip("/").encode()

    def acquire(self) -> UpstreamConnection | None:
        """The most recently idle open connection, or None."""
        idle = self.idle
        while idle:
            conn = idle.pop()
            if not conn.closed:
                return conn
        return None

    def release(self, conn: UpstreamConnection) -> None:
        if self.waiting and not self.retired and not conn.closed:
            conn.reused = True
            self.waiting.popleft()(conn, None)  # a finished waiter releases it again
            return
        if self.retired or len(self.idle) >= self.spec.pool_size:
            conn.abandon()
            return
        conn.reused = True
        self.idle.append(conn)

    def discard(self, conn: UpstreamConnection) -> None:
        if conn in self.idle:
            self.idle.remove(conn)

    def closed_one(self) -> None:
        """A connection of ours closed: its place goes to the first waiting request."""
        self.open -= 1
        if self.waiting and not self.retired:
            self._open(self.waiting.popleft())

    def connect(self, done: ConnectCallback) -> bool:
        """A connection for `done`: a fresh one (`done(conn, None)` or `done(None, error)`
        once connected), or, at `max_connections`, the next one freed. True when queued:
        the caller's deadline then bounds the wait."""
        spec = self.spec
        if self.open < spec.max_connections:
            self._open(done)
            return False
        if len(self.waiting) >= spec.max_connections * QUEUE_PER_CONNECTION:
            done(None, UpstreamBusy(f"{spec.max_connections} connections busy, queue full"))
            return False
        self.waiting.append(done)
        return True

    def _open(self, done: ConnectCallback) -> None:
        self.open += 1
        task = asyncio.get_running_loop().create_task(
            self._connect(done), name=f"connect:{self.name}"
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _connect(self, done: ConnectCallback) -> None:
        loop = asyncio.get_running_loop()
        spec = self.spec
        try:
            _, proto = await asyncio.wait_for(
                loop.create_connection(
                    lambda: cast(asyncio.Protocol, UpstreamConnection(self)),
                    spec.host,
                    spec.port,
                    ssl=self._ssl,
                    server_hostname=spec.host if self._ssl else None,
                ),
                spec.connect_timeout,
            )
        except ssl.SSLError as exc:  # before OSError: it is one
            self.open -= 1
            why = getattr(exc, "verify_message", "") or exc.reason or str(exc)
            done(None, UpstreamTLSError(f"TLS handshake with {spec.host}:{spec.port}: {why}"))
            return
        except (OSError, TimeoutError) as exc:
            self.open -= 1
            where = f"connect to {spec.host}:{spec.port}: {exc!r}"
            done(None, UpstreamConnectError(where, connect_reason(exc)))
            return
        except asyncio.CancelledError:
            self.open -= 1
            raise
        done(cast(UpstreamConnection, proto), None)

    def retire(self) -> None:
        """No more pooling: close idle connections; busy ones close when done; a
        request still waiting for one is answered 503."""
        self.retired = True
        while self.idle:
            self.idle.pop().abandon()
        while self.waiting:
            self.waiting.popleft()(None, UpstreamBusy("backend removed by a config reload"))

    async def close(self) -> None:
        self.retire()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)


def client_ssl_context(spec: BackendSpec) -> ssl.SSLContext:
    """Verification on by default; `tls.ca` (or `ca_file`) trusts a private CA; `tls.cert`
    and `tls.key` are the client certificate the router presents (mTLS)."""
    tls = spec.tls
    ctx = ssl.create_default_context(cafile=(tls.ca if tls else None) or spec.ca_file)
    if tls is not None and tls.cert and tls.key:
        ctx.load_cert_chain(tls.cert, tls.key)
    if not spec.tls_verify:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx
