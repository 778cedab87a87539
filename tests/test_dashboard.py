"""Dashboard: the self-contained page, its CSP, and the figures of GET /v1/dashboard."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import re
import shutil
from asyncio.subprocess import PIPE
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from router.config.spec import Config, MatchSpec, RouteSpec
from router.dataplane.metrics import Metrics
from router.dataplane.routing import CompiledRoute, RouteTable
from router.ops.admin import build_admin_app, route_weights
from router.ops.dashboard import _SCRIPT, POLL_PATH, Dashboard, Sampler, delta
from router.runtime import Runtime
from router.shadow.figures import Rate
from router.state.base import StoreUnavailable
from strategies.shadow import Shadow as ShadowStrategy
from strategies.shadow import ShadowSpec
from tests.test_admin import AUTH, TOKEN, make_runtime

Client = TestClient[web.Request, web.Application]


class Clock:
    """A simulated monotonic clock."""

    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


class Shadow:
    """Shadow figures shaped like router.shadow.mirror.Mirrors.summary; `down`: an outage."""

    def __init__(self) -> None:
        self.down = False

    async def summary(self, route: str) -> dict[str, Any]:
        if self.down:
            raise StoreUnavailable("redis down")
        # agreement as Mirrors.summary gives it: a rate record, not a bare number
        agree = {"n": 40, "agreement": Rate(38, 40).to_dict(), "mirror": {"sent": 41}}
        shadows = {"iris-v2": agree, "iris-v1": {"n": 0, "agreement": Rate(0, 0).to_dict()}}
        return {"route": route, "primary": "iris-v1", "shadows": shadows if route == "iris" else {}}

    async def diffs(self, route: str, n: int = 20) -> list[dict[str, Any]]:
        return []


class Drift:
    """Drift scores shaped like router.drift.watch.DriftIO.figures (and an admin extension)."""

    async def figures(self, route: str) -> dict[str, Any] | None:
        if route != "iris":
            return None
        feature = {"name": "petal", "psi": 0.31, "n": 500, "threshold": 0.2, "alarm": True}
        series = [{"backend": None, "features": [feature]}]
        fitted = {"state": "fitted", "id": "r1", "features": ["petal"]}
        collecting = {"state": "collecting", "have": 40, "need": 2000}
        return {
            "route": route,
            "threshold": 0.2,
            "min_samples": 100,
            "streams": [
                {"stream": "inputs", "reference": fitted, "series": series},
                {"stream": "outputs", "reference": collecting, "series": []},
            ],
        }

    def install(self, app: web.Application, refusal: Any) -> None:
        return None

    def metric_lines(self) -> list[str]:
        return []


def record(
    metrics: Metrics, backend: str, n: int, status: int = 200, seconds: float = 0.01
) -> None:
    for i in range(n):
        metrics.record("iris", backend, status, seconds, "weight", f"r{i}", 10)


@pytest.fixture
def metrics() -> Metrics:
    return Metrics()


@pytest.fixture
async def client(metrics: Metrics) -> AsyncIterator[Client]:
    app = build_admin_app(make_runtime(), metrics, TOKEN, shadow=Shadow(), extensions=[Drift()])
    async with TestClient(TestServer(app, host="127.0.0.1"), headers=AUTH) as c:
        yield c


def by_name(items: list[dict[str, Any]], name: str) -> dict[str, Any]:
    return next(x for x in items if x["name"] == name)


async def test_page_is_self_contained_html_with_strict_csp(client: Client) -> None:
    """/dashboard is HTML with a CSP that allows only its own script (by hash) and polls."""
    resp = await client.get("/dashboard")
    assert resp.status == 200
    assert resp.headers["Content-Type"] == "text/html; charset=utf-8"
    csp = resp.headers["Content-Security-Policy"]
    assert "default-src 'self'" in csp
    assert "style-src 'unsafe-inline'" in csp
    page = await resp.text()
    scripts = re.findall(r"<script>(.*?)</script>", page, re.S)
    assert len(scripts) == 1
    digest = base64.b64encode(hashlib.sha256(scripts[0].encode()).digest()).decode()
    assert f"script-src 'sha256-{digest}'" in csp
    assert f'"{POLL_PATH}"' in scripts[0]
    assert "<script src" not in page
    assert "<link" not in page
    assert "innerHTML" not in page
    assert "https://" not in page


async def test_poll_needs_a_token_and_shows_routes(client: Client, metrics: Metrics) -> None:
    """/v1/dashboard is a read: 401 without a token; with one, routes, live weights, rollout
    phase and reason. The page itself (no figures in it) needs none."""
    record(metrics, "iris-v1", 6)
    record(metrics, "iris-v2", 2, status=503)
    anonymous = {"Authorization": ""}
    assert (await client.get(POLL_PATH, headers=anonymous)).status == 401
    assert (await client.get("/dashboard", headers=anonymous)).status == 200
    resp = await client.get(POLL_PATH)
    assert resp.status == 200
    body = await resp.json()
    assert [r["name"] for r in body["routes"]] == ["iris", "fraud"]
    iris = by_name(body["routes"], "iris")
    assert iris["weights"] == {"iris-v1": 75.0, "iris-v2": 25.0}
    assert iris["rollout"]["phase"] == "progressing"
    assert iris["rollout"]["step"] == 1
    assert iris["rollout"]["weight_bp"] == 2500
    assert "reason" in iris["rollout"]
    v2 = by_name(iris["backends"], "iris-v2")
    assert (v2["requests_total"], v2["errors_total"], v2["error_rate"]) == (2, 2, 1.0)
    assert by_name(iris["backends"], "iris-v1")["error_rate"] == 0.0
    assert by_name(body["routes"], "fraud")["rollout"] is None
    assert body["store"] == {"kind": "memory", "ok": True}


async def test_poll_shows_agreement_and_drift(client: Client) -> None:
    """Mirrored backends' agreement and drift PSI bars with the threshold; null elsewhere."""
    body = await (await client.get(POLL_PATH)).json()
    iris, fraud = by_name(body["routes"], "iris"), by_name(body["routes"], "fraud")
    pair = iris["agreement"]["backends"]["iris-v2"]
    assert list(iris["agreement"]["backends"]) == ["iris-v2"]  # never compared: left out
    assert (pair["n"], pair["agreement"], pair["mirrored"]) == (40, 0.95, 41)
    assert pair["lo"] < 0.95 < pair["hi"]
    assert iris["drift"] == {
        "threshold": 0.2,
        "min_samples": 100,
        "features": [{"series": "inputs", "name": "petal", "psi": 0.31, "n": 500, "alarm": True}],
        "collecting": [{"stream": "outputs", "have": 40, "need": 2000}],
    }
    assert fraud["agreement"] is None
    assert fraud["drift"] is None


