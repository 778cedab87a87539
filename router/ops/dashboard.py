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

_STYLE = """
body{font:14px/1.4 system-ui,sans-serif;margin:0;background:#f6f7f9;color:#1d232b}
header{background:#1d232b;color:#fff;padding:8px 16px;display:flex;gap:16px;align-items:center}
header h1{font-size:16px;margin:0}#state{opacity:.85}
main{padding:12px;display:grid;gap:12px;grid-template-columns:repeat(auto-fill,minmax(min(560px,100%),1fr))}
section{background:#fff;border:1px solid #d9dde3;border-radius:6px;padding:10px 12px;min-width:0}
h2{font-size:15px;margin:0 0 4px}.muted{color:#6a7380}.bad{color:#b3261e;font-weight:600}
.reason{color:#6a7380;font-size:12px;overflow-wrap:anywhere}
table{border-collapse:collapse;width:100%;margin:6px 0;font-variant-numeric:tabular-nums}
td,th{padding:2px 6px;text-align:right;white-space:nowrap}
td:first-child,th:first-child{text-align:left}.scroll{overflow-x:auto}
th{font-weight:600;border-bottom:1px solid #d9dde3}
.charts{display:grid;grid-template-columns:repeat(auto-fit,minmax(240px,1fr));gap:10px 16px}
.chart{min-width:0}.chart h3{font-size:12px;margin:0 0 2px}.wide{grid-column:1/-1}
.legend span{margin-right:10px;font-size:12px;white-space:nowrap}
svg{display:block;width:100%;height:auto;overflow:hidden}
.drow{font-size:12px;margin:2px 0 6px;overflow-wrap:anywhere}
.track{position:relative;height:9px;background:#f0f2f4;border-radius:2px}
.bar{height:9px;border-radius:2px;min-width:1px}.ok{background:#2da44e}.few{background:#afb8c1}
.alarm{background:#cf222e}
.warn{color:#9a6700;font-size:12px;overflow-wrap:anywhere}
.th{position:absolute;top:-2px;width:0;height:13px;border-left:2px dashed #1d232b}
"""

