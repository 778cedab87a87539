"""Capture's I/O: the background pass that turns captured exchanges into records.

Theory of operation.

*Request path* (router/dataplane/capture_copy.py): a captured exchange appends
one tuple of raw pieces to `CaptureSink.pending` when it records; a full
pending list (count or bytes) refuses new taps and counts them
(`dropped{reason="queue_full"}`). A shadow's answer to a captured exchange
reaches `shadow_answer` from the mirror workers (router/shadow/mirror.py),
also one append to a bounded list.

*The pass* (every PASS_INTERVAL, in chunks of PASS_CHUNK with a yield to the loop
between them, like drift's): each tuple becomes a record (router/capture/records.py:
redacted, then encoded); a record whose redaction fails is dropped and counted
(`failed{reason="redaction"}`), never written raw. Records go to their route's
sink: the file sink (router/capture/files.py) or the CloudEvents sink
(router/capture/cloudevents.py), each with its own bounded buffer: a sink that
cannot keep up refuses and the record is counted (`dropped{reason="sink_backlog"}`);
its failures are counted too (`failed{reason="sink_error"}`). Nothing waits
for a sink: memory is bounded by the pending caps and each sink's buffer.

*Labels* (router/drift/labels.py): every replica sees every posted batch of
delayed labels; a label whose request id this replica captured (the last
RECENT ids) is written to that route's sink as a `label` record, which
`routerctl export` joins with the exchange (router/capture/export.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, Final, Protocol

import orjson
import structlog
from aiohttp import web

from router.capture import export
from router.capture.files import FileSink
from router.capture.records import Record, exchange_record, label_record, shadow_record
from router.config.spec import CaptureSpec, Config, RouteSpec
from router.core.redact import RedactionError
from router.dataplane.capture_copy import Captured, CaptureSink
from router.dataplane.metric_text import metric_lines
from router.dataplane.shadow_copy import MirrorCopy
from router.ops.admin import Refusal
from router.runtime import Runtime

log = structlog.get_logger("router.capture")

PASS_INTERVAL: Final = 0.05
PASS_CHUNK: Final = 16  # records made between yields to the loop (~0.5 ms: p99 stays flat)
MAX_SHADOWS: Final = 4096  # shadow answers waiting for the pass, at most
RECENT: Final = 200_000  # captured request ids remembered for their labels


class Sink(Protocol):
    kind: str
    written: dict[tuple[str, str], int]
    failed: dict[str, int]

    def offer(self, route: str, kind: str, record: Record, line: bytes) -> bool: ...

    @property
    def spec(self) -> object: ...

    def depth(self) -> int: ...

    async def flush(self) -> None: ...

    async def close(self) -> None: ...


# route, request id, backend, role, status, latency, body, (primary status, latency), time
Shadowed = tuple[str, str, str, str, int, float, bytes, tuple[int, float], float]


def _bump(counts: dict[tuple[str, str], int], route: str, reason: str) -> None:
    counts[(route, reason)] = counts.get((route, reason), 0) + 1


def _role(runtime: Runtime, route: str, backend: str) -> str:
    """The served arm's role: the live rollout's candidate, else the primary."""
    live = runtime.live.get(route)
    return "candidate" if live is not None and live.candidate == backend else "primary"


class Capture:
    """One per router process: the pass, the sinks, the figures (see the module docstring)."""

    def __init__(self, runtime: Runtime, clock: Callable[[], float] = time.time) -> None:
        self.runtime = runtime
        self.clock = clock
        self.sink = CaptureSink()  # the data plane's side
        self.shadows: list[Shadowed] = []
        self.sinks: dict[str, Sink] = {}  # "file:<path>" | "http:<url>" -> sink
        self.dropped: dict[tuple[str, str], int] = {}  # (route, reason) -> records
        self.failed: dict[tuple[str, str], int] = {}
        self.recent: OrderedDict[str, str] = OrderedDict()  # request id -> route
        self._task: asyncio.Task[None] | None = None
        self._closing: set[asyncio.Task[None]] = set()
        self._idle = True
        self.apply_config(runtime.config)

    # -- wiring --------------------------------------------------------------------
    def apply_config(self, config: Config) -> None:
        """A sink per distinct file path or URL the routes name; unused ones close."""
        wanted = {_key(r.capture): r.capture for r in config.routes if r.capture is not None}
        for key, spec in wanted.items():
            old = self.sinks.get(key)
            if old is None or old.spec != (spec.file or spec.http):  # new, or its caps changed
                new = self.sinks[key] = _open_sink(spec)
                if old is not None:  # counters run on: the figures never go back
                    new.written, new.failed = old.written, old.failed
                    self._close_later(key, old)
        for key in [k for k in self.sinks if k not in wanted]:
            self._close_later(key, self.sinks.pop(key))

    def _close_later(self, key: str, sink: Sink) -> None:
        with contextlib.suppress(RuntimeError):  # no loop: nothing was ever written
            task = asyncio.get_running_loop().create_task(sink.close(), name=f"capture-close:{key}")
            self._closing.add(task)  # referenced until done: never collected mid-close
            task.add_done_callback(self._closing.discard)

    async def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="capture")

    async def stop(self) -> None:
        """The last records out (SIGTERM's order: after the data plane drained)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        with contextlib.suppress(Exception):
            await self.run_pass()
        for sink in self.sinks.values():
            with contextlib.suppress(Exception):
                await sink.close()

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(PASS_INTERVAL)
            try:
                await self.run_pass()
            except Exception:  # a bug in one pass must not stop every later one
                log.exception("capture_pass_crashed")

    # -- the mirror's side ---------------------------------------------------------------
    def shadow_answer(self, copy: MirrorCopy, backend: str, status: int, body: bytes,
                      latency: float) -> None:  # fmt: skip
        """A shadow's answer to a captured exchange (called by the mirror workers)."""
        if not copy.captured:
            return
        if len(self.shadows) >= MAX_SHADOWS:
            _bump(self.dropped, copy.route, "queue_full")
            return
        role = "shadow" if copy.role == "mirror" else copy.role
        primary = (copy.primary_status, copy.primary_latency)
        self.shadows.append((copy.route, copy.request_id, backend, role, status, latency, body,
                             primary, self.clock()))  # fmt: skip

    # -- the pass ------------------------------------------------------------------
    async def run_pass(self) -> int:
        """Every waiting exchange and shadow answer as records, to their sinks."""
        items, shadows = self.sink.take(), self.shadows
        self.shadows = []
        self._idle = not items and not shadows
        done = 0
        for i, item in enumerate(items):
            done += self._exchange(item)
            if i % PASS_CHUNK == PASS_CHUNK - 1:
                await asyncio.sleep(0)
        for i, shadowed in enumerate(shadows):
            done += self._shadow(shadowed)
            if i % PASS_CHUNK == PASS_CHUNK - 1:
                await asyncio.sleep(0)
        await asyncio.gather(*(s.flush() for s in self.sinks.values()))
        return done

    def _exchange(self, item: Captured) -> int:
        route = self._route(item[0])
        if route is None or route.capture is None:
            return 0  # the route was reloaded away: nothing to write it with
        role = _role(self.runtime, route.name, item[1])
        if role not in route.capture.arms:
            return 0
        self._remember(item[3], route.name)
        return self._write(route, "exchange", exchange_record, item, route, role)

    def _shadow(self, s: Shadowed) -> int:
        route = self._route(s[0])
        if route is None or route.capture is None or route.capture.mode == "request":
            return 0
        if "shadow" not in route.capture.arms and s[3] == "shadow":
            return 0
        return self._write(route, "shadow", shadow_record, route, *s[1:])

    def labels(self, items: list[dict[str, Any]]) -> None:
        """Delayed labels of captured requests become records (router/drift/labels.py)."""
        for item in items:
            rid = str(item.get("request_id"))
            name = self.recent.get(rid)
            route = self._route(name) if name is not None else None
            if route is not None and route.capture is not None:
                self._write(route, "label", label_record, route.name, rid, item, self.clock())

    def _write(self, route: RouteSpec, kind: str, make: Callable[..., Record], *args: Any) -> int:
        try:
            record = make(*args)
            line = orjson.dumps(record) + b"\n"
        except (RedactionError, RecursionError, TypeError, ValueError):
            _bump(self.failed, route.name, "redaction")  # dropped, never written raw
            return 0
        sink = self.sinks.get(_key(route.capture)) if route.capture is not None else None
        if sink is None or not sink.offer(route.name, kind, record, line):
            _bump(self.dropped, route.name, "sink_backlog")
            return 0
        return 1

    def _route(self, name: str) -> RouteSpec | None:
        compiled = self.runtime.table.by_name.get(name)
        return compiled.spec if compiled is not None else None

    def _remember(self, rid: str, route: str) -> None:
        self.recent[rid] = route
        if len(self.recent) > RECENT:
            self.recent.popitem(last=False)

    def idle(self) -> bool:
        """Nothing waits for a pass (tests wait for it)."""
        return self._idle and not self.sink.pending and not self.shadows

    # -- figures ---------------------------------------------------------------------
    def metric_lines(self) -> list[str]:
        written: dict[tuple[str, str], int] = {}
        failed = dict(self.failed)
        for sink in self.sinks.values():
            for (route, kind), n in sink.written.items():
                written[(route, kind)] = written.get((route, kind), 0) + n
            for route, n in sink.failed.items():
                failed[(route, "sink_error")] = failed.get((route, "sink_error"), 0) + n
        dropped = dict(self.dropped)
        for route, n in self.sink.dropped.items():
            dropped[(route, "queue_full")] = dropped.get((route, "queue_full"), 0) + n
        lines = metric_lines(
            "router_capture_records_total", "counter", "Captured records written to a sink.",
            [({"route": r, "kind": k}, n) for (r, k), n in sorted(written.items())],
        )  # fmt: skip
        lines += metric_lines(
            "router_capture_dropped_total", "counter",
            "Captured records dropped before a sink took them, by reason.",
            [({"route": r, "reason": why}, n) for (r, why), n in sorted(dropped.items())],
        )  # fmt: skip
        lines += metric_lines(
            "router_capture_failed_total", "counter",
            "Captured records lost: redaction failed (never written raw) or the sink failed.",
            [({"route": r, "reason": why}, n) for (r, why), n in sorted(failed.items())],
        )  # fmt: skip
        pending: list[tuple[dict[str, str], float]] = [
            ({}, len(self.sink.pending) + len(self.shadows))
        ]
        lines += metric_lines(
            "router_capture_queue_depth", "gauge",
            "Captured exchanges waiting for the background pass (redaction, encoding).", pending,
        )  # fmt: skip
        depths = [({"sink": s.kind}, s.depth()) for s in self.sinks.values()]
        lines += metric_lines(
            "router_capture_sink_queue_depth", "gauge", "Records waiting for their sink.", depths
        )
        return lines

    # -- admin API (router/ops/admin.py AdminExtension) -------------------------------
    def install(self, app: web.Application, refusal: Refusal) -> None:
        app.router.add_get("/v1/routes/{name}/export", self._export)

    async def _export(self, request: web.Request) -> web.StreamResponse:
        route = self._route(request.match_info["name"])
        return await export.handle(request, route, self.clock())


def _key(spec: CaptureSpec | None) -> str:
    if spec is None:
        return ""
    return f"file:{spec.file.path}" if spec.file is not None else f"http:{spec.http.url}"  # type: ignore[union-attr]


def _open_sink(spec: CaptureSpec) -> Sink:
    if spec.file is not None:
        return FileSink(spec.file)
    from router.capture.cloudevents import HttpSink  # the aiohttp client only when used

    if spec.http is None:
        raise ValueError("a capture block names no sink")  # config reading refuses it
    sink: Sink = HttpSink(spec.http)
    return sink
