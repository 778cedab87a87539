"""Gates: is the candidate as good as the stable backend, over the same window?

Each gate compares the candidate's window (requests since the current step
began) with the baseline's and answers `pass`, `fail` or `wait`. Below its
minimum sample a gate waits: it never passes for lack of traffic, and it never
fails for lack of traffic either (a quiet service is not a broken one).

Error rate — an always-valid test, so looking every tick costs nothing.
For one arm with n requests and k errors, the Beta(½, ½) mixture of Bernoulli
likelihood ratios

    M_n(p) = ∫ θ^k (1-θ)^(n-k) dBeta(θ; ½, ½) / (p^k (1-p)^(n-k))

is a nonnegative martingale with mean 1 when p is the true error rate, so by
Ville's inequality P(exists n: M_n(p) >= 1/a) <= a. The set {p : M_n(p) < 1/a}
is therefore a confidence *sequence*: it covers the true rate at every n at
once, with probability 1-a, however often it is looked at and whenever the
looking stops. We build one per arm at a = alpha/2 and combine them:

    fail  when lower(candidate) - upper(stable) > max_increase
    pass  when upper(candidate) - lower(stable) <= max_increase (and min_requests)
    wait  otherwise

A false fail needs one of the two sequences to miss its true rate, so an A/A
window aborts with probability <= alpha. The test depends on counts only, not
time: a candidate failing every request at 5 % weight has lower bound 0.26
after five requests, which is far above any stable bound — it is stopped after
a handful of errors at 200 req/s or at 2 req/min alike. Failing needs no
minimum sample (the bound already carries the uncertainty); passing does.
The price of validity under continuous looks is data: showing "no worse than
+1 %" takes about a thousand candidate requests, and until then the gate waits.
Each step starts a new window, so a rollout of S steps has false-abort
probability <= S * alpha (a union bound; in practice far smaller).

Latency — quantiles from histograms over LATENCY_BOUNDS. The count of samples
at or below an edge x is Binomial(n, F(x)), so the same confidence sequence on
F(x) bounds the quantile: Q_q > x is certain enough when q lies above the
sequence for F(x), and Q_q <= x when q lies below it. Those bounds are bucket
edges, so bucket granularity widens them instead of causing false fails:

    fail  when lower(Q_cand) > ratio * upper(Q_stable)  (or lower(p99) > max_p99)
    pass  when both arms have min_requests and the candidate's quantile bucket
          starts at or below ratio * the end of the stable quantile's bucket
    wait  otherwise (looks worse, not yet sure)

Agreement — the candidate's answers vs the stable's on the same requests.
Requests served by the stable backend are mirrored to the candidate (the share
is the gate's `mirror_percent`), both answers are compared field by field
(router/core/compare.py) and counted per rollout window (router/shadow/mirror.py). The gate
reads `extra["agreement"] = {field: (agree, n)}` ("$": whole answers) and puts
the same always-valid confidence sequence around the agreement rate:

    fail  when n >= min_requests and upper(agreement) < min
    pass  when n >= min_requests and lower(agreement) >= min
    wait  otherwise (not enough comparisons, or not yet sure either way)

A candidate that does not answer, or answers without the field, disagrees. The
canary's shadow-first phase is the same gate judged before any user traffic.

The gate set is open: GATES (router/core/analysis.py) maps a config word to a parser;
`prediction_drift` and `agreement` read their inputs from `extra`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

from router.core.confkit import Node
from router.core.stats import (
    LATENCY_BOUNDS,
    quantile_bounds,
    quantile_bucket,
    rate_bounds,
)

Verdict = Literal["pass", "fail", "wait"]


@dataclass(frozen=True, slots=True)
class Sample:
    """One arm's window: request and error counts, latency bucket counts."""

    requests: int = 0
    errors: int = 0
    hist: tuple[int, ...] = ()  # len(LATENCY_BOUNDS) + 1 counts, or () for none


@dataclass(frozen=True, slots=True)
class GateResult:
    name: str
    verdict: Verdict
    value: float  # the figure judged (e.g. error-rate increase, latency ratio)
    threshold: float
    candidate_n: int
    baseline_n: int
    dry_run: bool
    detail: str  # plain words with the counts behind the verdict

    @property
    def acts(self) -> bool:
        """A dry-run gate is reported but never moves a rollout."""
        return not self.dry_run


class Gate(Protocol):
    @property
    def name(self) -> str: ...

    def judge(
        self, candidate: Sample, baseline: Sample, extra: Mapping[str, object]
    ) -> GateResult: ...


GateFactory = Callable[[Node], Gate]


# -- error rate --------------------------------------------------------------
def _pct(x: float) -> str:
    return f"{x * 100:.3g} %"


