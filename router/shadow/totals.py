"""Shadow mode's figures of this process since it started, for Prometheus.

The store's counters (router/shadow/mirror.py) are what the gates and
`/v1/routes/NAME/shadow` read: summed over replicas, drained every flush. A
scrape wants cumulative counters of its own process instead (Prometheus sums
the replicas), which keep counting while the store is down. `MirrorTotals`
keeps them; every method is called where the event already happens, none on
the common path of a client's request: a drop happens instead of a send;
sends, failures and comparisons are counted by the mirror workers.

Families (labels: route, backend, role from router/ops/roles.py):

    router_mirror_sent_total                     copies sent to a mirrored backend
    router_mirror_dropped_total{reason}          copies not sent: queue_full, memory_full,
                                                 shadow_down (breaker open), no_lane,
                                                 oversize_body, oversize_answer, rewrite_failed
    router_mirror_failed_total{reason}           sent copies with no answer: refused,
                                                 timeout, reset, ... (router/core/errors.py)
    router_shadow_comparisons_total{outcome}     answers judged: agree, disagree,
                                                 no_answer, not_comparable
    router_shadow_items_compared_total{field}    items (rows) compared per field
    router_shadow_items_agreed_total{field}      ... of them agreeing
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Final

from router.core.compare import Comparison
from router.dataplane.metric_text import metric_lines

RoleOf = Callable[[str, str], str]
Counts = dict[tuple[str, ...], int]
OUTCOMES: Final = ("agree", "disagree", "no_answer", "not_comparable")


def _bump(counts: Counts, key: tuple[str, ...], n: int = 1) -> None:
    counts[key] = counts.get(key, 0) + n


class MirrorTotals:
    """Cumulative mirror and comparison counts of this process."""

    def __init__(self) -> None:
        self.sent: Counts = {}  # (route, backend)
        self.dropped: Counts = {}  # (route, backend, reason)
        self.failed: Counts = {}  # (route, backend, reason)
        self.outcomes: Counts = {}  # (route, backend, outcome)
        self.compared: Counts = {}  # (route, backend, field)
        self.agreed: Counts = {}  # (route, backend, field)

    def drop(self, route: str, backend: str, reason: str) -> None:
        _bump(self.dropped, (route, backend, reason))

    def send(self, route: str, backend: str) -> None:
        _bump(self.sent, (route, backend))

    def fail(self, route: str, backend: str, reason: str) -> None:
        _bump(self.failed, (route, backend, reason))

    def judged(self, route: str, backend: str, c: Comparison) -> None:
        """One comparison: its outcome, and each counted field's items."""
        if c.not_comparable:
            outcome = "not_comparable"
        elif c.status[1] == 0:
            outcome = "no_answer"
        else:
            outcome = "agree" if c.agree else "disagree"
        _bump(self.outcomes, (route, backend, outcome))
        for r in c.fields:
            if r.counted:  # a field nobody agreed on yet still reads 0, not absent
                _bump(self.compared, (route, backend, r.field))
                _bump(self.agreed, (route, backend, r.field), int(r.agree))

    def lines(self, role_of: RoleOf, depths: Mapping[str, int], capacity: int) -> list[str]:
        """The families of the module doc, plus each mirrored backend's queue."""

        def rows(counts: Counts, extra: str = "") -> list[tuple[dict[str, str], float]]:
            out: list[tuple[dict[str, str], float]] = []
            for key, n in sorted(counts.items()):
                labels = {"route": key[0], "backend": key[1], "role": role_of(key[0], key[1])}
                if extra:
                    labels[extra] = key[2]
                out.append((labels, n))
            return out

        queue = [({"backend": b}, float(n)) for b, n in sorted(depths.items())]
        return [
            *metric_lines("router_mirror_sent_total", "counter", _SENT, rows(self.sent)),
            *metric_lines(
                "router_mirror_dropped_total", "counter", _DROPPED, rows(self.dropped, "reason")
            ),
            *metric_lines(
                "router_mirror_failed_total", "counter", _FAILED, rows(self.failed, "reason")
            ),
            *metric_lines("router_mirror_queue_depth", "gauge", _DEPTH, queue),
            *metric_lines(
                "router_mirror_queue_capacity", "gauge", _CAPACITY, [({}, float(capacity))]
            ),
            *metric_lines(
                "router_shadow_comparisons_total",
                "counter",
                _OUTCOMES,
                rows(self.outcomes, "outcome"),
            ),
            *metric_lines(
                "router_shadow_items_compared_total",
                "counter",
                "Items (rows) compared, per compared field.",
                rows(self.compared, "field"),
            ),
            *metric_lines(
                "router_shadow_items_agreed_total",
                "counter",
                "Items (rows) whose field agreed with the primary's; agreement is this "
                "over router_shadow_items_compared_total.",
                rows(self.agreed, "field"),
            ),
        ]


_SENT = "Copies of requests sent to a mirrored backend (shadow, canary candidate, model)."
_DROPPED = "Copies not sent, by reason (the client's answer never waits for one)."
_FAILED = "Copies sent that got no answer, by reason (refused, timeout, reset, ...)."
_DEPTH = "Copies waiting in a mirrored backend's queue (this process)."
_CAPACITY = "Copies a mirrored backend's queue holds at most."
_OUTCOMES = "Mirrored answers judged against the primary's, by outcome."
