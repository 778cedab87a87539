"""What watches an exchange without changing its answer: the shadows' copy, the stream clock.

Mirrors. When the decision names mirrors and the data plane has a
`shadow_sink` (router/shadow/mirror.py), the exchange keeps a `ShadowTap`
(router/dataplane/shadow_copy.py): the request body up to the strategy's declared
`copies.max_body` (at most MIRROR_MAX_BODY; methods outside `copies.methods`
are not copied at all) and the primary's answer up to ANSWER_MAX_BODY. Once
the client's last byte was written it hands one `MirrorCopy` to the sink: the
comparison needs the primary's answer, and the client never waits for anything
that happens after. Without mirrors none of this runs: the cost is one
`is None` test per body piece.

Capture. A route with `capture:` gets a `CaptureTap` (router/dataplane/capture_copy.py)
when its exchange is sampled in: body pieces as they pass, up to the route's
cap, handed to the capture sink as one tuple when the exchange records. A
mirrored exchange that is captured marks its shadow copy, so the shadows'
answers are captured too (router/shadow/mirror.py tells the capture sink).

Streams. An answer without a length, on a data plane with a `stream_sink`
(router/dataplane/stream_timing.py), may be an event stream: it then gets a clock
(time to first token, gaps) and each next read must come within the backend's
timeout, so the sweeper aborts a silent stream; a client whose socket is full
stops that clock (a slow reader is not a silent backend).

The end. `record` tells every watcher once: the recorders (metrics and the
rest; a `Fanout` is flattened so it costs no extra call), the access log
(router/dataplane/accesslog.py; called only when it logs at all), drift's tap
(router/drift/streams.py, which the exchange also feeds each body piece),
capture's tap and the stream clock. `seconds` runs from activation to the last byte handed to
the client socket; `nbytes` counts response body bytes from the backend.
"""

from __future__ import annotations

from time import perf_counter
from typing import TYPE_CHECKING

from router.dataplane.http1 import Header
from router.dataplane.shadow_copy import MIRROR_MAX_BODY, STREAM_MAX_BODY, MirrorCopy, ShadowTap

if TYPE_CHECKING:
    from router.config.spec import CaptureSpec
    from router.dataplane.proxy import Exchange
    from strategies.base import Copies


def keep_mirror(ex: Exchange, mirrors: tuple[str, ...], copies: Copies) -> None:
    methods = copies.methods
    if methods is not None and ex.req.method not in methods:
        return  # the route mirrors other methods only
    cap = min(copies.max_body, MIRROR_MAX_BODY)
    # Body read before activation (`early`) reaches the tap when the exchange
    # replays it through on_request_body; adding it here too would double it.
    ex.shadow = ShadowTap(mirrors, cap)
    length = ex.req.content_length
    if length is not None and length > cap:
        mirror_too_big(ex)


def keep_capture(ex: Exchange, spec: CaptureSpec) -> None:
    """A captured exchange keeps its bodies for the capture sink; its shadows' answers
    are captured too (the mirror copy says so), paired under the same request id."""
    sink = ex.plane.capture_sink
    if sink is None:
        return
    tap = sink.tap(ex.route_name, spec.sample, spec.max_body, spec.mode, ex.req.method, ex.target)
    if tap is not None:
        ex.capture = tap
        if ex.shadow is not None:
            ex.shadow.captured = True


def mirror_too_big(ex: Exchange) -> None:
    """Tell the shadow sink at once (it counts the skip); keep nothing more."""
    shadow, ex.shadow = ex.shadow, None
    if shadow is not None:
        to_shadow_sink(ex, shadow.skipped(ex.route_name, ex.req.method, ex.target, ex.rid))


def offer_answered(ex: Exchange, status: int) -> None:
    """The primary is done (status 0: it never answered): hand over the pair."""
    shadow, ex.shadow = ex.shadow, None
    if shadow is None or not ex.request_done:
        return  # an answer before the whole request came in: no faithful copy
    req, latency = ex.req, perf_counter() - ex.t0
    copy = shadow.answered(
        ex.route_name, req.method, ex.target, req.headers, ex.rid, status, latency
    )
    to_shadow_sink(ex, copy)


def to_shadow_sink(ex: Exchange, copy: MirrorCopy) -> None:
    sink = ex.plane.shadow_sink
    if sink is None:
        return
    try:
        sink.offer(copy)
    except Exception:  # a broken sink must never fail the client's request
        ex.plane.mirror_errors += 1


def time_stream(ex: Exchange, headers: list[Header]) -> None:
    """An event stream gets a clock; its copy for shadows may be longer (SSE is verbose)."""
    sink = ex.plane.stream_sink
    timer = sink.timer(ex.route_name, ex.backend, headers, ex.t0) if sink else None
    if timer is not None:
        ex.timer = timer
        if ex.shadow is not None:
            ex.shadow.answer_cap = STREAM_MAX_BODY
        if ex.pool is not None:
            ex.deadline = perf_counter() + ex.pool.spec.timeout


def stream_read(ex: Exchange) -> None:
    """One read of an event stream: its time; and the stream must go on, each next
    read within the backend's timeout (the sweeper aborts a silent one)."""
    if ex.timer is not None and ex.pool is not None:
        ex.timer.read()
        ex.deadline = perf_counter() + ex.pool.spec.timeout


def record(ex: Exchange, status: int, now: float = 0.0) -> None:
    """The exchange is over: every recorder, the access log, drift and the stream clock hear
    of it once (`now`: when its last byte was handed to the client, if known)."""
    plane = ex.plane
    backend = ex.backend if ex.pool is not None else ""
    seconds = (now or perf_counter()) - ex.t0
    for call in plane.records:  # the metrics and the other recorders (a Fanout flattened)
        call(ex.route_name, backend, status, seconds, ex.reason, ex.rid, ex.nbytes)
    access = plane.access
    if access is not None:
        req = ex.req
        access.log(
            req.method,
            ex.target,
            ex.route_name,
            backend,
            status,
            seconds,
            ex.reason,
            ex.rid,
            ex.nbytes,
        )
    if ex.tap is not None:
        ex.tap.finish(ex.route_name, ex.backend, ex.rid, status)
        ex.tap = None
    if ex.capture is not None:
        ex.capture.finish(
            ex.route_name, backend, ex.reason, ex.rid, status, seconds, ex.req.headers
        )
        ex.capture = None
    if ex.timer is not None:
        ex.timer.finish(status == ex.status)  # an abort records its error status
        ex.timer = None
