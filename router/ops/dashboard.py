"""The admin dashboard: one self-contained page and the read-only JSON it polls.

Theory of operation
-------------------
`GET /dashboard` serves a single HTML page (inline CSS and JS, no external
script, font or CDN: the admin port often sits on a closed network). Its
Content-Security-Policy allows only that one script, by its sha256, and
same-origin fetches; the page builds the DOM with `textContent` and SVG
elements only, so no figure or name from the config can become markup.

Every 2 s the page fetches `GET /v1/dashboard` and appends one point per
series to charts kept in the browser (the last 5 minutes): request share per
backend, error rate, p99 latency, shadow agreement, plus bars of drift PSI,
a table of stream timing per arm (time to first token and inter-token p50/p95)
against the route's threshold and the rollout's phase, step and reason. A
chart's x axis is the history the page holds, stamped with the server's time,
so a page opened a minute ago shows a minute across its whole width; a missed
answer breaks the line rather than bridging it. Backends that only get copies
(a shadow route's shadows and secondary) are marked as such: they carry no
traffic of their own, so their rows would otherwise read as idle.

Recent rates, not lifetime averages. `Metrics` only keeps cumulative counts.
`Sampler` keeps a short ring of snapshots of them (at most one a second), and
each answer is the difference between now and the snapshot about `WINDOW`
seconds ago: requests/s, error rate, p50 and p99 of the last ~10 s. The ring
lives in the process, so several open dashboards share it and none of them
changes what another sees. Figures of other parts (agreement, drift) are read
from their owners; a section whose owner is missing or whose store is down is
`null`, and the page shows "no data" there.
"""

from __future__ import annotations

import base64
import hashlib
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from importlib import resources
from typing import Any, Protocol

from aiohttp import web

from router.core.rollout import Rollout
from router.dataplane.metrics import WindowStats
from router.dataplane.routing import CompiledRoute
from router.runtime import Runtime
from router.state.base import StoreUnavailable

POLL_PATH = "/v1/dashboard"
PAGE_PATH = "/dashboard"
WINDOW = 10.0  # seconds of traffic behind each rate and quantile
MIN_GAP = 1.0  # at most one snapshot a second, however many pages poll
_ROLLOUT_KEYS = (
    "kind",
    "phase",
    "step",
    "weight_bp",
    "stable",
    "candidate",
    "active",
    "level",
    "reason",
    "updated_at",
    "updated_by",
    "revision",
)

Snapshot = dict[tuple[str, str], WindowStats]
Weights = Callable[[CompiledRoute, Rollout | None], dict[str, float]]


def _no_weights(route: CompiledRoute, live: Rollout | None) -> dict[str, float]:
    return {}


class LocalCounts(Protocol):
    """The part of `Metrics` read here: cumulative counts of one (route, backend)."""

    def local(self, route: str, backend: str) -> WindowStats: ...


class Agreement(Protocol):
    """Shadow figures (router.shadow.mirror.Mirrors.summary)."""

    async def summary(self, route: str) -> dict[str, Any]: ...


class DriftFigures(Protocol):
    """Drift scores (router.drift.watch.DriftIO.figures); None when a route has no drift."""

    async def figures(self, route: str) -> dict[str, Any] | None: ...


def delta(new: WindowStats, old: WindowStats | None) -> WindowStats:
    """Counts added between two cumulative snapshots of one backend."""
    if old is None:
        return new
    hist = [a - b for a, b in zip(new.hist, old.hist, strict=True)]
    latency = new.latency_sum - old.latency_sum
    return WindowStats(
        new.requests - old.requests, new.errors - old.errors, hist, new.bounds, latency
    )


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 3)


def backend_figures(
    name: str, recent: WindowStats, total: WindowStats, span: float
) -> dict[str, Any]:
    """One backend's row: recent rate, error rate and quantiles, lifetime totals."""
    rate = recent.error_rate()
    return {
        "name": name,
        "rps": round(recent.requests / span, 3) if span > 0 else None,
        "requests": recent.requests,
        "error_rate": None if rate is None else round(rate, 5),
        "p50_ms": _ms(recent.quantile(0.5, 1)),
        "p99_ms": _ms(recent.quantile(0.99, 1)),
        "requests_total": total.requests,
        "errors_total": total.errors,
    }


class Sampler:
    """A ring of cumulative snapshots; answers with what changed over the last WINDOW s."""

    def __init__(self, window: float = WINDOW, clock: Callable[[], float] = time.monotonic) -> None:
        self.window = window
        self.clock = clock
        self._ring: deque[tuple[float, Snapshot]] = deque()

    def recent(self, now: Snapshot) -> tuple[float, Snapshot]:
        """(seconds covered, the snapshot to subtract) after adding `now` to the ring."""
        t = self.clock()
        if not self._ring or t - self._ring[-1][0] >= MIN_GAP:
            self._ring.append((t, now))
        # keep exactly one snapshot at least `window` old: the base of the difference
        while len(self._ring) > 1 and t - self._ring[1][0] >= self.window:
            self._ring.popleft()
        base_t, base = self._ring[0]
        if base is now:  # the first poll: nothing to compare with yet
            return 0.0, {}
        return t - base_t, base


