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
backend, error rate, p99 latency, shadow agreement, plus bars of drift PSI
against the route's threshold and the rollout's phase, step and reason.

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
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from aiohttp import web

from router.metrics import WindowStats
from router.routing import CompiledRoute
from router.runtime import Runtime
from router.state.base import StoreUnavailable
from router.state.model import Rollout

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
    """Shadow figures (router.mirror.Mirrors.summary)."""

    async def summary(self, route: str) -> dict[str, Any]: ...


class DriftFigures(Protocol):
    """Drift scores (router.drift_io.DriftIO.figures); None when a route has no drift."""

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


def rollout_view(live: Rollout | None) -> dict[str, Any] | None:
    """The fields of a rollout the page shows."""
    if live is None:
        return None
    return {key: getattr(live, key) for key in _ROLLOUT_KEYS}


def agreement_view(summary: dict[str, Any]) -> dict[str, Any] | None:
    """Agreement of each mirrored backend with the primary; None before any comparison."""
    shadows = summary.get("shadows") or {}
    pairs = {
        str(b): {"n": p.get("n", 0), "agreement": p.get("agreement")}
        for b, p in shadows.items()
        if isinstance(p, dict) and p.get("n")
    }
    return {"primary": summary.get("primary"), "backends": pairs} if pairs else None


def drift_view(figures: dict[str, Any] | None) -> dict[str, Any] | None:
    """Every scored feature of every stream as one flat list of bars."""
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
    return {"threshold": figures.get("threshold"), "features": bars}


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
    ) -> None:
        self.weights = weights  # admin.route_weights (admin imports this module)
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
        return {
            "name": route.name,
            "strategy": route.spec.strategy_kind,
            "weights": self.weights(route, live),
            "rollout": rollout_view(live),
            "backends": rows,
            "agreement": await self._agreement(route.name),
            "drift": await self._drift(route.name),
        }

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

_STYLE = """
body{font:14px/1.4 system-ui,sans-serif;margin:0;background:#f6f7f9;color:#1d232b}
header{background:#1d232b;color:#fff;padding:8px 16px;display:flex;gap:16px;align-items:center}
header h1{font-size:16px;margin:0}#state{opacity:.8}
main{padding:12px;display:grid;gap:12px;grid-template-columns:repeat(auto-fill,minmax(520px,1fr))}
section{background:#fff;border:1px solid #d9dde3;border-radius:6px;padding:10px 12px}
h2{font-size:15px;margin:0 0 4px}.muted{color:#6a7380}.bad{color:#b3261e;font-weight:600}
table{border-collapse:collapse;width:100%;margin:6px 0}td,th{padding:2px 6px;text-align:right}
td:first-child,th:first-child{text-align:left}th{font-weight:600;border-bottom:1px solid #d9dde3}
.charts{display:grid;grid-template-columns:1fr 1fr;gap:8px}.chart h3{font-size:12px;margin:0}
.legend span{margin-right:8px;font-size:12px}svg{display:block;width:100%;height:auto}
"""

