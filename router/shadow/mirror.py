"""Shadow mode's I/O: mirror queues, workers, comparison figures, disagreement samples.

Theory of operation
-------------------
The client's answer never waits for a shadow, by construction. The data plane
hands a finished exchange (request copy + the primary's answer, see
`router.dataplane.shadow_copy.MirrorCopy`) to `Mirrors.offer`, which does O(1) work and never
raises: per mirror backend it `put_nowait`s the copy on that backend's bounded
queue, or drops it and counts the drop. Nothing on the request path awaits.

Each mirrored backend has a `Lane`: its OWN `UpstreamPool` (separate from the
data plane's, so a shadow can never take the primary's connections), a queue
of at most `queue_size` copies and `workers_per_backend` named worker tasks. A
worker sends one copy (with `X-Shadow-Request: 1`) through the awaitable client
of router/shadow/client.py, bounded by the backend's `connect_timeout` and
`timeout`; a refused, reset or silent shadow becomes an answer with status 0
("no_answer"). So a slow shadow holds at most its workers and fills its own
queue; its copies are then dropped and counted; other shadows are unaffected.

Memory is bounded three ways: copies per queue, bytes across all queues
(`max_queued_bytes`), and body sizes (the data plane copies at most the route's
`max_body` of a request and ANSWER_MAX_BODY of the primary's answer; larger
ones arrive as None and are counted, never sent).

Each answer is compared with the primary's (router/core/compare.py, pure) and added
to a `Tally` per (route, backend). Figures must add up over replicas, so the
flush task writes every tally and event counter of every route with ONE
`add_counters_many` call about once a second; when the store is down the
increments are put back and go out with the next flush. Disagreements are
rendered by `disagreement_record` (bodies only as the route's sample settings
allow; the request body never unless `store_request_body`) and pushed to the
route's "diffs" list, a few per route per flush, newest kept.

The counter hashes: router/shadow/stored.py; what a route's config says about
judging its copies: router/shadow/judging.py; lanes, breakers and per-route
figures: router/shadow/lanes.py.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Mapping
from time import monotonic, perf_counter
from typing import Any, Final

import structlog

from router.config.spec import BackendSpec, Config
from router.core.compare import Answer, Comparison, compare
from router.core.errors import UpstreamError
from router.core.redact import RedactionError, redactor_for
from router.dataplane.http1 import Header
from router.dataplane.shadow_copy import ANSWER_MAX_BODY, MirrorCopy
from router.dataplane.stream_timing import StreamTimer
from router.dataplane.upstream import UpstreamPool
from router.runtime import Runtime
from router.shadow.client import Clock, fetch, request_bytes
from router.shadow.figures import counter_name, escape
from router.shadow.hints import add_hints
from router.shadow.judging import judging, protocol_of, settings_of, window_of
from router.shadow.lanes import Lane, RouteFigures
from router.shadow.records import sample_line
from router.shadow.stored import DIFFS, agreement_pairs, read_diffs, read_summary, window_counter
from router.shadow.streams import StreamMetrics
from router.shadow.totals import MirrorTotals
from router.state.base import StateStore, StoreUnavailable
from strategies.shadow import SampleSpec

log = structlog.get_logger("router.shadow.mirror")

COUNTER_TTL: Final = 7 * 24 * 3600.0  # figures outlive a quiet weekend
Answered = Callable[[str, str, str, str, bytes], None]
# the copy, the shadow backend, its status, body and latency: capture pairs it (router/capture/)
Captured = Callable[[MirrorCopy, str, int, bytes, float], None]


def _size(copy: MirrorCopy) -> int:
    return len(copy.body or b"") + len(copy.primary_body or b"")


class Mirrors:
    """The `ShadowSink` of the data plane; see the module docstring."""

    def __init__(
        self,
        runtime: Runtime,
        store: StateStore,
        *,
        queue_size: int = 1024,
        workers_per_backend: int = 4,
        flush_interval: float = 1.0,
        max_queued_bytes: int = 64 * 1024 * 1024,
        counter_ttl: float = COUNTER_TTL,
    ) -> None:
        self.runtime = runtime
        self.store = store
        self.queue_size = queue_size
        self.workers_per_backend = workers_per_backend
        self.flush_interval = flush_interval
        self.max_queued_bytes = max_queued_bytes
        self.counter_ttl = counter_ttl
        self.queued_bytes = 0
        self.lanes: dict[str, Lane] = {}
        self.routes: dict[str, RouteFigures] = {}
        self.errors = 0  # offers that failed inside (a bug); the request went on regardless
        self._specs: Mapping[str, BackendSpec] = runtime.config.backends
        self._rid_name = runtime.config.headers.request_id.lower().encode()
        self._retired: list[UpstreamPool] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._running = False
        self._store_down = False
        self._idle = asyncio.Event()  # set when the last queued copy was handled
        # told every judged 2xx answer of a mirror (route, backend, role, request id,
        # body): delayed labels score it (router/drift/watch.py `remember_answer`)
        self.answered: Answered | None = None
        self.streams: StreamMetrics | None = None  # times shadows' event streams
        self.totals = MirrorTotals()  # this process's counts since start, for /metrics
        self.capture: Captured | None = None  # told each answer to a captured exchange

    # -- wiring -------------------------------------------------------------------

    def apply_config(self, config: Config) -> None:
        """New backend specs: a changed backend gets a fresh pool, a removed one stops."""
        self._specs = config.backends
        self._rid_name = config.headers.request_id.lower().encode()
        for name, lane in list(self.lanes.items()):
            spec = config.backends.get(name)
            if spec is None:
                self._stop_lane(self.lanes.pop(name))
            elif spec != lane.pool.spec:
                self._retire(lane.pool)
                lane.pool = UpstreamPool(spec)
        self._retired = [p for p in self._retired if p._tasks]  # closed ones need nothing

    async def start(self) -> None:
        if self._running:
            return
        self._running = True
        self._spawn(self._flush_loop(), "mirror-flush")

    async def stop(self) -> None:
        """Cancel workers and the flusher, flush once more, close every pool."""
        self._running = False
        for lane in self.lanes.values():
            self._stop_lane(lane)
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        with contextlib.suppress(Exception):  # the last figures are best effort
            await self.flush()
        for pool in [*(lane.pool for lane in self.lanes.values()), *self._retired]:
            await pool.close()
        self.lanes.clear()
        self._retired.clear()

    def _spawn(self, coro: Any, name: str) -> None:
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.add(task)  # referenced until done: never collected mid-flight
        task.add_done_callback(self._tasks.discard)

    def _stop_lane(self, lane: Lane) -> None:
        for task in lane.workers:
            task.cancel()
        self._retire(lane.pool)
        while not lane.queue.empty():
            self.queued_bytes -= _size(lane.queue.get_nowait())

    def _retire(self, pool: UpstreamPool) -> None:
        pool.retire()
        self._retired.append(pool)

    # -- the request path: O(1), never raises ----------------------------------------

    def offer(self, copy: MirrorCopy) -> None:
        try:
            self._offer(copy)
        except Exception:  # a bug here must never reach the client's request
            self.errors += 1

    def _offer(self, copy: MirrorCopy) -> None:
        figures = self._figures(copy.route)
        figures.count("offered")
        if copy.body is None or copy.primary_body is None:
            why = "oversize_body" if copy.body is None else "oversize_answer"
            figures.count(why)
            for backend in copy.backends:
                self.totals.drop(copy.route, backend, why)
            return
        size, now = _size(copy), monotonic()
        for backend in copy.backends:
            lane = self.lanes.get(backend) or self._open_lane(backend)
            if lane is not None and copy.held is None and lane.breaker.is_open(now):
                figures.count(lane.down_key)
                figures.count(lane.dropped_key)
                self.totals.drop(copy.route, backend, "shadow_down")
                continue
            if lane is None or self.queued_bytes + size > self.max_queued_bytes:
                figures.count(lane.dropped_key if lane else f"dropped|{escape(backend)}")
                self.totals.drop(copy.route, backend, "memory_full" if lane else "no_lane")
                continue
            try:
                lane.queue.put_nowait(copy)
            except asyncio.QueueFull:
                figures.count(lane.dropped_key)
                self.totals.drop(copy.route, backend, "queue_full")
                continue
            self.queued_bytes += size

    def _figures(self, route: str) -> RouteFigures:
        found = self.routes.get(route)
        if found is None:
            found = self.routes[route] = RouteFigures()
        return found

    def _open_lane(self, backend: str) -> Lane | None:
        """The first copy for a backend starts its lane (only mirrored backends get one)."""
        spec = self._specs.get(backend)
        if spec is None or not self._running:
            return None
        lane = Lane(backend, UpstreamPool(spec), asyncio.Queue(self.queue_size))
        for i in range(self.workers_per_backend):
            task = asyncio.get_running_loop().create_task(
                self._work(lane), name=f"mirror:{backend}:{i}"
            )
            lane.workers.add(task)
            self._tasks.add(task)
            task.add_done_callback(lane.workers.discard)
            task.add_done_callback(self._tasks.discard)
        self.lanes[backend] = lane
        return lane

    # -- workers ---------------------------------------------------------------

    async def _work(self, lane: Lane) -> None:
        while True:
            copy = await lane.queue.get()
            self.queued_bytes -= _size(copy)
            lane.busy += 1
            try:
                await self._mirror_one(lane, copy)
            except asyncio.CancelledError:
                raise
            except Exception:  # one bad copy must not stop the lane
                self._figures(copy.route).count(lane.errors_key)
                self.totals.fail(copy.route, lane.name, "error")
                log.exception("mirror_failed", route=copy.route, backend=lane.name)
            finally:
                lane.busy -= 1
                if lane.queue.empty() and self.idle():
                    self._idle.set()

    async def _mirror_one(self, lane: Lane, copy: MirrorCopy) -> None:
        if not protocol_of(self.runtime, copy.route).inference(copy.method, copy.target):
            self._figures(copy.route).count("not_inference")  # metadata, health: not judged
            return
        if copy.held is not None:  # answered already (an automation route's model)
            self.judge(copy, lane.name, Answer(*copy.held))
            return
        pool, body = lane.pool, copy.body or b""
        rid = (self._rid_name, copy.request_id.encode())
        rewrite = settings_of(self.runtime, copy.route).rewrite_for(lane.name)
        extra, own = b"", frozenset[bytes]()
        if rewrite is not None:
            rewritten = rewrite.body(body) if body else body
            if rewritten is None:  # not a JSON object: this arm's request cannot be made
                self._figures(copy.route).count(lane.rewrite_key)
                self.totals.drop(copy.route, lane.name, "rewrite_failed")
                return
            body, extra, own = rewritten, rewrite.lines, rewrite.names
        data = request_bytes(pool, copy.method, copy.target, copy.headers, body, rid, extra, own)
        self._figures(copy.route).count(lane.sent_key)
        if lane.breaker.is_open(monotonic()):  # queued before the shadow went down
            self._figures(copy.route).count(lane.down_key)
            self._figures(copy.route).count(lane.dropped_key)
            self.totals.drop(copy.route, lane.name, "shadow_down")
            return
        self.totals.send(copy.route, lane.name)
        started = perf_counter()
        clock = self._clock(copy.route, lane.name, started)
        try:
            status, answer = await fetch(
                pool, data, head_only=copy.method == b"HEAD", limit=ANSWER_MAX_BODY + 1, clock=clock
            )
        except (UpstreamError, TimeoutError) as exc:
            status, answer = 0, b""  # counted as no_answer by the comparison
            why = exc.reason if isinstance(exc, UpstreamError) else "timeout"
            self.totals.fail(copy.route, lane.name, why)
        self._breaker(lane, status)
        self.judge(copy, lane.name, Answer(status, answer, perf_counter() - started))

    def _clock(self, route: str, backend: str, started: float) -> Clock | None:
        """A shadow's event stream is timed like the client's, as role "shadow"."""
        streams = self.streams
        if streams is None:
            return None

        def clock(headers: list[Header]) -> StreamTimer | None:
            return streams.timed(route, backend, "shadow", headers, started)

        return clock

    def _breaker(self, lane: Lane, status: int) -> None:
        if status:
            lane.breaker.answered()
        elif lane.breaker.failed(monotonic()):
            log.warning(
                "shadow not answering: copies paused",
                backend=lane.name,
                seconds=lane.breaker.open_until - monotonic(),
            )

    def judge(self, copy: MirrorCopy, backend: str, shadow: Answer) -> Comparison:
        """Compare one shadow answer with the primary's, item by item, in the route's
        protocol; tally it under the route's compare id; keep a sample."""
        settings, protocol, cid = judging(self.runtime, copy.route)
        primary = Answer(copy.primary_status, copy.primary_body or b"", copy.primary_latency)
        c = compare(
            settings.compare,
            primary,
            shadow,
            protocol=protocol,
            float_tolerance=settings.float_tolerance,
        )
        figures = self._figures(copy.route)
        if copy.captured and self.capture is not None:
            self.capture(copy, backend, shadow.status, shadow.body, shadow.latency_s)
        if self.answered is not None and 200 <= shadow.status < 300:
            self.answered(copy.route, backend, copy.role, copy.request_id, shadow.body)
        figures.tally(counter_name(backend, cid)).add(c)
        self.totals.judged(copy.route, backend, c)
        if (current := window_of(self.runtime, copy.route)) is not None:
            figures.window_tally(window_counter(backend, current, cid)).add(c)
        if not c.agree and settings.samples.enabled and backend != settings.secondary:
            self._keep_sample(copy, backend, c, shadow.body, settings.samples)
        return c

    def _keep_sample(
        self, copy: MirrorCopy, backend: str, c: Comparison, body: bytes, spec: SampleSpec
    ) -> None:
        """Redacted as the route says (router/core/redact.py); one that cannot be is dropped."""
        figures = self._figures(copy.route)
        route = self.runtime.table.by_name.get(copy.route)
        red = redactor_for(route.spec.redact) if route is not None else None
        try:
            figures.samples.append(sample_line(copy, backend, c, body, spec, red))
        except (RedactionError, RecursionError, ValueError):
            figures.count("sample_redaction_failed")

    # -- flushing --------------------------------------------------------------

    async def _flush_loop(self) -> None:
        while True:
            await asyncio.sleep(self.flush_interval)
            try:
                await self.flush()
            except Exception:  # a bug in one flush must not stop every later one
                log.exception("mirror_flush_crashed")

    async def flush(self) -> bool:
        """Counters of every route in one store call, then the new samples; False
        when the store is down (everything is kept for the next flush)."""
        batch = {route: d for route, f in self.routes.items() if (d := f.drain())}
        try:
            if batch:
                await self.store.add_counters_many(batch, self.counter_ttl)
            await self._push_samples()
        except StoreUnavailable:
            for route, drained in batch.items():
                self.routes[route].restore(drained)
            self._health(False)
            return False
        self._health(True)
        return True

    async def _push_samples(self) -> None:
        for route, figures in list(self.routes.items()):
            if not figures.samples:
                continue
            spec = settings_of(self.runtime, route).samples
            items = list(figures.samples)  # oldest first: the stored list ends newest first
            figures.samples.clear()
            for i, item in enumerate(items):
                try:
                    await self.store.push_sample(route, DIFFS, item, spec.max, spec.ttl)
                except StoreUnavailable:
                    figures.samples.extendleft(reversed(items[i:]))
                    raise

    def _health(self, ok: bool) -> None:
        if ok == self._store_down:  # log transitions only, not every second of an outage
            self._store_down = not ok
            log.warning("mirror_flush_resumed" if ok else "mirror_flush_failed")

    # -- reading -----------------------------------------------------------------

    def idle(self) -> bool:
        """True when no copy is queued or being sent."""
        return all(lane.queue.empty() and not lane.busy for lane in self.lanes.values())

    async def wait_idle(self) -> None:
        """Return once `idle()`; bound it with `asyncio.timeout` (e.g. before stop)."""
        if not self.idle():
            self._idle.clear()
            await self._idle.wait()

    def queue_depths(self) -> dict[str, int]:
        return {name: lane.queue.qsize() for name, lane in self.lanes.items()}

    async def summary(self, route: str) -> dict[str, Any]:
        """Figures of a route summed over replicas (see router/shadow/stored.py)."""
        settings, protocol, cid = judging(self.runtime, route)
        body = await read_summary(self.store, route, settings, self._mirrored(route), cid)
        body["protocol"] = protocol.word
        add_hints(body, protocol, {f.key: f.kind for f in settings.compare})
        body["local"] = {
            "queue": self.queue_depths(),
            "queued_bytes": self.queued_bytes,
            "offer_errors": self.errors,
            "store_ok": not self._store_down,
        }
        return body

    def _mirrored(self, route: str) -> tuple[str, ...]:
        compiled = self.runtime.table.by_name.get(route)
        return compiled.strategy.backends() if compiled is not None else ()

    async def agreement(self, route: str) -> dict[str, Any] | None:
        """Agreement of each mirrored backend with the primary, summed over replicas
        (the automation ladder's figure); None before any comparison."""
        settings, _, cid = judging(self.runtime, route)
        body = await read_summary(self.store, route, settings, self._mirrored(route), cid)
        return agreement_pairs(body)

    async def diffs(self, route: str, n: int = 20) -> list[dict[str, Any]]:
        """The newest `n` sampled disagreements of the route, newest first."""
        return await read_diffs(self.store, route, n)
