"""Stream figures per arm: who times, where the counts go, how they read back.

`StreamMetrics` hands out `StreamTimer`s (router/dataplane/stream_timing.py) for
streamed answers, to the data plane (role "primary": the answer a client got)
and to the mirror workers (role "shadow"), and keeps their `StreamStats` per
(route, backend, role). Then, off the request path:

- /metrics: `router_stream_first_token_seconds` and
  `router_stream_inter_token_seconds`, histograms by route, backend, the
  backend's `role` in the route (router/ops/roles.py) and `answer`: `served`
  (the client's, role "primary" here) or `mirrored` (this process's counts;
  with --workers N worker 0 adds the others', router/ops/exposition.py).
- the store, about once a second in ONE `add_counters_many` call: each
  stats' increments since the last flush go to the route's counter hash
  `st:<backend>:<role>` (every replica adds to it: what `routerctl status`
  shows) and, for a client's answer during a rollout window, to
  `st:<backend>:<window>` (what the canary's `ttft` gate judges, like the
  request metrics' step windows). Fields: `n` streams, `tok` tokens, `ms`
  total milliseconds, `f<i>` first-token buckets, `g<i>` gap buckets.
- `GET /v1/routes/NAME/streams` (an admin extension): per arm, streams, time
  to first token p50/p95, inter-token p50/p95, tokens per stream and per
  second, mean total; routerctl status ROUTE and the dashboard show it.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final

import structlog
from aiohttp import web

from router.core.stats import LATENCY_BOUNDS, quantile
from router.dataplane.metric_text import metric_lines
from router.dataplane.metrics import NBUCKETS
from router.dataplane.stream_timing import StreamStats, StreamTimer, is_event_stream
from router.runtime import Runtime
from router.state.base import StateStore, StoreUnavailable

log = structlog.get_logger("router.streams")

COUNTER_TTL: Final = 7 * 24 * 3600.0
ROLES: Final = ("primary", "shadow")
_FIELDS: Final = ("n", "tok", "ms", *(f"f{i}" for i in range(NBUCKETS)),
                  *(f"g{i}" for i in range(NBUCKETS)))  # fmt: skip
Key = tuple[str, str, str]  # route, backend, role


def _no_window(route: str) -> str | None:
    return None


def _no_role(route: str, backend: str) -> str:
    return ""


def counter(backend: str, role_or_window: str) -> str:
    return f"st:{backend}:{role_or_window}"


class StreamMetrics:
    """See the module docstring."""

    def __init__(
        self,
        runtime: Runtime,
        store: StateStore,
        *,
        step_window: Callable[[str], str | None] = _no_window,
        flush_interval: float = 1.0,
    ) -> None:
        self.runtime = runtime
        self.store = store
        self.step_window = step_window
        self.flush_interval = flush_interval
        self.stats: dict[Key, StreamStats] = {}
        self._task: asyncio.Task[None] | None = None
        self.role_of: Callable[[str, str], str] = _no_role  # the `role` label (/metrics)

    # -- handing out timers (request path and mirror workers) -----------------------

    def timer(
        self, route: str, backend: str, headers: list[tuple[bytes, bytes]], start: float
    ) -> StreamTimer | None:
        """A timer for a client's answer when it is a stream, else None."""
        return self.timed(route, backend, "primary", headers, start)

    def timed(
        self, route: str, backend: str, role: str, headers: list[tuple[bytes, bytes]], start: float
    ) -> StreamTimer | None:
        if not is_event_stream(headers):
            return None
        key = (route, backend, role)
        stats = self.stats.get(key)
        if stats is None:
            stats = self.stats[key] = StreamStats()
        compiled = self.runtime.table.by_name.get(route)
        llm = compiled is not None and compiled.spec.protocol == "openai"
        return StreamTimer(stats, start, llm)

    # -- Prometheus ---------------------------------------------------------------

    def metric_lines(self) -> list[str]:
        lines: list[str] = []
        for name, attr, text in (
            ("router_stream_first_token_seconds", "first", "Time from request to first token."),
            ("router_stream_inter_token_seconds", "gap", "Time between two token reads."),
        ):
            lines += metric_lines(name, "histogram", text, [])
            for (route, backend, role), stats in sorted(self.stats.items()):
                arm = f'route="{_esc(route)}",backend="{_esc(backend)}"'
                answer = "served" if role == "primary" else "mirrored"
                labels = f'{arm},role="{_esc(self.role_of(route, backend))}",answer="{answer}"'
                counts = stats.first if attr == "first" else stats.gaps
                total = stats.first_sum if attr == "first" else stats.gap_sum
                lines += _histogram(name, labels, counts, total)
        return lines

    def install(self, app: web.Application, refusal: object) -> None:
        app.router.add_get("/v1/routes/{name}/streams", self._handle)

    async def _handle(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if name not in self.runtime.table.by_name:
            message = f"unknown route {name!r}"
            return web.json_response({"error": message, "message": message}, status=404)
        return web.json_response(await self.stream_figures(name))

    # -- the store -------------------------------------------------------------------

    async def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._loop(), name="stream-flush")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        with contextlib.suppress(Exception):  # the last figures are best effort
            await self.flush()

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.flush_interval)
            try:
                await self.flush()
            except Exception:  # a bug in one flush must not stop every later one
                log.exception("stream_flush_crashed")

    async def flush(self) -> bool:
        """Every increment since the last flush in one store call; kept when it fails."""
        batch: dict[str, dict[str, dict[str, int]]] = {}
        taken: list[tuple[StreamStats, list[int]]] = []
        for (route, backend, role), stats in self.stats.items():
            now = stats.counts()
            delta = {f: a - b for f, a, b in zip(_FIELDS, now, stats.sent, strict=True) if a != b}
            if not delta:
                continue
            taken.append((stats, now))
            names = [counter(backend, role)]
            window = self.step_window(route) if role == "primary" else None
            if window is not None:
                names.append(counter(backend, window))
            for name in names:
                batch.setdefault(route, {})[name] = delta
        if not batch:
            return True
        try:
            await self.store.add_counters_many(batch, COUNTER_TTL)
        except StoreUnavailable:
            return False  # `sent` is unchanged: the next flush carries these too
        for stats, now in taken:
            stats.sent = now
        return True

    async def stream_figures(self, route: str) -> dict[str, Any]:
        """Per arm (backend and role), summed over replicas (see the module docstring)."""
        compiled = self.runtime.table.by_name.get(route)
        backends = compiled.strategy.backends() if compiled is not None else ()
        keys = [(b, role) for b in backends for role in ROLES]
        hashes = await self.store.read_counters(route, [counter(b, r) for b, r in keys])
        arms = []
        for backend, role in keys:
            fields = hashes.get(counter(backend, role), {})
            if fields.get("n"):
                arms.append({"backend": backend, "role": role, **arm_figures(fields)})
        return {"route": route, "arms": arms}


