"""The I/O side of the automation ladder on the request path: the follow-up leg.

Theory of operation.

*Follow-up* (strategies/automation.py, `Decision.follow_up`). The exchange
(router/dataplane/proxy.py) gives the model's leg a `FollowLeg`: it keeps a copy of the
request body (the human may need it) and holds the model's answer instead of
streaming it. At the answer's end (or when the model could not be reached:
status 0) `decide` decodes the answer and asks the strategy's pure `after`
hook, with the live rollout read again, what to serve: the held answer, which
the exchange then replays as if it had just arrived, or a second leg to the
human, whose request `second` builds (the suggestion as a header, or as a
member of the JSON body). Bounds: a request body above FOLLOW_MAX_BODY cannot
be sent twice, so when its length is announced the request is decided without
the model (`begin` asks `after` with no answer: the human, "deferred"); one
that grows past it while streaming keeps the model's answer ("unbuffered").
An answer above FOLLOW_MAX_BODY is not decoded (no confidence: deferred); a gzip or
deflate answer is inflated first, up to the same bound.

*Fallbacks.* A model that fails (FAILURES of strategies/automation.py) sends
the request to the human; the proxy tells the leg the transport's word
(`lose`), the strategy reads the rest in the answer, and the leg counts each
fallback by route and word in FALLBACKS, which the controller
(router/control/automation.py) adds to the store once a second, so the counts of
every replica add up. At `full` with `fallback` on the leg *streams*: it keeps
only the request copy, and the model's answer goes to the client as it comes
unless its head says 5xx (a streamed answer cannot be taken back); a failure
before that head still goes to the human.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Final, Protocol

from router.core.errors import ProxyError, UpstreamBusy, UpstreamConnectError, UpstreamTimeout
from router.core.protocols.base import inflate
from router.core.rollout import Rollout
from router.dataplane.request import Request
from strategies.automation import Automation, FollowUp
from strategies.base import Decision

FOLLOW_MAX_BODY: Final = 1024 * 1024


class After(Protocol):
    def after(
        self, answer: object, status: int, live: Rollout | None, failure: str = ""
    ) -> Decision | None: ...


class FallbackCounts:
    """Fallbacks to the human per route and failure word, in this process."""

    def __init__(self) -> None:
        self.total: dict[tuple[str, str], int] = {}  # since start (Prometheus)
        self.pending: dict[str, dict[str, int]] = {}  # not yet added to the store

    def add(self, route: str, word: str) -> None:
        key = (route, word)
        self.total[key] = self.total.get(key, 0) + 1
        per = self.pending.setdefault(route, {})
        per[word] = per.get(word, 0) + 1

    def drain(self) -> dict[str, dict[str, int]]:
        pending, self.pending = self.pending, {}
        return pending

    def restore(self, drained: Mapping[str, Mapping[str, int]]) -> None:
        """Put back what a failed store write took."""
        for route, words in drained.items():
            per = self.pending.setdefault(route, {})
            for word, n in words.items():
                per[word] = per.get(word, 0) + n


FALLBACKS: Final = FallbackCounts()  # one per process, like the metrics


def failure_word(err: ProxyError) -> str:
    """The transport's word for a model that gave no answer (strategies FAILURES)."""
    if isinstance(err, UpstreamConnectError):
        return "refused"
    if isinstance(err, UpstreamTimeout):
        return "timeout"
    if isinstance(err, UpstreamBusy):
        return "busy"
    return "reset"  # reset, EOF or garbage before a complete head


