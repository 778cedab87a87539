"""The I/O side of the automation ladder: the follow-up leg and the level verb.

Theory of operation.

*Follow-up* (strategies/automation.py, `Decision.follow_up`). The exchange
(router/proxy.py) gives the model's leg a `FollowLeg`: it keeps a copy of the
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
An answer above FOLLOW_MAX_BODY is not decoded (no confidence: deferred).

*Levels* (`routerctl automation ROUTE LEVEL`). `AutomationController` is the
controller's KindController for routes of kind `automation`: the verb writes
`Rollout.level` by compare-and-set through the controller's `Writer` (history
gets from/to and the actor); the leader's tick publishes, for the level in
force, the figures that justify the next step up: the share of requests the
model answered and the deferral rate over the last `FIGURES_WINDOW` seconds
(every replica's metrics), the accuracy per backend from delayed labels
(router/feedback.py), and the shadow agreement when a comparison exists.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import asdict
from typing import Any, Protocol

from router.controller import CAS_ATTEMPTS, Reply, Writer
from router.metrics import read_window
from router.routing import CompiledRoute
from router.server import Request
from router.state.base import StateStore
from router.state.model import Rollout
from strategies.automation import LEVELS, Automation, FollowUp
from strategies.base import Decision

FOLLOW_MAX_BODY = 1024 * 1024
FIGURES_WINDOW = 300.0  # seconds of traffic behind the ladder's figures
EXPLAIN_INTERVAL = 2.0

Figures = Callable[[str], Awaitable[dict[str, Any] | None]]


class After(Protocol):
    def after(self, answer: object, status: int, live: Rollout | None) -> Decision | None: ...


class FollowLeg:
    """The model's leg of a follow-up decision: the held request and answer."""

    __slots__ = (
        "ans",
        "ans_len",
        "first",
        "headers",
        "length",
        "lost",
        "own",
        "reason",
        "req",
        "req_len",
        "status",
        "strategy",
    )

    def __init__(self, strategy: After, own: frozenset[bytes] = frozenset()) -> None:
        self.strategy = strategy
        self.own = own  # header names only the router may send to the human
        self.first = True  # still on the model's leg
        self.lost = False  # the model failed before the whole request came in
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
    ) -> None:
        self.status, self.reason, self.headers, self.length = status, reason, headers, length

    def add_answer(self, data: bytes) -> None:
        self.ans_len += len(data)
        if self.ans_len <= FOLLOW_MAX_BODY:
            self.ans.append(data)

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
        if status and self.ans_len <= FOLLOW_MAX_BODY:
            try:
                answer = json.loads(self.answer_body())
            except ValueError:  # not JSON: no confidence, no suggestion
                answer = None
        return self.strategy.after(answer, status, live)

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
    strategy: object, req: Request, d: Decision, live: Rollout | None
) -> FollowLeg | Decision:
    """A leg for the model, or the decision to use instead when there can be none."""
    if not isinstance(strategy, Automation):
        return Decision(d.primary, d.reason, d.mirrors)  # nobody to ask after: plain forward
    length = req.content_length
    if length is not None and length > FOLLOW_MAX_BODY:
        return strategy.after(None, 0, live) or Decision(d.primary, "unbuffered")
    name = strategy.spec.suggestion_header
    return FollowLeg(strategy, frozenset({name.encode()}) if name else frozenset())


# -- the level verb and the ladder's figures ------------------------------------------


class AutomationController:
    """KindController for `automation` routes (router/controller.py)."""

    kind = "automation"
    verbs = frozenset({"automation"})

    def __init__(
        self,
        store: StateStore,
        writer: Writer,
        accuracy: Figures | None = None,
        agreement: Figures | None = None,
    ) -> None:
        self.store = store
        self.writer = writer
        self.accuracy = accuracy
        self.agreement = agreement
        self._explained: dict[str, float] = {}

    async def tick(self, route: CompiledRoute, now: float) -> None:
        if now - self._explained.get(route.name, 0.0) < EXPLAIN_INTERVAL:
            return
        self._explained[route.name] = now
        await self.writer.explain(route.name, await self.figures(route, now))

    async def watch(self, route: CompiledRoute, now: float) -> None:
        return None  # nothing urgent: a level only moves when someone says so

    async def figures(self, route: CompiledRoute, now: float) -> dict[str, Any]:
        strategy = _automation(route)
        live = await self.writer.live.read(route.name)
        spec = strategy.spec
        start = now - FIGURES_WINDOW
        model = await read_window(self.store, route.name, spec.model, start, now + 1)
        human = await read_window(self.store, route.name, spec.human, start, now + 1)
        level = strategy.level(live)
        out: dict[str, Any] = {"at": now, "kind": "automation", "level": level}
        out["next_level"] = _next(level)
        out["model_requests"], out["human_requests"] = model.requests, human.requests
        out["deferral_rate"] = _deferral(level, model.requests, human.requests)
        out["model_error_rate"] = model.error_rate()
        if self.accuracy is not None:
            out["accuracy"] = await self.accuracy(route.name)
        if self.agreement is not None:
            out["agreement"] = await self.agreement(route.name)
        return out

    async def command(
        self, route: CompiledRoute, verb: str, body: Mapping[str, Any], now: float
    ) -> Reply:
        level = body.get("level")
        if level not in LEVELS:
            return 400, {"error": f"level must be one of {', '.join(LEVELS)}", "got": level}
        strategy = _automation(route)
        actor = str(body.get("actor") or "routerctl")
        for _ in range(CAS_ATTEMPTS):
            current = await self.writer.live.read(route.name)
            old = strategy.level(current)
            base = current or Rollout(route.name, kind="automation", phase="running")
            new = base.evolve(level=level, updated_at=now, updated_by=actor)
            new = new.evolve(reason=f"level {level} (was {old})")
            event = {"event": "automation_level", "from": old, "to": level}
            stored = await self.writer.write(new, base.version, [event], actor)
            if stored is not None:
                return 200, {"message": stored.reason, "rollout": asdict(stored)}
        return 409, {"error": "the rollout kept changing under this command; try again"}


def _automation(route: CompiledRoute) -> Automation:
    if not isinstance(route.strategy, Automation):
        raise TypeError(f"route {route.name} is not an automation route")
    return route.strategy


def _next(level: str) -> str | None:
    i = LEVELS.index(level)
    return LEVELS[i + 1] if i + 1 < len(LEVELS) else None


def _deferral(level: str, model: int, human: int) -> float | None:
    """Under partial the model asks first; every answer from the human was deferred."""
    if level != "partial" or model + human == 0:
        return None
    return human / (model + human)
