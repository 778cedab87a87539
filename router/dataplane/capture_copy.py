"""What a captured exchange keeps on the request path, and hands over at its end.

For a route with `capture:` (and a data plane with a `CaptureSink`, router/capture/)
the exchange asks the sink for a `CaptureTap` when it is decided. The tap
keeps the request's and the answer's body pieces as they pass (each up to the
route's `max_body`: the rest is counted, not kept), the response's headers
and nothing else; when the exchange records, it appends ONE tuple to the
sink's `pending` list and is dropped. Nothing is joined, decoded, parsed,
redacted or written here: the sink's background pass does all of that. A
route without capture pays one `is None` test per body piece.

Bounded: `tap()` refuses (and counts) once `max_pending` exchanges or
`max_bytes` of bodies wait for the pass, so a stalled pass costs a request one
length test and never memory; a sampled-out request costs one `random()`.
"""

from __future__ import annotations

from random import random
from time import time
from typing import Final

from router.dataplane.http1 import Header

MAX_PENDING: Final = 8192  # exchanges waiting for the background pass, at most
MAX_PENDING_BYTES: Final = 64 * 1024 * 1024  # their bodies, at most

# route, backend, reason, request id, status, seconds, wall time, method, target,
# request headers, request pieces, request length, answer headers, answer pieces,
# answer length, whether the shadows' copies are captured too
Captured = tuple[
    str, str, str, str, int, float, float, bytes, bytes, list[Header], list[bytes], int,
    list[Header], list[bytes], int,
]  # fmt: skip


class CaptureTap:
    """One exchange's bodies, as they pass, up to the route's cap."""

    __slots__ = ("ans", "ans_len", "cap", "head", "method", "req", "req_len", "sink", "target",
                 "want_answer", "want_request")  # fmt: skip

    def __init__(
        self, sink: CaptureSink, cap: int, method: bytes, target: bytes, mode: str
    ) -> None:
        self.sink = sink
        self.cap = cap
        self.method = method
        self.target = target
        self.want_request = mode != "response"
        self.want_answer = mode != "request"
        self.req: list[bytes] = []
        self.ans: list[bytes] = []
        self.req_len = self.ans_len = 0
        self.head: list[Header] = []

    def add_request(self, data: bytes) -> None:
        n = self.req_len
        self.req_len = n + len(data)
        if self.want_request and n < self.cap:
            self.req.append(data)  # cut to the cap off the path

    def add_answer(self, data: bytes) -> None:
        n = self.ans_len
        self.ans_len = n + len(data)
        if self.want_answer and n < self.cap:
            self.ans.append(data)

    def finish(
        self,
        route: str,
        backend: str,
        reason: str,
        rid: str,
        status: int,
        seconds: float,
        headers: list[Header],
    ) -> None:
        sink = self.sink
        cap = self.cap
        sink.pending_bytes += min(self.req_len, cap) + min(self.ans_len, cap)
        sink.pending.append((
            route, backend, reason, rid, status, seconds, time(), self.method, self.target,
            headers, self.req, self.req_len, self.head, self.ans, self.ans_len,
        ))  # fmt: skip


class CaptureSink:
    """The data plane's side of capture: hands out taps while the pass keeps up."""

    def __init__(self, max_pending: int = MAX_PENDING, max_bytes: int = MAX_PENDING_BYTES) -> None:
        self.pending: list[Captured] = []
        self.pending_bytes = 0
        self.max_pending = max_pending
        self.max_bytes = max_bytes
        self.dropped: dict[str, int] = {}  # route -> exchanges refused (queue full)

    def tap(
        self, route: str, sample: float, cap: int, mode: str, method: bytes, target: bytes
    ) -> CaptureTap | None:
        if sample < 1.0 and random() >= sample:
            return None
        if len(self.pending) >= self.max_pending or self.pending_bytes >= self.max_bytes:
            self.dropped[route] = self.dropped.get(route, 0) + 1
            return None
        return CaptureTap(self, cap, method, target, mode)

    def take(self) -> list[Captured]:
        items, self.pending = self.pending, []
        self.pending_bytes = 0
        return items
