"""One request end to end: route -> decide -> forward -> mirror -> record.

Theory of operation. The client connection (router/dataplane/server.py) makes an
`Exchange` per request head and activates it when it is first in line. The
exchange reads the runtime once (table, live state, config through the data
plane's cached header settings), asks the route for a `Decision`, takes an idle
connection from the primary backend's pool (or starts a connect) and becomes
that connection's `ResponseSink`. From then on everything is callbacks:

    client body piece  -> out buffer -> one backend write per client read
    response head/body -> client buffer -> one client write per backend read
    response end       -> record once, hand the connection back, next request

Framing toward the client: the backend's Content-Length when it sent one,
chunked toward an HTTP/1.1 client otherwise, close-delimited toward HTTP/1.0.
Failures before the response head become a JSON 502/504 (or the client error's
own status); after it, the client connection is aborted so a truncated body
never looks complete.

Cost. Everything here runs once per request, so it is kept to what the
request needs (measured with bench/inproc.py: about 6 µs of CPU a request with
llhttp, compiled by mypyc as `make` does, 9.5 µs interpreted; the kernel's
loopback send/recv costs about twice that). Route answers are remembered per
(host, path) until the table changes (`DataPlane.match`); each head is
built as one list joined once; the request id line is formatted once and
sent both ways; the clock is read about twice a request (the client read's
`now`, and the answer's end).

Around that path: the follow-up leg, rewritten requests and retries
(router/dataplane/legs.py); the shadows' copy and the stream clock
(router/dataplane/taps.py); the listeners, pools and route memo (router/dataplane/plane.py);
the heads (router/dataplane/heads.py).
"""

from __future__ import annotations

from time import perf_counter
from typing import TYPE_CHECKING, Final

from router.core.errors import (
    ProxyError,
    UpstreamConnectError,
    UpstreamError,
)
from router.dataplane.decide import decide
from router.dataplane.endings import backend_line, client_left, failed, overdue, rid_line_of
from router.dataplane.heads import (
    MODE_CHUNKED,
    MODE_CLOSE,
    MODE_NONE,
    NONE,
    answer_framing,
    origin_form,
    request_head,
    response_head,
)
from router.dataplane.http1 import (
    CONTINUE_100,
    LAST_CHUNK,
    Header,
    length_line,
)
from router.dataplane.legs import (
    follow_next,
    hold_for_rewrite,
    keep_for_retry,
    retry,
    send_rewritten,
)
from router.dataplane.request import Request
from router.dataplane.server import PAUSE_UPSTREAM, ClientConnection
from router.dataplane.shadow_copy import ShadowTap
from router.dataplane.taps import (
    mirror_too_big,
    offer_answered,
    record,
    stream_read,
    time_stream,
)
from router.dataplane.upstream import UpstreamConnection, UpstreamPool

if TYPE_CHECKING:
    from router.core.rewrite import Rewrite
    from router.dataplane.capture_copy import CaptureTap
    from router.dataplane.follow import FollowLeg
    from router.dataplane.plane import DataPlane
    from router.dataplane.stream_timing import StreamTimer
    from router.drift.streams import Tap

PENDING_MAX: Final = 256 * 1024  # request bytes buffered while a connect is in progress