async def read_window_hists(
    store: StateStore, route: str, backends: Sequence[str], window: str
) -> dict[str, tuple[int, ...]]:
    """First-token histograms of each backend in one rollout window, all replicas."""
    names = [counter(b, window) for b in backends]
    hashes = await store.read_counters(route, names)
    return {b: first_hist(hashes.get(n, {})) for b, n in zip(backends, names, strict=True)}


def first_hist(fields: Mapping[str, int]) -> tuple[int, ...]:
    return tuple(int(fields.get(f"f{i}", 0)) for i in range(NBUCKETS))


def _hist(fields: Mapping[str, int], prefix: str) -> list[int]:
    return [int(fields.get(f"{prefix}{i}", 0)) for i in range(NBUCKETS)]


def arm_figures(fields: Mapping[str, int]) -> dict[str, Any]:
    """Quantiles (seconds) and means of one arm's summed counters."""
    n, tokens, ms = int(fields.get("n", 0)), int(fields.get("tok", 0)), int(fields.get("ms", 0))
    first, gaps = _hist(fields, "f"), _hist(fields, "g")
    return {
        "streams": n,
        "ttft_p50": quantile(first, 0.5),
        "ttft_p95": quantile(first, 0.95),
        "inter_token_p50": quantile(gaps, 0.5),
        "inter_token_p95": quantile(gaps, 0.95),
        "tokens_per_stream": tokens / n if n else None,
        "tokens_per_second": tokens / (ms / 1000) if ms else None,
        "total_mean": ms / 1000 / n if n else None,
    }


def _esc(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _histogram(name: str, labels: str, counts: Sequence[int], total: float) -> list[str]:
    lines, running = [], 0
    for bound, count in zip((*LATENCY_BOUNDS, math.inf), counts, strict=True):
        running += count
        le = "+Inf" if math.isinf(bound) else repr(bound)
        lines.append(f'{name}_bucket{{{labels},le="{le}"}} {running}')
    lines.append(f"{name}_sum{{{labels}}} {total!r}")
    lines.append(f"{name}_count{{{labels}}} {running}")
    return lines