def _arm(label: str, s: Sample) -> str:
    rate = s.errors / s.requests if s.requests else 0.0
    return f"{label} {s.errors}/{s.requests} errors ({_pct(rate)})"


@dataclass(frozen=True, slots=True)
class ErrorRateGate:
    max_increase: float = 0.01  # tolerated candidate - stable error rate
    alpha: float = 0.01  # false-fail (and false-pass) probability per window
    min_requests: int = 50  # candidate requests before the gate may pass
    max: float | None = None  # absolute ceiling on the candidate's error rate
    dry_run: bool = False
    name: str = "error_rate"

    def judge(self, candidate: Sample, baseline: Sample, extra: Mapping[str, object]) -> GateResult:
        c_lo, c_hi = rate_bounds(candidate.errors, candidate.requests, self.alpha / 2)
        s_lo, s_hi = rate_bounds(baseline.errors, baseline.requests, self.alpha / 2)
        c_rate = candidate.errors / candidate.requests if candidate.requests else 0.0
        s_rate = baseline.errors / baseline.requests if baseline.requests else 0.0
        figures = f"{_arm('candidate', candidate)} vs {_arm('stable', baseline)}"
        verdict, why = self._verdict(candidate.requests, c_lo - s_hi, c_hi - s_lo, c_lo, c_hi)
        return GateResult(
            self.name,
            verdict,
            c_rate - s_rate,
            self.max_increase,
            candidate.requests,
            baseline.requests,
            self.dry_run,
            f"{figures}: {why}",
        )

    def _verdict(
        self, n: int, low: float, high: float, c_lo: float, c_hi: float
    ) -> tuple[Verdict, str]:
        conf = f"{(1 - self.alpha) * 100:g} %"
        if low > self.max_increase:
            return (
                "fail",
                f"increase >= {_pct(low)} at {conf} confidence (max +{_pct(self.max_increase)})",
            )
        if self.max is not None and c_lo > self.max:
            return (
                "fail",
                f"candidate rate >= {_pct(c_lo)} at {conf} confidence (max {_pct(self.max)})",
            )
        if n < self.min_requests:
            return "wait", f"waiting for {self.min_requests} candidate requests, have {n}"
        if high > self.max_increase:
            return "wait", f"increase could still be up to {_pct(high)}; need more requests"
        if self.max is not None and c_hi > self.max:
            return "wait", f"rate could still be up to {_pct(c_hi)} (max {_pct(self.max)})"
        return "pass", f"increase <= {_pct(high)} at {conf} confidence"


def parse_error_rate(node: Node) -> Gate:
    gate = ErrorRateGate(
        max_increase=node.number("max_increase", 0.01, 0.0, 1.0),
        alpha=node.number("alpha", 0.01, 1e-9, 0.5),
        min_requests=node.integer("min_requests", 50, 0, 10**9),
        max=_opt_number(node, "max", 0.0, 1.0),
        dry_run=node.boolean("dry_run", False),
    )
    node.done()
    return gate


def _opt_number(node: Node, key: str, lo: float, hi: float) -> float | None:
    return node.number(key, 0.0, lo, hi) if node.raw(key) is not None else None


# -- latency -----------------------------------------------------------------
def _ms(seconds: float) -> str:
    return "inf" if math.isinf(seconds) else f"{seconds * 1000:.4g} ms"


@dataclass(frozen=True, slots=True)
class _Check:
    """One comparison inside the latency gate: a quantile vs a limit."""

    label: str
    verdict: Verdict
    value: float
    threshold: float
    detail: str