class Exchange:
    """One request's trip through the proxy; see the module docstring."""

    __slots__ = (
        "backend",
        "capture",
        "conn",
        "cout",
        "deadline",
        "early",
        "finished",
        "follow",
        "held",
        "keep_alive",
        "mode",
        "nbytes",
        "out",
        "out_len",
        "plane",
        "pool",
        "reason",
        "req",
        "request_done",
        "retried",
        "retry",
        "retry_len",
        "rewrite",
        "rid",
        "rid_line",
        "route_name",
        "sent",
        "shadow",
        "started",
        "status",
        "t0",
        "tap",
        "target",
        "timer",
        "upstream",
    )

    # Set with the buffer it counts (router/dataplane/decide.py) and read only while
    # that exists: most requests never pay for it.
    retry_len: int

    def __init__(self, plane: DataPlane, conn: ClientConnection, req: Request) -> None:
        self.plane = plane
        self.conn = conn
        self.req = req
        target = req.target
        self.target = target if target[:1] == b"/" else origin_form(target)
        self.rid = ""
        self.rid_line = b""  # "x-request-id: ...\r\n", sent both ways
        self.route_name = ""
        self.backend = ""
        self.reason = ""
        self.pool: UpstreamPool | None = None
        self.upstream: UpstreamConnection | None = None
        self.early: list[bytes] | None = None  # body read before activation
        self.out: list[bytes] = []  # bytes due to the backend
        self.out_len = 0
        self.cout: list[bytes] = []  # bytes due to the client, one write per backend read
        self.shadow: ShadowTap | None = None  # mirrored: the body and answer for shadows
        self.retry: list[bytes] | None = None
        self.retried = self.request_done = self.sent = self.started = self.finished = False
        self.keep_alive = False
        self.mode = MODE_NONE
        self.status = 0
        self.nbytes = 0
        self.deadline = 0.0  # backend must answer by then (perf_counter); 0 = none
        self.t0 = 0.0
        self.tap: Tap | None = None  # bodies for drift (router/drift/watch.py)
        self.follow: FollowLeg | None = None  # the model's leg of a follow-up decision
        self.timer: StreamTimer | None = None  # a streamed answer's clock (stream_timing.py)
        self.rewrite: Rewrite | None = None  # the arm's own request (router/core/rewrite.py)
        self.held: list[bytes] | None = None  # a rewritten request's body, until its end
        self.capture: CaptureTap | None = None  # captured: bodies for the sink (capture_copy.py)

    # request side

    def activate(self, now: float = 0.0) -> None:
        """First in line (at `now`, perf_counter): route, decide, pick a connection, send."""
        self.t0 = now or perf_counter()
        pool = decide(self)
        if pool is None:
            return  # refused, unrouted or misconfigured: the exchange has failed
        req = self.req
        self._queue_head(pool)
        if req.expect_continue and not self.request_done and req.has_body:
            self.conn.write(CONTINUE_100)
        idle = pool.idle
        up = idle.pop() if idle else None  # pool.acquire() inlined for the common case
        if up is not None and up.closed:
            up = pool.acquire()
        if up is None:
            self.connect(pool)
        else:
            self.attach(up)

    def on_request_body(self, data: bytes) -> None:
        if self.finished:
            return
        if self.shadow is not None and not self.shadow.add_body(data):
            mirror_too_big(self)
        if self.tap is not None:
            self.tap.add_request(data)
        if self.capture is not None:
            self.capture.add_request(data)
        if self.follow is not None:
            self.follow.add_request(data)
            if self.follow.lost:
                return  # the human's request is built from the follow copy
        if self.pool is None:  # not active yet (pipelined) or refused
            if self.early is None:
                self.early = []
            self.early.append(data)
        elif self.held is not None:
            self.held.append(data)
        elif self.req.chunked:
            self.out += (b"%x\r\n" % len(data), data, b"\r\n")
            self.out_len += len(data)
        else:
            self.out.append(data)
            self.out_len += len(data)

    def on_request_end(self) -> None:
        self.request_done = True
        if self.follow is not None and self.follow.lost:
            self.follow.lost = False
            follow_next(self, 0)  # the model failed earlier: `after` picks who answers
            return
        if self.held is not None:
            send_rewritten(self)
            return
        if self.pool is not None and self.req.chunked:
            self.out.append(LAST_CHUNK)
        if self.upstream is not None and not self.out:
            self._sent()

    def flush_request(self) -> None:
        """Send what is buffered in one write (called after each client read)."""
        up = self.upstream
        if up is None or self.finished:
            if self.out_len > PENDING_MAX:
                self.conn.pause_input(PAUSE_UPSTREAM)
            return
        out = self.out
        if out:
            data = out[0] if len(out) == 1 else b"".join(out)
            out.clear()
            self.out_len = 0
            if up.transport is not None:
                up.transport.write(data)
            if self.retry is not None:
                keep_for_retry(self, self.retry, data)
        if self.request_done and not self.sent:
            self._sent()

    def connect(self, pool: UpstreamPool) -> None:
        if pool.connect(self.on_connected):  # queued behind max_connections
            self.deadline = perf_counter() + pool.spec.queue_timeout

    def on_connected(self, up: UpstreamConnection | None, error: UpstreamError | None) -> None:
        if self.finished:
            if up is not None and self.pool is not None:
                self.pool.release(up)
            return
        if up is None:
            self.fail(error or UpstreamConnectError())
            return
        self.attach(up)

    def attach(self, up: UpstreamConnection) -> None:
        self.upstream = up
        self.deadline = 0.0  # a queue's deadline is over; _sent() sets the backend's
        conn = self.conn
        up.bind(self, self.req.method == b"HEAD")
        if conn.write_paused and up.transport is not None:
            up.transport.pause_reading()
        if not conn.feeding:  # else the client read's end flushes: one write, not two
            self.flush_request()
        if conn.paused & PAUSE_UPSTREAM:
            conn.resume_input(PAUSE_UPSTREAM)

    def _queue_head(self, pool: UpstreamPool) -> None:
        req = self.req
        if self.rewrite is not None:
            hold_for_rewrite(self, pool)
            return
        if req.chunked:
            framing = b"transfer-encoding: chunked\r\n"
        elif req.content_length is not None:
            framing = length_line(req.content_length)
        else:
            framing = b""
        self.out.append(self.head_to(pool, framing))
        for piece in self.early or ():
            self.early = None
            self.on_request_body(piece)
        if self.request_done and req.chunked:
            self.out.append(LAST_CHUNK)

    def head_to(
        self, pool: UpstreamPool, framing: bytes, extra: bytes = b"", own: frozenset[bytes] = NONE
    ) -> bytes:
        """The request's head toward `pool`'s backend; `extra`: more header lines;
        `own`: header names only the router may set (a client's are dropped)."""
        drop = self.plane.request_drop | own if own else self.plane.request_drop
        return request_head(
            self.req, self.conn, pool, self.target, drop, self.rid_line, extra, framing
        )

    def _sent(self) -> None:
        """The whole request is on its way: start the backend's clock."""
        self.sent = True
        timeout = self.pool.spec.timeout if self.pool is not None else 0.0
        conn = self.conn
        self.deadline = (conn.now if conn.feeding else perf_counter()) + timeout

    # response side (ResponseSink)

    def on_response_head(
        self, status: int, reason: bytes, headers: list[Header], length: int | None
    ) -> None:
        self.deadline = 0.0
        follow = self.follow
        if follow is not None and follow.first:  # held until `after` has spoken
            if follow.on_head(status, reason, headers, length):
                return
            self.follow = None  # full: the model's answer streams as it comes
        req = self.req
        mode, framing = answer_framing(req.method, req.version, status, length)
        keep = req.keep_alive and self.request_done and mode != MODE_CLOSE
        conn = self.conn
        self.keep_alive = keep = keep and not (conn.closing and conn.last_answer())
        if not keep:
            framing += b"connection: close\r\n"
        elif req.version != "1.1":
            framing += b"connection: keep-alive\r\n"
        self.mode, self.status, self.started = mode, status, True
        if self.capture is not None:
            self.capture.head = headers
        if length is None and mode != MODE_NONE and self.plane.stream_sink is not None:
            time_stream(self, headers)
        self.cout.append(self._response_head(status, reason, headers, framing))

    def _response_head(
        self, status: int, reason: bytes, headers: list[Header], framing: bytes
    ) -> bytes:
        drop, rid_line = self.plane.response_drop, self.rid_line or rid_line_of(self)
        return response_head(status, reason, headers, drop, rid_line, backend_line(self), framing)

    def on_response_body(self, data: bytes) -> None:
        if self.follow is not None and self.follow.first:
            self.follow.add_answer(data)
            return
        self.nbytes += len(data)
        if self.timer is not None:
            self.timer.chunk(data)
        if self.shadow is not None:
            self.shadow.add_answer(data)
        if self.tap is not None:
            self.tap.add_answer(data)
        if self.capture is not None:
            self.capture.add_answer(data)
        if self.mode == MODE_CHUNKED:
            self.cout += (b"%x\r\n" % len(data), data, b"\r\n")
        elif self.mode != MODE_NONE:
            self.cout.append(data)

    def flush_response(self) -> None:
        if self.timer is not None:
            stream_read(self)
        cout = self.cout
        if cout:
            self.conn.write(cout[0] if len(cout) == 1 else b"".join(cout))
            cout.clear()

    def on_response_end(self) -> None:
        self.upstream = None
        self.deadline = 0.0
        if self.follow is not None and self.follow.first:
            follow_next(self, self.follow.status)
            return
        cout = self.cout
        if self.mode == MODE_CHUNKED:
            cout.append(LAST_CHUNK)
        if cout:
            transport = self.conn.transport
            if transport is not None:
                transport.write(cout[0] if len(cout) == 1 else b"".join(cout))
            cout.clear()
        if self.shadow is not None:
            offer_answered(self, self.status)
        self.finish(self.status, self.keep_alive)

    def on_upstream_lost(self, error: UpstreamError, received: bool, reused: bool) -> None:
        self.upstream = None
        if not received and reused and retry(self):
            return
        self.fail(error)

    def request_sent(self) -> bool:
        return self.sent

    def pause_request(self) -> None:
        self.conn.pause_input(PAUSE_UPSTREAM)

    def resume_request(self) -> None:
        self.conn.resume_input(PAUSE_UPSTREAM)

    # endings

    def client_paused(self, paused: bool) -> None:
        """Client socket full (or drained): stop (or resume) reading the backend."""
        up = self.upstream
        if up is None or up.transport is None or up.closed:
            return
        if self.timer is not None and self.pool is not None:  # a slow client is not a silent stream
            self.deadline = 0.0 if paused else perf_counter() + self.pool.spec.timeout
        if paused:
            up.transport.pause_reading()
        else:
            up.transport.resume_reading()

    def check(self, now: float) -> None:
        """Sweeper: past its deadline, the exchange fails (router/dataplane/endings.py)."""
        if self.deadline and now >= self.deadline and not self.finished:
            overdue(self)

    def fail(self, err: ProxyError) -> None:
        """End the request with `err`: a JSON answer, or an abort once streaming."""
        if not self.finished:
            failed(self, err)

    def client_gone(self) -> None:
        """The client hung up (or was aborted): drop the backend side too."""
        if not self.finished:
            client_left(self)

    def finish(self, status: int, keep_alive: bool) -> None:
        if self.finished:
            return
        self.finished = True
        now = perf_counter()
        record(self, status, now)
        self.conn.exchange_done(self, keep_alive, now)
