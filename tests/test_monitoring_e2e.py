"""A real Prometheus scraping a real router: every dashboard query and rule returns data.

One router process (Redis state, probes port scraped) carries a canary that
ramps (its gates in dry run, so all of them report values), one whose candidate
refuses connections (aborted by the error-rate gate), one stuck waiting for data
with a failing candidate, a shadow of two identical models, a shadow with a
constant-label candidate and a dead one (drift watched, its inputs shifted), and
a route to a dead backend; delayed labels are posted for two routes. A second
router has an unreachable Redis and gets a broken config edit, and a third
target answers nothing. Prometheus scrapes all three every second and
evaluates deploy/prometheus/rules.yml; then every panel query of the Grafana
dashboard, every recording rule and every alert expression must return data.
"""

from __future__ import annotations

import asyncio
import random
import re
import subprocess
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from aiohttp import web

from examples.model_server import ModelOptions, start_model_server
from router.ops.exposition import parse as parse_page
from scripts.dashboard import build, queries
from tests.support.prometheus import NOT_INSTALLED, Prometheus, binary
from tests.support.routerproc import RouterProcess, free_port, wait_port
from tests.test_monitoring_docs import labels_of, table

ROOT = Path(__file__).resolve().parent.parent
RULES = ROOT / "deploy" / "prometheus" / "rules.yml"
TOKEN = {"Authorization": "Bearer test-token"}
CONSTANT = "setosa"
SHIFTED = 2  # the feature of the drift route's inputs that moves
DEADLINE = 40.0  # seconds for everything to show in Prometheus (a few, when idle)
# the dashboard's variables, as Grafana would fill them
GRAFANA = {"$route": ".*", "$__rate_interval": "1m"}

pytestmark = pytest.mark.slow


@pytest.fixture
async def models() -> AsyncIterator[Callable[[ModelOptions], Any]]:
    runners: list[web.AppRunner] = []

    async def start(opts: ModelOptions) -> str:
        runner, port = await start_model_server(opts)
        runners.append(runner)
        return f"http://127.0.0.1:{port}"

    yield start
    for runner in runners:
        await runner.cleanup()


def route(name: str, strategy: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"name": name, "match": {"path_prefix": f"/v2/models/{name}"}, **extra,
            "strategy": strategy}  # fmt: skip


def drift(**more: Any) -> dict[str, Any]:
    block = {"inputs": ["$.features"], "outputs": ["$.label"], "reference": 30}
    return {**block, "min_samples": 20, "window": "30s", **more}


def main_config(urls: dict[str, str], redis_url: str) -> dict[str, Any]:
    label = [{"field": "$.label", "kind": "label"}]
    steps = [{"weight": 20, "pause": "1s", "min_requests": 10},
             {"weight": 50, "pause": "1s", "min_requests": 10},
             {"weight": 80, "pause": "10m"}]  # fmt: skip
    ramp_gates = {
        "interval": "300ms",
        "error_rate": {"max_increase": 0.5, "min_requests": 10},
        "latency": {"min_requests": 10, "dry_run": True},
        "agreement": {"field": "$.label", "min_requests": 10, "dry_run": True},
        "prediction_drift": {"min_requests": 10, "dry_run": True},
    }
    return {
        "state": {"url": redis_url},
        "probes": {"listen": f"127.0.0.1:{free_port()}"},
        "logging": {"access_sample": 0},
        "limits": {"max_body": "64KiB"},
        "controller": {"interval": "200ms", "lease_ttl": "1s"},
        "backends": {name: {"url": url, "timeout": "5s"} for name, url in urls.items()},
        "routes": [
            route("ramp", {"canary": {"stable": "v1", "candidate": "slow", "steps": steps,
                                      "analysis": ramp_gates, "compare": label}},
                  sticky={"header": "X-User-Id"}, drift=drift()),
            route("abort", {"canary": {"stable": "v1", "candidate": "dead", "steps": steps,
                                       "analysis": {"interval": "300ms",
                                                    "error_rate": {"min_requests": 5}}}}),
            route("stuck", {"canary": {"stable": "v1", "candidate": "flaky",
                                       "steps": [{"weight": 50, "pause": "1s",
                                                  "min_requests": 1_000_000}],
                                       "analysis": {"interval": "300ms",
                                                    "error_rate": {"dry_run": True}}}}),
            route("twin", {"shadow": {"primary": "v1", "shadows": ["twin"], "compare": label}}),
            route("const", {"shadow": {"primary": "v1", "shadows": ["const", "dead"],
                                       "compare": label}}, drift=drift()),
            route("down", {"split": {"weights": {"dead": 100}}}),
        ],
    }  # fmt: skip


