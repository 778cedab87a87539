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
never looks complete. An idempotent request that went out on a reused
keep-alive connection which died before any response byte is retried once on
a fresh connection (the backend may have closed it while we were writing).

`seconds` given to the recorder runs from activation to the last byte handed to
the client socket; `nbytes` counts response body bytes from the backend.

Cost. Everything here runs once per request, so it is kept to what the
request needs (measured with bench/inproc.py: about 6 µs of CPU a request with
llhttp, compiled by mypyc as `make` does, 9.5 µs interpreted; the kernel's
loopback send/recv costs about twice that). Route answers are remembered per
(host, target) until the table changes (`DataPlane.match`); a `Fanout`
recorder is flattened into the `record` methods it would call; the access
log (router/dataplane/accesslog.py) is called only when it logs at all; each head is
built as one list joined once; the request id line is formatted once and
sent both ways; the clock is read about twice a request (the client read's
`now`, and the answer's end).

Mirrors. When the decision names mirrors and the data plane has a
`shadow_sink` (router/shadow/mirror.py), the exchange keeps a `ShadowTap`
(router/dataplane/shadow_copy.py): the request body up to the route's `max_body` (at most
MIRROR_MAX_BODY; methods outside the route's `mirror_methods` are not copied at
all) and the primary's answer up to ANSWER_MAX_BODY. Once the client's last byte
was written it hands one `MirrorCopy` to the sink: the comparison needs the
primary's answer, and the client never waits for anything that happens after.
Without mirrors none of this runs: the cost is one `is None` test per body piece.
"""

from __future__ import annotations

from time import perf_counter
from typing import TYPE_CHECKING, Final

from router.core.errors import (
    ClientError,
    NoRoute,
    ProxyError,
    UpstreamBusy,
    UpstreamConnectError,
    UpstreamError,
    UpstreamTimeout,
)
from router.dataplane.heads import NONE, origin_form, request_head, response_head
from router.dataplane.http1 import (
    CONTINUE_100,
    IDEMPOTENT,
    LAST_CHUNK,
    Header,
    error_response,
    length_line,
    new_request_id,
    sane_request_id,
)
from router.dataplane.legs import (
    begin_follow,
    follow_next,
    hold_for_rewrite,
    keep_for_retry,
    lose_model,
    retry,
    send_rewritten,
)
from router.dataplane.server import PAUSE_UPSTREAM, ClientConnection, Request
from router.dataplane.shadow_copy import MIRROR_MAX_BODY, STREAM_MAX_BODY, MirrorCopy, ShadowTap
from router.dataplane.upstream import UpstreamConnection, UpstreamPool

if TYPE_CHECKING:
    from router.core.rewrite import Rewrite
    from router.dataplane.follow import FollowLeg
    from router.dataplane.plane import DataPlane
    from router.dataplane.stream_timing import StreamTimer
    from router.drift.streams import Tap

PENDING_MAX: Final = 256 * 1024  # request bytes buffered while a connect is in progress
MODE_NONE: Final = 0
MODE_LENGTH: Final = 1
MODE_CHUNKED: Final = 2
MODE_CLOSE: Final = 3


class Exchange:
    """One request's trip through the proxy; see the module docstring."""

    __slots__ = (
        "backend",
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
        # retry_len is set with the buffer it counts (activate) and read only while it
        # exists: most requests never pay for it.
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

    # request side

    def activate(self, now: float = 0.0) -> None:
        """First in line (at `now`, perf_counter): route, decide, pick a connection, send."""
        self.t0 = now or perf_counter()
        req, plane = self.req, self.plane
        given = req.request_id
        self.rid = (given is not None and sane_request_id(given)) or new_request_id()
        self.rid_line = b"%b: %b\r\n" % (plane.rid_name, self.rid.encode())  # _rid_line()
        runtime = plane.runtime
        # plane.match()'s hit, inlined: once per request (a remembered None goes the long way)
        table, path = runtime.table, self.target
        if (q := path.find(b"?")) >= 0:  # matching never reads the query: keep it out of the memo
            path = path[:q]
        route = plane.routes.get((req.host, path)) if plane.routes_of is table else None
        if route is None:
            route = plane.match(table, req.host, path)
        if route is None or req.error is not None:
            if route is not None and req.version:  # not a refused head (server.reject)
                self.route_name = route.name
            self.fail(req.error or NoRoute())
            return
        self.route_name = route.name
        d = route.decide(req.headers, self.conn.client_ip, runtime.live)
        if d.follow_up:
            d = begin_follow(self, d, route.strategy, runtime.live.get(route.name))
        self.backend, self.reason = d.primary, d.reason
        pool = self.pool = plane.pools.get(d.primary)
        if pool is None:
            self.fail(UpstreamConnectError(f"backend {d.primary!r} is not configured"))
            return
        if d.mirrors and plane.shadow_sink is not None:
            self._keep_mirror(d.mirrors, route.strategy)
        if d.rewrite is not None:
            self.rewrite = d.rewrite
        if route.spec.drift is not None and plane.drift_sink is not None:
            self.tap = plane.drift_sink.tap(req.method, self.target)  # None: pass is behind
        if req.method in IDEMPOTENT:
            self.retry, self.retry_len = [], 0
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
            self._mirror_too_big()
        if self.tap is not None:
            self.tap.add_request(data)
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

    # mirrors (router/dataplane/shadow_copy.py)

    def _keep_mirror(self, mirrors: tuple[str, ...], strategy: object) -> None:
        methods: frozenset[bytes] | None = getattr(strategy, "mirror_methods", None)
        if methods is not None and self.req.method not in methods:
            return  # the route mirrors other methods only
        cap = min(getattr(strategy, "max_body", MIRROR_MAX_BODY), MIRROR_MAX_BODY)
        # Body read before activation (`early`) reaches the tap when _queue_head
        # replays it through on_request_body; adding it here too would double it.
        self.shadow = ShadowTap(mirrors, cap)
        length = self.req.content_length
        if length is not None and length > cap:
            self._mirror_too_big()

    def _mirror_too_big(self) -> None:
        """Tell the shadow sink at once (it counts the skip); keep nothing more."""
        shadow, self.shadow = self.shadow, None
        if shadow is not None:
            req = self.req
            self._to_shadow_sink(shadow.skipped(self.route_name, req.method, self.target, self.rid))

    def _offer_answered(self, status: int) -> None:
        """The primary is done (status 0: it never answered): hand over the pair."""
        shadow, self.shadow = self.shadow, None
        if shadow is None or not self.request_done:
            return  # an answer before the whole request came in: no faithful copy
        req, latency = self.req, perf_counter() - self.t0
        copy = shadow.answered(
            self.route_name, req.method, self.target, req.headers, self.rid, status, latency
        )
        self._to_shadow_sink(copy)

    def _to_shadow_sink(self, copy: MirrorCopy) -> None:
        sink = self.plane.shadow_sink
        if sink is None:
            return
        try:
            sink.offer(copy)
        except Exception:  # a broken sink must never fail the client's request
            self.plane.mirror_errors += 1

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
        if req.method == b"HEAD" or status < 200 or status == 204 or status == 304:
            mode = MODE_NONE
            framing = length_line(length) if length is not None else b""
            if status == 204 or status < 200:
                framing = b""
        elif length is not None:
            mode, framing = MODE_LENGTH, length_line(length)
        elif req.version == "1.1":
            mode, framing = MODE_CHUNKED, b"transfer-encoding: chunked\r\n"
        else:
            mode, framing = MODE_CLOSE, b""
        keep = req.keep_alive and self.request_done and mode != MODE_CLOSE
        conn = self.conn
        self.keep_alive = keep = keep and not (conn.closing and conn.last_answer())
        if not keep:
            framing += b"connection: close\r\n"
        elif req.version != "1.1":
            framing += b"connection: keep-alive\r\n"
        self.mode, self.status, self.started = mode, status, True
        if length is None and mode != MODE_NONE and self.plane.stream_sink is not None:
            self._time_stream(headers)
        self.cout.append(self._response_head(status, reason, headers, framing))

    def _stream_read(self) -> None:
        """One read of an event stream: its time; and the stream must go on, each next
        read within the backend's timeout (the sweeper aborts a silent one)."""
        if self.timer is not None and self.pool is not None:
            self.timer.read()
            self.deadline = perf_counter() + self.pool.spec.timeout

    def _time_stream(self, headers: list[Header]) -> None:
        """An event stream gets a clock; its copy for shadows may be longer (SSE is verbose)."""
        sink = self.plane.stream_sink
        timer = sink.timer(self.route_name, self.backend, headers, self.t0) if sink else None
        if timer is not None:
            self.timer = timer
            if self.shadow is not None:
                self.shadow.answer_cap = STREAM_MAX_BODY
            if self.pool is not None:
                self.deadline = perf_counter() + self.pool.spec.timeout

    def _response_head(
        self, status: int, reason: bytes, headers: list[Header], framing: bytes
    ) -> bytes:
        drop, rid_line = self.plane.response_drop, self.rid_line or self._rid_line()
        return response_head(status, reason, headers, drop, rid_line, self._backend_line(), framing)

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
        if self.mode == MODE_CHUNKED:
            self.cout += (b"%x\r\n" % len(data), data, b"\r\n")
        elif self.mode != MODE_NONE:
            self.cout.append(data)

    def flush_response(self) -> None:
        if self.timer is not None:
            self._stream_read()
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
            self._offer_answered(self.status)
        self._finish(self.status, self.keep_alive)

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
        """Sweeper: a backend that has not answered by the deadline gets a 504; a
        request still waiting for a connection (max_connections) gets a 503."""
        if self.deadline and now >= self.deadline and not self.finished:
            if self.upstream is None and self.pool is not None:
                spec = self.pool.spec
                self.fail(UpstreamBusy(f"all {spec.max_connections} connections busy"))
            else:
                self.fail(UpstreamTimeout())

    def fail(self, err: ProxyError) -> None:
        """End the request with `err`: a JSON answer, or an abort once streaming."""
        if self.finished:
            return
        up, self.upstream = self.upstream, None
        if up is not None:
            up.abandon()
        follow = self.follow
        if follow is not None and follow.first and not isinstance(err, ClientError):
            follow.lose(err)
            if self.request_done:
                follow_next(self, 0)  # `after` decides who answers instead
            else:
                lose_model(self, follow)
            return
        if self.shadow is not None and self.sent and not self.started:
            self._offer_answered(0)  # the primary never answered; the shadow still may
        if self.started:
            self.conn.abort()
            self._finish(err.status, False)
            return
        client_side = isinstance(err, ClientError)
        keep = self.req.keep_alive and self.request_done and not client_side
        conn = self.conn
        keep = keep and not (conn.closing and conn.last_answer())
        body = {"error": err.detail if client_side else err.code, "request_id": self.rid}
        if self.backend and not client_side:
            body["backend"] = self.backend
        self.conn.write(error_response(err.status, body, keep_alive=keep, extra=self._ids()))
        self._finish(err.status, keep)

    def client_gone(self) -> None:
        """The client hung up (or was aborted): drop the backend side too."""
        if self.finished:
            return
        self.finished = True
        up, self.upstream = self.upstream, None
        if up is not None:
            up.abandon()
        if self.t0:
            self._record(502 if self.started else 499)  # 499: client left first (nginx's word)

    def _finish(self, status: int, keep_alive: bool) -> None:
        if self.finished:
            return
        self.finished = True
        now = perf_counter()
        self._record(status, now)
        self.conn.exchange_done(self, keep_alive, now)

    def _record(self, status: int, now: float = 0.0) -> None:
        plane = self.plane
        backend = self.backend if self.pool is not None else ""
        seconds = (now or perf_counter()) - self.t0
        for record in plane.records:
            record(self.route_name, backend, status, seconds, self.reason, self.rid, self.nbytes)
        access = plane.access
        if access is not None:
            req = self.req
            access.log(
                req.method,
                self.target,
                self.route_name,
                backend,
                status,
                seconds,
                self.reason,
                self.rid,
                self.nbytes,
            )
        if self.tap is not None:
            self.tap.finish(self.route_name, self.backend, self.rid, status)
            self.tap = None
        if self.timer is not None:
            self.timer.finish(status == self.status)  # an abort records its error status
            self.timer = None

    def _ids(self) -> bytes:
        """The request id and backend headers every response carries."""
        return (self.rid_line or self._rid_line()) + self._backend_line()

    def _rid_line(self) -> bytes:
        return b"%b: %b\r\n" % (self.plane.rid_name, self.rid.encode())

    def _backend_line(self) -> bytes:
        backend = self.backend
        if not (self.plane.router_backend and backend):
            return b""
        line = self.plane.backend_lines.get(backend)
        return b"x-router-backend: %b\r\n" % backend.encode() if line is None else line
