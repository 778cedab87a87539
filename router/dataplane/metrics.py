"""Per-route, per-backend request metrics: in memory on the request path, flushed to the store.

Theory of operation
-------------------
`Metrics.record` is on the request path, so it only bumps integers in a slotted
`Slot` found by one dict lookup (plus one `bisect` for the latency bucket). It
keeps *cumulative* counts since start; those feed Prometheus text at /metrics.

Shared windows. The controller must judge a candidate on every replica's
traffic, so about once a second `MetricsFlusher` calls `Metrics.flush(store)`:
each slot's counts minus what it last sent become a delta, attributed to the
fixed 10-second window of epoch time the flush happens in (at most one flush
interval of blur at a window edge), and every delta of every route goes to the
store in ONE `add_counters_many` call. A window is the counter hash
`m:<backend>:<window_start>` of its route, fields `n`, `err`, `lat_sum_ms` and
`b<i>` (count of latency bucket i). `read_window` sums the windows overlapping a
time range, on any replica.

Fixed buckets. Latency buckets are one constant, log-spaced table (0.5 ms to
60 s, each ~1.35x the last, plus an overflow bucket), identical in every
process, so histograms from many replicas and many windows add up exactly and a
quantile read from the sum is accurate to one bucket.

Store outages. When the store raises `StoreUnavailable`, deltas stay pending
and merge into the next flush. At most `max_pending_windows` distinct windows
are kept; beyond that the oldest is dropped and its requests are counted in
`router_metrics_dropped_total`: a long outage costs old data, never memory.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Protocol

import structlog

from router.core.stats import LATENCY_BOUNDS, quantile
from router.dataplane.metric_text import metric_lines, request_families
from router.state.base import StoreUnavailable

log = structlog.get_logger("router.dataplane.metrics")

WINDOW_SECONDS: Final = 10
WINDOW_TTL: Final = 3600.0  # a window hash expires an hour after its last update
MIN_QUANTILE_COUNT: Final = 10  # below this many samples a quantile is not an answer


class CounterStore(Protocol):
    """The part of `StateStore` (router/state/base.py) that metrics use."""

    async def add_counters_many(
        self, batch: Mapping[str, Mapping[str, Mapping[str, int]]], ttl: float
    ) -> None: ...

    async def read_counters(
        self, route: str, names: Sequence[str]
    ) -> dict[str, dict[str, int]]: ...


# Upper bounds in seconds; bucket i counts bounds[i-1] < x <= bounds[i] (Prometheus
# `le`), bucket len(BOUNDS) is the overflow. Never change in place: every replica
# and every stored window depends on this exact table.
# The table is analysis.LATENCY_BOUNDS, so the canary's latency gate reads these
# histograms as they are.
BOUNDS: Final[tuple[float, ...]] = LATENCY_BOUNDS
NBUCKETS: Final = len(BOUNDS) + 1
# Counts per exact status code: a list indexed by the code costs what the status
# class did (one index); codes outside 100..599 count under 0.
NCODES: Final = 600


def window_start(t: float) -> int:
    """The start (epoch seconds) of the fixed 10 s window containing `t`."""
    return int(t // WINDOW_SECONDS) * WINDOW_SECONDS


def window_name(backend: str, start: int) -> str:
    return f"m:{backend}:{start}"


@dataclass(frozen=True, slots=True)
class WindowStats:
    """Summed counts of one backend of one route over a time range."""

    requests: int
    errors: int
    hist: list[int]
    bounds: tuple[float, ...] = BOUNDS
    latency_sum: float = 0.0  # seconds

    def quantile(self, q: float, min_count: int = MIN_QUANTILE_COUNT) -> float | None:
        """Latency q-quantile in seconds, or None with fewer than `min_count` samples."""
        if sum(self.hist) < max(min_count, 1):
            return None
        return quantile(self.hist, q, self.bounds)

    def error_rate(self, min_count: int = 1) -> float | None:
        """errors / requests, or None with fewer than `min_count` requests."""
        if self.requests < max(min_count, 1):
            return None
        return self.errors / self.requests


def step_window_name(backend: str, window: str) -> str:
    """The counter hash of one backend during one rollout step (see `step_window`)."""
    return f"s:{backend}:{window}"


async def read_window(
    store: CounterStore, route: str, backend: str, start: float, end: float
) -> WindowStats:
    """Sum the stored 10 s windows of (route, backend) that overlap [start, end)."""
    first = window_start(start)
    names = [window_name(backend, ws) for ws in range(first, math.ceil(end), WINDOW_SECONDS)]
    hashes = await store.read_counters(route, names) if names else {}
    return _sum_hashes(hashes.values())


async def read_step_window(
    store: CounterStore, route: str, backends: Sequence[str], window: str
) -> dict[str, WindowStats]:
    """Every replica's counts of each backend during one rollout step, in one read."""
    names = [step_window_name(b, window) for b in backends]
    hashes = await store.read_counters(route, names)
    return {b: _sum_hashes([hashes.get(n, {})]) for b, n in zip(backends, names, strict=True)}


