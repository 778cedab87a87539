"""Metrics: histogram quantiles, Prometheus text, flush/read round trip, outages."""

from __future__ import annotations

import asyncio
import random
import re
import time
from collections.abc import Mapping, Sequence
from itertools import pairwise

import pytest

from router.core.stats import quantile
from router.dataplane.metrics import (
    BOUNDS,
    NBUCKETS,
    Metrics,
    MetricsFlusher,
    WindowStats,
    read_window,
    window_start,
)
from router.state.base import StateStore, StoreUnavailable
from router.state.redis import RedisStore
from tests.support.redis_server import RedisServer

T0 = 1_700_000_000.0  # a window boundary (divisible by 10)


class CounterDict:
    """A dict-backed store with the two counter calls; `down` makes it unreachable."""

    def __init__(self) -> None:
        self.data: dict[str, dict[str, dict[str, int]]] = {}
        self.down = False
        self.calls = 0
        self.ttls: list[float] = []

    async def add_counters_many(
        self, batch: Mapping[str, Mapping[str, Mapping[str, int]]], ttl: float
    ) -> None:
        if self.down:
            raise StoreUnavailable("down")
        self.calls += 1
        self.ttls.append(ttl)
        for route, counters in batch.items():
            for name, fields in counters.items():
                target = self.data.setdefault(route, {}).setdefault(name, {})
                for key, value in fields.items():
                    target[key] = target.get(key, 0) + value

    async def read_counters(self, route: str, names: Sequence[str]) -> dict[str, dict[str, int]]:
        if self.down:
            raise StoreUnavailable("down")
        stored = self.data.get(route, {})
        return {n: dict(stored.get(n, {})) for n in names}


def record(m: Metrics, route: str, backend: str, status: int, seconds: float) -> None:
    m.record(route, backend, status, seconds, "weight", "rid", 10)


def test_bounds_are_fixed_log_spaced_table() -> None:
    """Buckets run 0.5 ms..60 s, strictly rising by 1.2-1.5x, so replicas' histograms add up."""
    assert BOUNDS[0] == 0.0005
    assert BOUNDS[-1] == 60.0
    assert 38 <= len(BOUNDS) <= 45
    assert len(BOUNDS) + 1 == NBUCKETS
    ratios = [b / a for a, b in pairwise(BOUNDS)]
    assert all(1.2 < r < 1.5 for r in ratios)


@pytest.mark.parametrize("q", [0.5, 0.9, 0.99])
def test_quantile_accurate_to_one_bucket(q: float) -> None:
    """The histogram quantile lands in the same or a neighbouring bucket as the exact one."""
    rng = random.Random(7)
    values = [rng.lognormvariate(-4.0, 1.0) for _ in range(20_000)]
    m = Metrics()
    for v in values:
        record(m, "r", "b", 200, v)
    estimate = m.local("r", "b").quantile(q)
    exact = sorted(values)[int(q * len(values)) - 1]
    assert estimate is not None
    assert exact / 1.4 <= estimate <= exact * 1.4


def test_quantile_edge_cases() -> None:
    """Empty histograms give None; overflow reports the top bound; q=0 the bottom."""
    empty = [0] * NBUCKETS
    assert quantile(empty, 0.5, BOUNDS) is None
    overflow = [0] * NBUCKETS
    overflow[-1] = 5
    assert quantile(overflow, 0.99, BOUNDS) == BOUNDS[-1]
    first = [0] * NBUCKETS
    first[0] = 4
    assert quantile(first, 0.5, BOUNDS) == pytest.approx(BOUNDS[0] / 2)


def test_window_stats_need_minimum_count() -> None:
    """Below the minimum sample a quantile or an error rate is None, never a guess."""
    hist = [0] * NBUCKETS
    hist[3] = 5
    stats = WindowStats(requests=5, errors=1, hist=hist)
    assert stats.quantile(0.5, min_count=10) is None
    assert stats.quantile(0.5, min_count=5) is not None
    assert stats.error_rate() == pytest.approx(0.2)
    assert stats.error_rate(min_count=6) is None
    assert WindowStats(0, 0, [0] * NBUCKETS).error_rate() is None


def test_errors_and_status_codes_counted() -> None:
    """Statuses >= 500 (incl. 502 connect failure, 504 timeout) are errors; 4xx are not.
    Each status code is its own series, labelled with the backend's role."""
    m = Metrics()
    m.role_of = lambda route, backend: "stable"
    for status in (200, 200, 201, 304, 404, 500, 502, 504):
        record(m, "r", "b", status, 0.01)
    stats = m.local("r", "b")
    assert (stats.requests, stats.errors) == (8, 3)
    text = m.exposition()
    arm = 'route="r",backend="b",role="stable"'
    for code, n in (("200", 2), ("201", 1), ("304", 1), ("404", 1), ("502", 1), ("504", 1)):
        assert f'router_requests_total{{{arm},code="{code}"}} {n}' in text
    assert f"router_request_errors_total{{{arm}}} 3" in text