def freshen_reasons(status: dict[str, Any]) -> None:
    """Give each rollout the controller's latest reason when it describes the same state.

    A rollout is stored again only when it moves (phase, step, weight), so its reason
    keeps the counts of that moment ("waiting for data: candidate 6/20"); the
    controller's last verdict (`analysis`, rewritten every judgement) has today's.
    """
    analysis = status.get("analysis")
    if not isinstance(analysis, dict):
        return
    for entry in status.get("routes", []):
        rollout, latest = entry.get("rollout"), analysis.get(entry.get("name"))
        if not rollout or not isinstance(latest, dict) or not latest.get("reason"):
            continue
        if (latest.get("phase"), latest.get("step")) == (rollout.get("phase"), rollout.get("step")):
            rollout["reason"] = latest["reason"]


def rollout_view(live: Rollout | None) -> dict[str, Any] | None:
    """The fields of a rollout the page shows."""
    if live is None:
        return None
    return {key: getattr(live, key) for key in _ROLLOUT_KEYS}


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def agreement_view(summary: dict[str, Any]) -> dict[str, Any] | None:
    """Agreement of each mirrored backend with the primary; None before any comparison.

    The summary gives each agreement as a rate record {k, n, rate, lo, hi}
    (router.shadow.figures.Rate.to_dict); the page wants plain numbers."""
    shadows = summary.get("shadows") or {}
    pairs = {
        str(b): _pair_view(p) for b, p in shadows.items() if isinstance(p, dict) and p.get("n")
    }
    return {"primary": summary.get("primary"), "backends": pairs} if pairs else None


def _pair_view(pair: dict[str, Any]) -> dict[str, Any]:
    raw = pair.get("agreement")
    rate = raw if isinstance(raw, dict) else {"rate": raw}
    mirror = pair.get("mirror")
    problems = pair.get("problems")
    return {
        "n": pair["n"],
        "items": pair.get("items", pair["n"]),
        "agreement": _number(rate.get("rate")),
        "lo": _number(rate.get("lo")),
        "hi": _number(rate.get("hi")),
        "mirrored": mirror.get("sent") if isinstance(mirror, dict) else None,
        "problems": [p["why"] for p in problems] if isinstance(problems, list) else [],
    }


def drift_view(figures: dict[str, Any] | None) -> dict[str, Any] | None:
    """Every scored feature of every stream as one flat list of bars, and the streams
    still collecting their reference (they have no score yet)."""
    if not figures or "streams" not in figures:
        return None
    bars = [
        {
            "series": ser.get("backend") or "inputs",
            "name": f["name"],
            "psi": f["psi"],
            "n": f["n"],
            "alarm": f["alarm"],
        }
        for stream in figures["streams"]
        for ser in stream.get("series", [])
        for f in ser.get("features", [])
    ]
    collecting = [
        {"stream": stream.get("stream"), "have": ref.get("have"), "need": ref.get("need")}
        for stream in figures["streams"]
        if (ref := stream.get("reference") or {}).get("state") == "collecting"
    ]
    return {
        "threshold": figures.get("threshold"),
        "min_samples": figures.get("min_samples"),
        "features": bars,
        "collecting": collecting,
    }


def _copies(spec: object) -> list[str]:
    """Backends that get copies of requests, not traffic: their rows show no rate."""
    names = list(getattr(spec, "shadows", ()) or ())
    secondary = getattr(spec, "secondary", None)
    return [*names, secondary] if isinstance(secondary, str) and secondary else names