def _sum_hashes(hashes: Iterable[Mapping[str, int]]) -> WindowStats:
    requests = errors = lat_ms = 0
    hist = [0] * NBUCKETS
    for fields in hashes:
        requests += int(fields.get("n", 0))
        errors += int(fields.get("err", 0))
        lat_ms += int(fields.get("lat_sum_ms", 0))
        for i in range(NBUCKETS):
            hist[i] += int(fields.get(f"b{i}", 0))
    return WindowStats(requests, errors, hist, BOUNDS, lat_ms / 1000)


def bucket_of(seconds: float) -> int:
    """`bisect.bisect_left(BOUNDS, seconds)`, written out: compiled, it is a few native
    float comparisons instead of a rich comparison of float objects per probe."""
    lo, hi = 0, len(BOUNDS)
    while lo < hi:
        mid = (lo + hi) // 2
        if BOUNDS[mid] < seconds:
            lo = mid + 1
        else:
            hi = mid
    return lo


def _no_step(route: str) -> str | None:
    return None


# [route, backend, Slot.snapshot()] per (route, backend) of one process
Snapshot = list[list[Any]]


def _no_peers() -> list[Snapshot]:
    return []


def _no_role(route: str, backend: str) -> str:
    return ""


class Slot:
    """Cumulative counts of one (route, backend), and what was already flushed."""

    __slots__ = ("codes", "errors", "hist", "lat_sum", "nbytes", "requests", "sent")

    def __init__(self) -> None:
        self.requests = 0
        self.errors = 0
        self.nbytes = 0
        self.lat_sum = 0.0
        self.codes = [0] * NCODES
        self.hist = [0] * NBUCKETS
        # requests, errors, lat_sum_ms, then the histogram, as of the last collect
        self.sent = [0] * (3 + NBUCKETS)

    def snapshot(self) -> dict[str, Any]:
        """The cumulative counts as JSON-ready values (another worker's /metrics adds them)."""
        return {
            "requests": self.requests,
            "errors": self.errors,
            "nbytes": self.nbytes,
            "lat_sum": self.lat_sum,
            "codes": {str(code): n for code, n in enumerate(self.codes) if n},
            "hist": list(self.hist),
        }

    def add(self, snap: Mapping[str, Any]) -> None:
        """Add another worker's `snapshot()` of the same (route, backend)."""
        self.requests += int(snap["requests"])
        self.errors += int(snap["errors"])
        self.nbytes += int(snap["nbytes"])
        self.lat_sum += float(snap["lat_sum"])
        for code, n in dict(snap["codes"]).items():
            c = int(code)
            self.codes[c if 0 <= c < NCODES else 0] += int(n)
        for i, n in enumerate(snap["hist"][: len(self.hist)]):
            self.hist[i] += int(n)

    def take_delta(self) -> dict[str, int]:
        """Fields that changed since the last call, as store counter increments."""
        now = [self.requests, self.errors, round(self.lat_sum * 1000), *self.hist]
        diff = [a - b for a, b in zip(now, self.sent, strict=True)]
        self.sent = now
        if not diff[0]:
            return {}
        out = {"n": diff[0], "err": diff[1], "lat_sum_ms": diff[2]}
        out.update({f"b{i}": d for i, d in enumerate(diff[3:]) if d})
        return out