_SCRIPT = """
"use strict";
const POLL = "/v1/dashboard", EVERY = 2000, KEEP = 150, NS = "http://www.w3.org/2000/svg";
const COLORS = ["#1f6feb", "#d4731d", "#2da44e", "#8250df", "#cf222e", "#6e7781"];
const memo = new Map();  // series key -> the last KEEP points {t: epoch s, v: number|null}
function remember(key, t, value) {
  let h = memo.get(key);
  if (!h) { h = []; memo.set(key, h); }
  h.push({t, v: typeof value === "number" && isFinite(value) ? value : null});
  if (h.length > KEEP) h.shift();
  return h;
}
function el(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined && text !== null) e.textContent = String(text);
  return e;
}
function svg(tag, attrs, text) {
  const e = document.createElementNS(NS, tag);
  for (const k of Object.keys(attrs)) e.setAttribute(k, String(attrs[k]));
  if (text !== undefined) e.textContent = text;
  return e;
}
function fmt(v, digits, unit) {
  return typeof v === "number" && isFinite(v) ? v.toFixed(digits) + (unit || "") : "-";
}
function num(v, unit) {  // as many decimals as the size of the figure deserves
  if (typeof v !== "number" || !isFinite(v)) return "-";
  const a = Math.abs(v);
  return fmt(v, a >= 100 || a === 0 ? 0 : a >= 10 ? 1 : a >= 1 ? 2 : 3, unit);
}
function ago(seconds) {
  if (seconds >= 90) return "-" + (seconds / 60).toFixed(1) + " min";
  return "-" + Math.round(seconds) + " s";
}
function runs(points) {  // consecutive non-null points: a missing answer breaks the line
  const out = [];
  let cur = [];
  for (const p of points) {
    if (p.v === null) { if (cur.length) out.push(cur); cur = []; } else cur.push(p);
  }
  if (cur.length) out.push(cur);
  return out;
}
function spark(title, series, unit, fixedMax, cap) {
  const box = el("div", "chart"), W = 300, H = 70, TOP = 12;
  box.append(el("h3", null, title));
  const all = series.flatMap(s => s.points.filter(p => p.v !== null));
  if (!all.length) { box.append(el("div", "muted", "no data yet")); return box; }
  const max = fixedMax || Math.min(cap || Infinity, Math.max(...all.map(p => p.v)) * 1.1) || 1;
  const t1 = Math.max(...all.map(p => p.t)), t0 = Math.min(...all.map(p => p.t));
  const span = Math.max(t1 - t0, EVERY / 1000);  // the x axis is the history held so far
  const X = t => W - 4 - ((t1 - t) / span) * (W - 8), Y = v => H - (v / max) * (H - TOP);
  const g = svg("svg", {viewBox: `0 0 ${W} ${H + 14}`, role: "img"});
  g.append(svg("line", {x1: 0, y1: H, x2: W, y2: H, stroke: "#c4c9d0"}));
  g.append(svg("line", {x1: 0, y1: TOP, x2: W, y2: TOP, stroke: "#eceef1"}));
  const lab = (x, y, anchor, text) => svg("text",
    {x, y, "font-size": 10, fill: "#6a7380", "text-anchor": anchor}, text);
  g.append(lab(2, TOP - 3, "start", num(max, unit)), lab(2, H - 3, "start", "0"));
  g.append(lab(2, H + 12, "start", ago(t1 - t0)), lab(W - 2, H + 12, "end", "now"));
  series.forEach((s, i) => {
    const color = COLORS[i % COLORS.length];
    for (const run of runs(s.points)) {
      if (run.length === 1) {
        g.append(svg("circle", {cx: X(run[0].t), cy: Y(run[0].v), r: 2.5, fill: color}));
        continue;
      }
      const pts = run.map(p => X(p.t).toFixed(1) + "," + Y(p.v).toFixed(1)).join(" ");
      g.append(svg("polyline", {points: pts, fill: "none", stroke: color, "stroke-width": 1.5}));
    }
  });
  box.append(g, legend(series, unit));
  return box;
}
function legend(series, unit) {
  const d = el("div", "legend");
  series.forEach((s, i) => {
    const last = s.points.length ? s.points[s.points.length - 1].v : null;
    const span = el("span", null, "\\u25A0 " + s.name + " " + num(last, unit));
    span.style.color = COLORS[i % COLORS.length];
    d.append(span);
  });
  return d;
}
function driftBars(drift) {
  const box = el("div", "chart wide");
  const th = typeof drift.threshold === "number" ? drift.threshold : null;
  box.append(el("h3", null, "drift PSI per feature (dashed: alarm threshold " +
    num(th) + "; red: alarm)"));
  for (const c of drift.collecting || [])
    box.append(el("div", "muted", c.stream + ": collecting reference, " + c.have + "/" +
      c.need + " requests"));
  if (!drift.features.length) {
    if (!(drift.collecting || []).length) box.append(el("div", "muted", "no scores yet"));
    return box;
  }
  // one runaway feature must not flatten the others: past 5x the threshold a bar is full
  const top = Math.max((th || 0) * 1.5, ...drift.features.map(f => f.psi)) || 1;
  const max = th ? Math.min(top, 5 * th) : top;
  for (const f of drift.features) box.append(driftRow(f, max, th, drift.min_samples));
  return box;
}
function driftRow(f, max, th, minSamples) {
  const few = typeof minSamples === "number" && f.n < minSamples;
  let text = f.series + " / " + f.name + " \\u00B7 PSI " + fmt(f.psi, 3) + " \\u00B7 n " + f.n;
  if (few) text += " (under " + minSamples + ": too few to alarm)";
  if (f.psi > max) text += " \\u00B7 bar cut at " + fmt(max, 2);
  const row = el("div", "drow");
  row.append(el("div", f.alarm ? "bad" : null, f.alarm ? text + " \\u00B7 ALARM" : text));
  const track = el("div", "track");
  const bar = el("div", "bar " + (f.alarm ? "alarm" : few ? "few" : "ok"));
  bar.style.width = Math.min(100, (100 * f.psi) / max).toFixed(1) + "%";
  track.append(bar);
  if (th !== null) {
    const mark = el("div", "th");
    mark.style.left = ((100 * th) / max).toFixed(1) + "%";
    track.append(mark);
  }
  row.append(track);
  return row;
}
function rolloutLine(route) {
  const r = route.rollout;
  if (!r) return el("div", "muted", "no rollout");
  const step = route.steps ? (r.step + 1) + " of " + route.steps : String(r.step + 1);
  const parts = [r.kind, "phase " + r.phase, "step " + step,
    "candidate at " + (r.weight_bp / 100).toFixed(2) + " %"];
  if (r.active) parts.push("active " + r.active);
  if (r.level) parts.push("level " + r.level);
  const d = el("div", r.phase === "aborted" ? "bad" : null, parts.join(" \\u00B7 "));
  if (r.updated_at) d.append(el("div", "reason", "since " +
    new Date(r.updated_at * 1000).toLocaleTimeString() + (r.reason ? ": " + r.reason : "")));
  return d;
}
function table(route) {
  const t = el("table"), copies = route.copies || [];
  const head = el("tr");
  ["backend", "weight %", "req/s", "errors %", "p50 ms", "p99 ms", "requests total"].forEach(
    h => head.append(el("th", null, h)));
  t.append(head);
  for (const b of route.backends) {
    const tr = el("tr");
    const err = b.error_rate === null ? null : b.error_rate * 100;
    const copy = copies.includes(b.name);
    const cells = copy ? [b.name + " (gets copies)", "-", "-", "-", "-", "-", "-"] :
      [b.name, fmt(route.weights[b.name], 1), fmt(b.rps, 1), fmt(err, 2), fmt(b.p50_ms, 1),
        fmt(b.p99_ms, 1), b.requests_total];
    cells.forEach(v => tr.append(el("td", null, v)));
    t.append(tr);
  }
  return t;
}
function streams(route) {
  const t = el("table"), head = el("tr");
  ["streams of", "role", "n", "TTFT p50 ms", "TTFT p95 ms", "inter-token p50 ms",
    "inter-token p95 ms", "tokens/stream"].forEach(h => head.append(el("th", null, h)));
  t.append(head);
  const ms = v => typeof v === "number" ? fmt(1000 * v, 0) : "-";
  for (const a of route.streams) {
    const tr = el("tr");
    [a.backend, a.role, a.streams, ms(a.ttft_p50), ms(a.ttft_p95), ms(a.inter_token_p50),
      ms(a.inter_token_p95), typeof a.tokens_per_stream === "number" ?
        fmt(a.tokens_per_stream, 1) : "-"].forEach(v => tr.append(el("td", null, v)));
    t.append(tr);
  }
  return t;
}
function series(route, t, figure, pick) {
  const copies = route.copies || [];
  return route.backends.filter(b => !copies.includes(b.name)).map(b => ({name: b.name,
    points: remember(route.name + "|" + figure + "|" + b.name, t, pick(b))}));
}
function agreement(route, t) {
  const ag = route.agreement ? route.agreement.backends : {};
  const shown = spark("shadow agreement with " + (route.agreement ? route.agreement.primary :
    "primary") + " %", Object.keys(ag).map(name => ({name, points: remember(
      route.name + "|agree|" + name, t, typeof ag[name].agreement === "number" ?
        100 * ag[name].agreement : null)})), " %", 100);
  for (const name of Object.keys(ag)) {
    const a = ag[name];
    shown.append(el("div", "muted", name + ": " + a.items + " items in " + a.n + " requests" +
      (typeof a.lo === "number" ?
        ", 99 % bounds " + fmt(100 * a.lo, 1) + "-" + fmt(100 * a.hi, 1) + " %" : "")));
    (a.problems || []).forEach(why => shown.append(el("div", "warn", why)));
  }
  return shown;
}
function card(route, t) {
  const s = el("section");
  s.append(el("h2", null, route.name + " (" + route.strategy + ")"), rolloutLine(route));
  const wrap = el("div", "scroll");  // a narrow screen scrolls the table, not the page
  wrap.append(table(route));
  if (route.streams) wrap.append(streams(route));
  s.append(wrap);
  const sum = route.backends.reduce((a, b) => a + (b.rps || 0), 0);
  const charts = el("div", "charts");
  charts.append(spark("share of requests %",
    series(route, t, "share", b => sum > 0 ? 100 * (b.rps || 0) / sum : null), " %", 100));
  charts.append(spark("error rate %",
    series(route, t, "err", b => b.error_rate === null ? null : 100 * b.error_rate), " %", 0, 100));
  charts.append(spark("p99 latency ms", series(route, t, "p99", b => b.p99_ms), " ms"));
  if (route.agreement || (route.copies || []).length) charts.append(agreement(route, t));
  if (route.drift) charts.append(driftBars(route.drift));
  s.append(charts);
  return s;
}
function render(data) {
  const store = data.store.ok ? "store ok" : "STORE UNREACHABLE";
  const rates = data.window_s > 0 ? "rates over the last " + data.window_s.toFixed(1) + " s" :
    "rates from the next poll";
  let line = store + " \\u00B7 " + rates + " \\u00B7 updated " +
    new Date(data.time * 1000).toLocaleTimeString();
  const refused = data.config.last_reload_error;
  if (refused) line += " \\u00B7 reload refused: " + refused;
  document.getElementById("state").textContent = line;
  const main = document.getElementById("routes");
  main.replaceChildren(...data.routes.map(r => card(r, data.time)));
  if (!data.routes.length) main.append(el("div", "muted", "no routes"));
}
async function poll() {
  try {
    const resp = await fetch(POLL, {cache: "no-store"});
    if (!resp.ok) throw new Error("HTTP " + resp.status);
    render(await resp.json());
  } catch (e) {
    document.getElementById("state").textContent = "cannot read " + POLL + ": " + e.message +
      " (showing the last answer)";
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
