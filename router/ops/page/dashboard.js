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
    const span = el("span", null, "\u25A0 " + s.name + " " + num(last, unit));
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
  let text = f.series + " / " + f.name + " \u00B7 PSI " + fmt(f.psi, 3) + " \u00B7 n " + f.n;
  if (few) text += " (under " + minSamples + ": too few to alarm)";
  if (f.psi > max) text += " \u00B7 bar cut at " + fmt(max, 2);
  const row = el("div", "drow");
  row.append(el("div", f.alarm ? "bad" : null, f.alarm ? text + " \u00B7 ALARM" : text));
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
  const d = el("div", r.phase === "aborted" ? "bad" : null, parts.join(" \u00B7 "));
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
  let line = store + " \u00B7 " + rates + " \u00B7 updated " +
    new Date(data.time * 1000).toLocaleTimeString();
  const refused = data.config.last_reload_error;
  if (refused) line += " \u00B7 reload refused: " + refused;
  document.getElementById("state").textContent = line;
  const main = document.getElementById("routes");
  main.replaceChildren(...data.routes.map(r => card(r, data.time)));
  if (!data.routes.length) main.append(el("div", "muted", "no routes"));
}
// The admin token is asked for once and kept for this tab only (sessionStorage): the
// figures need a viewer token; the page itself holds none. A refused token is
// forgotten and asked for again; a dismissed question is not asked again.
const TOKEN_KEY = "deploy-router-admin-token";
let declined = false;
function adminToken() {
  let t = sessionStorage.getItem(TOKEN_KEY);
  if (!t && !declined) {
    t = (window.prompt("Admin API token (viewer or operator):") || "").trim();
    if (t) sessionStorage.setItem(TOKEN_KEY, t);
    else declined = true;
  }
  return t || "";
}
async function poll() {
  try {
    const t = adminToken();
    if (!t) throw new Error("no token given: reload the page to enter one");
    const resp = await fetch(POLL, {cache: "no-store", headers: {"Authorization": "Bearer " + t}});
    if (resp.status === 401 || resp.status === 403) {
      sessionStorage.removeItem(TOKEN_KEY);
      throw new Error("HTTP " + resp.status + ": the token was refused");
    }
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