async def test_poll_is_read_only(client: Client) -> None:
    """POST to the dashboard paths is refused (405): the page can change nothing."""
    assert (await client.post(POLL_PATH)).status == 405
    assert (await client.post("/dashboard")).status == 405


async def test_store_outage_leaves_section_empty() -> None:
    """Agreement unreadable (store down): that section is null, the rest still answers."""
    shadow = Shadow()
    shadow.down = True
    dash = Dashboard(make_runtime(), Metrics(), shadow, Drift(), weights=route_weights)
    body = await dash.figures()
    iris = by_name(body["routes"], "iris")
    assert iris["agreement"] is None
    assert iris["drift"] is not None


def sampled(runtime: Runtime, metrics: Metrics, clock: Clock) -> Dashboard:
    return Dashboard(runtime, metrics, sampler=Sampler(window=10.0, clock=clock))


async def test_rates_cover_recent_window_only(metrics: Metrics) -> None:
    """Requests/s, error rate and p99 come from the last ~10 s, not from lifetime counts."""
    clock = Clock()
    dash = sampled(make_runtime(), metrics, clock)
    record(metrics, "iris-v1", 100, status=500, seconds=2.0)  # old, slow, failing traffic
    first = by_name(by_name((await dash.figures())["routes"], "iris")["backends"], "iris-v1")
    assert first["rps"] is None  # one snapshot: no rate yet
    for _ in range(12):
        clock.t += 1.0
        record(metrics, "iris-v1", 5, seconds=0.004)
        body = await dash.figures()
    row = by_name(by_name(body["routes"], "iris")["backends"], "iris-v1")
    assert body["window_s"] == 10.0
    assert row["rps"] == 5.0
    assert row["error_rate"] == 0.0
    assert row["p99_ms"] is not None
    assert row["p99_ms"] < 10
    assert row["requests_total"] == 160
    assert row["errors_total"] == 100


