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

import asyncio
import socket
import ssl
from collections.abc import Sequence
from time import perf_counter
from typing import TYPE_CHECKING, Final, cast

import httptools

from router.config.spec import Config, ListenSpec, TLSSpec
from router.control.follow import FollowLeg, begin
from router.core.errors import (
    BadRequest,
    ClientError,
    NoRoute,
    ProxyError,
    ShuttingDown,
    UpstreamBusy,
    UpstreamConnectError,
    UpstreamError,
    UpstreamTimeout,
)
from router.dataplane.accesslog import AccessLog
from router.dataplane.http1 import (
    CONTINUE_100,
    IDEMPOTENT,
    LAST_CHUNK,
    REQUEST_OWN,
    RESPONSE_OWN,
    Header,
    connection_tokens,
    error_response,
    filtered,
    length_line,
    new_request_id,
    sane_request_id,
)
from router.dataplane.routing import CompiledRoute, RouteTable
from router.dataplane.server import PAUSE_UPSTREAM, ClientConnection, Request, header_kinds
from router.dataplane.shadow_copy import (
    MIRROR_MAX_BODY,
    STREAM_MAX_BODY,
    MirrorCopy,
    ShadowSink,
    ShadowTap,
)
from router.dataplane.sweeper import Sweeper
from router.dataplane.upstream import UpstreamConnection, UpstreamPool
from router.ops.logs import Fanout
from router.runtime import Recorder, Runtime

if TYPE_CHECKING:
    from router.core.rewrite import Rewrite
    from router.core.rollout import Rollout
    from router.dataplane.stream_timing import StreamSink, StreamTimer
    from router.drift.streams import DriftSink, Tap
    from strategies.base import Decision

RETRY_MAX_BODY: Final = 64 * 1024  # requests kept for a retry, at most
PENDING_MAX: Final = 256 * 1024  # request bytes buffered while a connect is in progress
MODE_NONE: Final = 0
MODE_LENGTH: Final = 1
MODE_CHUNKED: Final = 2
MODE_CLOSE: Final = 3
MATCH_MEMO: Final = 1024  # (host, target) -> route answers remembered, at most
_UNKNOWN: Final = object()
_NONE: Final[frozenset[bytes]] = frozenset()
_PLAIN_CONNECTION: Final = frozenset({b"keep-alive", b"Keep-Alive", b"close", b"Close"})
HELD_ROLES: Final = frozenset({"assist", "deferred"})  # the human answers; the model did too