def test_unrouted_and_rejected_requests_have_families_of_their_own() -> None:
    """No route: router_unrouted_requests_total; a route but no backend (refused before one
    was picked): router_rejected_requests_total. Never route="" or backend="", which any
    `sum by` would merge with everything."""
    m = Metrics()
    record(m, "", "", 404, 0.001)
    record(m, "iris", "", 413, 0.001)
    record(m, "iris", "v1", 200, 0.01)
    text = m.exposition()
    assert 'router_unrouted_requests_total{code="404"} 1' in text
    assert 'router_rejected_requests_total{route="iris",code="413"} 1' in text
    assert 'route=""' not in text
    assert 'backend=""' not in text
    assert 'router_requests_total{route="iris",backend="v1",role="",code="200"} 1' in text


_SAMPLE = re.compile(
    r'^[a-zA-Z_:][a-zA-Z0-9_:]*(\{[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\]|\\.)*"'
    r'(,[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\]|\\.)*")*\})? (-?[0-9.e+-]+|\+Inf|-Inf|NaN)$'
)
_META = re.compile(r"^# (HELP|TYPE) [a-zA-Z_:][a-zA-Z0-9_:]* .+$")


def test_prometheus_text_parses() -> None:
    """Every exposition line is a HELP/TYPE comment or a valid sample, label values escaped."""
    m = Metrics()
    record(m, 'we"ird\\route', "b\nx", 200, 0.003)
    record(m, "iris", "iris-v1", 503, 0.2)
    m.add_collector(
        lambda: ["# HELP extra_gauge An extra.", "# TYPE extra_gauge gauge", "extra_gauge 3"]
    )
    text = m.exposition()
    assert text.endswith("\n")
    for line in text.splitlines():
        assert _SAMPLE.match(line) or _META.match(line), line
    assert "extra_gauge 3" in text
    assert 'route="we\\"ird\\\\route"' in text


def test_histogram_exposition_is_cumulative() -> None:
    """Bucket counts rise to _count at le=+Inf; _sum is the seconds total."""
    m = Metrics()
    for v in (0.0004, 0.004, 0.04, 100.0):
        record(m, "r", "b", 200, v)
    text = m.exposition()
    buckets = re.findall(r'router_request_duration_seconds_bucket\{.*le="([^"]+)"\} (\d+)', text)
    counts = [int(c) for _, c in buckets]
    assert counts == sorted(counts)
    assert buckets[0] == ("0.0005", "1")
    assert buckets[-1] == ("+Inf", "4")
    assert 'router_request_duration_seconds_count{route="r",backend="b",role=""} 4' in text
    total = re.search(r"router_request_duration_seconds_sum\{.*\} (\S+)", text)
    assert total is not None
    assert float(total.group(1)) == pytest.approx(100.0444)


async def test_flush_read_round_trip() -> None:
    """Recorded requests come back from read_window with the same counts and histogram."""
    store, m = CounterDict(), Metrics()
    for i in range(50):
        record(m, "iris", "v2", 500 if i % 10 == 0 else 200, 0.001 * (i + 1))
    record(m, "iris", "v1", 200, 0.5)
    assert await m.flush(store, now=T0 + 3)
    assert store.calls == 1
    assert store.ttls == [3600.0]
    stats = await read_window(store, "iris", "v2", T0, T0 + 10)
    local = m.local("iris", "v2")
    assert (stats.requests, stats.errors) == (50, 5)
    assert stats.hist == local.hist
    assert stats.latency_sum == pytest.approx(local.latency_sum, abs=0.001)
    assert stats.quantile(0.5) == local.quantile(0.5)
    assert (await read_window(store, "iris", "v1", T0, T0 + 10)).requests == 1


async def test_flush_sends_only_deltas_into_time_windows() -> None:
    """Each flush sends what happened since the last one, under the window of its time."""
    store, m = CounterDict(), Metrics()
    record(m, "r", "b", 200, 0.01)
    await m.flush(store, now=T0 + 1)
    await m.flush(store, now=T0 + 2)  # nothing new: no store call
    assert store.calls == 1
    record(m, "r", "b", 200, 0.01)
    record(m, "r", "b", 200, 0.01)
    await m.flush(store, now=T0 + 12)
    assert store.data["r"][f"m:b:{int(T0)}"]["n"] == 1
    assert store.data["r"][f"m:b:{int(T0) + 10}"]["n"] == 2
    assert (await read_window(store, "r", "b", T0 + 5, T0 + 15)).requests == 3
    assert (await read_window(store, "r", "b", T0 + 10, T0 + 20)).requests == 2