@dataclass(frozen=True, slots=True)
class LatencyGate:
    p50_ratio: float | None = 1.5
    p99_ratio: float | None = 1.5
    min_requests: int = 100  # per arm, before the gate may pass or fail
    max_p99: float | None = None  # absolute ceiling on the candidate's p99, seconds
    alpha: float = 0.01
    dry_run: bool = False
    name: str = "latency"

    def judge(self, candidate: Sample, baseline: Sample, extra: Mapping[str, object]) -> GateResult:
        cn, bn = sum(candidate.hist), sum(baseline.hist)
        size = len(LATENCY_BOUNDS) + 1
        if cn and bn and (len(candidate.hist), len(baseline.hist)) != (size, size):
            detail = f"histograms must have {size} buckets (LATENCY_BOUNDS), cannot judge"
            return self._result("wait", 0.0, self.p99_ratio or 0.0, cn, bn, detail)
        if min(cn, bn) < self.min_requests:
            have = f"have candidate {cn}, stable {bn}"
            detail = f"waiting for {self.min_requests} timed requests per arm, {have}"
            return self._result("wait", 0.0, self.p99_ratio or 0.0, cn, bn, detail)
        checks = self._checks(candidate.hist, baseline.hist)
        worst = _worst(checks)
        detail = "; ".join(c.detail for c in checks)
        return self._result(worst.verdict, worst.value, worst.threshold, cn, bn, detail)

    def _result(
        self, verdict: Verdict, value: float, threshold: float, cn: int, bn: int, detail: str
    ) -> GateResult:
        return GateResult(self.name, verdict, value, threshold, cn, bn, self.dry_run, detail)

    def _checks(self, cand: Sequence[int], base: Sequence[int]) -> list[_Check]:
        wanted = [(q, r) for q, r in ((0.5, self.p50_ratio), (0.99, self.p99_ratio)) if r]
        alpha = self.alpha / (2 * (len(wanted) + (self.max_p99 is not None)))  # Bonferroni
        checks = [_ratio_check(cand, base, q, r, alpha) for q, r in wanted]
        if self.max_p99 is not None:
            checks.append(_ceiling_check(cand, self.max_p99, alpha))
        return checks


_ORDER: dict[Verdict, int] = {"fail": 0, "wait": 1, "pass": 2}


def _worst(checks: Sequence[_Check]) -> _Check:
    if not checks:
        return _Check("none", "pass", 0.0, 0.0, "no latency check configured")
    return min(checks, key=lambda c: (_ORDER[c.verdict], -c.value / (c.threshold or 1.0)))


def _ratio_check(
    cand: Sequence[int], base: Sequence[int], q: float, ratio: float, alpha: float
) -> _Check:
    label = f"p{round(q * 100)}"
    c_lo_edge, c_hi_edge = quantile_bucket(cand, q)
    b_lo_edge, b_hi_edge = quantile_bucket(base, q)
    c_sure, _ = quantile_bounds(cand, q, alpha)
    _, b_sure = quantile_bounds(base, q, alpha)
    shown = c_hi_edge / b_hi_edge if math.isfinite(c_hi_edge / b_hi_edge) else math.inf
    figures = (
        f"{label} candidate {_ms(c_lo_edge)}..{_ms(c_hi_edge)}"
        f" vs stable {_ms(b_lo_edge)}..{_ms(b_hi_edge)}"
    )
    if c_sure > ratio * b_sure:
        return _Check(label, "fail", shown, ratio, f"{figures}: over {ratio:g}x for sure")
    if c_lo_edge <= ratio * b_hi_edge:
        return _Check(label, "pass", shown, ratio, f"{figures}: within {ratio:g}x")
    return _Check(label, "wait", shown, ratio, f"{figures}: looks over {ratio:g}x, not yet sure")


def _ceiling_check(cand: Sequence[int], limit: float, alpha: float) -> _Check:
    low_edge, high_edge = quantile_bucket(cand, 0.99)
    sure, _ = quantile_bounds(cand, 0.99, alpha)
    figures = f"p99 candidate {_ms(low_edge)}..{_ms(high_edge)} (max {_ms(limit)})"
    if sure > limit:
        return _Check("max_p99", "fail", high_edge, limit, f"{figures}: over for sure")
    verdict: Verdict = "pass" if low_edge <= limit else "wait"
    return _Check("max_p99", verdict, high_edge, limit, figures)


def parse_latency(node: Node) -> Gate:
    gate = LatencyGate(
        p50_ratio=node.number("p50_ratio", 1.5, 1.0, 1000.0),
        p99_ratio=node.number("p99_ratio", 1.5, 1.0, 1000.0),
        min_requests=node.integer("min_requests", 100, 1, 10**9),
        max_p99=node.duration("max_p99", 0.0) if node.raw("max_p99") is not None else None,
        alpha=node.number("alpha", 0.01, 1e-9, 0.5),
        dry_run=node.boolean("dry_run", False),
    )
    node.done()
    return gate


