"""Admin API: health, readiness, status, metrics text, token rules, actions, reload, history."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from router.config.spec import AdminSpec, Config, MatchSpec, RouteSpec
from router.core.rollout import Rollout
from router.dataplane.metrics import Metrics
from router.dataplane.routing import CompiledRoute, RouteTable
from router.ops.admin import Action, build_admin_app, load_token, route_weights
from router.ops.dashboard import freshen_reasons
from router.runtime import Runtime
from router.state.base import StoreUnavailable
from strategies.base import EVERY_COPY, Decision

TOKEN = "s3cret-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
RELOAD_ERROR = "routes[0].strategy.canary.steps[2].weight: must be 0..100, got 140"


Client = TestClient[web.Request, web.Application]


@dataclass(frozen=True, slots=True)
class PairSpec:
    stable: str
    candidate: str

    def backends(self) -> tuple[str, ...]:
        return (self.stable, self.candidate)


class Pair:
    """A real canary-like strategy: the candidate gets live.weight_bp of the buckets."""

    def __init__(self, spec: PairSpec) -> None:
        self.spec = spec
        self.copies = EVERY_COPY

    @property
    def override_header(self) -> bytes | None:
        return None

    def backends(self) -> tuple[str, ...]:
        return self.spec.backends()

    def decide(self, key: int, live: Rollout | None, override: bytes | None) -> Decision:
        weight = live.weight_bp if live is not None else 0
        if key % 10_000 < weight:
            return Decision(self.spec.candidate, "weight")
        return Decision(self.spec.stable, "weight")


class Declared(Pair):
    """The same strategy, declaring its weights itself."""

    def weights(self, live: Rollout | None) -> dict[str, float]:
        return {self.spec.stable: 12.5, self.spec.candidate: 87.5}


def make_runtime(config_path: str = "/etc/router/config.yaml") -> Runtime:
    """A runtime with routes iris (live rollout at 25 %) and fraud (no rollout)."""
    specs = (
        RouteSpec("iris", MatchSpec("/v2/models/iris"), "pair", PairSpec("iris-v1", "iris-v2")),
        RouteSpec("fraud", MatchSpec("/fraud"), "pair", PairSpec("fraud-a", "fraud-b")),
    )
    table = RouteTable([CompiledRoute(s, Pair(s.strategy)) for s in specs])  # type: ignore[arg-type]
    config = Config(routes=specs, source_hash="abc123def456")
    live = {
        "iris": Rollout(
            route="iris",
            version=3,
            kind="canary",
            phase="progressing",
            step=1,
            weight_bp=2500,
            stable="iris-v1",
            candidate="iris-v2",
        )
    }
    return Runtime(config=config, table=table, config_path=config_path, live=live)


class Calls:
    """Records action calls; answers like a rollout owner would."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, dict[str, Any]]] = []

    async def pause(self, route: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        self.seen.append((route, body))
        return 200, {"message": f"{route} paused"}

    async def broken(self, route: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        raise StoreUnavailable("redis down")

    def actions(self) -> dict[str, Action]:
        return {"pause": self.pause, "abort": self.broken}


@pytest.fixture
def runtime() -> Runtime:
    return make_runtime()


@pytest.fixture
def calls() -> Calls:
    return Calls()


async def serve(
    app: web.Application, headers: dict[str, str] | None = None
) -> AsyncIterator[TestClient[web.Request, web.Application]]:
    """A client of the app; `headers` on every request (AUTH: reads need the token too)."""
    async with TestClient(TestServer(app, host="127.0.0.1"), headers=headers) as client:
        yield client


@pytest.fixture
def app(runtime: Runtime, calls: Calls) -> web.Application:
    metrics = Metrics()
    metrics.record("iris", "iris-v2", 200, 0.01, "weight", "r1", 10)

    async def extra() -> dict[str, Any]:
        return {"controller": {"leader": True}}

    async def history(route: str, n: int) -> list[dict[str, Any]]:
        return [{"ts": 1.0, "actor": "routerctl", "event": "pause", "reason": f"{route} {n}"}]

    def reload() -> bool:
        runtime.reload_failed(RELOAD_ERROR)
        return False

    return build_admin_app(
        runtime, metrics, TOKEN, calls.actions(), extra, reload=reload, history=history
    )


@pytest.fixture
async def client(app: web.Application) -> AsyncIterator[TestClient[web.Request, web.Application]]:
    """The operator's client: every request carries the admin token."""
    async for c in serve(app, AUTH):
        yield c


@pytest.fixture
async def anon(app: web.Application) -> AsyncIterator[TestClient[web.Request, web.Application]]:
    """A client without a token."""
    async for c in serve(app):
        yield c


async def test_healthz_ok(client: Client) -> None:
    """/healthz answers 200 while the process is alive."""
    resp = await client.get("/healthz")
    assert resp.status == 200
    assert await resp.json() == {"status": "ok"}


async def test_readyz_degraded_when_store_down(client: Client, runtime: Runtime) -> None:
    """/readyz is 200 ready with a store, 503 degraded with the reason without one."""
    assert (await client.get("/readyz")).status == 200
    runtime.store_ok = False
    resp = await client.get("/readyz")
    assert resp.status == 503
    body = await resp.json()
    assert body["status"] == "degraded"
    assert "state store unreachable: serving last known state" in body["reasons"]


async def test_status_shows_config_store_routes_and_extra(client: Client, runtime: Runtime) -> None:
    """/v1/status reports config, reload error, store, live weights, rollout, extra status."""
    runtime.reload_failed(RELOAD_ERROR)
    body = await (await client.get("/v1/status")).json()
    assert body["config"]["path"] == "/etc/router/config.yaml"
    assert body["config"]["hash"] == "abc123def456"
    assert body["config"]["last_reload_error"] == RELOAD_ERROR
    assert body["store"] == {"kind": "memory", "ok": True}
    assert body["controller"] == {"leader": True}
    assert [r["name"] for r in body["routes"]] == ["iris", "fraud"]
    iris, fraud = body["routes"]
    assert iris["weights"] == {"iris-v1": 75.0, "iris-v2": 25.0}
    assert iris["rollout"]["phase"] == "progressing"
    assert iris["match"] == {"path_prefix": "/v2/models/iris", "host": None}
    assert fraud["weights"] == {"fraud-a": 100.0, "fraud-b": 0.0}
    assert fraud["rollout"] is None


def test_route_weights_prefers_strategy_weights() -> None:
    """A strategy's own weights() wins over measuring decide()."""
    spec = RouteSpec("x", MatchSpec("/x"), "pair", PairSpec("a", "b"))
    route = CompiledRoute(spec, Declared(PairSpec("a", "b")))
    assert route_weights(route, None) == {"a": 12.5, "b": 87.5}


async def test_route_entry_and_unknown_route(client: Client) -> None:
    """/v1/routes/NAME gives one route; an unknown name is a JSON 404."""
    body = await (await client.get("/v1/routes/iris")).json()
    assert body["name"] == "iris"
    assert body["strategy"] == "pair"
    resp = await client.get("/v1/routes/nope")
    assert resp.status == 404
    assert "nope" in (await resp.json())["error"]


async def test_unknown_path_and_method_are_json(client: Client) -> None:
    """Anything else answers JSON errors (404 unknown path, 405 wrong method)."""
    resp = await client.get("/nothing/here")
    assert resp.status == 404
    assert "error" in await resp.json()
    resp = await client.get("/v1/config/reload")
    assert resp.status == 405
    assert "error" in await resp.json()


async def test_metrics_text(client: Client) -> None:
    """/metrics is Prometheus text with request counters and runtime gauges."""
    resp = await client.get("/metrics")
    assert resp.status == 200
    assert resp.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    text = await resp.text()
    assert 'router_requests_total{route="iris",backend="iris-v2",role="pair",code="200"} 1' in text
    assert "router_store_up 1" in text
    assert 'router_route_weight_percent{route="iris",backend="iris-v2",role="pair"} 25.0' in text


async def test_post_needs_bearer_token(anon: Client, calls: Calls) -> None:
    """POST without a token or with a wrong one is 401; the right one reaches the action,
    its actor naming the token's label."""
    resp = await anon.post("/v1/routes/iris/pause", json={})
    assert resp.status == 401
    bad = {"Authorization": "Bearer wrong"}
    assert (await anon.post("/v1/routes/iris/pause", json={}, headers=bad)).status == 401
    assert calls.seen == []
    resp = await anon.post("/v1/routes/iris/pause", json={"actor": "me"}, headers=AUTH)
    assert resp.status == 200
    assert (await resp.json())["message"] == "iris paused"
    assert calls.seen == [("iris", {"actor": "me by admin"})]


async def test_post_refused_when_no_token_configured(runtime: Runtime, calls: Calls) -> None:
    """With no token configured every POST is 403 saying to set ROUTER_ADMIN_TOKEN."""
    app = build_admin_app(runtime, Metrics(), None, calls.actions())
    async for c in serve(app):
        resp = await c.post("/v1/routes/iris/pause", headers=AUTH)
        assert resp.status == 403
        assert "ROUTER_ADMIN_TOKEN" in (await resp.json())["message"]
        assert (await c.post("/v1/config/reload", headers=AUTH)).status == 403
    assert calls.seen == []


async def test_unknown_route_and_action(client: Client) -> None:
    """Unknown route is 404; unknown action is 404 listing the known ones."""
    assert (await client.post("/v1/routes/nope/pause", headers=AUTH)).status == 404
    resp = await client.post("/v1/routes/iris/explode", headers=AUTH)
    assert resp.status == 404
    body = await resp.json()
    assert body["known"] == ["abort", "pause"]
    assert "pause" in body["error"]


async def test_bad_body_and_store_outage(client: Client) -> None:
    """A non-object body is 400; an action hitting a dead store is a JSON 503."""
    resp = await client.post("/v1/routes/iris/pause", data=b"[1, 2", headers=AUTH)
    assert resp.status == 400
    resp = await client.post("/v1/routes/iris/abort", headers=AUTH)
    assert resp.status == 503
    assert "state store" in (await resp.json())["error"]


async def test_config_reload_reports_refusal(anon: Client) -> None:
    """POST /v1/config/reload needs the token and reports the reload error in full."""
    assert (await anon.post("/v1/config/reload")).status == 401
    resp = await anon.post("/v1/config/reload", headers=AUTH)
    assert resp.status == 422
    assert RELOAD_ERROR in (await resp.json())["message"]


async def test_history(client: Client) -> None:
    """GET /v1/routes/NAME/history passes the count to the history source."""
    body = await (await client.get("/v1/routes/iris/history?n=7")).json()
    assert body["entries"][0]["reason"] == "iris 7"
    assert (await client.get("/v1/routes/iris/history?n=x")).status == 400


def test_load_token_env_then_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """ROUTER_ADMIN_TOKEN wins; else token_file's stripped contents; else None."""
    token_file = tmp_path / "token"
    token_file.write_text("  from-file\n")
    monkeypatch.delenv("ROUTER_ADMIN_TOKEN", raising=False)
    assert load_token(AdminSpec()) is None
    assert load_token(AdminSpec(token_file=str(token_file))) == "from-file"
    monkeypatch.setenv("ROUTER_ADMIN_TOKEN", "from-env")
    assert load_token(AdminSpec(token_file=str(token_file))) == "from-env"


def test_status_shows_the_controllers_latest_reason_for_the_same_state() -> None:
    """A stored rollout keeps the counts of its last move; the latest verdict's are shown."""
    stored = {"phase": "waiting_for_data", "step": 0, "reason": "candidate 6/20 requests"}
    moved = {"phase": "progressing", "step": 1, "reason": "step 2/3 at 50 %"}
    status: dict[str, Any] = {
        "routes": [
            {"name": "a", "rollout": dict(stored)},
            {"name": "b", "rollout": dict(moved)},  # the verdict is of an older state
            {"name": "c", "rollout": None},
        ],
        "analysis": {
            "a": {"phase": "waiting_for_data", "step": 0, "reason": "candidate 17/20 requests"},
            "b": {"phase": "waiting_for_data", "step": 0, "reason": "candidate 19/20 requests"},
            "c": {"phase": "progressing", "step": 0, "reason": "x"},
        },
    }
    freshen_reasons(status)
    routes = status["routes"]
    assert routes[0]["rollout"]["reason"] == "candidate 17/20 requests"
    assert routes[1]["rollout"]["reason"] == "step 2/3 at 50 %"
    assert routes[2]["rollout"] is None