class FollowLeg:
    """The model's leg of a follow-up decision: the held request and answer."""

    __slots__ = (
        "ans",
        "ans_len",
        "failure",
        "first",
        "headers",
        "length",
        "lost",
        "own",
        "reason",
        "req",
        "req_len",
        "route",
        "started",
        "status",
        "strategy",
        "streams",
    )

    def __init__(
        self,
        strategy: After,
        own: frozenset[bytes] = frozenset(),
        route: str = "",
        streams: bool = False,
    ) -> None:
        self.strategy = strategy
        self.own = own  # header names only the router may send to the human
        self.route = route
        self.streams = streams  # full: the answer streams unless its head says 5xx
        self.first = True  # still on the model's leg
        self.lost = False  # the model failed before the whole request came in
        self.failure = ""  # the transport's word when the model gave no answer
        self.started = 0.0  # when the model's leg began (perf_counter), for comparison
        self.req: list[bytes] = []
        self.req_len = 0
        self.ans: list[bytes] = []
        self.ans_len = 0
        self.status = 0
        self.reason = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.length: int | None = None

    def add_request(self, data: bytes) -> None:
        self.req_len += len(data)
        if self.req_len <= FOLLOW_MAX_BODY:
            self.req.append(data)

    def on_head(
        self, status: int, reason: bytes, headers: list[tuple[bytes, bytes]], length: int | None
    ) -> bool:
        """Hold the model's head; False when the answer streams to the client instead."""
        if self.streams and status < 500:
            self.first = False
            return False
        self.status, self.reason, self.headers, self.length = status, reason, headers, length
        return True

    def add_answer(self, data: bytes) -> None:
        self.ans_len += len(data)
        if self.ans_len <= FOLLOW_MAX_BODY:
            self.ans.append(data)

    def lose(self, err: ProxyError) -> None:
        """The model's leg failed before an answer: remember why."""
        self.failure = failure_word(err)

    @property
    def replayable(self) -> bool:
        return self.status != 0 and self.ans_len <= FOLLOW_MAX_BODY

    def answer_body(self) -> bytes:
        return b"".join(self.ans)

    def decide(self, status: int, live: Rollout | None) -> Decision | None:
        """What to serve now that the model's leg is over (status 0: no answer)."""
        self.first = False
        if self.req_len > FOLLOW_MAX_BODY:
            return Decision("", "unbuffered")  # the request cannot be sent again
        answer: object = None
        failure = (self.failure or "no_answer") if not status else ""
        if status and self.ans_len > FOLLOW_MAX_BODY:
            failure = "too_large"
        elif status:
            try:
                # a gzipped answer (for a client that accepts gzip) is read too
                answer = json.loads(inflate(self.answer_body(), FOLLOW_MAX_BODY))
            except ValueError:  # not JSON: no confidence, no suggestion
                answer = None
        d = self.strategy.after(answer, status, live, failure)
        if d is not None and self.route and d.reason.startswith(("fallback:", "unassisted:")):
            FALLBACKS.add(self.route, d.reason.partition(":")[2])
        return d

    def own_headers(self) -> frozenset[bytes]:
        """The suggestion header: toward the human only the router may set it, so a
        client cannot pass off its own text as the model's suggestion."""
        return self.own

    def second(self, d: Decision, had_length: bool) -> tuple[bytes, bytes, bytes]:
        """(body, extra header lines, framing) of the request to `d.primary`."""
        body = b"".join(self.req)
        extra = b""
        if isinstance(d, FollowUp):
            body = d.request_body(body)
            extra = b"".join(b"%b: %b\r\n" % h for h in d.extra_headers())
        framing = b"content-length: %d\r\n" % len(body) if body or had_length else b""
        return body, extra, framing


def begin(
    strategy: object, req: Request, d: Decision, live: Rollout | None, route: str = ""
) -> FollowLeg | Decision:
    """A leg for the model, or the decision to use instead when there can be none."""
    if not isinstance(strategy, Automation):
        return Decision(d.primary, d.reason, d.mirrors)  # nobody to ask after: plain forward
    length = req.content_length
    if length is not None and length > FOLLOW_MAX_BODY:
        return strategy.without_model(live)
    name = strategy.spec.suggestion_header
    own = frozenset({name.encode()}) if name else frozenset()
    return FollowLeg(strategy, own, route, streams=strategy.level(live) == "full")
