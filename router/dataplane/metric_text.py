"""Prometheus' text format, written by hand: one family at a time, and the request families.

`metric_lines` renders one family (HELP, TYPE, a line per sample); every part of
the router that exports figures calls it (router/ops/telemetry.py assembles the
page, router/ops/exposition.py reads it back for --workers N and OpenMetrics),
so nothing needs a metrics library. `request_families` renders the data plane's
per (route, backend, role) slots (router/dataplane/metrics.py): requests by status
code, errors, bytes and the latency histogram over LATENCY_BOUNDS; requests no
route took, or refused before a backend was picked, get families of their own
(an empty label would match every `sum by`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING

from router.core.stats import LATENCY_BOUNDS as BOUNDS

if TYPE_CHECKING:
    from router.dataplane.metrics import Slot

Slots = Mapping[tuple[str, str, str], "Slot"]  # (route, backend, role) -> counts


def escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def labels_text(labels: Mapping[str, str]) -> str:
    if not labels:
        return ""
    return "{" + ",".join(f'{k}="{escape(v)}"' for k, v in labels.items()) + "}"


def number_text(value: float) -> str:
    if isinstance(value, int):
        return str(value)
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(value)


def metric_lines(
    name: str, kind: str, help_text: str, samples: Iterable[tuple[Mapping[str, str], float]]
) -> list[str]:
    """One metric family in Prometheus text: HELP, TYPE, then one line per sample.

    Other modules use this in their collectors (see `Metrics.add_collector`).
    """
    lines = [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}"]
    lines += [f"{name}{labels_text(labels)} {number_text(value)}" for labels, value in samples]
    return lines


def _arm(key: tuple[str, str, str]) -> dict[str, str]:
    return {"route": key[0], "backend": key[1], "role": key[2]}


def _codes(slot: Slot) -> list[tuple[str, int]]:
    return [(str(code) if code else "other", n) for code, n in enumerate(slot.codes) if n]


def _requests_lines(slots: Slots) -> list[str]:
    samples = [
        ({**_arm(key), "code": code}, n)
        for key, s in sorted(slots.items())
        for code, n in _codes(s)
    ]
    help_text = "Requests answered, by route, backend, its role and status code."
    return metric_lines("router_requests_total", "counter", help_text, samples)


def _rejected_lines(slots: Mapping[str, Slot]) -> list[str]:
    unrouted = [({"code": code}, n) for code, n in _codes(slots[""])] if "" in slots else []
    rejected = [
        ({"route": route, "code": code}, n)
        for route, s in sorted(slots.items())
        if route
        for code, n in _codes(s)
    ]
    return [
        *metric_lines(
            "router_unrouted_requests_total",
            "counter",
            "Requests no route matched (or refused before routing), by status code.",
            unrouted,
        ),
        *metric_lines(
            "router_rejected_requests_total",
            "counter",
            "Requests of a route answered before a backend was picked (bad or too large "
            "requests), by status code.",
            rejected,
        ),
    ]


def _errors_lines(slots: Slots) -> list[str]:
    samples = [(_arm(key), s.errors) for key, s in sorted(slots.items())]
    help_text = "Requests that failed: status >= 500, including connect failures and timeouts."
    return metric_lines("router_request_errors_total", "counter", help_text, samples)


def _bytes_lines(slots: Slots) -> list[str]:
    samples = [(_arm(key), s.nbytes) for key, s in sorted(slots.items())]
    help_text = "Response body bytes sent to clients."
    return metric_lines("router_response_bytes_total", "counter", help_text, samples)


def _histogram_lines(slots: Slots) -> list[str]:
    name = "router_request_duration_seconds"
    lines = metric_lines(name, "histogram", "Time from request received to response done.", [])
    for key, slot in sorted(slots.items()):
        base = _arm(key)
        running = 0
        for bound, count in zip((*BOUNDS, math.inf), slot.hist, strict=True):
            running += count
            le = "+Inf" if math.isinf(bound) else repr(bound)
            lines.append(f"{name}_bucket{labels_text({**base, 'le': le})} {running}")
        lines.append(f"{name}_sum{labels_text(base)} {slot.lat_sum!r}")
        lines.append(f"{name}_count{labels_text(base)} {slot.requests}")
    return lines


def request_families(routed: Slots, rejected: Mapping[str, Slot]) -> list[str]:
    """The request families of the page, in order."""
    lines = _requests_lines(routed)
    lines += _errors_lines(routed)
    lines += _bytes_lines(routed)
    lines += _histogram_lines(routed)
    lines += _rejected_lines(rejected)
    return lines
