"""An exchange's other trips: the follow-up's second leg, a rewritten request, a retry.

Most requests go out once, as they came. These are the exceptions, kept out of
router/dataplane/proxy.py's straight path; each is a function of the exchange,
called where the path branches (an `is None` test when the feature is off):

- *Follow-up* (router/dataplane/follow.py): the model's leg is held; at its end
  `follow_next` serves its answer, or sends a second leg to the human
  (`second_leg`). A model that fails (`model_failed`) while the body is still
  arriving: the body keeps being read and `after` is asked at its end.
- *Rewrite* (router/core/rewrite.py): an arm that needs its own request holds
  the body until its end, then sends the rewritten one with its own length.
- *Retry*: an idempotent request that went out on a reused keep-alive
  connection which died before any response byte is sent once more on a fresh
  connection (the backend may have closed it while we were writing); its bytes
  are kept up to RETRY_MAX_BODY.
"""

from __future__ import annotations

from time import perf_counter
from typing import TYPE_CHECKING, Final

from router.core.errors import BadRequest, ProxyError, UpstreamConnectError
from router.dataplane.follow import FollowLeg, begin
from router.dataplane.http1 import length_line
from router.dataplane.server import PAUSE_UPSTREAM
from router.dataplane.shadow_copy import MIRROR_MAX_BODY, ShadowTap

if TYPE_CHECKING:
    from router.core.rollout import Rollout
    from router.dataplane.proxy import Exchange
    from router.dataplane.upstream import UpstreamPool
    from strategies.base import Decision

RETRY_MAX_BODY: Final = 64 * 1024  # requests kept for a retry, at most
HELD_ROLES: Final = frozenset({"assist", "deferred"})  # the human answers; the model did too


# follow-up decisions


def begin_follow(ex: Exchange, d: Decision, strategy: object, live: Rollout | None) -> Decision:
    leg = begin(strategy, ex.req, d, live, ex.route_name)
    if isinstance(leg, FollowLeg):
        ex.follow = leg
        return d
    return leg


def follow_next(ex: Exchange, status: int) -> None:
    """The model's leg is over: serve its answer, or ask the human."""
    leg = ex.follow
    if leg is None:
        return
    d = leg.decide(status, ex.plane.runtime.live.get(ex.route_name))
    if d is None or d.primary in ("", ex.backend):
        ex.reason = d.reason if d is not None else ex.reason
        if not leg.replayable:
            ex.fail(UpstreamConnectError("the model gave no answer to serve", "no_answer"))
            return
        ex.on_response_head(leg.status, leg.reason, leg.headers, leg.length)
        body = leg.answer_body()
        if body:
            ex.on_response_body(body)
        ex.on_response_end()
        return
    second_leg(ex, d, leg)


def model_failed(ex: Exchange, leg: FollowLeg, err: ProxyError) -> None:
    """The model's leg failed before an answer: `after` decides who answers instead,
    now, or at the request's end when it is still coming in (a client that sends
    its body after its head): the body keeps being read meanwhile."""
    leg.lose(err)
    if ex.request_done:
        follow_next(ex, 0)
        return
    leg.lost = True
    ex.out.clear()
    ex.out_len = 0
    ex.deadline = 0.0
    if ex.conn.paused & PAUSE_UPSTREAM:
        ex.conn.resume_input(PAUSE_UPSTREAM)


def second_leg(ex: Exchange, d: Decision, leg: FollowLeg) -> None:
    model = ex.backend
    pool = ex.pool = ex.plane.pools.get(d.primary)
    ex.backend, ex.reason = d.primary, d.reason
    if pool is None:
        ex.fail(UpstreamConnectError(f"backend {d.primary!r} is not configured", "not_configured"))
        return
    body, extra, framing = leg.second(d, ex.req.content_length is not None)
    if ex.plane.shadow_sink is not None and d.reason in HELD_ROLES and leg.replayable:
        # both answers of one request: the model's is judged against the human's
        held = (leg.status, leg.answer_body(), perf_counter() - ex.t0)
        ex.shadow = ShadowTap((model,), MIRROR_MAX_BODY, held, d.reason)
        ex.shadow.add_body(b"".join(leg.req))
        ex.shadow.captured = ex.capture is not None
    ex.out = [ex.head_to(pool, framing, extra, leg.own_headers()), body]
    ex.out_len = len(body)
    ex.sent = ex.retried = False
    ex.retry = None
    ex.status = ex.nbytes = 0
    up = pool.acquire()
    if up is None:
        ex.connect(pool)
    else:
        ex.attach(up)


# rewritten requests


def hold_for_rewrite(ex: Exchange, pool: UpstreamPool) -> None:
    """The arm's own request: its head now when there is no body, else once the
    body is all here (router/core/rewrite.py); the body is held until then."""
    rw, req = ex.rewrite, ex.req
    if rw is None:
        return
    if not (req.chunked or req.content_length):
        framing = b"" if req.content_length is None else length_line(0)
        ex.out.append(ex.head_to(pool, framing, rw.lines, rw.names))
        return
    ex.held = []
    for piece in ex.early or ():
        ex.early = None
        ex.on_request_body(piece)
    if ex.request_done:
        send_rewritten(ex)


def send_rewritten(ex: Exchange) -> None:
    held, ex.held = ex.held, None
    rw, pool = ex.rewrite, ex.pool
    if held is None or rw is None or pool is None:
        return
    body = rw.body(b"".join(held))
    if body is None:
        ex.fail(BadRequest(f"{ex.backend} needs a JSON object to rewrite: not one"))
        return
    ex.out.append(ex.head_to(pool, length_line(len(body)), rw.lines, rw.names))
    ex.out.append(body)
    ex.out_len += len(body)
    if ex.upstream is not None and not ex.conn.feeding:
        ex.flush_request()


# retries


def keep_for_retry(ex: Exchange, retry: list[bytes], data: bytes) -> None:
    ex.retry_len += len(data)
    if ex.retry_len > RETRY_MAX_BODY:
        ex.retry = None  # too big to keep: this request won't be retried
    else:
        retry.append(data)


def retry(ex: Exchange) -> bool:
    """Resend on a fresh connection, if this request may be retried."""
    if ex.retried or ex.retry is None or ex.started or ex.pool is None:
        return False
    ex.retried = True
    ex.out[:0] = ex.retry
    ex.out_len += ex.retry_len
    ex.retry, ex.retry_len = [], 0
    ex.sent = False
    ex.deadline = 0.0
    ex.connect(ex.pool)
    return True
