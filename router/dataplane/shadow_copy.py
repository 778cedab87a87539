"""What a mirrored request keeps for its shadows, and what it hands over.

An exchange whose decision names mirrors (and whose data plane has a
`ShadowSink`, router/shadow/mirror.py) makes one `ShadowTap`. The tap keeps the
request body, up to the route's cap, and the primary's answer, up to
ANSWER_MAX_BODY (STREAM_MAX_BODY for an event stream). When the primary is
done the exchange asks the tap for one `MirrorCopy`, the pair the shadows are
sent and judged with, and drops it.
A body over the cap is never copied: the sink is told at once (`skipped`, it
counts the skip) and the tap is dropped. An answer over ANSWER_MAX_BODY is
freed as soon as it is known to be too big; the copy then carries None in its
place (the comparison is skipped and counted).

Nothing here runs for a request without mirrors: the exchange holds None.

Held answers. On an automation route at assist or partial the model answered
first and the human answers the client: both answers of one request are in
hand. The exchange then keeps a tap whose `held` is the model's answer; its
copy is judged like a mirrored one (the model against the human) but never
sent, and `role` ("assist", "deferred") says which answer it was, for the
delayed labels (router/drift/labels.py).
"""

from __future__ import annotations

from typing import Final, Protocol

MIRROR_MAX_BODY: Final = 1024 * 1024  # bodies kept for a mirror copy, at most
ANSWER_MAX_BODY: Final = 256 * 1024  # primary answers kept for a shadow comparison, at most
# An event stream carries ~200 bytes of framing per token: 4 MiB is ~20,000 tokens.
STREAM_MAX_BODY: Final = 4 * 1024 * 1024


class MirrorCopy:
    """One mirrored request and the primary's answer, handed to a `ShadowSink`.

    `body` is None when the request body was larger than the route allows
    (nothing is sent; counted); `primary_body` is None when the primary's answer
    was larger than ANSWER_MAX_BODY (the comparison is skipped; counted).
    `primary_status` 0 means the primary never answered (connect error, timeout).
    """

    __slots__ = (
        "backends",
        "body",
        "captured",
        "headers",
        "held",
        "method",
        "primary_body",
        "primary_latency",
        "primary_status",
        "request_id",
        "role",
        "route",
        "target",
    )

    def __init__(
        self,
        route: str,
        backends: tuple[str, ...],
        method: bytes,
        target: bytes,
        headers: list[tuple[bytes, bytes]],
        body: bytes | None,
        request_id: str,
        primary_status: int = 0,
        primary_body: bytes | None = None,
        primary_latency: float = 0.0,
        held: tuple[int, bytes, float] | None = None,
        role: str = "mirror",
    ) -> None:
        self.route = route
        self.backends = backends
        self.method = method
        self.target = target
        self.headers = headers
        self.body = body
        self.request_id = request_id
        self.primary_status = primary_status
        self.primary_body = primary_body
        self.primary_latency = primary_latency
        self.held = held  # (status, body, latency): the mirror's answer, already in hand
        self.role = role  # "mirror": sent to the backends; else why the answer was held
        self.captured = False  # the exchange was captured: so are the shadows' answers


class ShadowSink(Protocol):
    """Takes mirrored requests with the primary's answer; must not block, await or raise."""

    def offer(self, copy: MirrorCopy) -> None: ...


class ShadowTap:
    """The request body and the primary's answer of one mirrored request."""

    __slots__ = (
        "answer",
        "answer_cap",
        "answer_len",
        "backends",
        "body",
        "body_cap",
        "body_len",
        "captured",
        "held",
        "role",
    )

    def __init__(
        self,
        backends: tuple[str, ...],
        cap: int,
        held: tuple[int, bytes, float] | None = None,
        role: str = "mirror",
    ) -> None:
        self.backends = backends
        self.held = held
        self.role = role
        self.body_cap = cap
        self.answer_cap = ANSWER_MAX_BODY  # the exchange raises it for an event stream
        self.body: list[bytes] = []
        self.body_len = 0
        self.answer: list[bytes] = []
        self.answer_len = 0
        self.captured = False  # set when the exchange is captured (router/dataplane/taps.py)

    def add_body(self, data: bytes) -> bool:
        """Keep a piece of the request; False when the body went over the cap."""
        self.body_len += len(data)
        if self.body_len > self.body_cap:
            self.body.clear()
            return False
        self.body.append(data)
        return True

    def add_answer(self, data: bytes) -> None:
        self.answer_len += len(data)
        if self.answer_len <= self.answer_cap:
            self.answer.append(data)
        elif self.answer:
            self.answer.clear()  # too big to compare: free it now, report it at the end

    def skipped(self, route: str, method: bytes, target: bytes, request_id: str) -> MirrorCopy:
        """The copy that tells the sink this request was too big to mirror."""
        return MirrorCopy(route, self.backends, method, target, [], None, request_id)

    def answered(
        self,
        route: str,
        method: bytes,
        target: bytes,
        headers: list[tuple[bytes, bytes]],
        request_id: str,
        status: int,
        latency: float,
    ) -> MirrorCopy:
        """The pair for the shadows (`status` 0: the primary never answered)."""
        answer = b"".join(self.answer) if self.answer_len <= self.answer_cap else None
        body = b"".join(self.body)
        copy = MirrorCopy(
            route,
            self.backends,
            method,
            target,
            headers,
            body,
            request_id,
            status,
            answer,
            latency,
            self.held,
            self.role,
        )
        copy.captured = self.captured
        return copy
