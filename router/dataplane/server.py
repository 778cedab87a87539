"""The client-facing HTTP/1.1 protocol: framing, limits, pipelining, timeouts.

Theory of operation. One `ClientConnection` per accepted socket parses
requests with llhttp (httptools) in callbacks; no task, no future, no timer per
request. Each request head becomes an `Exchange` (router/dataplane/proxy.py) appended to
a FIFO; only the first one is active (talks to a backend and writes to the
client), so pipelined requests are answered in order. While a later request
waits its turn the connection stops reading, so at most one socket read of
extra input is ever buffered.

The request body flows through the active exchange as it arrives: callbacks
append to the exchange's outgoing buffer and, after each `feed_data`, the
buffer goes to the backend in one write (head and body together when they came
in one read).

Deadlines are plain numbers on the `perf_counter` clock, checked by the sweeper
(router/dataplane/sweeper.py). The clock is read once per socket read (`now`) and the
callbacks of that read share it: a request costs two clock reads, not six.

    IDLE  keep-alive, no request begun     idle_timeout   -> closed silently
    HEAD  head begun, not complete         header_timeout -> 408, closed
    BODY  head read, body not complete     body_timeout   -> 408 (or abort), closed
    WAIT  request read, response pending   the exchange's own backend deadline

Framing that could smuggle a second request past the router (both Content-Length and
Transfer-Encoding, several lengths, a transfer coding other than chunked) is refused
with 400 (router/dataplane/request.py) and the connection is closed; so is what RFC
9112 says a server must reject: an HTTP/1.1 request without exactly one Host (§3.2),
an HTTP/0.9 request line (no version: there is no head to carry a status, a request
id or the backend's name), and any version but 1.0 and 1.1 (505). A request that
goes bad behind pipelined ones never delays their answers: it joins the line as a
refused exchange, answered in its turn, and the connection closes after it.
Flow control runs both ways: a client that reads slowly pauses the backend's
socket (pause_writing -> pause_reading) and a backend that reads slowly pauses
the client's socket.

Stopping (router/app.py has the order): `drain()` marks a connection so that
every request it has begun to receive is answered and the last answer carries
`Connection: close`; `shutdown()` (the listener is closed) also lets an idle
connection go after IDLE_GRACE; `give_up()` (drain_timeout is over) answers 503
to whatever has no answer yet.
"""

from __future__ import annotations

import asyncio
from collections import deque
from time import perf_counter
from typing import TYPE_CHECKING, Final, cast

import httptools

from router.core.errors import (
    BadRequest,
    ClientError,
    HeadersTooLarge,
    ProxyError,
    RequestTimeout,
    RequestTooLarge,
)
from router.dataplane.http1 import SPENT_REQUEST_PARSER, Header, error_response, new_request_id
from router.dataplane.request import Request, head_size, read_headers, version_error

if TYPE_CHECKING:
    from router.dataplane.plane import DataPlane
    from router.dataplane.proxy import Exchange

IDLE: Final = 0
HEAD: Final = 1
BODY: Final = 2
WAIT: Final = 3
PAUSE_PIPELINE: Final = 1
PAUSE_UPSTREAM: Final = 2
PAUSE_STOPPED: Final = 4
WRITE_HIGH_WATER: Final = 64 * 1024
IDLE_GRACE: Final = 0.1  # seconds an idle connection stays open once the router stops accepting