# window_start -> route -> counter name -> field -> increment
Pending = dict[int, dict[str, dict[str, dict[str, int]]]]
Collector = Callable[[], Iterable[str]]


class Metrics:
    """The process's request metrics; a `Recorder` (see router/runtime.py)."""

    def __init__(self, max_pending_windows: int = 360) -> None:
        # route -> id of its current rollout step, or None: set by the router so
        # that each step's counts land in a hash of their own ("windows per step")
        self.step_window: Callable[[str], str | None] = _no_step
        self._slots: dict[tuple[str, str], Slot] = {}
        self._collectors: list[Collector] = []
        self._pending: Pending = {}
        self.max_pending_windows = max_pending_windows
        self.dropped = 0  # requests whose window was dropped during an outage
        self.flush_failures = 0
        # `--workers N`: the other workers' latest snapshots (router/ops/workers.py), summed
        # into /metrics so that one scrape sees the whole router
        self.peers: Callable[[], list[Snapshot]] = _no_peers
        # how many workers are alive, when some peers are dead workers' last counts
        self.live_workers: Callable[[], int] | None = None
        # (route, backend) -> the backend's role in the route (stable, candidate, shadow,
        # ...), read when /metrics renders (router/ops/roles.py); never per request
        self.role_of: Callable[[str, str], str] = _no_role

    def record(
        self,
        route: str,
        backend: str,
        status: int,
        seconds: float,
        reason: str,
        request_id: str,
        nbytes: int,
    ) -> None:
        slot = self._slots.get((route, backend))
        if slot is None:
            slot = self._slots[(route, backend)] = Slot()
        slot.requests += 1
        slot.codes[status if 0 < status < NCODES else 0] += 1
        if status >= 500:
            slot.errors += 1
        slot.nbytes += nbytes
        slot.lat_sum += seconds
        slot.hist[bucket_of(seconds)] += 1

    def local(self, route: str, backend: str) -> WindowStats:
        """This process's cumulative counts of (route, backend) since start."""
        slot = self._slots.get((route, backend)) or Slot()
        return WindowStats(slot.requests, slot.errors, list(slot.hist), BOUNDS, slot.lat_sum)

    def add_collector(self, fn: Collector) -> None:
        """Add a source of extra exposition lines (gauges of other parts) to /metrics."""
        self._collectors.append(fn)

    # -- store flush --------------------------------------------------------

    def collect(self, now: float) -> None:
        """Move every slot's delta since the last collect into the pending windows."""
        ws = window_start(now)
        for (route, backend), slot in self._slots.items():
            delta = slot.take_delta()
            if not delta:
                continue
            counters = self._pending.setdefault(ws, {}).setdefault(route, {})
            names = [window_name(backend, ws)]
            if (step := self.step_window(route)) is not None:
                names.append(step_window_name(backend, step))
            for name in names:
                merged = counters.setdefault(name, {})
                for key, value in delta.items():
                    merged[key] = merged.get(key, 0) + value
        self._trim_pending()

    def _trim_pending(self) -> None:
        while len(self._pending) > self.max_pending_windows:
            oldest = min(self._pending)
            routes = self._pending.pop(oldest)
            self.dropped += sum(f.get("n", 0) for c in routes.values() for f in c.values())

    def pending_windows(self) -> int:
        return len(self._pending)

    async def flush(
        self, store: CounterStore, now: float | None = None, ttl: float = WINDOW_TTL
    ) -> bool:
        """Send every pending delta in one store call; on an outage keep them. True if sent."""
        self.collect(time.time() if now is None else now)
        if not self._pending:
            return True
        batch: dict[str, dict[str, dict[str, int]]] = {}
        for routes in self._pending.values():
            for route, counters in routes.items():
                into = batch.setdefault(route, {})
                for name, fields in counters.items():  # a step's hash spans windows: sum
                    merged = into.setdefault(name, {})
                    for key, value in fields.items():
                        merged[key] = merged.get(key, 0) + value
        try:
            await store.add_counters_many(batch, ttl)
        except StoreUnavailable:
            self.flush_failures += 1
            return False
        self._pending.clear()
        return True

    # -- Prometheus text ----------------------------------------------------

    def snapshot(self) -> Snapshot:
        """This process's cumulative request counts, JSON-ready, for the other workers."""
        return [[route, backend, slot.snapshot()] for (route, backend), slot in self._slots.items()]

    def _merged(self, peers: list[Snapshot]) -> dict[tuple[str, str], Slot]:
        """Own slots plus every peer's snapshot, as fresh slots (own ones untouched)."""
        merged: dict[tuple[str, str], Slot] = {}
        for key, slot in self._slots.items():
            merged[key] = fresh = Slot()
            fresh.add(slot.snapshot())
        for peer in peers:
            for route, backend, snap in peer:
                key = (str(route), str(backend))
                if key not in merged:
                    merged[key] = Slot()
                merged[key].add(snap)
        return merged

    def exposition(self) -> str:
        """Prometheus text format 0.0.4 of the cumulative counts plus every collector."""
        return "\n".join(self.request_lines() + self.process_lines()) + "\n"

    def request_lines(self) -> list[str]:
        """The request families: this process's counts plus the other workers' (`peers`).

        A slot of no route (nothing matched) is `router_unrouted_requests_total`, one of
        a route but no backend (refused before one was picked) is
        `router_rejected_requests_total`: an empty label would match every `sum by`."""
        peers = self.peers()
        slots = self._merged(peers) if peers else self._slots
        routed: dict[tuple[str, str, str], Slot] = {}
        rejected: dict[str, Slot] = {}
        for (route, backend), slot in slots.items():
            if route and backend:
                routed[(route, backend, self.role_of(route, backend))] = slot
            else:
                rejected[route] = slot
        lines: list[str] = []
        lines += request_families(routed, rejected)
        lines += metric_lines(
            "router_metrics_workers",
            "gauge",
            "Live router processes (the counts above also keep those of workers that died).",
            [({}, 1 + len(peers) if self.live_workers is None else self.live_workers())],
        )
        return lines

    def process_lines(self) -> list[str]:
        """This process's own figures of the metrics' flush, plus every collector."""
        lines = metric_lines(
            "router_metrics_dropped_total",
            "counter",
            "Requests whose metrics were dropped because the state store was unreachable too long.",
            [({}, self.dropped)],
        )
        lines += metric_lines(
            "router_metrics_flush_failures_total",
            "counter",
            "Flushes of the request counts the state store did not take (kept for the next).",
            [({}, self.flush_failures)],
        )
        lines += metric_lines(
            "router_metrics_pending_windows",
            "gauge",
            "10 s windows of request counts waiting for the state store (0 when it answers).",
            [({}, len(self._pending))],
        )
        for fn in self._collectors:
            lines.extend(fn())
        return lines


class MetricsFlusher:
    """Background task: `metrics.flush(store)` every `interval` seconds, and once at stop."""

    def __init__(
        self,
        metrics: Metrics,
        store: CounterStore,
        interval: float = 1.0,
        ttl: float = WINDOW_TTL,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.metrics = metrics
        self.store = store
        self.interval = interval
        self.ttl = ttl
        self.clock = clock
        self._task: asyncio.Task[None] | None = None
        self._down = False

    async def flush_once(self) -> bool:
        ok = await self.metrics.flush(self.store, self.clock(), self.ttl)
        if ok == self._down:  # log transitions only, not every second of an outage
            self._down = not ok
            event = "metrics_flush_resumed" if ok else "metrics_flush_failed"
            log.warning(event, pending_windows=self.metrics.pending_windows())
        return ok

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self.flush_once()
            except Exception:  # a bug in one flush must not stop every later one
                log.exception("metrics_flush_crashed")

    async def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self.run(), name="metrics-flusher")

    async def stop(self) -> None:
        """Cancel the loop and try one last flush so the final second is not lost."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        await self.flush_once()
