"""The canary's `ttft` gate: the candidate's time to first token vs stable's.

    analysis:
      ttft: {p95_ratio: 1.3, min_requests: 100}   # also p50_ratio, p99_ratio, max_p95

It judges streamed answers only (router/dataplane/stream_timing.py times them), with the
latency gate's rules (router/core/gates.py): quantiles from the same fixed
buckets, always-valid confidence bounds on them, so looking every interval
costs nothing; below `min_requests` streams with a first token per arm it
waits, never passes or fails for lack of traffic:

    fail  when the candidate's quantile is certainly above ratio x stable's
          (or its p95 certainly above max_p95)
    pass  when both arms have min_requests and the candidate's quantile bucket
          starts at or below ratio x the end of stable's
    wait  otherwise

Its input is `extra["ttft"]` = {"candidate": buckets, "stable": buckets}: the
first-token histograms of the current rollout window, summed over replicas
(router/shadow/streams.py `read_window_hists`, read by router/control/canary.py).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from router.core.confkit import Node
from router.core.gates import Gate, GateResult, Sample, Verdict, _Check, _ms, _ratio_check, _worst
from router.core.stats import LATENCY_BOUNDS, quantile_bounds, quantile_bucket

GATE = "ttft"


@dataclass(frozen=True, slots=True)
class TtftGate:
    p50_ratio: float | None = None
    p95_ratio: float | None = 1.5
    p99_ratio: float | None = None
    min_requests: int = 100  # streams with a first token, per arm
    max_p95: float | None = None  # absolute ceiling on the candidate's p95, seconds
    alpha: float = 0.01
    dry_run: bool = False
    name: str = GATE

    def judge(self, candidate: Sample, baseline: Sample, extra: Mapping[str, object]) -> GateResult:
        arms = extra.get(GATE)
        cand, base = _hist(arms, "candidate"), _hist(arms, "stable")
        cn, bn = sum(cand), sum(base)
        threshold = self.p95_ratio or self.p50_ratio or self.p99_ratio or 0.0
        if min(cn, bn) < self.min_requests:
            have = f"have candidate {cn}, stable {bn}"
            detail = f"waiting for {self.min_requests} streams with a first token per arm, {have}"
            return self._result("wait", 0.0, threshold, cn, bn, detail)
        checks = self._checks(cand, base)
        worst = _worst(checks)
        detail = "time to first token: " + "; ".join(c.detail for c in checks)
        return self._result(worst.verdict, worst.value, worst.threshold, cn, bn, detail)

    def _checks(self, cand: Sequence[int], base: Sequence[int]) -> list[_Check]:
        ratios = ((0.5, self.p50_ratio), (0.95, self.p95_ratio), (0.99, self.p99_ratio))
        wanted = [(q, r) for q, r in ratios if r]
        alpha = self.alpha / (2 * (len(wanted) + (self.max_p95 is not None)))  # Bonferroni
        checks = [_ratio_check(cand, base, q, r, alpha) for q, r in wanted]
        if self.max_p95 is not None:
            checks.append(_ceiling(cand, self.max_p95, alpha))
        return checks

    def _result(
        self, verdict: Verdict, value: float, threshold: float, cn: int, bn: int, detail: str
    ) -> GateResult:
        return GateResult(self.name, verdict, value, threshold, cn, bn, self.dry_run, detail)


def _hist(arms: object, side: str) -> tuple[int, ...]:
    found = arms.get(side) if isinstance(arms, Mapping) else None
    size = len(LATENCY_BOUNDS) + 1
    if isinstance(found, list | tuple) and len(found) == size:
        return tuple(int(x) for x in found)
    return (0,) * size


def _ceiling(cand: Sequence[int], limit: float, alpha: float) -> _Check:
    low_edge, high_edge = quantile_bucket(cand, 0.95)
    sure, _ = quantile_bounds(cand, 0.95, alpha)
    figures = f"p95 candidate {_ms(low_edge)}..{_ms(high_edge)} (max {_ms(limit)})"
    if sure > limit:
        return _Check("max_p95", "fail", high_edge, limit, f"{figures}: over for sure")
    verdict: Verdict = "pass" if low_edge <= limit else "wait"
    return _Check("max_p95", verdict, high_edge, limit, figures)


def parse_ttft(node: Node) -> Gate:
    def ratio(key: str, default: float | None) -> float | None:
        if node.raw(key) is None:
            return default
        return node.number(key, default or 1.5, 1.0, 1000.0)

    given = [node.has(k) for k in ("p50_ratio", "p95_ratio", "p99_ratio", "max_p95")]
    gate = TtftGate(
        p50_ratio=ratio("p50_ratio", None),
        p95_ratio=ratio("p95_ratio", None if any(given) else 1.5),
        p99_ratio=ratio("p99_ratio", None),
        min_requests=node.integer("min_requests", 100, 1, 10**9),
        max_p95=node.duration("max_p95", 0.0) if node.raw("max_p95") is not None else None,
        alpha=node.number("alpha", 0.01, 1e-9, 0.5),
        dry_run=node.boolean("dry_run", False),
    )
    node.done()
    return gate
