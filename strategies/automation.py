"""`automation`: the ladder from a human doing the work to the model doing it.

    automation:
      model: iris-v2
      human: review-desk            # the service where people review
      level: partial                # human | shadow | assist | partial | full
      confidence: $.confidence      # JSON path in the model's answer (partial)
      threshold: 0.8                # confident when confidence >= threshold
      suggestion: {header: X-Model-Suggestion}   # or {field: model_suggestion}

Theory of operation. Each level is one prebuilt first decision:

    human    the human answers; the model is not involved
    shadow   the human answers; the model gets a mirror copy (compare, drift)
    assist   ask the model first, then the human, carrying the model's answer
    partial  ask the model first; if it is not confident, ask the human
    full     the model answers

"First ask the model, then maybe someone else" is a Decision with
`follow_up=True`. The proxy then buffers the model's answer instead of
streaming it, decodes it as JSON (None when it is not JSON) and calls the pure
hook `after(answer, status, live)` (status 0 when the model could not be
reached). What `after` returns tells the proxy what to do:

    None                          serve the model's answer as it is
    Decision(<model>, reason)     serve the model's answer; `reason` is for the log
                                  ("confident"; "full" if the level moved meanwhile)
    Decision(<human>, reason)     send the original request to the human, serve that
    FollowUp(<human>, ...)        the same, carrying the model's answer: as a
                                  header (`extra_headers()`) or as a member of the
                                  JSON request body (`request_body(body)`)

Partial: an answer is "confident" only when the status is 2xx and the value
at the confidence path is a number in 0..1 at or above the threshold; below it
the request is "deferred" to the human (when in doubt, a person decides). The
deferred answer also carries the model's suggestion when `suggestion` is
written in the block.

A model that fails is never the client's problem: at assist and partial the
human answers, and at full too when `fallback` is on (the default). The
decision's reason names the failure, `fallback:WHY` (`unassisted:WHY` at
assist), and WHY is one of FAILURES: the transport's word given by the proxy
(refused, reset, timeout, busy), or what `after` reads in the answer (5xx,
4xx, not_json, no_confidence, confidence_out_of_range). At full the model's
answer streams to the client as it comes, so only what happens before its
response head can still go to the human: a failure to answer, or a 5xx head.

The level in force comes from the route's live rollout (`routerctl automation
ROUTE LEVEL` writes `Rollout.level`), else from config.yaml. `after` reads the
level again, so a request in flight while the level moves follows the new one.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from router.core.compare_config import parse_compare
from router.core.compare_kinds import FieldSpec
from router.core.jsonpath import JsonPath, compile_path
from router.core.ladder import DEFAULT_LADDER, LadderSpec, parse_ladder
from strategies.base import EVERY_COPY, Decision, StrategyKind, StrategySpec, check_backend
from strategies.shadow import ShadowSpec

if TYPE_CHECKING:
    from router.core.confkit import Node
    from router.core.rollout import Rollout

LEVELS: Final = ("human", "shadow", "assist", "partial", "full")
DEFAULT_HEADER: Final = "x-model-suggestion"
# Why a model's answer could not be used (see the module docstring).
FAILURES: Final = (
    "refused",
    "reset",
    "timeout",
    "busy",
    "no_answer",
    "5xx",
    "4xx",
    "not_json",
    "too_large",
    "no_confidence",
    "confidence_out_of_range",
)


@dataclass(frozen=True, slots=True)
class FollowUp(Decision):
    """The second leg: the original request to `primary`, with the model's answer."""

    suggestion: str = ""  # the model's answer as compact ASCII JSON
    header: str | None = None  # lower-case header carrying `suggestion`
    body_field: str | None = None  # or: top-level member added to a JSON object body

    def extra_headers(self) -> tuple[tuple[bytes, bytes], ...]:
        if self.header is None:
            return ()
        return ((self.header.encode(), self.suggestion.encode()),)

    def request_body(self, body: bytes) -> bytes:
        """The body for the human: with the suggestion member when it is a JSON object."""
        if self.body_field is None:
            return body
        try:
            doc = json.loads(body)
        except ValueError:  # not JSON (UnicodeDecodeError is a ValueError too)
            return body
        if not isinstance(doc, dict):
            return body
        doc[self.body_field] = json.loads(self.suggestion)
        return json.dumps(doc, separators=(",", ":")).encode()


@dataclass(frozen=True, slots=True)
class AutomationSpec:
    model: str
    human: str
    level: str = "human"
    confidence: str | None = None  # JSON path text
    threshold: float = 0.8
    suggestion_header: str | None = DEFAULT_HEADER  # lower case
    suggestion_field: str | None = None
    suggestion_set: bool = False  # `suggestion` written in config (partial attaches it)
    compare: tuple[FieldSpec, ...] = ()  # the model vs the human, as a shadow compares
    fallback: bool = True  # at full, the human answers when the model fails
    ladder: LadderSpec = DEFAULT_LADDER  # the evidence each step up needs (router/core/ladder.py)

    def backends(self) -> tuple[str, ...]:
        return (self.model, self.human)


def confidence_of(answer: object, path: JsonPath | None) -> float | None:
    """The answer's confidence as a finite number, or None."""
    value = path.get(answer) if path is not None else None
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def status_failure(status: int) -> str:
    """The failure word of a model's status ("" for 2xx; 0 is no answer at all)."""
    if 200 <= status < 300:
        return ""
    if status >= 500:
        return "5xx"
    return "4xx" if status >= 400 else ("no_answer" if status == 0 else "status")


