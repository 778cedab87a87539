"""How an exchange ends when its answer does not: a failure, a deadline, the client leaving.

A failure before the answer's head becomes a JSON answer naming what failed
(`{"error": "upstream_timeout", "backend": "iris-v2", "request_id": ...}`, the
status the error knows: 502, 503, 504; a client's own error gets its 4xx and
its detail); after the head, the client connection is aborted, so a truncated
body never looks complete. On a follow-up leg the model's failure is not the
request's: the human answers instead (router/dataplane/legs.py). A primary that
never answered still hands the shadows their copy: they may answer.

Every answer, error answers included, carries the request id's line and the
backend's (`x-router-backend`, precomputed per config).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from router.core.errors import (
    ClientError,
    ProxyError,
    UpstreamBusy,
    UpstreamError,
    UpstreamTimeout,
)
from router.dataplane.http1 import error_response
from router.dataplane.legs import model_failed
from router.dataplane.taps import offer_answered, record

if TYPE_CHECKING:
    from router.dataplane.proxy import Exchange


def overdue(ex: Exchange) -> None:
    """Past the deadline: a backend that has not answered gets a 504; a request still
    waiting for a connection (max_connections) gets a 503."""
    if ex.upstream is None and ex.pool is not None:
        spec = ex.pool.spec
        failed(ex, UpstreamBusy(f"all {spec.max_connections} connections busy"))
    else:
        failed(ex, UpstreamTimeout())


def failed(ex: Exchange, err: ProxyError) -> None:
    up, ex.upstream = ex.upstream, None
    if up is not None:
        up.abandon()
    if isinstance(err, UpstreamError):  # a failure path only: the happy one pays nothing
        failures, key = ex.plane.failures, (ex.route_name, ex.backend, err.reason)
        failures[key] = failures.get(key, 0) + 1
    follow = ex.follow
    if follow is not None and follow.first and not isinstance(err, ClientError):
        model_failed(ex, follow, err)  # the human may answer instead
        return
    if ex.shadow is not None and ex.sent and not ex.started:
        offer_answered(ex, 0)  # the primary never answered; the shadow still may
    if ex.started:
        ex.conn.abort()
        ex.finish(err.status, False)
        return
    client_side = isinstance(err, ClientError)
    conn = ex.conn
    keep = ex.req.keep_alive and ex.request_done and not client_side
    keep = keep and not (conn.closing and conn.last_answer())
    body = {"error": err.detail if client_side else err.code, "request_id": ex.rid}
    if ex.backend and not client_side:
        body["backend"] = ex.backend
    ids = (ex.rid_line or rid_line_of(ex)) + backend_line(ex)
    conn.write(error_response(err.status, body, keep_alive=keep, extra=ids))
    ex.finish(err.status, keep)


def client_left(ex: Exchange) -> None:
    ex.finished = True
    up, ex.upstream = ex.upstream, None
    if up is not None:
        up.abandon()
    timer = ex.timer
    if timer is not None:  # an event stream is complete when its [DONE] came (the
        ex.timer = None  # openai SDK closes at it, maybe before the last chunk)
        timer.finish(timer.ended)
        if timer.ended and ex.shadow is not None:
            offer_answered(ex, ex.status)
    if ex.t0:  # no backend error: the head's status once sent (as nginx logs it),
        record(ex, ex.status if ex.started else 499)  # else 499: client left first


def rid_line_of(ex: Exchange) -> bytes:
    return b"%b: %b\r\n" % (ex.plane.rid_name, ex.rid.encode())


def backend_line(ex: Exchange) -> bytes:
    backend = ex.backend
    if not (ex.plane.router_backend and backend):
        return b""
    line = ex.plane.backend_lines.get(backend)
    return b"x-router-backend: %b\r\n" % backend.encode() if line is None else line