async def drive(
    session: aiohttp.ClientSession,
    url: str,
    bodies: list[dict[str, Any]],
    rate: float = 0.0,
    concurrency: int = 4,
    sticky: bool = False,
) -> list[tuple[str, int, str]]:
    """POST every body, `concurrency` at a time, about `rate` a second (0: at once):
    (request id, status, label) of each."""
    out: list[tuple[str, int, str]] = []
    queue = list(reversed(bodies))
    start = time.monotonic()

    async def worker() -> None:
        while queue:
            body = queue.pop()
            if rate:  # request i goes out at i / rate seconds from the start, not before
                await asyncio.sleep(max(0.0, start + len(out) / rate - time.monotonic()))
            headers = {"X-User-Id": str(random.getrandbits(32))} if sticky else {}
            async with session.post(url, json=body, headers=headers) as resp:
                answer = await resp.json(content_type=None)
                label = answer.get("label", "") if isinstance(answer, dict) else ""
                out.append((resp.headers.get("X-Request-Id", ""), resp.status, label))

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return out


def features(n: int, shift: float = 0.0) -> list[dict[str, Any]]:
    rows = []
    for _ in range(n):
        row = [round(random.gauss(0, 1), 4) for _ in range(4)]
        row[SHIFTED] = round(row[SHIFTED] + shift, 4)
        rows.append({"features": row})
    return rows


async def traffic(router: RouterProcess) -> dict[str, list[tuple[str, int, str]]]:
    """About 10 s of requests on every route (the rollouts exist by then)."""
    base = router.url + "/v2/models/{}/infer"
    async with aiohttp.ClientSession() as s:
        # the drift route's reference first (its first 30 items), one at a time
        const = await drive(s, base.format("const"), features(40), concurrency=1)
        runs = {
            "ramp": drive(s, base.format("ramp"), features(300), 30, 8, sticky=True),
            "abort": drive(s, base.format("abort"), features(80), 8),
            "stuck": drive(s, base.format("stuck"), features(80), 8),
            "twin": drive(s, base.format("twin"), features(100), 10),
            "const": drive(s, base.format("const"), features(200, shift=3.0), 20),
            "down": drive(s, base.format("down"), features(20), 2, concurrency=1),
        }
        done = dict(zip(runs, await asyncio.gather(*runs.values()), strict=True))
        done["const"] = const + done["const"]
        async with s.post(router.url + "/nothing/here", json={}) as resp:
            assert resp.status == 404  # unrouted
        async with s.post(base.format("ramp"), data=b"x" * 100_000) as resp:
            assert resp.status == 413  # rejected: over limits.max_body
    return done


async def rollouts_seeded(router: RouterProcess, names: set[str]) -> None:
    """Until the controller has stored a rollout for each canary route."""
    deadline = time.monotonic() + DEADLINE
    while time.monotonic() < deadline:
        status = await asyncio.to_thread(router.get_json, "/v1/status")
        if names <= {r["name"] for r in status["routes"] if r["rollout"]}:
            return
        await asyncio.sleep(0.2)
    raise AssertionError(f"no rollout for {names} after {DEADLINE}s:\n{router.log()}")


async def post_labels(router: RouterProcess, served: list[tuple[str, int, str]]) -> None:
    """Delayed labels: every served request's truth is the constant label."""
    items = [{"request_id": rid, "label": CONSTANT} for rid, status, _ in served if status == 200]
    async with (
        aiohttp.ClientSession(headers=TOKEN) as s,
        s.post(router.admin_url + "/v1/feedback", json=items) as resp,
    ):
        assert resp.status == 202, await resp.text()


def start_all(*procs: RouterProcess) -> None:
    for p in procs:
        p.start()


async def until(prom: Prometheus, checks: dict[str, str]) -> dict[str, str]:
    """Poll every expression until each returns data; the ones that never did, by name."""
    left = dict(checks)
    deadline = time.monotonic() + DEADLINE
    while left and time.monotonic() < deadline:
        for name, expr in list(left.items()):
            if await asyncio.to_thread(prom.query, expr):
                del left[name]
        if left:
            await asyncio.sleep(0.5)
    return left


def value(prom: Prometheus, expr: str) -> float:
    result = prom.query(expr)
    assert len(result) == 1, (expr, result)
    return float(result[0]["value"][1])


def grafana(expr: str) -> str:
    for name, filled in GRAFANA.items():
        expr = expr.replace(name, filled)
    return expr


def rule_exprs() -> dict[str, str]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return {f"rule {r.get('alert') or r['record']}": r["expr"] for g in groups for r in g["rules"]}


def series_per_route(page: str) -> dict[str, int]:
    counts: Counter[str] = Counter()
    for line in page.splitlines():
        if (found := re.search(r'\broute="([^"]*)"', line)) and not line.startswith("#"):
            counts[found.group(1)] += 1
    return dict(counts)