async def test_deltas_kept_across_store_outage() -> None:
    """While the store is down deltas stay pending and arrive whole once it is back."""
    store, m = CounterDict(), Metrics()
    store.down = True
    for k in range(3):
        record(m, "r", "b", 200, 0.01)
        assert not await m.flush(store, now=T0 + 10 * k)
    assert m.pending_windows() == 3
    store.down = False
    assert await m.flush(store, now=T0 + 30)
    assert m.pending_windows() == 0
    assert (await read_window(store, "r", "b", T0, T0 + 40)).requests == 3
    assert m.dropped == 0


async def test_outage_drops_oldest_windows_beyond_bound() -> None:
    """Beyond max_pending_windows the oldest window is dropped and its requests counted."""
    store, m = CounterDict(), Metrics(max_pending_windows=2)
    store.down = True
    for k in range(4):
        for _ in range(k + 1):
            record(m, "r", "b", 200, 0.01)
        await m.flush(store, now=T0 + 10 * k)
    assert m.pending_windows() == 2
    assert m.dropped == 1 + 2
    assert "router_metrics_dropped_total 3" in m.exposition()
    store.down = False
    await m.flush(store, now=T0 + 40)
    assert (await read_window(store, "r", "b", T0, T0 + 50)).requests == 3 + 4


def test_window_start_is_fixed_ten_seconds() -> None:
    """Windows are epoch-aligned 10 s buckets, the same on every replica."""
    assert window_start(T0 + 9.99) == int(T0)
    assert window_start(T0 + 10) == int(T0) + 10


async def test_flusher_flushes_periodically_and_on_stop() -> None:
    """The flusher task sends within an interval, and stop() sends the last deltas."""
    store, m = CounterDict(), Metrics()
    flusher = MetricsFlusher(m, store, interval=0.02)
    await flusher.start()
    record(m, "r", "b", 200, 0.01)
    for _ in range(100):
        if store.calls:
            break
        await asyncio.sleep(0.01)
    assert store.calls >= 1
    record(m, "r", "b", 200, 0.01)
    await flusher.stop()
    assert sum(c.get("n", 0) for c in store.data["r"].values()) == 2


async def test_round_trip_through_real_stores(store: StateStore) -> None:
    """MemoryStore and RedisStore both give back exactly what two replicas flushed."""
    now = time.time()
    replicas = [Metrics(), Metrics()]
    for k, m in enumerate(replicas):
        for i in range(30):
            record(m, "iris", "v2", 503 if i < k * 3 else 200, 0.002 * (i + 1))
        assert await m.flush(store, now=now)
    stats = await read_window(store, "iris", "v2", now - 5, now + 5)
    assert (stats.requests, stats.errors) == (60, 3)
    summed = [
        a + b
        for a, b in zip(
            replicas[0].local("iris", "v2").hist, replicas[1].local("iris", "v2").hist, strict=True
        )
    ]
    assert stats.hist == summed


async def test_redis_outage_keeps_deltas(fresh_redis: RedisServer) -> None:
    """With redis-server stopped the flush fails and keeps deltas; after restart they all land."""
    store, m = RedisStore(fresh_redis.url), Metrics()
    await store.start()
    try:
        now = time.time()
        record(m, "r", "b", 200, 0.01)
        assert await m.flush(store, now=now)
        fresh_redis.stop()
        record(m, "r", "b", 500, 0.01)
        assert not await m.flush(store, now=now)
        fresh_redis.start()
        assert await m.flush(store, now=now)
        stats = await read_window(store, "r", "b", now - 5, now + 5)
        assert (stats.requests, stats.errors) == (2, 1)
    finally:
        await store.close()


async def test_step_windows_sum_across_pending_windows_and_replicas() -> None:
    """Counts of one rollout step land in one hash, summed over flushes and replicas."""
    from router.dataplane.metrics import read_step_window
    from router.state.memory import MemoryStore

    store = MemoryStore()
    one, two = Metrics(), Metrics()
    for m in (one, two):
        m.step_window = lambda route: "r1-1000" if route == "iris" else None
    for i in range(30):
        one.record("iris", "v2", 500 if i % 3 == 0 else 200, 0.01, "canary", "", 0)
    one.collect(100.0)  # a failed flush leaves this pending in window 100 ...
    for _ in range(5):
        one.record("iris", "v2", 200, 0.01, "canary", "", 0)
    assert await one.flush(store, now=125.0)  # ... and this lands in window 120
    two.record("iris", "v2", 500, 0.02, "canary", "", 0)
    assert await two.flush(store, now=126.0)
    stats = await read_step_window(store, "iris", ["v2", "v1"], "r1-1000")
    assert (stats["v2"].requests, stats["v2"].errors) == (36, 11)
    assert stats["v1"].requests == 0