def test_delta_subtracts_every_count(metrics: Metrics) -> None:
    """delta() of two cumulative snapshots is exactly the traffic in between."""
    record(metrics, "iris-v1", 3, status=502, seconds=0.5)
    old = metrics.local("iris", "iris-v1")
    record(metrics, "iris-v1", 4, seconds=0.001)
    d = delta(metrics.local("iris", "iris-v1"), old)
    assert (d.requests, d.errors, sum(d.hist)) == (4, 0, 4)
    assert d.latency_sum == pytest.approx(0.004)


# A DOM just big enough for the page's script: elements that record children, text and
# attributes. Each poll answers the same figures, 2 s later than the one before.
_NODE_SHIM = """
const fs = require("fs");
function node(tag) { return { tag, children: [], style: {}, textContent: "", className: "",
  attrs: {}, append(...c) { this.children.push(...c); },
  replaceChildren(...c) { this.children = c; }, setAttribute(k, v) { this.attrs[k] = v; } }; }
const els = { state: node("span"), routes: node("main") };
global.document = { createElement: node, createElementNS: (ns, t) => node(t),
  getElementById: id => els[id] };
const data = JSON.parse(fs.readFileSync(process.argv[2], "utf8"));
let answered = 0;
const answer = () => ({...data, time: data.time + 2 * answered++});
const kept = {};
let asked = 0;
const sent = [];
global.sessionStorage = { getItem: k => (k in kept ? kept[k] : null),
  setItem: (k, v) => { kept[k] = v; }, removeItem: k => { delete kept[k]; } };
global.window = { prompt: () => { asked++; return "tok"; } };
global.fetch = async (url, opts) => { sent.push(opts.headers.Authorization);
  return { ok: true, status: 200, json: async () => answer() }; };
let polls = 0;
global.setTimeout = fn => { if (++polls < 3) Promise.resolve().then(fn); };
eval(fs.readFileSync(process.argv[3], "utf8"));
process.on("exit", () => {
  const text = [], lines = [];
  (function walk(n) {
    if (n.textContent) text.push(n.textContent);
    if (n.tag === "polyline") lines.push(n.attrs.points);
    n.children.forEach(walk);
  })(els.routes);
  console.log(JSON.stringify({ state: els.state.textContent, text, lines, asked, sent }));
});
"""