async def test_every_panel_and_rule_returns_data_on_a_real_prometheus(
    tmp_path: Path, redis_url: str, models: Callable[[ModelOptions], Any]
) -> None:
    if binary("prometheus") is None or binary("promtool") is None:
        pytest.skip(NOT_INSTALLED.format("prometheus"))
    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    v1 = await models(ModelOptions(version="v1"))
    urls = {
        "v1": v1,
        "twin": v1,  # the same model under a second name: agreement must read 1.0
        "slow": await models(ModelOptions(version="v2", latency_ms=200)),
        "flaky": await models(ModelOptions(version="v1", error_rate=0.5)),
        "const": await models(ModelOptions(version="v2", constant_label=CONSTANT)),
        "dead": dead,
    }
    main = RouterProcess(tmp_path, main_config(urls, redis_url), name="main")
    broken_config = {
        "state": {"url": f"redis://127.0.0.1:{free_port()}/0"},  # no Redis there
        "backends": {"v1": {"url": v1}},
        "routes": [{"name": "r", "match": {"path_prefix": "/"},
                    "strategy": {"split": {"weights": {"v1": 100}}}}],
    }  # fmt: skip
    broken = RouterProcess(tmp_path, broken_config, name="broken")
    prom: Prometheus | None = None
    try:
        await asyncio.gather(
            asyncio.to_thread(start_all, main), asyncio.to_thread(start_all, broken)
        )
        probes = int(main.config["probes"]["listen"].rsplit(":", 1)[1])
        await asyncio.to_thread(wait_port, probes)
        targets = [f"127.0.0.1:{probes}", f"127.0.0.1:{broken.admin_port}", dead[7:]]
        prom = await asyncio.to_thread(Prometheus(tmp_path, targets, [RULES]).start)
        # every target scraped once before any traffic: the ramp's steps are seen moving
        assert await until(prom, {"first scrapes": "count(up) == 3"}) == {}
        await rollouts_seeded(main, {"ramp", "abort", "stuck"})
        sent = await traffic(main)
        await post_labels(main, sent["ramp"] + sent["const"])
        bad = dict(broken_config, routes=[{"name": "r"}])  # no match, no strategy: refused
        broken.write_config(bad)

        checks = {where: grafana(expr) for where, expr in queries(build())}
        checks.update(rule_exprs())
        checks["route variable"] = "group by (route) (router_route_weight_percent)"
        missing = await until(prom, checks)
        assert not missing, "no data for:\n" + "\n".join(f"{k}: {v}" for k, v in missing.items())

        # what an operator reads: identical models agree fully; a constant label agrees
        # on its share of the primary's answers; the aborted canary names its gate
        assert (
            value(prom, 'route_backend_field:router_shadow_agreement:ratio_rate5m{route="twin"}')
            == 1.0
        )
        primary = [label for _, status, label in sent["const"] if status == 200]
        share = primary.count(CONSTANT) / len(primary)
        compared = 'sum(router_shadow_items_compared_total{route="const",backend="const"})'
        agreed = 'sum(router_shadow_items_agreed_total{route="const",backend="const"})'
        assert await until(prom, {"all compared": f"{compared} == {len(primary)}"}) == {}
        assert value(prom, f"{agreed} / {compared}") == pytest.approx(share, abs=0.01)
        aborted = prom.query('router_rollout_aborted{route="abort"}')
        assert [r["metric"]["cause"] for r in aborted] == ["error_rate"]
        assert value(prom, 'router_rollout_phase{route="abort",phase="aborted"}') == 1
        ramp = 'router_rollout_weight_ratio{route="ramp"}[5m]'
        assert (value(prom, f"min_over_time({ramp})"), value(prom, f"max_over_time({ramp})")) == (
            0.2,
            0.8,
        )  # it ramped through its steps while scraped
        assert value(prom, f'router_store_up{{instance="127.0.0.1:{broken.admin_port}"}}') == 0
        assert value(prom, f'up{{instance="127.0.0.1:{probes}"}}') == 1  # scraped as OpenMetrics

        # the exposition itself: clean for promtool, a bounded number of series per route
        page = await asyncio.to_thread(main.get_text, "/metrics")
        lint = await asyncio.to_thread(
            subprocess.run,
            [binary("promtool") or "promtool", "check", "metrics"],
            input=page.encode(), capture_output=True, check=False,
        )  # fmt: skip
        assert (lint.returncode, lint.stdout + lint.stderr) == (0, b"")
        documented = table("metric")  # README's labels, on a page where most have samples
        for name, fam in parse_page(page).items():
            said = {x.strip() for x in documented[name][1].split(",") if x.strip()}
            assert not fam.samples or labels_of(fam) == said, name
        per_route = series_per_route(page)
        print("series per route:", per_route)
        assert max(per_route.values()) < 600
    finally:
        if prom is not None:
            prom.stop()
        main.stop()
        broken.stop()