class Dashboard:
    """The two handlers and what they read; one per admin app."""

    def __init__(
        self,
        runtime: Runtime,
        metrics: LocalCounts,
        shadow: Agreement | None = None,
        drift: DriftFigures | None = None,
        sampler: Sampler | None = None,
        weights: Weights = _no_weights,
        analysis: Callable[[], Awaitable[dict[str, Any]]] | None = None,
        streams: StreamFigures | None = None,
    ) -> None:
        self.streams = streams  # stream timing per arm (router/shadow/streams.py)
        self.weights = weights  # admin.route_weights (admin imports this module)
        self.analysis = analysis  # the controller's latest verdicts (/v1/status "analysis")
        self.runtime = runtime
        self.metrics = metrics
        self.shadow = shadow
        self.drift = drift
        self.sampler = sampler or Sampler()

    async def page(self, request: web.Request) -> web.Response:
        headers = {
            "Content-Security-Policy": CSP,
            "X-Content-Type-Options": "nosniff",
            "Cache-Control": "no-store",
        }
        return web.Response(text=PAGE, content_type="text/html", charset="utf-8", headers=headers)

    async def poll(self, request: web.Request) -> web.Response:
        return web.json_response(await self.figures(), headers={"Cache-Control": "no-store"})

    async def figures(self) -> dict[str, Any]:
        """The whole answer of GET /v1/dashboard."""
        rt = self.runtime
        routes = list(rt.table.by_name.values())
        now = {
            (r.name, b): self.metrics.local(r.name, b)
            for r in routes
            for b in r.strategy.backends()
        }
        span, base = self.sampler.recent(now)
        entries = [await self._route(r, now, base, span) for r in routes]
        if self.analysis is not None:
            freshen_reasons({"routes": entries, **await self.analysis()})
        return {
            "time": time.time(),
            "window_s": round(span, 3),
            "store": {"kind": rt.store_kind, "ok": rt.store_ok},
            "config": {"hash": rt.config.source_hash, "last_reload_error": rt.last_reload_error},
            "routes": entries,
        }

    async def _route(
        self, route: CompiledRoute, now: Snapshot, base: Snapshot, span: float
    ) -> dict[str, Any]:
        live = self.runtime.live.get(route.name)
        rows = [
            backend_figures(
                b,
                delta(now[(route.name, b)], base.get((route.name, b))),
                now[(route.name, b)],
                span,
            )
            for b in route.strategy.backends()
        ]
        spec = route.spec.strategy
        return {
            "name": route.name,
            "strategy": route.spec.strategy_kind,
            "steps": len(getattr(spec, "steps", ()) or ()),  # 0: not a stepped rollout
            "copies": _copies(spec),
            "weights": self.weights(route, live),
            "rollout": rollout_view(live),
            "backends": rows,
            "agreement": await self._agreement(route.name),
            "drift": await self._drift(route.name),
            "streams": await self._streams(route.name),
        }

    async def _streams(self, route: str) -> list[dict[str, Any]] | None:
        if self.streams is None:
            return None
        try:
            arms: list[dict[str, Any]] = (await self.streams.stream_figures(route))["arms"]
        except StoreUnavailable:
            return None
        return arms or None

    async def _agreement(self, route: str) -> dict[str, Any] | None:
        if self.shadow is None:
            return None
        try:
            return agreement_view(await self.shadow.summary(route))
        except StoreUnavailable:  # the page shows "no data"; the rest still answers
            return None

    async def _drift(self, route: str) -> dict[str, Any] | None:
        if self.drift is None:
            return None
        try:
            return drift_view(await self.drift.figures(route))
        except StoreUnavailable:
            return None


class StreamFigures(Protocol):
    async def stream_figures(self, route: str) -> dict[str, Any]: ...


def find_streams(extensions: Sequence[object]) -> StreamFigures | None:
    """The admin extension that times streams (it has `stream_figures`), if installed."""
    for ext in extensions:
        if callable(getattr(ext, "stream_figures", None)):
            return ext  # type: ignore[return-value]
    return None


def find_drift(extensions: Sequence[object]) -> DriftFigures | None:
    """The admin extension that scores drift (it has `figures`), if one is installed."""
    for ext in extensions:
        if callable(getattr(ext, "figures", None)):
            return ext  # type: ignore[return-value]
    return None


def install_dashboard(app: web.Application, dashboard: Dashboard) -> None:
    """GET /dashboard (the page) and GET /v1/dashboard (its figures); both read-only."""
    app.router.add_get(PAGE_PATH, dashboard.page)
    app.router.add_get(POLL_PATH, dashboard.poll)


# -- the page ---------------------------------------------------------------------
# Everything below is sent as is. The script builds every node with createElement
# and textContent: names and reasons come from config.yaml and the store, and the
# page must never turn them into markup.

_PAGE = resources.files("router.ops") / "page"
_STYLE = (_PAGE / "dashboard.css").read_text(encoding="utf-8")
_SCRIPT = (_PAGE / "dashboard.js").read_text(encoding="utf-8")

# The script is allowed by its hash: nothing else the page might ever contain runs.
_SCRIPT_HASH = base64.b64encode(hashlib.sha256(_SCRIPT.encode()).digest()).decode()
CSP = (
    "default-src 'self'; "
    f"script-src 'sha256-{_SCRIPT_HASH}'; "
    "style-src 'unsafe-inline'; img-src 'self' data:; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
PAGE = (
    '<!doctype html><html lang="en"><head><meta charset="utf-8">'
    '<meta name="viewport" content="width=device-width,initial-scale=1">'
    f"<title>deploy-router dashboard</title><style>{_STYLE}</style></head><body>"
    '<header><h1>deploy-router</h1><span id="state">loading\u2026</span></header>'
    f'<main id="routes"></main><script>{_SCRIPT}</script></body></html>'
)