class ClientConnection:
    """One client's HTTP/1.1 connection; see the module docstring.

    An `asyncio.Protocol` by its methods, not by inheritance: a plain class is what
    mypyc compiles to a native one (direct attribute slots, no weakref support to get
    wrong); the loop only ever calls the methods.
    """

    def __init__(self, plane: DataPlane, scheme: bytes) -> None:
        self.plane = plane
        self.scheme = scheme
        self.limits = plane.runtime.config.limits
        self.loop = asyncio.get_running_loop()
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.client_ip = ""
        self.client_ip_bytes = b""
        self.queue: deque[Exchange] = deque()
        self.current: Exchange | None = None  # the exchange whose body is being read
        self.state = IDLE
        self.deadline = 0.0
        self.closing = False  # answer the active request, then close
        # The router is stopping: whatever was received is answered, the last answer
        # with Connection: close (see drain()).
        self.draining = False
        self.closed = False
        self.write_paused = False
        self.paused = 0  # PAUSE_* reasons reading is paused for; 0: reading
        # Inside data_received (non-zero: the read's length), whatever is buffered for
        # the backend goes out after the read, in one write.
        self.feeding = 0
        self.now = 0.0  # perf_counter at the start of the current read
        self._kinds = plane.header_kinds
        self._max_head = self.limits.max_header_bytes
        self._max_body = self.limits.max_body
        self._head_raw = 0
        self._body_size = 0
        self._url = b""
        self._headers: list[Header] = []
        self._error: ClientError | None = None

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.transport.set_write_buffer_limits(high=WRITE_HIGH_WATER)
        peer = transport.get_extra_info("peername")
        self.client_ip = peer[0] if isinstance(peer, tuple) else ""
        self.client_ip_bytes = self.client_ip.encode()
        self.deadline = perf_counter() + self.limits.idle_timeout
        self.plane.connections.add(self)
        if self.plane.stopping:
            self.draining = True  # accepted during shutdown.delay: one answer, then close

    def data_received(self, data: bytes) -> None:
        if self.paused & PAUSE_STOPPED:
            return  # after an error or an upgrade: the rest can't be framed
        self.now = perf_counter()
        size = self.feeding = len(data)
        if self.state == HEAD:
            self._head_raw += size
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self.stop_input()  # Upgrade is not proxied; answer this request, then close
        except httptools.HttpParserError as exc:
            self.feeding = 0
            self.reject(self._error or BadRequest(f"malformed request: {exc}"))
        self.feeding = 0
        # Also after an error: good requests before the bad one still go out now.
        queue = self.queue
        if queue and queue[0].out:
            queue[0].flush_request()
        if self.state == HEAD and not self.paused & PAUSE_STOPPED:
            self._check_head(data)

    def _check_head(self, data: bytes) -> None:
        """After a read that left a head incomplete: too large, or an HTTP/0.9 line."""
        if self._head_raw > self._max_head:
            self.reject(HeadersTooLarge())
        elif data[-1:] == b"\n" and not self._headers and self.parser.get_http_version() == "0.0":
            # The request line ended without a version (llhttp would wait for a blank
            # line that an HTTP/0.9 client never sends): refuse it now, not at 408.
            self.reject(BadRequest("HTTP/0.9 request line (no HTTP version)"))

    def eof_received(self) -> bool | None:
        return None  # the client half-closed: close our side too; connection_lost follows

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.parser = SPENT_REQUEST_PARSER  # nothing more to parse: break the cycle
        self.current = None
        queue, self.queue = self.queue, deque()
        for ex in queue:
            ex.client_gone()
        self.plane.connection_closed(self)

    def pause_writing(self) -> None:
        self.write_paused = True
        if self.queue:
            self.queue[0].client_paused(True)

    def resume_writing(self) -> None:
        self.write_paused = False
        if self.queue:
            self.queue[0].client_paused(False)

    # httptools callbacks

    def on_message_begin(self) -> None:
        self.state = HEAD
        if self.draining:
            self._not_last()
        self.deadline = self.now + self.limits.header_timeout
        self._head_raw = self.feeding  # over-counts a pipelined tail; errs on the safe side
        self._body_size = 0
        self._url = b""
        self._headers = []

    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        # No size check here (it runs for every header): the head can only be too
        # large when the raw bytes fed since it began are (see on_headers_complete),
        # and a head spread over reads is checked after each read.
        self._headers.append((name.lower(), value))

    def on_headers_complete(self) -> None:
        if self._head_raw > self._max_head and head_size(self._url, self._headers) > self._max_head:
            self._too_large()
        parser = self.parser
        version = parser.get_http_version()
        req = Request(parser.get_method(), self._url, version, parser.should_keep_alive())
        try:
            if version != "1.1" and version != "1.0":
                raise version_error(version)
            read_headers(req, self._headers, self._kinds)
        except ClientError as exc:
            self._error = exc
            raise
        length = req.content_length
        if length is not None and length > self.limits.max_body:
            req.error = RequestTooLarge(f"Content-Length {length} over the limit")
            self.stop_input()
        self._begin(req, req.chunked or bool(length))

    def on_body(self, body: bytes) -> None:
        self._body_size += len(body)
        if self._body_size > self._max_body:
            self._error = RequestTooLarge()
            raise self._error
        if self.current is not None:
            self.current.on_request_body(body)

    def on_message_complete(self) -> None:
        ex, self.current = self.current, None
        if self.state != IDLE:
            self.state = WAIT
        if ex is not None:
            ex.on_request_end()

    # called by the exchange

    def write(self, data: bytes) -> None:
        if self.transport is not None:
            self.transport.write(data)

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    def exchange_done(self, ex: Exchange, keep_alive: bool, now: float = 0.0) -> None:
        """The active exchange answered (at `now`, perf_counter); start the next or close."""
        queue = self.queue
        if queue and queue[0] is ex:
            queue.popleft()
        if not keep_alive or self.closed:
            self.close()
        elif queue:  # closing or not: requests already read are answered
            self.resume_input(PAUSE_PIPELINE)
            if self.draining:
                self._last_answer()
            queue[0].activate(perf_counter())
        elif self.closing:
            self.close()
        elif self.state == WAIT:
            self.state = IDLE
            # no longer accepting: idle only for a moment (see shutdown)
            wait = IDLE_GRACE if self.plane.draining else self.limits.idle_timeout
            self.deadline = (now or perf_counter()) + wait

    def last_answer(self) -> bool:
        """True when the active exchange's answer is the connection's last one."""
        return self.closing and len(self.queue) <= 1

    def pause_input(self, reason: int) -> None:
        if not self.paused and self.transport is not None:
            self.transport.pause_reading()
        self.paused |= reason

    def resume_input(self, reason: int) -> None:
        was = self.paused
        self.paused &= ~reason
        if was and not self.paused and self.transport is not None and not self.closed:
            self.transport.resume_reading()

    def stop_input(self) -> None:
        """Read no more requests on this connection."""
        self.closing = True
        self.pause_input(PAUSE_STOPPED)

    def close(self) -> None:
        if self.transport is not None and not self.closed:
            self.transport.close()  # flushes what was written, then closes

    # lifecycle

    def reject(self, err: ClientError) -> None:
        """A client error outside any answerable exchange's normal flow; the last input."""
        self.stop_input()
        self.state = WAIT  # no further client deadlines
        queue, current = self.queue, self.current
        if current is not None and queue and queue[0] is current:
            current.fail(err)
        elif current is not None:
            # Its body went bad while it waits behind others: it gets `err` in its turn.
            current.req.error = current.req.error or err
        else:
            # A head that could not be read: a refused exchange (no version), answered
            # in its turn after any still due before it (then the close), and counted
            # and logged like any request. The method is known once the URL began.
            method = self.parser.get_method() if self._url else b""
            refused = Request(method, self._url, "", False)
            refused.error = err
            ex = self.plane.new_exchange(self, refused)
            queue.append(ex)
            if len(queue) == 1:
                ex.activate(perf_counter())

    def check(self, now: float) -> None:
        """Sweeper tick: enforce this connection's and its exchange's deadlines."""
        if self.state == IDLE and now >= self.deadline and not self.queue:
            self.close()
        elif self.state in (HEAD, BODY) and now >= self.deadline:
            self.reject(RequestTimeout())
        if self.queue:
            self.queue[0].check(now)

    def drain(self) -> None:
        """The router is stopping: answer everything received, the last with Connection:
        close. An idle connection stays open (a request on it gets that last answer)."""
        self.draining = True
        if self.queue:  # idle: the next request's answer decides (a burst may come)
            self._last_answer()

    def shutdown(self, now: float) -> None:
        """No longer accepting: the others close after their last answer, a request whose
        head has begun to arrive is read and answered. An idle connection is closed by
        the sweeper after IDLE_GRACE, not at once: a request may be in its socket unread,
        or on its way from a client that has just connected, and closing a socket with
        unread data resets it (the client would see no answer at all)."""
        self.drain()
        if not self.queue and self.state in (IDLE, WAIT):
            self.state = IDLE
            self.deadline = min(self.deadline, now + IDLE_GRACE)

    def give_up(self, err: ProxyError) -> None:
        """drain_timeout is over: what has no answer yet gets `err`; a started one is cut."""
        self.stop_input()
        if self.queue:
            self.queue[0].fail(err)  # writes the error, or aborts a response under way
        elif self.state == HEAD:
            body = {"error": err.code, "request_id": new_request_id()}
            self.write(error_response(err.status, body, keep_alive=False))
        self.close()

    def _not_last(self) -> None:
        # Another request begins: the answer in the making is not the last after all,
        # unless its head is already out or an error closes the connection.
        queue = self.queue
        if queue and not queue[0].started and not self.paused & PAUSE_STOPPED:
            self.closing = False

    def _last_answer(self) -> None:
        # The answer being made is the last one when no other request has begun to
        # arrive. One that arrives after that answer's Connection: close was decided is
        # not read: RFC 9112 §9.6 has the client send it again on a new connection.
        if self.state != HEAD and len(self.queue) <= 1:
            self.closing = True

    def _begin(self, req: Request, has_body: bool) -> None:
        ex = self.plane.new_exchange(self, req)
        self.queue.append(ex)
        self.current = ex
        if has_body and req.error is None:
            self.state = BODY
            self.deadline = self.now + self.limits.body_timeout
        else:
            self.state = WAIT
        if self.draining:
            self._last_answer()
        if len(self.queue) == 1:
            ex.activate(self.now)
        else:
            self.pause_input(PAUSE_PIPELINE)

    def _too_large(self) -> None:
        self._error = HeadersTooLarge()
        raise self._error
