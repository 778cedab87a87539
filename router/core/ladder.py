"""The evidence each step up the automation ladder needs, judged; pure.

Theory of operation. The ladder is human -> shadow -> assist -> partial ->
full. Each level above `human` has a *bar*: what must have been shown, at the
level just below it, before a request may be trusted one degree more:

    min_samples / min_agreement    items where the model's answer was compared
                                   with the human's (shadow: mirrored copies;
                                   assist, partial: the same request, both legs)
    min_labels / accuracy_margin   delayed labels per arm: the model's accuracy
                                   is at least the human's minus the margin
    min_labels / min_accuracy      the model's accuracy is at least this
    min_requests / max_deferral    partial: the share the human still answers
    pause                          the least time spent at the level below

Evidence is counted per level (a new level starts a new window: its rollout's
`step_started_at`), so the figures behind a step are the ones gathered where
the ladder stands now. Every rate is judged with the always-valid confidence
sequence of the canary's gates (router/core/gates.py `rate_bounds`, at `alpha`),
so looking every tick costs no validity. A criterion passes when its bound is
on the right side of the bar for sure, fails when the other bound is on the
wrong side for sure, and waits otherwise (or below its minimum sample); a bar
passes when every criterion passes and fails when any one fails.

`plan` is what `advance: auto` does on the leader's tick: step down one level
when the bar of the level in force fails on that level's own evidence (an
accuracy drop, a deferral rise) or the model's accuracy alarms (concept drift,
router/core/concept.py); otherwise step up one level when the next bar passes and
its pause is over, up to `advance_to`. Stepping down by hand is never judged.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final, Literal

from router.core.stats import rate_bounds

if TYPE_CHECKING:
    from router.core.confkit import Node

LADDER: Final = ("human", "shadow", "assist", "partial", "full")
Verdict = Literal["pass", "fail", "wait"]


@dataclass(frozen=True, slots=True)
class Bar:
    """What entering one level needs (None: that criterion is not asked)."""

    min_samples: int = 0
    min_agreement: float | None = None
    min_labels: int = 0
    accuracy_margin: float | None = None
    min_accuracy: float | None = None
    min_requests: int = 0
    max_deferral: float | None = None
    pause: float = 0.0  # seconds at the level below before `auto` climbs


DEFAULT_BARS: Final = {
    "shadow": Bar(),  # the model only gets copies: nothing to show first
    "assist": Bar(min_samples=200, min_agreement=0.8),
    "partial": Bar(min_samples=500, min_agreement=0.9, min_labels=200, accuracy_margin=0.02),
    "full": Bar(min_requests=500, max_deferral=0.1, min_labels=200, accuracy_margin=0.0),
}


@dataclass(frozen=True, slots=True)
class LadderSpec:
    advance: str = "manual"  # manual | auto
    advance_to: str = "partial"  # the highest level `auto` climbs to
    alpha: float = 0.05
    bars: tuple[tuple[str, Bar], ...] = tuple(DEFAULT_BARS.items())

    def bar(self, level: str) -> Bar:
        return dict(self.bars).get(level, Bar())


DEFAULT_LADDER: Final = LadderSpec()


@dataclass(frozen=True, slots=True)
class Evidence:
    """What the current level has shown so far (router/dataplane/follow.py reads it)."""

    compared: int = 0  # items compared, model vs human
    agreeing: int = 0
    model_labels: int = 0
    model_correct: int = 0
    human_labels: int = 0
    human_correct: int = 0
    requests: int = 0  # answered at this level (both arms)
    deferred: int = 0  # ... of which by the human, under partial
    seconds: float = 0.0  # at this level so far
    alarms: tuple[str, ...] = ()  # model arms whose accuracy alarms (concept drift)


@dataclass(frozen=True, slots=True)
class Check:
    name: str
    verdict: Verdict
    text: str  # e.g. "agreement 0.92 [0.90-0.94] >= 0.95? n = 340/500"


@dataclass(frozen=True, slots=True)
class Judgement:
    level: str  # the level the bar is for
    verdict: Verdict
    checks: tuple[Check, ...] = field(default=())

    def text(self) -> str:
        """`partial — agreement 0.92 >= 0.95? n = 340/500; ...` (waiting or failing only)."""
        shown = [c for c in self.checks if c.verdict != "pass"] or list(self.checks)
        body = "; ".join(c.text for c in shown) or "nothing to show first"
        return f"{self.level} — {body}"


def next_level(level: str) -> str | None:
    i = LADDER.index(level)
    return LADDER[i + 1] if i + 1 < len(LADDER) else None


def rank(level: str) -> int:
    return LADDER.index(level)


def judge(level: str, spec: LadderSpec, ev: Evidence) -> Judgement:
    """The bar of `level` against the evidence gathered at the level below it."""
    bar, alpha = spec.bar(level), spec.alpha
    checks: list[Check] = []
    if bar.min_agreement is not None:
        checks.append(
            _at_least(
                "agreement", ev.agreeing, ev.compared, bar.min_agreement, bar.min_samples, alpha
            )
        )
    if bar.min_accuracy is not None:
        checks.append(
            _at_least(
                "model accuracy",
                ev.model_correct,
                ev.model_labels,
                bar.min_accuracy,
                bar.min_labels,
                alpha,
            )
        )
    if bar.accuracy_margin is not None:
        checks.append(_margin(ev, bar.accuracy_margin, bar.min_labels, alpha))
    if bar.max_deferral is not None:
        checks.append(
            _at_most(
                "deferral", ev.deferred, ev.requests, bar.max_deferral, bar.min_requests, alpha
            )
        )
    if bar.pause and ev.seconds < bar.pause:
        checks.append(
            Check("pause", "wait", f"time at the level below {ev.seconds:.0f}s/{bar.pause:g}s")
        )
    verdicts = {c.verdict for c in checks}
    verdict: Verdict = "fail" if "fail" in verdicts else "wait" if "wait" in verdicts else "pass"
    return Judgement(level, verdict, tuple(checks))


def _rate(k: int, n: int, alpha: float) -> str:
    if not n:
        return "-"
    lo, hi = rate_bounds(k, n, alpha)
    return f"{k / n:.3f} [{lo:.3f}-{hi:.3f}]"


def _at_least(name: str, k: int, n: int, floor: float, need: int, alpha: float) -> Check:
    text = f"{name} {_rate(k, n, alpha)} >= {floor:g}? n = {n}/{need}"
    lo, hi = rate_bounds(k, n, alpha)
    if n < max(need, 1):
        return Check(name, "wait", text)
    if hi < floor:
        return Check(name, "fail", text)
    return Check(name, "pass" if lo >= floor else "wait", text)


def _at_most(name: str, k: int, n: int, ceiling: float, need: int, alpha: float) -> Check:
    text = f"{name} {_rate(k, n, alpha)} <= {ceiling:g}? n = {n}/{need}"
    lo, hi = rate_bounds(k, n, alpha)
    if n < max(need, 1):
        return Check(name, "wait", text)
    if lo > ceiling:
        return Check(name, "fail", text)
    return Check(name, "pass" if hi <= ceiling else "wait", text)


def _margin(ev: Evidence, margin: float, need: int, alpha: float) -> Check:
    """The model's accuracy is at least the human's minus `margin` (each arm at alpha/2)."""
    m_lo, m_hi = rate_bounds(ev.model_correct, ev.model_labels, alpha / 2)
    h_lo, h_hi = rate_bounds(ev.human_correct, ev.human_labels, alpha / 2)
    model = _rate(ev.model_correct, ev.model_labels, alpha / 2)
    human = _rate(ev.human_correct, ev.human_labels, alpha / 2)
    text = (
        f"model accuracy {model} >= human {human} - {margin:g}? "
        f"labels {ev.model_labels}/{need} model, {ev.human_labels}/{need} human"
    )
    if min(ev.model_labels, ev.human_labels) < max(need, 1):
        return Check("accuracy", "wait", text)
    if m_hi - h_lo < -margin:
        return Check("accuracy", "fail", text)
    return Check("accuracy", "pass" if m_lo - h_hi >= -margin else "wait", text)


def plan(level: str, spec: LadderSpec, ev: Evidence) -> tuple[str, str] | None:
    """`advance: auto` on one tick: (new level, why), or None to stay."""
    if spec.advance != "auto":
        return None
    below = LADDER[rank(level) - 1] if rank(level) > 0 else None
    if below is not None and rank(level) >= rank("assist"):
        if ev.alarms:
            return below, f"the model's accuracy alarms at {level} ({', '.join(ev.alarms)})"
        held = judge(level, spec, ev)
        if held.verdict == "fail":
            return below, f"the evidence for {level} failed: {held.text()}"
    up = next_level(level)
    if up is None or rank(up) > rank(spec.advance_to):
        return None
    found = judge(up, spec, ev)
    if found.verdict == "pass":
        return up, f"evidence for {found.text()}"
    return None


# -- config ---------------------------------------------------------------------------
def parse_ladder(node: Node, level: str) -> LadderSpec:
    """`advance`, `advance_to` and `evidence` of an automation block; problems go to
    node.errors with their path. A level written under `evidence` replaces its
    default bar: criteria not written there are not asked."""
    advance = node.choice("advance", "manual", ("manual", "auto"))
    advance_to = node.choice("advance_to", "partial", LADDER[1:])
    bars = dict(DEFAULT_BARS)
    block = node.mapping("evidence")
    alpha = block.number("alpha", 0.05, 1e-9, 0.5)
    for word in list(block.keys()):
        if word == "alpha":
            continue
        if word not in DEFAULT_BARS:
            block.raw(word)
            block.error(
                block.sub(word), f"is not a level to enter; one of {', '.join(DEFAULT_BARS)}"
            )
            continue
        bars[word] = _bar(block.mapping(word))
    block.done()
    return LadderSpec(advance, advance_to, alpha, tuple(bars.items()))


def _bar(node: Node) -> Bar:
    bar = Bar(
        min_samples=node.integer("min_samples", 0, 0, 10**9),
        min_agreement=_opt(node, "min_agreement"),
        min_labels=node.integer("min_labels", 0, 0, 10**9),
        accuracy_margin=_opt(node, "accuracy_margin"),
        min_accuracy=_opt(node, "min_accuracy"),
        min_requests=node.integer("min_requests", 0, 0, 10**9),
        max_deferral=_opt(node, "max_deferral"),
        pause=node.duration("pause", 0.0, positive=False),
    )
    node.done()
    return bar


def _opt(node: Node, key: str) -> float | None:
    return node.number(key, 0.0, 0.0, 1.0) if node.raw(key) is not None else None