async def render_page(tmp_path: Path, dash: Dashboard) -> dict[str, Any]:
    """What the page's script shows after three polls of `dash`'s figures, run under node."""
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed")
    (tmp_path / "data.json").write_text(json.dumps(await dash.figures()))
    (tmp_path / "page.js").write_text(_SCRIPT)
    (tmp_path / "shim.js").write_text(_NODE_SHIM)
    args = [node, str(tmp_path / "shim.js"), str(tmp_path / "data.json"), str(tmp_path / "page.js")]
    proc = await asyncio.create_subprocess_exec(*args, stdout=PIPE, stderr=PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 0, err.decode()
    shown: dict[str, Any] = json.loads(out)
    return shown


@pytest.mark.parametrize("with_data", [True, False])
async def test_page_script_renders_without_errors(tmp_path: Path, with_data: bool) -> None:
    """The page's script renders full and empty answers (no data anywhere) without a JS error."""
    metrics = Metrics()
    if with_data:
        record(metrics, "iris-v1", 30, status=503)
    shadow, drift = (Shadow(), Drift()) if with_data else (None, None)
    dash = Dashboard(make_runtime(), metrics, shadow, drift, weights=route_weights)
    shown = await render_page(tmp_path, dash)
    assert shown["state"].startswith("store ok")
    assert shown["asked"] == 1  # the token is asked for once, then kept for the session
    assert shown["sent"] == ["Bearer tok"] * 3
    assert "iris (pair)" in shown["text"]
    assert "errors %" in shown["text"]
    if with_data:
        assert "inputs / petal \u00b7 PSI 0.310 \u00b7 n 500 \u00b7 ALARM" in shown["text"]
        assert "outputs: collecting reference, 40/2000 requests" in shown["text"]
    else:  # three charts of two routes, each saying so rather than failing
        assert shown["text"].count("no data yet") == 6


async def test_page_plots_agreement_of_real_summaries(tmp_path: Path) -> None:
    """Agreement given as a rate record (as Mirrors.summary does) is plotted as a percentage."""
    dash = Dashboard(make_runtime(), Metrics(), Shadow(), Drift(), weights=route_weights)
    shown = await render_page(tmp_path, dash)
    assert "\u25a0 iris-v2 95.0 %" in shown["text"]  # the legend's latest value
    assert any(t.startswith("iris-v2: 40 items in 40 requests, 99 % bounds") for t in shown["text"])


async def test_page_charts_span_their_history(tmp_path: Path) -> None:
    """Three polls 2 s apart fill a chart's width, oldest at the left edge, newest at the right."""
    metrics = Metrics()
    record(metrics, "iris-v1", 30, status=503)
    shown = await render_page(tmp_path, Dashboard(make_runtime(), metrics, weights=route_weights))
    assert shown["lines"]  # error rate and p99 of iris-v1
    for points in shown["lines"]:
        xs = [float(p.split(",")[0]) for p in points.split()]
        assert len(xs) == 3
        assert xs[0] < 10
        assert xs[-1] > 290


async def test_poll_marks_backends_that_get_copies() -> None:
    """A shadow route lists its shadows as copies, so the page shows no traffic share for them."""
    spec = RouteSpec("m", MatchSpec("/m"), "shadow", ShadowSpec("m-v1", ("m-v2",)))
    table = RouteTable([CompiledRoute(spec, ShadowStrategy(spec.strategy))])  # type: ignore[arg-type]
    runtime = Runtime(config=Config(routes=(spec,)), table=table, config_path="x.yaml")
    body = await Dashboard(runtime, Metrics(), weights=route_weights).figures()
    assert body["routes"][0]["copies"] == ["m-v2"]
    assert body["routes"][0]["steps"] == 0


class Streams:
    """Stream timing per arm, as router/shadow/streams.py answers it."""

    async def stream_figures(self, route: str) -> dict[str, Any]:
        arm = {"streams": 412, "ttft_p50": 0.103, "ttft_p95": 0.118, "inter_token_p50": 0.101,
               "inter_token_p95": 0.104, "tokens_per_stream": 20.0}  # fmt: skip
        arms = [{"backend": "iris-v1", "role": "primary", **arm},
                {"backend": "iris-v2", "role": "shadow", **arm, "ttft_p95": 0.131}]  # fmt: skip
        return {"route": route, "arms": arms if route == "iris" else []}


async def test_page_shows_stream_timing_per_arm(tmp_path: Path) -> None:
    """TTFT and inter-token p50/p95 per arm, in ms, for routes with streamed answers only."""
    dash = Dashboard(make_runtime(), Metrics(), weights=route_weights, streams=Streams())
    body = await dash.figures()
    assert [r["streams"] is not None for r in body["routes"]] == [True, False]
    shown = await render_page(tmp_path, dash)
    cells = shown["text"]
    assert "TTFT p95 ms" in cells
    assert cells.count("inter-token p95 ms") == 1  # the route without streams has no table
    at = next(i for i, c in enumerate(cells) if cells[i : i + 2] == ["iris-v2", "shadow"])
    assert cells[at : at + 8] == ["iris-v2", "shadow", "412", "103", "131", "101", "104", "20.0"]
