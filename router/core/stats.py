"""The statistics every figure and every gate shares: one latency layout, one rate bound.

Latency. LATENCY_BOUNDS are the upper bounds (seconds) of the latency
buckets, ~1.3x apart from 0.5 ms to 60 s; one more bucket past the last holds
everything slower. The request path's histograms (router/dataplane/metrics.py),
the stored windows, Prometheus' `le` buckets and the latency gate all read
this one table. Quantiles of a bucketed distribution: `quantile`
interpolates inside the bucket (what figures show); `quantile_bucket` and
`quantile_bounds` give bucket edges (what the latency gate judges).

Rates. `rate_bounds` is the always-valid confidence sequence of the gates
(router/core/gates.py says why it may be looked at every tick): for k
successes of n it is the set {p : M_n(p) < 1/alpha} of the Beta(½, ½)
mixture martingale. Figures shown to operators (agreement, accuracy) carry
`shown_bounds`, the same sequence at the gates' default alpha (ALPHA), so that
what `routerctl` and the dashboard print is the bound a gate decides on.
`wilson` is the classic fixed-sample interval, kept where a fixed sample is
what is judged (the reference window of concept drift, router/core/concept.py).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

ALPHA = 0.01  # the gates' default false-fail probability per window; figures use it too


def _log_bounds(lo: float, hi: float, count: int) -> tuple[float, ...]:
    return tuple(float(f"{b:.3g}") for b in np.geomspace(lo, hi, count))


# Upper bounds (seconds) of the latency buckets, ~1.3x apart; one more bucket
# past the last bound holds everything slower. The only definition: import it.
LATENCY_BOUNDS: tuple[float, ...] = _log_bounds(0.0005, 60.0, 45)


_A = _B = 0.5  # Jeffreys prior: puts mass near 0, where error rates live


def _log_mixture(k: int, n: int) -> float:
    """log of the Beta(½, ½) marginal likelihood of one sequence with k of n."""
    lbeta = math.lgamma(_A + k) + math.lgamma(_B + n - k) - math.lgamma(_A + _B + n)
    return lbeta - (math.lgamma(_A) + math.lgamma(_B) - math.lgamma(_A + _B))


def _log_ratio(log_mix: float, k: int, n: int, p: float) -> float:
    """log M_n(p): evidence against p; the sequence excludes p beyond log(1/a)."""
    loglik = (k * math.log(p) if k else 0.0) + ((n - k) * math.log1p(-p) if n - k else 0.0)
    return log_mix - loglik


def excludes(k: int, n: int, p: float, alpha: float) -> bool:
    """True when the confidence sequence for k of n leaves out rate p."""
    if n == 0 or not 0.0 < p < 1.0:
        return n > 0 and ((p <= 0.0 and k > 0) or (p >= 1.0 and k < n))
    return _log_ratio(_log_mixture(k, n), k, n, p) >= math.log(1.0 / alpha)


def rate_bounds(k: int, n: int, alpha: float) -> tuple[float, float]:
    """(lower, upper) of the always-valid confidence sequence for a rate."""
    if n == 0:
        return 0.0, 1.0
    log_mix, limit, mid = _log_mixture(k, n), math.log(1.0 / alpha), k / n
    lower = 0.0 if k == 0 else _edge(log_mix, k, n, limit, 0.0, mid)
    upper = 1.0 if k == n else _edge(log_mix, k, n, limit, 1.0, mid)
    return lower, upper


def _edge(log_mix: float, k: int, n: int, limit: float, out: float, inside: float) -> float:
    """Bisect between a point outside the sequence and one inside (log M is convex)."""
    for _ in range(50):
        probe = (out + inside) / 2
        if _log_ratio(log_mix, k, n, probe) >= limit:
            out = probe
        else:
            inside = probe
    return out


def shown_bounds(k: int, n: int) -> tuple[float, float]:
    """The bounds a figure shows for k of n: the gates' sequence at their default alpha."""
    return rate_bounds(k, n, ALPHA)


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval for k successes in n trials; (0, 1) when n = 0."""
    if n <= 0:
        return 0.0, 1.0
    p = k / n
    z2 = z * z
    denom = 1.0 + z2 / n
    center = (p + z2 / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / denom
    return max(0.0, center - half), min(1.0, center + half)


def _cumulative(hist: Sequence[int]) -> tuple[list[int], int]:
    cum = np.cumsum(np.asarray(hist, dtype=np.int64))
    return [int(x) for x in cum[:-1]], int(cum[-1])


def quantile_bucket(hist: Sequence[int], q: float) -> tuple[float, float]:
    """(lower edge, upper edge) of the bucket holding the q-quantile."""
    cum, n = _cumulative(hist)
    for j, k in enumerate(cum):
        if k >= q * n:
            return (LATENCY_BOUNDS[j - 1] if j else 0.0), LATENCY_BOUNDS[j]
    return LATENCY_BOUNDS[-1], math.inf


def quantile_bounds(hist: Sequence[int], q: float, alpha: float) -> tuple[float, float]:
    """Always-valid (lower, upper) bucket edges around the q-quantile."""
    cum, n = _cumulative(hist)
    lower, upper = 0.0, math.inf
    for j, k in enumerate(cum):
        if k < q * n and excludes(k, n, q, alpha):
            lower = LATENCY_BOUNDS[j]  # F(edge) < q for sure: the quantile is above
        elif k > q * n and excludes(k, n, q, alpha):
            upper = LATENCY_BOUNDS[j]  # F(edge) > q for sure: the quantile is at most here
            break
    return lower, upper


def quantile(
    counts: Sequence[int], q: float, bounds: Sequence[float] = LATENCY_BOUNDS
) -> float | None:
    """The q-quantile (0..1) of a bucketed distribution, interpolated inside its bucket.

    `counts` has len(bounds) + 1 entries (the last is the overflow, reported as
    the highest bound). None when there are no counts.
    """
    total = sum(counts)
    if total <= 0:
        return None
    rank = min(max(q, 0.0), 1.0) * total
    seen = 0
    for i, c in enumerate(counts):
        if c and seen + c >= rank:
            if i >= len(bounds):
                return bounds[-1]
            lower = bounds[i - 1] if i > 0 else 0.0
            return lower + (bounds[i] - lower) * max(rank - seen, 0.0) / c
        seen += c
    return bounds[-1]