def origin_form(target: bytes) -> bytes:
    """`/path?query` from any request target (absolute-form included)."""
    if target.startswith(b"/") or target == b"*":
        return target
    try:
        url = httptools.parse_url(target)
    except httptools.HttpParserInvalidURLError:
        return target
    path = url.path or b"/"
    return path + b"?" + url.query if url.query else path


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
            d = self._begin_follow(d, route.strategy, runtime.live.get(route.name))
        self.backend, self.reason = d.primary, d.reason
        pool = self.pool = plane.pools.get(d.primary)
        if pool is None:
            self.fail(
                UpstreamConnectError(f"backend {d.primary!r} is not configured", "not_configured")
            )
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
            self._connect(pool)
        else:
            self._attach(up)

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
            self._follow_next(0)  # the model failed earlier: `after` picks who answers
            return
        if self.held is not None:
            self._send_rewritten()
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
                self._retry_add(self.retry, data)
        if self.request_done and not self.sent:
            self._sent()

    def _connect(self, pool: UpstreamPool) -> None:
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
        self._attach(up)

    def _attach(self, up: UpstreamConnection) -> None:
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
            self._hold_for_rewrite(pool)
            return
        if req.chunked:
            framing = b"transfer-encoding: chunked\r\n"
        elif req.content_length is not None:
            framing = length_line(req.content_length)
        else:
            framing = b""
        self.out.append(self._request_head(pool, framing))
        for piece in self.early or ():
            self.early = None
            self.on_request_body(piece)
        if self.request_done and req.chunked:
            self.out.append(LAST_CHUNK)

    def _hold_for_rewrite(self, pool: UpstreamPool) -> None:
        """The arm's own request: its head now when there is no body, else once the
        body is all here (router/core/rewrite.py); the body is held until then."""
        rw, req = self.rewrite, self.req
        if rw is None:
            return
        if not (req.chunked or req.content_length):
            framing = b"" if req.content_length is None else length_line(0)
            self.out.append(self._request_head(pool, framing, rw.lines, rw.names))
            return
        self.held = []
        for piece in self.early or ():
            self.early = None
            self.on_request_body(piece)
        if self.request_done:
            self._send_rewritten()

    def _send_rewritten(self) -> None:
        held, self.held = self.held, None
        rw, pool = self.rewrite, self.pool
        if held is None or rw is None or pool is None:
            return
        body = rw.body(b"".join(held))
        if body is None:
            self.fail(BadRequest(f"{self.backend} needs a JSON object to rewrite: not one"))
            return
        self.out.append(self._request_head(pool, length_line(len(body)), rw.lines, rw.names))
        self.out.append(body)
        self.out_len += len(body)
        if self.upstream is not None and not self.conn.feeding:
            self.flush_request()

    def _request_head(
        self, pool: UpstreamPool, framing: bytes, extra: bytes = b"", own: frozenset[bytes] = _NONE
    ) -> bytes:
        """The request's head toward `pool`'s backend; `extra`: more header lines;
        `own`: header names only the router may set (a client's are dropped)."""
        req, conn = self.req, self.conn
        drop = self.plane.request_drop | own if own else self.plane.request_drop
        if req.connection is not None:
            drop = _with_tokens(drop, req.connection)
        # One list, one join: cheaper than a formatted line per header. `parts.append`
        # (a C call once compiled), not `parts += (...)`, which builds a tuple per line.
        parts = [req.method, b" ", pool.base_path, self.target, b" HTTP/1.1\r\nhost: "]
        parts.append(pool.host_header)
        parts.append(b"\r\n")
        for name, value in req.headers:
            if name not in drop:
                parts.append(name)
                parts.append(b": ")
                parts.append(value)
                parts.append(b"\r\n")
        if req.host:
            parts.append(b"x-forwarded-host: ")
            parts.append(req.host)
            parts.append(b"\r\n")
        ip, xff = conn.client_ip_bytes, req.forwarded_for
        parts.append(b"x-forwarded-for: ")
        parts.append(xff + b", " + ip if xff else ip)
        parts.append(b"\r\nx-forwarded-proto: ")
        parts.append(conn.scheme)
        parts.append(b"\r\n")
        parts.append(self.rid_line)
        parts.append(extra)
        parts.append(framing)
        parts.append(b"\r\n")
        return b"".join(parts)

    def _sent(self) -> None:
        """The whole request is on its way: start the backend's clock."""
        self.sent = True
        timeout = self.pool.spec.timeout if self.pool is not None else 0.0
        conn = self.conn
        self.deadline = (conn.now if conn.feeding else perf_counter()) + timeout

    # follow-up decisions (router/control/follow.py)

    def _begin_follow(self, d: Decision, strategy: object, live: Rollout | None) -> Decision:
        leg = begin(strategy, self.req, d, live, self.route_name)
        if isinstance(leg, FollowLeg):
            self.follow = leg
            return d
        return leg

    def _follow_next(self, status: int) -> None:
        """The model's leg is over: serve its answer, or ask the human."""
        leg = self.follow
        if leg is None:
            return
        d = leg.decide(status, self.plane.runtime.live.get(self.route_name))
        if d is None or d.primary in ("", self.backend):
            self.reason = d.reason if d is not None else self.reason
            if not leg.replayable:
                self.fail(UpstreamConnectError("the model gave no answer to serve", "no_answer"))
                return
            self.on_response_head(leg.status, leg.reason, leg.headers, leg.length)
            body = leg.answer_body()
            if body:
                self.on_response_body(body)
            self.on_response_end()
            return
        self._second_leg(d, leg)

    def _lose_model(self, leg: FollowLeg) -> None:
        """The model failed while the request was still coming in (a client that sends
        its body after its head): keep reading it; on_request_end asks `after`."""
        leg.lost = True
        self.out.clear()
        self.out_len = 0
        self.deadline = 0.0
        if self.conn.paused & PAUSE_UPSTREAM:
            self.conn.resume_input(PAUSE_UPSTREAM)

    def _second_leg(self, d: Decision, leg: FollowLeg) -> None:
        model = self.backend
        pool = self.pool = self.plane.pools.get(d.primary)
        self.backend, self.reason = d.primary, d.reason
        if pool is None:
            self.fail(
                UpstreamConnectError(f"backend {d.primary!r} is not configured", "not_configured")
            )
            return
        body, extra, framing = leg.second(d, self.req.content_length is not None)
        if self.plane.shadow_sink is not None and d.reason in HELD_ROLES and leg.replayable:
            # both answers of one request: the model's is judged against the human's
            held = (leg.status, leg.answer_body(), perf_counter() - self.t0)
            self.shadow = ShadowTap((model,), MIRROR_MAX_BODY, held, d.reason)
            self.shadow.add_body(b"".join(leg.req))
        self.out = [self._request_head(pool, framing, extra, leg.own_headers()), body]
        self.out_len = len(body)
        self.sent = self.retried = False
        self.retry = None
        self.status = self.nbytes = 0
        up = pool.acquire()
        if up is None:
            self._connect(pool)
        else:
            self._attach(up)

    # mirrors and retries

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

    def _retry_add(self, retry: list[bytes], data: bytes) -> None:
        self.retry_len += len(data)
        if self.retry_len > RETRY_MAX_BODY:
            self.retry = None  # too big to keep: this request won't be retried
        else:
            retry.append(data)

    def _retry(self) -> bool:
        """Resend on a fresh connection, if this request may be retried."""
        if self.retried or self.retry is None or self.started or self.pool is None:
            return False
        self.retried = True
        self.out[:0] = self.retry
        self.out_len += self.retry_len
        self.retry, self.retry_len = [], 0
        self.sent = False
        self.deadline = 0.0
        self._connect(self.pool)
        return True

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
        drop = self.plane.response_drop
        parts = [b"HTTP/1.1 %d %b\r\n" % (status, reason)]
        for name, value in headers:
            if name not in drop:
                parts.append(name)
                parts.append(b": ")
                parts.append(value)
                parts.append(b"\r\n")
            elif name == b"connection" and _with_tokens(drop, value) is not drop:
                # It names more headers to drop (rare): filter again, knowing them all.
                tokens = _response_tokens(headers)
                parts[1:] = [filtered(headers, drop, tokens)]
                break
        parts.append(self.rid_line or self._rid_line())
        parts.append(self._backend_line())
        parts.append(framing)
        parts.append(b"\r\n")
        return b"".join(parts)

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
            self._follow_next(self.follow.status)
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
        if not received and reused and self._retry():
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
        if isinstance(err, UpstreamError):  # a failure path only: the happy one pays nothing
            failures, key = self.plane.failures, (self.route_name, self.backend, err.reason)
            failures[key] = failures.get(key, 0) + 1
        follow = self.follow
        if follow is not None and follow.first and not isinstance(err, ClientError):
            follow.lose(err)
            if self.request_done:
                self._follow_next(0)  # `after` decides who answers instead
            else:
                self._lose_model(follow)
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