# -- prediction drift ----------------------------------------------------------
@dataclass(frozen=True, slots=True)
class PredictionDriftGate:
    """Candidate's answers vs stable's over the step (router/core/drift.py prediction_gate).

    Reads `extra["prediction_drift"]` = {"candidate": bins, "stable": bins}, the
    output bins of both arms in the current step (router/drift/watch.py); the route
    needs a `drift:` block with `outputs`. No bins yet: wait."""

    threshold: float = 0.2  # PSI
    min_requests: int = 200  # answers per arm before the gate may pass or fail
    dry_run: bool = False
    name: str = "prediction_drift"

    def judge(self, candidate: Sample, baseline: Sample, extra: Mapping[str, object]) -> GateResult:
        from router.core.drift_scores import (
            prediction_gate,  # late: numpy-heavy module, drift users only
        )

        arms = extra.get("prediction_drift")
        if not isinstance(arms, Mapping) or not arms.get("candidate"):
            return self._result("wait", 0.0, 0, 0, "no answer bins yet (needs drift.outputs)")
        r = prediction_gate(arms["candidate"], arms["stable"], self.threshold, self.min_requests)
        where = f"{r.feature or 'answers'}: PSI {r.psi:.3f} (max {self.threshold:g})"
        counts = f"{r.n_candidate} candidate vs {r.n_stable} stable answers"
        verdict: Verdict = (
            "fail" if r.verdict == "fail" else "pass" if r.verdict == "pass" else "wait"
        )
        return self._result(verdict, r.psi, r.n_candidate, r.n_stable, f"{where}, {counts}")

    def _result(self, verdict: Verdict, value: float, nc: int, nb: int, detail: str) -> GateResult:
        return GateResult(self.name, verdict, value, self.threshold, nc, nb, self.dry_run, detail)


def parse_prediction_drift(node: Node) -> Gate:
    gate = PredictionDriftGate(
        threshold=node.number("threshold", 0.2, 0.0, 100.0),
        min_requests=node.integer("min_requests", 200, 1, 10**9),
        dry_run=node.boolean("dry_run", False),
    )
    node.done()
    return gate


# -- agreement -------------------------------------------------------------------
WHOLE_ANSWER = "$"  # the agreement field meaning "the whole answer agrees"


@dataclass(frozen=True, slots=True)
class AgreementGate:
    """Mirrored comparisons of candidate vs stable on one field (see the module doc).

    Reads `extra["agreement"]` = {field: (agree, n)}, the counts of the current
    window (router/control/canary.py reads them from the store)."""

    field: str = "$.label"  # as written under `compare` ("$": the whole answer)
    min: float = 0.95  # minimum agreement
    min_requests: int = 200  # compared items (rows) before the gate may pass or fail
    mirror_bp: int = 10_000  # share of stable-served requests mirrored, basis points
    alpha: float = 0.01
    dry_run: bool = False
    name: str = "agreement"

    def counts(self, extra: Mapping[str, object]) -> tuple[int, int, int]:
        """(agreeing items, compared items, requests) of the gate's field."""
        table = extra.get("agreement")
        found = table.get(self.field) if isinstance(table, Mapping) else None
        if isinstance(found, tuple | list) and len(found) in (2, 3):
            agree, n = int(found[0]), int(found[1])
            return agree, n, int(found[2]) if len(found) == 3 else n
        return 0, 0, 0

    def judge(self, candidate: Sample, baseline: Sample, extra: Mapping[str, object]) -> GateResult:
        agree, n, requests = self.counts(extra)
        rate = agree / n if n else 0.0
        verdict, why = self._verdict(agree, n)
        figures = f"{self.field} agreement {_pct(rate)} ({agree}/{n} items, {requests} requests)"
        return GateResult(
            self.name, verdict, rate, self.min, n, n, self.dry_run, f"{figures}: {why}"
        )

    def _verdict(self, agree: int, n: int) -> tuple[Verdict, str]:
        lo, hi = rate_bounds(agree, n, self.alpha)
        conf, floor = f"{(1 - self.alpha) * 100:g} %", _pct(self.min)
        if n < self.min_requests:
            return "wait", f"waiting for {self.min_requests} compared items, have {n}"
        if hi < self.min:
            return "fail", f"at most {_pct(hi)} at {conf} confidence (min {floor})"
        if lo >= self.min:
            return "pass", f"at least {_pct(lo)} at {conf} confidence (min {floor})"
        return "wait", f"could still be below {floor} (at least {_pct(lo)}); need more"


def parse_agreement(node: Node) -> Gate:
    gate = AgreementGate(
        field=agreement_field(node),
        min=node.number("min", 0.95, 0.0, 1.0),
        min_requests=node.integer("min_requests", 200, 1, 10**9),
        mirror_bp=round(node.number("mirror_percent", 100.0, 0.0, 100.0) * 100),
        alpha=node.number("alpha", 0.01, 1e-9, 0.5),
        dry_run=node.boolean("dry_run", False),
    )
    node.done()
    return gate


def agreement_field(node: Node) -> str:
    """The compared name the gate reads: `field` (a JSON path of the answer, `$` for
    the whole answer) or `output` (a name of the route's protocol), exactly one; or
    `compare`, the name of an entry of the compare list (`compare: refusal`)."""
    from router.core.compare_config import compared_name  # late: only agreement users need it

    if node.has("compare"):
        return node.string("compare", required=True)
    return compared_name(node)