class Automation:
    """The built strategy: one prebuilt first decision per level."""

    __slots__ = (
        "_first",
        "_human",
        "_model",
        "_path",
        "_plain_full",
        "compare_settings",
        "copies",
        "spec",
    )

    def __init__(self, spec: AutomationSpec) -> None:
        self.copies = EVERY_COPY
        self.spec = spec
        self._path = compile_path(spec.confidence) if spec.confidence else None
        model, human = spec.model, spec.human
        self._model = Decision(model, "confident")
        self._human = Decision(human, "deferred")
        self._plain_full = Decision(model, "full")
        self._first = {
            "human": Decision(human, "human"),
            "shadow": Decision(human, "shadow", (model,)),
            "assist": Decision(model, "assist", follow_up=True),
            "partial": Decision(model, "partial", follow_up=True),
            # with a fallback the model's leg keeps a copy of the request (dataplane/follow.py)
            "full": Decision(model, "full", follow_up=spec.fallback),
        }
        # what router/shadow/mirror.py compares the model's answers with: the human's
        self.compare_settings = ShadowSpec(primary=human, shadows=(model,), compare=spec.compare)

    @property
    def override_header(self) -> bytes | None:
        return None

    def backends(self) -> tuple[str, ...]:
        return self.spec.backends()

    def level(self, live: Rollout | None) -> str:
        """The level in force: the live one when valid, else the configured one."""
        if live is not None and live.level in self._first:
            return live.level
        return self.spec.level

    def weights(self, live: Rollout | None) -> dict[str, float]:
        """Share of answers per backend, percent, as the level intends it. Under
        `partial` the model answers first; the deferred share is in the metrics."""
        by_model = self.level(live) in ("partial", "full")
        model, human = self.spec.model, self.spec.human
        return {model: 100.0 if by_model else 0.0, human: 0.0 if by_model else 100.0}

    def decide(self, key: int, live: Rollout | None, override: bytes | None) -> Decision:
        return self._first[self.level(live)]

    def without_model(self, live: Rollout | None) -> Decision:
        """A request too large to send twice: the model at full, the human below."""
        if self.level(live) == "full":
            return self._plain_full
        return Decision(self.spec.human, "unbuffered")

    def after(
        self, answer: object, status: int, live: Rollout | None, failure: str = ""
    ) -> Decision | None:
        """Given the model's answer to a follow-up decision, what to serve. `failure`:
        the proxy's word when the model gave no usable answer (see FAILURES)."""
        level = self.level(live)
        why = failure or status_failure(status)
        if level == "partial":
            return self._gate(answer, why)
        if level == "assist":
            if why:
                return Decision(self.spec.human, f"unassisted:{why}")
            return self._suggest(answer, "assist") or Decision(self.spec.human, "unassisted")
        if level == "full":
            if why and self.spec.fallback:
                return Decision(self.spec.human, f"fallback:{why}")
            return self._plain_full
        return self._first["human"]  # the level moved to human or shadow meanwhile

    def _gate(self, answer: object, why: str) -> Decision:
        if not why:
            why = self._confidence_failure(answer)
        if why:
            return Decision(self.spec.human, f"fallback:{why}")
        confidence = confidence_of(answer, self._path)
        if confidence is not None and confidence >= self.spec.threshold:
            return self._model
        if self.spec.suggestion_set:
            return self._suggest(answer, "deferred") or self._human
        return self._human

    def _confidence_failure(self, answer: object) -> str:
        if answer is None:
            return "not_json"
        confidence = confidence_of(answer, self._path)
        if confidence is None:
            return "no_confidence"
        return "" if 0.0 <= confidence <= 1.0 else "confidence_out_of_range"

    def _suggest(self, answer: object, reason: str) -> FollowUp | None:
        """To the human with the model's answer; None when there is no usable answer."""
        if answer is None:
            return None
        spec = self.spec
        return FollowUp(
            spec.human,
            reason,
            suggestion=json.dumps(answer, separators=(",", ":"), ensure_ascii=True),
            header=spec.suggestion_header,
            body_field=spec.suggestion_field,
        )


def _suggestion(node: Node) -> tuple[str | None, str | None, bool]:
    """(header, field, written): exactly one of header or field."""
    if not node.has("suggestion"):
        node.raw("suggestion")
        return DEFAULT_HEADER, None, False
    block = node.mapping("suggestion")
    header, field = block.header("header"), block.opt_string("field")
    block.done()
    if (block.raw("header") is None) == (field is None):
        node.error(block.path, "must have exactly one of header or field", block.data)
    return header, field, True


def _confidence(node: Node, level: str) -> str | None:
    text = node.opt_string("confidence")
    if text is None:
        if level == "partial":
            node.error(node.sub("confidence"), "is required when level is partial")
        return None
    try:
        compile_path(text)
    except ValueError as exc:
        node.error(node.sub("confidence"), f"is not a JSON path: {exc}", text)
        return None
    return text


def parse(node: Node, known: frozenset[str]) -> StrategySpec:
    """Read an `automation:` block; every problem goes to node.errors with its path."""
    model = check_backend(node, "model", known)
    human = check_backend(node, "human", known)
    if model and model == human:
        node.error(node.sub("human"), "must differ from model", human)
    level = node.choice("level", "human", LEVELS)
    confidence = _confidence(node, level)
    threshold = node.number("threshold", 0.8, 0.0, 1.0)
    header, field, written = _suggestion(node)
    compare = parse_compare(node.items("compare"), node.errors)
    fallback = node.boolean("fallback", True)
    ladder = parse_ladder(node, level)
    node.done()
    return AutomationSpec(
        model,
        human,
        level,
        confidence,
        threshold,
        header,
        field,
        written,
        compare,
        fallback,
        ladder,
    )


def build(spec: StrategySpec) -> Automation:
    if not isinstance(spec, AutomationSpec):
        raise TypeError(f"automation cannot build from {type(spec).__name__}")
    return Automation(spec)


AUTOMATION = StrategyKind("automation", parse, build)