def _response_tokens(headers: list[Header]) -> frozenset[bytes]:
    for name, value in headers:
        if name == b"connection":
            return connection_tokens(value)
    return frozenset()


def _with_tokens(drop: frozenset[bytes], connection: bytes) -> frozenset[bytes]:
    """`drop` plus the names a Connection header lists; `drop` itself when none is new."""
    if connection in _PLAIN_CONNECTION:
        return drop  # the usual values name nothing new: skip the split
    tokens = connection_tokens(connection)
    return drop if tokens <= drop else drop | tokens


class DataPlane:
    """Listeners, pools and the sweeper; the request path's owner."""

    def __init__(
        self, runtime: Runtime, recorder: Recorder, *, sweep_interval: float = 0.5
    ) -> None:
        self.runtime = runtime
        self.recorder = recorder
        # Called once per request each: a Fanout is flattened so it costs no extra call.
        self.records = recorder.flat() if isinstance(recorder, Fanout) else (recorder.record,)
        self.pools: dict[str, UpstreamPool] = {}
        self.routes: dict[tuple[bytes | None, bytes], CompiledRoute | None] = {}
        self.routes_of: RouteTable | None = None  # the table `routes` remembers answers of
        self.connections: set[ClientConnection] = set()
        self.servers: list[asyncio.Server] = []
        self.shadow_sink: ShadowSink | None = None
        self.stream_sink: StreamSink | None = None  # clocks for streamed answers
        self.drift_sink: DriftSink | None = None  # bodies of drift-watched routes
        self.access: AccessLog | None = None  # None: no access line (sample 0)
        self.mirror_errors = 0  # offers that raised; the request went on regardless
        # (route, backend, reason) -> requests a backend failed, as their clients saw it
        # (router/ops/telemetry.py exports them; counted on the failure path only)
        self.failures: dict[tuple[str, str, str], int] = {}
        self.stopping = False  # SIGTERM came: every answer closes its connection
        self.draining = False  # no longer accepting: idle connections close
        self.sweeper = Sweeper(self.connections, sweep_interval)
        self._drained: asyncio.Event | None = None
        self.apply_config(runtime.config)

    def apply_config(self, config: Config) -> None:
        """Pools per backend: unchanged specs keep theirs, others start afresh."""
        self.rid_name = config.headers.request_id.lower().encode()
        self.header_kinds = header_kinds(self.rid_name)
        self.request_drop = REQUEST_OWN | {self.rid_name}
        self.response_drop = RESPONSE_OWN | {self.rid_name, b"content-length"}
        self.router_backend = config.headers.router_backend
        self.backend_lines = {
            name: b"x-router-backend: %b\r\n" % name.encode() for name in config.backends
        }
        pools: dict[str, UpstreamPool] = {}
        for name, spec in config.backends.items():
            old = self.pools.get(name)
            pools[name] = old if old is not None and old.spec == spec else UpstreamPool(spec)
        for name, old in self.pools.items():
            if pools.get(name) is not old:
                old.retire()
        self.pools = pools

    def in_flight(self) -> dict[str, int]:
        """Requests received and not yet answered, per route: counted when asked (a
        scrape), so the request path keeps no gauge. Pipelined requests waiting behind
        another have no route yet and are not counted."""
        out: dict[str, int] = {}
        for conn in self.connections:
            for ex in conn.queue:
                if ex.t0 and not ex.finished and ex.route_name:
                    out[ex.route_name] = out.get(ex.route_name, 0) + 1
        return out

    def new_exchange(self, conn: ClientConnection, req: Request) -> Exchange:
        return Exchange(self, conn, req)

    def match(self, table: RouteTable, host: bytes | None, path: bytes) -> CompiledRoute | None:
        """`table.match`, remembered: a few distinct (host, path) pairs carry most traffic.

        The answer is pure in (table, host, path without the query); a new table
        (a reload) empties the memo, and so does passing MATCH_MEMO entries (paths
        that vary per request, /items/<id>, would otherwise grow it without bound;
        a miss costs a few dict lookups, router/dataplane/routing.py).
        """
        routes = self.routes
        if table is not self.routes_of:
            routes.clear()
            self.routes_of = table
        key = (host, path)
        route = routes.get(key, _UNKNOWN)
        if route is _UNKNOWN:
            if len(routes) >= MATCH_MEMO:
                routes.clear()
            route = routes[key] = table.match(host, path)
        return route  # type: ignore[return-value]

    async def start(self) -> None:
        self.sweeper.start()

    async def serve(
        self, listen: ListenSpec, *, reuse_port: bool = False, sock: socket.socket | None = None
    ) -> asyncio.Server:
        """Listen (TLS when `listen.tls`); `bound_port(server)` tells port 0's pick."""
        loop = asyncio.get_running_loop()
        ctx = server_ssl_context(listen.tls) if listen.tls else None
        scheme = b"https" if ctx else b"http"

        def factory() -> asyncio.Protocol:
            return cast(asyncio.Protocol, ClientConnection(self, scheme))

        if sock is not None:
            server = await loop.create_server(factory, sock=sock, ssl=ctx, backlog=1024)
        else:
            server = await loop.create_server(
                factory,
                listen.host,
                listen.port,
                ssl=ctx,
                reuse_port=reuse_port or None,
                backlog=1024,
            )
        self.servers.append(server)
        return server

    def connection_closed(self, conn: ClientConnection) -> None:
        self.connections.discard(conn)
        if self._drained is not None and not self.connections:
            self._drained.set()

    def stop_soon(self) -> None:
        """Keep accepting and serving, but close each connection after its next answer,
        so that keep-alive clients reconnect (through their load balancer, elsewhere)."""
        self.stopping = True
        for conn in list(self.connections):
            conn.drain()

    async def shutdown(self, drain_timeout: float) -> None:
        """Stop accepting, let in-flight answers finish, answer 503 to (or abort) the
        rest at `drain_timeout`, close pools."""
        self.stopping = self.draining = True
        await asyncio.sleep(0)  # one more turn of the loop: accept what the kernel holds
        for server in self.servers:
            server.close()
        self._drained = asyncio.Event()
        now = perf_counter()
        for conn in list(self.connections):
            conn.shutdown(now)
        if self.connections:
            try:
                await asyncio.wait_for(self._drained.wait(), drain_timeout)
            except TimeoutError:
                for conn in list(self.connections):
                    conn.give_up(ShuttingDown(f"not answered within {drain_timeout:g}s"))
        await self.sweeper.stop()
        for server in self.servers:
            await server.wait_closed()
        for pool in self.pools.values():
            await pool.close()


def bound_port(server: asyncio.Server) -> int:
    """The port a listener got (useful after asking for port 0)."""
    # Read as an untyped attribute: uvloop's `sockets` is a list where typeshed says
    # tuple, and mypyc-compiled code checks declared types at run time.
    sockets: Sequence[socket.socket] = getattr(server, "sockets")  # noqa: B009
    port: int = sockets[0].getsockname()[1]
    return port


def server_ssl_context(tls: TLSSpec) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(tls.cert, tls.key)
    return ctx