_SCRIPT = """
"use strict";
const POLL = "/v1/dashboard", EVERY = 2000, KEEP = 150, NS = "http://www.w3.org/2000/svg";
const COLORS = ["#1f6feb", "#d4731d", "#2da44e", "#8250df", "#cf222e", "#6e7781"];
const memo = new Map();  // series key -> last KEEP points
function remember(key, value) {
  let h = memo.get(key);
  if (!h) { h = []; memo.set(key, h); }
  h.push(typeof value === "number" && isFinite(value) ? value : null);
  if (h.length > KEEP) h.shift();
  return h;
}
function el(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined && text !== null) e.textContent = String(text);
  return e;
}
function svg(tag, attrs) {
  const e = document.createElementNS(NS, tag);
  for (const k of Object.keys(attrs)) e.setAttribute(k, String(attrs[k]));
  return e;
}
function fmt(v, digits, unit) {
  return typeof v === "number" ? v.toFixed(digits) + (unit || "") : "-";
}
function spark(title, series, unit, fixedMax) {
  const box = el("div", "chart"), W = 240, H = 60;
  box.append(el("h3", null, title));
  const all = series.flatMap(s => s.values.filter(v => v !== null));
  if (!all.length) { box.append(el("div", "muted", "no data")); return box; }
  const max = fixedMax || Math.max(...all) || 1;
  const g = svg("svg", {viewBox: `0 0 ${W} ${H + 12}`, role: "img"});
  g.append(svg("line", {x1: 0, y1: H, x2: W, y2: H, stroke: "#d9dde3"}));
  series.forEach((s, i) => {
    const pts = [];
    s.values.forEach((v, j) => {
      if (v === null) return;
      const x = W - (s.values.length - 1 - j) * (W / (KEEP - 1));
      pts.push(x.toFixed(1) + "," + (H - (v / max) * (H - 2)).toFixed(1));
    });
    g.append(svg("polyline", {points: pts.join(" "), fill: "none",
      stroke: COLORS[i % COLORS.length], "stroke-width": 1.5}));
  });
  const top = svg("text", {x: 2, y: H + 11, "font-size": 10, fill: "#6a7380"});
  top.textContent = "max " + fmt(max, 2, unit);
  g.append(top);
  box.append(g, legend(series.map(s => s.name)));
  return box;
}
function legend(names) {
  const d = el("div", "legend");
  names.forEach((n, i) => {
    const s = el("span", null, "\\u25A0 " + n);
    s.style.color = COLORS[i % COLORS.length];
    d.append(s);
  });
  return d;
}
function driftBars(drift) {
  const box = el("div", "chart");
  box.append(el("h3", null, "drift PSI (line: threshold)"));
  if (!drift || !drift.features.length) { box.append(el("div", "muted", "no data")); return box; }
  const W = 240, row = 16, H = drift.features.length * row, th = drift.threshold || 0;
  const max = Math.max(th * 1.5, ...drift.features.map(f => f.psi)) || 1;
  const g = svg("svg", {viewBox: `0 0 ${W} ${H + 4}`, role: "img"});
  drift.features.forEach((f, i) => {
    const y = i * row, w = Math.max(1, (f.psi / max) * (W - 110));
    g.append(svg("rect", {x: 110, y: y + 3, width: w, height: row - 6,
      fill: f.alarm ? "#cf222e" : "#2da44e"}));
    const t = svg("text", {x: 0, y: y + row - 4, "font-size": 10});
    t.textContent = f.series + "/" + f.name + " " + f.psi.toFixed(3);
    g.append(t);
  });
  const x = 110 + (th / max) * (W - 110);
  g.append(svg("line", {x1: x, y1: 0, x2: x, y2: H, stroke: "#1d232b", "stroke-dasharray": 3}));
  box.append(g);
  return box;
}
function rolloutLine(r) {
  if (!r) return el("div", "muted", "no rollout");
  const parts = [r.kind, "phase " + r.phase, "step " + r.step,
    "candidate " + (r.weight_bp / 100).toFixed(2) + " %"];
  if (r.active) parts.push("active " + r.active);
  if (r.level) parts.push("level " + r.level);
  const d = el("div", r.phase === "aborted" ? "bad" : null, parts.join(" \\u00B7 "));
  if (r.reason) d.append(el("div", "muted", "reason: " + r.reason));
  return d;
}
function table(route) {
  const t = el("table");
  const head = el("tr");
  ["backend", "weight %", "req/s", "errors %", "p50 ms", "p99 ms", "total"].forEach(
    h => head.append(el("th", null, h)));
  t.append(head);
  for (const b of route.backends) {
    const tr = el("tr");
    const err = b.error_rate === null ? null : b.error_rate * 100;
    [b.name, fmt(route.weights[b.name], 1), fmt(b.rps, 1), fmt(err, 2), fmt(b.p50_ms, 1),
      fmt(b.p99_ms, 1), b.requests_total].forEach(v => tr.append(el("td", null, v)));
    t.append(tr);
  }
  return t;
}
function series(route, figure, pick) {
  return route.backends.map(b => ({name: b.name,
    values: remember(route.name + "|" + figure + "|" + b.name, pick(b))}));
}
function card(route) {
  const s = el("section");
  s.append(el("h2", null, route.name + " (" + route.strategy + ")"), rolloutLine(route.rollout));
  s.append(table(route));
  const sum = route.backends.reduce((a, b) => a + (b.rps || 0), 0);
  const charts = el("div", "charts");
  charts.append(spark("share of requests %",
    series(route, "share", b => sum > 0 ? 100 * (b.rps || 0) / sum : null), " %", 100));
  charts.append(spark("error rate %",
    series(route, "err", b => b.error_rate === null ? null : 100 * b.error_rate), " %"));
  charts.append(spark("p99 latency ms", series(route, "p99", b => b.p99_ms), " ms"));
  const ag = route.agreement ? route.agreement.backends : {};
  charts.append(spark("shadow agreement %", Object.keys(ag).map(name => ({name,
    values: remember(route.name + "|agree|" + name,
      typeof ag[name].agreement === "number" ? 100 * ag[name].agreement : null)})), " %", 100));
  charts.append(driftBars(route.drift));
  s.append(charts);
  return s;
}
function render(data) {
  const store = data.store.ok ? "store ok" : "STORE UNREACHABLE";
  let line = store + " \\u00B7 window " + data.window_s.toFixed(1) + " s \\u00B7 " +
    new Date(data.time * 1000).toLocaleTimeString();
  const refused = data.config.last_reload_error;
  if (refused) line += " \\u00B7 reload refused: " + refused;
  document.getElementById("state").textContent = line;
  const main = document.getElementById("routes");
  main.replaceChildren(...data.routes.map(card));
  if (!data.routes.length) main.append(el("div", "muted", "no routes"));
}
async function poll() {
  try {
    const resp = await fetch(POLL, {cache: "no-store"});
    if (!resp.ok) throw new Error("HTTP " + resp.status);
    render(await resp.json());
  } catch (e) {
    document.getElementById("state").textContent = "cannot read " + POLL + ": " + e.message;
  } finally {
    setTimeout(poll, EVERY);
  }
}
poll();
"""

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
