"""The first thing an exchange does: which route, which backend, and what watches it.

Once per request, when the exchange is first in line: the request id (the
client's when it is sane, else a new one), the route (the data plane's memo of
(host, path) answers, hit inline: matching never reads the query, so it is kept
out of the memo), the strategy's `Decision` on the sticky key and the live
rollouts, and what the decision turns on: the follow-up leg, the shadows'
copy, capture's tap, a rewrite, drift's tap, the copy kept for a retry. Returns the primary's
pool, or None when the exchange already failed (refused head, no route, a
backend the config does not define).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from router.core.errors import NoRoute, UpstreamConnectError
from router.dataplane.http1 import IDEMPOTENT, new_request_id, sane_request_id
from router.dataplane.legs import begin_follow
from router.dataplane.taps import keep_capture, keep_mirror

if TYPE_CHECKING:
    from router.dataplane.proxy import Exchange
    from router.dataplane.upstream import UpstreamPool


def decide(ex: Exchange) -> UpstreamPool | None:
    """Route and decide `ex`; its primary's pool, or None when it failed instead."""
    req, plane = ex.req, ex.plane
    given = req.request_id
    ex.rid = (given is not None and sane_request_id(given)) or new_request_id()
    ex.rid_line = b"%b: %b\r\n" % (plane.rid_name, ex.rid.encode())  # endings.rid_line_of, inlined
    runtime = plane.runtime
    # plane.match()'s hit, inlined: once per request (a remembered None goes the long way)
    table, path = runtime.table, ex.target
    if (q := path.find(b"?")) >= 0:  # matching never reads the query: keep it out of the memo
        path = path[:q]
    route = plane.routes.get((req.host, path)) if plane.routes_of is table else None
    if route is None:
        route = plane.match(table, req.host, path)
    if route is None or req.error is not None:
        if route is not None and req.version:  # not a refused head (server.reject)
            ex.route_name = route.name
        ex.fail(req.error or NoRoute())
        return None
    ex.route_name = route.name
    d = route.decide(req.headers, ex.conn.client_ip, runtime.live)
    if d.follow_up:
        d = begin_follow(ex, d, route.strategy, runtime.live.get(route.name))
    ex.backend, ex.reason = d.primary, d.reason
    pool = ex.pool = plane.pools.get(d.primary)
    if pool is None:
        ex.fail(UpstreamConnectError(f"backend {d.primary!r} is not configured", "not_configured"))
        return None
    if d.mirrors and plane.shadow_sink is not None:
        keep_mirror(ex, d.mirrors, route.strategy.copies)
    if route.spec.capture is not None and plane.capture_sink is not None:
        keep_capture(ex, route.spec.capture)  # after the mirror: its copies are paired
    if d.rewrite is not None:
        ex.rewrite = d.rewrite
    if route.spec.drift is not None and plane.drift_sink is not None:
        ex.tap = plane.drift_sink.tap(req.method, ex.target)  # None: pass is behind
    if req.method in IDEMPOTENT:
        ex.retry, ex.retry_len = [], 0
    return pool
